/* test_policy_baselines.c - policies vdnn, dtr, selective, full, offload on hand-made scenarios */
#include "memsvc/eng.h"
#include "policy/pol_util.h"
#include "tests/eng_fixture.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ull * 1024ull)

/* ---- helpers --------------------------------------------------------------------------------- */

static eng_t *make_engine_mode(const char *policy, sim_mem_mode_t mode)
{
    sim_desc_t   desc;
    eng_params_t p;
    eng_t       *eng = NULL;
    char         err[256];

    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("tiny", &desc), MEMSVC_OK);
    p.desc   = &desc;
    p.mode   = mode;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = policy;
    CU_ASSERT_EQUAL_FATAL(eng_create(&p, &eng, err, sizeof(err)), MEMSVC_OK);
    return eng;
}

static eng_t *make_engine(const char *policy)
{
    return make_engine_mode(policy, SIM_MEM_PHANTOM);
}

static eng_tensor_desc_t tdesc(const char *key, uint64_t size, memsvc_kind_t kind, int32_t layer,
                               int32_t mb)
{
    eng_tensor_desc_t d;

    memset(&d, 0, sizeof(d));
    d.key             = key;
    d.size            = size;
    d.kind            = kind;
    d.tags            = MEMSVC_TAGS_NONE;
    d.tags.layer      = layer;
    d.tags.microbatch = mb;
    d.recomputable    = (kind == MEMSVC_KIND_ACTIVATION);
    d.recompute_ns    = 1000;
    d.durable         = (kind == MEMSVC_KIND_PARAM || kind == MEMSVC_KIND_OPTIM);
    d.job             = 1;
    return d;
}

static eng_handle_t alloc_t(eng_t *eng, const char *key, uint64_t size, memsvc_kind_t kind,
                            int32_t layer, int32_t mb, unsigned flags)
{
    eng_tensor_desc_t d = tdesc(key, size, kind, layer, mb);
    eng_handle_t      h = ENG_HANDLE_NULL;

    CU_ASSERT_EQUAL(eng_alloc(eng, &d, flags, NULL, NULL, &h), MEMSVC_OK);
    return h;
}

/* Acquire (waiting for the engine if needed), then release. */
static memsvc_status_t use(eng_t *eng, eng_handle_t h)
{
    memsvc_status_t st = eng_acquire(eng, h, NULL, NULL);

    if (st == MEMSVC_INPROGRESS) {
        run_idle(eng);
        st = (state_of(eng, h) == MEMSVC_STATE_ON_DEVICE) ? MEMSVC_OK : MEMSVC_ERR_NO_MEMORY;
    }
    if (st == MEMSVC_OK || st == MEMSVC_RECOMPUTE) {
        TEST_ASSERT_OK(eng_release(eng, h));
    }
    return st;
}

typedef struct count_find {
    const char  *reason;
    pol_action_t action;
    uint64_t     count;
} count_find_t;

static bool find_count(void *arg, const eng_decision_count_t *c)
{
    count_find_t *f = arg;

    if (strcmp(c->reason, f->reason) == 0 && c->action == f->action) {
        f->count += c->count;
    }
    return true;
}

static uint64_t decisions(eng_t *eng, const char *reason, pol_action_t action)
{
    count_find_t f = {.reason = reason, .action = action};

    eng_decision_counts(eng, find_count, &f);
    return f.count;
}

static void expect_create(const char *spec, memsvc_status_t want)
{
    sim_desc_t   desc;
    eng_params_t p;
    eng_t       *eng      = NULL;
    char         err[256] = "";

    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("tiny", &desc), MEMSVC_OK);
    p.desc   = &desc;
    p.mode   = SIM_MEM_PHANTOM;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = spec;
    CU_ASSERT_EQUAL(eng_create(&p, &eng, err, sizeof(err)), want);
    if (want != MEMSVC_OK) {
        CU_ASSERT(err[0] != '\0');
    } else {
        eng_destroy(eng);
    }
}

/* ---- parameters --------------------------------------------------------------------------------
 */

static void test_params(void)
{
    const pol_ops_t *const *all = pol_all();
    size_t                  i;

    /* every policy documents its parameters and rejects unknown ones */
    for (i = 0; all[i] != NULL; i++) {
        char spec[64];

        CU_ASSERT(all[i]->params != NULL && all[i]->summary != NULL);
        snprintf(spec, sizeof(spec), "%s:bogus=1", all[i]->name);
        expect_create(spec, MEMSVC_ERR_UNKNOWN_KEY);
        snprintf(spec, sizeof(spec), "%s:novalue", all[i]->name);
        expect_create(spec, MEMSVC_ERR_PARSE);
        expect_create(all[i]->name, MEMSVC_OK);
    }
    expect_create("vdnn:ahead=2", MEMSVC_OK);
    expect_create("vdnn:ahead=-1", MEMSVC_ERR_PARSE);
    expect_create("vdnn:ahead=x", MEMSVC_ERR_PARSE);
    expect_create("dtr:swap=off,sample=64", MEMSVC_OK);
    expect_create("dtr:swap=maybe", MEMSVC_ERR_PARSE);
    expect_create("dtr:sample=1e3", MEMSVC_ERR_PARSE);
    expect_create("selective:recompute=norm,act,up_proj,permute,swap=attn.ctx,eager=off",
                  MEMSVC_OK);
    expect_create("selective:recompute=none", MEMSVC_OK);
    expect_create("selective:eager=2", MEMSVC_ERR_PARSE);
    expect_create("full:keep=input", MEMSVC_OK);
    expect_create("full:keep=ln1.in,attn.qkv", MEMSVC_OK);
    expect_create("full:keep=", MEMSVC_ERR_PARSE);
    expect_create("offload:window=2GiB,chunk=512MiB,hot=4,decay=0.25,grads=off", MEMSVC_OK);
    expect_create("offload:window=lots", MEMSVC_ERR_PARSE);
    expect_create("offload:chunk=0", MEMSVC_ERR_PARSE);
    expect_create("offload:decay=1.5", MEMSVC_ERR_PARSE);
}

