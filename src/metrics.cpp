#include "chatcap/metrics.hpp"

#include <algorithm>
#include <cstdio>

#include <fmt/format.h>

#include "chatcap/risks.hpp"

namespace chatcap {
namespace {

// OpenTelemetry's recommended bucket boundaries for each GenAI histogram.
const std::vector<double> kDurationBounds = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64,
                                             1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
const std::vector<double> kTtftBounds = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                         0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0};
const std::vector<double> kPerTokenBounds = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                             0.3,  0.4,   0.5,  0.75,  1.0, 2.5};
const std::vector<double> kTokenBounds = {1,      4,       16,      64,       256,      1024,     4096,
                                          16384,  65536,   262144,  1048576,  4194304,  16777216, 67108864};

const std::vector<std::string> kExchangeLabelNames = {"server_address", "server_port", "gen_ai_operation_name",
                                                      "dialect", "gen_ai_request_model"};

constexpr std::size_t kMaxLabelBytes = 96;

double seconds(timestamp_us us) { return static_cast<double>(us) / 1e6; }

// OpenTelemetry's operation names for what each dialect does.
std::string_view operation_of(const Exchange& ex) {
  switch (ex.answer.dialect != Dialect::unknown ? ex.answer.dialect : dialect_of(ex.request.target)) {
    case Dialect::completions: return "text_completion";
    case Dialect::chat:
    case Dialect::responses:
    case Dialect::messages: return "chat";
    case Dialect::unknown: break;
  }
  return path_of(ex.request.target).ends_with("/embeddings") ? "embeddings" : "other";
}

std::string_view dialect_label(const Exchange& ex) {
  const Dialect d = ex.answer.dialect != Dialect::unknown ? ex.answer.dialect : dialect_of(ex.request.target);
  return d == Dialect::unknown ? std::string_view("other") : to_string(d);
}

// A label value as the exposition format wants it: escaped backslash, quote and line feed;
// captured text is cut and anything but printable ASCII shown as '?', so a client cannot
// break the format or make a label of a megabyte.
std::string escape_label(std::string_view value) {
  std::string out;
  for (char c : value.substr(0, kMaxLabelBytes)) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c >= 0x20 && c < 0x7f ? c : '?';
    }
  }
  return out;
}

std::string label_text(const std::vector<std::string>& names, const std::vector<std::string>& values,
                       std::string_view extra = {}) {
  std::string text = "{";
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    text += fmt::format("{}{}=\"{}\"", i == 0 ? "" : ",", names[i], escape_label(values[i]));
  }
  if (!extra.empty()) text += fmt::format("{}{}", names.empty() ? "" : ",", extra);
  return text + "}";
}

std::string number(double v) {
  std::string text = fmt::format("{}", v);
  return text;
}

void put_histogram(std::string& out, std::string_view name, std::string_view help,
                   const std::vector<std::string>& label_names, const std::vector<double>& bounds,
                   const std::map<std::vector<std::string>, Metrics::Histogram>& series) {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  for (const auto& [labels, h] : series) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      cumulative += h.counts[i];
      out += fmt::format("{}_bucket{} {}\n", name, label_text(label_names, labels, fmt::format("le=\"{}\"", number(bounds[i]))),
                         cumulative);
    }
    out += fmt::format("{}_bucket{} {}\n", name, label_text(label_names, labels, "le=\"+Inf\""), h.count);
    out += fmt::format("{}_sum{} {}\n", name, label_text(label_names, labels), number(h.sum));
    out += fmt::format("{}_count{} {}\n", name, label_text(label_names, labels), h.count);
  }
}

void put_counter(std::string& out, std::string_view name, std::string_view help,
                 const std::vector<std::string>& label_names,
                 const std::map<std::vector<std::string>, std::uint64_t>& series) {
  out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", name, help, name);
  for (const auto& [labels, n] : series) out += fmt::format("{}{} {}\n", name, label_text(label_names, labels), n);
}

