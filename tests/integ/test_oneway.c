/* test_oneway.c - one-way requests, corking, deferred errors and batches against a real memsvcd */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const tiny_phantom[] = {"--node", "tiny", NULL};

/* A trainer connection whose one-way requests stay queued until something sends them. */
static memsvc_status_t connect_corked(const integ_daemon_t *d, uint32_t job, memsvc_conn_h *conn_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_TIMEOUT_MS |
                                            MEMSVC_CONN_FIELD_CORK_US,
                              .address    = d->addr,
                              .job        = job,
                              .timeout_ms = 10000,
                              .cork_us    = 60u * 1000u * 1000u};

    return memsvc_connect(&p, conn_p);
}

static uint32_t pins_of(memsvc_conn_h conn, const char *key)
{
    memsvc_tensor_info_t info;

    return (memsvc_lookup(conn, key, &info) == MEMSVC_OK) ? info.pins : UINT32_MAX;
}

static uint64_t daemon_messages(const integ_daemon_t *d)
{
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    uint64_t        n  = 0;

    if ((st != NULL) && (integ_stats(d, st) == MEMSVC_OK)) {
        n = st->requests;
    }
    free(st);
    return n;
}

static void test_deferred_errors(void)
{
    memsvc_deferred_error_t e[4];
    memsvc_conn_attr_t      attr;
    integ_daemon_t          d;
    memsvc_conn_h           conn;
    memsvc_handle_t         h;
    memsvc_hint_t           hint;
    memsvc_handle_t         bogus = 0xbad0ull;

    START(&d, tiny_phantom);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", 4096, NULL, &h));
    /* three failing one-way calls: each returns OK, the errors wait in order */
    CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK);  /* not pinned */
    CU_ASSERT_EQUAL(memsvc_free(conn, bogus), MEMSVC_OK); /* unknown */
    memset(&hint, 0, sizeof(hint));
    hint.type        = MEMSVC_HINT_UPCOMING;
    hint.handles     = &bogus;
    hint.num_handles = 1;
    CU_ASSERT_EQUAL(memsvc_hint(conn, &hint), MEMSVC_OK);
    /* a later call that succeeds is not touched by them */
    CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK); /* this one is fine */
    CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_ERR_DEFERRED);
    attr.field_mask = MEMSVC_CONN_ATTR_FIELD_ONEWAY | MEMSVC_CONN_ATTR_FIELD_ERRORS |
                      MEMSVC_CONN_ATTR_FIELD_SESSION;
    TEST_ASSERT_OK(memsvc_conn_query(conn, &attr));
    CU_ASSERT_EQUAL(attr.oneway_issued, 4);
    CU_ASSERT_EQUAL(attr.oneway_completed, 4);
    CU_ASSERT_EQUAL(attr.oneway_failed, 3);
    CU_ASSERT_EQUAL(attr.queued, 0);
    CU_ASSERT_EQUAL(attr.errors_pending, 3);
    CU_ASSERT_EQUAL(attr.errors_lost, 0);
    CU_ASSERT_EQUAL(attr.protocol, 3);
    CU_ASSERT(attr.session > 0);
    CU_ASSERT_EQUAL(memsvc_errors(conn, e, 4), 3);
    CU_ASSERT_EQUAL(e[0].status, MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(e[0].op, MEMSVC_OP_RELEASE);
    CU_ASSERT_EQUAL(e[0].handle, h);
    CU_ASSERT_EQUAL(e[0].seq, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e[0].message, "acquire"));
    CU_ASSERT_EQUAL(e[1].status, MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(e[1].op, MEMSVC_OP_FREE);
    CU_ASSERT_EQUAL(e[1].handle, bogus);
    CU_ASSERT_EQUAL(e[1].seq, 2);
    CU_ASSERT_EQUAL(e[2].status, MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(e[2].op, MEMSVC_OP_HINT);
    CU_ASSERT_EQUAL(e[2].seq, 3);
    /* read: the queue is empty again */
    CU_ASSERT_EQUAL(memsvc_errors(conn, e, 4), 0);
    CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK);
    /* arguments wrong on their face fail at once */
    hint.num_handles = 65;
    CU_ASSERT_EQUAL(memsvc_hint(conn, &hint), MEMSVC_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(memsvc_release(NULL, h), MEMSVC_ERR_INVALID_PARAM);
    memsvc_close(conn);

    /* a MEMSVC_CONN_SYNC connection answers them as version 1 did */
    {
        memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                                MEMSVC_CONN_FIELD_FLAGS,
                                  .address = d.addr,
                                  .job     = 1,
                                  .flags   = MEMSVC_CONN_SYNC};

        TEST_ASSERT_OK(memsvc_connect(&p, &conn));
        TEST_ASSERT_OK(memsvc_alloc(conn, "s", 4096, NULL, &h));
        CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_ERR_NOT_PINNED);
        CU_ASSERT_EQUAL(memsvc_free(conn, bogus), MEMSVC_ERR_NOT_FOUND);
        CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK);
        memsvc_close(conn);
    }
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

