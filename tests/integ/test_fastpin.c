/* test_fastpin.c - pin tables: local acquires without a message, revocation races, hostile tables
 */
#include "client/mcl_int.h"
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define OTHERS 8
#define OTHER_SIZE (16ull << 20) /* 8 x 16 MiB on a 64 MiB device (tiny): swaps */
#define TARGET_SIZE (1ull << 20)

static const char *const tiny_args[] = {"--node", "tiny", "--memory", "backed", NULL};

static uint64_t session_id(memsvc_conn_h conn)
{
    memsvc_conn_attr_t a = {.field_mask = MEMSVC_CONN_ATTR_FIELD_SESSION};

    return (memsvc_conn_query(conn, &a) == MEMSVC_OK) ? a.session : 0;
}

/* Requests the daemon counted for session sid (UINT64_MAX: not listed). */
static uint64_t session_requests(const integ_daemon_t *d, uint64_t sid, memsvc_stats_t *st)
{
    uint32_t i;

    if (integ_stats(d, st) != MEMSVC_OK) {
        return UINT64_MAX;
    }
    for (i = 0; i < st->num_sessions; i++) {
        if (st->session[i].id == sid) {
            return st->session[i].requests;
        }
    }
    return UINT64_MAX;
}

/* Room-taking neighbours: OTHERS tensors of OTHER_SIZE allocated by conn (keys o0..). */
static bool others_alloc(memsvc_conn_h conn, memsvc_handle_t *o)
{
    char     key[16];
    unsigned i;

    for (i = 0; i < OTHERS; i++) {
        snprintf(key, sizeof(key), "o%u", i);
        if (memsvc_alloc(conn, key, OTHER_SIZE, NULL, &o[i]) != MEMSVC_OK) {
            return false;
        }
    }
    return true;
}

/* Acquire (resident: the oldest others move out), write and release every neighbour. */
static unsigned others_round(memsvc_conn_h conn, const memsvc_handle_t *o, uint8_t *buf,
                             unsigned seed)
{
    unsigned i, errors = 0;

    for (i = 0; i < OTHERS; i++) {
        memset(buf, (int)(seed + i), 4096);
        errors += (memsvc_acquire(conn, o[i]) != MEMSVC_OK);
        errors += (memsvc_write(conn, o[i], 0, buf, OTHER_SIZE) != MEMSVC_OK);
        errors += (memsvc_release(conn, o[i]) != MEMSVC_OK);
    }
    return errors;
}

/* Wait (bounded) for a child's "ready" byte. */
/* ---- children ------------------------------------------------------------------------------- */

/* job 7 rank 1: acquires the tensor MEMSVC_TEST_HANDLE of rank 0 (a message: published), then
 * twice in its pin table, releases once and holds the other until killed. */
static void child_holder(integ_daemon_t *d, int fd)
{
    const char     *hs = getenv("MEMSVC_TEST_HANDLE");
    memsvc_handle_t h  = (hs != NULL) ? strtoull(hs, NULL, 16) : 0;
    memsvc_conn_h   conn;

    if ((h == 0) || (integ_connect(d, 7, 1, &conn) != MEMSVC_OK) ||
        (memsvc_acquire(conn, h) != MEMSVC_OK) || (memsvc_release(conn, h) != MEMSVC_OK) ||
        (memsvc_flush(conn) != MEMSVC_OK) || (memsvc_acquire(conn, h) != MEMSVC_OK) ||
        (memsvc_acquire(conn, h) != MEMSVC_OK) || (memsvc_release(conn, h) != MEMSVC_OK)) {
        _exit(1);
    }
    integ_child_ready(fd);
    for (;;) {
        pause();
    }
}

/* job 8: four small tensors acquired (published in its table), one pinned there; then garbage
 * written over its whole pin table, again and again, with acquires and releases between. */
