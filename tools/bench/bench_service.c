/* bench_service.c - memsvcd round trips, bulk write/read bandwidth, small-op throughput */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tools/version.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * usage: bench_service ADDR lat N              acquire round trip on a resident tensor
 *        bench_service ADDR bw SIZE REPS       write and read of a SIZE-byte tensor (messages
 *                                              or mapped), through memsvc_acquire_map, and
 *                                              memcpy of SIZE bytes as the reference
 *        bench_service ADDR ops CLIENTS SECS [single|batch]
 *                                              acquires and releases from CLIENTS processes
 *        bench_service ADDR idle CLIENTS SECS PID  CPU of the daemon PID with idle clients
 * Prints "name value" lines (medians over the repetitions) for tools/bench/service.sh; exits
 * non-zero with a message on any error.
 * MEMSVC_BENCH_TCP=1 connects over tcp even to a local daemon (else the local path is used
 * when the daemon has its socket); the transport goes to stderr.
 */

static const char *addr;

static memsvc_conn_h connect_or_die(uint32_t job, uint32_t rank)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_RANK | MEMSVC_CONN_FIELD_NAME |
                                            MEMSVC_CONN_FIELD_FLAGS,
                              .address = addr,
                              .job     = job,
                              .rank    = rank,
                              .name    = "bench"};
    memsvc_status_t      status;
    memsvc_conn_h        conn;

    if ((getenv("MEMSVC_BENCH_TCP") != NULL) && (atoi(getenv("MEMSVC_BENCH_TCP")) != 0)) {
        p.flags = MEMSVC_CONN_TCP;
    }
    status = memsvc_connect(&p, &conn);
    if (status != MEMSVC_OK) {
        fprintf(stderr, "bench_service: connect %s: %s\n", addr, memsvc_strerror(status));
        exit(1);
    }
    if (rank == 0) {
        fprintf(stderr, "bench_service: %s\n", memsvc_conn_transport(conn));
    }
    return conn;
}

