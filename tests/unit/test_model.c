/* test_model.c - model presets: parameter counts against published figures, overrides */
#include "tests/test_util.h"
#include "tools/memtrace/model.h"

#include <math.h>
#include <string.h>

static void test_presets_match_published_counts(void)
{
    const char *const *names = mt_model_preset_names();
    mt_model_t         m;
    uint64_t           total, active;
    int                i, checked = 0;

    for (i = 0; names[i] != NULL; i++) {
        TEST_ASSERT_OK(mt_model_preset(names[i], &m));
        CU_ASSERT_STRING_EQUAL(m.name, names[i]);
        CU_ASSERT_EQUAL(mt_model_validate(&m, NULL, 0), MEMSVC_OK);
        mt_model_params(&m, &total, &active);
        CU_ASSERT(active <= total);
        if (m.published_total == 0) {
            continue;
        }
        /* the published figures count the input embedding, or (Pangu) leave it out */
        total -= m.published_excludes_embedding ? mt_model_embedding_params(&m) : 0;
        active -= m.published_excludes_embedding ? mt_model_embedding_params(&m) : 0;
        CU_ASSERT(fabs(total / m.published_total - 1) < 0.02);
        CU_ASSERT(fabs(active / m.published_active - 1) < 0.02);
        checked++;
    }
    CU_ASSERT_EQUAL(checked, 5);
}

/* Hand count of Mixtral 8x7B: attention 4096 x (4096 + 2 x 1024 + 4096), 8 SwiGLU experts. */
static void test_mixtral_exact(void)
{
    mt_model_t m;
    uint64_t   total, active, attn, expert, layer_common, embed;

    TEST_ASSERT_OK(mt_model_preset("mixtral-8x7b", &m));
    attn         = 4096ull * (4096 + 2048 + 4096);
    expert       = 3ull * 4096 * 14336;
    layer_common = attn + 2 * 4096 + 8 * 4096; /* two RMSNorms, router */
    embed        = 2ull * 32000 * 4096 + 4096; /* embedding, head, final norm */
    mt_model_params(&m, &total, &active);
    CU_ASSERT_EQUAL(total, embed + 32 * (layer_common + 8 * expert));
    CU_ASSERT_EQUAL(active, embed + 32 * (layer_common + 2 * expert));
}

/* openPangu-Ultra-MoE-718B's configuration: vocab 153600, dense FFN 18432, four RMSNorms per
 * layer (sandwich norm); 718B / 39B are matched without the input embedding. */
static void test_pangu_config(void)
{
    mt_model_t m;
    uint64_t   total, active, t2, emb;

    TEST_ASSERT_OK(mt_model_preset("pangu-ultra-moe-718b", &m));
    CU_ASSERT_EQUAL(m.vocab, 153600);
    CU_ASSERT_EQUAL(m.ffn, 18432);
    CU_ASSERT(m.sandwich_norm);
    CU_ASSERT(m.published_excludes_embedding);
    mt_model_params(&m, &total, &active);
    emb = mt_model_embedding_params(&m);
    CU_ASSERT_EQUAL(emb, 153600ull * 7680);
    CU_ASSERT(fabs((total - emb) / 718e9 - 1) < 0.002);
    CU_ASSERT(fabs((active - emb) / 39e9 - 1) < 0.01);
    /* sandwich norm: two more hidden-wide norms per layer */
    m.sandwich_norm = false;
    mt_model_params(&m, &t2, NULL);
    CU_ASSERT_EQUAL(total - t2, 2ull * 7680 * 61);
}

/* Model FLOPs per token: 6 x the matmul weights a token passes, plus the attention core, which a
 * causal mask halves. */
static void test_flops_per_token(void)
{
    mt_model_t m;
    double     f, fc, core;

    TEST_ASSERT_OK(mt_model_preset("gpt3-175b", &m));
    f = mt_model_flops_per_token(&m, 2048, 0, 96, true);
    /* 12 h^2 weights per layer, head h V; core 2 a (d + d) s per layer forward */
    core = 96 * 2.0 * 96 * 256 * 2048;
    CU_ASSERT(fabs(f / (3 * (2 * (96 * 12.0 * 12288 * 12288 + 12288.0 * 50257) + core * 0.5)) - 1) <
              1e-9);
    m.causal = false;
    fc       = mt_model_flops_per_token(&m, 2048, 0, 96, true);
    CU_ASSERT(fabs((fc - f) / (3 * core * 0.5) - 1) < 1e-9);
}

