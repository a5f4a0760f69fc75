"""`xinstruct check-config`: what a config will do, in a few lines, and what in it is likely a mistake."""

from __future__ import annotations

from xinstruct.config import RunConfig
from xinstruct.core.layout import RunLayout
from xinstruct.core.summaries import CorpusSummary
from xinstruct.train.stage import generator_setup


def describe_model(m) -> str:
    model = getattr(m, "model", None)
    if m.backend == "llamacpp":
        return f"llama.cpp, {model or 'the bundled google/gemma-3-270m'}" + (" + a LoRA" if m.lora else "")
    if m.backend == "openai":
        managed = getattr(m, "managed", None)
        where = f"a managed {managed.kind} server" if managed else (m.base_url or ", ".join(m.base_urls or []))
        return f"{model or 'the bundled google/gemma-3-270m'} at {where}"
    return f"{m.backend}, {model or 'the bundled model'}"


def summary(cfg: RunConfig) -> list[tuple[str, str]]:
    ev = cfg.refine.evaluator
    return [("languages", ", ".join(cfg.languages)),
            ("corpus", f"{len(cfg.corpus.inputs)} input(s): " + ", ".join(i.path for i in cfg.corpus.inputs[:3])
             + (" …" if len(cfg.corpus.inputs) > 3 else "")),
            ("seed pairs", f"{len(cfg.seed.inputs)} input(s)" + (", translated" if cfg.seed.translate else "")
             + (", parallel" if cfg.seed.parallel else "") + f", split {cfg.seed.split}"),
            ("generator", f"{describe_model(cfg.generator)}; {generator_setup(cfg)}"),
            ("candidates", f"{cfg.generate.n_per_doc} sampled" + (" + greedy" if cfg.generate.greedy else "")
             + "".join(f" + guided {a:g}" for a in cfg.generate.guided) + " per document"),
            ("refine", f"{ev.kind} evaluator ({describe_model(ev.model)}), {cfg.refine.iterations} round(s)"),
            ("diversify", f"{cfg.diversify.target_per_language} pairs per language"
             + (f" (overrides: {cfg.diversify.targets})" if cfg.diversify.targets else "")),
            ("output", str(cfg.out))]


def warnings(cfg: RunConfig) -> list[str]:
    """Settings that run, but are probably not what the user wants."""
    out = []
    if cfg.refine.evaluator.kind == "judge" and cfg.refine.evaluator.model.backend == "llamacpp" \
            and cfg.refine.evaluator.model.model is None:
        out.append("refine.evaluator is a judge on the bundled 270M model: its grades are close to guesses; "
                   "point it at a strong model (evaluator.model: {backend: openai, ...})")
    if cfg.evaluate.judge.backend == "llamacpp" and cfg.evaluate.judge.model is None:
        out.append("evaluate.judge is the bundled 270M model: its verdicts are plumbing, not results")
    if not cfg.diversify.decontaminate.questions:
        out.append("diversify.decontaminate.questions is empty: pairs that copy evaluation questions are not "
                   "dropped (add the question sets you will evaluate on)")
    corpus = CorpusSummary.read(RunLayout(cfg.out).summary("corpus"))
    for lang in cfg.languages:
        n = corpus.languages[lang].kept if lang in corpus.languages else None
        if n is not None and n < cfg.diversify.target(lang):
            out.append(f"{lang}: the corpus of this run folder kept {n} documents, so at most about {n} pairs "
                       f"per candidate can be drawn; diversify's target is {cfg.diversify.target(lang)}")
    if not cfg.corpus.inputs:
        out.append("corpus.inputs is empty: there is no text to build pairs from")
    if cfg.generator.backend == "openai" and not getattr(cfg.generator, "managed", None) \
            and cfg.generate.few_shot == 0:
        out.append("the generator is a served model this run cannot tune and generate.few_shot is 0: it is asked "
                   "zero-shot, without the seed pairs")
    return out
