// gen_load: writes a load capture and what a correct recorder must record from it.
//
//   gen_load --shape standard --out std.pcap --expect std.jsonl
//   gen_load --shape standard --scale 10 --out std10.pcap --expect std10.jsonl
//   gen_load --shape big_body --request-bytes 4MiB --out big4.pcap --expect big4.jsonl
//
// Prints one JSON line on stdout describing what it wrote (packets, bytes, connections,
// exchanges, seconds of traffic). See load_shapes.hpp for the shapes.
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "load_shapes.hpp"

int main(int argc, char** argv) {
  CLI::App app("Generates a load capture (pcap, Ethernet as on lo) and its expected records (JSON Lines)");
  std::string shape_name = "standard", out_path, expect_path;
  int connections = 0, exchanges = 0, events = 0, scale = 1, ack_every = 0;
  std::uint64_t request_bytes = 0, seed = 1;
  std::uint16_t port = 8077;
  app.add_option("--shape", shape_name, "standard, idle_inflight, big_body, small_nonstream or reasoning_tools")
      ->capture_default_str();
  app.add_option("--connections", connections, "concurrent connections (default: the shape's)");
  app.add_option("--exchanges-per-connection", exchanges, "exchanges on each keep-alive connection");
  app.add_option("--events-per-exchange", events, "SSE events per streamed answer, on average");
  app.add_option("--request-bytes", request_bytes, "request body size (bodies are 1–2× this; big_body: exactly)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--scale", scale, "the load K times in a row (same concurrency)")->check(CLI::PositiveNumber);
  app.add_option("--ack-every", ack_every, "a receiver ACKs every N small segments (default 16)");
  app.add_option("--port", port, "server port")->capture_default_str();
  app.add_option("--seed", seed, "the same seed gives the same capture")->capture_default_str();
  app.add_option("--out", out_path, "pcap file to write")->required();
  app.add_option("--expect", expect_path, "expected records, one JSON object per exchange")->required();
  CLI11_PARSE(app, argc, argv);

  bench::Shape shape;
  if (!bench::parse_shape(shape_name, shape)) {
    fmt::print(stderr, "gen_load: --shape {}: unknown — give standard, idle_inflight, big_body, small_nonstream "
                       "or reasoning_tools\n", shape_name);
    return 2;
  }
  bench::LoadConfig config = bench::defaults_for(shape);
  if (connections > 0) config.connections = connections;
  if (exchanges > 0) config.exchanges_per_connection = exchanges;
  if (events > 0) config.events_per_exchange = events;
  if (request_bytes > 0) config.request_bytes = request_bytes;
  if (ack_every > 0) config.ack_every = ack_every;
  config.scale = scale;
  config.port = port;
  config.seed = seed;

  try {
    std::ofstream expect(expect_path, std::ios::binary | std::ios::trunc);
    if (!expect) throw std::runtime_error("cannot write " + expect_path);
    bench::PcapWriter out(out_path);
    bench::LoadSummary summary = bench::generate(config, out, expect);
    out.close();
    expect.close();
    if (!expect) throw std::runtime_error("cannot write " + expect_path);
    fmt::print("{{\"shape\":\"{}\",\"scale\":{},\"packets\":{},\"bytes\":{},\"connections\":{},\"exchanges\":{},"
               "\"seconds\":{:.3f}}}\n",
               shape_name, scale, out.packets(), out.bytes(), summary.connections, summary.exchanges,
               static_cast<double>(summary.last_ts - summary.first_ts) / 1e6);
  } catch (const std::exception& e) {
    fmt::print(stderr, "gen_load: {}\n", e.what());
    return 1;
  }
  return 0;
}
