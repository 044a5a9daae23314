/* gen_int.h - the generator's internals shared by its files (not part of memtrace's API) */
#ifndef MT_GEN_INT_H
#define MT_GEN_INT_H

#include "tools/memtrace/gen.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GEN_MAX_EXPERTS 4096
#define OP_IO 16  /* reads, updates, frees or recompute inputs of one operator */
#define OP_OUTS 6 /* tensors one operator allocates */
#define SRC_MAX 8 /* recompute inputs carried by a transient tensor */

/* Streams: 0 compute; the expert all-to-alls; pipeline sends; pipeline receives (each
 * direction of a link is its own queue). */
#define GEN_STREAM_A2A 1
#define GEN_STREAM_SEND 2
#define GEN_STREAM_RECV 3

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
    uint64_t tp_ns;       /* TP collectives of the operator: fused with its compute (MC2) when
                             the tp overlap is on, else serialised after it */
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

enum {
    PG_LN1,
    PG_QKV,
    PG_UP,
    PG_PROJ,
    PG_LN2,
    PG_FC1,
    PG_FC2,
    PG_ROUTER,
    PG_SFC1,
    PG_SFC2,
    PG_ALN, /* sandwich norm after attention */
    PG_MLN, /* sandwich norm after the MLP */
    PG_N
};

/* Tensors one layer keeps from its forward to its backward, for one micro-batch. */
typedef struct lstate {
    tref_t    ln1_in, ln1_out, qkv, down, dnorm, q_up, kv_up, softmax, amask, aout, ctx, lse;
    tref_t    mask1, ln2_in, ln2_out, fc1, act, mask2, logits, dispatch, combined, sfc1, sact;
    tref_t    attn_out, mlp_out; /* block outputs before the sandwich norms */
    tref_t    x_out;             /* head input or next-stage output when the chunk ends here */
    tref_t   *efc1, *eact;       /* per local expert */
    uint32_t *ecount;            /* tokens per local expert */
    uint64_t  rows;              /* dispatch rows: sum of ecount */
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

    uint64_t *waits; /* [n_waits]: the stage's wait before each chunk execution (bubbles) */
    uint32_t  n_waits;
    uint64_t  wait_end; /* after the optimizer, until the slowest stage ends the step */
} gen_t;

#define ACT MEMSVC_KIND_ACTIVATION
#define WS MEMSVC_KIND_WORKSPACE
#define NOEXP MEMSVC_TAG_NONE

static inline lstate_t *LS(gen_t *g, uint32_t li, uint32_t mb)
{
    return &g->ls[(size_t)li * g->p->layout.microbatches + mb];
}

static inline pgroup_t *P(gen_t *g, uint32_t li, int which)
{
    return &g->pg[g->lpg[li * PG_N + which]];
}

static inline pgroup_t *PE(gen_t *g, uint32_t li, uint32_t e, int fc2)
{
    return &g->pg[g->epg[li] + 2 * (int32_t)e + fc2];
}

/* ---- gen_op.c: events and operators ---- */
void gen_emit(gen_t *g, mt_event_t *ev);
void gen_hint(gen_t *g, memsvc_hint_type_t type, int32_t layer, int32_t mb, memsvc_phase_t ph);
void gen_free_id(gen_t *g, uint64_t id);
memsvc_tags_t gen_tags_of(gen_t *g, int32_t layer, int32_t mb, int32_t expert);
void          gen_op_begin(op_t *op, int32_t mb, uint32_t stream, const char *fmt, ...);
void          gen_op_in(op_t *op, const tref_t *t);
void          gen_op_in_slice(op_t *op, const tref_t *t, uint64_t slice);
void          gen_op_upd(op_t *op, const tref_t *t);
void          gen_op_upd_slice(op_t *op, const tref_t *t, uint64_t slice);
void          gen_op_free(op_t *op, tref_t *t);
void gen_op_out(gen_t *g, op_t *op, tref_t *dst, memsvc_kind_t kind, uint64_t size, int32_t layer,
                int32_t expert, const char *fmt, ...);
