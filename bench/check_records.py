#!/usr/bin/python3
"""Compares chatcap's records with what gen_load says a correct recorder must produce.

    chatcap read load.pcap -p 8077 | bench/check_records.py --expect load.jsonl
    bench/check_records.py --expect load.jsonl LOGDIR/exchanges.jsonl.1 LOGDIR/exchanges.jsonl

Records are JSON Lines from ``chatcap read`` or ``chatcap run``'s log ("-" or no file:
stdin). Each expectation (one per exchange) is found by the X-Request-Id header of its
request record, and its exchange record by the request record's id. Checked: the request
body (sha256 and size), and for answered exchanges the state, status, whether it streamed,
the assembled content / reasoning / tool calls / finish reason / usage, [DONE], the SSE
event count, the response body after de-chunking (sha256 and size), and that no anomaly
(and no known engine-killer risk: the loads are ordinary requests) was reported; for unanswered ones, that the exchange ended as the expectation says
(capture_stopped at the end of a capture). Records that match no expectation (a second
copy, an exchange without its request, a server_down) are differences too.

Prints "recorded R/E, right C/E" and the first differences; exits 1 on any difference.
Memory stays small on big captures: bodies are hashed as records stream past and dropped.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Iterable, TextIO


@dataclass
class Result:
    expected: int = 0
    recorded: int = 0          # exchanges whose records are there (right or not)
    right: int = 0             # ... and agree with the expectation in every field checked
    unexpected: int = 0        # records that belong to no expectation
    differences: list[str] = field(default_factory=list)  # one line each, all of them

    @property
    def ok(self) -> bool:
        return self.expected == self.right and self.unexpected == 0 and not self.differences


def _body_bytes(record: dict) -> bytes:
    body = record.get("body", "")
    if record.get("body_encoding") == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8", "surrogatepass")


def _first_difference(expected: str, got: str) -> str:
    """Where two strings part, with a little context: enough to find the bug."""
    if not isinstance(got, str):
        return f"expected a string of {len(expected)} chars, got {json.dumps(got)[:80]}"
    i = 0
    while i < min(len(expected), len(got)) and expected[i] == got[i]:
        i += 1
    return (f"{len(expected)} vs {len(got)} chars, first difference at char {i}: "
            f"expected {json.dumps(expected[max(0, i - 20):i + 40], ensure_ascii=False)}, "
            f"got {json.dumps(got[max(0, i - 20):i + 40], ensure_ascii=False)}")


def _summarise_request(record: dict) -> dict:
    body = _body_bytes(record)
    return {"id": record.get("id"), "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
            "body_bytes": record.get("body_bytes"), "truncated": record.get("body_truncated", False),
            "complete": record.get("complete"), "anomalies": record.get("anomalies"),
            "client": record.get("client"), "risks": record.get("risks")}


def _summarise_exchange(record: dict) -> dict:
    body = _body_bytes(record)
    out = {key: record.get(key) for key in ("state", "status", "anomalies", "error", "close", "gap_bytes")}
    out.update(sha256=hashlib.sha256(body).hexdigest(), bytes=len(body), body_bytes=record.get("body_bytes"),
               truncated=record.get("body_truncated", False), stream="sse" in record,
               answer=record.get("sse") or record.get("answer"))
    return out


def _request_key(record: dict) -> str | None:
    for pair in record.get("headers") or []:
        if isinstance(pair, list) and len(pair) == 2 and str(pair[0]).lower() == "x-request-id":
            return pair[1]
    return None


def check(expect_lines: Iterable[str], record_lines: Iterable[str], ignore: frozenset[str] = frozenset()) -> Result:
    """`ignore`: X-Request-Ids whose records are neither expected nor unexpected (exchanges a
    partial replay cut in the middle)."""
    result = Result()
    ignored_ids: set[str] = set()
    expectations: dict[str, dict] = {}
    for line in expect_lines:
        if line.strip():
            e = json.loads(line)
            expectations[e["key"]] = e
    result.expected = len(expectations)

    requests: dict[str, dict] = {}   # key -> request summary
    exchanges: dict[str, dict] = {}  # record id -> exchange summary
    for number, line in enumerate(record_lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            result.unexpected += 1
            result.differences.append(f"record line {number}: not JSON ({error})")
            continue
        kind = record.get("type")
        if kind == "request":
            key = _request_key(record)
            if key in ignore:
                ignored_ids.add(record.get("id"))
            elif key not in expectations:
                result.unexpected += 1
                result.differences.append(f"record line {number}: request record {record.get('id')} from "
                                          f"{record.get('client')} has no known X-Request-Id ({key!r})")
            elif key in requests:
                result.unexpected += 1
                result.differences.append(f"{key}: a second request record (ids {requests[key]['id']}, "
                                          f"{record.get('id')})")
            else:
                requests[key] = _summarise_request(record)
        elif kind == "exchange":
            if record.get("id") in exchanges:
                result.unexpected += 1
                result.differences.append(f"record line {number}: a second exchange record {record.get('id')}")
            else:
                exchanges[record.get("id")] = _summarise_exchange(record)
        else:
            result.unexpected += 1
            result.differences.append(f"record line {number}: unexpected {kind} record: {line.strip()[:300]}")

    linked: set[str] = set()
    for key, e in expectations.items():
        problems: list[str] = []
        request = requests.get(key)
        exchange = exchanges.get(request["id"]) if request else None
        if request:
            linked.add(request["id"])
        answered = e["state"] == "complete"
        if request is None:
            problems.append("no request record")
        elif answered and exchange is None:
            problems.append("no exchange record")
        else:
            result.recorded += 1
        if request is not None:
            want = e["request"]
            if request["truncated"]:
                problems.append(f"request body truncated at {request['bytes']} of {want['body_bytes']} bytes")
            if request["bytes"] != want["body_bytes"] or request["body_bytes"] != want["body_bytes"]:
                problems.append(f"request body {request['bytes']} bytes kept, body_bytes {request['body_bytes']}, "
                                f"expected {want['body_bytes']}")
            elif request["sha256"] != want["body_sha256"]:
                problems.append("request body differs (sha256)")
            if request["complete"] is not True:
                problems.append("request not complete")
            if answered and request["anomalies"]:
                problems.append(f"request anomalies {request['anomalies']}")
            if request["risks"]:  # the loads are ordinary requests: a flag would be a false alarm
                problems.append(f"request flagged with risks {[r.get('id') for r in request['risks']]}")
        if exchange is not None:
            problems += _compare_exchange(e, exchange)
        elif request is not None and not answered:
            problems.append(f"no exchange record (expected state {e['state']})")
        if problems:
            where = f"{key} ({e['client']}, record {request['id'] if request else '-'})"
            result.differences += [f"{where}: {p}" for p in problems]
        else:
            result.right += 1

    for record_id in exchanges.keys() - linked - ignored_ids:
        result.unexpected += 1
        s = exchanges[record_id]
        result.differences.append(f"exchange record {record_id} ({s['state']}, status {s['status']}) has no "
                                  "request record with a known X-Request-Id")
    return result


def _compare_exchange(e: dict, got: dict) -> list[str]:
    problems = []
    if got["state"] != e["state"]:
        why = "".join(f", {k} {got[k]!r}" for k in ("error", "close", "gap_bytes") if got.get(k))
        problems.append(f"state {got['state']}, expected {e['state']}{why}")
    if e["state"] != "complete":
        return problems
    if got["status"] != e["status"]:
        problems.append(f"status {got['status']}, expected {e['status']}")
    if got["anomalies"]:
        problems.append(f"anomalies {got['anomalies']}")
    if got["stream"] != e["stream"]:
        problems.append(f"{'an' if got['stream'] else 'no'} sse object, expected "
                        f"{'a stream' if e['stream'] else 'a non-streamed answer'}")
    want_body = e["response"]
    # A streamed answer's raw bytes are kept only up to --stream-body (default 0): its
    # events are checked through the assembled `sse` below; the count must still be right.
    raw_stream_cut = got["stream"] and got["truncated"]
    if raw_stream_cut:
        if got["body_bytes"] != want_body["body_bytes"]:
            problems.append(f"response body_bytes {got['body_bytes']}, expected {want_body['body_bytes']}")
    elif got["truncated"]:
        problems.append(f"response body truncated at {got['bytes']} bytes")
    elif got["bytes"] != want_body["body_bytes"] or got["body_bytes"] != want_body["body_bytes"]:
        problems.append(f"response body {got['bytes']} bytes kept, body_bytes {got['body_bytes']}, "
                        f"expected {want_body['body_bytes']}")
    elif got["sha256"] != want_body["body_sha256"]:
        problems.append("response body differs (sha256)")
    answer = got["answer"]
    if not isinstance(answer, dict):
        problems.append("no assembled answer (sse/answer object)")
        return problems
    want = e["answer"]
    for name in ("content", "reasoning"):
        if answer.get(name) != want[name]:
            problems.append(f"{name}: {_first_difference(want[name], answer.get(name))}")
    for name in ("finish_reason", "usage"):
        if answer.get(name) != want[name]:
            problems.append(f"{name} {json.dumps(answer.get(name))}, expected {json.dumps(want[name])}")
    calls = answer.get("tool_calls")
    if not isinstance(calls, list) or len(calls) != len(want["tool_calls"]):
        problems.append(f"{len(calls) if isinstance(calls, list) else calls!r} tool calls, "
                        f"expected {len(want['tool_calls'])}")
    else:
        for got_call, want_call in zip(calls, want["tool_calls"]):
            # OpenAI's message shape ({"function": {"name", "arguments"}}); the flat shape of
            # records before it is read too.
            if isinstance(got_call, dict) and isinstance(got_call.get("function"), dict):
                got_call = {**got_call, **got_call["function"]}
            for name in ("index", "id", "type", "name"):
                if got_call.get(name) != want_call[name]:
                    problems.append(f"tool call {want_call['index']} {name} {got_call.get(name)!r}, "
                                    f"expected {want_call[name]!r}")
            if got_call.get("arguments") != want_call["arguments"]:
                problems.append(f"tool call {want_call['index']} arguments: "
                                f"{_first_difference(want_call['arguments'], got_call.get('arguments'))}")
    if e["stream"]:
        if answer.get("done") is not True:
            problems.append("no [DONE] seen")
        if answer.get("events") != e["events"]:
            problems.append(f"{answer.get('events')} SSE events, expected {e['events']}")
    return problems


def report(result: Result, out: TextIO, label: str = "", limit: int = 20) -> None:
    prefix = f"{label}: " if label else ""
    print(f"{prefix}recorded {result.recorded}/{result.expected}, right {result.right}/{result.expected}, "
          f"{result.unexpected} unexpected records", file=out)
    for line in result.differences[:limit]:
        print(f"  {line}", file=out)
    if len(result.differences) > limit:
        print(f"  ... and {len(result.differences) - limit} more differences", file=out)


def _lines(paths: list[str]) -> Iterable[str]:
    for path in paths or ["-"]:
        if path == "-":
            yield from sys.stdin
        else:
            with open(path, encoding="utf-8") as f:
                yield from f


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expect", required=True, help="expectations written by gen_load --expect")
    parser.add_argument("records", nargs="*", help="JSON Lines record files (default: stdin)")
    parser.add_argument("--label", default="", help="prefix of the summary line")
    parser.add_argument("--limit", type=int, default=20, help="differences printed (default 20)")
    args = parser.parse_args()
    with open(args.expect, encoding="utf-8") as expect:
        result = check(expect, _lines(args.records))
    report(result, sys.stdout, args.label, args.limit)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
