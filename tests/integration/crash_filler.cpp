// crash_filler [--damage] DATA_DIR URL...: fills, deletes, re-fills and replaces
// (revalidates) the URLs through a FillPool forever, so that test_crash can
// kill -9 it at any moment. With --damage it also damages blobs behind the
// store's back (a flipped byte, a truncation, a deletion), serves them (which
// drops the short and missing ones) and runs scrub passes that quarantine
// and re-fill what they find.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "withcache/fills.hpp"
#include "withcache/scrub.hpp"
#include "withcache/store.hpp"

namespace {

void damage(const std::filesystem::path& blob, std::uint64_t how) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(blob, ec);
  if (ec || size == 0) {
    return;
  }
  if (how == 0) {
    std::fstream file(blob, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(size / 2));
    file.put('\xA5');
  } else if (how == 1) {
    std::filesystem::resize_file(blob, size / 2, ec);
  } else if (how == 2) {
    std::filesystem::remove(blob, ec);
  }
}

} // namespace

int main(int argc, char** argv) {
  int first = 1;
  const bool damaging = argc > 1 && std::string(argv[1]) == "--damage";
  if (damaging) {
    ++first;
  }
  if (argc < first + 2) {
    std::cerr << "usage: crash_filler [--damage] DATA_DIR URL...\n";
    return 2;
  }
  using namespace withcache;
  store::BlobStore store({argv[first], 0, std::chrono::milliseconds(5)});
  fills::PoolOptions options;
  options.workers = 3;
  options.fetch.policy = origin::OriginPolicy({}, origin::parse_allow_private("127.0.0.1").value());
  options.fetch.getenv = [](const char*) -> const char* {
    return nullptr;
  };
  fills::FillPool pool(store, options);
  std::unique_ptr<store::Scrubber> scrubber;
  if (damaging) {
    store::ScrubOptions scrub;
    scrub.rate = 1ULL << 40;
    scrub.on_damaged = [&pool](const Artifact& artifact, const std::string&) {
      (void)pool.enqueue(artifact.raw_url, {}, /*by_operator=*/true);
    };
    scrubber = std::make_unique<store::Scrubber>(store, scrub);
  }
  const std::vector<std::string> urls(argv + first + 1, argv + argc);
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
    if (scrubber) {
      for (std::size_t i = 0; i < urls.size(); ++i) {
        const auto key = *url::key_id(urls[i]);
        damage(store.blob_path(key), (round + i) % 4);
        if (i % 2 == 1) {
          (void)store.open_blob(key); // a serve: drops what is short or missing
        }
      }
      scrubber->start_pass();
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
