"""Model stages as sharded tasks on datatrove's executors: the same files however the work is split, a worker
killed mid-task loses and duplicates nothing, and Slurm (with stand-in sbatch/srun/squeue) matches local."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_runs import config, run

from xinstruct.core.tasks import Task, read_progress, shard_of
from xinstruct.io.files import read_jsonl

LANGS = ["sw", "th", "hi"]


def multilingual(out, **over):
    from xinstruct.seed import bundled_path
    return config(out, languages=LANGS,
                  corpus={"inputs": [{"path": str(bundled_path(f"demo/{lang}/corpus.jsonl")), "lang": lang}
                                     for lang in LANGS]},
                  seed={"inputs": [{"path": str(bundled_path(f"demo/{lang}/seed.jsonl")), "lang": lang}
                                   for lang in LANGS], "split": "all"}, **over)


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "candidates").glob("*.jsonl"))}


def test_shards_are_stable_and_balanced():
    keys = [f"doc-{i}" for i in range(3000)]
    counts = [sum(shard_of(k, 4) == s for k in keys) for s in range(4)]
    assert min(counts) > 650 and shard_of("doc-1", 4) == shard_of("doc-1", 4)
    assert Task("sw", 1, 4).name == "sw.001-of-004" and Task("sw").owns("anything")


def test_local_workers_write_the_same_files_as_one_process(tmp_path):
    run(multilingual(tmp_path / "one"), ("generate",))
    run(multilingual(tmp_path / "four", executor={"workers": 2, "shards": 2}), ("generate",))
    one, four = outputs(tmp_path / "one"), outputs(tmp_path / "four")
    assert one == four and len(one) == 6 and all(one[f"{lang}.candidates.jsonl"] for lang in LANGS)
    assert {p["task"] for p in read_progress(tmp_path / "four" / "candidates")} == {
        f"{lang}.{s:03d}-of-002" for lang in LANGS for s in range(2)}


def test_records_a_worker_left_to_retry_are_retried_by_the_next_run(tmp_path, monkeypatch):
    """datatrove marks a task complete when it returns; one that left server errors must still run again."""
    from xinstruct.pipeline.run import StageIncomplete

    cfg = multilingual(tmp_path, executor={"workers": 2, "shards": 2})
    monkeypatch.setenv("FAKE_FAIL_EVERY", "3")
    with pytest.raises(StageIncomplete) as stop:
        run(cfg, ("generate",))
    assert stop.value.unresolved["generate:backend_error"] > 0
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    results, _ = run(cfg, ("generate",))
    assert all(results["generate"][lang]["unresolved"] == {} for lang in LANGS)


def diversified(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((out / "diversify").glob("*.jsonl"))}
    return {**files, **{f"{lang}.vectors": (out / "diversify" / "embeddings" / lang / "vectors.npy").read_bytes()
                        for lang in LANGS}}


def test_sharded_embedding_writes_the_same_files_and_reembeds_only_what_it_lacks(tmp_path):
    """Diversify's embedding as tasks: the same vectors, clusters and draw from 1 process or 2 workers; a task
    whose cache is lost redoes its own texts only; another split copies vectors rather than embedding again."""
    one, two = tmp_path / "one", tmp_path / "two"
    run(multilingual(one), ("diversify",))
    results, _ = run(multilingual(two, executor={"workers": 2, "shards": 2}), ("diversify",))
    assert diversified(one) == diversified(two)
    pools = {lang: results["diversify"]["languages"][lang]["pool"] for lang in LANGS}
    assert all(pools.values()) and all(results["diversify"]["languages"][lang]["embedded_this_run"] == pools[lang]
                                       for lang in LANGS)
    assert {p["task"] for p in read_progress(two / "diversify")} == {f"{lang}.{s:03d}-of-002" for lang in LANGS
                                                                    for s in range(2)}
    lost = Task("sw", 1, 2)  # as if killed before it committed anything (and before datatrove marked it done)
    (two / "diversify" / "cache" / f"{lost.name}.sqlite").unlink()
    for marker in (two / "diversify" / "logs").glob("*/completions/00001"):
        marker.unlink()
    (two / "stages" / "diversify.json").unlink()
    results, _ = run(multilingual(two, executor={"workers": 2, "shards": 2}), ("diversify",))
    pool = [r["id"] for r in read_jsonl(two / "diversify" / "sw.pool.jsonl")]
    assert results["diversify"]["languages"]["sw"]["embedded_this_run"] == sum(lost.owns(i) for i in pool)
    assert all(results["diversify"]["languages"][lang]["embedded_this_run"] == 0 for lang in ("th", "hi"))
    (two / "stages" / "diversify.json").unlink()
    results, _ = run(multilingual(two, executor={"workers": 1, "shards": 3}), ("diversify",))
    assert all(results["diversify"]["languages"][lang]["embedded_this_run"] == 0 for lang in LANGS)
    assert diversified(one) == diversified(two)


CLAIM = """
import os, sys, time
from xinstruct.core.tasks import claim_gpus
try:
    claim_gpus(sys.argv[1], [0, 1, 2], per_task=int(sys.argv[2]))
    print(os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
except RuntimeError as e:
    print("refused:", e, flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_local_workers_each_claim_their_own_gpus(tmp_path):
    """executor.options.gpus on local workers: each worker process holds its GPUs until it ends (even killed)."""
    from xinstruct.config import ExecutorConfig
    from xinstruct.core.tasks import local_gpus

    def claim(per_task, hold):
        return subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path), str(per_task), str(hold)],
                                stdout=subprocess.PIPE, text=True)

    first, second = claim(2, 5), claim(1, 5)
    held = [first.stdout.readline().strip(), second.stdout.readline().strip()]
    third = claim(1, 0)
    assert third.communicate(timeout=60)[0].startswith("refused: no 1 free GPU(s) among [0, 1, 2]")
    assert sorted(held) == ["0,1", "2"] or sorted(held) == ["0", "1,2"], held
    first.kill()
    first.wait()
    assert claim(2, 0).communicate(timeout=60)[0].strip() in ("0,1", "1,2")  # the killed worker's GPUs are free
    second.wait()
    assert local_gpus(ExecutorConfig(workers=2, options={"gpus": [0, 1, 2, 3], "gpus_per_task": 2})) == (
        [0, 1, 2, 3], 2)
    assert local_gpus(ExecutorConfig(workers=1, options={"gpus": [0, 1]})) is None
    with pytest.raises(ValueError, match="3 workers × 1 GPU"):
        local_gpus(ExecutorConfig(workers=3, options={"gpus": [0, 1]}))


