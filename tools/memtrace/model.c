/* model.c - model presets (published configurations), key=value overrides, parameter counts */
#include "tools/memtrace/model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Presets. Published figures are in parameters. Pangu Ultra MoE: the openPangu-Ultra-MoE-718B
 * configuration (vocab 153600, dense FFN 18432, MLA ranks 1536/512, qk 128+64, v 128, sandwich
 * norm); layout from the Pangu Ultra MoE report (TP 8, PP 16, VPP 2, EP 4, MindSpeed
 * TP-extend-EP). DeepSeek-V3: config_671B.json; layout from its report (PP 16, EP 64, no TP,
 * ZeRO-1 DP over 2048 GPUs). docs/generator.md gives the sources.
 */
static const mt_model_t presets[] = {
    {.name                         = "pangu-ultra-moe-718b",
     .layers                       = 61,
     .dense_layers                 = 3,
     .hidden                       = 7680,
     .ffn                          = 18432,
     .heads                        = 128,
     .kv_heads                     = 128,
     .head_dim                     = 128,
     .attn                         = MT_ATTN_MLA,
     .q_lora_rank                  = 1536,
     .kv_lora_rank                 = 512,
     .qk_nope_head_dim             = 128,
     .qk_rope_head_dim             = 64,
     .v_head_dim                   = 128,
     .experts                      = 256,
     .shared_experts               = 1,
     .top_k                        = 8,
     .expert_ffn                   = 2048,
     .shared_expert_ffn            = 2048,
     .vocab                        = 153600,
     .seq_len                      = 4096,
     .micro_batch                  = 2,
     .mlp                          = MT_MLP_SWIGLU,
     .fused_attention              = true,
     .sandwich_norm                = true,
     .causal                       = true,
     .mtp_layers                   = 1,
     .published_total              = 718e9,
     .published_active             = 39e9,
     .published_excludes_embedding = true,
     .layout                       = "tp=8,pp=16,vpp=2,ep=4,dp=48,mb=32",
     .tp_extend_ep                 = true,
     .overlap                      = "tp,ep"},
    {.name              = "deepseek-v3-671b",
     .layers            = 61,
     .dense_layers      = 3,
     .hidden            = 7168,
     .ffn               = 18432,
     .heads             = 128,
     .kv_heads          = 128,
     .head_dim          = 128,
     .attn              = MT_ATTN_MLA,
     .q_lora_rank       = 1536,
     .kv_lora_rank      = 512,
     .qk_nope_head_dim  = 128,
     .qk_rope_head_dim  = 64,
     .v_head_dim        = 128,
     .experts           = 256,
     .shared_experts    = 1,
     .top_k             = 8,
     .expert_ffn        = 2048,
     .shared_expert_ffn = 2048,
     .vocab             = 129280,
     .seq_len           = 4096,
     .micro_batch       = 1,
     .mlp               = MT_MLP_SWIGLU,
     .fused_attention   = true,
     .causal            = true,
     .mtp_layers        = 1,
     .published_total   = 671e9,
     .published_active  = 37e9,
     .layout            = "pp=16,ep=64,dp=128,mb=120",
     .overlap           = "ep"},
    {.name             = "pangu-ultra-135b",
     .layers           = 94,
     .hidden           = 12288,
     .ffn              = 28672,
     .heads            = 96,
     .kv_heads         = 8,
     .head_dim         = 128,
     .attn             = MT_ATTN_GQA,
     .vocab            = 153376,
     .seq_len          = 4096,
     .micro_batch      = 1,
     .mlp              = MT_MLP_SWIGLU,
     .fused_attention  = true,
     .causal           = true,
     .published_total  = 135e9,
     .published_active = 135e9},
    {.name             = "mixtral-8x7b",
     .layers           = 32,
     .hidden           = 4096,
     .ffn              = 14336,
     .heads            = 32,
     .kv_heads         = 8,
     .head_dim         = 128,
     .attn             = MT_ATTN_GQA,
     .experts          = 8,
     .top_k            = 2,
     .expert_ffn       = 14336,
     .vocab            = 32000,
     .seq_len          = 4096,
     .micro_batch      = 1,
     .mlp              = MT_MLP_SWIGLU,
     .fused_attention  = true,
     .causal           = true,
     .published_total  = 46.7e9,
     .published_active = 12.9e9},
    {.name             = "gpt3-175b",
     .layers           = 96,
     .hidden           = 12288,
     .ffn              = 4 * 12288,
     .heads            = 96,
     .kv_heads         = 96,
     .head_dim         = 128,
     .attn             = MT_ATTN_MHA,
     .vocab            = 50257,
     .seq_len          = 2048,
     .micro_batch      = 1,
     .mlp              = MT_MLP_GELU,
     .fused_attention  = false,
     .causal           = true,
     .tied_embeddings  = true,
     .dropout          = true,
     .bias             = true,
     .published_total  = 175e9,
     .published_active = 175e9},
    {.name              = "tiny-moe",
     .layers            = 4,
     .dense_layers      = 1,
     .hidden            = 256,
     .ffn               = 512,
     .heads             = 4,
     .kv_heads          = 4,
     .head_dim          = 64,
     .attn              = MT_ATTN_MLA,
     .q_lora_rank       = 128,
     .kv_lora_rank      = 64,
     .qk_nope_head_dim  = 32,
     .qk_rope_head_dim  = 16,
     .v_head_dim        = 32,
     .experts           = 8,
     .shared_experts    = 1,
     .top_k             = 2,
     .expert_ffn        = 128,
     .shared_expert_ffn = 128,
     .vocab             = 1024,
     .seq_len           = 256,
     .micro_batch       = 1,
     .mlp               = MT_MLP_SWIGLU,
     .fused_attention   = true,
     .causal            = true,
     .published_total   = 0,
     .published_active  = 0},
};

