"""The Stage contract: what a stage reads, what it writes, what it is made from, and `run(ctx)`.

A stage declares
- `needs`: the stages whose outputs it reads (their output digests are part of its fingerprint);
- `config`: the config sections it reads (dotted names; their values are part of its fingerprint);
- `code`: the package folders/files it runs (their source hash is its code version);
- `inputs()`: anything else it is made from: input files, model and adapter files (content hashes);
- `outputs()`: the files downstream stages read (hashed after it runs);
and does its work in `run()`, returning a StageResult. Where and whether it runs (skipped when its
fingerprint matches, redone when it changed) is the runner's business (pipeline/run.py), never the stage's.

Progress goes through one interface: `ctx.progress(name, total)` returns `advance(n, note=None)`; a note ("3 calls
retrying") shows beside the bar until the next one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from xinstruct.core.fingerprint import config_section, digest, source_digest
from xinstruct.core.layout import RunLayout

if TYPE_CHECKING:
    from xinstruct.config import RunConfig

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, int], Advance]


def no_progress(_name: str, _total: int) -> Advance:
    return lambda _n, note=None: None


@dataclass
class RunContext:
    cfg: RunConfig
    progress: ProgressFactory = no_progress
    log: Callable[[str], None] = print
    limit: int | None = None  # at most this many documents/candidates per language: a trial run
    verbose: bool = False
    quiet: bool = False  # no progress bars (tests, logs)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.cfg.out)


@dataclass
class StageResult:
    """What a stage did. `unresolved` counts records that failed for a reason worth retrying (a server
    error): the stage is not finished until they are done, and the command exits non-zero."""

    summary: dict
    unresolved: dict[str, int] = field(default_factory=dict)  # reason → records to retry

    @property
    def n_unresolved(self) -> int:
        return sum(self.unresolved.values())


class Stage:
    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    config: ClassVar[tuple[str, ...]] = ()
    code: ClassVar[tuple[str, ...]] = ()
    uses_limit: ClassVar[bool] = False  # honours --limit (then the limit is part of its fingerprint)
    title: ClassVar[str] = ""  # one line for --help and the console
    # a stage that splits its model work into tasks (core/tasks.TaskStage): how local workers start ("spawn" where
    # they run OpenMP code, see core/executors.py)
    start_method: str = "fork"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.layout = ctx.layout
        self.fingerprint = ""  # set by the runner: work fingerprint + upstream outputs

    def inputs(self) -> dict:
        """What else decides this stage's results: files outside the run folder, model and adapter files
        (content hashes), including a model this run trained, so that per-record caches follow it."""
        return {}

    @cached_property
    def parts(self) -> dict:
        """What this stage is made from, apart from its upstream stages' outputs (the runner adds those)."""
        return {"config": {s: config_section(self.cfg, s) for s in self.config}, "inputs": self.inputs(),
                "code": source_digest(self.code), "limit": self.ctx.limit if self.uses_limit else None}

    @cached_property
    def work_fingerprint(self) -> str:
        """Settings, models and code, without the upstream data: the key under which per-record model work
        (journals) is cached and reused when only some upstream records changed."""
        return digest({k: self.parts[k] for k in ("config", "inputs", "code")})

    def worker_state(self) -> None:
        """None: a worker rebuilds a stage from its config and fingerprints (core/tasks.TaskStep)."""

    def outputs(self) -> list[Path]:
        """What downstream stages read from this one."""
        raise NotImplementedError

    def not_needed(self) -> str | None:
        """Why this run does not need the stage (e.g. the generator does not use a trained adapter), else None."""
        return None

    def check(self) -> list[str]:
        """Problems the user must fix before anything runs (a missing input file), one line each."""
        return []

    def run(self) -> StageResult:
        raise NotImplementedError

    def clear(self) -> None:
        """Remove this stage's outputs and caches (`--force`)."""
        for path in self.outputs():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