void put_plain_counter(std::string& out, std::string_view name, std::string_view help, std::uint64_t value,
                       std::string_view labels = {}) {
  out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{}{} {}\n", name, help, name, name,
                     labels.empty() ? std::string() : fmt::format("{{{}}}", labels), value);
}

}  // namespace

Metrics::Metrics(ExchangeSink& next, ServerDownSink& downs, MetricsConfig config)
    : next_(next), downs_(downs), config_(config) {
  duration_.bounds = kDurationBounds;
  ttft_.bounds = kTtftBounds;
  per_token_.bounds = kPerTokenBounds;
  tokens_.bounds = kTokenBounds;
}

std::string Metrics::model_label(std::string_view model) {
  if (model.empty()) return "unknown";
  const std::string cut(model.substr(0, kMaxLabelBytes));
  if (std::find(models_.begin(), models_.end(), cut) != models_.end()) return cut;
  if (models_.size() >= config_.max_models) return "other";
  models_.push_back(cut);
  return cut;
}

std::string Metrics::server_label(const Endpoint& server, std::string& port) {
  const std::string key = server.to_string();
  if (std::find(servers_.begin(), servers_.end(), key) == servers_.end()) {
    if (servers_.size() >= config_.max_servers) {
      port = "other";
      return "other";
    }
    servers_.push_back(key);
  }
  port = std::to_string(server.port);
  return server.address.to_string();
}

Metrics::Labels Metrics::exchange_labels(const Exchange& ex) {
  std::string port;
  std::string address = server_label(ex.server, port);
  std::string_view model = ex.answer.model;
  std::string request_model;
  if (auto it = request_models_.find(ex.id); it != request_models_.end()) request_model = it->second;
  if (!request_model.empty()) model = request_model;
  return {std::move(address), std::move(port), std::string(operation_of(ex)), std::string(dialect_label(ex)),
          model_label(model)};
}

void Metrics::observe(Family& family, const Labels& labels, double value) {
  Histogram& h = family.series[labels];
  if (h.counts.empty()) h.counts.assign(family.bounds.size() + 1, 0);
  const auto bucket = std::lower_bound(family.bounds.begin(), family.bounds.end(), value) - family.bounds.begin();
  ++h.counts[static_cast<std::size_t>(bucket)];
  h.sum += value;
  ++h.count;
}

void Metrics::on_request_complete(Exchange& ex) {
  if (ex.kept()) {
    std::lock_guard lock(mutex_);
    // The request's model, for the exchange's series when it ends (the summary is let go
    // once the request record is written).
    if (ex.request.summary && !ex.request.summary->model.empty()) request_models_[ex.id] = ex.request.summary->model;
    std::string port;
    std::string address = server_label(ex.server, port);
    ++requests_.counts[{address, port, std::string(dialect_label(ex))}];
    for (const RiskEntry* risk : risks_in(ex.request.risks)) ++risky_.counts[{std::string(risk->id)}];
  }
  next_.on_request_complete(ex);
}

void Metrics::on_exchange_end(Exchange& ex) {
  if (ex.kept()) {
    std::lock_guard lock(mutex_);
    const Labels labels = exchange_labels(ex);
    request_models_.erase(ex.id);
    Labels by_state = labels;
    by_state.push_back(std::string(to_string(ex.state)));
    ++exchanges_.counts[by_state];
    const ExchangeTimes& t = ex.times;
    const Answer& a = ex.answer;
    if (t.request_start != 0 && t.response_end >= t.request_start && t.response_end != 0) {
      observe(duration_, labels, seconds(t.response_end - t.request_start));
    }
    const timestamp_us origin = t.request_end != 0 ? t.request_end : t.request_start;
    if (a.first_token_ts != 0 && origin != 0 && a.first_token_ts >= origin) {
      observe(ttft_, labels, seconds(a.first_token_ts - origin));
    }
    if (a.token_events > 1 && a.last_token_ts > a.first_token_ts) {
      observe(per_token_, labels,
              seconds(a.last_token_ts - a.first_token_ts) / static_cast<double>(a.token_events - 1));
    }
    const auto tokens_label = [&](const char* type) {
      Labels l = labels;
      l.push_back(type);
      return l;
    };
    if (a.input_tokens) observe(tokens_, tokens_label("input"), static_cast<double>(*a.input_tokens));
    if (a.output_tokens) observe(tokens_, tokens_label("output"), static_cast<double>(*a.output_tokens));
  }
  next_.on_exchange_end(ex);
}