static void child_scribbler(integ_daemon_t *d, int fd)
{
    memsvc_handle_t h[4];
    memsvc_conn_h   conn;
    uint8_t        *tab;
    uint64_t        x = 0x9e3779b97f4a7c15ull;
    unsigned        i, pass;
    char            key[16];

    if (integ_connect(d, 8, 0, &conn) != MEMSVC_OK) {
        _exit(1);
    }
    for (i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "s%u", i);
        if ((memsvc_alloc(conn, key, 4096, NULL, &h[i]) != MEMSVC_OK) ||
            (memsvc_acquire(conn, h[i]) != MEMSVC_OK) ||
            (memsvc_release(conn, h[i]) != MEMSVC_OK)) {
            _exit(1);
        }
    }
    tab = (uint8_t *)conn->local.pins;
    if ((tab == NULL) || (memsvc_flush(conn) != MEMSVC_OK) ||
        (memsvc_acquire(conn, h[0]) != MEMSVC_OK)) {
        _exit(1);
    }
    for (pass = 0;; pass++) {
        switch (pass % 3) {
        case 0:
            memset(tab, 0xff, MSL_PINTAB_BYTES); /* every slot open, counts absurd */
            break;
        case 1:
            for (i = 0; i < MSL_PINTAB_BYTES / 8; i++) { /* noise */
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                memcpy(tab + 8 * i, &x, 8);
            }
            break;
        default: /* plausible words: its handles, open, counts that go negative */
            for (i = 0; i < MSL_PIN_SLOTS; i++) {
                msl_pin_slot_t *sl = &conn->local.pins[i];

                atomic_store(&sl->handle, h[i % 4]);
                atomic_store(&sl->ctl, ((uint64_t)i << 32) | MSL_PIN_OPEN | (i & 3));
                atomic_fetch_sub(&sl->ctl, 5);
                atomic_fetch_add(&sl->uses, 0x7fffffffu);
            }
            break;
        }
        for (i = 0; i < 4; i++) {
            if (memsvc_acquire(conn, h[i]) == MEMSVC_OK) {
                memsvc_release(conn, h[i]);
            }
        }
        if (pass == 2) {
            integ_child_ready(fd);
        }
    }
}

/* job 9 rank 1: pins the tensor MEMSVC_TEST_HANDLE of rank 0 in its pin table and is killed
 * holding it. MEMSVC_TEST_MODE: "reader" (memsvc_acquire_map_ro), "mapper" (memsvc_acquire_map,
 * then half of it written in place), "writer" (as memsvc_write does, killed before it is done:
 * half written). */
static void child_writer(integ_daemon_t *d, int fd)
{
    const char     *hs   = getenv("MEMSVC_TEST_HANDLE");
    const char     *mode = getenv("MEMSVC_TEST_MODE");
    memsvc_handle_t h    = (hs != NULL) ? strtoull(hs, NULL, 16) : 0;
    memsvc_conn_h   conn;
    const void     *rp;
    void           *p;
    msl_pin_where_t w;

    if ((h == 0) || (mode == NULL) || (integ_connect(d, 9, 1, &conn) != MEMSVC_OK) ||
        (memsvc_acquire(conn, h) != MEMSVC_OK) || (memsvc_release(conn, h) != MEMSVC_OK) ||
        (memsvc_flush(conn) != MEMSVC_OK)) {
        _exit(1);
    }
    if (strcmp(mode, "reader") == 0) {
        if ((memsvc_acquire_map_ro(conn, h, &rp) != MEMSVC_OK) || (rp == NULL)) {
            _exit(1);
        }
    } else if (strcmp(mode, "mapper") == 0) {
        if ((memsvc_acquire_map(conn, h, &p) != MEMSVC_OK) || (p == NULL)) {
            _exit(1);
        }
        memset(p, 0xee, TARGET_SIZE / 2);
    } else {
        if (!mcl_local_pin(&conn->local, h, &p, &w)) {
            _exit(1);
        }
        mcl_local_writing(&conn->local, h, 1);
        memset(p, 0xee, w.size / 2);
    }
    integ_child_ready(fd);
    for (;;) {
        pause();
    }
}

