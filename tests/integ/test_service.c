/* test_service.c - memsvcd and libmemsvc end to end: data through swaps, isolation, crashes, load
 */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const tiny_backed[] = {"--node",         "tiny", "--memory", "backed",
                                          "--keep-durable", "60",   NULL};

static void test_connect_ping_stats(void)
{
    integ_daemon_t  d;
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    memsvc_conn_h   conn;
    uint64_t        rtt = 0;

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    CU_ASSERT_EQUAL(memsvc_ping(conn, &rtt), MEMSVC_OK);
    CU_ASSERT(rtt > 0);
    CU_ASSERT_STRING_NOT_EQUAL(memsvc_conn_transport(conn), "unknown");
    CU_ASSERT_EQUAL(memsvc_stats(conn, st), MEMSVC_OK);
    CU_ASSERT_STRING_EQUAL(st->node, "tiny");
    CU_ASSERT_STRING_EQUAL(st->mode, "backed");
    CU_ASSERT(st->num_devices >= 1);
    CU_ASSERT(st->dev[0].capacity > 0);
    CU_ASSERT(st->sessions >= 1);
    CU_ASSERT_STRING_NOT_EQUAL(st->transport, "none yet");
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    CU_ASSERT(integ_log_contains(&d, "over "));
    free(st);
}

/* Fill, then read back everything after the daemon had to swap most of it out. */
static void test_bytes_survive_swaps(void)
{
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    memsvc_handle_t h[16];
    uint64_t        cap, size, swaps = 0;
    uint8_t        *buf, *want;
    unsigned        i, n = 12, dev;
    char            key[32];

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_stats(&d, st));
    cap  = st->dev[0].capacity;
    size = cap / 4; /* 12 of them: three times the HBM */
    buf  = malloc(size);
    want = malloc(size);
    CU_ASSERT_FATAL((buf != NULL) && (want != NULL));
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    for (i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "L%u.act", i);
        CU_ASSERT_EQUAL_FATAL(memsvc_alloc(conn, key, size, NULL, &h[i]), MEMSVC_OK);
        test_fill(want, size, i + 1);
        CU_ASSERT_EQUAL_FATAL(memsvc_write(conn, h[i], 0, want, size), MEMSVC_OK);
    }
    /* Read back (from host or device), then acquire each (swap-in) and read again. */
    for (i = 0; i < n; i++) {
        test_fill(want, size, i + 1);
        memset(buf, 0, size);
        CU_ASSERT_EQUAL(memsvc_read(conn, h[i], 0, buf, size), MEMSVC_OK);
        CU_ASSERT(memcmp(buf, want, size) == 0);
    }
    for (i = 0; i < n; i++) {
        test_fill(want, size, i + 1);
        CU_ASSERT_EQUAL(memsvc_acquire(conn, h[i]), MEMSVC_OK);
        memset(buf, 0, size);
        CU_ASSERT_EQUAL(memsvc_read(conn, h[i], 0, buf, size), MEMSVC_OK);
        CU_ASSERT(memcmp(buf, want, size) == 0);
        CU_ASSERT_EQUAL(memsvc_release(conn, h[i]), MEMSVC_OK);
    }
    /* A partial write in the middle, read across it. */
    memset(want, 0xab, 1000);
    CU_ASSERT_EQUAL(memsvc_write(conn, h[3], 4096, want, 1000), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_read(conn, h[3], 4096, buf, 1000), MEMSVC_OK);
    CU_ASSERT(memcmp(buf, want, 1000) == 0);
    TEST_ASSERT_OK(integ_stats(&d, st));
    for (dev = 0; dev < st->num_devices; dev++) {
        swaps += st->dev[dev].swap_outs;
    }
    CU_ASSERT(swaps > 0);
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(buf);
    free(want);
    free(st);
}

static bool count_cb(void *arg, const memsvc_tensor_info_t *info)
{
    (*(unsigned *)arg)++;
    return true;
}

