/* test_policy_foresight.c - the foresight planner on small hand-made steps with known answers */
#include "memsvc/eng.h"
#include "tests/policy_trace.h"
#include "tests/test_util.h"
#include "tools/memtrace/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_params(void)
{
    const pol_ops_t *ops = pol_find("foresight");
    void            *st  = NULL;
    char             err[256];

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    CU_ASSERT(ops->wants_timeline);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops->params, "margin="));
    TEST_ASSERT_OK(
        ops->create("swap=off,margin=0.1,slack=1,min_bytes=1MiB", &st, err, sizeof(err)));
    ops->destroy(st);
    CU_ASSERT_EQUAL(ops->create("bogus=1", &st, err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(ops->create("margin=2", &st, err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(ops->create("swap=off,drop=off", &st, err, sizeof(err)), MEMSVC_ERR_PARSE);
}

/* X's round trip hides under the middle: once planned, no stall and no recompute. */
static void test_swap_hides(void)
{
    pt_trace_t        tb;
    mt_replay_report_t r, l;

    pt_write_x_y(&tb, 3, 500 * MS); /* recomputing would cost far more than the transfer */
    pt_replay(tb.path, "foresight", &r);
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL_FATAL(r.num_steps, 3);
    CU_ASSERT_EQUAL(r.steps[1].stall_ns, 0);
    CU_ASSERT_EQUAL(r.steps[2].stall_ns, 0);
    CU_ASSERT_EQUAL(r.steps[2].recompute_ns, 0);
    CU_ASSERT(r.swap_outs >= 2);
    CU_ASSERT(r.prefetches >= 2);
    /* reactive LRU waits for X every step */
    pt_replay(tb.path, "lru", &l);
    CU_ASSERT(l.steps[2].stall_ns > 0);
    mt_replay_report_free(&r);
    mt_replay_report_free(&l);
    unlink(tb.path);
}

/*
 * With 100 MB/s host links X's transfer (168 ms each way) no longer fits in its 140 ms idle
 * time, and recomputing it costs 100 us: it is dropped, never swapped. With fast links the
 * same X is swapped (the transfer hides: nothing exposed beats 100 us of recompute).
 */
static void test_recompute_beats_transfer(void)
{
    pt_trace_t        tb;
    mt_replay_report_t r;

    pt_write_x_y(&tb, 3, 100 * US);
    pt_replay_on(tb.path, "foresight", true, &r);
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL(r.swap_out_bytes, 0);
    CU_ASSERT(r.drops >= 3);
    CU_ASSERT_EQUAL(r.steps[2].recompute_ns, 100 * US);
    CU_ASSERT_EQUAL(r.steps[2].stall_ns, 0);
    mt_replay_report_free(&r);
    pt_replay_on(tb.path, "foresight", false, &r);
    CU_ASSERT(r.swap_out_bytes > 0);
    CU_ASSERT_EQUAL(r.steps[2].recompute_ns, 0);
    mt_replay_report_free(&r);
    /* restricted to recomputation, an expensive X is recomputed too */
    unlink(tb.path);
    pt_write_x_y(&tb, 3, 50 * MS);
    pt_replay(tb.path, "foresight:swap=off", &r);
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL(r.swap_out_bytes, 0);
    CU_ASSERT(r.drops >= 3);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/* Same trace, same figures. */
static void test_deterministic(void)
{
    pt_trace_t        tb;
    mt_replay_report_t a, b;
    size_t             i;

    pt_write_x_y(&tb, 4, 5 * MS);
    pt_replay(tb.path, "foresight", &a);
    pt_replay(tb.path, "foresight", &b);
    CU_ASSERT_EQUAL(a.total_ns, b.total_ns);
    CU_ASSERT_EQUAL(a.stall_ns, b.stall_ns);
    CU_ASSERT_EQUAL(a.recompute_ns, b.recompute_ns);
    CU_ASSERT_EQUAL(a.swap_out_bytes, b.swap_out_bytes);
    CU_ASSERT_EQUAL(a.drops, b.drops);
    CU_ASSERT_EQUAL(a.prefetches, b.prefetches);
    CU_ASSERT_EQUAL_FATAL(a.num_steps, b.num_steps);
    for (i = 0; i < a.num_steps; i++) {
        CU_ASSERT_EQUAL(a.steps[i].end - a.steps[i].begin, b.steps[i].end - b.steps[i].begin);
    }
    mt_replay_report_free(&a);
    mt_replay_report_free(&b);
    unlink(tb.path);
}

/* ---- driving the engine directly ---------------------------------------------------------- */

static eng_t *fst_engine(const char *policy, const char *hbm)
{
    sim_desc_t   desc;
    eng_params_t p;
    eng_t       *eng = NULL;
    char         err[256];

    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("tiny", &desc), MEMSVC_OK);
    if (hbm != NULL) {
        char set[32];

        snprintf(set, sizeof(set), "hbm=%s", hbm);
        TEST_ASSERT_OK(sim_desc_set(&desc, set, err, sizeof(err)));
    }
    p.desc   = &desc;
    p.mode   = SIM_MEM_PHANTOM;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = policy;
    CU_ASSERT_EQUAL_FATAL(eng_create(&p, &eng, err, sizeof(err)), MEMSVC_OK);
    return eng;
}

static void fst_step_hint(eng_t *eng, memsvc_hint_type_t type, int32_t step, uint32_t rank)
{
    eng_hint_t h;

    memset(&h, 0, sizeof(h));
    h.type       = type;
    h.job        = 1;
    h.rank       = rank;
    h.step       = step;
    h.layer      = -1;
    h.microbatch = -1;
    TEST_ASSERT_OK(eng_hint(eng, &h));
}

/* Run the engine until `ns` later (moves complete meanwhile). */
static void fst_advance(eng_t *eng, sim_time_t ns)
{
    sim_time_t until = sim_clock_now(eng_clock(eng)) + ns;

    while (eng_next_event(eng) <= until && eng_step(eng)) {
    }
    sim_clock_advance_to(eng_clock(eng), until);
}

/* A new tensor, resident; ENG_HANDLE_NULL if it could not be placed. */
static eng_handle_t fst_new(eng_t *eng, const char *key, uint64_t size, memsvc_kind_t kind,
                            uint64_t rc)
{
    eng_tensor_desc_t d;
    eng_handle_t      h = ENG_HANDLE_NULL;
    memsvc_status_t   st;

    memset(&d, 0, sizeof(d));
    d.key          = key;
    d.size         = size;
    d.kind         = kind;
    d.tags         = MEMSVC_TAGS_NONE;
    d.recomputable = rc > 0;
    d.recompute_ns = rc;
    d.durable      = (kind == MEMSVC_KIND_PARAM || kind == MEMSVC_KIND_OPTIM);
    d.job          = 1;
    st             = eng_alloc(eng, &d, 0, NULL, NULL, &h);
    while (st == MEMSVC_INPROGRESS && eng_step(eng)) {
        eng_tensor_info_t info;

        if (eng_info(eng, h, &info) != MEMSVC_OK) {
            st = MEMSVC_ERR_NO_MEMORY; /* failed: the engine ended it */
        } else if (info.state == MEMSVC_STATE_ON_DEVICE) {
            st = MEMSVC_OK;
        }
    }
    return (st == MEMSVC_OK) ? h : ENG_HANDLE_NULL;
}

/* Acquire (waiting for it), hold for `ns`, release. */
static void fst_use(eng_t *eng, eng_handle_t h, sim_time_t ns)
{
    memsvc_status_t   st = eng_acquire(eng, h, NULL, NULL);
    eng_tensor_info_t info;

    while (st == MEMSVC_INPROGRESS && eng_step(eng)) {
        if (eng_info(eng, h, &info) == MEMSVC_OK && info.pins > 0 &&
            info.state == MEMSVC_STATE_ON_DEVICE) {
            st = MEMSVC_OK;
        }
    }
    CU_ASSERT(st == MEMSVC_OK || st == MEMSVC_RECOMPUTE);
    fst_advance(eng, ns);
    TEST_ASSERT_OK(eng_release(eng, h));
}

typedef struct fst_plans {
    int      step;       /* step being run */
    unsigned seen[4][4]; /* [step][plan number] planned moves logged */
    unsigned unplanned[4];
} fst_plans_t;

static bool fst_count(void *arg, const eng_decision_t *d)
{
    fst_plans_t *c = arg;
    unsigned     n;

    if (strncmp(d->reason, "foresight planned", 17) == 0 && d->action != POL_ACTION_PREFETCH &&
        sscanf(d->detail, "plan %u:", &n) == 1 && n < 4) {
        c->seen[c->step][n]++;
    } else if (strncmp(d->reason, "foresight planned", 17) != 0) {
        c->unplanned[c->step]++;
    }
    return true;
}

/*
 * Two ranks of one job begin each step: the plan is made once per step (at the first
 * STEP_BEGIN), from the step before, and the moves of step N are those of plan N.
 */
static void test_plan_once_per_step(void)
{
    eng_t      *eng = fst_engine("foresight", "48MiB");
    fst_plans_t c;
    int         s, i;

    memset(&c, 0, sizeof(c));
    TEST_ASSERT_OK(eng_decision_log_size(eng, 4096));
    for (s = 0; s < 3; s++) {
        eng_handle_t x, y;
        fst_plans_t  before = c;

        fst_step_hint(eng, MEMSVC_HINT_STEP_BEGIN, s, 0);
        fst_step_hint(eng, MEMSVC_HINT_STEP_BEGIN, s, 1);
        x = fst_new(eng, "X", 16 * MiB, MEMSVC_KIND_ACTIVATION, 500 * MS);
        CU_ASSERT_FATAL(x != ENG_HANDLE_NULL);
        fst_use(eng, x, 1 * MS);
        fst_advance(eng, 40 * MS);
        y = fst_new(eng, "Y", 40 * MiB, MEMSVC_KIND_WORKSPACE, 0);
        CU_ASSERT_FATAL(y != ENG_HANDLE_NULL);
        for (i = 0; i < 5; i++) {
            fst_use(eng, y, 20 * MS);
        }
        TEST_ASSERT_OK(eng_free(eng, y));
        fst_advance(eng, 40 * MS);
        fst_use(eng, x, 1 * MS);
        TEST_ASSERT_OK(eng_free(eng, x));
        fst_step_hint(eng, MEMSVC_HINT_STEP_END, s, 0);
        fst_step_hint(eng, MEMSVC_HINT_STEP_END, s, 1);
        memset(&c, 0, sizeof(c));
        c.step = s;
        eng_decisions(eng, fst_count, &c);
        /* keep only what this step added */
        for (i = 0; i < 4; i++) {
            c.seen[s][i] -= (s > 0) ? before.seen[s][i] : 0;
        }
        if (s == 0) {
            CU_ASSERT(c.unplanned[0] > 0); /* no plan yet: the fallback moved X */
            CU_ASSERT_EQUAL(c.seen[0][1] + c.seen[0][2], 0);
        } else {
            CU_ASSERT(c.seen[s][s] > 0); /* the plan made at this step's begin */
            CU_ASSERT_EQUAL(c.seen[s][s + 1 < 4 ? s + 1 : 0], 0);
            CU_ASSERT_EQUAL(c.seen[s][s - 1 > 0 ? s - 1 : 3], 0);
        }
        TEST_ASSERT_OK(eng_decision_log_size(eng, 4096)); /* clear for the next step */
    }
    eng_destroy(eng);
}

/* Pinned tensors stay on device and durable ones are never dropped, step after step. */
typedef struct fst_check {
    unsigned violations;
} fst_check_t;

static bool fst_check_one(void *arg, const eng_tensor_info_t *info)
{
    fst_check_t *c = arg;

    if ((info->pins > 0 && info->state != MEMSVC_STATE_ON_DEVICE) ||
        (info->durable && info->state == MEMSVC_STATE_DROPPED)) {
        c->violations++;
    }
    return true;
}

static bool fst_json_cb(void *arg, const eng_decision_t *d)
{
    FILE *f = arg;

    fprintf(f, "%llu %s %s %d %s\n", (unsigned long long)d->time, d->key, d->reason, (int)d->action,
            memsvc_strerror(d->status));
    return true;
}

/* Acquire and wait; true when it is pinned. */
static bool fst_pin(eng_t *eng, eng_handle_t h)
{
    memsvc_status_t   st = eng_acquire(eng, h, NULL, NULL);
    eng_tensor_info_t info;

    while (st == MEMSVC_INPROGRESS && eng_step(eng)) {
        if (eng_info(eng, h, &info) == MEMSVC_OK && info.pins > 0 &&
            info.state == MEMSVC_STATE_ON_DEVICE) {
            return true;
        }
    }
    if (st == MEMSVC_INPROGRESS) {
        return eng_info(eng, h, &info) == MEMSVC_OK && info.pins > 0;
    }
    return st == MEMSVC_OK || st == MEMSVC_RECOMPUTE;
}

/*
 * The same step four times over 24 tensors of every kind (parameters and optimizer state live
 * across steps), two pins held at once, on a 24 MiB device. After every operation: a pinned
 * tensor is on its device, a durable one never dropped.
 */
static void fst_random_steps(const char *policy, char **log_p, size_t *len_p)
{
    static const memsvc_kind_t kinds[] = {MEMSVC_KIND_PARAM,      MEMSVC_KIND_OPTIM,
                                          MEMSVC_KIND_GRAD,       MEMSVC_KIND_ACTIVATION,
                                          MEMSVC_KIND_ACTIVATION, MEMSVC_KIND_WORKSPACE};
    eng_t                     *eng     = fst_engine(policy, "24MiB");
    eng_handle_t               h[24];
    fst_check_t                c   = {0};
    FILE                      *log = open_memstream(log_p, len_p);
    int                        s, i, k, placed = 0;

    TEST_ASSERT_OK(eng_decision_log_size(eng, 1 << 16));
    for (i = 0; i < 8; i++) {
        char key[16];

        snprintf(key, sizeof(key), "P%d", i);
        h[i] = fst_new(eng, key, (1 + i % 3) * MiB, kinds[i % 2], 0);
    }
    for (s = 0; s < 4; s++) {
        uint64_t rng = 12345;

        fst_step_hint(eng, MEMSVC_HINT_STEP_BEGIN, s, 0);
        for (i = 8; i < 24; i++) {
            char key[16];

            snprintf(key, sizeof(key), "A%d", i);
            h[i] = fst_new(eng, key, (1 + i % 4) * MiB, kinds[2 + i % 4],
                           (kinds[2 + i % 4] == MEMSVC_KIND_ACTIVATION) ? (i % 3 + 1) * MS : 0);
            placed += (h[i] != ENG_HANDLE_NULL);
        }
        for (k = 0; k < 200; k++) {
            int  a, b;
            bool held;

            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            a   = (int)((rng >> 33) % 24);
            b   = (int)((rng >> 45) % 24);
            if (h[a] == ENG_HANDLE_NULL || h[b] == ENG_HANDLE_NULL || a == b) {
                continue;
            }
            held = fst_pin(eng, h[a]); /* hold a while b is used */
            if (fst_pin(eng, h[b])) {
                fst_advance(eng, (1 + k % 5) * MS);
                eng_foreach(eng, UINT32_MAX, fst_check_one, &c);
                TEST_ASSERT_OK(eng_release(eng, h[b]));
            }
            eng_foreach(eng, UINT32_MAX, fst_check_one, &c);
            if (held) {
                TEST_ASSERT_OK(eng_release(eng, h[a]));
            }
        }
        for (i = 8; i < 24; i++) {
            if (h[i] != ENG_HANDLE_NULL) {
                TEST_ASSERT_OK(eng_free(eng, h[i]));
            }
        }
        fst_step_hint(eng, MEMSVC_HINT_STEP_END, s, 0);
    }
    CU_ASSERT_EQUAL(c.violations, 0);
    CU_ASSERT(placed > 32);
    CU_ASSERT(eng_decision_total(eng, NULL) > 10);
    eng_decisions(eng, fst_json_cb, log);
    fclose(log);
    eng_destroy(eng);
}

static void test_pins_durable_deterministic(void)
{
    static const char *const specs[] = {"foresight", "foresight:drop=off", "capuchin",
                                        "capuchin:swap=off"};
    size_t                   i;

    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        char  *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;

        fst_random_steps(specs[i], &a, &la);
        fst_random_steps(specs[i], &b, &lb);
        CU_ASSERT(la > 0);
        CU_ASSERT(la == lb && memcmp(a, b, la) == 0);
        free(a);
        free(b);
    }
}

/* Before any plan, a contiguous range needed on a fragmented device at the last instant of
 * simulated time (operator durations saturate the clock), around tensors last used at 0: their
 * staleness, now - last use + 1, wrapped to 0 and was divided by (UBSan: division by zero;
 * SIGFPE unsanitized). */
static void test_stale_at_clock_end(void)
{
    eng_t       *eng = fst_engine("foresight", "8MiB");
    eng_handle_t x[4];
    const char  *keys[4] = {"x0", "x1", "x2", "x3"};
    int          i;

    for (i = 0; i < 4; i++) {
        x[i] = fst_new(eng, keys[i], 3 * MiB / 2, MEMSVC_KIND_ACTIVATION, 1000);
        CU_ASSERT_FATAL(x[i] != ENG_HANDLE_NULL);
    }
    TEST_ASSERT_OK(eng_free(eng, x[0]));
    TEST_ASSERT_OK(eng_free(eng, x[2])); /* 5 MiB free; no hole of 3 MiB */
    sim_clock_advance_to(eng_clock(eng), SIM_TIME_NEVER);
    (void)fst_new(eng, "y", 3 * MiB, MEMSVC_KIND_ACTIVATION, 1000); /* placed or not */
    eng_destroy(eng);
}

/*
 * First step (no plan), a fragmented device: the range freed for a request is chosen by what
 * the moves cost in time. Layout (MiB): big 0-8 (recompute 10 ms, last touched 10 s ago),
 * pinned 8-12, s1 12-16 and s2 16-20 (recompute 0.5 ms, touched 200 ms ago), a hole 20-24,
 * pinned 24-28, a hole 28-32, pinned 32-36. An 8 MiB request fits after dropping big or s2;
 * DTR's cost over staleness would drop big (10 ms of recomputation), the cost in time drops s2.
 */
#define FST_MIB (1024ull * 1024)

static void test_first_step_range_by_cost(void)
{
    eng_t            *eng = fst_engine("foresight:swap=off", "36MiB");
    eng_handle_t      big, s1, s2, h1, h2, p[3], req;
    eng_tensor_info_t info;

    big  = fst_new(eng, "big", 8 * FST_MIB, MEMSVC_KIND_ACTIVATION, 10000000);
    p[0] = fst_new(eng, "p0", 4 * FST_MIB, MEMSVC_KIND_PARAM, 0);
    fst_advance(eng, 10000000000ull);
    s1   = fst_new(eng, "s1", 4 * FST_MIB, MEMSVC_KIND_ACTIVATION, 500000);
    s2   = fst_new(eng, "s2", 4 * FST_MIB, MEMSVC_KIND_ACTIVATION, 500000);
    h1   = fst_new(eng, "h1", 4 * FST_MIB, MEMSVC_KIND_ACTIVATION, 500000);
    p[1] = fst_new(eng, "p1", 4 * FST_MIB, MEMSVC_KIND_PARAM, 0);
    h2   = fst_new(eng, "h2", 4 * FST_MIB, MEMSVC_KIND_ACTIVATION, 500000);
    p[2] = fst_new(eng, "p2", 4 * FST_MIB, MEMSVC_KIND_PARAM, 0);
    CU_ASSERT_FATAL(big != ENG_HANDLE_NULL && s1 != ENG_HANDLE_NULL && s2 != ENG_HANDLE_NULL &&
                    h1 != ENG_HANDLE_NULL && h2 != ENG_HANDLE_NULL && p[2] != ENG_HANDLE_NULL);
    CU_ASSERT_FATAL(fst_pin(eng, p[0]) && fst_pin(eng, p[1]) && fst_pin(eng, p[2]));
    TEST_ASSERT_OK(eng_free(eng, h1));
    TEST_ASSERT_OK(eng_free(eng, h2));
    fst_advance(eng, 200000000);
    req = fst_new(eng, "req", 8 * FST_MIB, MEMSVC_KIND_ACTIVATION, 500000);
    CU_ASSERT(req != ENG_HANDLE_NULL);
    TEST_ASSERT_OK(eng_info(eng, big, &info));
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    TEST_ASSERT_OK(eng_info(eng, s2, &info));
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_DROPPED);
    TEST_ASSERT_OK(eng_info(eng, s1, &info));
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

/* An activation of (layer, micro-batch) on the tiny node's first device, placed at once. */
static eng_handle_t fst_new_act(eng_t *eng, const char *key, uint64_t size, int32_t layer,
                                int32_t mb)
{
    eng_tensor_desc_t d;
    eng_handle_t      h = ENG_HANDLE_NULL;

    memset(&d, 0, sizeof(d));
    d.key             = key;
    d.size            = size;
    d.kind            = MEMSVC_KIND_ACTIVATION;
    d.tags            = MEMSVC_TAGS_NONE;
    d.tags.layer      = layer;
    d.tags.microbatch = mb;
    d.job             = 1;
    return (eng_alloc(eng, &d, 0, NULL, NULL, &h) == MEMSVC_OK) ? h : ENG_HANDLE_NULL;
}

/*
 * First step (no plan): at the end of a forward layer that kept 8 MiB of activations, with 2 MiB
 * free, the room the next layer will need is made at once (an older layer's activation goes
 * out, while compute goes on), not when the next layer's allocation waits for it.
 */
static void test_first_step_room_ahead(void)
{
    eng_t            *eng = fst_engine("foresight", "16MiB");
    eng_handle_t      old, a, b;
    eng_tensor_info_t info;
    eng_hint_t        h;

    old = fst_new_act(eng, "L0.mb0.x", 6 * FST_MIB, 0, 0);
    fst_advance(eng, 50000000);
    a = fst_new_act(eng, "L1.mb0.a", 4 * FST_MIB, 1, 0);
    b = fst_new_act(eng, "L1.mb0.b", 4 * FST_MIB, 1, 0);
    CU_ASSERT_FATAL(old != ENG_HANDLE_NULL && a != ENG_HANDLE_NULL && b != ENG_HANDLE_NULL);
    memset(&h, 0, sizeof(h));
    h.type       = MEMSVC_HINT_LAYER_END;
    h.job        = 1;
    h.step       = 0;
    h.layer      = 1;
    h.microbatch = 0;
    h.phase      = MEMSVC_PHASE_FORWARD;
    TEST_ASSERT_OK(eng_hint(eng, &h));
    TEST_ASSERT_OK(eng_info(eng, old, &info));
    CU_ASSERT(info.state == MEMSVC_STATE_MOVING_OUT || info.state == MEMSVC_STATE_ON_HOST);
    TEST_ASSERT_OK(eng_info(eng, a, &info));
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    TEST_ASSERT_OK(eng_info(eng, b, &info));
    CU_ASSERT_EQUAL(info.state, MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("policy_foresight", NULL, NULL);

    CU_add_test(s, "parameters: documented, unknown and malformed rejected", test_params);
    CU_add_test(s, "a swap that hides under compute: no stall once planned", test_swap_hides);
    CU_add_test(s, "recompute cheaper than the transfer: dropped, not swapped",
                test_recompute_beats_transfer);
    CU_add_test(s, "same trace, same result", test_deterministic);
    CU_add_test(s, "one plan per step, made at its begin, used in it", test_plan_once_per_step);
    CU_add_test(s, "pins and durable never violated; same run, same log",
                test_pins_durable_deterministic);
    CU_add_test(s, "room needed at the end of simulated time: no division by zero",
                test_stale_at_clock_end);
    CU_add_test(s, "first step, fragmented: the range that costs least time is freed",
                test_first_step_range_by_cost);
    CU_add_test(s, "first step: room for the next layer made at the end of a forward layer",
                test_first_step_room_ahead);
}

TEST_REGISTER(policy_foresight, add_suite)
