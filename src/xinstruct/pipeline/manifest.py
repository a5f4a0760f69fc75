"""<run>/manifest.json: what a run was made from and on what, in one file a reader can trust.

config (as run), per stage its fingerprint, output digest, wall time and records left to retry; the model
files' sha256 (generator, adapters, evaluator, embedder); package versions; the git commit where the package
runs from a checkout; CPU (and whether it has bf16) and GPU; the seeds. Updated after every stage; the card
and the report show it, and `xinstruct manifest RUN` prints it.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from rich.table import Table

from xinstruct.core.fingerprint import path_identity
from xinstruct.core.layout import RunLayout
from xinstruct.core.machine import machine
from xinstruct.core.stage import RunContext
from xinstruct.core.tasks import read_progress
from xinstruct.io.files import read_json, write_json
from xinstruct.models.bundled import BUNDLED_MODEL_ID, bundled_generator, bundled_gguf
from xinstruct.models.identity import model_label

PACKAGES = ("xinstruct", "torch", "transformers", "trl", "peft", "llama_cpp_python", "datatrove", "datasets",
            "pyarrow", "sentence-transformers", "faiss-cpu", "scikit-learn", "httpx", "pydantic")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The commit of the checkout the package runs from (with '+dirty' for uncommitted changes), if any."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def models(ctx: RunContext) -> dict:
    """Every model and adapter a stage recorded as an input, by stage (content hashes, from the stamps)."""
    out = {}
    for stamp in sorted(ctx.layout.root.glob("stages/*.json")):
        inputs = read_json(stamp, {}).get("parts", {}).get("inputs", {})
        found = {k: v for k, v in inputs.items() if isinstance(v, dict) and "backend" in v}
        if found:
            out[stamp.stem] = found
    return out


def model_names(ctx: RunContext) -> dict:
    """Content hash -> a name a person knows, for the model files the run's config and folder point at."""
    cfg, layout = ctx.cfg, ctx.layout
    named = {str(bundled_gguf()): f"{BUNDLED_MODEL_ID} (bundled)",
             str(bundled_generator()[0]): "the bundled generator adapter",
             str(layout.generator_adapter): "the generator adapter trained in this run"}
    for section in (cfg.generator, cfg.refine.evaluator.model, cfg.train.base, cfg.evaluate.judge):
        for key in ("model", "lora"):
            value = getattr(section, key, None)
            if value:
                named.setdefault(str(value), str(value))
    names = {}
    for path, name in named.items():
        try:
            digest = path_identity(path)  # as model_identity hashes it
        except OSError:
            continue
        if digest and digest != path:
            names[digest] = name
    return names


def seeds(cfg) -> dict:
    return {"generate": cfg.generate.seed, "train": cfg.train.seed, "evaluator_train": cfg.refine.evaluator.train.seed,
            "diversify": cfg.diversify.seed}


