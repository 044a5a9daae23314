/* test_eng.c - the engine: state machine, requests, pins, policies none/lru, bytes, accounting */
#include "memsvc/eng.h"
#include "tests/eng_fixture.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define MiB (1024ull * 1024ull)

/* ---- helpers ------------------------------------------------------------------------------ */

static eng_t *make_engine(const char *policy, sim_mem_mode_t mode, const char *const *overrides)
{
    sim_desc_t   desc;
    eng_params_t p;
    eng_t       *eng = NULL;
    char         err[256];

    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("tiny", &desc), MEMSVC_OK);
    while (overrides != NULL && *overrides != NULL) {
        CU_ASSERT_EQUAL_FATAL(sim_desc_set(&desc, *overrides, err, sizeof(err)), MEMSVC_OK);
        overrides++;
    }
    p.desc   = &desc;
    p.mode   = mode;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = policy;
    CU_ASSERT_EQUAL_FATAL(eng_create(&p, &eng, err, sizeof(err)), MEMSVC_OK);
    return eng;
}

static eng_tensor_desc_t tdesc(const char *key, uint64_t size, memsvc_kind_t kind)
{
    eng_tensor_desc_t d;

    memset(&d, 0, sizeof(d));
    d.key          = key;
    d.size         = size;
    d.kind         = kind;
    d.tags         = MEMSVC_TAGS_NONE;
    d.recomputable = (kind == MEMSVC_KIND_ACTIVATION);
    d.recompute_ns = 1000;
    d.durable      = (kind == MEMSVC_KIND_PARAM || kind == MEMSVC_KIND_OPTIM);
    d.job          = 1;
    return d;
}

typedef struct done {
    int             calls;
    memsvc_status_t status;
} done_t;

static void done_cb(void *arg, eng_handle_t h, memsvc_status_t status)
{
    done_t *d = arg;

    d->calls++;
    d->status = status;
}

/* ---- the transition table ----------------------------------------------------------------- */

static void test_transition_table(void)
{
    /* the legal transitions, written out independently of the table */
    static const struct {
        memsvc_state_t from;
        eng_op_t       op;
        memsvc_state_t to;
    } legal[] = {
        {MEMSVC_STATE_ON_DEVICE, ENG_OP_SWAP_OUT, MEMSVC_STATE_MOVING_OUT},
        {MEMSVC_STATE_ON_DEVICE, ENG_OP_DROP, MEMSVC_STATE_DROPPED},
        {MEMSVC_STATE_ON_DEVICE, ENG_OP_FREE, MEMSVC_STATE_FREED},
        {MEMSVC_STATE_MOVING_OUT, ENG_OP_OUT_DONE, MEMSVC_STATE_ON_HOST},
        {MEMSVC_STATE_MOVING_OUT, ENG_OP_SPILL_DONE, MEMSVC_STATE_ON_DISK},
        {MEMSVC_STATE_MOVING_OUT, ENG_OP_CANCEL_OUT, MEMSVC_STATE_ON_DEVICE},
        {MEMSVC_STATE_MOVING_OUT, ENG_OP_FREE, MEMSVC_STATE_FREED},
        {MEMSVC_STATE_ON_HOST, ENG_OP_SWAP_IN, MEMSVC_STATE_MOVING_IN},
        {MEMSVC_STATE_ON_HOST, ENG_OP_SPILL, MEMSVC_STATE_MOVING_OUT},
        {MEMSVC_STATE_ON_HOST, ENG_OP_FREE, MEMSVC_STATE_FREED},
        {MEMSVC_STATE_MOVING_IN, ENG_OP_PLACED, MEMSVC_STATE_ON_DEVICE},
        {MEMSVC_STATE_MOVING_IN, ENG_OP_ABORT_TO_HOST, MEMSVC_STATE_ON_HOST},
        {MEMSVC_STATE_MOVING_IN, ENG_OP_ABORT_TO_DISK, MEMSVC_STATE_ON_DISK},
        {MEMSVC_STATE_MOVING_IN, ENG_OP_ABORT_TO_DROPPED, MEMSVC_STATE_DROPPED},
        {MEMSVC_STATE_MOVING_IN, ENG_OP_FREE, MEMSVC_STATE_FREED},
        {MEMSVC_STATE_DROPPED, ENG_OP_RECOMPUTE, MEMSVC_STATE_ON_DEVICE},
        {MEMSVC_STATE_DROPPED, ENG_OP_RECOMPUTE_WAIT, MEMSVC_STATE_MOVING_IN},
        {MEMSVC_STATE_DROPPED, ENG_OP_FREE, MEMSVC_STATE_FREED},
        {MEMSVC_STATE_ON_DISK, ENG_OP_SWAP_IN, MEMSVC_STATE_MOVING_IN},
        {MEMSVC_STATE_ON_DISK, ENG_OP_FREE, MEMSVC_STATE_FREED},
        {MEMSVC_STATE_MOVING_OUT, ENG_OP_PEER_DONE, MEMSVC_STATE_ON_PEER},
        {MEMSVC_STATE_MOVING_IN, ENG_OP_ABORT_TO_PEER, MEMSVC_STATE_ON_PEER},
        {MEMSVC_STATE_ON_PEER, ENG_OP_SWAP_IN, MEMSVC_STATE_MOVING_IN},
        {MEMSVC_STATE_ON_PEER, ENG_OP_FREE, MEMSVC_STATE_FREED},
    };
    int s, o, num_legal = 0;

    for (s = 0; s < MEMSVC_STATE_COUNT; s++) {
        for (o = 0; o < ENG_OP_COUNT; o++) {
            memsvc_state_t  next = (memsvc_state_t)99;
            memsvc_status_t st   = eng_transition((memsvc_state_t)s, (eng_op_t)o, &next);
            size_t          i;
            int             expect = -1;

            for (i = 0; i < sizeof(legal) / sizeof(legal[0]); i++) {
                if (legal[i].from == (memsvc_state_t)s && legal[i].op == (eng_op_t)o) {
                    expect = (int)legal[i].to;
                }
            }
            if (expect >= 0) {
                CU_ASSERT_EQUAL(st, MEMSVC_OK);
                CU_ASSERT_EQUAL(next, (memsvc_state_t)expect);
                num_legal++;
            } else {
                CU_ASSERT_EQUAL(st, MEMSVC_ERR_ILLEGAL_STATE);
                CU_ASSERT_EQUAL(next, (memsvc_state_t)99); /* untouched */
            }
        }
    }
    CU_ASSERT_EQUAL(num_legal, (int)(sizeof(legal) / sizeof(legal[0])));
    CU_ASSERT_EQUAL(eng_transition((memsvc_state_t)42, ENG_OP_FREE, &(memsvc_state_t){0}),
                    MEMSVC_ERR_ILLEGAL_STATE);
    CU_ASSERT_STRING_EQUAL(eng_op_name(ENG_OP_SWAP_OUT), "swap_out");
}

