/* replay_cmd.c - `memtrace replay`: options, the replay, the report, the plot */
#include "policy/policy.h"
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/replay.h"
#include "tools/memtrace/replay_live.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void mt_replay_usage(FILE *out)
{
    const pol_ops_t *const *p;

    fprintf(
        out,
        "usage: memtrace replay TRACE [--node PRESET] [key=value ...] [--memory phantom|backed]\n"
        "                       [--policy SPEC] [--json] [--json-out FILE] [--plot FILE.svg]\n"
        "                       [--alloc tlsf|bytes] [--thrash-limit N] [--top N] [--no-baseline]\n"
        "                       [--quiet]\n"
        "       memtrace replay --daemon HOST:PORT TRACE... [--time-scale X] [--job N] [--json]\n"
        "                       [--per-request | --prefetch N]\n"
        "  Play TRACE on a simulated node under a policy, in simulated time, and report step\n"
        "  time, stalls, recomputation, memory peaks, moves and out-of-memory events.\n"
        "  --node PRESET     node preset (default: the trace header's node); key=value overrides\n"
        "                    it, e.g. hbm=48GiB h2d_bw=25GB/s (see docs/node.md)\n"
        "  --memory MODE     phantom (sizes only, default) or backed (real bytes)\n"
        "  --alloc MODE      HBM allocator: tlsf (512 B blocks, fragmentation; default) or bytes\n"
        "                    (a byte count, as byte-counting simulators do; phantom memory)\n"
        "  --thrash-limit N  stop when recomputation exceeds N x the trace's compute (off by\n"
        "                    default; only to compare with simulators that stop there)\n"
        "  --policy SPEC     NAME[:k=v,...], default lru; policies:\n");
    for (p = pol_all(); *p != NULL; p++) {
        fprintf(out, "                      %-6s %s%s%s\n", (*p)->name, (*p)->summary,
                (*p)->params[0] ? "; " : "", (*p)->params);
    }
    fprintf(out, "  --json            print the report as JSON instead of text\n"
                 "  --json-out FILE   also write the JSON report to FILE\n"
                 "  --plot FILE.svg   device memory over simulated time, one panel per NPU\n"
                 "  --top N           the N largest live tensors at each NPU's peak (default 10;\n"
                 "                    0: none; the trace is read a second time)\n"
                 "  --no-baseline     skip the unconstrained replay (no overhead figure)\n"
                 "  --quiet           no progress bar\n"
                 "  (--json, --json-out and --quiet apply to both; the other options above to\n"
                 "  offline replays, those below to live ones)\n"
                 "  --daemon ADDR     live: replay through a running memsvcd, one trainer process\n"
                 "                    per rank of each TRACE (see docs/replay.md)\n"
                 "  --time-scale X    live: sleep X times each operator's duration (default 1)\n"
                 "  --job N           live: the trainers' job id (default 1000 + pid %% 1000)\n"
                 "  --per-request     live: one answered request per event instead of a\n"
                 "                    prefetched batch per operator (for comparison)\n"
                 "  --prefetch N      live: operators whose batches are in flight ahead of the\n"
                 "                    one running (1..16, default 8)\n");
}

/* Options that take a value (given last, without one, they are a usage error). */
static bool replay_takes_value(const char *a)
{
    static const char *const opts[] = {
        "--node",       "--memory", "--policy",   "--alloc", "--thrash-limit",
        "--json-out",   "--plot",   "--prefetch", "--top",   "--daemon",
        "--time-scale", "--job",    NULL};
    size_t i;

    for (i = 0; opts[i] != NULL; i++) {
        if (!strcmp(a, opts[i])) {
            return true;
        }
    }
    return false;
}

/* "memtrace replay: --a, --b <why> (...)", on one line. */
static void replay_refuse(const char *const *names, int n, const char *why)
{
    int i;

    fprintf(stderr, "memtrace replay: ");
    for (i = 0; i < n; i++) {
        fprintf(stderr, "%s%s", i ? ", " : "", names[i]);
    }
    fprintf(stderr, " %s (memtrace replay --help for the options)\n", why);
}

