"""Activation backends, one module each: transformers / trusted modules (:mod:`.hf`), torch.export (:mod:`.export`),
onnxruntime (:mod:`.onnx`), GGUF replay (:mod:`.replay`).  A format's ``runner()`` builds its backend."""