void integ_fastpin_child(integ_daemon_t *d, const char *role, int ready_fd)
{
    if (strcmp(role, "fastpin-writer") == 0) {
        child_writer(d, ready_fd);
    } else if (strcmp(role, "fastpin-holder") == 0) {
        child_holder(d, ready_fd);
    } else if (strcmp(role, "fastpin-scribbler") == 0) {
        child_scribbler(d, ready_fd);
    }
    _exit(2);
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* Once acquired by message (published), a resident tensor is acquired and released in the pin
 * table: no request reaches the daemon, which counts the acquires; a write pin of a tensor that
 * is not durable too; a freed tensor is not acquired locally; --no-fast-pin turns it off. */
static void test_local_hits(void)
{
    static const char *const off_args[] = {"--node", "tiny",          "--memory",
                                           "backed", "--no-fast-pin", NULL};
    memsvc_stats_t          *st         = calloc(1, sizeof(*st));
    uint8_t                  want[8192], got[8192];
    uint64_t                 sid, req0, fast0, n;
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h;
    memsvc_batch_h           b;
    unsigned                 i, pass;
    const void              *p, *q;
    void                    *w;

    CU_ASSERT_FATAL(st != NULL);
    for (pass = 0; pass < 2; pass++) {
        START(&d, (pass == 0) ? tiny_args : off_args);
        TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
        sid = session_id(conn);
        test_fill(want, sizeof(want), 3);
        TEST_ASSERT_OK(memsvc_alloc(conn, "t", sizeof(want), NULL, &h));
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, sizeof(want)));
        TEST_ASSERT_OK(memsvc_acquire_map_ro(conn, h, &p)); /* a message: published */
        CU_ASSERT_FATAL(p != NULL);
        TEST_ASSERT_OK(memsvc_release(conn, h));
        TEST_ASSERT_OK(memsvc_flush(conn));
        req0  = session_requests(&d, sid, st);
        fast0 = st->fast_acquires;
        CU_ASSERT_FATAL(req0 != UINT64_MAX);
        CU_ASSERT_EQUAL(st->fast_published, (pass == 0) ? 1 : 0);
        for (i = 0; i < 1000; i++) {
            CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_OK);
            CU_ASSERT_EQUAL(memsvc_acquire_map_ro(conn, h, &q), MEMSVC_OK);
            CU_ASSERT(q == p);
            CU_ASSERT((q != NULL) && (memcmp(q, want, sizeof(want)) == 0));
            CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK);
            CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK);
        }
        TEST_ASSERT_OK(memsvc_flush(conn));
        n = session_requests(&d, sid, st);
        if (pass == 0) {
            CU_ASSERT_EQUAL(n, req0 + 1); /* not one message but the flush's PING */
            CU_ASSERT_EQUAL(st->fast_acquires - fast0, 2000);
        } else {
            CU_ASSERT(n >= req0 + 2000);
            CU_ASSERT_EQUAL(st->fast_acquires, 0);
        }
        /* a batch: acquires of published tensors pinned in the table, nothing sent */
        TEST_ASSERT_OK(memsvc_batch_create(conn, &b));
        TEST_ASSERT_OK(memsvc_batch_acquire(b, h, NULL));
        TEST_ASSERT_OK(memsvc_batch_acquire(b, h, NULL));
        req0  = session_requests(&d, sid, st);
        fast0 = st->fast_acquires;
        CU_ASSERT_EQUAL(memsvc_batch_submit(b, NULL), MEMSVC_OK);
        CU_ASSERT_EQUAL(memsvc_batch_result(b, 1, NULL), MEMSVC_OK);
        CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK);
        CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK);
        TEST_ASSERT_OK(memsvc_flush(conn));
        n = session_requests(&d, sid, st);
        CU_ASSERT_EQUAL(n, req0 + ((pass == 0) ? 1 : 2)); /* the flush's PING (and the batch) */
        CU_ASSERT_EQUAL(st->fast_acquires - fast0, (pass == 0) ? 2 : 0);
        memsvc_batch_destroy(b);
        /* release_many of pins taken in the table: answered, nothing left pinned */
        CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_OK);
        CU_ASSERT_EQUAL(memsvc_release_many(conn, &h, 1, NULL), MEMSVC_OK);
        /* a write pin of a tensor that is not durable: in the table too (by message without
         * tables) */
        req0 = session_requests(&d, sid, st);
        TEST_ASSERT_OK(memsvc_acquire_map(conn, h, &w));
        CU_ASSERT_FATAL(w != NULL);
        CU_ASSERT(w == p);
        test_fill(want, sizeof(want), 4);
        memcpy(w, want, sizeof(want));
        TEST_ASSERT_OK(memsvc_release(conn, h));
        TEST_ASSERT_OK(memsvc_flush(conn));
        if (pass == 0) {
            CU_ASSERT_EQUAL(session_requests(&d, sid, st), req0 + 1); /* the flush's PING */
        } else {
            CU_ASSERT(session_requests(&d, sid, st) >= req0 + 2);
        }
        TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, sizeof(got)));
        CU_ASSERT(memcmp(got, want, sizeof(want)) == 0);
        CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
        /* freed: never acquired locally again */
        TEST_ASSERT_OK(memsvc_free(conn, h));
        CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_ERR_NOT_FOUND);
        memsvc_close(conn);
        CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    }
    free(st);
}

