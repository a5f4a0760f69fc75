"""One writer per run folder: an OS lock (flock) on <run>/.lock, held while a command writes there.

The lock is the kernel's, not the file's presence: it goes when the process ends, however it ends (a crash, a
kill -9), so no stale lock is ever left to remove by hand. The file only says who holds it (PID, command, host,
since when) for the message a second writer gets. Read-only commands (status, audit, manifest) take no lock.
Worker processes of the writer (datatrove's local workers, Ray or Slurm tasks) write under its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process writes to this run folder."""


def holder(folder: Path) -> dict:
    """Who holds (or last held) the folder's lock, as it wrote itself down; {} if nobody did."""
    try:
        return json.loads((Path(folder) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def run_folder_lock(folder: str | Path, command: str | None = None):
    """Hold the lock of `folder` (created if needed) for the block; RunFolderBusy at once if another process
    holds it."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(folder)
            since = time.strftime("%H:%M:%S", time.localtime(who["since"])) if "since" in who else "?"
            raise RunFolderBusy(
                f"{folder} is in use by PID {who.get('pid', '?')} on {who.get('host', '?')} since {since} "
                f"({who.get('command', 'another xinstruct command')}): wait for it to finish or stop it; "
                f"`xinstruct status {folder}` works meanwhile") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                            "command": command or " ".join(["xinstruct", *sys.argv[1:]])}))
        f.flush()
        yield
    finally:
        f.close()  # closing the file releases the lock
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:  # a command that wrote nothing
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
