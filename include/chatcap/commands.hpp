// The commands behind the CLI. Each returns the process exit code; user-facing failures
// are one sentence on stderr naming the cause and the fix.
#pragma once

#include "chatcap/cli.hpp"
#include "chatcap/log_reader.hpp"
#include "chatcap/pipeline.hpp"

namespace chatcap {

// Builds the pipeline configuration from the flags; throws std::invalid_argument with a
// user-facing sentence for a bad value.
PipelineConfig pipeline_config_from(const Options& options);

int command_read(const Options& options);
int command_run(const Options& options);

// Log readers (cmd_log.cpp): `last [N]`, `show ID`, `tail`; they read options.log_dir.
// Reads --log-dir for the commands that show it; on failure prints why and returns false,
// and it warns about lines it had to skip.
bool load_log(const Options& options, LogContents& log);

int command_last(const Options& options);
int command_show(const Options& options);
int command_tail(const Options& options);

// Crash forensics (cmd_forensics.cpp), from the log files alone:
//   `suspects [--all]`: the suspects of the latest server_down record (every one with --all);
//   `show ID --curl`: a bash command replaying the exact request; `show ID --body`: its raw
//   body bytes. command_show() hands those two flags to these.
int command_suspects(const Options& options);
int command_show_curl(const Options& options);
int command_show_body(const Options& options);
// `risks [--json]`: the risk table (risks.hpp), for people or as JSON Lines.
int command_risks(const Options& options);

}  // namespace chatcap
