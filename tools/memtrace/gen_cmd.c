/* gen_cmd.c - `memtrace gen` and `memtrace models`: command-line front ends of the generator */
#include "tools/memtrace/gen.h"
#include "tools/memtrace/model.h"
#include "tools/memtrace/trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Declared in gen.h. Referenced from main.c only, so that test binaries, which link
 * libmemtrace.a without main.c, never pull in the trace writer through this file. */

static void gen_usage(FILE *f)
{
    fprintf(
        f,
        "usage: memtrace gen (--model NAME | --hf-config config.json | --megatron-args ARGS)\n"
        "                    [key=value ...] [--layout tp=8,pp=16,vpp=2,ep=4,dp=48,cp=1]\n"
        "                    [--microbatches N] [--steps N] [--stage N|worst|all] [--rank R]\n"
        "                    [--skew X] [--seed N] [--node PRESET] [--node-set key=value ...]\n"
        "                    [--tp-extend-ep | --no-tp-extend-ep] [--overlap tp,ep|none]\n"
        "                    [--no-pipeline-waits] (-o OUT.trace | --describe)\n"
        "  --model NAME   a built-in model (`memtrace models` lists them)\n"
        "  --hf-config F  the model of a Hugging Face config.json (DeepSeek, Mixtral, Qwen-MoE,\n"
        "                 Llama style; docs/generator.md lists the keys read)\n"
        "  --megatron-args A  the model (and tp/pp/vpp/ep/cp) of Megatron-LM arguments:\n"
        "                 \"--num-layers 61 --hidden-size 7168 ...\" or @FILE\n"
        "  key=value      model overrides (layers=, hidden=, heads=, experts=, top_k=, seq=,\n"
        "                 mbs=, ...; `memtrace models --keys` lists them)\n"
        "  --layout L     parallel layout; default: the one the preset is published as trained\n"
        "                 with (pangu-ultra-moe-718b: tp=8,pp=16,vpp=2,ep=4,dp=48,mb=32 with\n"
        "                 tp-extend-ep; deepseek-v3-671b: pp=16,ep=64,dp=128,mb=120), else 1 rank\n"
        "  --stage S      a pipeline stage N, the worst one (highest unconstrained peak), or all\n"
        "                 (one trace per stage: OUT with .stageN before .trace)\n"
        "  --rank R       global rank (tp fastest, then cp, dp, pp); default 0 = first stage;\n"
        "                 with --stage, the rank's offset within the stage\n"
        "  --overlap O    communication overlapped with compute: tp (MC2: fused TP collectives),\n"
        "                 ep (shared experts during the all-to-alls); default: the preset's "
        "recipe\n"
        "  --no-pipeline-waits  no pp.wait operators (bubbles) derived from the schedule\n"
        "  --skew X       router skew, Zipf exponent over experts (0 = uniform)\n"
        "  --describe     print model, layout and per-stage memory estimate; write nothing\n");
}

static int parse_u32_arg(const char *opt, const char *s, uint32_t *v_p)
{
    unsigned long v;
    char         *end;

    errno = 0;
    v     = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v > UINT32_MAX) {
        fprintf(stderr, "memtrace gen: %s: '%s' is not a non-negative integer\n", opt, s);
        return -1;
    }
    *v_p = (uint32_t)v;
    return 0;
}

typedef struct gen_cmd_sink {
    mt_writer_t *writer;
} gen_cmd_sink_t;

static memsvc_status_t writer_sink(void *arg, const mt_event_t *ev)
{
    gen_cmd_sink_t *s = arg;

    return mt_writer_put(s->writer, ev);
}

static void print_gib(const char *label, uint64_t bytes)
{
    printf(" %s %8.2f", label, bytes / (double)(1ull << 30));
}