#define NUM_PRESETS (sizeof(presets) / sizeof(presets[0]))

static const char *const preset_names[] = {"pangu-ultra-moe-718b",
                                           "deepseek-v3-671b",
                                           "pangu-ultra-135b",
                                           "mixtral-8x7b",
                                           "gpt3-175b",
                                           "tiny-moe",
                                           NULL};

typedef enum { FIELD_U32, FIELD_POS_U32, FIELD_BOOL, FIELD_ATTN, FIELD_MLP } field_type_t;

static const struct field {
    const char  *key;
    const char  *alias;
    size_t       offset;
    field_type_t type;
} fields[] = {
    {"layers", NULL, offsetof(mt_model_t, layers), FIELD_POS_U32},
    {"dense_layers", NULL, offsetof(mt_model_t, dense_layers), FIELD_U32},
    {"hidden", NULL, offsetof(mt_model_t, hidden), FIELD_POS_U32},
    {"ffn", NULL, offsetof(mt_model_t, ffn), FIELD_POS_U32},
    {"heads", NULL, offsetof(mt_model_t, heads), FIELD_POS_U32},
    {"kv_heads", NULL, offsetof(mt_model_t, kv_heads), FIELD_POS_U32},
    {"head_dim", NULL, offsetof(mt_model_t, head_dim), FIELD_POS_U32},
    {"attn", NULL, offsetof(mt_model_t, attn), FIELD_ATTN},
    {"q_lora_rank", NULL, offsetof(mt_model_t, q_lora_rank), FIELD_U32},
    {"kv_lora_rank", NULL, offsetof(mt_model_t, kv_lora_rank), FIELD_POS_U32},
    {"qk_nope_head_dim", "qk_nope", offsetof(mt_model_t, qk_nope_head_dim), FIELD_POS_U32},
    {"qk_rope_head_dim", "qk_rope", offsetof(mt_model_t, qk_rope_head_dim), FIELD_U32},
    {"v_head_dim", "v_head", offsetof(mt_model_t, v_head_dim), FIELD_POS_U32},
    {"experts", NULL, offsetof(mt_model_t, experts), FIELD_U32},
    {"shared_experts", NULL, offsetof(mt_model_t, shared_experts), FIELD_U32},
    {"top_k", NULL, offsetof(mt_model_t, top_k), FIELD_POS_U32},
    {"expert_ffn", NULL, offsetof(mt_model_t, expert_ffn), FIELD_POS_U32},
    {"shared_ffn", "shared_expert_ffn", offsetof(mt_model_t, shared_expert_ffn), FIELD_POS_U32},
    {"vocab", NULL, offsetof(mt_model_t, vocab), FIELD_POS_U32},
    {"seq", "seq_len", offsetof(mt_model_t, seq_len), FIELD_POS_U32},
    {"mbs", "micro_batch", offsetof(mt_model_t, micro_batch), FIELD_POS_U32},
    {"mlp", NULL, offsetof(mt_model_t, mlp), FIELD_MLP},
    {"fused_attention", "fused", offsetof(mt_model_t, fused_attention), FIELD_BOOL},
    {"tied_embeddings", "tied", offsetof(mt_model_t, tied_embeddings), FIELD_BOOL},
    {"dropout", NULL, offsetof(mt_model_t, dropout), FIELD_BOOL},
    {"bias", NULL, offsetof(mt_model_t, bias), FIELD_BOOL},
    {"sandwich_norm", "sandwich", offsetof(mt_model_t, sandwich_norm), FIELD_BOOL},
    {"causal", NULL, offsetof(mt_model_t, causal), FIELD_BOOL},
    {"mtp_layers", "mtp", offsetof(mt_model_t, mtp_layers), FIELD_U32},
};