#define MANY 5000 /* more tensors than a table has slots (4096) */

/* More tensors than slots: every acquire answers right whether its tensor found a slot or not;
 * tensors freed leave the client's records (the others still found), and are never acquired
 * in the table again. */
static void test_many_tensors(void)
{
    memsvc_stats_t  *st = calloc(1, sizeof(*st));
    memsvc_handle_t *h  = calloc(MANY, sizeof(*h));
    uint64_t         fast0, published;
    integ_daemon_t   d;
    memsvc_conn_h    conn;
    unsigned         i, errors = 0;
    char             key[16];

    CU_ASSERT_FATAL((st != NULL) && (h != NULL));
    START(&d, tiny_args);
    TEST_ASSERT_OK(integ_connect(&d, 2, 0, &conn));
    for (i = 0; i < MANY; i++) {
        snprintf(key, sizeof(key), "m%u", i);
        errors += (memsvc_alloc(conn, key, 4096, NULL, &h[i]) != MEMSVC_OK);
        errors += (memsvc_acquire(conn, h[i]) != MEMSVC_OK); /* a message: published */
        errors += (memsvc_release(conn, h[i]) != MEMSVC_OK);
    }
    CU_ASSERT_EQUAL_FATAL(errors, 0);
    TEST_ASSERT_OK(memsvc_flush(conn));
    TEST_ASSERT_OK(integ_stats(&d, st));
    fast0     = st->fast_acquires;
    published = st->fast_published;
    CU_ASSERT((published > 1000) && (published <= MANY));
    for (i = 0; i < MANY; i++) {
        errors += (memsvc_acquire(conn, h[i]) != MEMSVC_OK);
        errors += (memsvc_acquire(conn, h[i]) != MEMSVC_OK);
        errors += (memsvc_release(conn, h[i]) != MEMSVC_OK);
        errors += (memsvc_release(conn, h[i]) != MEMSVC_OK);
    }
    for (i = 0; i < MANY; i += 2) {
        errors += (memsvc_free(conn, h[i]) != MEMSVC_OK);
    }
    for (i = 1; i < MANY; i += 2) {
        errors += (memsvc_acquire(conn, h[i]) != MEMSVC_OK);
        errors += (memsvc_release(conn, h[i]) != MEMSVC_OK);
    }
    CU_ASSERT_EQUAL(errors, 0);
    TEST_ASSERT_OK(memsvc_flush(conn));
    for (i = 0; i < MANY; i += 250) {
        CU_ASSERT_EQUAL(memsvc_acquire(conn, h[i]), MEMSVC_ERR_NOT_FOUND);
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->fast_acquires > fast0 + 1000); /* most of them in the table */
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    CU_ASSERT_EQUAL(st->live_tensors, MANY / 2);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(h);
}

typedef struct reader_arg {
    const integ_daemon_t *d;
    memsvc_handle_t       h;
    const uint8_t        *want;
    atomic_bool           stop;
    uint64_t              req_first, req_last; /* its session's messages: after the first
                                                    acquire, at the end */
    unsigned iters, bad, errors;
} reader_arg_t;

/* Acquire, check the bytes, check them again while still pinned, release; now and then hold
 * the pin idle for a while (the tensor becomes the oldest: moves of it must be refused), then
 * let go for a while (it is taken: revoked, moved out, acquired back by message). */
