"""The audit document (:mod:`.document`) and its renderers: the terminal view (:mod:`.table`), JSON
(:mod:`.jsonout`, JSON Schemas in ``schema/``), and the file outputs of :mod:`.renderers` (HTML, JUnit, SARIF);
baselines (:mod:`.baseline`) and GitHub annotations (:mod:`.github`)."""

from .document import COMPARE_SCHEMA, INSPECT_SCHEMA, AuditReport, inspect_document, strip_volatile
from .jsonout import write_json
from .renderers import RENDERERS, Renderer
from .table import compare_view, fmt_eps, inspect_view, verdict_line

__all__ = ["AuditReport", "COMPARE_SCHEMA", "INSPECT_SCHEMA", "inspect_document", "strip_volatile", "write_json",
           "RENDERERS", "Renderer", "compare_view", "inspect_view", "verdict_line", "fmt_eps"]