/* ---- the lifecycle through the API -------------------------------------------------------- */

static void test_lifecycle(void)
{
    eng_t            *eng = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_tensor_desc_t d   = tdesc("L0.mb0.act", 4 * MiB, MEMSVC_KIND_ACTIVATION);
    eng_handle_t      h, h2;
    done_t            done = {0};
    eng_tensor_info_t info;

    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(eng_lookup(eng, 1, "L0.mb0.act", &h2), MEMSVC_OK);
    CU_ASSERT_EQUAL(h2, h);
    CU_ASSERT_EQUAL(eng_lookup(eng, 2, "L0.mb0.act", &h2), MEMSVC_ERR_NOT_FOUND);

    /* swap out, then in */
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_MOVING_OUT);
    run_idle(eng);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(done.calls, 0); /* never called back from within the request */
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(done.status, MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(info.pins, 1);
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_ERR_NOT_PINNED);

    /* drop, then acquire answers recompute */
    CU_ASSERT_EQUAL(eng_drop(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_RECOMPUTE);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(info.pins, 1);
    CU_ASSERT_FALSE(info.valid);

    /* spill: on host -> on disk -> acquire brings it back */
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_spill(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_DISK);
    done.calls = 0;
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_DEVICE);

    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_ERR_NOT_FOUND); /* double free */
    eng_destroy(eng);
}

/* A recipe that grows: the engine's recompute cost follows; a stale handle is refused. */
static void test_set_recompute_ns(void)
{
    eng_t            *eng = make_engine("dtr", SIM_MEM_PHANTOM, NULL);
    eng_tensor_desc_t d   = tdesc("L0.mb0.act", 1 * MiB, MEMSVC_KIND_ACTIVATION);
    eng_tensor_info_t info;
    eng_handle_t      h;

    d.recomputable = true;
    d.recompute_ns = 100;
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_set_recompute_ns(eng, h, 130), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.recompute_ns, 130);
    eng_set_graph(eng, NULL, NULL); /* no graph: dtr falls back to its local cost */
    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_set_recompute_ns(eng, h, 1), MEMSVC_ERR_NOT_FOUND);
    eng_destroy(eng);
}

static void test_illegal_requests(void)
{
    eng_t            *eng = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_tensor_desc_t a   = tdesc("act", 1 * MiB, MEMSVC_KIND_ACTIVATION);
    eng_tensor_desc_t p   = tdesc("param", 1 * MiB, MEMSVC_KIND_PARAM);
    eng_tensor_desc_t bad;
    eng_handle_t      ha, hp, hx;
    char              longkey[MEMSVC_KEY_MAX + 2];

    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &a, ENG_ALLOC_PIN, NULL, NULL, &ha), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &p, 0, NULL, NULL, &hp), MEMSVC_OK);

    CU_ASSERT_EQUAL(eng_alloc(eng, &a, 0, NULL, NULL, &hx), MEMSVC_ERR_EXISTS);
    CU_ASSERT_EQUAL(eng_drop(eng, ha), MEMSVC_ERR_PINNED);
    CU_ASSERT_EQUAL(eng_swap_out(eng, ha), MEMSVC_ERR_PINNED);
    CU_ASSERT_EQUAL(eng_drop(eng, hp), MEMSVC_ERR_INVALID_PARAM); /* durable: never dropped */
    CU_ASSERT_EQUAL(eng_spill(eng, hp), MEMSVC_ERR_ILLEGAL_STATE); /* on device, not host */
    CU_ASSERT_EQUAL(eng_swap_out(eng, hp), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(eng_swap_out(eng, hp), MEMSVC_ERR_ILLEGAL_STATE); /* already moving */
    CU_ASSERT_EQUAL(eng_drop(eng, hp), MEMSVC_ERR_ILLEGAL_STATE);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_swap_out(eng, hp), MEMSVC_ERR_ILLEGAL_STATE); /* on host */
    CU_ASSERT_EQUAL(eng_release(eng, hp), MEMSVC_ERR_NOT_PINNED);
    CU_ASSERT_EQUAL(eng_release(eng, ha), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_drop(eng, ha), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_prefetch(eng, ha), MEMSVC_ERR_ILLEGAL_STATE); /* dropped: no data */
    CU_ASSERT_EQUAL(eng_swap_out(eng, ha), MEMSVC_ERR_ILLEGAL_STATE);

    /* bad descriptions */
    bad      = tdesc("zero", 0, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &bad, 0, NULL, NULL, &hx), MEMSVC_ERR_INVALID_PARAM);
    bad      = tdesc("huge", 1ull << 40, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &bad, 0, NULL, NULL, &hx), MEMSVC_ERR_TOO_LARGE);
    bad        = tdesc("dev", 1024, MEMSVC_KIND_ACTIVATION);
    bad.device = 99;
    CU_ASSERT_EQUAL(eng_alloc(eng, &bad, 0, NULL, NULL, &hx), MEMSVC_ERR_INVALID_PARAM);
    bad      = tdesc("kind", 1024, (memsvc_kind_t)17);
    CU_ASSERT_EQUAL(eng_alloc(eng, &bad, 0, NULL, NULL, &hx), MEMSVC_ERR_INVALID_PARAM);
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    bad = tdesc(longkey, 1024, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &bad, 0, NULL, NULL, &hx), MEMSVC_ERR_INVALID_PARAM);
    bad = tdesc("", 1024, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &bad, 0, NULL, NULL, &hx), MEMSVC_ERR_INVALID_PARAM);

    /* stale and made-up handles */
    CU_ASSERT_EQUAL(eng_acquire(eng, 0, NULL, NULL), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_acquire(eng, 0xdeadbeef12345678ull, NULL, NULL), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_free(eng, ha), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_acquire(eng, ha, NULL, NULL), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_release(eng, ha), MEMSVC_ERR_NOT_FOUND);
    /* the key is free again, and the new handle differs from the stale one */
    CU_ASSERT_EQUAL(eng_alloc(eng, &a, 0, NULL, NULL, &hx), MEMSVC_OK);
    CU_ASSERT_NOT_EQUAL(hx, ha);
    eng_destroy(eng);
}

