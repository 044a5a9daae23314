/* model_cfg.c - models from the configs users have: Hugging Face config.json, Megatron-LM args */
#include "tools/memtrace/model.h"

#include <jansson.h>

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_SEQ_DEFAULT 4096 /* training sequence when the config gives none (or a longer one) */

static memsvc_status_t cfg_fail(char *err, size_t errlen, memsvc_status_t status, const char *fmt,
                                ...) __attribute__((format(printf, 4, 5)));

static memsvc_status_t cfg_fail(char *err, size_t errlen, memsvc_status_t status, const char *fmt,
                                ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* What both forms start from: the fields no config gives, as the presets have them. */
static void cfg_base(mt_model_t *m, const char *name)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->mlp             = MT_MLP_SWIGLU;
    m->fused_attention = true;
    m->causal          = true;
    m->micro_batch     = 1;
    m->seq_len         = CFG_SEQ_DEFAULT;
}

/* ---- Hugging Face config.json ------------------------------------------------------------ */

typedef struct hf {
    const json_t *root;
    const char   *path;
    char         *err;
    size_t        errlen;
} hf_t;

/*
 * Key as an integer in [min, UINT32_MAX]. Absent or null: *have_p false (if have_p is NULL the
 * key is required: MEMSVC_ERR_PARSE naming it). Wrong type or range: MEMSVC_ERR_PARSE.
 */
static memsvc_status_t hf_u32(hf_t *h, const char *key, uint32_t min, uint32_t *v_p, bool *have_p)
{
    const json_t *v = json_object_get(h->root, key);
    json_int_t    i;

    if (v == NULL || json_is_null(v)) {
        if (have_p != NULL) {
            *have_p = false;
            return MEMSVC_OK;
        }
        return cfg_fail(h->err, h->errlen, MEMSVC_ERR_PARSE, "%s: %s: missing (required)", h->path,
                        key);
    }
    i = json_is_integer(v) ? json_integer_value(v) : -1;
    if (i < (json_int_t)min || i > (json_int_t)UINT32_MAX) {
        return cfg_fail(h->err, h->errlen, MEMSVC_ERR_PARSE, "%s: %s: not an integer in %u..%u",
                        h->path, key, min, UINT32_MAX);
    }
    *v_p = (uint32_t)i;
    if (have_p != NULL) {
        *have_p = true;
    }
    return MEMSVC_OK;
}

/* Keys whose other values describe layers the model struct cannot express. */
static memsvc_status_t hf_unsupported(hf_t *h)
{
    static const char *const must_be_one[] = {"moe_layer_freq", "decoder_sparse_step"};
    const json_t            *v;
    size_t                   i;

    for (i = 0; i < sizeof(must_be_one) / sizeof(must_be_one[0]); i++) {
        v = json_object_get(h->root, must_be_one[i]);
        if (v != NULL && !(json_is_integer(v) && json_integer_value(v) == 1)) {
            return cfg_fail(h->err, h->errlen, MEMSVC_ERR_INVALID_PARAM,
                            "%s: %s: only 1 (every layer after the dense ones has experts) is "
                            "supported",
                            h->path, must_be_one[i]);
        }
    }
    v = json_object_get(h->root, "mlp_only_layers");
    if (v != NULL && !(json_is_array(v) && json_array_size(v) == 0)) {
        return cfg_fail(h->err, h->errlen, MEMSVC_ERR_INVALID_PARAM,
                        "%s: mlp_only_layers: only [] is supported (dense layers come first: "
                        "first_k_dense_replace)",
                        h->path);
    }
    return MEMSVC_OK;
}

