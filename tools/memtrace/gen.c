/* gen.c - synthetic per-rank training-step traces: tensors, operators, 1F1B schedule, router */
#include "tools/memtrace/gen.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_MAX_EXPERTS 4096
#define OP_IO 16  /* reads, updates, frees or recompute inputs of one operator */
#define OP_OUTS 6 /* tensors one operator allocates */
#define SRC_MAX 8 /* recompute inputs carried by a transient tensor */

/* A tensor as the generator holds it. Transient tensors are freed by their consumer; a
 * consumer's outputs are recomputed from the transient's own sources. */
typedef struct tref {
    uint64_t id; /* 0: none */
    uint64_t size;
    uint64_t rc_ns;        /* duration of the producing operator (transient: chained) */
    uint64_t src[SRC_MAX]; /* recompute inputs of the producer */
    uint32_t n_src;
    bool     transient; /* freed right after its consumer */
    bool     norc;      /* cannot be recomputed (received, or gathered from many ops) */
    bool     durable;   /* parameter or optimizer state: always there to recompute from */
} tref_t;

typedef struct out {
    tref_t       *dst; /* where the caller keeps it (NULL: scratch, freed after the op) */
    uint64_t      id, size;
    memsvc_kind_t kind;
    int32_t       layer, expert;
    char          key[MEMSVC_KEY_MAX + 1];
} out_t;

typedef struct op {
    char     name[48];
    uint32_t stream;
    double   flops;
    uint64_t comm_ns;     /* collectives folded into the operator, or the whole comm op */
    uint64_t rc_extra_ns; /* durations of transient inputs' producers */
    bool     no_recompute;
    int32_t  mb;
    uint64_t bytes;
    uint64_t reads[OP_IO];
    uint32_t n_reads;
    uint64_t writes[OP_IO + OP_OUTS];
    uint32_t n_writes;
    uint64_t rc[SRC_MAX * 2];
    uint32_t n_rc;
    uint64_t frees[OP_IO];
    uint32_t n_frees;
    out_t    outs[OP_OUTS];
    uint32_t n_outs;
} op_t;

/* Parameter group: one parameter tensor with its gradient and optimizer state. */
typedef struct pgroup {
    char     name[64]; /* key stem: "L12.attn.qkv" -> "L12.param.attn.qkv" */
    int32_t  layer, expert, stage;
    uint64_t n;        /* parameters on this rank */
    uint32_t dp_shard; /* ranks the optimizer state is sharded over */
    tref_t   param, grad, optim;
} pgroup_t;

enum { PG_LN1, PG_QKV, PG_UP, PG_PROJ, PG_LN2, PG_FC1, PG_FC2, PG_ROUTER, PG_SFC1, PG_SFC2, PG_N };

/* Tensors one layer keeps from its forward to its backward, for one micro-batch. */
typedef struct lstate {
    tref_t    ln1_in, ln1_out, qkv, down, dnorm, q_up, kv_up, softmax, amask, aout, ctx, lse;
    tref_t    mask1, ln2_in, ln2_out, fc1, act, mask2, logits, dispatch, combined, sfc1, sact;
    tref_t    x_out;       /* head input or next-stage output when the chunk ends here */
    tref_t   *efc1, *eact; /* per local expert */
    uint32_t *ecount;      /* tokens per local expert */
    uint64_t  rows;        /* dispatch rows: sum of ecount */
} lstate_t;

typedef struct head_state {
    tref_t norm_out, ce;
} head_state_t;

typedef struct gen {
    const mt_gen_params_t *p;
    const mt_model_t      *m;
    const sim_desc_t      *node;
    mt_sink_fn_t           sink;
    void                  *arg;
    memsvc_status_t        status;

    uint32_t tp, pp, vpp, ep, dp, cp, mbs, seq, stage, ep_rank, e_loc, e0;
    uint32_t etp, eps; /* expert tensor-parallel size (tp or 1), expert-parallel size */
    uint64_t T, nsp;   /* tokens per micro-batch in TP regions, in SP regions */
    uint64_t next_id, next_op, clock_ns;
    int32_t  step;
    uint32_t cur_v; /* virtual stage being emitted */

    uint32_t      n_local;     /* layers on this rank */
    uint32_t     *layer_of;    /* local index -> global layer */
    uint32_t     *chunk_first; /* per chunk: first local index */
    uint32_t     *chunk_count;
    lstate_t     *ls;      /* [n_local * microbatches] */
    tref_t       *ebuf;    /* expert tref storage for ls */
    uint32_t     *cbuf;    /* expert count storage */
    head_state_t *hs;      /* [microbatches] */
    double       *weights; /* [n_local * experts]: router probabilities */

    pgroup_t *pg;
    uint32_t  n_pg, cap_pg;
    int32_t  *lpg; /* [n_local * PG_N] */
    int32_t  *epg; /* [n_local]: first expert group (fc1, fc2 alternate) */
    int32_t   pg_embed, pg_head, pg_head_norm;
} gen_t;

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- deterministic random numbers ---------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return mix64(r->s);
}

static double rng_unit(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

/* A Binomial(n, p) draw: normal approximation when the variance is large, else inversion. */
static uint64_t binomial(rng_t *r, uint64_t n, double p)
{
    double   mean, var, u, f, q, x;
    uint64_t k;

    if (n == 0 || p <= 0) {
        return 0;
    }
    if (p >= 1) {
        return n;
    }
    if (p > 0.5) {
        return n - binomial(r, n, 1 - p);
    }
    mean = (double)n * p;
    var  = mean * (1 - p);
    if (var >= 20) {
        double u1 = rng_unit(r), u2 = rng_unit(r);

        x = mean + sqrt(var) * sqrt(-2 * log(u1 > 0 ? u1 : 0x1p-53)) * cos(2 * M_PI * u2);
        x = floor(x + 0.5);
        return (x < 0) ? 0 : (x > (double)n) ? n : (uint64_t)x;
    }
    q = 1 - p;
    f = exp((double)n * log(q));
    u = rng_unit(r);
    for (k = 0; u > f && k < n; k++) {
        u -= f;
        f *= (double)(n - k) / (double)(k + 1) * p / q;
    }
    return k;
}

/* ---- layout -------------------------------------------------------------------------- */

uint32_t mt_gen_stage_of_rank(const mt_layout_t *l, uint32_t rank)
{
    return rank / (l->tp * l->cp * l->dp);
}

void mt_gen_chunk_layers(const mt_model_t *m, const mt_layout_t *l, uint32_t v, uint32_t *first_p,
                         uint32_t *count_p)
{
    uint64_t c = (uint64_t)l->pp * l->vpp;
    uint64_t a = (uint64_t)v * m->layers / c, b = (uint64_t)(v + 1) * m->layers / c;

    *first_p = (uint32_t)a;
    *count_p = (uint32_t)(b - a);
}

memsvc_status_t mt_layout_parse(const char *s, mt_layout_t *layout, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        size_t      off;
    } keys[]         = {{"tp", offsetof(mt_layout_t, tp)},
                        {"pp", offsetof(mt_layout_t, pp)},
                        {"vpp", offsetof(mt_layout_t, vpp)},
                        {"ep", offsetof(mt_layout_t, ep)},
                        {"dp", offsetof(mt_layout_t, dp)},
                        {"cp", offsetof(mt_layout_t, cp)},
                        {"mb", offsetof(mt_layout_t, microbatches)},
                        {"microbatches", offsetof(mt_layout_t, microbatches)}};
    mt_layout_t l    = *layout;
    const char *item = s;

    while (*item != '\0') {
        const char   *end = strchr(item, ',');
        const char   *eq  = strchr(item, '=');
        size_t        len = (end != NULL) ? (size_t)(end - item) : strlen(item);
        size_t        klen, i;
        char          num[32], *nend;
        unsigned long v;
        bool          found = false;

        if (eq == NULL || eq >= item + len) {
            set_err(err, errlen, "layout '%.*s': expected key=value", (int)len, item);
            return MEMSVC_ERR_PARSE;
        }
        klen = (size_t)(eq - item);
        if (len - klen - 1 == 0 || len - klen - 1 >= sizeof(num)) {
            set_err(err, errlen, "layout '%.*s': bad value", (int)len, item);
            return MEMSVC_ERR_PARSE;
        }
        memcpy(num, eq + 1, len - klen - 1);
        num[len - klen - 1] = '\0';
        v                   = strtoul(num, &nend, 10);
        if (num[0] < '0' || num[0] > '9' || *nend != '\0' || v == 0 || v > 1000000) {
            set_err(err, errlen, "layout '%.*s': '%s' is not a positive integer", (int)len, item,
                    num);
            return MEMSVC_ERR_PARSE;
        }
        for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            if (strlen(keys[i].key) == klen && !strncmp(keys[i].key, item, klen)) {
                uint32_t u = (uint32_t)v;

                memcpy((char *)&l + keys[i].off, &u, sizeof(u));
                found = true;
            }
        }
        if (!found) {
            set_err(err, errlen, "unknown layout key '%.*s' (tp, pp, vpp, ep, dp, cp, mb)",
                    (int)klen, item);
            return MEMSVC_ERR_UNKNOWN_KEY;
        }
        item += len + (end != NULL ? 1 : 0);
    }
    *layout = l;
    return MEMSVC_OK;
}

void mt_gen_params_init(mt_gen_params_t *p, const mt_model_t *model, const sim_desc_t *node)
{
    memset(p, 0, sizeof(*p));
    p->model = model;
    p->node  = node;
    p->layout =
        (mt_layout_t){.tp = 1, .pp = 1, .vpp = 1, .ep = 1, .dp = 1, .cp = 1, .microbatches = 1};
    p->steps = 1;
    p->seed  = 1;
}

