/* engine_demo.c - drives the engine on a small built-in training workload and reports */
#include "memsvc/eng.h"
#include "tools/version.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The workload: a toy transformer of LAYERS layers trained with MICRO micro-batches per step
 * on one NPU of the `tiny` node. Each layer has a parameter tensor (durable) and, per
 * micro-batch, an activation kept for backward (recomputable). Forward runs every micro-batch
 * through every layer, backward runs them back, then the optimizer updates each parameter.
 * Activations alone need more HBM than the device has, so the policy has to move things.
 */
#define LAYERS 8
#define MICRO  4
#define STEPS  2
#define MiB    (1024ull * 1024ull)

typedef struct demo {
    eng_t   *eng;
    int      waiting;
    uint64_t ops, oom;
} demo_t;

static void demo_done(void *arg, eng_handle_t h, memsvc_status_t status)
{
    demo_t *d = arg;

    d->waiting--;
    if (status < 0) {
        printf("   request failed: %s\n", memsvc_strerror(status));
        d->oom++;
    }
}

/* Wait (in simulated time) until every outstanding request has completed. */
static void demo_wait(demo_t *d)
{
    while (d->waiting > 0 && eng_step(d->eng)) {
    }
}

/* Run an operator of `ns` on the device's compute stream; moves proceed meanwhile. */
static void demo_compute(demo_t *d, sim_time_t ns)
{
    sim_clock_t *clock = eng_clock(d->eng);
    sim_time_t   end   = eng_charge_compute(d->eng, 0, ns, false);

    while (eng_next_event(d->eng) <= end) {
        eng_step(d->eng);
    }
    sim_clock_advance_to(clock, end);
    d->ops++;
}

static memsvc_status_t demo_acquire(demo_t *d, eng_handle_t h)
{
    memsvc_status_t s = eng_acquire(d->eng, h, demo_done, d);

    if (s == MEMSVC_INPROGRESS) {
        d->waiting++;
        demo_wait(d);
    } else if (s == MEMSVC_RECOMPUTE) {
        eng_tensor_info_t info;

        eng_info(d->eng, h, &info);
        demo_compute(d, info.recompute_ns);
    }
    return s;
}

static memsvc_status_t demo_alloc(demo_t *d, const char *key, uint64_t size, memsvc_kind_t kind,
                                  int layer, int mb, eng_handle_t *h_p)
{
    eng_tensor_desc_t td;
    memsvc_status_t   s;

    memset(&td, 0, sizeof(td));
    td.key            = key;
    td.size           = size;
    td.kind           = kind;
    td.tags           = MEMSVC_TAGS_NONE;
    td.tags.layer     = layer;
    td.tags.microbatch = mb;
    td.recomputable   = (kind == MEMSVC_KIND_ACTIVATION);
    td.recompute_ns   = 200000;
    td.durable        = (kind == MEMSVC_KIND_PARAM || kind == MEMSVC_KIND_OPTIM);
    td.job            = 1;
    s = eng_alloc(d->eng, &td, ENG_ALLOC_PIN, demo_done, d, h_p);
    if (s == MEMSVC_INPROGRESS) {
        d->waiting++;
        demo_wait(d);
        s = MEMSVC_OK;
    }
    if (s < 0) {
        printf("   alloc %s: %s\n", key, memsvc_strerror(s));
        d->oom++;
    }
    return s;
}

