/* gen_moe.c - the generator's MoE block: router, dispatch, local experts, combine */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shared experts' width on this rank (TP-sharded), and their fc1 output width. */
static void shared_dims(gen_t *g, uint64_t *sf_p, uint64_t *sw_p)
{
    const mt_model_t *m = g->m;

    *sf_p = (uint64_t)m->shared_experts * m->shared_expert_ffn / g->tp;
    *sw_p = (m->mlp == MT_MLP_SWIGLU) ? 2 * *sf_p : *sf_p;
}

static void shared_fwd_in(gen_t *g, uint32_t li, uint32_t mb)
{
    lstate_t *st = LS(g, li, mb);
    uint64_t  sf, sw;

    shared_dims(g, &sf, &sw);
    gen_ffn_fwd_in(g, li, mb, sf, sw, PG_SFC1, "shared", &st->sfc1, &st->sact);
}

/* The shared experts' fc2 (with its reduce-scatter): their output, freed by the unpermute. */
static void shared_fc2(gen_t *g, uint32_t li, uint32_t mb, tref_t *sout)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, T = g->T, sf, sw;
    op_t      op;

    shared_dims(g, &sf, &sw);
    gen_op_begin(&op, (int32_t)mb, 0, "shared.fc2");
    gen_op_in(&op, &st->sact);
    gen_op_in(&op, &P(g, li, PG_SFC2)->param);
    gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.shared.fc2.partial", L, mb);
    op.flops = 2.0 * T * sf * h;
    op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
    gen_op_out(g, &op, sout, ACT, 2 * g->nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.shared.out", L, mb);
    gen_op_emit(g, &op);
    sout->transient = true;
}

void gen_moe_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L = g->layer_of[li], e, k = m->top_k;
    uint64_t          h = m->hidden, nsp = g->nsp, ef = m->expert_ffn / g->etp;
    uint64_t          w1 = (m->mlp == MT_MLP_SWIGLU) ? 2 * ef : ef;
    tref_t            perm, cin, sout = {0};
    bool              cin_live = false;
    op_t              op;

    gen_route(g, li, mb, st);

    gen_op_begin(&op, (int32_t)mb, 0, "moe.router");
    gen_op_in(&op, &st->ln2_out);
    gen_op_in(&op, &P(g, li, PG_ROUTER)->param);
    op.flops = 2.0 * nsp * h * m->experts;
    gen_op_out(g, &op, &st->logits, ACT, 4 * nsp * m->experts, (int32_t)L, NOEXP,
               "L%u.mb%u.moe.router.logits", L, mb);
    gen_op_emit(g, &op);

    gen_op_begin(&op, (int32_t)mb, 0, "moe.permute");
    gen_op_in(&op, &st->ln2_out);
    gen_op_in(&op, &st->logits);
    gen_op_out(g, &op, &perm, ACT, 2 * nsp * k * h, (int32_t)L, NOEXP, "L%u.mb%u.moe.permuted", L,
               mb);
    gen_op_emit(g, &op);
    perm.transient = true;

    /* all-to-all over EP (NIC), then all-gather over TP for the TP-sharded experts */
    gen_op_begin(&op, (int32_t)mb, GEN_STREAM_A2A, "moe.a2a.dispatch");
    gen_op_in(&op, &perm);
    gen_op_free(&op, &perm);
    op.comm_ns = gen_a2a_ns(g, 2.0 * nsp * k * h) + gen_etp_coll_ns(g, 2.0 * st->rows * h);
    gen_op_out(g, &op, &st->dispatch, ACT, 2 * st->rows * h, (int32_t)L, NOEXP,
               "L%u.mb%u.moe.dispatch", L, mb);
    gen_op_emit(g, &op);
    if (m->shared_experts > 0 && g->p->overlap_ep) {
        shared_fwd_in(g, li, mb); /* while the tokens are in flight */
    }

    for (e = 0; e < g->e_loc; e++) {
        uint64_t c  = st->ecount[e];
        uint32_t ge = g->e0 + e;

        if (c == 0) {
            continue;
        }
        gen_op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc1", ge);
        gen_op_in_slice(&op, &st->dispatch, 2 * c * h);
        gen_op_in(&op, &PE(g, li, e, 0)->param);
        op.flops = 2.0 * c * h * w1;
        gen_op_out(g, &op, &st->efc1[e], ACT, 2 * c * w1, (int32_t)L, (int32_t)ge,
                   "L%u.e%u.mb%u.fc1", L, ge, mb);
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "moe.e%u.act", ge);
        gen_op_in(&op, &st->efc1[e]);
        op.flops = 8.0 * c * ef;
        gen_op_out(g, &op, &st->eact[e], ACT, 2 * c * ef, (int32_t)L, (int32_t)ge,
                   "L%u.e%u.mb%u.act", L, ge, mb);
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc2", ge);
        gen_op_in(&op, &st->eact[e]);
        gen_op_in(&op, &PE(g, li, e, 1)->param);
        op.flops = 2.0 * c * ef * h;
        if (cin_live) {
            gen_op_upd_slice(&op, &cin, 2 * c * h);
        } else {
            gen_op_out(g, &op, &cin, WS, 2 * st->rows * h, (int32_t)L, NOEXP,
                       "L%u.mb%u.moe.combine_in", L, mb);
            op.bytes -= cin.size - 2 * c * h;
            cin_live = true;
        }
        gen_op_emit(g, &op);
    }

    gen_op_begin(&op, (int32_t)mb, GEN_STREAM_A2A, "moe.a2a.combine");
    if (cin_live) {
        gen_op_in(&op, &cin);
        gen_op_free(&op, &cin);
    }
    op.no_recompute = true; /* needs every local expert's output */
    op.comm_ns      = gen_etp_coll_ns(g, 2.0 * st->rows * h) + gen_a2a_ns(g, 2.0 * nsp * k * h);
    gen_op_out(g, &op, &st->combined, ACT, 2 * nsp * k * h, (int32_t)L, NOEXP,
               "L%u.mb%u.moe.combined", L, mb);
    gen_op_emit(g, &op);

    if (m->shared_experts > 0 && !g->p->overlap_ep) {
        shared_fwd_in(g, li, mb);
    }
    if (m->shared_experts > 0) {
        shared_fc2(g, li, mb, &sout);
    }

    /* unpermute (weighted by router probabilities) + shared output + residual add */
    gen_op_begin(&op, (int32_t)mb, 0, "moe.unpermute");
    gen_op_in(&op, &st->combined);
    gen_op_in(&op, &st->logits);
    gen_op_in(&op, &st->ln2_in);
    gen_op_in(&op, &sout);
    gen_op_free(&op, &sout);
    op.flops = 2.0 * nsp * k * h;
    gen_block_out(g, &op, li, mb, last_in_chunk);
    gen_op_emit(g, &op);
    gen_post_norm_fwd(g, li, mb, last_in_chunk);
}

