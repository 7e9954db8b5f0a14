/*
 * Exercises libintc's buffering and connect policy for AddressSanitizer /
 * UBSan / LeakSanitizer (tests/test_buffering.py): intc_cli_set_buffering,
 * intc_flush, the linger, several threads on one buffering handle, a frame
 * larger than the buffer, intc_cli_free flushing, intc_atexit_flush, and
 * intc_cli_set_connect_timeout giving up on a proxy that never comes.
 *
 *   ./buffer_exercise <proxy socket path> <missing socket path>
 *
 * Exits 0 when every call returned what was expected; prints "errors N".
 */
#include "intc_cli.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int errors = 0;

/* Reachable at exit (a root for LeakSanitizer): flushed by the atexit hook. */
static intc_cli_t *at_exit_cli = NULL;

static void expect(long long got, long long want, const char *what) {
  if (got != want) {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    fprintf(stderr, "%s: got %lld, want %lld: %s\n", what, got, want, msg);
    errors++;
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static intc_stats_t stats_of(intc_cli_t *cli) {
  intc_stats_t s;
  memset(&s, 0, sizeof s);
  expect(intc_cli_stats(cli, &s), INTC_OK, "intc_cli_stats");
  return s;
}

static int incr(intc_cli_t *cli, uint32_t db, const char *key) {
  const char *argv[] = {"INCR", key};
  return intc_redis_command(cli, 6379, db, 2, argv, NULL);
}

static void *worker(void *arg) {
  intc_cli_t *cli = arg;
  for (int i = 0; i < 50; i++) {
    expect(incr(cli, 8, "threads"), INTC_OK, "threaded buffered send");
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <proxy socket> <missing socket>\n", argv[0]);
    return 2;
  }
  const char *sock = argv[1];

  /* Arguments. */
  expect(intc_cli_set_buffering(NULL, 1, 1), INTC_ERR_ARG, "set_buffering(NULL)");
  expect(intc_flush(NULL), INTC_ERR_ARG, "intc_flush(NULL)");
  expect(intc_cli_set_connect_timeout(NULL, 1), INTC_ERR_ARG, "connect_timeout(NULL)");

  intc_cli_t *cli = intc_cli_new(sock);
  expect(cli != NULL, 1, "intc_cli_new");
  expect(intc_cli_set_buffering(cli, 100, 0), INTC_ERR_ARG, "a zero linger");
  expect(intc_cli_set_buffering(cli, 100, 20u * 1000 * 1000), INTC_ERR_ARG, "a 20 s linger");
  expect(intc_flush(cli), INTC_OK, "flush without buffering");

  /* 1. Buffered until intc_flush (a 10 s linger). */
  expect(intc_cli_set_buffering(cli, INTC_DEFAULT_BUFFER_SIZE, 10u * 1000 * 1000), INTC_OK,
         "set_buffering");
  for (int i = 0; i < 100; i++) {
    expect(incr(cli, 7, "flushed"), INTC_OK, "buffered send");
  }
  intc_stats_t s = stats_of(cli);
  expect((long long)s.frames, 0, "nothing written before the flush");
  expect((long long)s.pending, 100, "100 frames pending");
  expect((long long)s.buffered, 100, "100 frames buffered");
  expect(intc_flush(cli), INTC_OK, "intc_flush");
  s = stats_of(cli);
  expect((long long)s.frames, 100, "100 frames written");
  expect((long long)s.pending, 0, "none pending");
  expect((long long)s.flushes, 1, "one write");

  /* 2. The linger writes in the background. */
  expect(intc_cli_set_buffering(cli, INTC_DEFAULT_BUFFER_SIZE, INTC_DEFAULT_LINGER_US), INTC_OK,
         "set_buffering 1 ms");
  for (int i = 0; i < 10; i++) {
    expect(incr(cli, 7, "lingered"), INTC_OK, "buffered send");
  }
  double deadline = now() + 5.0;
  while (stats_of(cli).pending > 0 && now() < deadline) {
    sleep_ms(1);
  }
  s = stats_of(cli);
  expect((long long)s.pending, 0, "the linger flushed");
  expect((long long)s.frames, 110, "110 frames written");

  /* 3. Four threads on the shared handle: whole frames, never interleaved. */
  pthread_t threads[4];
  for (int t = 0; t < 4; t++) {
    pthread_create(&threads[t], NULL, worker, cli);
  }
  for (int t = 0; t < 4; t++) {
    pthread_join(threads[t], NULL);
  }

  /* 4. A frame larger than the buffer goes out directly, after it. */
  expect(intc_cli_set_buffering(cli, 256, 10u * 1000 * 1000), INTC_OK, "a small buffer");
  expect(incr(cli, 9, "before-big"), INTC_OK, "small frame");
  char big[1000];
  memset(big, 'x', sizeof big);
  const char *set[] = {"SET", "big", big};
  size_t setlen[] = {3, 3, sizeof big};
  expect(intc_redis_command(cli, 6379, 9, 3, set, setlen), INTC_OK, "big frame");
  expect((long long)stats_of(cli).pending, 0, "the big frame flushed the buffer");

  /* 5. intc_cli_free writes what is buffered. */
  expect(incr(cli, 9, "at-free"), INTC_OK, "buffered before free");
  expect((long long)stats_of(cli).pending, 1, "one pending at free");
  intc_cli_free(cli);

  /* 6. Waiting for a proxy that never comes: INTC_ERR_UNAVAILABLE after
   * the timeout, not before, not much after. */
  intc_cli_t *nobody = intc_cli_new(argv[2]);
  expect(intc_cli_set_connect_timeout(nobody, 300), INTC_OK, "set_connect_timeout");
  double start = now();
  expect(incr(nobody, 0, "never"), INTC_ERR_UNAVAILABLE, "no proxy after waiting");
  double waited = now() - start;
  expect(waited >= 0.29 && waited < 3.0, 1, "waited about the connect timeout");
  expect(intc_cli_set_connect_timeout(nobody, 0), INTC_OK, "fail fast again");
  start = now();
  expect(incr(nobody, 0, "never"), INTC_ERR_UNAVAILABLE, "no proxy, fail fast");
  expect(now() - start < 0.2, 1, "failed fast");
  intc_cli_free(nobody);

  /* 7. Buffered at exit, flushed by the atexit hook. */
  at_exit_cli = intc_cli_new(sock);
  expect(intc_cli_set_buffering(at_exit_cli, INTC_DEFAULT_BUFFER_SIZE, 10u * 1000 * 1000),
         INTC_OK, "set_buffering at exit");
  expect(intc_atexit_flush(), INTC_OK, "intc_atexit_flush");
  expect(intc_atexit_flush(), INTC_OK, "intc_atexit_flush twice");
  expect(incr(at_exit_cli, 10, "at-exit"), INTC_OK, "buffered at exit");
  expect(incr(at_exit_cli, 10, "at-exit"), INTC_OK, "buffered at exit");
  expect((long long)stats_of(at_exit_cli).pending, 2, "two pending at exit");

  printf("errors %d\n", errors);
  return errors == 0 ? 0 : 1;
}
