"""A tiny OpenAI-compatible server on loopback, for backend fault tests and the client benchmark.

asyncio with keep-alive, in a thread (tests) or its own process (`python tests/loopback.py PORT [--delay S]
[--instructions]`, the benchmarks). `delay` holds every answer that long (a model's latency, with unlimited
concurrency: requests wait side by side on the event loop).
One `behaviour(request) -> bytes | None` decides every answer: a completion, an error status, a broken body, or
None for a hang (the connection stays open and silent). `kill()` drops the listener and every connection, like a
server killed with SIGKILL; `start()` again brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None


def reply(body: bytes | str | dict | list, status: int = 200, content_type: str = "application/json",
          headers: dict | None = None) -> bytes:
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    body = body.encode() if isinstance(body, str) else body
    head = [f"HTTP/1.1 {status} X", f"content-type: {content_type}", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer_text(prompt: str) -> str:
    """The fake model's answer names its prompt, so a test can tell answers apart and match them up."""
    return f" Describe {prompt}."


def completion(request: Request) -> bytes:
    """A well-formed answer: streamed as server-sent events when asked, else one JSON body; a `/models` list."""
    if request.path.endswith("/models"):
        return reply({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
    body = request.body or {}
    prompt = body.get("prompt") or body.get("messages", [{}])[-1].get("content", "")
    text = answer_text(prompt)
    chat = request.path.endswith("/chat/completions")
    if body.get("stream"):
        events = [{"choices": [{"index": 0, **({"delta": {"content": piece}} if chat else {"text": piece}),
                                "finish_reason": None}]} for piece in (text[:5], text[5:])]
        events.append({"choices": [{"index": 0, **({"delta": {}} if chat else {"text": ""}),
                                    "finish_reason": "stop"}]})
        events.append({"choices": [], "usage": {"completion_tokens": 2}})
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return reply(sse, content_type="text/event-stream")
    choice = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    return reply({"choices": [{"index": 0, **choice, "finish_reason": "stop"}], "usage": {"completion_tokens": 2}})


class _Connection(asyncio.Protocol):
    def __init__(self, server: LoopbackServer):
        self.server, self.buffer, self.transport = server, b"", None

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections.add(transport)

    def connection_lost(self, exc):
        self.server.connections.discard(self.transport)

    def data_received(self, data: bytes):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = dict(line.split(":", 1) for line in lines[1:])
            headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
            length = int(headers.get("content-length", 0))
            if len(self.buffer) < end + 4 + length:
                return
            raw, self.buffer = self.buffer[end + 4:end + 4 + length], self.buffer[end + 4 + length:]
            method, path = lines[0].split(" ")[:2]
            request = Request(method, path, headers, json.loads(raw) if raw else None)
            self.server.requests += 1
            answer = self.server.behaviour(request)
            if answer is None:  # hang: say nothing, keep the connection open
                return
            if self.server.delay:
                asyncio.get_running_loop().call_later(self.server.delay, self._write, answer)
            else:
                self.transport.write(answer)

    def _write(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)


class LoopbackServer:
    def __init__(self, behaviour=completion, port: int = 0, delay: float = 0.0):
        self.behaviour, self.port, self.delay = behaviour, port, delay
        self.requests = 0
        self.connections: set = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._server = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self) -> None:
        async def listen():
            self._server = await self.loop.create_server(lambda: _Connection(self), "127.0.0.1", self.port,
                                                         reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        self._call(listen())

    def kill(self) -> None:
        """Stop listening and drop every connection at once (what clients see of a SIGKILLed server)."""
        async def drop():
            self._server.close()
            for t in list(self.connections):
                t.abort()
            await self._server.wait_closed()
        self._call(drop())

    def stop(self) -> None:
        self.kill()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def instruction_text(prompt: str) -> str:
    """An answer that passes generation's checks (short, English, no echo of the document), named by the prompt."""
    import zlib
    return f" Describe the topic of document {zlib.crc32(prompt.encode())} in a short paragraph."


if __name__ == "__main__":  # the benchmarks' server, in a process of its own
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--instructions", action="store_true", help="answer like a generator of instructions")
    args = ap.parse_args()
    if args.instructions:
        answer_text = instruction_text  # completion() looks it up at call time
    server = LoopbackServer(port=args.port, delay=args.delay)
    print(server.url, flush=True)
    server.thread.join()
