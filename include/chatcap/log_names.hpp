// The files of a log directory, named in one place for the writer and every reader.
//
//   exchanges.jsonl, exchanges.jsonl.1   the ring: the last N exchanges of --endpoint paths,
//                                        server_down records, and the requests they name
//   watched.jsonl, watched.jsonl.1       watched-only requests: POSTs on other paths, kept
//                                        so that any suspect is on disk (--keep-watched)
// Each pair rotates on its own: NAME is the current file, NAME.1 the one before.
#pragma once

namespace chatcap {

inline constexpr const char* kCurrentLogName = "exchanges.jsonl";
inline constexpr const char* kPreviousLogName = "exchanges.jsonl.1";
inline constexpr const char* kWatchedLogName = "watched.jsonl";
inline constexpr const char* kPreviousWatchedLogName = "watched.jsonl.1";

}  // namespace chatcap
