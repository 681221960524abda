#pragma once

/**
 * @file
 * withcache::json (internal) — the JSON API's wire format over nlohmann-json:
 * a strict parser for request bodies, and `to_json`/`from_json` for the
 * records of withcache/records.hpp, used by the server to write and by
 * withcache::client::Api to read, so both sides agree on one shape.
 *
 * Times are RFC 3339 strings, `null` when not yet known. Thread-safe (no
 * shared state). No nlohmann exception leaves parse(); from_json never throws
 * for a missing or mistyped field (it keeps the default).
 */

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "withcache/expected.hpp"
#include "withcache/records.hpp"

namespace withcache::json {

using Json = nlohmann::json;

/** Deepest nesting parse() accepts. */
inline constexpr int k_max_depth = 64;

/**
 * Parses one JSON text, more strictly than nlohmann's defaults: duplicate
 * object keys and nesting deeper than k_max_depth are refused, as are (by
 * nlohmann) comments, trailing commas, NaN and invalid UTF-8.
 * @return the value, or a one-line message with the byte offset that never
 *         repeats the input.
 */
Expected<Json, std::string> parse(std::string_view text);

/** Compact JSON text; invalid UTF-8 in a string is replaced (U+FFFD), never thrown. */
std::string dump(const Json& value);

/** A time as JSON: its RFC 3339 text, or null when ≤ 0. */
Json time_value(UnixTime time);

} // namespace withcache::json

namespace withcache {

// ADL finds these next to the record types; they live in src/json/json.cpp.
void to_json(nlohmann::json& out, const Artifact& artifact);
void from_json(const nlohmann::json& in, Artifact& artifact);
void to_json(nlohmann::json& out, const Miss& miss);
void from_json(const nlohmann::json& in, Miss& miss);
void to_json(nlohmann::json& out, const Event& event);
void from_json(const nlohmann::json& in, Event& event);
void to_json(nlohmann::json& out, const Job& job);
void from_json(const nlohmann::json& in, Job& job);
void to_json(nlohmann::json& out, const Stats& stats);
void from_json(const nlohmann::json& in, Stats& stats);

} // namespace withcache
