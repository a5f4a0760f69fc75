"""Stage II grader: likelihood features, the fitted grader, the fast llama.cpp scoring path, the noise check."""

import random
import re
import zlib

import numpy as np
import pytest
from fake_backend import FakeBackend
from sklearn.metrics import roc_auc_score

from xinstruct.models.base import Backend, MissingCapability, Score
from xinstruct.prompts import generation_prompt, scoring_prompt
from xinstruct.refine.evaluator import make_evaluator
from xinstruct.refine.features import (
    FEATURES,
    FeatureScorer,
    ScoreCache,
    cut_mid_sentence,
    families_of,
    instruction_segments,
    reference_texts,
    references_of,
    text_halves,
)
from xinstruct.refine.grader import DEFAULT_FEATURES, GraderModel, LikelihoodEvaluator, fit_grader
from xinstruct.refine.quality import bootstrap_auc_interval, expected_calibration_error, quality
from xinstruct.refine.ratings import GRADES

TEXT = "Mvua kubwa imenyesha jijini Dar es Salaam usiku wa kuamkia leo. Mafuriko yameharibu nyumba nyingi."


class TableScorer(Backend):
    """Scores from a rule, so feature formulas can be checked by hand: a continuation is likelier after a
    context that contains its first word; every request is logged."""

    name = "table"
    capabilities = frozenset({"generate", "loglikelihood"})
    model_id = "table-model"

    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    def score(self, requests):
        self.seen += requests
        out = []
        for ctx, cont in requests:
            if "FAIL" in cont:
                out.append(Score(error="boom"))
                continue
            # a token a word (with its leading space): -2 nats, 1.5 back if the context names the word
            words = [(m.start(), m.group()) for m in re.finditer(r"\s*\S+", cont)]
            values = [-2.0 + (1.5 if w.strip().lower() in ctx.lower() else 0.0) for _, w in words]
            values[0] -= (zlib.crc32(cont.encode()) % 7) / 10
            out.append(Score(sum(values), len(values), values, [o for o, _ in words]))
        return out


def test_instruction_segments_and_text_halves():
    assert instruction_segments("Describe the floods in Dar es Salaam.") == ["Describe the floods in Dar es Salaam."]
    assert instruction_segments("Summarise the recent floods, including how many houses were lost.") == [
        "Summarise the recent floods,", "including how many houses were lost."]
    # a short lead-in ("In one sentence,") joins its clause rather than standing as a content-free segment
    assert instruction_segments("In one sentence, what did the flood destroy?") == [
        "In one sentence, what did the flood destroy?"]
    a, b = text_halves(TEXT)
    assert a.endswith("leo.") and b.startswith("Mafuriko") and f"{a} {b}" == TEXT


def test_cut_mid_sentence():
    assert cut_mid_sentence(TEXT) == 0.0
    assert cut_mid_sentence("Mvua kubwa imenyesha jijini Dar es") == 1.0
    assert cut_mid_sentence('Alisema "tutarudi."') == 0.0
    assert cut_mid_sentence("ฝนตกหนักในกรุงเทพ") == 0.0  # Thai marks no sentence end: no evidence either way


def test_features_by_hand_and_requests_deduplicated():
    backend = TableScorer()
    items = [{"instruction": "Describe the floods in Dar es Salaam.", "output": TEXT},
             {"instruction": "Explain coffee farming, and when to harvest beans.", "output": TEXT},
             {"instruction": "Describe the floods in Dar es Salaam.", "output": "Kahawa inalimwa Kilimanjaro."}]
    rows = FeatureScorer(backend, ["pmi", "pmi_per_token", "pmi_segment_min", "echo"]).compute(items)
    assert all(r.error is None for r in rows)
    # "Describe" is not in the text, "Dar" is: PMI is what the text adds, the baseline's share cancels
    t, e = backend.score([(scoring_prompt(TEXT), " Describe the floods in Dar es Salaam."),
                          (scoring_prompt(""), " Describe the floods in Dar es Salaam.")])
    assert rows[0].values["pmi"] == pytest.approx(t.logprob - e.logprob)
    assert rows[0].values["pmi_per_token"] == pytest.approx(rows[0].values["pmi"] / 7)
    assert rows[0].values["echo"] > 0.2 and rows[1].values["echo"] == 0.0  # "Dar es Salaam" is copied
    # clauses from the per-token values of the two requests: "Explain coffee farming," / "and when to harvest
    # beans." against TEXT, which names none of the words: every token gains 0, so both clauses have PMI 0;
    # the first item's one clause is its whole PMI per token
    assert rows[1].values["pmi_segment_min"] == pytest.approx(0.0)
    assert rows[0].values["pmi_segment_min"] == pytest.approx(rows[0].values["pmi_per_token"])
    # the same empty-text baseline request serves both items that share the instruction: sent once
    sent = backend.seen[:-2]
    assert len(sent) == len(set(sent))
    assert sent.count((scoring_prompt(""), " Describe the floods in Dar es Salaam.")) == 1
    mixed = FeatureScorer(backend, ["pmi_segment_min", "pmi_segment_spread"]).compute(
        [{"instruction": "Tell me about Dar es Salaam, and then about coffee farming.", "output": TEXT}])[0]
    assert mixed.values["pmi_segment_min"] == pytest.approx(0.0)  # "and then about coffee farming." gains nothing
    # "Dar" and "me" (in "imenyesha") are in the text, "es" also in the scoring prompt itself: 2 of 6 tokens gain
    assert mixed.values["pmi_segment_spread"] == pytest.approx(1.5 * 2 / 6)