tref_t gen_moe_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dres)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L = g->layer_of[li], k = m->top_k, e;
    uint64_t          h = m->hidden, nsp = g->nsp, ef = m->expert_ffn / g->etp;
    uint64_t          w1 = (m->mlp == MT_MLP_SWIGLU) ? 2 * ef : ef;
    tref_t            dcomb, dcin, ddisp, dperm, dln2, dbr = dres, dsfc1 = {0};
    uint64_t          sf, sw;
    bool              ddisp_live = false, dln2_live = false;
    op_t              op;

    memset(&ddisp, 0, sizeof(ddisp));
    shared_dims(g, &sf, &sw);
    if (m->sandwich_norm) {
        dbr = gen_post_norm_bwd(g, li, mb, &dres, PG_MLN);
    }
    gen_op_begin(&op, (int32_t)mb, 0, "moe.unpermute.bwd");
    gen_op_in(&op, &dbr);
    gen_op_in(&op, &st->combined);
    gen_op_in(&op, &st->logits);
    op.flops = 4.0 * nsp * k * h;
    gen_op_free(&op, &st->combined);
    gen_dout(g, &op, &dcomb, 2 * nsp * k * h, L, mb, "moe.combined");
    gen_op_emit(g, &op);

    if (m->shared_experts > 0 && !g->p->overlap_ep) {
        gen_ffn_bwd(g, li, mb, &dbr, &st->sact, NULL, &st->sfc1, sf, sw, PG_SFC1, PG_SFC2, "shared",
                    false, &dln2);
        dln2_live = true;
    }

    gen_op_begin(&op, (int32_t)mb, GEN_STREAM_A2A, "moe.a2a.combine.bwd");
    gen_op_in(&op, &dcomb);
    gen_op_free(&op, &dcomb);
    op.comm_ns = gen_a2a_ns(g, 2.0 * nsp * k * h) + gen_etp_coll_ns(g, 2.0 * st->rows * h);
    gen_dout(g, &op, &dcin, 2 * st->rows * h, L, mb, "moe.combine_in");
    gen_op_emit(g, &op);
    if (m->shared_experts > 0 && g->p->overlap_ep) {
        /* the shared experts' fc2 and activation backward while the gradients are in flight */
        dsfc1 =
            gen_ffn_bwd_out(g, li, mb, &dbr, &st->sact, NULL, &st->sfc1, sf, sw, PG_SFC2, "shared");
    }

    for (e = g->e_loc; e-- > 0;) {
        uint64_t c  = st->ecount[e];
        uint32_t ge = g->e0 + e;
        tref_t   deact, defc1;

        if (c == 0) {
            continue;
        }
        gen_op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc2.bwd", ge);
        gen_op_in_slice(&op, &dcin, 2 * c * h);
        gen_op_in(&op, &st->eact[e]);
        gen_op_in(&op, &PE(g, li, e, 1)->param);
        gen_op_grad(g, &op, PE(g, li, e, 1));
        op.flops = 4.0 * c * ef * h;
        gen_op_free(&op, &st->eact[e]);
        gen_op_out(g, &op, &deact, WS, 2 * c * ef, (int32_t)L, (int32_t)ge, "L%u.e%u.mb%u.d.act", L,
                   ge, mb);
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "moe.e%u.act.bwd", ge);
        gen_op_in(&op, &deact);
        gen_op_in(&op, &st->efc1[e]);
        op.flops = 10.0 * c * ef;
        gen_op_free(&op, &deact);
        gen_op_free(&op, &st->efc1[e]);
        gen_op_out(g, &op, &defc1, WS, 2 * c * w1, (int32_t)L, (int32_t)ge, "L%u.e%u.mb%u.d.fc1", L,
                   ge, mb);
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "moe.e%u.fc1.bwd", ge);
        gen_op_in(&op, &defc1);
        gen_op_in_slice(&op, &st->dispatch, 2 * c * h);
        gen_op_in(&op, &PE(g, li, e, 0)->param);
        gen_op_grad(g, &op, PE(g, li, e, 0));
        op.flops = 4.0 * c * h * w1;
        gen_op_free(&op, &defc1);
        if (ddisp_live) {
            gen_op_upd_slice(&op, &ddisp, 2 * c * h);
        } else {
            gen_dout(g, &op, &ddisp, 2 * st->rows * h, L, mb, "moe.dispatch");
            op.bytes -= ddisp.size - 2 * c * h;
            ddisp_live = true;
        }
        gen_op_emit(g, &op);
    }

    gen_op_begin(&op, (int32_t)mb, GEN_STREAM_A2A, "moe.a2a.dispatch.bwd");
    gen_op_in(&op, &ddisp);
    gen_op_free(&op, &ddisp);
    gen_op_free(&op, &dcin);
    gen_op_free(&op, &st->dispatch);
    op.comm_ns = gen_etp_coll_ns(g, 2.0 * st->rows * h) + gen_a2a_ns(g, 2.0 * nsp * k * h);
    gen_dout(g, &op, &dperm, 2 * nsp * k * h, L, mb, "moe.permuted");
    gen_op_emit(g, &op);
    if (m->shared_experts > 0 && g->p->overlap_ep) {
        gen_ffn_bwd_in(g, li, mb, dsfc1, sw, PG_SFC1, "shared", false, &dln2);
        dln2_live = true;
    }

    gen_op_begin(&op, (int32_t)mb, 0, "moe.permute.bwd");
    gen_op_in(&op, &dperm);
    op.flops = 2.0 * nsp * k * h;
    gen_op_free(&op, &dperm);
    if (dln2_live) {
        gen_op_upd(&op, &dln2);
    } else {
        gen_dout(g, &op, &dln2, 2 * nsp * h, L, mb, "ln2.out");
    }
    gen_op_emit(g, &op);

    gen_op_begin(&op, (int32_t)mb, 0, "moe.router.bwd");
    gen_op_in(&op, &st->logits);
    gen_op_in(&op, &st->ln2_out);
    gen_op_in(&op, &P(g, li, PG_ROUTER)->param);
    gen_op_grad(g, &op, P(g, li, PG_ROUTER));
    gen_op_upd(&op, &dln2);
    op.flops = 4.0 * nsp * h * m->experts;
    gen_op_free(&op, &st->logits);
    gen_op_free(&op, &st->ln2_out);
    gen_op_emit(g, &op);

    return gen_ln2_bwd(g, li, mb, dln2, dres, dbr);
}