static void test_order_and_cork(void)
{
    memsvc_conn_attr_t attr = {.field_mask = MEMSVC_CONN_ATTR_FIELD_ONEWAY};
    integ_daemon_t     d;
    memsvc_conn_h      conn;
    memsvc_handle_t    h, g;
    uint64_t           before;

    START(&d, tiny_phantom);
    TEST_ASSERT_OK(connect_corked(&d, 1, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "a", 4096, NULL, &h));
    TEST_ASSERT_OK(memsvc_alloc(conn, "b", 4096, NULL, &g));

    /* a release followed by an acquire: the daemon sees the release first. It is not pinned,
     * so it fails; had the acquire come first, it would have succeeded. */
    CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_conn_query(conn, &attr));
    CU_ASSERT_EQUAL(attr.queued, 1); /* corked, not sent */
    before = daemon_messages(&d);
    CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_OK);
    /* the acquire carried it: one message (plus the two of the stats session) */
    CU_ASSERT_EQUAL(daemon_messages(&d) - before, 1 + 2);
    TEST_ASSERT_OK(memsvc_conn_query(conn, &attr));
    CU_ASSERT_EQUAL(attr.queued, 0);
    CU_ASSERT_EQUAL(integ_deferred(conn, MEMSVC_OP_RELEASE, h), MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(pins_of(conn, "a"), 1);

    /* acquire, release (corked), lookup: the lookup sees it released */
    TEST_ASSERT_OK(memsvc_acquire(conn, g));
    CU_ASSERT_EQUAL(pins_of(conn, "b"), 1);
    TEST_ASSERT_OK(memsvc_release(conn, g));
    CU_ASSERT_EQUAL(pins_of(conn, "b"), 0);
    /* release, free, then an acquire of the freed handle: NOT_FOUND, in that order */
    TEST_ASSERT_OK(memsvc_release(conn, h));
    TEST_ASSERT_OK(memsvc_free(conn, h));
    CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK);

    /* 64 queued go out on their own, without waiting for a call */
    {
        unsigned i;

        for (i = 0; i < 70; i++) {
            TEST_ASSERT_OK(memsvc_acquire(conn, g));
        }
        for (i = 0; i < 70; i++) {
            TEST_ASSERT_OK(memsvc_release(conn, g));
        }
        TEST_ASSERT_OK(memsvc_conn_query(conn, &attr));
        CU_ASSERT_EQUAL(attr.queued, 70 - 64);
        CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK);
        CU_ASSERT_EQUAL(pins_of(conn, "b"), 0);
    }
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