def test_reference_texts_are_chosen_by_content_not_order():
    texts = [f"Habari namba {k}. " + "Maneno mengi ya habari hii. " * 8 for k in range(9)] + ["Fupi."]
    refs = reference_texts(texts, k=4)
    assert len(refs) == 5 and refs == reference_texts(list(reversed(texts)) + texts[:3], k=4)
    assert "Fupi." not in refs  # short texts only when there are too few long ones
    assert set(reference_texts(["Fupi.", "Nyingine fupi.", "Fupi."])) == {"Fupi.", "Nyingine fupi."}
    long = "Sentensi moja ndefu kidogo. " * 60
    assert len(reference_texts([long])[0]) <= 800 and reference_texts([long])[0].endswith(".")
    # an item is never compared with its own document, whole, cut or truncated
    item = {"lang": "sw", "output": refs[0][:120], "instruction": "Describe it."}  # a reference's own document
    own = references_of(item, {"sw": refs})
    assert own == refs[1:]
    assert references_of({**item, "lang": "th"}, {"sw": refs}) == []


def test_pmi_vs_references_by_hand():
    backend = TableScorer()
    refs = {"sw": ["Kahawa inalimwa Kilimanjaro.", "Mafuriko Dar es Salaam.", "Mpira wa miguu."]}
    item = {"lang": "sw", "instruction": "Describe the floods in Dar es Salaam.", "output": TEXT}
    row = FeatureScorer(backend, ["pmi_vs_references", "pmi_vs_references_total"], references=refs).compute([item])[0]
    q = " Describe the floods in Dar es Salaam."
    t, *r = backend.score([(scoring_prompt(TEXT), q)] + [(scoring_prompt(x), q) for x in refs["sw"]])
    gain = t.logprob - np.mean([s.logprob for s in r])
    assert row.values["pmi_vs_references_total"] == pytest.approx(gain)
    assert row.values["pmi_vs_references"] == pytest.approx(gain / 7)
    # the weaker half of the text against the same references: it needs both kinds of requests
    assert families_of(["half_vs_references"]) == {"halves", "references"}
    half = FeatureScorer(backend, ["half_vs_references", "pmi_vs_references"], references=refs).compute([item])[0]
    a, b = text_halves(TEXT)
    ha, hb = backend.score([(scoring_prompt(a), q), (scoring_prompt(b), q)])
    assert half.values["half_vs_references"] == pytest.approx(
        (min(ha.logprob, hb.logprob) - np.mean([s.logprob for s in r])) / 7)
    # how far apart the halves are, whichever half is the stronger: one half names the instruction's first word
    on, off = "Kilimanjaro ina kahawa nzuri sana.", "Mpira wa miguu ni mchezo maarufu."
    gaps = [FeatureScorer(backend, ["half_gap"]).compute([{**item, "instruction": "Kilimanjaro coffee, please.",
                                                           "output": f"{x} {y}"}])[0].values["half_gap"]
            for x, y in ((on, off), (off, on))]
    assert gaps == pytest.approx([0.5, 0.5])  # "Kilimanjaro" gains 1.5 nats in one half: 1.5 over 3 tokens
    assert FeatureScorer(backend, ["half_gap"]).compute([{**item, "output": f"{off} {off}"}])[0].values[
        "half_gap"] == pytest.approx(0)
    # a language without reference texts falls back to the empty-text baseline: plain PMI, never a silent 0
    alone = FeatureScorer(backend, ["pmi", "pmi_vs_references_total"]).compute([item])[0]
    assert alone.values["pmi_vs_references_total"] == pytest.approx(alone.values["pmi"])


