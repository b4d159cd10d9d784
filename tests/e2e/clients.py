"""Chat-completion clients for chatcap's end-to-end tests: httpx and curl.

Every request sent through this module yields a :class:`ClientRecord` holding what the
client knows for sure -- the exact body bytes it sent (and their sha256), whether it asked
for a stream, the status, the local address of its TCP connection, the de-chunked response
body, and the answer it assembled from what it read (for a stream: the concatenated
``choices[0].delta.content`` of the SSE events; otherwise ``choices[0].message.content``).
Tests compare chatcap's records against these, matching by body sha256.

* :class:`HttpxChatClient` -- one ``httpx.Client`` limited to one connection, so several
  requests through it share one keep-alive TCP connection.
* :func:`curl_chat` -- one ``curl`` process, one or more requests (several use ``--next``
  and so share curl's connection), bodies passed as ``--data-binary @file``, ``-N`` for
  streams.  Always an argument list, never a shell.
* :func:`run_concurrently` -- start callables together on threads.

Standard library + httpx only.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import httpx

SECRET = "sk-test-SECRET123"
"""The API key every client sends (``Authorization: Bearer sk-test-SECRET123``); it must
never appear in clear in chatcap's output."""

AUTHORIZATION = f"Bearer {SECRET}"
CHAT_PATH = "/v1/chat/completions"
DEFAULT_HEADERS = {"Content-Type": "application/json", "Authorization": AUTHORIZATION}


# --------------------------------------------------------------------------------------
# Request bodies
# --------------------------------------------------------------------------------------

def chat_body(label: str, text: str = "Say something.", *, stream: bool = False,
              include_usage: bool = False, max_tokens: int | None = None,
              fake_tokens: int | None = None, reasoning_tokens: int | None = None,
              token_delay_ms: float | None = None, tools: list | None = None,
              extra: dict | None = None, pretty: bool = False,
              model: str = "fake-vllm/gpt-oss-120b") -> bytes:
    """A chat-completion request body as bytes (raw UTF-8, not ASCII-escaped).

    ``label`` goes into the last message, so every labelled request has its own answer
    and its own body sha256.  ``pretty`` indents the JSON (real newline bytes in the body).
    """
    req: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a deterministic test model."},
            {"role": "user", "content": f"[{label}] {text}"},
        ],
        "stream": stream,
    }
    if include_usage:
        req["stream_options"] = {"include_usage": True}
    if max_tokens is not None:
        req["max_tokens"] = max_tokens
    if fake_tokens is not None:
        req["fake_tokens"] = fake_tokens
    if reasoning_tokens is not None:
        req["fake_reasoning_tokens"] = reasoning_tokens
    if token_delay_ms is not None:
        req["fake_token_delay_ms"] = token_delay_ms
    if tools:
        req["tools"] = tools
        req["tool_choice"] = "auto"
    if extra:
        req.update(extra)
    text_out = json.dumps(req, ensure_ascii=False, indent=1 if pretty else None)
    return text_out.encode("utf-8")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                   "required": ["query"]}}}


# --------------------------------------------------------------------------------------
# SSE parsing and chat-chunk assembly (the client's own view of a stream)
# --------------------------------------------------------------------------------------

_EOL = re.compile(rb"[\r\n]")


