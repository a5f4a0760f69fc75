"""Evidence for grading an (English instruction, target-language text) pair, from log-likelihoods of the base model.

The central signal is pointwise mutual information in the instruction direction (the direction Stage I writes):
how much likelier the instruction becomes once the model has read the text,

    PMI = log p(" " + instruction | scoring_prompt(text)) − log p(" " + instruction | scoring_prompt("")).

scoring_prompt is the text followed by "In English, the text above answers the request:"; Stage I's generation
prompt in its place separated held-out pairs less well (docs/RESULTS.md).

A raw conditional log-likelihood mostly measures how common an instruction's words are; subtracting the
empty-text baseline leaves what the text explains. A second baseline asks the same question against a few
reference texts of the same language (`pmi_vs_references`): an instruction that any text of the language makes
likely (a generic "Explain why health is important." after Swahili news) is not picked out by this one. The
other features ask narrower questions a real candidate can fail: is every part of the instruction supported by the text (segments), does the whole text stay on the
instruction (halves), does the instruction help predict the text (response direction), is the text one piece.

Every score goes through `Backend.score()`, so any backend with the "loglikelihood" capability serves (llama.cpp
in-process, transformers, an OpenAI-compatible server with echo + logprobs). Requests are deduplicated before
they are sent, and llama.cpp computes shared prefixes once (one text with several instructions, the empty-text
prompt with every instruction). Scores can be cached on disk by (model, context, continuation), so a rerun
costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xinstruct.generate.checks import echo_share
from xinstruct.generate.support import unsupported_name_given_scores
from xinstruct.models.base import Backend, require
from xinstruct.prompts import RESPONSE_SEPARATOR, answer_prompt, scoring_prompt, template
from xinstruct.refine.ratings import truncate_answer

FEATURE_VERSION = 3  # bump when a request, a formula or the scores' numerics change: cached grades and fitted graders then differ
END_MARKER = "\n\n###"  # what follows a finished response in the Alpaca format: the next section

# Where a clause or sentence of an English instruction ends; pieces under MIN_SEGMENT_WORDS words join the last.
_SEGMENT_END = re.compile(r"(?<=[.?!;:,])\s+")
MIN_SEGMENT_WORDS = 4
# Sentence ends in the scripts of the paper's languages (Thai marks them with a space), for splitting texts.
_SENTENCE_END = re.compile(r"(?<=[.!?।॥۔。])\s+|(?<=[\u0E00-\u0E7F])\s+")
_TRAILING = re.compile(r"[\s\"'“”‘’«»)\]*\u200e\u200f]+$")  # closing quotes, brackets, marks after the last word
_TERMINAL = ".!?।॥۔。…|-"  # "|" stands for the danda and "-" for the Urdu full stop in some web text
_THAI = re.compile(r"[\u0E00-\u0E7F]")


def instruction_segments(instruction: str) -> list[str]:
    """The instruction's sentences and clauses (split after . ? ! ; : ,), short pieces merged into the one before,
    so that each segment is a request or a qualification of its own."""
    q = instruction.strip()
    starts = segment_starts(q)
    return [" ".join(q[a:b].split()) for a, b in zip(starts, starts[1:] + [len(q)])]


def segment_starts(q: str) -> list[int]:
    """Where each segment of the (stripped) instruction q starts, in characters."""
    pieces = [0] + [m.end() for m in _SEGMENT_END.finditer(q)]
    ends = pieces[1:] + [len(q)]
    starts: list[int] = []
    for a, b in zip(pieces, ends):
        words = len(q[a:b].split())
        if starts and min(words, len(q[starts[-1]:a].split())) < MIN_SEGMENT_WORDS:
            continue  # joins the segment before
        starts.append(a)
    return starts


def text_halves(text: str) -> tuple[str, str]:
    """The text cut in two at the sentence boundary nearest its middle, else at the space nearest it."""
    text = text.strip()
    middle = len(text) / 2
    cuts = [m.start() for m in _SENTENCE_END.finditer(text)]
    if not cuts:
        cuts = [m.start() for m in re.finditer(r"\s+", text)]
    if not cuts:
        cut = len(text) // 2
        return text[:cut], text[cut:]
    cut = min(cuts, key=lambda c: abs(c - middle))
    return text[:cut].strip(), text[cut:].strip()


def cut_mid_sentence(text: str) -> float:
    """1 when the text visibly stops inside a sentence (its last character, closing quotes aside, is no sentence
    end), 0 otherwise; 0 for Thai, whose sentences carry no end mark. A clipped page or a generation stopped by
    its length limit gives a partial answer."""
    end = _TRAILING.sub("", text)
    if not end:
        return 1.0
    if _THAI.search(text):
        return 0.0
    return 0.0 if end[-1] in _TERMINAL else 1.0


# -- requests -------------------------------------------------------------------------------------------------
def _gen(text: str) -> str:
    return scoring_prompt(text)


def _ans(instruction: str) -> str:
    return answer_prompt(instruction, "alpaca") + RESPONSE_SEPARATOR["alpaca"]


def distractors() -> list[str]:
    """Fixed English instructions on unrelated everyday topics (prompts/distractors.txt): what any text is scored
    against, to tell an instruction this text picks out from one it would raise as much as any other."""
    return [line.strip() for line in template("distractors").splitlines() if line.strip()]


# Reference texts: how many every instruction is also scored on, and the part of each that is read.
REFERENCE_TEXTS = 4
REFERENCE_CHARS = (200, 800)  # texts shorter than 200 characters only when too few are longer; cut at 800


def reference_texts(texts, k: int = REFERENCE_TEXTS) -> list[str]:
    """The k + 1 reference texts of one language, from its texts (any order, repeats allowed): the distinct texts
    first by length (≥ 200 characters) and then by content hash, so the choice does not depend on the order the
    texts come in, each cut at a sentence end before 800 characters. One more than k, so that a text that is a
    reference itself is compared with the k others."""
    lo, hi = REFERENCE_CHARS
    distinct = {t.strip() for t in texts if t and t.strip()}
    ranked = sorted(distinct, key=lambda t: (len(t) < lo, hashlib.sha1(t.encode()).hexdigest()))
    return [t if len(t) <= hi else truncate_answer(t, hi / len(t)) for t in ranked[:k + 1]]


def references_by_language(items) -> dict[str, list[str]]:
    """{language: reference_texts(...)} from the outputs of `items` (dicts with "lang" and "output")."""
    texts: dict[str, list[str]] = {}
    for it in items:
        texts.setdefault(it.get("lang", ""), []).append(it["output"])
    return {lang: reference_texts(group) for lang, group in texts.items()}


def references_of(item: dict, references: dict[str, list[str]]) -> list[str]:
    """The reference texts an item is compared with: its language's, without its own text, at most k."""
    own = item["output"].strip()
    refs = references.get(item.get("lang", ""), [])
    return [r for r in refs if not _same_start(r, own)][:REFERENCE_TEXTS]


