# Entry points; the README's two commands call `make run` and `make test`.
# Every build lives under build/; `make clean` removes it.

JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
RELEASE    := build/release
TEST       := build/test
SANITIZE   := build/sanitize
PORT       ?= 3000
DATA_DIR   ?= ./data
CTEST_ARGS ?= --output-on-failure --timeout 600 -j $(JOBS)

.PHONY: all build run test test-sanitize bench fuzz format clean

all: build

# The operator's build: Release, no tests, warnings do not stop it.
build:
	cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=Release -DWITHCACHE_BUILD_TESTS=OFF -DWITHCACHE_BUILD_EXAMPLES=OFF -DWITHCACHE_BUILD_BENCH=OFF
	cmake --build $(RELEASE) -j $(JOBS)

# Builds (Release) and runs the cache-host on its embedded defaults.
run: build
	$(RELEASE)/apps/server/withcache-server --data-dir $(DATA_DIR) --port $(PORT)

# Builds (Release, warnings as errors) and runs every test.
test:
	cmake -S . -B $(TEST) -DCMAKE_BUILD_TYPE=Release -DWITHCACHE_WERROR=ON
	cmake --build $(TEST) -j $(JOBS)
	cd $(TEST) && ctest $(CTEST_ARGS)

# The whole suite again in Debug with AddressSanitizer and UBSan.
test-sanitize:
	cmake -S . -B $(SANITIZE) -DCMAKE_BUILD_TYPE=Debug -DWITHCACHE_SANITIZE=ON -DWITHCACHE_WERROR=ON
	cmake --build $(SANITIZE) -j $(JOBS)
	cd $(SANITIZE) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 ctest $(CTEST_ARGS)

# libFuzzer targets (clang): every fuzz/fuzz_<name>.cpp runs FUZZ_SECONDS, starting from its checked-in
# corpus fuzz/corpus/<name>; new inputs go to build/fuzz/corpus/<name>, crashes to build/fuzz/crashes/<name>.
# Every target runs even when one fails; the exit status says whether any did.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst fuzz/fuzz_%.cpp,%,$(wildcard fuzz/fuzz_*.cpp))
fuzz:
	CC=clang CXX=clang++ cmake -S . -B build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DWITHCACHE_BUILD_FUZZERS=ON -DWITHCACHE_BUILD_TESTS=OFF -DWITHCACHE_BUILD_APPS=OFF -DWITHCACHE_BUILD_EXAMPLES=OFF \
	  -DWITHCACHE_BUILD_BENCH=OFF
	cmake --build build/fuzz -j $(JOBS) --target fuzzers
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/corpus/$$t build/fuzz/crashes/$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS)s"; \
	  build/fuzz/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/crashes/$$t/ \
	    build/fuzz/corpus/$$t fuzz/corpus/$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (inputs under build/fuzz/crashes/)"; exit 1; fi

# Benchmarks (docs/benchmarks.md): Release build, loopback only, each beside its reference.
bench:
	./scripts/setup --bench
	cmake -S . -B $(TEST) -DCMAKE_BUILD_TYPE=Release -DWITHCACHE_WERROR=ON
	cmake --build $(TEST) -j $(JOBS)
	python3 bench/fill_rss.py --build $(TEST)
	python3 bench/serve.py --build $(TEST)
	python3 bench/connections.py --build $(TEST)
	python3 bench/herd.py --build $(TEST)
	python3 bench/shim.py --build $(TEST)
	python3 bench/ui_listing.py --build $(TEST)
	python3 bench/growth.py --build $(TEST)

format:
	git ls-files '*.cpp' '*.hpp' '*.h' '*.c' | xargs -r clang-format -i

clean:
	rm -rf build
