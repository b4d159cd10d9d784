"""Process and capture plumbing for chatcap's end-to-end tests.

* :func:`free_port` -- a currently free TCP port on loopback.
* :class:`FakeServer` -- runs ``fake_vllm.py`` under Debian's interpreter, waits until
  ``GET /health`` answers, stops it (and tells what the answer to a request must be).
* :class:`Tcpdump` -- ``tcpdump -i lo -w FILE -s 262144 -U 'tcp port P'``, started and
  confirmed to be capturing before the test goes on, stopped with SIGINT so the last
  packets are flushed; reports kernel drops.
* :func:`tshark_http_requests` -- an independent look at what a capture holds.
* :func:`run_chatcap_read` -- ``chatcap read FILE --port P`` parsed as JSON Lines.
* :class:`Checker` -- collects failures with readable diffs, prints a summary.
* :func:`common_args` / :class:`Workdir` -- the command line every test script takes and a
  temporary directory kept on failure.

The clients (httpx, curl) live in :mod:`clients` and are re-exported here.

Everything runs subprocesses with argument lists; nothing goes through a shell.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from clients import (  # noqa: E402,F401  (re-exported)
    AUTHORIZATION, CHAT_PATH, SECRET, WEATHER_TOOL, Answer, ClientRecord, CurlRequest,
    HttpxChatClient, SSEParser, ChatStreamAssembler, chat_body, curl_chat, run_concurrently)
import fake_vllm  # noqa: E402

__all__ = [
    # re-exported from clients
    "AUTHORIZATION", "CHAT_PATH", "SECRET", "WEATHER_TOOL", "Answer", "ClientRecord",
    "CurlRequest", "HttpxChatClient", "SSEParser", "ChatStreamAssembler", "chat_body",
    "curl_chat", "run_concurrently",
    # defined here
    "PYTHON", "FAKE_VLLM", "log", "common_args", "Workdir", "free_port", "stop_process",
    "FakeServer", "CaptureStats", "Tcpdump", "tshark_http_requests", "tshark_count",
    "CaptureRun", "capture_scenario", "ChatcapOutput", "check_chatcap_binary", "run_chatcap",
    "run_chatcap_read", "sha256_hex", "record_body_bytes", "header_values",
    "describe_difference", "Checker", "fake_vllm",
]

PYTHON = "/usr/bin/python3"  # Debian's: it has fastapi, uvicorn and httpx
FAKE_VLLM = HERE / "fake_vllm.py"


def log(message: str) -> None:
    """Progress output (stderr, flushed: CTest shows it on failure)."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Command line and working directory
# --------------------------------------------------------------------------------------

def common_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments CTest passes to every e2e script, plus debugging knobs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--chatcap", default=None,
                        help="the chatcap binary (default: <source-dir>/build/chatcap)")
    parser.add_argument("--source-dir", default=str(HERE.parent.parent),
                        help="chatcap's source tree")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (capture, logs) even on success")
    parser.add_argument("--verbose", action="store_true", help="print chatcap's records")
    args = parser.parse_args(argv)
    if args.chatcap is None:
        args.chatcap = str(Path(args.source_dir) / "build" / "chatcap")
    return args


