"""Kill a run mid-way, for the resume tests: SIGKILL gives the process no chance to clean up."""

import json
import signal
import subprocess
import sys
import time


def run_and_kill(script, commit, env, after_batches: int = 3, timeout: float = 60) -> int:
    """Start `script`, SIGKILL it once its Journal `commit` file records `after_batches` batches, and
    return how many batches it had committed."""
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and not (commit.exists()
                                          and json.loads(commit.read_text())["batches"] >= after_batches):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return json.loads(commit.read_text())["batches"]