KILLABLE = """
import faulthandler, sys
faulthandler.dump_traceback_later(90)  # where it waits, should the driver not stop (the test's timeout is 120 s)
sys.path.insert(0, {tests!r})
from test_scale import multilingual
from xinstruct.core.stage import RunContext
from xinstruct.pipeline.run import run_stages
cfg = multilingual({out!r}, executor={{"workers": 2, "shards": 2}}, generate={{"batch_docs": 2}})
run_stages(RunContext(cfg, log=print, quiet=True), ("generate",))
"""


def test_a_worker_killed_mid_task_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "run.py"
    script.write_text(KILLABLE.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "FAKE_DELAY": "0.4", "FAKE_FAIL_EVERY": "0"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    victim, deadline = None, time.time() + 120
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        running = [p for p in read_progress(out / "candidates") if p.get("state") == "running" and p.get("done", 0)]
        if running:
            victim = running[0]
    assert victim, "no task started"
    os.kill(victim["pid"], signal.SIGKILL)
    try:
        log, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, which hold the output pipe open
        pytest.fail(f"the driver did not stop after its worker {victim['pid']} was killed:\n"
                    + proc.communicate()[0][-8000:])
    assert proc.returncode != 0 and f"the worker running task {victim['task']} died" in log, log[-2000:]

    env["FAKE_DELAY"] = "0"
    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True, timeout=300)
    for lang in LANGS:
        docs = [d["id"] for p in sorted((out / "corpus" / "clean" / lang).glob("*.jsonl")) for d in read_jsonl(p)]
        got = [r["doc_id"] for r in read_jsonl(out / "candidates" / f"{lang}.candidates.jsonl")]
        rejected = [r["doc_id"] for r in read_jsonl(out / "candidates" / f"{lang}.rejects.jsonl")]
        assert sorted(got + rejected) == sorted(docs), f"{lang}: lost or duplicated documents"


STAND_INS = {
    # run every array index of the script, one after another, as Slurm would on free nodes
    "sbatch": """
        script="${@: -1}"
        export SLURM_JOB_ID=4242 SLURM_NODELIST=localhost SLURM_NODEID=0
        for arg in "$@"; do case "$arg" in --export=ALL,*) export ${arg#--export=ALL,};; esac; done
        range=$(sed -n 's/^#SBATCH --array=\\([0-9]*\\)-\\([0-9]*\\).*/\\1 \\2/p' "$script")
        set -- $range
        for i in $(seq ${1:-0} ${2:-0}); do SLURM_ARRAY_TASK_ID=$i bash "$script" >> "$SLURM_STANDIN_LOG" 2>&1; done
        echo "Submitted batch job 4242"
    """,
    "srun": 'while [ "$1" != launch_pickled_pipeline ]; do shift; done; exec "$@"',
    "squeue": "exit 0",  # nothing left in the queue
    "scancel": "exit 0",
    "scontrol": '[ "$1 $2" = "show hostnames" ] && echo localhost; exit 0',
}


