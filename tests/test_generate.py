import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_backend import FakeBackend
from killing import cache_records, run_and_kill

from xinstruct.config import GenerateConfig
from xinstruct.core.tasks import Task
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.generate.candidates import generate_candidates, generate_task, write_outputs
from xinstruct.generate.checks import check_instruction, is_english
from xinstruct.io.files import read_jsonl
from xinstruct.models.base import Completion
from xinstruct.seed import bundled_path

TEXT = "Wakulima wa kahawa mkoani Kilimanjaro wanasema mvua za mwaka huu zimeongeza mavuno kwa kiasi kikubwa."


def check(text, finish="stop", **kw):
    return check_instruction(Completion(text, finish), TEXT, LanguageIdentifier(), **kw)[1]


def test_instruction_checks():
    assert check("Describe how the rains affected coffee farmers in Kilimanjaro this year.") is None
    assert check("   ") == "empty"
    assert check("Write a story", finish="length") == "too_long"
    assert check("Hi") == "too_short"
    assert check(TEXT).startswith(("echoes_text", "not_english"))
    assert check("Eleza jinsi mvua zilivyosaidia wakulima wa kahawa msimu huu.") == "not_english:sw"
    assert check("coffee coffee coffee coffee coffee is good") == "repetitive"
    seen = set()
    assert check("Describe the coffee harvest in Kilimanjaro.", seen=seen) is None
    assert check("describe the coffee  harvest in Kilimanjaro.", seen=seen) == "duplicate"


def test_english_check_keeps_short_english_and_rejects_other_languages(shared_data):
    """Short plain English once read as Hausa or Aragonese passes; the bundled FLORES instructions pass; natural
    sentences in the paper's languages are still rejected (at most 0.1% let through: names and "na", "la")."""
    lid = LanguageIdentifier()
    assert is_english("Summarise Tanganyika's history.", lid)[0]
    assert is_english("Describe a natural disaster.", lid)[0]
    flores = [r["instruction"] for r in read_jsonl(bundled_path("flores_instructions.jsonl"))]
    assert all(is_english(t, lid)[0] for t in flores)
    let_through = total = 0
    for lang in ("bn", "fi", "hi", "id", "sw", "ta", "th", "tr", "ur", "vi"):
        sentences = [r["text"] for r in read_jsonl(shared_data / "text" / "leipzig_sentences" / f"{lang}.jsonl")]
        let_through += sum(is_english(t, lid)[0] for t in sentences)
        total += len(sentences)
    assert let_through <= 0.001 * total


def docs(n=40):
    return [{**d, "source": "demo"} for d in read_jsonl(bundled_path("demo/sw/corpus.jsonl"))][:n]


def test_backend_errors_are_recorded_and_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EVERY", "5")
    cfg = GenerateConfig(batch_docs=8)
    first = generate_candidates(docs(), "sw", FakeBackend(), cfg, tmp_path)
    assert first["this_run"]["generate:backend_error"] == 8 and first["this_run"]["candidates"] == 32
    assert first["unresolved"] == {"generate:backend_error": 8} and first["rejected"] == {"generate:backend_error": 8}
    assert [r["doc_id"] for r in read_jsonl(tmp_path / "sw.rejects.jsonl")] == [d["id"] for d in docs()][4::5]
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    second = generate_candidates(docs(), "sw", FakeBackend(), cfg, tmp_path)
    assert second["this_run"]["skipped_done"] == 32 and second["this_run"]["candidates"] == 8
    # the resolved failures are gone from the output and its counts: only the current state is reported
    assert second["unresolved"] == {} and second["rejected"] == {} and second["candidates"] == 40
    assert not list(read_jsonl(tmp_path / "sw.rejects.jsonl"))
    ids = [r["doc_id"] for r in read_jsonl(tmp_path / "sw.candidates.jsonl")]
    assert sorted(ids) == sorted(d["id"] for d in docs())


