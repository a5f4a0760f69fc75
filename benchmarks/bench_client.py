"""The openai backend's client alone: requests per second against an instant loopback server in a process of its
own (tests/loopback.py), so the client's cost per request is what is measured. Target (issue 13): >= 500 requests/s
on 2 cores, so the client never limits a GPU server. One line per setting: streamed and whole answers.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_client.py [--requests 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

LOOPBACK = Path(__file__).resolve().parents[1] / "tests" / "loopback.py"


def start_server() -> tuple[subprocess.Popen, str]:
    from xinstruct.models.managed import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(LOOPBACK), str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the loopback server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()

    from xinstruct.config import model_config
    from xinstruct.models.base import SamplingParams
    from xinstruct.models.openai import OpenAIBackend

    proc, url = start_server()
    prompts = [f"document number {i}" for i in range(args.requests)]
    try:
        for stream in (True, False):
            cfg = model_config(backend="openai", base_url=url, model="m", stream=stream,
                               max_concurrency=args.concurrency)
            with OpenAIBackend(cfg) as backend:
                backend.generate(prompts[:500], SamplingParams())  # connections opened, code warm
                cpu, wall = time.process_time(), time.perf_counter()
                results = backend.generate(prompts, SamplingParams())
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            failed = sum(r.error is not None for r in results)
            print(f"client, {'streamed' if stream else 'whole'} answers, {args.concurrency} in flight: "
                  f"{args.requests / wall:.0f} requests/s ({1000 * cpu / args.requests:.2f} ms client CPU a request, "
                  f"{failed} failed; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