def _same_start(a: str, b: str) -> bool:
    """Two texts from one document: a cut, truncated or spliced text starts like the whole one."""
    n = min(len(a), len(b), 100)
    return a[:n] == b[:n]


def _requests(item: dict, families: set[str], references: dict[str, list[str]] | None = None
              ) -> dict[str, tuple[str, str]]:
    """Named (context, continuation) requests for one pair; shared ones (the empty-text baseline, the reference
    texts) repeat across pairs and are scored once. The segments family asks nothing of its own: a clause's
    log-likelihood is the sum over its tokens in q|t and q|- (segment_token_spans)."""
    q, t = item["instruction"].strip(), item["output"].strip()
    out: dict[str, tuple[str, str]] = {}
    if families & {"pmi", "segments", "references"}:
        out["q|t"] = (_gen(t), " " + q)
        out["q|-"] = (_gen(""), " " + q)
    if "references" in families:
        for k, ref in enumerate(references_of(item, references or {})):
            out[f"q|r{k}"] = (_gen(ref), " " + q)
    if "distractors" in families:
        for k, d in enumerate(distractors()):
            out[f"d{k}|t"] = (_gen(t), " " + d)
            out[f"d{k}|-"] = (_gen(""), " " + d)
    if "halves" in families:
        a, b = text_halves(t)
        out["q|ta"] = (_gen(a), " " + q)
        out["q|tb"] = (_gen(b), " " + q)
    if "response" in families:
        a, b = text_halves(t)
        out["t|q"] = (_ans(q), t)
        out["t|-"] = (_ans(""), t)
        out["tb|q,ta"] = (_ans(q) + a, " " + b)
        out["tb|-,ta"] = (_ans("") + a, " " + b)
        out["tb|-"] = (_ans(""), b)
        out["end|q,t"] = (_ans(q) + t, END_MARKER)
        out["end|-,t"] = (_ans("") + t, END_MARKER)
    return out