def slurm_stand_ins(tmp_path, monkeypatch) -> Path:
    """sbatch/srun/squeue/scancel/scontrol on PATH that run the array tasks here; their output in slurm.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STAND_INS.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + textwrap.dedent(body))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_STANDIN_LOG", str(tmp_path / "slurm.log"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    return tmp_path / "slurm.log"


def test_slurm_executor_with_stand_in_commands_matches_local(tmp_path, monkeypatch):
    log = slurm_stand_ins(tmp_path, monkeypatch)
    run(multilingual(tmp_path / "local"), ("generate",))
    run(multilingual(tmp_path / "slurm", executor={"kind": "slurm", "workers": 2, "shards": 2,
                                                   "options": {"partition": "test"}}), ("generate",))
    assert outputs(tmp_path / "slurm") == outputs(tmp_path / "local"), log.read_text()[-3000:]
    assert "launch_pickled_pipeline" in next((tmp_path / "slurm" / "candidates" / "logs").rglob(
        "launch_script.slurm")).read_text()


def test_ray_executor_matches_local(tmp_path, monkeypatch):
    """Issue 13's check on Ray's local cluster (started and stopped by the command), every model stage as
    tasks: the candidates, the refined pairs and the dataset are the same files as from one process."""
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), *sys.path]))  # Ray's workers
    run(multilingual(tmp_path / "local"), ("export",))
    run(multilingual(tmp_path / "ray", executor={"kind": "ray", "workers": 2}), ("export",))
    for folder in ("candidates", "refine/final", "dataset/jsonl"):
        local = {p.name: p.read_bytes() for p in sorted((tmp_path / "local" / folder).glob("*.jsonl"))}
        ray = {p.name: p.read_bytes() for p in sorted((tmp_path / "ray" / folder).glob("*.jsonl"))}
        assert local and ray == local, folder


# -- evaluate: answering and judging as tasks ------------------------------------------------------------------

def evaluation(tmp_path, executor: dict | None, name: str) -> tuple[dict, dict[str, bytes]]:
    from test_evaluate import _fake_eval

    from xinstruct.config import ExecutorConfig
    from xinstruct.evaluate.stage import run_evaluate

    out = tmp_path / name
    summary = run_evaluate(_fake_eval(tmp_path), ["sw", "th"], out, log=lambda *_: None,
                           executor=ExecutorConfig(**executor) if executor else None)
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.jsonl"))}
    return {k: v for k, v in summary.items() if k != "report"}, files


def test_sharded_evaluation_matches_one_process_and_reuses_every_answer(tmp_path, monkeypatch):
    """Answers by (system, language, question shard) and judgements by (pair, language, question+order shard):
    the same summary and files from 1 process or 2 workers; a rerun under another split asks no model."""
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(calls))
    one = evaluation(tmp_path, None, "one")
    asked = len(calls.read_text().splitlines())
    assert asked == 2 * 2 * 5 + 2 * 5 * 2 + 2 * 2 * 5  # answers, pairwise judgements, single-answer grades
    two = evaluation(tmp_path, {"workers": 2, "shards": 2}, "two")
    assert two == one and len(calls.read_text().splitlines()) == 2 * asked
    tasks = {p["task"] for p in read_progress(tmp_path / "two")}
    assert tasks == {f"{group}.{lang}.{s:03d}-of-002" for group in ("answers-a", "answers-b", "judge-b-vs-a",
                                                                      "grade-a", "grade-b")
                     for lang in ("sw", "th") for s in range(2)}
    assert one[0]["judgements"]["a"]["overall"]["judged"] == 10
    again = evaluation(tmp_path, {"workers": 1, "shards": 3}, "two")  # the caches of the 2-shard split are read
    assert again == one and len(calls.read_text().splitlines()) == 2 * asked


def test_sharded_evaluation_retries_server_errors_on_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EVERY", "3")
    first, _ = evaluation(tmp_path, {"workers": 2, "shards": 2}, "eval")
    assert sum(first["answer_errors"].values()) > 0
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    second, _ = evaluation(tmp_path, {"workers": 2, "shards": 2}, "eval")
    assert sum(second["answer_errors"].values()) == 0
    assert second["judgements"]["a"]["overall"]["judged"] == 10
    assert second == evaluation(tmp_path, None, "fresh")[0]


def test_evaluation_on_slurm_stand_ins_and_ray_matches_local(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    local = evaluation(tmp_path, None, "local")
    log = slurm_stand_ins(tmp_path, monkeypatch)
    slurm = evaluation(tmp_path, {"kind": "slurm", "workers": 2, "shards": 2, "options": {"partition": "test"}},
                       "slurm")
    assert slurm == local, log.read_text()[-3000:]
    assert len(list((tmp_path / "slurm" / "logs").rglob("launch_script.slurm"))) == 3  # answering, judging, grading
    assert evaluation(tmp_path, {"kind": "ray", "workers": 2}, "ray") == local
