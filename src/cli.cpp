#include "chatcap/cli.hpp"

#include <unistd.h>

#include <cstdio>
#include <stdexcept>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "chatcap/capture.hpp"
#include "chatcap/commands.hpp"

namespace chatcap {
namespace {

constexpr const char* kDefaultConfig = "/etc/chatcap/chatcap.conf";

void add_filter_flags(CLI::App& cmd, Options& o) {
  cmd.add_option("-p,--port", o.ports,
                 "server port to watch; repeat for several, `any` for every port (default 8077)\n"
                 "e.g. -p 8077 -p 8000")
      ->capture_default_str()
      ->group("Filters");
  cmd.add_option("--host", o.hosts, "only traffic to or from this address; repeatable (default: any)\ne.g. --host 127.0.0.1")
      ->group("Filters");
  cmd.add_option("-e,--endpoint", o.endpoints,
                 "request-path prefix to record; repeatable; `/` records every path; query strings are ignored\n"
                 "e.g. -e /v1/chat/completions -e /v1/completions")
      ->capture_default_str()
      ->group("Filters");
  cmd.add_option("--max-body", o.max_body,
                 "bytes of each body kept; the rest is counted and flagged body_truncated (e.g. 16MiB)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str()
      ->group("Filters");
  cmd.add_flag("--no-redact", o.no_redact,
               "keep Authorization, Cookie and API-key headers in clear (default: replaced by a short sha256)")
      ->group("Filters");
}

void add_read(CLI::App& app, Options& o, int& rc) {
  CLI::App* read = app.add_subcommand("read", "decode a capture file: JSON Lines records to stdout, then exit");
  read->add_option("FILE", o.read_file, "pcap or pcapng file (e.g. from tcpdump -i lo -w FILE)")->required();
  add_filter_flags(*read, o);
  read->add_flag("-q,--quiet", o.quiet, "no summary line on stderr");
  read->footer(
      "Example:\n"
      "  tcpdump -i lo -s 0 -w vllm.pcap 'tcp port 8077'\n"
      "  chatcap read vllm.pcap | jq 'select(.type==\"exchange\") | {id, state, status}'\n"
      "  chatcap read any.pcap --port any --endpoint /   # every HTTP exchange on every port");
  read->callback([&o, &rc] { rc = command_read(o); });
}

}  // namespace

int run_cli(int argc, char** argv) {
  Options options;
  int rc = 0;
  CLI::App app{"chatcap — a passive recorder of LLM API traffic (OpenAI-compatible HTTP on loopback)"};
  app.set_version_flag("--version", std::string("chatcap ") + CHATCAP_VERSION);
  app.set_config("--config", kDefaultConfig, "read flags from this file (same keys as the flags)", false);
  app.require_subcommand(0, 1);
  add_read(app, options, rc);
  app.footer("Run `chatcap COMMAND --help` for the flags of each command.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const CaptureError& e) {
    fmt::print(stderr, "chatcap: {}\n", e.what());
    return 1;
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "chatcap: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "chatcap: {}\n", e.what());
    return 1;
  }
  if (app.get_subcommands().empty()) {
    fmt::print(stderr, "{}", app.help());
    return 2;
  }
  return rc;
}

}  // namespace chatcap