memsvc_status_t mt_gen_validate(const mt_gen_params_t *p, char *err, size_t errlen)
{
    const mt_model_t  *m = p->model;
    const mt_layout_t *l = &p->layout;
    const sim_desc_t  *n = p->node;
    uint64_t           s, b, ranks;
    memsvc_status_t    status;

    if (m == NULL || n == NULL) {
        set_err(err, errlen, "gen: a model and a node are needed");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = mt_model_validate(m, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (!l->tp || !l->pp || !l->vpp || !l->ep || !l->dp || !l->cp || !l->microbatches ||
        !p->steps) {
        set_err(err, errlen, "gen: tp, pp, vpp, ep, dp, cp, microbatches and steps must be >= 1");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    s     = l->seq_len ? l->seq_len : m->seq_len;
    b     = l->micro_batch_size ? l->micro_batch_size : m->micro_batch;
    ranks = (uint64_t)l->tp * l->cp * l->dp * l->pp;
    if (p->rank >= ranks) {
        set_err(err, errlen, "gen: rank %u out of range (layout has %llu ranks)", p->rank,
                (unsigned long long)ranks);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->heads % l->tp != 0 || (m->attn != MT_ATTN_MLA && m->kv_heads % l->tp != 0)) {
        set_err(err, errlen, "gen: tp %u must divide heads %u and kv_heads %u", l->tp, m->heads,
                m->kv_heads);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (s % l->cp != 0 || (s / l->cp * b) % l->tp != 0) {
        set_err(err, errlen, "gen: cp must divide seq, tp the tokens per rank (%llu)",
                (unsigned long long)(s / l->cp * b));
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->experts > GEN_MAX_EXPERTS || m->experts % l->ep != 0 || (l->dp * l->cp) % l->ep != 0 ||
        (m->experts == 0 && l->ep != 1)) {
        set_err(err, errlen, "gen: ep %u must divide experts %u and dp*cp %u (ep=1 if dense)",
                l->ep, m->experts, l->dp * l->cp);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (p->tp_extend_ep && m->experts % (l->ep * l->tp) != 0) {
        set_err(err, errlen, "gen: tp-extend-ep needs ep*tp (%u) to divide experts %u",
                l->ep * l->tp, m->experts);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->layers < (uint64_t)l->pp * l->vpp) {
        set_err(err, errlen, "gen: %u layers cannot fill pp*vpp = %u chunks", m->layers,
                l->pp * l->vpp);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (l->vpp > 1 && l->microbatches % l->pp != 0) {
        set_err(err, errlen, "gen: interleaved 1F1B needs microbatches (%u) a multiple of pp (%u)",
                l->microbatches, l->pp);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!(n->flops > 0) || !(n->mfu > 0) || n->mfu > 1 || !(n->hbm_bw > 0) || !(n->nic.bw > 0) ||
        (l->tp > 1 && !(n->d2d.bw > 0))) {
        set_err(err, errlen,
                "gen: node needs flops, 0 < mfu <= 1, hbm_bw, nic bw (and d2d bw "
                "with tp > 1)");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!(p->skew >= 0) || p->skew > 100) {
        set_err(err, errlen, "gen: skew must be in [0, 100]");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return MEMSVC_OK;
}

/* ---- event emission ------------------------------------------------------------------ */

static void emit(gen_t *g, mt_event_t *ev)
{
    if (g->status != MEMSVC_OK) {
        return;
    }
    ev->time_ns = g->clock_ns;
    ev->rank    = g->p->rank;
    g->status   = g->sink(g->arg, ev);
}

static void hint(gen_t *g, memsvc_hint_type_t type, int32_t layer, int32_t mb, memsvc_phase_t ph)
{
    mt_event_t ev = {.type = MT_EV_HINT};

    ev.hint       = type;
    ev.step       = g->step;
    ev.layer      = layer;
    ev.microbatch = mb;
    ev.phase      = ph;
    emit(g, &ev);
}

static void free_id(gen_t *g, uint64_t id)
{
    mt_event_t ev = {.type = MT_EV_FREE};

    ev.tensor = id;
    emit(g, &ev);
}

static memsvc_tags_t tags_of(gen_t *g, int32_t layer, int32_t mb, int32_t expert)
{
    memsvc_tags_t t = MEMSVC_TAGS_NONE;

    t.layer      = layer;
    t.microbatch = mb;
    t.expert     = expert;
    t.stage      = (int32_t)g->cur_v;
    t.step       = g->step;
    return t;
}

/* ---- operators ----------------------------------------------------------------------- */

static void op_begin(op_t *op, int32_t mb, uint32_t stream, const char *fmt, ...)
{
    va_list ap;

    memset(op, 0, offsetof(op_t, outs));
    op->n_outs = 0;
    op->mb     = mb;
    op->stream = stream;
    va_start(ap, fmt);
    vsnprintf(op->name, sizeof(op->name), fmt, ap);
    va_end(ap);
}

static void rc_add(op_t *op, uint64_t id)
{
    uint32_t i;

    for (i = 0; i < op->n_rc; i++) {
        if (op->rc[i] == id) {
            return;
        }
    }
    if (op->n_rc < sizeof(op->rc) / sizeof(op->rc[0])) {
        op->rc[op->n_rc++] = id;
    } else {
        op->no_recompute = true;
    }
}

/* The operator reads t; t must be resident. A transient input passes its sources on. */
static void op_in(op_t *op, const tref_t *t)
{
    uint32_t i;

    if (t->id == 0 || op->n_reads == OP_IO) {
        return;
    }
    op->reads[op->n_reads++] = t->id;
    op->bytes += t->size;
    if (t->transient && !t->norc) {
        op->rc_extra_ns += t->rc_ns;
        for (i = 0; i < t->n_src; i++) {
            rc_add(op, t->src[i]);
        }
    } else {
        /* a parameter, a received or gathered tensor, or a kept activation: it must be
         * resident during a recompute; one that cannot itself be recomputed is kept (or
         * swapped) by the engine rather than dropped, so it is still there */
        rc_add(op, t->id);
    }
}

/* The operator reads only slice bytes of t (one expert's rows of a shared buffer). */
static void op_in_slice(op_t *op, const tref_t *t, uint64_t slice)
{
    op_in(op, t);
    if (t->id != 0) {
        op->bytes -= t->size - slice;
    }
}

/* The operator updates t in place (gradient accumulation, optimizer). */
static void op_upd(op_t *op, const tref_t *t)
{
    if (t->id != 0) {
        op->writes[op->n_writes++] = t->id;
        op->bytes += t->size;
    }
}

static void op_upd_slice(op_t *op, const tref_t *t, uint64_t slice)
{
    op_upd(op, t);
    if (t->id != 0) {
        op->bytes -= t->size - slice;
    }
}

static void op_free(op_t *op, tref_t *t)
{
    if (t->id != 0 && op->n_frees < OP_IO) {
        op->frees[op->n_frees++] = t->id;
    }
}

/* Declare an output: allocated before the operator runs. dst (NULL for a scratch buffer that
 * is freed after the operator) gets its id now and its recompute data when the op is emitted. */
static out_t *op_out_v(gen_t *g, op_t *op, tref_t *dst, memsvc_kind_t kind, uint64_t size,
                       int32_t layer, int32_t expert, const char *fmt, va_list ap)
{
    out_t *o = &op->outs[op->n_outs++];

    o->id     = ++g->next_id;
    o->size   = size > 0 ? size : 1;
    o->dst    = dst;
    o->kind   = kind;
    o->layer  = layer;
    o->expert = expert;
    vsnprintf(o->key, sizeof(o->key), fmt, ap);
    if (dst != NULL) {
        memset(dst, 0, sizeof(*dst));
        dst->id   = o->id;
        dst->size = o->size;
    }
    op->bytes += o->size;
    return o;
}

static void op_out(gen_t *g, op_t *op, tref_t *dst, memsvc_kind_t kind, uint64_t size,
                   int32_t layer, int32_t expert, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    op_out_v(g, op, dst, kind, size, layer, expert, fmt, ap);
    va_end(ap);
}

/* A scratch buffer of the operator (gathered input, partial sums): allocated before, freed
 * after it. */
static void op_scratch(gen_t *g, op_t *op, uint64_t size, int32_t layer, const char *fmt, ...)
{
    out_t  *o;
    va_list ap;

    va_start(ap, fmt);
    o = op_out_v(g, op, NULL, MEMSVC_KIND_WORKSPACE, size, layer, MEMSVC_TAG_NONE, fmt, ap);
    va_end(ap);
    op->frees[op->n_frees++] = o->id;
}

/* Gradient of a parameter group: allocated by its first writer in the step. */
static void op_grad(gen_t *g, op_t *op, pgroup_t *pg)
{
    if (pg->grad.id != 0) {
        op_upd(op, &pg->grad);
        return;
    }
    op_out(g, op, &pg->grad, MEMSVC_KIND_GRAD, pg->n * 4, pg->layer, pg->expert, "%.*s.grad%s",
           (int)(strchr(pg->name, '|') - pg->name), pg->name, strchr(pg->name, '|') + 1);
}

static uint64_t secs_to_ns(double s)
{
    double ns = s * 1e9;

    return (ns < 1) ? 1 : (uint64_t)llround(ns);
}

/* Time of a transfer of bytes over a link, in ns (0 for no bytes). */
static uint64_t link_ns(const sim_link_desc_t *link, double bytes)
{
    if (bytes <= 0) {
        return 0;
    }
    return link->lat_ns + secs_to_ns(bytes / link->bw);
}

/* TP all-gather or reduce-scatter of a full-size buffer (ring: (t-1)/t of it per rank). */
static uint64_t tp_coll_ns(gen_t *g, double full_bytes)
{
    if (g->tp == 1) {
        return 0;
    }
    return link_ns(&g->node->d2d, full_bytes * (g->tp - 1) / g->tp);
}

/* Expert-TP all-gather of dispatched tokens (or reduce-scatter of expert outputs). */
static uint64_t etp_coll_ns(gen_t *g, double full_bytes)
{
    return (g->etp == 1) ? 0 : tp_coll_ns(g, full_bytes);
}

static uint64_t op_duration(gen_t *g, const op_t *op)
{
    double t;

    if (op->stream != 0) {
        return op->comm_ns > 0 ? op->comm_ns : 1;
    }
    t = fmax(op->flops / (g->node->flops * g->node->mfu), (double)op->bytes / g->node->hbm_bw);
    return secs_to_ns(t) + op->comm_ns;
}

static void op_emit(gen_t *g, op_t *op)
{
    mt_event_t ev;
    uint64_t   dur = op_duration(g, op), op_id = ++g->next_op;
    uint32_t   i, j;
    bool       rc_ok = !op->no_recompute && op->n_rc <= SRC_MAX;

    for (i = 0; i < op->n_outs; i++) {
        out_t  *o  = &op->outs[i];
        tref_t *d  = o->dst;
        bool    rc = o->kind == MEMSVC_KIND_ACTIVATION && rc_ok;

        memset(&ev, 0, sizeof(ev));
        ev.type         = MT_EV_ALLOC;
        ev.tensor       = o->id;
        ev.key          = o->key;
        ev.size         = o->size;
        ev.kind         = o->kind;
        ev.tags         = tags_of(g, o->layer,
                          (o->kind == MEMSVC_KIND_ACTIVATION || o->kind == MEMSVC_KIND_WORKSPACE)
                                      ? op->mb
                                      : MEMSVC_TAG_NONE,
                                  o->expert);
        ev.producer     = op_id;
        ev.recomputable = rc;
        ev.recompute_ns = rc ? dur + op->rc_extra_ns : 0;
        ev.inputs       = rc ? op->rc : NULL;
        ev.num_inputs   = rc ? op->n_rc : 0;
        ev.durable      = o->kind == MEMSVC_KIND_PARAM || o->kind == MEMSVC_KIND_OPTIM;
        if (d != NULL) {
            d->rc_ns = dur + op->rc_extra_ns;
            d->norc  = !rc;
            d->n_src = 0;
            for (j = 0; j < op->n_rc && j < SRC_MAX; j++) {
                d->src[d->n_src++] = op->rc[j];
            }
        }
        op->writes[op->n_writes++] = o->id;
        emit(g, &ev);
    }
    memset(&ev, 0, sizeof(ev));
    ev.type        = MT_EV_COMPUTE;
    ev.op          = op_id;
    ev.name        = op->name;
    ev.duration_ns = dur;
    ev.stream      = op->stream;
    ev.reads       = op->reads;
    ev.num_reads   = op->n_reads;
    ev.writes      = op->writes;
    ev.num_writes  = op->n_writes;
    emit(g, &ev);
    if (op->stream == 0) {
        g->clock_ns += dur;
    }
    for (i = 0; i < op->n_frees; i++) {
        free_id(g, op->frees[i]);
    }
}

/* ---- parameters ---------------------------------------------------------------------- */

static int32_t pg_add(gen_t *g, int32_t layer, int32_t expert, uint64_t n, uint32_t dp_shard,
                      const char *fmt, ...)
{
    pgroup_t *pg;
    va_list   ap;

    if (g->n_pg == g->cap_pg) {
        uint32_t  cap = g->cap_pg ? 2 * g->cap_pg : 256;
        pgroup_t *np  = realloc(g->pg, cap * sizeof(*np));

        if (np == NULL) {
            g->status = MEMSVC_ERR_NO_RESOURCE;
            return -1;
        }
        g->pg     = np;
        g->cap_pg = cap;
    }
    pg = &g->pg[g->n_pg];
    memset(pg, 0, sizeof(*pg));
    va_start(ap, fmt);
    vsnprintf(pg->name, sizeof(pg->name), fmt, ap);
    va_end(ap);
    pg->layer    = layer;
    pg->expert   = expert;
    pg->stage    = (int32_t)g->cur_v;
    pg->n        = n > 0 ? n : 1;
    pg->dp_shard = dp_shard;
    return (int32_t)g->n_pg++;
}

static uint64_t norm_n(const mt_model_t *m)
{
    return m->bias ? 2ull * m->hidden : m->hidden;
}

/* Parameter groups of one layer (sizes on this rank: TP-sharded where Megatron shards). */
static void layer_params(gen_t *g, uint32_t li)
{
    const mt_model_t *m  = g->m;
    uint32_t          L  = g->layer_of[li];
    int32_t          *lp = &g->lpg[li * PG_N];
    uint64_t          h = m->hidden, a = m->heads, tp = g->tp;
    uint32_t          dpd = g->dp * g->cp, dpe = dpd / g->ep, e;
    int32_t           E = MEMSVC_TAG_NONE;

    for (e = 0; e < PG_N; e++) {
        lp[e] = -1;
    }
    lp[PG_LN1] = pg_add(g, (int32_t)L, E, norm_n(m), dpd, "L%u|.ln1", L);
    if (m->attn == MT_ATTN_MLA) {
        uint64_t qk  = m->qk_nope_head_dim + m->qk_rope_head_dim;
        uint64_t qin = m->q_lora_rank ? m->q_lora_rank : h;

        /* down-projections and latent norms are replicated over TP */
        lp[PG_QKV] = pg_add(g, (int32_t)L, E,
                            h * (m->q_lora_rank + m->kv_lora_rank + m->qk_rope_head_dim) +
                                m->q_lora_rank + m->kv_lora_rank,
                            dpd, "L%u|.attn.down", L);
        lp[PG_UP]  = pg_add(
             g, (int32_t)L, E,
             (qin * a * qk + (uint64_t)m->kv_lora_rank * a * (m->qk_nope_head_dim + m->v_head_dim)) /
                 tp,
             dpd, "L%u|.attn.up", L);
        lp[PG_PROJ] =
            pg_add(g, (int32_t)L, E, a * m->v_head_dim * h / tp, dpd, "L%u|.attn.proj", L);
    } else {
        uint64_t q = a * m->head_dim, kv = (uint64_t)m->kv_heads * m->head_dim;

        lp[PG_QKV] = pg_add(g, (int32_t)L, E, (h * (q + 2 * kv) + (m->bias ? q + 2 * kv : 0)) / tp,
                            dpd, "L%u|.attn.qkv", L);
        lp[PG_PROJ] =
            pg_add(g, (int32_t)L, E, q * h / tp + (m->bias ? h : 0), dpd, "L%u|.attn.proj", L);
    }
    lp[PG_LN2] = pg_add(g, (int32_t)L, E, norm_n(m), dpd, "L%u|.ln2", L);
    if (!mt_model_layer_is_moe(m, L)) {
        uint64_t w1 = (m->mlp == MT_MLP_SWIGLU) ? 2ull * m->ffn : m->ffn;

        lp[PG_FC1] =
            pg_add(g, (int32_t)L, E, (h * w1 + (m->bias ? w1 : 0)) / tp, dpd, "L%u|.mlp.fc1", L);
        lp[PG_FC2] = pg_add(g, (int32_t)L, E, (uint64_t)m->ffn * h / tp + (m->bias ? h : 0), dpd,
                            "L%u|.mlp.fc2", L);
        g->epg[li] = -1;
        return;
    }
    lp[PG_ROUTER] = pg_add(g, (int32_t)L, E, (uint64_t)m->experts * h, dpd, "L%u|.moe.router", L);
    if (m->shared_experts > 0) {
        uint64_t sf = (uint64_t)m->shared_experts * m->shared_expert_ffn;

        lp[PG_SFC1] = pg_add(g, (int32_t)L, E, h * sf * (m->mlp == MT_MLP_SWIGLU ? 2 : 1) / tp, dpd,
                             "L%u|.shared.fc1", L);
        lp[PG_SFC2] = pg_add(g, (int32_t)L, E, sf * h / tp, dpd, "L%u|.shared.fc2", L);
    }
    g->epg[li] = (int32_t)g->n_pg;
    for (e = 0; e < g->e_loc; e++) {
        uint64_t ef = m->expert_ffn;
        int32_t  ge = (int32_t)(g->e0 + e);

        pg_add(g, (int32_t)L, ge, h * ef * (m->mlp == MT_MLP_SWIGLU ? 2 : 1) / g->etp, dpe,
               "L%u.e%d|.fc1", L, ge);
        pg_add(g, (int32_t)L, ge, ef * h / g->etp, dpe, "L%u.e%d|.fc2", L, ge);
    }
}

static pgroup_t *P(gen_t *g, uint32_t li, int which)
{
    return &g->pg[g->lpg[li * PG_N + which]];
}

static pgroup_t *PE(gen_t *g, uint32_t li, uint32_t e, int fc2)
{
    return &g->pg[g->epg[li] + 2 * (int32_t)e + fc2];
}

/* Allocate parameters and optimizer state (durable) at the start of the first step, each
 * followed by a write access (loaded from the checkpoint). */
static void alloc_durable(gen_t *g, pgroup_t *pg, tref_t *t, memsvc_kind_t kind, uint64_t size,
                          const char *what)
{
    const char *bar = strchr(pg->name, '|');
    char        key[MEMSVC_KEY_MAX + 1];
    mt_event_t  ev;

    snprintf(key, sizeof(key), "%.*s.%s%s", (int)(bar - pg->name), pg->name, what, bar + 1);
    memset(t, 0, sizeof(*t));
    t->id   = ++g->next_id;
    t->size    = size;
    t->durable = true;
    memset(&ev, 0, sizeof(ev));
    ev.type    = MT_EV_ALLOC;
    ev.tensor  = t->id;
    ev.key     = key;
    ev.size    = size;
    ev.kind    = kind;
    ev.tags    = tags_of(g, pg->layer, MEMSVC_TAG_NONE, pg->expert);
    ev.durable = true;
    emit(g, &ev);
    memset(&ev, 0, sizeof(ev));
    ev.type   = MT_EV_ACCESS;
    ev.tensor = t->id;
    ev.write  = true;
    emit(g, &ev);
}

static void alloc_params(gen_t *g)
{
    uint32_t i;

    for (i = 0; i < g->n_pg && g->status == MEMSVC_OK; i++) {
        pgroup_t *pg = &g->pg[i];

        g->cur_v = (uint32_t)pg->stage;
        alloc_durable(g, pg, &pg->param, MEMSVC_KIND_PARAM, pg->n * 2, "param");
        alloc_durable(g, pg, &pg->optim, MEMSVC_KIND_OPTIM,
                      (pg->n * 12 + pg->dp_shard - 1) / pg->dp_shard, "optim");
    }
}

static void free_params(gen_t *g)
{
    uint32_t i;

    for (i = 0; i < g->n_pg; i++) {
        free_id(g, g->pg[i].param.id);
        free_id(g, g->pg[i].optim.id);
    }
}

/* Optimizer step: per group, DP reduce-scatter of the fp32 gradient, Adam on the shard,
 * all-gather of the bf16 parameters (collectives folded into the operator's time). */
static void optimizer(gen_t *g)
{
    uint32_t i;

    hint(g, MEMSVC_HINT_PHASE, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_OPTIMIZER);
    for (i = 0; i < g->n_pg && g->status == MEMSVC_OK; i++) {
        pgroup_t   *pg    = &g->pg[i];
        const char *bar   = strchr(pg->name, '|');
        double      shard = (double)pg->n / pg->dp_shard;
        double      frac  = (double)(pg->dp_shard - 1) / pg->dp_shard;
        op_t        op;

        g->cur_v = (uint32_t)pg->stage;
        op_begin(&op, MEMSVC_TAG_NONE, 0, "optim.%.*s%s", (int)(bar - pg->name), pg->name, bar + 1);
        op_in(&op, &pg->grad);
        op_in(&op, &pg->param);
        op_in(&op, &pg->optim);
        op_upd(&op, &pg->param);
        op_upd(&op, &pg->optim);
        op.bytes = (uint64_t)(shard * (4 + 2 + 2 * 12)); /* grad, param, state read+write */
        op.flops = 12 * shard;
        op.comm_ns =
            link_ns(&g->node->nic, pg->n * 4 * frac) + link_ns(&g->node->nic, pg->n * 2 * frac);
        op.no_recompute = true;
        op_free(&op, &pg->grad);
        op_emit(g, &op);
        memset(&pg->grad, 0, sizeof(pg->grad));
    }
}

/* ---- router -------------------------------------------------------------------------- */

/* Router probabilities of local layer li: Zipf(skew) over a per-layer seeded permutation. */
static void router_weights(gen_t *g, uint32_t li)
{
    uint32_t E = g->m->experts, e, *perm;
    double  *w = &g->weights[(size_t)li * E], sum = 0;
    rng_t    r = {mix64(g->p->seed * 0x632be59bd9b4e019ull + g->layer_of[li] + 1)};

    perm = malloc(E * sizeof(*perm));
    if (perm == NULL) {
        g->status = MEMSVC_ERR_NO_RESOURCE;
        return;
    }
    for (e = 0; e < E; e++) {
        perm[e] = e;
    }
    for (e = E - 1; e > 0; e--) {
        uint32_t j = (uint32_t)(rng_next(&r) % (e + 1)), t = perm[e];

        perm[e] = perm[j];
        perm[j] = t;
    }
    for (e = 0; e < E; e++) {
        w[e] = pow(perm[e] + 1.0, -g->p->skew);
        sum += w[e];
    }
    for (e = 0; e < E; e++) {
        w[e] /= sum;
    }
    free(perm);
}

/* Tokens per local expert for (step, micro-batch, layer): the ep*T*top_k routing choices of
 * the EP group drawn as a multinomial (sequential binomials) over the router probabilities,
 * each count capped at the group's tokens (a token picks an expert once). */
static void route(gen_t *g, uint32_t li, uint32_t mb, lstate_t *st)
{
    const double *w    = &g->weights[(size_t)li * g->m->experts];
    uint64_t      toks = (uint64_t)g->ep * g->T, n = toks * g->m->top_k;
    double        rest = 1;
    uint32_t      e;
    rng_t         r;

    r.s      = mix64(g->p->seed ^
                     mix64(((uint64_t)g->step << 40) ^ ((uint64_t)mb << 20) ^ g->layer_of[li]));
    st->rows = 0;
    for (e = 0; e < g->e0 + g->e_loc; e++) {
        uint64_t c = (rest > 0) ? binomial(&r, n, fmin(1.0, w[e] / rest)) : 0;

        n -= c;
        rest -= w[e];
        if (e >= g->e0) {
            c                     = (c > toks) ? toks : c;
            st->ecount[e - g->e0] = (uint32_t)c;
            st->rows += c;
        }
    }
}

/* ---- one layer ----------------------------------------------------------------------- */

#define ACT MEMSVC_KIND_ACTIVATION
#define WS MEMSVC_KIND_WORKSPACE
#define NOEXP MEMSVC_TAG_NONE

static lstate_t *LS(gen_t *g, uint32_t li, uint32_t mb)
{
    return &g->ls[(size_t)li * g->p->layout.microbatches + mb];
}

/* Widths of the attention core on this rank. */
static void attn_dims(gen_t *g, uint64_t *a_t, uint64_t *qk, uint64_t *vd)
{
    const mt_model_t *m = g->m;

    *a_t = m->heads / g->tp;
    if (m->attn == MT_ATTN_MLA) {
        *qk = m->qk_nope_head_dim + m->qk_rope_head_dim;
        *vd = m->v_head_dim;
    } else {
        *qk = *vd = m->head_dim;
    }
}

static void attn_core_fwd(gen_t *g, uint32_t L, uint32_t mb, lstate_t *st)
{
    const mt_model_t *m = g->m;
    uint64_t          a_t, qk, vd, sq = g->seq / g->cp, sk = g->seq, b = g->mbs;
    uint64_t          probs = b * sq * sk, kvb;
    op_t              op;
    bool              mla = (m->attn == MT_ATTN_MLA);

    attn_dims(g, &a_t, &qk, &vd);
    probs *= a_t;
    kvb = mla ? st->kv_up.size : st->qkv.size * 2 / 3;
#define CORE_INPUTS()                                                                              \
    do {                                                                                           \
        if (mla) {                                                                                 \
            op_in(&op, &st->q_up);                                                                 \
            op_in(&op, &st->kv_up);                                                                \
            op_in(&op, &st->down);                                                                 \
        } else {                                                                                   \
            op_in(&op, &st->qkv);                                                                  \
        }                                                                                          \
    } while (0)

    if (m->fused_attention) {
        op_begin(&op, (int32_t)mb, 0, "attn.core");
        CORE_INPUTS();
        op.flops   = 2.0 * probs * (qk + vd);
        op.comm_ns = (g->cp > 1) ? link_ns(&g->node->nic, (double)kvb * (g->cp - 1)) : 0;
        op_out(g, &op, &st->ctx, ACT, 2 * g->T * a_t * vd, (int32_t)L, NOEXP, "L%u.mb%u.attn.ctx",
               L, mb);
        op_out(g, &op, &st->lse, ACT, 4 * b * a_t * sq, (int32_t)L, NOEXP, "L%u.mb%u.attn.lse", L,
               mb);
        op_emit(g, &op);
        return;
    }
    {
        tref_t scores;

        op_begin(&op, (int32_t)mb, 0, "attn.scores");
        CORE_INPUTS();
        op.flops   = 2.0 * probs * qk;
        op.comm_ns = (g->cp > 1) ? link_ns(&g->node->nic, (double)kvb * (g->cp - 1)) : 0;
        op_out(g, &op, &scores, ACT, 2 * probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.scores", L, mb);
        op_emit(g, &op);
        scores.transient = true;

        op_begin(&op, (int32_t)mb, 0, "attn.softmax");
        op_in(&op, &scores);
        op_free(&op, &scores);
        op.flops = 5.0 * probs;
        op_out(g, &op, &st->softmax, ACT, 2 * probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.softmax", L,
               mb);
        op_emit(g, &op);
    }
    if (m->dropout) {
        op_begin(&op, (int32_t)mb, 0, "attn.dropout");
        op_in(&op, &st->softmax);
        op.flops = 3.0 * probs;
        op_out(g, &op, &st->amask, ACT, probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.dropout.mask", L,
               mb);
        op_out(g, &op, &st->aout, ACT, 2 * probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.dropout.out", L,
               mb);
        op_emit(g, &op);
    }
    op_begin(&op, (int32_t)mb, 0, "attn.ctx");
    op_in(&op, m->dropout ? &st->aout : &st->softmax);
    CORE_INPUTS();
    op.flops = 2.0 * probs * vd;
    op_out(g, &op, &st->ctx, ACT, 2 * g->T * a_t * vd, (int32_t)L, NOEXP, "L%u.mb%u.attn.ctx", L,
           mb);
    op_emit(g, &op);
#undef CORE_INPUTS
}

/* Norm, QKV (or MLA down/up), attention core, output projection with residual add. */
static void attn_fwd(gen_t *g, uint32_t li, uint32_t mb)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, a_t, qk, vd;
    op_t              op;

    attn_dims(g, &a_t, &qk, &vd);
    op_begin(&op, (int32_t)mb, 0, "ln1");
    op_in(&op, &st->ln1_in);
    op_in(&op, &P(g, li, PG_LN1)->param);
    op.flops = 4.0 * nsp * h;
    op_out(g, &op, &st->ln1_out, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln1.out", L, mb);
    op_emit(g, &op);

    if (m->attn == MT_ATTN_MLA) {
        uint64_t down_w = (uint64_t)m->q_lora_rank + m->kv_lora_rank + m->qk_rope_head_dim;
        uint64_t qin    = m->q_lora_rank ? m->q_lora_rank : h;

        op_begin(&op, (int32_t)mb, 0, "attn.down");
        op_in(&op, &st->ln1_out);
        op_in(&op, &P(g, li, PG_QKV)->param);
        if (g->tp > 1) {
            op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
        }
        op.flops   = 2.0 * T * h * down_w;
        op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
        op_out(g, &op, &st->down, ACT, 2 * T * down_w, (int32_t)L, NOEXP, "L%u.mb%u.attn.down", L,
               mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "attn.down_norm");
        op_in(&op, &st->down);
        op.flops = 4.0 * T * (down_w - m->qk_rope_head_dim);
        op_out(g, &op, &st->dnorm, ACT, 2 * T * (down_w - m->qk_rope_head_dim), (int32_t)L, NOEXP,
               "L%u.mb%u.attn.down_norm", L, mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "attn.up");
        op_in(&op, &st->dnorm);
        if (m->q_lora_rank == 0) {
            op_in(&op, &st->ln1_out);
        }
        op_in(&op, &P(g, li, PG_UP)->param);
        op.flops =
            2.0 * T * a_t * (qin * qk + (double)m->kv_lora_rank * (m->qk_nope_head_dim + vd));
        op_out(g, &op, &st->q_up, ACT, 2 * T * a_t * qk, (int32_t)L, NOEXP, "L%u.mb%u.attn.q_up", L,
               mb);
        op_out(g, &op, &st->kv_up, ACT, 2 * T * a_t * (m->qk_nope_head_dim + vd), (int32_t)L, NOEXP,
               "L%u.mb%u.attn.kv_up", L, mb);
        op_emit(g, &op);
    } else {
        uint64_t w = (a_t + 2 * (uint64_t)m->kv_heads / g->tp) * m->head_dim;

        op_begin(&op, (int32_t)mb, 0, "attn.qkv");
        op_in(&op, &st->ln1_out);
        op_in(&op, &P(g, li, PG_QKV)->param);
        if (g->tp > 1) {
            op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
        }
        op.flops   = 2.0 * T * h * w;
        op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
        op_out(g, &op, &st->qkv, ACT, 2 * T * w, (int32_t)L, NOEXP, "L%u.mb%u.attn.qkv", L, mb);
        op_emit(g, &op);
    }
    attn_core_fwd(g, L, mb, st);

    /* projection + reduce-scatter + (dropout) + residual add: writes the MLP block's input */
    op_begin(&op, (int32_t)mb, 0, "attn.proj");
    op_in(&op, &st->ctx);
    op_in(&op, &st->ln1_in);
    op_in(&op, &P(g, li, PG_PROJ)->param);
    op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.attn.proj.partial", L, mb);
    op.flops   = 2.0 * T * a_t * vd * h;
    op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
    if (m->dropout) {
        op_out(g, &op, &st->mask1, ACT, nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.attn.residual.mask",
               L, mb);
    }
    op_out(g, &op, &st->ln2_in, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln2.in", L, mb);
    op_emit(g, &op);

    op_begin(&op, (int32_t)mb, 0, "ln2");
    op_in(&op, &st->ln2_in);
    op_in(&op, &P(g, li, PG_LN2)->param);
    op.flops = 4.0 * nsp * h;
    op_out(g, &op, &st->ln2_out, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln2.out", L, mb);
    op_emit(g, &op);
}

/* Where a layer's output goes: the next layer's input, the head's input, or the send buffer. */
static void layer_output(gen_t *g, op_t *op, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    uint32_t L  = g->layer_of[li];
    uint64_t sz = 2 * g->nsp * g->m->hidden;

    if (!last_in_chunk) {
        op_out(g, op, &LS(g, li + 1, mb)->ln1_in, ACT, sz, (int32_t)L + 1, NOEXP, "L%u.mb%u.ln1.in",
               L + 1, mb);
    } else if (g->cur_v == g->pp * g->vpp - 1) {
        op_out(g, op, &LS(g, li, mb)->x_out, ACT, sz, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.norm.in",
               mb);
    } else {
        op_out(g, op, &LS(g, li, mb)->x_out, ACT, sz, (int32_t)L, NOEXP, "L%u.mb%u.out", L, mb);
    }
}

/* The first two operators of a feed-forward block of width f (fc1 output w1 wide): fc1 from
 * ln2's output, then the activation function; "mlp" (dense) or "shared" (shared experts). */
static void ffn_fwd_in(gen_t *g, uint32_t li, uint32_t mb, uint64_t f, uint64_t w1, int pg_fc1,
                       const char *name, tref_t *fc1, tref_t *act)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, T = g->T;
    op_t      op;
    char      opname[32];

    snprintf(opname, sizeof(opname), "%s.fc1", name);
    op_begin(&op, (int32_t)mb, 0, opname);
    op_in(&op, &st->ln2_out);
    op_in(&op, &P(g, li, pg_fc1)->param);
    if (g->tp > 1) {
        op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln2.gathered", L, mb);
    }
    op.flops   = 2.0 * T * h * w1;
    op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
    op_out(g, &op, fc1, ACT, 2 * T * w1, (int32_t)L, NOEXP, "L%u.mb%u.%s.fc1", L, mb, name);
    op_emit(g, &op);

    snprintf(opname, sizeof(opname), "%s.act", name);
    op_begin(&op, (int32_t)mb, 0, opname);
    op_in(&op, fc1);
    op.flops = 8.0 * T * f;
    op_out(g, &op, act, ACT, 2 * T * f, (int32_t)L, NOEXP, "L%u.mb%u.%s.act", L, mb, name);
    op_emit(g, &op);
}

static void mlp_dense_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, f = m->ffn / g->tp;
    uint64_t          w1 = (m->mlp == MT_MLP_SWIGLU) ? 2 * f : f;
    op_t              op;

    ffn_fwd_in(g, li, mb, f, w1, PG_FC1, "mlp", &st->fc1, &st->act);

    op_begin(&op, (int32_t)mb, 0, "mlp.fc2");
    op_in(&op, &st->act);
    op_in(&op, &st->ln2_in);
    op_in(&op, &P(g, li, PG_FC2)->param);
    op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.mlp.fc2.partial", L, mb);
    op.flops   = 2.0 * T * f * h;
    op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
    if (m->dropout) {
        op_out(g, &op, &st->mask2, ACT, g->nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.mlp.residual.mask",
               L, mb);
    }
    layer_output(g, &op, li, mb, last_in_chunk);
    op_emit(g, &op);
}

static void mlp_moe_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L = g->layer_of[li], e, k = m->top_k;
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, ef = m->expert_ffn / g->etp;
    uint64_t          w1  = (m->mlp == MT_MLP_SWIGLU) ? 2 * ef : ef;
    double            a2a = (double)(g->eps - 1) / g->eps;
    tref_t            perm, cin, sout;
    bool              cin_live = false;
    op_t              op;

    route(g, li, mb, st);

    op_begin(&op, (int32_t)mb, 0, "moe.router");
    op_in(&op, &st->ln2_out);
    op_in(&op, &P(g, li, PG_ROUTER)->param);
    op.flops = 2.0 * nsp * h * m->experts;
    op_out(g, &op, &st->logits, ACT, 4 * nsp * m->experts, (int32_t)L, NOEXP,
           "L%u.mb%u.moe.router.logits", L, mb);
    op_emit(g, &op);

    op_begin(&op, (int32_t)mb, 0, "moe.permute");
    op_in(&op, &st->ln2_out);
    op_in(&op, &st->logits);
    op_out(g, &op, &perm, ACT, 2 * nsp * k * h, (int32_t)L, NOEXP, "L%u.mb%u.moe.permuted", L, mb);
    op_emit(g, &op);
    perm.transient = true;

    /* all-to-all over EP (NIC), then all-gather over TP for the TP-sharded experts */
    op_begin(&op, (int32_t)mb, 1, "moe.a2a.dispatch");
    op_in(&op, &perm);
    op_free(&op, &perm);
    op.comm_ns =
        link_ns(&g->node->nic, 2.0 * nsp * k * h * a2a) + etp_coll_ns(g, 2.0 * st->rows * h);
    op_out(g, &op, &st->dispatch, ACT, 2 * st->rows * h, (int32_t)L, NOEXP, "L%u.mb%u.moe.dispatch",
           L, mb);
    op_emit(g, &op);

    for (e = 0; e < g->e_loc; e++) {
        uint64_t c  = st->ecount[e];
        uint32_t ge = g->e0 + e;

        if (c == 0) {
            continue;
        }
        op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc1", ge);
        op_in_slice(&op, &st->dispatch, 2 * c * h);
        op_in(&op, &PE(g, li, e, 0)->param);
        op.flops = 2.0 * c * h * w1;
        op_out(g, &op, &st->efc1[e], ACT, 2 * c * w1, (int32_t)L, (int32_t)ge, "L%u.e%u.mb%u.fc1",
               L, ge, mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "moe.e%u.act", ge);
        op_in(&op, &st->efc1[e]);
        op.flops = 8.0 * c * ef;
        op_out(g, &op, &st->eact[e], ACT, 2 * c * ef, (int32_t)L, (int32_t)ge, "L%u.e%u.mb%u.act",
               L, ge, mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc2", ge);
        op_in(&op, &st->eact[e]);
        op_in(&op, &PE(g, li, e, 1)->param);
        op.flops = 2.0 * c * ef * h;
        if (cin_live) {
            op_upd_slice(&op, &cin, 2 * c * h);
        } else {
            op_out(g, &op, &cin, WS, 2 * st->rows * h, (int32_t)L, NOEXP, "L%u.mb%u.moe.combine_in",
                   L, mb);
            op.bytes -= cin.size - 2 * c * h;
            cin_live = true;
        }
        op_emit(g, &op);
    }

    op_begin(&op, (int32_t)mb, 1, "moe.a2a.combine");
    if (cin_live) {
        op_in(&op, &cin);
        op_free(&op, &cin);
    }
    op.no_recompute = true; /* needs every local expert's output */
    op.comm_ns =
        etp_coll_ns(g, 2.0 * st->rows * h) + link_ns(&g->node->nic, 2.0 * nsp * k * h * a2a);
    op_out(g, &op, &st->combined, ACT, 2 * nsp * k * h, (int32_t)L, NOEXP, "L%u.mb%u.moe.combined",
           L, mb);
    op_emit(g, &op);

    memset(&sout, 0, sizeof(sout));
    if (m->shared_experts > 0) {
        uint64_t sf = (uint64_t)m->shared_experts * m->shared_expert_ffn / g->tp;
        uint64_t sw = (m->mlp == MT_MLP_SWIGLU) ? 2 * sf : sf;

        ffn_fwd_in(g, li, mb, sf, sw, PG_SFC1, "shared", &st->sfc1, &st->sact);

        op_begin(&op, (int32_t)mb, 0, "shared.fc2");
        op_in(&op, &st->sact);
        op_in(&op, &P(g, li, PG_SFC2)->param);
        op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.shared.fc2.partial", L, mb);
        op.flops   = 2.0 * T * sf * h;
        op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
        op_out(g, &op, &sout, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.shared.out", L, mb);
        op_emit(g, &op);
        sout.transient = true;
    }

    /* unpermute (weighted by router probabilities) + shared output + residual add */
    op_begin(&op, (int32_t)mb, 0, "moe.unpermute");
    op_in(&op, &st->combined);
    op_in(&op, &st->logits);
    op_in(&op, &st->ln2_in);
    op_in(&op, &sout);
    op_free(&op, &sout);
    op.flops = 2.0 * nsp * k * h;
    layer_output(g, &op, li, mb, last_in_chunk);
    op_emit(g, &op);
}

/* Gradient buffer of an activation: allocated by the backward op that produces it. */
static void dout(gen_t *g, op_t *op, tref_t *dst, uint64_t size, uint32_t L, uint32_t mb,
                 const char *what)
{
    op_out(g, op, dst, WS, size, (int32_t)L, NOEXP, "L%u.mb%u.d.%s", L, mb, what);
}

/*
 * Backward of a feed-forward block (fc2, its activation function, fc1) of width f (fc1 output
 * w1 wide): the dense MLP (prefix "mlp", with its dropout mask, and ending its ln2_out) or the
 * shared experts ("shared": no mask; ln2_out is still needed by the routed experts). Emits the
 * gradient of ln2's output into *dln2.
 */
static void ffn_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, tref_t *act, tref_t *mask,
                    tref_t *fc1, uint64_t f, uint64_t w1, int pg_fc1, int pg_fc2,
                    const char *name, bool last_ln2_use, tref_t *dln2)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, T = g->T, nsp = g->nsp;
    tref_t    dact, dfc1;
    op_t      op;
    char      opname[32], key[32];

    snprintf(opname, sizeof(opname), "%s.fc2.bwd", name);
    op_begin(&op, (int32_t)mb, 0, opname);
    op_in(&op, dres);
    op_in(&op, act);
    if (mask != NULL) {
        op_in(&op, mask);
    }
    op_in(&op, &P(g, li, pg_fc2)->param);
    op_grad(g, &op, P(g, li, pg_fc2));
    if (g->tp > 1) {
        op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.d.gathered", L, mb);
    }
    op.flops   = 4.0 * T * f * h;
    op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
    op_free(&op, act);
    if (mask != NULL) {
        op_free(&op, mask);
    }
    snprintf(key, sizeof(key), "%s.act", name);
    dout(g, &op, &dact, 2 * T * f, L, mb, key);
    op_emit(g, &op);

    snprintf(opname, sizeof(opname), "%s.act.bwd", name);
    op_begin(&op, (int32_t)mb, 0, opname);
    op_in(&op, &dact);
    op_in(&op, fc1);
    op.flops = 10.0 * T * f;
    op_free(&op, &dact);
    op_free(&op, fc1);
    snprintf(key, sizeof(key), "%s.fc1", name);
    dout(g, &op, &dfc1, 2 * T * w1, L, mb, key);
    op_emit(g, &op);

    snprintf(opname, sizeof(opname), "%s.fc1.bwd", name);
    op_begin(&op, (int32_t)mb, 0, opname);
    op_in(&op, &dfc1);
    op_in(&op, &st->ln2_out);
    op_in(&op, &P(g, li, pg_fc1)->param);
    op_grad(g, &op, P(g, li, pg_fc1));
    if (g->tp > 1) {
        op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln2.gathered", L, mb);
    }
    op.flops   = 4.0 * T * h * w1;
    op.comm_ns = 2 * tp_coll_ns(g, 2.0 * T * h);
    op_free(&op, &dfc1);
    if (last_ln2_use) {
        op_free(&op, &st->ln2_out);
    }
    dout(g, &op, dln2, 2 * nsp * h, L, mb, "ln2.out");
    op_emit(g, &op);
}

/* Backward of the second norm: its input's gradient, from its output's and the residual's. */
static tref_t ln2_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dln2, tref_t dres)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, nsp = g->nsp;
    tref_t    dmid;
    op_t      op;

    op_begin(&op, (int32_t)mb, 0, "ln2.bwd");
    op_in(&op, &dln2);
    op_in(&op, &st->ln2_in);
    op_in(&op, &dres);
    op_in(&op, &P(g, li, PG_LN2)->param);
    op_grad(g, &op, P(g, li, PG_LN2));
    op.flops = 8.0 * nsp * h;
    op_free(&op, &dln2);
    op_free(&op, &st->ln2_in);
    op_free(&op, &dres);
    dout(g, &op, &dmid, 2 * nsp * h, L, mb, "ln2.in");
    op_emit(g, &op);
    return dmid;
}

/* Backward of the MLP block: consumes dres (gradient of the layer output), returns the
 * gradient of the block input (ln2.in). */
static tref_t mlp_dense_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dres)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint64_t          f  = m->ffn / g->tp;
    uint64_t          w1 = (m->mlp == MT_MLP_SWIGLU) ? 2 * f : f;
    tref_t            dln2;

    ffn_bwd(g, li, mb, &dres, &st->act, &st->mask2, &st->fc1, f, w1, PG_FC1, PG_FC2, "mlp", true,
            &dln2);
    return ln2_bwd(g, li, mb, dln2, dres);
}

static tref_t mlp_moe_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dres)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L = g->layer_of[li], k = m->top_k, e;
    uint64_t          h = m->hidden, nsp = g->nsp, ef = m->expert_ffn / g->etp;
    uint64_t          w1  = (m->mlp == MT_MLP_SWIGLU) ? 2 * ef : ef;
    double            a2a = (double)(g->eps - 1) / g->eps;
    tref_t            dcomb, dcin, ddisp, dperm, dln2;
    bool              ddisp_live = false, dln2_live = false;
    op_t              op;

    memset(&ddisp, 0, sizeof(ddisp));
    op_begin(&op, (int32_t)mb, 0, "moe.unpermute.bwd");
    op_in(&op, &dres);
    op_in(&op, &st->combined);
    op_in(&op, &st->logits);
    op.flops = 4.0 * nsp * k * h;
    op_free(&op, &st->combined);
    dout(g, &op, &dcomb, 2 * nsp * k * h, L, mb, "moe.combined");
    op_emit(g, &op);

    if (m->shared_experts > 0) {
        uint64_t sf = (uint64_t)m->shared_experts * m->shared_expert_ffn / g->tp;
        uint64_t sw = (m->mlp == MT_MLP_SWIGLU) ? 2 * sf : sf;
        ffn_bwd(g, li, mb, &dres, &st->sact, NULL, &st->sfc1, sf, sw, PG_SFC1, PG_SFC2, "shared",
                false, &dln2);
        dln2_live = true;
    }

    op_begin(&op, (int32_t)mb, 1, "moe.a2a.combine.bwd");
    op_in(&op, &dcomb);
    op_free(&op, &dcomb);
    op.comm_ns =
        link_ns(&g->node->nic, 2.0 * nsp * k * h * a2a) + etp_coll_ns(g, 2.0 * st->rows * h);
    dout(g, &op, &dcin, 2 * st->rows * h, L, mb, "moe.combine_in");
    op_emit(g, &op);

    for (e = g->e_loc; e-- > 0;) {
        uint64_t c  = st->ecount[e];
        uint32_t ge = g->e0 + e;
        tref_t   deact, defc1;

        if (c == 0) {
            continue;
        }
        op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc2.bwd", ge);
        op_in_slice(&op, &dcin, 2 * c * h);
        op_in(&op, &st->eact[e]);
        op_in(&op, &PE(g, li, e, 1)->param);
        op_grad(g, &op, PE(g, li, e, 1));
        op.flops = 4.0 * c * ef * h;
        op_free(&op, &st->eact[e]);
        op_out(g, &op, &deact, WS, 2 * c * ef, (int32_t)L, (int32_t)ge, "L%u.e%u.mb%u.d.act", L, ge,
               mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "moe.e%u.act.bwd", ge);
        op_in(&op, &deact);
        op_in(&op, &st->efc1[e]);
        op.flops = 10.0 * c * ef;
        op_free(&op, &deact);
        op_free(&op, &st->efc1[e]);
        op_out(g, &op, &defc1, WS, 2 * c * w1, (int32_t)L, (int32_t)ge, "L%u.e%u.mb%u.d.fc1", L, ge,
               mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc1.bwd", ge);
        op_in(&op, &defc1);
        op_in_slice(&op, &st->dispatch, 2 * c * h);
        op_in(&op, &PE(g, li, e, 0)->param);
        op_grad(g, &op, PE(g, li, e, 0));
        op.flops = 4.0 * c * h * w1;
        op_free(&op, &defc1);
        if (ddisp_live) {
            op_upd_slice(&op, &ddisp, 2 * c * h);
        } else {
            dout(g, &op, &ddisp, 2 * st->rows * h, L, mb, "moe.dispatch");
            op.bytes -= ddisp.size - 2 * c * h;
            ddisp_live = true;
        }
        op_emit(g, &op);
    }

    op_begin(&op, (int32_t)mb, 1, "moe.a2a.dispatch.bwd");
    op_in(&op, &ddisp);
    op_free(&op, &ddisp);
    op_free(&op, &dcin);
    op_free(&op, &st->dispatch);
    op.comm_ns =
        etp_coll_ns(g, 2.0 * st->rows * h) + link_ns(&g->node->nic, 2.0 * nsp * k * h * a2a);
    dout(g, &op, &dperm, 2 * nsp * k * h, L, mb, "moe.permuted");
    op_emit(g, &op);

    op_begin(&op, (int32_t)mb, 0, "moe.permute.bwd");
    op_in(&op, &dperm);
    op.flops = 2.0 * nsp * k * h;
    op_free(&op, &dperm);
    if (dln2_live) {
        op_upd(&op, &dln2);
    } else {
        dout(g, &op, &dln2, 2 * nsp * h, L, mb, "ln2.out");
    }
    op_emit(g, &op);

    op_begin(&op, (int32_t)mb, 0, "moe.router.bwd");
    op_in(&op, &st->logits);
    op_in(&op, &st->ln2_out);
    op_in(&op, &P(g, li, PG_ROUTER)->param);
    op_grad(g, &op, P(g, li, PG_ROUTER));
    op_upd(&op, &dln2);
    op.flops = 4.0 * nsp * h * m->experts;
    op_free(&op, &st->logits);
    op_free(&op, &st->ln2_out);
    op_emit(g, &op);

    return ln2_bwd(g, li, mb, dln2, dres);
}

static tref_t attn_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dmid)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, a_t, qk, vd;
    uint64_t          probs = (uint64_t)g->mbs * (g->seq / g->cp) * g->seq;
    bool              mla   = (m->attn == MT_ATTN_MLA);
    tref_t            dctx, dq, dkv, dln1, dx;
    op_t              op;

    attn_dims(g, &a_t, &qk, &vd);
    probs *= a_t;
    memset(&dkv, 0, sizeof(dkv));

    op_begin(&op, (int32_t)mb, 0, "attn.proj.bwd");
    op_in(&op, &dmid);
    op_in(&op, &st->ctx);
    op_in(&op, &st->mask1);
    op_in(&op, &P(g, li, PG_PROJ)->param);
    op_grad(g, &op, P(g, li, PG_PROJ));
    if (g->tp > 1) {
        op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.d.gathered", L, mb);
    }
    op.flops   = 4.0 * T * a_t * vd * h;
    op.comm_ns = tp_coll_ns(g, 2.0 * T * h);
    op_free(&op, &st->mask1);
    if (!m->fused_attention) {
        op_free(&op, &st->ctx);
    }
    dout(g, &op, &dctx, 2 * T * a_t * vd, L, mb, "attn.ctx");
    op_emit(g, &op);

#define CORE_READS()                                                                               \
    do {                                                                                           \
        if (mla) {                                                                                 \
            op_in(&op, &st->q_up);                                                                 \
            op_in(&op, &st->kv_up);                                                                \
            op_in(&op, &st->down);                                                                 \
        } else {                                                                                   \
            op_in(&op, &st->qkv);                                                                  \
        }                                                                                          \
    } while (0)
#define CORE_DOUT()                                                                                \
    do {                                                                                           \
        if (mla) {                                                                                 \
            dout(g, &op, &dq, st->q_up.size, L, mb, "attn.q_up");                                  \
            dout(g, &op, &dkv, st->kv_up.size, L, mb, "attn.kv_up");                               \
        } else {                                                                                   \
            dout(g, &op, &dq, st->qkv.size, L, mb, "attn.qkv");                                    \
        }                                                                                          \
    } while (0)

    if (m->fused_attention) {
        op_begin(&op, (int32_t)mb, 0, "attn.core.bwd");
        op_in(&op, &dctx);
        CORE_READS();
        op_in(&op, &st->ctx);
        op_in(&op, &st->lse);
        op.flops = 5.0 * probs * (qk + vd);
        op_free(&op, &dctx);
        op_free(&op, &st->ctx);
        op_free(&op, &st->lse);
        CORE_DOUT();
        op_emit(g, &op);
    } else {
        tref_t dprobs, dsoft, dscores;

        op_begin(&op, (int32_t)mb, 0, "attn.ctx.bwd");
        op_in(&op, &dctx);
        op_in(&op, m->dropout ? &st->aout : &st->softmax);
        CORE_READS();
        op.flops = 4.0 * probs * vd;
        op_free(&op, &dctx);
        op_free(&op, &st->aout);
        dout(g, &op, &dprobs, 2 * probs, L, mb, "attn.probs");
        op_emit(g, &op);
        if (m->dropout) {
            op_begin(&op, (int32_t)mb, 0, "attn.dropout.bwd");
            op_in(&op, &dprobs);
            op_in(&op, &st->amask);
            op.flops = 2.0 * probs;
            op_free(&op, &dprobs);
            op_free(&op, &st->amask);
            dout(g, &op, &dsoft, 2 * probs, L, mb, "attn.softmax");
            op_emit(g, &op);
        } else {
            dsoft = dprobs;
        }
        op_begin(&op, (int32_t)mb, 0, "attn.softmax.bwd");
        op_in(&op, &dsoft);
        op_in(&op, &st->softmax);
        op.flops = 5.0 * probs;
        op_free(&op, &dsoft);
        op_free(&op, &st->softmax);
        dout(g, &op, &dscores, 2 * probs, L, mb, "attn.scores");
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "attn.scores.bwd");
        op_in(&op, &dscores);
        CORE_READS();
        op.flops = 4.0 * probs * qk;
        op_free(&op, &dscores);
        CORE_DOUT();
        op_emit(g, &op);
    }