# -- features -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    name: str
    family: str  # which requests it needs: pmi | references | segments | distractors | halves | response | cheap,
    #              or several joined by "+"
    doc: str  # what it means for a real candidate
    fn: Callable[[dict, dict], float]  # (item, {request name: (logprob, n_tokens)}) -> value


def _lp(s, key):
    return s[key][0]


def _n(s, key):
    return max(1, s[key][1])


def _pmi(s):
    return _lp(s, "q|t") - _lp(s, "q|-")


def segment_token_spans(instruction: str, offsets: list[int]) -> list[range]:
    """Which tokens of the continuation " " + instruction belong to each of its segments, from where each token
    starts (`offsets`, characters into the continuation): a token belongs to the segment its first character
    falls in, the whitespace before a segment counting as the segment's own."""
    q = instruction.strip()
    starts = [len(q[:a].rstrip()) + 1 if a else 0 for a in segment_starts(q)]  # +1: the continuation's space
    spans, k = [], 0
    for j in range(len(starts)):
        end = starts[j + 1] if j + 1 < len(starts) else len(q) + 2
        first = k
        while k < len(offsets) and offsets[k] < end:
            k += 1
        spans.append(range(first, k))
    return spans


def _segment_pmis(it, s) -> list[float]:
    """PMI per token of each segment (clause) of the instruction, from the per-token log-probabilities of the
    whole instruction given the text and given no text."""
    segments = instruction_segments(it["instruction"])
    if len(segments) < 2:
        return [_pmi(s) / _n(s, "q|t")]
    (_, _, with_text, offsets), (_, _, without, _) = s["q|t"], s["q|-"]
    spans = segment_token_spans(it["instruction"], offsets)
    return [sum(with_text[j] - without[j] for j in span) / max(1, len(span)) for span in spans]


def _distractor_pmis(s) -> list[float]:
    """PMI per token of each distractor instruction given this text."""
    ks = sorted({int(k[1:].split("|")[0]) for k in s if k.startswith("d") and k[1].isdigit()})
    return [(_lp(s, f"d{k}|t") - _lp(s, f"d{k}|-")) / _n(s, f"d{k}|t") for k in ks]


def _reference_mean(s) -> float:
    """Mean log p(q | reference text); the empty-text baseline when the language has no reference text besides
    this one (the reference gain is then plain PMI)."""
    refs = [v[0] for k, v in s.items() if k.startswith("q|r")]
    return float(np.mean(refs)) if refs else _lp(s, "q|-")


def _reference_gain(s) -> float:
    """log p(q | text) minus its mean over the reference texts."""
    return _lp(s, "q|t") - _reference_mean(s)


def _half_pmis(s) -> tuple[float, float]:
    return _lp(s, "q|ta") - _lp(s, "q|-"), _lp(s, "q|tb") - _lp(s, "q|-")


