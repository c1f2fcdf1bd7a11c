"""The typical quantization errors in facts/quant.py are what gguf-py's quantizers really give."""

import numpy as np
import pytest

from normaudit.facts.quant import QUANT_REL_L2, error_bound


@pytest.mark.parametrize("qtype", [k for k, v in QUANT_REL_L2.items() if v.source == "measured"])
def test_measured_typical_errors(qtype):
    import gguf
    from gguf import quants

    x = np.random.default_rng(0).standard_normal((256, 1024)).astype(np.float32)
    q = getattr(gguf.GGMLQuantizationType, qtype)
    y = quants.dequantize(quants.quantize(x, q), q).reshape(x.shape)
    rel = float(np.linalg.norm(y - x) / np.linalg.norm(x))
    assert rel == pytest.approx(QUANT_REL_L2[qtype].typical, rel=0.1)
    assert rel < error_bound(qtype)
