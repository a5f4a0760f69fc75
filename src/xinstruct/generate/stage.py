"""Candidate generation (I.d) in the run: the generator writes English instructions for every cleaned document."""

from __future__ import annotations

import itertools
from pathlib import Path

from xinstruct.core.stage import Stage, StageResult
from xinstruct.io.files import read_json, read_jsonl
from xinstruct.train.stage import generator_config


def clean_documents(layout, lang: str, limit: int | None = None):
    docs = (doc for path in layout.clean_files(lang) for doc in read_jsonl(path))
    return itertools.islice(docs, limit) if limit else docs


class GenerateStage(Stage):
    name = "generate"
    title = "write candidate English instructions for the cleaned corpus (resumes where it stopped)"
    needs = ("corpus", "train")
    config = ("languages", "generator", "generate")
    code = ("generate", "models", "prompts", "corpus/langid.py")
    uses_limit = True

    def inputs(self) -> dict:
        from xinstruct.models.identity import model_identity

        return {"generator": model_identity(generator_config(self.cfg, self.layout))}

    def outputs(self) -> list[Path]:
        folder = self.layout.candidates
        return [p for lang in self.cfg.languages for p in (self.layout.candidates_file(lang),
                                                           self.layout.candidate_rejects_file(lang, folder))]

    def clear(self) -> None:
        import shutil
        shutil.rmtree(self.layout.candidates, ignore_errors=True)

    def run(self) -> StageResult:
        from xinstruct.generate.candidates import RETRYABLE, generate_candidates
        from xinstruct.models.base import load_backend

        cfg, layout, limit = self.cfg, self.layout, self.ctx.limit
        gen = generator_config(cfg, layout)
        self.warn_unseen_languages(gen)
        counts = {lang: sum(1 for _ in clean_documents(layout, lang, limit)) for lang in cfg.languages}
        summary, unresolved = {}, 0
        with load_backend(gen) as backend:
            self.ctx.log(f"generate: {backend.model_id}, {cfg.generate.n_per_doc} candidate(s) per document")
            for lang in cfg.languages:
                advance = self.ctx.progress(f"generate {lang}", counts[lang])
                result = generate_candidates(clean_documents(layout, lang, limit), lang, backend, cfg.generate,
                                             layout.candidates, on_progress=advance,
                                             fingerprint=self.work_fingerprint)
                summary[lang] = result
                unresolved += result["unresolved"].get(RETRYABLE, 0)
        return StageResult(summary, {RETRYABLE: unresolved} if unresolved else {})

    def warn_unseen_languages(self, gen) -> None:
        """A generator adapter trained without a language writes for it from the base model's knowledge alone."""
        if gen.lora != str(self.layout.generator_adapter):
            return
        trained = (read_json(self.layout.summary("train"), {}) or {}).get("languages")
        missing = [lang for lang in self.cfg.languages if trained is not None and lang not in trained]
        if missing:
            self.ctx.log(f"[yellow]warning: the generator adapter was trained on seed pairs in {', '.join(trained)} "
                         f"only; it has never seen {', '.join(missing)}[/yellow]")
