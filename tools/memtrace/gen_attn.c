/* gen_attn.c - the generator's attention block: norms, QKV (MHA/GQA), core, output projection */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Widths of the attention core on this rank. */
void gen_attn_dims(gen_t *g, uint64_t *a_t, uint64_t *qk, uint64_t *vd)
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
    bool              mla    = (m->attn == MT_ATTN_MLA);
    double            causal = m->causal ? 0.5 : 1.0; /* fraction of the scores computed */

    gen_attn_dims(g, &a_t, &qk, &vd);
    probs *= a_t;
    kvb = mla ? st->kv_up.size : st->qkv.size * 2 / 3;
#define CORE_INPUTS()                                                                              \
    do {                                                                                           \
        if (mla) {                                                                                 \
            gen_op_in(&op, &st->q_up);                                                             \
            gen_op_in(&op, &st->kv_up);                                                            \
            gen_op_in(&op, &st->down);                                                             \
        } else {                                                                                   \
            gen_op_in(&op, &st->qkv);                                                              \
        }                                                                                          \
    } while (0)

    if (m->fused_attention) {
        gen_op_begin(&op, (int32_t)mb, 0, "attn.core");
        CORE_INPUTS();
        op.flops   = 2.0 * probs * (qk + vd) * causal; /* a fused core skips masked blocks */
        op.comm_ns = (g->cp > 1) ? gen_link_ns(&g->node->nic, (double)kvb * (g->cp - 1)) : 0;
        gen_op_out(g, &op, &st->ctx, ACT, 2 * g->T * a_t * vd, (int32_t)L, NOEXP,
                   "L%u.mb%u.attn.ctx", L, mb);
        gen_op_out(g, &op, &st->lse, ACT, 4 * b * a_t * sq, (int32_t)L, NOEXP, "L%u.mb%u.attn.lse",
                   L, mb);
        gen_op_emit(g, &op);
        return;
    }
    {
        tref_t scores;

        gen_op_begin(&op, (int32_t)mb, 0, "attn.scores");
        CORE_INPUTS();
        op.flops   = 2.0 * probs * qk;
        op.comm_ns = (g->cp > 1) ? gen_link_ns(&g->node->nic, (double)kvb * (g->cp - 1)) : 0;
        gen_op_out(g, &op, &scores, ACT, 2 * probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.scores", L,
                   mb);
        gen_op_emit(g, &op);
        scores.transient = true;

        gen_op_begin(&op, (int32_t)mb, 0, "attn.softmax");
        gen_op_in(&op, &scores);
        gen_op_free(&op, &scores);
        op.flops = 5.0 * probs;
        gen_op_out(g, &op, &st->softmax, ACT, 2 * probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.softmax",
                   L, mb);
        gen_op_emit(g, &op);
    }
    if (m->dropout) {
        gen_op_begin(&op, (int32_t)mb, 0, "attn.dropout");
        gen_op_in(&op, &st->softmax);
        op.flops = 3.0 * probs;
        gen_op_out(g, &op, &st->amask, ACT, probs, (int32_t)L, NOEXP, "L%u.mb%u.attn.dropout.mask",
                   L, mb);
        gen_op_out(g, &op, &st->aout, ACT, 2 * probs, (int32_t)L, NOEXP,
                   "L%u.mb%u.attn.dropout.out", L, mb);
        gen_op_emit(g, &op);
    }
    gen_op_begin(&op, (int32_t)mb, 0, "attn.ctx");
    gen_op_in(&op, m->dropout ? &st->aout : &st->softmax);
    CORE_INPUTS();
    op.flops = 2.0 * probs * vd;
    gen_op_out(g, &op, &st->ctx, ACT, 2 * g->T * a_t * vd, (int32_t)L, NOEXP, "L%u.mb%u.attn.ctx",
               L, mb);
    gen_op_emit(g, &op);
#undef CORE_INPUTS
}

