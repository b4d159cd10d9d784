"""Helpers for chatcap's crash-forensics end-to-end test (test_crash_forensics.py).

* :class:`LiveChatcap` -- ``chatcap run -i lo -p PORT --log-dir D --pidfile D/pid`` in a
  child process: started and confirmed recording, its log read back, stopped with SIGTERM.
* :class:`SlowStream` / :class:`SlowCall` -- a request on its own thread and its own TCP
  connection (httpx), that tells when the first token arrived, can hang up early, and keeps
  what it sent and read.
* :class:`CurlStream` -- a streamed request by a ``curl -N`` child process (argument list,
  body from a file) that can be killed mid-stream.
* :class:`BodyCaptureServer` -- a tiny HTTP/1.1 server (standard library) that keeps the
  raw body of every request it receives, for replaying ``chatcap show --curl`` commands.
* :func:`detect_feature` -- does this chatcap have subcommand X / flag Y (in its help)?
* record helpers: index request records by body sha256, exchanges by id, suspects as shas.

Everything runs subprocesses with argument lists; nothing goes through a shell (except the
replay of the command ``chatcap show --curl`` prints, which is what is under test).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import httpx

import harness
from harness import AUTHORIZATION, CHAT_PATH, SSEParser, ChatStreamAssembler, log


# --------------------------------------------------------------------------------------
# chatcap run
# --------------------------------------------------------------------------------------

class LiveChatcap:
    """``chatcap run`` on ``lo`` for one port, logging into ``log_dir``."""

    def __init__(self, chatcap: str, port: int, log_dir: Path, keep: int = 500) -> None:
        self.chatcap = chatcap
        self.port = port
        self.log_dir = log_dir
        self.keep = keep
        self.proc: subprocess.Popen | None = None
        self.stderr_path = log_dir.parent / f"{log_dir.name}.chatcap.stderr"
        self._stderr = None
        self.returncode: int | None = None

    @property
    def argv(self) -> list[str]:
        return [self.chatcap, "run", "-i", "lo", "-p", str(self.port), "--log-dir",
                str(self.log_dir), "--pidfile", str(self.log_dir / "pid"),
                "--keep", str(self.keep)]

    def start(self, timeout: float = 10.0) -> "LiveChatcap":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while "recording" not in self.stderr_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"chatcap run exited with {self.proc.returncode}: "
                                   f"{self.stderr_text().strip()[-800:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chatcap run did not say 'recording' within {timeout} s: "
                                   f"{self.stderr_text().strip()[-800:]}")
            time.sleep(0.02)
        log(f"chatcap run recording port {self.port} into {self.log_dir} (pid {self.proc.pid})")
        return self

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return self.returncode
        self.returncode = harness.stop_process(self.proc, signal.SIGTERM, timeout=10)
        self.proc = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        return self.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def records(self) -> list[dict]:
        return read_log_dir(self.log_dir)

    def wait_for(self, predicate: Callable[[list[dict]], Any], timeout: float,
                 what: str = "") -> Any:
        """Poll the log until ``predicate(records)`` is truthy; return its value (or the
        last falsy one after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.records())
            if value or time.monotonic() > deadline:
                if not value and what:
                    log(f"gave up waiting {timeout:.1f} s for {what}")
                return value
            time.sleep(0.05)


def read_log_dir(log_dir: Path) -> list[dict]:
    """Records of ``exchanges.jsonl.1`` then ``exchanges.jsonl`` (oldest first).  A last
    line without its newline (being written) is left out."""
    out: list[dict] = []
    for name in ("exchanges.jsonl.1", "exchanges.jsonl"):
        path = log_dir / name
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for line in data.split(b"\n")[:-1]:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                out.append({"type": "<unparsable>", "line": line[:300].decode("utf-8", "replace")})
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


# --------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------

def _headers() -> dict:
    return {"Content-Type": "application/json", "Authorization": AUTHORIZATION}


@dataclass
class CallResult:
    label: str
    body: bytes
    stream: bool
    status: int | None = None
    client_addr: str | None = None
    tokens: int = 0               # content/reasoning deltas read (stream)
    response_body: bytes = b""
    error: str | None = None      # transport error (a cut stream), if any
    sse_error: Any = None         # an "error" object in the stream
    done: bool = False            # [DONE] seen
    hung_up: bool = False         # the client closed the response itself
    sent_at: float = 0.0
    ended_at: float = 0.0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def describe(self) -> str:
        return (f"{self.label} ({'stream' if self.stream else 'non-stream'}, sha256 "
                f"{self.sha256[:12]}, conn {self.client_addr}, status {self.status}, "
                f"{self.tokens} tokens read, error {self.error})")


