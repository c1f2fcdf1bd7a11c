import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from normaudit import kernels

rng = np.random.default_rng(0)


def test_layer_norm_matches_torch():
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    w, b = rng.normal(size=16).astype(np.float32), rng.normal(size=16).astype(np.float32)
    ref = F.layer_norm(torch.from_numpy(x), (16,), torch.from_numpy(w), torch.from_numpy(b), 1e-5).numpy()
    np.testing.assert_allclose(kernels.layer_norm(x, w, b, 1e-5), ref, rtol=1e-5, atol=1e-5)


def test_rms_norm_matches_torch_and_one_plus():
    x = rng.normal(size=(3, 8)).astype(np.float32)
    w = rng.normal(size=8).astype(np.float32)
    ref = F.rms_norm(torch.from_numpy(x), (8,), torch.from_numpy(w), 1e-6).numpy()
    np.testing.assert_allclose(kernels.rms_norm(x, w, 1e-6), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kernels.rms_norm(x, w, 1e-6, one_plus=True), kernels.rms_norm(x, w + 1, 1e-6),
                               rtol=1e-6)


def test_group_and_batch_norm_match_torch():
    x = rng.normal(size=(2, 8, 4, 4)).astype(np.float32)
    w, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    ref = F.group_norm(torch.from_numpy(x), 4, torch.from_numpy(w), torch.from_numpy(b), 1e-5).numpy()
    np.testing.assert_allclose(kernels.group_norm(x, 4, w, b, 1e-5), ref, rtol=1e-4, atol=1e-5)
    mean, var = rng.normal(size=8).astype(np.float32), rng.uniform(0.5, 2, size=8).astype(np.float32)
    ref = F.batch_norm(torch.from_numpy(x), torch.from_numpy(mean), torch.from_numpy(var), torch.from_numpy(w),
                       torch.from_numpy(b), False, 0.0, 1e-3).numpy()
    np.testing.assert_allclose(kernels.batch_norm(x, mean, var, w, b, 1e-3), ref, rtol=1e-4, atol=1e-5)


def test_fold_batch_norm_and_recover_eps():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    bn = torch.nn.BatchNorm2d(8, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(8))
        bn.running_var.copy_(torch.rand(8) * 0.01 + 0.001)  # small var so eps matters
        bn.weight.copy_(torch.randn(8))
    x = torch.randn(1, 3, 6, 6)
    ref = bn(conv(x)).detach().numpy()
    W, B = kernels.fold_batch_norm(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                                   bn.running_mean.numpy(), bn.running_var.numpy(), bn.weight.detach().numpy(),
                                   bn.bias.detach().numpy(), 1e-3)
    out = F.conv2d(x, torch.from_numpy(W), torch.from_numpy(B), padding=1).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    f = kernels.bn_fold_factor(bn.running_var.numpy(), bn.weight.detach().numpy(), 1e-3)
    assert abs(kernels.recover_bn_eps(f, bn.running_var.numpy(), bn.weight.detach().numpy()) - 1e-3) < 1e-5
