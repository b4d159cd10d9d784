#include "chatcap/metrics_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <fmt/format.h>
#include <microhttpd.h>

namespace chatcap {
namespace {

MHD_Result reply(MHD_Connection* connection, unsigned status, std::string body, const char* type) {
  MHD_Response* response =
      MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  const MHD_Result result = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return result;
}

MHD_Result answer(void* context, MHD_Connection* connection, const char* url, const char* method, const char*,
                  const char*, size_t*, void**) {
  const auto& metrics = *static_cast<const Metrics*>(context);
  if (std::string_view(url) != "/metrics") return reply(connection, MHD_HTTP_NOT_FOUND, "only /metrics here\n", "text/plain");
  if (std::string_view(method) != "GET" && std::string_view(method) != "HEAD") {
    return reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "GET /metrics\n", "text/plain");
  }
  return reply(connection, MHD_HTTP_OK, metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace

MetricsServer::MetricsServer(const Metrics& metrics, const std::string& address, std::uint16_t port)
    : metrics_(metrics), port_(port) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (address.find(':') != std::string::npos) {
    auto* six = reinterpret_cast<sockaddr_in6*>(&storage);
    six->sin6_family = AF_INET6;
    six->sin6_port = htons(port);
    inet_pton(AF_INET6, address.c_str(), &six->sin6_addr);
    length = sizeof *six;
    flags |= MHD_USE_IPv6;
  } else {
    auto* four = reinterpret_cast<sockaddr_in*>(&storage);
    four->sin_family = AF_INET;
    four->sin_port = htons(port);
    inet_pton(AF_INET, address.c_str(), &four->sin_addr);
    length = sizeof *four;
  }
  (void)length;
  daemon_ = MHD_start_daemon(flags, port, nullptr, nullptr, &answer, const_cast<Metrics*>(&metrics_),
                             MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&storage),
                             MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (daemon_ == nullptr) {
    throw LogError(fmt::format("cannot serve metrics on {}:{}: {} — pick a free port (--metrics ADDR:PORT) or stop "
                               "what listens there",
                               address, port, errno != 0 ? std::strerror(errno) : "libmicrohttpd refused"));
  }
  if (const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT); info != nullptr) {
    port_ = info->port;
  }
}

MetricsServer::~MetricsServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace chatcap
