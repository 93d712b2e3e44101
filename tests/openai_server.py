"""A real OpenAI-compatible chat completions server for the judge client's tests.

POST /v1/chat/completions is answered by a real tiny transformers model that generates the reply.
By default its decoding is constrained to the verdict vocabulary ("Output (a)", "Output (b)",
"Tie"), as servers' guided decoding does, so which verdict comes out is the model's own choice;
`garbage` replies are generated unconstrained (a random tiny model writes unreadable text).
Faults are injected by counters that each request consumes: `fail_429`, `fail_500`, `slow`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prefleak.probes.base import load_causal_lm, load_tokenizer

VERDICTS = ("Output (a)", "Output (b)", "Tie")


@dataclass
class Faults:
    """How many of the next requests get each fault (checked in this order)."""

    fail_429: int = 0
    retry_after: str = "0"
    fail_500: int = 0
    slow: int = 0
    slow_s: float = 1.0
    garbage: int = 0


@dataclass
class Seen:
    """What the server received: Authorization headers and request bodies, in arrival order."""

    authorizations: list[str | None] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


class TinyChatModel:
    """Greedy chat completion with a tiny causal LM, optionally restricted to VERDICTS."""

    def __init__(self, model: Path) -> None:
        self.model = load_causal_lm(model, "cpu")
        self.tokenizer = load_tokenizer(model)
        self._verdict_ids = [
            [*self.tokenizer(text, add_special_tokens=False).input_ids, self.tokenizer.eos_token_id]
            for text in VERDICTS
        ]
        self._lock = threading.Lock()  # one generation at a time on the shared CPU

    def reply(self, messages: list[dict[str, str]], max_tokens: int, constrained: bool) -> str:
        import torch

        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        start = batch["input_ids"].shape[1]

        def allowed(_: int, ids: torch.Tensor) -> list[int]:
            done = ids[start:].tolist()
            options = [v[len(done)] for v in self._verdict_ids if v[: len(done)] == done]
            return options or [self.tokenizer.eos_token_id]

        with self._lock, torch.no_grad():
            output = self.model.generate(
                **batch,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                prefix_allowed_tokens_fn=allowed if constrained else None,
            )
        return str(self.tokenizer.decode(output[0, start:], skip_special_tokens=True))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state = self.server
        with state.lock:
            state.seen.authorizations.append(self.headers.get("Authorization"))
            state.seen.bodies.append(body)
            fault = state.next_fault()
        if fault == "429":
            self._send(429, {"error": {"message": "rate limited"}}, state.faults.retry_after)
            return
        if fault == "500":
            self._send(500, {"error": {"message": "internal error"}})
            return
        if fault == "slow":
            time.sleep(state.faults.slow_s)
        content = state.chat.reply(body["messages"], body["max_tokens"], fault != "garbage")
        self._send(
            200,
            {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            },
        )

    def _send(self, status: int, payload: dict[str, Any], retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and hung up: exactly what the slow fault provokes

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, chat: TinyChatModel, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.chat = chat
        self.faults = faults
        self.seen = Seen()
        self.lock = threading.Lock()

    def next_fault(self) -> str | None:
        for name in ("fail_429", "fail_500", "slow", "garbage"):
            if getattr(self.faults, name) > 0:
                setattr(self.faults, name, getattr(self.faults, name) - 1)
                return name.removeprefix("fail_")
        return None


@dataclass
class RunningServer:
    base_url: str  # what OpenAIJudgeOptions.base_url takes: http://127.0.0.1:PORT/v1
    faults: Faults
    seen: Seen


@contextmanager
def openai_server(chat: TinyChatModel, faults: Faults | None = None) -> Iterator[RunningServer]:
    """Serve `chat` on a free local port for the duration of the block."""
    server = _Server(chat, faults or Faults())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield RunningServer(f"http://{host!s}:{port}/v1", server.faults, server.seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
