"""Run order: corpus → seed → train generator → candidates (Stage I) → refine (Stage II) → diversify (Stage III)
→ export (dataset, card, report).

A stage is skipped when what it is made from is unchanged: its fingerprint (config sections, input files,
models, code, and the output digests of the stages it reads) equals the one recorded when it last finished.
Otherwise it runs and the console says why (`corpus.min_chars changed 200 → 520`, `generate's output changed`);
since a stage's output digest feeds the fingerprints downstream, everything after a change is redone too.
Model stages keep per-record caches (journals) under their work fingerprint, so a redo after an upstream change
only does the records that are new or changed.

Each finished stage leaves <run>/stages/<stage>.json (fingerprint, what it was made from, output digest,
time) and <run>/summaries/<stage>.json, both written atomically, and the run's manifest.json is updated.
A stage that ends with records to retry (a server error) records that, and the run stops with StageIncomplete:
the next run resumes it.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from xinstruct.core.fingerprint import changed, describe_change, digest, tree_digest
from xinstruct.core.stage import RunContext, Stage
from xinstruct.corpus.readers import UNKNOWN_LANG
from xinstruct.corpus.stage import CorpusStage
from xinstruct.diversify.stage import DiversifyStage
from xinstruct.export.stage import ExportStage
from xinstruct.generate.stage import GenerateStage
from xinstruct.io.files import read_json, write_json
from xinstruct.pipeline.manifest import update_manifest
from xinstruct.refine.stage import RefineStage
from xinstruct.seed.stage import SeedStage
from xinstruct.train.stage import GeneratorTrainingStage

STAGE_CLASSES: tuple[type[Stage], ...] = (CorpusStage, SeedStage, GeneratorTrainingStage, GenerateStage, RefineStage,
                                          DiversifyStage, ExportStage)
STAGES = tuple(s.name for s in STAGE_CLASSES)
BY_NAME = {s.name: s for s in STAGE_CLASSES}


class RunProblem(ValueError):
    """Something the user must fix before a run can start (a missing input); nothing was written."""


class StageIncomplete(RuntimeError):
    """A stage finished its pass with records that failed for a retryable reason (server errors)."""

    def __init__(self, stage: str, unresolved: dict[str, int]):
        self.stage, self.unresolved = stage, unresolved
        what = ", ".join(f"{n} {reason}" for reason, n in unresolved.items())
        super().__init__(f"{stage}: {what}: these records will be retried by the next run")


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)


class ConsoleProgress:
    """The one progress interface (`(name, total) → advance(n)`) on a rich bar that shows only while a task is
    in flight, so that a library's own display (TRL's training bar) never collides with ours."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.open = 0

    def __call__(self, name: str, total: int):
        if self.bar is None:
            self.bar = progress_bar(self.console)
            self.bar.start()
        task = self.bar.add_task(name, total=total)
        self.open += 1
        state = {"done": 0, "closed": False}

        def advance(n: int, note: str | None = None) -> None:
            if state["closed"]:
                return
            if note is not None:
                self.bar.update(task, description=f"{name} [yellow]{note}[/yellow]" if note else name)
            self.bar.advance(task, n)
            state["done"] += n
            if state["done"] >= total:
                state["closed"] = True
                self._finished()

        if total <= 0:
            advance(0)
        return advance

    def _finished(self) -> None:
        self.open -= 1
        if self.open <= 0:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        self.open = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def required(targets: tuple[str, ...]) -> list[str]:
    """The targets and every stage they read from, in run order."""
    wanted = set(targets)
    for cls in reversed(STAGE_CLASSES):
        if cls.name in wanted:
            wanted |= set(cls.needs)
    return [name for name in STAGES if name in wanted]


def check(ctx: RunContext, targets: tuple[str, ...]) -> list[str]:
    """Problems with the inputs of every stage `targets` need, before anything runs or is written."""
    return [problem for name in required(targets) for problem in BY_NAME[name](ctx).check()]


def fingerprint_parts(stage: Stage) -> dict:
    upstream = {}
    for need in stage.needs:
        stamp = read_json(stage.layout.stamp(need), {})
        upstream[need] = stamp.get("output_digest")
    return {**stage.parts, "upstream": upstream}


def why_redo(stage: Stage, stamp: dict | None, parts: dict) -> str | None:
    """None when the stage is up to date, else the reason it must run, in words."""
    if not stamp:
        return "not run in this folder yet"
    missing = [str(p) for p in stage.outputs() if not p.exists()]
    if missing:
        return f"its output is missing ({missing[0]})"
    old = stamp.get("parts", {})
    reasons = []
    for key, (was, now) in changed(old.get("config", {}), parts["config"]).items():
        reasons.append(f"{key} changed ({describe_change(was, now)})")
    for key in changed(old.get("inputs", {}), parts["inputs"]):
        reasons.append(f"{key} changed")
    moved = [need for need, d in parts["upstream"].items() if old.get("upstream", {}).get(need) != d]
    if moved:
        reasons.append(f"the output of {' and '.join([', '.join(moved[:-1]), moved[-1]] if len(moved) > 1 else moved)} "
                       "changed")
    if old.get("code") != parts["code"]:
        reasons.append("its code changed")
    if old.get("limit") != parts["limit"]:
        reasons.append(f"--limit changed ({old.get('limit')} → {parts['limit']})")
    if reasons:
        return "; ".join(reasons[:4]) + (f" (+{len(reasons) - 4} more)" if len(reasons) > 4 else "")
    if stamp.get("unresolved"):
        n = sum(stamp["unresolved"].values())
        return f"{n} record(s) to retry"
    if not stamp.get("complete", True):
        return "it did not finish"
    return None


