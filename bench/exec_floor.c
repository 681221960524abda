/* The least any exec-based shim can cost: a C program that only execs curl.
 * bench/shim.py times it beside the real shim to show this machine's exec cost. */
#include <unistd.h>

int main(int argc, char** argv) {
  (void)argc;
  argv[0] = "/usr/bin/curl";
  execv(argv[0], argv);
  return 127;
}
