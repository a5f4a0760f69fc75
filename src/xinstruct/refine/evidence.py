"""What grading a pair needs from a model, computed once per pair and cached.

- `likelihood` (the default): the pair's log-likelihood features (refine/features.py) on the scoring model. They
  do not depend on the fitted grader, so every refinement round refits and regrades from the same features in
  seconds, and a rerun after new candidates appear scores only the new pairs.
- `judge`: a prompted model's grade (and its probabilities where the backend scores them). The judge is the same
  in every round, so its grades are cached like features.
- `trained`: the LoRA grader's grade; it is retrained each round, so its evidence is per round.

Evidence is kept per pair key (the candidate's id and a hash of its instruction and output) in task caches
(io/cache.py), under the fingerprint of what produced it (model, features or evaluator, code): candidates are
split into tasks (language, shard) that run in-process or on datatrove's executors like generation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from xinstruct.core.layout import RunLayout
from xinstruct.core.tasks import Task, shard_of
from xinstruct.core.work import completed, retry_note, workers_for
from xinstruct.io.cache import RecordCache
from xinstruct.models.base import Backend, require

DONE, FAILED, SET_ASIDE = "done", "failed", "set_aside"  # failed: retried on the next run (a server error)


def pair_key(item: dict) -> str:
    """A pair's id and a hash of its content: a regenerated candidate with the same id is scored again."""
    blob = f"{item['instruction']}\x00{item['output']}".encode()
    return f"{item['id']}@{hashlib.sha256(blob).hexdigest()[:16]}"


def rating_key(row: dict) -> str:
    """A rating-set row's identity: its seed pair, how it was built, and its content."""
    blob = f"{row['instruction']}\x00{row['output']}".encode()
    return f"{row['seed_id']}:{row['kind']}@{hashlib.sha256(blob).hexdigest()[:16]}"


class Evidence:
    """One kind of evidence from one backend: `compute(items)` → (status, evidence dict) per item."""

    def __init__(self, kind: str, backend: Backend, features: list[str] | None = None, scoring: str = "auto",
                 max_tokens: int = 96, references: dict[str, list[str]] | None = None):
        self.kind, self.backend = kind, backend
        if kind == "likelihood":
            from xinstruct.refine.features import FEATURE_VERSION, FeatureScorer

            require(backend, "loglikelihood", "the likelihood grader's features")
            self.scorer = FeatureScorer(backend, list(features or []), references=references)
            self.id = f"features-v{FEATURE_VERSION}:{backend.model_id}:{','.join(self.scorer.names)}"
            if "references" in self.scorer.families:  # other reference texts, other features
                blob = json.dumps(references or {}, sort_keys=True, ensure_ascii=False).encode()
                self.id += f":references@{hashlib.sha256(blob).hexdigest()[:12]}"
        else:
            from xinstruct.refine.evaluator import make_evaluator

            self.evaluator = make_evaluator(kind, backend, scoring, max_tokens)
            self.id = self.evaluator.id

    def compute(self, items: list[dict]) -> list[tuple[str, dict]]:
        if self.kind == "likelihood":
            out = []
            for row in self.scorer.compute(items):
                if row.error:
                    status = FAILED if row.error.startswith("backend_error") else SET_ASIDE
                    out.append((status, {"error": row.error}))
                else:
                    out.append((DONE, {"features": {k: round(v, 6) for k, v in row.values.items()},
                                       **({"unsupported": row.unsupported} if row.unsupported else {})}))
            return out
        out = []
        for g in self.evaluator.grade(items):
            if g.error:
                status = FAILED if g.error.startswith("backend_error") else SET_ASIDE
                out.append((status, {"error": g.error, "raw": g.reason}))
            else:
                out.append((DONE, {"grade": g.grade, "probs": g.probs, "reason": g.reason,
                                   "features": g.features}))
        return out


def score_task(items: Iterable[dict], task: Task, evidence: Evidence, folder: Path, fingerprint: str,
               batch_size: int = 64, retries: int = 1, on_progress: Callable[[int], None] | None = None) -> dict:
    """Evidence for every pair of `task` not done yet (a server error is retried at once `retries` times, then on
    the next run); returns this run's counts."""
    stats: dict[str, int] = {"pairs": 0, "skipped_done": 0}
    with RecordCache(RunLayout.task_cache(folder, task.name), fingerprint) as cache:
        def todo():
            for it in items:
                key = pair_key(it)
                if not task.owns(key):
                    continue
                if cache.status(key) in (DONE, SET_ASIDE):
                    stats["skipped_done"] += 1
                    if on_progress:
                        on_progress(1)
                else:
                    yield it

        for group in completed(todo(), evidence.compute, batch_size, workers_for(evidence.backend), retries,
                               failed=lambda result: result[0] == FAILED):
            cache.put_many((pair_key(it), status, [ev]) for it, (status, ev) in group)
            stats["pairs"] += len(group)
            for _, (status, _) in group:
                stats[status] = stats.get(status, 0) + 1
            if on_progress:
                on_progress(len(group), **retry_note(evidence.backend))
    return stats


def read_evidence(items: list[dict], lang: str, shards: int, folder: Path) -> dict[str, tuple[str | None, dict]]:
    """{pair key: (status, evidence)} for `items`, from the task caches of their language; (None, {}) for a pair
    no task has scored."""
    caches = {s: RecordCache(RunLayout.task_cache(folder, Task(lang, s, shards).name), readonly=True) for s in range(shards)}
    try:
        out = {}
        for it in items:
            key = pair_key(it)
            status, rows = caches[shard_of(key, shards)].get(key)
            out[key] = (status, rows[0] if rows else {})
        return out
    finally:
        for c in caches.values():
            c.close()


def rating_evidence(rows: list[dict], evidence: Evidence, path: Path, fingerprint: str,
                    batch_size: int = 64) -> list[tuple[str | None, dict]]:
    """Evidence for the synthetic rating set's rows (fitting and checking the grader), cached like candidates."""
    with RecordCache(path, fingerprint) as cache:
        todo = [r for r in rows if cache.status(rating_key(r)) not in (DONE, SET_ASIDE)]
        for group in completed(todo, evidence.compute, batch_size, workers_for(evidence.backend)):
            cache.put_many((rating_key(r), status, [ev]) for r, (status, ev) in group)
        found = [cache.get(rating_key(r)) for r in rows]
    return [(status, evs[0] if evs else {}) for status, evs in found]
