"""normaudit: audit model conversions through their normalization layers.

Python API::

    import normaudit
    model = normaudit.load("model.gguf")          # NormModel with .norms (NormLayer records)
    for norm in model.norms:
        print(norm.id, norm.kind.value, norm.eps, norm.eps_source.value)
    report = normaudit.audit("hf_dir", "model.gguf")
    print(report.passed, report.to_dict())
"""

from .api import AuditOptions, audit, inspect
from .errors import CorruptFile, NoNorms, NormauditError, UnsupportedFormat, UntrustedPickle
from .extras import MissingExtra
from .formats import FORMATS, detect, load
from .model import Convention, EpsSource, NormKind, NormLayer, NormModel, Role, TensorRef
from .report.document import AuditReport

__version__ = "0.1.0"

__all__ = [
    "load", "inspect", "audit", "AuditOptions", "AuditReport", "detect", "FORMATS", "NormModel", "NormLayer",
    "NormKind", "EpsSource", "Convention", "Role", "TensorRef", "NormauditError", "CorruptFile", "NoNorms",
    "UnsupportedFormat", "UntrustedPickle", "MissingExtra", "__version__",
]