static void test_batch_mixed(void)
{
    memsvc_alloc_params_t pin = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS, .flags = MEMSVC_ALLOC_PIN};
    memsvc_hint_t         hint;
    integ_daemon_t        d;
    memsvc_conn_h         conn;
    memsvc_batch_h        b;
    memsvc_handle_t       h, out = 0, x;
    size_t                i0, i1, i2, i3, i4, i5, i6, k;
    char                  key[64];

    START(&d, tiny_phantom);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "in", 8192, NULL, &h));
    TEST_ASSERT_OK(memsvc_batch_create(conn, &b));
    memset(&hint, 0, sizeof(hint));
    hint.type  = MEMSVC_HINT_LAYER_BEGIN;
    hint.layer = 3;
    TEST_ASSERT_OK(memsvc_batch_hint(b, &hint, &i0));
    TEST_ASSERT_OK(memsvc_batch_alloc(b, "out", 4096, &pin, &i1));
    TEST_ASSERT_OK(memsvc_batch_acquire(b, h, &i2));
    TEST_ASSERT_OK(memsvc_batch_release(b, h, &i3));
    TEST_ASSERT_OK(memsvc_batch_release(b, h, &i4)); /* one too many */
    TEST_ASSERT_OK(memsvc_batch_free(b, 0xf00dull, &i5));
    TEST_ASSERT_OK(memsvc_batch_alloc(b, "in", 4096, NULL, &i6)); /* the key is taken */
    CU_ASSERT_EQUAL(i6, 6);
    CU_ASSERT_EQUAL(memsvc_batch_size(b), 7);
    CU_ASSERT_EQUAL(memsvc_batch_alloc(b, "", 4096, NULL, NULL), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, 0, NULL), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(memsvc_batch_submit(b, NULL), MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i0, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i1, &out), MEMSVC_OK);
    CU_ASSERT_NOT_EQUAL(out, 0);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i2, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i3, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i4, NULL), MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i5, NULL), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, i6, NULL), MEMSVC_ERR_EXISTS);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, 7, NULL), MEMSVC_ERR_INVALID_PARAM);
    /* the pinned alloc came back acquired: one release undoes it */
    CU_ASSERT_EQUAL(pins_of(conn, "out"), 1);
    TEST_ASSERT_OK(memsvc_release(conn, out));
    CU_ASSERT_EQUAL(pins_of(conn, "out"), 0);
    CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK); /* batch errors are not deferred ones */

    /* more than one message's worth: 150 allocs (pinned), in order, each its own handle */
    TEST_ASSERT_OK(memsvc_batch_reset(b));
    for (k = 0; k < 150; k++) {
        snprintf(key, sizeof(key), "many.%03zu.with-a-longer-key-to-fill-the-header", k);
        TEST_ASSERT_OK(memsvc_batch_alloc(b, key, 4096, &pin, NULL));
    }
    CU_ASSERT_EQUAL(memsvc_batch_submit(b, NULL), MEMSVC_OK);
    for (k = 0; k < 150; k++) {
        CU_ASSERT_EQUAL(memsvc_batch_result(b, k, &x), MEMSVC_OK);
        CU_ASSERT_NOT_EQUAL(x, 0);
        TEST_ASSERT_OK(memsvc_release(conn, x));
    }
    CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK);
    CU_ASSERT_EQUAL(pins_of(conn, "many.149.with-a-longer-key-to-fill-the-header"), 0);
    memsvc_batch_destroy(b);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* An asynchronous batch: the next operator's inputs acquired while this one "computes";
 * the acquires wait for a swap-in and complete later. */
