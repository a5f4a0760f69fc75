import os
import subprocess
import sys
from pathlib import Path

from fake_backend import FakeBackend
from killing import cache_records, run_and_kill

from xinstruct.config import GenerateConfig
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.generate.candidates import generate_candidates
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


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from fake_backend import FakeBackend
from killing import cache_records, run_and_kill
from xinstruct.config import GenerateConfig
from xinstruct.generate.candidates import generate_candidates
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
