"""BatchNorms folded into convs, depthwise convs, grouped ConvTransposes and Gemms (also transB=0, alpha/beta):
a converted model with no norm op left is comparable, its folds are verified and fold faults are caught.

Source: testmodels/zoo (torch.export .pt2 of small modules; ONNX from torch's dynamo and legacy exporters)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from breakers import initializer, onnx_edit, set_initializer
from conftest import TM
from onnx import helper
from typer.testing import CliRunner

import normaudit
from normaudit import kernels
from normaudit.checks import compare
from normaudit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def zoo():
    return TM / "zoo"


@pytest.fixture(scope="module")
def zoo_src(zoo):
    return normaudit.load(zoo / "zoo.pt2")


def errors(report):
    return [f for f in report.findings if f.severity.value == "error"]


def folds(report):
    return {p.a: p for p in report.pairs if p.aligned_by.startswith("fold")}


def refold(src, bn_id: str, conv_id: str, eps: float, keep_mean: bool = True):
    """The conv of ``src`` with its BatchNorm folded in (kernels.fold_batch_norm), with ``eps``; without the running
    mean when ``keep_mean`` is False."""
    bn, conv = src.by_id()[bn_id], {op.id: op for op in src.linear_ops}[conv_id]
    mean = bn.running_mean.load() if keep_mean else np.zeros(bn.running_mean.shape, np.float32)
    return kernels.fold_batch_norm(conv.weight.load(), conv.bias.load() if conv.bias else None, mean,
                                   bn.running_var.load(), bn.weight.load(), bn.bias.load(), eps, **conv.layout())


# -- a B side with no norm op left ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet-dynamo-opset18.onnx", "resnet-legacy-opset13.onnx"])
def test_resnet_export_with_only_folds_is_compared(zoo, name):
    b = normaudit.load(zoo / name, allow_empty=True)
    assert b.norms == [] and len(b.linear_ops) == 4  # 3 convs (BNs folded in) + the fc Gemm
    report = normaudit.audit(zoo / "resnet.pt2", zoo / name)
    assert report.passed and not report.findings, [f.to_dict() for f in report.findings]
    f = folds(report)
    assert set(f) == {"bn", "block.bn1", "block.bn2"}
    assert f["bn"].eps_b == pytest.approx(1e-3, rel=1e-3)  # recovered from the folded weights
    assert f["block.bn1"].eps_b == pytest.approx(1e-5, rel=0.05)
    assert all(p.weight["rel_l2"] < 2e-6 and p.weight["bias_rel_l2"] < 2e-6 for p in f.values())


def test_cli_compare_accepts_a_side_with_no_norm_op(zoo):
    result = runner.invoke(app, ["compare", str(zoo / "resnet.pt2"), str(zoo / "resnet-dynamo-opset18.onnx")])
    assert result.exit_code == 0, result.output
    assert "3 aligned pairs" in result.output
    # inspect still says there is no norm op in the file (exit 2, one line)
    result = runner.invoke(app, ["inspect", str(zoo / "resnet-dynamo-opset18.onnx")])
    assert result.exit_code == 2 and "no normalization layers found" in result.output


def test_compare_refuses_a_side_with_neither_norms_nor_linear_ops(tmp_path, zoo):
    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", 1, [1, 4])],
        [helper.make_tensor_value_info("y", 1, [1, 4])]))
    onnx.save(relu, str(tmp_path / "relu.onnx"))
    result = runner.invoke(app, ["compare", str(zoo / "resnet.pt2"), str(tmp_path / "relu.onnx")])
    assert result.exit_code == 2 and "no normalization layers found" in result.output
    assert "no conv / Gemm" in result.output


def test_every_fold_target_of_the_zoo(zoo, zoo_src):
    """Conv, depthwise conv, grouped ConvTranspose and Gemm (dynamo); Conv and depthwise conv (legacy)."""
    r = compare(zoo_src, normaudit.load(zoo / "zoo-dynamo-opset18.onnx"))
    assert errors(r) == [], [f.to_dict() for f in r.findings]
    f = folds(r)
    assert set(f) == {"bn", "block.bn1", "block.bn2", "dwbn", "upbn", "fcbn"}
    assert f["upbn"].convention == "folded into conv_transpose" and f["fcbn"].convention == "folded into linear"
    assert f["dwbn"].weight["rel_l2"] < 2e-6 and f["upbn"].weight["bias_rel_l2"] < 2e-6
    # the ConvNeXt LayerNorm is written out in aten ops in the .pt2 and found as one: aligned, same eps and weights
    assert r.findings == []
    cnln = {p.a: p for p in r.pairs}["cnln"]
    assert cnln.b == "cnln" and cnln.weight["rel_l2"] == 0.0
    legacy = compare(zoo_src, normaudit.load(zoo / "zoo-legacy-opset17.onnx"))
    assert errors(legacy) == [] and set(folds(legacy)) == {"bn", "block.bn1", "block.bn2", "dwbn"}
    assert {p.a for p in legacy.pairs} >= {"upbn", "fcbn", "gn"}  # kept as ops by the legacy exporter


# -- faults ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bn, conv, w_name, b_name", [
    ("dwbn", "dwconv", "dwconv.weight", "dwconv.bias"),  # depthwise conv
    ("upbn", "up", "up.weight", "up.bias"),  # ConvTranspose, 2 groups: output channels on axis 1
    ("fcbn", "fc", "fc.weight", "fc.bias"),  # Gemm, transB=1
])
def test_fold_with_wrong_eps_is_caught_and_eps_recovered(tmp_path, zoo, zoo_src, bn, conv, w_name, b_name):
    w, b = refold(zoo_src, bn, conv, 1e-3)

    def edit(m):
        set_initializer(m, w_name, w)
        set_initializer(m, b_name, b)

    bad = onnx_edit(zoo / "zoo-dynamo-opset18.onnx", tmp_path / "bad.onnx", edit)
    (e,) = errors(compare(zoo_src, normaudit.load(bad)))
    assert e.check == "fold_mismatch" and e.a == bn
    assert e.values["eps_used"] == pytest.approx(1e-3, rel=0.02)
    assert "eps ≈ 0.001" in e.message and "eps 1e-05" in e.message


@pytest.mark.parametrize("bn, conv, w_name, b_name", [("block.bn1", "block.conv1", "block.conv1.weight",
                                                        "block.conv1.bias"), ("fcbn", "fc", "fc.weight", "fc.bias"),
                                                       ("upbn", "up", "up.weight", "up.bias")])
def test_fold_without_running_mean_is_caught(tmp_path, zoo, zoo_src, bn, conv, w_name, b_name):
    w, b = refold(zoo_src, bn, conv, zoo_src.by_id()[bn].eps, keep_mean=False)

    def edit(m):
        set_initializer(m, w_name, w)
        set_initializer(m, b_name, b)

    bad = onnx_edit(zoo / "zoo-dynamo-opset18.onnx", tmp_path / "bad.onnx", edit)
    (e,) = errors(compare(zoo_src, normaudit.load(bad)))
    assert e.check == "fold_mismatch" and e.a == bn and "without its running mean" in e.message
    assert e.values["rel_l2"] < 2e-6 and e.values["bias_rel_l2"] > 1e-3  # weights right, bias wrong


def _gemm_trans_b0(m, alpha: float, beta: float, w_folded: np.ndarray, b_folded: np.ndarray) -> None:
    """Rewrite the folded fc Gemm as transB=0 ([in, out] weight) with alpha / beta, computing the same output."""
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    del gemm.attribute[:]
    gemm.attribute.extend([helper.make_attribute("transB", 0), helper.make_attribute("alpha", alpha),
                           helper.make_attribute("beta", beta)])
    set_initializer(m, "fc.weight", np.ascontiguousarray(w_folded.T) / np.float32(alpha))
    set_initializer(m, "fc.bias", b_folded / np.float32(beta))


def test_gemm_trans_b0_with_alpha_beta(tmp_path, zoo, zoo_src):
    import onnxruntime as ort

    src = zoo / "zoo-dynamo-opset18.onnx"
    w, b = initializer(onnx.load(str(src)), "fc.weight"), initializer(onnx.load(str(src)), "fc.bias")
    good = onnx_edit(src, tmp_path / "t0.onnx", lambda m: _gemm_trans_b0(m, 0.5, 2.0, w, b))
    x = np.load(zoo / "input.npz")["zoo"]
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa
    np.testing.assert_allclose(run(good), run(src), rtol=1e-4, atol=1e-5)  # the same model
    m = normaudit.load(good)
    fc = next(op for op in m.linear_ops if op.op == "linear")
    assert (fc.out_axis, fc.alpha, fc.beta) == (1, 0.5, 2.0) and fc.out_channels == 5
    r = compare(zoo_src, m)
    assert errors(r) == [] and folds(r)["fcbn"].weight["rel_l2"] < 2e-6
    w3, b3 = refold(zoo_src, "fcbn", "fc", 1e-3)
    bad = onnx_edit(src, tmp_path / "t0bad.onnx", lambda m: _gemm_trans_b0(m, 0.5, 2.0, w3, b3))
    (e,) = errors(compare(zoo_src, normaudit.load(bad)))
    assert e.check == "fold_mismatch" and e.a == "fcbn" and e.values["eps_used"] == pytest.approx(1e-3, rel=0.02)


def test_convtranspose_channels_swapped_is_not_a_fold(tmp_path, zoo, zoo_src):
    """Scaling ConvTranspose weight rows (input channels, axis 0) instead of columns (output channels) is wrong."""
    def edit(m):
        w = initializer(m, "up.weight").copy()
        w[[0, 1]] *= 1.5  # two input-channel rows
        set_initializer(m, "up.weight", w)

    bad = onnx_edit(zoo / "zoo-dynamo-opset18.onnx", tmp_path / "bad.onnx", edit)
    (e,) = errors(compare(zoo_src, normaudit.load(bad)))
    assert e.check == "fold_mismatch" and e.a == "upbn" and "does not match" in e.message
