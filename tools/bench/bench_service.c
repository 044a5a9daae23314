/* bench_service.c - memsvcd round trips, bulk write/read bandwidth, small-op throughput */
#include "client/memsvc.h"
#include "client/msp_ucx.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * usage: bench_service ADDR lat N             acquire round trip on a resident tensor
 *        bench_service ADDR bw SIZE REPS      write and read of SIZE-byte tensors
 *        bench_service ADDR ops CLIENTS SECS  acquire+release pairs from CLIENTS threads
 * Prints "name value" lines (medians over the repetitions) for tools/bench/service.sh.
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

static void bench_lat(unsigned n)
{
    memsvc_conn_h   conn = connect_or_die(1, 0);
    memsvc_handle_t h;
    uint64_t       *t = calloc(n, sizeof(*t)), t0, ping_p50;
    unsigned        i;

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
    memsvc_free(conn, h);
    memsvc_close(conn);
    free(t);
}

static void bench_bw(uint64_t size, unsigned reps)
{
    memsvc_conn_h   conn = connect_or_die(1, 0);
    memsvc_handle_t h;
    double         *w = calloc(reps, sizeof(*w)), *r = calloc(reps, sizeof(*r));
    uint8_t        *buf = malloc(size), *back = malloc(size);
    uint64_t        t0;
    unsigned        i;

    if ((w == NULL) || (r == NULL) || (buf == NULL) || (back == NULL)) {
        fprintf(stderr, "bench_service: out of memory\n");
        exit(1);
    }
    memset(buf, 0x5a, size);
    check(memsvc_alloc(conn, "bench.bw", size, NULL, &h), "alloc");
    check(memsvc_acquire(conn, h), "acquire"); /* resident and pinned: no swaps measured */
    check(memsvc_write(conn, h, 0, buf, size), "write");
    for (i = 0; i < reps; i++) {
        t0 = msp_now_ns();
        check(memsvc_write(conn, h, 0, buf, size), "write");
        w[i] = (double)size / (double)(msp_now_ns() - t0); /* bytes per ns = GB/s */
        t0   = msp_now_ns();
        check(memsvc_read(conn, h, 0, back, size), "read");
        r[i] = (double)size / (double)(msp_now_ns() - t0);
    }
    if (memcmp(buf, back, size) != 0) {
        fprintf(stderr, "bench_service: read back differs\n");
        exit(1);
    }
    qsort(w, reps, sizeof(*w), cmp_double);
    qsort(r, reps, sizeof(*r), cmp_double);
    printf("write_gbps %.3f\n", w[reps / 2]);
    printf("read_gbps %.3f\n", r[reps / 2]);
    memsvc_release(conn, h);
    memsvc_free(conn, h);
    memsvc_close(conn);
    free(w);
    free(r);
    free(buf);
    free(back);
}

typedef struct ops_arg {
    unsigned idx;
    double   secs;
    uint64_t ops;
} ops_arg_t;

static void *ops_thread(void *arg)
{
    ops_arg_t      *a    = arg;
    memsvc_conn_h   conn = connect_or_die(1, a->idx);
    memsvc_handle_t h;
    uint64_t        end;
    char            key[32];

    snprintf(key, sizeof(key), "bench.ops.%u", a->idx);
    check(memsvc_alloc(conn, key, 4096, NULL, &h), "alloc");
    end = msp_now_ns() + (uint64_t)(a->secs * 1e9);
    while (msp_now_ns() < end) {
        check(memsvc_acquire(conn, h), "acquire");
        check(memsvc_release(conn, h), "release");
        a->ops += 2;
    }
    memsvc_free(conn, h);
    memsvc_close(conn);
    return NULL;
}

static void bench_ops(unsigned clients, double secs)
{
    pthread_t th[64];
    ops_arg_t args[64];
    uint64_t  total = 0;
    unsigned  i;

    if ((clients == 0) || (clients > 64)) {
        fprintf(stderr, "bench_service: 1..64 clients\n");
        exit(2);
    }
    for (i = 0; i < clients; i++) {
        args[i] = (ops_arg_t){.idx = i, .secs = secs};
        pthread_create(&th[i], NULL, ops_thread, &args[i]);
    }
    for (i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        total += args[i].ops;
    }
    printf("ops_per_s_%uc %.0f\n", clients, (double)total / secs);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_service ADDR lat N | bw SIZE REPS | ops CLIENTS SECS\n");
        return 2;
    }
    addr = argv[1];
    if ((strcmp(argv[2], "lat") == 0) && (argc == 4)) {
        bench_lat((unsigned)strtoul(argv[3], NULL, 10));
    } else if ((strcmp(argv[2], "bw") == 0) && (argc == 5)) {
        bench_bw(strtoull(argv[3], NULL, 10), (unsigned)strtoul(argv[4], NULL, 10));
    } else if ((strcmp(argv[2], "ops") == 0) && (argc == 5)) {
        bench_ops((unsigned)strtoul(argv[3], NULL, 10), strtod(argv[4], NULL));
    } else {
        fprintf(stderr, "bench_service: bad arguments\n");
        return 2;
    }
    return 0;
}