#define NUM_FIELDS (sizeof(fields) / sizeof(fields[0]))

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *const *mt_model_preset_names(void)
{
    return preset_names;
}

memsvc_status_t mt_model_preset(const char *name, mt_model_t *model_p)
{
    size_t i;

    for (i = 0; i < NUM_PRESETS; i++) {
        if (strcmp(presets[i].name, name) == 0) {
            *model_p = presets[i];
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_UNKNOWN_KEY;
}

const char *const *mt_model_keys(void)
{
    static const char *keys[NUM_FIELDS + 1];
    size_t             i;

    for (i = 0; i < NUM_FIELDS; i++) {
        keys[i] = fields[i].key;
    }
    keys[NUM_FIELDS] = NULL;
    return keys;
}

const char *mt_attn_name(mt_attn_t attn)
{
    switch (attn) {
    case MT_ATTN_MHA:
        return "mha";
    case MT_ATTN_GQA:
        return "gqa";
    case MT_ATTN_MLA:
        return "mla";
    }
    return "unknown";
}

const char *mt_mlp_name(mt_mlp_t mlp)
{
    return (mlp == MT_MLP_GELU) ? "gelu" : (mlp == MT_MLP_SWIGLU) ? "swiglu" : "unknown";
}

/* Parse a decimal uint32 ("4096", "4k" not accepted). MEMSVC_ERR_PARSE if malformed. */
static memsvc_status_t parse_u32(const char *s, uint32_t *v_p)
{
    unsigned long long v;
    char              *end;

    if (*s < '0' || *s > '9') {
        return MEMSVC_ERR_PARSE;
    }
    errno = 0;
    v     = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > UINT32_MAX) {
        return MEMSVC_ERR_PARSE;
    }
    *v_p = (uint32_t)v;
    return MEMSVC_OK;
}

static memsvc_status_t parse_bool(const char *s, bool *v_p)
{
    if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) {
        *v_p = true;
    } else if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) {
        *v_p = false;
    } else {
        return MEMSVC_ERR_PARSE;
    }
    return MEMSVC_OK;
}