def test_a_failed_score_is_an_error_never_a_value():
    rows = FeatureScorer(TableScorer(), ["pmi"]).compute([{"instruction": "FAIL here", "output": TEXT}])
    assert rows[0].values is None and rows[0].error.startswith("backend_error")


def test_backend_without_loglikelihood_is_refused():
    with pytest.raises(MissingCapability, match="loglikelihood|log-likelihood|can loglikelihood"):
        FeatureScorer(FakeBackend(), ["pmi"])
    model = _fitted(["pmi", "echo"], model_id="fake")
    with pytest.raises(MissingCapability):
        LikelihoodEvaluator(FakeBackend(), model)
    # cheap features alone need no likelihoods
    assert FeatureScorer(FakeBackend(), ["echo", "cut_mid_sentence"]).compute(
        [{"instruction": "Describe it.", "output": TEXT}])[0].values is not None


def _fitted(features, model_id="table-model", seed=0):
    rng = np.random.default_rng(seed)
    grades = [GRADES[k % 3] for k in range(90)]
    x = np.array([[3.0 - 2 * GRADES.index(g) + rng.normal()] + [rng.normal() for _ in features[1:]] for g in grades])
    return fit_grader(x, grades, features, model_id)


def test_grader_round_trip_and_fingerprint(tmp_path):
    model = _fitted(["pmi", "echo"])
    path = tmp_path / "grader.json"
    model.save(path)
    again = GraderModel.load(path)
    x = np.array([[4.0, 0.1], [-1.0, 0.0], [1.0, 0.5]])
    assert np.allclose(model.predict_proba(x), again.predict_proba(x))
    assert again.fingerprint == model.fingerprint and len(model.fingerprint) == 12
    assert model.predict_proba(x)[0].argmax() == 0 and model.predict_proba(x)[1].argmax() == 2
    assert np.allclose(model.predict_proba(x).sum(axis=1), 1)
    other = _fitted(["pmi", "echo"], seed=1)
    assert other.fingerprint != model.fingerprint


def test_likelihood_evaluator_keeps_features_and_refuses_another_model():
    model = _fitted(["pmi", "echo"])
    grades = LikelihoodEvaluator(TableScorer(), model).grade(
        [{"instruction": "Describe the floods in Dar es Salaam.", "output": TEXT},
         {"instruction": "FAIL now", "output": TEXT}])
    assert grades[0].grade in GRADES and set(grades[0].features) == {"pmi", "echo"}
    assert abs(sum(grades[0].probs.values()) - 1) < 1e-5
    assert grades[1].grade is None and grades[1].error.startswith("backend_error")
    with pytest.raises(ValueError, match="fitted on features scored by"):
        LikelihoodEvaluator(TableScorer(), _fitted(["pmi", "echo"], model_id="another-model"))


def test_labels_keep_features_and_probabilities():
    """A label carries the grader's features and its three probabilities, so a user can see why; a pair whose
    evidence failed gets the error's reason instead of a grade."""
    from xinstruct.refine.evidence import DONE, pair_key
    from xinstruct.refine.loop import grade_candidates

    items = [{"id": f"d{i}", "lang": "sw", "instruction": q, "output": TEXT} for i, q in
             enumerate(["Describe the floods in Dar es Salaam.", "Explain coffee farming.", "FAIL to score"])]
    evidence = {pair_key(items[0]): (DONE, {"features": {"pmi": 4.0, "echo": 0.1}}),
                pair_key(items[1]): (DONE, {"features": {"pmi": -1.0, "echo": 0.0}}),
                pair_key(items[2]): ("error", {"error": "backend_error: HTTP 503"})}
    labels = grade_candidates(items, evidence, _fitted(["pmi", "echo"]), 1, "likelihood:table-model")
    assert [lb.get("grade") for lb in labels] == ["best", "worst", None]
    assert all(set(lb["features"]) == {"pmi", "echo"} and set(lb["probs"]) == set(GRADES) for lb in labels[:2])
    assert labels[0]["probs"]["best"] > labels[1]["probs"]["best"]
    assert labels[2]["error"] == "backend_error" and labels[2]["detail"] == "backend_error: HTTP 503"