static void test_key_module_and_patterns(void)
{
    pol_patterns_t p = {0};

    CU_ASSERT_STRING_EQUAL(pol_key_module("L12.mb3.attn.qkv"), "attn.qkv");
    CU_ASSERT_STRING_EQUAL(pol_key_module("L3.e5.mb0.act"), "act");
    CU_ASSERT_STRING_EQUAL(pol_key_module("head.mb0.norm.out"), "head.mb0.norm.out");
    CU_ASSERT_STRING_EQUAL(pol_key_module("Lx.mb3.a"), "Lx.mb3.a");
    TEST_ASSERT_OK(pol_patterns_add(&p, "ln?.out"));
    TEST_ASSERT_OK(pol_patterns_add(&p, "act"));
    CU_ASSERT_EQUAL(pol_patterns_match(&p, "ln1.out"), 0);
    CU_ASSERT_EQUAL(pol_patterns_match(&p, "ln1.in"), -1);
    CU_ASSERT_EQUAL(pol_patterns_match(&p, "mlp.act"), 1);
    CU_ASSERT_EQUAL(pol_patterns_match(&p, "mlp.fc1"), -1);
    CU_ASSERT_EQUAL(pol_patterns_match(&p, "d.activation"), -1);
    pol_patterns_clear(&p);
}

/* ---- vdnn --------------------------------------------------------------------------------------
 */

static void test_vdnn_offload_and_prefetch(void)
{
    eng_t       *eng = make_engine("vdnn");
    eng_handle_t a[3], b[3], pinned = ENG_HANDLE_NULL, param;
    char         key[32];
    int          L;

    param = alloc_t(eng, "L1.param.w", MiB, MEMSVC_KIND_PARAM, 1, -1, 0);
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 0, -1, -1, MEMSVC_PHASE_FORWARD);
    for (L = 0; L < 3; L++) {
        hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, L, 0, MEMSVC_PHASE_FORWARD);
        snprintf(key, sizeof(key), "L%d.mb0.a", L);
        a[L] = alloc_t(eng, key, 2 * MiB, MEMSVC_KIND_ACTIVATION, L, 0, 0);
        snprintf(key, sizeof(key), "L%d.mb0.b", L);
        b[L] = alloc_t(eng, key, 2 * MiB, MEMSVC_KIND_ACTIVATION, L, 0, 0);
        if (L == 1) {
            pinned =
                alloc_t(eng, "L1.mb0.pinned", MiB, MEMSVC_KIND_ACTIVATION, 1, 0, ENG_ALLOC_PIN);
        }
        CU_ASSERT_EQUAL(state_of(eng, a[L]), MEMSVC_STATE_ON_DEVICE);
        hint(eng, MEMSVC_HINT_LAYER_END, 0, L, 0, MEMSVC_PHASE_FORWARD);
        /* the layer's activations leave as soon as its forward ends */
        CU_ASSERT_EQUAL(state_of(eng, a[L]), MEMSVC_STATE_MOVING_OUT);
        CU_ASSERT_EQUAL(state_of(eng, b[L]), MEMSVC_STATE_MOVING_OUT);
        if (L == 1) {
            CU_ASSERT_EQUAL(state_of(eng, pinned), MEMSVC_STATE_ON_DEVICE); /* pinned: stays */
            TEST_ASSERT_OK(eng_release(eng, pinned));
            CU_ASSERT_EQUAL(state_of(eng, pinned), MEMSVC_STATE_MOVING_OUT); /* on release */
        }
    }
    run_idle(eng);
    CU_ASSERT_EQUAL(state_of(eng, param), MEMSVC_STATE_ON_DEVICE); /* only activations */
    for (L = 0; L < 3; L++) {
        CU_ASSERT_EQUAL(state_of(eng, a[L]), MEMSVC_STATE_ON_HOST);
    }

    /* backward: the layer itself and one layer below come in, not two */
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 2, 0, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(state_of(eng, a[2]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, a[1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, b[1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, pinned), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, a[0]), MEMSVC_STATE_ON_HOST);
    run_idle(eng);
    CU_ASSERT_EQUAL(state_of(eng, a[1]), MEMSVC_STATE_ON_DEVICE);
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 2, 0, MEMSVC_PHASE_BACKWARD);
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 1, 0, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(state_of(eng, a[0]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, b[0]), MEMSVC_STATE_MOVING_IN);

    CU_ASSERT_EQUAL(decisions(eng, "vdnn layer forward done", POL_ACTION_SWAP_OUT), 6);
    CU_ASSERT_EQUAL(decisions(eng, "vdnn layer forward done, released", POL_ACTION_SWAP_OUT), 1);
    CU_ASSERT_EQUAL(decisions(eng, "vdnn prefetch ahead", POL_ACTION_PREFETCH), 5);
    eng_destroy(eng);

    /* ahead=2: two layers below */
    eng = make_engine("vdnn:ahead=2");
    for (L = 0; L < 3; L++) {
        hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, L, 0, MEMSVC_PHASE_FORWARD);
        snprintf(key, sizeof(key), "L%d.mb0.a", L);
        a[L] = alloc_t(eng, key, 2 * MiB, MEMSVC_KIND_ACTIVATION, L, 0, 0);
        hint(eng, MEMSVC_HINT_LAYER_END, 0, L, 0, MEMSVC_PHASE_FORWARD);
    }
    run_idle(eng);
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 2, 0, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(state_of(eng, a[1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, a[0]), MEMSVC_STATE_MOVING_IN);
    eng_destroy(eng);
}

