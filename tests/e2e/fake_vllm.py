#!/usr/bin/python3
"""A fake vLLM OpenAI-compatible server for chatcap's end-to-end tests.

It speaks the same HTTP/1.1 + Server-Sent-Events dialects as ``vllm serve`` (FastAPI on
uvicorn, h11), closely enough that the official OpenAI and Anthropic SDKs parse them:

* ``POST /v1/chat/completions`` -- non-streamed (``chat.completion`` JSON) and streamed
  (``text/event-stream``: a role chunk, reasoning deltas, content deltas one token per
  event, a chunk with ``finish_reason``, an optional usage chunk, ``data: [DONE]``);
  tool calls (``tool_calls`` deltas whose ``function.arguments`` arrive in fragments)
  when the request carries ``tools``.
* ``POST /v1/completions`` -- the legacy completions API: ``text_completion`` JSON, or
  ``data:`` chunks with ``choices[0].text`` one token each, a chunk with
  ``finish_reason``, a usage chunk when ``stream_options.include_usage``, ``[DONE]``.
  No reasoning and no tool calls (the API has neither); a ``prompt`` list is answered as
  one prompt (one choice).
* ``POST /v1/responses`` -- the Responses API: a ``response`` object whose ``output`` has
  a ``reasoning`` item, a ``message`` item (or ``function_call`` items when the request
  has ``tools``); streamed as ``event:``/``data:`` pairs (``response.created`` ...
  ``response.completed``, or ``response.incomplete`` when ``max_output_tokens`` caps
  the answer), each with ``type`` and ``sequence_number``; no ``[DONE]``.
* ``POST /v1/messages`` -- the Anthropic Messages API as vLLM serves it: ``thinking`` /
  ``text`` / ``tool_use`` content blocks; streamed as ``message_start``,
  ``content_block_start``, ``ping``, ``content_block_delta`` (``thinking_delta``,
  ``signature_delta``, ``text_delta``, ``input_json_delta``), ``content_block_stop``,
  ``message_delta``, ``message_stop``.
* ``POST /v1/embeddings`` -- a small fixed embedding per input (for flood tests).
* ``GET /v1/models`` and ``GET /health``.

The answer is a pure function of the request (see :func:`plan_answer`; ``dialect``
names the endpoint), so tests can compute what a client must have received without
talking to the server.  The seed is the last message (chat, messages), the prompt
(completions) or the last input item / the input string (responses).  Request fields
that real vLLM does not have tune the fake (vLLM ignores unknown fields with a warning):

========================  =====================================================
``fake_tokens``           number of content tokens (``finish_reason`` "stop")
``max_tokens``            chat and completions, if ``fake_tokens`` is absent: that
(``max_completion_tokens``)  many content tokens, ``finish_reason`` "length".
                          responses (``max_output_tokens``) and messages
                          (``max_tokens``, required there): a cap on the content
                          tokens; when it cuts, "length" (``incomplete`` /
                          ``max_tokens``)
``fake_reasoning_tokens`` number of reasoning tokens (default ``--reasoning-tokens``)
``fake_token_delay_ms``   sleep between two tokens (default ``--token-delay-ms``)
``fake_ttft_ms``          sleep before the first token (default ``--ttft-ms``)
========================  =====================================================

Modes (``--mode``), for crash-forensics tests.  A *poison* request is one, on any of the
generation endpoints and ``/v1/embeddings``, whose top-level ``structured_outputs`` is an
object none of whose fields is usable (``{"json": null}``, ``{"json": ""}``,
``{"json_object": false}``, ``{}``) -- the request that takes a real vLLM down:

``normal``       poison requests are answered like any other.
``crash``        ``--crash-delay-ms`` (default 100) after a poison request arrives the
                 process calls ``os._exit(1)``: every in-flight stream is cut, the
                 listening socket disappears.  The poison request gets no answer (a
                 streamed one gets its 200 headers, as Starlette sends them up front;
                 a streamed /v1/responses one also its ``response.created`` and
                 ``response.in_progress`` events).
``engine_dead``  ``--crash-delay-ms`` after a poison request arrives the "engine" dies:
                 every in-flight stream (the poison one included) ends in its dialect's
                 way -- chat and completions ``data: {"error": ...}`` + ``data: [DONE]``;
                 responses ``event: error`` (``{"type": "error", "code", "message",
                 "param", "sequence_number"}``, no ``response.failed``); messages
                 ``event: error`` (``{"type": "error", "error": {"type": "api_error",
                 "message"}}``); in-flight and later non-streamed requests, and every later
                 request on any path, get HTTP 500 naming EngineDeadError (in Anthropic's
                 error shape on /v1/messages).
``idle_close``   normal, but uvicorn closes idle keep-alive connections after 1 s.

Run it as ``/usr/bin/python3 tests/e2e/fake_vllm.py --port P --mode M``.  With
``--port 0`` the kernel picks a port; ``--port-file F`` writes the port actually bound to
F (written atomically once the sockets are bound).  ``--tcp-nodelay 1`` sets TCP_NODELAY on
accepted connections as ``vllm serve`` does (off by default, as this fake always was:
then the first event after the headers can wait ~40 ms for the client's delayed ACK).
``--events-log F`` appends one JSON
line per request received (``path``, body ``sha256``, ``poison``) / answered / engine
death (never headers), for tests that want the server's own view.  Uvicorn's access log
is off and its log level is ``warning``: nothing from requests (and no credential)
reaches the server's output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

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


DIALECTS: tuple[str, ...] = ("chat", "completions", "responses", "messages")
"""The generation dialects: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/responses``, ``/v1/messages``."""

DIALECT_PATHS: dict[str, str] = {
    "chat": "/v1/chat/completions", "completions": "/v1/completions",
    "responses": "/v1/responses", "messages": "/v1/messages",
}


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

    @property
    def input(self) -> Any:
        """The arguments parsed (Anthropic's ``tool_use.input``)."""
        return json.loads(self.arguments)

    def dialect_id(self, dialect: str) -> str:
        """The call's id as ``dialect`` names it: chat ``chatcmpl-tool-<hex>``, responses
        ``call_<hex>`` (its ``call_id``; the item id is ``fc_<hex>``), messages
        ``toolu_<hex>``."""
        hex_part = self.id.rsplit("-", 1)[-1]
        return {"responses": "call_" + hex_part, "messages": "toolu_" + hex_part}.get(
            dialect, self.id)


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
    dialect: str = "chat"

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

    @property
    def stop_reason(self) -> str:
        """Anthropic's name for :attr:`finish_reason`."""
        return {"stop": "end_turn", "length": "max_tokens",
                "tool_calls": "tool_use"}[self.finish_reason]

    @property
    def status(self) -> str:
        """The Responses API's ``status`` of the answer."""
        return "incomplete" if self.finish_reason == "length" else "completed"


def _canonical_seed(obj: Any) -> bytes:
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def last_message_seed(req: dict) -> bytes:
    """The seed of the answer: a sha256 of the last message (canonical JSON)."""
    messages = req.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    return _canonical_seed(last)


def request_seed(req: dict, dialect: str = "chat") -> bytes:
    """The seed of the answer in ``dialect``: the last message (chat, messages), the
    ``prompt`` (completions: a string or the whole list), the ``input`` (responses: the
    string, or the last item of a list) -- each as a sha256 of its canonical JSON."""
    if dialect in ("chat", "messages"):
        return last_message_seed(req)
    if dialect == "completions":
        return _canonical_seed(req.get("prompt"))
    if dialect == "responses":
        value = req.get("input")
        if isinstance(value, list):
            value = value[-1] if value else None
        return _canonical_seed(value)
    raise ValueError(f"unknown dialect {dialect!r}")


def _text_chars(content: Any) -> int:
    """Characters of a message content: a string, or the ``text`` of content parts."""
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part["text"]) for part in content
                   if isinstance(part, dict) and isinstance(part.get("text"), str))
    return 0