def plan(ctx: RunContext, targets: tuple[str, ...] = STAGES) -> list[dict]:
    """What `run` would do now, stage by stage, without running anything: {stage, state, why} with state
    done | stale | not run | to retry | unfinished | not needed. A stage whose own parts are unchanged but that
    reads from a stage to be redone is stale too: it is looked at again once that one has run."""
    rows, redo = [], set()
    for name in required(targets):
        stage = BY_NAME[name](ctx)
        skip = stage.not_needed()
        if skip:
            rows.append({"stage": name, "state": "not needed", "why": skip})
            continue
        stamp = read_json(ctx.layout.stamp(name))
        why = why_redo(stage, stamp, fingerprint_parts(stage))
        upstream = [need for need in stage.needs if need in redo]
        if why is None and upstream:
            why = f"{' and '.join(upstream)} will be redone first (then it runs if their output changed)"
        if why is None:
            state = "done"
        elif not stamp:
            state = "not run"
        elif why.endswith("to retry"):
            state = "to retry"
        elif why == "it did not finish":
            state = "unfinished"
        else:
            state = "stale"
        if why is not None:
            redo.add(name)
        rows.append({"stage": name, "state": state, "why": why or ""})
    return rows


def run_stages(ctx: RunContext, targets: tuple[str, ...] = STAGES, force: tuple[str, ...] = (),
               log=None) -> dict:
    """Bring `targets` up to date, running each stage they need whose fingerprint changed (or in `force`).

    Returns {stage: summary}. Raises StageIncomplete after a stage that left records to retry.
    """
    log = log or ctx.log
    layout = ctx.layout
    problems = check(ctx, targets)
    if problems:
        raise RunProblem("; ".join(problems))
    layout.root.mkdir(parents=True, exist_ok=True)
    write_json(layout.config, ctx.cfg.model_dump(mode="json"))
    results = {}
    for name in required(targets):
        stage = BY_NAME[name](ctx)
        skip = stage.not_needed()
        if skip:
            log(f"[dim]{name}: not needed — {skip}[/dim]")
            stamp = {"stage": name, "not_needed": skip, "output_digest": None}
            if read_json(layout.stamp(name)) != stamp:
                write_json(layout.stamp(name), stamp)
            results[name] = {}
            continue
        parts = fingerprint_parts(stage)
        stage.fingerprint = digest(parts)
        stamp = read_json(layout.stamp(name))
        reason = "--force" if name in force else why_redo(stage, stamp, parts)
        if reason is None:
            log(f"[dim]{name}: up to date, skipped[/dim]")
            results[name] = read_json(layout.summary(name), {})
            continue
        log(f"[bold]{name}[/bold]: {'runs' if not stamp else 'redone'} — {reason}")
        if name in force:
            stage.clear()
        started, begun = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            result = stage.run()
        finally:
            if isinstance(ctx.progress, ConsoleProgress):
                ctx.progress.close()
        seconds = round(time.perf_counter() - started, 1)
        write_json(layout.summary(name), result.summary)
        write_json(layout.stamp(name), {
            "stage": name, "fingerprint": stage.fingerprint, "work_fingerprint": stage.work_fingerprint,
            "parts": parts, "output_digest": tree_digest(stage.outputs(), layout.root),
            "unresolved": result.unresolved, "complete": not result.unresolved, "started": begun,
            "seconds": seconds})
        update_manifest(ctx, name)
        results[name] = result.summary
        log(stage_report(name, result.summary, seconds))
        if result.unresolved:
            raise StageIncomplete(name, result.unresolved)
    return results


def stage_report(name: str, summary: dict, seconds: float):
    """A stage's summary for the console: a table of per-language counts where it has them."""
    # language codes, and the corpus's _unknown (records set aside before a language was known)
    per_lang = {k: v for k, v in summary.items() if isinstance(v, dict) and (len(k) <= 3 and k.isalpha()
                                                                              or k == UNKNOWN_LANG)}
    if not per_lang:
        return f"[green]{name}[/green] done in {seconds:g}s"
    table = Table(title=f"{name} ({seconds:g}s)", title_justify="left")
    columns = []
    for s in per_lang.values():
        for k, v in s.items():
            if k not in columns and not isinstance(v, (list, str)) and k not in ("this_run", "seconds"):
                columns.append(k)
    table.add_column("lang")
    for c in columns:
        table.add_column(c)
    for lang, s in per_lang.items():
        table.add_row(lang, *(_cell(s.get(c)) for c in columns))
    return table


def _cell(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.split(':', 1)[-1]} {v}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def outputs(layout) -> dict:
    return {"cleaned corpus": layout.clean, "corpus rejects": layout.corpus_rejects,
            "seed pairs": layout.seed_pairs, "generator adapter": layout.generator,
            "candidates": layout.candidates, "refinement rounds": layout.refine,
            "refined pairs": layout.refined, "diversified pairs": layout.diversify,
            "dataset": layout.dataset, "dataset card": layout.dataset_card,
            "run report": layout.report_page, "manifest": layout.manifest}