class Workdir:
    """A temporary directory removed on success, kept (and named) on failure or --keep."""

    def __init__(self, prefix: str, keep: bool = False) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"chatcap-e2e-{prefix}-"))
        self.keep = keep

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(ok=exc_type is None)

    def finish(self, ok: bool) -> None:
        if ok and not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.path.exists():
            log(f"kept the test files in {self.path}")


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (racy by nature; FakeServer avoids the race
    by letting the server bind port 0 and report it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int | None:
    """Send ``sig`` to ``proc`` (only that process), wait, SIGKILL if it lingers."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    return proc.returncode


class FakeServer:
    """``fake_vllm.py`` in a child process.

    ``knobs`` are fake_vllm's command-line defaults (``token_delay_ms=3`` ->
    ``--token-delay-ms 3``); :meth:`plan` applies the same defaults to predict answers.
    """

    def __init__(self, workdir: Path, mode: str = "normal", port: int = 0,
                 hosts: Iterable[str] = ("127.0.0.1",), **knobs: Any) -> None:
        self.workdir = workdir
        self.mode = mode
        self.requested_port = port
        self.hosts = list(hosts)
        self.knobs = {"default_tokens": 16, "reasoning_tokens": 4, "token_delay_ms": 2.0,
                      "ttft_ms": 5.0, **knobs}
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"fake_vllm-{mode}.log"
        self.events_path = workdir / f"fake_vllm-{mode}.events.jsonl"
        self._log_file = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> "FakeServer":
        port_file = self.workdir / f"fake_vllm-{mode_safe(self.mode)}.port"
        port_file.unlink(missing_ok=True)
        argv = [PYTHON, str(FAKE_VLLM), "--port", str(self.requested_port),
                "--mode", self.mode, "--port-file", str(port_file),
                "--events-log", str(self.events_path)]
        for host in self.hosts:
            argv += ["--host", host]
        for key, value in self.knobs.items():
            argv += ["--" + key.replace("_", "-"), str(value)]
        self._log_file = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            self._check_alive("before binding its port")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake_vllm did not bind a port within {timeout} s; "
                                   f"log: {self.log_tail()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text().strip())
        self.wait_health(deadline - time.monotonic())
        log(f"fake_vllm up: mode {self.mode}, {self.base_url}, pid {self.proc.pid}")
        return self

    def wait_health(self, timeout: float = 20.0) -> None:
        """Poll ``GET /health`` until it answers 200."""
        deadline = time.monotonic() + max(timeout, 1.0)
        last = "no answer"
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                self._check_alive("while starting")
                try:
                    r = client.get(self.base_url + "/health")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                time.sleep(0.05)
        raise RuntimeError(f"fake_vllm /health not ready after {timeout:.0f} s ({last}); "
                           f"log: {self.log_tail()}")

    def stop(self) -> int | None:
        """SIGTERM (uvicorn shuts down gracefully, closing keep-alive connections)."""
        code = stop_process(self.proc, signal.SIGTERM)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return code

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_alive(self, when: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"fake_vllm exited with {self.proc.returncode} {when}; "
                               f"log: {self.log_tail()}")

    # -- facts -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = self.hosts[0]
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` as chatcap writes the server of an exchange."""
        host = self.hosts[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def plan(self, body: bytes) -> fake_vllm.AnswerPlan:
        """What this server answers to ``body`` (a JSON chat request)."""
        k = self.knobs
        return fake_vllm.plan_answer(json.loads(body), default_tokens=int(k["default_tokens"]),
                                     default_reasoning_tokens=int(k["reasoning_tokens"]),
                                     default_token_delay_ms=float(k["token_delay_ms"]),
                                     default_ttft_ms=float(k["ttft_ms"]))

    def events(self) -> list[dict]:
        """The server's events log (request / response / crash / engine_dead)."""
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines() if line]

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:]) or "(empty log)"


def mode_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


# --------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------

@dataclass
class CaptureStats:
    captured: int | None = None
    received: int | None = None
    dropped: int | None = None