def _prompt_chars(req: dict, dialect: str) -> int:
    if dialect == "chat":  # as it always was: string contents only
        prompt_chars = 0
        messages = req.get("messages")
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict) and isinstance(message.get("content"), str):
                    prompt_chars += len(message["content"])
        return prompt_chars
    if dialect == "completions":
        prompt = req.get("prompt")
        if isinstance(prompt, list):
            return sum(len(p) for p in prompt if isinstance(p, str))
        return len(prompt) if isinstance(prompt, str) else 0
    if dialect == "responses":
        chars = _text_chars(req.get("instructions"))
        value = req.get("input")
        if isinstance(value, str):
            return chars + len(value)
        for item in value if isinstance(value, list) else []:
            if isinstance(item, dict):
                chars += _text_chars(item.get("content"))
        return chars
    chars = _text_chars(req.get("system"))  # messages
    for message in req.get("messages") if isinstance(req.get("messages"), list) else []:
        if isinstance(message, dict):
            chars += _text_chars(message.get("content"))
    return chars


def _tool_name(tool: Any, dialect: str) -> str:
    tool = tool if isinstance(tool, dict) else {}
    if dialect == "chat":
        function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
        return function.get("name") if isinstance(function.get("name"), str) else "tool"
    # responses: {"type": "function", "name", "parameters"}; messages: {"name",
    # "input_schema"}; a chat-style tool is understood too.
    if isinstance(tool.get("name"), str):
        return tool["name"]
    function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
    return function.get("name") if isinstance(function.get("name"), str) else "tool"