/* ---- policies: none and lru, pins --------------------------------------------------------- */

static void test_none_reports_oom_and_fragmentation(void)
{
    eng_t            *eng = make_engine("none", SIM_MEM_PHANTOM, NULL);
    eng_handle_t      h[16], hx;
    eng_tensor_desc_t d;
    eng_dev_stats_t   st;
    char              key[32];
    int               i;

    /* 64 MiB device: 16 x 4 MiB fill it */
    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "t%d", i);
        d = tdesc(key, 4 * MiB, MEMSVC_KIND_ACTIVATION);
        CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]), MEMSVC_OK);
    }
    d = tdesc("more", 4 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hx), MEMSVC_ERR_NO_MEMORY);
    /* free every other one: 32 MiB free, in 4 MiB holes */
    for (i = 0; i < 16; i += 2) {
        CU_ASSERT_EQUAL(eng_free(eng, h[i]), MEMSVC_OK);
    }
    d = tdesc("big", 8 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hx), MEMSVC_ERR_FRAGMENTED);
    CU_ASSERT_EQUAL(eng_lookup(eng, 1, "big", &hx), MEMSVC_ERR_NOT_FOUND); /* not left behind */
    CU_ASSERT_EQUAL(eng_dev_stats(eng, 0, &st), MEMSVC_OK);
    CU_ASSERT_EQUAL(st.oom_events, 1);
    CU_ASSERT_EQUAL(st.fragmented_events, 1);
    CU_ASSERT_EQUAL(st.alloc.free, 32 * MiB);
    CU_ASSERT_EQUAL(st.alloc.largest_free, 4 * MiB);
    CU_ASSERT(st.alloc.fragmentation > 0.8);
    CU_ASSERT_EQUAL(st.swap_outs, 0);
    eng_destroy(eng);
}

static void test_lru_evicts_oldest_never_pinned(void)
{
    eng_t            *eng = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_handle_t      h[16], hx;
    eng_tensor_desc_t d;
    done_t            done = {0};
    char              key[32];
    int               i;

    /* 16 x 4 MiB fill the 64 MiB device; t0, t2, t4, t6 are pinned */
    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "t%d", i);
        d = tdesc(key, 4 * MiB, MEMSVC_KIND_ACTIVATION);
        CU_ASSERT_EQUAL_FATAL(
            eng_alloc(eng, &d, (i < 8 && i % 2 == 0) ? ENG_ALLOC_PIN : 0, NULL, NULL, &h[i]),
            MEMSVC_OK);
    }
    /* touch t1: the LRU order of the unpinned is now t3 t5 t7 t8 t9 ... t15 t1 */
    CU_ASSERT_EQUAL(eng_acquire(eng, h[1], NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_release(eng, h[1]), MEMSVC_OK);

    /* 8 MiB: t3 and t5 go first, but their holes are not adjacent (t4 is pinned), so the
     * request stays queued and the policy is asked again: t7, then t8, whose holes join */
    d = tdesc("new", 8 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, done_cb, &done, &hx), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(done.status, MEMSVC_OK);
    for (i = 0; i < 8; i += 2) {
        CU_ASSERT_EQUAL(state_of(eng, h[i]), MEMSVC_STATE_ON_DEVICE);
    }
    CU_ASSERT_EQUAL(state_of(eng, h[3]), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(state_of(eng, h[5]), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(state_of(eng, h[7]), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(state_of(eng, h[8]), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(state_of(eng, h[9]), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, h[1]), MEMSVC_STATE_ON_DEVICE); /* most recently used stays */
    CU_ASSERT_EQUAL(state_of(eng, hx), MEMSVC_STATE_ON_DEVICE);

    /* when only pinned tensors are left, the request fails rather than moving a pinned one */
    for (i = 1; i < 16; i++) {
        if ((i >= 8 || i % 2 == 1) && state_of(eng, h[i]) == MEMSVC_STATE_ON_DEVICE) {
            CU_ASSERT_EQUAL(eng_acquire(eng, h[i], NULL, NULL), MEMSVC_OK);
        }
    }
    CU_ASSERT_EQUAL(eng_acquire(eng, hx, NULL, NULL), MEMSVC_OK);
    done.calls = 0;
    d          = tdesc("nope", 16 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, done_cb, &done, &hx), MEMSVC_ERR_NO_MEMORY);
    CU_ASSERT_EQUAL(done.calls, 0);
    for (i = 0; i < 16; i++) {
        if (i != 3 && i != 5 && i != 7 && i != 8) {
            CU_ASSERT_EQUAL(state_of(eng, h[i]), MEMSVC_STATE_ON_DEVICE);
        }
    }
    eng_destroy(eng);
}

/* Regression: drops free holes at once; when the first holes do not join, the policy is asked
 * again (not failed as fragmented) until a block large enough forms. */
static void test_drops_continue_until_holes_join(void)
{
    eng_t            *eng = make_engine("lru:drop=on", SIM_MEM_PHANTOM, NULL);
    eng_handle_t      h[16], hx;
    eng_tensor_desc_t d;
    char              key[32];
    int               i;

    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "t%d", i);
        d = tdesc(key, 4 * MiB, MEMSVC_KIND_ACTIVATION);
        CU_ASSERT_EQUAL_FATAL(
            eng_alloc(eng, &d, (i < 8 && i % 2 == 0) ? ENG_ALLOC_PIN : 0, NULL, NULL, &h[i]),
            MEMSVC_OK);
    }
    d = tdesc("new", 8 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hx), MEMSVC_OK); /* at once: drops */
    CU_ASSERT_EQUAL(state_of(eng, h[1]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[3]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[5]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[7]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[8]), MEMSVC_STATE_DROPPED); /* t7 + t8 join */
    CU_ASSERT_EQUAL(state_of(eng, h[9]), MEMSVC_STATE_ON_DEVICE);
    for (i = 0; i < 8; i += 2) {
        CU_ASSERT_EQUAL(state_of(eng, h[i]), MEMSVC_STATE_ON_DEVICE);
    }
    eng_destroy(eng);
}