class Tcpdump:
    """``tcpdump -i IFACE -w FILE -s 262144 -U FILTER`` as a context manager.

    :meth:`start` returns once tcpdump printed "listening on" (the filter is installed and
    the ring is live); with ``probe`` (a callable that makes traffic matching the filter)
    it also waits until a packet reached the file.  :meth:`stop` sends SIGINT -- tcpdump
    then flushes the file and prints its counters -- and waits.
    """

    PCAP_HEADER_BYTES = 24

    def __init__(self, path: Path, bpf: str, interface: str = "lo",
                 snaplen: int = 262144, buffer_kib: int = 65536) -> None:
        self.path = path
        self.buffer_kib = buffer_kib
        self.bpf = bpf
        self.interface = interface
        self.snaplen = snaplen
        self.proc: subprocess.Popen | None = None
        self.stderr_lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None
        self.stats = CaptureStats()

    @classmethod
    def for_port(cls, path: Path, port: int, interface: str = "lo") -> "Tcpdump":
        return cls(path, f"tcp port {port}", interface)

    def start(self, probe: Callable[[], Any] | None = None, timeout: float = 10.0) -> "Tcpdump":
        tcpdump = shutil.which("tcpdump") or "/usr/bin/tcpdump"
        # -U: flush the file after each packet; --immediate-mode: no TPACKET_V3 block
        # timeout between the kernel and tcpdump; -B: a 64 MiB ring, as loopback delivers
        # a 1.5 MiB body in a few 64 KiB segments faster than tcpdump drains a small one;
        # -Z root: keep the privileges needed to write into our 0700 temporary directory.
        argv = [tcpdump, "-i", self.interface, "-w", str(self.path), "-s", str(self.snaplen),
                "-U", "--immediate-mode", "-B", str(self.buffer_kib), "-n", "-Z", "root",
                self.bpf]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout):
            self.stop()
            raise RuntimeError(f"tcpdump did not start listening within {timeout} s: "
                               f"{' | '.join(self.stderr_lines) or 'no output'}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"tcpdump exited: {' | '.join(self.stderr_lines)}")
        if probe is not None:
            deadline = time.monotonic() + timeout
            while True:
                probe()
                time.sleep(0.05)
                if self.path.exists() and self.path.stat().st_size > self.PCAP_HEADER_BYTES:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("tcpdump is listening but wrote no packet of the probe")
        log(f"tcpdump capturing on {self.interface} ({self.bpf}) into {self.path.name}")
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr_lines.append(line)
            if "listening on" in line:
                self._listening.set()

    def stop(self, settle: float = 0.2) -> CaptureStats:
        """Let in-flight packets land, SIGINT, wait for the flush, parse the counters."""
        if self.proc is None:
            return self.stats
        if self.proc.poll() is None:
            time.sleep(settle)
        stop_process(self.proc, signal.SIGINT, timeout=15)
        if self._reader is not None:
            self._reader.join(5)
        text = "\n".join(self.stderr_lines)
        for attr, pattern in (("captured", r"(\d+) packets? captured"),
                              ("received", r"(\d+) packets? received by filter"),
                              ("dropped", r"(\d+) packets? dropped by kernel")):
            m = re.search(pattern, text)
            if m:
                setattr(self.stats, attr, int(m.group(1)))
        log(f"tcpdump stopped: {self.stats.captured} packets captured, "
            f"{self.stats.dropped} dropped by kernel")
        self.proc = None
        return self.stats

    def __enter__(self) -> "Tcpdump":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tshark_http_requests(pcap: Path, port: int) -> list[dict]:
    """HTTP requests tshark finds in ``pcap`` (decoding ``port`` as HTTP): a check of the
    capture that does not depend on chatcap."""
    argv = ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},http",
            "-Y", "http.request", "-T", "fields", "-E", "separator=\t",
            "-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.srcport",
            "-e", "http.request.method", "-e", "http.request.uri",
            "-e", "http.content_length"]
    out = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"tshark failed ({out.returncode}): {out.stderr.decode(errors='replace')}")
    rows = []
    for line in out.stdout.decode("utf-8", "replace").splitlines():
        parts = (line.split("\t") + [""] * 6)[:6]
        rows.append({"frame": parts[0], "stream": parts[1], "srcport": parts[2],
                     "method": parts[3], "uri": parts[4], "content_length": parts[5]})
    return rows


def tshark_count(pcap: Path, port: int, display_filter: str) -> int:
    """Number of frames of ``pcap`` matching ``display_filter`` (``port`` decoded as HTTP)."""
    argv = ["tshark", "-n", "-r", str(pcap), "-d", f"tcp.port=={port},http",
            "-Y", display_filter, "-T", "fields", "-e", "frame.number"]
    out = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"tshark failed ({out.returncode}): {out.stderr.decode(errors='replace')}")
    return len(out.stdout.split())


