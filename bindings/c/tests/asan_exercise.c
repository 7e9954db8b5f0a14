/*
 * Exercises libintc's whole handle life cycle for AddressSanitizer /
 * UBSan / LeakSanitizer (tests/test_asan.py): intc_fetch, intc_send with
 * frames split over many calls, transactions, intc_cli_new/free from
 * several threads, error paths, intc_dispose.
 *
 *   ./asan_exercise <proxy socket path>
 *
 * Exits 0 when every call returned what was expected; prints each frame it
 * expects the proxy to get (one "frame <hex>" line) to stdout.
 */
#include "intc_cli.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int errors = 0;

static void expect(int got, int want, const char *what) {
  if (got != want) {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    fprintf(stderr, "%s: got %d (%s), want %d: %s\n", what, got, intc_strerror(got), want, msg);
    errors++;
  }
}

/* Sends `payload` through intc_send in chunks of `step` bytes, the length
 * prefix included. */
static void send_split(intc_cli_t *cli, const char *payload, size_t len, size_t step) {
  uint8_t *wire = malloc(4 + len);
  uint32_t n = (uint32_t)len;
  memcpy(wire, &n, 4);
  memcpy(wire + 4, payload, len);
  for (size_t pos = 0; pos < 4 + len; pos += step) {
    size_t chunk = 4 + len - pos < step ? 4 + len - pos : step;
    expect(intc_send(cli, wire + pos, chunk), INTC_OK, "intc_send chunk");
  }
  free(wire);
}

static void *thread_main(void *arg) {
  intc_cli_t *shared = arg;
  const char *cmd[] = {"INCR", "shared"};
  for (int i = 0; i < 20; i++) {
    expect(intc_redis_command(shared, 6379, 5, 2, cmd, NULL), INTC_OK, "shared INCR");
  }
  /* A per-thread handle, disposed before the thread ends. */
  const char *path = getenv("INTC_ASAN_PATH");
  intc_cli_t *mine = intc_fetch(path);
  const char *ping[] = {"PING"};
  expect(intc_redis_command(mine, 6379, 6, 1, ping, NULL), INTC_OK, "thread PING");
  intc_dispose();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <socket path>\n", argv[0]);
    return 2;
  }
  const char *path = argv[1];
  setenv("INTC_ASAN_PATH", path, 1);
  printf("version %s\n", intc_version());

  /* 1. intc_fetch + intc_send, the seed's way and split byte by byte. */
  intc_cli_t *cli = intc_fetch(path);
  if (cli == NULL || intc_fetch(path) != cli) {
    fprintf(stderr, "intc_fetch did not cache\n");
    return 1;
  }
  static const char seed[] = "6379,1\x01*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n";
  send_split(cli, seed, sizeof seed - 1, 4096);
  send_split(cli, seed, sizeof seed - 1, 1);
  send_split(cli, seed, sizeof seed - 1, 7);
  /* A bad frame is reported and dropped; the stream stays in step. */
  static const char bad[] = "6379,1\x01*1\r\n$5\r\nMULTI\r\n";
  uint8_t wire[64];
  uint32_t n = sizeof bad - 1;
  memcpy(wire, &n, 4);
  memcpy(wire + 4, bad, n);
  expect(intc_send(cli, wire, 4 + n), INTC_ERR_FRAME, "intc_send MULTI");
  /* A half frame then dispose: discarded without a leak. */
  expect(intc_send(cli, wire, 6), INTC_OK, "intc_send half");
  intc_dispose();

  /* 2. Transactions, binary-safe arguments, error paths. */
  cli = intc_fetch(path);
  intc_tx_t *tx = intc_tx_new(6379, 2);
  static const char blob[] = {'x', '\0', '\r', '\n', (char)0xff};
  const char *set_blob[] = {"SET", "blob", blob};
  const size_t set_blob_len[] = {3, 4, sizeof blob};
  const char *incr[] = {"INCR", "n"};
  expect(intc_tx_append(tx, 3, set_blob, set_blob_len), INTC_OK, "tx append SET");
  expect(intc_tx_append(tx, 2, incr, NULL), INTC_OK, "tx append INCR");
  expect(intc_tx_append(tx, 0, incr, NULL), INTC_ERR_ARG, "tx append argc 0");
  expect(intc_tx_append(NULL, 2, incr, NULL), INTC_ERR_ARG, "tx append NULL");
  if (intc_tx_count(tx) != 2) {
    fprintf(stderr, "tx count %zu\n", intc_tx_count(tx));
    errors++;
  }
  expect(intc_tx_send(cli, tx), INTC_OK, "tx send");
  intc_tx_free(tx);
  intc_tx_free(NULL);
  intc_tx_t *refused = intc_tx_new(6379, 0);
  const char *select[] = {"SELECT", "1"};
  expect(intc_tx_append(refused, 2, select, NULL), INTC_OK, "tx append SELECT");
  expect(intc_tx_send(cli, refused), INTC_ERR_FRAME, "tx send SELECT");
  intc_tx_free(refused);
  expect(intc_redis_command(NULL, 6379, 0, 2, incr, NULL), INTC_ERR_ARG, "NULL cli");
  expect(intc_mongo_write(cli, "db", "coll", (const uint8_t *)"\x05\0\0\0", 4), INTC_ERR_BSON,
         "short BSON");
  char msg[8];
  size_t full = intc_last_error(msg, sizeof msg);
  if (full < sizeof msg || strlen(msg) != sizeof msg - 1) {
    fprintf(stderr, "intc_last_error truncation: %zu\n", full);
    errors++;
  }
  if (intc_fetch(NULL) != NULL || intc_cli_new("") != NULL) {
    fprintf(stderr, "bad paths accepted\n");
    errors++;
  }
  intc_stats_t stats;
  expect(intc_cli_stats(cli, &stats), INTC_OK, "stats");
  intc_cli_free(cli); /* ignored: a fetched handle */

  /* 3. A shared intc_cli_new handle used by four threads. */
  intc_cli_t *shared = intc_cli_new(path);
  expect(intc_cli_set_send_timeout(shared, 2000), INTC_OK, "set timeout");
  pthread_t threads[4];
  for (int i = 0; i < 4; i++) {
    pthread_create(&threads[i], NULL, thread_main, shared);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(threads[i], NULL);
  }
  expect(intc_cli_stats(shared, &stats), INTC_OK, "shared stats");
  if (stats.frames != 80) {
    fprintf(stderr, "shared frames %llu\n", (unsigned long long)stats.frames);
    errors++;
  }
  intc_cli_free(shared);
  intc_cli_free(NULL);

  /* 4. No proxy: fails fast, no leak. */
  intc_cli_t *none = intc_cli_new("/nonexistent/intc-asan.sock");
  const char *ping[] = {"PING"};
  expect(intc_redis_command(none, 6379, 0, 1, ping, NULL), INTC_ERR_UNAVAILABLE, "no proxy");
  intc_cli_free(none);

  intc_dispose();
  intc_dispose();
  printf("errors %d\n", errors);
  return errors == 0 ? 0 : 1;
}
