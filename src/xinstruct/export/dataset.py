"""The dataset in the paper's format: English instruction + " Answer in {Language}.", output in the target language,
with provenance. One split per language plus `all`, written as JSONL, Parquet and an HF `datasets` directory,
all from the same Arrow table so the three agree."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from xinstruct.core.layout import RunLayout
from xinstruct.io.files import write_jsonl
from xinstruct.languages import answer_suffix, get_language
from xinstruct.prompts import assistant_system_prompt

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema([
    ("id", pa.string()), ("lang", pa.string()), ("language", pa.string()),
    ("instruction", pa.string()),  # English instruction + " Answer in {Language}."
    ("output", pa.string()),  # the native text
    ("english_instruction", pa.string()),  # as the generator wrote it
    ("grade", pa.string()), ("p_best", pa.float64()), ("iteration", pa.int64()),
    ("cluster", pa.int64()), ("draw_rank", pa.int64()),
    ("generator", pa.string()), ("evaluator", pa.string()),
    ("source_doc_id", pa.string()), ("source", pa.string()),
])
ASSISTANT_FIELD = pa.field("messages", pa.list_(MESSAGE))  # the AI-assistant (chat) variant


def source_label(source: str | None, inputs: list[str]) -> str | None:
    """A document's file as the dataset names it: relative to the configured input it was read from (the input's
    own name first: `corpora/sw/news.jsonl` for an input folder `…/corpora`), never the building machine's absolute
    path. `hf:` sources and sources outside every input keep their name (a file: its name alone)."""
    if not source or source.startswith("hf:"):
        return source
    path = Path(source)
    for raw in inputs:
        root = Path(raw.split("*", 1)[0]) if "*" in raw else Path(raw)
        root = root if root.is_dir() or "*" in raw else root.parent
        if path.is_relative_to(root):
            return str(Path(root.name) / path.relative_to(root))
    return path.name if path.is_absolute() else source


def export_row(pair: dict, assistant: bool, inputs: list[str] = ()) -> dict:
    """One selected pair (from diversify/<lang>.selected.jsonl) as a dataset row; `inputs`: the corpus input
    paths, for the `source` column."""
    lang = pair["lang"]
    instruction = f"{pair['instruction'].strip()} {answer_suffix(lang)}"
    row = {"id": pair["id"], "lang": lang, "language": get_language(lang).name, "instruction": instruction,
           "output": pair["output"], "english_instruction": pair["instruction"], "grade": pair.get("grade"),
           "p_best": (pair.get("probs") or {}).get("best"), "iteration": pair.get("iteration"),
           "cluster": pair.get("cluster"), "draw_rank": pair.get("selected_rank"),
           "generator": pair.get("generator"), "evaluator": pair.get("evaluator"),
           "source_doc_id": pair.get("doc_id"), "source": source_label(pair.get("source"), list(inputs))}
    if assistant:
        row["messages"] = [{"role": "system", "content": assistant_system_prompt(row["language"])}, {"role": "user", "content": instruction},
                           {"role": "assistant", "content": pair["output"]}]
    return row


def schema(assistant: bool) -> pa.Schema:
    return SCHEMA.append(ASSISTANT_FIELD) if assistant else SCHEMA


def write_dataset(rows: dict[str, list[dict]], folder: Path, formats: list[str], assistant: bool) -> dict[str, Path]:
    """Write every language's rows and the `all` split; returns {format: path}."""
    import pyarrow.parquet as pq

    tables = {lang: pa.Table.from_pylist(r, schema=schema(assistant)) for lang, r in rows.items()}
    tables["all"] = pa.concat_tables(tables.values()) if rows else pa.Table.from_pylist([], schema=schema(assistant))
    written = {}
    if "jsonl" in formats:
        for split, table in tables.items():
            write_jsonl(RunLayout.dataset_split_in(folder, "jsonl", split), table.to_pylist())
        written["jsonl"] = RunLayout.dataset_format_in(folder, "jsonl")
    if "parquet" in formats:
        RunLayout.dataset_format_in(folder, "parquet").mkdir(parents=True, exist_ok=True)
        for split, table in tables.items():
            pq.write_table(table, RunLayout.dataset_split_in(folder, "parquet", split))
        written["parquet"] = RunLayout.dataset_format_in(folder, "parquet")
    if "hf" in formats:
        from datasets import Dataset, DatasetDict
        from datasets.utils import disable_progress_bars

        if not os.environ.get("XINSTRUCT_VERBOSE"):
            disable_progress_bars()  # a "Saving the dataset" bar per split, in the middle of the stage tables
        DatasetDict({split: Dataset(table) for split, table in tables.items()}).save_to_disk(str(RunLayout.dataset_format_in(folder, "hf")))
        written["hf"] = RunLayout.dataset_format_in(folder, "hf")
    return written