static memsvc_status_t hf_attention(hf_t *h, mt_model_t *m)
{
    memsvc_status_t s;
    bool            have;
    uint32_t        kv_lora = 0;

    if ((s = hf_u32(h, "num_key_value_heads", 1, &m->kv_heads, &have)) != MEMSVC_OK) {
        return s;
    }
    if (!have) {
        m->kv_heads = m->heads;
    }
    if ((s = hf_u32(h, "head_dim", 1, &m->head_dim, &have)) != MEMSVC_OK) {
        return s;
    }
    if (!have) {
        if (m->hidden % m->heads != 0) {
            return cfg_fail(h->err, h->errlen, MEMSVC_ERR_INVALID_PARAM,
                            "%s: num_attention_heads (%u) does not divide hidden_size (%u); give "
                            "head_dim",
                            h->path, m->heads, m->hidden);
        }
        m->head_dim = m->hidden / m->heads;
    }
    if ((s = hf_u32(h, "kv_lora_rank", 1, &kv_lora, &have)) != MEMSVC_OK) {
        return s;
    }
    if (!have) {
        m->attn = (m->kv_heads == m->heads) ? MT_ATTN_MHA : MT_ATTN_GQA;
        return MEMSVC_OK;
    }
    /* multi-head latent attention (DeepSeek-V2/V3) */
    m->attn         = MT_ATTN_MLA;
    m->kv_lora_rank = kv_lora;
    if ((s = hf_u32(h, "q_lora_rank", 1, &m->q_lora_rank, &have)) != MEMSVC_OK) {
        return s; /* null (V2-Lite): no query compression */
    }
    if ((s = hf_u32(h, "qk_nope_head_dim", 1, &m->qk_nope_head_dim, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "qk_rope_head_dim", 0, &m->qk_rope_head_dim, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "v_head_dim", 1, &m->v_head_dim, NULL)) != MEMSVC_OK) {
        return s;
    }
    m->head_dim = m->v_head_dim;
    return MEMSVC_OK;
}

static memsvc_status_t hf_experts(hf_t *h, mt_model_t *m)
{
    static const char *const expert_keys[] = {"n_routed_experts", "num_local_experts",
                                              "num_experts"};
    memsvc_status_t          s;
    uint32_t                 shared_ffn = 0;
    bool                     have       = false;
    size_t                   i;

    for (i = 0; i < sizeof(expert_keys) / sizeof(expert_keys[0]) && !have; i++) {
        if ((s = hf_u32(h, expert_keys[i], 0, &m->experts, &have)) != MEMSVC_OK) {
            return s;
        }
    }
    if (!have || m->experts == 0) {
        m->experts = 0;
        return MEMSVC_OK;
    }
    if ((s = hf_u32(h, "num_experts_per_tok", 1, &m->top_k, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "first_k_dense_replace", 0, &m->dense_layers, &have)) != MEMSVC_OK) {
        return s;
    }
    /* an expert's width: moe_intermediate_size, else (Mixtral) the FFN's */
    if ((s = hf_u32(h, "moe_intermediate_size", 1, &m->expert_ffn, &have)) != MEMSVC_OK) {
        return s;
    }
    if (!have) {
        m->expert_ffn = m->ffn;
    }
    /* shared experts: DeepSeek's n_shared_experts of the expert width, or Qwen-MoE's one */
    if ((s = hf_u32(h, "n_shared_experts", 0, &m->shared_experts, &have)) != MEMSVC_OK) {
        return s;
    }
    if (have) {
        m->shared_expert_ffn = m->expert_ffn;
    }
    if ((s = hf_u32(h, "shared_expert_intermediate_size", 0, &shared_ffn, &have)) != MEMSVC_OK) {
        return s;
    }
    if (have && shared_ffn > 0) {
        m->shared_experts    = 1;
        m->shared_expert_ffn = shared_ffn;
    }
    return MEMSVC_OK;
}