static void test_batch_async(void)
{
    static const char *const args[] = {"--node", "tiny", "hbm=4MiB", "--memory", "phantom", NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_batch_h           b;
    memsvc_req_h             req;
    memsvc_handle_t          h[6];
    memsvc_status_t          s = MEMSVC_INPROGRESS;
    uint64_t                 deadline;
    unsigned                 i, polls = 0;
    char                     key[16];

    START(&d, args);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    for (i = 0; i < 6; i++) { /* 6 MiB on a 4 MiB device: the first ones go to host */
        snprintf(key, sizeof(key), "w%u", i);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, 1u << 20, NULL, &h[i]));
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->dev[0].swap_outs > 0);
    TEST_ASSERT_OK(memsvc_batch_create(conn, &b));
    TEST_ASSERT_OK(memsvc_batch_acquire(b, h[0], NULL));
    TEST_ASSERT_OK(memsvc_batch_acquire(b, h[1], NULL));
    CU_ASSERT_EQUAL(memsvc_batch_submit(b, &req), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(memsvc_batch_submit(b, NULL), MEMSVC_ERR_BUSY);
    CU_ASSERT_EQUAL(memsvc_batch_acquire(b, h[2], NULL), MEMSVC_ERR_BUSY);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, 0, NULL), MEMSVC_INPROGRESS);
    /* meanwhile the connection serves other calls */
    CU_ASSERT_EQUAL(memsvc_acquire(conn, h[5]), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_release(conn, h[5]));
    deadline = msp_now_ns() + 10000000000ull;
    while ((s == MEMSVC_INPROGRESS) && (msp_now_ns() < deadline) && (polls < 10000000u)) {
        memsvc_progress(conn); /* (memsvc_test progresses too) */
        s = memsvc_test(req);
        polls++;
    }
    CU_ASSERT_EQUAL(s, MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, 0, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, 1, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(pins_of(conn, "w0"), 1);
    CU_ASSERT_EQUAL(pins_of(conn, "w1"), 1);

    /* reuse: release both in a batch, waited for with memsvc_wait */
    TEST_ASSERT_OK(memsvc_batch_reset(b));
    TEST_ASSERT_OK(memsvc_batch_release(b, h[0], NULL));
    TEST_ASSERT_OK(memsvc_batch_release(b, h[1], NULL));
    CU_ASSERT_EQUAL(memsvc_batch_submit(b, &req), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(memsvc_wait(req, 10000), MEMSVC_OK);
    CU_ASSERT_EQUAL(pins_of(conn, "w0"), 0);

    /* a batch abandoned in flight, then destroyed: no harm, the connection goes on */
    TEST_ASSERT_OK(memsvc_batch_reset(b));
    TEST_ASSERT_OK(memsvc_batch_acquire(b, h[2], NULL));
    CU_ASSERT_EQUAL(memsvc_batch_submit(b, &req), MEMSVC_INPROGRESS);
    memsvc_req_free(req);
    CU_ASSERT_EQUAL(memsvc_batch_result(b, 0, NULL), MEMSVC_ERR_CANCELED);
    memsvc_batch_destroy(b);
    CU_ASSERT_EQUAL(memsvc_flush(conn), MEMSVC_OK);
    memsvc_close(conn);
    /* the session's pins go with it, once the daemon has noticed the close (bounded wait) */
    for (polls = 0; polls < 200; polls++) {
        TEST_ASSERT_OK(integ_stats(&d, st));
        if (st->dev[0].pinned_tensors == 0) {
            break;
        }
        usleep(20000);
    }
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static void test_version(void)
{
    uint32_t    proto = 0;
    const char *v     = memsvc_version(&proto);

    CU_ASSERT_STRING_EQUAL(v, MEMSVC_VERSION_STRING);
    CU_ASSERT_EQUAL(proto, 3);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_oneway", NULL, NULL);

    CU_add_test(s, "one-way errors are deferred, in order, and named", test_deferred_errors);
    CU_add_test(s, "one-way requests keep their order; corked ones ride on the next call",
                test_order_and_cork);
    CU_add_test(s, "a batch of mixed requests: one status each", test_batch_mixed);
    CU_add_test(s, "an asynchronous batch (prefetch), reused and abandoned", test_batch_async);
    CU_add_test(s, "library and protocol version", test_version);
}

TEST_REGISTER(service_oneway, add_suite)
