"""Stage II in the run: per-pair evidence as sharded, cached tasks, then k rounds of grading (refine/loop.py)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xinstruct.core.fingerprint import config_section, digest, path_identity, source_digest
from xinstruct.core.layout import RunLayout
from xinstruct.core.stage import RunContext, Stage, StageResult
from xinstruct.core.tasks import FileProgress, run_tasks, shards_per_language, task_list, write_progress
from xinstruct.generate.stage import GenerateStage
from xinstruct.io.files import read_jsonl, write_json
from xinstruct.models.base import load_backend
from xinstruct.models.bundled import BUNDLED_MODEL_ID
from xinstruct.models.identity import model_identity
from xinstruct.prompts import generation_prompt
from xinstruct.refine.evidence import DONE, Evidence, pair_key, rating_evidence, read_evidence, score_task
from xinstruct.refine.loop import Rounds, evaluator_backend, read_candidates, seed_pairs, unresolved_of
from xinstruct.refine.ratings import GRADES
from xinstruct.train.stage import generator_config

EVIDENCE_CODE = ("refine/features.py", "refine/evaluator.py", "refine/evidence.py", "prompts", "models")


class RefineStage(Stage):
    name = "refine"
    title = ("k rounds of grading candidates (best / flawed / worst), keeping the best instruction per document "
             "and refitting the grader on its confident labels while that improves it on held-out seed pairs")
    needs = ("seed", "generate")
    config = ("languages", "refine")
    code = ("refine", "models", "prompts", "train", "core/tasks.py", "io/cache.py")
    uses_limit = True

    @property
    def task_folder(self) -> Path:
        return self.layout.refine

    @property
    def ecfg(self):
        return self.cfg.refine.evaluator

    def inputs(self) -> dict:
        out = {"evaluator_model": model_identity(self.ecfg.model)}
        if self.ecfg.kind == "likelihood" and self.ecfg.grader != "fit":
            out["grader"] = self.ecfg.grader if self.ecfg.grader == "bundled" else path_identity(self.ecfg.grader)
        if self.cfg.refine.retrain in ("generator", "both"):  # it retrains the generator and generates again
            out["regenerate"] = {k: config_section(self.cfg, k) for k in ("train", "generator", "generate")}
        return out

    def outputs(self) -> list[Path]:
        return [self.layout.refined_file(lang) for lang in self.cfg.languages]

    def clear(self) -> None:
        shutil.rmtree(self.layout.refine, ignore_errors=True)

    # -- evidence, as tasks --------------------------------------------------------------------------------------
    def features(self) -> list[str]:
        from xinstruct.refine.grader import DEFAULT_FEATURES

        return list(self.ecfg.features or DEFAULT_FEATURES)

    def open_backend(self):
        return load_backend(self.ecfg.model)

    def make_evidence(self, backend, kind: str | None = None):
        kind = kind or self.ecfg.kind
        return Evidence(kind, backend, self.features(), self.ecfg.scoring, self.ecfg.max_tokens,
                        self.references() if kind == "likelihood" else None)

    def references(self) -> dict[str, list[str]]:
        """Reference texts per language for the `references` features: from the language's candidate documents
        (the texts being graded), else from its seed pairs; the same for candidates and rating rows."""
        if getattr(self, "_references", None) is None:
            from xinstruct.refine.features import families_of, reference_texts

            self._references = {}
            if "references" in families_of(self.features()):
                seeds = seed_pairs(self.cfg)
                for lang in sorted(set(self.cfg.languages) | {p["lang"] for p in seeds}):
                    texts = [c["output"] for c in self.candidates(lang)] if lang in self.cfg.languages else []
                    self._references[lang] = reference_texts(texts or [p["output"] for p in seeds
                                                                        if p["lang"] == lang])
        return self._references

    @staticmethod
    def evidence_fingerprint(evidence) -> str:
        """What cached evidence was made with: the evaluator's identity (model, adapter, features) and code."""
        return digest({"evidence": evidence.id, "code": source_digest(EVIDENCE_CODE)})

    def candidates(self, lang: str) -> list[dict]:
        return read_candidates(self.layout.candidates, lang, self.ctx.limit)

    def scored_candidates(self, lang: str) -> list[dict]:
        """The candidates this stage's evidence tasks score (a round's runner scores the round's)."""
        return self.candidates(lang)

    def run_task(self, task, backend, progress) -> dict:
        items = [c for c in self.scored_candidates(task.lang) if task.owns(pair_key(c))]
        advance = FileProgress(self.task_folder, task, len(items),
                               progress and progress(f"refine: evidence {task.name}", len(items)))
        evidence = self.make_evidence(backend)
        stats = score_task(items, task, evidence, self.task_folder, self.evidence_fingerprint(evidence),
                           self.cfg.refine.batch_size, self.cfg.refine.retries, advance)
        write_progress(self.task_folder, task, done=len(items), total=len(items), state="done", stats=stats)
        return {**stats, "records": stats["pairs"]}

    def run(self) -> StageResult:
        self.shards = shards_per_language(self.cfg.executor)
        if self.ecfg.kind in ("likelihood", "judge"):  # the same in every round: scored once, as tasks
            run_tasks(self, task_list(self.cfg.languages, self.shards), self.ctx.progress, self.ctx.log)
        summary = Rounds(self).run()
        return StageResult(summary, unresolved_of(summary))

    # -- a round's grader ----------------------------------------------------------------------------------------
    def round_evaluator(self, t: int, rows: list[dict], candidates: dict[str, list[dict]],
                        extra: list[tuple[dict, dict]]) -> RoundGrader:
        """likelihood: features scored once, the grader fitted (or loaded) for this round; judge: its cached
        grades; trained: the LoRA grader of this round, which grades everything again."""
        kind = self.ecfg.kind
        if kind == "trained":
            return self.trained_round(t, rows, candidates, extra)
        folder = self.candidate_folder(t)
        evidence = {lang: read_evidence(candidates[lang], lang, self.shards, folder) for lang in self.cfg.languages}
        rating = self.rating_evidence(rows, kind)
        if kind == "judge":
            return RoundGrader(None, self.judge_id, evidence, *_heldout(rows, rating, _probs_of))
        grader = self.fit_grader(t, rows, rating, extra)
        return RoundGrader(grader, f"likelihood:{grader.fingerprint}", evidence,
                           *_heldout(rows, rating, lambda ev: None, grader), self.grader_threshold(t, grader))

    def grader_threshold(self, t: int, grader) -> dict | None:
        """The keep threshold the grader carries: derived in this run (fitted), or saved with a loaded grader."""
        own = grader.info.get("keep_threshold")
        if own and t == 1 and self.ecfg.grader != "fit":
            return {**own, "loaded_from": self.ecfg.grader}
        return own

    def regenerated_round(self, t: int) -> int | None:
        """The last round up to t that regenerated the candidates; None: they are the generate stage's."""
        return next((k for k in range(t, 1, -1) if self.layout.regenerated(k).exists()), None)

    def candidate_folder(self, t: int) -> Path:
        """Where round t's candidate evidence is cached: the stage's tasks, or a round that regenerated."""
        k = self.regenerated_round(t)
        return self.task_folder if k is None else self.layout.round_dir(k)

    def rating_evidence(self, rows: list[dict], kind: str):
        with self.open_backend() as backend:
            evidence = self.make_evidence(backend, kind)
            if kind == "judge":
                self.judge_id = evidence.id
            return rating_evidence(rows, evidence, RunLayout.task_cache(self.task_folder, "ratings"),
                                   self.evidence_fingerprint(evidence), self.cfg.refine.batch_size)

    def fit_grader(self, t: int, rows: list[dict], rating: list, extra: list[tuple[dict, dict]]):
        """Round 1: fitted on the rating set's train rows (or loaded: bundled, a path); round t > 1: refitted on
        them plus round t-1's confident labels."""
        from xinstruct.refine.grader import GraderModel, derive_keep_threshold, fit_grader

        features = self.features()
        model_id = self.scorer_id()
        if t == 1 and self.ecfg.grader != "fit":
            grader = GraderModel.load(self.ecfg.grader)
            if grader.model_id != model_id:
                raise ValueError(f"refine.evaluator.grader {self.ecfg.grader} was fitted on features scored by "
                                 f"{grader.model_id}, not {model_id} (use grader: fit)")
            return grader
        train = [(r, ev) for r, (status, ev) in zip(rows, rating, strict=True)
                 if status == DONE and r["split"] == "train"] + list(extra)
        have = {r["grade"] for r, _ in train}
        if have != set(GRADES):
            raise ValueError(f"the rating set has no train pairs graded {sorted(set(GRADES) - have)}: the run needs "
                             "seed pairs in at least one language with two or more pairs (seed stage)"
                             + (f"; or set refine.evaluator.grader: bundled ({BUNDLED_MODEL_ID} only)"))
        x = np.array([[ev["features"][f] for f in features] for _, ev in train])
        grader = fit_grader(x, [r["grade"] for r, _ in train], features, model_id,
                            info={"round": t, "rating_rows": sum(r.get("kind") != "self_label" for r, _ in train),
                                  "self_labels": len(extra)})
        # its keep threshold, from the rating rows out of fold; the self-labels (the last len(extra)) join every fit
        n = len(train) - len(extra)
        grader.info["keep_threshold"] = derive_keep_threshold(
            x[:n], [r for r, _ in train[:n]], features, model_id, self.cfg.refine.drop_mismatched,
            (x[n:], [r["grade"] for r, _ in extra]) if extra else None)
        return grader

    def scorer_id(self) -> str:
        with self.open_backend() as backend:
            return backend.model_id

    # -- the slow paths: a trained grader per round, a regenerating generator ------------------------------------
    def trained_round(self, t: int, rows: list[dict], candidates: dict[str, list[dict]],
                      extra: list[tuple[dict, dict]]):
        from xinstruct.refine.training import train_evaluator
        from xinstruct.train.sft import set_cpu_threads

        folder = self.layout.round_dir(t)
        train_rows = [r for r in rows if r["split"] == "train"] + [r for r, _ in extra]
        self.ctx.log(f"refine {t}: training the evaluator on {len(train_rows)} graded pairs")
        set_cpu_threads()
        train_evaluator(train_rows, self.ecfg.train, self.layout.round_evaluator(t), progress=not self.ctx.quiet)
        scoring = RoundScoring(self.ctx, t, "trained", self.round_candidates(t), f"{self.fingerprint}:{t}")
        run_tasks(scoring, task_list(self.cfg.languages, self.shards), self.ctx.progress, self.ctx.log)
        with scoring.open_backend() as backend:
            evidence = scoring.make_evidence(backend)
            heldout = [r for r in rows if r["split"] == "heldout"]
            rating = rating_evidence(heldout, evidence, RunLayout.task_cache(folder, "ratings"),
                                     self.evidence_fingerprint(evidence))
        found = {lang: read_evidence(candidates[lang], lang, self.shards, folder) for lang in self.cfg.languages}
        return RoundGrader(None, evidence.id, found, *_heldout(heldout, rating, _probs_of))

    def round_candidates(self, t: int) -> Path | None:
        """The candidates folder of the last round up to t that regenerated; None: the generate stage's."""
        k = self.regenerated_round(t)
        return None if k is None else self.layout.round_layout(k).candidates

    def regenerate(self, t: int, kept_folder: str) -> dict[str, list[dict]]:
        """Retrain the generator on seed + the kept pairs of the last kept round, then write round t's candidates
        and score their evidence, both as tasks on the run's executor; returns the new candidates."""
        from xinstruct.generate.candidates import write_outputs
        from xinstruct.train.sft import set_cpu_threads, train_generator

        cfg, ctx = self.cfg, self.ctx
        round_layout = self.layout.round_layout(t)
        kept = [{"instruction": r["instruction"], "output": r["output"]}
                for lang in cfg.languages for r in read_jsonl(RunLayout.kept_in(kept_folder, lang))]
        pairs = seed_pairs(cfg, None if cfg.seed.split == "all" else "train") + kept
        ctx.log(f"refine {t}: retraining the generator on {len(pairs)} pairs (seed + kept)")
        set_cpu_threads()
        train_generator(pairs, cfg.train, round_layout.generator, progress=not ctx.quiet)
        generation = RoundGeneration(ctx, t, self.work_fingerprint)
        run_tasks(generation, task_list(cfg.languages, self.shards), ctx.progress, ctx.log)
        for lang in cfg.languages:
            write_outputs(generation.docs(lang), lang, self.shards, generation.task_folder)
        candidates = {lang: read_candidates(round_layout.candidates, lang) for lang in cfg.languages}
        if self.ecfg.kind != "trained":
            scoring = RoundScoring(ctx, t, self.ecfg.kind, round_layout.candidates, f"{self.fingerprint}:{t}")
            run_tasks(scoring, task_list(cfg.languages, self.shards), ctx.progress, ctx.log)
        write_json(self.layout.regenerated(t), {"round": t})
        return candidates