def _tools_wanted(req: dict, dialect: str) -> bool:
    tools = req.get("tools")
    if dialect == "completions" or not isinstance(tools, list) or not tools:
        return False
    choice = req.get("tool_choice")
    if dialect == "messages":
        return not (isinstance(choice, dict) and choice.get("type") == "none")
    return choice != "none"


def plan_answer(req: dict, *, default_tokens: int = 16, default_reasoning_tokens: int = 4,
                default_token_delay_ms: float = 2.0, default_ttft_ms: float = 5.0,
                dialect: str = "chat") -> AnswerPlan:
    """The answer the fake model gives to the parsed request ``req`` in ``dialect``
    (one of :data:`DIALECTS`; "chat" unless told).

    Pure: tests call it with the same defaults as the server's command line to know the
    expected content, reasoning and tool calls.
    """
    seed = request_seed(req, dialect)
    fake_tokens = _int_field(req, "fake_tokens")
    if dialect in ("chat", "completions"):
        max_tokens = _int_field(req, "max_completion_tokens") if dialect == "chat" else None
        if max_tokens is None:
            max_tokens = _int_field(req, "max_tokens")
        if fake_tokens is not None:
            n_content, finish = fake_tokens, "stop"
        elif max_tokens is not None:
            n_content, finish = max_tokens, "length"
        else:
            n_content, finish = default_tokens, "stop"
    else:
        cap = _int_field(req, "max_output_tokens" if dialect == "responses" else "max_tokens")
        n_content = fake_tokens if fake_tokens is not None else default_tokens
        finish = "stop"
        if cap is not None and n_content > cap:
            n_content, finish = cap, "length"
    n_content = min(n_content, 100_000)
    n_reasoning = _int_field(req, "fake_reasoning_tokens")
    if n_reasoning is None:
        n_reasoning = default_reasoning_tokens
    n_reasoning = min(n_reasoning, 100_000)
    if dialect == "completions":
        n_reasoning = 0  # the legacy API has no reasoning field

    tool_calls: list[ToolCall] = []
    if _tools_wanted(req, dialect):
        name = _tool_name(req["tools"][0], dialect)
        words = _tokens(seed + b"tool", VOCABULARY, 3)
        arguments = json.dumps({"query": "".join(words).strip(), "count": len(words[0]),
                                "flag": True}, ensure_ascii=False)
        tool_calls.append(ToolCall(id="chatcmpl-tool-" + hashlib.sha256(seed + b"id").hexdigest()[:32],
                                   name=name, arguments=arguments))
        n_content, finish = 0, "tool_calls"  # like vLLM's hermes parser: a call, no text

    prompt_chars = _prompt_chars(req, dialect)
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
        dialect=dialect,
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


def _sse_event(name: str, obj: Any) -> bytes:
    """An SSE event with an ``event:`` line (Responses and Anthropic dialects)."""
    return b"event: " + name.encode("ascii") + b"\ndata: " + _json_bytes(obj) + b"\n\n"


def _error_body(message: str, type_: str, code: int) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def engine_dead_body() -> dict:
    return _error_body(ENGINE_DEAD_MESSAGE, "EngineDeadError", 500)


def anthropic_engine_dead_body() -> dict:
    """The 500 body of /v1/messages once the engine is dead: Anthropic's error shape,
    still naming EngineDeadError."""
    return {"type": "error", "error": {"type": "api_error",
                                       "message": "EngineDeadError: " + ENGINE_DEAD_MESSAGE}}


def stream_error_event() -> dict:
    return {"error": {"message": ENGINE_DEAD_MESSAGE, "type": "InternalServerError",
                      "code": 500}}


