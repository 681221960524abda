// Files planted in the data dir (issue 19): a FIFO, a symbolic link and a hard link to a file outside
// the data dir, and a directory, put in blobs/ under the names of real artifacts and in quarantine/
// under the names the store would move damaged blobs to. GET, HEAD, the scrub and --verify never block
// on them and never read the outside file (its SHA-256 appears nowhere), /healthz answers throughout,
// and SIGTERM stops the server in time. A part file planted in tmp/ is never written or created through.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "support/origin.hpp"
#include "support/process.hpp"
#include "support/server_process.hpp"
#include "support/temp_dir.hpp"
#include "withcache/digest.hpp"
#include "withcache/url.hpp"

namespace fs = std::filesystem;
using namespace withcache;
using namespace std::chrono_literals;
using test::curl;
using test::eventually;
using test::Origin;
using test::Route;
using test::ServerProcess;

namespace {

constexpr std::size_t k_size = 100'000;

enum class Planted { fifo, symlink, hard_link, directory };
constexpr Planted k_kinds[] = {Planted::fifo, Planted::symlink, Planted::hard_link, Planted::directory};

const char* name_of(Planted kind) {
  switch (kind) {
  case Planted::fifo:
    return "fifo";
  case Planted::symlink:
    return "symlink";
  case Planted::hard_link:
    return "hard-link";
  case Planted::directory:
    return "directory";
  }
  return "";
}

// Replaces whatever is at `at` with a planted `kind` (links point at `outside`).
void plant(Planted kind, const fs::path& at, const fs::path& outside) {
  std::error_code ec;
  fs::remove_all(at, ec);
  switch (kind) {
  case Planted::fifo:
    REQUIRE(::mkfifo(at.c_str(), 0644) == 0);
    break;
  case Planted::symlink:
    fs::create_symlink(outside, at);
    break;
  case Planted::hard_link:
    fs::create_hard_link(outside, at);
    break;
  case Planted::directory:
    fs::create_directory(at);
    std::ofstream(at / "inside") << "a directory that is not empty";
    break;
  }
}

// The planted thing is still there, as planted (nothing replaced it or read through it).
bool still_planted(Planted kind, const fs::path& at, const fs::path& outside) {
  std::error_code ec;
  const auto status = fs::symlink_status(at, ec);
  if (ec) {
    return false;
  }
  switch (kind) {
  case Planted::fifo:
    return status.type() == fs::file_type::fifo;
  case Planted::symlink:
    return status.type() == fs::file_type::symlink && fs::read_symlink(at, ec) == outside;
  case Planted::hard_link:
    return status.type() == fs::file_type::regular && fs::equivalent(at, outside, ec);
  case Planted::directory:
    return status.type() == fs::file_type::directory && fs::exists(at / "inside", ec);
  }
  return false;
}

bool healthy(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2s);
  client.set_read_timeout(2s);
  const auto res = client.Get("/healthz");
  return res && res->status == 200;
}

nlohmann::json get_json(int port, const std::string& target) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(10s);
  const auto res = client.Get(target.c_str());
  REQUIRE(res);
  REQUIRE(res->status == 200);
  return nlohmann::json::parse(res->body);
}

// Runs `requests` concurrently while another thread asks /healthz over and over; every probe must answer.
template <class Requests> void while_probing_health(int port, Requests requests) {
  std::atomic<bool> done{false};
  std::atomic<int> probes{0};
  std::atomic<int> failed{0};
  std::thread prober([&] {
    while (!done) {
      ++probes;
      if (!healthy(port)) {
        ++failed;
      }
      std::this_thread::sleep_for(10ms); // paces the probes; it synchronises nothing
    }
  });
  requests();
  done = true;
  prober.join();
  CHECK(probes > 0);
  CHECK(failed == 0);
}

struct Artifact {
  Planted kind;
  std::string path;
  std::string body;
  std::string url;
  std::string key;
};

} // namespace

