/*
 * Row 6 of the benchmark suite (tests/bench/suite.py): what one buffered
 * intc_redis_command costs the caller, without a proxy, a server or Redis.
 *
 *   bench_call [n] [runs]        defaults: 2,000,000 calls, 5 runs
 *
 * Opens a unix listener in a fresh temporary directory and forks a child
 * that accepts one connection and reads and discards everything (1 MiB
 * reads), so the library's writes never wait. The parent makes a handle
 * with buffering (INTC_DEFAULT_BUFFER_SIZE, INTC_DEFAULT_LINGER_US),
 * connects and starts the flusher with a first call, then, per run, times
 * n SETs (16-byte keys, 64-byte values, binary-safe lengths as hiredis
 * callers give them) plus the final intc_flush. The keys change every call
 * (a decimal counter incremented in place: a few instructions, no
 * snprintf in the timed loop).
 *
 * Prints one line: "ns_per_frame=<median wall-clock ns per call over the
 * runs> cpu_ns_per_frame=<median of the calling thread's CPU time (user +
 * system) per call> n=<n> frames_per_flush=<batching> runs=<wall ns of
 * each run>". On a shared machine the CPU figure is the steadier one: time
 * the thread spends preempted by other processes is not in it; the writes
 * of the buffer (system time) are.
 * Exit status 0 only if every call succeeded and the child read every byte.
 */
#include "intc_cli.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY_LEN 16
#define VALUE_LEN 64
#define MAX_RUNS 64

static long long clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int check(int rc, const char *what) {
  if (rc == INTC_OK) {
    return 0;
  }
  char msg[512];
  intc_last_error(msg, sizeof msg);
  fprintf(stderr, "bench_call: %s: %s (%s)\n", what, intc_strerror(rc), msg);
  return 1;
}

/* The child: accepts one connection, reads until EOF, reports the byte
 * count through `report` (a pipe), exits. */
static void discard(int listener, int report) {
  int fd = accept(listener, NULL, NULL);
  if (fd < 0) {
    _exit(3);
  }
  static char buf[1 << 20];
  unsigned long long total = 0;
  for (;;) {
    ssize_t got = read(fd, buf, sizeof buf);
    if (got > 0) {
      total += (unsigned long long)got;
    } else if (got == 0) {
      break;
    } else if (errno != EINTR) {
      _exit(4);
    }
  }
  ssize_t w = write(report, &total, sizeof total);
  _exit(w == (ssize_t)sizeof total ? 0 : 5);
}

/* Adds one to the decimal number in key[1..KEY_LEN). */
static void next_key(char *key) {
  for (int i = KEY_LEN - 1; i > 0; i--) {
    if (key[i] != '9') {
      key[i]++;
      return;
    }
    key[i] = '0';
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(const double *values, int count) {
  double sorted[MAX_RUNS];
  memcpy(sorted, values, sizeof(double) * (size_t)count);
  qsort(sorted, (size_t)count, sizeof(double), cmp_double);
  return count % 2 ? sorted[count / 2] : (sorted[count / 2 - 1] + sorted[count / 2]) / 2;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 2000000;
  int runs = argc > 2 ? atoi(argv[2]) : 5;
  if (n < 1 || runs < 1 || runs > MAX_RUNS) {
    fprintf(stderr, "usage: bench_call [n >= 1] [runs 1..%d]\n", MAX_RUNS);
    return 2;
  }

  char dir[] = "/tmp/bench_call.XXXXXX";
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s/s", dir);
  int listener = socket(AF_UNIX, SOCK_STREAM, 0);
  if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(listener, 1) != 0) {
    perror("listen");
    return 1;
  }
  int report[2];
  if (pipe(report) != 0) {
    perror("pipe");
    return 1;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    close(report[0]);
    discard(listener, report[1]);
  }
  close(listener);
  close(report[1]);

  int rc = 0;
  intc_cli_t *cli = intc_cli_new(addr.sun_path);
  if (cli == NULL) {
    check(INTC_ERR_ARG, "intc_cli_new");
    kill(child, SIGKILL);
    return 1;
  }
  rc |= check(intc_cli_set_buffering(cli, INTC_DEFAULT_BUFFER_SIZE, INTC_DEFAULT_LINGER_US),
              "intc_cli_set_buffering");

  char key[KEY_LEN];
  char value[VALUE_LEN];
  memset(key, '0', sizeof key);
  key[0] = 'k';
  memset(value, 'v', sizeof value);
  const char *args[3] = {"SET", key, value};
  const size_t lens[3] = {3, KEY_LEN, VALUE_LEN};

  /* Connect, start the flusher thread, fault the buffer in. */
  for (int i = 0; i < 10000 && rc == 0; i++) {
    next_key(key);
    rc |= check(intc_redis_command(cli, 6379, 0, 3, args, lens), "warm-up SET");
  }
  rc |= check(intc_flush(cli), "warm-up intc_flush");

  double ns[MAX_RUNS], cpu[MAX_RUNS];
  for (int r = 0; r < runs && rc == 0; r++) {
    long long c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    long long t0 = clock_ns(CLOCK_MONOTONIC);
    for (long i = 0; i < n; i++) {
      next_key(key);
      if (intc_redis_command(cli, 6379, 0, 3, args, lens) != INTC_OK) {
        rc |= check(INTC_ERR_IO, "SET");
        break;
      }
    }
    rc |= check(intc_flush(cli), "intc_flush");
    ns[r] = (double)(clock_ns(CLOCK_MONOTONIC) - t0) / (double)n;
    cpu[r] = (double)(clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / (double)n;
  }

  intc_stats_t stats;
  rc |= check(intc_cli_stats(cli, &stats), "intc_cli_stats");
  intc_cli_free(cli);

  unsigned long long received = 0;
  int status = 0;
  if (read(report[0], &received, sizeof received) != (ssize_t)sizeof received ||
      waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "bench_call: the reading child failed (status %d)\n", status);
    rc = 1;
  }
  if (rc == 0 && received != stats.bytes) {
    fprintf(stderr, "bench_call: the child read %llu bytes, the library wrote %llu\n", received,
            (unsigned long long)stats.bytes);
    rc = 1;
  }
  unlink(addr.sun_path);
  rmdir(dir);
  if (rc != 0) {
    return 1;
  }

  printf("ns_per_frame=%.1f cpu_ns_per_frame=%.1f n=%ld frames_per_flush=%.0f runs=", median(ns, runs),
         median(cpu, runs), n, stats.flushes ? (double)stats.frames / (double)stats.flushes : 0.0);
  for (int r = 0; r < runs; r++) {
    printf("%s%.1f", r ? "," : "", ns[r]);
  }
  printf("\n");
  return 0;
}
