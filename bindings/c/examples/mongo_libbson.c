/*
 * MongoDB writes built with libbson (Debian: libbson-dev):
 * insert_one, update_one with upsert, delete_many.
 *
 *   cc mongo_libbson.c -I../include $(pkg-config --cflags --libs libbson-1.0) \
 *      -L../../../target/release -lintc
 *   ./a.out [proxy socket path, default /tmp/us1]
 */
#include "intc_cli.h"

#include <bson/bson.h>
#include <stdio.h>

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

  /* { _id: 1, name: "Ada", born: 1815 (int32), visits: int64, score: double, at: datetime } */
  bson_t *doc = bson_new();
  BSON_APPEND_INT32(doc, "_id", 1);
  BSON_APPEND_UTF8(doc, "name", "Ada");
  BSON_APPEND_INT32(doc, "born", 1815);
  BSON_APPEND_INT64(doc, "visits", 5000000000LL);
  BSON_APPEND_DOUBLE(doc, "score", 9.5);
  BSON_APPEND_DATE_TIME(doc, "at", 1764072000000LL);
  errors += failed(intc_mongo_insert_one(cli, "libbson_db", "people", bson_get_data(doc), doc->len),
                   "insert_one");
  bson_destroy(doc);

  /* update_one({ _id: 2 }, { $set: { name: "Grace" }, $inc: { n: 1 } }, upsert) */
  bson_t *filter = BCON_NEW("_id", BCON_INT32(2));
  bson_t *update = BCON_NEW("$set", "{", "name", BCON_UTF8("Grace"), "}", "$inc", "{", "n",
                            BCON_INT32(1), "}");
  errors += failed(intc_mongo_update_one(cli, "libbson_db", "people", bson_get_data(filter),
                                         filter->len, bson_get_data(update), update->len, true),
                   "update_one");
  bson_destroy(filter);
  bson_destroy(update);

  /* delete_many({ tmp: true }) */
  bson_t *gone = BCON_NEW("tmp", BCON_BOOL(true));
  errors += failed(intc_mongo_delete_many(cli, "libbson_db", "people", bson_get_data(gone), gone->len),
                   "delete_many");
  bson_destroy(gone);

  intc_dispose();
  return errors == 0 ? 0 : 1;
}