def test_bundled_grader_loads_with_documented_features():
    model = GraderModel.load("bundled")
    assert model.features == DEFAULT_FEATURES and all(f in FEATURES for f in model.features)
    assert np.asarray(model.coef).shape == (3, len(model.features))


def test_calibration_error_and_quality_figures():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    gold = np.array([0, 2, 1, 1])
    # bins: 0.9 right, 0.8 right, 0.6 wrong, 0.7 right -> |1-.9|/4 + |1-.8|/4 + |0-.6|/4 + |1-.7|/4
    assert expected_calibration_error(probs, gold) == pytest.approx((0.1 + 0.2 + 0.6 + 0.3) / 4)
    rows = [{"kind": k, "grade": g} for k, g in
            [("true", "best"), ("mismatched", "worst"), ("compound", "flawed"), ("truncated", "flawed")]]
    q = quality(probs, rows)
    assert q["auc_true_vs_mismatched"] == 1.0 and q["auc_true_vs_flawed"] == 1.0 and q["accuracy"] == 0.75
    assert q["confusion"]["flawed"] == {"best": 1, "flawed": 1, "worst": 0}
    # the bootstrap interval resamples seed pairs: perfect separation stays perfect, a mixed one brackets its AUC
    assert bootstrap_auc_interval(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3])) == [1.0, 1.0]
    pos, neg = np.linspace(0.2, 1.0, 30), np.linspace(0.0, 0.8, 30)
    lo, hi = bootstrap_auc_interval(pos, neg)
    auc = roc_auc_score(np.r_[np.ones(30), np.zeros(30)], np.r_[pos, neg])
    assert lo < auc < hi and hi - lo < 0.5


def test_make_evaluator_likelihood_uses_the_bundled_grader():
    with pytest.raises(ValueError, match="fitted on features scored by"):
        make_evaluator("likelihood", TableScorer())  # the bundled grader is for the bundled Gemma's scores


def test_score_cache_round_trip(tmp_path):
    cache = ScoreCache(tmp_path / "scores.jsonl")
    backend = TableScorer()
    items = [{"instruction": "Describe the floods in Dar es Salaam.", "output": TEXT}]
    first = FeatureScorer(backend, ["pmi"], cache).compute(items)
    n = len(backend.seen)
    again = FeatureScorer(backend, ["pmi"], ScoreCache(tmp_path / "scores.jsonl")).compute(items)
    assert len(backend.seen) == n and again[0].values == first[0].values


SW_TEXTS = [TEXT, "Wakulima wa kahawa mkoani Kilimanjaro wanasema mvua za mwaka huu zimeongeza mavuno.",
            "Timu ya taifa ya mpira wa miguu ilishinda mechi ya jana kwa mabao mawili kwa moja."]
INSTRUCTIONS = ["Describe last night's heavy rain and the floods it caused.",
                "Explain how this year's rains helped coffee farmers in Kilimanjaro.",
                "Report on yesterday's football match, including the score."]


@pytest.mark.slow
def test_llamacpp_scores_do_not_depend_on_what_else_is_scored(llama):
    """A request's score is the same, bit for bit, alone, among others, in another order, in another subset (a
    resume, another batch size or shard split): score() decodes each request's own path only. It also agrees with
    the plain one-request-from-position-0 path to within llama.cpp's rounding for another batch shape (that path
    fed in 16-token chunks moved sums by up to 2.9 nats, benchmarks/bench_scoring.py)."""
    requests = [(generation_prompt(t), " " + q) for t in SW_TEXTS for q in INSTRUCTIONS]
    requests += [(generation_prompt(""), " " + q) for q in INSTRUCTIONS]
    requests += [(generation_prompt(SW_TEXTS[0]), " Describe last night's"),  # a prefix of another request
                 (generation_prompt(SW_TEXTS[0]) + " Describe last night's", " heavy rain and the floods it caused."),
                 requests[0],  # the same request twice
                 (generation_prompt(SW_TEXTS[1]), ""),  # nothing to score
                 (generation_prompt(SW_TEXTS[1] * 3), " A context of several blocks."),
                 ("word " * 5000, " too long")]
    together = llama.score(requests)
    assert together[-1].error and "n_ctx" in together[-1].error and together[-3].logprob == 0.0
    assert together[0] == together[-4]
    alone = [llama.score([r])[0] for r in requests[:-1]]
    assert alone == together[:-1]  # every field: sums, per-token values, offsets
    shuffled = list(range(len(requests) - 1))
    random.Random(3).shuffle(shuffled)
    again = llama.score([requests[i] for i in shuffled[:9]])
    assert again == [together[i] for i in shuffled[:9]]
    reference = llama.score_sequential(requests[:-1])
    for s, r in zip(together, reference):
        assert s.error is None and s.n_tokens == r.n_tokens == len(s.token_logprobs)
        assert abs(s.logprob - r.logprob) <= 0.5 + 0.1 * s.n_tokens, (s, r)
        assert s.logprob == pytest.approx(sum(s.token_logprobs))
    # offsets: where each token starts in the continuation
    q = requests[0][1]
    assert together[0].token_offsets[0] == 0 and all(0 < o < len(q) for o in together[0].token_offsets[1:])