/* Micro-batches are separate: the end of mb0's layer leaves mb1's alone. */
static void test_vdnn_microbatch(void)
{
    eng_t       *eng = make_engine("vdnn");
    eng_handle_t m0  = alloc_t(eng, "L0.mb0.a", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    eng_handle_t m1  = alloc_t(eng, "L0.mb1.a", MiB, MEMSVC_KIND_ACTIVATION, 0, 1, 0);

    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(state_of(eng, m0), MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT_EQUAL(state_of(eng, m1), MEMSVC_STATE_ON_DEVICE);
    /* the same hint in backward moves nothing out */
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 1, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(state_of(eng, m1), MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

/* ---- dtr ---------------------------------------------------------------------------------------
 */

static void advance(eng_t *eng, sim_time_t t)
{
    sim_clock_advance_to(eng_clock(eng), t);
}

static void test_dtr_lowest_h(void)
{
    /* three 8 MiB tensors: the oldest is dearest, the cheapest is freshest; h picks the middle */
    static const struct {
        const char *key;
        uint64_t    cost;
        sim_time_t  at;
    } t[3] = {
        {"X", 80000, 0},     /* stale 1e6: h = 8e-2 / 8 MiB */
        {"Y", 1000, 900000}, /* stale 1e5: h = 1e-2 / 8 MiB  <- lowest */
        {"Z", 500, 990000},  /* stale 1e4: h = 5e-2 / 8 MiB */
    };
    eng_t            *eng = make_engine("dtr:swap=off");
    eng_handle_t      h[3], filler, hn;
    eng_tensor_desc_t d;
    int               i, best = 0;
    double            hb = 0;

    filler = alloc_t(eng, "filler", 40 * MiB, MEMSVC_KIND_PARAM, -1, -1, ENG_ALLOC_PIN);
    for (i = 0; i < 3; i++) {
        double hi;

        advance(eng, t[i].at);
        d              = tdesc(t[i].key, 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
        d.recompute_ns = t[i].cost;
        TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]));
        hi = (double)t[i].cost / (1000000.0 - (double)t[i].at);
        if (i == 0 || hi < hb) {
            hb   = hi;
            best = i;
        }
    }
    CU_ASSERT_EQUAL(best, 1); /* the scenario is what it claims */
    advance(eng, 1000000);
    d = tdesc("new", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hn), MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_ON_DEVICE); /* LRU would take X */
    CU_ASSERT_EQUAL(state_of(eng, h[1]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[2]), MEMSVC_STATE_ON_DEVICE); /* cheapest-first would take Z */
    CU_ASSERT_EQUAL(state_of(eng, filler), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(decisions(eng, "dtr lowest h, recompute", POL_ACTION_DROP), 1);
    eng_destroy(eng);

    /* sample=1 looks at the oldest only: X goes */
    eng    = make_engine("dtr:swap=off,sample=1");
    filler = alloc_t(eng, "filler", 40 * MiB, MEMSVC_KIND_PARAM, -1, -1, ENG_ALLOC_PIN);
    for (i = 0; i < 3; i++) {
        advance(eng, t[i].at);
        d              = tdesc(t[i].key, 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
        d.recompute_ns = t[i].cost;
        TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]));
    }
    advance(eng, 1000000);
    d = tdesc("new", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hn), MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[1]), MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

/* Nothing evictable on the device, the first time room is needed: no candidates at all (the
 * candidate array not yet allocated was handed to qsort, which UBSan reports). */
static void test_dtr_no_candidates(void)
{
    eng_t            *eng = make_engine("dtr");
    eng_tensor_desc_t d;
    eng_handle_t      filler, hn = ENG_HANDLE_NULL;

    filler = alloc_t(eng, "filler", 40 * MiB, MEMSVC_KIND_PARAM, -1, -1, ENG_ALLOC_PIN);
    d      = tdesc("new", 30 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    CU_ASSERT_NOT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hn), MEMSVC_OK);
    CU_ASSERT_EQUAL(state_of(eng, filler), MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

/* Recomputing cheaper than a round trip: drop; dearer: swap; not recomputable: swap. */
static void test_dtr_drop_vs_swap(void)
{
    eng_t            *eng = make_engine("dtr");
    eng_handle_t      cheap, dear, fixed, filler, hn;
    eng_tensor_desc_t d;

    filler         = alloc_t(eng, "filler", 40 * MiB, MEMSVC_KIND_PARAM, -1, -1, ENG_ALLOC_PIN);
    d              = tdesc("cheap", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    d.recompute_ns = 1000; /* the 8 MiB round trip on tiny's 1 GB/s links takes ~17 ms */
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &cheap));
    d              = tdesc("dear", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    d.recompute_ns = 1000000000ull;
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &dear));
    d              = tdesc("fixed", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    d.recomputable = false;
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &fixed));
    advance(eng, 1000);
    d = tdesc("new", 24 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hn), MEMSVC_INPROGRESS);
    CU_ASSERT_EQUAL(state_of(eng, cheap), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, dear), MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT_EQUAL(state_of(eng, fixed), MEMSVC_STATE_MOVING_OUT);
    run_idle(eng);
    CU_ASSERT_EQUAL(state_of(eng, hn), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, filler), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(decisions(eng, "dtr lowest h, recompute", POL_ACTION_DROP), 1);
    CU_ASSERT_EQUAL(decisions(eng, "dtr lowest h, swap", POL_ACTION_SWAP_OUT), 2);
    CU_ASSERT_EQUAL(use(eng, cheap), MEMSVC_RECOMPUTE);
    eng_destroy(eng);
}