def responses_error_event(sequence_number: int) -> dict:
    """The Responses API's ``error`` stream event ending a stream the engine death cut."""
    return {"type": "error", "code": "InternalServerError", "message": ENGINE_DEAD_MESSAGE,
            "param": None, "sequence_number": sequence_number}


def anthropic_error_event() -> dict:
    """Anthropic's ``error`` stream event ending a stream the engine death cut."""
    return {"type": "error", "error": {"type": "api_error", "message": ENGINE_DEAD_MESSAGE}}


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
# One admitted request
# --------------------------------------------------------------------------------------

@dataclass
class Exchange:
    """A parsed generation request and what the server knows about it."""
    dialect: str
    path: str
    req: dict
    sha: str
    plan: AnswerPlan
    answer_id: str
    created: int
    model: str

    def log_response(self, **fields: Any) -> None:
        STATE.event("response", sha256=self.sha, path=self.path, status=200, **fields)


class SequenceNumbers:
    """The ``sequence_number`` counter of one Responses stream."""

    def __init__(self) -> None:
        self.next = 0

    def take(self) -> int:
        self.next += 1
        return self.next - 1


async def _drive(steps: Iterator[bytes | float], dead: Callable[[], list[bytes]],
                 on_end: Callable[[], None]) -> AsyncIterator[bytes]:
    """Run a stream plan: a ``float`` is a pause (seconds) during which the engine may
    die (then ``dead()``'s parts end the stream), ``bytes`` are written as they are.
    The steps are produced lazily, so an event is built only once it is to be sent."""
    for step in steps:
        if isinstance(step, bytes):
            yield step
        elif await _sleep_unless_dead(step):
            for part in dead():
                yield part
            return
    on_end()


def _dead_parts(ex: Exchange, seq: SequenceNumbers | None = None) -> list[bytes]:
    """How an in-flight stream of ``ex``'s dialect ends when the engine dies."""
    ex.log_response(ended="error_event")
    if ex.dialect == "responses":
        return [_sse_event("error", responses_error_event(seq.take() if seq else 0))]
    if ex.dialect == "messages":
        return [_sse_event("error", anthropic_error_event())]
    return [_sse(stream_error_event()), b"data: [DONE]\n\n"]


# --------------------------------------------------------------------------------------
# /v1/completions
# --------------------------------------------------------------------------------------

def completion_object(ex: Exchange) -> dict:
    plan = ex.plan
    return {"id": ex.answer_id, "object": "text_completion", "created": ex.created,
            "model": ex.model,
            "choices": [{"index": 0, "text": plan.content, "logprobs": None,
                         "finish_reason": plan.finish_reason, "stop_reason": None,
                         "prompt_logprobs": None}],
            "usage": plan.usage(), "system_fingerprint": None,
            "kv_transfer_params": None}


def completion_steps(ex: Exchange) -> Iterator[bytes | float]:
    plan = ex.plan

    def chunk(text: str, finish_reason: str | None = None) -> bytes:
        return _sse({"id": ex.answer_id, "object": "text_completion", "created": ex.created,
                     "model": ex.model,
                     "choices": [{"index": 0, "text": text, "logprobs": None,
                                  "finish_reason": finish_reason, "stop_reason": None}]})

    yield plan.ttft_s
    for i, token in enumerate(plan.content_tokens):
        yield plan.token_delay_s if i else 0.0
        yield chunk(token)
    yield 0.0
    yield chunk("", plan.finish_reason)
    if plan.include_usage:
        yield _sse({"id": ex.answer_id, "object": "text_completion", "created": ex.created,
                    "model": ex.model, "choices": [], "usage": plan.usage()})
    yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------------------
# /v1/responses
# --------------------------------------------------------------------------------------

def _responses_usage(plan: AnswerPlan) -> dict:
    return {"input_tokens": plan.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": plan.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": len(plan.reasoning_tokens)},
            "total_tokens": plan.prompt_tokens + plan.completion_tokens}


def _item_hex(ex: Exchange, what: str) -> str:
    return hashlib.sha256((ex.answer_id + what).encode()).hexdigest()[:32]