class RoundGeneration(GenerateStage):
    """Round t's candidates from the generator that round retrained (refine.retrain: generator), as the generate
    stage's tasks on the run's executor, into refine/iter-<t>/candidates/ (zero-shot, the paper's prompt). Its
    caches are keyed by refine's work fingerprint, the round and the retrained model."""

    name = "refine: regenerate"

    def __init__(self, ctx: RunContext, t: int, refine_fingerprint: str):
        super().__init__(ctx)
        self.t, self.refine_fingerprint = t, refine_fingerprint
        self.fingerprint = f"{refine_fingerprint}:{t}"

    @property
    def task_folder(self) -> Path:
        return self.layout.round_layout(self.t).candidates

    def generator(self):
        round_cfg = self.cfg.model_copy(update={"output_dir": str(self.layout.round_dir(self.t))})
        return generator_config(round_cfg, self.layout.round_layout(self.t), trained_here=True)

    def open_backend(self):
        return load_backend(self.generator())

    def cache_fingerprint(self, backend) -> str:
        return f"{self.refine_fingerprint}:{self.t}:{backend.model_id}"

    def prompt_maker(self, lang: str):
        return generation_prompt

    @property
    def start_method(self) -> str:
        return "spawn" if self.generator().backend in ("llamacpp", "transformers") else "fork"

    def worker_state(self) -> tuple:
        return self.cfg, self.ctx.limit, self.t, self.refine_fingerprint

    @classmethod
    def from_worker_state(cls, state: tuple) -> RoundGeneration:
        cfg, limit, t, refine_fingerprint = state
        return cls(_worker_context(cfg, limit), t, refine_fingerprint)


