#include "hub/http.h"

#include <curl/curl.h>

#include <cctype>
#include <exception>
#include <memory>
#include <stdexcept>

namespace ge::hub {

namespace {

constexpr size_t kMaxErrorBody = 4096;

struct Transfer {
  const HttpRequest* request;
  HttpResponse* response;
  CURL* curl;
  std::exception_ptr failure;  // from on_body: exceptions must not unwind through libcurl's C frames
};

size_t on_data(char* data, size_t size, size_t count, void* user) {
  auto& t = *static_cast<Transfer*>(user);
  long status = 0;
  curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &status);
  const std::string_view chunk(data, size * count);
  if (status >= 200 && status < 300) {
    try {
      if (t.request->on_body) t.request->on_body(status, chunk);
    } catch (...) {
      t.failure = std::current_exception();
      return 0;  // aborts the transfer
    }
  } else if (t.response->error_body.size() < kMaxErrorBody) {
    t.response->error_body += chunk.substr(0, kMaxErrorBody - t.response->error_body.size());
  }
  return chunk.size();
}

void global_init() {
  static const bool done = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }();
  if (!done) throw std::runtime_error("libcurl: initialization failed");
}

}  // namespace

HttpResponse http_get(const HttpRequest& request) {
  global_init();
  const std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) throw std::runtime_error("libcurl: cannot start a transfer");
  HttpResponse response;
  Transfer t{&request, &response, curl.get(), nullptr};
  curl_slist* headers = nullptr;
  if (!request.token.empty())
    headers = curl_slist_append(headers, ("Authorization: Bearer " + request.token).c_str());
  const std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(headers, curl_slist_free_all);
  const std::string range = std::to_string(request.range_from) + "-";
  char error[CURL_ERROR_SIZE] = {};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "gemma-engine");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  // A stalled connection (under 1 byte/s for a minute) fails instead of hanging; a rerun resumes.
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (request.range_from > 0) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
  const CURLcode rc = curl_easy_perform(c);
  if (t.failure) std::rethrow_exception(t.failure);
  if (rc != CURLE_OK)
    throw std::runtime_error(request.url + ": " + (error[0] ? error : curl_easy_strerror(rc)));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

std::string url_escape(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace ge::hub
