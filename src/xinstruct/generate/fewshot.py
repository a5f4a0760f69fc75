"""Few-shot prompts from the seed pairs, for a generator that cannot be tuned on them.

X-Instruction's generator is a model tuned on the seed pairs. A model served elsewhere (a hosted API, someone
else's vLLM) cannot take the adapter this run trains, so the seed pairs teach it in the prompt instead: before each
document, the `k` seed pairs of its language whose texts are most like it (TF-IDF over character n-grams, which
needs no model and works in every script), the most similar last, nearest the document."""

from __future__ import annotations

from collections import defaultdict

from xinstruct.prompts import few_shot_generation_prompt

SHOT_CHARS = 600  # a shown seed text is cut here (at a space), so k shots stay a small share of the prompt


class SeedShots:
    def __init__(self, pairs: list[dict], k: int):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.k = k
        self.pairs: dict[str, list[dict]] = defaultdict(list)
        for p in pairs:
            self.pairs[p["lang"]].append(p)
        self.index = {}
        for lang, rows in self.pairs.items():
            vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
            self.index[lang] = (vectorizer, vectorizer.fit_transform([r["output"] for r in rows]))

    def examples(self, lang: str, text: str) -> list[tuple[str, str]]:
        """The k (text, instruction) seed pairs of `lang` most like `text`, least similar first; ties keep the
        seed file's order. None in that language: no examples."""
        if lang not in self.index:
            return []
        vectorizer, matrix = self.index[lang]
        similarity = (matrix @ vectorizer.transform([text]).T).toarray().ravel()
        best = sorted(range(len(similarity)), key=lambda i: (-similarity[i], i))[:self.k]
        return [(shorten(self.pairs[lang][i]["output"]), self.pairs[lang][i]["instruction"]) for i in reversed(best)]

    def prompt(self, lang: str, text: str) -> str:
        return few_shot_generation_prompt(text, self.examples(lang, text))


def shorten(text: str, limit: int = SHOT_CHARS) -> str:
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[:cut if cut > limit // 2 else limit].rstrip() + " …"