#undef CORE_READS
#undef CORE_DOUT

    if (mla) {
        uint64_t down_w = (uint64_t)m->q_lora_rank + m->kv_lora_rank + m->qk_rope_head_dim;
        tref_t   ddn, ddown;

        op_begin(&op, (int32_t)mb, 0, "attn.up.bwd");
        op_in(&op, &dq);
        op_in(&op, &dkv);
        op_in(&op, &st->dnorm);
        op_in(&op, &P(g, li, PG_UP)->param);
        op_grad(g, &op, P(g, li, PG_UP));
        op.flops = 4.0 * T * a_t *
                   ((m->q_lora_rank ? m->q_lora_rank : h) * qk +
                    (double)m->kv_lora_rank * (m->qk_nope_head_dim + vd));
        op_free(&op, &dq);
        op_free(&op, &dkv);
        op_free(&op, &st->q_up);
        op_free(&op, &st->kv_up);
        op_free(&op, &st->dnorm);
        dout(g, &op, &ddn, st->dnorm.size, L, mb, "attn.down_norm");
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "attn.down_norm.bwd");
        op_in(&op, &ddn);
        op_in(&op, &st->down);
        op.flops = 8.0 * T * down_w;
        op_free(&op, &ddn);
        dout(g, &op, &ddown, st->down.size, L, mb, "attn.down");
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "attn.down.bwd");
        op_in(&op, &ddown);
        op_in(&op, &st->ln1_out);
        op_in(&op, &P(g, li, PG_QKV)->param);
        op_grad(g, &op, P(g, li, PG_QKV));
        if (g->tp > 1) {
            op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
        }
        op.flops   = 4.0 * T * h * down_w;
        op.comm_ns = 2 * tp_coll_ns(g, 2.0 * T * h);
        op_free(&op, &ddown);
        op_free(&op, &st->down);
        op_free(&op, &st->ln1_out);
        dout(g, &op, &dln1, 2 * nsp * h, L, mb, "ln1.out");
        op_emit(g, &op);
    } else {
        op_begin(&op, (int32_t)mb, 0, "attn.qkv.bwd");
        op_in(&op, &dq);
        op_in(&op, &st->ln1_out);
        op_in(&op, &P(g, li, PG_QKV)->param);
        op_grad(g, &op, P(g, li, PG_QKV));
        if (g->tp > 1) {
            op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
        }
        op.flops   = 4.0 * T * h * (dq.size / 2 / T);
        op.comm_ns = 2 * tp_coll_ns(g, 2.0 * T * h);
        op_free(&op, &dq);
        op_free(&op, &st->qkv);
        op_free(&op, &st->ln1_out);
        dout(g, &op, &dln1, 2 * nsp * h, L, mb, "ln1.out");
        op_emit(g, &op);
    }

    op_begin(&op, (int32_t)mb, 0, "ln1.bwd");
    op_in(&op, &dln1);
    op_in(&op, &st->ln1_in);
    op_in(&op, &dmid);
    op_in(&op, &P(g, li, PG_LN1)->param);
    op_grad(g, &op, P(g, li, PG_LN1));
    op.flops = 8.0 * nsp * h;
    op_free(&op, &dln1);
    op_free(&op, &st->ln1_in);
    op_free(&op, &dmid);
    dout(g, &op, &dx, 2 * nsp * h, L, mb, "ln1.in");
    op_emit(g, &op);
    return dx;
}