FEATURES: dict[str, Feature] = {f.name: f for f in [
    Feature("pmi", "pmi", "How much the text raises the instruction's likelihood, in nats: an instruction the text "
            "answers is predicted by it; a generic or unrelated one is not.", lambda it, s: _pmi(s)),
    Feature("pmi_per_token", "pmi", "PMI per instruction token: the same evidence without favouring long "
            "instructions.", lambda it, s: _pmi(s) / _n(s, "q|t")),
    Feature("npmi", "pmi", "Share of the instruction's surprisal (without the text) that the text explains: near "
            "1 when the text predicts the whole instruction, near 0 when it predicts none of it.",
            lambda it, s: _pmi(s) / max(1e-6, -_lp(s, "q|-"))),
    Feature("cond_per_token", "pmi", "log p(instruction | text) per token, no baseline: mostly how common the "
            "instruction's words are (kept for the ablation).", lambda it, s: _lp(s, "q|t") / _n(s, "q|t")),
    Feature("pmi_vs_references", "references", "log p(instruction | text) minus its mean over a few reference "
            "texts of the same language, per instruction token: how much more this text raises the instruction "
            "than any text of the language does. A generic instruction that every text of the language makes "
            "likely scores near 0 here, however high its plain PMI.",
            lambda it, s: _reference_gain(s) / _n(s, "q|t")),
    Feature("pmi_vs_references_total", "references", "The same gain in nats, not per token.",
            lambda it, s: _reference_gain(s)),
    Feature("pmi_segment_min", "segments", "The least-supported clause of the instruction, PMI per token: an "
            "instruction that asks for something the text does not contain has one clause the text does not "
            "predict, however well it predicts the rest.", lambda it, s: min(_segment_pmis(it, s))),
    Feature("pmi_segment_spread", "segments", "Best minus worst clause PMI per token: an instruction the text "
            "answers in part has one clause well supported and another not.",
            lambda it, s: max(_segment_pmis(it, s)) - min(_segment_pmis(it, s))),
    Feature("pmi_vs_distractors", "distractors", "PMI per token of the instruction minus the mean over fixed "
            "unrelated instructions given the same text: some texts (many names, numbers, English words) raise any "
            "instruction's likelihood; what counts is how much more they raise this one.",
            lambda it, s: _pmi(s) / _n(s, "q|t") - float(np.mean(_distractor_pmis(s)))),
    Feature("distractor_rank", "distractors", "Share of the unrelated instructions this text supports less than "
            "the instruction (per-token PMI): 1 when the text picks this instruction out, lower for a generic one.",
            lambda it, s: float(np.mean([_pmi(s) / _n(s, "q|t") > d for d in _distractor_pmis(s)]))),
    Feature("pmi_half_min", "halves", "PMI per instruction token given the weaker half of the text alone: a text "
            "that drifts off the instruction (a page that changes subject) leaves one half unrelated to it.",
            lambda it, s: min(_half_pmis(s)) / _n(s, "q|t")),
    Feature("half_vs_references", "halves+references", "The weaker half's reference gain per token: log p(instruction | "
            "weaker half of the text) minus its mean over the reference texts. A page that drifts onto another "
            "subject leaves one half that raises the instruction no more than any text of the language.",
            lambda it, s: (min(_lp(s, "q|ta"), _lp(s, "q|tb")) - _reference_mean(s)) / _n(s, "q|t")),
    Feature("half_gap", "halves", "How far apart the two halves of the text are in support of the instruction: "
            "|log p(instruction | first half) − log p(instruction | second half)| per token. Near 0 when the whole "
            "text is on the instruction (or none of it is), large for a text that starts on it and drifts off.",
            lambda it, s: abs(_lp(s, "q|ta") - _lp(s, "q|tb")) / _n(s, "q|ta")),
    Feature("pmi_half_share", "halves", "The weaker half's PMI as a share of the whole text's: near or above 1 when "
            "both halves are on the point, low when only one is.",
            lambda it, s: min(_half_pmis(s)) / max(1.0, abs(_pmi(s)))),
    Feature("ifd", "response", "Response direction (IFD-style), per text token: how much the instruction helps "
            "predict the text. Small for long texts whatever the pair, since most tokens are locally predictable.",
            lambda it, s: (_lp(s, "t|q") - _lp(s, "t|-")) / _n(s, "t|q")),
    Feature("ifd_total", "response", "The same, summed over the text (nats).",
            lambda it, s: _lp(s, "t|q") - _lp(s, "t|-")),
    Feature("ifd_second_half", "response", "Response direction on the second half, given the first: does the "
            "instruction still help once the text has started? Not if the text has drifted off.",
            lambda it, s: (_lp(s, "tb|q,ta") - _lp(s, "tb|-,ta")) / _n(s, "tb|q,ta")),
    Feature("coherence", "response", "How much the first half of the text helps predict the second, per token: "
            "low for a page glued from unrelated pieces.",
            lambda it, s: (_lp(s, "tb|-,ta") - _lp(s, "tb|-")) / _n(s, "tb|-")),
    Feature("end_pmi", "response", "How much the instruction raises the chance that the answer ends where the "
            "text ends: a partial answer stops before an answer to this instruction would.",
            lambda it, s: _lp(s, "end|q,t") - _lp(s, "end|-,t")),
    Feature("echo", "cheap", "Share of the instruction's character 8-grams found in the text: names and numbers "
            "the instruction shares with the text (Latin-script languages mainly).",
            lambda it, s: echo_share(it["instruction"], it["output"])),
    Feature("cut_mid_sentence", "cheap", "1 when the text stops inside a sentence (a clipped page): a partial "
            "answer. On the synthetic rating set it fires on most truncated answers (a short passage with no sentence "
            "end before the cut is cut at a word) and on the few FLORES passages that end without a mark.",
            lambda it, s: cut_mid_sentence(it["output"])),
]}


