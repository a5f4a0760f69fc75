"""Same inputs, same data (issue 22): every setting marked as unable to change a result (config.Knob) is changed
here and the outputs compared byte for byte, and a run of the default grading path killed at several instants
ends with the same files as one that was not."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from killing import cache_records

from xinstruct.config import RunConfig
from xinstruct.core.stage import RunContext
from xinstruct.io.files import read_jsonl, write_jsonl
from xinstruct.pipeline.run import run_stages
from xinstruct.seed import bundled_path

TESTS = Path(__file__).parent

# Every Knob, and the test below (or elsewhere) that changes it and compares outputs byte for byte.
CHECKED = {
    "llamacpp.n_threads": "test_llamacpp_scores_and_texts_do_not_depend_on_threads",
    "generate.batch_docs": "test_generation_files_do_not_depend_on_batch_docs",
    "refine.batch_size": "test_refine_default_path_same_files_across_batch_sizes_and_kills",
    "refine.retries": "test_refine_default_path_same_files_across_batch_sizes_and_kills",
    "diversify.embedder.shard_size": "test_diversify_files_do_not_depend_on_shard_size_or_split",
    "train.save_steps": "tests/test_train.py::test_checkpoints_do_not_change_the_adapter",
    "evaluate.batch_size": "tests/test_evaluate.py::test_answers_do_not_depend_on_batch_size",
    # (the executor section is in no fingerprint either: tests/test_scale.py gets the same files from 1 process,
    # 2 workers, 2 or 3 shards)
    # the openai client's transport settings: the same answers through retries, timeouts, streaming or not,
    # one endpoint or several
    "openai": "tests/test_backend_faults.py::test_transport_settings_do_not_change_the_outputs",
}


def knobs(model=RunConfig, prefix="") -> set[str]:
    """Paths of the Knob fields in a config model: dotted from the run config, a model section's named by its
    backend (llamacpp.n_threads), a trainer's by `train.`, the executor's and the openai client's as a whole."""
    import typing

    from pydantic import BaseModel

    from xinstruct.config import LlamaCppConfig, OpenAIConfig, TrainConfig, TransformersConfig

    named = {LlamaCppConfig: "llamacpp.", TransformersConfig: "transformers.", TrainConfig: "train."}
    found = set()
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra or {}
        if isinstance(extra, dict) and extra.get("affects_output") is False:
            found.add("openai" if model is OpenAIConfig else "executor" if prefix.startswith("executor")
                      else f"{prefix}{name}")
            continue
        todo, seen = [field.annotation], []
        while todo:  # Optional, unions, Annotated and lists of config models
            kind = todo.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                seen.append(kind)
            else:
                todo.extend(typing.get_args(kind))
        for sub in seen:
            if sub is not model:
                found |= knobs(sub, named.get(sub, f"{prefix}{name}."))
    return found


def test_every_knob_is_checked_by_a_test():
    """A setting marked as unable to change a result is left out of fingerprints, so a change redoes nothing:
    that is only right if outputs really do not move with it. Each one is in CHECKED with the test that shows it."""
    found = knobs()
    assert {"llamacpp.n_threads", "refine.batch_size", "openai"} <= found
    assert found <= set(CHECKED), f"knobs without a byte-for-byte test: {sorted(found - set(CHECKED))}"


# -- a small run of the default path: the bundled model scores, a grader fitted on the run's seed pairs ---------
def small_run(out: Path, tmp: Path, **refine) -> RunConfig:
    docs = list(read_jsonl(bundled_path("demo/sw/corpus.jsonl")))[:6]
    seeds = list(read_jsonl(bundled_path("demo/sw/seed.jsonl")))[:15]
    write_jsonl(tmp / "corpus.jsonl", docs)
    write_jsonl(tmp / "seed.jsonl", seeds)
    return RunConfig(output_dir=str(out), languages=["sw"],
                     corpus={"inputs": [{"path": str(tmp / "corpus.jsonl"), "lang": "sw"}]},
                     seed={"inputs": [{"path": str(tmp / "seed.jsonl"), "lang": "sw"}], "split": "all"},
                     generator={"backend": "fake_backend:FakeBackend"},
                     generate={"n_per_doc": 2, "batch_docs": 4},
                     refine={"iterations": 2, **refine})


def refine_files(out: Path) -> dict[str, bytes]:
    """Every file refine writes that a later stage or a person reads (timings aside)."""
    import json

    files = {}
    for path in sorted((out / "refine").rglob("*")):
        rel = str(path.relative_to(out))
        if not path.is_file() or "/cache/" in rel or "/tasks/" in rel or "/logs/" in rel:
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(_without_times(json.loads(data)), sort_keys=True).encode()
        files[rel] = data.replace(str(out).encode(), b"<run>")  # paths inside the run folder name it
    return files


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in ("seconds", "started", "this_run")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


