// HTTP GET over libcurl, as `gemma pull` needs it: redirects followed (the hub sends large files to a CDN),
// a bearer token that curl sends to the first host only, a byte range to resume from, the body streamed.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace ge::hub {

struct HttpRequest {
  std::string url;
  std::string token;        // sent as "Authorization: Bearer TOKEN" when not empty
  uint64_t range_from = 0;  // > 0: "Range: bytes=N-"
  // The body of a 2xx final response, chunk by chunk, with that response's status (206 for a range);
  // other responses' bodies are kept in HttpResponse::error_body instead.
  std::function<void(long status, std::string_view chunk)> on_body;
};

struct HttpResponse {
  long status = 0;         // of the final response, after redirects
  std::string error_body;  // the start of a non-2xx body (the hub explains errors there)
};

// Throws std::runtime_error naming the URL when the transfer fails (no connection, a cut-off body); an HTTP
// error status is no exception, the caller explains it.
HttpResponse http_get(const HttpRequest& request);

// RFC 3986 percent-encoding of everything but unreserved characters (and '/' when keep_slash).
std::string url_escape(std::string_view text, bool keep_slash);

}  // namespace ge::hub
