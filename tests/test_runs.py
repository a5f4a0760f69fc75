"""Runs that know what they were made from: a stage is skipped when nothing it reads changed, redone with
everything after it when something did (and the console says what), records left to retry stop the run and
are picked up downstream once they succeed. Stand-in models (tests/fake_backend.py) keep these fast."""

import json

import pytest
from fake_backend import FakeBackend

from xinstruct.config import RunConfig
from xinstruct.core.stage import RunContext
from xinstruct.io.files import read_json, read_jsonl
from xinstruct.pipeline.run import STAGES, StageIncomplete, run_stages
from xinstruct.seed import bundled_path


@pytest.fixture(autouse=True)
def _fake_models(monkeypatch):
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")


def config(out, **over) -> RunConfig:
    base = {"output_dir": str(out), "languages": ["sw"],
            "corpus": {"inputs": [{"path": str(bundled_path("demo/sw/corpus.jsonl")), "lang": "sw"}]},
            "seed": {"inputs": [{"path": str(bundled_path("demo/sw/seed.jsonl")), "lang": "sw"}], "split": "all"},
            "generator": {"backend": "fake_backend:FakeBackend"},
            "generate": {"n_per_doc": 1, "batch_docs": 8},
            "refine": {"iterations": 1, "retrain": "none", "min_keep": 5,
                       "evaluator": {"kind": "judge", "scoring": "parse",
                                     "model": {"backend": "fake_backend:FakeJudge"}}},
            "diversify": {"target_per_language": 5, "n_clusters": 2, "embedder": {"model": "bundled"}},
            "export": {"formats": ["jsonl"], "card": False, "report": False, "assistant_variant": False}}
    for key, value in over.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return RunConfig(**base)


def run(cfg, targets=("refine",), **kw) -> tuple[dict, list[str]]:
    """Up to refinement by default: Stage III loads MiniLM, which one test covers."""
    lines: list[str] = []
    ctx = RunContext(cfg, log=lambda m: lines.append(m) if isinstance(m, str) else None, quiet=True)
    return run_stages(ctx, targets, **kw), lines


def said(lines, stage) -> str:
    """What the runner said about `stage` (skipped / runs / redone, and why)."""
    return next(line for line in lines if line.startswith((f"[dim]{stage}:", f"[bold]{stage}[/bold]:")))


