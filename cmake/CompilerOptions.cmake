# Warnings, sanitizers and compiler caching, applied through withcache_target_defaults().

find_program(WITHCACHE_CCACHE ccache)
if(WITHCACHE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_C_COMPILER_LAUNCHER "${WITHCACHE_CCACHE}")
  set(CMAKE_CXX_COMPILER_LAUNCHER "${WITHCACHE_CCACHE}")
endif()

set(WITHCACHE_WARNINGS
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wnon-virtual-dtor
  -Woverloaded-virtual -Wcast-align -Wformat=2 -Wimplicit-fallthrough
  -Wmissing-declarations)

# GCC 12 reports -Wrestrict inside libstdc++'s string concatenation at -O2
# (GCC bug 105329), a false positive that -Werror would turn into a failure.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  list(APPEND WITHCACHE_WARNINGS -Wno-restrict)
endif()

# libstdc++'s bounds and precondition checks in every Debug build.
add_compile_definitions($<$<CONFIG:Debug>:_GLIBCXX_ASSERTIONS>)

if(WITHCACHE_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()

# A fuzzing build (clang) instruments everything it compiles, not only the fuzz targets: the parsers
# under test live in the module libraries, and coverage from inside them is what steers libFuzzer.
# Instrumenting the whole build lets each fuzzer link withcache::url, ::http, ... like any other
# program instead of recompiling library sources into itself; only the fuzzers' link adds libFuzzer's
# main (-fsanitize=fuzzer, fuzz/CMakeLists.txt).
if(WITHCACHE_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "WITHCACHE_BUILD_FUZZERS needs clang (CC=clang CXX=clang++)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()

# Every target we own calls this: warnings (and -Werror on request) without
# leaking them onto consumers of the installed library.
function(withcache_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${WITHCACHE_WARNINGS}>
    $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wpedantic>)
  if(WITHCACHE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