/* Drops that leave holes which do not join: the engine asks again until the block fits. */
static void test_drops_fragmented_asks_again(void)
{
    eng_t       *eng = make_engine("lru:drop=on");
    eng_handle_t h[16], hn;
    char         key[32];
    int          i;

    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "t%d", i);
        h[i] =
            alloc_t(eng, key, 4 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0, (i == 1) ? ENG_ALLOC_PIN : 0);
    }
    /* t0 and t2 go first, around the pinned t1: 8 MiB free, no 8 MiB block; t3 joins t2 */
    hn = alloc_t(eng, "new", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    CU_ASSERT_EQUAL(state_of(eng, hn), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[1]), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, h[2]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[3]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[4]), MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

/* ---- selective ---------------------------------------------------------------------------------
 */

static const struct {
    const char *key;
    bool        listed; /* by the default list */
} sel_keys[] = {
    {"L0.mb0.ln1.in", false},
    {"L0.mb0.ln1.out", true},
    {"L0.mb0.attn.down_norm", true},
    {"L0.mb0.attn.q_up", true},
    {"L0.mb0.attn.kv_up", true},
    {"L0.mb0.attn.ctx", false},
    {"L0.mb0.mlp.fc1", false},
    {"L0.mb0.mlp.act", true},
    {"L0.mb0.moe.permuted", true},
    {"L0.e3.mb0.act", true},
    {"L0.mb0.moe.router.logits", false},
    {"L0.mb0.linear_q_up_proj", true},
    {"L0.mb0.attn.scores", false},
};
#define SEL_N (sizeof(sel_keys) / sizeof(sel_keys[0]))

