/* gen_dense.c - the generator's dense feed-forward blocks (dense MLP, shared experts) */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first two operators of a feed-forward block of width f (fc1 output w1 wide): fc1 from
 * ln2's output, then the activation function; "mlp" (dense) or "shared" (shared experts). */
void gen_ffn_fwd_in(gen_t *g, uint32_t li, uint32_t mb, uint64_t f, uint64_t w1, int pg_fc1,
                    const char *name, tref_t *fc1, tref_t *act)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, T = g->T;
    op_t      op;
    char      opname[32];

    snprintf(opname, sizeof(opname), "%s.fc1", name);
    gen_op_begin(&op, (int32_t)mb, 0, opname);
    gen_op_in(&op, &st->ln2_out);
    gen_op_in(&op, &P(g, li, pg_fc1)->param);
    if (g->tp > 1) {
        gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln2.gathered", L, mb);
    }
    op.flops = 2.0 * T * h * w1;
    op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
    gen_op_out(g, &op, fc1, ACT, 2 * T * w1, (int32_t)L, NOEXP, "L%u.mb%u.%s.fc1", L, mb, name);
    gen_op_emit(g, &op);

    snprintf(opname, sizeof(opname), "%s.act", name);
    gen_op_begin(&op, (int32_t)mb, 0, opname);
    gen_op_in(&op, fc1);
    op.flops = 8.0 * T * f;
    gen_op_out(g, &op, act, ACT, 2 * T * f, (int32_t)L, NOEXP, "L%u.mb%u.%s.act", L, mb, name);
    gen_op_emit(g, &op);
}

void gen_dense_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, f = m->ffn / g->tp;
    uint64_t          w1 = (m->mlp == MT_MLP_SWIGLU) ? 2 * f : f;
    op_t              op;

    gen_ffn_fwd_in(g, li, mb, f, w1, PG_FC1, "mlp", &st->fc1, &st->act);

    gen_op_begin(&op, (int32_t)mb, 0, "mlp.fc2");
    gen_op_in(&op, &st->act);
    gen_op_in(&op, &st->ln2_in);
    gen_op_in(&op, &P(g, li, PG_FC2)->param);
    gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.mlp.fc2.partial", L, mb);
    op.flops = 2.0 * T * f * h;
    op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
    if (m->dropout) {
        gen_op_out(g, &op, &st->mask2, ACT, g->nsp * h, (int32_t)L, NOEXP,
                   "L%u.mb%u.mlp.residual.mask", L, mb);
    }
    gen_block_out(g, &op, li, mb, last_in_chunk);
    gen_op_emit(g, &op);
    gen_post_norm_fwd(g, li, mb, last_in_chunk);
}

/*
 * Backward of a feed-forward block (fc2, its activation function, fc1) of width f (fc1 output
 * w1 wide): the dense MLP (prefix "mlp", with its dropout mask, and ending its ln2_out) or the
 * shared experts ("shared": no mask; ln2_out is still needed by the routed experts). Emits the
 * gradient of ln2's output into *dln2.
 */
tref_t gen_ffn_bwd_out(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, tref_t *act, tref_t *mask,
                       tref_t *fc1, uint64_t f, uint64_t w1, int pg_fc2, const char *name)
{
    uint32_t L = g->layer_of[li];
    uint64_t h = g->m->hidden, T = g->T;
    tref_t   dact, dfc1;
    op_t     op;
    char     opname[32], key[32];

    snprintf(opname, sizeof(opname), "%s.fc2.bwd", name);
    gen_op_begin(&op, (int32_t)mb, 0, opname);
    gen_op_in(&op, dres);
    gen_op_in(&op, act);
    if (mask != NULL) {
        gen_op_in(&op, mask);
    }
    gen_op_in(&op, &P(g, li, pg_fc2)->param);
    gen_op_grad(g, &op, P(g, li, pg_fc2));
    if (g->tp > 1) {
        gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.d.gathered", L, mb);
    }
    op.flops = 4.0 * T * f * h;
    op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * h);
    gen_op_free(&op, act);
    if (mask != NULL) {
        gen_op_free(&op, mask);
    }
    snprintf(key, sizeof(key), "%s.act", name);
    gen_dout(g, &op, &dact, 2 * T * f, L, mb, key);
    gen_op_emit(g, &op);

    snprintf(opname, sizeof(opname), "%s.act.bwd", name);
    gen_op_begin(&op, (int32_t)mb, 0, opname);
    gen_op_in(&op, &dact);
    gen_op_in(&op, fc1);
    op.flops = 10.0 * T * f;
    gen_op_free(&op, &dact);
    gen_op_free(&op, fc1);
    snprintf(key, sizeof(key), "%s.fc1", name);
    gen_dout(g, &op, &dfc1, 2 * T * w1, L, mb, key);
    gen_op_emit(g, &op);

    return dfc1;
}

/* The second half of gen_ffn_bwd(): fc1's backward from the gradient of its output (dfc1,
 * freed); emits the gradient of ln2's output into *dln2. */
void gen_ffn_bwd_in(gen_t *g, uint32_t li, uint32_t mb, tref_t dfc1, uint64_t w1, int pg_fc1,
                    const char *name, bool last_ln2_use, tref_t *dln2)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, T = g->T, nsp = g->nsp;
    op_t      op;
    char      opname[32];

    snprintf(opname, sizeof(opname), "%s.fc1.bwd", name);
    gen_op_begin(&op, (int32_t)mb, 0, opname);
    gen_op_in(&op, &dfc1);
    gen_op_in(&op, &st->ln2_out);
    gen_op_in(&op, &P(g, li, pg_fc1)->param);
    gen_op_grad(g, &op, P(g, li, pg_fc1));
    if (g->tp > 1) {
        gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln2.gathered", L, mb);
    }
    op.flops = 4.0 * T * h * w1;
    op.tp_ns = 2 * gen_tp_coll_ns(g, 2.0 * T * h);
    gen_op_free(&op, &dfc1);
    if (last_ln2_use) {
        gen_op_free(&op, &st->ln2_out);
    }
    gen_dout(g, &op, dln2, 2 * nsp * h, L, mb, "ln2.out");
    gen_op_emit(g, &op);
}

