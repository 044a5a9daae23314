/* model.h - transformer model shapes (dense and MoE) for trace generation, with parameter counts */
#ifndef MT_MODEL_H
#define MT_MODEL_H

#include "client/memsvc_status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum mt_attn {
    MT_ATTN_MHA = 0, /* multi-head: kv_heads == heads */
    MT_ATTN_GQA = 1, /* grouped-query: kv_heads divides heads */
    MT_ATTN_MLA = 2  /* multi-head latent attention (DeepSeek-V2/V3) */
} mt_attn_t;

typedef enum mt_mlp {
    MT_MLP_SWIGLU = 0, /* gate and up projections (2 x ffn wide), SiLU, down projection */
    MT_MLP_GELU   = 1  /* one up projection (ffn wide), GeLU, down projection */
} mt_mlp_t;

/* One model. Every field can be overridden by mt_model_set(). */
typedef struct mt_model {
    char      name[64];     /* preset name, or the preset it started from */
    uint32_t  layers;       /* transformer layers (without MTP) */
    uint32_t  dense_layers; /* the first k layers have a dense FFN (MoE models) */
    uint32_t  hidden;       /* model width h */
    uint32_t  ffn;          /* dense FFN width */
    uint32_t  heads;        /* query heads a */
    uint32_t  kv_heads;     /* key/value heads (MHA: = heads; MLA: unused) */
    uint32_t  head_dim;     /* per-head width (MHA/GQA) */
    mt_attn_t attn;
    uint32_t  q_lora_rank;       /* MLA: query compression rank (0: no query compression) */
    uint32_t  kv_lora_rank;      /* MLA: key/value compression rank */
    uint32_t  qk_nope_head_dim;  /* MLA: per-head query/key width without rotary part */
    uint32_t  qk_rope_head_dim;  /* MLA: per-head rotary width (key part shared by heads) */
    uint32_t  v_head_dim;        /* MLA: per-head value width */
    uint32_t  experts;           /* routed experts (0: dense model) */
    uint32_t  shared_experts;    /* shared experts, always active */
    uint32_t  top_k;             /* routed experts per token */
    uint32_t  expert_ffn;        /* routed expert FFN width */
    uint32_t  shared_expert_ffn; /* shared expert FFN width (per shared expert) */
    uint32_t  vocab;             /* vocabulary */
    uint32_t  seq_len;           /* default sequence length s */
    uint32_t  micro_batch;       /* default micro-batch size b */
    mt_mlp_t  mlp;
    bool      fused_attention;  /* flash attention: keeps logsumexp, not softmax */
    bool      tied_embeddings;  /* output head shares the input embedding */
    bool      dropout;          /* dropout after attention probabilities and both blocks */
    bool      bias;             /* linear biases, LayerNorm with bias, learned positions (GPT) */
    bool      sandwich_norm;    /* four norms per layer: before and after attention and MLP */
    bool      causal;           /* causal mask: the attention core does half the work */
    uint32_t  mtp_layers;       /* multi-token prediction modules (not traced) */
    double    published_total;  /* published total parameters (0: none) */
    double    published_active; /* published activated parameters per token (0: none) */
    bool      published_excludes_embedding; /* the published counts leave the input embedding out */
    char      layout[64];   /* layout the model is published as trained with ("": none) */
    bool      tp_extend_ep; /* ... with experts over tp x ep ranks (MindSpeed) */
    char      overlap[32];  /* communication the recipe overlaps with compute ("tp,ep") */
} mt_model_t;

/* Names of the presets, NULL-terminated. */
const char *const *mt_model_preset_names(void);

/* Fill *model_p with a preset. MEMSVC_ERR_UNKNOWN_KEY if there is none of that name. */
memsvc_status_t mt_model_preset(const char *name, mt_model_t *model_p);

/*
 * Apply one override "key=value" (layers=, hidden=, heads=, kv_lora_rank=, experts=, top_k=,
 * expert_ffn=, shared_ffn=, vocab=, seq=, mbs=, attn=mla, mlp=gelu, fused_attention=0, ...;
 * mt_model_keys() lists them). Unknown key: MEMSVC_ERR_UNKNOWN_KEY; malformed or zero where
 * a positive number is needed: MEMSVC_ERR_PARSE. On error *model is unchanged and err holds
 * a message. The model is not validated as a whole: call mt_model_validate() after the last.
 */
memsvc_status_t mt_model_set(mt_model_t *model, const char *assignment, char *err, size_t errlen);

/*
 * A model from a Hugging Face config.json (DeepSeek-V2/V3, Mixtral, Qwen-MoE, Llama style; the
 * keys read and the defaults are in docs/generator.md). Errors: MEMSVC_ERR_IO (unreadable),
 * MEMSVC_ERR_PARSE (invalid JSON, a required key missing, a value of the wrong type or range:
 * err names the file and the key), MEMSVC_ERR_INVALID_PARAM (a layer structure the model cannot
 * express, or an inconsistent model). *model_p is written only on success.
 */
memsvc_status_t mt_model_from_hf(const char *path, mt_model_t *model_p, char *err, size_t errlen);

/*
 * A model (and, from the parallel sizes, its layout string) from Megatron-LM arguments: a string
 * "--num-layers 61 --hidden-size 7168 ...", or "@FILE" for a file of them (whitespace, '\'
 * continuations and # comments allowed). Arguments it does not map are ignored. Errors as
 * mt_model_from_hf(); err names the argument.
 */
memsvc_status_t mt_model_from_megatron(const char *args, mt_model_t *model_p, char *err,
                                       size_t errlen);

/* Override keys, NULL-terminated. */
const char *const *mt_model_keys(void);

/* Check consistency (divisibility, ranges). MEMSVC_ERR_INVALID_PARAM with a message. */
memsvc_status_t mt_model_validate(const mt_model_t *model, char *err, size_t errlen);

/* True if layer (0-based) has routed experts. */
bool mt_model_layer_is_moe(const mt_model_t *model, uint32_t layer);

/*
 * Parameters of the main model (embeddings, output head unless tied, attention with its norms
 * and MLA projections, router, routed and shared experts, dense FFNs, final norm; no MTP).
 * Active: what one token uses: everything except the routed experts it is not sent to
 * (embeddings included). Either pointer may be NULL.
 */
void mt_model_params(const mt_model_t *model, uint64_t *total_p, uint64_t *active_p);

/* Parameters of the input embedding (with learned positions): mt_model_params() counts them;
 * subtract them for the "without input embedding" figures. */
uint64_t mt_model_embedding_params(const mt_model_t *model);

/*
 * Model FLOPs of one token in one training step (forward and backward: 3 x forward), as MFU
 * counts them: 2 per weight of every matrix multiply the token goes through (its top_k routed
 * experts, the shared ones, attention projections, output head; not the input embedding, norms
 * or router softmax), plus the attention core over seq keys (halved when causal). No
 * recomputation. layers [first, first + count) only, plus the head if with_head.
 */
double mt_model_flops_per_token(const mt_model_t *model, uint32_t seq, uint32_t first,
                                uint32_t count, bool with_head);

/* Parameters of the MTP modules (each: two norms, a 2h x h projection, one MoE layer). */
uint64_t mt_model_mtp_params(const mt_model_t *model);

/* Print the model, one "key = value" per line (FILE *). */
void mt_model_print(const mt_model_t *model, void *file);

const char *mt_attn_name(mt_attn_t attn);
const char *mt_mlp_name(mt_mlp_t mlp);

#endif /* MT_MODEL_H */