def update_manifest(ctx: RunContext, stage: str | None = None) -> dict:
    layout = ctx.layout
    manifest = read_json(layout.manifest, {}) or {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest.setdefault("created", now)
    stages = manifest.get("stages", {})
    if stage is not None:
        stamp = read_json(layout.stamp(stage), {})
        stages[stage] = {k: stamp.get(k) for k in ("fingerprint", "output_digest", "seconds", "unresolved",
                                                   "started")}
    manifest.update({
        "updated": now, "xinstruct_commit": git_commit(), "packages": package_versions(), "machine": machine(),
        "seeds": seeds(ctx.cfg), "models": models(ctx), "model_names": model_names(ctx), "stages": stages,
        "config": ctx.cfg.model_dump(mode="json")})
    write_json(layout.manifest, manifest)
    return manifest


def manifest_tables(manifest: dict) -> list:
    """The manifest as rich tables: stages, models, machine and packages."""
    stages = Table(title=f"stages (updated {manifest.get('updated')}, xinstruct {manifest.get('xinstruct_commit')})",
                   title_justify="left")
    for col in ("stage", "fingerprint", "output digest", "seconds", "left to retry", "started"):
        stages.add_column(col)
    for name, s in manifest.get("stages", {}).items():
        left = sum((s.get("unresolved") or {}).values())
        stages.add_row(name, s.get("fingerprint") or "", s.get("output_digest") or "", str(s.get("seconds")),
                       str(left) if left else "", s.get("started") or "")
    models = Table(title="models and adapters (sha256 of local files)", title_justify="left")
    for col in ("stage", "role", "backend", "model", "adapter"):
        models.add_column(col)
    names = manifest.get("model_names", {})
    for stage, roles in manifest.get("models", {}).items():
        for role, m in roles.items():
            models.add_row(stage, role, m.get("backend", ""), model_label(m.get("model"), names),
                           model_label(m.get("lora"), names))
    machine = Table(title="machine, packages, seeds", title_justify="left", show_header=False)
    machine.add_column("")
    machine.add_column("")
    for k, v in {**manifest.get("machine", {}), **manifest.get("packages", {}),
                 **{f"seed.{k}": v for k, v in manifest.get("seeds", {}).items()}}.items():
        machine.add_row(str(k), str(v))
    return [stages, models, machine]



def status_rows(root: Path, stage_plan: list[dict] | None = None) -> list[dict]:
    """Each stage in pipeline order (`stage_plan`: pipeline.run.plan; without it, the stages that have stamps,
    in the order they ran): its state, why, seconds, records to retry and when it last ran."""
    layout = RunLayout(root)
    if stage_plan is None:
        stage_plan = []
        for stamp_path in sorted(layout.root.glob("stages/*.json"), key=lambda p: p.stat().st_mtime):
            stamp = read_json(stamp_path, {})
            left = sum((stamp.get("unresolved") or {}).values())
            stage_plan.append({"stage": stamp_path.stem, "why": "", "state": (
                "not needed" if stamp.get("not_needed") else "done" if stamp.get("complete") else
                "to retry" if left else "unfinished")})
    rows = []
    for row in stage_plan:
        stamp = read_json(layout.stamp(row["stage"]), {}) or {}
        rows.append({**row, "seconds": stamp.get("seconds"), "to_retry": sum((stamp.get("unresolved") or {}).values()),
                     "last_run": stamp.get("started")})
    return rows


def status_tables(root: Path, stage_plan: list[dict] | None = None) -> list:
    """`xinstruct status RUN`: each stage's state and why (`stage_plan`: pipeline.run.plan, what `run` would
    do now; without it, what the stamps say) and, for the model stages, each task's progress (from the files the
    tasks write as they go: the way to follow a run on Ray or Slurm)."""
    layout = RunLayout(root)
    stages = Table(title=f"stages of {root}", title_justify="left")
    for col in ("stage", "state", "seconds", "to retry", "last run"):
        stages.add_column(col, no_wrap=True)
    stages.add_column("why", ratio=1)
    colours = {"done": "green", "stale": "yellow", "to retry": "yellow", "unfinished": "yellow", "not run": "dim"}
    for row in status_rows(root, stage_plan):
        colour = colours.get(row["state"], "")
        state = f"[{colour}]{row['state']}[/{colour}]" if colour else row["state"]
        stages.add_row(row["stage"], state, str(row["seconds"] or ""), str(row["to_retry"] or ""),
                       (row["last_run"] or "")[:16].replace("T", " "), row["why"])
    tables = [stages]
    for folder in (layout.candidates, layout.refine, layout.diversify, layout.evaluate):
        progress = read_progress(folder)
        if not progress:
            continue
        tasks = Table(title=f"tasks in {folder.relative_to(root)}", title_justify="left")
        for col in ("task", "state", "done", "total", "host", "updated"):
            tasks.add_column(col)
        for p in progress:
            tasks.add_row(p["task"], p.get("state", ""), str(p.get("done", "")), str(p.get("total", "")),
                          p.get("host", ""), datetime.fromtimestamp(p.get("updated", 0)).strftime("%H:%M:%S"))
        done = sum(p.get("state") == "done" for p in progress)
        tasks.caption = f"{done} of {len(progress)} tasks done"
        tables.append(tasks)
    return tables
