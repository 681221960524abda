// crash_filler DATA_DIR URL...: fills, deletes, re-fills and replaces
// (revalidates) the URLs through a FillPool forever, so that test_crash can
// kill -9 it at any moment.
#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "withcache/fills.hpp"
#include "withcache/store.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: crash_filler DATA_DIR URL...\n";
    return 2;
  }
  using namespace withcache;
  store::BlobStore store({argv[1], 0, std::chrono::milliseconds(5)});
  fills::PoolOptions options;
  options.workers = 3;
  options.fetch.policy = origin::OriginPolicy({}, origin::parse_allow_private("127.0.0.1").value());
  options.fetch.getenv = [](const char*) -> const char* {
    return nullptr;
  };
  fills::FillPool pool(store, options);
  const std::vector<std::string> urls(argv + 2, argv + argc);
  for (std::uint64_t round = 0;; ++round) {
    std::vector<std::int64_t> ids;
    for (const auto& url : urls) {
      const auto key = *url::key_id(url);
      store.record_miss(key, url);
      store.record_hit(key);
      if (round % 2 == 1) {
        (void)store.remove(key);
      }
      if (auto job = pool.enqueue(url)) {
        ids.push_back(job->job.id);
      }
    }
    for (const auto id : ids) {
      pool.wait(id, std::chrono::seconds(30));
    }
    // Replace every artifact in place: its blob is renamed over while others are filled.
    ids.clear();
    if (round % 2 == 0) {
      for (const auto& url : urls) {
        if (const auto artifact = store.find(*url::key_id(url))) {
          if (auto job = pool.revalidate(*artifact)) {
            ids.push_back(job->job.id);
          }
        }
      }
    }
    for (const auto id : ids) {
      pool.wait(id, std::chrono::seconds(30));
    }
    pool.clear_finished();
  }
}
