/*
 * The latency row's stamp files (tests/bench/suite.py, row 4): one int64
 * per write, nanoseconds since the epoch (CLOCK_REALTIME; 0: none), in the
 * machine's byte order, written in one fwrite (no formatting of a million
 * numbers on a core the processes measured may still need).
 */
#ifndef SYNCS_BENCH_STAMPS_H
#define SYNCS_BENCH_STAMPS_H

#include <stdio.h>
#include <time.h>

/* Now, in the stamps' clock. */
static inline long long stamp_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Writes `n` stamps to `path`; 0 on success, else 1 (the error printed). */
static inline int write_stamps(const char *path, const long long *stamps, long n) {
  FILE *out = fopen(path, "w");
  if (out == NULL) {
    perror(path);
    return 1;
  }
  if (fwrite(stamps, sizeof *stamps, (size_t)n, out) != (size_t)n || fclose(out) != 0) {
    perror(path);
    return 1;
  }
  return 0;
}

#endif
