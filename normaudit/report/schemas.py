"""The JSON Schemas (draft 2020-12) of the documents normaudit writes, shipped in ``schema/``:
``inspect.json`` (normaudit.inspect/1), ``compare.json`` (normaudit.compare/1, refers to inspect.json's
definitions), ``baseline.json`` (normaudit.baseline/1).

    from normaudit.report.schemas import validate
    validate(doc)            # by doc["schema"]; needs the jsonschema package (pip install jsonschema)
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMAS = {"normaudit.inspect/1": "inspect.json", "normaudit.compare/1": "compare.json",
           "normaudit.baseline/1": "baseline.json"}


@lru_cache(maxsize=None)
def load(name: str) -> dict[str, Any]:
    """A schema by file name (``compare.json``) or document schema (``normaudit.compare/1``)."""
    fname = SCHEMAS.get(name, name)
    return json.loads(resources.files(__package__).joinpath("schema", fname).read_text(encoding="utf-8"))


def validator(name: str) -> Any:
    """A jsonschema validator for one schema, with the others registered for cross references."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (load(f)["$id"], Resource.from_contents(load(f))) for f in SCHEMAS.values())
    return Draft202012Validator(load(name), registry=registry)


def validate(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` does not match the schema it names."""
    validator(doc["schema"]).validate(doc)