void Metrics::on_server_down(const ServerDown& down) {
  {
    std::lock_guard lock(mutex_);
    std::string port;
    std::string address = server_label(down.server, port);
    ++deaths_.counts[{address, port, down.kind}];
  }
  downs_.on_server_down(down);
}

void Metrics::set_io(const IoCounters& counters) {
  std::lock_guard lock(mutex_);
  io_ = counters;
}

std::string Metrics::exposition() const {
  std::lock_guard lock(mutex_);
  std::string out;
  put_histogram(out, "gen_ai_server_request_duration_seconds",
                "Time from the first request byte to the last response byte, as the wire showed them.",
                kExchangeLabelNames, duration_.bounds, duration_.series);
  put_histogram(out, "gen_ai_server_time_to_first_token_seconds",
                "Time from the request's last byte to the first event carrying generated text.",
                kExchangeLabelNames, ttft_.bounds, ttft_.series);
  put_histogram(out, "gen_ai_server_time_per_output_token_seconds",
                "Mean time between the events carrying generated text, after the first.", kExchangeLabelNames,
                per_token_.bounds, per_token_.series);
  std::vector<std::string> token_names = kExchangeLabelNames;
  token_names.push_back("gen_ai_token_type");
  put_histogram(out, "gen_ai_client_token_usage", "Tokens of each exchange as its usage reports them, by type.",
                token_names, tokens_.bounds, tokens_.series);
  put_counter(out, "chatcap_requests_total", "Requests complete, with a record (ring or watched).",
              {"server_address", "server_port", "dialect"}, requests_.counts);
  std::vector<std::string> state_names = kExchangeLabelNames;
  state_names.push_back("state");
  put_counter(out, "chatcap_exchanges_total", "Exchanges ended, by the state they ended in.", state_names,
              exchanges_.counts);
  put_counter(out, "chatcap_server_deaths_total", "Server deaths recognised, by kind (process_exit, engine_dead).",
              {"server_address", "server_port", "kind"}, deaths_.counts);
  put_counter(out, "chatcap_risky_requests_total", "Requests carrying a known engine killer, by risk id.", {"risk"},
              risky_.counts);
  out += "# HELP chatcap_capture_drops_total Packets the capture lost, by where.\n"
         "# TYPE chatcap_capture_drops_total counter\n";
  out += fmt::format("chatcap_capture_drops_total{{where=\"kernel\"}} {}\n", io_.kernel_drops);
  out += fmt::format("chatcap_capture_drops_total{{where=\"queue\"}} {}\n", io_.queue_drops);
  put_plain_counter(out, "chatcap_records_lost_total", "Records that could not be written (disk full, I/O errors).",
                    io_.records_lost);
  put_plain_counter(out, "chatcap_log_bytes_total", "Bytes of records written to the log files.", io_.log_bytes);
  return out;
}

bool parse_listen_address(std::string_view text, std::string& address, std::uint16_t& port) {
  std::string_view host = "127.0.0.1";
  std::string_view port_text = text;
  if (const std::size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.empty()) host = "127.0.0.1";
  }
  unsigned value = 0;
  if (port_text.empty() || port_text.size() > 5) return false;
  for (char c : port_text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return false;
  IpAddress ip;
  if (!IpAddress::parse(host, ip)) return false;
  address.assign(host);
  port = static_cast<std::uint16_t>(value);
  return true;
}

}  // namespace chatcap