class SlowCall(threading.Thread):
    """One POST /v1/chat/completions on a fresh httpx client (own TCP connection), run on a
    thread.  ``first_token`` is set when the first content/reasoning delta arrives (or the
    response ends); ``headers_in`` when the status line arrived.  With ``hang_up_after``,
    the client closes the response after that many token events (a client disconnect)."""

    def __init__(self, base_url: str, label: str, body: bytes, stream: bool,
                 hang_up_after: int | None = None, timeout: float = 60.0) -> None:
        super().__init__(daemon=True, name=f"call-{label}")
        self.base_url = base_url
        self.result = CallResult(label=label, body=body, stream=stream)
        self.hang_up_after = hang_up_after
        self.timeout = timeout
        self.first_token = threading.Event()
        self.headers_in = threading.Event()

    def run(self) -> None:
        r = self.result
        client = httpx.Client(base_url=self.base_url, trust_env=False, timeout=self.timeout,
                              limits=httpx.Limits(max_connections=1, max_keepalive_connections=0))
        try:
            r.sent_at = time.time()
            with client.stream("POST", CHAT_PATH, content=r.body, headers=_headers()) as resp:
                r.status = resp.status_code
                r.client_addr = harness.HttpxChatClient._client_addr(resp)
                self.headers_in.set()
                ctype = resp.headers.get("content-type", "")
                if ctype.startswith("text/event-stream"):
                    parser, asm = SSEParser(), ChatStreamAssembler()
                    body = bytearray()
                    try:
                        for chunk in resp.iter_raw():
                            body += chunk
                            for _type, data in parser.feed(chunk):
                                asm.feed_event(data)
                                if _is_token_event(data):
                                    r.tokens += 1
                                    self.first_token.set()
                            if self.hang_up_after is not None and r.tokens >= self.hang_up_after:
                                r.hung_up = True
                                break
                    finally:
                        r.response_body = bytes(body)
                        r.sse_error = asm.answer.error
                        r.done = asm.answer.done
                else:
                    r.response_body = resp.read()
        except httpx.HTTPError as exc:
            r.error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - recorded, the test reports it
            r.error = f"{type(exc).__name__}: {exc}"
        finally:
            r.ended_at = time.time()
            self.headers_in.set()
            self.first_token.set()
            client.close()


