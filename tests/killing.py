"""Kill a run mid-way, for the resume tests: SIGKILL gives the process no chance to clean up."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def journal_batches(commit: Path):
    """How many batches a Journal has committed (its commit file)."""
    return lambda: json.loads(commit.read_text())["batches"] if commit.exists() else 0


def cache_records(path: Path):
    """How many records a task cache (io/cache.py) holds."""
    def count():
        if not path.exists():
            return 0
        from xinstruct.io.cache import RecordCache
        with RecordCache(path, readonly=True) as cache:
            return cache.count()
    return count


def run_and_kill(script, committed, env, after: int = 3, timeout: float = 60) -> int:
    """Start `script`, SIGKILL it once `committed()` (or a Journal commit file's batch count) reaches `after`,
    and return how much it had committed."""
    committed = journal_batches(committed) if isinstance(committed, Path) else committed
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and committed() < after:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return committed()
