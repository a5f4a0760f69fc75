"""Tuning rows from an exported dataset (or any instruction/output file) in the paper's prompt format."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from xinstruct.config import InputSpec
from xinstruct.core.layout import RunLayout
from xinstruct.languages import answer_suffix, get_language
from xinstruct.prompts import RESPONSE_SEPARATOR, answer_prompt
from xinstruct.seed import load_pairs


def resolve_data(source: str) -> str:
    """A run folder → its exported JSONL; an exported dataset folder → its `all` split; else as given."""
    if source.startswith("hf:"):
        return source
    path = Path(source)
    for candidate in (RunLayout(path).dataset_all, RunLayout.dataset_split_in(path, "jsonl", "all")):
        if candidate.is_file():
            return str(candidate)
    if path.is_dir():
        raise FileNotFoundError(f"{source}: no exported dataset here (expected dataset/jsonl/all.jsonl; run "
                                "`xinstruct export` first)")
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    return source


def with_suffix(instruction: str, lang: str) -> str:
    """The instruction as the paper trains on it: ending in "Answer in {Language}." (added if missing)."""
    instruction = instruction.strip()
    suffix = answer_suffix(lang)
    return instruction if instruction.endswith(suffix) else f"{instruction} {suffix}"


def load_tuning_pairs(source: str, languages: list[str] | None = None, limit: int | None = None,
                      rejects: list | None = None) -> dict[str, list[dict]]:
    """{lang: [{id, lang, instruction (with suffix), output}]}; unusable records go to `rejects`."""
    rejects = rejects if rejects is not None else []
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for pair in load_pairs([InputSpec(path=resolve_data(source))], rejects):  # unknown languages are rejects
        lang = pair["lang"]
        if languages is not None and lang not in languages:
            continue
        if limit is not None and len(by_lang[lang]) >= limit:
            continue
        by_lang[lang].append({"id": pair["id"], "lang": lang, "instruction": with_suffix(pair["instruction"], lang),
                              "output": pair["output"]})
    return dict(by_lang)


def tuning_examples(pairs: list[dict], template: str) -> list[dict]:
    """Pairs → prompt/completion rows; the loss covers the response only."""
    return [{"prompt": answer_prompt(p["instruction"], template, get_language(p["lang"]).name),
             "completion": RESPONSE_SEPARATOR[template] + p["output"].strip()} for p in pairs]