/* Model, layout and the memory of each stage's first rank over one step. */
static int describe(const mt_gen_params_t *p)
{
    const mt_layout_t *l = &p->layout;
    mt_gen_params_t    q = *p;
    uint64_t           total, active;
    uint32_t           st, worst = 0;
    uint64_t           worst_peak = 0;
    char               err[256];

    mt_model_print(p->model, stdout);
    mt_model_params(p->model, &total, &active);
    printf("layout = tp %u, pp %u, vpp %u, ep %u%s, dp %u, cp %u; %u micro-batches of %u x %u "
           "tokens; %u ranks\n",
           l->tp, l->pp, l->vpp, l->ep, p->tp_extend_ep ? " (x tp: tp-extend-ep)" : "", l->dp,
           l->cp, l->microbatches, l->micro_batch_size, l->seq_len, l->tp * l->cp * l->dp * l->pp);
    printf("node = %s: %.0f TFLOPS x mfu %.2f, HBM %.2f TB/s, d2d %.0f GB/s, nic %.0f GB/s, "
           "HBM %.2f GiB usable\n",
           p->node->name, p->node->flops / 1e12, p->node->mfu, p->node->hbm_bw / 1e12,
           p->node->d2d.bw / 1e9, p->node->nic.bw / 1e9, p->node->hbm_bytes / (double)(1ull << 30));
    printf("overlap = %s%s%s; pipeline waits from the schedule: %s; model FLOPs per step and "
           "rank %.3g\n",
           p->overlap_tp ? "tp (MC2)" : "", (p->overlap_tp && p->overlap_ep) ? ", " : "",
           p->overlap_ep ? "ep (shared experts)" : (p->overlap_tp ? "" : "none"),
           p->pipeline_waits ? "yes" : "no", mt_gen_model_flops(p));
    printf("memory per stage (first rank of each stage, one step, nothing moved; GiB):\n");
    printf("stage  layers      params    grads    optim  act-peak     peak  compute-s\n");
    for (st = 0; st < l->pp; st++) {
        mt_gen_memory_t mem;
        uint32_t        c, first, n;
        char            layers[96] = "";

        q.rank = st * l->tp * l->cp * l->dp;
        if (mt_gen_memory(&q, &mem, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "memtrace gen: %s\n", err);
            return 1;
        }
        for (c = 0; c < l->vpp; c++) {
            size_t len = strlen(layers);

            mt_gen_chunk_layers(p->model, l, c * l->pp + st, &first, &n);
            if (n == 1) {
                snprintf(layers + len, sizeof(layers) - len, "%s%u", c ? "," : "", first);
            } else {
                snprintf(layers + len, sizeof(layers) - len, "%s%u-%u", c ? "," : "", first,
                         first + n - 1);
            }
        }
        printf("%5u  %-10s", st, layers);
        print_gib("", mem.params);
        print_gib("", mem.grads);
        print_gib("", mem.optim);
        print_gib(" ", mem.activation_peak);
        print_gib("", mem.peak);
        printf("  %9.3f%s\n", mem.compute_ns / 1e9,
               mem.peak > p->node->hbm_bytes ? "  (exceeds the usable HBM)" : "");
        if (mem.peak > worst_peak) {
            worst_peak = mem.peak;
            worst      = st;
        }
    }
    printf("worst stage: %u (peak %.2f GiB; usable HBM %.2f GiB)\n", worst,
           worst_peak / (double)(1ull << 30), p->node->hbm_bytes / (double)(1ull << 30));
    return 0;
}

/* OUT with ".stageN" before its ".trace" (or at its end). */
static void stage_path(const char *out, uint32_t s, char *path, size_t len)
{
    const char *dot = strrchr(out, '.');
    const char *sl  = strrchr(out, '/');

    if (dot != NULL && (sl == NULL || dot > sl) && !strcmp(dot, ".trace")) {
        snprintf(path, len, "%.*s.stage%u%s", (int)(dot - out), out, s, dot);
    } else {
        snprintf(path, len, "%s.stage%u", out, s);
    }
}

/*
 * The unconstrained peak of each stage (at the offset of p->rank within its stage), on stderr,
 * and the line naming the worst; the worst in *worst_p (may be NULL). Returns 0 or 1.
 */