static memsvc_status_t hf_build(hf_t *h, mt_model_t *m)
{
    const json_t   *type = json_object_get(h->root, "model_type"), *tied;
    memsvc_status_t s;
    uint32_t        max_pos = 0;
    bool            have;
    char            name[64];

    if (!json_is_object(h->root)) {
        return cfg_fail(h->err, h->errlen, MEMSVC_ERR_PARSE, "%s: not a JSON object", h->path);
    }
    snprintf(name, sizeof(name), "hf:%.56s", json_is_string(type) ? json_string_value(type) : "");
    cfg_base(m, name);
    if ((s = hf_unsupported(h)) != MEMSVC_OK ||
        (s = hf_u32(h, "hidden_size", 1, &m->hidden, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "num_hidden_layers", 1, &m->layers, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "num_attention_heads", 1, &m->heads, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "intermediate_size", 1, &m->ffn, NULL)) != MEMSVC_OK ||
        (s = hf_u32(h, "vocab_size", 1, &m->vocab, NULL)) != MEMSVC_OK ||
        (s = hf_attention(h, m)) != MEMSVC_OK || (s = hf_experts(h, m)) != MEMSVC_OK ||
        (s = hf_u32(h, "num_nextn_predict_layers", 0, &m->mtp_layers, &have)) != MEMSVC_OK ||
        (s = hf_u32(h, "max_position_embeddings", 1, &max_pos, &have)) != MEMSVC_OK) {
        return s;
    }
    if (have && max_pos < m->seq_len) {
        m->seq_len = max_pos;
    }
    tied = json_object_get(h->root, "tie_word_embeddings");
    if (tied != NULL && !json_is_boolean(tied)) {
        return cfg_fail(h->err, h->errlen, MEMSVC_ERR_PARSE,
                        "%s: tie_word_embeddings: not a boolean", h->path);
    }
    m->tied_embeddings = json_is_true(tied);
    return MEMSVC_OK;
}

memsvc_status_t mt_model_from_hf(const char *path, mt_model_t *model_p, char *err, size_t errlen)
{
    json_error_t    jerr;
    json_t         *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    mt_model_t      m;
    hf_t            h = {root, path, err, errlen};
    memsvc_status_t s;

    if (root == NULL) {
        if (jerr.line <= 0) {
            return cfg_fail(err, errlen, MEMSVC_ERR_IO, "%s: %s", path, jerr.text);
        }
        return cfg_fail(err, errlen, MEMSVC_ERR_PARSE, "%s: line %d, column %d: invalid JSON: %s",
                        path, jerr.line, jerr.column, jerr.text);
    }
    s = hf_build(&h, &m);
    json_decref(root);
    if (s == MEMSVC_OK) {
        s = mt_model_validate(&m, err, errlen);
    }
    if (s == MEMSVC_OK) {
        *model_p = m;
    }
    return s;
}

/* ---- Megatron-LM arguments --------------------------------------------------------------- */

#define MEG_TOKENS_MAX 512

typedef struct meg {
    char       *tok[MEG_TOKENS_MAX];
    int         n;
    char       *err;
    size_t      errlen;
    const char *src; /* "--megatron-args" or the file's path, for messages */
} meg_t;

/* Split text into tokens in place: whitespace, line continuations '\', # comments to the end of
 * the line; quotes around a token are removed. */
static memsvc_status_t meg_split(meg_t *g, char *text)
{
    char *p = text, *q;

    /* a backslash at the end of a line joins it to the next, as in a shell */
    for (q = strchr(text, '\\'); q != NULL; q = strchr(q + 1, '\\')) {
        if (q[1] == '\n') {
            q[0] = ' ';
        }
    }
    while (*p != '\0') {
        char *start;

        while (isspace((unsigned char)*p)) {
            p++;
        }
        if (*p == '#') {
            while (*p != '\0' && *p != '\n') {
                p++;
            }
            continue;
        }
        if (*p == '\0') {
            break;
        }
        start = p;
        while (*p != '\0' && !isspace((unsigned char)*p)) {
            p++;
        }
        if (*p != '\0') {
            *p++ = '\0';
        }
        if (strlen(start) >= 2 && (start[0] == '"' || start[0] == '\'') &&
            start[strlen(start) - 1] == start[0]) {
            start[strlen(start) - 1] = '\0';
            start++;
        }
        if (g->n == MEG_TOKENS_MAX) {
            return cfg_fail(g->err, g->errlen, MEMSVC_ERR_TOO_LARGE, "%s: more than %d arguments",
                            g->src, MEG_TOKENS_MAX);
        }
        g->tok[g->n++] = start;
    }
    return MEMSVC_OK;
}

/* Index of the last occurrence of flag, or -1. */
static int meg_find(const meg_t *g, const char *flag)
{
    int i, at = -1;

    for (i = 0; i < g->n; i++) {
        if (strcmp(g->tok[i], flag) == 0) {
            at = i;
        }
    }
    return at;
}

static bool meg_flag(const meg_t *g, const char *flag)
{
    return meg_find(g, flag) >= 0;
}