void gen_op_scratch(gen_t *g, op_t *op, uint64_t size, int32_t layer, const char *fmt, ...);
void gen_op_grad(gen_t *g, op_t *op, pgroup_t *pg);
uint64_t gen_link_ns(const sim_link_desc_t *link, double bytes);
uint64_t gen_tp_coll_ns(gen_t *g, double full_bytes);
uint64_t gen_etp_coll_ns(gen_t *g, double full_bytes);
void     gen_op_emit(gen_t *g, op_t *op);
uint64_t gen_a2a_ns(gen_t *g, double bytes);
void     gen_wait(gen_t *g, uint64_t ns);
void     gen_dout(gen_t *g, op_t *op, tref_t *dst, uint64_t size, uint32_t L, uint32_t mb,
                  const char *what);
/* ---- gen_param.c ---- */
int32_t  gen_pg_add(gen_t *g, int32_t layer, int32_t expert, uint64_t n, uint32_t dp_shard,
                    const char *fmt, ...);
uint64_t gen_norm_n(const mt_model_t *m);
void     gen_layer_params(gen_t *g, uint32_t li);
void     gen_alloc_params(gen_t *g);
void     gen_free_params(gen_t *g);
void     gen_optimizer(gen_t *g);
/* ---- gen_router.c ---- */
void gen_router_weights(gen_t *g, uint32_t li);
void gen_route(gen_t *g, uint32_t li, uint32_t mb, lstate_t *st);
/* ---- gen_attn.c, gen_mla.c ---- */
void   gen_attn_dims(gen_t *g, uint64_t *a_t, uint64_t *qk, uint64_t *vd);
void   gen_mla_fwd(gen_t *g, uint32_t li, uint32_t mb);
void   gen_mla_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dq_p, tref_t *dkv_p, tref_t *dln1_p);
void   gen_attn_fwd(gen_t *g, uint32_t li, uint32_t mb);
tref_t gen_attn_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dmid);
/* ---- gen_dense.c ---- */
void   gen_block_out(gen_t *g, op_t *op, uint32_t li, uint32_t mb, bool last_in_chunk);
void   gen_post_norm_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk);
tref_t gen_post_norm_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, int which);
void   gen_ffn_fwd_in(gen_t *g, uint32_t li, uint32_t mb, uint64_t f, uint64_t w1, int pg_fc1,
                      const char *name, tref_t *fc1, tref_t *act);
void   gen_dense_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk);
void   gen_ffn_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, tref_t *act, tref_t *mask,
                   tref_t *fc1, uint64_t f, uint64_t w1, int pg_fc1, int pg_fc2, const char *name,
                   bool last_ln2_use, tref_t *dln2);
tref_t gen_ffn_bwd_out(gen_t *g, uint32_t li, uint32_t mb, tref_t *dres, tref_t *act, tref_t *mask,
                       tref_t *fc1, uint64_t f, uint64_t w1, int pg_fc2, const char *name);
void   gen_ffn_bwd_in(gen_t *g, uint32_t li, uint32_t mb, tref_t dfc1, uint64_t w1, int pg_fc1,
                      const char *name, bool last_ln2_use, tref_t *dln2);
tref_t gen_ln2_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dln2, tref_t dres, tref_t dbr);
tref_t gen_dense_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dres);
/* ---- gen_moe.c ---- */
void   gen_moe_fwd(gen_t *g, uint32_t li, uint32_t mb, bool last_in_chunk);
tref_t gen_moe_bwd(gen_t *g, uint32_t li, uint32_t mb, tref_t dres);
/* ---- gen_chunk.c ---- */
void gen_layer_output(gen_t *g, op_t *op, uint32_t li, uint32_t mb, bool last_in_chunk);
void gen_chunk_fwd(gen_t *g, uint32_t c, uint32_t mb);
void gen_chunk_bwd(gen_t *g, uint32_t c, uint32_t mb);
/* ---- gen_sched.c ---- */
void            gen_step(gen_t *g);
memsvc_status_t gen_sched_waits(gen_t *g);
#endif /* MT_GEN_INT_H */
