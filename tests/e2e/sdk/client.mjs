#!/usr/bin/env node
// Drives the official OpenAI and Anthropic Node SDKs for chatcap's end-to-end tests.
//
//   node client.mjs JOBFILE
//
// JOBFILE (JSON):
//   {"sdk": "openai" | "anthropic",
//    "base_url": "http://127.0.0.1:PORT/v1"   (anthropic: "http://127.0.0.1:PORT"),
//    "api_key": "...", "concurrent": false,
//    "client_options": {...}                   (optional, e.g. {"maxRetries": 0, "timeout": 5000}),
//    "jobs": [{"label": "a", "api": "chat" | "completions" | "responses" | "messages",
//              "params": {...}}, ...]}
//
// One SDK client object serves every job of the file (so keep-alive connections are
// reused), with the SDK's default settings (retries, fetch, keep-alive agent) unless
// client_options says otherwise.  `params` goes verbatim to the create call; when
// `params.stream` is true the SDK's stream helper assembles the answer:
//   chat        client.chat.completions.stream(params) -> finalChatCompletion()
//   completions client.completions.create(params): choices[0].text concatenated
//   responses   client.responses.stream(params) -> finalResponse()
//   messages    client.messages.stream(params) -> finalMessage()
// (non-streamed: client.chat.completions / completions / responses / messages .create).
//
// stdout: one JSON line per event, written as it happens:
//   {"label", "event": "start", "t"}
//   {"label", "event": "first_token", "t"}      streamed only: first content, reasoning or
//                                               tool-argument text received
//   {"label", "event": "attempt", "t", "attempt", "retry_count", "method", "url"}
//                                               each HTTP request the SDK sends for the job
//   {"label", "event": "response", "t", "attempt", "status"}   its response headers arrived
//   {"label", "event": "fetch_error", "t", "attempt", "name", "message"}   it failed
//   {"label", "event": "done", "ok": true, "t", "content", "reasoning", "tool_calls",
//    "finish_reason" | "stop_reason" | "status", "usage", "id", "attempts", ...}
//   {"label", "event": "done", "ok": false, "t", "error": {"status", "name", "message",
//    "type", "code"}, "partial": {"content", "reasoning", "tool_arguments"}, "attempts"}
//   and at the very end {"event": "exit", "t"}.
// "t" is epoch seconds (float).  Nothing here throws on a server error: it is reported.
//
// Attempts are seen through a `fetch` wrapper around the global fetch (the SDK's default
// fetch; same undici agent), tied to their job with AsyncLocalStorage: no header or body
// byte is added to what the SDK sends.

import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const now = () => Date.now() / 1000;

