/* bench_replay.c - memtrace replay: events per second, one Pangu step, peak RSS vs trace length
 *
 *   bench_replay [BIN_DIR]              the benchmark (BIN_DIR holds memtrace)
 *   bench_replay --write FILE STEPS     write the synthetic trace only
 */
#include "tools/memtrace/replay.h"
#include "tools/version.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 5
#define LAYERS 32
#define MICRO 8
#define MiB (1024ull * 1024ull)

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void put(mt_writer_t *w, const mt_event_t *e)
{
    if (mt_writer_put(w, e) != MEMSVC_OK) {
        fprintf(stderr, "bench_replay: cannot write the trace\n");
        exit(1);
    }
}

/*
 * A synthetic training trace: LAYERS parameters, then `steps` steps of MICRO micro-batches,
 * forward through every layer (an activation per layer and micro-batch) and backward (a
 * workspace per operator; activations freed after use). 6 events per layer and micro-batch.
 */
static uint64_t write_trace(const char *path, unsigned steps)
{
    mt_writer_t *w;
    mt_header_t  h;
    mt_event_t   e;
    uint64_t     next_id = 1, op = 1, param[LAYERS], act[LAYERS][MICRO], n;
    char         key[64];
    unsigned     s, l, m;

    mt_header_init(&h);
    snprintf(h.node.name, sizeof(h.node.name), "ascend-910b");
    h.node.num_npus  = 8;
    h.node.hbm_bytes = 64ull << 30;
    snprintf(h.model, sizeof(h.model), "synthetic-%ux%u", LAYERS, MICRO);
    h.steps = steps;
    if (mt_writer_open(path, &h, &w) != MEMSVC_OK) {
        exit(1);
    }
    memset(&e, 0, sizeof(e));
    e.tags = MEMSVC_TAGS_NONE;
    for (l = 0; l < LAYERS; l++) {
        snprintf(key, sizeof(key), "L%u.weight", l);
        e.type   = MT_EV_ALLOC;
        e.tensor = param[l] = next_id++;
        e.key               = key;
        e.size              = 64 * MiB;
        e.kind              = MEMSVC_KIND_PARAM;
        e.durable           = true;
        put(w, &e);
    }
    for (s = 0; s < steps; s++) {
        memset(&e, 0, sizeof(e));
        e.type = MT_EV_HINT;
        e.hint = MEMSVC_HINT_STEP_BEGIN;
        e.step = (int32_t)s;
        put(w, &e);
        for (m = 0; m < MICRO; m++) {
            for (l = 0; l < LAYERS; l++) {
                uint64_t reads[2] = {param[l], (l > 0) ? act[l - 1][m] : param[0]};

                memset(&e, 0, sizeof(e));
                snprintf(key, sizeof(key), "L%u.mb%u.act", l, m);
                e.type   = MT_EV_ALLOC;
                e.tensor = act[l][m] = next_id++;
                e.key                = key;
                e.size               = 8 * MiB;
                e.kind               = MEMSVC_KIND_ACTIVATION;
                e.tags               = MEMSVC_TAGS_NONE;
                e.recomputable       = true;
                e.recompute_ns       = 200000;
                e.inputs             = reads;
                e.num_inputs         = 2;
                put(w, &e);
                memset(&e, 0, sizeof(e));
                e.type        = MT_EV_COMPUTE;
                e.op          = op++;
                e.name        = "fwd";
                e.duration_ns = 200000;
                e.reads       = reads;
                e.num_reads   = 2;
                e.writes      = &act[l][m];
                e.num_writes  = 1;
                put(w, &e);
            }
        }
        for (m = MICRO; m-- > 0;) {
            for (l = LAYERS; l-- > 0;) {
                uint64_t reads[2] = {param[l], act[l][m]};
                uint64_t ws       = next_id++;

                memset(&e, 0, sizeof(e));
                snprintf(key, sizeof(key), "L%u.mb%u.ws", l, m);
                e.type   = MT_EV_ALLOC;
                e.tensor = ws;
                e.key    = key;
                e.size   = 16 * MiB;
                e.kind   = MEMSVC_KIND_WORKSPACE;
                e.tags   = MEMSVC_TAGS_NONE;
                put(w, &e);
                memset(&e, 0, sizeof(e));
                e.type        = MT_EV_COMPUTE;
                e.op          = op++;
                e.name        = "bwd";
                e.duration_ns = 400000;
                e.reads       = reads;
                e.num_reads   = 2;
                e.writes      = &ws;
                e.num_writes  = 1;
                put(w, &e);
                memset(&e, 0, sizeof(e));
                e.type   = MT_EV_FREE;
                e.tensor = ws;
                put(w, &e);
                e.tensor = act[l][m];
                put(w, &e);
            }
        }
        memset(&e, 0, sizeof(e));
        e.type = MT_EV_HINT;
        e.hint = MEMSVC_HINT_STEP_END;
        e.step = (int32_t)s;
        put(w, &e);
    }
    n = mt_writer_count(w);
    if (mt_writer_close(w) != MEMSVC_OK) {
        exit(1);
    }
    return n;
}

