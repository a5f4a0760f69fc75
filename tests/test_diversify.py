"""Stage III: round-robin draw, decontamination, pool building, diversity figures, resumable embeddings, and the
whole stage on the real MiniLM embedder."""

from pathlib import Path

import numpy as np
import pytest
from synthetic_run import make_run, refined_pairs

from xinstruct.config import DiversifyConfig, EmbedderConfig
from xinstruct.core.tasks import Task
from xinstruct.diversify.cluster import default_k, kmeans
from xinstruct.diversify.decontaminate import Decontaminator, question_texts
from xinstruct.diversify.diversity import (
    coverage_entropy,
    diversity_report,
    diversity_row,
    max_entropy,
    mean_cosine_distance,
    verdict,
)
from xinstruct.diversify.embed import embed, embed_task, gather
from xinstruct.diversify.select import round_robin
from xinstruct.diversify.stage import build_pool, measure_diversity, run_diversify


def test_round_robin_takes_every_cluster_before_a_second_from_any():
    labels = np.array([0] * 10 + [1] * 2 + [2])
    distances = np.arange(13, dtype=float)[::-1]  # later rows are nearer their centroid
    grades = np.zeros(13, int)
    picked = round_robin(labels, distances, grades, target=5)
    assert sorted(labels[picked[:3]]) == [0, 1, 2]  # the first round: one from each cluster
    assert picked[0] == 12  # the nearest row of all goes first
    assert picked[:3] == [12, 11, 9]  # each cluster's nearest: cluster 2, 1, 0 (by distance)
    assert list(labels[picked]).count(0) == 2 and len(picked) == 5
    assert sorted(round_robin(labels, distances, grades, target=100)) == list(range(13))  # target > pool: all


def test_round_robin_prefers_better_grades_within_a_cluster():
    labels = np.zeros(4, int)
    distances = np.array([0.1, 0.2, 0.3, 0.4])
    grades = np.array([1, 1, 0, 1])  # row 2 is 'best', the others 'flawed'
    assert round_robin(labels, distances, grades, target=2) == [2, 0]


def test_default_k_ties_clusters_to_the_target():
    assert default_k(32000, 100000) == 1000
    assert default_k(20, 40) == 2
    assert default_k(32000, 50) == 50


def test_decontamination_finds_copies_overlaps_and_short_containment():
    questions = [("vicuna:1", "How can I improve my time management skills while working from home every day?"),
                 ("mt:2", "Compose an engaging travel blog post about a recent trip to Hawaii."),
                 ("short:3", "Tell me a joke.")]
    d = Decontaminator(questions, n=8)
    copy = d.match("How can I improve my time management skills while working from home every day?")
    assert copy and copy.question_id == "vicuna:1"
    overlap = d.match("Please compose an engaging travel blog post about a recent trip to Kenya's coast.")
    assert overlap and overlap.question_id == "mt:2" and overlap.overlap.startswith("compose an engaging")
    assert d.match("Tell me a joke, please, about cats and dogs living together.").question_id == "short:3"
    assert d.match("Improve my time management?").question_id == "vicuna:1"  # short instruction inside a question
    assert d.match("Write a recipe for pilau with beef and spices for a wedding.") is None
    assert d.match("") is None
    assert question_texts({"turns": ["first", "second"]}) == ["first", "second"]
    assert question_texts({"instruction": "x"}) == ["x"]


def test_build_pool_sets_aside_with_reasons_and_keeps_the_better_duplicate():
    records = [{"id": "a", "instruction": "Write a poem about rain.", "grade": "flawed", "probs": {"best": 0.9}},
               {"id": "b", "instruction": "write a poem about RAIN", "grade": "best", "probs": {"best": 0.4}},
               {"id": "c", "instruction": "Tell me a joke.", "grade": "best", "probs": {"best": 0.5}},
               {"id": "d", "instruction": "List three rivers.", "grade": "worst", "probs": {"best": 0.1}}]
    pool, dropped = build_pool(records, ["best", "flawed"], Decontaminator([("q", "Tell me a joke.")]), dedup=True)
    assert [r["id"] for r in pool] == ["b"]
    reasons = {r["id"]: r["drop_reason"] for r in dropped}
    assert reasons == {"a": "duplicate_instruction", "c": "contaminated", "d": "grade:worst"}
    assert next(r for r in dropped if r["id"] == "a")["duplicate_of"] == "b"


