#!/usr/bin/python3
"""Every dialect vLLM speaks, recorded like chat: what the official SDKs assembled is what
chatcap's record says, byte for byte.

``chatcap run -i lo --endpoint /`` (every path in the ring) records a fake vLLM
(``fake_vllm.py``, normal mode) while the official OpenAI Node SDK (chat completions,
completions, Responses) and the official Anthropic SDK (Messages) send it requests with
their default settings, streamed and not, with reasoning and with tools, with non-ASCII text
and JSON escapes in every answer (the fake's vocabulary). For each job, the exchange record
of its request (found by the job's label in the body) must hold:

* ``dialect`` -- the request's;
* ``content`` and ``reasoning`` -- what the SDK assembled (the SDK's stream helpers; for chat
  the reasoning deltas concatenated, since the helper keeps only the last);
* ``tool_calls`` in OpenAI's message shape -- each call's id and ``function.name`` and
  ``function.arguments`` what the SDK assembled (for Messages the ``partial_json`` pieces as
  they came when streamed, the ``input`` object as written when not);
* ``finish_reason`` normalised (stop / length / tool_calls) and the dialect's own word in
  ``native_finish_reason`` where it differs (Anthropic's stop_reason, Responses' status);
* ``input_tokens`` / ``output_tokens`` -- the SDK's usage, normalised;
* a token event per streamed token, ``done`` true, no ``bad_events``, no anomaly.

Run: /usr/bin/python3 tests/e2e/test_sdk_dialects.py --chatcap build/chatcap [--keep]
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Checker, FakeServer, log  # noqa: E402
from forensics import LiveChatcap  # noqa: E402
from sdk_clients import SdkRun, anthropic_base_url, check_node, openai_base_url, predict  # noqa: E402
from selftest_sdk_dialects import SERVER_KNOBS, normal_jobs  # noqa: E402


class EveryPathChatcap(LiveChatcap):
    """``chatcap run`` with every path in the ring (answers of every dialect kept)."""

    @property
    def argv(self) -> list[str]:
        return super().argv + ["--endpoint", "/"]


def normalised_finish(api: str, done: dict) -> tuple[str | None, str | None]:
    """(finish_reason, native_finish_reason) chatcap must write for what the SDK reported."""
    if api in ("chat", "completions"):
        return done.get("finish_reason"), None
    if api == "responses":
        status = done.get("status")
        if status == "completed":
            return ("tool_calls" if done.get("tool_calls") else "stop"), "completed"
        if status == "incomplete":
            reason = (done.get("incomplete_details") or {}).get("reason")
            return ("length" if reason == "max_output_tokens" else reason), f"incomplete:{reason}"
        return "error", status
    stop = done.get("stop_reason")
    normal = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
              "tool_use": "tool_calls"}.get(stop, stop)
    return normal, stop


def sdk_tokens(api: str, usage: dict | None) -> tuple[int | None, int | None]:
    if not usage:
        return None, None
    if api in ("chat", "completions"):
        return usage.get("prompt_tokens"), usage.get("completion_tokens")
    return usage.get("input_tokens"), usage.get("output_tokens")


def expected_calls(api: str, done: dict, stream: bool) -> list[dict]:
    calls = []
    for call in done.get("tool_calls") or []:
        arguments = call.get("arguments")
        if api == "messages" and stream:
            arguments = call.get("arguments_raw")  # the partial_json pieces as they came
        calls.append({"id": call.get("id"), "name": call.get("name"), "arguments": arguments})
    return calls


def recorded_calls(answer: dict) -> list[dict]:
    out = []
    for call in answer.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        out.append({"id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments"),
                    "type": call.get("type")})
    return out


def marker_of(j: dict) -> str:
    """Text only this job's request body holds: its label as the fake's prompts carry it
    ("[label]"), else the last string of its prompt list."""
    params = json.dumps(j["params"], ensure_ascii=False)
    labels = re.findall(r"\[([A-Za-z0-9-]+)\]", params)
    if labels:
        return f"[{labels[0]}]"
    prompt = j["params"].get("prompt")
    return prompt[-1] if isinstance(prompt, list) else j["label"]


def find_exchange(records: list[dict], marker: str) -> tuple[dict | None, dict | None]:
    request = next((r for r in records if r.get("type") == "request"
                    and marker in (r.get("body") or "")), None)
    if request is None:
        return None, None
    exchange = next((r for r in records if r.get("type") == "exchange"
                     and r.get("id") == request.get("id")), None)
    return request, exchange


def check_job(c: Checker, server: FakeServer, run: SdkRun, j: dict, done: dict,
              records: list[dict]) -> None:
    label, api, params = j["label"], j["api"], j["params"]
    what = f"{api} {label}"
    stream = bool(params.get("stream"))
    if not c.check(done.get("ok"), f"{what}: the SDK failed: {done.get('error')}"):
        return
    request, exchange = find_exchange(records, marker_of(j))
    if not c.check(exchange is not None, f"{what}: no exchange record (request record: {request is not None})"):
        return
    answer = exchange.get("sse" if stream else "answer")
    if not c.check(isinstance(answer, dict), f"{what}: no {'sse' if stream else 'answer'} in the record: {json.dumps(exchange)[:600]}"):
        return
    c.equal(f"{what}: dialect", api, answer.get("dialect"))
    c.equal(f"{what}: content", done.get("content") or "", answer.get("content"))
    c.equal(f"{what}: reasoning", done.get("reasoning") or "", answer.get("reasoning"))
    got_calls = recorded_calls(answer)
    c.equal(f"{what}: tool calls", expected_calls(api, done, stream),
            [{k: v for k, v in call.items() if k != "type"} for call in got_calls])
    c.check(all(call["type"] == "function" for call in got_calls), f"{what}: a tool call's type is not function")
    finish, native = normalised_finish(api, done)
    c.equal(f"{what}: finish_reason", finish, answer.get("finish_reason"))
    c.equal(f"{what}: native_finish_reason", native if native != finish else None,
            answer.get("native_finish_reason"))
    tokens_in, tokens_out = sdk_tokens(api, done.get("usage"))
    c.equal(f"{what}: input_tokens", tokens_in, answer.get("input_tokens"))
    c.equal(f"{what}: output_tokens", tokens_out, answer.get("output_tokens"))
    c.equal(f"{what}: bad_events", None, answer.get("bad_events"))
    c.equal(f"{what}: anomalies", [], exchange.get("anomalies"))
    c.equal(f"{what}: state", "complete", exchange.get("state"))
    if stream:
        c.check(answer.get("done") is True, f"{what}: the stream's end was not seen")
        plan = predict(server, api, params)
        c.check(exchange.get("timing", {}).get("ttft_ms") is not None, f"{what}: no ttft_ms")
        if plan.content_tokens or plan.reasoning_tokens:
            c.check(exchange["timing"].get("itl_ms_p50") is not None, f"{what}: no inter-token gaps")
    summary = (request or {}).get("summary") or {}
    c.equal(f"{what}: summary model", params.get("model"), summary.get("model"))


def main() -> int:
    args = harness.common_args(__doc__.split("\n\n")[0])
    c = Checker()
    problem = harness.check_chatcap_binary(args.chatcap) or check_node()
    if problem:
        print(f"FAIL test_sdk_dialects: {problem}", file=sys.stderr)
        return 1
    workdir = harness.Workdir("sdk-dialects", keep=args.keep)
    started = time.monotonic()
    try:
        with FakeServer(workdir.path, mode="normal", **SERVER_KNOBS) as server:
            live = EveryPathChatcap(args.chatcap, server.port, workdir.path / "log").start()
            try:
                openai_jobs, anthropic_jobs = normal_jobs()
                runs = [SdkRun("openai", openai_base_url(server), openai_jobs, concurrent=True,
                               workdir=workdir.path).start(),
                        SdkRun("anthropic", anthropic_base_url(server), anthropic_jobs, concurrent=True,
                               workdir=workdir.path).start()]
                results = [(run, run.wait_done(timeout=90)) for run in runs]
                markers = [marker_of(j) for run, _ in results for j in run.spec["jobs"]]
                c.equal("every job has its own marker", len(markers), len(set(markers)))

                def all_recorded(records: list[dict]) -> bool:
                    return all(find_exchange(records, marker)[1] is not None for marker in markers)

                live.wait_for(all_recorded, 10, "every job's exchange record")
                records = live.records()
            finally:
                c.equal("chatcap run's exit status", 0, live.stop())
            for run, done_by_label in results:
                for j in run.spec["jobs"]:
                    check_job(c, server, run, j, done_by_label.get(j["label"], {}), records)
            log(f"{len(markers)} jobs checked against their records")
    except Exception as exc:  # noqa: BLE001 - reported with context
        import traceback
        traceback.print_exc()
        c.fail(f"the test itself broke: {type(exc).__name__}: {exc}")
    finally:
        workdir.finish(ok=c.ok)
    log(f"ran in {time.monotonic() - started:.1f} s")
    return c.report("test_sdk_dialects")


if __name__ == "__main__":
    sys.exit(main())