TEST_CASE("files planted in blobs/ and quarantine/ never block the server and are never read",
          "[integrity][planted]") {
  Origin origin;
  std::vector<Artifact> artifacts;
  std::uint32_t seed = 40;
  for (const Planted kind : k_kinds) {
    Artifact a{kind, std::string("/") + name_of(kind) + ".bin", test::make_bytes(k_size, ++seed), {}, {}};
    a.url = origin.url(a.path);
    a.key = *url::key_id(a.url);
    origin.add(a.path, Route(a.body));
    artifacts.push_back(std::move(a));
  }
  // Two I/O threads, so two blocked opens would leave none for /healthz; no background scrub.
  ServerProcess server({"--io-threads", "2", "--scrub-rate", "0"});
  const fs::path data = server.dir() / "data";
  // Outside the data dir, on the same file system (a hard link needs that), of the artifacts' size, so a
  // size check alone would take it for the blob.
  const fs::path outside = server.dir() / "outside-secret.bin";
  const std::string secret = test::make_bytes(k_size, 999);
  std::ofstream(outside, std::ios::binary) << secret;
  const std::string secret_sha = digest::sha256_hex(secret);

  const auto head = [&](const Artifact& a) {
    return curl(server.blob(a.url), {"-I", "--max-time", "10"});
  };
  const auto filled = [&](const Artifact& a) {
    const auto r = head(a);
    return r.status == 200 && r.headers.count("x-withcache-sha256") == 1 &&
           r.headers.at("x-withcache-sha256") == digest::sha256_hex(a.body);
  };
  const auto all_filled = [&] {
    for (const auto& a : artifacts) {
      INFO(name_of(a.kind));
      REQUIRE(eventually([&] { return filled(a); }, 30s));
    }
  };
  const auto plant_blobs = [&] {
    for (const auto& a : artifacts) {
      plant(a.kind, data / "blobs" / a.key, outside);
    }
  };
  for (const auto& a : artifacts) {
    head(a); // a miss queues the fill
  }
  all_filled();

  // In quarantine/: every name the store could move these blobs to in the next two minutes (`<key>.<unix
  // time>.<why>`), taken by something planted. None may be replaced, followed or read.
  std::vector<std::pair<Planted, fs::path>> in_quarantine;
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  for (const auto& a : artifacts) {
    for (auto t = now - 2; t < now + 120; ++t) {
      for (const char* why : {"damaged", "mismatch"}) {
        const Planted kind = k_kinds[static_cast<std::size_t>(t) % std::size(k_kinds)];
        const fs::path at = data / "quarantine" / (a.key + "." + std::to_string(t) + "." + why);
        plant(kind, at, outside);
        in_quarantine.emplace_back(kind, at);
      }
    }
  }

  SECTION(
      "GET: concurrent reads of a FIFO blob leave the I/O threads free; none is served the outside file") {
    plant_blobs();
    std::vector<test::Response> got(artifacts.size() + 3);
    while_probing_health(server.port(), [&] {
      std::vector<std::thread> readers;
      for (std::size_t i = 0; i < got.size(); ++i) {
        // The FIFO's artifact four times, each other one once.
        const Artifact& a = artifacts[i < artifacts.size() ? i : 0];
        readers.emplace_back([&, i, target = server.blob(a.url)] {
          got[i] = curl(target, {"--max-time", "10"});
        });
      }
      for (auto& reader : readers) {
        reader.join();
      }
    });
    for (std::size_t i = 0; i < got.size(); ++i) {
      const Artifact& a = artifacts[i < artifacts.size() ? i : 0];
      INFO(name_of(a.kind) << " → curl " << got[i].exit_code << ", HTTP " << got[i].status);
      CHECK(got[i].exit_code == 0); // answered, not timed out
      CHECK(got[i].body != secret);
      // Dropped and a miss, or (a later reader) already filled again with the right bytes.
      CHECK((got[i].status == 404 || (got[i].status == 200 && got[i].body == a.body)));
    }
    all_filled();
  }

  SECTION("HEAD: a planted blob is a miss, never a hit, and is filled again") {
    plant_blobs();
    while_probing_health(server.port(), [&] {
      for (const auto& a : artifacts) {
        INFO(name_of(a.kind));
        const auto r = head(a);
        CHECK(r.exit_code == 0);
        CHECK(r.status == 404);
      }
    });
    all_filled();
  }

  SECTION("the scrub drops what was planted without reading it; SIGTERM during a pass stops the server") {
    const auto passes = get_json(server.port(), "/api/v1/scrub")["passes"].get<int>();
    plant_blobs();
    while_probing_health(server.port(), [&] {
      httplib::Client client("127.0.0.1", server.port());
      const auto started = client.Post("/api/v1/scrub", "", "application/json");
      REQUIRE(started);
      REQUIRE(started->status == 202);
      REQUIRE(eventually(
          [&] { return get_json(server.port(), "/api/v1/scrub")["passes"].get<int>() > passes; }, 30s));
    });
    all_filled();
    const auto events = get_json(server.port(), "/api/v1/events?limit=1000");
    const std::string text = events.dump();
    CHECK(text.find("scrub_mismatch") == std::string::npos); // nothing was hashed
    for (const auto& a : artifacts) {
      INFO(name_of(a.kind));
      CHECK(text.find(a.key + ": blob is ") != std::string::npos); // dropped, with the reason
    }
    CHECK(text.find("a hard link") != std::string::npos);
    CHECK(text.find("a symbolic link") != std::string::npos);
    CHECK(text.find("(a FIFO)") != std::string::npos);
    CHECK(text.find("(a directory)") != std::string::npos);

    // Planted again, and a pass started: SIGTERM still stops the server at once.
    plant_blobs();
    httplib::Client client("127.0.0.1", server.port());
    const auto started = client.Post("/api/v1/scrub", "", "application/json");
    REQUIRE(started);
    const auto asked = std::chrono::steady_clock::now();
    const int status = server.stop(SIGTERM);
    CHECK(std::chrono::steady_clock::now() - asked < 10s);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    server.start();
  }

  SECTION("a part file planted in tmp/ is never written, read or created through") {
    // Three URLs not cached yet, whose fills find something planted as their part file.
    const fs::path nowhere = server.dir() / "created-through-a-link.bin"; // a dangling link's target
    struct Late {
      std::string path;
      std::string body;
      std::string url;
      std::string key;
      Planted kind;
    };
    std::vector<Late> late;
    for (const Planted kind : {Planted::hard_link, Planted::fifo, Planted::symlink}) {
      Late l{std::string("/late-") + name_of(kind) + ".bin", test::make_bytes(k_size, ++seed), {}, {}, kind};
      l.url = origin.url(l.path);
      l.key = *url::key_id(l.url);
      origin.add(l.path, Route(l.body));
      const fs::path part = data / "tmp" / (l.key + ".part");
      plant(kind, part, kind == Planted::symlink ? nowhere : outside);
      late.push_back(std::move(l));
    }
    while_probing_health(server.port(), [&] {
      for (const auto& l : late) {
        INFO(name_of(l.kind));
        const auto r = curl(server.blob(l.url), {"--max-time", "10"});
        CHECK(r.exit_code == 0);
        CHECK(r.status == 404); // a miss: its fill is queued and finds the planted part
      }
    });
    // Each fill fails on its part (a local cause: no back-off) and removes the planted name; the next
    // miss fills it from its origin.
    for (const auto& l : late) {
      INFO(name_of(l.kind));
      REQUIRE(eventually(
          [&] {
            const auto r = curl(server.blob(l.url), {"-I", "--max-time", "10"});
            return r.status == 200 && r.headers.count("x-withcache-sha256") == 1 &&
                   r.headers.at("x-withcache-sha256") == digest::sha256_hex(l.body);
          },
          30s));
      CHECK(curl(server.blob(l.url), {"--max-time", "10"}).body == l.body);
    }
    const std::string events = get_json(server.port(), "/api/v1/events?limit=1000").dump();
    CHECK(events.find("a hard link") != std::string::npos);
    CHECK(events.find("(a FIFO)") != std::string::npos);
    CHECK(events.find("a symbolic link") != std::string::npos);
    CHECK_FALSE(fs::exists(nowhere));
  }

  SECTION("withcache-server --verify reports what was planted without blocking or reading it") {
    server.stop();
    plant_blobs();
    const auto verified = test::run({WITHCACHE_SERVER, "--verify", "--data-dir", data.string()}, {}, 30s);
    INFO(verified.out << verified.err);
    CHECK(verified.exit_code == 1); // finished (not killed at the deadline), and found damage
    CHECK(verified.out.find("4 damaged") != std::string::npos);
    for (const auto& a : artifacts) {
      INFO(name_of(a.kind));
      CHECK(verified.out.find("damaged " + a.key) != std::string::npos);
    }
    CHECK(verified.out.find("a symbolic link") != std::string::npos);
    CHECK(verified.out.find("a hard link") != std::string::npos);
    CHECK(verified.out.find("(a FIFO)") != std::string::npos);
    CHECK(verified.out.find("(a directory)") != std::string::npos);
    CHECK(verified.out.find(secret_sha) == std::string::npos);
    // --verify changes nothing: what was planted is still there.
    for (const auto& a : artifacts) {
      INFO(name_of(a.kind));
      CHECK(still_planted(a.kind, data / "blobs" / a.key, outside));
    }
    // The server starts on it, and drops them as it serves them.
    server.start();
    for (const auto& a : artifacts) {
      head(a);
    }
    all_filled();
  }

  // Whatever the section did: nothing planted in quarantine/ was replaced or followed, the outside file is
  // intact, and its SHA-256 is in no event and no log line.
  for (const auto& [kind, at] : in_quarantine) {
    INFO(at.filename().string());
    CHECK(still_planted(kind, at, outside));
  }
  std::ifstream in(outside, std::ios::binary);
  CHECK(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()) == secret);
  CHECK(get_json(server.port(), "/api/v1/events?limit=1000").dump().find(secret_sha) == std::string::npos);
  CHECK(server.log().find(secret_sha) == std::string::npos);
  CHECK(healthy(server.port()));
}