def test_diversity_figures_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = x @ x.T
    brute = 1 - (cos.sum() - np.trace(cos)) / (40 * 39)
    assert mean_cosine_distance(x) == pytest.approx(brute, abs=1e-5)
    assert coverage_entropy(np.array([0, 1, 2, 3])) == pytest.approx(np.log(4))
    assert max_entropy(3, 10) == pytest.approx(np.log(3))
    labels = np.array([0] * 30 + [1] * 5 + [2] * 5)
    even = np.array([0, 1, 2, 30, 31, 32, 35, 36, 37])  # three from each cluster
    report = diversity_report(x, labels, 3, even)
    assert report["entropy_fraction"] == pytest.approx(1.0)
    assert report["random_entropy_fraction"] < 1.0


def test_kmeans_recovers_separated_groups():
    rng = np.random.default_rng(1)
    centres = np.eye(8, dtype=np.float32)[:3] * 10
    x = np.concatenate([c + rng.normal(scale=0.3, size=(50, 8)) for c in centres]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, labels, distances = kmeans(x, 3, seed=0)
    assert len({tuple(labels[i * 50:(i + 1) * 50]) for i in range(3)}) == 3
    assert all(len(set(labels[i * 50:(i + 1) * 50])) == 1 for i in range(3))
    assert distances.shape == (150,) and (distances >= 0).all()


@pytest.mark.slow
def test_embeddings_resume_from_the_cache_and_copy_across_splits(tmp_path, embedder):
    from xinstruct.io.cache import BlobCache

    texts = [p["instruction"] for p in refined_pairs("sw", 30)]
    items = [(f"r{i}", t) for i, t in enumerate(texts)]
    cfg = EmbedderConfig(shard_size=8)
    path, whole = tmp_path / "sw.sqlite", Task("sw")

    class Killed(Exception):
        pass

    calls = []

    def dies_on_third_batch():
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        return embedder

    with pytest.raises(Killed):
        embed_task(items, path, "fp", cfg, dies_on_third_batch, whole)
    assert embed_task(items, path, "fp", cfg, lambda: embedder, whole)["embedded"] == 30 - 16  # two batches were kept

    def no_model():
        raise AssertionError("the model must not load when every text is cached")

    assert embed_task(items, path, "fp", cfg, no_model, whole)["cached"] == 30
    with BlobCache(path, readonly=True) as cache:
        vectors = gather(items, 30, lambda _key: cache)
    assert vectors.shape == (30, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    # no padding: a text's vector does not depend on the texts batched with it, so any split gives the same
    assert np.array_equal(vectors, np.stack([embed(embedder, [t], cfg)[0] for t in texts]))

    changed = items[:5] + [("r5", "Something else entirely.")] + items[6:]
    assert embed_task(changed, path, "fp", cfg, lambda: embedder, whole)["embedded"] == 1
    # another split finds the vectors in this cache (same fingerprint) and copies them
    first_of_two = Task("sw", 0, 2)
    half = embed_task(items, tmp_path / f"{first_of_two.name}.sqlite", "fp", cfg, no_model, first_of_two)
    assert half["copied"] == sum(first_of_two.owns(k) for k, _ in items) > 0 and half["embedded"] == 0
    other = embed_task(items, path, "another embedder", cfg, lambda: embedder, whole)
    assert other["cache_reset"] == 1 and other["embedded"] == 30


def test_one_embedder_loader(monkeypatch):
    """Stage III and the eval-generator experiment load the embedder through models/embedder.load_embedder; the
    experiment on CPU."""
    import xinstruct.diversify.stage as diversify_stage
    import xinstruct.models.embedder as embedder_module
    from xinstruct.experiments import eval_generator as quality

    assert quality.load_embedder is embedder_module.load_embedder
    assert diversify_stage.sentence_embedder is embedder_module  # where the stage looks up load_embedder
    assert embedder_module.embedder_path("some/model") == "some/model"
    bundled = Path(embedder_module.embedder_path("bundled"))
    assert (bundled / "config.json").is_file()
    loaded = []
    monkeypatch.setattr(quality, "load_embedder", lambda cfg: loaded.append(cfg) or "model")
    quality.embedder.cache_clear()
    try:
        assert quality.embedder() == "model"
    finally:
        quality.embedder.cache_clear()
    assert loaded == [EmbedderConfig(model="bundled", device="cpu")]


@pytest.mark.slow
def test_stage_draws_a_diverse_set_and_beats_random(tmp_path, embedder, monkeypatch):
    import xinstruct.models.embedder as embedder_module

    monkeypatch.setattr(embedder_module, "load_embedder", lambda _c: embedder)
    out = make_run(tmp_path, {"sw": 200, "th": 120})
    cfg = DiversifyConfig(target_per_language=40, n_clusters=8)
    summary = run_diversify(out, ["sw", "th"], cfg)
    for lang, pool_size in (("sw", 200), ("th", 120)):
        s = summary["languages"][lang]
        assert s["selected"] == 40 and s["pool"] <= pool_size
        d = s["diversity"]
        assert d["entropy_fraction"] >= 0.95
        assert d["entropy_fraction"] > d["random_entropy_fraction"]
        assert d["mean_cosine_distance"] > d["random_mean_cosine_distance"]
        assert measure_diversity(out, lang) == pytest.approx(d)  # recomputed from the files alone
        assert sum(s["selected_per_cluster"]) == 40 and sum(s["cluster_sizes"]) == s["pool"]
    with pytest.raises(FileNotFoundError, match="xinstruct refine"):
        run_diversify(out, ["hi"], cfg)


def test_round_robin_caps_a_form_while_others_are_left():
    """No first word takes more than max_form_share of the draw while other forms are left (issue 23: 43% of a
    demo's instructions started with "Explain"); without others, the capped ones still fill the target."""
    from xinstruct.diversify.select import instruction_form

    forms = [instruction_form(q) for q in ["Explain A.", "Explain B.", "Explain C.", "What is D?", "Explain E.",
                                           "How do I F?", "Explain G.", "In two sentences, H.", "Explain I."]]
    assert forms[7] == "in" and forms[3] == "what"
    labels, distances, grades = np.arange(9), np.zeros(9), np.zeros(9, int)  # every row its own cluster
    picked = round_robin(labels, distances, grades, target=5, forms=forms, max_form_share=0.4)
    assert sum(forms[i] == "explain" for i in picked) == 2 and len(picked) == 5
    everything = round_robin(labels, distances, grades, target=9, forms=forms, max_form_share=0.4)
    assert sorted(everything) == list(range(9))
    assert round_robin(labels, distances, grades, 5) == round_robin(labels, distances, grades, 5, forms, 1.0)


def test_verdict_and_row():
    """`xinstruct diversity`'s verdict: the target met, missed, or nothing to choose from; and its table row."""
    good = {"pool": 100, "selected": 40, "clusters": 8, "entropy_fraction": 0.97, "random_entropy_fraction": 0.9,
            "random_entropy_fraction_sd": 0.01, "mean_cosine_distance": 0.8, "random_mean_cosine_distance": 0.7,
            "random_mean_cosine_distance_sd": 0.01}
    assert verdict(good) == "ok"
    assert verdict({**good, "entropy_fraction": 0.94}) == "below target"
    assert verdict({**good, "mean_cosine_distance": 0.6}) == "below target"
    assert verdict({**good, "selected": 100}) == "selection = whole pool"
    assert diversity_row("sw", good) == ("sw", "100", "40", "8", "0.970", "0.900 (0.010)", "0.8000", "0.7000 (0.0100)",
                                         "ok")
    assert diversity_row("th", {"pool": 3, "selected": 0}) == ("th", "3", "0", "", "", "", "", "", "empty")
