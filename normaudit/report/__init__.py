"""Human (rich tables) and machine (JSON) output."""

from .jsonout import write_json
from .table import activation_tables, compare_tables, fmt_eps, inspect_table

__all__ = ["write_json", "inspect_table", "compare_tables", "activation_tables", "fmt_eps"]