class RoundScoring(RefineStage):
    """Evidence for a round's candidates as refine's tasks, into refine/iter-<t>/cache/: the candidates a round
    regenerated (scored by the stage's evaluator), or every candidate graded by the evaluator trained in round t
    (evaluator kind trained). `candidates_folder` None: the generate stage's candidates. `fingerprint`: the
    round's (refine's and the round number), under which datatrove keeps its completion markers."""

    def __init__(self, ctx: RunContext, t: int, kind: str, candidates_folder: Path | None, fingerprint: str):
        super().__init__(ctx)
        self.t, self.kind, self.candidates_folder = t, kind, candidates_folder
        self.fingerprint = fingerprint

    @property
    def task_folder(self) -> Path:
        return self.layout.round_dir(self.t)

    def scored_candidates(self, lang: str) -> list[dict]:
        if self.candidates_folder is None:
            return self.candidates(lang)
        return read_candidates(self.candidates_folder, lang)

    def open_backend(self):
        if self.kind == "trained":
            return load_backend(evaluator_backend(self.cfg, self.layout.round_evaluator(self.t)))
        return super().open_backend()

    def make_evidence(self, backend, kind: str | None = None):
        return super().make_evidence(backend, kind or self.kind)

    def worker_state(self) -> tuple:
        return self.cfg, self.ctx.limit, self.t, self.kind, self.candidates_folder, self.fingerprint

    @classmethod
    def from_worker_state(cls, state: tuple) -> RoundScoring:
        cfg, limit, t, kind, folder, fingerprint = state
        return cls(_worker_context(cfg, limit), t, kind, folder, fingerprint)