/* Median events/s of ROUNDS replays; the last report is kept in *last. */
static double replay_rate(const char *path, const char *policy, const char *override,
                          mt_replay_report_t *last)
{
    mt_replay_params_t p;
    double             rate[ROUNDS];
    char               err[512];
    int                i;

    for (i = 0; i < ROUNDS; i++) {
        mt_replay_params_init(&p);
        p.policy        = policy;
        p.baseline      = false;
        p.overrides     = &override;
        p.num_overrides = (override != NULL) ? 1 : 0;
        if (mt_replay_file(&p, path, last, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "bench_replay: %s\n", err);
            exit(1);
        }
        rate[i] = last->events_per_s;
        if (i + 1 < ROUNDS) {
            mt_replay_report_free(last);
        }
    }
    qsort(rate, ROUNDS, sizeof(rate[0]), cmp_double);
    return rate[ROUNDS / 2];
}

/* Run argv as a child; its peak RSS in KiB, or -1. */
static long child_rss_kib(char *const argv[])
{
    struct rusage ru;
    int           st;
    pid_t         pid;

    fflush(stdout); /* or the child's freopen writes our buffer a second time */
    pid = fork();

    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL) {
            _exit(127);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (wait4(pid, &st, 0, &ru) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        return -1;
    }
    return ru.ru_maxrss;
}

/* The temporary traces (one is 84 MB): removed when the benchmark ends or is interrupted. */
static char tmp_paths[3][PATH_MAX];

static void tmp_remove(void)
{
    unsigned i;

    for (i = 0; i < 3; i++) {
        if (tmp_paths[i][0] != '\0') {
            unlink(tmp_paths[i]);
        }
    }
}

static void on_signal(int sig)
{
    tmp_remove(); /* unlink is async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A new empty temporary file named after what, under $TMPDIR (default /tmp), in slot. */
static bool tmp_create(unsigned slot, const char *what)
{
    const char *dir = getenv("TMPDIR");
    char        path[PATH_MAX];
    int         fd;

    snprintf(path, sizeof(path), "%s/bench_replay_%s_XXXXXX",
             ((dir != NULL) && (*dir != '\0')) ? dir : "/tmp", what);
    fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "bench_replay: cannot create %s: %s\n", path, strerror(errno));
        return false;
    }
    close(fd);
    memcpy(tmp_paths[slot], path, sizeof(path)); /* after the file exists: the handler sees it */
    return true;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: bench_replay [BIN_DIR]           the benchmark (BIN_DIR holds memtrace;\n"
                 "                                        default: this program's directory)\n"
                 "       bench_replay --write FILE STEPS  write the synthetic trace only\n"
                 "\n"
                 "Replay speed (events/s), one Pangu Ultra MoE step, peak RSS against trace length.\n"
                 "Temporary traces go to $TMPDIR (default /tmp) and are removed at the end or on\n"
                 "SIGINT/SIGTERM.\n");
}

static bool run_quiet(const char *cmd)
{
    fflush(stdout);
    return system(cmd) == 0;
}

