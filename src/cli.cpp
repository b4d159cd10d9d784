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
  cmd.add_option("--stream-body", o.stream_body,
                 "raw bytes kept of a streamed (text/event-stream) response, e.g. 64KiB; its events are\n"
                 "assembled into the record's `sse` either way (default 0: the raw stream is ~10x the answer)")
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

// "--keep 0 would keep nothing — give at least 1" instead of CLI11's range text.
CLI::Validator at_least_one(const std::string& flag) {
  return CLI::Validator(
      [flag](std::string& value) -> std::string {
        std::size_t n = 0;
        try {
          n = std::stoul(value);
        } catch (const std::exception&) {
          return fmt::format("{} {}: not a number — give a count such as 20", flag, value);
        }
        return n >= 1 ? std::string() : fmt::format("{} {} would keep nothing — give at least 1", flag, value);
      },
      "N>=1");
}

void add_run(CLI::App& app, Options& o, int& rc) {
  CLI::App* run = app.add_subcommand("run", "record live: capture, keep the last N exchanges on disk (systemd runs this)");
  run->add_option("-i,--interface", o.interface, "interface to capture on (`any` for all)")
      ->capture_default_str()
      ->group("Capture");
  run->add_option("--buffer-size", o.buffer_size, "kernel capture buffer, e.g. 64MiB (drops are counted and reported)")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str()
      ->group("Capture");
  add_filter_flags(*run, o);
  run->add_option("--log-dir", o.log_dir,
                  "where exchanges.jsonl(.1) and watched.jsonl(.1) are written (created 0750)")
      ->capture_default_str()
      ->group("Log");
  run->add_option("-n,--keep", o.keep,
                  "--endpoint exchanges kept per log file (the ring); exchanges.jsonl and .1 hold N to 2N")
      ->capture_default_str()
      ->check(at_least_one("--keep"))
      ->group("Log");
  run->add_option("--keep-watched", o.keep_watched,
                  "POST requests on other paths kept per watched.jsonl file, not counted in --keep: the server\n"
                  "watch names a killer on any endpoint; watched.jsonl and .1 hold N to 2N (0: not written,\n"
                  "and such requests cannot be named as suspects)")
      ->capture_default_str()
      ->group("Log");
  run->add_option("--pidfile", o.pidfile, "pidfile held (flock) while running; a second instance is refused")
      ->capture_default_str()
      ->group("Log");
  run->footer(
      "Each request is written the moment it is complete (before the server can die on it), its\n"
      "exchange when it ends. Requests on --endpoint paths fill the ring (the last --keep exchanges,\n"
      "what `last` shows); every other POST is watched: its request goes to watched.jsonl, bounded\n"
      "by --keep-watched, so that whatever endpoint a killing request came through, `suspects`\n"
      "can name it (a suspect's request is copied beside the server_down record). A request with\n"
      "a known engine-killing shape is said on stderr (the journal) the moment it is complete:\n"
      "`chatcap risks` lists the shapes.\n"
      "Signals: TERM/INT stop (open exchanges are written as capture_stopped), HUP reopens the\n"
      "log files, USR1 prints counters to stderr.\n"
      "Example:\n"
      "  chatcap run                                   # lo, port 8077, /var/log/chatcap, keep 20\n"
      "  chatcap run -p 8000 --keep 100 --log-dir /srv/chatcap\n"
      "  chatcap run --config /etc/chatcap/chatcap.conf # same keys as the flags");
  run->callback([&o, &rc] { rc = command_run(o); });
}

// --log-dir and --json for the commands that read the log. Bound to the same Options fields
// at the top level (for `chatcap --last N`) and in each subcommand: CLI11 runs the top
// level's option callbacks first, so a subcommand's flag beats a config-file key.
CLI::Option* add_log_dir_flag(CLI::App& cmd, Options& o) {
  return cmd.add_option("--log-dir", o.log_dir, "directory holding exchanges.jsonl, as given to `chatcap run`")
      ->capture_default_str();
}