static int print_stage_peaks(const mt_gen_params_t *p, uint32_t *worst_p)
{
    const mt_layout_t *l   = &p->layout;
    uint32_t           per = l->tp * l->cp * l->dp, s, worst = 0;
    uint64_t           best = 0;
    mt_gen_params_t    q    = *p;
    char               err[256];

    for (s = 0; s < l->pp; s++) {
        mt_gen_memory_t mem;

        q.rank = s * per + p->rank % per;
        if (mt_gen_memory(&q, &mem, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "memtrace gen: %s\n", err);
            return 1;
        }
        fprintf(stderr, "memtrace gen: stage %2u: unconstrained peak %6.2f GiB%s\n", s,
                mem.peak / (double)(1ull << 30),
                mem.peak > p->node->hbm_bytes ? " (exceeds the usable HBM)" : "");
        if (mem.peak > best) {
            best  = mem.peak;
            worst = s;
        }
    }
    fprintf(stderr, "memtrace gen: the worst stage is %u (peak %.2f GiB of %.2f GiB usable)%s\n",
            worst, best / (double)(1ull << 30), p->node->hbm_bytes / (double)(1ull << 30),
            worst_p == NULL ? "; --stage worst writes it" : "");
    if (worst_p != NULL) {
        *worst_p = worst;
    }
    return 0;
}

typedef struct wait_count {
    gen_cmd_sink_t *inner;
    uint64_t        wait_ns, events;
    /* progress line, on a terminal only */
    bool            bar;
    const char     *out;
    uint32_t        steps, step; /* step: steps begun so far */
    double          wall0, last; /* seconds */
} wait_count_t;

static double wall_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "\r" progress: the step being generated, events so far, seconds; done clears the line. */
static void gen_progress(wait_count_t *w, bool done)
{
    if (done) {
        fprintf(stderr, "\r\033[K");
        return;
    }
    w->last = wall_s();
    fprintf(stderr, "\rmemtrace gen: %s: step %u/%u, %llu events, %.1f s\033[K", w->out, w->step,
            w->steps, (unsigned long long)w->events, w->last - w->wall0);
}

static memsvc_status_t counting_sink(void *arg, const mt_event_t *ev)
{
    wait_count_t *w = arg;

    if (ev->type == MT_EV_COMPUTE && ev->stream == 0 && !strcmp(ev->name, "pp.wait")) {
        w->wait_ns += ev->duration_ns;
    }
    w->events++;
    if (w->bar) {
        if (ev->type == MT_EV_HINT && ev->hint == MEMSVC_HINT_STEP_BEGIN) {
            w->step++;
            gen_progress(w, false);
        } else if ((w->events & 16383) == 0 && wall_s() - w->last >= 0.2) {
            gen_progress(w, false);
        }
    }
    return writer_sink(w->inner, ev);
}

/* Write the trace of p->rank to out. Returns 0, or 1 on a failure (said on stderr). */
static int write_trace(const mt_gen_params_t *p, const mt_model_t *model, const char *out)
{
    mt_header_t     hdr;
    mt_writer_t    *writer;
    gen_cmd_sink_t  sink;
    wait_count_t    wc = {&sink, 0, 0, false, out, p->steps, 0, 0, 0};
    memsvc_status_t status;
    uint32_t        stage = mt_gen_stage_of_rank(&p->layout, p->rank);
    char            err[256];
    int             rc = 0;

    mt_header_init(&hdr);
    hdr.node = *p->node;
    snprintf(hdr.model, sizeof(hdr.model), "%s", model->name);
    hdr.layout = p->layout;
    hdr.ranks  = 1;
    hdr.steps  = p->steps;
    status     = mt_gen_peak(p, &hdr.recorded_peak, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: %s\n", err);
        return 1;
    }
    hdr.num_meta = 0;
#define META(k, ...)                                                                               \
    do {                                                                                           \
        snprintf(hdr.meta_key[hdr.num_meta], sizeof(hdr.meta_key[0]), "%s", k);                    \
        snprintf(hdr.meta_value[hdr.num_meta], sizeof(hdr.meta_value[0]), __VA_ARGS__);            \
        hdr.num_meta++;                                                                            \
    } while (0)
    META("generator", "memtrace gen");
    META("rank", "%u", p->rank);
    META("stage", "%u", stage);
    META("skew", "%g", p->skew);
    META("seed", "%llu", (unsigned long long)p->seed);
    META("experts", "%s", p->tp_extend_ep ? "tp-extend-ep" : "ep, expert tp = tp");
    META("overlap", "%s%s%s", p->overlap_tp ? "tp" : "",
         (p->overlap_tp && p->overlap_ep) ? "," : "",
         p->overlap_ep ? "ep" : (p->overlap_tp ? "" : "none"));
    META("pipeline_waits", "%s", p->pipeline_waits ? "schedule" : "none");
    META("model_flops", "%.6e", mt_gen_model_flops(p));
#undef META

    status = mt_writer_open(out, &hdr, &writer);
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: cannot write %s: %s\n", out, memsvc_strerror(status));
        return 1;
    }
    sink.writer = writer;
    wc.bar      = isatty(STDERR_FILENO) && strcmp(out, "-") != 0;
    wc.wall0    = wall_s();
    status      = mt_gen_run(p, counting_sink, &wc, err, sizeof(err));
    if (wc.bar) {
        gen_progress(&wc, true);
    }
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: %s\n", err);
        rc = 1;
    }
    status = mt_writer_close(writer);
    if (status != MEMSVC_OK && rc == 0) {
        fprintf(stderr, "memtrace gen: writing %s: %s\n", out, memsvc_strerror(status));
        rc = 1;
    }
    if (rc == 0 && strcmp(out, "-") != 0) {
        fprintf(stderr,
                "memtrace gen: %s: %llu events, %u step(s), rank %u (stage %u), peak %.2f GiB, "
                "pipeline waits %.3f s\n",
                out, (unsigned long long)wc.events, p->steps, p->rank, stage,
                hdr.recorded_peak / (double)(1ull << 30), wc.wait_ns / 1e9);
    }
    return rc;
}