int main(int argc, char **argv)
{
    mt_replay_report_t r;
    char               bin[PATH_MAX], memtrace[PATH_MAX + 16];
    char     cmd[3 * PATH_MAX], *t1 = tmp_paths[0], *t4 = tmp_paths[1], *tp = tmp_paths[2];
    char     b1[32], b2[32];
    uint64_t n;
    double   rate;
    long     rss1, rss4;

    if ((argc == 2) && ((strcmp(argv[1], "--help") == 0) || (strcmp(argv[1], "-h") == 0))) {
        usage(stdout);
        return 0;
    }
    if (tool_version_asked(argc, argv, "bench_replay")) {
        return 0;
    }
    if ((argc > 1) && (argv[1][0] == '-') && (strcmp(argv[1], "--write") != 0)) {
        fprintf(stderr, "bench_replay: unknown option '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    if (argc == 4 && strcmp(argv[1], "--write") == 0) {
        /* the synthetic trace alone, for docs/replay.md's examples */
        n = write_trace(argv[2], (unsigned)strtoul(argv[3], NULL, 10));
        printf("%s: %" PRIu64 " events\n", argv[2], n);
        return 0;
    }
    if (argc > 1) {
        snprintf(bin, sizeof(bin), "%s", argv[1]);
    } else {
        ssize_t len = readlink("/proc/self/exe", bin, sizeof(bin) - 1);

        bin[len > 0 ? len : 0] = '\0';
        snprintf(bin, sizeof(bin), "%s", dirname(bin));
    }
    snprintf(memtrace, sizeof(memtrace), "%s/memtrace", bin);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    atexit(tmp_remove);
    printf("## memtrace replay (one core, phantom memory, virtual clock; median of %d runs)\n",
           ROUNDS);

    /* 1. speed */
    if (!tmp_create(0, "1") || !tmp_create(1, "4")) {
        return 1;
    }
    n = write_trace(t4, 2000);
    printf("synthetic trace: %" PRIu64 " events (%d layers x %d micro-batches x 2000 steps)\n", n,
           LAYERS, MICRO);
    rate = replay_rate(t4, "lru", NULL, &r);
    printf("  no memory pressure (ascend-910b, lru):  %6.2f M events/s  (target >= 2.00)  %s\n",
           rate / 1e6, (rate >= 2e6) ? "ok" : "BELOW TARGET");
    mt_replay_report_free(&r);
    rate = replay_rate(t4, "lru", "hbm=3GiB", &r);
    printf("  HBM 3 GiB (lru swaps %s out, %" PRIu64 " moves): %6.2f M events/s\n",
           sim_format_size(r.swap_out_bytes, b1, sizeof(b1)), r.swap_outs + r.swap_ins, rate / 1e6);
    mt_replay_report_free(&r);
    rate = replay_rate(t4, "lru:drop=on", "hbm=3GiB", &r);
    printf("  HBM 3 GiB (lru:drop=on, %" PRIu64 " recomputes):     %6.2f M events/s\n",
           r.recomputes, rate / 1e6);
    mt_replay_report_free(&r);

    /* 2. one step of the Pangu Ultra MoE first pipeline stage */
    snprintf(cmd, sizeof(cmd), "'%s' gen --help >/dev/null 2>&1", memtrace);
    if (access(memtrace, X_OK) != 0 || !run_quiet(cmd)) {
        printf("pangu-ultra-moe-718b step: skipped (`memtrace gen` is not in %s yet)\n", bin);
    } else {
        if (!tmp_create(2, "pangu")) {
            return 1;
        }
        snprintf(cmd, sizeof(cmd),
                 "'%s' gen --model pangu-ultra-moe-718b --layout tp=8,pp=16,vpp=2,ep=4,dp=48 "
                 "--microbatches 32 --steps 1 --rank 0 -o '%s' >/dev/null 2>&1",
                 memtrace, tp);
        if (!run_quiet(cmd)) {
            printf("pangu-ultra-moe-718b step: skipped (`%s` failed)\n", cmd);
        } else {
            mt_replay_params_t p;
            char               err[512];
            double             t0 = now_s();

            mt_replay_params_init(&p);
            p.baseline = false;
            if (mt_replay_file(&p, tp, &r, err, sizeof(err)) != MEMSVC_OK) {
                printf("pangu-ultra-moe-718b step: replay failed: %s\n", err);
            } else {
                printf("pangu-ultra-moe-718b first stage, 1 step (%" PRIu64
                       " events, lru): %.3f s wall, simulated %s, peak %s, %s\n",
                       r.events, now_s() - t0, sim_format_time(r.total_ns, b1, sizeof(b1)),
                       sim_format_size(r.peak_allocated, b2, sizeof(b2)),
                       r.fits ? "fits" : "does NOT fit");
                mt_replay_report_free(&r);
            }
        }
        unlink(tp);
    }

    /* 3. peak RSS of the replay process: 1x and 4x the trace length */
    write_trace(t1, 500);
    if (access(memtrace, X_OK) != 0) {
        printf("peak RSS: skipped (no %s)\n", memtrace);
    } else {
        char *a1[] = {memtrace, "replay", t1, "--no-baseline", "--quiet", NULL};
        char *a4[] = {memtrace, "replay", t4, "--no-baseline", "--quiet", NULL};

        rss1 = child_rss_kib(a1);
        rss4 = child_rss_kib(a4);
        if (rss1 <= 0 || rss4 <= 0) {
            printf("peak RSS: the replay failed\n");
        } else {
            printf("peak RSS of `memtrace replay`: 1x trace (500 steps) %ld KiB, 4x (2000 steps) "
                   "%ld KiB, ratio %.2f (target: ~1, live tensors do not grow with length)\n",
                   rss1, rss4, (double)rss4 / (double)rss1);
        }
    }
    unlink(t1);
    unlink(t4);
    return 0;
}