@pytest.mark.slow
def test_pmi_prefers_the_instruction_written_for_the_text(llama, shared_data):
    """For each of four held-out Thai FLORES instructions, its own passage raises it most (highest PMI of the four
    passages): the comparison the reference gain makes. (Across instructions for one passage, raw PMI also follows
    how much any Thai text raises an instruction: passage 0 gives instruction 3 a higher PMI than its own.)"""
    from xinstruct.seed.parallel import load_instructions, parallel_pairs

    pairs = parallel_pairs(load_instructions("bundled:flores"), shared_data / "text" / "flores_sib200", "th",
                           split="heldout")[:4]
    rows = FeatureScorer(llama, ["pmi"]).compute([{"instruction": q["instruction"], "output": t["output"]}
                                                  for t in pairs for q in pairs])
    pmi = np.array([r.values["pmi"] for r in rows]).reshape(4, 4)
    assert (pmi.argmax(axis=0) == [0, 1, 2, 3]).all(), pmi.round(2)


@pytest.mark.slow
def test_noise_injection_drops_mismatched_keeps_true(llama, shared_data):
    """Issue 11's check on a small sample: 20 held-out Indonesian FLORES pairs with 30% mismatched ones mixed in,
    graded by the default evaluator and kept by the proposed rule (P(best) >= 0.37). A grader at chance drops
    about half of the mismatched pairs and fails. All 10 languages: benchmarks/bench_noise.py."""
    from xinstruct.experiments.noise import noise_injection

    evaluator = make_evaluator("likelihood", llama)
    result = noise_injection(evaluator, "id", shared_data / "text" / "flores_sib200", limit=20)
    assert result["errors"] == 0 and result["mismatched"] == 9
    assert result["mismatched_dropped"] >= 0.95 and result["true_kept"] >= 0.8, result


@pytest.fixture(scope="module")
def scoring_server():
    """llama-cpp-python's OpenAI server on loopback. It returns prompt log-probabilities for echo + logprobs only
    with `logits_all` (its default; passed explicitly), and builds them in Python over Gemma's 262k vocabulary,
    which makes it slow (about a minute a request here): one pair, one feature."""
    from conftest import llama_cpp_server

    with llama_cpp_server("--logits_all", "true") as url:
        yield url


@pytest.mark.slow
def test_features_agree_on_llamacpp_and_openai_server(llama, scoring_server):
    """The same feature from the in-process backend and from the server's echo + logprobs, within the bound of
    test_fast_scoring_equals_one_at_a_time for each of PMI's two log-likelihoods: the two run different batch
    shapes, and llama.cpp's kernels round with the shape (measured between them: 0.19 nats on an 8-token PMI,
    0.57 on a 12-token one, 0.28 on a 2-token log-likelihood). The token counts must agree exactly."""
    from xinstruct.config import model_config
    from xinstruct.models.openai import OpenAIBackend

    item = {"instruction": INSTRUCTIONS[0], "output": SW_TEXTS[0]}
    with OpenAIBackend(model_config(backend="openai", base_url=scoring_server, max_concurrency=1,
                                     read_timeout_s=900, request_timeout_s=900)) as server:
        remote = FeatureScorer(server, ["pmi", "pmi_per_token"]).compute([item])[0]
    local = FeatureScorer(llama, ["pmi", "pmi_per_token"]).compute([item])[0]
    assert remote.error is None, remote.error
    n = len(llama.tokenize(" " + item["instruction"], add_bos=False))
    assert remote.values["pmi"] / remote.values["pmi_per_token"] == pytest.approx(n)
    assert abs(remote.values["pmi"] - local.values["pmi"]) <= 2 * (0.5 + 0.1 * n)