class SSEParser:
    """Incremental W3C event-stream parser: feed bytes split anywhere, get events.

    Lines end with CRLF, LF or CR; ``data:`` lines accumulate (joined by LF) until a blank
    line dispatches the event; comments (``:``) are ignored.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event_type = ""
        self.events: list[tuple[str, str]] = []  # (event type, data)

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        """Consume ``chunk``; return the events it completed."""
        self._buf += chunk
        out: list[tuple[str, str]] = []
        while True:
            match = _EOL.search(self._buf)
            if match is None:
                break
            cut = match.start()
            if self._buf[cut] == 0x0D:
                if cut + 1 == len(self._buf):
                    break  # a CR at the end: wait to know whether LF follows
                nxt = cut + 2 if self._buf[cut + 1] == 0x0A else cut + 1
            else:
                nxt = cut + 1
            line = self._buf[:cut].decode("utf-8", errors="replace")
            self._buf = self._buf[nxt:]
            event = self._line(line)
            if event is not None:
                out.append(event)
        self.events.extend(out)
        return out

    def _line(self, line: str) -> tuple[str, str] | None:
        if line == "":
            if not self._data:
                self._event_type = ""
                return None
            event = (self._event_type or "message", "\n".join(self._data))
            self._data, self._event_type = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        return None


@dataclass
class Answer:
    """An assembled chat answer (from SSE chunks or from a chat.completion object)."""
    content: str | None = None
    reasoning: str = ""
    tool_calls: list[dict] = field(default_factory=list)  # [{index,id,name,arguments}]
    finish_reason: str | None = None
    usage: dict | None = None
    done: bool = False
    error: Any = None
    events: int = 0


class ChatStreamAssembler:
    """Assembles OpenAI ``chat.completion.chunk`` events (choice 0) into an Answer."""

    def __init__(self) -> None:
        self.answer = Answer(content="")
        self._calls: dict[int, dict] = {}

    def feed_event(self, data: str) -> None:
        a = self.answer
        a.events += 1
        if data.strip() == "[DONE]":
            a.done = True
            return
        try:
            obj = json.loads(data)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            a.error = obj["error"]
        if obj.get("usage"):
            a.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                a.content = (a.content or "") + delta["content"]
            for key in ("reasoning_content", "reasoning"):
                if isinstance(delta.get(key), str):
                    a.reasoning += delta[key]
            for call in delta.get("tool_calls") or []:
                slot = self._calls.setdefault(call.get("index", 0), {
                    "index": call.get("index", 0), "id": None, "name": None, "arguments": ""})
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    slot["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                a.finish_reason = choice["finish_reason"]
        a.tool_calls = [self._calls[k] for k in sorted(self._calls)]


def answer_from_completion(obj: Any) -> Answer:
    """The Answer of a non-streamed ``chat.completion`` object (choice 0)."""
    answer = Answer()
    if not isinstance(obj, dict):
        return answer
    if "error" in obj:
        answer.error = obj["error"]
    answer.usage = obj.get("usage")
    choices = obj.get("choices") or []
    if choices:
        choice = choices[0]
        message = choice.get("message") or {}
        answer.content = message.get("content")
        answer.reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        answer.finish_reason = choice.get("finish_reason")
        for i, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            answer.tool_calls.append({"index": i, "id": call.get("id"),
                                      "name": function.get("name"),
                                      "arguments": function.get("arguments") or ""})
    return answer


# --------------------------------------------------------------------------------------
# What a client knows about one request
# --------------------------------------------------------------------------------------

@dataclass
class ClientRecord:
    """One request as the client saw it."""
    label: str
    via: str                         # "httpx" or "curl"
    body: bytes                      # the exact bytes sent
    stream: bool                     # the client asked for a stream
    connection: str = ""             # label of the client connection (keep-alive group)
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""       # de-chunked response body bytes as read
    answer: Answer = field(default_factory=Answer)
    client_addr: str | None = None   # "127.0.0.1:54321" of the client's TCP connection
    new_connection: bool | None = None
    sent_expect_continue: bool = False
    got_100_continue: bool = False
    started: float = 0.0             # time.time()
    finished: float = 0.0
    error: str | None = None         # transport error, if any

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def is_sse(self) -> bool:
        return any(k.lower() == "content-type" and v.startswith("text/event-stream")
                   for k, v in self.response_headers)

    @property
    def content(self) -> str | None:
        """The assembled content: concatenated deltas (stream) or message.content."""
        return self.answer.content

    def describe(self) -> str:
        return (f"{self.label} ({self.via}, {'stream' if self.stream else 'non-stream'}, "
                f"{len(self.body)} B, sha256 {self.sha256[:12]}, conn {self.client_addr})")


def _fill_answer(record: ClientRecord) -> None:
    """Set ``record.answer`` from ``record.response_body`` (non-SSE responses)."""
    try:
        obj = json.loads(record.response_body)
    except ValueError:
        return
    record.answer = answer_from_completion(obj)


def _parse_sse_body(record: ClientRecord, chunks: Iterable[bytes]) -> None:
    """Read an event stream into ``record``; what was read before an error (a cut
    stream) stays in the record."""
    parser, assembler = SSEParser(), ChatStreamAssembler()
    record.answer = assembler.answer
    body = bytearray()
    try:
        for chunk in chunks:
            body += chunk
            for _type, data in parser.feed(chunk):
                assembler.feed_event(data)
    finally:
        record.response_body = bytes(body)


# --------------------------------------------------------------------------------------
# httpx
# --------------------------------------------------------------------------------------

class HttpxChatClient:
    """A keep-alive httpx client: every request goes over (at most) one TCP connection,
    reopened only if the server closed it."""

    def __init__(self, base_url: str, connection: str = "httpx", timeout: float = 30.0) -> None:
        self.connection = connection
        self.client = httpx.Client(
            base_url=base_url, trust_env=False, timeout=timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    def __enter__(self) -> "HttpxChatClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _client_addr(response: httpx.Response) -> str | None:
        stream = response.extensions.get("network_stream")
        if stream is None:
            return None
        try:
            host, port = stream.get_extra_info("client_addr")[:2]
        except Exception:  # noqa: BLE001 - best effort, informative only
            return None
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def chat(self, label: str, body: bytes, *, stream: bool | None = None,
             headers: dict | None = None) -> ClientRecord:
        """POST ``body`` to /v1/chat/completions; read a stream event by event."""
        if stream is None:
            stream = _body_asks_stream(body)
        record = ClientRecord(label=label, via="httpx", body=body, stream=stream,
                              connection=self.connection, started=time.time())
        hdrs = dict(DEFAULT_HEADERS, **(headers or {}))
        try:
            with self.client.stream("POST", CHAT_PATH, content=body, headers=hdrs) as r:
                record.status = r.status_code
                record.response_headers = list(r.headers.items())
                record.client_addr = self._client_addr(r)
                if record.is_sse:
                    _parse_sse_body(record, r.iter_raw())
                else:
                    record.response_body = r.read()
                    _fill_answer(record)
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        record.finished = time.time()
        return record

    def get(self, path: str) -> tuple[int, bytes]:
        """A GET on the same connection (e.g. /v1/models, which chatcap must filter out)."""
        r = self.client.get(path, headers={"Authorization": AUTHORIZATION})
        return r.status_code, r.content


def _body_asks_stream(body: bytes) -> bool:
    try:
        return json.loads(body).get("stream") is True
    except (ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------------------

@dataclass
class CurlRequest:
    label: str
    body: bytes
    stream: bool | None = None  # default: what the body asks for


CURL_WRITE_OUT = "%{http_code} %{local_ip} %{local_port} %{num_connects}\\n"


def curl_chat(base_url: str, requests: Sequence[CurlRequest], workdir: Path,
              connection: str = "curl", timeout: float = 60.0) -> list[ClientRecord]:
    """Send ``requests`` with one curl process (``--next`` between them, so they share a
    keep-alive connection).  Each body is written to a file and sent with
    ``--data-binary @file``; streams get ``-N``.  Returns one ClientRecord per request."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = ["curl", "--silent", "--show-error", "--verbose", "--http1.1",
            "--noproxy", "*", "--max-time", str(int(timeout))]
    records: list[ClientRecord] = []
    files: list[tuple[Path, Path]] = []
    for i, req in enumerate(requests):
        stream = _body_asks_stream(req.body) if req.stream is None else req.stream
        stem = workdir / f"{connection}-{i}-{_safe(req.label)}"
        body_file, out_file, hdr_file = (stem.with_suffix(".body"), stem.with_suffix(".out"),
                                         stem.with_suffix(".hdr"))
        body_file.write_bytes(req.body)
        if i:
            argv.append("--next")
        argv += ["--http1.1", "--noproxy", "*", "--max-time", str(int(timeout)),
                 "-H", "Content-Type: application/json",
                 "-H", f"Authorization: {AUTHORIZATION}",
                 "--data-binary", f"@{body_file}",
                 "-o", str(out_file), "-D", str(hdr_file),
                 "-w", CURL_WRITE_OUT.replace("\\n", "\n")]
        if stream:
            argv.append("-N")
        argv.append(base_url + CHAT_PATH)
        records.append(ClientRecord(label=req.label, via="curl", body=req.body,
                                    stream=stream, connection=connection))
        files.append((out_file, hdr_file))
    started = time.time()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout + 10, check=False)
    finished = time.time()
    write_outs = proc.stdout.decode("utf-8", "replace").splitlines()
    verbose = proc.stderr.decode("utf-8", "replace")
    for i, (record, (out_file, hdr_file)) in enumerate(zip(records, files)):
        record.started, record.finished = started, finished
        if proc.returncode != 0:
            record.error = f"curl exited {proc.returncode}: {_last_lines(verbose)}"
        if i < len(write_outs):
            code, ip, port, connects = (write_outs[i].split() + ["", "", "", ""])[:4]
            record.status = int(code) if code.isdigit() and code != "000" else None
            record.client_addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            record.new_connection = connects not in ("", "0")
        headers_blob = hdr_file.read_bytes() if hdr_file.exists() else b""
        record.got_100_continue = b" 100 Continue" in headers_blob or b"HTTP/1.1 100" in headers_blob
        record.response_headers = _final_headers(headers_blob)
        body = out_file.read_bytes() if out_file.exists() else b""
        if record.is_sse:
            _parse_sse_body(record, [body])
        else:
            record.response_body = body
            _fill_answer(record)
    if len(records) == 1:
        records[0].sent_expect_continue = "> Expect: 100-continue" in verbose
    else:
        for record in records:
            record.sent_expect_continue = record.got_100_continue
    return records


def _final_headers(blob: bytes) -> list[tuple[str, str]]:
    """The header lines of the last response in a ``curl -D`` dump (after any 1xx)."""
    blocks = [b for b in blob.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]
    if not blocks:
        return []
    lines = blocks[-1].decode("latin-1").split("\n")[1:]
    out = []
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            out.append((name.strip(), value.strip()))
    return out


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in label)[:40]


def _last_lines(text: str, n: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


# --------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------

def run_concurrently(calls: Sequence[Callable[[], Any]], timeout: float = 60.0) -> list[Any]:
    """Run ``calls`` on one thread each, released together by a barrier; return their
    results in order (re-raising the first exception)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors[i] = exc

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        if t.is_alive():
            raise TimeoutError(f"a concurrent client did not finish within {timeout} s")
    for exc in errors:
        if exc is not None:
            raise exc
    return results

