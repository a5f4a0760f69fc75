"""Export: the selected pairs of every language as a dataset (JSONL, Parquet, HF directory) with its card, and
the run report. Reads <run>/diversify/<lang>.selected.jsonl; writes <run>/dataset/ and <run>/report/."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from xinstruct.config import RunConfig
from xinstruct.core.layout import RunLayout
from xinstruct.core.stage import Stage, StageResult
from xinstruct.core.summaries import DiversifySummary, GenerateSummary, KeepThreshold, RefineSummary, RoundSummary
from xinstruct.export.card import write_card
from xinstruct.export.dataset import export_row, write_dataset
from xinstruct.export.report import write_report
from xinstruct.io.files import read_json, read_jsonl
from xinstruct.refine.loop import last_round, weak_languages
from xinstruct.train.stage import generator_setup


def provenance(cfg: RunConfig, rows: dict[str, list[dict]]) -> dict:
    """How the data was made, for the card: models, rounds, draw settings, decontamination."""
    diversified = DiversifySummary.read(RunLayout(cfg.out).diversify_summary)
    against = diversified.decontaminated_against
    every = [r for rs in rows.values() for r in rs]
    return {"name": f"X-Instruction data ({', '.join(rows)})",
            "generators": dict(Counter(r["generator"] for r in every)),
            "evaluators": dict(Counter(r["evaluator"] for r in every)),
            "generator_setup": generator_setup_of(cfg),
            "refinement_rounds": cfg.refine.iterations,
            "refinement": refinement(cfg),
            "embedder": diversified.embedder,
            "target_per_language": {lang: cfg.diversify.target(lang) for lang in rows},
            "clusters": {lang: s.clusters for lang, s in diversified.languages.items()},
            "decontaminated_against": against.to_dict() if against is not None else None,
            "dropped_before_drawing": {lang: s.dropped for lang, s in diversified.languages.items()},
            "manifest": made_from(cfg.out)}


def generator_setup_of(cfg: RunConfig) -> str:
    """How the generator learned the task (tuned on the seeds, bundled adapter, few-shot), as generate logged it."""
    return GenerateSummary.read(RunLayout(cfg.out).summary("generate")).generator_setup or generator_setup(cfg)


def refinement(cfg: RunConfig) -> dict:
    """How Stage II chose the pairs, for the card: the grader, the keep rule, instructions per document, and the
    round whose grades stand."""
    summary = RefineSummary.read(RunLayout(cfg.out).summary("refine"))
    standing = RoundSummary.from_dict(last_round(cfg.out))
    r = cfg.refine
    return {"evaluator": r.evaluator.kind, "grader": r.evaluator.grader if r.evaluator.kind == "likelihood" else None,
            "keep": keep_phrase(standing.keep_rule), "instructions_per_document": r.per_document or "all",
            "rounds_run": len(summary.iterations), "round_kept": summary.final_round,
            "decisions": summary.decisions,
            "heldout_auc_true_vs_mismatched": standing.heldout_aucs(),
            "weak_grader_languages": sorted(weak_languages(standing.heldout))}


def keep_phrase(keep: KeepThreshold | None) -> str:
    """The standing round's keep threshold in words, for the card."""
    if keep is None:
        return "the keep rule of its round"
    phrase = f"P(best) >= {keep.min_best_prob:g}"
    d = keep.derivation
    if keep.source == "derived":
        phrase += (f" (derived from the run's seed rating set: the lowest threshold that drops {d.drop_target:.0%} "
                   "of its mismatched pairs" + (", out of fold)" if d.out_of_fold else ", in sample)"))
    if keep.languages:
        phrase += " (per language: " + ", ".join(f"{k} {v:g}" for k, v in keep.languages.items()) + ")"
    return phrase


def made_from(out) -> dict:
    """The run manifest's essentials (xinstruct commit, stage fingerprints, model hashes, packages, machine):
    enough to tell two datasets apart, and to rebuild this one."""
    manifest = read_json(RunLayout(out).manifest, {}) or {}
    keep = ("xinstruct_commit", "stages", "models", "seeds", "machine", "packages")
    return {k: manifest[k] for k in keep if k in manifest}


def run_export(cfg: RunConfig) -> dict:
    layout = RunLayout(cfg.out)
    selected = {lang: layout.selected_file(lang) for lang in cfg.languages}
    missing = [lang for lang, p in selected.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no selected pairs for {', '.join(missing)} under {layout.diversify}: "
                                "run `xinstruct diversify` first")
    ecfg = cfg.export
    inputs = [spec.path for spec in cfg.corpus.inputs]
    rows = {lang: [export_row(p, ecfg.assistant_variant, inputs) for p in read_jsonl(path)]
            for lang, path in selected.items()}
    folder = layout.dataset
    written = {fmt: str(p) for fmt, p in write_dataset(rows, folder, ecfg.formats, ecfg.assistant_variant).items()}
    made = provenance(cfg, rows) if ecfg.card or ecfg.report else {}
    if ecfg.card:
        written["card"] = str(write_card(folder, rows, made, ecfg))
    if ecfg.report:
        written["report"] = str(write_report(cfg.out, cfg.languages, rows, layout.report, ecfg.report_samples,
                                             provenance=made))
    return {"rows": {lang: len(r) for lang, r in rows.items()}, "written": written}


class ExportStage(Stage):
    name = "export"
    title = ("write the dataset (JSONL, Parquet, HF datasets folder; a config per language and `all`), its card "
             "(statistics table, verb-noun chart) and the run's HTML report")
    needs = ("corpus", "generate", "refine", "diversify")
    config = ("languages", "export", "refine.iterations", "diversify.targets", "diversify.target_per_language",
              "corpus.inputs")
    code = ("export", "htmlpage.py", "prompts")

    def outputs(self) -> list[Path]:
        return [self.layout.dataset] + ([self.layout.report] if self.cfg.export.report else [])

    def run(self) -> StageResult:
        return StageResult(run_export(self.cfg))