# --------------------------------------------------------------------------------------
# A captured scenario
# --------------------------------------------------------------------------------------

@dataclass
class CaptureRun:
    """What :func:`capture_scenario` produced."""
    server: FakeServer
    pcap: Path
    stats: CaptureStats
    result: Any  # what the scenario returned (usually a list of ClientRecord)


def capture_scenario(workdir: Path, scenario: Callable[[FakeServer, Path], Any], *,
                     mode: str = "normal", pcap_name: str = "capture.pcap",
                     hosts: Iterable[str] = ("127.0.0.1",), **knobs: Any) -> CaptureRun:
    """Start a fake server (``mode``, ``knobs``) and tcpdump on its port, run
    ``scenario(server, workdir)``, stop the server (SIGTERM: keep-alive connections close
    on the capture; a crashed server is simply reaped), then stop tcpdump.  Processes are
    cleaned up whatever happens."""
    server = FakeServer(workdir, mode=mode, hosts=hosts, **knobs)
    capture: Tcpdump | None = None
    try:
        server.start()
        pcap = workdir / pcap_name
        capture = Tcpdump.for_port(pcap, server.port)
        capture.start(probe=lambda: _probe(server))
        result = scenario(server, workdir)
        server.stop()
        stats = capture.stop()
        capture = None
        return CaptureRun(server, pcap, stats, result)
    finally:
        if capture is not None:
            capture.stop()
        server.stop()


def _probe(server: FakeServer) -> None:
    """Traffic on the server's port (a GET /health) to see the capture working."""
    try:
        httpx.get(server.base_url + "/health", trust_env=False, timeout=2.0)
    except httpx.HTTPError:
        pass


# --------------------------------------------------------------------------------------
# chatcap
# --------------------------------------------------------------------------------------

@dataclass
class ChatcapOutput:
    argv: list[str]
    returncode: int | None
    stdout: bytes
    stderr: str
    records: list[dict] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line no, error)

    def of_type(self, type_: str) -> list[dict]:
        return [r for r in self.records if r.get("type") == type_]


def check_chatcap_binary(path: str) -> str | None:
    """None if ``path`` is an executable file, else why not."""
    p = Path(path)
    if not p.exists():
        return f"{path} does not exist (build chatcap first: cmake --build build)"
    if not os.access(p, os.X_OK):
        return f"{path} is not executable"
    return None


