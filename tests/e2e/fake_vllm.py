#!/usr/bin/python3
"""A fake vLLM OpenAI-compatible server for chatcap's end-to-end tests.

It speaks the same HTTP/1.1 + Server-Sent-Events dialect as ``vllm serve`` (FastAPI on
uvicorn) for the three endpoints chatcap cares about:

* ``POST /v1/chat/completions`` -- non-streamed (``chat.completion`` JSON) and streamed
  (``text/event-stream``: a role chunk, reasoning deltas, content deltas one token per
  event, a chunk with ``finish_reason``, an optional usage chunk, ``data: [DONE]``);
  tool calls (``tool_calls`` deltas whose ``function.arguments`` arrive in fragments)
  when the request carries ``tools``.
* ``GET /v1/models`` and ``GET /health``.

The answer is a pure function of the request (see :func:`plan_answer`), so tests can
compute what a client must have received without talking to the server.  Request fields
that real vLLM does not have tune the fake (vLLM ignores unknown fields with a warning):

========================  =====================================================
``fake_tokens``           number of content tokens (``finish_reason`` "stop")
``max_tokens``            if ``fake_tokens`` is absent: that many content tokens,
(``max_completion_tokens``)  ``finish_reason`` "length"
``fake_reasoning_tokens`` number of reasoning tokens (default ``--reasoning-tokens``)
``fake_token_delay_ms``   sleep between two tokens (default ``--token-delay-ms``)
``fake_ttft_ms``          sleep before the first token (default ``--ttft-ms``)
========================  =====================================================

Modes (``--mode``), for crash-forensics tests.  A *poison* request is one whose
``structured_outputs`` is an object none of whose fields is usable (``{"json": null}``,
``{"json": ""}``, ``{"json_object": false}``, ``{}``) -- the request that takes a real
vLLM down:

``normal``       poison requests are answered like any other.
``crash``        ``--crash-delay-ms`` (default 100) after a poison request arrives the
                 process calls ``os._exit(1)``: every in-flight stream is cut, the
                 listening socket disappears.  The poison request gets no answer (a
                 streamed one gets its 200 headers, as Starlette sends them up front).
``engine_dead``  ``--crash-delay-ms`` after a poison request arrives the "engine" dies:
                 every in-flight stream (the poison one included) ends with an SSE error
                 event and ``data: [DONE]``; in-flight and later non-streamed requests, and
                 every later request on any path, get HTTP 500 naming EngineDeadError.
``idle_close``   normal, but uvicorn closes idle keep-alive connections after 1 s.

Run it as ``/usr/bin/python3 tests/e2e/fake_vllm.py --port P --mode M``.  With
``--port 0`` the kernel picks a port; ``--port-file F`` writes the port actually bound to
F (written atomically once the sockets are bound).  ``--events-log F`` appends one JSON
line per request received / answered / engine death (body sha256 only, never headers), for
tests that want the server's own view.  Uvicorn's access log is off and its log level is
``warning``: nothing from requests (and no credential) reaches the server's output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

# Module level: FastAPI resolves the (postponed) annotations of the route functions in
# this module's globals.
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

MODEL_NAME = "fake-vllm/gpt-oss-120b"

ENGINE_DEAD_MESSAGE = (
    "EngineCore encountered an issue. See stack trace (above) for the root cause."
)

# Tokens the fake model "generates".  Deliberately awkward for a JSON/SSE decoder: raw
# non-ASCII (1-, 2-, 3- and 4-byte UTF-8), quotes, backslashes, newlines, tabs, shell
# metacharacters, HTML-ish text.  vLLM writes JSON with raw UTF-8 (pydantic), so do we.
VOCABULARY: tuple[str, ...] = (
    "the", "model", "streams", "tokens", "over", "loopback", "packet", "reassembly",
    "café", "naïve", "über", "日本語", "—", "🚀", "Ωmega", "ß",
    '"quoted"', "back\\slash", "C:\\path\\to", "line\nbreak", "tab\there",
    "$(id)", "`uname -a`", "; rm -rf /tmp/x", "<b>bold</b>", "&amp;", "100%", "{brace}",
    "[bracket]", "data: not-an-event", "\r\n", "end.",
)

REASONING_VOCABULARY: tuple[str, ...] = (
    "Let", "me", "think", "about", "this", "carefully", "—", "the", "user", "wants",
    "a", "deterministic", "answer", "ok", "so", "première", "étape",
)


# --------------------------------------------------------------------------------------
# The deterministic "model"
# --------------------------------------------------------------------------------------

def _hash_stream(seed: bytes):
    """Yield an endless stream of pseudo-random 32-bit integers derived from ``seed``."""
    counter = 0
    while True:
        digest = hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        for i in range(0, 32, 4):
            yield int.from_bytes(digest[i:i + 4], "big")
        counter += 1


def _tokens(seed: bytes, vocabulary: tuple[str, ...], count: int) -> list[str]:
    """``count`` tokens picked from ``vocabulary``; every token but the first starts
    with a space, like BPE tokens of running text."""
    out: list[str] = []
    numbers = _hash_stream(seed)
    for i in range(count):
        word = vocabulary[next(numbers) % len(vocabulary)]
        out.append(word if i == 0 else " " + word)
    return out


def _int_field(req: dict, name: str) -> int | None:
    value = req.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return max(0, int(value))


@dataclass
class ToolCall:
    """One tool call of the fake model's answer."""
    id: str
    name: str
    arguments: str  # a JSON text, as OpenAI sends it

    def fragments(self, size: int = 7) -> list[str]:
        """The arguments cut into the pieces the stream sends (vLLM streams them as the
        model produces them; fixed-size pieces are as good for a decoder)."""
        return [self.arguments[i:i + size] for i in range(0, len(self.arguments), size)]


