"""Grade (English instruction, target-language answer) pairs as best / flawed / worst, with a probability each.

Three evaluators behind one `grade(items)` call:
- LikelihoodEvaluator (refine/grader.py, kind `likelihood`, the default): log-likelihood features of the pair on
  the base model (refine/features.py), graded by a small fitted logistic regression; no training run needed.
- ScoringEvaluator: a model fine-tuned on the rating set (see ratings.py) reads the pair and the grade is
  its next word; one prefill per pair, and the grade probabilities are the softmax over the three grade
  words' log-probabilities.
- JudgeEvaluator: any instruction-following model with a rubric (Humpback-style): a one-line reason, then
  "Score: <grade>". Where the backend scores log-likelihoods, the grade word after "Score:" is scored rather
  than sampled, which gives probabilities; otherwise the text is parsed.

A pair that cannot be graded (backend error, unparsable judgement, too long) gets `error` and no grade:
nothing is ever mapped to a grade by default.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from xinstruct.languages import get_language
from xinstruct.models.base import Backend, SamplingParams
from xinstruct.prompts import grade_prompt, judge_prompt
from xinstruct.refine.grader import GraderModel, LikelihoodEvaluator
from xinstruct.refine.ratings import GRADES, Grade

GRADE_TOKENS = tuple(" " + g for g in GRADES)  # single tokens in Gemma's vocabulary
_SCORE = re.compile(r"score\s*[:=]\s*[*\"'`]*\s*(best|flawed|worst)\b", re.IGNORECASE)


def grade_from_logprobs(logprobs: list[float]) -> Grade:
    """Renormalise the three grade words' log-probabilities into a distribution; the grade is its argmax."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    probs = {g: w / total for g, w in zip(GRADES, weights)}
    return Grade(grade=max(probs, key=probs.get), probs=probs)


def parse_score(text: str) -> str | None:
    """The grade after "Score:", or None when there is none or the text names two different grades."""
    found = {m.group(1).lower() for m in _SCORE.finditer(text)}
    return found.pop() if len(found) == 1 else None


MAX_OUTPUT_CHARS = 1200  # answers are clipped in the grading prompt, in training and grading alike


def clip(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """The answer as the evaluator sees it: long answers are cut at a word boundary, so the pair fits in
    the training length and the grade word is never truncated away."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", limit // 2, limit)
    return text[:cut if cut > 0 else limit] + " …"


def _language_name(item: dict) -> str:
    try:
        return get_language(item["lang"]).name
    except KeyError:
        return item["lang"]


class ScoringEvaluator:
    """The trained evaluator: the grade is the next word after the pair."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.id = f"trained:{backend.model_id}"

    def prompts(self, items: list[dict]) -> list[str]:
        return [grade_prompt(it["instruction"], clip(it["output"]), _language_name(it)) for it in items]

    def grade(self, items: list[dict]) -> list[Grade]:
        scored = self.backend.option_logprobs(self.prompts(items), GRADE_TOKENS)
        return [Grade(error=f"backend_error: {s.error}") if s.error else grade_from_logprobs(s.logprobs)
                for s in scored]


class JudgeEvaluator:
    """A prompted judge: reason, then "Score: <grade>"; scored by log-likelihood where the backend can."""

    def __init__(self, backend: Backend, scoring: str = "auto", max_tokens: int = 96):
        self.backend = backend
        self.scoring = scoring if scoring != "auto" else ("parse" if backend.name == "openai" else "logprobs")
        self.max_tokens = max_tokens
        self.id = f"judge:{self.scoring}:{backend.model_id}"

    def grade(self, items: list[dict]) -> list[Grade]:
        prompts = [judge_prompt(it["instruction"], clip(it["output"]), _language_name(it)) for it in items]
        stop = ("Score:", "score:", "\n\n") if self.scoring == "logprobs" else ("\n\n\n",)
        params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=self.max_tokens, stop=stop)
        results = self.backend.generate(prompts, params)
        grades: list[Grade | None] = [None] * len(items)
        to_score = []
        for i, res in enumerate(results):
            if res.error:
                grades[i] = Grade(error=f"backend_error: {res.error}")
                continue
            text = res.completions[0].text.strip()
            if self.scoring == "parse":
                grade = parse_score(text)
                grades[i] = Grade(grade=grade, reason=text) if grade else Grade(error="parse_failure", reason=text)
            else:
                reason = text.split("\n")[0].strip()
                to_score.append((i, f"{prompts[i]} {reason}\nScore:", reason))
        if to_score:
            scored = self.backend.option_logprobs([p for _, p, _ in to_score], GRADE_TOKENS)
            for (i, _, reason), s in zip(to_score, scored):
                grades[i] = (Grade(error=f"backend_error: {s.error}", reason=reason) if s.error
                             else replace(grade_from_logprobs(s.logprobs), reason=reason))
        return grades


def evaluator_examples(rows: list[dict]) -> list[dict]:
    """Graded pairs → prompt/completion rows for train_lora: the completion is the grade word."""
    return [{"prompt": grade_prompt(r["instruction"], clip(r["output"]), _language_name(r)),
             "completion": " " + r["grade"]} for r in rows]


def make_evaluator(kind: str, backend: Backend, scoring: str = "auto", max_tokens: int = 96,
                   grader: str = "bundled", cache=None):
    """`grader` (likelihood only): a fitted model's JSON, or "bundled"; `cache`: a features.ScoreCache."""
    if kind == "likelihood":
        return LikelihoodEvaluator(backend, GraderModel.load(grader), cache)
    if kind == "trained":
        return ScoringEvaluator(backend)
    if kind == "judge":
        return JudgeEvaluator(backend, scoring, max_tokens)
    raise ValueError(f"unknown evaluator kind {kind!r}: use likelihood, trained or judge")