/* ---- chunks: embedding, head, pipeline transfers ------------------------------------- */

static void chunk_reset(gen_t *g, uint32_t c, uint32_t mb)
{
    uint32_t i;

    for (i = g->chunk_first[c]; i < g->chunk_first[c] + g->chunk_count[c]; i++) {
        lstate_t *st   = LS(g, i, mb);
        tref_t   *efc1 = st->efc1, *eact = st->eact;
        uint32_t *ecount = st->ecount;

        memset(st, 0, sizeof(*st));
        st->efc1   = efc1;
        st->eact   = eact;
        st->ecount = ecount;
    }
}

static void chunk_fwd(gen_t *g, uint32_t c, uint32_t mb)
{
    const mt_model_t *m = g->m;
    uint32_t          v = c * g->pp + g->stage, first = g->chunk_first[c], i;
    uint32_t          n = g->chunk_count[c], L0 = g->layer_of[first];
    uint64_t          xsize = 2 * g->nsp * m->hidden;
    lstate_t         *st0;
    op_t              op;

    g->cur_v = v;
    chunk_reset(g, c, mb);
    st0 = LS(g, first, mb);
    hint(g, MEMSVC_HINT_PHASE, (int32_t)L0, (int32_t)mb, MEMSVC_PHASE_FORWARD);
    if (v == 0) {
        pgroup_t *pe = &g->pg[g->pg_embed];

        op_begin(&op, (int32_t)mb, 0, "embed");
        op_in(&op, &pe->param);
        op.flops   = 0;
        op.comm_ns = tp_coll_ns(g, 2.0 * g->T * m->hidden); /* vocab-parallel reduce */
        op_out(g, &op, &st0->ln1_in, ACT, xsize, (int32_t)L0, NOEXP, "L%u.mb%u.ln1.in", L0, mb);
        op_emit(g, &op);
    } else {
        op_begin(&op, (int32_t)mb, 1, "pp.recv");
        op.comm_ns      = link_ns(&g->node->nic, (double)xsize);
        op.no_recompute = true;
        op_out(g, &op, &st0->ln1_in, ACT, xsize, (int32_t)L0, NOEXP, "L%u.mb%u.ln1.in", L0, mb);
        op_emit(g, &op);
    }
    for (i = first; i < first + n && g->status == MEMSVC_OK; i++) {
        uint32_t L = g->layer_of[i];

        hint(g, MEMSVC_HINT_LAYER_BEGIN, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_FORWARD);
        attn_fwd(g, i, mb);
        if (mt_model_layer_is_moe(m, L)) {
            mlp_moe_fwd(g, i, mb, i == first + n - 1);
        } else {
            mlp_dense_fwd(g, i, mb, i == first + n - 1);
        }
        hint(g, MEMSVC_HINT_LAYER_END, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_FORWARD);
    }
    {
        lstate_t *stl = LS(g, first + n - 1, mb);

        if (v == g->pp * g->vpp - 1) {
            head_state_t *hs = &g->hs[mb];
            uint64_t      vt = ((uint64_t)m->vocab + g->tp - 1) / g->tp;
            tref_t        logits;

            op_begin(&op, (int32_t)mb, 0, "head.norm");
            op_in(&op, &stl->x_out);
            op_in(&op, &g->pg[g->pg_head_norm].param);
            op.flops = 4.0 * g->nsp * m->hidden;
            op_out(g, &op, &hs->norm_out, ACT, xsize, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.norm.out",
                   mb);
            op_emit(g, &op);

            op_begin(&op, (int32_t)mb, 0, "head.logits");
            op_in(&op, &hs->norm_out);
            op_in(&op, &g->pg[g->pg_head].param);
            if (g->tp > 1) {
                op_scratch(g, &op, 2 * g->T * m->hidden, MEMSVC_TAG_NONE, "head.mb%u.gathered", mb);
            }
            op.flops   = 2.0 * g->T * m->hidden * vt;
            op.comm_ns = tp_coll_ns(g, 2.0 * g->T * m->hidden);
            op_out(g, &op, &logits, ACT, 2 * g->T * vt, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.logits",
                   mb);
            op_emit(g, &op);
            logits.transient = true;

            op_begin(&op, (int32_t)mb, 0, "head.ce");
            op_in(&op, &logits);
            op_free(&op, &logits);
            op.flops = 5.0 * g->T * vt;
            op_out(g, &op, &hs->ce, ACT, 4 * g->T * vt, MEMSVC_TAG_NONE, NOEXP,
                   "head.mb%u.ce.softmax", mb);
            op_emit(g, &op);
        } else {
            op_begin(&op, (int32_t)mb, 1, "pp.send");
            op_in(&op, &stl->x_out);
            op.comm_ns = link_ns(&g->node->nic, (double)xsize);
            op_free(&op, &stl->x_out);
            op_emit(g, &op);
        }
    }
}

