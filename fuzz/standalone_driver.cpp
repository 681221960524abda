// Replays fuzz inputs without libFuzzer, after libgit2's fuzzers/standalone_driver.c: each file named
// on the command line, and each file under a directory named there, goes once through
// LLVMFuzzerTestOneInput. Any compiler builds it, so every target's checked-in corpus runs as a ctest
// (under ASan/UBSan in a sanitize build); a violated invariant aborts the process and fails the test.
//
//   fuzz_<name>_replay <corpus dir or input file>...
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "fuzz_target.hpp"

// Weak: a target need not define it (libFuzzer declares it weak, too).
#pragma weak LLVMFuzzerInitialize

namespace {

namespace fs = std::filesystem;

// The regular files `arg` names, in a stable order; nothing when it names neither a file nor a directory.
std::optional<std::vector<fs::path>> inputs_named(const fs::path& arg) {
  std::error_code error;
  if (fs::is_regular_file(arg, error)) {
    return std::vector<fs::path>{arg};
  }
  if (!fs::is_directory(arg, error)) {
    return std::nullopt;
  }
  std::vector<fs::path> files;
  for (fs::recursive_directory_iterator it(arg, error), end; !error && it != end; it.increment(error)) {
    if (it->is_regular_file(error)) {
      files.push_back(it->path());
    }
  }
  if (error) {
    return std::nullopt;
  }
  std::sort(files.begin(), files.end());
  return files;
}

// One input, in a heap buffer of exactly its size (never null, as with libFuzzer), so ASan reports a
// read past its end.
struct Input {
  std::unique_ptr<std::uint8_t[]> data;
  std::size_t size = 0;
};

std::optional<Input> read_input(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Input input{std::make_unique<std::uint8_t[]>(bytes.size()), bytes.size()};
  std::memcpy(input.data.get(), bytes.data(), bytes.size());
  return input;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "Usage: %s <corpus directory or input file>...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize != nullptr) {
    LLVMFuzzerInitialize(&argc, &argv);
  }
  std::size_t replayed = 0;
  for (int i = 1; i < argc; ++i) {
    const auto inputs = inputs_named(argv[i]);
    if (!inputs) {
      std::fprintf(stderr, "%s: cannot read %s (not a file or directory)\n", argv[0], argv[i]);
      return 1;
    }
    for (const fs::path& path : *inputs) {
      const auto input = read_input(path);
      if (!input) {
        std::fprintf(stderr, "%s: cannot read %s\n", argv[0], path.c_str());
        return 1;
      }
      // Named before it runs: a sanitizer report or an abort does not say which input caused it.
      std::fprintf(stderr, "replaying %s (%zu bytes)\n", path.c_str(), input->size);
      LLVMFuzzerTestOneInput(input->data.get(), input->size);
      ++replayed;
    }
  }
  std::printf("%s: replayed %zu inputs\n", argv[0], replayed);
  if (replayed == 0) {
    // An empty or missing corpus would otherwise pass without testing anything.
    std::fprintf(stderr, "%s: no inputs to replay\n", argv[0]);
    return 1;
  }
  return 0;
}
