// Human-readable rendering of logged exchanges, for `last`, `show` and `tail`.
//
// Everything rendered comes from captured bytes, so two rules hold for every function here:
//   - captured text is only ever an argument of fmt ("{}"), never a format string;
//   - control characters in captured text are escaped (ESC → "\x1b", CR → "\r", C1 controls,
//     bidi overrides, bytes that are not UTF-8), so a request body cannot move the cursor,
//     retitle the terminal or hide text. Newlines are kept only where the text is shown as a
//     block. The exact bytes are available with --json.
// Colours (ANSI SGR) are added only when RenderStyle says so: stdout is a terminal and
// NO_COLOR is not set.
//
// Usage:
//   RenderStyle style = RenderStyle::for_stdout();
//   fmt::print("{}", render_exchange(logged, Detail::brief, style));
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "chatcap/log_reader.hpp"

namespace chatcap {

struct RenderStyle {
  bool color = false;
  // Colours when stdout is a terminal, NO_COLOR is unset and TERM is not "dumb".
  static RenderStyle for_stdout();
};

enum class Detail {
  brief,  // `last`: bodies and answers cut to kBriefLines lines of kBriefLineBytes bytes
  full,   // `show`: headers, whole bodies, whole answer
  ended,  // `tail`, when an exchange ends: its outcome and answer, no request body
};

inline constexpr std::size_t kBriefLines = 30;
inline constexpr std::size_t kBriefLineBytes = 300;

// Escapes what a terminal would interpret: C0 controls (but '\t', and '\n' when
// keep_newlines), DEL, C1 controls, Unicode bidi controls, and bytes that are not UTF-8.
std::string escape_control(std::string_view text, bool keep_newlines = false);

// At most max_lines lines, each cut to max_line_bytes bytes (on a UTF-8 boundary, "…"
// appended). hidden_lines gets the number of lines left out; cut_lines the number shortened.
struct Clipped {
  std::string text;
  std::size_t hidden_lines = 0;
  std::size_t cut_lines = 0;
};
Clipped clip_lines(std::string_view text, std::size_t max_lines, std::size_t max_line_bytes);

// "2026-11-24T15:21:53.758382Z" → "2026-11-24 15:21:53.758 UTC"; other text escaped as is.
std::string display_time(std::string_view rfc3339);

// One exchange as a block of lines ending in '\n'.
std::string render_exchange(const LoggedExchange& exchange, Detail detail, const RenderStyle& style);

// `last`: one line per exchange, under a header (like `docker ps`): local time, id, dialect
// (or the path when there is none), model, status and state, time to first token, tokens in
// and out, a known-risk marker, and as much of the last user message as the width leaves.
// At most `width` columns (counted in characters); never a line break.
std::string render_exchange_line(const LoggedExchange& exchange, const RenderStyle& style, std::size_t width);
std::string render_exchange_line_header(const RenderStyle& style, std::size_t width);
// A server death as one line, for the same listing.
std::string render_server_down_line(const nlohmann::json& record, const RenderStyle& style, std::size_t width);
// "15:21:53" for today's times, "11-24 15:21:53" for others, in the local time zone.
std::string local_clock(std::string_view rfc3339);
// The last thing the user said in a request body of any dialect (chat and Messages: the last
// user message's text; Responses: the input string or last input item's text; completions:
// the prompt), whitespace folded; empty when there is none.
std::string last_user_text(const nlohmann::json& request);

// `tail`'s line for a request record: "15:21:53.758 → POST /v1/chat/completions  model m ... (id x)".
std::string render_request_line(const nlohmann::json& request, const RenderStyle& style);

// A "server_down" record: when, which server, evidence and suspects, as a few lines.
std::string render_server_down(const nlohmann::json& record, const RenderStyle& style);

// `chatcap suspects`: one server death — a header (time, server, kind, evidence) then each
// suspect in the record's order (likeliest first): rank, id, why, client, request time, the
// request summary with its structured output on a line of its own, the request body (pretty
// JSON, clipped like `last`), the exchange's state, anomalies and answer. `joined[i]` is the
// logged exchange of the record's i-th suspect, nullptr when it is not in the log (see
// suspects_of()).
std::string render_suspects(const nlohmann::json& server_down, const std::vector<const LoggedExchange*>& joined,
                            const RenderStyle& style);

// `text` as one bash word that stands for exactly those bytes, nothing ever expanded:
// 'single quoted' ('\'' for a quote) when it is printable text, else $'...' with \xHH for every
// byte that is not printable ASCII (so the command shows no control character or bidi
// override on a terminal either). Throws std::invalid_argument for a NUL byte, which no
// shell word can hold.
std::string shell_quote(std::string_view text);

// `chatcap show ID --curl`: a bash command that sends the recorded request again, the same
// method, target, headers and byte-exact body, to the server it went to:
//   base64 -d <<'CHATCAP_BODY_EOF' | curl -q ... -X 'POST' 'http://SERVER/TARGET' -H '...' --data-binary @-
//   <the body, base64, in a quoted here-document>
//   CHATCAP_BODY_EOF
// Every captured value is a shell_quote()d word; the body never is shell text at all.
// Hop-by-hop headers and Content-Length are left to curl; curl's own User-Agent, Accept,
// Content-Type and Expect are removed when the original request had none; Host is sent
// only when it differs from the URL's authority. A redacted credential becomes
// "${CHATCAP_<NAME>}", with a comment saying to export it (left out while unset). With an
// Accept-Encoding header, --compressed lets curl decode the answer it asked for.
// Throws LogError when the exact request is not on disk (see exact_request_body()) or
// cannot be expressed as a curl command (a NUL or a line break in a header, say).
std::string curl_command(const LoggedExchange& exchange);

}  // namespace chatcap