SCRIPT = """
import os, signal, sys; sys.path.insert(0, {tests!r})
from test_invariance import small_run
from pathlib import Path
from xinstruct.core.stage import RunContext
from xinstruct.io import cache
from xinstruct.pipeline.run import run_stages

kill_at, kill_after = os.environ.get("KILL_CACHE"), int(os.environ.get("KILL_AFTER", "0"))
commit = cache._Transaction.__exit__

def commit_then_maybe_die(self, exc_type, *rest):
    # SIGKILL right after the commit that brings the watched cache to KILL_AFTER records: an instant in the
    # middle of the stage on any machine, however fast
    commit(self, exc_type, *rest)
    path = self.db.execute("PRAGMA database_list").fetchone()[2]
    if kill_at and path == kill_at and self.db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

cache._Transaction.__exit__ = commit_then_maybe_die
cfg = small_run(Path({out!r}), Path({tmp!r}), batch_size={batch})
run_stages(RunContext(cfg, log=lambda m: None, quiet=True), ("refine",))
"""


@pytest.mark.slow
def test_refine_default_path_same_files_across_batch_sizes_and_kills(tmp_path, monkeypatch):
    """The likelihood grader on the bundled model, fitted on the run's seed pairs, two rounds: batch size 8
    uninterrupted, and batch size 3 killed (SIGKILL) while it scores the candidates and again while it scores the
    rating set, then resumed: every refine file is the same, byte for byte (features, P(best), the derived keep
    threshold, the kept pairs)."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    whole = tmp_path / "whole"
    run_stages(RunContext(small_run(whole, tmp_path, batch_size=8), log=lambda m: None, quiet=True), ("refine",))
    expected = refine_files(whole)
    assert any(p.endswith("final/sw.jsonl") for p in expected) and len(expected) > 8

    killed = tmp_path / "killed"
    script = tmp_path / "refine.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(killed), tmp=str(tmp_path), batch=3))
    env = {**os.environ, "FAKE_FAIL_EVERY": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    ratings = killed / "refine" / "cache" / "ratings.sqlite"
    candidates = killed / "refine" / "cache" / "sw.sqlite"
    for cache, after in ((candidates, 3), (ratings, 9)):  # the order refine scores them in
        kill = {"KILL_CACHE": str(cache), "KILL_AFTER": str(after)}
        killed_run = subprocess.run([sys.executable, str(script)], env={**env, **kill}, check=False)
        assert killed_run.returncode == -signal.SIGKILL, "finished before it could be killed"
        assert cache_records(cache)() >= after
    subprocess.run([sys.executable, str(script)], env=env, check=True)
    assert refine_files(killed) == expected


# -- the other knobs --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_llamacpp_scores_and_texts_do_not_depend_on_threads():
    from xinstruct.config import model_config
    from xinstruct.models.base import SamplingParams
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.prompts import INSTRUCTION_STOPS, generation_prompt, scoring_prompt

    docs = [d["text"] for d in list(read_jsonl(bundled_path("demo/sw/corpus.jsonl")))[:3]]
    requests = [(scoring_prompt(d), " Describe the news.") for d in docs]
    params = SamplingParams(temperature=0.7, max_tokens=12, n=2, seed=1, stop=INSTRUCTION_STOPS)
    out = []
    for threads in (1, 2):
        with LlamaCppBackend(model_config(n_threads=threads, n_ctx=2048)) as llama:
            out.append((llama.score(requests), [[c.text for c in r.completions]
                                                for r in llama.generate([generation_prompt(d) for d in docs], params)]))
    assert out[0] == out[1]


def test_generation_files_do_not_depend_on_batch_docs(tmp_path, monkeypatch):
    """generate.batch_docs is the commit batch: 1 or 5 documents a batch, the same candidate files (the bundled
    model's batch invariance is tests/test_backends.py's)."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    files = []
    for batch in (1, 5):
        cfg = small_run(tmp_path / f"b{batch}", tmp_path)
        cfg = RunConfig(**{**cfg.model_dump(), "generate": {"n_per_doc": 2, "batch_docs": batch}})
        run_stages(RunContext(cfg, log=lambda m: None, quiet=True), ("generate",))
        files.append({p.name: p.read_bytes() for p in (tmp_path / f"b{batch}" / "candidates").glob("*.jsonl")})
    assert files[0] == files[1] and files[0]


@pytest.mark.slow
def test_diversify_files_do_not_depend_on_shard_size_or_split(tmp_path):
    """embedder.shard_size (texts a committed batch) and the shard split: the same vectors, clusters and draw."""
    from synthetic_run import make_run

    outputs = []
    for name, shard_size, executor in (("a", 2048, {}), ("b", 7, {"shards": 3})):
        out = make_run(tmp_path / name, {"sw": 40})
        cfg = RunConfig(output_dir=str(out), languages=["sw"], executor=executor,
                        diversify={"target_per_language": 12, "n_clusters": 3,
                                   "embedder": {"shard_size": shard_size}})
        from xinstruct.diversify.stage import DiversifyStage

        DiversifyStage(RunContext(cfg, log=lambda m: None, quiet=True)).run()
        outputs.append({p.name: p.read_bytes() for p in (out / "diversify").glob("sw.*.jsonl")}
                       | {"vectors": (out / "diversify" / "embeddings" / "sw" / "vectors.npy").read_bytes()})
        shutil.rmtree(out / "diversify" / "cache")
    assert outputs[0] == outputs[1]
