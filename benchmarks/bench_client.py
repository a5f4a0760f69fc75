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


def start_server(*options: str) -> tuple[subprocess.Popen, str]:
    """tests/loopback.py in a process of its own (`options`: --delay S, --instructions); (process, base URL)."""
    from xinstruct.models.managed import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(LOOPBACK), str(port), *options], stdout=subprocess.DEVNULL)
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


def measure(url: str, requests: int, concurrency: int, stream: bool) -> str:
    """One summary line: requests/s of the openai backend against `url`, and its CPU per request."""
    from xinstruct.config import model_config
    from xinstruct.models.base import SamplingParams
    from xinstruct.models.openai import OpenAIBackend

    prompts = [f"document number {i}" for i in range(requests)]
    cfg = model_config(backend="openai", base_url=url, model="m", stream=stream, max_concurrency=concurrency)
    with OpenAIBackend(cfg) as backend:
        backend.generate(prompts[:500], SamplingParams())  # connections opened, code warm
        cpu, wall = time.process_time(), time.perf_counter()
        results = backend.generate(prompts, SamplingParams())
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    failed = sum(r.error is not None for r in results)
    return (f"client, {'streamed' if stream else 'whole'} answers, {concurrency} in flight: "
            f"{requests / wall:.0f} requests/s ({1000 * cpu / requests:.2f} ms client CPU a request, "
            f"{failed} failed; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()

    proc, url = start_server()
    try:
        for stream in (True, False):
            print(measure(url, args.requests, args.concurrency, stream), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
