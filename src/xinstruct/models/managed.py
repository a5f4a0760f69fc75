"""Inference servers the openai backend starts itself (`managed:`): llama.cpp's Python server, vLLM, SGLang, or
a command of your own, on a free port, with the section's LoRA adapter, restarted when they die.

The backend talks to a managed server like to any other endpoint; this module only builds the command line,
starts the process in its own session (so stop() ends its children too: vLLM forks engine workers), waits for
/v1/models, and stops it. Restart policy lives in the backend, which knows which requests were in flight.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import httpx

from xinstruct.config import OpenAIConfig
from xinstruct.models.base import FatalBackendError, clean_error
from xinstruct.models.bundled import bundled_gguf

log = logging.getLogger(__name__)
BASE_NAME = "xinstruct"  # the served name of the base model: no user wiring of names
LORA_NAME = "xinstruct-lora"  # the served name of the section's adapter (vLLM, SGLang)
_LIVE: weakref.WeakSet[ManagedServer] = weakref.WeakSet()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(m) -> dict[str, str]:
    """What a managed server gets besides this process's environment: batch invariance for vLLM, its GPUs, and
    the config's own variables (which win)."""
    env = {"VLLM_BATCH_INVARIANT": "1"} if m.kind == "vllm" and m.batch_invariant else {}
    if m.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in m.gpus)
    return {**env, **m.env}


def server_command(cfg: OpenAIConfig, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line that serves `cfg.model` (+ `cfg.lora`) as BASE_NAME (LORA_NAME) at host:port/v1."""
    m = cfg.managed
    lora = cfg.lora
    if m.kind == "llamacpp":
        cmd = [sys.executable, "-m", "xinstruct.models.llama_server", "--model", cfg.model or str(bundled_gguf()),
               "--host", host, "--port", str(port), "--model_alias", BASE_NAME,
               # by default a new request cuts the stream of the one running; we send many at once
               "--interrupt_requests", "False"]
        if lora:
            cmd += ["--lora_path", lora]  # merged into the one model: requests name BASE_NAME
    elif m.kind == "vllm":
        cmd = ["vllm", "serve", cfg.model, "--host", host, "--port", str(port), "--served-model-name", BASE_NAME]
        if m.gpus:
            cmd += ["--tensor-parallel-size", str(len(m.gpus))]
        if lora:
            cmd += ["--enable-lora", "--lora-modules", f"{LORA_NAME}={lora}"]
    elif m.kind == "sglang":
        cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", cfg.model, "--host", host,
               "--port", str(port), "--served-model-name", BASE_NAME]
        if m.gpus:
            cmd += ["--tp-size", str(len(m.gpus))]
        if lora:
            cmd += ["--enable-lora", "--lora-paths", f"{LORA_NAME}={lora}"]
    else:
        cmd = shlex.split(m.command.format(python=sys.executable, model=cfg.model or "", host=host, port=port,
                                           name=BASE_NAME, lora=lora or ""))
    return cmd + list(m.args)


def request_fields(cfg: OpenAIConfig) -> dict:
    """What each request to a managed server names: the adapter on vLLM (`model`) and SGLang (`lora_path`)."""
    if cfg.lora and cfg.managed.kind == "vllm":
        return {"model": LORA_NAME}
    if cfg.lora and cfg.managed.kind == "sglang":
        return {"model": BASE_NAME, "lora_path": LORA_NAME}
    return {"model": BASE_NAME}


class ManagedServer:
    """One server process: started on a free port, healthy once /v1/models answers, stopped with its children."""

    def __init__(self, cfg: OpenAIConfig, secrets: tuple[str, ...] = ()):
        self.cfg = cfg
        self.kind = cfg.managed.kind
        self.secrets = secrets
        self.proc: subprocess.Popen | None = None
        self.port = cfg.managed.port or free_port()
        self.starts = 0
        self.log_path = Path(cfg.managed.log) if cfg.managed.log else Path(
            tempfile.mkstemp(prefix=f"xinstruct-{self.kind}-", suffix=".log")[1])
        _LIVE.add(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        """Start the server and wait until it answers; the base URL. Raises FatalBackendError if it cannot."""
        m = self.cfg.managed
        if self.starts and not m.port and not _port_free(self.port):
            self.port = free_port()  # the old port was taken meanwhile
        env = {**os.environ, **server_env(m)}
        cmd = server_command(self.cfg, self.port)
        self.starts += 1
        log.info("starting managed %s server: %s", self.kind, " ".join(cmd))
        with open(self.log_path, "ab") as out:
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True)
            except OSError as e:
                raise FatalBackendError(f"managed {self.kind} server: cannot run {cmd[0]!r} ({e})") from None
        self._wait_healthy()
        return self.url

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.cfg.managed.startup_timeout_s
        while True:
            code = self.proc.poll()
            if code is not None:
                raise FatalBackendError(f"managed {self.kind} server exited with code {code} while starting: "
                                        f"{self.tail()} (log: {self.log_path})")
            try:
                if httpx.get(f"{self.url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise FatalBackendError(f"managed {self.kind} server did not answer /v1/models within "
                                        f"{self.cfg.managed.startup_timeout_s:g} s: {self.tail()} "
                                        f"(log: {self.log_path})")
            time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 10 s; also reaps the group of a dead server
        whose children (engine workers holding a GPU) may still run."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                if sig == signal.SIGTERM:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent
                return
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines: int = 3) -> str:
        """The last lines of the server's output, cleaned for an error message."""
        try:
            text = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return clean_error(" | ".join(text.strip().splitlines()[-lines:]), self.secrets)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@atexit.register
def _stop_all() -> None:  # no server outlives the process that started it, whatever ended it
    for server in list(_LIVE):
        server.stop()