/* Regression: a request queued behind a swap-out must not wait forever when that swap-out is
 * canceled (the tensor acquired again while still moving out). */
static void test_canceled_move_reserves_queue(void)
{
    eng_t            *eng = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_handle_t      h[16], hx;
    eng_tensor_desc_t d;
    done_t            done = {0};
    char              key[32];
    int               i;

    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "t%d", i);
        d = tdesc(key, 4 * MiB, MEMSVC_KIND_ACTIVATION);
        CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]), MEMSVC_OK);
    }
    d = tdesc("new", 4 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, done_cb, &done, &hx), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_MOVING_OUT); /* the oldest goes */
    CU_ASSERT_TRUE(eng_step(eng)); /* the queue is served once: it waits for that move */
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT_EQUAL(done.calls, 0);
    CU_ASSERT_EQUAL(eng_prefetch(eng, h[0]), MEMSVC_OK); /* and is wanted back */
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_ON_DEVICE);
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 1); /* served: the policy moved another one */
    CU_ASSERT_EQUAL(done.status, MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, hx), MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

static void test_lru_drop_mode_drops_recomputable(void)
{
    eng_t            *eng = make_engine("lru:drop=on", SIM_MEM_PHANTOM, NULL);
    eng_handle_t      ha, hp, hx;
    eng_tensor_desc_t d;
    eng_dev_stats_t   st;
    char              err[128];
    eng_params_t      p;
    sim_desc_t        desc;
    eng_t            *bad = NULL;

    d = tdesc("act", 32 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &ha), MEMSVC_OK);
    d = tdesc("param", 24 * MiB, MEMSVC_KIND_PARAM);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &hp), MEMSVC_OK);
    d = tdesc("next", 32 * MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hx), MEMSVC_OK); /* a drop is immediate */
    CU_ASSERT_EQUAL(state_of(eng, ha), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, hp), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(eng_dev_stats(eng, 0, &st), MEMSVC_OK);
    CU_ASSERT_EQUAL(st.drops, 1);
    eng_destroy(eng);

    /* bad policy specs are refused with a message */
    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("tiny", &desc), MEMSVC_OK);
    p.desc   = &desc;
    p.mode   = SIM_MEM_PHANTOM;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = "lru:drop=maybe";
    CU_ASSERT_EQUAL(eng_create(&p, &bad, err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "drop"));
    p.policy = "lru:speed=11";
    CU_ASSERT_EQUAL(eng_create(&p, &bad, err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    p.policy = "belady";
    CU_ASSERT_EQUAL(eng_create(&p, &bad, err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "belady"));
    CU_ASSERT_PTR_NULL(bad);
}

/* ---- moves: cancel, free while moving, stall time ----------------------------------------- */

static void test_moves_cancel_free_and_stall(void)
{
    eng_t            *eng = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_tensor_desc_t d   = tdesc("a", 8 * MiB, MEMSVC_KIND_ACTIVATION);
    eng_handle_t      h;
    eng_stats_t       s;
    eng_dev_stats_t   st;
    done_t            done = {0};
    sim_time_t        t0, expect;

    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    /* acquire while moving out keeps the device copy and returns the host space */
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    eng_stats(eng, &s);
    CU_ASSERT_EQUAL(s.host.used, 8 * MiB);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    eng_stats(eng, &s);
    CU_ASSERT_EQUAL(s.host.used, 0);
    run_idle(eng); /* the stale completion does nothing */
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_OK);

    /* free while moving out returns device and host space */
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_OK);
    eng_stats(eng, &s);
    CU_ASSERT_EQUAL(s.host.used, 0);
    CU_ASSERT_EQUAL(s.live_tensors, 0);
    CU_ASSERT_EQUAL(eng_dev_stats(eng, 0, &st), MEMSVC_OK);
    CU_ASSERT_EQUAL(st.alloc.reserved, 0);
    run_idle(eng);

    /* the stall of an acquire equals the transfer time on an idle link */
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    t0     = sim_clock_now(eng_clock(eng));
    expect = sim_link_time_ns(&sim_node_desc(eng_node(eng))->h2d, 8 * MiB);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(sim_clock_now(eng_clock(eng)) - t0, expect);
    CU_ASSERT_EQUAL(eng_dev_stats(eng, 0, &st), MEMSVC_OK);
    CU_ASSERT_EQUAL(st.stall_ns, expect);
    CU_ASSERT_EQUAL(st.stalls, 1);
    CU_ASSERT_EQUAL(st.swap_in_bytes, 8 * MiB);
    CU_ASSERT_EQUAL(st.swap_out_bytes, 8 * MiB); /* the canceled and the freed move count not */

    /* free of a tensor with a waiter cancels the wait */
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    done.calls = 0;
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(done.status, MEMSVC_ERR_CANCELED);
    run_idle(eng);
    eng_stats(eng, &s);
    CU_ASSERT_EQUAL(s.host.used, 0);
    CU_ASSERT_EQUAL(s.moves_in_flight, 0);
    eng_destroy(eng);
}

/* ---- backed mode: bytes survive any number of swaps, spills ------------------------------- */

static void check_contents(eng_t *eng, eng_handle_t h, uint64_t size, uint64_t seed, uint8_t *buf,
                           uint8_t *ref)
{
    test_fill(ref, size, seed);
    CU_ASSERT_EQUAL_FATAL(eng_read(eng, h, 0, buf, size), MEMSVC_OK);
    CU_ASSERT_EQUAL(memcmp(buf, ref, size), 0);
}

