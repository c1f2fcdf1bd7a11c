"""Checks on the two models as a whole."""

from __future__ import annotations

from ..match import gguf_arch_for, is_mmproj
from .base import Context, Finding, Severity, check


@check("architecture_mismatch", Severity.WARNING, scope="model",
       description="A and B name different architectures: probably not a conversion of one model")
def architecture(ctx: Context) -> None:
    a, b = ctx.a, ctx.b
    if is_mmproj(a) or is_mmproj(b):
        return  # an mmproj is always "clip": the projector of any multimodal architecture
    arch_a, arch_b = gguf_arch_for(a), gguf_arch_for(b)
    if arch_a and arch_b and arch_a != arch_b:
        ctx.finding("architecture_mismatch", None, None, f"A is {a.architecture} ({arch_a}), B is {b.architecture} "
                    f"({arch_b})", "check that B was converted from A")


@check("eps_unknown", Severity.INFO, scope="model",
       description="one side stores no epsilon (a bare state_dict), so eps was not compared")
def eps_unknown(ctx: Context) -> None:
    unknown = [p for p in ctx.cache.get("aligned", []) if (p.a.eps is None) != (p.b.eps is None)]
    if unknown:
        side = "A" if unknown[0].a.eps is None else "B"
        ctx.finding("eps_unknown", None, None, f"{side} stores no eps for {len(unknown)} layers, so eps was not "
                    "compared", "give a config.json (--config-a/--config-b) or a .pt2 / ONNX / GGUF file that "
                    "records eps")


@check("activation_drift", Severity.ERROR, scope="activations",
       description="with --activations: error that quantization or float round-off cannot explain (a norm or block "
                   "adding error its weights cannot, a tensor beyond its storage type); expected drift is info")
def activation_drift(ctx: Context) -> None:
    """Not run over the static models: these findings come from the activation diff (activations/verdict.py)."""


@check("tokenizer_mismatch", Severity.ERROR, scope="activations",
       description="with --backend llama.cpp / both: the GGUF's own vocabulary splits the input text differently "
                   "from the HF tokenizer")
@check("tokenizer_special_tokens", Severity.WARNING, scope="activations",
       description="with --backend llama.cpp / both: llama.cpp and the HF tokenizer add different special tokens "
                   "(BOS/EOS) around the same text")
def tokenizer(ctx: Context) -> None:
    """Not run over the static models: :func:`tokenizer_findings` reads the activation run's comparison."""


def tokenizer_findings(tok: dict | None) -> list[Finding]:
    """The llama.cpp backend's tokenizer comparison (``ActivationReport.tokenization``) as findings: a different
    split of the text is an error with the token-level diff; only different special tokens, a warning."""
    if not tok or tok.get("match", True):
        return []
    where = f"on the {tok.get('source', 'input')}"
    if tok.get("body_match"):
        sp = tok.get("specials", {})
        parts = []
        for end in ("leading", "trailing"):
            h, g = sp.get(f"hf_{end}", []), sp.get(f"gguf_{end}", [])
            if h != g:
                parts.append(f"{end}: llama.cpp {g or 'none'}, HF {h or 'none'}")
        pieces = ", ".join(repr(p) for p in sp.get("gguf_pieces", []))
        return [Finding("tokenizer_special_tokens", Severity.WARNING, None, None,
                        f"llama.cpp and the HF tokenizer add different special tokens {where} ({'; '.join(parts)}"
                        + (f"; llama.cpp's are {pieces}" if pieces else "") + "); the text itself is split alike",
                        "the GGUF's tokenizer.ggml.add_bos_token / add_eos_token (llama.cpp's default for the vocab "
                        "type when absent) and the HF tokenizer's add_bos_token / post-processor disagree",
                        {"specials": sp})]
    d = tok.get("first_difference", {})

    def fmt(seq: list) -> str:
        return " ".join(f"{t}:{p!r}" for t, p in seq)

    return [Finding("tokenizer_mismatch", Severity.ERROR, None, None,
                    f"the GGUF's vocabulary tokenizes the text differently {where}: first difference at HF token "
                    f"{d.get('hf_index')} / llama.cpp token {d.get('gguf_index')} (HF {fmt(d.get('hf', []))} | "
                    f"llama.cpp {fmt(d.get('gguf', []))}); {len(tok.get('hf', []))} vs {len(tok.get('gguf', []))} tokens",
                    "the converter wrote another vocabulary, merges or pre-tokenizer (tokenizer.ggml.pre) than the HF "
                    "tokenizer uses", {"first_difference": d})]
