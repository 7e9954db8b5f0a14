/*
 * The latency rows' sender (tests/bench/suite.py, row 4): SET lat:<i> at a
 * steady rate through the C library, unbuffered (one write per call, as
 * the seed's examples), recording each call's wall-clock start.
 *
 *   bench_latency <proxy socket> <rate per second> <seconds> <out file>
 *
 * Each write is due at start + i / rate; the sender sleeps until then with
 * clock_nanosleep on an absolute deadline (timer slack set to 1 µs, so a
 * wake-up is not rounded up by the kernel's default 50 µs). A late
 * wake-up only delays the sends that are due: each write's latency runs
 * from its own call. A busy wait would take one of the machine's cores
 * from the processes measured; the Python sender it replaces took most of
 * one at 100,000 writes/s.
 *
 * Writes the start times to <out file> as n stamps (stamps.h: ns since the
 * epoch, as Python's time.time_ns()). Prints "n=<n>".
 */
#include "intc_cli.h"
#include "stamps.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

static long long ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: bench_latency <socket> <rate> <seconds> <out>\n");
    return 2;
  }
  const char *path = argv[1];
  double rate = strtod(argv[2], NULL);
  double seconds = strtod(argv[3], NULL);
  const char *out_path = argv[4];
  long n = (long)(rate * seconds);
  if (rate <= 0 || n <= 0) {
    fprintf(stderr, "rate and seconds must be positive\n");
    return 2;
  }
  long long *sent = calloc((size_t)n, sizeof *sent);
  intc_cli_t *cli = intc_cli_new(path);
  if (sent == NULL || cli == NULL) {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    fprintf(stderr, "setup failed: %s\n", msg);
    return 1;
  }
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  char key[32];
  char value[64];
  memset(value, 'v', sizeof value);
  const char *args[3] = {"SET", key, value};
  size_t lens[3] = {3, 0, sizeof value};
  double period_ns = 1e9 / rate;
  long long start = ns(CLOCK_MONOTONIC) + 50000000LL;
  for (long i = 0; i < n; i++) {
    long long due = start + (long long)(i * period_ns);
    if (ns(CLOCK_MONOTONIC) < due) {
      struct timespec at = {.tv_sec = due / 1000000000LL, .tv_nsec = due % 1000000000LL};
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) != 0) {
      }
    }
    lens[1] = (size_t)snprintf(key, sizeof key, "lat:%ld", i);
    sent[i] = stamp_now();
    int rc = intc_redis_command(cli, 6379, 0, 3, args, lens);
    if (rc != INTC_OK) {
      char msg[512];
      intc_last_error(msg, sizeof msg);
      fprintf(stderr, "SET lat:%ld: %s (%s)\n", i, intc_strerror(rc), msg);
      return 1;
    }
  }
  intc_cli_free(cli);
  if (write_stamps(out_path, sent, n) != 0) {
    return 1;
  }
  free(sent);
  printf("n=%ld\n", n);
  return 0;
}
