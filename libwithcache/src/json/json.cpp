#include "json/json.hpp"

#include <set>
#include <type_traits>
#include <vector>

#include "withcache/util/time.hpp"

namespace withcache::json {

Expected<Json, std::string> parse(std::string_view text) {
  // nlohmann's lexer takes a NUL byte for the end of input and would ignore what follows it.
  if (const std::size_t nul = text.find('\0'); nul != std::string_view::npos) {
    return unexpected("invalid JSON at byte " + std::to_string(nul));
  }
  std::string problem;
  std::vector<std::set<std::string, std::less<>>> keys; // one set per open object
  const Json::parser_callback_t check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
    case Json::parse_event_t::object_start:
    case Json::parse_event_t::array_start:
      if (depth >= k_max_depth && problem.empty()) {
        problem = "JSON nested deeper than " + std::to_string(k_max_depth) + " levels";
      }
      if (event == Json::parse_event_t::object_start) {
        keys.emplace_back();
      }
      break;
    case Json::parse_event_t::object_end:
      if (!keys.empty()) {
        keys.pop_back();
      }
      break;
    case Json::parse_event_t::key:
      if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get<std::string>()).second &&
          problem.empty()) {
        problem = "JSON object repeats a key";
      }
      break;
    default:
      break;
    }
    return true;
  };
  try {
    Json value = Json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true,
                             /*ignore_comments=*/false);
    if (!problem.empty()) {
      return unexpected(std::move(problem));
    }
    return value;
  } catch (const Json::parse_error& e) {
    return unexpected("invalid JSON at byte " + std::to_string(e.byte));
  } catch (const Json::out_of_range&) {
    return unexpected(std::string("invalid JSON: a number is out of range"));
  } catch (const std::exception&) {
    return unexpected(std::string("invalid JSON"));
  }
}

std::string dump(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json time_value(UnixTime time) {
  return time > 0 ? Json(util::format_rfc3339(time)) : Json(nullptr);
}

} // namespace withcache::json

namespace withcache {
namespace {

using json::Json;
using json::time_value;

// Reading never throws: a missing or mistyped field keeps its default.
template <class T> void read(const Json& in, const char* name, T& out) {
  const auto it = in.find(name);
  if (it == in.end()) {
    return;
  }
  if constexpr (std::is_same_v<T, std::string>) {
    if (it->is_string()) {
      out = it->get<std::string>();
    }
  } else if constexpr (std::is_same_v<T, double>) {
    if (it->is_number()) {
      out = it->get<double>();
    }
  } else if constexpr (std::is_unsigned_v<T>) {
    if (it->is_number_unsigned()) {
      out = it->get<T>();
    }
  } else {
    if (it->is_number_integer()) {
      out = it->get<T>();
    }
  }
}

void read_time(const Json& in, const char* name, UnixTime& out) {
  const auto it = in.find(name);
  if (it != in.end() && it->is_string()) {
    out = util::parse_rfc3339(it->get<std::string>()).value_or(0);
  }
}

} // namespace

void to_json(Json& out, const Artifact& a) {
  out = Json{{"key", a.key},         {"url", a.url},   {"size", a.size},
             {"sha256", a.sha256},   {"content_type", a.content_type},
             {"fetched_at", time_value(a.fetched_at)}, {"hits", a.hits}, {"misses", a.misses}};
}

void from_json(const Json& in, Artifact& a) {
  if (!in.is_object()) {
    return;
  }
  read(in, "key", a.key);
  read(in, "url", a.url);
  read(in, "size", a.size);
  read(in, "sha256", a.sha256);
  read(in, "content_type", a.content_type);
  read_time(in, "fetched_at", a.fetched_at);
  read(in, "hits", a.hits);
  read(in, "misses", a.misses);
}

void to_json(Json& out, const Miss& m) {
  out = Json{{"key", m.key},
             {"url", m.url},
             {"count", m.count},
             {"first_seen", time_value(m.first_seen)},
             {"last_seen", time_value(m.last_seen)},
             {"last_reason", m.last_reason},
             {"failures", m.failures},
             {"retry_after", time_value(m.retry_after)}};
}

void from_json(const Json& in, Miss& m) {
  if (!in.is_object()) {
    return;
  }
  read(in, "key", m.key);
  read(in, "url", m.url);
  read(in, "count", m.count);
  read_time(in, "first_seen", m.first_seen);
  read_time(in, "last_seen", m.last_seen);
  read(in, "last_reason", m.last_reason);
  read(in, "failures", m.failures);
  read_time(in, "retry_after", m.retry_after);
}

void to_json(Json& out, const Event& e) {
  out = Json{{"id", e.id},       {"time", time_value(e.time)}, {"kind", e.kind},
             {"actor", e.actor}, {"address", e.address},       {"details", e.details}};
}

void from_json(const Json& in, Event& e) {
  if (!in.is_object()) {
    return;
  }
  read(in, "id", e.id);
  read_time(in, "time", e.time);
  read(in, "kind", e.kind);
  read(in, "actor", e.actor);
  read(in, "address", e.address);
  read(in, "details", e.details);
}

void to_json(Json& out, const Job& j) {
  out = Json{{"id", j.id},
             {"url", j.url},
             {"status", to_string(j.status)},
             {"bytes_done", j.bytes_done},
             {"bytes_total", j.bytes_total},
             {"rate", j.rate},
             {"error", j.error},
             {"started_at", time_value(j.started_at)},
             {"finished_at", time_value(j.finished_at)},
             {"attached", j.attached}};
}

void from_json(const Json& in, Job& j) {
  if (!in.is_object()) {
    return;
  }
  read(in, "id", j.id);
  read(in, "url", j.url);
  std::string status;
  read(in, "status", status);
  j.status = job_status_from(status);
  read(in, "bytes_done", j.bytes_done);
  read(in, "bytes_total", j.bytes_total);
  read(in, "rate", j.rate);
  read(in, "error", j.error);
  read_time(in, "started_at", j.started_at);
  read_time(in, "finished_at", j.finished_at);
  read(in, "attached", j.attached);
}

void to_json(Json& out, const Stats& s) {
  out = Json{{"artifacts", s.artifacts},       {"stored_bytes", s.stored_bytes},
             {"capacity", s.capacity},         {"hits", s.hits},
             {"misses", s.misses},             {"bytes_served", s.bytes_served},
             {"bytes_fetched", s.bytes_fetched}, {"queue_depth", s.queue_depth}};
}

void from_json(const Json& in, Stats& s) {
  if (!in.is_object()) {
    return;
  }
  read(in, "artifacts", s.artifacts);
  read(in, "stored_bytes", s.stored_bytes);
  read(in, "capacity", s.capacity);
  read(in, "hits", s.hits);
  read(in, "misses", s.misses);
  read(in, "bytes_served", s.bytes_served);
  read(in, "bytes_fetched", s.bytes_fetched);
  read(in, "queue_depth", s.queue_depth);
}

} // namespace withcache