def response_output(ex: Exchange, done: bool = True) -> list[dict]:
    """The ``output`` items of the answer (``done``: complete, else as first added)."""
    plan = ex.plan
    items: list[dict] = []
    if plan.reasoning_tokens:
        items.append({"id": "rs_" + _item_hex(ex, "reasoning"), "type": "reasoning",
                      "summary": [],
                      "content": ([{"type": "reasoning_text", "text": plan.reasoning}]
                                  if done else []),
                      "encrypted_content": None,
                      "status": "completed" if done else "in_progress"})
    if not plan.tool_calls:
        items.append({"id": "msg_" + _item_hex(ex, "message"), "type": "message",
                      "role": "assistant",
                      "status": plan.status if done else "in_progress",
                      "content": ([{"type": "output_text", "text": plan.content,
                                    "annotations": [], "logprobs": []}] if done else [])})
    for call in plan.tool_calls:
        items.append({"id": "fc_" + call.id.rsplit("-", 1)[-1], "type": "function_call",
                      "call_id": call.dialect_id("responses"), "name": call.name,
                      "arguments": call.arguments if done else "",
                      "status": "completed" if done else "in_progress"})
    return items


def response_object(ex: Exchange, status: str, output: list[dict],
                    usage: dict | None) -> dict:
    req = ex.req
    text = req.get("text") if isinstance(req.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": ex.answer_id, "object": "response", "created_at": ex.created,
        "status": status, "background": False, "error": None,
        "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete"
                               else None),
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"), "max_tool_calls": None,
        "model": ex.model, "output": output,
        "parallel_tool_calls": req.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": req.get("reasoning") if isinstance(req.get("reasoning"), dict) else None,
        "service_tier": "auto", "store": False,
        "temperature": req.get("temperature", 1.0), "text": text,
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") if isinstance(req.get("tools"), list) else [],
        "top_logprobs": 0, "top_p": req.get("top_p", 1.0), "truncation": "disabled",
        "usage": usage, "user": None, "metadata": {},
    }


def response_preamble(ex: Exchange, seq: SequenceNumbers) -> list[bytes]:
    """``response.created`` and ``response.in_progress``: sent before any token."""
    pending = response_object(ex, "in_progress", [], None)
    return [_sse_event(kind, {"type": kind, "sequence_number": seq.take(), "response": pending})
            for kind in ("response.created", "response.in_progress")]


def response_steps(ex: Exchange, seq: SequenceNumbers) -> Iterator[bytes | float]:
    plan = ex.plan

    def ev(kind: str, **fields: Any) -> bytes:
        return _sse_event(kind, {"type": kind, "sequence_number": seq.take(), **fields})

    final_items = response_output(ex, done=True)
    first_items = response_output(ex, done=False)
    yield plan.ttft_s
    ticks = 0

    def tick() -> float:
        nonlocal ticks
        ticks += 1
        return plan.token_delay_s if ticks > 1 else 0.0

    for index, (first, final) in enumerate(zip(first_items, final_items)):
        yield ev("response.output_item.added", output_index=index, item=first)
        if final["type"] == "reasoning":
            yield ev("response.content_part.added", item_id=final["id"], output_index=index,
                     content_index=0, part={"type": "reasoning_text", "text": ""})
            for token in plan.reasoning_tokens:
                yield tick()
                yield ev("response.reasoning_text.delta", item_id=final["id"],
                         output_index=index, content_index=0, delta=token)
            yield ev("response.reasoning_text.done", item_id=final["id"], output_index=index,
                     content_index=0, text=plan.reasoning)
            yield ev("response.content_part.done", item_id=final["id"], output_index=index,
                     content_index=0, part=final["content"][0])
        elif final["type"] == "message":
            yield ev("response.content_part.added", item_id=final["id"], output_index=index,
                     content_index=0,
                     part={"type": "output_text", "text": "", "annotations": [],
                           "logprobs": []})
            for token in plan.content_tokens:
                yield tick()
                yield ev("response.output_text.delta", item_id=final["id"], output_index=index,
                         content_index=0, delta=token, logprobs=[])
            yield ev("response.output_text.done", item_id=final["id"], output_index=index,
                     content_index=0, text=plan.content, logprobs=[])
            yield ev("response.content_part.done", item_id=final["id"], output_index=index,
                     content_index=0, part=final["content"][0])
        else:  # function_call
            call = next(c for c in plan.tool_calls if c.dialect_id("responses") == final["call_id"])
            for piece in call.fragments():
                yield tick()
                yield ev("response.function_call_arguments.delta", item_id=final["id"],
                         output_index=index, delta=piece)
            yield ev("response.function_call_arguments.done", item_id=final["id"],
                     output_index=index, name=call.name, arguments=call.arguments)
        yield ev("response.output_item.done", output_index=index, item=final)
    yield 0.0
    kind = "response.incomplete" if plan.status == "incomplete" else "response.completed"
    yield ev(kind, response=response_object(ex, plan.status, final_items,
                                            _responses_usage(plan)))


