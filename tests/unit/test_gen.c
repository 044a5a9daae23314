/* test_gen.c - trace generator: Korthikanti activation sizes, schedule sanity, router, layout */
#include "tests/test_util.h"
#include "tools/memtrace/gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sim_desc_t test_node(void)
{
    sim_desc_t n;

    memset(&n, 0, sizeof(n));
    snprintf(n.name, sizeof(n.name), "test");
    n.num_npus   = 8;
    n.hbm_bytes  = 64ull << 30;
    n.hbm_bw     = 1.6e12;
    n.flops      = 300e12;
    n.mfu        = 0.3;
    n.d2d.bw     = 90e9;
    n.nic.bw     = 25e9;
    n.nic.lat_ns = 5000;
    return n;
}

/* ---- Korthikanti et al.: per-layer saved activation bytes ---------------------------- */

typedef struct kor {
    int32_t  layer;
    uint64_t ids[256], sizes[256];
    uint32_t n;
    bool     backward_started;
    uint64_t bad;
} kor_t;

static memsvc_status_t kor_sink(void *arg, const mt_event_t *ev)
{
    kor_t   *k = arg;
    uint32_t i;

    if (ev->type == MT_EV_HINT && ev->hint == MEMSVC_HINT_PHASE &&
        ev->phase == MEMSVC_PHASE_BACKWARD) {
        k->backward_started = true;
    } else if (ev->type == MT_EV_ALLOC && !k->backward_started &&
               ev->kind == MEMSVC_KIND_ACTIVATION && ev->tags.layer == k->layer &&
               ev->tags.microbatch == 0) {
        if (k->n == 256) {
            k->bad++;
            return MEMSVC_OK;
        }
        k->ids[k->n]   = ev->tensor;
        k->sizes[k->n] = ev->size;
        k->n++;
    } else if (ev->type == MT_EV_FREE && !k->backward_started) {
        for (i = 0; i < k->n; i++) {
            if (k->ids[i] == ev->tensor) {
                k->sizes[i] = 0; /* freed within the forward: not kept for backward */
            }
        }
    }
    return MEMSVC_OK;
}

static uint64_t kept_bytes(const mt_gen_params_t *p, int32_t layer)
{
    kor_t    k;
    uint64_t sum = 0;
    uint32_t i;

    memset(&k, 0, sizeof(k));
    k.layer = layer;
    CU_ASSERT_EQUAL(mt_gen_run(p, kor_sink, &k, NULL, 0), MEMSVC_OK);
    CU_ASSERT_EQUAL(k.bad, 0);
    for (i = 0; i < k.n; i++) {
        sum += k.sizes[i];
    }
    return sum;
}

static void test_korthikanti(void)
{
    mt_model_t      m;
    sim_desc_t      node = test_node();
    mt_gen_params_t p;
    uint64_t        s = 2048, b = 1, h = 12288, a = 96, t = 8, full, sharded;

    TEST_ASSERT_OK(mt_model_preset("gpt3-175b", &m));
    TEST_ASSERT_OK(mt_model_set(&m, "layers=2", NULL, 0));
    CU_ASSERT_FALSE(m.fused_attention);
    CU_ASSERT_EQUAL(m.mlp, MT_MLP_GELU);
    CU_ASSERT_EQUAL(m.experts, 0);
    mt_gen_params_init(&p, &m, &node);

    /* s*b*h*(34 + 5*a*s/h), kept integral: 34*s*b*h + 5*a*s*s*b */
    full = 34 * s * b * h + 5 * a * s * s * b;
    CU_ASSERT_EQUAL(kept_bytes(&p, 0), full);
    CU_ASSERT_EQUAL(kept_bytes(&p, 1), full);

    p.layout.tp = t; /* tensor + sequence parallel */
    sharded     = (34 * s * b * h + 5 * a * s * s * b) / t;
    CU_ASSERT_EQUAL((34 * s * b * h + 5 * a * s * s * b) % t, 0);
    CU_ASSERT_EQUAL(kept_bytes(&p, 0), sharded);
    CU_ASSERT_EQUAL(kept_bytes(&p, 1), sharded);

    /* fused attention: the 5as/h term goes; the fp32 logsumexp per head and query stays */
    TEST_ASSERT_OK(mt_model_set(&m, "fused=1", NULL, 0));
    CU_ASSERT_EQUAL(kept_bytes(&p, 1), 34 * s * b * h / t + 4 * b * (a / t) * s);
}

/* ---- schedule sanity ------------------------------------------------------------------ */

#define CHK_MAX_IDS (1u << 20)
#define CHK_MAX_MB 64