function emit(obj) {
  // stdout is a pipe or a file: Node writes those synchronously on Linux, so each line
  // leaves the process at once.
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const jobContext = new AsyncLocalStorage();

function headerValue(headers, name) {
  if (!headers) return null;
  if (typeof headers.get === 'function') return headers.get(name);
  if (Array.isArray(headers)) {
    const hit = headers.find(([k]) => k.toLowerCase() === name);
    return hit ? hit[1] : null;
  }
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return null;
}

// The global fetch, observed: one "attempt" line per HTTP request, then "response" or
// "fetch_error".
async function observedFetch(input, init) {
  const ctx = jobContext.getStore();
  const url = typeof input === 'string' ? input : input?.url ?? String(input);
  let attempt = null;
  if (ctx) {
    attempt = { n: ctx.attempts.length + 1, retry_count: null, status: null, error: null };
    const rc = headerValue(init?.headers, 'x-stainless-retry-count');
    attempt.retry_count = rc == null ? null : Number(rc);
    attempt.t = now();
    ctx.attempts.push(attempt);
    emit({ label: ctx.label, event: 'attempt', t: attempt.t, attempt: attempt.n,
           retry_count: attempt.retry_count, method: init?.method ?? 'GET', url });
  }
  try {
    const response = await globalThis.fetch(input, init);
    if (attempt) {
      attempt.status = response.status;
      emit({ label: ctx.label, event: 'response', t: now(), attempt: attempt.n,
             status: response.status });
    }
    return response;
  } catch (e) {
    if (attempt) {
      attempt.error = describeError(e);
      emit({ label: ctx.label, event: 'fetch_error', t: now(), attempt: attempt.n,
             name: attempt.error.name, message: attempt.error.message });
    }
    throw e;
  }
}

function describeError(e) {
  if (e instanceof Error) {
    const out = {
      status: typeof e.status === 'number' ? e.status : null,
      name: e.constructor?.name || e.name,
      message: e.message,
    };
    const type = e.type ?? e.error?.type ?? e.error?.error?.type;
    if (type !== undefined) out.type = type;
    if (e.code !== undefined && e.code !== null) out.code = e.code;
    if (e.cause) out.cause = String(e.cause?.message ?? e.cause);
    return out;
  }
  if (e && typeof e === 'object') {
    // The OpenAI ResponseStream rejects with the raw `error` stream event.
    return { status: null, name: e.type === 'error' ? 'ResponseErrorEvent' : 'object',
             message: String(e.message ?? JSON.stringify(e)), code: e.code ?? null,
             sequence_number: e.sequence_number ?? null };
  }
  return { status: null, name: typeof e, message: String(e) };
}

// ---------------------------------------------------------------------------------------
// One job per dialect: returns the fields of the "done" line (ok: true).
// `seen` accumulates what the raw stream delivered, for first_token and partial answers.
// ---------------------------------------------------------------------------------------

function makeSeen(label) {
  return {
    label, content: '', reasoning: '', toolArguments: '', first: false,
    text(kind, piece) {
      if (typeof piece !== 'string' || piece === '') return;
      if (kind === 'content') this.content += piece;
      else if (kind === 'reasoning') this.reasoning += piece;
      else this.toolArguments += piece;
      if (!this.first) {
        this.first = true;
        emit({ label: this.label, event: 'first_token', t: now() });
      }
    },
  };
}

async function openaiChat(client, params, seen) {
  if (params.stream) {
    const stream = client.chat.completions.stream(params);
    stream.on('error', () => {});
    stream.on('chunk', (chunk) => {
      const delta = chunk.choices?.[0]?.delta;
      if (!delta) return;
      // vLLM's reasoning is the non-standard delta field reasoning_content (or
      // reasoning): the SDK's assembler Object.assign()s unknown delta fields, so it keeps
      // only the last piece.  The reasoning reported is concatenated from the raw chunks.
      seen.text('reasoning', delta.reasoning_content ?? delta.reasoning);
      seen.text('content', delta.content);
      for (const call of delta.tool_calls ?? []) seen.text('tool', call.function?.arguments);
    });
    const completion = await stream.finalChatCompletion();
    const message = completion.choices[0].message;
    return {
      id: completion.id, content: message.content ?? null, reasoning: seen.reasoning || null,
      reasoning_sdk: message.reasoning_content ?? message.reasoning ?? null,
      tool_calls: (message.tool_calls ?? []).map((c) => ({
        id: c.id, name: c.function.name, arguments: c.function.arguments })),
      finish_reason: completion.choices[0].finish_reason, usage: completion.usage ?? null,
    };
  }
  const completion = await client.chat.completions.create(params);
  const message = completion.choices[0].message;
  return {
    id: completion.id, content: message.content ?? null,
    reasoning: message.reasoning_content ?? message.reasoning ?? null,
    tool_calls: (message.tool_calls ?? []).map((c) => ({
      id: c.id, name: c.function.name, arguments: c.function.arguments })),
    finish_reason: completion.choices[0].finish_reason, usage: completion.usage ?? null,
  };
}

async function openaiCompletions(client, params, seen) {
  if (params.stream) {
    const stream = await client.completions.create(params);
    let id = null, finish = null, usage = null;
    for await (const chunk of stream) {
      id = id ?? chunk.id;
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      seen.text('content', choice.text);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    return { id, content: seen.content, reasoning: null, tool_calls: [],
             finish_reason: finish, usage };
  }
  const completion = await client.completions.create(params);
  return { id: completion.id, content: completion.choices[0].text, reasoning: null,
           tool_calls: [], finish_reason: completion.choices[0].finish_reason,
           usage: completion.usage ?? null };
}

function responseFields(response) {
  const reasoning = [];
  const tool_calls = [];
  for (const item of response.output ?? []) {
    if (item.type === 'reasoning') {
      for (const part of item.content ?? []) reasoning.push(part.text ?? '');
    } else if (item.type === 'function_call') {
      tool_calls.push({ id: item.call_id, item_id: item.id, name: item.name,
                        arguments: item.arguments });
    }
  }
  return {
    id: response.id, content: response.output_text ?? null,
    reasoning: reasoning.length ? reasoning.join('') : null, tool_calls,
    status: response.status, incomplete_details: response.incomplete_details ?? null,
    usage: response.usage ?? null,
  };
}

async function openaiResponses(client, params, seen) {
  if (params.stream) {
    const stream = client.responses.stream(params);
    stream.on('error', () => {});
    stream.on('event', (event) => {
      if (event.type === 'response.output_text.delta') seen.text('content', event.delta);
      else if (event.type === 'response.reasoning_text.delta') seen.text('reasoning', event.delta);
      else if (event.type === 'response.function_call_arguments.delta') seen.text('tool', event.delta);
    });
    return responseFields(await stream.finalResponse());
  }
  return responseFields(await client.responses.create(params));
}

function messageFields(message) {
  const text = [], thinking = [], tool_calls = [];
  for (const block of message.content ?? []) {
    if (block.type === 'text') text.push(block.text);
    else if (block.type === 'thinking') thinking.push(block.thinking);
    else if (block.type === 'tool_use') {
      // `input` is the parsed object: re-serialised with JSON.stringify (compact).
      // arguments_raw: the partial_json text the stream helper concatenated, when present.
      const call = { id: block.id, name: block.name, arguments: JSON.stringify(block.input),
                     input: block.input };
      if (typeof block.__json_buf === 'string') call.arguments_raw = block.__json_buf;
      tool_calls.push(call);
    }
  }
  return {
    id: message.id, content: text.length ? text.join('') : null,
    reasoning: thinking.length ? thinking.join('') : null, tool_calls,
    stop_reason: message.stop_reason, usage: message.usage ?? null,
  };
}

async function anthropicMessages(client, params, seen) {
  if (params.stream) {
    const stream = client.messages.stream(params);
    stream.on('error', () => {});
    stream.on('streamEvent', (event) => {
      if (event.type !== 'content_block_delta') return;
      const d = event.delta;
      if (d.type === 'text_delta') seen.text('content', d.text);
      else if (d.type === 'thinking_delta') seen.text('reasoning', d.thinking);
      else if (d.type === 'input_json_delta') seen.text('tool', d.partial_json);
    });
    return messageFields(await stream.finalMessage());
  }
  return messageFields(await client.messages.create(params));
}

const RUNNERS = {
  openai: { chat: openaiChat, completions: openaiCompletions, responses: openaiResponses },
  anthropic: { messages: anthropicMessages },
};

async function runJob(client, sdk, job) {
  const ctx = { label: job.label, attempts: [] };
  return jobContext.run(ctx, async () => {
    emit({ label: job.label, event: 'start', t: now() });
    const seen = makeSeen(job.label);
    const attempts = () => ctx.attempts.map((a) => ({
      retry_count: a.retry_count, status: a.status, error: a.error ? a.error.name : null }));
    try {
      const runner = RUNNERS[sdk]?.[job.api];
      if (!runner) throw new Error(`sdk ${sdk} has no api ${job.api}`);
      const fields = await runner(client, job.params ?? {}, seen);
      emit({ label: job.label, event: 'done', ok: true, t: now(), api: job.api,
             stream: !!job.params?.stream, ...fields, attempts: attempts() });
    } catch (e) {
      emit({ label: job.label, event: 'done', ok: false, t: now(), api: job.api,
             stream: !!job.params?.stream, error: describeError(e),
             partial: { content: seen.content, reasoning: seen.reasoning,
                        tool_arguments: seen.toolArguments },
             attempts: attempts() });
    }
  });
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node client.mjs JOBFILE\n');
    process.exit(2);
  }
  const spec = JSON.parse(readFileSync(file, 'utf8'));
  const options = { apiKey: spec.api_key ?? 'sk-test', baseURL: spec.base_url,
                    fetch: observedFetch, ...(spec.client_options ?? {}) };
  let client;
  if (spec.sdk === 'openai') client = new OpenAI(options);
  else if (spec.sdk === 'anthropic') client = new Anthropic(options);
  else throw new Error(`unknown sdk ${spec.sdk}`);
  const jobs = spec.jobs ?? [];
  if (spec.concurrent) {
    await Promise.all(jobs.map((job) => runJob(client, spec.sdk, job)));
  } else {
    for (const job of jobs) await runJob(client, spec.sdk, job);
  }
  emit({ event: 'exit', t: now() });
}

process.on('unhandledRejection', (reason) => {
  process.stderr.write(`client.mjs: unhandled rejection: ${reason?.stack ?? reason}\n`);
});

main().then(() => process.exit(0), (e) => {
  process.stderr.write(`client.mjs: ${e?.stack ?? e}\n`);
  process.exit(1);
});
