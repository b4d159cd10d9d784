// The errors a user acts on. what() is one sentence naming the cause and the fix; the CLI
// prints it after "chatcap: " and exits non-zero.
#pragma once

#include <stdexcept>

namespace chatcap {

// Capturing: the interface, the permission, the filter, the capture file.
class CaptureError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The log directory, its files, the pidfile.
class LogError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace chatcap
