#!/usr/bin/python3
"""Self-test of the fake vLLM server's four generation dialects against the official SDKs.

Not a chatcap test (CTest runs only ``test_*.py``); run it after changing
``fake_vllm.py``, ``sdk_clients.py`` or ``sdk/client.mjs``:

    /usr/bin/python3 tests/e2e/selftest_sdk_dialects.py [--keep]

Checks, each against a fresh server (``--tcp-nodelay 1``):

* normal      -- with the OpenAI Node SDK (chat, completions, responses) and the Anthropic
                 one (messages), streamed and not, with reasoning and with tools: what the
                 SDK assembled (content, reasoning, tool-call ids / names / arguments,
                 finish reason / status / stop reason, usage) is what
                 :func:`fake_vllm.plan_answer` predicts, byte for byte; jobs sequential on
                 one client and then all at once; the events log names each path.
* crash       -- for each of the four endpoints, a poison request on it while a stream of
                 every dialect (and two non-streamed requests) are in flight: the server
                 exits with status 1, every SDK job reports an error (none crashes), the
                 in-flight streams had tokens before the cut, later requests fail to connect
                 after the SDK's retries.
* engine_dead -- the same, but the engine dies: in-flight streams end with their dialect's
                 error event (the SDKs report "EngineCore encountered an issue"), in-flight
                 and later non-streamed requests get HTTP 500 naming EngineDeadError after
                 the SDK's 2 retries (x-stainless-retry-count 0, 1, 2 on the wire, all three
                 requests in the server's events log), the server stays up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

import harness  # noqa: E402
from harness import Checker, FakeServer, log  # noqa: E402
from sdk_clients import (  # noqa: E402
    SdkRun, anthropic_base_url, check_node, job, openai_base_url, predict)

MODEL = "fake-vllm/gpt-oss-120b"
POISON = {"structured_outputs": {"json": None}}
SYSTEM = "You are a deterministic test model."
PARAMETERS = {"type": "object", "properties": {"query": {"type": "string"}},
              "required": ["query"]}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather",
                                              "description": "Weather at a place",
                                              "parameters": PARAMETERS}}
RESPONSES_TOOL = {"type": "function", "name": "get_weather",
                  "description": "Weather at a place", "parameters": PARAMETERS}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Weather at a place",
                  "input_schema": PARAMETERS}
SERVER_KNOBS = {"token_delay_ms": 1.0, "tcp_nodelay": 1}


def user_text(label: str) -> str:
    return f"[{label}] Say something — naïve café 日本語 🚀 \"q\" \\ end"


def params_for(api: str, label: str, *, stream: bool, tools: bool = False,
               **extra) -> dict:
    """Request params of a job of ``api`` (the SDK sends them as they are)."""
    if api == "chat":
        p = {"model": MODEL, "messages": [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": user_text(label)}]}
        if tools:
            p.update(tools=[CHAT_TOOL], tool_choice="auto")
    elif api == "completions":
        p = {"model": MODEL, "prompt": user_text(label)}
    elif api == "responses":
        p = {"model": MODEL, "instructions": SYSTEM, "input": user_text(label)}
        if tools:
            p.update(tools=[RESPONSES_TOOL], tool_choice="auto")
    elif api == "messages":
        p = {"model": MODEL, "system": SYSTEM, "max_tokens": 1024,
             "messages": [{"role": "user", "content": user_text(label)}]}
        if tools:
            p.update(tools=[ANTHROPIC_TOOL])
    else:
        raise ValueError(api)
    p["stream"] = stream
    p.update(extra)
    return p


def expected_fields(api: str, plan, stream: bool) -> dict:
    """The "done" fields client.mjs must report for ``plan``."""
    if api == "chat":
        return {"content": None if plan.tool_calls else plan.content,
                "reasoning": plan.reasoning or None,
                "tool_calls": [{"id": t.id, "name": t.name, "arguments": t.arguments}
                               for t in plan.tool_calls],
                "finish_reason": plan.finish_reason}
    if api == "completions":
        return {"content": plan.content, "reasoning": None, "tool_calls": [],
                "finish_reason": plan.finish_reason}
    if api == "responses":
        return {"content": "" if plan.tool_calls else plan.content,
                "reasoning": plan.reasoning or None,
                "tool_calls": [{"id": t.dialect_id("responses"),
                                "item_id": "fc_" + t.id.rsplit("-", 1)[-1],
                                "name": t.name, "arguments": t.arguments}
                               for t in plan.tool_calls],
                "status": plan.status,
                "incomplete_details": ({"reason": "max_output_tokens"}
                                       if plan.status == "incomplete" else None)}
    calls = []
    for t in plan.tool_calls:
        call = {"id": t.dialect_id("messages"), "name": t.name,
                # JSON.stringify of the parsed input: compact, raw UTF-8
                "arguments": json.dumps(t.input, ensure_ascii=False, separators=(",", ":")),
                "input": t.input}
        if stream:
            call["arguments_raw"] = t.arguments  # the partial_json pieces concatenated
        calls.append(call)
    return {"content": plan.content or None, "reasoning": plan.reasoning or None,
            "tool_calls": calls, "stop_reason": plan.stop_reason}


def expected_usage(api: str, plan) -> dict | None:
    if api in ("chat", "completions"):
        return plan.usage() if (not plan.stream or plan.include_usage) else None
    if api == "responses":
        return {"input_tokens": plan.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": plan.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": len(plan.reasoning_tokens)},
                "total_tokens": plan.prompt_tokens + plan.completion_tokens}
    return {"input_tokens": plan.prompt_tokens, "output_tokens": plan.completion_tokens}


# --------------------------------------------------------------------------------------
# normal
# --------------------------------------------------------------------------------------

def normal_jobs() -> tuple[list[dict], list[dict]]:
    """(openai jobs, anthropic jobs) covering every dialect, streamed and not, with
    reasoning and tools."""
    openai: list[dict] = []
    anthropic: list[dict] = []
    for api, sink in (("chat", openai), ("completions", openai), ("responses", openai),
                      ("messages", anthropic)):
        for stream in (True, False):
            s = "s" if stream else "n"
            sink.append(job(f"{api}-{s}", api, **params_for(
                api, f"{api}-{s}", stream=stream, fake_tokens=40, fake_reasoning_tokens=9)))
            if api != "completions":
                sink.append(job(f"{api}-{s}-tools", api,
                                **params_for(api, f"{api}-{s}-tools", stream=stream, tools=True)))
    openai += [
        job("chat-s-usage", "chat", **params_for("chat", "chat-s-usage", stream=True,
                                                 stream_options={"include_usage": True})),
        job("chat-n-length", "chat", **params_for("chat", "chat-n-length", stream=False,
                                                  max_tokens=5)),
        job("completions-s-usage", "completions", **params_for(
            "completions", "completions-s-usage", stream=True,
            stream_options={"include_usage": True}, fake_tokens=25)),
        job("completions-n-list", "completions", model=MODEL, stream=False,
            prompt=["first prompt", "second — prompt"]),
        job("responses-s-capped", "responses", **params_for(
            "responses", "responses-s-capped", stream=True, max_output_tokens=6,
            fake_tokens=30, reasoning={"effort": "low"})),
        job("responses-n-capped", "responses", **params_for(
            "responses", "responses-n-capped", stream=False, max_output_tokens=3)),
        job("responses-s-items", "responses", model=MODEL, stream=True,
            text={"format": {"type": "text"}},
            input=[{"role": "user", "content": "earlier"},
                   {"role": "user", "content": [{"type": "input_text",
                                                 "text": user_text("items")}]}]),
    ]
    anthropic += [
        job("messages-s-capped", "messages", **params_for(
            "messages", "messages-s-capped", stream=True, max_tokens=4, fake_tokens=20)),
        job("messages-n-thinking", "messages", **params_for(
            "messages", "messages-n-thinking", stream=False,
            thinking={"type": "enabled", "budget_tokens": 1024}, fake_reasoning_tokens=12)),
        job("messages-s-nothink", "messages", **params_for(
            "messages", "messages-s-nothink", stream=True, fake_reasoning_tokens=0)),
    ]
    return openai, anthropic


def check_results(c: Checker, what: str, server: FakeServer, run: SdkRun,
                  results: dict[str, dict]) -> None:
    for j in run.spec["jobs"]:
        label, api, params = j["label"], j["api"], j["params"]
        r = results.get(label)
        if not c.check(r is not None, f"{what} {label}: no done event"):
            continue
        if not c.check(r["ok"], f"{what} {label}: failed: {r.get('error')}"):
            continue
        plan = predict(server, api, params)
        want = expected_fields(api, plan, bool(params.get("stream")))
        for key, value in want.items():
            c.equal(f"{what} {label}: {key}", value, r.get(key))
        c.equal(f"{what} {label}: usage", expected_usage(api, plan), r.get("usage"))
        c.equal(f"{what} {label}: one attempt", [{"retry_count": 0, "status": 200,
                                                  "error": None}], r.get("attempts"))
        if params.get("stream"):
            starts = run.events_of(label, "start")
            firsts = run.events_of(label, "first_token")
            if c.check(len(firsts) == 1, f"{what} {label}: {len(firsts)} first_token events"):
                c.check(starts[0]["t"] <= firsts[0]["t"] <= r["t"],
                        f"{what} {label}: first_token not between start and done")
            if api == "chat" and plan.reasoning_tokens:
                # Documents the SDK's helper: it keeps only the last reasoning delta.
                c.equal(f"{what} {label}: reasoning kept by the SDK helper",
                        plan.reasoning_tokens[-1], r.get("reasoning_sdk"))
        else:
            c.equal(f"{what} {label}: first_token events", [],
                    run.events_of(label, "first_token"))


def check_normal(c: Checker, tmp: Path) -> None:
    with FakeServer(tmp, mode="normal", **SERVER_KNOBS) as server:
        openai_jobs, anthropic_jobs = normal_jobs()
        for concurrent in (False, True):
            what = "normal " + ("concurrent" if concurrent else "sequential")
            runs = [SdkRun("openai", openai_base_url(server), openai_jobs,
                           concurrent=concurrent, workdir=tmp).start(),
                    SdkRun("anthropic", anthropic_base_url(server), anthropic_jobs,
                           concurrent=concurrent, workdir=tmp).start()]
            for run in runs:
                results = run.wait_done(timeout=60)
                c.equal(f"{what}: client.mjs exit status", 0, run.proc.returncode)
                check_results(c, f"{what} {run.spec['sdk']}", server, run, results)
        events = [e for e in server.events() if e["event"] == "request"]
        paths = {e.get("path") for e in events}
        c.equal("normal: paths in the events log",
                {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"},
                paths)
        c.check(all(e.get("poison") is False and len(e.get("sha256", "")) == 64
                    for e in events), "normal: request events lack poison/sha256")
        c.equal("normal: requests logged", 2 * (len(openai_jobs) + len(anthropic_jobs)),
                len(events))
        r = httpx.post(server.base_url + "/v1/embeddings", json={"input": ["a", "b"]},
                       trust_env=False)
        c.equal("normal: embeddings", (200, 2),
                (r.status_code, len(r.json().get("data", []))))
        log_text = server.log_path.read_text(errors="replace")
        c.check(harness.SECRET not in log_text, "normal: the server logged the API key")


# --------------------------------------------------------------------------------------
# crash / engine_dead
# --------------------------------------------------------------------------------------

SLOW = {"fake_tokens": 400, "fake_token_delay_ms": 10}


def inflight_runs(server: FakeServer, tmp: Path, tag: str) -> tuple[SdkRun, SdkRun]:
    """A slow stream of every dialect and two slow non-streamed requests, all at once."""
    openai = SdkRun("openai", openai_base_url(server), [
        job(f"{tag}-chat-s", "chat", **params_for("chat", f"{tag}-chat-s", stream=True, **SLOW)),
        job(f"{tag}-completions-s", "completions",
            **params_for("completions", f"{tag}-completions-s", stream=True, **SLOW)),
        job(f"{tag}-responses-s", "responses",
            **params_for("responses", f"{tag}-responses-s", stream=True, **SLOW)),
        job(f"{tag}-chat-n", "chat", **params_for("chat", f"{tag}-chat-n", stream=False, **SLOW)),
    ], concurrent=True, workdir=tmp)
    anthropic = SdkRun("anthropic", anthropic_base_url(server), [
        job(f"{tag}-messages-s", "messages",
            **params_for("messages", f"{tag}-messages-s", stream=True, **SLOW)),
        job(f"{tag}-messages-n", "messages",
            **params_for("messages", f"{tag}-messages-n", stream=False, **SLOW)),
    ], concurrent=True, workdir=tmp)
    return openai.start(), anthropic.start()


def later_runs(server: FakeServer, tmp: Path, tag: str) -> tuple[SdkRun, SdkRun]:
    """After the death: one streamed and one non-streamed request per dialect."""
    jobs = [job(f"{tag}-later-{api}-{'s' if s else 'n'}", api,
                **params_for(api, f"{tag}-later-{api}-{'s' if s else 'n'}", stream=s))
            for api in ("chat", "completions", "responses") for s in (True, False)]
    openai = SdkRun("openai", openai_base_url(server), jobs, concurrent=True, workdir=tmp)
    anthropic = SdkRun("anthropic", anthropic_base_url(server), [
        job(f"{tag}-later-messages-{'s' if s else 'n'}", "messages",
            **params_for("messages", f"{tag}-later-messages-{'s' if s else 'n'}", stream=s))
        for s in (True, False)], concurrent=True, workdir=tmp)
    return openai.start(), anthropic.start()


def poison_run(server: FakeServer, tmp: Path, tag: str, api: str) -> SdkRun:
    sdk = "anthropic" if api == "messages" else "openai"
    base = anthropic_base_url(server) if sdk == "anthropic" else openai_base_url(server)
    return SdkRun(sdk, base, [job(f"{tag}-poison", api, **params_for(
        api, f"{tag}-poison", stream=True, **POISON))], workdir=tmp).start()


def wait_in_flight(run: SdkRun, timeout: float = 15.0) -> None:
    """Until every streamed job has its first token and every other one is sent."""
    for j in run.spec["jobs"]:
        run.wait_event(j["label"], "first_token" if j["params"].get("stream") else "attempt",
                       timeout)


WIRE_NOTES: list[str] = []


def describe(r: dict) -> str:
    e = r.get("error") or {}
    tries = ",".join(f"{a['retry_count']}:{a['status'] or a['error']}" for a in r["attempts"])
    return f"{e.get('name')} status={e.get('status')} tries=[{tries}] {e.get('message', '')[:70]!r}"


def check_death(c: Checker, tmp: Path, mode: str, api: str) -> None:
    tag = f"{mode}-{api}"
    what = f"{mode} (poison on {api})"
    tmp = tmp / tag  # a server's files (events log) are named by mode: one folder each
    tmp.mkdir()
    server = FakeServer(tmp, mode=mode, crash_delay_ms=150, **SERVER_KNOBS).start()
    try:
        inflight = inflight_runs(server, tmp, tag)
        for run in inflight:
            wait_in_flight(run)
        t_poison = time.time()
        poison = poison_run(server, tmp, tag, api)
        if mode == "crash":
            server.proc.wait(timeout=10)
            c.equal(f"{what}: server exit status", 1, server.proc.returncode)
        else:
            deadline = time.monotonic() + 10
            while not any(e["event"] == "engine_dead" for e in server.events()):
                if time.monotonic() > deadline:
                    c.fail(f"{what}: the engine did not die")
                    break
                time.sleep(0.02)
        t_death = time.time()
        c.check(t_death - t_poison < 5, f"{what}: death took {t_death - t_poison:.1f} s")
        later = later_runs(server, tmp, tag)
        results: dict[str, dict] = {}
        for run in (*inflight, poison, *later):
            results.update(run.wait_done(timeout=60))
            c.equal(f"{what}: client.mjs exit status ({run.spec['sdk']})", 0,
                    run.proc.returncode)
        for label, r in sorted(results.items()):
            c.check(not r["ok"], f"{what} {label}: succeeded")
            if r["ok"]:
                continue
            kind = ("poison" if label.endswith("-poison") else
                    "later" if "-later-" in label else "inflight")
            if api == "chat" or (api == "messages" and kind == "poison"):
                WIRE_NOTES.append(f"{mode:11s} {kind:8s} {label[len(tag) + 1:]:20s} {describe(r)}")
            check_death_result(c, f"{what} {label}", mode, kind, r)
        if mode == "engine_dead":
            c.equal(f"{what}: server still running", None, server.proc.poll())
            h = httpx.get(server.base_url + "/health", trust_env=False)
            c.equal(f"{what}: /health", 500, h.status_code)
            requests = [e for e in server.events() if e["event"] == "request"]
            c.check(all(e.get("path") for e in requests), f"{what}: request events lack path")
            poisoned = [e for e in requests if e.get("poison")]
            c.equal(f"{what}: poison requests logged", [params_path(api)],
                    [e["path"] for e in poisoned])
            # Every request answered 500 (the 2 in-flight non-streamed ones, the 8 later
            # ones) reached the server 3 times, the same bytes (2 retries); the 4 in-flight
            # streams and the poison once.
            by_sha: dict[str, int] = {}
            for e in requests:
                by_sha[e["sha256"]] = by_sha.get(e["sha256"], 0) + 1
            c.equal(f"{what}: how often each body reached the server",
                    {1: 5, 3: 10}, {n: list(by_sha.values()).count(n)
                                    for n in sorted(set(by_sha.values()))})
    finally:
        server.stop()


def params_path(api: str) -> str:
    return {"chat": "/v1/chat/completions", "completions": "/v1/completions",
            "responses": "/v1/responses", "messages": "/v1/messages"}[api]


def check_death_result(c: Checker, what: str, mode: str, kind: str, r: dict) -> None:
    err = r.get("error") or {}
    attempts = r.get("attempts") or []
    retry_counts = [a["retry_count"] for a in attempts]
    streamed = r.get("stream")
    if kind == "inflight" and streamed:
        c.check(len((r.get("partial") or {}).get("content") or "") > 0,
                f"{what}: no token before the death")
    if mode == "crash":
        if kind == "later":
            c.equal(f"{what}: error", "APIConnectionError", err.get("name"))
            c.equal(f"{what}: retries on the wire", [0, 1, 2], retry_counts)
        elif streamed:
            c.equal(f"{what}: one attempt (the 200 came, no retry)", [0], retry_counts)
        else:
            c.equal(f"{what}: error", "APIConnectionError", err.get("name"))
            c.equal(f"{what}: retries", [0, 1, 2], retry_counts)
        return
    # engine_dead
    if kind == "later" or not streamed:
        c.equal(f"{what}: status", 500, err.get("status"))
        # OpenAI SDK: the body's error.type is the error's .type; Anthropic SDK: the
        # message is the body's error.message ("EngineDeadError: ...").
        c.check("EngineDeadError" in (err.get("message") or "") + str(err.get("type")),
                f"{what}: error does not name EngineDeadError: {err}")
        c.equal(f"{what}: retries on the wire", [0, 1, 2], retry_counts)
        c.equal(f"{what}: statuses", [500, 500, 500], [a["status"] for a in attempts])
    else:
        c.check("EngineCore encountered an issue" in (err.get("message") or ""),
                f"{what}: error is not the engine's: {err}")
        c.equal(f"{what}: one attempt", [0], retry_counts)


def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    missing = check_node()
    if missing:
        print(f"FAIL selftest_sdk_dialects: {missing}", file=sys.stderr)
        return 1
    workdir = harness.Workdir("selftest-sdk", keep=args.keep)
    t0 = time.monotonic()
    try:
        log("mode normal")
        check_normal(c, workdir.path)
        for mode in ("crash", "engine_dead"):
            for api in ("chat", "completions", "responses", "messages"):
                log(f"mode {mode}, poison on {api}")
                check_death(c, workdir.path, mode, api)
    except Exception as exc:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        c.fail(f"the self-test broke: {type(exc).__name__}: {exc}")
    finally:
        workdir.finish(ok=c.ok)
    log("what the SDKs reported (every job of the runs with the poison on chat, "
        "and the poison job of the runs with it on messages):")
    for line in WIRE_NOTES:
        print("   " + line, file=sys.stderr)
    log(f"ran in {time.monotonic() - t0:.1f} s")
    return c.report("selftest_sdk_dialects")


if __name__ == "__main__":
    sys.exit(main())