static void *reader_main(void *arg)
{
    reader_arg_t   *a  = arg;
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    memsvc_conn_h   conn;
    const void     *p;
    uint64_t        sid;

    if ((st == NULL) || (integ_connect(a->d, 6, 1, &conn) != MEMSVC_OK)) {
        a->errors++;
        free(st);
        return NULL;
    }
    sid = session_id(conn);
    while (!atomic_load(&a->stop) && (a->iters < 10000000)) {
        if ((memsvc_acquire_map_ro(conn, a->h, &p) != MEMSVC_OK) || (p == NULL)) {
            a->errors++;
            break;
        }
        a->bad += (memcmp(p, a->want, TARGET_SIZE / 16) != 0);
        sched_yield(); /* a revocation may come now: it must find the pin */
        a->bad += (memcmp(p, a->want, TARGET_SIZE) != 0);
        if (memsvc_release(conn, a->h) != MEMSVC_OK) {
            a->errors++;
            break;
        }
        if ((++a->iters == 1) && (memsvc_flush(conn) == MEMSVC_OK)) {
            a->req_first = session_requests(a->d, sid, st);
        }
        if ((a->iters % 256) == 0) {
            if ((memsvc_acquire_map_ro(conn, a->h, &p) != MEMSVC_OK) || (p == NULL)) {
                a->errors++;
                break;
            }
            usleep(60000);
            a->bad += (memcmp(p, a->want, TARGET_SIZE) != 0);
            a->errors += (memsvc_release(conn, a->h) != MEMSVC_OK);
            usleep(60000);
        }
    }
    if (memsvc_flush(conn) != MEMSVC_OK) {
        a->errors++;
    }
    a->req_last = session_requests(a->d, sid, st);
    memsvc_close(conn);
    free(st);
    return NULL;
}

/* Job 6's tensor "t" (TARGET_SIZE bytes of seed) written, with OTHERS neighbours; a reader
 * thread (reader_main, *a) acquires "t" in its table and checks its bytes while `rounds` rounds
 * of the neighbours force swaps. Returns the neighbours' errors; *a has the reader's counts. */
static unsigned race_reader(integ_daemon_t *d, memsvc_conn_h conn, uint8_t *want, unsigned seed,
                            unsigned rounds, uint8_t *buf, reader_arg_t *a)
{
    memsvc_handle_t o[OTHERS];
    pthread_t       th;
    unsigned        round, errors = 0;

    test_fill(want, TARGET_SIZE, seed);
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", TARGET_SIZE, NULL, &a->h));
    TEST_ASSERT_OK(memsvc_write(conn, a->h, 0, want, TARGET_SIZE));
    CU_ASSERT_FATAL(others_alloc(conn, o));
    a->d    = d;
    a->want = want;
    atomic_init(&a->stop, false);
    pthread_create(&th, NULL, reader_main, a);
    for (round = 0; round < rounds; round++) {
        errors += others_round(conn, o, buf, round * 16);
    }
    atomic_store(&a->stop, true);
    pthread_join(th, NULL);
    return errors;
}

/* A client acquires and releases a tensor in its table while the daemon swaps that very tensor
 * out and in under pressure: every revocation finds the count, bytes never change under a pin,
 * and the acquires after a revocation go by message (and publish it again). */
static void test_revocation_race(void)
{
    memsvc_stats_t *st   = calloc(1, sizeof(*st));
    uint8_t        *want = malloc(TARGET_SIZE), *buf = malloc(OTHER_SIZE);
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    reader_arg_t    a = {0};

    CU_ASSERT_FATAL((st != NULL) && (want != NULL) && (buf != NULL));
    memset(buf, 0, OTHER_SIZE);
    START(&d, tiny_args);
    TEST_ASSERT_OK(integ_connect(&d, 6, 0, &conn));
    CU_ASSERT_EQUAL(race_reader(&d, conn, want, 21, 6, buf, &a), 0);
    CU_ASSERT_EQUAL(a.errors, 0);
    CU_ASSERT_EQUAL(a.bad, 0);
    CU_ASSERT(a.iters > 256);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->dev[0].swap_outs > 0);
    CU_ASSERT(st->fast_acquires > 0);
    CU_ASSERT(st->fast_revoked > 0); /* (refused moves: test_kill_holder, deterministic) */
    printf("\n  %u acquires, %" PRIu64 " in the table, %" PRIu64 " revocations, %" PRIu64
           " moves refused (held), %" PRIu64 " swap-outs\n",
           a.iters, st->fast_acquires, st->fast_revoked, st->fast_held, st->dev[0].swap_outs);
    /* after its first acquire, some went by message again: revoked, moved, back, published */
    CU_ASSERT((a.req_first != UINT64_MAX) && (a.req_last != UINT64_MAX) &&
              (a.req_last > a.req_first));
    TEST_ASSERT_OK(memsvc_read(conn, a.h, 0, buf, TARGET_SIZE));
    CU_ASSERT(memcmp(buf, want, TARGET_SIZE) == 0);
    memsvc_close(conn);
    CU_ASSERT(integ_wait_sessions(&d, 1, st));
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(want);
    free(buf);
}