memsvc_status_t mt_model_set(mt_model_t *model, const char *assignment, char *err, size_t errlen)
{
    const struct field *f  = NULL;
    const char         *eq = strchr(assignment, '=');
    const char         *val;
    size_t              klen, i;
    uint32_t            u;
    bool                b;
    char               *base = (char *)model;

    if (eq == NULL) {
        set_err(err, errlen, "model override '%s': expected key=value", assignment);
        return MEMSVC_ERR_PARSE;
    }
    klen = (size_t)(eq - assignment);
    val  = eq + 1;
    for (i = 0; i < NUM_FIELDS && f == NULL; i++) {
        if ((strlen(fields[i].key) == klen && !strncmp(fields[i].key, assignment, klen)) ||
            (fields[i].alias != NULL && strlen(fields[i].alias) == klen &&
             !strncmp(fields[i].alias, assignment, klen))) {
            f = &fields[i];
        }
    }
    if (f == NULL) {
        set_err(err, errlen, "unknown model key '%.*s' (see `memtrace models --keys`)", (int)klen,
                assignment);
        return MEMSVC_ERR_UNKNOWN_KEY;
    }
    switch (f->type) {
    case FIELD_U32:
    case FIELD_POS_U32:
        if (parse_u32(val, &u) != MEMSVC_OK || (f->type == FIELD_POS_U32 && u == 0)) {
            set_err(err, errlen, "model key '%s': '%s' is not a %s integer", f->key, val,
                    (f->type == FIELD_POS_U32) ? "positive" : "non-negative");
            return MEMSVC_ERR_PARSE;
        }
        memcpy(base + f->offset, &u, sizeof(u));
        break;
    case FIELD_BOOL:
        if (parse_bool(val, &b) != MEMSVC_OK) {
            set_err(err, errlen, "model key '%s': '%s' is not a boolean (0/1/true/false)", f->key,
                    val);
            return MEMSVC_ERR_PARSE;
        }
        memcpy(base + f->offset, &b, sizeof(b));
        break;
    case FIELD_ATTN:
        if (!strcmp(val, "mha")) {
            model->attn = MT_ATTN_MHA;
        } else if (!strcmp(val, "gqa")) {
            model->attn = MT_ATTN_GQA;
        } else if (!strcmp(val, "mla")) {
            model->attn = MT_ATTN_MLA;
        } else {
            set_err(err, errlen, "model key 'attn': '%s' is not mha, gqa or mla", val);
            return MEMSVC_ERR_PARSE;
        }
        break;
    case FIELD_MLP:
        if (!strcmp(val, "swiglu")) {
            model->mlp = MT_MLP_SWIGLU;
        } else if (!strcmp(val, "gelu")) {
            model->mlp = MT_MLP_GELU;
        } else {
            set_err(err, errlen, "model key 'mlp': '%s' is not swiglu or gelu", val);
            return MEMSVC_ERR_PARSE;
        }
        break;
    }
    return MEMSVC_OK;
}