def test_another_split_copies_what_the_whole_run_generated(tmp_path):
    """Changing the number of tasks (workers) asks the model nothing again: each new task copies its documents
    from the cache the earlier split left, and the outputs are the same files."""
    cfg = GenerateConfig(batch_docs=8)
    generate_candidates(docs(), "sw", FakeBackend(), cfg, tmp_path, fingerprint="fp")
    before = {p.name: p.read_bytes() for p in tmp_path.glob("sw.*.jsonl")}
    backend = FakeBackend()
    copied = [generate_task(docs(), "sw", Task("sw", s, 2), backend, cfg, tmp_path, "fp")["copied"] for s in (0, 1)]
    assert backend.calls == 0 and sum(copied) == len(docs()) and all(copied)
    write_outputs(docs(), "sw", 2, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("sw.*.jsonl")} == before


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from fake_backend import FakeBackend
from killing import cache_records, run_and_kill
from xinstruct.config import GenerateConfig
from xinstruct.core.tasks import Task
from xinstruct.generate.candidates import generate_candidates, generate_task, write_outputs
from xinstruct.io.files import read_jsonl
from xinstruct.seed import bundled_path
docs = [dict(d, source="demo") for d in read_jsonl(bundled_path("demo/sw/corpus.jsonl"))]
generate_candidates(docs, "sw", FakeBackend(), GenerateConfig(batch_docs=4, n_per_doc=2), {out!r})
"""


def test_sigkill_mid_generation_resumes_without_loss_or_duplicates(tmp_path):
    script = tmp_path / "run.py"
    out = tmp_path / "out"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "FAKE_DELAY": "0.3"}
    done = run_and_kill(script, cache_records(out / "cache" / "sw.sqlite"), env, after=12)
    assert 12 <= done < 40, "killed too late to test resume"
    subprocess.run([sys.executable, str(script)], env={**env, "FAKE_DELAY": "0"}, check=True)
    got = sorted((r["doc_id"], r["candidate_index"]) for r in read_jsonl(out / "sw.candidates.jsonl"))
    rejected = sorted((r["doc_id"], r["candidate_index"]) for r in read_jsonl(out / "sw.rejects.jsonl"))
    assert len(got) == len(set(got)), "duplicated candidates"
    everything = sorted(got + rejected)
    assert everything == sorted((d["id"], k) for d in docs() for k in range(2)), "lost documents"


def test_instructions_the_text_cannot_support():
    """Issue 23: a context the reader lacks, numbers the text does not give, names it does not contain."""
    from xinstruct.generate.support import (
        deictic_reference,
        unsupported,
        unsupported_name_given_scores,
        unsupported_numbers,
    )

    for q in ("Give some tips for visiting this place.", "Summarise the above passage.", "What does the text say?",
              "According to the article, what happened to the bridge?", "Summarise the following."):
        assert deictic_reference(q), q
    for q in ("What happened this year in Dar es Salaam?", "What did the mayor of this town of Arusha say?",
              "Do the refund rules cover the original dates of the Olympics?", "Describe these days of rain."):
        assert deictic_reference(q) is None, q
    assert unsupported_numbers("What changed in 1947?", "१९४७ में भारत स्वतंत्र हुआ।") == []  # Devanagari digits
    assert unsupported_numbers("Why did 10,000 people march?", "Watu 10.000 waliandamana.") == []
    assert unsupported_numbers("What happened in 1995 and 2001?", "Mwaka 2001 mvua ilinyesha.") == ["1995"]
    assert unsupported_numbers("How did COVID-19 change schools?", "Shule zilifungwa.") == []  # part of a name
    sw = "Magofu ya Kilwa Kisiwani yanasimulia historia ya mji uliokuwa kitovu cha biashara."
    assert unsupported("Summarise the history of Kilwa.", sw) is None
    assert unsupported("Describe the market in Yangpu.", sw) == "name:Yangpu"
    assert unsupported("How do people in Helsinki celebrate midsummer?", "Helsingissä juhannusta vietetään.") is None
    hi = "नैरोबी में कल भारी बारिश हुई।"
    assert unsupported("What happened in Nairobi yesterday?", hi) is None  # नैरोबी, transliterated
    assert unsupported("What happened in Kampala yesterday?", hi) == "name:Kampala"
    # a name the text does not spell is still supported when the model finds it likely after the text (Saturn is
    # Zohali in Swahili): per-token log-probabilities with the text, without it, and where each token starts
    q = " Describe Saturn's rings."
    offsets = [0, 9, 15, 18, 24]  # " Describe", " Saturn", "'s", " rings", "."
    zohali = "Sayari ya Zohali ina pete nyingi za barafu."
    assert unsupported_name_given_scores(q, zohali, [-3, -1, -1, -2, -1], [-3, -6, -1, -4, -1], offsets) is None
    assert unsupported_name_given_scores(q, zohali, [-3, -6, -1, -2, -1], [-3, -5, -1, -4, -1], offsets) == "Saturn"


def test_candidate_sources_are_recorded_and_checked(tmp_path):
    """Samples, a greedy text: each candidate says which source wrote it; a deictic instruction is a reject."""
    from xinstruct.models.base import Completion

    class Deictic(FakeBackend):
        def answer(self, h, params):
            if params.temperature == 0:
                return [Completion(" Give some tips for visiting this place.", "stop", 8)]
            return super().answer(h, params)

    cfg = GenerateConfig(n_per_doc=2, greedy=True)
    result = generate_candidates(docs()[:4], "sw", Deictic(), cfg, tmp_path)
    rows = list(read_jsonl(tmp_path / "sw.candidates.jsonl"))
    assert {r["decoding"] for r in rows} == {"sample"} and len(rows) == 8
    assert result["rejected"] == {"generate:deictic": 4}
    with pytest.raises(Exception, match="PMI-guided decoding"):
        generate_candidates(docs()[:1], "sw", FakeBackend(), GenerateConfig(n_per_doc=0, guided=[1.0]),
                            tmp_path / "guided")


@pytest.mark.slow
def test_guided_decoding_equals_a_step_by_step_reference(llama):
    """PMI-guided decoding on llama.cpp (both streams decoded together with the other candidates) picks what a
    plain reference picks: at each step the prompt with and without its text, each decoded whole and alone, and
    among the plausible tokens the one maximising (1+α)·log p(y|text) − α·log p(y|no text)."""
    import numpy as np

    from xinstruct.models.base import SamplingParams, Sources
    from xinstruct.prompts import INSTRUCTION_STOPS, generation_prompt

    text = docs()[3]["text"]
    sources = Sources(SamplingParams(temperature=0.7, max_tokens=6, n=1, seed=2, stop=INSTRUCTION_STOPS),
                      greedy=True, guided=(1.0,), unconditional=generation_prompt(""))
    [result] = llama.generate_candidates([generation_prompt(text)], sources)
    guided = result.completions[2].text

    def next_logprobs(tokens):
        L = llama.L
        L.llama_memory_clear(llama.mem, True)
        last = llama._prefill(tokens, 0)
        logits, log_z = llama._logprobs(last)
        L.llama_memory_clear(llama.mem, True)
        return logits.astype(np.float64) - log_z

    cond, uncond, picked = llama.tokenize(generation_prompt(text)), llama.tokenize(generation_prompt("")), []
    for _ in range(6):
        lc, lu = next_logprobs(cond + picked), next_logprobs(uncond + picked)
        plausible = np.flatnonzero(lc >= lc.max() + np.log(0.1))
        token = int(plausible[np.argmax(2 * lc[plausible] - lu[plausible])])
        if llama.L.llama_vocab_is_eog(llama.vocab, token):
            break
        picked.append(token)
    reference = b"".join(llama._piece(t) for t in picked).decode("utf-8", "ignore")
    assert guided.strip() and reference.strip().startswith(guided.strip()[:12]), (guided, reference)


def test_seed_shots_are_of_the_language_and_the_most_similar_last():
    from xinstruct.generate.fewshot import SeedShots, shorten

    sw = list(read_jsonl(bundled_path("demo/sw/seed.jsonl")))
    th = list(read_jsonl(bundled_path("demo/th/seed.jsonl")))
    shots = SeedShots([{**p, "lang": "sw"} for p in sw] + [{**p, "lang": "th"} for p in th], k=3)
    target = sw[5]
    examples = shots.examples("sw", target["output"][:300])
    assert len(examples) == 3 and examples[-1] == (shorten(target["output"]), target["instruction"])
    assert all(instruction in {p["instruction"] for p in sw} for _, instruction in examples)
    assert shots.examples("hi", "anything") == []
    assert len(shorten("word " * 500)) <= 602


def test_a_generator_that_cannot_be_tuned_is_shown_seed_pairs(tmp_path, monkeypatch):
    """The paper's generator is tuned on the seed pairs; one this run cannot tune (a served model, here a plugin)
    gets them in its prompt: the k most similar seed pairs of the language, then the document. few_shot 0:
    the paper's prompt alone. The summary (and so the card) says which."""
    import json

    from test_runs import config, run

    from xinstruct.prompts import generation_prompt

    seeds = {p["instruction"] for p in read_jsonl(bundled_path("demo/sw/seed.jsonl"))}
    for k in (3, 0):
        monkeypatch.setenv("FAKE_PROMPTS", str(tmp_path / f"prompts{k}.jsonl"))
        out = tmp_path / f"run{k}"
        results, lines = run(config(out, generator={"backend": "fake_backend:PromptRecorder"},
                                    generate={"few_shot": k}), ("generate",))
        prompts = [json.loads(line) for line in (tmp_path / f"prompts{k}.jsonl").read_text().splitlines()]
        docs = [generation_prompt(d["text"]) for f in sorted((out / "corpus" / "clean" / "sw").glob("*.jsonl"))
                for d in read_jsonl(f)]
        assert len(prompts) == len(docs) and all(any(p.endswith(d) for d in docs) for p in prompts)
        shown = [sum(instruction in p for instruction in seeds) for p in prompts]
        assert all(n >= k for n in shown) and (k or not any(shown))
        assert ("few-shot" in results["generate"]["generator_setup"]) == bool(k)
        assert any("few-shot" in line for line in lines) == bool(k)