/* Norm, QKV (or MLA down/up), attention core, output projection with residual add. */
void gen_attn_fwd(gen_t *g, uint32_t li, uint32_t mb)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, a_t, qk, vd;
    op_t              op;

    gen_attn_dims(g, &a_t, &qk, &vd);
    gen_op_begin(&op, (int32_t)mb, 0, "ln1");
    gen_op_in(&op, &st->ln1_in);
    gen_op_in(&op, &P(g, li, PG_LN1)->param);
    op.flops = 4.0 * nsp * h;
    gen_op_out(g, &op, &st->ln1_out, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln1.out", L,
               mb);
    gen_op_emit(g, &op);

    if (m->attn == MT_ATTN_MLA) {
        gen_mla_fwd(g, li, mb);
    } else {
        uint64_t w = (a_t + 2 * (uint64_t)m->kv_heads / g->tp) * m->head_dim;

        gen_op_begin(&op, (int32_t)mb, 0, "attn.qkv");
        gen_op_in(&op, &st->ln1_out);
        gen_op_in(&op, &P(g, li, PG_QKV)->param);
        if (g->tp > 1) {
            gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
        }
        op.flops = 2.0 * T * h * w;
        op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
        gen_op_out(g, &op, &st->qkv, ACT, 2 * T * w, (int32_t)L, NOEXP, "L%u.mb%u.attn.qkv", L, mb);
        gen_op_emit(g, &op);
    }
    attn_core_fwd(g, L, mb, st);

    /* projection + reduce-scatter + (dropout) + residual add: writes the MLP block's input */
    gen_op_begin(&op, (int32_t)mb, 0, "attn.proj");
    gen_op_in(&op, &st->ctx);
    gen_op_in(&op, &st->ln1_in);
    gen_op_in(&op, &P(g, li, PG_PROJ)->param);
    gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.attn.proj.partial", L, mb);
    op.flops = 2.0 * T * a_t * vd * h;
    op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
    if (m->dropout) {
        gen_op_out(g, &op, &st->mask1, ACT, nsp * h, (int32_t)L, NOEXP,
                   "L%u.mb%u.attn.residual.mask", L, mb);
    }
    if (m->sandwich_norm) {
        gen_op_out(g, &op, &st->attn_out, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.attn.out",
                   L, mb);
        gen_op_emit(g, &op);

        /* sandwich norm of the attention output, then the residual add */
        gen_op_begin(&op, (int32_t)mb, 0, "attn.post_norm");
        gen_op_in(&op, &st->attn_out);
        gen_op_in(&op, &st->ln1_in);
        gen_op_in(&op, &P(g, li, PG_ALN)->param);
        op.flops = 5.0 * nsp * h;
        gen_op_out(g, &op, &st->ln2_in, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln2.in", L,
                   mb);
        gen_op_emit(g, &op);
    } else {
        gen_op_out(g, &op, &st->ln2_in, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln2.in", L,
                   mb);
        gen_op_emit(g, &op);
    }

    gen_op_begin(&op, (int32_t)mb, 0, "ln2");
    gen_op_in(&op, &st->ln2_in);
    gen_op_in(&op, &P(g, li, PG_LN2)->param);
    op.flops = 4.0 * nsp * h;
    gen_op_out(g, &op, &st->ln2_out, ACT, 2 * nsp * h, (int32_t)L, NOEXP, "L%u.mb%u.ln2.out", L,
               mb);
    gen_op_emit(g, &op);
}

tref_t gen_attn_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dmid)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, a_t, qk, vd;
    uint64_t          probs  = (uint64_t)g->mbs * (g->seq / g->cp) * g->seq;
    bool              mla    = (m->attn == MT_ATTN_MLA);
    double            causal = m->causal ? 0.5 : 1.0;
    tref_t            dctx, dq, dkv, dln1, dx, dbr;
    op_t              op;

    gen_attn_dims(g, &a_t, &qk, &vd);
    probs *= a_t;
    memset(&dkv, 0, sizeof(dkv));
    dbr = dmid;
    if (m->sandwich_norm) {
        dbr = gen_post_norm_bwd(g, li, mb, &dmid, PG_ALN);
    }

    gen_op_begin(&op, (int32_t)mb, 0, "attn.proj.bwd");
    gen_op_in(&op, &dbr);
    gen_op_in(&op, &st->ctx);
    gen_op_in(&op, &st->mask1);
    gen_op_in(&op, &P(g, li, PG_PROJ)->param);
    gen_op_grad(g, &op, P(g, li, PG_PROJ));
    if (g->tp > 1) {
        gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.d.gathered", L, mb);
    }
    op.flops = 4.0 * T * a_t * vd * h;
    op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
    gen_op_free(&op, &st->mask1);
    if (dbr.id != dmid.id) {
        gen_op_free(&op, &dbr);
    }
    if (!m->fused_attention) {
        gen_op_free(&op, &st->ctx);
    }
    gen_dout(g, &op, &dctx, 2 * T * a_t * vd, L, mb, "attn.ctx");
    gen_op_emit(g, &op);

#define CORE_READS()                                                                               \
    do {                                                                                           \
        if (mla) {                                                                                 \
            gen_op_in(&op, &st->q_up);                                                             \
            gen_op_in(&op, &st->kv_up);                                                            \
            gen_op_in(&op, &st->down);                                                             \
        } else {                                                                                   \
            gen_op_in(&op, &st->qkv);                                                              \
        }                                                                                          \
    } while (0)
