/*
 * The C side of the benchmark suite (tests/bench/suite.py): N SETs with
 * 16-byte keys and 64-byte values through the C library, then a marker key
 * the suite polls for in the target Redis.
 *
 *   bench_set <proxy socket> <n> <key prefix (1 char)> [buffered|seed]
 *
 * With `buffered`, the handle buffers frames (the library's suggested 64 KiB
 * and 1 ms linger) and the timing includes the final intc_flush. With
 * `seed`, each frame is built by hand and written as the seed's C example
 * does: the 4-byte length prefix and the payload in two `intc_send` calls
 * on an `intc_fetch` handle.
 *
 * Prints one line: "calls_ns=<ns spent in the calls> n=<n> start_ns=<CLOCK_MONOTONIC
 * at the first call>" (the suite times a row from that first call).
 *
 * With BENCH_SET_WAIT=1 in the environment, it prints "ready" once set up
 * and makes its first call only when a byte arrives on stdin: the suite
 * starts all the writers of row 10 first, then lets them go together, so
 * that starting 16 processes is not timed as contention.
 */
#include "intc_cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int check(int rc, const char *what) {
  if (rc == INTC_OK) {
    return 0;
  }
  char msg[512];
  intc_last_error(msg, sizeof msg);
  fprintf(stderr, "%s: %s (%s)\n", what, intc_strerror(rc), msg);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_set <socket> <n> <prefix> [buffered]\n");
    return 2;
  }
  const char *path = argv[1];
  long n = strtol(argv[2], NULL, 10);
  char prefix = argv[3][0];
  intc_cli_t *cli = intc_cli_new(path);
  if (cli == NULL) {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    fprintf(stderr, "intc_cli_new: %s\n", msg);
    return 1;
  }
  if (argc > 4 && strcmp(argv[4], "buffered") == 0 &&
      check(intc_cli_set_buffering(cli, INTC_DEFAULT_BUFFER_SIZE, INTC_DEFAULT_LINGER_US),
            "intc_cli_set_buffering")) {
    intc_cli_free(cli);
    return 1;
  }
  char key[24];
  char value[64];
  memset(value, 'v', sizeof value);
  const char *wait = getenv("BENCH_SET_WAIT");
  if (wait != NULL && strcmp(wait, "1") == 0) {
    printf("ready\n");
    fflush(stdout);
    char go;
    if (read(0, &go, 1) != 1) {
      fprintf(stderr, "no go on stdin\n");
      return 1;
    }
  }
  if (argc > 4 && strcmp(argv[4], "seed") == 0) {
    intc_cli_free(cli);
    long long t0 = now_ns();
    char expr[160];
    for (long i = 0; i <= n; i++) {
      int len;
      if (i < n) {
        len = snprintf(expr, sizeof expr, "6379,0\x01*3\r\n$3\r\nset\r\n$16\r\n%c%015ld\r\n$64\r\n%.64s\r\n",
                       prefix, i % 1000000000000000L, value);
      } else {
        len = snprintf(expr, sizeof expr, "6379,0\x01*3\r\n$3\r\nset\r\n$6\r\nmarker\r\n$4\r\ndone\r\n");
      }
      uint8_t buf[4];
      uint32_t l = (uint32_t)len;
      memcpy(buf, &l, 4);
      intc_cli_t *h = intc_fetch(path);
      if (check(intc_send(h, buf, 4), "intc_send prefix") ||
          check(intc_send(h, (const uint8_t *)expr, (size_t)len), "intc_send payload")) {
        return 1;
      }
    }
    long long t1 = now_ns();
    intc_dispose();
    printf("calls_ns=%lld n=%ld start_ns=%lld\n", t1 - t0, n, t0);
    return 0;
  }
  const char *args[3] = {"SET", key, value};
  const size_t lens[3] = {3, 16, sizeof value};
  long long t0 = now_ns();
  for (long i = 0; i < n; i++) {
    /* 16 bytes for any i below 10^15. */
    snprintf(key, sizeof key, "%c%015ld", prefix, i % 1000000000000000L);
    if (check(intc_redis_command(cli, 6379, 0, 3, args, lens), "SET")) {
      intc_cli_free(cli);
      return 1;
    }
  }
  const char *marker[3] = {"SET", "marker", "done"};
  int rc = check(intc_redis_command(cli, 6379, 0, 3, marker, NULL), "SET marker");
  rc |= check(intc_flush(cli), "intc_flush");
  long long t1 = now_ns();
  intc_cli_free(cli);
  printf("calls_ns=%lld n=%ld start_ns=%lld\n", t1 - t0, n, t0);
  return rc;
}