static int demo_run(const char *policy)
{
    eng_handle_t    param[LAYERS], act[LAYERS][MICRO];
    sim_desc_t      desc;
    eng_params_t    p;
    demo_t          d;
    eng_dev_stats_t st;
    char            key[64], err[256], b1[32], b2[32];
    int             step, l, m;
    sim_time_t      compute = 0;

    memset(&d, 0, sizeof(d));
    sim_desc_preset("tiny", &desc);
    p.desc   = &desc;
    p.mode   = SIM_MEM_BACKED;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = policy;
    if (eng_create(&p, &d.eng, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "engine: %s\n", err);
        return 1;
    }
    printf("== policy %s: %d layers x %d micro-batches, %d steps, on one NPU of `tiny` (%s HBM)\n",
           policy, LAYERS, MICRO, STEPS, sim_format_size(desc.hbm_bytes, b1, sizeof(b1)));
    printf("   parameters %s, activations %s per step\n",
           sim_format_size(LAYERS * 2 * MiB, b1, sizeof(b1)),
           sim_format_size(LAYERS * MICRO * 3 * MiB, b2, sizeof(b2)));

    for (l = 0; l < LAYERS; l++) {
        snprintf(key, sizeof(key), "L%d.param", l);
        if (demo_alloc(&d, key, 2 * MiB, MEMSVC_KIND_PARAM, l, -1, &param[l]) < 0) {
            goto out;
        }
        eng_release(d.eng, param[l]);
    }
    for (step = 0; step < STEPS && d.oom == 0; step++) {
        /* forward */
        for (m = 0; m < MICRO && d.oom == 0; m++) {
            for (l = 0; l < LAYERS && d.oom == 0; l++) {
                demo_acquire(&d, param[l]);
                snprintf(key, sizeof(key), "L%d.mb%d.act", l, m);
                if (demo_alloc(&d, key, 3 * MiB, MEMSVC_KIND_ACTIVATION, l, m, &act[l][m]) < 0) {
                    break;
                }
                demo_compute(&d, 300000);
                compute += 300000;
                eng_release(d.eng, act[l][m]);
                eng_release(d.eng, param[l]);
            }
        }
        /* backward: each activation is used once more, then freed */
        for (m = MICRO - 1; m >= 0 && d.oom == 0; m--) {
            for (l = LAYERS - 1; l >= 0 && d.oom == 0; l--) {
                if (demo_acquire(&d, act[l][m]) < 0 || demo_acquire(&d, param[l]) < 0) {
                    d.oom++;
                    break;
                }
                demo_compute(&d, 600000);
                compute += 600000;
                eng_release(d.eng, param[l]);
                eng_release(d.eng, act[l][m]);
                eng_free(d.eng, act[l][m]);
            }
        }
        /* optimizer */
        for (l = 0; l < LAYERS && d.oom == 0; l++) {
            demo_acquire(&d, param[l]);
            demo_compute(&d, 100000);
            compute += 100000;
            eng_release(d.eng, param[l]);
        }
        if (d.oom > 0) {
            break;
        }
        printf("   step %d done at %s simulated\n", step,
               sim_format_time(sim_clock_now(eng_clock(d.eng)), b1, sizeof(b1)));
    }
out:
    eng_dev_stats(d.eng, 0, &st);
    if (d.oom > 0) {
        printf("   RESULT: out of memory (%" PRIu64 " failed requests) - the workload does not fit "
               "without moving tensors\n",
               d.oom);
    } else {
        sim_time_t total = sim_clock_now(eng_clock(d.eng));

        printf("   RESULT: %d steps in %s, compute %s, stalled %s, overhead %.1f%%\n", STEPS,
               sim_format_time(total, b1, sizeof(b1)), sim_format_time(compute, b2, sizeof(b2)),
               sim_format_time(st.stall_ns, err, sizeof(err)),
               100.0 * ((double)total / (double)compute - 1.0));
    }
    eng_print_stats(d.eng, stdout);
    printf("\n");
    eng_destroy(d.eng);
    return d.oom > 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: engine_demo [POLICY ...]\n"
                 "\n"
                 "Runs a small training-step workload through the engine in-process (no daemon)\n"
                 "under each POLICY (e.g. lru, lru:drop=on, none) and prints what each did;\n"
                 "without arguments: none (runs out of memory: why a policy is needed), lru and\n"
                 "lru:drop=on. Exit status 1 if a policy ran out of memory.\n");
}

int main(int argc, char **argv)
{
    int i, rc = 0;

    if ((argc == 2) && ((strcmp(argv[1], "--help") == 0) || (strcmp(argv[1], "-h") == 0))) {
        usage(stdout);
        return 0;
    }
    if (tool_version_asked(argc, argv, "engine_demo")) {
        return 0;
    }
    for (i = 1; i < argc; i++) {
        if (argv[i][0] == '-') {
            fprintf(stderr, "engine_demo: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    if (argc < 2) {
        demo_run("none"); /* expected to run out of memory: shows why a policy is needed */
        rc |= demo_run("lru");
        rc |= demo_run("lru:drop=on");
        return rc;
    }
    for (i = 1; i < argc; i++) {
        rc |= demo_run(argv[i]);
    }
    return rc;
}