def _worker_context(cfg, limit: int | None) -> RunContext:
    from loguru import logger

    return RunContext(cfg, log=logger.info, limit=limit, quiet=True)


@dataclass
class RoundGrader:
    """What one round grades with: a fitted grader (likelihood) or None, its id, every candidate's evidence, the
    held-out rating rows it could grade with their P(grade), and the grader's own keep threshold."""

    grader: object
    id: str
    evidence: dict[str, dict]
    heldout_rows: list[dict]
    heldout_probs: np.ndarray
    keep_threshold: dict | None = None  # the grader's own keep rule and how it was derived (fitted graders)


def _probs_of(ev: dict) -> list[float]:
    """A judge's or trained grader's grade as probabilities (one-hot where it gave none)."""
    if ev.get("probs"):
        return [ev["probs"][g] for g in GRADES]
    return [float(ev.get("grade") == g) for g in GRADES]


def _heldout(rows: list[dict], rating: list, probs_of, grader=None) -> tuple[list[dict], np.ndarray]:
    """The held-out rows that could be graded, and their P(grade): from the fitted grader over their features,
    or from the grades an evaluator gave."""
    scored = [(r, ev) for r, (status, ev) in zip(rows, rating, strict=True)
              if r["split"] == "heldout" and status == DONE]
    if not scored:
        return [], np.zeros((0, len(GRADES)))
    if grader is not None:
        x = np.array([[ev["features"][f] for f in grader.features] for _, ev in scored])
        return [r for r, _ in scored], grader.predict_proba(x)
    return [r for r, _ in scored], np.array([probs_of(ev) for _, ev in scored])