static void test_jobs_are_isolated(void)
{
    integ_daemon_t       d;
    memsvc_conn_h        a, b;
    memsvc_handle_t      ha, hb;
    memsvc_tensor_info_t info;
    uint8_t              data[256], back[256];
    unsigned             count = 0;

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &a));
    TEST_ASSERT_OK(integ_connect(&d, 2, 0, &b));
    test_fill(data, sizeof(data), 7);
    TEST_ASSERT_OK(memsvc_alloc(a, "secret", sizeof(data), NULL, &ha));
    TEST_ASSERT_OK(memsvc_write(a, ha, 0, data, sizeof(data)));
    /* the same key in another job is another tensor */
    TEST_ASSERT_OK(memsvc_alloc(b, "secret", sizeof(data), NULL, &hb));
    CU_ASSERT_NOT_EQUAL(ha, hb);

    /* another job's handle is answered as one nobody holds (tests/integ/test_auth.c) */
    CU_ASSERT_EQUAL(memsvc_read(b, ha, 0, back, sizeof(back)), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_write(b, ha, 0, back, sizeof(back)), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_acquire(b, ha), MEMSVC_ERR_NOT_FOUND);
    /* one-way: the errors come back deferred */
    CU_ASSERT_EQUAL(memsvc_release(b, ha), MEMSVC_OK);
    CU_ASSERT_EQUAL(integ_deferred(b, MEMSVC_OP_RELEASE, ha), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_free(b, ha), MEMSVC_OK);
    CU_ASSERT_EQUAL(integ_deferred(b, MEMSVC_OP_FREE, ha), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_list(b, 1, count_cb, &count), MEMSVC_ERR_ACCESS);
    CU_ASSERT_EQUAL(memsvc_lookup(b, "secret", &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.handle, hb); /* its own, not job 1's */
    CU_ASSERT_EQUAL(memsvc_list(b, 2, count_cb, &count), MEMSVC_OK);
    CU_ASSERT_EQUAL(count, 1);

    /* job 1's bytes are untouched */
    TEST_ASSERT_OK(memsvc_read(a, ha, 0, back, sizeof(back)));
    CU_ASSERT(memcmp(back, data, sizeof(data)) == 0);
    memsvc_close(a);
    memsvc_close(b);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

static void test_bad_calls_named_errors(void)
{
    memsvc_stats_t      *st = calloc(1, sizeof(*st));
    integ_daemon_t       d;
    memsvc_conn_h        conn;
    memsvc_handle_t      h, h2;
    memsvc_tensor_info_t info;
    memsvc_status_t      sts[3];
    memsvc_handle_t      hs[3];
    memsvc_conn_params_t p;
    uint8_t              buf[64] = {0};

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", 4096, NULL, &h));
    CU_ASSERT_EQUAL(memsvc_alloc(conn, "t", 4096, NULL, &h2), MEMSVC_ERR_EXISTS);
    CU_ASSERT_EQUAL(memsvc_alloc(conn, "huge", 1ull << 50, NULL, &h2), MEMSVC_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK); /* one-way */
    CU_ASSERT_EQUAL(integ_deferred(conn, MEMSVC_OP_RELEASE, h), MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(memsvc_read(conn, h, 4090, buf, 7), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(memsvc_write(conn, h, 4097, buf, 1), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(memsvc_read(conn, h, UINT64_MAX - 3, buf, 8), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(memsvc_acquire(conn, 0xdeadbeefull), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_write(conn, h, 4096, NULL, 0), MEMSVC_OK); /* empty, at the end */
    CU_ASSERT_EQUAL(memsvc_read(conn, h, 0, NULL, 0), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_read(conn, h, 4097, NULL, 0), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(memsvc_lookup(conn, "nope", &info), MEMSVC_ERR_NOT_FOUND);
    /* a batch with one bad handle: the others succeed */
    hs[0] = h;
    hs[1] = 0x12345ull;
    hs[2] = h;
    CU_ASSERT_EQUAL(memsvc_acquire_many(conn, hs, 3, sts), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(sts[0], MEMSVC_OK);
    CU_ASSERT_EQUAL(sts[1], MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(sts[2], MEMSVC_OK);
    hs[1] = h;
    CU_ASSERT_EQUAL(memsvc_release_many(conn, hs, 3, sts), MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(sts[2], MEMSVC_ERR_NOT_PINNED);
    TEST_ASSERT_OK(memsvc_free(conn, h));
    CU_ASSERT_EQUAL(memsvc_free(conn, h), MEMSVC_OK); /* double free: one-way */
    CU_ASSERT_EQUAL(integ_deferred(conn, MEMSVC_OP_FREE, h), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_read(conn, h, 0, buf, 1), MEMSVC_ERR_NOT_FOUND); /* stale handle */
    memsvc_close(conn);
    /* a device the node does not have, a job 0 without the control flag */
    memset(&p, 0, sizeof(p));
    p.field_mask =
        MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_DEVICE | MEMSVC_CONN_FIELD_TIMEOUT_MS;
    p.address    = d.addr;
    p.device     = 1000;
    p.timeout_ms = 5000;
    CU_ASSERT_EQUAL(memsvc_connect(&p, &conn), MEMSVC_ERR_INVALID_PARAM);
    p.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB;
    p.job        = 0;
    CU_ASSERT_EQUAL(memsvc_connect(&p, &conn), MEMSVC_ERR_INVALID_PARAM);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->errors > 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static void test_async_acquire_release(void)
{
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    memsvc_handle_t h[4];
    memsvc_req_h    r[4];
    memsvc_status_t s;
    unsigned        i;
    char            key[16];

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    for (i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "a%u", i);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, 8192, NULL, &h[i]));
    }
    for (i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(memsvc_acquire_nb(conn, h[i], &r[i]), MEMSVC_INPROGRESS);
    }
    for (i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(memsvc_wait(r[i], 5000), MEMSVC_OK);
    }
    for (i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(memsvc_release_nb(conn, h[i], &r[i]), MEMSVC_INPROGRESS);
        do {
            s = memsvc_test(r[i]);
        } while (s == MEMSVC_INPROGRESS);
        CU_ASSERT_EQUAL(s, MEMSVC_OK);
    }
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* A child connects, allocates, writes, acquires, then is killed with SIGKILL. */
static void test_kill9_releases_pins_keeps_durable(void)
{
    memsvc_stats_t      *st = calloc(1, sizeof(*st));
    integ_daemon_t       d;
    memsvc_tensor_info_t info;
    memsvc_conn_h        conn;
    uint8_t              want[4096], back[4096];
    uint64_t             deadline;
    int                  status;
    pid_t                pid;
    bool                 clean = false;

    START(&d, tiny_backed);
    test_fill(want, sizeof(want), 99);
    pid = integ_spawn(&d, "hold");
    CU_ASSERT_FATAL(pid > 0);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 2);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);

    /* The daemon notices the dead peer: pins released, the activation freed. */
    deadline = msp_now_ns() + 20000000000ull;
    while (msp_now_ns() < deadline) {
        if ((integ_stats(&d, st) == MEMSVC_OK) && (st->dev[0].pinned_tensors == 0) &&
            (st->orphans == 1)) {
            clean = true;
            break;
        }
        usleep(100000);
    }
    CU_ASSERT(clean);
    CU_ASSERT_EQUAL(st->live_tensors, 1);

    /* The restarted rank re-attaches by key and finds its bytes. */
    TEST_ASSERT_OK(integ_connect(&d, 3, 5, &conn));
    CU_ASSERT_EQUAL(memsvc_lookup(conn, "x.act", &info), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL_FATAL(memsvc_lookup(conn, "w.param", &info), MEMSVC_OK);
    CU_ASSERT(info.durable);
    CU_ASSERT_EQUAL(info.pins, 0);
    CU_ASSERT_EQUAL(memsvc_read(conn, info.handle, 0, back, sizeof(back)), MEMSVC_OK);
    CU_ASSERT(memcmp(back, want, sizeof(want)) == 0);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->orphans, 0);
    memsvc_close(conn);
    CU_ASSERT(integ_log_contains(&d, "disconnected"));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* A child dies in the middle of sending a large write: the daemon keeps serving. */
static void test_client_vanishes_mid_transfer(void)
{
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    memsvc_handle_t h;
    uint8_t         want[1024], back[1024];
    int             status;
    pid_t           pid;

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    test_fill(want, sizeof(want), 5);
    TEST_ASSERT_OK(memsvc_alloc(conn, "keep", sizeof(want), NULL, &h));
    TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, sizeof(want)));
    pid = integ_spawn(&d, "bigwrite");
    CU_ASSERT_FATAL(pid > 0);
    usleep(20000);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    /* The other session and its bytes are fine. */
    memset(back, 0, sizeof(back));
    CU_ASSERT_EQUAL(memsvc_read(conn, h, 0, back, sizeof(back)), MEMSVC_OK);
    CU_ASSERT(memcmp(back, want, sizeof(want)) == 0);
    CU_ASSERT_EQUAL(memsvc_ping(conn, NULL), MEMSVC_OK);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* ---- writes received in place ------------------------------------------------------------- */

#define INPLACE_UNIT (4ull << 20) /* one memsvc_write of the writer: one WRITE (libmemsvc sends
                                   * up to 4 MiB in one), received in place */

#define INPLACE_UNITS 4u

/*
 * "service-writer": job 1 rank 1 writes the tensor MEMSVC_TEST_HANDLE (hex) unit by unit, each
 * unit all one byte value, a new value per pass (odd values from MEMSVC_TEST_SEED on, so that
 * one writer's values differ from the last one's), over tcp (MEMSVC_TEST_MODE "tcp") or the
 * local socket, until killed. A write that fails exits: 0 if it answered MEMSVC_ERR_NOT_FOUND (the
 * tensor was freed), 3 otherwise.
 */
static void child_writer(integ_daemon_t *d, int fd)
{
    const char     *hs   = getenv("MEMSVC_TEST_HANDLE");
    const char     *mode = getenv("MEMSVC_TEST_MODE");
    const char     *base = getenv("MEMSVC_TEST_SEED");
    memsvc_handle_t h    = (hs != NULL) ? strtoull(hs, NULL, 16) : 0;
    uint8_t        *buf  = malloc(INPLACE_UNIT);
    memsvc_conn_h   conn;
    memsvc_status_t status;
    unsigned        v, u;

    if ((h == 0) || (mode == NULL) || (base == NULL) || (buf == NULL) ||
        (integ_connect_flags(d, 1, 1, (strcmp(mode, "tcp") == 0) ? MEMSVC_CONN_TCP : 0,
                             &conn) != MEMSVC_OK)) {
        _exit(1);
    }
    integ_child_ready(fd);
    for (v = (unsigned)atoi(base);; v += 2) {
        memset(buf, (int)(v % 254) + 1, INPLACE_UNIT);
        for (u = 0; u < INPLACE_UNITS; u++) {
            status = memsvc_write(conn, h, u * INPLACE_UNIT, buf, INPLACE_UNIT);
            if (status != MEMSVC_OK) {
                _exit((status == MEMSVC_ERR_NOT_FOUND) ? 0 : 3);
            }
        }
    }
}

void integ_service_child(integ_daemon_t *d, const char *role, int ready_fd)
{
    if (strcmp(role, "service-writer") == 0) {
        child_writer(d, ready_fd);
    }
    _exit(2);
}

static pid_t spawn_writer(integ_daemon_t *d, memsvc_handle_t h, const char *mode, unsigned seed)
{
    char        hex[32], sd[16];
    const char *env[] = {"MEMSVC_TEST_HANDLE", hex, "MEMSVC_TEST_MODE", mode,
                         "MEMSVC_TEST_SEED",   sd,  NULL};

    snprintf(hex, sizeof(hex), "%" PRIx64, (uint64_t)h);
    snprintf(sd, sizeof(sd), "%u", seed);
    return integ_spawn_env(d, "service-writer", env);
}

/* Each unit of the tensor all one value (what one write left), or -1 where one is mixed. */
static int units_whole(memsvc_conn_h conn, memsvc_handle_t h, uint8_t *back)
{
    unsigned u;
    uint64_t i;

    if (memsvc_read(conn, h, 0, back, INPLACE_UNITS * INPLACE_UNIT) != MEMSVC_OK) {
        return -2;
    }
    for (u = 0; u < INPLACE_UNITS; u++) {
        for (i = 1; i < INPLACE_UNIT; i++) {
            if (back[u * INPLACE_UNIT + i] != back[u * INPLACE_UNIT]) {
                return -1;
            }
        }
    }
    return 0;
}

/*
 * WRITEs of a MiB or more are received straight into the tensor. A writer killed mid-receive
 * (over tcp and over the local socket) never leaves a half-written unit served as valid: a
 * read shows whole units or answers that the tensor is uncommitted. A tensor freed while a
 * write into it is under way: the writer is told NOT_FOUND, the bytes that were still coming
 * land in no other tensor, and the space comes back once the receive is over.
 */
static void test_writes_received_in_place(void)
{
    static const char *const modes[]        = {"tcp", "local"};
    static const char *const no_pin_table[] = {"--node", "tiny", "--memory", "backed",
                                               "--no-fast-pin", NULL};
    const uint64_t           size    = INPLACE_UNITS * INPLACE_UNIT;
    uint8_t                 *want    = malloc(size), *back = malloc(size);
    memsvc_status_t          status;
    memsvc_stats_t          *st = calloc(1, sizeof(*st));
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h, other, big;
    unsigned                 pass, round, torn[2] = {0, 0}, whole[2] = {0, 0};
    pid_t                    pid;
    int                      wst;

    CU_ASSERT_FATAL((want != NULL) && (back != NULL) && (st != NULL));
    START(&d, no_pin_table); /* local writes are messages too, not copies into a mapping */
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    memset(want, 0, size);
    for (pass = 0; pass < 2; pass++) {
        /* killed mid-write */
        TEST_ASSERT_OK(memsvc_alloc(conn, "inplace", size, NULL, &h));
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, size));
        for (round = 0; round < 6; round++) {
            pid = spawn_writer(&d, h, modes[pass], 1 + 40 * round);
            CU_ASSERT_FATAL(pid > 0);
            usleep(3000 + 7000 * round);
            integ_kill_wait(pid);
            CU_ASSERT(integ_wait_sessions(&d, 2, st)); /* this one and the stats' */
            status = units_whole(conn, h, back);
            if (status == -2) {
                CU_ASSERT_EQUAL(memsvc_read(conn, h, 0, back, size), MEMSVC_ERR_ILLEGAL_STATE);
                TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, size)); /* the owner's again */
                torn[pass]++;
            } else {
                CU_ASSERT_EQUAL(status, 0); /* never a mixed unit served */
                whole[pass]++;
            }
        }
        /* freed while a write into it is under way */
        pid = spawn_writer(&d, h, modes[pass], 1);
        CU_ASSERT_FATAL(pid > 0);
        usleep(20000);
        TEST_ASSERT_OK(memsvc_free(conn, h));
        TEST_ASSERT_OK(memsvc_alloc(conn, "other", size, NULL, &other));
        test_fill(want, size, 61 + pass);
        TEST_ASSERT_OK(memsvc_write(conn, other, 0, want, size));
        CU_ASSERT_EQUAL(waitpid(pid, &wst, 0), pid);
        CU_ASSERT(WIFEXITED(wst) && (WEXITSTATUS(wst) == 0)); /* told NOT_FOUND */
        TEST_ASSERT_OK(memsvc_read(conn, other, 0, back, size));
        CU_ASSERT(memcmp(back, want, size) == 0);
        /* every receive into the freed tensor is over: its space is back */
        TEST_ASSERT_OK(memsvc_free(conn, other));
        TEST_ASSERT_OK(memsvc_flush(conn));
        TEST_ASSERT_OK(memsvc_alloc(conn, "big", 60ull << 20, NULL, &big));
        TEST_ASSERT_OK(memsvc_free(conn, big));
        TEST_ASSERT_OK(memsvc_flush(conn));
        memset(want, 0, size);
    }
    printf(" [writers killed: over tcp %u left it uncommitted, %u whole; local %u, %u] ",
           torn[0], whole[0], torn[1], whole[1]);
    /* Most tcp kills land during a receive (3-6 of 6 in the runs seen; 0 when a failed
     * receive was let mark the tensor valid): the path of a loan that fails was taken. */
    CU_ASSERT(torn[0] > 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(want);
    free(back);
}

/* ---- many clients -----------------------------------------------------------------------------
 */

typedef struct worker_arg {
    const integ_daemon_t *d;
    unsigned              idx;
    unsigned              failures;
} worker_arg_t;

static void *worker_main(void *arg)
{
    worker_arg_t   *w = arg;
    memsvc_conn_h   conn;
    memsvc_handle_t h[4];
    uint8_t         want[8192], back[8192];
    unsigned        i, round;
    char            key[32];

    if (integ_connect(w->d, 10 + (w->idx % 3), w->idx, &conn) != MEMSVC_OK) {
        w->failures++;
        return NULL;
    }
    for (round = 0; round < 10; round++) {
        for (i = 0; i < 4; i++) {
            snprintf(key, sizeof(key), "w%u.r%u.t%u", w->idx, round, i);
            if (memsvc_alloc(conn, key, sizeof(want), NULL, &h[i]) != MEMSVC_OK) {
                w->failures++;
                h[i] = 0;
                continue;
            }
            test_fill(want, sizeof(want), w->idx * 1000 + round * 10 + i);
            w->failures += (memsvc_write(conn, h[i], 0, want, sizeof(want)) != MEMSVC_OK);
        }
        for (i = 0; i < 4; i++) {
            if (h[i] == 0) {
                continue;
            }
            w->failures += (memsvc_acquire(conn, h[i]) < 0);
            test_fill(want, sizeof(want), w->idx * 1000 + round * 10 + i);
            w->failures += (memsvc_read(conn, h[i], 0, back, sizeof(back)) != MEMSVC_OK);
            w->failures += (memcmp(back, want, sizeof(want)) != 0);
            w->failures += (memsvc_release(conn, h[i]) != MEMSVC_OK);
            w->failures += (memsvc_ping(conn, NULL) != MEMSVC_OK);
            w->failures += (memsvc_free(conn, h[i]) != MEMSVC_OK);
        }
    }
    memsvc_close(conn);
    return NULL;
}

static void test_eight_clients(void)
{
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    integ_daemon_t  d;
    pthread_t       th[8];
    worker_arg_t    args[8];
    unsigned        i;

    START(&d, tiny_backed);
    for (i = 0; i < 8; i++) {
        args[i] = (worker_arg_t){.d = &d, .idx = i};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, worker_main, &args[i]) == 0);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(args[i].failures, 0);
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->live_tensors, 0);
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    CU_ASSERT(st->sessions_total >= 9);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static void test_daemon_refuses_bad_setups(void)
{
    static const char *const too_big[] = {"--node", "tiny",      "--memory",
                                          "backed", "hbm=64TiB", NULL};
    static const char *const remote[]  = {"--node", "tiny", NULL};
    integ_daemon_t           d;
    char                     path[512];
    int                      status;
    pid_t                    pid;

    /* Backed memory larger than the machine: refused at start, with a message. */
    CU_ASSERT_FALSE(integ_daemon_start(&d, too_big));
    CU_ASSERT(integ_log_contains(&d, "this machine holds"));
    /* A non-loopback address without --allow-remote. */
    snprintf(path, sizeof(path), "%s/memsvcd", test_bin_dir());
    pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);

        dup2(fd, 2);
        execl(path, path, "--listen", "0.0.0.0:1", remote[0], remote[1], (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && (WEXITSTATUS(status) == 2));
}

/* Run memsvc-ctl against d; its stdout goes to out. Returns its exit status. */
static int run_ctl(const integ_daemon_t *d, const char *args, char *out, size_t len)
{
    char   cmd[1024];
    size_t n = 0, got;
    FILE  *f;
    int    status;

    snprintf(cmd, sizeof(cmd), "%s/memsvc-ctl --address %s --timeout 10000 %s", test_bin_dir(),
             d->addr, args);
    f = popen(cmd, "r");
    if (f == NULL) {
        return -1;
    }
    while ((n + 1 < len) && ((got = fread(out + n, 1, len - 1 - n, f)) > 0)) {
        n += got;
    }
    out[n] = '\0';
    status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_ctl(void)
{
    static char     out[65536];
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    memsvc_handle_t h;

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 9, 2, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "L0.weight", 1u << 20, NULL, &h));
    CU_ASSERT_EQUAL(run_ctl(&d, "ping", out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "alive") != NULL);
    CU_ASSERT_EQUAL(run_ctl(&d, "stats", out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "largest free block") != NULL);
    CU_ASSERT(strstr(out, "transport shm: sysv") != NULL);
    CU_ASSERT_EQUAL(run_ctl(&d, "--json stats", out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "\"fragmentation\"") != NULL);
    CU_ASSERT(strstr(out, "\"activation\": 1") != NULL);
    CU_ASSERT_EQUAL(run_ctl(&d, "list 9", out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "L0.weight") != NULL);
    CU_ASSERT_EQUAL(run_ctl(&d, "--json list", out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "\"key\": \"L0.weight\"") != NULL);
    CU_ASSERT_EQUAL(run_ctl(&d, "list 8", out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "L0.weight") == NULL);
    CU_ASSERT_NOT_EQUAL(run_ctl(&d, "frobnicate", out, sizeof(out)), 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    CU_ASSERT_NOT_EQUAL(run_ctl(&d, "ping", out, sizeof(out)), 0); /* nobody there */
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service", NULL, NULL);

    CU_add_test(s, "connect, ping, stats", test_connect_ping_stats);
    CU_add_test(s, "bytes survive forced swaps (backed, tiny)", test_bytes_survive_swaps);
    CU_add_test(s, "jobs are isolated", test_jobs_are_isolated);
    CU_add_test(s, "bad calls get named errors", test_bad_calls_named_errors);
    CU_add_test(s, "async acquire/release with test and wait", test_async_acquire_release);
    CU_add_test(s, "kill -9 releases pins, keeps durable for re-attach",
                test_kill9_releases_pins_keeps_durable);
    CU_add_test(s, "a client vanishing mid-transfer", test_client_vanishes_mid_transfer);
    CU_add_test(s, "writes received in place: killed writers, frees mid-receive",
                test_writes_received_in_place);
    CU_add_test(s, "eight concurrent clients", test_eight_clients);
    CU_add_test(s, "daemon refuses bad set-ups", test_daemon_refuses_bad_setups);
    CU_add_test(s, "memsvc-ctl ping, stats, list (text and json)", test_ctl);
}

TEST_REGISTER(service, add_suite)