static void test_backed_bytes_survive_swaps(void)
{
    static const char *const ov[] = {"host=24MiB", NULL}; /* host small: some go to disk */
    eng_t            *eng = make_engine("lru", SIM_MEM_BACKED, ov);
    const uint64_t    size = 6 * MiB + 1234; /* not a multiple of the alignment */
    eng_handle_t      h[20];
    uint8_t          *buf = malloc(size), *ref = malloc(size);
    eng_tensor_desc_t d;
    eng_dev_stats_t   st;
    char              key[32];
    int               i, round;

    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    /* 20 x 6 MiB = 120 MiB through a 64 MiB device */
    for (i = 0; i < 20; i++) {
        done_t done = {0};

        snprintf(key, sizeof(key), "w%d", i);
        d = tdesc(key, size, MEMSVC_KIND_PARAM);
        memsvc_status_t s = eng_alloc(eng, &d, ENG_ALLOC_PIN, done_cb, &done, &h[i]);
        CU_ASSERT_FATAL(s == MEMSVC_OK || s == MEMSVC_INPROGRESS);
        if (s == MEMSVC_INPROGRESS) {
            run_idle(eng);
            CU_ASSERT_EQUAL_FATAL(done.status, MEMSVC_OK);
        }
        test_fill(ref, size, (uint64_t)i);
        CU_ASSERT_EQUAL_FATAL(eng_write(eng, h[i], 0, ref, size), MEMSVC_OK);
        CU_ASSERT_EQUAL(eng_release(eng, h[i]), MEMSVC_OK);
    }
    for (round = 0; round < 3; round++) {
        for (i = 0; i < 20; i++) {
            int             j    = (round % 2 == 0) ? i : 19 - i;
            done_t          done = {0};
            memsvc_status_t s    = eng_acquire(eng, h[j], done_cb, &done);

            CU_ASSERT_FATAL(s == MEMSVC_OK || s == MEMSVC_INPROGRESS);
            if (s == MEMSVC_INPROGRESS) {
                run_idle(eng);
                CU_ASSERT_EQUAL_FATAL(done.status, MEMSVC_OK);
            }
            check_contents(eng, h[j], size, (uint64_t)j, buf, ref);
            CU_ASSERT_EQUAL(eng_release(eng, h[j]), MEMSVC_OK);
        }
    }
    CU_ASSERT_EQUAL(eng_dev_stats(eng, 0, &st), MEMSVC_OK);
    CU_ASSERT(st.swap_outs > 20);
    CU_ASSERT(st.spills > 0); /* the host pool filled up and the disk took the rest */
    /* reads and writes at the edges (of a resident tensor) */
    {
        done_t          done = {0};
        memsvc_status_t s    = eng_acquire(eng, h[0], done_cb, &done);

        if (s == MEMSVC_INPROGRESS) {
            run_idle(eng);
        }
    }
    CU_ASSERT_EQUAL(eng_read(eng, h[0], size - 1, buf, 1), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_read(eng, h[0], size, buf, 1), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(eng_read(eng, h[0], UINT64_MAX, buf, 2), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(eng_write(eng, h[0], 1, buf, size), MEMSVC_ERR_OUT_OF_RANGE);
    free(buf);
    free(ref);
    eng_destroy(eng);
}


/* ---- the peer tier -------------------------------------------------------------------------- */

/* Swap h out and spill it (host first; the tier below is the engine's choice). */
static memsvc_state_t push_down(eng_t *eng, eng_handle_t h)
{
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(eng_spill(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    return state_of(eng, h);
}

/*
 * Below the host pool, the peer tier and the disk are ordered by their links: the faster first,
 * the other when it is full; a tensor on the peer tier comes back on an acquire, after the nic's
 * time. No peer room (peer=0): the disk, as before.
 */
static void test_peer_tier_order(void)
{
    static const char *const fast[] = {"peer=8MiB", "nic_bw=10GB/s", "disk_bw=1GB/s", NULL};
    static const char *const slow[] = {"peer=8MiB", "nic_bw=0.1GB/s", "disk_bw=1GB/s", NULL};
    static const char *const none[] = {"nic_bw=10GB/s", NULL};
    eng_t            *eng = make_engine("none", SIM_MEM_PHANTOM, fast);
    eng_tensor_desc_t d;
    eng_handle_t      h[3];
    done_t            done = {0};
    sim_time_t        t0;
    eng_stats_t       es;
    unsigned          i;
    char              key[16];

    for (i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "p%u", i);
        d = tdesc(key, 4 * MiB, MEMSVC_KIND_GRAD);
        CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]), MEMSVC_OK);
    }
    /* nic faster than the disk: the peer tier first, the disk once its 8 MiB are taken */
    CU_ASSERT_EQUAL(push_down(eng, h[0]), MEMSVC_STATE_ON_PEER);
    CU_ASSERT_EQUAL(push_down(eng, h[1]), MEMSVC_STATE_ON_PEER);
    CU_ASSERT_EQUAL(push_down(eng, h[2]), MEMSVC_STATE_ON_DISK);
    eng_stats(eng, &es);
    CU_ASSERT_EQUAL(es.host.peer_used, 8 * MiB);
    CU_ASSERT_EQUAL(es.host.peer_capacity, 8 * MiB);
    /* back from the peer: 4 MiB over 10 GB/s, then h2d at 1 GB/s */
    eng_stats(eng, &es);
    t0 = es.now;
    CU_ASSERT_EQUAL(eng_acquire(eng, h[0], done_cb, &done), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(done.status, MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_ON_DEVICE);
    eng_stats(eng, &es);
    CU_ASSERT_TRUE(es.now - t0 >= (sim_time_t)(4 * MiB / 10e9 * 1e9 + 4 * MiB / 1e9 * 1e9));
    CU_ASSERT_EQUAL(es.host.peer_used, 4 * MiB);
    CU_ASSERT_EQUAL(eng_free(eng, h[1]), MEMSVC_OK); /* freed where it is */
    eng_stats(eng, &es);
    CU_ASSERT_EQUAL(es.host.peer_used, 0);
    eng_destroy(eng);

    /* nic slower than the disk: the disk first */
    eng = make_engine("none", SIM_MEM_PHANTOM, slow);
    d   = tdesc("q", 4 * MiB, MEMSVC_KIND_GRAD);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h[0]), MEMSVC_OK);
    CU_ASSERT_EQUAL(push_down(eng, h[0]), MEMSVC_STATE_ON_DISK);
    eng_destroy(eng);

    /* no peer room: the disk */
    eng = make_engine("none", SIM_MEM_PHANTOM, none);
    d   = tdesc("r", 4 * MiB, MEMSVC_KIND_GRAD);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h[0]), MEMSVC_OK);
    CU_ASSERT_EQUAL(push_down(eng, h[0]), MEMSVC_STATE_ON_DISK);
    eng_destroy(eng);
}

