"""The English check on candidate instructions, before (py3langid alone) and after (plus the English-word vote):
false rejections on English instructions (the 150 bundled FLORES ones, the issue's two misread ones, and the
5,000 Alpaca instructions of ../shared/data) and how many natural sentences in the paper's languages (Leipzig,
../shared/data) each lets through.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_english.py
"""

from __future__ import annotations

import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LANGS = ("bn", "fi", "hi", "id", "sw", "ta", "th", "tr", "ur", "vi")


def main() -> None:
    from xinstruct.corpus.langid import LanguageIdentifier
    from xinstruct.generate.checks import is_english
    from xinstruct.io.files import read_jsonl
    from xinstruct.seed import bundled_path

    lid = LanguageIdentifier()
    english = {
        "FLORES instructions (bundled)": [r["instruction"] for r in read_jsonl(bundled_path("flores_instructions.jsonl"))],
        "issue 11's misread instructions": ["Summarise Tanganyika's history.", "Describe a natural disaster."],
    }
    alpaca = SHARED / "seed" / "alpaca_5000.json"
    if alpaca.exists():
        english["Alpaca instructions"] = [r["instruction"] for r in json.loads(alpaca.read_text())]
    before = lambda t: lid.detect(t)[0] == "en"
    after = lambda t: is_english(t, lid)[0]
    for name, texts in english.items():
        print(f"{name}: rejected before {sum(not before(t) for t in texts)}/{len(texts)}, "
              f"after {sum(not after(t) for t in texts)}/{len(texts)}")
    if not (SHARED / "text" / "leipzig_sentences").is_dir():
        print("../shared/data/text/leipzig_sentences is absent: non-English side skipped")
        return
    tb = ta = n = 0
    for lang in LANGS:
        texts = [r["text"] for r in read_jsonl(SHARED / "text" / "leipzig_sentences" / f"{lang}.jsonl")]
        b, a = sum(before(t) for t in texts), sum(after(t) for t in texts)
        print(f"Leipzig {lang}: passed as English before {b}/{len(texts)}, after {a}/{len(texts)}")
        tb, ta, n = tb + b, ta + a, n + len(texts)
    print(f"Leipzig, 10 languages: passed as English before {tb}/{n} ({tb / n:.2%}), after {ta}/{n} ({ta / n:.2%})")


if __name__ == "__main__":
    main()
