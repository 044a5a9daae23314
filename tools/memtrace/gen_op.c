/* gen_op.c - the generator's operators: tensors in and out, durations, recompute data, events */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- event emission ------------------------------------------------------------------ */

void gen_emit(gen_t *g, mt_event_t *ev)
{
    if (g->status != MEMSVC_OK) {
        return;
    }
    ev->time_ns = g->clock_ns;
    ev->rank    = g->p->rank;
    g->status   = g->sink(g->arg, ev);
}

void gen_hint(gen_t *g, memsvc_hint_type_t type, int32_t layer, int32_t mb, memsvc_phase_t ph)
{
    mt_event_t ev = {.type = MT_EV_HINT};

    ev.hint       = type;
    ev.step       = g->step;
    ev.layer      = layer;
    ev.microbatch = mb;
    ev.phase      = ph;
    gen_emit(g, &ev);
}

void gen_free_id(gen_t *g, uint64_t id)
{
    mt_event_t ev = {.type = MT_EV_FREE};

    ev.tensor = id;
    gen_emit(g, &ev);
}

memsvc_tags_t gen_tags_of(gen_t *g, int32_t layer, int32_t mb, int32_t expert)
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

void gen_op_begin(op_t *op, int32_t mb, uint32_t stream, const char *fmt, ...)
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
void gen_op_in(op_t *op, const tref_t *t)
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
void gen_op_in_slice(op_t *op, const tref_t *t, uint64_t slice)
{
    gen_op_in(op, t);
    if (t->id != 0) {
        op->bytes -= t->size - slice;
    }
}

/* The operator updates t in place (gradient accumulation, optimizer). */
void gen_op_upd(op_t *op, const tref_t *t)
{
    if (t->id != 0) {
        op->writes[op->n_writes++] = t->id;
        op->bytes += t->size;
    }
}

void gen_op_upd_slice(op_t *op, const tref_t *t, uint64_t slice)
{
    gen_op_upd(op, t);
    if (t->id != 0) {
        op->bytes -= t->size - slice;
    }
}

void gen_op_free(op_t *op, tref_t *t)
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

void gen_op_out(gen_t *g, op_t *op, tref_t *dst, memsvc_kind_t kind, uint64_t size, int32_t layer,
                int32_t expert, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    op_out_v(g, op, dst, kind, size, layer, expert, fmt, ap);
    va_end(ap);
}

/* A scratch buffer of the operator (gathered input, partial sums): allocated before, freed
 * after it. */
void gen_op_scratch(gen_t *g, op_t *op, uint64_t size, int32_t layer, const char *fmt, ...)
{
    out_t  *o;
    va_list ap;

    va_start(ap, fmt);
    o = op_out_v(g, op, NULL, MEMSVC_KIND_WORKSPACE, size, layer, MEMSVC_TAG_NONE, fmt, ap);
    va_end(ap);
    op->frees[op->n_frees++] = o->id;
}

/* Gradient of a parameter group: allocated by its first writer in the step. */
void gen_op_grad(gen_t *g, op_t *op, pgroup_t *pg)
{
    if (pg->grad.id != 0) {
        gen_op_upd(op, &pg->grad);
        return;
    }
    gen_op_out(g, op, &pg->grad, MEMSVC_KIND_GRAD, pg->n * 4, pg->layer, pg->expert, "%.*s.grad%s",
               (int)(strchr(pg->name, '|') - pg->name), pg->name, strchr(pg->name, '|') + 1);
}

static uint64_t secs_to_ns(double s)
{
    double ns = s * 1e9;

    return (ns < 1) ? 1 : (uint64_t)llround(ns);
}

/* Time of a transfer of bytes over a link, in ns (0 for no bytes). */
uint64_t gen_link_ns(const sim_link_desc_t *link, double bytes)
{
    if (bytes <= 0) {
        return 0;
    }
    return link->lat_ns + secs_to_ns(bytes / link->bw);
}

/* TP all-gather or reduce-scatter of a full-size buffer (ring: (t-1)/t of it per rank). */
uint64_t gen_tp_coll_ns(gen_t *g, double full_bytes)
{
    if (g->tp == 1) {
        return 0;
    }
    return gen_link_ns(&g->node->d2d, full_bytes * (g->tp - 1) / g->tp);
}

