"""The user docs cannot drift silently from the tool: every `xinstruct <command>` they name exists, every config key
they name (`section.key`, backticked) is a key of the run config, and they speak of no issue numbers."""

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from xinstruct.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands() -> set[str]:
    import typer

    from xinstruct.cli import app

    return {c.name or c.callback.__name__.replace("_", "-") for c in typer.main.get_command(app).commands.values()}


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models a field's type may hold (through Optional, unions, lists and dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]


def _resolves(models: list[type[BaseModel]], parts: list[str]) -> bool:
    if not parts:
        return True
    fields = [(m, m.model_fields[parts[0]]) for m in models if parts[0] in m.model_fields]
    if not fields:
        return False
    inner = [m for _, f in fields for m in _models(f.annotation)]
    return len(parts) == 1 or (bool(inner) and _resolves(inner, parts[1:]))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_commands_that_exist(doc):
    text = doc.read_text(encoding="utf-8")
    code = re.findall(r"```.*?```", text, re.DOTALL) + re.findall(r"`[^`\n]+`", text)
    named = {c for span in code for c in re.findall(r"\bxinstruct ([a-z][a-z-]+)", span)}
    missing = sorted(named - _commands())
    assert not missing, f"{doc.name} names commands that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_name_only_config_keys_that_exist(doc):
    sections = set(RunConfig.model_fields)
    keys = {k for k in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)[`:= ]", doc.read_text(encoding="utf-8"))
            if k.split(".")[0] in sections}
    missing = sorted(k for k in keys if not _resolves([RunConfig], k.split(".")))
    assert not missing, f"{doc.name} names config keys that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_speak_of_no_issue_numbers(doc):
    found = re.findall(r"\b[Ii]ssues? \d+", doc.read_text(encoding="utf-8"))
    assert not found, f"{doc.name}: {found} means nothing to a user"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_hold_no_unfilled_placeholders(doc):
    """A line that is only an UPPER_CASE word (or one left at a line's end) is a figure never filled in."""
    found = [line for line in doc.read_text(encoding="utf-8").splitlines()
             if re.fullmatch(r"[A-Z]+(_[A-Z]+)+", line.strip()) or re.search(r"; [A-Z]+_[A-Z]+$", line)]
    assert not found, f"{doc.name}: {found}"
