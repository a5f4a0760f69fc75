"""The seed stage (I.b) in the run: (English instruction, target-language text) pairs from files, a parallel
corpus, or translation by a teacher model."""

from __future__ import annotations

from pathlib import Path

from xinstruct.config import InputSpec
from xinstruct.core.fingerprint import digest
from xinstruct.core.stage import Stage, StageResult
from xinstruct.corpus.stage import input_identity, missing, spec_problems
from xinstruct.io.files import write_jsonl
from xinstruct.models.base import load_backend
from xinstruct.models.identity import model_identity
from xinstruct.seed import load_pairs
from xinstruct.seed.parallel import load_instructions, parallel_pairs
from xinstruct.seed.translate import translate_pairs


class SeedStage(Stage):
    name = "seed"
    title = "load seed pairs, or build them by translation or from a parallel corpus"
    config = ("languages", "seed")
    code = ("seed", "io", "corpus/readers.py")

    def inputs(self) -> dict:
        seed = self.cfg.seed
        files = [input_identity(s.path) for s in seed.inputs]
        if seed.parallel:
            files += [input_identity(seed.parallel.instructions), input_identity(seed.parallel.passages_dir)]
        out = {"files": digest(files)}
        if seed.translate:
            out["teacher"] = model_identity(seed.translate.teacher)
            out["source"] = digest(input_identity(seed.translate.source))
        return out

    def outputs(self) -> list[Path]:
        return [self.layout.seed_pairs]

    def check(self) -> list[str]:
        seed = self.cfg.seed
        paths = []
        if seed.parallel:
            paths += [seed.parallel.instructions, seed.parallel.passages_dir]
        if seed.translate:
            paths.append(seed.translate.source)
        problems = [f"seed input: {p}" for p in spec_problems(seed.inputs)]
        problems += [f"seed input not found: {m}" for p in paths if (m := missing(p))]
        if not (seed.inputs or seed.parallel or seed.translate):
            problems.append("seed: no inputs, parallel corpus or translation configured")
        return problems

    def run(self) -> StageResult:
        cfg, languages = self.cfg.seed, self.cfg.languages
        rejects: list[dict] = []
        pairs = list(load_pairs(cfg.inputs, rejects, languages))  # other languages: counted rejects
        if cfg.parallel:
            instructions = load_instructions(cfg.parallel.instructions)
            for lang in languages:
                pairs += parallel_pairs(instructions, cfg.parallel.passages_dir, lang)
        if cfg.translate:
            english = english_source(cfg.translate.source, cfg.translate.limit)
            with load_backend(cfg.translate.teacher) as teacher:
                for lang in languages:
                    self.ctx.log(f"seed: translating {len(english)} responses into {lang}")
                    got, bad = translate_pairs(english, lang, teacher, cfg.translate.max_tokens)
                    pairs += got
                    rejects += bad
        pairs = [p for p in pairs if p["lang"] in languages]
        write_jsonl(self.layout.seed_pairs, pairs)
        write_jsonl(self.layout.seed_rejects, rejects)
        summary: dict = {}
        for p in pairs:
            s = summary.setdefault(p["lang"], {"train": 0, "heldout": 0})
            s[p["split"]] = s.get(p["split"], 0) + 1
        summary["rejected"] = len(rejects)
        return StageResult(summary)


def english_source(source: str, limit: int) -> list[dict]:
    """English instruction data (Alpaca JSON list or JSONL) as pairs with lang 'en'."""
    return list(load_pairs([InputSpec(path=source, lang="en", limit=limit)]))