int mt_cmd_replay(int argc, char **argv)
{
    mt_replay_params_t params;
    mt_replay_report_t report;
    const char       **overrides;
    const char        *path = NULL, *json_out = NULL, *plot = NULL, *daemon = NULL;
    const char       **paths;
    int                num_paths = 0;
    mt_live_params_t   live = {.time_scale = 1.0};
    bool               json = false;
    memsvc_status_t    status;
    size_t             n = 0;
    int                i, rc = 0;
    char               err[1024];
    /* options of one kind of replay given to the other: refused, each named */
    const char       **offline_only, **live_only;
    int                n_offline = 0, n_live = 0;

    mt_replay_params_init(&params);
    params.progress = true;
    params.top_n    = 10;
    overrides       = calloc((size_t)argc, sizeof(*overrides));
    paths           = calloc((size_t)argc, sizeof(*paths));
    offline_only    = calloc((size_t)argc, sizeof(*offline_only));
    live_only       = calloc((size_t)argc, sizeof(*live_only));
    live.job        = 1000 + (uint32_t)getpid() % 1000;
    if (overrides == NULL || paths == NULL || offline_only == NULL || live_only == NULL) {
        fprintf(stderr, "memtrace replay: out of memory\n");
        rc = 1;
        goto out;
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            mt_replay_usage(stdout);
            goto out;
        } else if (!strcmp(a, "--node") && i + 1 < argc) {
            offline_only[n_offline++] = a;
            params.node               = argv[++i];
        } else if (!strcmp(a, "--memory") && i + 1 < argc) {
            offline_only[n_offline++] = a;
            if (sim_mem_mode_parse(argv[++i], &params.mode) != MEMSVC_OK) {
                fprintf(stderr, "memtrace replay: --memory: '%s' is not phantom or backed\n",
                        argv[i]);
                rc = 2;
                goto out;
            }
        } else if (!strcmp(a, "--policy") && i + 1 < argc) {
            offline_only[n_offline++] = a;
            params.policy             = argv[++i];
        } else if (!strcmp(a, "--alloc") && i + 1 < argc) {
            offline_only[n_offline++] = a;
            i++;
            if (!strcmp(argv[i], "bytes")) {
                overrides[n++] = "alloc=bytes";
            } else if (!strcmp(argv[i], "tlsf")) {
                overrides[n++] = "alloc=tlsf";
            } else {
                fprintf(stderr, "memtrace replay: --alloc: '%s' is not tlsf or bytes\n", argv[i]);
                rc = 2;
                goto out;
            }
        } else if (!strcmp(a, "--thrash-limit") && i + 1 < argc) {
            char *end;

            offline_only[n_offline++] = a;
            params.thrash_limit = strtod(argv[++i], &end);
            if (*end != '\0' || !(params.thrash_limit > 0.0) || params.thrash_limit > 1e9) {
                fprintf(stderr, "memtrace replay: --thrash-limit: '%s' is not a number > 0\n",
                        argv[i]);
                rc = 2;
                goto out;
            }
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--json-out") && i + 1 < argc) {
            json_out = argv[++i];
        } else if (!strcmp(a, "--plot") && i + 1 < argc) {
            offline_only[n_offline++] = a;
            plot                      = argv[++i];
            params.timeline = true;
        } else if (!strcmp(a, "--top") && i + 1 < argc) {
            char         *end;
            unsigned long k = strtoul(argv[++i], &end, 10);

            offline_only[n_offline++] = a;
            if (*end != '\0' || argv[i][0] < '0' || argv[i][0] > '9' || k > MT_REPLAY_TOP_MAX) {
                fprintf(stderr, "memtrace replay: --top: '%s' is not a count 0..%d\n", argv[i],
                        MT_REPLAY_TOP_MAX);
                rc = 2;
                goto out;
            }
            params.top_n = (uint32_t)k;
        } else if (!strcmp(a, "--no-baseline")) {
            offline_only[n_offline++] = a;
            params.baseline           = false;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            params.progress = false;
        } else if (!strcmp(a, "--per-request")) {
            live_only[n_live++] = a;
            live.per_request    = true;
        } else if (!strcmp(a, "--prefetch") && i + 1 < argc) {
            char *end;
            long  k = strtol(argv[++i], &end, 10);

            live_only[n_live++] = a;
            if (*end != '\0' || k < 1 || k > LIVE_PREFETCH_MAX) {
                fprintf(stderr, "memtrace replay: --prefetch: '%s' is not a count 1..%d\n", argv[i],
                        LIVE_PREFETCH_MAX);
                rc = 2;
                goto out;
            }
            live.prefetch = (unsigned)k;
        } else if (!strcmp(a, "--daemon") && i + 1 < argc) {
            daemon = argv[++i];
        } else if (!strcmp(a, "--time-scale") && i + 1 < argc) {
            char *end;

            live_only[n_live++] = a;
            live.time_scale = strtod(argv[++i], &end);
            if (*end != '\0' || !(live.time_scale >= 0.0) || live.time_scale > 1e6) {
                fprintf(stderr, "memtrace replay: --time-scale: '%s' is not a number >= 0\n",
                        argv[i]);
                rc = 2;
                goto out;
            }
        } else if (!strcmp(a, "--job") && i + 1 < argc) {
            char         *end;
            unsigned long j = strtoul(argv[++i], &end, 10);

            live_only[n_live++] = a;
            if (*end != '\0' || j == 0 || j > UINT32_MAX) {
                fprintf(stderr, "memtrace replay: --job: '%s' is not a job id >= 1\n", argv[i]);
                rc = 2;
                goto out;
            }
            live.job = (uint32_t)j;
        } else if (a[0] != '-' && strchr(a, '=') != NULL) {
            offline_only[n_offline++] = a;
            overrides[n++]            = a;
        } else if (a[0] != '-' || !strcmp(a, "-")) {
            paths[num_paths++] = a;
            path               = paths[0];
        } else {
            fprintf(stderr, "memtrace replay: %s '%s'%s (memtrace replay --help for the options)\n",
                    replay_takes_value(a) ? "option" : "unknown option", a,
                    replay_takes_value(a) ? " needs a value" : "");
            rc = 2;
            goto out;
        }
    }
    if (daemon != NULL && n_offline > 0) {
        replay_refuse(offline_only, n_offline,
                      n_offline == 1 ? "does not apply to a live replay (--daemon): the daemon's "
                                       "own options set its node, memory and policy"
                                     : "do not apply to a live replay (--daemon): the daemon's "
                                       "own options set its node, memory and policy");
        rc = 2;
        goto out;
    }
    if (daemon == NULL && n_live > 0) {
        replay_refuse(live_only, n_live,
                      n_live == 1 ? "applies to a live replay only (--daemon ADDR)"
                                  : "apply to a live replay only (--daemon ADDR)");
        rc = 2;
        goto out;
    }
    if (path == NULL) {
        fprintf(stderr, "memtrace replay: a TRACE is needed (memtrace replay --help for the "
                        "options)\n");
        rc = 2;
        goto out;
    }
    if (daemon != NULL) {
        mt_live_report_t *lrep = malloc(sizeof(*lrep));

        if (lrep == NULL) {
            fprintf(stderr, "memtrace replay: out of memory\n");
            rc = 1;
            goto out;
        }
        live.address = daemon;
        status = mt_replay_live(paths, num_paths, &live, lrep, err, sizeof(err));
        if (status != MEMSVC_OK) {
            fprintf(stderr, "memtrace replay: %s\n", err);
            rc = 1;
        } else {
            uint32_t k;

            if (json) {
                mt_live_report_json(lrep, &live, stdout);
            } else {
                mt_live_report_print(lrep, &live, stdout);
            }
            if (json_out != NULL) {
                FILE *f = fopen(json_out, "w");

                if (f != NULL) {
                    mt_live_report_json(lrep, &live, f);
                }
                if (f == NULL || fclose(f) != 0) {
                    fprintf(stderr, "memtrace replay: cannot write %s\n", json_out);
                    rc = 1;
                }
            }
            for (k = 0; k < lrep->num_procs; k++) {
                rc = (lrep->procs[k].status < 0) ? 1 : rc;
            }
        }
        free(lrep);
        goto out;
    }
    if (num_paths > 1) {
        fprintf(stderr, "memtrace replay: one TRACE at a time offline (several with --daemon)\n");
        rc = 2;
        goto out;
    }
    params.overrides     = overrides;
    params.num_overrides = n;

    status = mt_replay_file(&params, path, &report, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace replay: %s\n", err);
        /* a bad policy, preset or override is a usage error */
        rc = (status == MEMSVC_ERR_UNKNOWN_KEY || status == MEMSVC_ERR_PARSE ||
              status == MEMSVC_ERR_INVALID_PARAM)
                 ? 2
                 : 1;
        goto out;
    }
    if (json) {
        mt_replay_print_json(&report, stdout);
    } else {
        mt_replay_print_text(&report, stdout);
    }
    if (json_out != NULL) {
        FILE *f = fopen(json_out, "w");

        if (f == NULL) {
            fprintf(stderr, "memtrace replay: cannot write %s\n", json_out);
            rc = 1;
        } else {
            mt_replay_print_json(&report, f);
            if (fclose(f) != 0) {
                fprintf(stderr, "memtrace replay: cannot write %s\n", json_out);
                rc = 1;
            }
        }
    }
    if (plot != NULL) {
        FILE *f = fopen(plot, "w");

        if (f == NULL) {
            fprintf(stderr, "memtrace replay: cannot write %s\n", plot);
            rc = 1;
        } else {
            status = mt_replay_plot_svg(&report, f);
            if (fclose(f) != 0 || status != MEMSVC_OK) {
                fprintf(stderr, "memtrace replay: %s: %s\n", plot,
                        status == MEMSVC_ERR_INVALID_PARAM ? "nothing to plot" : "write failed");
                rc = 1;
            }
        }
    }
    mt_replay_report_free(&report);
out:
    free(overrides);
    free(paths);
    free(offline_only);
    free(live_only);
    return rc;
}