static void test_selective_drops_listed(void)
{
    eng_t       *eng = make_engine("selective");
    eng_handle_t h[SEL_N], other, param;
    size_t       i;

    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    for (i = 0; i < SEL_N; i++) {
        h[i] = alloc_t(eng, sel_keys[i].key, MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
        TEST_ASSERT_OK(use(eng, h[i]));
    }
    other = alloc_t(eng, "L0.mb1.mlp.act", MiB, MEMSVC_KIND_ACTIVATION, 0, 1, 0);
    param = alloc_t(eng, "L0.param.ln1.out", MiB, MEMSVC_KIND_PARAM, 0, -1, 0);
    /* nothing before the layer's forward ends: a later operator may read them */
    for (i = 0; i < SEL_N; i++) {
        CU_ASSERT_EQUAL(state_of(eng, h[i]), MEMSVC_STATE_ON_DEVICE);
    }
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    for (i = 0; i < SEL_N; i++) {
        CU_ASSERT_EQUAL(state_of(eng, h[i]),
                        sel_keys[i].listed ? MEMSVC_STATE_DROPPED : MEMSVC_STATE_ON_DEVICE);
    }
    CU_ASSERT_EQUAL(state_of(eng, other), MEMSVC_STATE_ON_DEVICE); /* another micro-batch */
    CU_ASSERT_EQUAL(state_of(eng, param), MEMSVC_STATE_ON_DEVICE); /* parameters never */
    CU_ASSERT_EQUAL(decisions(eng, "selective layer forward done", POL_ACTION_DROP), 8);
    eng_destroy(eng);

    /* a configured list: recompute act only, swap attn.ctx */
    eng = make_engine("selective:recompute=act,swap=attn.ctx");
    for (i = 0; i < SEL_N; i++) {
        h[i] = alloc_t(eng, sel_keys[i].key, MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    }
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    for (i = 0; i < SEL_N; i++) {
        const char    *k    = sel_keys[i].key;
        memsvc_state_t want = MEMSVC_STATE_ON_DEVICE;

        if (strcmp(k, "L0.mb0.mlp.act") == 0 || strcmp(k, "L0.e3.mb0.act") == 0) {
            want = MEMSVC_STATE_DROPPED;
        } else if (strcmp(k, "L0.mb0.attn.ctx") == 0) {
            want = MEMSVC_STATE_MOVING_OUT;
        }
        CU_ASSERT_EQUAL(state_of(eng, h[i]), want);
    }
    eng_destroy(eng);
}

/* From step 1 on, a listed tensor goes at its last forward use, as step 0's timeline shows. */
static void test_selective_learns_last_use(void)
{
    eng_t       *eng = make_engine("selective");
    eng_handle_t act, ctx;
    int          step;

    for (step = 0; step < 3; step++) {
        hint(eng, MEMSVC_HINT_STEP_BEGIN, step, -1, -1, MEMSVC_PHASE_FORWARD);
        hint(eng, MEMSVC_HINT_LAYER_BEGIN, step, 0, 0, MEMSVC_PHASE_FORWARD);
        act = alloc_t(eng, "L0.mb0.mlp.act", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
        ctx = alloc_t(eng, "L0.mb0.attn.ctx", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
        TEST_ASSERT_OK(use(eng, act)); /* written */
        TEST_ASSERT_OK(use(eng, ctx));
        CU_ASSERT_EQUAL(state_of(eng, act), MEMSVC_STATE_ON_DEVICE); /* read once more below */
        TEST_ASSERT_OK(use(eng, act));
        /* step 0 knows nothing yet; later steps know that was the last forward read */
        CU_ASSERT_EQUAL(state_of(eng, act),
                        step == 0 ? MEMSVC_STATE_ON_DEVICE : MEMSVC_STATE_DROPPED);
        TEST_ASSERT_OK(use(eng, ctx));
        CU_ASSERT_EQUAL(state_of(eng, ctx), MEMSVC_STATE_ON_DEVICE); /* not listed */
        hint(eng, MEMSVC_HINT_LAYER_END, step, 0, 0, MEMSVC_PHASE_FORWARD);
        CU_ASSERT_EQUAL(state_of(eng, act), MEMSVC_STATE_DROPPED);
        hint(eng, MEMSVC_HINT_LAYER_BEGIN, step, 0, 0, MEMSVC_PHASE_BACKWARD);
        CU_ASSERT_EQUAL(use(eng, act), MEMSVC_RECOMPUTE);
        CU_ASSERT_EQUAL(state_of(eng, act), MEMSVC_STATE_ON_DEVICE); /* not in backward */
        TEST_ASSERT_OK(eng_free(eng, act));
        TEST_ASSERT_OK(eng_free(eng, ctx));
    }
    CU_ASSERT_EQUAL(decisions(eng, "selective last forward use", POL_ACTION_DROP), 2);
    eng_destroy(eng);
}

/* eager=off: listed tensors go first when room is needed, before older unlisted ones. */
static void test_selective_make_room(void)
{
    eng_t       *eng = make_engine("selective:eager=off");
    eng_handle_t h[16], hn;
    char         key[32];
    int          i;

    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), i == 9 ? "L0.mb0.ln2.out" : "L0.mb0.x%d", i);
        h[i] = alloc_t(eng, key, 4 * MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    }
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(state_of(eng, h[9]), MEMSVC_STATE_ON_DEVICE);
    hn = alloc_t(eng, "L1.mb0.y", 4 * MiB, MEMSVC_KIND_ACTIVATION, 1, 0, 0);
    CU_ASSERT_EQUAL(state_of(eng, hn), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, h[9]), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, h[0]), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(decisions(eng, "selective recompute listed", POL_ACTION_DROP), 1);
    eng_destroy(eng);
}

/* ---- full ------------------------------------------------------------------------------------ */

static void test_full_keeps_inputs(void)
{
    eng_t            *eng = make_engine("full");
    eng_handle_t      in0, in1, a0, b0, a1, fixed, next_in, pinned;
    eng_tensor_desc_t d;

    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    in0            = alloc_t(eng, "L0.mb0.ln1.in", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    in1            = alloc_t(eng, "L0.mb1.ln1.in", MiB, MEMSVC_KIND_ACTIVATION, 0, 1, 0);
    a0             = alloc_t(eng, "L0.mb0.attn.qkv", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    b0             = alloc_t(eng, "L0.mb0.mlp.fc1", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    a1             = alloc_t(eng, "L0.mb1.attn.qkv", MiB, MEMSVC_KIND_ACTIVATION, 0, 1, 0);
    d              = tdesc("L0.mb0.mask", MiB, MEMSVC_KIND_ACTIVATION, 0, 0);
    d.recomputable = false;
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &fixed));
    pinned  = alloc_t(eng, "L0.mb0.pinned", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, ENG_ALLOC_PIN);
    next_in = alloc_t(eng, "L1.mb0.ln1.in", MiB, MEMSVC_KIND_ACTIVATION, 1, 0, 0);
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(state_of(eng, in0), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, a0), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, b0), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, fixed), MEMSVC_STATE_ON_DEVICE);  /* cannot be recomputed */
    CU_ASSERT_EQUAL(state_of(eng, pinned), MEMSVC_STATE_ON_DEVICE); /* pinned */
    CU_ASSERT_EQUAL(state_of(eng, next_in), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, in1), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, a1), MEMSVC_STATE_ON_DEVICE);
    TEST_ASSERT_OK(eng_release(eng, pinned));
    CU_ASSERT_EQUAL(state_of(eng, pinned), MEMSVC_STATE_DROPPED);
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 1, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(state_of(eng, in1), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, a1), MEMSVC_STATE_DROPPED);
    /* backward recomputes through the engine */
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 0, 0, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(use(eng, a0), MEMSVC_RECOMPUTE);
    CU_ASSERT_EQUAL(decisions(eng, "full recompute layer forward done", POL_ACTION_DROP), 3);
    eng_destroy(eng);

    /* keep by pattern */
    eng = make_engine("full:keep=attn.qkv");
    in0 = alloc_t(eng, "L0.mb0.ln1.in", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    a0  = alloc_t(eng, "L0.mb0.attn.qkv", MiB, MEMSVC_KIND_ACTIVATION, 0, 0, 0);
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(state_of(eng, in0), MEMSVC_STATE_DROPPED);
    CU_ASSERT_EQUAL(state_of(eng, a0), MEMSVC_STATE_ON_DEVICE);
    eng_destroy(eng);
}

/* ---- offload ------------------------------------------------------------------------------------
 */