typedef struct chk {
    /* per tensor id */
    uint64_t *size;
    uint8_t  *live, *kind, *durable;
    char    **key;
    uint64_t  max_id;
    uint64_t *live_list;
    uint32_t  n_live;
    /* findings */
    uint64_t bad_alloc, bad_free, bad_read, bad_dup_key, bad_rc, bad_order, bad_access;
    uint64_t allocs, frees, computes, hints, fingerprint;
    int32_t  step;
    uint32_t fwd[CHK_MAX_MB], bwd[CHK_MAX_MB];
    bool     saw_optimizer;
    /* keys of activations per step (steps 0 and 1) */
    char   **keys[2];
    uint32_t n_keys[2], cap_keys[2];
    /* ALLOCs since the last COMPUTE: their producer must be that COMPUTE */
    uint64_t pend_op[16], pend_rc[16];
    uint32_t n_pend;
    uint64_t bad_producer;
    /* forward/backward order: (phase, micro-batch, layer) of the PHASE hints of step 0 */
    int32_t  order[256][3];
    uint32_t n_order;
    /* routed tokens per global expert (from expert FC1 sizes) */
    uint64_t expert_bytes[4096];
} chk_t;

static void chk_init(chk_t *c)
{
    memset(c, 0, sizeof(*c));
    c->size        = calloc(CHK_MAX_IDS, sizeof(*c->size));
    c->live        = calloc(CHK_MAX_IDS, 1);
    c->kind        = calloc(CHK_MAX_IDS, 1);
    c->durable     = calloc(CHK_MAX_IDS, 1);
    c->key         = calloc(CHK_MAX_IDS, sizeof(*c->key));
    c->live_list   = calloc(CHK_MAX_IDS, sizeof(*c->live_list));
    c->fingerprint = 1469598103934665603ull;
}

static void chk_fini(chk_t *c)
{
    uint64_t i;
    int      s;

    for (i = 0; i <= c->max_id && i < CHK_MAX_IDS; i++) {
        free(c->key[i]);
    }
    for (s = 0; s < 2; s++) {
        for (i = 0; i < c->n_keys[s]; i++) {
            free(c->keys[s][i]);
        }
        free(c->keys[s]);
    }
    free(c->size);
    free(c->live);
    free(c->kind);
    free(c->durable);
    free(c->key);
    free(c->live_list);
}

static void fp(chk_t *c, uint64_t v)
{
    c->fingerprint = (c->fingerprint ^ v) * 1099511628211ull;
}

static void fp_str(chk_t *c, const char *s)
{
    while (s != NULL && *s != '\0') {
        fp(c, (uint8_t)*s++);
    }
}

static bool is_live(const chk_t *c, uint64_t id)
{
    return id < CHK_MAX_IDS && c->live[id];
}

