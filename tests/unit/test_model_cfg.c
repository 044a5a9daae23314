/* test_model_cfg.c - models from Hugging Face config.json and Megatron-LM arguments */
#include "tests/test_util.h"
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DATA "tests/data/"

/* The arguments of a DeepSeek-V3 run in Megatron-LM's names (its MLA and MoE options). */
#define DSV3_MEGATRON                                                                              \
    "--num-layers 61 --hidden-size 7168 --ffn-hidden-size 18432 --num-attention-heads 128 "        \
    "--kv-channels 128 --multi-latent-attention --q-lora-rank 1536 --kv-lora-rank 512 "            \
    "--qk-head-dim 128 --qk-pos-emb-head-dim 64 --v-head-dim 128 --num-experts 256 "               \
    "--moe-router-topk 8 --moe-ffn-hidden-size 2048 --moe-shared-expert-intermediate-size 2048 "   \
    "--moe-layer-freq ([0]*3+[1]*58) --padded-vocab-size 129280 --seq-length 4096 "                \
    "--micro-batch-size 1 --swiglu --untie-embeddings-and-output-weights --disable-bias-linear "   \
    "--normalization RMSNorm --mtp-num-layers 1 --lr 1e-4 --use-distributed-optimizer "            \
    "--pipeline-model-parallel-size 16 --expert-model-parallel-size 64"