/* --flag N: absent leaves *v_p (and *have_p false); present needs an integer >= min. */
static memsvc_status_t meg_u32(meg_t *g, const char *flag, uint32_t min, uint32_t *v_p,
                               bool *have_p)
{
    int                at = meg_find(g, flag);
    unsigned long long v;
    char              *end;

    if (have_p != NULL) {
        *have_p = false;
    }
    if (at < 0) {
        if (have_p == NULL) {
            return cfg_fail(g->err, g->errlen, MEMSVC_ERR_PARSE, "%s: %s: missing (required)",
                            g->src, flag);
        }
        return MEMSVC_OK;
    }
    if (at + 1 >= g->n) {
        return cfg_fail(g->err, g->errlen, MEMSVC_ERR_PARSE, "%s: %s needs a value", g->src, flag);
    }
    errno = 0;
    v     = strtoull(g->tok[at + 1], &end, 10);
    if (!isdigit((unsigned char)g->tok[at + 1][0]) || *end != '\0' || errno != 0 ||
        v > UINT32_MAX || v < min) {
        return cfg_fail(g->err, g->errlen, MEMSVC_ERR_PARSE,
                        "%s: %s: '%s' is not an integer in %u..%u", g->src, flag, g->tok[at + 1],
                        min, UINT32_MAX);
    }
    *v_p = (uint32_t)v;
    if (have_p != NULL) {
        *have_p = true;
    }
    return MEMSVC_OK;
}

/*
 * --moe-layer-freq: 1 (every layer has experts), or a pattern with the dense layers first:
 * "([0]*K+[1]*M)" or "[0,0,0,1,1,...]" -> *dense_p = K (K + M must be the layer count).
 */
static memsvc_status_t meg_layer_freq(meg_t *g, uint32_t layers, uint32_t *dense_p)
{
    int           at = meg_find(g, "--moe-layer-freq");
    const char   *v;
    unsigned long k, n;
    uint32_t      zeros = 0, ones = 0;
    char          tail;

    if (at < 0) {
        return MEMSVC_OK;
    }
    if (at + 1 >= g->n) {
        return cfg_fail(g->err, g->errlen, MEMSVC_ERR_PARSE, "%s: --moe-layer-freq needs a value",
                        g->src);
    }
    v = g->tok[at + 1];
    if (strcmp(v, "1") == 0) {
        *dense_p = 0;
        return MEMSVC_OK;
    }
    if (sscanf(v, "([0]*%lu+[1]*%lu%c", &k, &n, &tail) == 3 && tail == ')' &&
        v[strlen(v) - 1] == ')' && k + n == layers) {
        *dense_p = (uint32_t)k;
        return MEMSVC_OK;
    }
    if (v[0] == '[' && v[strlen(v) - 1] == ']') {
        const char *p;

        for (p = v + 1; *p != ']'; p++) {
            if (*p == '0' && ones == 0) {
                zeros++;
            } else if (*p == '1') {
                ones++;
            } else if (*p != ',' && *p != ' ') {
                break;
            }
        }
        if (*p == ']' && zeros + ones == layers) {
            *dense_p = zeros;
            return MEMSVC_OK;
        }
    }
    return cfg_fail(g->err, g->errlen, MEMSVC_ERR_INVALID_PARAM,
                    "%s: --moe-layer-freq: '%s' is not supported: 1, or dense layers first, "
                    "\"([0]*K+[1]*M)\" or [0,..,1,..] with K + M = --num-layers (%u)",
                    g->src, v, layers);
}