/* A tensor held in a client's table counts as pinned: pressure moves the others, not it; the
 * client killed -9, its pins go with its session and the tensor moves like any other. */
static void test_kill_holder(void)
{
    memsvc_stats_t      *st   = calloc(1, sizeof(*st));
    uint8_t             *want = malloc(TARGET_SIZE), *buf = malloc(OTHER_SIZE);
    memsvc_tensor_info_t info;
    integ_daemon_t       d;
    memsvc_conn_h        conn;
    memsvc_handle_t      h, o[OTHERS];
    char                 hex[32];
    const char          *env[3] = {"MEMSVC_TEST_HANDLE", hex, NULL};
    unsigned             round, errors = 0;
    pid_t                pid;

    CU_ASSERT_FATAL((st != NULL) && (want != NULL) && (buf != NULL));
    memset(buf, 0, OTHER_SIZE);
    START(&d, tiny_args);
    TEST_ASSERT_OK(integ_connect(&d, 7, 0, &conn));
    test_fill(want, TARGET_SIZE, 31);
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", TARGET_SIZE, NULL, &h));
    TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, TARGET_SIZE));
    snprintf(hex, sizeof(hex), "%" PRIx64, (uint64_t)h);
    pid = integ_spawn_env(&d, "fastpin-holder", env);
    CU_ASSERT_FATAL(pid > 0);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->fast_acquires, 2);
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0); /* the engine does not see it pinned */

    CU_ASSERT_FATAL(others_alloc(conn, o));
    for (round = 0; round < 2; round++) {
        errors += others_round(conn, o, buf, round * 16);
    }
    CU_ASSERT_EQUAL(errors, 0);
    TEST_ASSERT_OK(memsvc_lookup(conn, "t", &info));
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE); /* the oldest, but held */
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->fast_held > 0);
    CU_ASSERT(st->dev[0].swap_outs > 0);

    integ_kill_wait(pid);
    CU_ASSERT(integ_wait_sessions(&d, 2, st));
    for (round = 2; round < 4; round++) {
        errors += others_round(conn, o, buf, round * 16);
    }
    CU_ASSERT_EQUAL(errors, 0);
    TEST_ASSERT_OK(memsvc_lookup(conn, "t", &info));
    CU_ASSERT_NOT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE); /* no longer held: moved out */
    CU_ASSERT_EQUAL(info.pins, 0);
    TEST_ASSERT_OK(memsvc_read(conn, h, 0, buf, TARGET_SIZE));
    CU_ASSERT(memcmp(buf, want, TARGET_SIZE) == 0);
    TEST_ASSERT_OK(memsvc_ping(conn, NULL));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(want);
    free(buf);
}

/* A client writing garbage over its whole pin table, again and again: another client's tensors
 * keep moving and keep their bytes, the daemon keeps serving, and stops cleanly. */
static void test_scribbler(void)
{
    memsvc_stats_t *st   = calloc(1, sizeof(*st));
    uint8_t        *want = malloc(TARGET_SIZE), *buf = malloc(OTHER_SIZE);
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    reader_arg_t    a = {0};
    pid_t           pid;

    CU_ASSERT_FATAL((st != NULL) && (want != NULL) && (buf != NULL));
    memset(buf, 0, OTHER_SIZE);
    START(&d, tiny_args);
    pid = integ_spawn_env(&d, "fastpin-scribbler", NULL);
    CU_ASSERT_FATAL(pid > 0);
    TEST_ASSERT_OK(integ_connect(&d, 6, 0, &conn));
    CU_ASSERT_EQUAL(race_reader(&d, conn, want, 41, 4, buf, &a), 0);
    CU_ASSERT_EQUAL(a.errors, 0);
    CU_ASSERT_EQUAL(a.bad, 0);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->dev[0].swap_outs > 0);
    CU_ASSERT(st->fast_revoked > 0); /* the reader's tensor, revoked and moved as usual */
    CU_ASSERT_EQUAL(waitpid(pid, NULL, WNOHANG), 0); /* still scribbling */
    integ_kill_wait(pid);
    CU_ASSERT(integ_wait_sessions(&d, 2, st));
    TEST_ASSERT_OK(memsvc_read(conn, a.h, 0, buf, TARGET_SIZE));
    CU_ASSERT(memcmp(buf, want, TARGET_SIZE) == 0);
    TEST_ASSERT_OK(memsvc_ping(conn, NULL));
    memsvc_close(conn);
    CU_ASSERT(integ_wait_sessions(&d, 1, st));
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(want);
    free(buf);
}