def test_cross_validation_finds_a_real_signal_and_not_a_shuffled_one():
    from xinstruct.experiments.eval_evaluator import cross_validated

    rng = np.random.default_rng(0)
    rows, x = [], []
    for lang in ("sw", "th"):
        for k in range(20):
            for grade, kind, centre in (("best", "true", 2.0), ("flawed", "truncated", 0.0),
                                        ("worst", "mismatched", -2.0)):
                rows.append({"lang": lang, "seed_id": f"{lang}{k}", "grade": grade, "kind": kind, "split": "train"})
                x.append([centre + rng.normal(0, 0.3), rng.normal()])
    report = cross_validated(np.array(x), ["signal", "noise"], rows, ["sw", "th"], ["signal"], "m")
    assert set(report["languages"]) == {"sw", "th"}
    for r in report["languages"].values():
        assert r["n"] == 60 and r["accuracy"] > 0.9 and r["auc_true_vs_mismatched"] == 1.0
        assert r["auc_true_vs_mismatched_ci"] == [1.0, 1.0]
    # the same features with the signal shuffled across rows: cross-validation must not find what is not there
    shuffled = np.array(x)[rng.permutation(len(x))]
    assert cross_validated(shuffled, ["signal", "noise"], rows, ["sw", "th"], ["signal"], "m")["mean"]["accuracy"] < 0.6


def test_threshold_dropping_is_the_lowest_that_drops_the_share():
    from xinstruct.refine.grader import threshold_dropping

    p = np.linspace(0.0, 0.99, 100)  # 0.00, 0.01, ... 0.99
    t = threshold_dropping(p, 0.95)
    assert t == 0.941 and (p < t).mean() == 0.95  # 0.95 to 0.99 pass; 0.94 itself would let a sixth through
    assert threshold_dropping(p, 0.5) == 0.491
    assert (p < threshold_dropping(p, 0.9)).mean() >= 0.9 and (p < threshold_dropping(p, 0.9) - 0.01).mean() < 0.9
    assert threshold_dropping([0.2, 0.8], 0.99) == 0.801  # too few pairs to let any through


def test_keep_threshold_is_derived_out_of_fold_and_drops_what_it_says():
    """The fitted grader's own keep rule: out of fold (grouped by seed pair), the lowest P(best) that drops the
    asked share of mismatched rows; it moves with the asked share, and a grader that is near chance on its rating
    set earns a threshold that drops as asked but keeps few true pairs — said, not hidden."""
    from xinstruct.refine.grader import derive_keep_threshold

    rng = np.random.default_rng(0)

    def rating(signal: float, n: int = 60):
        rows, x = [], []
        for k in range(n):
            for grade, kind, centre in (("best", "true", signal), ("flawed", "truncated", 0.0),
                                        ("worst", "mismatched", -signal)):
                rows.append({"grade": grade, "kind": kind, "lang": "sw", "seed_id": f"s{k}"})
                x.append([centre + rng.normal(0, 1.0)])
        return np.array(x), rows

    x, rows = rating(2.0)
    d = derive_keep_threshold(x, rows, ["signal"], "m", 0.95)
    assert d["out_of_fold"] and d["folds"] == 5 and d["mismatched"] == 60
    assert d["mismatched_dropped"] >= 0.95 and d["true_kept"] > 0.8 and 0 < d["min_best_prob"] < 1
    stricter = derive_keep_threshold(x, rows, ["signal"], "m", 0.99)
    assert stricter["min_best_prob"] > d["min_best_prob"] and stricter["mismatched_dropped"] >= 0.99
    weak = derive_keep_threshold(*rating(0.1), ["signal"], "m", 0.95)
    assert weak["mismatched_dropped"] >= 0.95 and weak["true_kept"] < 0.3
    # one seed pair a language: nothing to hold out, so in sample, and said so
    one = derive_keep_threshold(x[:3], rows[:3], ["signal"], "m", 0.95)
    assert not one["out_of_fold"] and one["folds"] == 1
