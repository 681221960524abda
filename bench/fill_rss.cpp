// withcache-bench-fill URL DATA_DIR: fills URL through a FillPool into a
// store at DATA_DIR and prints one JSON line with the bytes, the seconds and
// this process's peak RSS. bench/fill_rss.py runs it beside curl.
#include <chrono>
#include <cstdio>
#include <iostream>

#include <fstream>
#include <string>

#include "withcache/fills.hpp"
#include "withcache/store.hpp"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: withcache-bench-fill URL DATA_DIR\n";
    return 2;
  }
  using namespace withcache;
  store::BlobStore store({argv[2]});
  fills::PoolOptions options;
  options.workers = 1;
  options.fetch.policy = origin::OriginPolicy({}, origin::parse_allow_private("127.0.0.1").value());
  fills::FillPool pool(store, options);
  const auto start = std::chrono::steady_clock::now();
  const auto enqueued = pool.enqueue(argv[1]);
  if (!enqueued) {
    std::cerr << "withcache-bench-fill: " << enqueued.error().message << '\n';
    return 1;
  }
  const auto job = pool.wait(enqueued->job.id, std::chrono::minutes(30));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!job || job->status != JobStatus::completed) {
    std::cerr << "withcache-bench-fill: fill did not complete: " << (job ? job->error : "timeout") << '\n';
    return 1;
  }
  // VmHWM, not getrusage(): Linux carries the parent's peak across fork+exec.
  long peak_kib = 0;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmHWM:")) {
      peak_kib = std::stol(line.substr(6));
    }
  }
  std::printf("{\"bytes\": %llu, \"seconds\": %.3f, \"max_rss_kib\": %ld}\n",
              static_cast<unsigned long long>(job->bytes_done), seconds, peak_kib);
  return 0;
}