static memsvc_status_t chk_sink(void *arg, const mt_event_t *ev)
{
    chk_t   *c = arg;
    uint32_t i;

    fp(c, ev->type);
    switch (ev->type) {
    case MT_EV_ALLOC:
        c->allocs++;
        fp_str(c, ev->key);
        fp(c, ev->size);
        fp(c, ev->recompute_ns);
        if (ev->tensor == 0 || ev->tensor >= CHK_MAX_IDS || c->key[ev->tensor] != NULL ||
            ev->size == 0) {
            c->bad_alloc++; /* ids are never reused by the generator */
            return MEMSVC_OK;
        }
        for (i = 0; i < c->n_live; i++) {
            if (strcmp(c->key[c->live_list[i]], ev->key) == 0) {
                c->bad_dup_key++;
            }
        }
        if (ev->recomputable) {
            if (ev->num_inputs == 0 || ev->recompute_ns == 0 ||
                ev->kind != MEMSVC_KIND_ACTIVATION) {
                c->bad_rc++;
            }
            for (i = 0; i < ev->num_inputs; i++) {
                if (!is_live(c, ev->inputs[i])) {
                    c->bad_rc++;
                }
            }
        }
        if (ev->durable != (ev->kind == MEMSVC_KIND_PARAM || ev->kind == MEMSVC_KIND_OPTIM)) {
            c->bad_alloc++;
        }
        c->size[ev->tensor]       = ev->size;
        c->live[ev->tensor]       = 1;
        c->kind[ev->tensor]       = (uint8_t)ev->kind;
        c->durable[ev->tensor]    = ev->durable;
        c->key[ev->tensor]        = strdup(ev->key);
        c->live_list[c->n_live++] = ev->tensor;
        if (ev->tensor > c->max_id) {
            c->max_id = ev->tensor;
        }
        if (c->step >= 0 && c->step < 2 && ev->kind == MEMSVC_KIND_ACTIVATION) {
            int s = c->step;

            if (c->n_keys[s] == c->cap_keys[s]) {
                c->cap_keys[s] = c->cap_keys[s] ? 2 * c->cap_keys[s] : 1024;
                c->keys[s]     = realloc(c->keys[s], c->cap_keys[s] * sizeof(char *));
            }
            c->keys[s][c->n_keys[s]++] = strdup(ev->key);
        }
        if (ev->tags.expert >= 0 && ev->tags.expert < 4096 && strstr(ev->key, ".fc1") &&
            ev->kind == MEMSVC_KIND_ACTIVATION) {
            c->expert_bytes[ev->tags.expert] += ev->size;
        }
        break;
    case MT_EV_FREE:
        c->frees++;
        fp(c, ev->tensor);
        if (!is_live(c, ev->tensor)) {
            c->bad_free++;
            return MEMSVC_OK;
        }
        c->live[ev->tensor] = 0;
        for (i = 0; i < c->n_live; i++) {
            if (c->live_list[i] == ev->tensor) {
                c->live_list[i] = c->live_list[--c->n_live];
                break;
            }
        }
        break;
    case MT_EV_ACCESS:
        if (!is_live(c, ev->tensor)) {
            c->bad_access++;
        }
        break;
    case MT_EV_COMPUTE:
        c->computes++;
        fp_str(c, ev->name);
        fp(c, ev->duration_ns);
        if (ev->duration_ns == 0) {
            c->bad_order++;
        }
        for (i = 0; i < c->n_pend; i++) {
            /* the cost of recomputing is at least the producing operator's duration */
            if (c->pend_op[i] != ev->op || (c->pend_rc[i] && c->pend_rc[i] < ev->duration_ns)) {
                c->bad_producer++;
            }
        }
        c->n_pend = 0;
        for (i = 0; i < ev->num_reads; i++) {
            c->bad_read += !is_live(c, ev->reads[i]);
        }
        for (i = 0; i < ev->num_writes; i++) {
            c->bad_read += !is_live(c, ev->writes[i]);
        }
        break;
    case MT_EV_HINT:
        c->hints++;
        if (ev->hint == MEMSVC_HINT_STEP_BEGIN) {
            c->step = ev->step;
            memset(c->fwd, 0, sizeof(c->fwd));
            memset(c->bwd, 0, sizeof(c->bwd));
            c->saw_optimizer = false;
        } else if (ev->hint == MEMSVC_HINT_PHASE && ev->microbatch >= 0 &&
                   ev->microbatch < CHK_MAX_MB) {
            if (c->step == 0 && c->n_order < 256) {
                c->order[c->n_order][0] = ev->phase;
                c->order[c->n_order][1] = ev->microbatch;
                c->order[c->n_order][2] = ev->layer;
                c->n_order++;
            }
            if (ev->phase == MEMSVC_PHASE_FORWARD) {
                c->fwd[ev->microbatch]++;
            } else if (ev->phase == MEMSVC_PHASE_BACKWARD) {
                /* a chunk's backward needs that micro-batch's forward through every chunk */
                c->bwd[ev->microbatch]++;
                if (c->fwd[ev->microbatch] < c->bwd[ev->microbatch] || c->saw_optimizer) {
                    c->bad_order++;
                }
            }
        } else if (ev->hint == MEMSVC_HINT_PHASE && ev->phase == MEMSVC_PHASE_OPTIMIZER) {
            c->saw_optimizer = true;
        }
        break;
    default:
        c->bad_order++;
    }
    return MEMSVC_OK;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_checked(const mt_gen_params_t *p, chk_t *c)
{
    char err[256] = "";

    chk_init(c);
    CU_ASSERT_EQUAL(mt_gen_run(p, chk_sink, c, err, sizeof(err)), MEMSVC_OK);
    CU_ASSERT_EQUAL(c->bad_alloc, 0);
    CU_ASSERT_EQUAL(c->bad_free, 0);
    CU_ASSERT_EQUAL(c->bad_read, 0);
    CU_ASSERT_EQUAL(c->bad_dup_key, 0);
    CU_ASSERT_EQUAL(c->bad_rc, 0);
    CU_ASSERT_EQUAL(c->bad_order, 0);
    CU_ASSERT_EQUAL(c->bad_access, 0);
    CU_ASSERT_EQUAL(c->bad_producer, 0);
    CU_ASSERT_EQUAL(c->n_live, 0); /* everything, durable state included, freed at the end */
    CU_ASSERT(c->allocs > 0 && c->allocs == c->frees);
    CU_ASSERT(c->computes > 0);
}

static void tiny_params(mt_gen_params_t *p, mt_model_t *m, sim_desc_t *node)
{
    TEST_ASSERT_OK(mt_model_preset("tiny-moe", m));
    *node = test_node();
    mt_gen_params_init(p, m, node);
    p->layout.tp           = 2;
    p->layout.pp           = 2;
    p->layout.vpp          = 2;
    p->layout.ep           = 2;
    p->layout.dp           = 2;
    p->layout.microbatches = 4;
    p->steps               = 2;
    p->seed                = 7;
}

static void test_schedule_sanity(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    chk_t           c;
    uint32_t        rank;

    tiny_params(&p, &m, &node);
    /* first stage (embedding), last stage (head); MoE and dense layers on both */
    for (rank = 0; rank < 8; rank += 4) {
        p.rank = rank;
        run_checked(&p, &c);
        CU_ASSERT(c.hints > 0);
        chk_fini(&c);
    }
}

/* Interleaved 1F1B, pp 2, vpp 2, 4 micro-batches, stage 0: chunk 0 holds layer 0, chunk 1
 * layer 2. Warm-up (2-0-1)*2 + (2-1)*2 = 4 forwards, then 1F1B, then cool-down (Megatron). */
static void test_interleaved_order(void)
{
    static const int32_t F = MEMSVC_PHASE_FORWARD, B = MEMSVC_PHASE_BACKWARD;
    static const int32_t want[16][3] = {
        {F, 0, 0}, {F, 1, 0}, {F, 0, 2}, {F, 1, 2}, {F, 2, 0}, {B, 0, 2}, {F, 3, 0}, {B, 1, 2},
        {F, 2, 2}, {B, 0, 0}, {F, 3, 2}, {B, 1, 0}, {B, 2, 2}, {B, 3, 2}, {B, 2, 0}, {B, 3, 0}};
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    chk_t           c;
    uint32_t        i;

    tiny_params(&p, &m, &node);
    p.layout.tp = p.layout.ep = p.layout.dp = 1;
    p.steps                                 = 1;
    run_checked(&p, &c);
    CU_ASSERT_EQUAL_FATAL(c.n_order, 16);
    for (i = 0; i < 16; i++) {
        CU_ASSERT_EQUAL(c.order[i][0], want[i][0]);
        CU_ASSERT_EQUAL(c.order[i][1], want[i][1]);
        CU_ASSERT_EQUAL(c.order[i][2], want[i][2]);
    }
    chk_fini(&c);

    /* last stage without interleaving: no warm-up, strict F/B alternation */
    p.layout.vpp = 1;
    p.rank       = 1;
    run_checked(&p, &c);
    CU_ASSERT_EQUAL_FATAL(c.n_order, 8);
    for (i = 0; i < 8; i++) {
        CU_ASSERT_EQUAL(c.order[i][0], (i % 2) ? B : F);
        CU_ASSERT_EQUAL(c.order[i][1], (int32_t)i / 2);
    }
    chk_fini(&c);
}

/* Activation keys other than expert ones repeat exactly from step to step. */
static void test_keys_repeat_across_steps(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    chk_t           c;
    uint32_t        i, j, n[2];
    char          **k[2];
    int             s;

    tiny_params(&p, &m, &node);
    run_checked(&p, &c);
    for (s = 0; s < 2; s++) {
        k[s] = calloc(c.n_keys[s] + 1, sizeof(char *));
        for (i = 0, n[s] = 0; i < c.n_keys[s]; i++) {
            if (strstr(c.keys[s][i], ".e") == NULL) {
                k[s][n[s]++] = c.keys[s][i];
            }
        }
        qsort(k[s], n[s], sizeof(char *), str_cmp);
    }
    CU_ASSERT(n[0] > 100);
    CU_ASSERT_EQUAL_FATAL(n[0], n[1]);
    for (j = 0; j < n[0]; j++) {
        CU_ASSERT_STRING_EQUAL(k[0][j], k[1][j]);
    }
    CU_ASSERT_PTR_NOT_NULL(strstr(k[0][0], ".mb"));
    free(k[0]);
    free(k[1]);
    chk_fini(&c);
}

static uint64_t max_expert(const chk_t *c)
{
    uint64_t m = 0;
    int      e;

    for (e = 0; e < 4096; e++) {
        m = (c->expert_bytes[e] > m) ? c->expert_bytes[e] : m;
    }
    return m;
}

static void test_determinism_and_router(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    chk_t           a, b, d;
    uint64_t        uniform, skewed;

    tiny_params(&p, &m, &node);
    p.layout.ep = 1; /* all 8 experts local */
    run_checked(&p, &a);
    run_checked(&p, &b);
    CU_ASSERT_EQUAL(a.fingerprint, b.fingerprint);
    CU_ASSERT_EQUAL(memcmp(a.expert_bytes, b.expert_bytes, sizeof(a.expert_bytes)), 0);
    p.seed = 8;
    run_checked(&p, &d);
    CU_ASSERT_NOT_EQUAL(a.fingerprint, d.fingerprint);
    CU_ASSERT_NOT_EQUAL(memcmp(a.expert_bytes, d.expert_bytes, sizeof(a.expert_bytes)), 0);
    uniform = max_expert(&a);
    chk_fini(&a);
    chk_fini(&b);
    chk_fini(&d);

    p.skew = 1.5;
    run_checked(&p, &a);
    skewed = max_expert(&a);
    chk_fini(&a);
    CU_ASSERT(skewed > uniform * 3 / 2);
}

/* Each rank of a small full layout produces a consistent trace. */
static void test_every_rank(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    chk_t           c;
    uint32_t        r;

    tiny_params(&p, &m, &node);
    p.steps = 1;
    TEST_ASSERT_OK(mt_model_set(&m, "fused=0", NULL, 0));
    for (r = 0; r < 8; r++) {
        p.rank = r;
        run_checked(&p, &c);
        chk_fini(&c);
    }
    /* experts spread over tp*ep = 4 ranks, 2 whole experts each */
    p.tp_extend_ep = true;
    for (r = 0; r < 2; r++) {
        uint32_t e, n = 0;

        p.rank = r;
        run_checked(&p, &c);
        for (e = 0; e < 8; e++) {
            n += (c.expert_bytes[e] > 0);
        }
        CU_ASSERT_EQUAL(n, 2);
        CU_ASSERT(c.expert_bytes[2 * r] > 0 && c.expert_bytes[2 * r + 1] > 0);
        chk_fini(&c);
    }
    p.tp_extend_ep = false;
    /* GQA + dense (Mixtral-shaped, small) without pipeline */
    TEST_ASSERT_OK(mt_model_preset("mixtral-8x7b", &m));
    TEST_ASSERT_OK(mt_model_set(&m, "layers=2", NULL, 0));
    TEST_ASSERT_OK(mt_model_set(&m, "seq=128", NULL, 0));
    mt_gen_params_init(&p, &m, &node);
    p.layout.tp           = 4;
    p.layout.ep           = 2;
    p.layout.dp           = 2;
    p.layout.microbatches = 3;
    run_checked(&p, &c);
    chk_fini(&c);
}

static void test_layout_and_validation(void)
{
    mt_model_t      m;
    sim_desc_t      node = test_node();
    mt_gen_params_t p;
    mt_layout_t     l = {0};
    char            err[256];
    uint32_t        v, first, count, next = 0;
    mt_gen_memory_t mem;

    TEST_ASSERT_OK(mt_layout_parse("tp=8,pp=16,vpp=2,ep=4,dp=48,cp=1", &l, err, sizeof(err)));
    CU_ASSERT(l.tp == 8 && l.pp == 16 && l.vpp == 2 && l.ep == 4 && l.dp == 48 && l.cp == 1);
    CU_ASSERT_EQUAL(mt_layout_parse("tp=8,xx=2", &l, err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(mt_layout_parse("tp=0", &l, err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(mt_layout_parse("tp", &l, err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(l.tp, 8);

    TEST_ASSERT_OK(mt_model_preset("pangu-ultra-moe-718b", &m));
    l.microbatches = 32;
    for (v = 0; v < 32; v++) { /* chunks cover the layers in order, none empty */
        mt_gen_chunk_layers(&m, &l, v, &first, &count);
        CU_ASSERT_EQUAL(first, next);
        CU_ASSERT(count >= 1);
        next = first + count;
    }
    CU_ASSERT_EQUAL(next, 61);
    CU_ASSERT_EQUAL(mt_gen_stage_of_rank(&l, 8 * 48 * 3 + 5), 3);

    mt_gen_params_init(&p, &m, &node);
    p.layout = l;
    TEST_ASSERT_OK(mt_gen_validate(&p, err, sizeof(err)));
    p.layout.microbatches = 30; /* interleaving needs a multiple of pp */
    CU_ASSERT_EQUAL(mt_gen_validate(&p, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    p.layout.microbatches = 32;
    p.layout.ep           = 5;
    CU_ASSERT_EQUAL(mt_gen_validate(&p, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    p.layout.ep = 4;
    p.rank      = 8 * 48 * 16;
    CU_ASSERT_EQUAL(mt_gen_validate(&p, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "rank"));

    /* memory estimate of the tiny model: durable state as counted, activations present */
    TEST_ASSERT_OK(mt_model_preset("tiny-moe", &m));
    mt_gen_params_init(&p, &m, &node);
    TEST_ASSERT_OK(mt_gen_memory(&p, &mem, err, sizeof(err)));
    {
        uint64_t total;

        mt_model_params(&m, &total, NULL);
        CU_ASSERT_EQUAL(mem.params, 2 * total);
        CU_ASSERT_EQUAL(mem.optim, 12 * total);
        CU_ASSERT_EQUAL(mem.grads, 4 * total);
    }
    CU_ASSERT(mem.activation_peak > 0);
    CU_ASSERT(mem.peak >= mem.params + mem.optim + mem.activation_peak);
}

/* Sandwich norm (Pangu): a norm after attention and after the MLP, with their parameters and
 * saved block outputs; every rank's trace stays consistent. */
static void test_sandwich_norm(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    mt_gen_memory_t mem;
    chk_t           c;
    uint64_t        total, with;
    uint32_t        r;

    tiny_params(&p, &m, &node);
    TEST_ASSERT_OK(mt_model_set(&m, "sandwich_norm=1", NULL, 0));
    p.steps = 1;
    for (r = 0; r < 8; r++) {
        p.rank = r;
        run_checked(&p, &c);
        chk_fini(&c);
    }
    mt_gen_params_init(&p, &m, &node);
    TEST_ASSERT_OK(mt_gen_memory(&p, &mem, NULL, 0));
    mt_model_params(&m, &total, NULL);
    CU_ASSERT_EQUAL(mem.params, 2 * total);
    with = kept_bytes(&p, 1);
    TEST_ASSERT_OK(mt_model_set(&m, "sandwich_norm=0", NULL, 0));
    CU_ASSERT_EQUAL(with - kept_bytes(&p, 1), 2 * 2 * 256 * 256); /* attn.out, mlp.out */
}

/* What arrives by a collective (the expert dispatch, a pipeline receive) holds other ranks'
 * data: nothing local recomputes it. */
typedef struct rcv {
    uint64_t producer[4096];
    bool     rc[4096];
    char     key[4096][48];
    uint32_t n, comm_outputs, dispatch_seen, bad;
} rcv_t;

static memsvc_status_t rcv_sink(void *arg, const mt_event_t *ev)
{
    rcv_t   *r = arg;
    uint32_t i;

    if (ev->type == MT_EV_ALLOC && ev->producer != 0) {
        if (r->n == 4096) {
            r->n = 0; /* a window of recent allocations is enough: producers come right after */
        }
        r->producer[r->n] = ev->producer;
        r->rc[r->n]       = ev->recomputable;
        snprintf(r->key[r->n], sizeof(r->key[0]), "%s", ev->key);
        r->n++;
        if (strstr(ev->key, "moe.dispatch") != NULL && strstr(ev->key, ".d.") == NULL) {
            r->dispatch_seen++;
            r->bad += ev->recomputable;
        }
    } else if (ev->type == MT_EV_COMPUTE && ev->stream != 0) {
        for (i = 0; i < r->n; i++) {
            if (r->producer[i] == ev->op) {
                r->comm_outputs++;
                r->bad += r->rc[i];
            }
        }
    }
    return MEMSVC_OK;
}

static void test_received_not_recomputable(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    rcv_t          *r = calloc(1, sizeof(*r));
    uint32_t        rank;

    tiny_params(&p, &m, &node);
    p.steps = 1;
    for (rank = 0; rank < 8; rank += 5) { /* stage 0 (dispatch) and stage 1 (pp.recv too) */
        memset(r, 0, sizeof(*r));
        p.rank = rank;
        CU_ASSERT_EQUAL(mt_gen_run(&p, rcv_sink, r, NULL, 0), MEMSVC_OK);
        CU_ASSERT(r->dispatch_seen > 0);
        CU_ASSERT(r->comm_outputs > r->dispatch_seen);
        CU_ASSERT_EQUAL(r->bad, 0);
    }
    free(r);
}

/* Without --layout, a preset runs in the layout it is published as trained with. */
static void test_default_layout(void)
{
    mt_model_t      m;
    sim_desc_t      node = test_node();
    mt_gen_params_t p;
    char            err[128];

    TEST_ASSERT_OK(mt_model_preset("pangu-ultra-moe-718b", &m));
    mt_gen_params_init(&p, &m, &node);
    TEST_ASSERT_OK(mt_gen_params_default_layout(&p, err, sizeof(err)));
    CU_ASSERT(p.layout.tp == 8 && p.layout.pp == 16 && p.layout.vpp == 2 && p.layout.ep == 4 &&
              p.layout.dp == 48 && p.layout.microbatches == 32);
    CU_ASSERT(p.tp_extend_ep);
    TEST_ASSERT_OK(mt_gen_validate(&p, err, sizeof(err)));

    TEST_ASSERT_OK(mt_model_preset("deepseek-v3-671b", &m));
    mt_gen_params_init(&p, &m, &node);
    TEST_ASSERT_OK(mt_gen_params_default_layout(&p, err, sizeof(err)));
    CU_ASSERT(p.layout.tp == 1 && p.layout.pp == 16 && p.layout.ep == 64 && p.layout.dp == 128);
    CU_ASSERT_FALSE(p.tp_extend_ep);
    TEST_ASSERT_OK(mt_gen_validate(&p, err, sizeof(err)));

    TEST_ASSERT_OK(mt_model_preset("tiny-moe", &m)); /* no published layout: one rank */
    mt_gen_params_init(&p, &m, &node);
    TEST_ASSERT_OK(mt_gen_params_default_layout(&p, err, sizeof(err)));
    CU_ASSERT(p.layout.tp == 1 && p.layout.pp == 1 && p.layout.dp == 1);
}

/* Megatron-Core MLA: down-projections and latent norms on the sequence-parallel shard (s/tp
 * tokens); the up-projection all-gathers the normalised latents. */
typedef struct keysz {
    const char *suffix;
    uint64_t    size;
} keysz_t;

static memsvc_status_t keysz_sink(void *arg, const mt_event_t *ev)
{
    keysz_t *k = arg;
    size_t   n, s;

    if (ev->type == MT_EV_ALLOC && k->size == 0) {
        n = strlen(ev->key);
        s = strlen(k->suffix);
        if (n >= s && strcmp(ev->key + n - s, k->suffix) == 0) {
            k->size = ev->size;
        }
    }
    return MEMSVC_OK;
}

static uint64_t first_size(const mt_gen_params_t *p, const char *suffix)
{
    keysz_t k = {suffix, 0};

    CU_ASSERT_EQUAL(mt_gen_run(p, keysz_sink, &k, NULL, 0), MEMSVC_OK);
    return k.size;
}

static void test_mla_sequence_parallel(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    uint64_t        n, T = 256, down_w = 128 + 64 + 16;

    tiny_params(&p, &m, &node);
    p.steps = 1;
    n       = T / p.layout.tp;
    CU_ASSERT_EQUAL(first_size(&p, "L0.mb0.attn.down"), 2 * n * down_w);
    CU_ASSERT_EQUAL(first_size(&p, "L0.mb0.attn.down_norm"), 2 * n * (128 + 64));
    CU_ASSERT_EQUAL(first_size(&p, "L0.mb0.attn.latent.gathered"), 2 * T * down_w);
    CU_ASSERT_EQUAL(first_size(&p, "L0.mb0.ln1.gathered"), 0); /* nothing gathers ln1 now */
}

/* Operators by name: duration summed, first position in the trace, count. */
typedef struct opsum {
    const char *names[8];
    uint64_t    ns[8], first[8], n[8];
    uint64_t    pos, step_ns;
} opsum_t;

static memsvc_status_t opsum_sink(void *arg, const mt_event_t *ev)
{
    opsum_t *o = arg;
    int      i;

    if (ev->type != MT_EV_COMPUTE) {
        return MEMSVC_OK;
    }
    o->pos++;
    if (ev->stream == 0) {
        o->step_ns += ev->duration_ns;
    }
    for (i = 0; i < 8 && o->names[i] != NULL; i++) {
        if (!strcmp(ev->name, o->names[i])) {
            o->ns[i] += ev->duration_ns;
            o->first[i] = o->first[i] ? o->first[i] : o->pos;
            o->n[i]++;
        }
    }
    return MEMSVC_OK;
}

static void run_opsum(const mt_gen_params_t *p, opsum_t *o)
{
    memset(o->ns, 0, sizeof(o->ns));
    memset(o->first, 0, sizeof(o->first));
    memset(o->n, 0, sizeof(o->n));
    o->pos = o->step_ns = 0;
    CU_ASSERT_EQUAL(mt_gen_run(p, opsum_sink, o, NULL, 0), MEMSVC_OK);
}

/* A fused attention core under a causal mask does half the score work. */
static void test_causal_attention(void)
{
    mt_model_t      m;
    sim_desc_t      node = test_node();
    mt_gen_params_t p;
    opsum_t         o = {{"attn.core", "attn.core.bwd"}};
    uint64_t        causal[2];

    TEST_ASSERT_OK(mt_model_preset("gpt3-175b", &m));
    TEST_ASSERT_OK(mt_model_set(&m, "layers=1", NULL, 0));
    TEST_ASSERT_OK(mt_model_set(&m, "fused=1", NULL, 0));
    TEST_ASSERT_OK(mt_model_set(&m, "dropout=0", NULL, 0));
    mt_gen_params_init(&p, &m, &node);
    run_opsum(&p, &o);
    causal[0] = o.ns[0];
    causal[1] = o.ns[1];
    TEST_ASSERT_OK(mt_model_set(&m, "causal=0", NULL, 0));
    run_opsum(&p, &o);
    CU_ASSERT(causal[0] > 0 && causal[1] > 0);
    CU_ASSERT(llabs((long long)(2 * causal[0]) - (long long)o.ns[0]) <= 2);
    CU_ASSERT(llabs((long long)(2 * causal[1]) - (long long)o.ns[1]) <= 2);
}

/* Communication overlap: TP collectives fused with their matmuls (MC2) take the longer of the
 * two, not the sum; with the ep overlap the shared experts run while the all-to-alls fly. */
static void test_overlap(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    opsum_t  o = {{"attn.proj", "moe.a2a.dispatch", "shared.fc1", "moe.e0.fc1", "moe.a2a.combine",
                   "shared.fc2", "moe.unpermute"}};
    uint64_t serial;
    chk_t    c;

    tiny_params(&p, &m, &node);
    p.steps     = 1;
    p.layout.ep = 1;
    TEST_ASSERT_OK(mt_gen_overlap_parse("none", &p, NULL, 0));
    run_opsum(&p, &o);
    serial = o.ns[0];
    /* serial order: dispatch, experts, combine, then the shared experts */
    CU_ASSERT(o.first[1] < o.first[3] && o.first[3] < o.first[4] && o.first[4] < o.first[2]);
    TEST_ASSERT_OK(mt_gen_overlap_parse("tp,ep", &p, NULL, 0));
    CU_ASSERT(p.overlap_tp && p.overlap_ep);
    run_opsum(&p, &o);
    CU_ASSERT(o.ns[0] < serial);
    /* shared fc1 between the dispatch and the first expert, shared fc2 after the combine */
    CU_ASSERT(o.first[1] < o.first[2] && o.first[2] < o.first[3]);
    CU_ASSERT(o.first[4] < o.first[5] && o.first[5] < o.first[6]);
    run_checked(&p, &c);
    chk_fini(&c);
    CU_ASSERT_EQUAL(mt_gen_overlap_parse("pp", &p, NULL, 0), MEMSVC_ERR_PARSE);

    /* the recipes: Pangu overlaps both, tiny-moe neither */
    TEST_ASSERT_OK(mt_model_preset("pangu-ultra-moe-718b", &m));
    mt_gen_params_init(&p, &m, &node);
    CU_ASSERT(p.overlap_tp && p.overlap_ep);
    TEST_ASSERT_OK(mt_model_preset("tiny-moe", &m));
    mt_gen_params_init(&p, &m, &node);
    CU_ASSERT(!p.overlap_tp && !p.overlap_ep);
}

/* A two-stream timing of a trace without memory limits (as an unconstrained replay): an
 * operator starts when its stream is free, its inputs are written and the compute stream has
 * reached it in program order. */
typedef struct timing {
    uint64_t ready[65536];
    uint64_t comp, comm[4], end, wait_ns, waits;
} timing_t;

static memsvc_status_t timing_sink(void *arg, const mt_event_t *ev)
{
    timing_t *t = arg;
    uint64_t  start, e;
    uint32_t  i, s = ev->stream < 4 ? ev->stream : 3;

    if (ev->type != MT_EV_COMPUTE) {
        return MEMSVC_OK;
    }
    start = (ev->stream == 0) ? t->comp : (t->comm[s] > t->comp ? t->comm[s] : t->comp);
    for (i = 0; i < ev->num_reads; i++) {
        if (ev->reads[i] < 65536 && t->ready[ev->reads[i]] > start) {
            start = t->ready[ev->reads[i]];
        }
    }
    e = start + ev->duration_ns;
    if (ev->stream == 0) {
        t->comp = e;
    } else {
        t->comm[s] = e;
    }
    for (i = 0; i < ev->num_writes; i++) {
        if (ev->writes[i] < 65536) {
            t->ready[ev->writes[i]] = e;
        }
    }
    if (!strcmp(ev->name, "pp.wait")) {
        t->wait_ns += ev->duration_ns;
        t->waits++;
    }
    t->end = (e > t->end) ? e : t->end;
    return MEMSVC_OK;
}

/* Pipeline bubbles from the schedule: a later stage waits for its first input; every stage's
 * step, waits included, ends when the slowest stage's does. */
static void test_pipeline_waits(void)
{
    mt_model_t      m;
    sim_desc_t      node;
    mt_gen_params_t p;
    timing_t       *t = calloc(1, sizeof(*t));
    uint64_t        step[2], waits[2], bare;
    uint32_t        s;

    tiny_params(&p, &m, &node);
    p.steps     = 1;
    p.layout.tp = p.layout.ep = p.layout.dp = 1;
    for (s = 0; s < 2; s++) {
        memset(t, 0, sizeof(*t));
        p.rank = s;
        CU_ASSERT_EQUAL(mt_gen_run(&p, timing_sink, t, NULL, 0), MEMSVC_OK);
        step[s]  = t->end;
        waits[s] = t->wait_ns;
    }
    CU_ASSERT(waits[1] > 0);
    CU_ASSERT(waits[0] > 0); /* stage 0 waits for the backward of the last virtual stage */
    CU_ASSERT(llabs((long long)step[0] - (long long)step[1]) <= (long long)(step[0] / 100));
    p.pipeline_waits = false;
    memset(t, 0, sizeof(*t));
    CU_ASSERT_EQUAL(mt_gen_run(&p, timing_sink, t, NULL, 0), MEMSVC_OK);
    bare = t->end;
    CU_ASSERT_EQUAL(t->waits, 0);
    CU_ASSERT(bare + waits[1] >= step[1] && bare < step[1]);
    free(t);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("gen", NULL, NULL);

    CU_add_test(s, "Korthikanti per-layer activation bytes", test_korthikanti);
    CU_add_test(s, "schedule sanity on tiny-moe", test_schedule_sanity);
    CU_add_test(s, "interleaved 1F1B order", test_interleaved_order);
    CU_add_test(s, "keys repeat across steps", test_keys_repeat_across_steps);
    CU_add_test(s, "determinism, seeds and router skew", test_determinism_and_router);
    CU_add_test(s, "every rank consistent", test_every_rank);
    CU_add_test(s, "layout, validation, memory estimate", test_layout_and_validation);
    CU_add_test(s, "sandwich norm", test_sandwich_norm);
    CU_add_test(s, "received tensors are not recomputable", test_received_not_recomputable);
    CU_add_test(s, "presets default to their published layout", test_default_layout);
    CU_add_test(s, "MLA down-projection on the sequence shard", test_mla_sequence_parallel);
    CU_add_test(s, "causal attention halves the core's work", test_causal_attention);
    CU_add_test(s, "communication overlap (MC2, shared experts)", test_overlap);
    CU_add_test(s, "pipeline waits from the schedule", test_pipeline_waits);
}

TEST_REGISTER(gen, add_suite)
