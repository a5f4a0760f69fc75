"""Seed pairs by translation: English instruction data whose responses a teacher model translates.

This is the paper's seed recipe. Translations that come back empty, cut off, or in the wrong language are set
aside with the reason rather than kept.
"""

from __future__ import annotations

from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.languages import get_language
from xinstruct.models.base import Backend, SamplingParams
from xinstruct.prompts import translation_prompt

STOPS = ("\n###", "###")


def translate_pairs(english: list[dict], lang: str, teacher: Backend, max_tokens: int = 512,
                    batch_size: int = 32) -> tuple[list[dict], list[dict]]:
    """(pairs, rejects): each English (instruction, response) becomes (instruction, response in `lang`)."""
    language = get_language(lang)
    lid = LanguageIdentifier()
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens, stop=STOPS)
    pairs, rejects = [], []
    for start in range(0, len(english), batch_size):
        batch = english[start:start + batch_size]
        results = teacher.generate([translation_prompt(r["output"], language.name) for r in batch], params)
        for record, result in zip(batch, results):
            reason = None
            if result.error:
                reason = "backend_error"
                text = ""
            else:
                completion = result.completions[0]
                text = completion.text.strip()
                if not text:
                    reason = "empty"
                elif completion.finish_reason == "length":
                    reason = "truncated"
                elif not lid.check(text, lang).ok:
                    reason = f"wrong_language:{lid.detect(text)[0]}"
            base = {**record, "lang": lang, "id": f"{record['id']}:{lang}"}
            if reason:
                rejects.append({**base, "stage": "translate", "reason": f"translate:{reason}",
                                "translation": text, "error": result.error})
            else:
                pairs.append({**base, "output": text, "source": f"translated:{teacher.model_id}"})
    return pairs, rejects
