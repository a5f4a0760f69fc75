"""Memory flat in the corpus size: `xinstruct generate` (corpus, seed, then generation against a fake
OpenAI-compatible server) on a synthetic corpus and on one 10 times larger; the peak RSS of the command's
process (the largest of it and its workers, by getrusage(RUSAGE_CHILDREN) in a wrapper around each run) must
stay within 1.2 times the smaller run's (issue 13). One line per run, then the ratio.

Input documents: synthetic, built at run time from ../shared/data (benchmarks/bench_scaling.py: Leipzig Swahili
sentences, 4 to 6 at random to a document) in a temporary folder. The server (tests/loopback.py, instant,
answering like a generator of instructions) runs in a process of its own and is not measured.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_memory.py [--docs 2000] [--factor 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_client import start_server  # sibling scripts, not a package
from bench_scaling import synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]
# runs `argv`, then prints the peak RSS (KiB) of the largest process it waited for (the command and its workers)
WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def peak_rss(config: Path, log: Path) -> tuple[int, float]:
    """(peak RSS in KiB, seconds) of `xinstruct generate CONFIG` in a process of its own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "xinstruct", "generate",
                               str(config)], stdout=subprocess.PIPE, stderr=out, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"xinstruct generate failed ({done.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1]), seconds


def write_config(folder: Path, corpus: Path, url: str) -> Path:
    from xinstruct.seed import bundled_path

    config = {"output_dir": str(folder / "run"), "languages": ["sw"],
              "corpus": {"inputs": [{"path": str(corpus), "lang": "sw"}]},
              "seed": {"inputs": [{"path": str(bundled_path("demo/sw/seed.jsonl")), "lang": "sw"}], "split": "all"},
              "generator": {"backend": "openai", "base_url": url, "model": "fake-model", "max_concurrency": 64},
              "refine": {"retrain": "none"}}
    path = folder / "config.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="documents of the smaller corpus")
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, run folders)")
    args = ap.parse_args()

    server, url = start_server("--instructions")
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    peaks = {}
    try:
        for n in (args.docs, args.docs * args.factor):
            folder = tmp / f"docs-{n}"
            folder.mkdir()
            config = write_config(folder, synthetic_corpus(folder / "docs.jsonl", n), url)
            peaks[n], seconds = peak_rss(config, folder / "log.txt")
            summary = json.loads((folder / "run" / "summaries" / "generate.json").read_text())["sw"]
            print(f"corpus + generate, {n} synthetic documents ({summary['documents']} after the corpus stage, "
                  f"{summary['candidates']} candidates): peak RSS {peaks[n] / 1024:.0f} MiB, {seconds:.0f}s; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
        small, big = peaks[args.docs], peaks[args.docs * args.factor]
        print(f"peak RSS at {args.factor}x the corpus / at 1x: {big / small:.2f} "
              f"({'within' if big <= 1.2 * small else 'OVER'} the 1.2 target)")
    finally:
        server.terminate()
        server.wait(timeout=10)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
