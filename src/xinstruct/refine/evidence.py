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
from xinstruct.core.tasks import ShardCaches, Task, open_task_cache
from xinstruct.core.work import MapCounts, journaled_map, retry_note, workers_for
from xinstruct.io.cache import DONE, FAILED, RecordCache, one_row_entry
from xinstruct.models.base import Backend, require

SET_ASIDE = "set_aside"  # the pair cannot be scored (too long, a judge's garbage): kept out, not asked again
FINISHED = (DONE, SET_ASIDE)  # a rerun asks again only FAILED pairs (a server error)


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
    counts = MapCounts()
    with open_task_cache(RunLayout.task_cache(folder, task.name), task, fingerprint, finished=FINISHED) as (cache,
                                                                                                        others):
        owned = (it for it in items if task.owns(pair_key(it)))
        for group in journaled_map(owned, pair_key, cache, evidence.compute, one_row_entry(pair_key), batch_size,
                                   workers_for(evidence.backend), retries, lambda result: result[0] == FAILED,
                                   others, on_progress, lambda: retry_note(evidence.backend), counts):
            stats["pairs"] += len(group)
            for _, (status, _) in group:
                stats[status] = stats.get(status, 0) + 1
    stats["skipped_done"] = counts.cached
    if counts.copied:
        stats["copied"] = counts.copied
    return stats


def read_evidence(items: list[dict], lang: str, shards: int, folder: Path) -> dict[str, tuple[str | None, dict]]:
    """{pair key: (status, evidence)} for `items`, from the task caches of their language; (None, {}) for a pair
    no task has scored."""
    with ShardCaches(lambda s: RunLayout.task_cache(folder, Task(lang, s, shards).name), shards) as caches:
        out = {}
        for it in items:
            key = pair_key(it)
            status, rows = caches.of(key).get(key)
            out[key] = (status, rows[0] if rows else {})
        return out


def rating_evidence(rows: list[dict], evidence: Evidence, path: Path, fingerprint: str,
                    batch_size: int = 64) -> list[tuple[str | None, dict]]:
    """Evidence for the synthetic rating set's rows (fitting and checking the grader), cached like candidates."""
    with RecordCache(path, fingerprint, finished=FINISHED) as cache:
        for _committed in journaled_map(rows, rating_key, cache, evidence.compute, one_row_entry(rating_key),
                                        batch_size,
                                        workers_for(evidence.backend)):
            pass
        found = [cache.get(rating_key(r)) for r in rows]
    return [(status, evs[0] if evs else {}) for status, evs in found]