def run_chatcap(chatcap: str, args: list[str], timeout: float = 120.0) -> ChatcapOutput:
    """Run ``chatcap ARGS`` and parse its stdout as JSON Lines."""
    argv = [chatcap, *args]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return ChatcapOutput(argv, None, exc.stdout or b"",
                             f"timed out after {timeout} s; stderr: "
                             f"{(exc.stderr or b'').decode(errors='replace')}")
    result = ChatcapOutput(argv, proc.returncode, proc.stdout,
                           proc.stderr.decode("utf-8", "replace"))
    for n, line in enumerate(proc.stdout.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            result.bad_lines.append((n, f"{exc}: {line[:200]!r}"))
            continue
        if not isinstance(obj, dict):
            result.bad_lines.append((n, f"not a JSON object: {line[:200]!r}"))
            continue
        result.records.append(obj)
    return result


def run_chatcap_read(chatcap: str, pcap: Path, ports: Iterable[int],
                     extra: Iterable[str] = (), timeout: float = 120.0) -> ChatcapOutput:
    """``chatcap read PCAP --port P [...]``."""
    args = ["read", str(pcap)]
    for port in ports:
        args += ["--port", str(port)]
    return run_chatcap(chatcap, args + list(extra), timeout)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_body_bytes(record: dict, key: str = "body") -> bytes | None:
    """The bytes of a record's body: a JSON string (UTF-8), or base64 when
    ``body_encoding`` (``<key>_encoding``) is "base64".  None when absent."""
    body = record.get(key)
    if body is None:
        return None
    encoding = record.get(f"{key}_encoding") or (record.get("body_encoding") if key == "body" else None)
    if encoding == "base64":
        return base64.b64decode(body)
    if not isinstance(body, str):
        raise ValueError(f"{key} is {type(body).__name__}, expected a string")
    return body.encode("utf-8", "surrogatepass")


def header_values(headers: Any, name: str) -> list[str]:
    """Values of header ``name`` (case-insensitive) in a record's ``[[name, value], ...]``
    (an object ``{name: value}`` is accepted too)."""
    if isinstance(headers, dict):
        items = list(headers.items())
    elif isinstance(headers, list):
        items = [tuple(h) for h in headers if isinstance(h, (list, tuple)) and len(h) == 2]
    else:
        return []
    return [str(v) for k, v in items if str(k).lower() == name.lower()]


# --------------------------------------------------------------------------------------
# Assertions
# --------------------------------------------------------------------------------------

def describe_difference(expected: Any, actual: Any, limit: int = 1500) -> str:
    """A readable account of how ``actual`` differs from ``expected``."""
    if isinstance(expected, (bytes, bytearray)) and isinstance(actual, (bytes, bytearray)):
        expected, actual = expected.decode("utf-8", "backslashreplace"), actual.decode("utf-8", "backslashreplace")
    if isinstance(expected, str) and isinstance(actual, str):
        i = next((k for k, (a, b) in enumerate(zip(expected, actual)) if a != b),
                 min(len(expected), len(actual)))
        lo = max(0, i - 40)
        head = (f"lengths expected {len(expected)} / actual {len(actual)}; first difference "
                f"at index {i}:\n    expected ...{expected[lo:i + 60]!r}\n"
                f"    actual   ...{actual[lo:i + 60]!r}")
        if len(expected) + len(actual) < 4000:
            diff = "\n".join(difflib.unified_diff(
                expected.splitlines(keepends=True) or [""],
                actual.splitlines(keepends=True) or [""],
                "expected", "actual", lineterm="", n=1))
            if diff:
                head += "\n" + "\n".join("    " + line.rstrip("\n") for line in diff.splitlines())
        return head[:limit]
    e = json.dumps(expected, ensure_ascii=False, sort_keys=True, indent=1, default=str)
    a = json.dumps(actual, ensure_ascii=False, sort_keys=True, indent=1, default=str)
    if e.count("\n") + a.count("\n") > 4:
        diff = "\n".join("    " + line for line in difflib.unified_diff(
            e.splitlines(), a.splitlines(), "expected", "actual", lineterm="", n=2))
        return diff[:limit]
    return f"expected {e[:limit // 2]}, got {a[:limit // 2]}"


class Checker:
    """Collects failures (so one run reports all of them) and warnings."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.passed = 0

    def check(self, condition: bool, message: str) -> bool:
        if condition:
            self.passed += 1
        else:
            self.failures.append(message)
        return bool(condition)

    def equal(self, what: str, expected: Any, actual: Any) -> bool:
        if expected == actual:
            self.passed += 1
            return True
        self.failures.append(f"{what}: {describe_difference(expected, actual)}")
        return False

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self, title: str, max_failures: int = 60) -> int:
        """Print the verdict; return the process exit code."""
        for w in self.warnings:
            print(f"WARNING: {w}", file=sys.stderr)
        if self.ok:
            print(f"PASS {title}: {self.passed} checks", file=sys.stderr, flush=True)
            return 0
        print(f"FAIL {title}: {len(self.failures)} failed, {self.passed} passed",
              file=sys.stderr)
        for n, f in enumerate(self.failures[:max_failures], 1):
            print(f"  {n}. {f}", file=sys.stderr)
        if len(self.failures) > max_failures:
            print(f"  ... and {len(self.failures) - max_failures} more", file=sys.stderr)
        sys.stderr.flush()
        return 1
