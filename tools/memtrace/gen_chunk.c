/* gen_chunk.c - the generator's pipeline chunks: embedding, layers, head, stage transfers */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where a layer's output goes: the next layer's input, the head's input, or the send buffer. */
void gen_layer_output(gen_t *g, op_t *op, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    uint32_t L  = g->layer_of[li];
    uint64_t sz = 2 * g->nsp * g->m->hidden;

    if (!last_in_chunk) {
        gen_op_out(g, op, &LS(g, li + 1, mb)->ln1_in, ACT, sz, (int32_t)L + 1, NOEXP,
                   "L%u.mb%u.ln1.in", L + 1, mb);
    } else if (g->cur_v == g->pp * g->vpp - 1) {
        gen_op_out(g, op, &LS(g, li, mb)->x_out, ACT, sz, MEMSVC_TAG_NONE, NOEXP,
                   "head.mb%u.norm.in", mb);
    } else {
        gen_op_out(g, op, &LS(g, li, mb)->x_out, ACT, sz, (int32_t)L, NOEXP, "L%u.mb%u.out", L, mb);
    }
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

void gen_chunk_fwd(gen_t *g, uint32_t c, uint32_t mb)
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
    gen_hint(g, MEMSVC_HINT_PHASE, (int32_t)L0, (int32_t)mb, MEMSVC_PHASE_FORWARD);
    if (v == 0) {
        pgroup_t *pe = &g->pg[g->pg_embed];

        gen_op_begin(&op, (int32_t)mb, 0, "embed");
        gen_op_in(&op, &pe->param);
        op.flops   = 0;
        op.comm_ns = gen_tp_coll_ns(g, 2.0 * g->T * m->hidden); /* vocab-parallel reduce */
        gen_op_out(g, &op, &st0->ln1_in, ACT, xsize, (int32_t)L0, NOEXP, "L%u.mb%u.ln1.in", L0, mb);
        gen_op_emit(g, &op);
    } else {
        gen_op_begin(&op, (int32_t)mb, GEN_STREAM_RECV, "pp.recv");
        op.comm_ns      = gen_link_ns(&g->node->nic, (double)xsize);
        op.no_recompute = true;
        gen_op_out(g, &op, &st0->ln1_in, ACT, xsize, (int32_t)L0, NOEXP, "L%u.mb%u.ln1.in", L0, mb);
        gen_op_emit(g, &op);
    }
    for (i = first; i < first + n && g->status == MEMSVC_OK; i++) {
        uint32_t L = g->layer_of[i];

        gen_hint(g, MEMSVC_HINT_LAYER_BEGIN, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_FORWARD);
        gen_attn_fwd(g, i, mb);
        if (mt_model_layer_is_moe(m, L)) {
            gen_moe_fwd(g, i, mb, i == first + n - 1);
        } else {
            gen_dense_fwd(g, i, mb, i == first + n - 1);
        }
        gen_hint(g, MEMSVC_HINT_LAYER_END, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_FORWARD);
    }
    {
        lstate_t *stl = LS(g, first + n - 1, mb);

        if (v == g->pp * g->vpp - 1) {
            head_state_t *hs = &g->hs[mb];
            uint64_t      vt = ((uint64_t)m->vocab + g->tp - 1) / g->tp;
            tref_t        logits;

            gen_op_begin(&op, (int32_t)mb, 0, "head.norm");
            gen_op_in(&op, &stl->x_out);
            gen_op_in(&op, &g->pg[g->pg_head_norm].param);
            op.flops = 4.0 * g->nsp * m->hidden;
            gen_op_out(g, &op, &hs->norm_out, ACT, xsize, MEMSVC_TAG_NONE, NOEXP,
                       "head.mb%u.norm.out", mb);
            gen_op_emit(g, &op);

            gen_op_begin(&op, (int32_t)mb, 0, "head.logits");
            gen_op_in(&op, &hs->norm_out);
            gen_op_in(&op, &g->pg[g->pg_head].param);
            if (g->tp > 1) {
                gen_op_scratch(g, &op, 2 * g->T * m->hidden, MEMSVC_TAG_NONE, "head.mb%u.gathered",
                               mb);
            }
            op.flops = 2.0 * g->T * m->hidden * vt;
            op.tp_ns = gen_tp_coll_ns(g, 2.0 * g->T * m->hidden);
            gen_op_out(g, &op, &logits, ACT, 2 * g->T * vt, MEMSVC_TAG_NONE, NOEXP,
                       "head.mb%u.logits", mb);
            gen_op_emit(g, &op);
            logits.transient = true;

            gen_op_begin(&op, (int32_t)mb, 0, "head.ce");
            gen_op_in(&op, &logits);
            gen_op_free(&op, &logits);
            op.flops = 5.0 * g->T * vt;
            gen_op_out(g, &op, &hs->ce, ACT, 4 * g->T * vt, MEMSVC_TAG_NONE, NOEXP,
                       "head.mb%u.ce.softmax", mb);
            gen_op_emit(g, &op);
        } else {
            gen_op_begin(&op, (int32_t)mb, GEN_STREAM_SEND, "pp.send");
            gen_op_in(&op, &stl->x_out);
            op.comm_ns = gen_link_ns(&g->node->nic, (double)xsize);
            gen_op_free(&op, &stl->x_out);
            gen_op_emit(g, &op);
        }
    }
}