CLI::Option* add_json_flag(CLI::App& cmd, Options& o) {
  return cmd.add_flag("--json", o.json, "raw records, one JSON object per line: {\"id\", \"request\", \"exchange\"}");
}

void add_last(CLI::App& app, Options& o, int& rc) {
  CLI::App* last = app.add_subcommand("last", "the last N recorded exchanges, newest last (also `chatcap --last N`)");
  last->add_option("N", o.last_n, "how many exchanges (default 20)")->check(CLI::PositiveNumber);
  add_log_dir_flag(*last, o);
  add_json_flag(*last, o);
  last->add_flag("--full", o.full, "a block per exchange: request summary, body and answer, cut (as before)");
  last->footer(
      "One line per exchange, oldest first under a header: local time, id, dialect (or path),\n"
      "model, status and state (\"in flight\" when no response yet), time to first token,\n"
      "tokens in→out, a ⚠ and the risk's id for a request carrying a known engine killer\n"
      "(`chatcap risks`), and the start of the last user message; server deaths as a line of\n"
      "their own. `chatcap show ID` shows one in full.\n"
      "Example:\n"
      "  chatcap last 5\n"
      "  chatcap last 5 --full            # blocks: bodies and answers, cut\n"
      "  chatcap last 50 --json | jq 'select(.exchange == null) | .request.summary'   # in flight");
  last->callback([&o, &rc] { rc = command_last(o); });
}

void add_show(CLI::App& app, Options& o, int& rc) {
  CLI::App* show = app.add_subcommand("show", "one exchange in full: headers, bodies, the whole answer");
  show->add_option("ID", o.show_id, "exchange id, or a unique prefix of one (from `chatcap last`)")->required();
  add_log_dir_flag(*show, o);
  add_json_flag(*show, o);
  CLI::Option* curl = show->add_flag("--curl", o.curl,
                                     "print a bash command that replays the exact request with curl (same method, "
                                     "target, headers and body bytes, to the recorded server)");
  CLI::Option* body = show->add_flag("--body", o.body_only,
                                     "write the exact request body bytes to stdout, nothing else");
  curl->excludes(body);
  show->get_option("--json")->excludes(curl)->excludes(body);
  show->footer(
      "--curl and --body refuse (exit 1) when the log does not hold the exact bytes: a body cut at\n"
      "--max-body (body_truncated), or a request that never completed. In the --curl command every\n"
      "captured value is single-quoted and the body is base64 in a quoted here-document, so nothing\n"
      "captured is ever run; a credential the log redacted is sent from $CHATCAP_<HEADER> when set.\n"
      "Example:\n"
      "  chatcap show 3f2a9c               # a prefix is enough when it is unique\n"
      "  chatcap show 3f2a9c --json | jq -r .request.body\n"
      "  chatcap show 3f2a9c --curl > replay.sh && bash replay.sh   # send the same request again\n"
      "  CHATCAP_AUTHORIZATION='Bearer sk-...' bash replay.sh        # with the redacted API key\n"
      "  chatcap show 3f2a9c --body > body.json                      # the raw request body");
  show->callback([&o, &rc] { rc = command_show(o); });
}

void add_suspects(CLI::App& app, Options& o, int& rc) {
  CLI::App* suspects = app.add_subcommand(
      "suspects", "the requests in flight when the server last died, likeliest first, with their bodies");
  add_log_dir_flag(*suspects, o);
  suspects->add_flag("--json", o.json,
                     "one JSON object per death: {\"server_down\": {...}, \"suspects\": [{\"id\", \"why\", "
                     "\"rank\", \"request\", \"exchange\"}]}");
  suspects->add_flag("--all", o.all, "every server death in the log, oldest first (default: the latest)");
  suspects->footer(
      "Reads the log files only: works after both the server and chatcap died. For each suspect:\n"
      "why it is suspected, its request (structured output on a line of its own, the body\n"
      "clipped: `chatcap show ID` for all of it, `chatcap show ID --curl` to replay it) and what\n"
      "became of it. No death in the log: says so on stderr, exit 0.\n"
      "Example:\n"
      "  chatcap suspects\n"
      "  chatcap suspects --json | jq -r '.suspects[0].request.body'   # the likeliest culprit's body\n"
      "  chatcap suspects --all --log-dir /srv/chatcap");
  suspects->callback([&o, &rc] { rc = command_suspects(o); });
}