/* The model of --model, --hf-config or --megatron-args (exactly one). Returns 0 or 2. */
static int gen_model(int argc, char **argv, mt_model_t *model_p)
{
    const char     *name = NULL, *hf = NULL, *megatron = NULL;
    memsvc_status_t status;
    char            err[512];
    int             i, given = 0;

    for (i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--model")) {
            name = argv[++i];
            given++;
        } else if (!strcmp(argv[i], "--hf-config")) {
            hf = argv[++i];
            given++;
        } else if (!strcmp(argv[i], "--megatron-args")) {
            megatron = argv[++i];
            given++;
        }
    }
    if (argc > 1 && (!strcmp(argv[argc - 1], "--model") || !strcmp(argv[argc - 1], "--hf-config") ||
                     !strcmp(argv[argc - 1], "--megatron-args"))) {
        fprintf(stderr, "memtrace gen: %s needs a value (memtrace gen --help for the options)\n",
                argv[argc - 1]);
        return 2;
    }
    if (given != 1) {
        fprintf(stderr, "memtrace gen: %s (memtrace gen --help for the options)\n",
                given == 0 ? "a model is required: --model NAME (see `memtrace models`), "
                             "--hf-config FILE or --megatron-args ARGS"
                           : "give one of --model, --hf-config and --megatron-args, once");
        return 2;
    }
    if (name != NULL) {
        if (mt_model_preset(name, model_p) != MEMSVC_OK) {
            fprintf(stderr, "memtrace gen: unknown model '%s' (see `memtrace models`)\n", name);
            return 2;
        }
        return 0;
    }
    status = (hf != NULL) ? mt_model_from_hf(hf, model_p, err, sizeof(err))
                          : mt_model_from_megatron(megatron, model_p, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: %s: %s\n", (hf != NULL) ? "--hf-config" : "--megatron-args",
                err);
        return 2;
    }
    return 0;
}