#define CORE_DOUT()                                                                                \
    do {                                                                                           \
        if (mla) {                                                                                 \
            gen_dout(g, &op, &dq, st->q_up.size, L, mb, "attn.q_up");                              \
            gen_dout(g, &op, &dkv, st->kv_up.size, L, mb, "attn.kv_up");                           \
        } else {                                                                                   \
            gen_dout(g, &op, &dq, st->qkv.size, L, mb, "attn.qkv");                                \
        }                                                                                          \
    } while (0)

    if (m->fused_attention) {
        gen_op_begin(&op, (int32_t)mb, 0, "attn.core.bwd");
        gen_op_in(&op, &dctx);
        CORE_READS();
        gen_op_in(&op, &st->ctx);
        gen_op_in(&op, &st->lse);
        op.flops = 5.0 * probs * (qk + vd) * causal;
        gen_op_free(&op, &dctx);
        gen_op_free(&op, &st->ctx);
        gen_op_free(&op, &st->lse);
        CORE_DOUT();
        gen_op_emit(g, &op);
    } else {
        tref_t dprobs, dsoft, dscores;

        gen_op_begin(&op, (int32_t)mb, 0, "attn.ctx.bwd");
        gen_op_in(&op, &dctx);
        gen_op_in(&op, m->dropout ? &st->aout : &st->softmax);
        CORE_READS();
        op.flops = 4.0 * probs * vd;
        gen_op_free(&op, &dctx);
        gen_op_free(&op, &st->aout);
        gen_dout(g, &op, &dprobs, 2 * probs, L, mb, "attn.probs");
        gen_op_emit(g, &op);
        if (m->dropout) {
            gen_op_begin(&op, (int32_t)mb, 0, "attn.dropout.bwd");
            gen_op_in(&op, &dprobs);
            gen_op_in(&op, &st->amask);
            op.flops = 2.0 * probs;
            gen_op_free(&op, &dprobs);
            gen_op_free(&op, &st->amask);
            gen_dout(g, &op, &dsoft, 2 * probs, L, mb, "attn.softmax");
            gen_op_emit(g, &op);
        } else {
            dsoft = dprobs;
        }
        gen_op_begin(&op, (int32_t)mb, 0, "attn.softmax.bwd");
        gen_op_in(&op, &dsoft);
        gen_op_in(&op, &st->softmax);
        op.flops = 5.0 * probs;
        gen_op_free(&op, &dsoft);
        gen_op_free(&op, &st->softmax);
        gen_dout(g, &op, &dscores, 2 * probs, L, mb, "attn.scores");
        gen_op_emit(g, &op);

        gen_op_begin(&op, (int32_t)mb, 0, "attn.scores.bwd");
        gen_op_in(&op, &dscores);
        CORE_READS();
        op.flops = 4.0 * probs * qk;
        gen_op_free(&op, &dscores);
        CORE_DOUT();
        gen_op_emit(g, &op);
    }
#undef CORE_READS
#undef CORE_DOUT

    if (mla) {
        gen_mla_bwd(g, li, mb, &dq, &dkv, &dln1);
    } else {
        gen_op_begin(&op, (int32_t)mb, 0, "attn.qkv.bwd");
        gen_op_in(&op, &dq);
        gen_op_in(&op, &st->ln1_out);
        gen_op_in(&op, &P(g, li, PG_QKV)->param);
        gen_op_grad(g, &op, P(g, li, PG_QKV));
        if (g->tp > 1) {
            gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
        }
        op.flops = 4.0 * T * h * (dq.size / 2 / T);
        op.tp_ns = 2 * gen_tp_coll_ns(g, 2.0 * T * h);
        gen_op_free(&op, &dq);
        gen_op_free(&op, &st->qkv);
        gen_op_free(&op, &st->ln1_out);
        gen_dout(g, &op, &dln1, 2 * nsp * h, L, mb, "ln1.out");
        gen_op_emit(g, &op);
    }

    gen_op_begin(&op, (int32_t)mb, 0, "ln1.bwd");
    gen_op_in(&op, &dln1);
    gen_op_in(&op, &st->ln1_in);
    gen_op_in(&op, &dmid);
    gen_op_in(&op, &P(g, li, PG_LN1)->param);
    gen_op_grad(g, &op, P(g, li, PG_LN1));
    op.flops = 8.0 * nsp * h;
    gen_op_free(&op, &dln1);
    gen_op_free(&op, &st->ln1_in);
    gen_op_free(&op, &dmid);
    gen_dout(g, &op, &dx, 2 * nsp * h, L, mb, "ln1.in");
    gen_op_emit(g, &op);
    return dx;
}
