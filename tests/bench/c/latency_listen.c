/*
 * The latency rows' listener (tests/bench/suite.py, row 4): the moment each
 * lat:<i> is set in the target, from its keyspace notifications.
 *
 *   latency_listen <redis port> <count> <out file>
 *
 * Turns on keyspace notifications for string commands (K$), subscribes to
 * __keyspace@0__:lat:*, prints "ready", then reads the raw socket and
 * stamps each read (CLOCK_REALTIME ns, as the sender's stamps) before it
 * looks at the bytes: a client library parsing message by message would
 * stamp the last messages of a burst (one MULTI/EXEC sets hundreds of
 * keys) late by its own parsing time, and charge that to syncs. Every
 * lat:<i> in a read gets that read's stamp; the first stamp of a key wins.
 *
 * In C for the same reason as the sender: the Python listener it replaces
 * took a third of a core at 100,000 writes/s, from the processes measured
 * on a 2-core machine, and stamped late whenever it waited for that core.
 *
 * Stops when every key was seen or after 120 s. Writes <count> stamps (0:
 * never seen) to <out file> (stamps.h); prints "seen=<n>".
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "stamps.h"

#define CHUNK (1 << 20)
/* Bytes kept from one read to the next: more than a whole key name. */
#define KEEP 64

static const char PREFIX[] = "__keyspace@0__:lat:";

static int send_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, 0);
    if (n <= 0) {
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads until `want` has arrived (a reply to the setup commands). */
static int read_until(int fd, const char *want) {
  char buf[4096];
  size_t have = 0;
  for (;;) {
    ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
    if (n <= 0) {
      return -1;
    }
    have += (size_t)n;
    buf[have] = '\0';
    if (strstr(buf, want) != NULL) {
      return 0;
    }
    if (have == sizeof buf - 1) {
      return -1;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: latency_listen <port> <count> <out>\n");
    return 2;
  }
  int port = atoi(argv[1]);
  long count = atol(argv[2]);
  const char *out_path = argv[3];
  if (port <= 0 || port > 65535 || count <= 0) {
    fprintf(stderr, "port and count must be positive\n");
    return 2;
  }
  long long *stamps = calloc((size_t)count, sizeof *stamps);
  char *data = malloc(KEEP + CHUNK);
  if (stamps == NULL || data == NULL) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    perror("connect");
    return 1;
  }
  static const char setup[] =
      "*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$22\r\nnotify-keyspace-events\r\n$2\r\nK$\r\n";
  char subscribe[128];
  int sub_len = snprintf(subscribe, sizeof subscribe, "*2\r\n$10\r\nPSUBSCRIBE\r\n$%zu\r\n%s*\r\n",
                         strlen(PREFIX) + 1, PREFIX);
  if (send_all(fd, setup, sizeof setup - 1) != 0 || read_until(fd, "+OK") != 0 ||
      send_all(fd, subscribe, (size_t)sub_len) != 0 || read_until(fd, "psubscribe") != 0) {
    fprintf(stderr, "could not subscribe to keyspace notifications\n");
    return 1;
  }
  struct timeval one_second = {.tv_sec = 1};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &one_second, sizeof one_second);
  printf("ready\n");
  fflush(stdout);

  long seen = 0;
  size_t tail = 0;
  long long deadline = stamp_now() + 120LL * 1000000000LL;
  size_t prefix_len = strlen(PREFIX);
  while (seen < count && stamp_now() < deadline) {
    ssize_t got = recv(fd, data + tail, CHUNK, 0);
    long long stamp = stamp_now();
    if (got == 0) {
      break;
    }
    if (got < 0) {
      continue; /* the one-second timeout: look at the deadline */
    }
    size_t len = tail + (size_t)got;
    size_t last = 0;
    const char *at = data;
    const char *end = data + len;
    while ((at = memmem(at, (size_t)(end - at), PREFIX, prefix_len)) != NULL) {
      const char *p = at + prefix_len;
      long i = 0;
      const char *digits = p;
      while (p < end && *p >= '0' && *p <= '9' && p - digits < 18) {
        i = i * 10 + (*p - '0');
        p++;
      }
      if (p == digits || end - p < 2 || p[0] != '\r' || p[1] != '\n') {
        at += prefix_len; /* the pattern itself, or a key cut by the read */
        continue;
      }
      if (i < count && stamps[i] == 0) {
        stamps[i] = stamp;
        seen++;
      }
      at = p + 2;
      last = (size_t)(at - data);
    }
    /* Keep what may hold the start of a key split across reads. */
    size_t keep_from = len > KEEP && len - KEEP > last ? len - KEEP : last;
    tail = len - keep_from;
    memmove(data, data + keep_from, tail);
  }
  close(fd);
  if (write_stamps(out_path, stamps, count) != 0) {
    return 1;
  }
  free(stamps);
  free(data);
  printf("seen=%ld\n", seen);
  return 0;
}
