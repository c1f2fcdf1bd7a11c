"""Per-ecosystem facts, kept as data (gguf-py style), not as if-chains.

One module per ecosystem: :mod:`.hf` (transformers configs and classes), :mod:`.gguf` (what llama.cpp's
converter does; tensor names come from gguf-py itself), :mod:`.onnx` (fused norm ops), :mod:`.torch`
(aten ops, nn.Module classes and state_dict naming).  Every row says where it comes from.  Code asks these
tables; it never spells a model family in an ``if``.
"""