static void test_offload_params_window(void)
{
    eng_t       *eng = make_engine("offload:window=8MiB");
    eng_handle_t p[4][2], g;
    char         key[32];
    int          L, i;

    for (L = 0; L < 4; L++) {
        for (i = 0; i < 2; i++) {
            snprintf(key, sizeof(key), "L%d.param.w%d", L, i);
            p[L][i] = alloc_t(eng, key, 4 * MiB, MEMSVC_KIND_PARAM, L, -1, 0);
            TEST_ASSERT_OK(use(eng, p[L][i])); /* used once: then on host */
            CU_ASSERT_EQUAL(state_of(eng, p[L][i]), MEMSVC_STATE_MOVING_OUT);
        }
    }
    run_idle(eng);
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 0, -1, -1, MEMSVC_PHASE_FORWARD);
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 0, 0, MEMSVC_PHASE_FORWARD);
    /* the layer's own and the next layer's within the 8 MiB window; not the one after */
    CU_ASSERT_EQUAL(state_of(eng, p[0][0]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[0][1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[1][0]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[1][1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[2][0]), MEMSVC_STATE_ON_HOST);
    run_idle(eng);
    for (i = 0; i < 2; i++) {
        TEST_ASSERT_OK(use(eng, p[0][i]));
        CU_ASSERT_EQUAL(state_of(eng, p[0][i]), MEMSVC_STATE_MOVING_OUT); /* back after use */
    }
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 1, 0, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(state_of(eng, p[1][0]), MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(state_of(eng, p[2][0]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[2][1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[3][0]), MEMSVC_STATE_ON_HOST);
    run_idle(eng);
    for (L = 1; L < 4; L++) {
        for (i = 0; i < 2; i++) {
            use(eng, p[L][i]);
        }
    }
    run_idle(eng);

    /* backward goes down: at L3, L2 comes in too */
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 3, 0, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(state_of(eng, p[3][0]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[2][1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, p[1][0]), MEMSVC_STATE_ON_HOST);
    /* gradients go to host as they are produced */
    g = alloc_t(eng, "L3.grad.w0", MiB, MEMSVC_KIND_GRAD, 3, -1, ENG_ALLOC_PIN);
    TEST_ASSERT_OK(eng_release(eng, g));
    CU_ASSERT_EQUAL(state_of(eng, g), MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT(decisions(eng, "offload params ahead", POL_ACTION_PREFETCH) >= 6);
    CU_ASSERT_EQUAL(decisions(eng, "offload grad produced", POL_ACTION_SWAP_OUT), 1);
    eng_destroy(eng);
}

static void test_offload_optimizer_chunks(void)
{
    eng_t       *eng = make_engine("offload:chunk=8MiB");
    eng_handle_t o[4];
    char         key[32];
    int          i;

    for (i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "opt.m%d", i);
        o[i] = alloc_t(eng, key, 4 * MiB, MEMSVC_KIND_OPTIM, i, -1, 0);
        CU_ASSERT_EQUAL(eng_swap_out(eng, o[i]), MEMSVC_INPROGRESS);
    }
    run_idle(eng);
    hint(eng, MEMSVC_HINT_PHASE, 0, -1, -1, MEMSVC_PHASE_OPTIMIZER);
    CU_ASSERT_EQUAL(state_of(eng, o[0]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, o[1]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, o[2]), MEMSVC_STATE_ON_HOST);
    run_idle(eng);
    TEST_ASSERT_OK(use(eng, o[0]));
    CU_ASSERT_EQUAL(state_of(eng, o[0]), MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT_EQUAL(state_of(eng, o[2]), MEMSVC_STATE_MOVING_IN);
    CU_ASSERT_EQUAL(state_of(eng, o[3]), MEMSVC_STATE_ON_HOST);
    run_idle(eng);
    TEST_ASSERT_OK(use(eng, o[1]));
    CU_ASSERT_EQUAL(state_of(eng, o[3]), MEMSVC_STATE_MOVING_IN);
    run_idle(eng);
    /* leaving the phase: what is left goes back to host */
    hint(eng, MEMSVC_HINT_PHASE, 1, -1, -1, MEMSVC_PHASE_FORWARD);
    for (i = 0; i < 4; i++) {
        CU_ASSERT(state_of(eng, o[i]) == MEMSVC_STATE_MOVING_OUT ||
                  state_of(eng, o[i]) == MEMSVC_STATE_ON_HOST);
    }
    eng_destroy(eng);
}

/* Skewed routing: the hot expert stays after use; a cold one goes. Control: hot=0. */
static void run_experts(const char *spec, memsvc_state_t *hot_state, memsvc_state_t *cold_state)
{
    eng_t            *eng = make_engine(spec);
    eng_handle_t      e[4];
    eng_tensor_desc_t d;
    char              key[32];
    int               i, r;

    for (i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "L0.e%d.param.fc1", i);
        d             = tdesc(key, 2 * MiB, MEMSVC_KIND_PARAM, 0, -1);
        d.tags.expert = i;
        TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &e[i]));
    }
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 0, -1, -1, MEMSVC_PHASE_FORWARD);
    for (r = 0; r < 6; r++) { /* expert 2 gets most tokens */
        hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 0, r, MEMSVC_PHASE_FORWARD);
        CU_ASSERT(use(eng, e[2]) == MEMSVC_OK);
        if (r == 0) {
            CU_ASSERT(use(eng, e[1]) == MEMSVC_OK);
        }
        run_idle(eng);
    }
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 1, -1, -1, MEMSVC_PHASE_FORWARD);
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 1, 0, 0, MEMSVC_PHASE_FORWARD);
    run_idle(eng);
    CU_ASSERT(use(eng, e[2]) == MEMSVC_OK);
    CU_ASSERT(use(eng, e[1]) == MEMSVC_OK);
    *hot_state  = state_of(eng, e[2]);
    *cold_state = state_of(eng, e[1]);
    CU_ASSERT_EQUAL(state_of(eng, e[0]), MEMSVC_STATE_ON_DEVICE); /* never used: never moved */
    eng_destroy(eng);
}