/* The parallel layout of the arguments, as the model's layout string. */
static memsvc_status_t meg_layout(meg_t *g, mt_model_t *m)
{
    uint32_t        tp = 1, pp = 1, ep = 1, cp = 1, vpp = 1, per_stage = 0;
    bool            have, any = false;
    memsvc_status_t s;

    if ((s = meg_u32(g, "--tensor-model-parallel-size", 1, &tp, &have)) != MEMSVC_OK) {
        return s;
    }
    any |= have;
    if ((s = meg_u32(g, "--pipeline-model-parallel-size", 1, &pp, &have)) != MEMSVC_OK) {
        return s;
    }
    any |= have;
    if ((s = meg_u32(g, "--expert-model-parallel-size", 1, &ep, &have)) != MEMSVC_OK) {
        return s;
    }
    any |= have;
    if ((s = meg_u32(g, "--context-parallel-size", 1, &cp, &have)) != MEMSVC_OK) {
        return s;
    }
    any |= have;
    if ((s = meg_u32(g, "--num-layers-per-virtual-pipeline-stage", 1, &per_stage, &have)) !=
        MEMSVC_OK) {
        return s;
    }
    if (have) {
        if (m->layers % (pp * per_stage) != 0) {
            return cfg_fail(g->err, g->errlen, MEMSVC_ERR_INVALID_PARAM,
                            "%s: --num-layers-per-virtual-pipeline-stage %u x pipeline size %u "
                            "does not divide --num-layers %u",
                            g->src, per_stage, pp, m->layers);
        }
        vpp = m->layers / (pp * per_stage);
        any = true;
    }
    if (any) {
        snprintf(m->layout, sizeof(m->layout), "tp=%u,pp=%u,vpp=%u,ep=%u,cp=%u", tp, pp, vpp, ep,
                 cp);
    }
    return MEMSVC_OK;
}

static memsvc_status_t meg_build(meg_t *g, mt_model_t *m)
{
    memsvc_status_t s;
    uint32_t        shared = 0;
    bool            have, have_vocab;

    cfg_base(m, "megatron");
    if ((s = meg_u32(g, "--num-layers", 1, &m->layers, NULL)) != MEMSVC_OK ||
        (s = meg_u32(g, "--hidden-size", 1, &m->hidden, NULL)) != MEMSVC_OK ||
        (s = meg_u32(g, "--num-attention-heads", 1, &m->heads, NULL)) != MEMSVC_OK) {
        return s;
    }
    m->mlp  = meg_flag(g, "--swiglu") ? MT_MLP_SWIGLU : MT_MLP_GELU;
    m->bias = !meg_flag(g, "--disable-bias-linear");
    /* Megatron ties the output head to the embedding unless told otherwise */
    m->tied_embeddings = !meg_flag(g, "--untie-embeddings-and-output-weights");
    if ((s = meg_u32(g, "--ffn-hidden-size", 1, &m->ffn, &have)) != MEMSVC_OK) {
        return s;
    }
    if (!have) {
        /* Megatron's default: 4h, or 2/3 of it rounded down to 64 with SwiGLU */
        m->ffn = (m->mlp == MT_MLP_SWIGLU) ? (uint32_t)((4ull * m->hidden * 2 / 3) / 64 * 64)
                                           : 4 * m->hidden;
    }
    m->kv_heads = m->heads;
    if (meg_flag(g, "--group-query-attention") &&
        (s = meg_u32(g, "--num-query-groups", 1, &m->kv_heads, NULL)) != MEMSVC_OK) {
        return s;
    }
    m->head_dim = m->hidden / m->heads;
    if ((s = meg_u32(g, "--kv-channels", 1, &m->head_dim, &have)) != MEMSVC_OK) {
        return s;
    }
    m->attn = (m->kv_heads == m->heads) ? MT_ATTN_MHA : MT_ATTN_GQA;
    if (meg_flag(g, "--multi-latent-attention")) {
        m->attn = MT_ATTN_MLA;
        if ((s = meg_u32(g, "--q-lora-rank", 1, &m->q_lora_rank, &have)) != MEMSVC_OK ||
            (s = meg_u32(g, "--kv-lora-rank", 1, &m->kv_lora_rank, NULL)) != MEMSVC_OK ||
            (s = meg_u32(g, "--qk-head-dim", 1, &m->qk_nope_head_dim, NULL)) != MEMSVC_OK ||
            (s = meg_u32(g, "--qk-pos-emb-head-dim", 0, &m->qk_rope_head_dim, NULL)) != MEMSVC_OK ||
            (s = meg_u32(g, "--v-head-dim", 1, &m->v_head_dim, NULL)) != MEMSVC_OK) {
            return s;
        }
    }
    if ((s = meg_u32(g, "--num-experts", 0, &m->experts, &have)) != MEMSVC_OK) {
        return s;
    }
    if (m->experts > 0) {
        if ((s = meg_u32(g, "--moe-router-topk", 1, &m->top_k, NULL)) != MEMSVC_OK) {
            return s;
        }
        m->expert_ffn = m->ffn;
        if ((s = meg_u32(g, "--moe-ffn-hidden-size", 1, &m->expert_ffn, &have)) != MEMSVC_OK ||
            (s = meg_u32(g, "--moe-shared-expert-intermediate-size", 1, &shared, &have)) !=
                MEMSVC_OK) {
            return s;
        }
        if (have) { /* Megatron: the shared experts' total width, as one expert */
            m->shared_experts    = 1;
            m->shared_expert_ffn = shared;
        }
        if ((s = meg_layer_freq(g, m->layers, &m->dense_layers)) != MEMSVC_OK ||
            (s = meg_u32(g, "--first-k-dense-replace", 0, &m->dense_layers, &have)) != MEMSVC_OK) {
            return s;
        }
    }
    if ((s = meg_u32(g, "--padded-vocab-size", 1, &m->vocab, &have_vocab)) != MEMSVC_OK) {
        return s;
    }
    if (!have_vocab && (s = meg_u32(g, "--vocab-size", 1, &m->vocab, &have_vocab)) != MEMSVC_OK) {
        return s;
    }
    if (!have_vocab) {
        return cfg_fail(g->err, g->errlen, MEMSVC_ERR_PARSE,
                        "%s: --padded-vocab-size (or --vocab-size) is required: Megatron takes "
                        "the vocabulary from the tokenizer, which memtrace does not read",
                        g->src);
    }
    if ((s = meg_u32(g, "--seq-length", 1, &m->seq_len, &have)) != MEMSVC_OK ||
        (s = meg_u32(g, "--micro-batch-size", 1, &m->micro_batch, &have)) != MEMSVC_OK ||
        (s = meg_u32(g, "--mtp-num-layers", 0, &m->mtp_layers, &have)) != MEMSVC_OK) {
        return s;
    }
    return meg_layout(g, m);
}