@dataclass
class AnswerPlan:
    """Everything the fake model will answer to one request."""
    reasoning_tokens: list[str]
    content_tokens: list[str]
    tool_calls: list[ToolCall]
    finish_reason: str
    prompt_tokens: int
    token_delay_s: float
    ttft_s: float
    stream: bool
    include_usage: bool

    @property
    def content(self) -> str:
        return "".join(self.content_tokens)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_tokens)

    @property
    def completion_tokens(self) -> int:
        return (len(self.reasoning_tokens) + len(self.content_tokens)
                + sum(len(t.fragments()) for t in self.tool_calls))

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens": self.completion_tokens,
            "prompt_tokens_details": None,
        }


def last_message_seed(req: dict) -> bytes:
    """The seed of the answer: a sha256 of the last message (canonical JSON)."""
    messages = req.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    canonical = json.dumps(last, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def plan_answer(req: dict, *, default_tokens: int = 16, default_reasoning_tokens: int = 4,
                default_token_delay_ms: float = 2.0, default_ttft_ms: float = 5.0) -> AnswerPlan:
    """The answer the fake model gives to the parsed request ``req``.

    Pure: tests call it with the same defaults as the server's command line to know the
    expected content, reasoning and tool calls.
    """
    seed = last_message_seed(req)
    fake_tokens = _int_field(req, "fake_tokens")
    max_tokens = _int_field(req, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _int_field(req, "max_tokens")
    if fake_tokens is not None:
        n_content, finish = fake_tokens, "stop"
    elif max_tokens is not None:
        n_content, finish = max_tokens, "length"
    else:
        n_content, finish = default_tokens, "stop"
    n_content = min(n_content, 100_000)
    n_reasoning = _int_field(req, "fake_reasoning_tokens")
    if n_reasoning is None:
        n_reasoning = default_reasoning_tokens
    n_reasoning = min(n_reasoning, 100_000)

    tool_calls: list[ToolCall] = []
    tools = req.get("tools")
    if isinstance(tools, list) and tools and req.get("tool_choice") != "none":
        first = tools[0] if isinstance(tools[0], dict) else {}
        function = first.get("function") if isinstance(first.get("function"), dict) else {}
        name = function.get("name") if isinstance(function.get("name"), str) else "tool"
        words = _tokens(seed + b"tool", VOCABULARY, 3)
        arguments = json.dumps({"query": "".join(words).strip(), "count": len(words[0]),
                                "flag": True}, ensure_ascii=False)
        tool_calls.append(ToolCall(id="chatcmpl-tool-" + hashlib.sha256(seed + b"id").hexdigest()[:32],
                                   name=name, arguments=arguments))
        n_content, finish = 0, "tool_calls"  # like vLLM's hermes parser: a call, no text

    prompt_chars = 0
    messages = req.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                prompt_chars += len(message["content"])
    delay = req.get("fake_token_delay_ms", default_token_delay_ms)
    ttft = req.get("fake_ttft_ms", default_ttft_ms)
    stream_options = req.get("stream_options")
    return AnswerPlan(
        reasoning_tokens=_tokens(seed + b"reasoning", REASONING_VOCABULARY, n_reasoning),
        content_tokens=_tokens(seed + b"content", VOCABULARY, n_content),
        tool_calls=tool_calls,
        finish_reason=finish,
        prompt_tokens=1 + prompt_chars // 4,
        token_delay_s=max(0.0, float(delay)) / 1000.0 if isinstance(delay, (int, float)) else 0.0,
        ttft_s=max(0.0, float(ttft)) / 1000.0 if isinstance(ttft, (int, float)) else 0.0,
        stream=req.get("stream") is True,
        include_usage=isinstance(stream_options, dict) and stream_options.get("include_usage") is True,
    )


def is_poison(req: dict) -> bool:
    """True when ``structured_outputs`` is an object with no usable field -- the request
    that kills vLLM in the incident chatcap was written for."""
    so = req.get("structured_outputs")
    if not isinstance(so, dict):
        return False
    return not any(value not in (None, "", False, {}, []) for value in so.values())


# --------------------------------------------------------------------------------------
# Server state
# --------------------------------------------------------------------------------------

@dataclass
class Settings:
    mode: str = "normal"
    default_tokens: int = 16
    reasoning_tokens: int = 4
    token_delay_ms: float = 2.0
    ttft_ms: float = 5.0
    crash_delay_ms: float = 100.0
    reasoning_field: str = "reasoning_content"
    events_log: str | None = None


@dataclass
class State:
    settings: Settings = field(default_factory=Settings)
    engine_dead: bool = False
    dead_event: asyncio.Event | None = None
    counter: int = 0
    log_lock: threading.Lock = field(default_factory=threading.Lock)

    def event(self, kind: str, **fields: Any) -> None:
        """Append one line to the events log (if any): never headers, never bodies."""
        if not self.settings.events_log:
            return
        line = json.dumps({"t": time.time(), "event": kind, **fields}) + "\n"
        with self.log_lock, open(self.settings.events_log, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


STATE = State()


def _json_bytes(obj: Any) -> bytes:
    """JSON like vLLM's pydantic dumps: compact, raw UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else _json_bytes(obj)) + b"\n\n"


def _error_body(message: str, type_: str, code: int) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def engine_dead_body() -> dict:
    return _error_body(ENGINE_DEAD_MESSAGE, "EngineDeadError", 500)


def stream_error_event() -> dict:
    return {"error": {"message": ENGINE_DEAD_MESSAGE, "type": "InternalServerError",
                      "code": 500}}


async def _sleep_unless_dead(seconds: float) -> bool:
    """Sleep ``seconds``; return True if the engine is (or becomes) dead meanwhile."""
    if STATE.engine_dead:
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return STATE.engine_dead
    assert STATE.dead_event is not None
    try:
        await asyncio.wait_for(STATE.dead_event.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
    return STATE.engine_dead


def _kill_engine() -> None:
    STATE.engine_dead = True
    assert STATE.dead_event is not None
    STATE.dead_event.set()
    STATE.event("engine_dead")
    print("fake_vllm: engine dead (mode engine_dead)", file=sys.stderr, flush=True)


def _crash() -> None:
    STATE.event("crash")
    print("fake_vllm: crashing (mode crash): os._exit(1)", file=sys.stderr, flush=True)
    os._exit(1)


# --------------------------------------------------------------------------------------
# The FastAPI application
# --------------------------------------------------------------------------------------

def create_app() -> FastAPI:
    """The application: routes read the module-level STATE."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def json_response(obj: Any, status: int = 200) -> Response:
        return Response(content=_json_bytes(obj), status_code=status,
                        media_type="application/json")

    def dead_response() -> Response:
        return json_response(engine_dead_body(), 500)

    @app.on_event("startup")
    async def _startup() -> None:
        STATE.dead_event = asyncio.Event()

    @app.get("/health")
    async def health() -> Response:
        if STATE.engine_dead:
            return dead_response()
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> Response:
        if STATE.engine_dead:
            return dead_response()
        return json_response({"object": "list", "data": [{
            "id": MODEL_NAME, "object": "model", "created": int(time.time()),
            "owned_by": "vllm", "root": MODEL_NAME, "parent": None, "max_model_len": 131072,
            "permission": [],
        }]})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await request.body()
        sha = hashlib.sha256(body).hexdigest()
        if STATE.engine_dead:
            STATE.event("request", sha256=sha, bytes=len(body), answered="engine_dead")
            return dead_response()
        try:
            req = json.loads(body)
            if not isinstance(req, dict) or not isinstance(req.get("messages"), list):
                raise ValueError("the body must be a JSON object with a 'messages' list")
        except (ValueError, UnicodeDecodeError) as exc:
            STATE.event("request", sha256=sha, bytes=len(body), answered="bad_request")
            return json_response(_error_body(f"Invalid request body: {type(exc).__name__}",
                                             "BadRequestError", 400), 400)

        s = STATE.settings
        plan = plan_answer(req, default_tokens=s.default_tokens,
                           default_reasoning_tokens=s.reasoning_tokens,
                           default_token_delay_ms=s.token_delay_ms, default_ttft_ms=s.ttft_ms)
        poison = is_poison(req) and s.mode in ("crash", "engine_dead")
        STATE.event("request", sha256=sha, bytes=len(body), stream=plan.stream, poison=poison)
        STATE.counter += 1
        chat_id = f"chatcmpl-{STATE.counter:04d}{sha[:28]}"
        created = int(time.time())
        model = req.get("model") if isinstance(req.get("model"), str) else MODEL_NAME

        if poison:
            loop = asyncio.get_running_loop()
            loop.call_later(s.crash_delay_ms / 1000.0,
                            _crash if s.mode == "crash" else _kill_engine)
            # The poison request never produces a token: a streamed one gets its 200
            # headers (Starlette sends them before the first body part) and then, in
            # engine_dead mode, the error event; a non-streamed one waits for the end.
            async def wait_for_death() -> AsyncIterator[bytes]:
                assert STATE.dead_event is not None
                await STATE.dead_event.wait()  # crash mode: the process exits first
                STATE.event("response", sha256=sha, status=200, ended="error_event")
                yield _sse(stream_error_event())
                yield b"data: [DONE]\n\n"
            if plan.stream:
                return StreamingResponse(wait_for_death(), media_type="text/event-stream")
            assert STATE.dead_event is not None
            await STATE.dead_event.wait()
            return dead_response()

        if plan.stream:
            return StreamingResponse(_stream(plan, chat_id, created, model, sha),
                                     media_type="text/event-stream")

        # Non-streamed: "generate" token by token (so an engine death is noticed), then
        # answer in one piece.
        if await _sleep_unless_dead(plan.ttft_s):
            return dead_response()
        for _ in range(plan.completion_tokens):
            if await _sleep_unless_dead(plan.token_delay_s):
                return dead_response()
        message: dict[str, Any] = {"role": "assistant",
                                   s.reasoning_field: plan.reasoning or None,
                                   "content": plan.content if not plan.tool_calls else None,
                                   "tool_calls": [
                                       {"id": t.id, "type": "function",
                                        "function": {"name": t.name, "arguments": t.arguments}}
                                       for t in plan.tool_calls]}
        STATE.event("response", sha256=sha, status=200)
        return json_response({
            "id": chat_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": plan.finish_reason, "stop_reason": None}],
            "usage": plan.usage(), "prompt_logprobs": None, "kv_transfer_params": None,
        })

    return app


async def _stream(plan: AnswerPlan, chat_id: str, created: int, model: str,
                  sha: str) -> AsyncIterator[bytes]:
    """The SSE body of a streamed answer, one ``data:`` event per yield (= per write)."""
    s = STATE.settings

    def chunk(delta: dict, finish_reason: str | None = None, **extra: Any) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}
        choice.update(extra)
        return _sse({"id": chat_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [choice]})

    def dead() -> list[bytes]:
        STATE.event("response", sha256=sha, status=200, ended="error_event")
        return [_sse(stream_error_event()), b"data: [DONE]\n\n"]

    if await _sleep_unless_dead(plan.ttft_s):
        for part in dead():
            yield part
        return
    yield chunk({"role": "assistant", "content": ""})
    deltas: list[dict] = [{s.reasoning_field: t} for t in plan.reasoning_tokens]
    deltas += [{"content": t} for t in plan.content_tokens]
    for index, call in enumerate(plan.tool_calls):
        deltas.append({"tool_calls": [{"id": call.id, "type": "function", "index": index,
                                       "function": {"name": call.name}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in call.fragments()]
    for i, delta in enumerate(deltas):
        if i and await _sleep_unless_dead(plan.token_delay_s):
            for part in dead():
                yield part
            return
        yield chunk(delta)
    if await _sleep_unless_dead(0):
        for part in dead():
            yield part
        return
    yield chunk({"content": ""}, plan.finish_reason, stop_reason=None)
    if plan.include_usage:
        yield _sse({"id": chat_id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [], "usage": plan.usage()})
    yield b"data: [DONE]\n\n"
    STATE.event("response", sha256=sha, status=200)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def _bind(hosts: list[str], port: int) -> list[socket.socket]:
    """Bind one listening socket per host, all on the same port (picked by the kernel
    for the first host when ``port`` is 0)."""
    sockets: list[socket.socket] = []
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8077, help="0 = any free port")
    parser.add_argument("--host", action="append",
                        help="address to bind (repeatable, e.g. 127.0.0.1 and ::1); "
                             "default 127.0.0.1")
    parser.add_argument("--mode", choices=("normal", "crash", "engine_dead", "idle_close"),
                        default="normal")
    parser.add_argument("--port-file", help="write the bound port to this file")
    parser.add_argument("--events-log", help="append JSON lines of server events here")
    parser.add_argument("--default-tokens", type=int, default=16)
    parser.add_argument("--reasoning-tokens", type=int, default=4)
    parser.add_argument("--token-delay-ms", type=float, default=2.0)
    parser.add_argument("--ttft-ms", type=float, default=5.0)
    parser.add_argument("--crash-delay-ms", type=float, default=100.0)
    parser.add_argument("--reasoning-field", choices=("reasoning_content", "reasoning"),
                        default="reasoning_content")
    parser.add_argument("--keep-alive-timeout", type=float, default=None,
                        help="uvicorn timeout_keep_alive (default 5, or 1 in idle_close)")
    args = parser.parse_args(argv)

    STATE.settings = Settings(
        mode=args.mode, default_tokens=args.default_tokens,
        reasoning_tokens=args.reasoning_tokens, token_delay_ms=args.token_delay_ms,
        ttft_ms=args.ttft_ms, crash_delay_ms=args.crash_delay_ms,
        reasoning_field=args.reasoning_field, events_log=args.events_log)

    import uvicorn

    keep_alive = args.keep_alive_timeout
    if keep_alive is None:
        keep_alive = 1 if args.mode == "idle_close" else 5
    sockets = _bind(args.host or ["127.0.0.1"], args.port)
    port = sockets[0].getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    config = uvicorn.Config(create_app(), log_level="warning", access_log=False,
                            timeout_keep_alive=keep_alive, http="h11", lifespan="on",
                            server_header=True, date_header=True)
    server = uvicorn.Server(config)
    print(f"fake_vllm: mode {args.mode}, port {port}, pid {os.getpid()}",
          file=sys.stderr, flush=True)
    server.run(sockets=sockets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