/* Expert-TP all-gather of dispatched tokens (or reduce-scatter of expert outputs). */
uint64_t gen_etp_coll_ns(gen_t *g, double full_bytes)
{
    return (g->etp == 1) ? 0 : gen_tp_coll_ns(g, full_bytes);
}

static uint64_t op_duration(gen_t *g, const op_t *op)
{
    double t;

    uint64_t c;

    if (op->stream != 0) {
        return op->comm_ns > 0 ? op->comm_ns : 1;
    }
    t = fmax(op->flops / (g->node->flops * g->node->mfu), (double)op->bytes / g->node->hbm_bw);
    c = secs_to_ns(t);
    if (g->p->overlap_tp) {
        /* fused compute and communication (MC2): the longer of the two */
        return (c > op->tp_ns ? c : op->tp_ns) + op->comm_ns;
    }
    return c + op->tp_ns + op->comm_ns;
}

/*
 * Expert all-to-all of bytes sent by this rank, spread evenly over the EP group: the part for
 * peers on the same node goes over HCCS (d2d), the rest over RoCE (nic), both at once. The EP
 * group is tp x ep consecutive ranks with tp-extend-ep, else ep ranks tp apart (Megatron order).
 */
uint64_t gen_a2a_ns(gen_t *g, double bytes)
{
    uint32_t stride   = g->p->tp_extend_ep ? 1 : g->tp;
    uint32_t npus     = g->node->num_npus > 0 ? g->node->num_npus : 1;
    uint32_t per_node = (stride >= npus) ? 1 : npus / stride;
    uint64_t intra    = 0, inter;

    if (g->eps <= 1) {
        return 0;
    }
    per_node = (per_node > g->eps) ? g->eps : per_node;
    if (per_node > 1 && g->node->d2d.bw > 0) {
        intra = gen_link_ns(&g->node->d2d, bytes * (per_node - 1) / g->eps);
    } else {
        per_node = 1;
    }
    inter = gen_link_ns(&g->node->nic, bytes * (g->eps - per_node) / g->eps);
    return (intra > inter) ? intra : inter;
}

/* The compute stream idles ns waiting for another pipeline stage (a bubble): an operator that
 * touches no tensor. */
void gen_wait(gen_t *g, uint64_t ns)
{
    op_t op;

    if (ns == 0) {
        return;
    }
    gen_op_begin(&op, MEMSVC_TAG_NONE, 0, "pp.wait");
    op.comm_ns      = ns;
    op.no_recompute = true;
    gen_op_emit(g, &op);
}

void gen_op_emit(gen_t *g, op_t *op)
{
    mt_event_t ev;
    uint64_t   dur = op_duration(g, op), op_id = ++g->next_op;
    uint32_t   i, j;
    /* what a collective delivers came from other ranks: no local recomputation makes it */
    bool rc_ok = !op->no_recompute && op->n_rc <= SRC_MAX && op->stream == 0;

    for (i = 0; i < op->n_outs; i++) {
        out_t  *o  = &op->outs[i];
        tref_t *d  = o->dst;
        bool    rc = o->kind == MEMSVC_KIND_ACTIVATION && rc_ok;

        memset(&ev, 0, sizeof(ev));
        ev.type   = MT_EV_ALLOC;
        ev.tensor = o->id;
        ev.key    = o->key;
        ev.size   = o->size;
        ev.kind   = o->kind;
        ev.tags =
            gen_tags_of(g, o->layer,
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
        gen_emit(g, &ev);
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
    gen_emit(g, &ev);
    if (op->stream == 0) {
        g->clock_ns += dur;
    }
    for (i = 0; i < op->n_frees; i++) {
        gen_free_id(g, op->frees[i]);
    }
}

/* Gradient buffer of an activation: allocated by the backward op that produces it. */
void gen_dout(gen_t *g, op_t *op, tref_t *dst, uint64_t size, uint32_t L, uint32_t mb,
              const char *what)
{
    gen_op_out(g, op, dst, WS, size, (int32_t)L, NOEXP, "L%u.mb%u.d.%s", L, mb, what);
}