static void test_mtp_counted_separately(void)
{
    mt_model_t m;
    uint64_t   total, total2;

    TEST_ASSERT_OK(mt_model_preset("deepseek-v3-671b", &m));
    mt_model_params(&m, &total, NULL);
    /* DeepSeek-V3's MTP module: 14B (685B on the hub = 671B + 14B), which counts the copy of
     * the embedding and output head the checkpoint stores with the module. */
    CU_ASSERT(fabs((mt_model_mtp_params(&m) + 2.0 * m.vocab * m.hidden) / 14e9 - 1) < 0.05);
    m.mtp_layers = 0;
    CU_ASSERT_EQUAL(mt_model_mtp_params(&m), 0);
    mt_model_params(&m, &total2, NULL);
    CU_ASSERT_EQUAL(total, total2);
}

static void test_overrides(void)
{
    mt_model_t m, before;
    char       err[128] = "";
    uint64_t   t1, t2;

    TEST_ASSERT_OK(mt_model_preset("tiny-moe", &m));
    mt_model_params(&m, &t1, NULL);
    TEST_ASSERT_OK(mt_model_set(&m, "layers=8", err, sizeof(err)));
    TEST_ASSERT_OK(mt_model_set(&m, "kv_lora_rank=32", err, sizeof(err)));
    TEST_ASSERT_OK(mt_model_set(&m, "mlp=gelu", err, sizeof(err)));
    TEST_ASSERT_OK(mt_model_set(&m, "fused=0", err, sizeof(err)));
    TEST_ASSERT_OK(mt_model_set(&m, "shared_ffn=64", err, sizeof(err)));
    TEST_ASSERT_OK(mt_model_set(&m, "seq=512", err, sizeof(err)));
    CU_ASSERT_EQUAL(m.layers, 8);
    CU_ASSERT_EQUAL(m.kv_lora_rank, 32);
    CU_ASSERT_EQUAL(m.mlp, MT_MLP_GELU);
    CU_ASSERT_FALSE(m.fused_attention);
    CU_ASSERT_EQUAL(m.shared_expert_ffn, 64);
    CU_ASSERT_EQUAL(m.seq_len, 512);
    mt_model_params(&m, &t2, NULL);
    CU_ASSERT_NOT_EQUAL(t1, t2);

    before = m;
    CU_ASSERT_EQUAL(mt_model_set(&m, "layerz=3", err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "layerz"));
    CU_ASSERT_EQUAL(mt_model_set(&m, "layers=0", err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(mt_model_set(&m, "layers=12x", err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(mt_model_set(&m, "layers=-1", err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(mt_model_set(&m, "layers", err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(mt_model_set(&m, "attn=sparse", err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(mt_model_set(&m, "fused=maybe", err, sizeof(err)), MEMSVC_ERR_PARSE);
    CU_ASSERT_EQUAL(memcmp(&m, &before, sizeof(m)), 0);

    TEST_ASSERT_OK(mt_model_set(&m, "top_k=9", err, sizeof(err)));
    CU_ASSERT_EQUAL(mt_model_validate(&m, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(mt_model_preset("gpt5", &m), MEMSVC_ERR_UNKNOWN_KEY);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("model", NULL, NULL);

    CU_add_test(s, "presets within 2% of published counts", test_presets_match_published_counts);
    CU_add_test(s, "mixtral count by hand", test_mixtral_exact);
    CU_add_test(s, "MTP counted separately", test_mtp_counted_separately);
    CU_add_test(s, "Pangu Ultra MoE configuration", test_pangu_config);
    CU_add_test(s, "model FLOPs per token", test_flops_per_token);
    CU_add_test(s, "overrides and their errors", test_overrides);
}

TEST_REGISTER(model, add_suite)