static void chunk_bwd(gen_t *g, uint32_t c, uint32_t mb)
{
    const mt_model_t *m = g->m;
    uint32_t          v = c * g->pp + g->stage, first = g->chunk_first[c], i;
    uint32_t          n = g->chunk_count[c], Llast = g->layer_of[first + n - 1];
    uint64_t          xsize = 2 * g->nsp * m->hidden;
    tref_t            dres;
    op_t              op;

    g->cur_v = v;
    hint(g, MEMSVC_HINT_PHASE, (int32_t)Llast, (int32_t)mb, MEMSVC_PHASE_BACKWARD);
    if (v == g->pp * g->vpp - 1) {
        head_state_t *hs  = &g->hs[mb];
        lstate_t     *stl = LS(g, first + n - 1, mb);
        uint64_t      vt  = ((uint64_t)m->vocab + g->tp - 1) / g->tp;
        tref_t        dlog, dnorm;

        op_begin(&op, (int32_t)mb, 0, "head.ce.bwd");
        op_in(&op, &hs->ce);
        op.flops = 3.0 * g->T * vt;
        op_free(&op, &hs->ce);
        op_out(g, &op, &dlog, WS, 2 * g->T * vt, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.d.logits", mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "head.logits.bwd");
        op_in(&op, &dlog);
        op_in(&op, &hs->norm_out);
        op_in(&op, &g->pg[g->pg_head].param);
        op_grad(g, &op, &g->pg[g->pg_head]);
        if (g->tp > 1) {
            op_scratch(g, &op, 2 * g->T * m->hidden, MEMSVC_TAG_NONE, "head.mb%u.gathered", mb);
        }
        op.flops   = 4.0 * g->T * m->hidden * vt;
        op.comm_ns = 2 * tp_coll_ns(g, 2.0 * g->T * m->hidden);
        op_free(&op, &dlog);
        op_free(&op, &hs->norm_out);
        op_out(g, &op, &dnorm, WS, xsize, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.d.norm.out", mb);
        op_emit(g, &op);

        op_begin(&op, (int32_t)mb, 0, "head.norm.bwd");
        op_in(&op, &dnorm);
        op_in(&op, &stl->x_out);
        op_in(&op, &g->pg[g->pg_head_norm].param);
        op_grad(g, &op, &g->pg[g->pg_head_norm]);
        op.flops = 8.0 * g->nsp * m->hidden;
        op_free(&op, &dnorm);
        op_free(&op, &stl->x_out);
        dout(g, &op, &dres, xsize, Llast, mb, "out");
        op_emit(g, &op);
    } else {
        op_begin(&op, (int32_t)mb, 1, "pp.recv_grad");
        op.comm_ns = link_ns(&g->node->nic, (double)xsize);
        dout(g, &op, &dres, xsize, Llast, mb, "out");
        op_emit(g, &op);
    }
    for (i = first + n; i-- > first && g->status == MEMSVC_OK;) {
        uint32_t L = g->layer_of[i];

        hint(g, MEMSVC_HINT_LAYER_BEGIN, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_BACKWARD);
        if (mt_model_layer_is_moe(m, L)) {
            dres = mlp_moe_bwd(g, i, mb, dres);
        } else {
            dres = mlp_dense_bwd(g, i, mb, dres);
        }
        dres = attn_bwd(g, i, mb, dres);
        hint(g, MEMSVC_HINT_LAYER_END, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_BACKWARD);
    }
    if (v == 0) {
        op_begin(&op, (int32_t)mb, 0, "embed.bwd");
        op_in(&op, &dres);
        op_grad(g, &op, &g->pg[g->pg_embed]);
        op.comm_ns = tp_coll_ns(g, 2.0 * g->T * m->hidden);
        op.bytes   = 4 * dres.size; /* scatter-add into the touched rows only */
        op_free(&op, &dres);
        op_emit(g, &op);
    } else {
        op_begin(&op, (int32_t)mb, 1, "pp.send_grad");
        op_in(&op, &dres);
        op.comm_ns = link_ns(&g->node->nic, (double)xsize);
        op_free(&op, &dres);
        op_emit(g, &op);
    }
}

/* ---- schedule ------------------------------------------------------------------------ */

/* Virtual micro-batch k of the interleaved schedule -> (chunk, micro-batch) (Megatron). */
static void vmb(const gen_t *g, uint32_t k, bool forward, uint32_t *chunk_p, uint32_t *mb_p)
{
    uint32_t group = g->pp * g->vpp, c = (k % group) / g->pp;

    *chunk_p = forward ? c : g->vpp - 1 - c;
    *mb_p    = (k / group) * g->pp + k % g->pp;
    if (g->vpp == 1) {
        *chunk_p = 0;
        *mb_p    = k;
    }
}

static void one_f(gen_t *g, uint32_t k)
{
    uint32_t c, mb;

    vmb(g, k, true, &c, &mb);
    chunk_fwd(g, c, mb);
}

static void one_b(gen_t *g, uint32_t k)
{
    uint32_t c, mb;

    vmb(g, k, false, &c, &mb);
    chunk_bwd(g, c, mb);
}

/* One step of interleaved 1F1B for this rank's stage: warm-up forwards, steady 1F1B,
 * cool-down backwards, then the optimizer. */
static void step(gen_t *g)
{
    uint32_t total = g->p->layout.microbatches * g->vpp, warm, k;

    if (g->vpp == 1) {
        warm = g->pp - g->stage - 1;
    } else {
        warm = (g->pp - g->stage - 1) * 2 + (g->vpp - 1) * g->pp;
    }
    warm = (warm > total) ? total : warm;
    hint(g, MEMSVC_HINT_STEP_BEGIN, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_NONE);
    if (g->step == 0) {
        alloc_params(g);
    }
    for (k = 0; k < warm && g->status == MEMSVC_OK; k++) {
        one_f(g, k);
    }
    for (k = 0; k < total - warm && g->status == MEMSVC_OK; k++) {
        one_f(g, warm + k);
        one_b(g, k);
    }
    for (k = total - warm; k < total && g->status == MEMSVC_OK; k++) {
        one_b(g, k);
    }
    optimizer(g);
    hint(g, MEMSVC_HINT_STEP_END, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_NONE);
}

/* ---- setup --------------------------------------------------------------------------- */

static void gen_fini(gen_t *g)
{
    free(g->layer_of);
    free(g->chunk_first);
    free(g->chunk_count);
    free(g->ls);
    free(g->ebuf);
    free(g->cbuf);
    free(g->hs);
    free(g->weights);
    free(g->pg);
    free(g->lpg);
    free(g->epg);
}

static memsvc_status_t gen_init(gen_t *g, const mt_gen_params_t *p, mt_sink_fn_t sink, void *arg)
{
    const mt_layout_t *l = &p->layout;
    const mt_model_t  *m = p->model;
    uint32_t           c, i, n, first, M = l->microbatches;
    size_t             nls;

    memset(g, 0, sizeof(*g));
    g->p    = p;
    g->m    = m;
    g->node = p->node;
    g->sink = sink;
    g->arg  = arg;
    g->tp = l->tp, g->pp = l->pp, g->vpp = l->vpp, g->ep = l->ep, g->dp = l->dp, g->cp = l->cp;
    g->seq     = l->seq_len ? l->seq_len : m->seq_len;
    g->mbs     = l->micro_batch_size ? l->micro_batch_size : m->micro_batch;
    g->stage   = mt_gen_stage_of_rank(l, p->rank);
    g->T       = (uint64_t)g->seq / g->cp * g->mbs;
    g->nsp     = g->T / g->tp;
    g->ep_rank = ((p->rank / g->tp) % (g->dp * g->cp)) % g->ep;
    g->etp     = p->tp_extend_ep ? 1 : g->tp;
    g->eps     = p->tp_extend_ep ? g->ep * g->tp : g->ep;
    if (p->tp_extend_ep) {
        g->ep_rank = g->ep_rank * g->tp + p->rank % g->tp;
    }
    g->e_loc = m->experts / g->eps;
    g->e0    = g->ep_rank * g->e_loc;

    g->chunk_first = calloc(g->vpp, sizeof(*g->chunk_first));
    g->chunk_count = calloc(g->vpp, sizeof(*g->chunk_count));
    g->layer_of    = calloc(m->layers, sizeof(*g->layer_of));
    if (!g->chunk_first || !g->chunk_count || !g->layer_of) {
        goto err_nomem;
    }
    for (c = 0; c < g->vpp; c++) {
        mt_gen_chunk_layers(m, l, c * g->pp + g->stage, &first, &n);
        g->chunk_first[c] = g->n_local;
        g->chunk_count[c] = n;
        for (i = 0; i < n; i++) {
            g->layer_of[g->n_local++] = first + i;
        }
    }
    nls    = (size_t)g->n_local * M;
    g->ls  = calloc(nls, sizeof(*g->ls));
    g->hs  = calloc(M, sizeof(*g->hs));
    g->lpg = calloc((size_t)g->n_local * PG_N, sizeof(*g->lpg));
    g->epg = calloc(g->n_local, sizeof(*g->epg));
    if (!g->ls || !g->hs || !g->lpg || !g->epg) {
        goto err_nomem;
    }
    if (m->experts > 0) {
        g->ebuf    = calloc(nls * g->e_loc * 2, sizeof(*g->ebuf));
        g->cbuf    = calloc(nls * g->e_loc, sizeof(*g->cbuf));
        g->weights = calloc((size_t)g->n_local * m->experts, sizeof(*g->weights));
        if (!g->ebuf || !g->cbuf || !g->weights) {
            goto err_nomem;
        }
        for (i = 0; i < nls; i++) {
            g->ls[i].efc1   = &g->ebuf[i * g->e_loc * 2];
            g->ls[i].eact   = &g->ebuf[i * g->e_loc * 2 + g->e_loc];
            g->ls[i].ecount = &g->cbuf[i * g->e_loc];
        }
        for (i = 0; i < g->n_local && g->status == MEMSVC_OK; i++) {
            router_weights(g, i);
        }
    }

    /* parameter groups, in forward order per chunk */
    g->pg_embed = g->pg_head = g->pg_head_norm = -1;
    for (c = 0; c < g->vpp; c++) {
        uint32_t v = c * g->pp + g->stage;

        g->cur_v = v;
        if (v == 0) {
            g->pg_embed = pg_add(g, MEMSVC_TAG_NONE, NOEXP,
                                 ((uint64_t)m->vocab + g->tp - 1) / g->tp * m->hidden +
                                     (m->bias ? (uint64_t)g->seq * m->hidden : 0),
                                 g->dp * g->cp, "embed|");
        }
        for (i = g->chunk_first[c]; i < g->chunk_first[c] + g->chunk_count[c]; i++) {
            layer_params(g, i);
        }
        if (v == g->pp * g->vpp - 1) {
            g->pg_head_norm =
                pg_add(g, MEMSVC_TAG_NONE, NOEXP, norm_n(m), g->dp * g->cp, "head|.norm");
            if (m->tied_embeddings && g->pg_embed >= 0) {
                g->pg_head = g->pg_embed;
            } else {
                g->pg_head = pg_add(g, MEMSVC_TAG_NONE, NOEXP,
                                    ((uint64_t)m->vocab + g->tp - 1) / g->tp * m->hidden,
                                    g->dp * g->cp, "head|");
            }
        }
    }
    if (g->status != MEMSVC_OK) {
        goto err_fini;
    }
    return MEMSVC_OK;

err_nomem:
    g->status = MEMSVC_ERR_NO_RESOURCE;
err_fini:
    gen_fini(g);
    return g->status;
}

memsvc_status_t mt_gen_run(const mt_gen_params_t *p, mt_sink_fn_t sink, void *arg, char *err,
                           size_t errlen)
{
    gen_t           g;
    memsvc_status_t status;

    status = mt_gen_validate(p, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = gen_init(&g, p, sink, arg);
    if (status != MEMSVC_OK) {
        set_err(err, errlen, "gen: out of memory");
        return status;
    }
    for (g.step = 0; g.step < (int32_t)p->steps && g.status == MEMSVC_OK; g.step++) {
        step(&g);
    }
    free_params(&g);
    status = g.status;
    if (status != MEMSVC_OK) {
        set_err(err, errlen, "gen: the sink failed: %s", memsvc_strerror(status));
    }
    gen_fini(&g);
    return status;
}

/* ---- memory estimate ----------------------------------------------------------------- */

typedef struct mem_acc {
    mt_gen_memory_t *mem;
    uint64_t        *size; /* by tensor id */
    uint8_t         *kind;
    uint64_t         cap;
    uint64_t         live[MEMSVC_KIND_COUNT], total;
    memsvc_status_t  status;
} mem_acc_t;

static memsvc_status_t mem_sink(void *arg, const mt_event_t *ev)
{
    mem_acc_t       *a   = arg;
    mt_gen_memory_t *mem = a->mem;

    mem->events++;
    if (ev->type == MT_EV_ALLOC) {
        if (ev->tensor >= a->cap) {
            uint64_t  cap = 2 * ev->tensor + 1024;
            uint64_t *ns  = realloc(a->size, cap * sizeof(*ns));
            uint8_t  *nk;

            if (ns == NULL) {
                return MEMSVC_ERR_NO_RESOURCE;
            }
            a->size = ns;
            nk      = realloc(a->kind, cap * sizeof(*nk));
            if (nk == NULL) {
                return MEMSVC_ERR_NO_RESOURCE;
            }
            a->kind = nk;
            a->cap  = cap;
        }
        a->size[ev->tensor] = ev->size;
        a->kind[ev->tensor] = (uint8_t)ev->kind;
        a->live[ev->kind] += ev->size;
        a->total += ev->size;
        mem->params = a->live[MEMSVC_KIND_PARAM];
        mem->optim  = a->live[MEMSVC_KIND_OPTIM];
        if (a->live[MEMSVC_KIND_GRAD] > mem->grads) {
            mem->grads = a->live[MEMSVC_KIND_GRAD];
        }
        if (a->live[MEMSVC_KIND_ACTIVATION] > mem->activation_peak) {
            mem->activation_peak = a->live[MEMSVC_KIND_ACTIVATION];
        }
        if (a->total > mem->peak) {
            mem->peak = a->total;
        }
    } else if (ev->type == MT_EV_FREE && ev->tensor < a->cap) {
        a->live[a->kind[ev->tensor]] -= a->size[ev->tensor];
        a->total -= a->size[ev->tensor];
    } else if (ev->type == MT_EV_COMPUTE) {
        mem->ops++;
        if (ev->stream == 0) {
            mem->compute_ns += ev->duration_ns;
        }
    }
    return MEMSVC_OK;
}

static memsvc_status_t gen_count(const mt_gen_params_t *params, uint32_t steps,
                                 mt_gen_memory_t *mem_p, char *err, size_t errlen)
{
    mt_gen_params_t p = *params;
    mt_gen_memory_t mem;
    mem_acc_t       a;
    memsvc_status_t status;

    memset(&mem, 0, sizeof(mem));
    memset(&a, 0, sizeof(a));
    a.mem   = &mem;
    p.steps = steps;
    status  = mt_gen_run(&p, mem_sink, &a, err, errlen);
    free(a.size);
    free(a.kind);
    if (status == MEMSVC_OK) {
        *mem_p = mem;
    }
    return status;
}

memsvc_status_t mt_gen_memory(const mt_gen_params_t *params, mt_gen_memory_t *mem_p, char *err,
                              size_t errlen)
{
    return gen_count(params, 1, mem_p, err, errlen);
}

memsvc_status_t mt_gen_peak(const mt_gen_params_t *params, uint64_t *peak_p, char *err,
                            size_t errlen)
{
    mt_gen_memory_t mem;
    memsvc_status_t status = gen_count(params, params->steps, &mem, err, errlen);

    if (status == MEMSVC_OK) {
        *peak_p = mem.peak;
    }
    return status;
}
