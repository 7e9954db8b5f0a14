/*
 * MongoDB writes from hand-built BSON bytes (any BSON library's output works
 * the same way: with libbson, pass bson_get_data(b) and b->len).
 *
 *   cc mongo_raw_bson.c -I../include -L../../../target/release -lintc
 *   ./a.out [proxy socket path, default /tmp/us1]
 */
#include "intc_cli.h"

#include <stdint.h>
#include <stdio.h>

/* { "name": "Ada", "n": 42 }  (26 bytes) */
static const uint8_t ada[] = {
    0x1a, 0x00, 0x00, 0x00,                    /* document length: 26 */
    0x02, 'n', 'a', 'm', 'e', 0x00,            /* string "name" */
    0x04, 0x00, 0x00, 0x00, 'A', 'd', 'a', 0x00, /* length 4, "Ada\0" */
    0x10, 'n', 0x00,                           /* int32 "n" */
    0x2a, 0x00, 0x00, 0x00,                    /* 42 */
    0x00,                                      /* end of document */
};

/* { "status": "gone" }  (22 bytes) */
static const uint8_t gone[] = {
    0x16, 0x00, 0x00, 0x00,                       /* document length: 22 */
    0x02, 's', 't', 'a', 't', 'u', 's', 0x00,     /* string "status" */
    0x05, 0x00, 0x00, 0x00, 'g', 'o', 'n', 'e', 0x00, /* length 5, "gone\0" */
    0x00,                                         /* end of document */
};

/* The whole write description { "op": "delete_many", "filter": { "status":
 * "gone" } } (55 bytes), for intc_mongo_write. */
static const uint8_t delete_gone[] = {
    0x37, 0x00, 0x00, 0x00,                    /* document length: 55 */
    0x02, 'o', 'p', 0x00,                      /* string "op" */
    0x0c, 0x00, 0x00, 0x00,                    /* length 12 */
    'd', 'e', 'l', 'e', 't', 'e', '_', 'm', 'a', 'n', 'y', 0x00,
    0x03, 'f', 'i', 'l', 't', 'e', 'r', 0x00,  /* document "filter" */
    0x16, 0x00, 0x00, 0x00,                    /* the 22 bytes of `gone` */
    0x02, 's', 't', 'a', 't', 'u', 's', 0x00,
    0x05, 0x00, 0x00, 0x00, 'g', 'o', 'n', 'e', 0x00,
    0x00,
    0x00,                                      /* end of document */
};

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

  /* insert_one: the library wraps the document in the write description. */
  errors += failed(intc_mongo_insert_one(cli, "app", "users", ada, sizeof ada), "insert_one");

  /* delete_many: from the filter alone ... */
  errors += failed(intc_mongo_delete_many(cli, "app", "users", gone, sizeof gone), "delete_many");
  /* ... or from the whole description: the same frame on the wire. */
  errors += failed(intc_mongo_write(cli, "app", "users", delete_gone, sizeof delete_gone),
                   "write delete_many");

  /* A document cut short is refused before anything is sent. */
  int rc = intc_mongo_insert_one(cli, "app", "users", ada, sizeof ada - 1);
  if (rc != INTC_ERR_BSON) {
    fprintf(stderr, "a truncated document was not refused (rc %d)\n", rc);
    errors++;
  } else {
    char msg[512];
    intc_last_error(msg, sizeof msg);
    printf("refused as expected: %s\n", msg);
  }

  intc_dispose();
  return errors == 0 ? 0 : 1;
}
