// /healthz and /metrics (Prometheus text format). Both read only memory, so
// they run on the I/O threads and answer even while the workers are busy.
#include <sstream>

#include "server/context.hpp"
#include "server/transport.hpp"

namespace withcache::server {
namespace {

Response metrics_page(const Context& ctx) {
  std::ostringstream out;
  const auto sample = [&](const char* type, const char* name, const char* help, std::uint64_t value) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << ' ' << value << '\n';
  };
  const auto counter = [&](const char* name, const char* help, std::uint64_t value) {
    sample("counter", name, help, value);
  };
  const auto gauge = [&](const char* name, const char* help, std::uint64_t value) {
    sample("gauge", name, help, value);
  };
  const auto& m = ctx.metrics;
  counter("withcache_hits_total", "GET requests served from the cache.", m.hits.load());
  counter("withcache_misses_total", "Requests for URLs that were not cached.", m.misses.load());
  counter("withcache_bad_requests_total", "Read-path requests refused with 400.", m.bad_requests.load());
  counter("withcache_bytes_served_total", "Body bytes sent from cached blobs.", m.bytes_served.load());
  counter("withcache_bytes_fetched_total", "Bytes of completed fills.", m.bytes_fetched.load());
  out << "# HELP withcache_fills_total Fills that ended, by outcome.\n# TYPE withcache_fills_total counter\n";
  out << "withcache_fills_total{outcome=\"completed\"} " << m.fills_completed.load() << '\n';
  out << "withcache_fills_total{outcome=\"failed\"} " << m.fills_failed.load() << '\n';
  out << "withcache_fills_total{outcome=\"cancelled\"} " << m.fills_cancelled.load() << '\n';
  counter("withcache_filling_responses_total", "Responses served from a fill still running.",
          m.filling_served.load());
  counter("withcache_filling_bytes_served_total", "Body bytes sent from fills still running.",
          m.filling_bytes_served.load());
  // What clients got from the cache (hits and running fills) beyond what the fills fetched.
  const std::uint64_t served = m.bytes_served.load() + m.filling_bytes_served.load();
  const std::uint64_t fetched = m.bytes_fetched.load();
  counter("withcache_origin_bytes_saved_total",
          "Origin egress avoided: body bytes served from the cache and from running fills, minus bytes fetched.",
          served > fetched ? served - fetched : 0);
  gauge("withcache_filling_streams", "Clients being served a fill that is still running.", ctx.pool->attached());
  out << "# HELP withcache_misses_not_queued_total Misses whose fill was not queued, by why.\n"
         "# TYPE withcache_misses_not_queued_total counter\n";
  out << "withcache_misses_not_queued_total{reason=\"policy\"} " << m.not_queued_policy.load() << '\n';
  out << "withcache_misses_not_queued_total{reason=\"credentials\"} " << m.not_queued_credentials.load()
      << '\n';
  out << "withcache_misses_not_queued_total{reason=\"queue_cap\"} " << m.not_queued_cap.load() << '\n';
  out << "withcache_misses_not_queued_total{reason=\"min_free\"} " << m.not_queued_disk.load() << '\n';
  gauge("withcache_queue_depth", "Fills waiting for a worker.", ctx.pool->queue_depth());
  gauge("withcache_downloads_running", "Fills running now.", ctx.pool->running());
  gauge("withcache_stored_bytes", "Bytes in cached blobs.", ctx.store->stored_bytes());
  gauge("withcache_capacity_bytes", "The --max-bytes cap (0 = unlimited).", ctx.store->max_bytes());
  gauge("withcache_artifacts", "Cached artifacts.", ctx.store->artifact_count());
  gauge("withcache_index_bytes", "Memory of the in-memory artifact index, roughly.", ctx.store->index_memory_bytes());
  counter("withcache_blobs_damaged_total",
          "Cached blobs found missing or of the wrong size when served or scrubbed (each dropped and filled again).",
          ctx.store->damaged_blobs_found());
  const auto failure = ctx.store->write_failure();
  gauge("withcache_writes_failing", "1 while cache.db cannot be written (counters and events wait in memory).",
        failure ? 1 : 0);
  gauge("withcache_disk_full", "1 while the data dir's file system is out of space.", ctx.store->disk_full() ? 1 : 0);
  gauge("withcache_write_queue", "Counters, misses, events and records waiting to be written.",
        failure ? failure->queued : 0);
  if (ctx.scrubber) {
    const auto scrub = ctx.scrubber->status();
    counter("withcache_scrub_mismatches_total", "Blobs the scrub found with other bytes than their SHA-256 (quarantined).",
            scrub.mismatches);
    counter("withcache_scrub_missing_total", "Blobs the scrub found missing or of the wrong size.", scrub.missing);
    counter("withcache_scrub_blobs_total", "Blobs the scrub re-hashed.", scrub.blobs_checked);
    counter("withcache_scrub_bytes_total", "Bytes the scrub re-hashed.", scrub.bytes_checked);
    counter("withcache_scrub_passes_total", "Full scrub passes completed (kept across restarts).", scrub.passes);
    gauge("withcache_scrub_running", "1 while a scrub pass is under way.", scrub.running ? 1 : 0);
    gauge("withcache_scrub_paused", "1 while the scrub waits for fills to end or serving to slow down.",
          scrub.paused ? 1 : 0);
  }
  if (ctx.transport_stats) {
    const TransportStats t = ctx.transport_stats();
    gauge("withcache_connections_open", "Client connections open now.", t.open_connections);
    counter("withcache_connections_refused_total", "Connections closed at once: over the per-address cap.",
            t.refused_connections);
    counter("withcache_connections_timed_out_total",
            "Connections closed by a head, idle, body or send deadline.", t.timed_out);
    counter("withcache_requests_oversized_total", "Requests refused for header or body limits.", t.oversized);
    counter("withcache_accept_errors_total", "Connections that could not be accepted (out of descriptors?).",
            t.accept_errors);
    gauge("withcache_open_files", "File descriptors the server holds now.", t.open_files);
    gauge("withcache_open_files_limit", "The server's open-files limit (RLIMIT_NOFILE).", t.open_files_limit);
  }
  Response res = plain(200, out.str());
  res.set("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
  return res;
}

} // namespace

void add_health_and_metrics(Router& router, Context& ctx) {
  router.add("GET", "/healthz", Runs::io, [](const Request&) { return plain(200, "ok\n"); });
  router.add("GET", "/metrics", Runs::io, [&ctx](const Request&) { return metrics_page(ctx); });
}

} // namespace withcache::server