def test_unchanged_rerun_redoes_nothing_and_a_changed_key_redoes_what_follows(tmp_path):
    first, _ = run(config(tmp_path), STAGES)
    kept_before = first["corpus"]["sw"]["kept"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.json")}
    _, lines = run(config(tmp_path), STAGES)
    assert all("up to date, skipped" in said(lines, s) for s in ("corpus", "seed", "generate", "refine", "diversify",
                                                                 "export"))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.json")} == stamps

    results, lines = run(config(tmp_path, corpus={"min_chars": 520}), STAGES)
    assert "corpus.min_chars changed (200 → 520)" in said(lines, "corpus")
    assert results["corpus"]["sw"]["kept"] < kept_before
    assert "up to date" in said(lines, "seed")
    assert "the output of corpus changed" in said(lines, "generate")
    assert "redone" in said(lines, "refine") and "redone" in said(lines, "export")
    kept_docs = {d["id"] for p in (tmp_path / "corpus" / "clean" / "sw").glob("*.jsonl") for d in read_jsonl(p)}
    candidates = list(read_jsonl(tmp_path / "candidates" / "sw.candidates.jsonl"))
    assert {c["doc_id"] for c in candidates} == kept_docs, "candidates of documents no longer in the corpus"


def test_sampling_change_redoes_generation_only_from_there(tmp_path):
    run(config(tmp_path))
    _, lines = run(config(tmp_path, generate={"n_per_doc": 2}))
    assert "up to date" in said(lines, "corpus") and "up to date" in said(lines, "seed")
    assert "generate.n_per_doc changed (1 → 2)" in said(lines, "generate")
    assert "the output of generate changed" in said(lines, "refine")
    candidates = list(read_jsonl(tmp_path / "candidates" / "sw.candidates.jsonl"))
    assert {c["candidate_index"] for c in candidates} == {0, 1}
    # a setting that cannot change a result is not a reason to redo anything
    _, lines = run(config(tmp_path, generate={"n_per_doc": 2, "batch_docs": 3}))
    assert "up to date" in said(lines, "generate")


def test_a_changed_generator_file_redoes_generation(tmp_path):
    weights = tmp_path / "gen.bin"
    weights.write_bytes(b"one")
    run(config(tmp_path / "run", generator={"model": str(weights)}))
    weights.write_bytes(b"two")  # e.g. a retrained adapter: same path, new content
    _, lines = run(config(tmp_path / "run", generator={"model": str(weights)}))
    assert "generator.model changed" in said(lines, "generate")


def test_force_redoes_one_stage(tmp_path):
    run(config(tmp_path))
    _, lines = run(config(tmp_path), targets=("corpus",), force=("corpus",))
    assert said(lines, "corpus").endswith("--force")
    assert not any(line.startswith("[bold]generate") for line in lines)  # a stage command stops at its stage


def test_server_errors_stop_the_run_and_late_candidates_are_graded(tmp_path, monkeypatch):
    """Issue 14's sequence: generation against a failing server, then a rerun once it is back. The run stops at
    generate with the count to retry; the rerun generates the rest, and refinement grades every candidate."""
    monkeypatch.setenv("FAKE_FAIL_EVERY", "3")
    with pytest.raises(StageIncomplete) as stop:
        run(config(tmp_path))
    assert stop.value.stage == "generate" and stop.value.unresolved["generate:backend_error"] > 0
    assert not (tmp_path / "stages" / "refine.json").exists()
    failed = stop.value.unresolved["generate:backend_error"]

    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    results, lines = run(config(tmp_path))
    assert f"{failed} record(s) to retry" in said(lines, "generate")
    assert results["generate"]["sw"]["this_run"]["documents"] == failed
    assert results["generate"]["sw"]["unresolved"] == {} and results["generate"]["sw"]["rejected"] == {}
    candidates = list(read_jsonl(tmp_path / "candidates" / "sw.candidates.jsonl"))
    labels = list(read_jsonl(tmp_path / "refine" / "iter-1" / "labels" / "sw.labels.jsonl"))
    errors = list(read_jsonl(tmp_path / "refine" / "iter-1" / "labels" / "sw.errors.jsonl"))
    assert len(labels) + len(errors) == len(candidates) == results["corpus"]["sw"]["kept"]
    best = {lb["id"] for lb in labels if lb["grade"] == "best"}
    refined = {r["id"] for r in read_jsonl(tmp_path / "refine" / "final" / "sw.jsonl")}
    assert best <= refined


def test_stamps_and_manifest_record_what_each_stage_was_made_from(tmp_path):
    run(config(tmp_path), ("generate",))
    stamp = read_json(tmp_path / "stages" / "generate.json")
    assert stamp["complete"] and stamp["parts"]["config"]["generate"]["n_per_doc"] == 1
    assert "batch_docs" not in stamp["parts"]["config"]["generate"]
    assert set(stamp["parts"]["upstream"]) == {"corpus", "train"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"corpus", "seed", "generate"}
    assert manifest["packages"]["xinstruct"] and manifest["machine"]["cores"] >= 1
    assert manifest["models"]["generate"]["generator"]["backend"] == "fake_backend:FakeBackend"


def test_fake_backend_is_not_a_default():
    assert RunConfig().generator.backend == "llamacpp" and FakeBackend.name == "fake"


def test_status_says_what_run_would_redo_and_why(tmp_path):
    """After `xinstruct corpus` with a new min_chars, status names every stage the next run redoes and
    why, without running anything; the next run then redoes exactly those."""
    from typer.testing import CliRunner

    from xinstruct.cli import app
    from xinstruct.pipeline.run import plan

    run(config(tmp_path))
    assert {r["stage"]: r["state"] for r in plan(RunContext(config(tmp_path)))} == {
        "corpus": "done", "seed": "done", "train": "not needed", "generate": "done", "refine": "done",
        "diversify": "not run", "export": "not run"}
    run(config(tmp_path, corpus={"min_chars": 520}), targets=("corpus",))
    rows = {r["stage"]: r for r in plan(RunContext(config(tmp_path, corpus={"min_chars": 520})))}
    assert rows["corpus"]["state"] == "done" and rows["seed"]["state"] == "done"
    assert rows["generate"]["state"] == "stale" and "the output of corpus changed" in rows["generate"]["why"]
    assert rows["refine"]["state"] == "stale" and "generate will be redone first" in rows["refine"]["why"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.json")}
    shown = CliRunner().invoke(app, ["status", str(tmp_path)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("stale") == 2 and "corpus" in shown.output.split("generate")[1]
    as_json = CliRunner().invoke(app, ["status", str(tmp_path), "--json"])
    assert as_json.exit_code == 0, as_json.output
    listed = json.loads(as_json.output)["stages"]
    assert [r["stage"] for r in listed] == ["corpus", "seed", "train", "generate", "refine", "diversify", "export"]
    assert [r["state"] for r in listed][3:] == ["stale", "stale", "not run", "not run"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.json")} == stamps  # ran nothing
    _, lines = run(config(tmp_path, corpus={"min_chars": 520}))
    assert "up to date" in said(lines, "corpus") and "redone" in said(lines, "generate")


def test_a_second_writer_is_refused_at_once_and_a_dead_holder_frees_the_folder(tmp_path):
    """One writer per run folder. A second command that writes stops at once with exit code 3 and the
    holder's PID and command; read-only commands still work; a holder killed with SIGKILL leaves no lock."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from xinstruct.cli import app

    run(config(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from xinstruct.core.lock import run_folder_lock\n"
        f"with run_folder_lock({str(tmp_path)!r}, 'xinstruct run held-by-test'):\n"
        "    print('held', flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        second = CliRunner().invoke(app, ["refine", str(tmp_path)], terminal_width=300)
        assert second.exit_code == 3, second.output
        assert f"PID {holder.pid}" in second.output and "xinstruct run held-by-test" in second.output
        assert time.perf_counter() - started < 10  # refused before loading any model
        assert CliRunner().invoke(app, ["status", str(tmp_path)]).exit_code == 0
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    again = CliRunner().invoke(app, ["refine", str(tmp_path)], terminal_width=300)
    assert again.exit_code == 0, again.output


def test_demo_rows_follow_each_language_through_the_stages():
    from xinstruct.pipeline.demo import DEMO_HEADER, demo_rows

    results = {"corpus": {"sw": {"read": 10, "kept": 7, "dropped": {"length": 2, "langid": 1}}},
               "seed": {"sw": {"train": 4, "heldout": 1}},
               "generate": {"sw": {"candidates": 21, "rejected": {"generate:deictic": 3}}},
               "refine": {"final": {"sw": 6}}, "diversify": {"languages": {"sw": {"selected": 5}, "th": {"selected": 0}}}}
    rows = demo_rows(["sw", "th"], results)
    assert rows == [("sw", "10", "7", "3", "5", "21", "3", "6", "5"), ("th", "0", "0", "0", "0", "0", "0", "0", "0")]
    assert all(len(r) == len(DEMO_HEADER) for r in rows)


def test_a_round_that_retrains_the_generator_regenerates_as_tasks_on_the_executor(tmp_path, monkeypatch):
    """refine.retrain: generator. Round 2 retrains the generator (stood in for: the fake generator needs no
    training) and generates and scores its candidates as tasks, like the generate and refine stages: the same
    files in one process and on two local workers with two shards."""
    from xinstruct.train import sft

    trained = []
    def stand_in(pairs, *_a, **_kw):
        trained.append(len(pairs))
        return {"pairs": len(pairs)}

    monkeypatch.setattr(sft, "train_generator", stand_in)
    outputs = {}
    for name, executor in (("one", {}), ("two", {"workers": 2, "shards": 2})):
        out = tmp_path / name
        run(config(out, refine={"iterations": 2, "retrain": "generator"}, executor=executor), ("refine",))
        round2 = out / "refine" / "iter-2"
        assert (round2 / "candidates" / "sw.candidates.jsonl").is_file()
        outputs[name] = {p.relative_to(out).as_posix(): p.read_bytes()
                         for folder in (round2 / "candidates", out / "refine" / "final")
                         for p in sorted(folder.glob("*.jsonl"))}
    assert len(trained) == 4 and all(trained)  # per run: the train stage, then round 2
    # the fake generator writes the same instructions again: round 2's candidates are round 1's
    regenerated = [r["id"] for r in read_jsonl(tmp_path / "one" / "refine" / "iter-2" / "candidates" / "sw.candidates.jsonl")]
    assert regenerated == [r["id"] for r in read_jsonl(tmp_path / "one" / "candidates" / "sw.candidates.jsonl")]
    assert outputs["one"] == outputs["two"]
    for folder in ("refine/iter-2/candidates", "refine/iter-2"):  # the round's generate and evidence tasks
        assert sorted(p.name for p in (tmp_path / "two" / folder / "tasks").glob("*.json")) == [
            "sw.000-of-002.json", "sw.001-of-002.json"]


def test_a_trained_evaluator_grades_the_round_as_tasks_on_the_executor(tmp_path, monkeypatch):
    """refine.evaluator.kind: trained. Each round trains the evaluator (stood in for) and grades every candidate
    with it as refine's evidence tasks: the same files in one process and on two local workers."""
    import xinstruct.refine.stage as refine_stage
    from xinstruct.refine import training

    monkeypatch.setattr(training, "train_evaluator", lambda rows, *_a, **_kw: {"rows": len(rows)})
    monkeypatch.setattr(refine_stage, "evaluator_backend", lambda cfg, _trained_dir: cfg.refine.evaluator.model)
    evaluator = {"kind": "trained", "model": {"backend": "fake_backend:FakeScorer"}}
    outputs = {}
    for name, executor in (("one", {}), ("two", {"workers": 2, "shards": 2})):
        out = tmp_path / name
        run(config(out, refine={"evaluator": evaluator}, executor=executor), ("refine",))
        outputs[name] = {p.name: p.read_bytes() for p in sorted((out / "refine" / "final").glob("*.jsonl"))}
    assert outputs["one"] == outputs["two"] and outputs["one"]["sw.jsonl"]
    assert sorted(p.name for p in (tmp_path / "two" / "refine" / "iter-1" / "tasks").glob("*.json")) == [
        "sw.000-of-002.json", "sw.001-of-002.json"]


def test_summaries_read_back_as_records_and_write_back_the_same_dict(tmp_path):
    """Issue 25 (5b): the report, the card and the pipeline read the stage summaries through typed records
    (core/summaries.py). Every summary a run writes reads into its record and back into the same dict, key for key
    and in the same order (compared as JSON text), and the records' attributes are the summaries' values; a summary
    of an older shape reads with defaults and writes back unchanged."""
    from xinstruct.core.summaries import (
        CorpusSummary,
        DiversifySummary,
        GenerateSummary,
        LanguageSelection,
        RefineSummary,
        RoundSummary,
        SeedSummary,
    )
    from xinstruct.pipeline.checkconfig import warnings

    langs = ["sw", "th"]
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"turns": ["Write a short story about a river."]}) + "\n")
    cfg = config(tmp_path / "run", languages=langs,
                 corpus={"inputs": [{"path": str(bundled_path(f"demo/{lang}/corpus.jsonl")), "lang": lang}
                                    for lang in langs] + [{"path": str(bundled_path("demo/noise.jsonl"))}]},
                 seed={"inputs": [{"path": str(bundled_path(f"demo/{lang}/seed.jsonl")), "lang": lang}
                                  for lang in langs]},
                 refine={"iterations": 2, "retrain": "evaluator",  # the likelihood grader: a derived keep rule
                         "evaluator": {"model": {"backend": "fake_backend:FakeScorer"}}},
                 diversify={"decontaminate": {"questions": [str(questions)]}})
    run(cfg, STAGES)
    out = tmp_path / "run"
    records = {"summaries/corpus.json": CorpusSummary, "summaries/seed.json": SeedSummary,
               "summaries/generate.json": GenerateSummary, "summaries/refine.json": RefineSummary,
               "summaries/diversify.json": DiversifySummary, "diversify/summary.json": DiversifySummary,
               "refine/iter-1/summary.json": RoundSummary, "refine/iter-2/summary.json": RoundSummary}
    read = {}
    for path, record in records.items():
        d = read_json(out / path)
        read[path] = record.from_dict(d)
        assert json.dumps(read[path].to_dict(), ensure_ascii=False) == json.dumps(d, ensure_ascii=False), path

    raw = {path: read_json(out / path) for path in records}
    corpus, seed, generated = (read[f"summaries/{s}.json"] for s in ("corpus", "seed", "generate"))
    refined, diversified = read["summaries/refine.json"], read["summaries/diversify.json"]
    for lang in langs:
        assert (corpus.language(lang).read, corpus.language(lang).kept, corpus.language(lang).dropped) == tuple(
            raw["summaries/corpus.json"][lang][k] for k in ("read", "kept", "dropped"))
        assert seed.language(lang).pairs == sum(raw["summaries/seed.json"][lang].values())
        assert generated.language(lang).candidates == raw["summaries/generate.json"][lang]["candidates"] > 0
        assert refined.final[lang] == raw["summaries/refine.json"]["final"][lang]
        s, d = diversified.language(lang), raw["summaries/diversify.json"]["languages"][lang]
        assert (s.refined, s.pool, s.selected, s.clusters, s.cluster_sizes, s.dropped) == (
            d["refined"], d["pool"], d["selected"], d["clusters"], d["cluster_sizes"], d["dropped"])
        assert s.diversity.entropy_fraction == d["diversity"]["entropy_fraction"]
    assert generated.generator_setup == raw["summaries/generate.json"]["generator_setup"]
    assert refined.final_round == raw["summaries/refine.json"]["final_round"]
    assert [r.accepted for r in refined.iterations] == [r["accepted"] for r in raw["summaries/refine.json"]["iterations"]]
    assert refined.decisions == [r["decision"] for r in raw["summaries/refine.json"]["iterations"] if r["decision"]]
    first = read["refine/iter-1/summary.json"]
    keep = raw["refine/iter-1/summary.json"]["keep"]
    assert first.keep_rule.source == keep["source"] == "derived"
    assert first.keep_rule.derivation.drop_target == keep["derivation"]["drop_target"]
    assert first.language("sw").graded("best") == raw["refine/iter-1/summary.json"]["languages"]["sw"]["grades"]["best"]
    assert set(first.heldout_aucs()) <= set(langs)
    assert diversified.decontaminated_against.sources == [str(questions)]
    # check-config's warning reads the corpus summary: a language it counted, none for one it did not
    said = warnings(config(out, languages=["sw", "hi"], diversify={"target_per_language": 1000}))
    assert any(line.startswith(f"sw: the corpus of this run folder kept {corpus.language('sw').kept} documents")
               for line in said) and not any(line.startswith("hi:") for line in said)

    # an older summary: missing keys read as defaults, unknown keys ride along, and it writes back as it was
    old = {"sw": {"read": 3}, "_unknown": {"dropped": {"read:malformed_json": 1}, "read": 1}}
    assert CorpusSummary.from_dict(old).language("sw").kept == 0 and CorpusSummary.from_dict(old).to_dict() == old
    assert CorpusSummary.from_dict(old).language("th").read == 0
    newer = {"sw": {"candidates": 2, "a_new_count": 5}, "generator_setup": "few-shot", "a_new_key": [1]}
    assert GenerateSummary.from_dict(newer).to_dict() == newer
    assert LanguageSelection.from_dict({"selected": 2}).clusters is None
    assert RefineSummary.from_dict({}).iterations == [] and RefineSummary.read(out / "nothing.json").final_round is None
    assert RoundSummary.from_dict({"languages": {"sw": {"kept": 4}}}).keep_rule is None
