"""Helpers for the tests of ``chatcap run`` (the live recorder).

* :class:`LiveChatcap` -- ``chatcap run ...`` in a child process: its stderr read line by
  line on a thread (so a test can wait for "recording ...", "counters: ..."), signals,
  exit code, and :meth:`LiveChatcap.wait_capturing` -- traffic on the watched port until
  chatcap's own counters show a packet was processed (the capture is really live).
* :func:`read_log_records` -- the records of ``exchanges.jsonl.1`` then ``exchanges.jsonl``.
* :class:`SlowStream` -- one streamed chat completion read on a thread, whose progress (the
  content received so far, the number of events, [DONE]) the test can watch and stop.

Argument lists only, no shell.  Only processes started here are signalled, by their pid.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from clients import (CHAT_PATH, DEFAULT_HEADERS, ChatStreamAssembler, SSEParser)
from harness import log

LOG_FILES = ("exchanges.jsonl.1", "exchanges.jsonl")  # oldest first


class LiveChatcap:
    """``chatcap ARGS`` (normally ``run ...``) as a child process with its stderr collected."""

    def __init__(self, chatcap: str, args: list[str]) -> None:
        self.argv = [chatcap, *args]
        self.proc: subprocess.Popen | None = None
        self.lines: list[tuple[float, str]] = []  # (time.monotonic(), line)
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stdout_reader: threading.Thread | None = None
        self.stdout_lines: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, ready: str = r"recording ", timeout: float = 10.0) -> "LiveChatcap":
        """Start; return once a stderr line matches ``ready`` (raise if it exits first)."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr, True),
                                        daemon=True)
        self._stdout_reader = threading.Thread(target=self._read, args=(self.proc.stdout, False),
                                               daemon=True)
        self._reader.start()
        self._stdout_reader.start()
        if self.wait_line(ready, timeout=timeout) is None:
            raise RuntimeError(f"`{' '.join(self.argv)}` did not print /{ready}/ within "
                               f"{timeout} s (exit {self.proc.poll()}); stderr: {self.stderr()!r}")
        return self

    def _read(self, stream, is_stderr: bool) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                if is_stderr:
                    self.lines.append((time.monotonic(), line))
                else:
                    self.stdout_lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def line_count(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_line(self, pattern: str, since: int = 0, timeout: float = 5.0) -> str | None:
        """The first stderr line at index >= ``since`` matching ``pattern`` (a regex),
        waiting up to ``timeout`` s; None if none came (or the process ended without it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, line in self.lines[since:]:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if self.proc is not None and self.proc.poll() is not None and \
                        (self._reader is None or not self._reader.is_alive()):
                    return None
                self._cond.wait(min(remaining, 0.05))

    def send(self, sig: int) -> None:
        """Signal this process (only this one, by pid)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """Exit code, or None if it is still running after ``timeout`` s."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> int | None:
        """Cleanup: TERM, then KILL if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for t in (self._reader, self._stdout_reader):
            if t is not None:
                t.join(2)
        return self.proc.returncode

    # -- counters ----------------------------------------------------------------------
    def counters(self, timeout: float = 3.0) -> dict[str, int] | None:
        """SIGUSR1, wait for the next "counters:" line, parse "name N" pairs from it."""
        since = self.line_count()
        self.send(signal.SIGUSR1)
        line = self.wait_line(r"counters:", since=since, timeout=timeout)
        if line is None:
            return None
        return parse_counters(line)

    def wait_capturing(self, poke, timeout: float = 10.0) -> float:
        """Call ``poke()`` (traffic on the watched port) until chatcap reports a processed
        packet; return the seconds it took.  Raises if it never does."""
        start = time.monotonic()
        deadline = start + timeout
        last: dict[str, int] | None = None
        while time.monotonic() < deadline:
            poke()
            time.sleep(0.05)
            last = self.counters(timeout=2.0)
            if last and last.get("packets", 0) > 0:
                return time.monotonic() - start
        raise RuntimeError(f"chatcap did not see any packet of the probe traffic within "
                           f"{timeout} s; last counters {last}; stderr: {self.stderr()[-2000:]!r}")


def parse_counters(line: str) -> dict[str, int]:
    """``... counters: packets 12 (3456 bytes), tcp segments 10, ...`` -> {"packets": 12,
    "tcp segments": 10, ...} (the first number after each comma-separated name)."""
    _, _, rest = line.partition("counters:")
    out: dict[str, int] = {}
    for part in rest.split(","):
        m = re.match(r"\s*([A-Za-z][A-Za-z _-]*?)\s+(\d+)", part)
        if m:
            out[m.group(1).strip()] = int(m.group(2))
    return out


# --------------------------------------------------------------------------------------
# Log files
# --------------------------------------------------------------------------------------

def read_log_records(log_dir: Path) -> tuple[list[dict], list[str]]:
    """(records of exchanges.jsonl.1 then exchanges.jsonl, problems).  A last line without
    its newline is ignored (the writer may be in the middle of it -- it should not be, as
    each record is one write(), but a reader must not depend on it)."""
    records: list[dict] = []
    problems: list[str] = []
    for name in LOG_FILES:
        path = log_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        lines = data.split(b"\n")
        if lines and lines[-1] != b"":
            problems.append(f"{name}: last line has no newline ({len(lines[-1])} B)")
        for n, line in enumerate(lines[:-1], 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                problems.append(f"{name}:{n}: not JSON ({exc}): {line[:160]!r}")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{name}:{n}: not an object: {line[:160]!r}")
                continue
            obj["_file"] = name
            records.append(obj)
    return records, problems


# --------------------------------------------------------------------------------------
# A slow stream read on a thread
# --------------------------------------------------------------------------------------

class SlowStream:
    """POST ``body`` (a streaming chat request) on a thread, reading SSE events as they
    come.  ``content()`` is what the client has received so far; :meth:`wait_events`
    blocks until n events arrived; :meth:`stop` makes the reader close the response at
    the next event."""

    def __init__(self, base_url: str, label: str, body: bytes) -> None:
        self.base_url = base_url
        self.label = label
        self.body = body
        self.status: int | None = None
        self.error: str | None = None
        self._assembler = ChatStreamAssembler()
        self._parser = SSEParser()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "SlowStream":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, trust_env=False, timeout=30.0) as client:
                with client.stream("POST", CHAT_PATH, content=self.body,
                                   headers=DEFAULT_HEADERS) as r:
                    self.status = r.status_code
                    for chunk in r.iter_raw():
                        with self._lock:
                            for _type, data in self._parser.feed(chunk):
                                self._assembler.feed_event(data)
                            self._lock.notify_all()
                        if self._stop.is_set():
                            break
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self.finished.set()
                self._lock.notify_all()

    def snapshot(self) -> tuple[str, int, bool]:
        """(content so far, events so far, [DONE] seen)."""
        with self._lock:
            a = self._assembler.answer
            return a.content or "", a.events, a.done

    def content(self) -> str:
        return self.snapshot()[0]

    def reasoning(self) -> str:
        with self._lock:
            return self._assembler.answer.reasoning

    def wait_events(self, n: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._assembler.answer.events < n and not self.finished.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return self._assembler.answer.events >= n

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def join(self, timeout: float = 30.0) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate()`` until it returns something truthy (returned) or time runs out
    (the last falsy value is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


__all__ = ["LOG_FILES", "LiveChatcap", "parse_counters", "read_log_records", "SlowStream",
           "wait_until", "log"]
