/* test_session.c - memsvcd sessions: durable expiry, re-attach rules, recompute, phantom, hints */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Poll stats until pred holds (bounded). */
static bool wait_stats(const integ_daemon_t *d, memsvc_stats_t       *st,
                       bool (*pred)(const memsvc_stats_t *), uint64_t timeout_ns)
{
    uint64_t deadline = msp_now_ns() + timeout_ns;

    while (msp_now_ns() < deadline) {
        if ((integ_stats(d, st) == MEMSVC_OK) && pred(st)) {
            return true;
        }
        usleep(50000);
    }
    return false;
}

static bool one_orphan(const memsvc_stats_t *st)
{
    return (st->orphans == 1) && (st->dev[0].pinned_tensors == 0);
}

static bool nothing_live(const memsvc_stats_t *st)
{
    return (st->orphans == 0) && (st->live_tensors == 0);
}

static void test_durable_expires_other_rank_cannot_adopt(void)
{
    static const char *const args[] = {"--node",         "tiny", "--memory", "backed",
                                       "--keep-durable", "1",    NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    memsvc_tensor_info_t     info;
    integ_daemon_t           d;
    memsvc_conn_h            other;
    int                      status;
    pid_t                    pid;

    START(&d, args);
    pid = integ_spawn(&d, "hold"); /* job 3 rank 5 */
    CU_ASSERT_FATAL(pid > 0);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CU_ASSERT(wait_stats(&d, st, one_orphan, 10000000000ull));
    /* rank 6 of the same job sees the key but does not take the tensor over */
    TEST_ASSERT_OK(integ_connect(&d, 3, 6, &other));
    CU_ASSERT_EQUAL(memsvc_lookup(other, "w.param", &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.rank, 5);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->orphans, 1);
    /* after --keep-durable seconds it is gone */
    CU_ASSERT(wait_stats(&d, st, nothing_live, 10000000000ull));
    CU_ASSERT_EQUAL(memsvc_lookup(other, "w.param", &info), MEMSVC_ERR_NOT_FOUND);
    memsvc_close(other);
    CU_ASSERT(integ_log_contains(&d, "expired"));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static void test_recompute_after_drop(void)
{
    static const char *const args[] = {"--node",   "tiny",        "--memory", "backed",
                                       "--policy", "lru:drop=on", NULL};
    memsvc_alloc_params_t    ap     = {.field_mask =
                                           MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_RECOMPUTE_NS,
                                       .flags        = MEMSVC_ALLOC_RECOMPUTABLE,
                                       .recompute_ns = 1000};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h[8];
    uint64_t                 size;
    uint8_t                 *want, *back;
    unsigned                 i;
    char                     key[16];
    memsvc_status_t          s;

    START(&d, args);
    TEST_ASSERT_OK(integ_stats(&d, st));
    size = st->dev[0].capacity / 4;
    want = malloc(size);
    back = malloc(size);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    for (i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "r%u", i);
        CU_ASSERT_EQUAL_FATAL(memsvc_alloc(conn, key, size, &ap, &h[i]), MEMSVC_OK);
        test_fill(want, size, i);
        CU_ASSERT_EQUAL_FATAL(memsvc_write(conn, h[i], 0, want, size), MEMSVC_OK);
    }
    /* the first ones were dropped to make room: reading them is refused, acquiring says
     * "recompute"; after the owner writes it again, the bytes are back */
    CU_ASSERT_EQUAL(memsvc_read(conn, h[0], 0, back, size), MEMSVC_ERR_ILLEGAL_STATE);
    s = memsvc_acquire(conn, h[0]);
    CU_ASSERT_EQUAL(s, MEMSVC_RECOMPUTE);
    test_fill(want, size, 0);
    TEST_ASSERT_OK(memsvc_write(conn, h[0], 0, want, size));
    TEST_ASSERT_OK(memsvc_read(conn, h[0], 0, back, size));
    CU_ASSERT(memcmp(want, back, size) == 0);
    TEST_ASSERT_OK(memsvc_release(conn, h[0]));
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->dev[0].drops > 0);
    CU_ASSERT(st->dev[0].recomputes > 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(want);
    free(back);
    free(st);
}

static void test_phantom_control_hints(void)
{
    static const char *const args[] = {"--node", "ascend-910b", "--memory", "phantom", NULL};
    memsvc_conn_params_t     p      = {0};
    memsvc_handle_t          h, big, hs[65];
    memsvc_hint_t            hint = {0};
    integ_daemon_t           d;
    memsvc_conn_h            conn, ctl, other;
    uint8_t                  buf[16] = {0};
    unsigned                 i;

    START(&d, args);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    /* phantom: sizes only; a 32 GiB tensor is fine, bytes are not */
    TEST_ASSERT_OK(memsvc_alloc(conn, "huge", 32ull << 30, NULL, &big));
    CU_ASSERT_EQUAL(memsvc_write(conn, big, 0, buf, sizeof(buf)), MEMSVC_ERR_UNSUPPORTED);
    CU_ASSERT_EQUAL(memsvc_read(conn, big, 0, buf, sizeof(buf)), MEMSVC_ERR_UNSUPPORTED);
    CU_ASSERT_EQUAL(memsvc_alloc(conn, "toolarge", 1ull << 40, NULL, &h), MEMSVC_ERR_TOO_LARGE);
    TEST_ASSERT_OK(memsvc_alloc(conn, "small", 4096, NULL, &h));
    /* hints */
    hint.type = MEMSVC_HINT_STEP_BEGIN;
    hint.step = 1;
    CU_ASSERT_EQUAL(memsvc_hint(conn, &hint), MEMSVC_OK);
    hint.type        = MEMSVC_HINT_UPCOMING;
    hint.handles     = &h;
    hint.num_handles = 1;
    CU_ASSERT_EQUAL(memsvc_hint(conn, &hint), MEMSVC_OK);
    for (i = 0; i < 65; i++) {
        hs[i] = h;
    }
    hint.handles     = hs;
    hint.num_handles = 65;
    CU_ASSERT_EQUAL(memsvc_hint(conn, &hint), MEMSVC_ERR_TOO_LARGE);
    hint.type = (memsvc_hint_type_t)99;
    CU_ASSERT_EQUAL(memsvc_hint(conn, &hint), MEMSVC_ERR_INVALID_PARAM);
    /* another job may not name our handle in a hint */
    TEST_ASSERT_OK(integ_connect(&d, 2, 0, &other));
    hint.type        = MEMSVC_HINT_UPCOMING;
    hint.num_handles = 1;
    CU_ASSERT_EQUAL(memsvc_hint(other, &hint), MEMSVC_OK); /* one-way */
    CU_ASSERT_EQUAL(integ_deferred(other, MEMSVC_OP_HINT, 0), MEMSVC_ERR_NOT_FOUND);
    memsvc_close(other);
    /* a control session reads figures but touches no tensor */
    p.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_FLAGS;
    p.address    = d.addr;
    p.job        = 0;
    p.flags      = MEMSVC_CONN_CONTROL;
    TEST_ASSERT_OK(memsvc_connect(&p, &ctl));
    CU_ASSERT_EQUAL(memsvc_alloc(ctl, "x", 4096, NULL, &h), MEMSVC_ERR_ACCESS);
    CU_ASSERT_EQUAL(memsvc_acquire(ctl, big), MEMSVC_ERR_ACCESS);
    CU_ASSERT_EQUAL(memsvc_free(ctl, big), MEMSVC_ERR_ACCESS);
    CU_ASSERT_EQUAL(memsvc_ping(ctl, NULL), MEMSVC_OK);
    memsvc_close(ctl);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* Acquires that must wait for a swap-in, answered later, while other requests go on. */
static void test_deferred_acquires(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h[8];
    memsvc_req_h             r[8];
    memsvc_status_t          sts[8];
    uint64_t                 size;
    unsigned                 i;
    char                     key[16];

    START(&d, args);
    TEST_ASSERT_OK(integ_stats(&d, st));
    size = st->dev[0].capacity / 4;
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    for (i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "d%u", i);
        CU_ASSERT_EQUAL_FATAL(memsvc_alloc(conn, key, size, NULL, &h[i]), MEMSVC_OK);
    }
    /* h[0..3] went to host to make room: bring two back asynchronously */
    CU_ASSERT_EQUAL_FATAL(memsvc_acquire_nb(conn, h[0], &r[0]), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL_FATAL(memsvc_acquire_nb(conn, h[1], &r[1]), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(memsvc_ping(conn, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_wait(r[0], 10000), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_wait(r[1], 10000), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_release_many(conn, h, 2, sts), MEMSVC_OK);
    /* a batch of acquires, some resident, some not */
    CU_ASSERT_EQUAL(memsvc_acquire_many(conn, &h[2], 4, sts), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_release_many(conn, &h[2], 4, sts), MEMSVC_OK);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->dev[0].swap_ins >= 2);
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static bool unpinned_one_live(const memsvc_stats_t *st)
{
    return (st->dev[0].pinned_tensors == 0) && (st->live_tensors == 1);
}

/* The replacement process connects before its predecessor is declared dead. */
static void test_replacement_inherits_durable(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    memsvc_tensor_info_t     info;
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    int                      status;
    pid_t                    pid;

    START(&d, args);
    pid = integ_spawn(&d, "hold"); /* job 3 rank 5 */
    CU_ASSERT_FATAL(pid > 0);
    TEST_ASSERT_OK(integ_connect(&d, 3, 5, &conn));
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CU_ASSERT(wait_stats(&d, st, unpinned_one_live, 10000000000ull));
    CU_ASSERT_EQUAL(st->orphans, 0); /* handed over, not orphaned */
    TEST_ASSERT_OK(memsvc_lookup(conn, "w.param", &info));
    memsvc_close(conn); /* now it is orphaned, kept for re-attach */
    CU_ASSERT(wait_stats(&d, st, one_orphan, 10000000000ull));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* The daemon dies under a connected client: calls fail with a named error, never hang. */
static void test_daemon_dies_under_client(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h;
    memsvc_status_t          s;
    uint64_t                 t0;
    int                      status;

    START(&d, args);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", 4096, NULL, &h));
    kill(d.pid, SIGKILL);
    waitpid(d.pid, &status, 0);
    d.pid = 0;
    t0    = msp_now_ns();
    s     = memsvc_acquire(conn, h);
    CU_ASSERT((s == MEMSVC_ERR_TRANSPORT) || (s == MEMSVC_ERR_TIMEOUT));
    CU_ASSERT(msp_now_ns() - t0 < 15000000000ull); /* bounded by the connection timeout */
    CU_ASSERT(memsvc_ping(conn, NULL) < 0);
    memsvc_close(conn);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_session", NULL, NULL);

    CU_add_test(s, "durable tensors expire; another rank cannot adopt them",
                test_durable_expires_other_rank_cannot_adopt);
    CU_add_test(s, "acquire of a dropped tensor answers RECOMPUTE", test_recompute_after_drop);
    CU_add_test(s, "phantom mode, control sessions, hints", test_phantom_control_hints);
    CU_add_test(s, "deferred acquires (swap-in) and batches", test_deferred_acquires);
    CU_add_test(s, "the daemon dies under a client", test_daemon_dies_under_client);
    CU_add_test(s, "a replacement process inherits durable tensors",
                test_replacement_inherits_durable);
}

TEST_REGISTER(service_session, add_suite)
