/* gen_mla.c - the generator's multi-head latent attention: down-projections, latent norms,
 * up-projections */
#include "tools/memtrace/gen_int.h"

/* MLA's projections in forward: from ln1's output to the query and key/value up-projections
 * that the attention core reads (with the shared rotary key inside attn.down). */
void gen_mla_fwd(gen_t *g, uint32_t li, uint32_t mb)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, a_t, qk, vd;
    op_t              op;
    uint64_t          down_w = (uint64_t)m->q_lora_rank + m->kv_lora_rank + m->qk_rope_head_dim;
    uint64_t          latent = (uint64_t)m->q_lora_rank + m->kv_lora_rank;
    uint64_t          qin    = m->q_lora_rank ? m->q_lora_rank : h;

    gen_attn_dims(g, &a_t, &qk, &vd);

    /* Megatron-Core: the down-projections (replicated weights) and the latent norms run on the
     * sequence-parallel shard; the up-projections all-gather the normalised latents */
    gen_op_begin(&op, (int32_t)mb, 0, "attn.down");
    gen_op_in(&op, &st->ln1_out);
    gen_op_in(&op, &P(g, li, PG_QKV)->param);
    op.flops = 2.0 * nsp * h * down_w;
    gen_op_out(g, &op, &st->down, ACT, 2 * nsp * down_w, (int32_t)L, NOEXP, "L%u.mb%u.attn.down", L,
               mb);
    gen_op_emit(g, &op);

    gen_op_begin(&op, (int32_t)mb, 0, "attn.down_norm");
    gen_op_in(&op, &st->down);
    op.flops = 4.0 * nsp * (down_w - m->qk_rope_head_dim);
    gen_op_out(g, &op, &st->dnorm, ACT, 2 * nsp * (down_w - m->qk_rope_head_dim), (int32_t)L, NOEXP,
               "L%u.mb%u.attn.down_norm", L, mb);
    gen_op_emit(g, &op);

    gen_op_begin(&op, (int32_t)mb, 0, "attn.up");
    gen_op_in(&op, &st->dnorm);
    if (m->q_lora_rank == 0) {
        gen_op_in(&op, &st->ln1_out);
    }
    gen_op_in(&op, &P(g, li, PG_UP)->param);
    if (g->tp > 1) {
        gen_op_scratch(g, &op, 2 * T * (latent + m->qk_rope_head_dim), (int32_t)L,
                       "L%u.mb%u.attn.latent.gathered", L, mb);
        op.tp_ns = gen_tp_coll_ns(g, 2.0 * T * (latent + m->qk_rope_head_dim));
        if (m->q_lora_rank == 0) {
            gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
            op.tp_ns += gen_tp_coll_ns(g, 2.0 * T * h);
        }
    }
    op.flops = 2.0 * T * a_t * (qin * qk + (double)m->kv_lora_rank * (m->qk_nope_head_dim + vd));
    gen_op_out(g, &op, &st->q_up, ACT, 2 * T * a_t * qk, (int32_t)L, NOEXP, "L%u.mb%u.attn.q_up", L,
               mb);
    gen_op_out(g, &op, &st->kv_up, ACT, 2 * T * a_t * (m->qk_nope_head_dim + vd), (int32_t)L, NOEXP,
               "L%u.mb%u.attn.kv_up", L, mb);
    gen_op_emit(g, &op);
}

/* MLA's projections in backward: from the gradients of the up-projection outputs (*dq, *dkv,
 * freed) to the gradient of ln1's output (*dln1). */
void gen_mla_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dq_p, tref_t *dkv_p, tref_t *dln1_p)
{
    const mt_model_t *m  = g->m;
    lstate_t         *st = LS(g, li, mb);
    uint32_t          L  = g->layer_of[li];
    uint64_t          h = m->hidden, T = g->T, nsp = g->nsp, a_t, qk, vd;
    tref_t            dq = *dq_p, dkv = *dkv_p, dln1;
    op_t              op;
    uint64_t          down_w = (uint64_t)m->q_lora_rank + m->kv_lora_rank + m->qk_rope_head_dim;
    uint64_t          latent = (uint64_t)m->q_lora_rank + m->kv_lora_rank;
    tref_t            ddn, ddown;

    gen_attn_dims(g, &a_t, &qk, &vd);

    gen_op_begin(&op, (int32_t)mb, 0, "attn.up.bwd");
    gen_op_in(&op, &dq);
    gen_op_in(&op, &dkv);
    gen_op_in(&op, &st->dnorm);
    gen_op_in(&op, &P(g, li, PG_UP)->param);
    gen_op_grad(g, &op, P(g, li, PG_UP));
    if (g->tp > 1) {
        /* re-gather the latents, reduce-scatter their gradient to the sequence shard */
        gen_op_scratch(g, &op, 2 * T * (latent + m->qk_rope_head_dim), (int32_t)L,
                       "L%u.mb%u.attn.latent.gathered", L, mb);
        op.tp_ns = 2 * gen_tp_coll_ns(g, 2.0 * T * (latent + m->qk_rope_head_dim));
        if (m->q_lora_rank == 0) {
            gen_op_scratch(g, &op, 2 * T * h, (int32_t)L, "L%u.mb%u.ln1.gathered", L, mb);
            op.tp_ns += 2 * gen_tp_coll_ns(g, 2.0 * T * h);
        }
    }
    op.flops = 4.0 * T * a_t *
               ((m->q_lora_rank ? m->q_lora_rank : h) * qk +
                (double)m->kv_lora_rank * (m->qk_nope_head_dim + vd));
    gen_op_free(&op, &dq);
    gen_op_free(&op, &dkv);
    gen_op_free(&op, &st->q_up);
    gen_op_free(&op, &st->kv_up);
    gen_op_free(&op, &st->dnorm);
    gen_dout(g, &op, &ddn, st->dnorm.size, L, mb, "attn.down_norm");
    gen_op_emit(g, &op);

    gen_op_begin(&op, (int32_t)mb, 0, "attn.down_norm.bwd");
    gen_op_in(&op, &ddn);
    gen_op_in(&op, &st->down);
    op.flops = 8.0 * nsp * down_w;
    gen_op_free(&op, &ddn);
    gen_dout(g, &op, &ddown, st->down.size, L, mb, "attn.down");
    gen_op_emit(g, &op);

    gen_op_begin(&op, (int32_t)mb, 0, "attn.down.bwd");
    gen_op_in(&op, &ddown);
    gen_op_in(&op, &st->ln1_out);
    gen_op_in(&op, &P(g, li, PG_QKV)->param);
    gen_op_grad(g, &op, P(g, li, PG_QKV));
    op.flops = 4.0 * nsp * h * down_w;
    gen_op_free(&op, &ddown);
    gen_op_free(&op, &st->down);
    gen_op_free(&op, &st->ln1_out);
    gen_dout(g, &op, &dln1, 2 * nsp * h, L, mb, "ln1.out");
    gen_op_emit(g, &op);
    *dln1_p = dln1;
}