def _is_token_event(data: str) -> bool:
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    if not isinstance(obj, dict):
        return False
    for choice in obj.get("choices") or []:
        delta = choice.get("delta") or {}
        for key in ("content", "reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str) and delta[key]:
                return True
    return False


class IdleConnection:
    """A keep-alive httpx connection that made one request (GET /health) and then sits
    idle: a process exit closes it at the moment of death."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, trust_env=False, timeout=10.0,
                                   limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        self.client.get("/health")

    def close(self) -> None:
        self.client.close()


class CurlStream:
    """``curl -N`` streaming one chat completion (body from a file); :meth:`wait_tokens`
    waits until ``n`` token events were printed; :meth:`kill` SIGKILLs it."""

    def __init__(self, base_url: str, label: str, body: bytes, workdir: Path) -> None:
        self.label = label
        self.body = body
        workdir.mkdir(parents=True, exist_ok=True)
        self.body_file = workdir / f"curl-{label}.body"
        self.body_file.write_bytes(body)
        argv = ["curl", "--silent", "--no-buffer", "--http1.1", "--noproxy", "*",
                "--max-time", "60", "-H", "Content-Type: application/json",
                "-H", f"Authorization: {AUTHORIZATION}",
                "--data-binary", f"@{self.body_file}", base_url + CHAT_PATH]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.tokens = 0
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    def _read(self) -> None:
        parser = SSEParser()
        assert self.proc.stdout is not None
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                break
            for _type, data in parser.feed(chunk):
                if _is_token_event(data):
                    with self._cond:
                        self.tokens += 1
                        self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_tokens(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.tokens < n:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    return self.tokens >= n
                self._cond.wait(left)
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)
        self._reader.join(5)

    def wait(self, timeout: float = 30.0) -> int | None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(5)
        return self.proc.returncode


def connect_refused(host: str, port: int, attempts: int = 2) -> list[str]:
    """Try to connect ``attempts`` times; return what happened each time."""
    out = []
    for _ in range(attempts):
        try:
            with socket.create_connection((host, port), timeout=2.0):
                out.append("connected")
        except ConnectionRefusedError:
            out.append("refused")
        except OSError as exc:
            out.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.05)
    return out


# --------------------------------------------------------------------------------------
# A server that keeps the bodies it receives
# --------------------------------------------------------------------------------------

class BodyCaptureServer:
    """HTTP/1.1 on ``127.0.0.1:port`` (standard library): every request's raw body
    (Content-Length or chunked) is kept in :attr:`received` as (method, path, headers, body);
    the answer is ``200 {}``."""

    def __init__(self, port: int = 0) -> None:
        received: list[tuple[str, str, dict, bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    data = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(data)
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                received.append((self.command, self.path, dict(self.headers.items()), body))
                answer = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = do_GET = _handle

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        deadline = time.monotonic() + 5
        while True:
            try:
                self.httpd = Server(("127.0.0.1", port), Handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------------------
# chatcap's features and records
# --------------------------------------------------------------------------------------

def chatcap_help(chatcap: str, *args: str) -> tuple[int | None, str]:
    try:
        proc = subprocess.run([chatcap, *args, "--help"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "replace")


def has_subcommand(chatcap: str, name: str) -> tuple[bool, str]:
    """Whether ``chatcap NAME --help`` is the help of a subcommand NAME.  (CLI11 prints the
    top-level help, exit 0, for an unknown word followed by --help: the exit code alone
    does not tell.)"""
    rc, text = chatcap_help(chatcap, name)
    ok = rc == 0 and any(line.startswith("Usage:") and f" {name}" in line
                         for line in text.splitlines())
    return ok, f"`chatcap {name} --help` exit {rc}: {text.strip().splitlines()[:2]}"


def has_flag(chatcap: str, subcommand: str, flag: str) -> tuple[bool, str]:
    ok_sub, why = has_subcommand(chatcap, subcommand)
    if not ok_sub:
        return False, why
    rc, text = chatcap_help(chatcap, subcommand)
    ok = any(flag in line.split() or f"{flag}," in line or f",{flag}" in line
             for line in text.splitlines())
    return ok, f"`chatcap {subcommand} --help` does not list {flag}"


def body_sha(record: dict, key: str = "body") -> str | None:
    try:
        body = harness.record_body_bytes(record, key)
    except (ValueError, TypeError):
        return None
    return None if body is None else hashlib.sha256(body).hexdigest()


@dataclass
class LogView:
    """chatcap's records indexed for the checks."""
    records: list[dict]
    requests_by_sha: dict[str, list[dict]] = field(default_factory=dict)
    request_by_id: dict[str, dict] = field(default_factory=dict)
    exchanges_by_id: dict[str, list[dict]] = field(default_factory=dict)
    downs: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, records: list[dict]) -> "LogView":
        v = cls(records)
        for r in records:
            t = r.get("type")
            if t == "request":
                v.requests_by_sha.setdefault(body_sha(r) or "<no body>", []).append(r)
                v.request_by_id[str(r.get("id"))] = r
            elif t == "exchange":
                v.exchanges_by_id.setdefault(str(r.get("id")), []).append(r)
            elif t == "server_down":
                v.downs.append(r)
        return v

    def request(self, sha: str) -> dict | None:
        found = self.requests_by_sha.get(sha) or []
        return found[0] if len(found) == 1 else None

    def exchange_of(self, sha: str) -> dict | None:
        req = self.request(sha)
        if req is None:
            return None
        exs = self.exchanges_by_id.get(str(req.get("id"))) or []
        return exs[0] if len(exs) == 1 else None

    def sha_of_id(self, id_: Any) -> str | None:
        req = self.request_by_id.get(str(id_))
        return body_sha(req) if req else None

    def suspect_shas(self, down: dict) -> list[str | None]:
        return [self.sha_of_id(s.get("id")) for s in down.get("suspects") or []]


def short(record: Any, limit: int = 1200) -> str:
    """A record for a failure message, long fields shortened."""
    if isinstance(record, dict):
        record = {k: (v[:120] + "..." if isinstance(v, str) and len(v) > 120 else v)
                  for k, v in record.items() if k not in ("headers", "response_headers")}
    text = json.dumps(record, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def env_without_proxy() -> dict:
    return {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}


# --------------------------------------------------------------------------------------
# A live server that cuts one stream (an exception in a streaming handler)
# --------------------------------------------------------------------------------------

class CuttingSSEServer:
    """A small threaded HTTP/1.1 server on 127.0.0.1 answering every POST with a chunked
    ``text/event-stream`` of ``events`` chat chunks, ``delay`` seconds apart.  When the body
    contains ``b"cut-me"`` it closes the connection (FIN) after ``cut_after`` events, without
    the last chunk -- what uvicorn does when a streaming handler raises, while the server
    lives on.  Keep-alive: it serves the next request on the connection, and closes its side
    only after the client closed its own (a passive close)."""

    def __init__(self, events: int = 10, delay: float = 0.02, cut_after: int = 10) -> None:
        self.events, self.delay, self.cut_after = events, delay, cut_after
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.cuts = 0
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return  # the client closed: close ours (passive close)
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                cut = b"cut-me" in body
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                             b"transfer-encoding: chunked\r\nserver: cutting-sse\r\n\r\n")
                for i in range(self.events):
                    if cut and i == self.cut_after:
                        self.cuts += 1
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    delta = {"content": f" t{i}"} if i else {"role": "assistant", "content": "t0"}
                    event = b"data: " + json.dumps({"id": "x", "object": "chat.completion.chunk",
                                                    "choices": [{"index": 0, "delta": delta,
                                                                 "finish_reason": None}]}).encode() + b"\n\n"
                    conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                    time.sleep(self.delay)
                if cut:
                    self.cuts += 1
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                last = b'data: {"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
                conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