/* memsvc_write and memsvc_read of a published tensor: pinned in the table, so a read is no
 * message and a write none either, or one COMMIT for a durable tensor (whose bytes are then
 * journaled: they come back after kill -9 of the daemon); the bytes are the daemon's (read back
 * by message and over tcp). A COMMIT without a table pin is refused. */
static void test_table_io(void)
{
    memsvc_stats_t       *st   = calloc(1, sizeof(*st));
    uint8_t              *want = malloc(TARGET_SIZE), *got = malloc(TARGET_SIZE);
    memsvc_alloc_params_t dp   = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS,
                                  .flags      = MEMSVC_ALLOC_DURABLE};
    memsvc_tensor_info_t  info;
    integ_daemon_t        d, d2;
    memsvc_conn_h         conn, tcp;
    memsvc_handle_t       h;
    msp_req_t             msg = {.op = MSP_OP_COMMIT};
    uint64_t              sid, req0;
    unsigned              i, kind;
    char                  addr[64];

    CU_ASSERT_FATAL((st != NULL) && (want != NULL) && (got != NULL));
    START(&d, tiny_args);
    snprintf(addr, sizeof(addr), "%s", d.addr);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    sid = session_id(conn);
    for (kind = 0; kind < 2; kind++) { /* plain, durable */
        TEST_ASSERT_OK(memsvc_alloc(conn, kind ? "d" : "t", TARGET_SIZE, kind ? &dp : NULL, &h));
        test_fill(want, TARGET_SIZE, 5);
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, TARGET_SIZE)); /* uncommitted before */
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, TARGET_SIZE)); /* committed: published */
        TEST_ASSERT_OK(memsvc_flush(conn));
        msg.u.h.handle = h;
        msg.id         = 0;
        CU_ASSERT_EQUAL(mcl_call(conn, &msg, NULL, 0, NULL), MEMSVC_ERR_NOT_PINNED);
        for (i = 0; i < 4; i++) {
            uint64_t off = (i % 2) * 4096;

            req0 = session_requests(&d, sid, st);
            test_fill(want, TARGET_SIZE, 6 + i);
            TEST_ASSERT_OK(memsvc_write(conn, h, off, want, TARGET_SIZE - off));
            CU_ASSERT_EQUAL(session_requests(&d, sid, st), req0 + kind); /* durable: COMMIT */
            memset(got, 0, TARGET_SIZE);
            TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, TARGET_SIZE));
            CU_ASSERT_EQUAL(session_requests(&d, sid, st), req0 + kind); /* the read: none */
            CU_ASSERT(memcmp(got + off, want, TARGET_SIZE - off) == 0);
            CU_ASSERT_EQUAL(memsvc_write(conn, h, 4096, want, TARGET_SIZE),
                            MEMSVC_ERR_OUT_OF_RANGE);
        }
        test_fill(want, TARGET_SIZE, 9 + kind);
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, TARGET_SIZE));
        memset(got, 0, TARGET_SIZE);
        TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, 8192)); /* small: a READ message */
        CU_ASSERT(memcmp(got, want, 8192) == 0);
        TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, MEMSVC_CONN_TCP, &tcp));
        memset(got, 0, TARGET_SIZE);
        TEST_ASSERT_OK(memsvc_read(tcp, h, 0, got, TARGET_SIZE));
        CU_ASSERT(memcmp(got, want, TARGET_SIZE) == 0);
        memsvc_close(tcp);
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->fast_acquires >= 16);
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    /* the durable one's last write was kept before memsvc_write returned */
    CU_ASSERT(WIFSIGNALED(integ_daemon_signal(&d, SIGKILL)));
    memsvc_close(conn);
    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d2, addr, tiny_args));
    TEST_ASSERT_OK(integ_connect(&d2, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_lookup(conn, "d", &info));
    memset(got, 0, TARGET_SIZE);
    TEST_ASSERT_OK(memsvc_read(conn, info.handle, 0, got, TARGET_SIZE));
    CU_ASSERT(memcmp(got, want, TARGET_SIZE) == 0);
    CU_ASSERT_EQUAL(memsvc_lookup(conn, "t", &info), MEMSVC_ERR_NOT_FOUND);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d2), 0);
    free(st);
    free(want);
    free(got);
}