/* The text of "@FILE", or a copy of args. NULL with err set on failure. */
static char *meg_text(const char *args, char *err, size_t errlen)
{
    FILE  *f;
    char  *buf;
    long   len;
    size_t got;

    if (args[0] != '@') {
        buf = strdup(args);
        if (buf == NULL) {
            cfg_fail(err, errlen, MEMSVC_ERR_NO_RESOURCE, "out of memory");
        }
        return buf;
    }
    f = fopen(args + 1, "r");
    if (f == NULL) {
        cfg_fail(err, errlen, MEMSVC_ERR_IO, "%s: %s", args + 1, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || len > (1 << 20) ||
        fseek(f, 0, SEEK_SET) != 0) {
        cfg_fail(err, errlen, MEMSVC_ERR_IO, "%s: unreadable or larger than 1 MiB", args + 1);
        fclose(f);
        return NULL;
    }
    buf = malloc((size_t)len + 1);
    if (buf == NULL) {
        fclose(f);
        cfg_fail(err, errlen, MEMSVC_ERR_NO_RESOURCE, "out of memory");
        return NULL;
    }
    got      = fread(buf, 1, (size_t)len, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

memsvc_status_t mt_model_from_megatron(const char *args, mt_model_t *model_p, char *err,
                                       size_t errlen)
{
    meg_t           g;
    mt_model_t      m;
    memsvc_status_t s;
    char           *text = meg_text(args, err, errlen);

    if (text == NULL) {
        return (args[0] == '@') ? MEMSVC_ERR_IO : MEMSVC_ERR_NO_RESOURCE;
    }
    memset(&g, 0, sizeof(g));
    g.err    = err;
    g.errlen = errlen;
    g.src    = (args[0] == '@') ? args + 1 : "--megatron-args";
    s        = meg_split(&g, text);
    if (s == MEMSVC_OK) {
        s = meg_build(&g, &m);
    }
    if (s == MEMSVC_OK) {
        s = mt_model_validate(&m, err, errlen);
    }
    free(text);
    if (s == MEMSVC_OK) {
        *model_p = m;
    }
    return s;
}
