// The commands behind the CLI. Each returns the process exit code; user-facing failures
// are one sentence on stderr naming the cause and the fix.
#pragma once

#include "chatcap/cli.hpp"
#include "chatcap/pipeline.hpp"

namespace chatcap {

// Builds the pipeline configuration from the flags; throws std::invalid_argument with a
// user-facing sentence for a bad value.
PipelineConfig pipeline_config_from(const Options& options);

int command_read(const Options& options);
int command_run(const Options& options);

// Log readers (cmd_log.cpp): `last [N]`, `show ID`, `tail`; they read options.log_dir.
int command_last(const Options& options);
int command_show(const Options& options);
int command_tail(const Options& options);

}  // namespace chatcap