/* A stand-in for the daemon's peer store: keeps objects in memory, ends operations when told. */
typedef struct far_op {
    eng_handle_t h;
    uint32_t     move_id;
    bool         write;
    uint64_t     len;
} far_op_t;

typedef struct far_fake {
    eng_t   *eng;
    far_op_t ops[64];
    unsigned nops;
    struct {
        eng_handle_t h;
        uint8_t     *bytes;
        uint64_t     len;
    } obj[64];
    unsigned nobj, releases;
} far_fake_t;

static void far_write(void *arg, eng_handle_t h, uint32_t move_id, const void *src, uint64_t len)
{
    far_fake_t *f = arg;

    CU_ASSERT_FATAL(f->nops < 64 && f->nobj < 64);
    f->obj[f->nobj].h     = h;
    f->obj[f->nobj].bytes = malloc(len);
    f->obj[f->nobj].len   = len;
    memcpy(f->obj[f->nobj].bytes, src, len); /* copied before it returns, as promised */
    f->nobj++;
    f->ops[f->nops++] = (far_op_t){.h = h, .move_id = move_id, .write = true, .len = len};
}

static void far_read(void *arg, eng_handle_t h, uint32_t move_id, uint64_t len)
{
    far_fake_t *f = arg;

    CU_ASSERT_FATAL(f->nops < 64);
    f->ops[f->nops++] = (far_op_t){.h = h, .move_id = move_id, .write = false, .len = len};
}

static void far_release(void *arg, eng_handle_t h)
{
    far_fake_t *f = arg;
    unsigned    i;

    f->releases++;
    for (i = 0; i < f->nobj; i++) {
        if (f->obj[i].h == h) {
            free(f->obj[i].bytes);
            f->obj[i] = f->obj[--f->nobj];
            return;
        }
    }
}

/* End every operation under way with status (reads get the object's bytes). */
static void far_finish(far_fake_t *f, memsvc_status_t status)
{
    unsigned n = f->nops, i, k;

    f->nops = 0;
    for (i = 0; i < n; i++) {
        const void *bytes = NULL;
        uint64_t    len   = 0;

        for (k = 0; !f->ops[i].write && (k < f->nobj); k++) {
            if (f->obj[k].h == f->ops[i].h) {
                bytes = f->obj[k].bytes;
                len   = f->obj[k].len;
            }
        }
        eng_far_done(f->eng, f->ops[i].h, f->ops[i].move_id, status, bytes, len);
    }
}

/*
 * Backed memory: the peer tier's bytes go through the far operations, and a move ends only when
 * they say so. The bytes come back exact; a write the peer did not keep leaves the tensor on
 * host; a read that fails loses the tensor (acquires answer MEMSVC_ERR_IO; it can be freed);
 * a stale end (the tensor freed meanwhile) is ignored.
 */
static void test_peer_tier_backed(void)
{
    static const char *const ov[] = {"peer=16MiB", "nic_bw=10GB/s", "disk_bw=1GB/s", NULL};
    eng_t            *eng  = make_engine("none", SIM_MEM_BACKED, ov);
    far_fake_t        f    = {.eng = eng};
    eng_far_ops_t     ops  = {.arg = &f, .write = far_write, .read = far_read,
                              .release = far_release};
    const uint64_t    size = 1 * MiB + 77;
    uint8_t          *buf = malloc(size), *ref = malloc(size);
    eng_tensor_desc_t d;
    eng_handle_t      h, h2;
    done_t            done = {0};

    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    eng_set_far_ops(eng, &ops);
    d = tdesc("w", size, MEMSVC_KIND_GRAD);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    test_fill(ref, size, 5);
    CU_ASSERT_EQUAL(eng_write(eng, h, 0, ref, size), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_spill(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    /* the simulated time is over, the bytes are not kept yet */
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT_EQUAL(f.nops, 1);
    far_finish(&f, MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_PEER);
    /* a read of it brings it back (BUSY until it is: the client retries) */
    CU_ASSERT_EQUAL(eng_read(eng, h, 0, buf, 1), MEMSVC_ERR_BUSY);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_MOVING_IN);
    run_idle(eng);
    far_finish(&f, MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_read(eng, h, 0, buf, size), MEMSVC_OK);
    CU_ASSERT_EQUAL(memcmp(buf, ref, size), 0);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_spill(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    far_finish(&f, MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_PEER);
    /* back by an acquire: exact */
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(done.calls, 0);
    CU_ASSERT_EQUAL(f.nops, 1);
    far_finish(&f, MEMSVC_OK);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(done.status, MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_read(eng, h, 0, buf, size), MEMSVC_OK);
    CU_ASSERT_EQUAL(memcmp(buf, ref, size), 0);
    CU_ASSERT_EQUAL(f.nobj, 0); /* released once back */
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_OK);

    /* a write the peer refuses: still on host, with its bytes */
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_spill(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    far_finish(&f, MEMSVC_ERR_HOST_MEMORY);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(eng_read(eng, h, 0, buf, size), MEMSVC_OK);
    CU_ASSERT_EQUAL(memcmp(buf, ref, size), 0);

    /* kept, then the read fails: lost */
    CU_ASSERT_EQUAL(eng_spill(eng, h), MEMSVC_INPROGRESS);
    run_idle(eng);
    far_finish(&f, MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_PEER);
    done.calls = 0;
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_INPROGRESS);
    run_idle(eng);
    far_finish(&f, MEMSVC_ERR_TRANSPORT);
    CU_ASSERT_EQUAL(done.calls, 1);
    CU_ASSERT_EQUAL(done.status, MEMSVC_ERR_IO);
    CU_ASSERT_EQUAL(state_of(eng, h), MEMSVC_STATE_ON_PEER);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, done_cb, &done), MEMSVC_ERR_IO);
    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_OK);

    /* freed while its write is under way: the late end is ignored */
    d = tdesc("w2", size, MEMSVC_KIND_GRAD);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h2), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_write(eng, h2, 0, ref, size), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h2), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_spill(eng, h2), MEMSVC_INPROGRESS);
    run_idle(eng);
    CU_ASSERT_EQUAL(f.nops, 1);
    CU_ASSERT_EQUAL(eng_free(eng, h2), MEMSVC_OK);
    far_finish(&f, MEMSVC_OK);
    {
        eng_stats_t es;

        eng_stats(eng, &es);
        CU_ASSERT_EQUAL(es.moves_in_flight, 0);
        CU_ASSERT_EQUAL(es.host.peer_used, 0);
        CU_ASSERT_EQUAL(es.live_tensors, 0);
    }
    while (f.nobj > 0) {
        free(f.obj[--f.nobj].bytes);
    }
    free(buf);
    free(ref);
    eng_destroy(eng);
}

