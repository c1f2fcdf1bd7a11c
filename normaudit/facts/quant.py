"""How far a weight stored in each type typically is from its float source (relative L2 error), and the bound
beyond which a tensor is not explained by its storage type any more.

Sources: ``measured`` — gguf-py's own quantizers (``gguf.quants.quantize``) on a seeded standard-normal
256x1024 matrix (what ``tests/test_quant_facts.py`` re-measures); ``corpus`` — llama.cpp's quantizer
(``llama_model_quantize``) on the shared corpus' random-weight models; ``estimate`` — bits per weight between two
measured types (IQ / low-bit K types gguf-py cannot quantize).  Trained LLM weights have heavier tails than
Gaussians, so bounds are about 4x the typical value (and imatrix quantization only lowers the error).
"""

from __future__ import annotations

from typing import NamedTuple


class QuantError(NamedTuple):
    typical: float  # relative L2 error of a Gaussian matrix stored in this type
    source: str  # measured | corpus | estimate | exact


QUANT_REL_L2: dict[str, QuantError] = {
    "F64": QuantError(0.0, "exact"), "F32": QuantError(0.0, "exact"),
    "F16": QuantError(2.1e-4, "measured"), "BF16": QuantError(1.7e-3, "measured"),
    "Q8_0": QuantError(5.4e-3, "measured"), "Q8_1": QuantError(5.4e-3, "estimate"),
    "Q8_K": QuantError(5.0e-3, "estimate"),
    "Q6_K": QuantError(1.8e-2, "corpus"),
    "Q5_0": QuantError(4.3e-2, "measured"), "Q5_1": QuantError(3.8e-2, "measured"),
    "Q5_K": QuantError(3.6e-2, "estimate"),
    "Q4_0": QuantError(8.6e-2, "measured"), "Q4_1": QuantError(7.8e-2, "measured"),
    "Q4_K": QuantError(7.2e-2, "corpus"), "IQ4_NL": QuantError(7.5e-2, "estimate"),
    "IQ4_XS": QuantError(7.5e-2, "estimate"), "MXFP4": QuantError(1.15e-1, "measured"),
    "Q3_K": QuantError(1.5e-1, "estimate"), "IQ3_S": QuantError(1.4e-1, "estimate"),
    "IQ3_XXS": QuantError(1.6e-1, "estimate"),
    "Q2_K": QuantError(2.8e-1, "estimate"), "IQ2_XXS": QuantError(3.2e-1, "estimate"),
    "IQ2_XS": QuantError(3.0e-1, "estimate"), "IQ2_S": QuantError(2.9e-1, "estimate"),
    "IQ1_S": QuantError(4.5e-1, "estimate"), "IQ1_M": QuantError(4.2e-1, "estimate"),
    "TQ1_0": QuantError(8.1e-1, "measured"), "TQ2_0": QuantError(8.1e-1, "measured"),
    "I8": QuantError(1e-2, "estimate"), "U8": QuantError(1e-2, "estimate"),
}

BOUND_FACTOR = 4.0  # a tensor beyond BOUND_FACTOR x the typical error of its type is not explained by it
FLOAT_FLOOR = 1e-6  # exact types: float32 round-off


def typical_error(qtype: str) -> float | None:
    q = QUANT_REL_L2.get(qtype)
    return None if q is None else q.typical


def error_bound(qtype: str) -> float:
    """Largest relative L2 error storage in ``qtype`` explains (unknown types: generous 0.5)."""
    q = QUANT_REL_L2.get(qtype)
    if q is None:
        return 0.5
    return max(BOUND_FACTOR * q.typical, FLOAT_FLOOR)


class NextTokenReference(NamedTuple):
    """What users know a quant type costs: llama.cpp's ``llama-perplexity --kl-divergence`` figures against
    FP16 on wikitext-2 (tools/perplexity/README.md of llama.cpp as vendored by llama-cpp-python 0.3.36), for
    LLaMA 2 7B and LLaMA 3 8B, no imatrix.  Tiny random test models do not reproduce them: they are context."""

    kld_l2_7b: float | None
    kld_l3_8b: float
    same_top_l2_7b: float | None  # "Same top p", %
    same_top_l3_8b: float | None


NEXT_TOKEN_REFERENCE: dict[str, NextTokenReference] = {
    "F16": NextTokenReference(None, 0.000551, None, None),
    "Q8_0": NextTokenReference(0.000369, 0.001355, 98.846, 97.674),
    "Q6_K": NextTokenReference(0.002098, 0.005452, 97.520, 96.031),
    "Q5_K_M": NextTokenReference(None, 0.010762, None, None),
    "Q5_0": NextTokenReference(None, 0.022239, None, None),
    "Q4_K_M": NextTokenReference(0.012686, 0.031273, 94.665, 91.901),
    "Q4_K_S": NextTokenReference(None, 0.043136, None, None),
    "Q4_0": NextTokenReference(None, 0.071940, None, None),
    "Q3_K_M": NextTokenReference(None, 0.101913, None, None),
    "Q2_K": NextTokenReference(0.108903, 0.445132, 85.584, 71.138),
}


def reference_text(file_type: str | None) -> str:
    ref = NEXT_TOKEN_REFERENCE.get((file_type or "").upper())
    if ref is None:
        return ""
    kld = (f"{ref.kld_l2_7b:.3g}-{ref.kld_l3_8b:.3g}" if ref.kld_l2_7b is not None else f"{ref.kld_l3_8b:.3g}")
    return f"llama.cpp's reference for {file_type}: mean KLD {kld} on LLaMA 2 7B / 3 8B"