/* A client killed while it writes in place under a table pin (memsvc_acquire_map, or
 * memsvc_write's own pin): the tensor is left uncommitted (acquires answer RECOMPUTE, reads are
 * refused) until its owner writes it again. One killed while it only reads leaves it
 * committed. The daemon saw none of these pins: all were taken in the child's table. */
static void test_table_writer_killed(void)
{
    static const char *const modes[] = {"reader", "mapper", "writer"};
    memsvc_stats_t *st   = calloc(1, sizeof(*st));
    uint8_t        *want = malloc(TARGET_SIZE), *got = malloc(TARGET_SIZE);
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    memsvc_handle_t h;
    char            hex[32];
    const char     *env[5] = {"MEMSVC_TEST_HANDLE", hex, "MEMSVC_TEST_MODE", NULL, NULL};
    unsigned        pass;
    pid_t           pid;

    CU_ASSERT_FATAL((st != NULL) && (want != NULL) && (got != NULL));
    START(&d, tiny_args);
    TEST_ASSERT_OK(integ_connect(&d, 9, 0, &conn));
    test_fill(want, TARGET_SIZE, 51);
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", TARGET_SIZE, NULL, &h));
    TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, TARGET_SIZE));
    snprintf(hex, sizeof(hex), "%" PRIx64, (uint64_t)h);
    for (pass = 0; pass < 3; pass++) {
        env[3] = modes[pass];
        pid    = integ_spawn_env(&d, "fastpin-writer", env);
        CU_ASSERT_FATAL(pid > 0);
        TEST_ASSERT_OK(integ_stats(&d, st));
        CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0); /* the child's pin is in its table */
        integ_kill_wait(pid);
        CU_ASSERT(integ_wait_sessions(&d, 2, st)); /* this one and the stats' */
        if (pass == 0) {
            TEST_ASSERT_OK(memsvc_acquire(conn, h));
            TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, TARGET_SIZE));
            CU_ASSERT(memcmp(got, want, TARGET_SIZE) == 0);
        } else {
            CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_RECOMPUTE);
            CU_ASSERT_EQUAL(memsvc_read(conn, h, 0, got, 8192), MEMSVC_ERR_ILLEGAL_STATE);
            CU_ASSERT_EQUAL(memsvc_read(conn, h, 0, got, TARGET_SIZE), MEMSVC_ERR_ILLEGAL_STATE);
            TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, TARGET_SIZE)); /* the owner's again */
            TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, TARGET_SIZE));
            CU_ASSERT(memcmp(got, want, TARGET_SIZE) == 0);
        }
        TEST_ASSERT_OK(memsvc_release(conn, h));
        TEST_ASSERT_OK(memsvc_flush(conn)); /* the release done before the next stats */
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(want);
    free(got);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_fastpin", NULL, NULL);

    CU_add_test(s, "resident tensors acquired in the pin table, no message", test_local_hits);
    CU_add_test(s, "more tensors than slots; freed ones leave the table", test_many_tensors);
    CU_add_test(s, "revocations racing with a client's pins of the same tensor",
                test_revocation_race);
    CU_add_test(s, "held in a table counts as pinned; kill -9 drops it", test_kill_holder);
    CU_add_test(s, "garbage in one client's table hurts no other client", test_scribbler);
    CU_add_test(s, "memsvc_write/read through a table pin: no message (durable: a COMMIT)",
                test_table_io);
    CU_add_test(s, "a writer killed under a table pin leaves the tensor uncommitted",
                test_table_writer_killed);
}

TEST_REGISTER(service_fastpin, add_suite)