static void test_offload_hot_experts(void)
{
    memsvc_state_t hot, cold;

    run_experts("offload:hot=1", &hot, &cold);
    CU_ASSERT_EQUAL(hot, MEMSVC_STATE_ON_DEVICE);
    CU_ASSERT_EQUAL(cold, MEMSVC_STATE_MOVING_OUT);
    run_experts("offload:hot=0", &hot, &cold);
    CU_ASSERT_EQUAL(hot, MEMSVC_STATE_MOVING_OUT);
    CU_ASSERT_EQUAL(cold, MEMSVC_STATE_MOVING_OUT);
}

/* ---- every policy: pins and durable never violated, bytes never lost, determinism -------------
 */

#define RND_N 48

typedef struct rnd_world {
    eng_t       *eng;
    eng_handle_t h[RND_N];
    bool         live[RND_N];
    uint32_t     pins[RND_N];
    uint64_t     size[RND_N];
    bool         durable[RND_N];
    uint64_t     seed[RND_N]; /* content written */
    uint64_t     rng;
    unsigned     violations, lost, checked, recomputed;
} rnd_world_t;

static uint64_t rnd(rnd_world_t *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static bool check_one(void *arg, const eng_tensor_info_t *info)
{
    rnd_world_t *w = arg;

    if (info->pins > 0 && info->state != MEMSVC_STATE_ON_DEVICE) {
        w->violations++;
    }
    if (info->durable && info->state == MEMSVC_STATE_DROPPED) {
        w->violations++;
    }
    return true;
}

/* A pattern per seed, fast to make (sizes are multiples of 8). */
static void fill_words(void *buf, uint64_t len, uint64_t seed)
{
    uint64_t *p = buf;
    uint64_t  k;

    for (k = 0; k < len / 8; k++) {
        p[k] = seed ^ (k * 0x9e3779b97f4a7c15ull);
    }
}

static void write_content(rnd_world_t *w, int i, uint64_t seed)
{
    uint8_t *buf = malloc(w->size[i]);

    fill_words(buf, w->size[i], seed);
    TEST_ASSERT_OK(eng_write(w->eng, w->h[i], 0, buf, w->size[i]));
    w->seed[i] = seed;
    free(buf);
}

static void check_content(rnd_world_t *w, int i)
{
    uint8_t *buf  = malloc(w->size[i]);
    uint8_t *want = malloc(w->size[i]);

    fill_words(want, w->size[i], w->seed[i]);
    TEST_ASSERT_OK(eng_read(w->eng, w->h[i], 0, buf, w->size[i]));
    if (memcmp(buf, want, w->size[i]) != 0) {
        w->lost++;
    }
    w->checked++;
    free(buf);
    free(want);
}

/* Acquire and wait; on success the tensor is pinned (content checked or rewritten). */
static bool rnd_acquire(rnd_world_t *w, int i)
{
    memsvc_status_t st    = eng_acquire(w->eng, w->h[i], NULL, NULL);
    int             guard = 0;

    while (st == MEMSVC_INPROGRESS && state_of(w->eng, w->h[i]) != MEMSVC_STATE_ON_DEVICE &&
           eng_step(w->eng) && ++guard < 100000) {
    }
    if (st == MEMSVC_INPROGRESS) {
        eng_tensor_info_t info;

        eng_info(w->eng, w->h[i], &info);
        if (info.pins == 0) {
            return false; /* failed (no room): not pinned */
        }
        st = info.valid ? MEMSVC_OK : MEMSVC_RECOMPUTE;
    }
    if (st == MEMSVC_OK) {
        w->pins[i]++;
        check_content(w, i);
        return true;
    }
    if (st == MEMSVC_RECOMPUTE) {
        w->pins[i]++;
        if (w->durable[i]) {
            w->violations++;
        }
        w->recomputed++;
        write_content(w, i, rnd(w)); /* the owner recomputes */
        return true;
    }
    return false;
}

static void rnd_run(const char *spec, uint64_t seed, char **log_p, size_t *len_p)
{
    static const memsvc_kind_t kinds[] = {MEMSVC_KIND_PARAM,      MEMSVC_KIND_GRAD,
                                          MEMSVC_KIND_OPTIM,      MEMSVC_KIND_ACTIVATION,
                                          MEMSVC_KIND_ACTIVATION, MEMSVC_KIND_WORKSPACE};
    rnd_world_t                w;
    FILE                      *mem = open_memstream(log_p, len_p);
    int                        step, op;

    memset(&w, 0, sizeof(w));
    w.rng = seed;
    w.eng = make_engine_mode(spec, SIM_MEM_BACKED);
    for (step = 0; step < 3; step++) {
        hint(w.eng, MEMSVC_HINT_STEP_BEGIN, step, -1, -1, MEMSVC_PHASE_FORWARD);
        for (op = 0; op < 400; op++) {
            int             i = (int)(rnd(&w) % RND_N);
            int             r = (int)(rnd(&w) % 10);
            char            key[48];
            memsvc_status_t st;

            if (!w.live[i]) {
                eng_tensor_desc_t d;
                memsvc_kind_t     kind = kinds[rnd(&w) % 6];

                snprintf(key, sizeof(key), "L%d.mb%d.t%d", i % 4, i % 2, i);
                w.size[i]      = (1 + rnd(&w) % 8) * 512 * 1024;
                d              = tdesc(key, w.size[i], kind, i % 4, i % 2);
                d.tags.expert  = (kind == MEMSVC_KIND_PARAM && i % 3 == 0) ? i % 5 : -1;
                d.recompute_ns = rnd(&w) % 50000000;
                w.durable[i]   = d.durable;
                w.pins[i]      = 1;
                st             = eng_alloc(w.eng, &d, ENG_ALLOC_PIN, NULL, NULL, &w.h[i]);
                while (st == MEMSVC_INPROGRESS && eng_step(w.eng)) {
                    eng_tensor_info_t info;

                    if (eng_info(w.eng, w.h[i], &info) != MEMSVC_OK) {
                        st = MEMSVC_ERR_NO_MEMORY; /* failed: the engine ended it */
                    } else if (info.state == MEMSVC_STATE_ON_DEVICE) {
                        st = MEMSVC_OK;
                    }
                }
                if (st == MEMSVC_OK) {
                    w.live[i] = true;
                    write_content(&w, i, rnd(&w));
                } else {
                    CU_ASSERT(st != MEMSVC_INPROGRESS);
                    w.pins[i] = 0;
                }
            } else if (r < 4 && w.pins[i] == 0) {
                rnd_acquire(&w, i);
            } else if (r < 8 && w.pins[i] > 0) {
                TEST_ASSERT_OK(eng_release(w.eng, w.h[i]));
                w.pins[i]--;
            } else if (r == 8 && w.pins[i] == 0) {
                TEST_ASSERT_OK(eng_free(w.eng, w.h[i]));
                w.live[i] = false;
            } else {
                memsvc_hint_type_t t =
                    (rnd(&w) & 1) ? MEMSVC_HINT_LAYER_BEGIN : MEMSVC_HINT_LAYER_END;

                hint(w.eng, t, step, i % 4, i % 2, (memsvc_phase_t)(1 + rnd(&w) % 3));
            }
            if (rnd(&w) % 4 == 0) {
                eng_step(w.eng);
            }
            eng_foreach(w.eng, UINT32_MAX, check_one, &w);
        }
    }
    run_idle(w.eng);
    CU_ASSERT_EQUAL(w.violations, 0);
    CU_ASSERT_EQUAL(w.lost, 0);
    /* every tensor still readable holds what was last written (durable ones always) */
    for (op = 0; op < RND_N; op++) {
        if (w.live[op]) {
            eng_tensor_info_t info;

            eng_info(w.eng, w.h[op], &info);
            if (info.state == MEMSVC_STATE_ON_DEVICE || info.state == MEMSVC_STATE_ON_HOST) {
                check_content(&w, op);
            } else if (info.durable) {
                CU_ASSERT(info.state == MEMSVC_STATE_ON_DISK);
            }
        }
    }
    CU_ASSERT_EQUAL(w.lost, 0);
    CU_ASSERT(w.checked > 100);                      /* the run did read bytes back */
    CU_ASSERT(eng_decision_total(w.eng, NULL) > 20); /* and the policy did move things */
    if (getenv("TEST_VERBOSE") != NULL) {
        fprintf(stderr, "\n%s: %u checks, %u recomputes, %llu decisions", spec, w.checked,
                w.recomputed, (unsigned long long)eng_decision_total(w.eng, NULL));
    }
    eng_decision_log_json(w.eng, mem, 1024);
    fclose(mem);
    eng_destroy(w.eng);
}

static void test_all_policies_safe_and_deterministic(void)
{
    static const char *const specs[] = {"lru",
                                        "lru:drop=on",
                                        "vdnn",
                                        "dtr",
                                        "dtr:swap=off,sample=4",
                                        "selective",
                                        "selective:swap=attn*,recompute=t1*",
                                        "full",
                                        "offload:window=4MiB,chunk=2MiB,hot=1"};
    size_t                   i;

    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        char  *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;

        rnd_run(specs[i], 0x9e3779b97f4a7c15ull + i, &a, &la);
        rnd_run(specs[i], 0x9e3779b97f4a7c15ull + i, &b, &lb);
        CU_ASSERT(la > 0);
        CU_ASSERT(la == lb && memcmp(a, b, la) == 0);
        if (la != lb || memcmp(a, b, la) != 0) {
            fprintf(stderr, "\n%s: decision logs differ between identical runs\n", specs[i]);
        }
        free(a);
        free(b);
    }
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("policy_baselines", NULL, NULL);

    CU_add_test(s, "parameters documented, unknown and malformed rejected", test_params);
    CU_add_test(s, "key module part and patterns", test_key_module_and_patterns);
    CU_add_test(s, "vdnn: offload at layer end, prefetch one layer ahead",
                test_vdnn_offload_and_prefetch);
    CU_add_test(s, "vdnn: micro-batches and phases kept apart", test_vdnn_microbatch);
    CU_add_test(s, "dtr: the lowest h goes, not the oldest or cheapest", test_dtr_lowest_h);
    CU_add_test(s, "dtr: drop when recompute beats the transfer, else swap", test_dtr_drop_vs_swap);
    CU_add_test(s, "dtr: nothing evictable the first time room is needed", test_dtr_no_candidates);
    CU_add_test(s, "engine: drops leaving holes, asked again until it fits",
                test_drops_fragmented_asks_again);
    CU_add_test(s, "selective: exactly the listed modules at layer end",
                test_selective_drops_listed);
    CU_add_test(s, "selective: from the previous step, drops at the last forward use",
                test_selective_learns_last_use);
    CU_add_test(s, "selective: listed modules first when room is needed", test_selective_make_room);
    CU_add_test(s, "full: exactly the layer inputs survive forward", test_full_keeps_inputs);
    CU_add_test(s, "offload: params on host, next layers within the window",
                test_offload_params_window);
    CU_add_test(s, "offload: optimizer state in chunks", test_offload_optimizer_chunks);
    CU_add_test(s, "offload: skewed routing keeps the hot expert", test_offload_hot_experts);
    CU_add_test(s, "every policy: pins, durable, bytes; same run, same log",
                test_all_policies_safe_and_deterministic);
}

TEST_REGISTER(policy_baselines, add_suite)
