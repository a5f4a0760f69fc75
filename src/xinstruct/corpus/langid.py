"""Language ID gate: py3langid decides (the most accurate here), pycld2 breaks ties between close neighbours.

Text is NFC-normalised before it gets here. `ms` counts as `id` outright; a neighbour listed in the
language table's `confusable_with` (Hindi read as Marathi, Urdu as Persian...) passes only if pycld2
names the declared language.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

import pycld2

from xinstruct.languages import get_language


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detected: str
    prob: float


@functools.cache
def shared_identifier() -> LanguageIdentifier:
    """One model per process: datatrove copies the pipeline for every task, so a filter's own copy would be loaded
    again (about a second) for each one."""
    return LanguageIdentifier()


class LanguageIdentifier:
    def __init__(self):
        from py3langid.langid import MODEL_DIR, MODEL_FILE
        from py3langid.langid import LanguageIdentifier as _LID

        self._lid = _LID.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)  # probabilities, not log-scores

    def detect(self, text: str) -> tuple[str, float]:
        code, prob = self._lid.classify(unicodedata.normalize("NFC", text))
        return code, float(prob)

    @staticmethod
    def second_vote(text: str) -> str | None:
        try:
            reliable, _, details = pycld2.detect(text)
        except pycld2.error:  # cld2 rejects some byte sequences (e.g. lone surrogates)
            return None
        return details[0][1] if reliable else None

    def check(self, text: str, lang: str, min_prob: float = 0.5) -> Verdict:
        language = get_language(lang)
        code, prob = self.detect(text)
        if code in language.same_as:
            code = lang
        if code == lang and prob >= min_prob:
            return Verdict(True, code, prob)
        if code in language.confusable_with and self.second_vote(text) == lang:
            return Verdict(True, lang, prob)
        return Verdict(False, code if code != lang else f"{lang}_lowprob", prob)
