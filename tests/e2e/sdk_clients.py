"""The official OpenAI and Anthropic Node SDKs as clients of chatcap's end-to-end tests.

``tests/e2e/sdk/client.mjs`` runs a list of jobs through one SDK client object (see its
header for the job file and the JSON-lines protocol); this module writes the job file,
starts ``node client.mjs`` and reads its events on a thread::

    run = SdkRun("openai", openai_base_url(server), [
        job("a", "chat", model=M, messages=[...], stream=True),
        job("b", "responses", model=M, input="hi", stream=True)], workdir=tmp).start()
    run.wait_event("a", "first_token", timeout=10)   # -> the event (dict)
    results = run.wait_done(timeout=30)              # -> {label: "done" event}

:func:`predict` tells what the fake server answers to a job (:func:`fake_vllm.plan_answer`
with the server's defaults and the job's dialect).  The SDKs come from
``tests/e2e/sdk/node_modules`` (``scripts/install-deps`` runs ``npm ci`` there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import fake_vllm

HERE = Path(__file__).resolve().parent
SDK_DIR = HERE / "sdk"
CLIENT_MJS = SDK_DIR / "client.mjs"
SECRET = "sk-test-SECRET123"  # the same key as clients.SECRET


def openai_base_url(server: Any) -> str:
    """The OpenAI SDK's ``baseURL`` for a :class:`harness.FakeServer`."""
    return server.base_url + "/v1"


def anthropic_base_url(server: Any) -> str:
    """The Anthropic SDK's ``baseURL`` (it appends ``/v1/messages`` itself)."""
    return server.base_url


def job(label: str, api: str, **params: Any) -> dict:
    """One job: ``api`` is chat / completions / responses / messages, ``params`` go
    verbatim to the SDK's create (or stream) call."""
    return {"label": label, "api": api, "params": params}


def predict(server: Any, api: str, params: dict) -> fake_vllm.AnswerPlan:
    """What ``server`` (a FakeServer, whose ``knobs`` are the fake's defaults) answers to
    a job of ``api`` with ``params``: the SDKs send ``params`` as they are (the stream
    helpers add ``"stream": true``, which changes nothing in the plan but ``stream``)."""
    k = server.knobs
    return fake_vllm.plan_answer(
        dict(params), dialect=api, default_tokens=int(k["default_tokens"]),
        default_reasoning_tokens=int(k["reasoning_tokens"]),
        default_token_delay_ms=float(k["token_delay_ms"]), default_ttft_ms=float(k["ttft_ms"]))


def check_node() -> str | None:
    """None when node and the SDKs are installed, else what is missing."""
    if shutil.which("node") is None:
        return "node is not installed (run scripts/install-deps)"
    for package in ("openai", "@anthropic-ai/sdk"):
        if not (SDK_DIR / "node_modules" / package / "package.json").exists():
            return f"{SDK_DIR}/node_modules/{package} is missing (run scripts/install-deps)"
    return None


class SdkRun:
    """One ``node client.mjs`` process running ``jobs`` with one ``sdk`` client."""

    def __init__(self, sdk: str, base_url: str, jobs: Iterable[dict], *,
                 api_key: str = SECRET, concurrent: bool = False,
                 client_options: dict | None = None, workdir: Path | None = None) -> None:
        self.spec = {"sdk": sdk, "base_url": base_url, "api_key": api_key,
                     "concurrent": concurrent, "client_options": client_options or {},
                     "jobs": list(jobs)}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="chatcap-sdk-"))
        name = "-".join(j["label"] for j in self.spec["jobs"])[:60] or "none"
        self.job_file = self.workdir / f"sdk-{sdk}-{name}-{id(self):x}.json"
        self.stderr_path = self.job_file.with_suffix(".stderr")
        self.events: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stderr = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "SdkRun":
        missing = check_node()
        if missing:
            raise RuntimeError(missing)
        self.job_file.write_text(json.dumps(self.spec, ensure_ascii=False), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_LOG", "ANTHROPIC_LOG"):
            env.pop(var, None)
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(["node", str(CLIENT_MJS), str(self.job_file)],
                                     cwd=str(SDK_DIR), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "garbage", "line": raw.decode("utf-8", "replace")}
            event["_recv"] = time.time()
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        self.proc.wait()
        with self._cond:
            self.events.append({"event": "eof", "returncode": self.proc.returncode,
                                "_recv": time.time()})
            self._cond.notify_all()

    def close(self, timeout: float = 10.0) -> int | None:
        """Wait for the process (kill it past ``timeout``); return its exit status."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self._reader:
            self._reader.join(timeout=5)
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        return self.proc.returncode

    def __enter__(self) -> "SdkRun":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting -----------------------------------------------------------------------
    def _wait_for(self, predicate, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = predicate()
                if found is not None:
                    return found
                if any(e["event"] == "eof" for e in self.events):
                    raise RuntimeError(f"client.mjs ended before {what}; stderr: "
                                       f"{self.stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s")
                self._cond.wait(left)

    def wait_event(self, label: str, event: str, timeout: float = 30.0) -> dict:
        """The first ``event`` ("start", "first_token", "attempt", "done", ...) of job
        ``label``, waiting for it."""
        return self._wait_for(
            lambda: next((e for e in self.events
                          if e.get("label") == label and e["event"] == event), None),
            timeout, f"{event!r} of {label!r}")

    def wait_done(self, timeout: float = 60.0) -> dict[str, dict]:
        """Wait until every job is done and the process has exited; :meth:`results`."""
        self._wait_for(lambda: True if any(e["event"] == "exit" for e in self.events)
                       else None, timeout, "the end of all jobs")
        self.close()
        return self.results()

    def results(self) -> dict[str, dict]:
        """label -> its "done" event (only the jobs done so far)."""
        with self._cond:
            return {e["label"]: e for e in self.events if e["event"] == "done"}

    def events_of(self, label: str, event: str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e.get("label") == label
                    and (event is None or e["event"] == event)]

    def stderr_tail(self, n: int = 15) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return "\n".join(lines[-n:]) or "(empty stderr)"


def run_jobs(sdk: str, base_url: str, jobs: Iterable[dict], timeout: float = 60.0,
             **options: Any) -> dict[str, dict]:
    """Run ``jobs`` to the end; label -> "done" event."""
    return SdkRun(sdk, base_url, jobs, **options).start().wait_done(timeout)
