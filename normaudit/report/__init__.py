"""The audit document (:mod:`.document`) and its renderers: rich tables for people (:mod:`.table`), JSON for
machines (:mod:`.jsonout`)."""

from .document import COMPARE_SCHEMA, INSPECT_SCHEMA, AuditReport
from .jsonout import write_json
from .table import activation_tables, compare_tables, fmt_eps, inspect_table

__all__ = ["AuditReport", "COMPARE_SCHEMA", "INSPECT_SCHEMA", "write_json", "inspect_table", "compare_tables",
           "activation_tables", "fmt_eps"]