/* The figures a model gives: the same parameters, active parameters and FLOPs as want. */
static void assert_same_figures(const mt_model_t *got, const mt_model_t *want)
{
    uint64_t t1, a1, t2, a2;

    mt_model_params(got, &t1, &a1);
    mt_model_params(want, &t2, &a2);
    CU_ASSERT_EQUAL(t1, t2);
    CU_ASSERT_EQUAL(a1, a2);
    CU_ASSERT_EQUAL(mt_model_mtp_params(got), mt_model_mtp_params(want));
    CU_ASSERT_EQUAL(mt_model_embedding_params(got), mt_model_embedding_params(want));
    CU_ASSERT_DOUBLE_EQUAL(mt_model_flops_per_token(got, 4096, 0, got->layers, true),
                           mt_model_flops_per_token(want, 4096, 0, want->layers, true), 1.0);
    CU_ASSERT_EQUAL(got->layers, want->layers);
    CU_ASSERT_EQUAL(got->dense_layers, want->dense_layers);
    CU_ASSERT_EQUAL(got->attn, want->attn);
    CU_ASSERT_EQUAL(got->experts, want->experts);
    CU_ASSERT_EQUAL(got->top_k, want->top_k);
    CU_ASSERT_EQUAL(got->shared_experts, want->shared_experts);
    CU_ASSERT_EQUAL(got->seq_len, want->seq_len);
    CU_ASSERT_EQUAL(got->tied_embeddings, want->tied_embeddings);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* The published DeepSeek-V3 config.json gives the built-in preset's model. */
static void test_hf_deepseek_v3(void)
{
    mt_model_t got, want;
    char       err[512];

    TEST_ASSERT_OK(mt_model_preset("deepseek-v3-671b", &want));
    if (mt_model_from_hf(DATA "deepseek_v3_config.json", &got, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "%s\n", err);
        CU_FAIL_FATAL("deepseek_v3_config.json");
    }
    CU_ASSERT_STRING_EQUAL(got.name, "hf:deepseek_v3");
    assert_same_figures(&got, &want);
    CU_ASSERT_EQUAL(got.q_lora_rank, 1536);
    CU_ASSERT_EQUAL(got.kv_lora_rank, 512);
    CU_ASSERT_EQUAL(got.qk_rope_head_dim, 64);
    CU_ASSERT_EQUAL(got.expert_ffn, 2048);
    CU_ASSERT_EQUAL(got.mtp_layers, 1);
    CU_ASSERT_EQUAL(got.seq_len, 4096); /* max_position_embeddings 163840: the default */
}

/* Mixtral's and Qwen-MoE's ways of naming experts. */
static void test_hf_other_families(void)
{
    char       path[] = "/tmp/memsvc-test-hf-XXXXXX";
    int        fd     = mkstemp(path);
    mt_model_t got, want;
    char       err[512];

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    /* mistralai/Mixtral-8x7B-v0.1 config.json: the experts are intermediate_size wide */
    write_text(path, "{\"model_type\": \"mixtral\", \"hidden_size\": 4096, \"intermediate_size\": "
                     "14336, \"max_position_embeddings\": 32768, \"num_attention_heads\": 32, "
                     "\"num_experts_per_tok\": 2, \"num_hidden_layers\": 32, "
                     "\"num_key_value_heads\": 8, \"num_local_experts\": 8, "
                     "\"tie_word_embeddings\": false, \"vocab_size\": 32000}");
    TEST_ASSERT_OK(mt_model_from_hf(path, &got, err, sizeof(err)));
    TEST_ASSERT_OK(mt_model_preset("mixtral-8x7b", &want));
    assert_same_figures(&got, &want);
    CU_ASSERT_EQUAL(got.attn, MT_ATTN_GQA);
    CU_ASSERT_EQUAL(got.head_dim, 128);

    /* Qwen/Qwen1.5-MoE-A2.7B: num_experts, one shared expert of its own width */
    write_text(path,
               "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 2048, \"intermediate_size\": "
               "5632, \"moe_intermediate_size\": 1408, \"shared_expert_intermediate_size\": "
               "5632, \"num_experts\": 60, \"num_experts_per_tok\": 4, "
               "\"decoder_sparse_step\": 1, \"mlp_only_layers\": [], "
               "\"num_attention_heads\": 16, \"num_key_value_heads\": 16, "
               "\"num_hidden_layers\": 24, \"max_position_embeddings\": 8192, "
               "\"vocab_size\": 151936, \"tie_word_embeddings\": false}");
    TEST_ASSERT_OK(mt_model_from_hf(path, &got, err, sizeof(err)));
    CU_ASSERT_EQUAL(got.experts, 60);
    CU_ASSERT_EQUAL(got.expert_ffn, 1408);
    CU_ASSERT_EQUAL(got.shared_experts, 1);
    CU_ASSERT_EQUAL(got.shared_expert_ffn, 5632);
    CU_ASSERT_EQUAL(got.dense_layers, 0);
    CU_ASSERT_EQUAL(got.attn, MT_ATTN_MHA);
    unlink(path);
}

/* A config that is bad in one way: status and every wanted substring of the message. */
static void expect_hf_bad(const char *text, memsvc_status_t want, const char *want1,
                          const char *want2)
{
    char       path[] = "/tmp/memsvc-test-hf-XXXXXX";
    int        fd     = mkstemp(path);
    mt_model_t m;
    char       err[512] = "";

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    write_text(path, text);
    CU_ASSERT_EQUAL(mt_model_from_hf(path, &m, err, sizeof(err)), want);
    if (strstr(err, want1) == NULL || (want2 != NULL && strstr(err, want2) == NULL)) {
        CU_FAIL("hf error message");
        fprintf(stderr, "want '%s' and '%s', got: %s\n", want1, want2 ? want2 : "", err);
    }
    unlink(path);
}

#define HF_BASE                                                                                    \
    "\"hidden_size\": 1024, \"num_hidden_layers\": 4, \"num_attention_heads\": 8, "                \
    "\"intermediate_size\": 4096, \"vocab_size\": 32000"

static void test_hf_errors(void)
{
    mt_model_t m;
    char       err[512];

    CU_ASSERT_EQUAL(mt_model_from_hf("/nonexistent/config.json", &m, err, sizeof(err)),
                    MEMSVC_ERR_IO);
    expect_hf_bad("{" HF_BASE ",}", MEMSVC_ERR_PARSE, "line 1, column", "invalid JSON");
    expect_hf_bad("[1]", MEMSVC_ERR_PARSE, "not a JSON object", NULL);
    expect_hf_bad("{\"num_hidden_layers\": 4}", MEMSVC_ERR_PARSE, "hidden_size: missing",
                  "(required)");
    expect_hf_bad("{\"hidden_size\": \"1024\", \"num_hidden_layers\": 4}", MEMSVC_ERR_PARSE,
                  "hidden_size: not an integer", NULL);
    expect_hf_bad("{\"hidden_size\": 1024, \"num_hidden_layers\": 0}", MEMSVC_ERR_PARSE,
                  "num_hidden_layers: not an integer in 1..", NULL);
    expect_hf_bad("{" HF_BASE ", \"num_local_experts\": 8}", MEMSVC_ERR_PARSE,
                  "num_experts_per_tok: missing", NULL);
    expect_hf_bad("{" HF_BASE ", \"num_local_experts\": 8, \"num_experts_per_tok\": 9}",
                  MEMSVC_ERR_INVALID_PARAM, "top_k (9) <= experts (8)", NULL);
    expect_hf_bad("{" HF_BASE ", \"moe_layer_freq\": 2}", MEMSVC_ERR_INVALID_PARAM,
                  "moe_layer_freq: only 1", NULL);
    expect_hf_bad("{" HF_BASE ", \"mlp_only_layers\": [0, 2]}", MEMSVC_ERR_INVALID_PARAM,
                  "mlp_only_layers: only []", NULL);
    expect_hf_bad("{" HF_BASE ", \"tie_word_embeddings\": \"no\"}", MEMSVC_ERR_PARSE,
                  "tie_word_embeddings: not a boolean", NULL);
    expect_hf_bad("{\"hidden_size\": 1024, \"num_hidden_layers\": 4, \"num_attention_heads\": 7, "
                  "\"intermediate_size\": 4096, \"vocab_size\": 32000}",
                  MEMSVC_ERR_INVALID_PARAM, "(7) does not divide hidden_size (1024)", "head_dim");
    expect_hf_bad("{" HF_BASE ", \"kv_lora_rank\": 512}", MEMSVC_ERR_PARSE,
                  "qk_nope_head_dim: missing", NULL);
}

static void test_megatron(void)
{
    char       path[] = "/tmp/memsvc-test-meg-XXXXXX";
    int        fd     = mkstemp(path);
    mt_model_t got, want;
    char       err[512], at[64];

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    TEST_ASSERT_OK(mt_model_preset("deepseek-v3-671b", &want));
    if (mt_model_from_megatron(DSV3_MEGATRON, &got, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "%s\n", err);
        CU_FAIL_FATAL("megatron args");
    }
    assert_same_figures(&got, &want);
    CU_ASSERT_STRING_EQUAL(got.layout, "tp=1,pp=16,vpp=1,ep=64,cp=1");

    /* a file of them, as a launch script writes them */
    write_text(path,
               "# DeepSeek-V3\nGPT_ARGS=\n"
               "  --num-layers 61 \\\n  --hidden-size 7168 --num-attention-heads 128 \\\n"
               "  --ffn-hidden-size 18432 --multi-latent-attention --q-lora-rank 1536 \\\n"
               "  --kv-lora-rank 512 --qk-head-dim 128 --qk-pos-emb-head-dim 64 \\\n"
               "  --v-head-dim 128 --num-experts 256 --moe-router-topk 8 \\\n"
               "  --moe-ffn-hidden-size 2048 --moe-shared-expert-intermediate-size 2048 \\\n"
               "  --moe-layer-freq '[0,0,0" /* then 58 ones */
               ",1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"
               ",1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]' \\\n"
               "  --padded-vocab-size 129280 --swiglu --untie-embeddings-and-output-weights\\\n"
               "  --disable-bias-linear --mtp-num-layers 1 --tensor-model-parallel-size 2 \\\n"
               "  --pipeline-model-parallel-size 4 --num-layers-per-virtual-pipeline-stage 1\n");
    /* 61 layers over pp 4 x 1 per virtual stage does not divide: named */
    snprintf(at, sizeof(at), "@%s", path);
    CU_ASSERT_EQUAL(mt_model_from_megatron(at, &got, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "does not divide --num-layers 61"));
    {
        FILE *f = fopen(path, "a");

        CU_ASSERT_FATAL(f != NULL);
        fputs("--num-layers-per-virtual-pipeline-stage 61 --pipeline-model-parallel-size 1\n", f);
        fclose(f);
    }
    TEST_ASSERT_OK(mt_model_from_megatron(at, &got, err, sizeof(err)));
    assert_same_figures(&got, &want);
    CU_ASSERT_STRING_EQUAL(got.layout, "tp=2,pp=1,vpp=1,ep=1,cp=1");
    unlink(path);

    /* Megatron's defaults: GeLU at 4h, tied embeddings, biases; GQA from the query groups */
    TEST_ASSERT_OK(mt_model_from_megatron("--num-layers 2 --hidden-size 512 "
                                          "--num-attention-heads 8 --vocab-size 1000",
                                          &got, err, sizeof(err)));
    CU_ASSERT_EQUAL(got.mlp, MT_MLP_GELU);
    CU_ASSERT_EQUAL(got.ffn, 2048);
    CU_ASSERT_TRUE(got.tied_embeddings && got.bias);
    CU_ASSERT_EQUAL(got.layout[0], '\0');
    TEST_ASSERT_OK(mt_model_from_megatron("--num-layers 2 --hidden-size 768 --swiglu "
                                          "--num-attention-heads 12 --group-query-attention "
                                          "--num-query-groups 4 --vocab-size 1000",
                                          &got, err, sizeof(err)));
    CU_ASSERT_EQUAL(got.ffn, 2048); /* int(4 * 768 * 2 / 3 / 64) * 64 */
    CU_ASSERT_EQUAL(got.attn, MT_ATTN_GQA);
    CU_ASSERT_EQUAL(got.kv_heads, 4);
}

static void expect_meg_bad(const char *args, memsvc_status_t want, const char *want1)
{
    mt_model_t m;
    char       err[512] = "";

    CU_ASSERT_EQUAL(mt_model_from_megatron(args, &m, err, sizeof(err)), want);
    if (strstr(err, want1) == NULL) {
        CU_FAIL("megatron error message");
        fprintf(stderr, "want '%s', got: %s\n", want1, err);
    }
}

static void test_megatron_errors(void)
{
    expect_meg_bad("--hidden-size 512", MEMSVC_ERR_PARSE, "--num-layers: missing (required)");
    expect_meg_bad("--num-layers x --hidden-size 512", MEMSVC_ERR_PARSE,
                   "--num-layers: 'x' is not an integer");
    expect_meg_bad("--num-layers 2 --hidden-size 512 --num-attention-heads", MEMSVC_ERR_PARSE,
                   "--num-attention-heads needs a value");
    expect_meg_bad("--num-layers 2 --hidden-size 512 --num-attention-heads 8", MEMSVC_ERR_PARSE,
                   "--padded-vocab-size (or --vocab-size) is required");
    expect_meg_bad("--num-layers 61 --hidden-size 512 --num-attention-heads 8 --vocab-size 9 "
                   "--num-experts 8 --moe-router-topk 2 --moe-layer-freq ([0]*3+[1]*50)",
                   MEMSVC_ERR_INVALID_PARAM, "--moe-layer-freq: '([0]*3+[1]*50)' is not supported");
    expect_meg_bad("--num-layers 4 --hidden-size 512 --num-attention-heads 8 --vocab-size 9 "
                   "--num-experts 8",
                   MEMSVC_ERR_PARSE, "--moe-router-topk: missing");
    expect_meg_bad("@/nonexistent/args.txt", MEMSVC_ERR_IO, "/nonexistent/args.txt");
}

/* Run a shell command: its exit status; its first line of output in line. */
static int run_sh(const char *cmd, char *line, size_t len)
{
    FILE *p = popen(cmd, "r");
    int   st, lines = 0;
    char  buf[1024];

    CU_ASSERT_FATAL(p != NULL);
    line[0] = '\0';
    while (fgets(buf, sizeof(buf), p) != NULL) {
        if (lines++ == 0) {
            snprintf(line, len, "%s", buf);
        }
    }
    st = pclose(p);
    CU_ASSERT(lines <= 1); /* one line, not the usage text */
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* memtrace gen: the config forms, --microbatches 0 like --steps 0. */
static void test_gen_cli(void)
{
    char cmd[1024], line[1024];

    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --hf-config " DATA "deepseek_v3_config.json layers=4 dense_layers=1 "
             "--describe 2>&1 | grep '^params'",
             test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, line, sizeof(line)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "params = "));
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --hf-config /nonexistent.json --describe 2>&1 >/dev/null",
             test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, line, sizeof(line)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "--hf-config: /nonexistent.json"));
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --model tiny-moe --megatron-args '--num-layers 2' --describe 2>&1",
             test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, line, sizeof(line)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "give one of --model, --hf-config and --megatron-args"));
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --megatron-args '--num-layers 2 --hidden-size 64 "
             "--num-attention-heads 4 --vocab-size 128 --seq-length 64' --node tiny "
             "-o /dev/null 2>&1",
             test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, line, sizeof(line)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, " events, 1 step(s)"));
    snprintf(cmd, sizeof(cmd), "%s/memtrace gen -o /dev/null --hf-config 2>&1", test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, line, sizeof(line)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "--hf-config needs a value"));
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --model tiny-moe --microbatches 0 -o /dev/null 2>&1", test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, line, sizeof(line)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "microbatches"));
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("model_cfg", NULL, NULL);

    CU_add_test(s, "Hugging Face: the published DeepSeek-V3 config is the preset",
                test_hf_deepseek_v3);
    CU_add_test(s, "Hugging Face: Mixtral and Qwen-MoE configs", test_hf_other_families);
    CU_add_test(s, "Hugging Face: bad configs are named errors", test_hf_errors);
    CU_add_test(s, "Megatron-LM arguments: DeepSeek-V3, files, defaults", test_megatron);
    CU_add_test(s, "Megatron-LM arguments: bad ones are named errors", test_megatron_errors);
    CU_add_test(s, "memtrace gen --hf-config, --megatron-args, --microbatches 0", test_gen_cli);
}

TEST_REGISTER(model_cfg, add_suite)
