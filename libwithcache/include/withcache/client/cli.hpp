/**
 * @file
 * withcache::client — the `withcache-client` command line as a library entry point, so the program is
 * one line and another program can offer the same commands.
 */
#pragma once

namespace withcache::client {

/**
 * Runs `withcache-client` with `argv` (argv[0] is the program name): parses the options (`--help` lists
 * them and the commands), reads `WITHCACHE_SERVER` and `WITHCACHE_API_TOKEN` from the environment,
 * writes results to stdout and one-line errors to stderr. Returns the documented exit status: 0 ok,
 * 1 miss / not found, 2 server unreachable, 3 download failed or checksum mismatch, 4 refused by the
 * server, 64 bad command line. Never throws. `get -o -` ignores SIGPIPE for the rest of the process.
 */
int cli_main(int argc, char** argv);

} // namespace withcache::client
