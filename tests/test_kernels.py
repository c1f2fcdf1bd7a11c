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


def test_channels_first_layer_norm_matches_convnext():
    """ConvNeXt's channels_first LayerNorm normalizes axis 1 only: axis=(1,), exact=True (not 1..last)."""
    x = rng.normal(size=(2, 8, 3, 5)).astype(np.float32)
    w, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    xt = torch.from_numpy(x)
    u = xt.mean(1, keepdim=True)
    s = (xt - u).pow(2).mean(1, keepdim=True)
    ref = (torch.from_numpy(w)[:, None, None] * ((xt - u) / torch.sqrt(s + 1e-6)) +
           torch.from_numpy(b)[:, None, None]).numpy()
    np.testing.assert_allclose(kernels.layer_norm(x, w, b, 1e-6, axis=(1,), exact=True), ref, rtol=1e-5, atol=1e-5)
    # the [C, 1, 1] weight an exporter stores broadcasts the same way
    np.testing.assert_allclose(kernels.layer_norm(x, w.reshape(8, 1, 1), b.reshape(8, 1, 1), 1e-6, axis=(1,),
                                                  exact=True), ref, rtol=1e-5, atol=1e-5)
    # without exact, (1,) means axes 1..last (ONNX LayerNormalization(axis=1))
    ref_all = F.layer_norm(xt, (8, 3, 5), None, None, 1e-6).numpy()
    np.testing.assert_allclose(kernels.layer_norm(x, None, None, 1e-6, axis=(1,)), ref_all, rtol=1e-5, atol=1e-5)
    rms = kernels.rms_norm(x, None, 1e-6, axis=(1,), exact=True)
    np.testing.assert_allclose(rms, x / np.sqrt((x * x).mean(1, keepdims=True) + 1e-6), rtol=1e-5)


def _bn(c, eps):
    bn = torch.nn.BatchNorm2d(c, eps=eps).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) * 0.01 + 0.001)
        bn.weight.copy_(torch.randn(c))
        bn.bias.copy_(torch.randn(c))
    return bn


def test_fold_into_grouped_conv_transpose_matches_torch():
    """ConvTranspose weight [C_in, C_out/groups, k, k]: the fold factor multiplies the output-channel columns."""
    up = torch.nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)
    bn = _bn(6, 1e-3)
    x = torch.randn(1, 8, 3, 3)
    ref = bn(up(x)).detach().numpy()
    args = (bn.running_mean.numpy(), bn.running_var.numpy(), bn.weight.detach().numpy(), bn.bias.detach().numpy())
    W, B = kernels.fold_batch_norm(up.weight.detach().numpy(), up.bias.detach().numpy(), *args, 1e-3,
                                   out_axis=1, groups=2)
    out = F.conv_transpose2d(x, torch.from_numpy(W), torch.from_numpy(B), stride=2, groups=2).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    f = kernels.fit_fold_factor(up.weight.detach().numpy(), W, out_axis=1, groups=2)
    np.testing.assert_allclose(f, kernels.bn_fold_factor(args[1], args[2], 1e-3), rtol=1e-5)
    assert abs(kernels.recover_bn_eps(f, args[1], args[2]) - 1e-3) < 1e-5
    first = kernels.out_channels_first(up.weight.detach().numpy(), 1, 2)
    assert first.shape == (6, 4, 2, 2)
    np.testing.assert_array_equal(kernels.from_out_channels_first(first, (8, 3, 2, 2), 1, 2), up.weight.detach())


def test_fold_into_depthwise_conv_and_transposed_linear():
    dw = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    bn = _bn(4, 1e-5)
    x = torch.randn(1, 4, 5, 5)
    args = (bn.running_mean.numpy(), bn.running_var.numpy(), bn.weight.detach().numpy(), bn.bias.detach().numpy())
    W, B = kernels.fold_batch_norm(dw.weight.detach().numpy(), dw.bias.detach().numpy(), *args, 1e-5)
    out = F.conv2d(x, torch.from_numpy(W), torch.from_numpy(B), padding=1, groups=4).numpy()
    np.testing.assert_allclose(out, bn(dw(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
    fc = torch.nn.Linear(6, 4)
    xl = torch.randn(3, 6)
    ref = F.batch_norm(fc(xl), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-5).detach()
    Wt, Bt = kernels.fold_batch_norm(fc.weight.detach().numpy().T.copy(), fc.bias.detach().numpy(), *args, 1e-5,
                                     out_axis=1)  # a Gemm weight with transB=0: [in, out]
    np.testing.assert_allclose(xl.numpy() @ Wt + Bt, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_rel_l2_error_matches_float64_over_chunk_boundaries():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((37, 129)).astype(np.float32)
    other = ref + 1e-3 * rng.standard_normal(ref.shape).astype(np.float32)
    exact = np.linalg.norm(other.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64))
    for chunk in (1, 100, 4096, 1 << 22):  # chunks that do and do not divide the size
        assert kernels.rel_l2_error(ref, other, chunk=chunk) == pytest.approx(exact, rel=1e-5)
    assert kernels.rel_l2_error(ref, ref) == 0.0
    assert kernels.rel_l2_error(np.zeros(4, np.float32), np.full(4, 0.5, np.float32)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        kernels.rel_l2_error(ref, ref[:3])