static void check(memsvc_status_t status, const char *what)
{
    if (status < 0) {
        fprintf(stderr, "bench_service: %s: %s\n", what, memsvc_strerror(status));
        exit(1);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median_double(double *v, unsigned n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static void bench_lat(unsigned n)
{
    memsvc_conn_h   conn = connect_or_die(1, 0);
    memsvc_handle_t h;
    uint64_t       *t = calloc(n, sizeof(*t)), t0, ping_p50;
    unsigned        i;

    if (t == NULL) {
        fprintf(stderr, "bench_service: out of memory\n");
        exit(1);
    }
    check(memsvc_alloc(conn, "bench.lat", 4096, NULL, &h), "alloc");
    for (i = 0; i < 1000; i++) { /* warm-up */
        check(memsvc_acquire(conn, h), "acquire");
        check(memsvc_release(conn, h), "release");
    }
    for (i = 0; i < n; i++) {
        t0 = msp_now_ns();
        check(memsvc_acquire(conn, h), "acquire");
        t[i] = msp_now_ns() - t0;
        check(memsvc_release(conn, h), "release");
    }
    qsort(t, n, sizeof(*t), cmp_u64);
    printf("acquire_rtt_p50_us %.2f\n", t[n / 2] / 1e3);
    printf("acquire_rtt_p99_us %.2f\n", t[(n * 99) / 100] / 1e3);
    for (i = 0; i < n; i++) {
        check(memsvc_ping(conn, &t[i]), "ping");
    }
    qsort(t, n, sizeof(*t), cmp_u64);
    ping_p50 = t[n / 2];
    printf("ping_rtt_p50_us %.2f\n", ping_p50 / 1e3);
    printf("ping_rtt_p99_us %.2f\n", t[(n * 99) / 100] / 1e3);
    check(memsvc_free(conn, h), "free");
    check(memsvc_flush(conn), "flush");
    memsvc_close(conn);
    free(t);
}

/* Seconds since t0, at least a nanosecond. */
static double secs_since(uint64_t t0)
{
    uint64_t dt = msp_now_ns() - t0;

    return (double)(dt ? dt : 1) / 1e9;
}

/*
 * SIZE-byte tensor: in each round, memsvc_write and memsvc_read (through the mapping on a
 * mapped local connection, messages otherwise), the same through a memsvc_acquire_map
 * pointer (acquire + memcpy + release, when mapped), and the reference: memcpy of SIZE bytes
 * between two buffers of this process, at the start and at the end of each round. Medians
 * over the rounds.
 */
static void bench_bw(uint64_t size, unsigned reps)
{
    memsvc_conn_h   conn = connect_or_die(1, 0);
    memsvc_handle_t h;
    double         *w = calloc(reps, sizeof(*w)), *r = calloc(reps, sizeof(*r));
    double         *mw = calloc(reps, sizeof(*mw)), *mr = calloc(reps, sizeof(*mr));
    double         *mc = calloc(2 * reps, sizeof(*mc));
    uint8_t        *buf = malloc(size), *back = malloc(size);
    void           *p;
    const void     *rp;
    uint64_t        t0;
    unsigned        i;
    bool            mapped;

    if ((w == NULL) || (r == NULL) || (mw == NULL) || (mr == NULL) || (mc == NULL) ||
        (buf == NULL) || (back == NULL)) {
        fprintf(stderr, "bench_service: out of memory\n");
        exit(1);
    }
    memset(buf, 0x5a, size);
    memset(back, 0, size);
    check(memsvc_alloc(conn, "bench.bw", size, NULL, &h), "alloc");
    check(memsvc_acquire(conn, h), "acquire"); /* resident and pinned: no swaps measured */
    check(memsvc_write(conn, h, 0, buf, size), "write");
    check(memsvc_acquire_map(conn, h, &p), "acquire_map");
    mapped = (p != NULL);
    check(memsvc_release(conn, h), "release");
    for (i = 0; i < reps; i++) {
        t0 = msp_now_ns();
        memcpy(back, buf, size);
        mc[2 * i] = (double)size / 1e9 / secs_since(t0);
        __asm__ volatile("" : : "r"(back) : "memory");
        buf[i % size] ^= 1;
        t0 = msp_now_ns();
        check(memsvc_write(conn, h, 0, buf, size), "write");
        w[i] = (double)size / 1e9 / secs_since(t0);
        t0   = msp_now_ns();
        check(memsvc_read(conn, h, 0, back, size), "read");
        r[i] = (double)size / 1e9 / secs_since(t0);
        if (mapped) {
            t0 = msp_now_ns();
            check(memsvc_acquire_map(conn, h, &p), "acquire_map");
            memcpy(p, buf, size);
            check(memsvc_release(conn, h), "release");
            mw[i] = (double)size / 1e9 / secs_since(t0);
            t0    = msp_now_ns();
            check(memsvc_acquire_map_ro(conn, h, &rp), "acquire_map_ro");
            memcpy(back, rp, size);
            check(memsvc_release(conn, h), "release");
            mr[i] = (double)size / 1e9 / secs_since(t0);
        }
        t0 = msp_now_ns(); /* the reference again, at the other end of the round */
        memcpy(back, buf, size);
        mc[2 * i + 1] = (double)size / 1e9 / secs_since(t0);
        __asm__ volatile("" : : "r"(back) : "memory");
    }
    check(memsvc_read(conn, h, 0, back, size), "read");
    if (memcmp(buf, back, size) != 0) {
        fprintf(stderr, "bench_service: read back differs\n");
        exit(1);
    }
    printf("memcpy_gbps %.3f\n", median_double(mc, 2 * reps));
    printf("write_gbps %.3f\n", median_double(w, reps));
    printf("read_gbps %.3f\n", median_double(r, reps));
    if (mapped) {
        printf("map_write_gbps %.3f\n", median_double(mw, reps));
        printf("map_read_gbps %.3f\n", median_double(mr, reps));
    }
    check(memsvc_release(conn, h), "release");
    check(memsvc_free(conn, h), "free");
    check(memsvc_flush(conn), "flush");
    memsvc_close(conn);
    free(w);
    free(r);
    free(mw);
    free(mr);
    free(mc);
    free(buf);
    free(back);
}

#define BATCH 32

/*
 * One client process of `ops`: connect, allocate BATCH tensors, say ready on `ready_fd`, wait
 * for the start byte on `go_fd`, then for `secs` acquire and release (one pair at a time, the
 * release one-way, or in batches of BATCH acquires followed by BATCH one-way releases that
 * ride on the next batch). Writes its count of operations (an acquire or a release is one)
 * to `ready_fd` and exits; exits 1 on any error.
 */
static void ops_client(unsigned idx, bool batched, double secs, int ready_fd, int go_fd)
{
    memsvc_conn_h   conn = connect_or_die(1, idx);
    memsvc_handle_t h[BATCH];
    memsvc_batch_h  b;
    uint64_t        end, ops = 0;
    unsigned        i;
    char            key[32], c;

    for (i = 0; i < BATCH; i++) {
        snprintf(key, sizeof(key), "bench.ops.%u.%u", idx, i);
        check(memsvc_alloc(conn, key, 4096, NULL, &h[i]), "alloc");
    }
    check(memsvc_batch_create(conn, &b), "batch_create");
    check(memsvc_flush(conn), "flush");
    if ((write(ready_fd, "r", 1) != 1) || (read(go_fd, &c, 1) != 1)) {
        exit(1);
    }
    end = msp_now_ns() + (uint64_t)(secs * 1e9);
    while (msp_now_ns() < end) {
        if (batched) {
            check(memsvc_batch_reset(b), "batch_reset");
            for (i = 0; i < BATCH; i++) {
                check(memsvc_batch_acquire(b, h[i], NULL), "batch_acquire");
            }
            check(memsvc_batch_submit(b, NULL), "batch_submit");
            for (i = 0; i < BATCH; i++) {
                check(memsvc_release(conn, h[i]), "release");
            }
            ops += 2 * BATCH;
        } else {
            check(memsvc_acquire(conn, h[0]), "acquire");
            check(memsvc_release(conn, h[0]), "release");
            ops += 2;
        }
    }
    check(memsvc_flush(conn), "flush"); /* every release handled, none failed */
    memsvc_batch_destroy(b);
    for (i = 0; i < BATCH; i++) {
        check(memsvc_free(conn, h[i]), "free");
    }
    check(memsvc_flush(conn), "flush");
    memsvc_close(conn);
    if (write(ready_fd, &ops, sizeof(ops)) != sizeof(ops)) {
        exit(1);
    }
    exit(0);
}

/* CLIENTS processes (fork) run ops_client at once; the aggregate operations per second. */
static void bench_ops(unsigned clients, double secs, bool batched)
{
    int      rp[2], gp[2], st;
    pid_t    pid[64];
    uint64_t total = 0, ops;
    unsigned i, failed = 0;
    char     c;

    if ((clients == 0) || (clients > 64) || (pipe(rp) != 0) || (pipe(gp) != 0)) {
        fprintf(stderr, "bench_service: 1..64 clients\n");
        exit(2);
    }
    fflush(stdout);
    for (i = 0; i < clients; i++) {
        pid[i] = fork();
        if (pid[i] < 0) {
            perror("bench_service: fork");
            exit(1);
        }
        if (pid[i] == 0) {
            ops_client(i, batched, secs, rp[1], gp[0]);
        }
    }
    for (i = 0; i < clients; i++) { /* every client connected and ready */
        if (read(rp[0], &c, 1) != 1) {
            fprintf(stderr, "bench_service: a client failed to start\n");
            exit(1);
        }
    }
    for (i = 0; i < clients; i++) {
        if (write(gp[1], "g", 1) != 1) {
            exit(1);
        }
    }
    for (i = 0; i < clients; i++) {
        if (read(rp[0], &ops, sizeof(ops)) != sizeof(ops)) {
            failed++;
            break;
        }
        total += ops;
    }
    for (i = 0; i < clients; i++) {
        if ((waitpid(pid[i], &st, 0) != pid[i]) || !WIFEXITED(st) || (WEXITSTATUS(st) != 0)) {
            failed++;
        }
    }
    if (failed > 0) {
        fprintf(stderr, "bench_service: ops: a client failed\n");
        exit(1);
    }
    printf("ops_per_s_%s_%uc %.0f\n", batched ? "batch" : "single", clients,
           (double)total / secs);
}

/* utime + stime of a process, in clock ticks; exits when it cannot be read. */
static uint64_t proc_cpu_ticks(pid_t pid)
{
    char               path[64], line[1024], *s;
    unsigned long long ut, st;
    FILE              *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if ((f == NULL) || (fgets(line, sizeof(line), f) == NULL)) {
        fprintf(stderr, "bench_service: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    s = strrchr(line, ')'); /* the name may hold spaces: fields 3.. follow its ')' */
    if ((s == NULL) ||
        (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)) {
        fprintf(stderr, "bench_service: cannot parse %s\n", path);
        exit(1);
    }
    return ut + st;
}

/* CLIENTS connections that stay idle for SECS; the daemon's CPU over that time, in % of a core. */
static void bench_idle(unsigned clients, double secs, pid_t daemon)
{
    memsvc_conn_h conn[64];
    uint64_t      c0, c1, t0;
    double        dt;
    unsigned      i;

    if ((clients == 0) || (clients > 64)) {
        fprintf(stderr, "bench_service: 1..64 clients\n");
        exit(2);
    }
    for (i = 0; i < clients; i++) {
        conn[i] = connect_or_die(1, i);
        check(memsvc_flush(conn[i]), "flush");
    }
    /* Let the daemon finish setting these sessions up (and tearing down earlier ones:
     * destroying a worker takes milliseconds): wait, up to 2 s, for a 100 ms window in which
     * it used no CPU. A daemon that polls never gets one. */
    for (i = 0; i < 20; i++) {
        c0 = proc_cpu_ticks(daemon);
        usleep(100000);
        if (proc_cpu_ticks(daemon) == c0) {
            break;
        }
    }
    c0 = proc_cpu_ticks(daemon);
    t0 = msp_now_ns();
    usleep((useconds_t)(secs * 1e6));
    c1 = proc_cpu_ticks(daemon);
    dt = secs_since(t0);
    printf("idle_cpu_pct_%uc %.1f\n", clients,
           100.0 * (double)(c1 - c0) / (double)sysconf(_SC_CLK_TCK) / dt);
    for (i = 0; i < clients; i++) {
        memsvc_close(conn[i]);
    }
}

#define BENCH_USAGE                                                                                \
    "usage: bench_service ADDR lat N | bw SIZE REPS | ops CLIENTS SECS [single|batch] | "                 \
    "idle CLIENTS SECS DAEMON_PID\n"

/* A whole positive number (or 0 < x for seconds); exits 2 naming the argument otherwise. */
static uint64_t arg_count(const char *what, const char *s)
{
    char              *end;
    unsigned long long v;

    errno = 0;
    v     = strtoull(s, &end, 10);
    if ((s[0] == '-') || (end == s) || (*end != '\0') || (errno != 0) || (v == 0)) {
        fprintf(stderr, "bench_service: %s: '%s' is not a whole number > 0\n", what, s);
        exit(2);
    }
    return v;
}

static double arg_secs(const char *s)
{
    char  *end;
    double v = strtod(s, &end);

    if ((end == s) || (*end != '\0') || !(v > 0) || (v > 3600)) {
        fprintf(stderr, "bench_service: SECS: '%s' is not a number of seconds in (0, 3600]\n", s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (tool_version_asked(argc, argv, "bench_service")) {
        return 0;
    }
    if ((argc == 2) && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(BENCH_USAGE, stdout);
        return 0;
    }
    if (argc < 3) {
        fputs(BENCH_USAGE, stderr);
        return 2;
    }
    addr = argv[1];
    if ((strcmp(argv[2], "lat") == 0) && (argc == 4)) {
        bench_lat((unsigned)arg_count("N", argv[3]));
    } else if ((strcmp(argv[2], "bw") == 0) && (argc == 5)) {
        bench_bw(arg_count("SIZE", argv[3]), (unsigned)arg_count("REPS", argv[4]));
    } else if ((strcmp(argv[2], "ops") == 0) &&
               ((argc == 5) || ((argc == 6) && ((strcmp(argv[5], "batch") == 0) ||
                                                  (strcmp(argv[5], "single") == 0))))) {
        bench_ops((unsigned)arg_count("CLIENTS", argv[3]), arg_secs(argv[4]),
                  (argc == 6) && (strcmp(argv[5], "batch") == 0));
    } else if ((strcmp(argv[2], "idle") == 0) && (argc == 6)) {
        bench_idle((unsigned)arg_count("CLIENTS", argv[3]), arg_secs(argv[4]),
                   (pid_t)arg_count("DAEMON_PID", argv[5]));
    } else {
        fprintf(stderr, "bench_service: bad arguments (bench_service --help)\n");
        return 2;
    }
    return 0;
}