memsvc_status_t mt_model_validate(const mt_model_t *m, char *err, size_t errlen)
{
    if (m->layers == 0 || m->hidden == 0 || m->heads == 0 || m->vocab == 0 || m->seq_len == 0 ||
        m->micro_batch == 0) {
        set_err(err, errlen, "model: layers, hidden, heads, vocab, seq and mbs must be positive");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->dense_layers > m->layers) {
        set_err(err, errlen, "model: dense_layers (%u) exceeds layers (%u)", m->dense_layers,
                m->layers);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->attn == MT_ATTN_MLA) {
        if (m->kv_lora_rank == 0 || m->qk_nope_head_dim == 0 || m->v_head_dim == 0) {
            set_err(err, errlen, "model: MLA needs kv_lora_rank, qk_nope and v_head");
            return MEMSVC_ERR_INVALID_PARAM;
        }
    } else {
        if (m->head_dim == 0 || m->kv_heads == 0 || m->heads % m->kv_heads != 0) {
            set_err(err, errlen, "model: kv_heads (%u) must divide heads (%u)", m->kv_heads,
                    m->heads);
            return MEMSVC_ERR_INVALID_PARAM;
        }
        if (m->attn == MT_ATTN_MHA && m->kv_heads != m->heads) {
            set_err(err, errlen, "model: MHA needs kv_heads == heads (or attn=gqa)");
            return MEMSVC_ERR_INVALID_PARAM;
        }
    }
    if (m->experts > 0) {
        if (m->top_k == 0 || m->top_k > m->experts || m->expert_ffn == 0) {
            set_err(err, errlen, "model: MoE needs 1 <= top_k (%u) <= experts (%u), expert_ffn",
                    m->top_k, m->experts);
            return MEMSVC_ERR_INVALID_PARAM;
        }
        if (m->shared_experts > 0 && m->shared_expert_ffn == 0) {
            set_err(err, errlen, "model: shared experts need shared_ffn");
            return MEMSVC_ERR_INVALID_PARAM;
        }
    }
    if ((m->experts == 0 || m->dense_layers > 0) && m->ffn == 0) {
        set_err(err, errlen, "model: dense layers need ffn");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return MEMSVC_OK;
}

bool mt_model_layer_is_moe(const mt_model_t *m, uint32_t layer)
{
    return m->experts > 0 && layer >= m->dense_layers;
}

/* Parameters of one norm (RMSNorm: weight; LayerNorm: weight and bias). */
static uint64_t norm_params(const mt_model_t *m, uint64_t width)
{
    return m->bias ? 2 * width : width;
}

/* Attention of one layer, with its input norm and MLA's latent norms. */
static uint64_t attn_params(const mt_model_t *m)
{
    uint64_t h = m->hidden, a = m->heads, p;

    if (m->attn == MT_ATTN_MLA) {
        uint64_t qk = m->qk_nope_head_dim + m->qk_rope_head_dim;

        if (m->q_lora_rank > 0) {
            p = h * m->q_lora_rank + m->q_lora_rank + (uint64_t)m->q_lora_rank * a * qk;
        } else {
            p = h * a * qk;
        }
        p += h * (m->kv_lora_rank + m->qk_rope_head_dim) + m->kv_lora_rank;
        p += (uint64_t)m->kv_lora_rank * a * (m->qk_nope_head_dim + m->v_head_dim);
        p += a * m->v_head_dim * h;
    } else {
        uint64_t q = a * m->head_dim, kv = (uint64_t)m->kv_heads * m->head_dim;

        p = h * (q + 2 * kv) + q * h;
        if (m->bias) {
            p += q + 2 * kv + h;
        }
    }
    /* input norm; with sandwich norm also the norm after attention */
    return p + norm_params(m, h) * (m->sandwich_norm ? 2 : 1);
}

/* One FFN of width f (dense layer, one expert). */
static uint64_t ffn_params(const mt_model_t *m, uint64_t f)
{
    uint64_t h = m->hidden;

    if (m->mlp == MT_MLP_SWIGLU) {
        return 3 * h * f + (m->bias ? 2 * f + h : 0);
    }
    return 2 * h * f + (m->bias ? f + h : 0);
}

/* Per-layer (total, active) of the MLP block with its norm. */
static void mlp_params(const mt_model_t *m, uint32_t layer, uint64_t *total_p, uint64_t *active_p)
{
    uint64_t n = norm_params(m, m->hidden) * (m->sandwich_norm ? 2 : 1);

    if (!mt_model_layer_is_moe(m, layer)) {
        *total_p = *active_p = n + ffn_params(m, m->ffn);
        return;
    }
    n += (uint64_t)m->experts * m->hidden; /* router */
    n += (uint64_t)m->shared_experts * ffn_params(m, m->shared_expert_ffn);
    *total_p  = n + (uint64_t)m->experts * ffn_params(m, m->expert_ffn);
    *active_p = n + (uint64_t)m->top_k * ffn_params(m, m->expert_ffn);
}

void mt_model_params(const mt_model_t *m, uint64_t *total_p, uint64_t *active_p)
{
    uint64_t total, active, t, a, embed;
    uint32_t l;

    embed = (uint64_t)m->vocab * m->hidden;
    if (m->bias) {
        embed += (uint64_t)m->seq_len * m->hidden; /* learned positions */
    }
    total = embed + norm_params(m, m->hidden); /* final norm */
    if (!m->tied_embeddings) {
        total += (uint64_t)m->vocab * m->hidden;
    }
    active = total;
    for (l = 0; l < m->layers; l++) {
        mlp_params(m, l, &t, &a);
        total += attn_params(m) + t;
        active += attn_params(m) + a;
    }
    if (total_p != NULL) {
        *total_p = total;
    }
    if (active_p != NULL) {
        *active_p = active;
    }
}

uint64_t mt_model_embedding_params(const mt_model_t *m)
{
    return (uint64_t)m->vocab * m->hidden + (m->bias ? (uint64_t)m->seq_len * m->hidden : 0);
}

/* Matrix-multiply weights one token goes through in the attention block of one layer. */
static double attn_matmul_weights(const mt_model_t *m)
{
    double h = m->hidden, a = m->heads;

    if (m->attn == MT_ATTN_MLA) {
        double qk = m->qk_nope_head_dim + m->qk_rope_head_dim, w;

        w = (m->q_lora_rank > 0) ? h * m->q_lora_rank + (double)m->q_lora_rank * a * qk
                                 : h * a * qk;
        w += h * (m->kv_lora_rank + m->qk_rope_head_dim);
        w += (double)m->kv_lora_rank * a * (m->qk_nope_head_dim + m->v_head_dim);
        return w + a * m->v_head_dim * h;
    }
    return h * (a * m->head_dim + 2.0 * m->kv_heads * m->head_dim) + a * m->head_dim * h;
}

double mt_model_flops_per_token(const mt_model_t *m, uint32_t seq, uint32_t first, uint32_t count,
                                bool with_head)
{
    double fwd = 0, h = m->hidden, mult = (m->mlp == MT_MLP_SWIGLU) ? 3 : 2;
    double qk = (m->attn == MT_ATTN_MLA) ? m->qk_nope_head_dim + m->qk_rope_head_dim : m->head_dim;
    double vd = (m->attn == MT_ATTN_MLA) ? m->v_head_dim : m->head_dim;
    uint32_t l;

    for (l = first; l < first + count && l < m->layers; l++) {
        fwd += 2 * attn_matmul_weights(m);
        /* scores and context over seq keys (seq / 2 on average under a causal mask) */
        fwd += 2.0 * m->heads * (qk + vd) * seq * (m->causal ? 0.5 : 1.0);
        if (mt_model_layer_is_moe(m, l)) {
            fwd += 2 * h * m->experts; /* router */
            fwd += 2 * mult * h *
                   ((double)m->top_k * m->expert_ffn +
                    (double)m->shared_experts * m->shared_expert_ffn);
        } else {
            fwd += 2 * mult * h * m->ffn;
        }
    }
    if (with_head) {
        fwd += 2 * h * m->vocab;
    }
    return 3 * fwd;
}

uint64_t mt_model_mtp_params(const mt_model_t *m)
{
    uint64_t t, a, one;

    mlp_params(m, m->layers, &t, &a); /* an MoE layer if the model has experts */
    one = 2 * norm_params(m, m->hidden) + 2 * (uint64_t)m->hidden * m->hidden + attn_params(m) + t;
    return one * m->mtp_layers;
}

void mt_model_print(const mt_model_t *m, void *file)
{
    FILE    *f = file;
    uint64_t total, active;

    mt_model_params(m, &total, &active);
    fprintf(f, "model = %s\n", m->name);
    fprintf(f, "layers = %u (first %u dense)\n", m->layers,
            m->experts > 0 ? m->dense_layers : m->layers);
    fprintf(f, "hidden = %u\nffn = %u\nmlp = %s\n", m->hidden, m->ffn, mt_mlp_name(m->mlp));
    fprintf(f, "attn = %s, heads = %u", mt_attn_name(m->attn), m->heads);
    if (m->attn == MT_ATTN_MLA) {
        fprintf(f,
                ", q_lora_rank = %u, kv_lora_rank = %u, qk_nope = %u, qk_rope = %u, "
                "v_head = %u\n",
                m->q_lora_rank, m->kv_lora_rank, m->qk_nope_head_dim, m->qk_rope_head_dim,
                m->v_head_dim);
    } else {
        fprintf(f, ", kv_heads = %u, head_dim = %u\n", m->kv_heads, m->head_dim);
    }
    fprintf(f,
            "fused_attention = %d, dropout = %d, tied_embeddings = %d, bias = %d, "
            "sandwich_norm = %d, causal = %d\n",
            m->fused_attention, m->dropout, m->tied_embeddings, m->bias, m->sandwich_norm,
            m->causal);
    if (m->experts > 0) {
        fprintf(f, "experts = %u routed (top-%u, ffn %u) + %u shared (ffn %u)\n", m->experts,
                m->top_k, m->expert_ffn, m->shared_experts, m->shared_expert_ffn);
    }
    fprintf(f, "vocab = %u\nseq = %u\nmbs = %u\nmtp_layers = %u (not traced)\n", m->vocab,
            m->seq_len, m->micro_batch, m->mtp_layers);
    fprintf(f, "params = %.2fB total, %.2fB active (%.2fB, %.2fB without the input embedding)\n",
            total / 1e9, active / 1e9, (total - mt_model_embedding_params(m)) / 1e9,
            (active - mt_model_embedding_params(m)) / 1e9);
}