/* A loan (eng_lend): the bytes where they are, held on the device, a free deferred. */
static void test_lend(void)
{
    eng_t            *eng = make_engine("none", SIM_MEM_BACKED, NULL);
    const uint64_t    size = 40 * MiB; /* two cannot fit on the 64 MiB device */
    eng_tensor_desc_t d    = tdesc("a", size, MEMSVC_KIND_ACTIVATION);
    eng_tensor_info_t info;
    eng_loan_t        w, r, r2;
    eng_handle_t      h, h2, h3;
    uint8_t          *buf = malloc(size);

    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    /* a write loan: what goes into its pointer is the tensor's, valid when it ends well */
    CU_ASSERT_EQUAL_FATAL(eng_set_valid(eng, h, false), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(eng_lend(eng, h, MiB, 2 * MiB, true, &w), MEMSVC_OK);
    memset(w.ptr, 0xa5, 2 * MiB);
    CU_ASSERT_EQUAL(eng_lend_end(eng, &w, true), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_lend_end(eng, &w, true), MEMSVC_ERR_INVALID_PARAM); /* ended twice */
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_TRUE(info.valid);
    CU_ASSERT_EQUAL(eng_read(eng, h, MiB, buf, 2 * MiB), MEMSVC_OK);
    CU_ASSERT_EQUAL(buf[0], 0xa5);
    CU_ASSERT_EQUAL(buf[2 * MiB - 1], 0xa5);
    /* a write loan that failed leaves it uncommitted */
    CU_ASSERT_EQUAL_FATAL(eng_lend(eng, h, 0, size, true, &w), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_lend_end(eng, &w, false), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_FALSE(info.valid);
    /* refusals: out of range; not on the device */
    CU_ASSERT_EQUAL(eng_lend(eng, h, size - 1, 2, false, &r), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(eng_lend(eng, h + 1, 0, 1, false, &r), MEMSVC_ERR_NOT_FOUND);
    /* while lent it stays on its device, and it is not a pin */
    CU_ASSERT_EQUAL_FATAL(eng_lend(eng, h, 0, size, false, &r), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(eng_lend(eng, h, 0, 4096, false, &r2), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_swap_out(eng, h), MEMSVC_ERR_PINNED);
    CU_ASSERT_EQUAL(eng_drop(eng, h), MEMSVC_ERR_PINNED);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.pins, 0);
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    /* freed while lent: the handle and the key end now, the space with the last loan */
    CU_ASSERT_EQUAL(eng_free(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_lend(eng, h, 0, 1, false, &w), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &h2), MEMSVC_ERR_NO_MEMORY);
    CU_ASSERT_EQUAL(eng_lend_end(eng, &r2, true), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &h2), MEMSVC_ERR_NO_MEMORY);
    memset(r.ptr, 0x11, size); /* still its own: nobody else was given these bytes */
    CU_ASSERT_EQUAL(eng_lend_end(eng, &r, true), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h2), MEMSVC_OK); /* same key */
    CU_ASSERT_NOT_EQUAL(h2, h);
    /* not on its device: BUSY, the caller copies; the engine's end frees a loan left open */
    CU_ASSERT_EQUAL_FATAL(eng_swap_out(eng, h2), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(eng_lend(eng, h2, 0, 1, false, &w), MEMSVC_ERR_BUSY);
    run_idle(eng);
    CU_ASSERT_EQUAL(eng_lend(eng, h2, 0, 1, true, &w), MEMSVC_ERR_BUSY);
    d = tdesc("b", MiB, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h3), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(eng_lend(eng, h3, 0, MiB, true, &w), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_free(eng, h3), MEMSVC_OK);
    free(buf);
    eng_destroy(eng); /* (LeakSanitizer: the lent, freed tensor goes too) */
}

static void test_phantom_has_no_bytes(void)
{
    eng_t            *eng = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_tensor_desc_t d   = tdesc("x", 4096, MEMSVC_KIND_ACTIVATION);
    eng_handle_t      h;
    uint8_t           b[16];

    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_write(eng, h, 0, b, sizeof(b)), MEMSVC_ERR_UNSUPPORTED);
    CU_ASSERT_EQUAL(eng_read(eng, h, 0, b, sizeof(b)), MEMSVC_ERR_UNSUPPORTED);
    {
        eng_loan_t loan;

        CU_ASSERT_EQUAL(eng_lend(eng, h, 0, sizeof(b), true, &loan), MEMSVC_ERR_UNSUPPORTED);
    }
    eng_destroy(eng);
}

/* ---- scale: a million tensors in phantom mode on the 910B preset -------------------------- */

static long max_rss_kib(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Deferred policy notifications: a resident acquire pins at once; the policy hears of it at
 * the flush or before anything else it hears, so the order is unchanged. */
static void test_policy_defer(void)
{
    eng_t            *eng = make_engine("foresight", SIM_MEM_PHANTOM, NULL);
    eng_t            *lru = make_engine("lru", SIM_MEM_PHANTOM, NULL);
    eng_tensor_desc_t d   = tdesc("L0.mb0.a", 1 * MiB, MEMSVC_KIND_ACTIVATION);
    eng_tensor_desc_t d2  = tdesc("L0.mb0.b", 1 * MiB, MEMSVC_KIND_ACTIVATION);
    eng_tensor_info_t info;
    eng_handle_t      h, h2;

    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    eng_policy_defer(eng, true);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_info(eng, h, &info), MEMSVC_OK);
    CU_ASSERT_EQUAL(info.pins, 1); /* the bookkeeping is done */
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 1);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 2);
    /* a release is heard after the acquires before it */
    CU_ASSERT_EQUAL(eng_release(eng, h), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 0, 0, MEMSVC_PHASE_FORWARD); /* a hint flushes */
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d2, 0, NULL, NULL, &h2),
                          MEMSVC_OK); /* so does an alloc */
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0);
    CU_ASSERT_EQUAL(eng_acquire(eng, h2, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 1);
    eng_policy_flush(eng);
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0);
    CU_ASSERT_EQUAL(eng_acquire(eng, h2, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_free(eng, h2), MEMSVC_OK); /* heard before the free */
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    eng_policy_defer(eng, false); /* off: flushed */
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0);
    CU_ASSERT_EQUAL(eng_acquire(eng, h, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_policy_pending(eng), 0); /* not deferring: heard at once */
    eng_destroy(eng);

    /* a policy without on_access has nothing to defer */
    CU_ASSERT_EQUAL_FATAL(eng_alloc(lru, &d, 0, NULL, NULL, &h), MEMSVC_OK);
    eng_policy_defer(lru, true);
    CU_ASSERT_EQUAL(eng_acquire(lru, h, NULL, NULL), MEMSVC_OK);
    CU_ASSERT_EQUAL(eng_policy_pending(lru), 0);
    eng_policy_defer(lru, false);
    eng_destroy(lru);
}

