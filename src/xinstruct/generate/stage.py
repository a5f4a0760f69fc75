"""Candidate generation (I.d) in the run: the generator writes English instructions for every cleaned document."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from pathlib import Path

from xinstruct.core.fingerprint import file_sha256
from xinstruct.core.stage import Stage, StageResult
from xinstruct.core.tasks import FileProgress, read_progress, run_tasks, shards_per_language, task_list, write_progress
from xinstruct.generate.fewshot import SeedShots
from xinstruct.io.files import read_json, read_jsonl
from xinstruct.models.base import load_backend
from xinstruct.models.bundled import GENERATOR_DIR
from xinstruct.models.identity import model_identity
from xinstruct.prompts import generation_prompt
from xinstruct.train.stage import (
    generator_config,
    generator_setup,
    uses_bundled_generator,
    uses_few_shot,
    uses_trained_adapter,
)


def clean_documents(layout, lang: str, limit: int | None = None):
    docs = (doc for path in layout.clean_files(lang) for doc in read_jsonl(path))
    return itertools.islice(docs, limit) if limit else docs


class GenerateStage(Stage):
    name = "generate"
    title = "write candidate English instructions for the cleaned corpus (resumes where it stopped)"
    needs = ("corpus", "train")
    config = ("languages", "generator", "generate")
    code = ("generate", "models", "prompts", "corpus/langid.py", "core/tasks.py", "io/cache.py")
    uses_limit = True

    @property
    def task_folder(self) -> Path:
        return self.layout.candidates

    @property
    def start_method(self) -> str:
        """How local workers start: an in-process model runs OpenMP code, which hangs in a worker forked from a
        process that ran it already (core/executors.py); a client of a server forks safely and faster."""
        return "spawn" if self.cfg.generator.backend in ("llamacpp", "transformers") else "fork"

    def inputs(self) -> dict:
        found = {"generator": model_identity(generator_config(self.cfg, self.layout))}
        if self.few_shot():  # the seed pairs are in every prompt
            found["few_shot_seeds"] = file_sha256(self.layout.seed_pairs)
        return found

    def few_shot(self) -> bool:
        return uses_few_shot(self.cfg) and self.layout.seed_pairs.exists()

    def outputs(self) -> list[Path]:
        return [p for lang in self.cfg.languages for p in (self.layout.candidates_file(lang),
                                                           self.layout.candidate_rejects_file(lang))]

    def clear(self) -> None:
        shutil.rmtree(self.layout.candidates, ignore_errors=True)

    def open_backend(self):
        return load_backend(generator_config(self.cfg, self.layout))

    def docs(self, lang: str):
        return clean_documents(self.layout, lang, self.ctx.limit)

    def run_task(self, task, backend, progress) -> dict:
        from xinstruct.generate.candidates import RETRYABLE, doc_key, generate_task

        total = sum(1 for d in self.docs(task.lang) if task.owns(doc_key(d)))
        advance = FileProgress(self.task_folder, task, total, progress and progress(f"generate {task.name}", total))
        stats = generate_task(self.docs(task.lang), task.lang, task, backend, self.cfg.generate, self.task_folder,
                              self.cache_fingerprint(backend), advance, self.prompt_maker(task.lang))
        write_progress(self.task_folder, task, done=total, total=total, state="done", stats=stats,
                       retry=stats.get(RETRYABLE, 0))
        return {**stats, "records": stats.get("documents", 0)}

    def cache_fingerprint(self, backend) -> str:
        """What the task caches' records were made with (a refinement round's regeneration adds its model)."""
        return self.work_fingerprint

    def prompt_maker(self, lang: str):
        """A document's text -> its prompt: the paper's, or few-shot with the seed pairs most like it."""
        if not self.few_shot():
            return generation_prompt

        pairs = list(read_jsonl(self.layout.seed_pairs))
        if self.cfg.seed.split == "train":
            pairs = [p for p in pairs if p.get("split") == "train"]
        shots = SeedShots([p for p in pairs if p["lang"] == lang], self.cfg.generate.few_shot)
        return lambda text: shots.prompt(lang, text)

    def run(self) -> StageResult:
        from xinstruct.generate.candidates import candidate_sources, write_outputs

        cfg = self.cfg
        shards = shards_per_language(cfg.executor)
        if uses_trained_adapter(cfg):
            self.warn_unseen_languages(generator_config(cfg, self.layout))
        sources = Counter(candidate_sources(cfg.generate).labels())
        self.ctx.log(f"generate: {cfg.generator.backend} generator, candidates per document: "
                     f"{', '.join(f'{n} {label}' for label, n in sources.items())}; {shards} task(s) per language")
        setup = generator_setup(cfg)
        if uses_few_shot(cfg) and not self.few_shot():
            setup = f"not tuned here, zero-shot: no seed pairs in {self.layout.seed_pairs} to show it"
        self.ctx.log(f"generate: the generator is {setup}")
        tasks = task_list(cfg.languages, shards)
        run_tasks(self, tasks, self.ctx.progress, self.ctx.log)
        stats = {p["task"]: p.get("stats", {}) for p in read_progress(self.task_folder)}
        summary, unresolved = {}, {}
        for lang in cfg.languages:
            summary[lang] = write_outputs(self.docs(lang), lang, shards, self.task_folder)
            summary[lang]["this_run"] = _add([stats.get(t.name, {}) for t in tasks if t.lang == lang])
            for reason, n in summary[lang]["unresolved"].items():
                unresolved[reason] = unresolved.get(reason, 0) + n
        return StageResult({**summary, "generator_setup": setup}, unresolved)

    def warn_unseen_languages(self, gen) -> None:
        """A generator adapter trained without a language writes for it from the base model's knowledge alone."""
        if uses_bundled_generator(self.cfg):
            trained = sorted((read_json(GENERATOR_DIR / "recipe.json", {}) or {}).get("by_language", {})) or None
        else:
            trained = (read_json(self.layout.summary("train"), {}) or {}).get("languages")
        missing = [lang for lang in self.cfg.languages if trained is not None and lang not in trained]
        if missing:
            self.ctx.log(f"[yellow]warning: the generator adapter was trained on seed pairs in {', '.join(trained)} "
                         f"only; it has never seen {', '.join(missing)}[/yellow]")


def _add(counts: list[dict]) -> dict:
    total: dict = {}
    for c in counts:
        for k, v in c.items():
            if isinstance(v, (int, float)):
                total[k] = round(total.get(k, 0) + v, 2)
    return total