void gen_chunk_bwd(gen_t *g, uint32_t c, uint32_t mb)
{
    const mt_model_t *m = g->m;
    uint32_t          v = c * g->pp + g->stage, first = g->chunk_first[c], i;
    uint32_t          n = g->chunk_count[c], Llast = g->layer_of[first + n - 1];
    uint64_t          xsize = 2 * g->nsp * m->hidden;
    tref_t            dres;
    op_t              op;

    g->cur_v = v;
    gen_hint(g, MEMSVC_HINT_PHASE, (int32_t)Llast, (int32_t)mb, MEMSVC_PHASE_BACKWARD);
    if (v == g->pp * g->vpp - 1) {
        head_state_t *hs  = &g->hs[mb];
        lstate_t     *stl = LS(g, first + n - 1, mb);
        uint64_t      vt  = ((uint64_t)m->vocab + g->tp - 1) / g->tp;
        tref_t        dlog, dnorm;

        gen_op_begin(&op, (int32_t)mb, 0, "head.ce.bwd");
        gen_op_in(&op, &hs->ce);
        op.flops = 3.0 * g->T * vt;
        gen_op_free(&op, &hs->ce);
        gen_op_out(g, &op, &dlog, WS, 2 * g->T * vt, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.d.logits",
                   mb);
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "head.logits.bwd");
        gen_op_in(&op, &dlog);
        gen_op_in(&op, &hs->norm_out);
        gen_op_in(&op, &g->pg[g->pg_head].param);
        gen_op_grad(g, &op, &g->pg[g->pg_head]);
        if (g->tp > 1) {
            gen_op_scratch(g, &op, 2 * g->T * m->hidden, MEMSVC_TAG_NONE, "head.mb%u.gathered", mb);
        }
        op.flops = 4.0 * g->T * m->hidden * vt;
        op.tp_ns = 2 * gen_tp_coll_ns(g, 2.0 * g->T * m->hidden);
        gen_op_free(&op, &dlog);
        gen_op_free(&op, &hs->norm_out);
        gen_op_out(g, &op, &dnorm, WS, xsize, MEMSVC_TAG_NONE, NOEXP, "head.mb%u.d.norm.out", mb);
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "head.norm.bwd");
        gen_op_in(&op, &dnorm);
        gen_op_in(&op, &stl->x_out);
        gen_op_in(&op, &g->pg[g->pg_head_norm].param);
        gen_op_grad(g, &op, &g->pg[g->pg_head_norm]);
        op.flops = 8.0 * g->nsp * m->hidden;
        gen_op_free(&op, &dnorm);
        gen_op_free(&op, &stl->x_out);
        gen_dout(g, &op, &dres, xsize, Llast, mb, "out");
        gen_op_emit(g, &op);
    } else {
        gen_op_begin(&op, (int32_t)mb, GEN_STREAM_RECV, "pp.recv_grad");
        op.comm_ns = gen_link_ns(&g->node->nic, (double)xsize);
        gen_dout(g, &op, &dres, xsize, Llast, mb, "out");
        gen_op_emit(g, &op);
    }
    for (i = first + n; i-- > first && g->status == MEMSVC_OK;) {
        uint32_t L = g->layer_of[i];

        gen_hint(g, MEMSVC_HINT_LAYER_BEGIN, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_BACKWARD);
        if (mt_model_layer_is_moe(m, L)) {
            dres = gen_moe_bwd(g, i, mb, dres);
        } else {
            dres = gen_dense_bwd(g, i, mb, dres);
        }
        dres = gen_attn_bwd(g, i, mb, dres);
        gen_hint(g, MEMSVC_HINT_LAYER_END, (int32_t)L, (int32_t)mb, MEMSVC_PHASE_BACKWARD);
    }
    if (v == 0) {
        gen_op_begin(&op, (int32_t)mb, 0, "embed.bwd");
        gen_op_in(&op, &dres);
        gen_op_grad(g, &op, &g->pg[g->pg_embed]);
        op.comm_ns = gen_tp_coll_ns(g, 2.0 * g->T * m->hidden);
        op.bytes   = 4 * dres.size; /* scatter-add into the touched rows only */
        gen_op_free(&op, &dres);
        gen_op_emit(g, &op);
    } else {
        gen_op_begin(&op, (int32_t)mb, GEN_STREAM_SEND, "pp.send_grad");
        gen_op_in(&op, &dres);
        op.comm_ns = gen_link_ns(&g->node->nic, (double)xsize);
        gen_op_free(&op, &dres);
        gen_op_emit(g, &op);
    }
}
