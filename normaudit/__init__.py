"""normaudit: audit model conversions through their normalization layers.

Python API::

    import normaudit
    model = normaudit.load("model.gguf")          # NormModel with .norms (NormLayer records)
    for norm in model.norms:
        print(norm.id, norm.kind.value, norm.eps, norm.eps_source.value)
"""

from .errors import CorruptFile, NoNorms, NormauditError, UnsupportedFormat, UntrustedPickle
from .formats import FORMATS, detect, load
from .model import Convention, EpsSource, NormKind, NormLayer, NormModel, TensorRef

__version__ = "0.1.0"

__all__ = [
    "load", "detect", "FORMATS", "NormModel", "NormLayer", "NormKind", "EpsSource", "Convention", "TensorRef",
    "NormauditError", "CorruptFile", "NoNorms", "UnsupportedFormat", "UntrustedPickle", "__version__",
]