void add_risks(CLI::App& app, Options& o, int& rc) {
  CLI::App* risks = app.add_subcommand("risks", "the known engine-killing request shapes chatcap flags, with references");
  risks->add_flag("--json", o.json, "one JSON object per shape: {\"id\", \"shape\", \"versions\", \"ref\", \"why\"}");
  risks->footer(
      "Each shape comes from vLLM's own tracker (ref). A request that matches one carries\n"
      "\"risks\":[{\"id\",\"why\",\"ref\"}] in its record, is said once on stderr (the journal) when it\n"
      "is complete, is marked in `last` and `tail`, and ranks first among the suspects if the\n"
      "server dies. The ids are stable.\n"
      "Example:\n"
      "  chatcap risks\n"
      "  chatcap last 50 --json | jq 'select(.request.risks) | {id, risks: [.request.risks[].id]}'");
  risks->callback([&o, &rc] { rc = command_risks(o); });
}

void add_tail(CLI::App& app, Options& o, int& rc) {
  CLI::App* tail = app.add_subcommand("tail", "follow new records as they are written (like journalctl -f)");
  add_log_dir_flag(*tail, o);
  tail->footer(
      "One line per request when it is complete, a block when its exchange ends; survives log\n"
      "rotation. Ctrl-C stops.\n"
      "Example:\n"
      "  chatcap tail --log-dir /var/log/chatcap");
  tail->callback([&o, &rc] { rc = command_tail(o); });
}

// `chatcap --last N [--log-dir D] [--json]`: the flag form of `chatcap last N`.
CLI::Option* add_top_level_last(CLI::App& app, Options& o) {
  constexpr const char* kGroup = "Reading the log (`chatcap --last N` = `chatcap last N`)";
  CLI::Option* last = app.add_option("--last", o.last_n, "the last N recorded exchanges, newest last")
                          ->check(CLI::PositiveNumber)
                          ->group(kGroup);
  add_log_dir_flag(app, o)->group(kGroup);
  add_json_flag(app, o)->group(kGroup);
  return last;
}

}  // namespace

int run_cli(int argc, char** argv) {
  Options options;
  int rc = 0;
  CLI::App app{"chatcap — a passive recorder of LLM API traffic (OpenAI-compatible HTTP on loopback)"};
  app.set_version_flag("--version", std::string("chatcap ") + CHATCAP_VERSION);
  app.set_config("--config", kDefaultConfig, "read flags from this file (same keys as the flags)", false);
  app.allow_config_extras(CLI::config_extras_mode::error);  // a mistyped key is an error, not ignored
  app.require_subcommand(0, 1);
  add_run(app, options, rc);
  add_read(app, options, rc);
  add_last(app, options, rc);
  add_show(app, options, rc);
  add_tail(app, options, rc);
  add_suspects(app, options, rc);
  add_risks(app, options, rc);
  // (Add new subcommands above: `--last` must exclude every one of them.)
  CLI::Option* last_flag = add_top_level_last(app, options);
  // `--last` is a command of its own: refused with any other, before either runs.
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) sub->excludes(last_flag);
  bool ran_top_level = false;
  app.callback([&] {
    if (last_flag->count() == 0 || !app.get_subcommands().empty()) return;
    ran_top_level = true;
    rc = command_last(options);
  });
  app.footer("Run `chatcap COMMAND --help` for the flags of each command.\n"
             "Example:\n"
             "  chatcap --last 5            # the last five exchanges of /var/log/chatcap");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ConfigError& e) {
    fmt::print(stderr, "chatcap: config file: {} — its keys are the flag names (`chatcap run --help`), under [run] for run\n",
               e.what());
    return 2;
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;  // --help and --version are 0; every usage error is 2
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
  if (app.get_subcommands().empty() && !ran_top_level) {
    fmt::print(stderr, "{}", app.help());
    return 2;
  }
  return rc;
}

}  // namespace chatcap