# --------------------------------------------------------------------------------------
# /v1/messages (Anthropic)
# --------------------------------------------------------------------------------------

def _signature(ex: Exchange) -> str:
    return hashlib.sha256((ex.answer_id + "signature").encode()).hexdigest()


def message_content(ex: Exchange) -> list[dict]:
    plan = ex.plan
    blocks: list[dict] = []
    if plan.reasoning_tokens:
        blocks.append({"type": "thinking", "thinking": plan.reasoning,
                       "signature": _signature(ex)})
    if plan.content_tokens:
        blocks.append({"type": "text", "text": plan.content})
    for call in plan.tool_calls:
        blocks.append({"type": "tool_use", "id": call.dialect_id("messages"),
                       "name": call.name, "input": call.input})
    return blocks


def message_object(ex: Exchange) -> dict:
    plan = ex.plan
    return {"id": ex.answer_id, "type": "message", "role": "assistant", "model": ex.model,
            "content": message_content(ex), "stop_reason": plan.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": plan.prompt_tokens,
                      "output_tokens": plan.completion_tokens}}


def message_steps(ex: Exchange) -> Iterator[bytes | float]:
    plan = ex.plan
    yield plan.ttft_s
    yield _sse_event("message_start", {"type": "message_start", "message": {
        "id": ex.answer_id, "type": "message", "role": "assistant", "model": ex.model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": 0}}})
    pinged = False
    ticks = 0

    def tick() -> float:
        nonlocal ticks
        ticks += 1
        return plan.token_delay_s if ticks > 1 else 0.0

    for index, block in enumerate(message_content(ex)):
        start = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
                 "text": {"type": "text", "text": ""},
                 "tool_use": {"type": "tool_use", "id": block.get("id"),
                              "name": block.get("name"), "input": {}}}[block["type"]]
        yield _sse_event("content_block_start", {"type": "content_block_start",
                                                 "index": index, "content_block": start})
        if not pinged:
            yield _sse_event("ping", {"type": "ping"})
            pinged = True
        if block["type"] == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": t} for t in plan.reasoning_tokens]
        elif block["type"] == "text":
            deltas = [{"type": "text_delta", "text": t} for t in plan.content_tokens]
        else:
            call = next(c for c in plan.tool_calls if c.dialect_id("messages") == block["id"])
            deltas = [{"type": "input_json_delta", "partial_json": piece}
                      for piece in call.fragments()]
        for delta in deltas:
            yield tick()
            yield _sse_event("content_block_delta", {"type": "content_block_delta",
                                                     "index": index, "delta": delta})
        if block["type"] == "thinking":
            yield _sse_event("content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "signature_delta", "signature": block["signature"]}})
        yield _sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
    if not pinged:
        yield _sse_event("ping", {"type": "ping"})
    yield 0.0
    yield _sse_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
        "usage": {"input_tokens": plan.prompt_tokens, "output_tokens": plan.completion_tokens}})
    yield _sse_event("message_stop", {"type": "message_stop"})


# --------------------------------------------------------------------------------------
# /v1/embeddings
# --------------------------------------------------------------------------------------

EMBEDDING: tuple[float, ...] = (0.125, -0.25, 0.5, -0.0625, 0.75, 0.0, -1.0, 0.3125)
"""The fixed embedding every input gets."""


def embeddings_object(req: dict, model: str) -> dict:
    inputs = req.get("input")
    count = len(inputs) if isinstance(inputs, list) and inputs and not all(
        isinstance(x, int) for x in inputs) else 1
    chars = sum(len(x) for x in inputs if isinstance(x, str)) if isinstance(inputs, list) \
        else len(inputs) if isinstance(inputs, str) else 0
    tokens = 1 + chars // 4
    return {"id": "embd-" + hashlib.sha256(_json_bytes(req)).hexdigest()[:32],
            "object": "list", "created": int(time.time()), "model": model,
            "data": [{"index": i, "object": "embedding", "embedding": list(EMBEDDING)}
                     for i in range(count)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                      "completion_tokens": 0, "prompt_tokens_details": None}}


# --------------------------------------------------------------------------------------
# The FastAPI application
# --------------------------------------------------------------------------------------

_REQUIRED = {
    "chat": ("messages", list, "the body must be a JSON object with a 'messages' list"),
    "completions": ("prompt", (str, list),
                    "the body must be a JSON object with a 'prompt' string or list"),
    "responses": ("input", (str, list),
                  "the body must be a JSON object with an 'input' string or list"),
    "messages": ("messages", list, "the body must be a JSON object with a 'messages' list"),
    "embeddings": ("input", (str, list),
                   "the body must be a JSON object with an 'input' string or list"),
}

_ID_PREFIX = {"chat": "chatcmpl-", "completions": "cmpl-", "responses": "resp_",
              "messages": "msg_"}


def create_app() -> FastAPI:
    """The application: routes read the module-level STATE."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    def json_response(obj: Any, status: int = 200) -> Response:
        return Response(content=_json_bytes(obj), status_code=status,
                        media_type="application/json")

    def dead_response(dialect: str = "chat") -> Response:
        if dialect == "messages":
            return json_response(anthropic_engine_dead_body(), 500)
        return json_response(engine_dead_body(), 500)

    def bad_request(dialect: str, message: str) -> Response:
        if dialect == "messages":
            return json_response({"type": "error", "error": {
                "type": "invalid_request_error", "message": message}}, 400)
        return json_response(_error_body(message, "BadRequestError", 400), 400)

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

    async def admit(request: Request, dialect: str) -> Response | tuple[dict, str, bool]:
        """Read, log and check one request: an error response, or (req, sha, poison).
        A poison request (in modes crash / engine_dead) schedules the death."""
        path = request.url.path
        body = await request.body()
        sha = hashlib.sha256(body).hexdigest()
        if STATE.engine_dead:
            STATE.event("request", sha256=sha, bytes=len(body), path=path, poison=False,
                        answered="engine_dead")
            return dead_response(dialect)
        field_name, types, problem = _REQUIRED[dialect]
        try:
            req = json.loads(body)
            if not isinstance(req, dict) or not isinstance(req.get(field_name), types):
                raise ValueError(problem)
            if dialect == "messages" and _int_field(req, "max_tokens") is None:
                raise ValueError("max_tokens: field required")
        except (ValueError, UnicodeDecodeError) as exc:
            STATE.event("request", sha256=sha, bytes=len(body), path=path, poison=False,
                        answered="bad_request")
            return bad_request(dialect, f"Invalid request body: {type(exc).__name__}")
        s = STATE.settings
        poison = is_poison(req) and s.mode in ("crash", "engine_dead")
        STATE.event("request", sha256=sha, bytes=len(body), path=path,
                    stream=req.get("stream") is True, poison=poison)
        if poison:
            loop = asyncio.get_running_loop()
            loop.call_later(s.crash_delay_ms / 1000.0,
                            _crash if s.mode == "crash" else _kill_engine)
        return req, sha, poison

    async def generate(request: Request, dialect: str) -> Response:
        admitted = await admit(request, dialect)
        if isinstance(admitted, Response):
            return admitted
        req, sha, poison = admitted
        s = STATE.settings
        plan = plan_answer(req, default_tokens=s.default_tokens,
                           default_reasoning_tokens=s.reasoning_tokens,
                           default_token_delay_ms=s.token_delay_ms, default_ttft_ms=s.ttft_ms,
                           dialect=dialect)
        STATE.counter += 1
        answer_id = f"{_ID_PREFIX[dialect]}{STATE.counter:04d}{sha[:28]}"
        created = int(time.time())
        model = req.get("model") if isinstance(req.get("model"), str) else MODEL_NAME
        ex = Exchange(dialect=dialect, path=request.url.path, req=req, sha=sha, plan=plan,
                      answer_id=answer_id, created=created, model=model)

        if poison:
            # The poison request never produces a token: a streamed one gets its 200
            # headers (Starlette sends them before the first body part; the Responses API
            # also its response.created / in_progress) and then, in engine_dead mode, its
            # dialect's error event; a non-streamed one waits for the end.
            async def wait_for_death() -> AsyncIterator[bytes]:
                seq = SequenceNumbers()
                if dialect == "responses":
                    for part in response_preamble(ex, seq):
                        yield part
                assert STATE.dead_event is not None
                await STATE.dead_event.wait()  # crash mode: the process exits first
                for part in _dead_parts(ex, seq):
                    yield part
            if plan.stream:
                return StreamingResponse(wait_for_death(), media_type="text/event-stream")
            assert STATE.dead_event is not None
            await STATE.dead_event.wait()
            return dead_response(dialect)

        if plan.stream:
            if dialect == "chat":
                return StreamingResponse(_stream(plan, answer_id, created, model, sha, ex.path),
                                         media_type="text/event-stream")
            seq = SequenceNumbers()
            if dialect == "completions":
                steps: Iterator[bytes | float] = completion_steps(ex)
            elif dialect == "responses":
                steps = itertools.chain(response_preamble(ex, seq), response_steps(ex, seq))
            else:
                steps = message_steps(ex)
            return StreamingResponse(_drive(steps, lambda: _dead_parts(ex, seq),
                                            ex.log_response),
                                     media_type="text/event-stream")

        # Non-streamed: "generate" token by token (so an engine death is noticed), then
        # answer in one piece.
        if await _sleep_unless_dead(plan.ttft_s):
            return dead_response(dialect)
        for _ in range(plan.completion_tokens):
            if await _sleep_unless_dead(plan.token_delay_s):
                return dead_response(dialect)
        ex.log_response()
        if dialect == "chat":
            message: dict[str, Any] = {"role": "assistant",
                                       s.reasoning_field: plan.reasoning or None,
                                       "content": plan.content if not plan.tool_calls else None,
                                       "tool_calls": [
                                           {"id": t.id, "type": "function",
                                            "function": {"name": t.name, "arguments": t.arguments}}
                                           for t in plan.tool_calls]}
            return json_response({
                "id": answer_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": plan.finish_reason, "stop_reason": None}],
                "usage": plan.usage(), "prompt_logprobs": None, "kv_transfer_params": None,
            })
        if dialect == "completions":
            return json_response(completion_object(ex))
        if dialect == "responses":
            return json_response(response_object(ex, plan.status, response_output(ex),
                                                 _responses_usage(plan)))
        return json_response(message_object(ex))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completions")

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await generate(request, "responses")

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        return await generate(request, "messages")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        admitted = await admit(request, "embeddings")
        if isinstance(admitted, Response):
            return admitted
        req, sha, poison = admitted
        if poison:
            assert STATE.dead_event is not None
            await STATE.dead_event.wait()  # crash mode: the process exits first
            return dead_response()
        model = req.get("model") if isinstance(req.get("model"), str) else MODEL_NAME
        STATE.event("response", sha256=sha, path=request.url.path, status=200)
        return json_response(embeddings_object(req, model))

    return app


async def _stream(plan: AnswerPlan, chat_id: str, created: int, model: str,
                  sha: str, path: str = "/v1/chat/completions") -> AsyncIterator[bytes]:
    """The SSE body of a streamed chat answer, one ``data:`` event per yield (= per
    write)."""
    s = STATE.settings

    def chunk(delta: dict, finish_reason: str | None = None, **extra: Any) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": finish_reason}
        choice.update(extra)
        return _sse({"id": chat_id, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [choice]})

    def dead() -> list[bytes]:
        STATE.event("response", sha256=sha, path=path, status=200, ended="error_event")
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
    STATE.event("response", sha256=sha, path=path, status=200)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def _bind(hosts: list[str], port: int, nodelay: bool = False) -> list[socket.socket]:
    """Bind one listening socket per host, all on the same port (picked by the kernel
    for the first host when ``port`` is 0).

    ``nodelay``: create them with ``proto=IPPROTO_TCP``, so that asyncio sets TCP_NODELAY
    on every accepted connection, as it does for ``vllm serve`` (uvicorn binding its own
    sockets).  Without it (the default, as this fake always was) the accepted sockets
    have proto 0, asyncio leaves Nagle on, and a small write that follows another one
    (the first SSE event after the response headers) can wait for the client's delayed
    ACK (~40 ms)."""
    sockets: list[socket.socket] = []
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP if nodelay else 0)
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
    parser.add_argument("--tcp-nodelay", type=int, choices=(0, 1), default=0,
                        help="1: TCP_NODELAY on accepted connections, like vllm serve "
                             "(default 0: Nagle on, as this fake always was)")
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
    sockets = _bind(args.host or ["127.0.0.1"], args.port, nodelay=bool(args.tcp_nodelay))
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