@dataclass
class FeatureRow:
    values: dict[str, float] | None = None
    error: str | None = None
    unsupported: str | None = None  # "name:Yangpu": a name the text neither spells nor makes likely


class ScoreCache:
    """log-likelihoods on disk, one JSON line per (model, context, continuation): a rerun scores nothing twice.
    Each entry is (sum, tokens, per-token log-probabilities, token offsets)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.data: dict[str, tuple] = {}
        if self.path and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    r = json.loads(line)
                    self.data[r["k"]] = (r["lp"], r["n"], r.get("t"), r.get("o"))

    @staticmethod
    def key(model_id: str, request: tuple[str, str]) -> str:
        return hashlib.sha1(json.dumps([f"v{FEATURE_VERSION}", model_id, *request]).encode()).hexdigest()

    def add(self, items: dict[str, tuple]) -> None:
        self.data.update(items)
        if self.path and items:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.writelines(json.dumps({"k": k, "lp": lp, "n": n, "t": t, "o": o}) + "\n"
                             for k, (lp, n, t, o) in items.items())


def _unsupported_name(item: dict, scores: dict) -> str | None:
    """A name of the instruction that the text neither spells nor makes likely (generate/support.py), from the
    per-token scores the PMI features already asked for; None without them."""
    if "q|t" not in scores or "q|-" not in scores or scores["q|t"][2] is None or scores["q|t"][3] is None:
        return None
    name = unsupported_name_given_scores(item["instruction"], item["output"], scores["q|t"][2], scores["q|-"][2],
                                         scores["q|t"][3])
    return f"name:{name}" if name else None


def families_of(names: list[str]) -> set[str]:
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown features {unknown}: choose from {sorted(FEATURES)}")
    return {family for n in names for family in FEATURES[n].family.split("+")}


class FeatureScorer:
    """Computes the named features for many pairs with as few model calls as the requests allow."""

    def __init__(self, backend: Backend, names: list[str], cache: ScoreCache | None = None, chunk: int = 256,
                 references: dict[str, list[str]] | None = None):
        self.names = list(names)
        self.families = families_of(self.names)
        self.references = references or {}  # {language: reference_texts(...)}, for the references family
        if self.families - {"cheap"}:
            require(backend, "loglikelihood", "likelihood features (" + ", ".join(self.names) + ")")
        self.backend = backend
        self.cache = cache or ScoreCache(None)
        self.chunk = chunk
        self.model_id = backend.model_id

    def compute(self, items: list[dict], on_progress: Callable[[int], None] | None = None) -> list[FeatureRow]:
        per_item = [_requests(it, self.families, self.references) for it in items]
        keys = [{name: ScoreCache.key(self.model_id, req) for name, req in reqs.items()} for reqs in per_item]
        missing: dict[str, tuple[str, str]] = {}
        for reqs, ks in zip(per_item, keys):
            for name, req in reqs.items():
                if ks[name] not in self.cache.data:
                    missing[ks[name]] = req
        errors: dict[str, str] = {}
        todo = list(missing.items())
        # texts grouped together, so that each chunk shares as many prefixes as possible
        todo.sort(key=lambda kv: kv[1])
        for start in range(0, len(todo), self.chunk):
            part = todo[start:start + self.chunk]
            found = {}
            for (k, _), s in zip(part, self.backend.score([req for _, req in part])):
                if s.error:
                    errors[k] = s.error
                else:
                    found[k] = (s.logprob, s.n_tokens, s.token_logprobs, s.token_offsets)
            self.cache.add(found)
            if on_progress:
                on_progress(len(part))
        rows = []
        for item, ks in zip(items, keys):
            failed = [errors[k] for k in ks.values() if k in errors]
            if failed:
                rows.append(FeatureRow(error=f"backend_error: {failed[0]}"))
                continue
            scores = {name: self.cache.data[k] for name, k in ks.items()}
            values = {name: float(FEATURES[name].fn(item, scores)) for name in self.names}
            bad = [name for name, v in values.items() if not math.isfinite(v)]
            rows.append(FeatureRow(error=f"nonfinite_feature: {bad}") if bad else
                        FeatureRow(values=values, unsupported=_unsupported_name(item, scores)))
        return rows