int mt_cmd_gen(int argc, char **argv)
{
    const char     *node_name = "ascend-910b", *out = NULL;
    const char     *layout_s = NULL, *stage_s = NULL, *overlap_s = NULL;
    bool            no_waits      = false;
    bool            want_describe = false;
    bool            have_microbatches = false;
    int             tp_extend_ep  = -1; /* -1: as the preset's layout */
    mt_model_t      model;
    sim_desc_t      node;
    mt_gen_params_t p;
    char            err[256];
    uint32_t        microbatches = 0, steps = 1, rank = 0, u, per;
    double          skew = 0;
    uint64_t        seed = 1;
    int             i, rc;

    /* the model comes first: overrides apply to it */
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            gen_usage(stdout);
            return 0;
        }
    }
    rc = gen_model(argc, argv, &model);
    if (rc != 0) {
        return rc;
    }
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--node") && i + 1 < argc) {
            node_name = argv[++i];
        }
    }
    if (sim_desc_preset(node_name, &node) != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: unknown node preset '%s'\n", node_name);
        return 2;
    }
    mt_gen_params_init(&p, &model, &node);

    for (i = 1; i < argc; i++) {
        const char *a    = argv[i];
        const char *next = (i + 1 < argc) ? argv[i + 1] : NULL;

        if (!strcmp(a, "--model") || !strcmp(a, "--node") || !strcmp(a, "--hf-config") ||
            !strcmp(a, "--megatron-args")) {
            i++;
        } else if (!strcmp(a, "--describe")) {
            want_describe = true;
        } else if (!strcmp(a, "--tp-extend-ep")) {
            tp_extend_ep = 1;
        } else if (!strcmp(a, "--no-tp-extend-ep")) {
            tp_extend_ep = 0;
        } else if (!strcmp(a, "--no-pipeline-waits")) {
            no_waits = true;
        } else if (next == NULL && a[0] == '-') {
            fprintf(stderr, "memtrace gen: %s needs a value\n", a);
            return 2;
        } else if (!strcmp(a, "--layout")) {
            layout_s = argv[++i];
        } else if (!strcmp(a, "--stage")) {
            stage_s = argv[++i];
        } else if (!strcmp(a, "--overlap")) {
            overlap_s = argv[++i];
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = argv[++i];
        } else if (!strcmp(a, "--microbatches")) {
            if (parse_u32_arg(a, argv[++i], &microbatches) < 0) {
                return 2;
            }
            have_microbatches = true;
        } else if (!strcmp(a, "--steps")) {
            if (parse_u32_arg(a, argv[++i], &steps) < 0) {
                return 2;
            }
        } else if (!strcmp(a, "--rank")) {
            if (parse_u32_arg(a, argv[++i], &rank) < 0) {
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            char *end;

            errno = 0;
            seed  = strtoull(argv[++i], &end, 0);
            if (*end != '\0' || errno != 0 || argv[i][0] == '-') {
                fprintf(stderr, "memtrace gen: --seed: '%s' is not an integer\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--skew")) {
            char *end;

            skew = strtod(argv[++i], &end);
            if (*end != '\0' || end == argv[i]) {
                fprintf(stderr, "memtrace gen: --skew: '%s' is not a number\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--node-set")) {
            if (sim_desc_set(&node, argv[++i], err, sizeof(err)) != MEMSVC_OK) {
                fprintf(stderr, "memtrace gen: --node-set: %s\n", err);
                return 2;
            }
        } else if (a[0] != '-' && strchr(a, '=') != NULL) {
            if (mt_model_set(&model, a, err, sizeof(err)) != MEMSVC_OK) {
                fprintf(stderr, "memtrace gen: %s\n", err);
                return 2;
            }
        } else {
            fprintf(stderr, "memtrace gen: unexpected argument '%s'\n", a);
            fprintf(stderr, "(memtrace gen --help for the options)\n");
            return 2;
        }
    }
    p.layout.seq_len          = model.seq_len;
    p.layout.micro_batch_size = model.micro_batch;
    /* without --layout, the layout the model is published as trained with */
    if (layout_s == NULL && mt_gen_params_default_layout(&p, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: the preset's layout: %s\n", err);
        return 2;
    }
    if (layout_s != NULL) {
        p.tp_extend_ep = model.tp_extend_ep;
    }
    if (tp_extend_ep >= 0) {
        p.tp_extend_ep = tp_extend_ep;
    }
    if (layout_s != NULL && mt_layout_parse(layout_s, &p.layout, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: --layout: %s\n", err);
        return 2;
    }
    if (have_microbatches) {
        p.layout.microbatches = microbatches; /* 0 is refused by mt_gen_validate, as steps 0 */
    }
    p.steps          = steps;
    p.rank           = rank;
    p.skew           = skew;
    p.seed           = seed;
    p.pipeline_waits = !no_waits;
    if (overlap_s != NULL && mt_gen_overlap_parse(overlap_s, &p, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: --overlap: %s\n", err);
        return 2;
    }
    if (mt_gen_validate(&p, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace gen: %s\n", err);
        return 2;
    }
    per = p.layout.tp * p.layout.cp * p.layout.dp;
    if (want_describe) {
        return describe(&p);
    }
    if (out == NULL) {
        fprintf(stderr, "memtrace gen: -o OUT.trace (or --describe) is required\n");
        return 2;
    }
    if (stage_s == NULL) {
        if (p.layout.pp > 1) {
            print_stage_peaks(&p, NULL); /* which stage is the worst */
        }
        return write_trace(&p, &model, out);
    }
    if (!strcmp(stage_s, "all")) {
        uint32_t s;

        print_stage_peaks(&p, NULL);
        for (s = 0; s < p.layout.pp; s++) {
            char path[4096];

            stage_path(out, s, path, sizeof(path));
            p.rank = s * per + rank % per;
            rc     = write_trace(&p, &model, path);
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    }
    if (!strcmp(stage_s, "worst")) {
        uint32_t worst = 0;

        if (print_stage_peaks(&p, &worst) != 0) {
            return 1;
        }
        p.rank = worst * per + rank % per;
        return write_trace(&p, &model, out);
    }
    if (parse_u32_arg("--stage", stage_s, &u) < 0 || u >= p.layout.pp) {
        fprintf(stderr, "memtrace gen: --stage: '%s' is not all, worst or a stage below %u\n",
                stage_s, p.layout.pp);
        return 2;
    }
    p.rank = u * per + rank % per;
    return write_trace(&p, &model, out);
}

int mt_cmd_models(int argc, char **argv)
{
    const char *const *names = mt_model_preset_names();
    int                i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keys")) {
            const char *const *keys = mt_model_keys();

            for (i = 0; keys[i] != NULL; i++) {
                printf("%s\n", keys[i]);
            }
            return 0;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: memtrace models [--keys]\n"
                   "  parameter counts of the model presets next to the published figures\n");
            return 0;
        }
        fprintf(stderr, "memtrace models: unexpected argument '%s'\n", argv[i]);
        return 2;
    }
    printf("%-22s %10s %10s %7s %10s %10s %7s   %s\n", "model", "total", "published", "dev",
           "active", "published", "dev", "without input embedding: total, active");
    for (i = 0; names[i] != NULL; i++) {
        mt_model_t m;
        uint64_t   total, active;

        if (mt_model_preset(names[i], &m) != MEMSVC_OK) {
            continue;
        }
        mt_model_params(&m, &total, &active);
        if (total < 1000000000ull) { /* test models */
            printf("%-22s %9.2fM %10s %7s %9.2fM\n", m.name, total / 1e6, "-", "", active / 1e6);
            continue;
        }
        printf("%-22s %9.2fB", m.name, total / 1e9);
        if (m.published_total > 0) {
            printf(" %9.1fB %+6.2f%%", m.published_total / 1e9,
                   100 * (total / m.published_total - 1));
        } else {
            printf(" %10s %7s", "-", "");
        }
        printf(" %9.2fB", active / 1e9);
        if (m.published_active > 0) {
            printf(" %9.1fB %+6.2f%%", m.published_active / 1e9,
                   100 * (active / m.published_active - 1));
        } else {
            printf(" %10s %7s", "-", "");
        }
        printf("   %.2fB (%+.2f%%), %.2fB (%+.2f%%)", (total - mt_model_embedding_params(&m)) / 1e9,
               m.published_total > 0
                   ? 100 * ((total - mt_model_embedding_params(&m)) / m.published_total - 1)
                   : 0,
               (active - mt_model_embedding_params(&m)) / 1e9,
               m.published_active > 0
                   ? 100 * ((active - mt_model_embedding_params(&m)) / m.published_active - 1)
                   : 0);
        if (m.mtp_layers > 0) {
            printf("; +%.2fB MTP, not counted", mt_model_mtp_params(&m) / 1e9);
        }
        printf("\n");
    }
    return 0;
}
