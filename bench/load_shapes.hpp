// The loads scripts/bench measures chatcap on, and what a correct recorder makes of them.
//
// Traffic looks like an OpenAI client (httpx: headers and body in two writes, keep-alive)
// talking to vLLM behind uvicorn (TCP_NODELAY: response headers in one segment, then every
// SSE event in its own HTTP chunk and its own segment, then the terminal chunk). Many
// connections run at once, interleaved by timestamp as a busy server's would be. Content
// deltas are drawn from a vocabulary that includes JSON escapes, control characters and
// 1- to 4-byte UTF-8, so a recorder that mangles bytes is caught, not just a slow one.
//
// Shapes (each knob can be overridden):
//   standard         200 keep-alive connections × 10 streamed chat completions, ~140 SSE
//                    events each, 1–2 KB requests (the 311k-packet capture)
//   idle_inflight    10,000 connections that each send one request and get no answer
//   big_body         one request with a 16 MiB body (Content-Length) and its answer
//   small_nonstream  200 connections × 100 small non-streamed exchanges
//   reasoning_tools  streams of reasoning deltas and tool calls whose arguments arrive in
//                    fragments (one or two calls, by index)
// --scale K runs the load K times in a row: each connection slot opens K connections one
// after another, so traffic grows K-fold while concurrency (hence a recorder's memory)
// stays the same. For idle_inflight the connections never close, so K-fold concurrency.
//
// Expectations: one JSON object per exchange, keyed by the X-Request-Id header every
// request carries ("key"), with the request body's sha256 and, for answered exchanges,
// the status, the assembled content / reasoning / tool calls, finish reason, usage and the
// response body's sha256 (after de-chunking, as a recorder keeps it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "packet_writer.hpp"

namespace bench {

enum class Shape { standard, idle_inflight, big_body, small_nonstream, reasoning_tools };

bool parse_shape(const std::string& name, Shape& shape);
std::string to_string(Shape shape);

struct LoadConfig {
  Shape shape = Shape::standard;
  int connections = 200;
  int exchanges_per_connection = 10;
  int events_per_exchange = 140;    // SSE events per streamed answer, on average (±25%)
  std::size_t request_bytes = 1024; // request bodies are 1–2× this (big_body: exactly this)
  int scale = 1;
  int ack_every = 16;               // a receiver ACKs every N small segments
  std::uint16_t port = 8077;
  std::uint64_t seed = 1;
};

// The shape's defaults (what the issue describes); callers then apply overrides.
LoadConfig defaults_for(Shape shape);

struct LoadSummary {
  std::uint64_t connections = 0;
  std::uint64_t exchanges = 0;
  micros first_ts = 0, last_ts = 0;
};

// Writes the load's packets to `out` in timestamp order and one expectation line per
// exchange to `expect`.
LoadSummary generate(const LoadConfig& config, PcapWriter& out, std::ostream& expect);

}  // namespace bench