void gen_ffn_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, tref_t *act, tref_t *mask,
                 tref_t *fc1, uint64_t f, uint64_t w1, int pg_fc1, int pg_fc2, const char *name,
                 bool last_ln2_use, tref_t *dln2)
{
    tref_t dfc1 = gen_ffn_bwd_out(g, li, mb, dres, act, mask, fc1, f, w1, pg_fc2, name);

    gen_ffn_bwd_in(g, li, mb, dfc1, w1, pg_fc1, name, last_ln2_use, dln2);
}

/* Backward of the second norm: its input's gradient, from its output's and the residual's. */
tref_t gen_ln2_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dln2, tref_t dres, tref_t dbr)
{
    lstate_t *st = LS(g, li, mb);
    uint32_t  L  = g->layer_of[li];
    uint64_t  h = g->m->hidden, nsp = g->nsp;
    tref_t    dmid;
    op_t      op;

    gen_op_begin(&op, (int32_t)mb, 0, "ln2.bwd");
    gen_op_in(&op, &dln2);
    gen_op_in(&op, &st->ln2_in);
    gen_op_in(&op, &dres);
    gen_op_in(&op, &P(g, li, PG_LN2)->param);
    gen_op_grad(g, &op, P(g, li, PG_LN2));
    op.flops = 8.0 * nsp * h;
    gen_op_free(&op, &dln2);
    gen_op_free(&op, &st->ln2_in);
    gen_op_free(&op, &dres);
    if (dbr.id != dres.id) {
        gen_op_free(&op, &dbr); /* gradient of the MLP output before its sandwich norm */
    }
    gen_dout(g, &op, &dmid, 2 * nsp * h, L, mb, "ln2.in");
    gen_op_emit(g, &op);
    return dmid;
}

/* Backward of the MLP block: consumes dres (gradient of the layer output), returns the
 * gradient of the block input (ln2.in). */
tref_t gen_dense_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dres)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint64_t          f  = m->ffn / g->tp;
    uint64_t          w1 = (m->mlp == MT_MLP_SWIGLU) ? 2 * f : f;
    tref_t            dln2, dbr = dres;

    if (m->sandwich_norm) {
        dbr = gen_post_norm_bwd(g, li, mb, &dres, PG_MLN);
    }
    gen_ffn_bwd(g, li, mb, &dbr, &st->act, &st->mask2, &st->fc1, f, w1, PG_FC1, PG_FC2, "mlp", true,
                &dln2);
    return gen_ln2_bwd(g, li, mb, dln2, dres, dbr);
}

/* The op that ends an MLP block writes the layer output, or with sandwich norm the block's
 * output before its norm (mlp.out). */
void gen_block_out(gen_t *g, op_t *op, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    uint32_t L = g->layer_of[li];

    if (!g->m->sandwich_norm) {
        gen_layer_output(g, op, li, mb, last_in_chunk);
        return;
    }
    gen_op_out(g, op, &LS(g, li, mb)->mlp_out, ACT, 2 * g->nsp * g->m->hidden, (int32_t)L, NOEXP,
               "L%u.mb%u.mlp.out", L, mb);
}

/* Sandwich norm after the MLP, then the residual add: writes the layer output. */
void gen_post_norm_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk)
{
    lstate_t *st = LS(g, li, mb);
    op_t      op;

    if (!g->m->sandwich_norm) {
        return;
    }
    gen_op_begin(&op, (int32_t)mb, 0, "mlp.post_norm");
    gen_op_in(&op, &st->mlp_out);
    gen_op_in(&op, &st->ln2_in);
    gen_op_in(&op, &P(g, li, PG_MLN)->param);
    op.flops = 5.0 * g->nsp * g->m->hidden;
    gen_layer_output(g, &op, li, mb, last_in_chunk);
    gen_op_emit(g, &op);
}

/* Backward of a sandwich norm (which: PG_ALN after attention, PG_MLN after the MLP): reads the
 * gradient of its output (*dres, which the residual path still needs) and returns the gradient
 * of the block output it normalised; frees that saved output. */
tref_t gen_post_norm_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, int which)
{
    lstate_t *st  = LS(g, li, mb);
    uint32_t  L   = g->layer_of[li];
    tref_t   *out = (which == PG_ALN) ? &st->attn_out : &st->mlp_out;
    tref_t    d;
    op_t      op;

    gen_op_begin(&op, (int32_t)mb, 0,
                 (which == PG_ALN) ? "attn.post_norm.bwd" : "mlp.post_norm.bwd");
    gen_op_in(&op, dres);
    gen_op_in(&op, out);
    gen_op_in(&op, &P(g, li, which)->param);
    gen_op_grad(g, &op, P(g, li, which));
    op.flops = 8.0 * g->nsp * g->m->hidden;
    gen_op_free(&op, out);
    gen_dout(g, &op, &d, 2 * g->nsp * g->m->hidden, L, mb,
             (which == PG_ALN) ? "attn.out" : "mlp.out");
    gen_op_emit(g, &op);
    return d;
}
