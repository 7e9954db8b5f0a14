/*
 * Redis through the builders: one command (hiredis redisCommandArgv style),
 * a binary-safe value, a transaction, and a refused command.
 *
 *   cc redis_argv.c -I../include -L../../../target/release -lintc
 *   ./a.out [proxy socket path, default /tmp/us1]
 */
#include "intc_cli.h"

#include <inttypes.h>
#include <stdio.h>

/* Prints the failure of `what` and returns 1; returns 0 on INTC_OK. */
static int failed(int rc, const char *what) {
  if (rc == INTC_OK) {
    return 0;
  }
  char msg[512];
  intc_last_error(msg, sizeof msg);
  fprintf(stderr, "%s failed: %s\n  %s\n", what, intc_strerror(rc), msg);
  return 1;
}

int main(int argc, char **argv) {
  const char *us_path = argc > 1 ? argv[1] : "/tmp/us1";
  int errors = 0;

  intc_cli_t *cli = intc_fetch(us_path);
  if (cli == NULL) {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    fprintf(stderr, "intc_fetch: %s\n", msg);
    return 1;
  }

  /* One command; NUL-terminated arguments, so argvlen is NULL. */
  const char *set_greeting[] = {"SET", "greeting", "hello"};
  errors += failed(intc_redis_command(cli, 6379, 0, 3, set_greeting, NULL), "SET greeting");

  /* Binary-safe: the value holds a NUL, CR LF and a non-UTF-8 byte, so the
   * lengths are given. */
  static const char blob[] = {'a', '\0', '\r', '\n', (char)0xff};
  const char *set_blob[] = {"SET", "blob", blob};
  const size_t set_blob_len[] = {3, 4, sizeof blob};
  errors += failed(intc_redis_command(cli, 6379, 0, 3, set_blob, set_blob_len), "SET blob");

  /* A transaction on db 2: applied with MULTI/EXEC at the target. */
  intc_tx_t *tx = intc_tx_new(6379, 2);
  const char *incr[] = {"INCR", "visits"};
  const char *hset[] = {"HSET", "user:1", "name", "Ada", "greeting", "中文你好"};
  errors += failed(intc_tx_append(tx, 2, incr, NULL), "tx INCR");
  errors += failed(intc_tx_append(tx, 6, hset, NULL), "tx HSET");
  printf("transaction of %zu commands\n", intc_tx_count(tx));
  errors += failed(intc_tx_send(cli, tx), "tx send");
  intc_tx_free(tx);

  /* MULTI is refused: the frame says whether commands form a transaction. */
  const char *multi[] = {"MULTI"};
  int rc = intc_redis_command(cli, 6379, 0, 1, multi, NULL);
  if (rc != INTC_ERR_FRAME) {
    fprintf(stderr, "MULTI was not refused (rc %d)\n", rc);
    errors++;
  } else {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    printf("refused as expected: %s\n", msg);
  }

  intc_stats_t stats;
  errors += failed(intc_cli_stats(cli, &stats), "stats");
  printf("frames=%" PRIu64 " bytes=%" PRIu64 " errors=%" PRIu64 "\n", stats.frames, stats.bytes,
         stats.errors);

  intc_dispose();
  return errors == 0 ? 0 : 1;
}
