"""The file outputs a document can be rendered to. Adding one is a module with a ``RENDERER`` and one line in
:data:`RENDERERS`; the CLI grows the matching ``--<name> FILE`` option on the commands it applies to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import NormauditError


@dataclass(frozen=True)
class Renderer:
    name: str  # the option is --<name>
    help: str
    documents: tuple[str, ...]  # which documents it renders: "compare", "inspect"
    render: Callable[[dict[str, Any]], str]  # document dict -> file text
    help_for: dict[str, str] = field(default_factory=dict)  # the option's help on one command, when it differs

    def help_on(self, kind: str) -> str:
        return self.help_for.get(kind, self.help)


def _renderers() -> list[Renderer]:
    from . import html, junit, sarif

    return [html.RENDERER, junit.RENDERER, sarif.RENDERER]


#: every file renderer, in the order their options are listed
RENDERERS: list[Renderer] = _renderers()


def for_document(kind: str) -> list[Renderer]:
    return [r for r in RENDERERS if kind in r.documents]


def get(name: str) -> Renderer:
    for r in RENDERERS:
        if r.name == name:
            return r
    raise KeyError(name)


def write(renderer: Renderer, doc: dict[str, Any], target: str | Path) -> None:
    """Render ``doc`` and write it to ``target`` (a one-line error if the file cannot be written)."""
    text = renderer.render(doc)
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NormauditError(f"{target}: cannot write the {renderer.name} report ({exc.strerror or exc})") from None