static void test_phantom_million_tensors(void)
{
    sim_desc_t        desc;
    eng_params_t      p;
    eng_t            *eng = NULL;
    eng_tensor_desc_t d;
    eng_dev_stats_t   st;
    eng_stats_t       s;
    char              key[64], err[128];
    long              rss0 = max_rss_kib();
    uint64_t          total = 0;
    eng_handle_t     *h;
    const int         n = 1000000;
    int               i;
    unsigned          dev;

    h = malloc(sizeof(*h) * n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("ascend-910b", &desc), MEMSVC_OK);
    p.desc   = &desc;
    p.mode   = SIM_MEM_PHANTOM;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = "lru";
    CU_ASSERT_EQUAL_FATAL(eng_create(&p, &eng, err, sizeof(err)), MEMSVC_OK);
    for (i = 0; i < n; i++) {
        /* sizes from 4 KiB to ~1 MiB; 8 devices; about 480 GiB in all */
        snprintf(key, sizeof(key), "L%d.mb%d.e%d.t%d", i % 61, (i / 61) % 8, i % 256, i);
        d        = tdesc(key, 4096 + (uint64_t)(i % 997) * 1024, MEMSVC_KIND_ACTIVATION);
        d.device = (unsigned)(i % 8);
        CU_ASSERT_EQUAL_FATAL(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]), MEMSVC_OK);
        total += d.size;
    }
    eng_stats(eng, &s);
    CU_ASSERT_EQUAL(s.live_tensors, (uint64_t)n);
    for (dev = 0; dev < 8; dev++) {
        CU_ASSERT_EQUAL(eng_dev_stats(eng, dev, &st), MEMSVC_OK);
        CU_ASSERT_EQUAL(st.tensors_by_state[MEMSVC_STATE_ON_DEVICE], (uint64_t)n / 8);
    }
    CU_ASSERT(total > 400ull << 30);
    /* metadata, not tensor bytes: well under 1 GiB of resident memory for 400+ GiB of tensors */
    CU_ASSERT(max_rss_kib() - rss0 < 1024 * 1024);
    CU_ASSERT(eng_metadata_per_tensor(eng) < 256.0);
    fprintf(stderr, " [%.0f B metadata/tensor] ", eng_metadata_per_tensor(eng));
    for (i = 0; i < n; i += 2) {
        CU_ASSERT_EQUAL_FATAL(eng_free(eng, h[i]), MEMSVC_OK);
    }
    eng_stats(eng, &s);
    CU_ASSERT_EQUAL(s.live_tensors, (uint64_t)n / 2);
    eng_destroy(eng);
    free(h);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("eng", NULL, NULL);

    CU_add_test(s, "transition table: every legal and illegal pair", test_transition_table);
    CU_add_test(s, "lifecycle: alloc, swap, acquire, drop, recompute, spill, free", test_lifecycle);
    CU_add_test(s, "illegal requests get named errors", test_illegal_requests);
    CU_add_test(s, "resident acquires: the policy hears of them later, in order",
                test_policy_defer);
    CU_add_test(s, "recompute cost follows a growing recipe", test_set_recompute_ns);
    CU_add_test(s, "none: out-of-memory vs fragmentation", test_none_reports_oom_and_fragmentation);
    CU_add_test(s, "lru: oldest first, pinned never", test_lru_evicts_oldest_never_pinned);
    CU_add_test(s, "lru:drop=on drops recomputable, keeps durable", test_lru_drop_mode_drops_recomputable);
    CU_add_test(s, "drops continue until the holes join", test_drops_continue_until_holes_join);
    CU_add_test(s, "a canceled move-out re-serves the queue", test_canceled_move_reserves_queue);
    CU_add_test(s, "moves: cancel, free while moving, stall time", test_moves_cancel_free_and_stall);
    CU_add_test(s, "backed: bytes survive swaps and spills", test_backed_bytes_survive_swaps);
    CU_add_test(s, "peer tier: ordered against the disk by link rate, room, swap-in",
                test_peer_tier_order);
    CU_add_test(s, "peer tier, backed: far writes and reads end the moves; refusals, losses",
                test_peer_tier_backed);
    CU_add_test(s, "loans: bytes in place, held on the device, a free deferred", test_lend);
    CU_add_test(s, "phantom: no bytes", test_phantom_has_no_bytes);
    CU_add_test(s, "phantom: a million tensors at 910B scale", test_phantom_million_tensors);
}

TEST_REGISTER(eng, add_suite)
