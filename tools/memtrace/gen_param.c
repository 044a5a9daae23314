/* gen_param.c - the generator's parameter groups, their durable state and the optimizer step */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameters ---------------------------------------------------------------------- */

int32_t gen_pg_add(gen_t *g, int32_t layer, int32_t expert, uint64_t n, uint32_t dp_shard,
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

uint64_t gen_norm_n(const mt_model_t *m)
{
    return m->bias ? 2ull * m->hidden : m->hidden;
}

/* Parameter groups of one layer (sizes on this rank: TP-sharded where Megatron shards). */
void gen_layer_params(gen_t *g, uint32_t li)
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
    lp[PG_LN1] = gen_pg_add(g, (int32_t)L, E, gen_norm_n(m), dpd, "L%u|.ln1", L);
    if (m->attn == MT_ATTN_MLA) {
        uint64_t qk  = m->qk_nope_head_dim + m->qk_rope_head_dim;
        uint64_t qin = m->q_lora_rank ? m->q_lora_rank : h;

        /* down-projections and latent norms are replicated over TP */
        lp[PG_QKV] = gen_pg_add(g, (int32_t)L, E,
                                h * (m->q_lora_rank + m->kv_lora_rank + m->qk_rope_head_dim) +
                                    m->q_lora_rank + m->kv_lora_rank,
                                dpd, "L%u|.attn.down", L);
        lp[PG_UP]  = gen_pg_add(
             g, (int32_t)L, E,
             (qin * a * qk + (uint64_t)m->kv_lora_rank * a * (m->qk_nope_head_dim + m->v_head_dim)) /
                 tp,
             dpd, "L%u|.attn.up", L);
        lp[PG_PROJ] =
            gen_pg_add(g, (int32_t)L, E, a * m->v_head_dim * h / tp, dpd, "L%u|.attn.proj", L);
    } else {
        uint64_t q = a * m->head_dim, kv = (uint64_t)m->kv_heads * m->head_dim;

        lp[PG_QKV] =
            gen_pg_add(g, (int32_t)L, E, (h * (q + 2 * kv) + (m->bias ? q + 2 * kv : 0)) / tp, dpd,
                       "L%u|.attn.qkv", L);
        lp[PG_PROJ] =
            gen_pg_add(g, (int32_t)L, E, q * h / tp + (m->bias ? h : 0), dpd, "L%u|.attn.proj", L);
    }
    if (m->sandwich_norm) {
        lp[PG_ALN] = gen_pg_add(g, (int32_t)L, E, gen_norm_n(m), dpd, "L%u|.attn.post_norm", L);
    }
    lp[PG_LN2] = gen_pg_add(g, (int32_t)L, E, gen_norm_n(m), dpd, "L%u|.ln2", L);
    if (m->sandwich_norm) {
        lp[PG_MLN] = gen_pg_add(g, (int32_t)L, E, gen_norm_n(m), dpd, "L%u|.mlp.post_norm", L);
    }
    if (!mt_model_layer_is_moe(m, L)) {
        uint64_t w1 = (m->mlp == MT_MLP_SWIGLU) ? 2ull * m->ffn : m->ffn;

        lp[PG_FC1] = gen_pg_add(g, (int32_t)L, E, (h * w1 + (m->bias ? w1 : 0)) / tp, dpd,
                                "L%u|.mlp.fc1", L);
        lp[PG_FC2] = gen_pg_add(g, (int32_t)L, E, (uint64_t)m->ffn * h / tp + (m->bias ? h : 0),
                                dpd, "L%u|.mlp.fc2", L);
        g->epg[li] = -1;
        return;
    }
    lp[PG_ROUTER] =
        gen_pg_add(g, (int32_t)L, E, (uint64_t)m->experts * h, dpd, "L%u|.moe.router", L);
    if (m->shared_experts > 0) {
        uint64_t sf = (uint64_t)m->shared_experts * m->shared_expert_ffn;

        lp[PG_SFC1] = gen_pg_add(g, (int32_t)L, E, h * sf * (m->mlp == MT_MLP_SWIGLU ? 2 : 1) / tp,
                                 dpd, "L%u|.shared.fc1", L);
        lp[PG_SFC2] = gen_pg_add(g, (int32_t)L, E, sf * h / tp, dpd, "L%u|.shared.fc2", L);
    }
    g->epg[li] = (int32_t)g->n_pg;
    for (e = 0; e < g->e_loc; e++) {
        uint64_t ef = m->expert_ffn;
        int32_t  ge = (int32_t)(g->e0 + e);

        gen_pg_add(g, (int32_t)L, ge, h * ef * (m->mlp == MT_MLP_SWIGLU ? 2 : 1) / g->etp, dpe,
                   "L%u.e%d|.fc1", L, ge);
        gen_pg_add(g, (int32_t)L, ge, ef * h / g->etp, dpe, "L%u.e%d|.fc2", L, ge);
    }
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
    t->id      = ++g->next_id;
    t->size    = size;
    t->durable = true;
    memset(&ev, 0, sizeof(ev));
    ev.type    = MT_EV_ALLOC;
    ev.tensor  = t->id;
    ev.key     = key;
    ev.size    = size;
    ev.kind    = kind;
    ev.tags    = gen_tags_of(g, pg->layer, MEMSVC_TAG_NONE, pg->expert);
    ev.durable = true;
    gen_emit(g, &ev);
    memset(&ev, 0, sizeof(ev));
    ev.type   = MT_EV_ACCESS;
    ev.tensor = t->id;
    ev.write  = true;
    gen_emit(g, &ev);
}

void gen_alloc_params(gen_t *g)
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

void gen_free_params(gen_t *g)
{
    uint32_t i;

    for (i = 0; i < g->n_pg; i++) {
        gen_free_id(g, g->pg[i].param.id);
        gen_free_id(g, g->pg[i].optim.id);
    }
}

/* Optimizer step: per group, DP reduce-scatter of the fp32 gradient, Adam on the shard,
 * all-gather of the bf16 parameters (collectives folded into the operator's time). */
void gen_optimizer(gen_t *g)
{
    uint32_t i;

    gen_hint(g, MEMSVC_HINT_PHASE, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_OPTIMIZER);
    for (i = 0; i < g->n_pg && g->status == MEMSVC_OK; i++) {
        pgroup_t   *pg    = &g->pg[i];
        const char *bar   = strchr(pg->name, '|');
        double      shard = (double)pg->n / pg->dp_shard;
        double      frac  = (double)(pg->dp_shard - 1) / pg->dp_shard;
        op_t        op;

        g->cur_v = (uint32_t)pg->stage;
        gen_op_begin(&op, MEMSVC_TAG_NONE, 0, "optim.%.*s%s", (int)(bar - pg->name), pg->name,
                     bar + 1);
        gen_op_in(&op, &pg->grad);
        gen_op_in(&op, &pg->param);
        gen_op_in(&op, &pg->optim);
        gen_op_upd(&op, &pg->param);
        gen_op_upd(&op, &pg->optim);
        op.bytes   = (uint64_t)(shard * (4 + 2 + 2 * 12)); /* grad, param, state read+write */
        op.flops   = 12 * shard;
        op.comm_ns = gen_link_ns(&g->node->nic, pg->n * 4 * frac) +
                     gen_link_ns(&g->node->nic, pg->n * 2 * frac);
        op.no_recompute = true;
        gen_op_free(&op, &pg->grad);
        gen_op_emit(g, &op);
        memset(&pg->grad, 0, sizeof(pg->grad));
    }
}
