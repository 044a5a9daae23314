/* test_import.c - importers: PyTorch snapshot, Chrome trace, DTR log; malformed inputs; CLI */
#include "tests/test_util.h"
#include "tools/memtrace/import.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DATA "tests/data/"

typedef struct got {
    mt_header_t header;
    mt_event_t  ev[32];
    char        keys[32][MEMSVC_KEY_MAX + 1];
    char        names[32][MT_NAME_MAX + 1];
    uint64_t    ids[32][4][4]; /* inputs, reads, writes, aliases (first 4) */
    int         n;
} got_t;

static void tmp_path(char *buf, size_t len)
{
    int fd;

    snprintf(buf, len, "/tmp/memsvc-test-import-XXXXXX");
    fd = mkstemp(buf);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
}

/* Import in (format), read the trace back into *g (copies, so events outlive the reader). */
static void import_and_read(mt_import_format_t format, uint64_t unit_ns, const char *in,
                            mt_import_stats_t *st, got_t *g)
{
    mt_import_opts_t opts;
    mt_reader_t     *r;
    mt_event_t       e;
    char             out[64], err[512];
    bool             end = false;
    uint32_t         i;

    memset(g, 0, sizeof(*g));
    tmp_path(out, sizeof(out));
    mt_import_opts_init(&opts);
    opts.format       = format;
    opts.time_unit_ns = unit_ns;
    opts.model        = "unit-model";
    if (mt_import(&opts, in, out, st, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "import %s: %s\n", in, err);
        CU_FAIL_FATAL("import failed");
    }
    TEST_ASSERT_OK(mt_reader_open(out, &r, err, sizeof(err)));
    g->header = *mt_reader_header(r);
    while ((mt_reader_next(r, &e, &end, err, sizeof(err)) == MEMSVC_OK) && !end) {
        CU_ASSERT_FATAL(g->n < 32);
        g->ev[g->n] = e;
        if (e.key != NULL) {
            snprintf(g->keys[g->n], sizeof(g->keys[0]), "%s", e.key);
        }
        if (e.name != NULL) {
            snprintf(g->names[g->n], sizeof(g->names[0]), "%s", e.name);
        }
        for (i = 0; i < 4; i++) {
            g->ids[g->n][0][i] = (i < e.num_inputs) ? e.inputs[i] : 0;
            g->ids[g->n][1][i] = (i < e.num_reads) ? e.reads[i] : 0;
            g->ids[g->n][2][i] = (i < e.num_writes) ? e.writes[i] : 0;
            g->ids[g->n][3][i] = (i < e.num_aliases) ? e.aliases[i] : 0;
        }
        g->ev[g->n].key = g->ev[g->n].name = NULL;
        g->ev[g->n].inputs = g->ev[g->n].reads = g->ev[g->n].writes = g->ev[g->n].aliases = NULL;
        g->n++;
    }
    CU_ASSERT_TRUE(end);
    CU_ASSERT_EQUAL((uint64_t)g->n, st->events);
    mt_reader_close(r);
    unlink(out);
}

static int run_sh(const char *cmd, int *lines_p);

static const char *meta(const mt_header_t *h, const char *key)
{
    uint32_t i;

    for (i = 0; i < h->num_meta; i++) {
        if (strcmp(h->meta_key[i], key) == 0) {
            return h->meta_value[i];
        }
    }
    return "(absent)";
}

static void test_snapshot_sample(void)
{
    static const uint64_t sizes[5] = {512, 1024, 256, 4096, 4000};
    mt_import_stats_t     st;
    got_t                *g = malloc(sizeof(*g));
    int                   i, a = 0;

    CU_ASSERT_FATAL(g != NULL);
    import_and_read(MT_IMPORT_SNAPSHOT, 1000, DATA "snapshot_small.json", &st, g);
    CU_ASSERT_EQUAL(st.events, 8);
    CU_ASSERT_EQUAL(st.allocs, 5);
    CU_ASSERT_EQUAL(st.frees, 3);
    CU_ASSERT_EQUAL(st.skipped, 1); /* the free of 0xdead, never allocated */
    /* device 0: 512, +1024, -512, +256, +4096 -> peak 5376; device 1: 4000 */
    CU_ASSERT_EQUAL(st.recorded_peak, 5376);
    CU_ASSERT_EQUAL(g->header.recorded_peak, 5376);
    CU_ASSERT_STRING_EQUAL(g->header.model, "unit-model");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "source"), "pytorch-snapshot");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "peak_reserved"), "3145728"); /* 2 MiB + 1 MiB */
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "oom_count"), "1");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "unmatched_frees"), "1");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "devices"), "2");
    for (i = 0; i < g->n; i++) {
        if (g->ev[i].type == MT_EV_ALLOC) {
            CU_ASSERT_EQUAL(g->ev[i].size, sizes[a]);
            a++;
        }
    }
    CU_ASSERT_EQUAL(g->ev[0].type, MT_EV_ALLOC);
    CU_ASSERT_EQUAL(g->ev[0].time_ns, 10000);
    CU_ASSERT_STRING_EQUAL(g->keys[0], "forward#1");
    CU_ASSERT_STRING_EQUAL(g->keys[3], "linear \"proj\"#3");
    CU_ASSERT_EQUAL(g->ev[2].type, MT_EV_FREE);
    CU_ASSERT_EQUAL(g->ev[2].tensor, 1);
    CU_ASSERT_EQUAL(g->ev[2].time_ns, 15000); /* free_completed, not free_requested */
    CU_ASSERT_EQUAL(g->ev[6].device, 1);
    CU_ASSERT_EQUAL(g->ev[7].device, 1);
    CU_ASSERT_EQUAL(g->ev[7].type, MT_EV_FREE);
    free(g);
}

static void test_chrome_sample(void)
{
    mt_import_stats_t st;
    got_t            *g = malloc(sizeof(*g));
    int               i;

    CU_ASSERT_FATAL(g != NULL);
    import_and_read(MT_IMPORT_CHROME, 1000, DATA "chrome_small.json", &st, g);
    /* 8192 B were allocated before the recording (10240 - 2048): a stand-in block holds them,
     * and the free of a block from before shrinks it (free + alloc of 7680) */
    CU_ASSERT_EQUAL(st.events, 8);
    CU_ASSERT_EQUAL(st.allocs, 5);
    CU_ASSERT_EQUAL(st.frees, 3);
    CU_ASSERT_EQUAL(st.skipped, 1); /* one CPU event */
    CU_ASSERT_EQUAL(st.recorded_peak, 12800); /* max "Total Allocated" */
    CU_ASSERT_EQUAL(g->header.recorded_peak, 12800);
    /* running sum: 8192, 10240, 11264, 9216, (-512) 8704, 12800, 11776 = Total Allocated */
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "peak_running_sum"), "12800");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "peak_reserved"), "23068672");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "cpu_events"), "1");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "unmatched_frees"), "0");
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "frees_before_recording"), "1");
    /* the node's HBM is the device's, from deviceProperties[0].totalGlobalMem */
    CU_ASSERT_EQUAL(g->header.node.hbm_bytes, 85197848576ull);
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "device_total_mem"), "85197848576");
    CU_ASSERT_EQUAL(g->ev[0].time_ns, 100500); /* ts 100.5 us */
    CU_ASSERT_EQUAL(g->ev[0].size, 8192);      /* before the recording */
    CU_ASSERT_EQUAL(g->ev[1].size, 2048);
    for (i = 1; i < g->n; i++) {
        CU_ASSERT(g->ev[i].time_ns >= g->ev[i - 1].time_ns); /* sorted by ts */
    }
    CU_ASSERT_EQUAL(g->ev[4].type, MT_EV_FREE); /* the stand-in shrinks */
    CU_ASSERT_EQUAL(g->ev[4].tensor, 1);
    CU_ASSERT_EQUAL(g->ev[5].type, MT_EV_ALLOC);
    CU_ASSERT_EQUAL(g->ev[5].size, 7680);
    CU_ASSERT_EQUAL(g->ev[6].type, MT_EV_ALLOC);
    CU_ASSERT_EQUAL(g->ev[6].size, 4096);
    CU_ASSERT_EQUAL(g->ev[7].type, MT_EV_FREE);
    CU_ASSERT_EQUAL(g->ev[7].tensor, 3);
    free(g);
}

static void test_dtr_sample(void)
{
    mt_import_stats_t st;
    got_t            *g = malloc(sizeof(*g));
    const mt_event_t *e;

    CU_ASSERT_FATAL(g != NULL);
    import_and_read(MT_IMPORT_DTR, 1000, DATA "dtr_small.jsonl", &st, g);
    CU_ASSERT_EQUAL(st.events, 15);
    CU_ASSERT_EQUAL(st.allocs, 5);   /* w, x, y, z, s (v is a view: an alias of z) */
    CU_ASSERT_EQUAL(st.computes, 5); /* mm, relu, view, add_, sum */
    CU_ASSERT_EQUAL(st.hints, 2);
    CU_ASSERT_EQUAL(st.frees, 3); /* z's storage (after v), y's (after z2), s */
    /* w 4096 + x 1024 + y 2048 + z 2048 + s 4 */
    CU_ASSERT_EQUAL(st.recorded_peak, 9220);
    CU_ASSERT_EQUAL(g->header.recorded_peak, 9220);
    CU_ASSERT_EQUAL(g->header.steps, 1);
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "live_at_end"), "5120");

    e = &g->ev[0]; /* CONSTANT w */
    CU_ASSERT_EQUAL(e->type, MT_EV_ALLOC);
    CU_ASSERT_STRING_EQUAL(g->keys[0], "w");
    CU_ASSERT_EQUAL(e->kind, MEMSVC_KIND_PARAM);
    CU_ASSERT_TRUE(e->durable);
    CU_ASSERT_FALSE(e->recomputable);
    CU_ASSERT_EQUAL(g->ev[2].type, MT_EV_HINT);
    CU_ASSERT_EQUAL(g->ev[2].hint, MEMSVC_HINT_STEP_BEGIN);
    e = &g->ev[3]; /* y = mm(x, w) */
    CU_ASSERT_EQUAL(e->type, MT_EV_ALLOC);
    CU_ASSERT_STRING_EQUAL(g->keys[3], "y");
    CU_ASSERT_EQUAL(e->size, 2048);
    CU_ASSERT_TRUE(e->recomputable);
    CU_ASSERT_EQUAL(e->recompute_ns, 12500);
    CU_ASSERT_EQUAL(e->producer, 1);
    CU_ASSERT_EQUAL(e->num_inputs, 2);
    CU_ASSERT_EQUAL(g->ids[3][0][0], 2);
    CU_ASSERT_EQUAL(g->ids[3][0][1], 1);
    e = &g->ev[4];
    CU_ASSERT_EQUAL(e->type, MT_EV_COMPUTE);
    CU_ASSERT_STRING_EQUAL(g->names[4], "aten::mm");
    CU_ASSERT_EQUAL(e->op, 1);
    CU_ASSERT_EQUAL(e->duration_ns, 12500);
    CU_ASSERT_EQUAL(e->num_writes, 1);
    CU_ASSERT_EQUAL(g->ids[4][2][0], 3);
    e = &g->ev[7]; /* view: an alias, nothing written */
    CU_ASSERT_STRING_EQUAL(g->names[7], "aten::view");
    CU_ASSERT_EQUAL(e->num_reads, 1);
    CU_ASSERT_EQUAL(e->num_writes, 0);
    CU_ASSERT_EQUAL(e->num_aliases, 1); /* v is a view of z's storage: re-run with it */
    CU_ASSERT_EQUAL(g->ids[7][3][0], 4);
    CU_ASSERT_EQUAL(e->time_ns, 15500);
    e = &g->ev[8]; /* add_ mutates v, which is z's storage */
    CU_ASSERT_STRING_EQUAL(g->names[8], "aten::add_");
    CU_ASSERT_EQUAL(e->num_reads, 2);
    CU_ASSERT_EQUAL(e->num_writes, 1);
    CU_ASSERT_EQUAL(g->ids[8][2][0], 4);
    CU_ASSERT_EQUAL(g->ev[9].hint, MEMSVC_HINT_PHASE);
    CU_ASSERT_EQUAL(g->ev[9].phase, MEMSVC_PHASE_BACKWARD);
    CU_ASSERT_EQUAL(g->ev[9].time_ns, 16500);
    CU_ASSERT_EQUAL(g->ev[12].type, MT_EV_FREE);
    CU_ASSERT_EQUAL(g->ev[12].tensor, 4); /* z's storage ends with its last name, v */
    CU_ASSERT_EQUAL(g->ev[13].tensor, 3); /* y's with z2 (COPY_FROM y) */
    CU_ASSERT_EQUAL(g->ev[14].tensor, 5);
    CU_ASSERT_EQUAL(g->ev[14].time_ns, 18500);

    CU_ASSERT_EQUAL(g->ev[4].num_aliases, 0);

    /* the default unit is DTR logger's: nanoseconds (12.5 rounds to 13) */
    {
        mt_import_opts_t opts;

        mt_import_opts_init(&opts);
        import_and_read(MT_IMPORT_DTR, opts.time_unit_ns, DATA "dtr_small.jsonl", &st, g);
        CU_ASSERT_EQUAL(g->ev[4].duration_ns, 13);
        CU_ASSERT_EQUAL(g->ev[3].recompute_ns, 13);
        CU_ASSERT_STRING_EQUAL(meta(&g->header, "time_unit_ns"), "1");
    }
    import_and_read(MT_IMPORT_DTR, 1000000, DATA "dtr_small.jsonl", &st, g);
    CU_ASSERT_EQUAL(g->ev[4].duration_ns, 12500000); /* --time-unit ms */
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "time_unit_ns"), "1000000");
    free(g);
}

/* Import text as format; expect MEMSVC_ERR_FORMAT, every want substring, and no output file. */
static void expect_bad(mt_import_format_t format, const char *text, const char *want1,
                       const char *want2)
{
    mt_import_opts_t opts;
    char             in[64], out[64], err[512];
    FILE            *f;

    tmp_path(in, sizeof(in));
    tmp_path(out, sizeof(out));
    unlink(out);
    f = fopen(in, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
    mt_import_opts_init(&opts);
    opts.format = format;
    err[0]      = '\0';
    CU_ASSERT_EQUAL(mt_import(&opts, in, out, NULL, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    if ((strstr(err, want1) == NULL) || ((want2 != NULL) && (strstr(err, want2) == NULL))) {
        CU_FAIL("import error message");
        fprintf(stderr, "want '%s' and '%s', got: %s\n", want1, want2 ? want2 : "", err);
    }
    CU_ASSERT_NOT_EQUAL(access(out, F_OK), 0);
    unlink(in);
}

#define L_W "{\"INSTRUCTION\":\"CONSTANT\",\"NAME\":\"w\"}\n"
#define L_WM "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"w\",\"MEMORY\":\"64\"}\n"
#define L_CALL(args, res)                                                                          \
    "{\"INSTRUCTION\":\"CALL\",\"NAME\":\"f\",\"ARGS\":" args ",\"RESULT\":" res ",\"TIME\":1}\n"

static void test_dtr_malformed(void)
{
    const mt_import_format_t D = MT_IMPORT_DTR;

    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"FOO\"}\n", "line 3:", "unknown INSTRUCTION 'FOO'");
    expect_bad(D, L_W L_WM "{\"NAME\":\"w\"}\n", "line 3:", "INSTRUCTION: missing");
    expect_bad(D, L_W "{\"INSTRUCTION\": \n", "line 2, column", "invalid JSON");
    expect_bad(D, L_W "[1, 2]\n", "line 2:", "expected a JSON object");
    expect_bad(D, L_W "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"w\",\"MEMORY\":-5}\n",
               "line 2:", "field MEMORY");
    expect_bad(D, L_W "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"w\",\"MEMORY\":[1]}\n",
               "line 2:", "field MEMORY");
    expect_bad(D, L_W "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"w\",\"MEMORY\":\"12x\"}\n",
               "line 2:", "field MEMORY");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"RELEASE\",\"NAME\":\"nope\"}\n",
               "line 3:", "unknown tensor name 'nope'");
    expect_bad(D, L_W L_WM L_CALL("[\"w\", \"q\"]", "[\"y\"]"),
               "line 3:", "unknown tensor name 'q'");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"CALL\",\"NAME\":\"f\",\"RESULT\":[],\"TIME\":1}\n",
               "line 3:", "field ARGS: missing");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"CALL\",\"NAME\":\"f\",\"ARGS\":[],\"RESULT\":[]}\n",
               "line 3:", "field TIME");
    expect_bad(D,
               L_W L_WM "{\"INSTRUCTION\":\"CALL\",\"NAME\":\"f\",\"ARGS\":[],\"RESULT\":[],"
                        "\"TIME\":\"-1\"}\n",
               "line 3:", "field TIME");
    expect_bad(D, L_W L_WM L_CALL("[\"w\"]", "[7]"), "line 3:", "field RESULT");
    expect_bad(
        D,
        L_W L_WM L_CALL("[\"w\"]",
                        "[\"y\"]") "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"y\",\"MEMORY\":8}\n"
                                   "{\"INSTRUCTION\":\"ALIAS\",\"NAME\":\"y\",\"ALIAS\":5}\n",
        "line 5:", "field ALIAS");
    expect_bad(
        D, L_W L_WM L_CALL("[\"w\"]", "[\"y\"]") "{\"INSTRUCTION\":\"RELEASE\",\"NAME\":\"w\"}\n",
        "line 4:", "before the MEMORY/ALIAS lines of the instruction at line 3");
    expect_bad(
        D,
        L_W L_WM L_CALL("[\"w\"]",
                        "[\"y\"]") "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"y\",\"MEMORY\":8}\n",
        "line 5:", "the log ends before the MEMORY/ALIAS lines of the instruction at line 3");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"z\",\"MEMORY\":8}\n",
               "line 3:", "no pending CALL result");
    expect_bad(D, L_W L_WM L_W, "line 3:", "'w' is already defined");
    expect_bad(D, L_W L_WM L_CALL("[\"w\"]", "[\"w\"]"), "line 3:", "already defined");
    expect_bad(D, L_W L_WM L_CALL("[\"w\"]", "[\"y\", \"y\"]"), "line 3:", "listed twice");
    expect_bad(D,
               L_W L_WM "{\"INSTRUCTION\":\"MUTATE\",\"NAME\":\"f_\",\"ARGS\":[\"w\"],"
                        "\"MUTATE\":[1],\"TIME\":1}\n",
               "line 3:", "field MUTATE");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"COPY\",\"DST\":\"v\",\"SRC\":\"nope\"}\n",
               "line 3:", "unknown tensor name 'nope'");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"COPY_FROM\",\"DST\":\"v\",\"SRC\":\"w\"}\n",
               "line 3:", "unknown tensor name 'v'");
    expect_bad(D, L_W L_WM "{\"INSTRUCTION\":\"ANNOTATE\",\"ANNOTATION\":\"LUNCH\"}\n",
               "line 3:", "unknown ANNOTATION");
    expect_bad(D,
               L_W "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"w\",\"MEMORY\":\"1000000000000000\"}\n",
               "line 2:", "above 2^48");
    expect_bad(D,
               "\n" L_W "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"w\",\"NAME\":\"w\",\"MEMORY\":1}\n",
               "line 3, column", "duplicate");
}

/*
 * Lines with tens of thousands of results and arguments (a hostile log may hold a million per
 * line): matching MEMORY/ALIAS lines to results and removing duplicate arguments were
 * quadratic, and this log took nearly a minute to import (now well under a second). The import
 * runs in a child that a 20 s alarm ends, so that a regression fails instead of stalling.
 */
static void test_dtr_wide_lines(void)
{
    const int         n = 50000;
    mt_import_opts_t  opts;
    mt_import_stats_t st;
    char              in[64], out[64], err[512];
    FILE             *f;
    pid_t             pid;
    int               i, wst;

    tmp_path(in, sizeof(in));
    tmp_path(out, sizeof(out));
    f = fopen(in, "w");
    CU_ASSERT_FATAL(f != NULL);
    fprintf(f, "{\"INSTRUCTION\":\"CALL\",\"NAME\":\"f\",\"ARGS\":[],\"TIME\":1,\"RESULT\":[");
    for (i = 0; i < n; i++) {
        fprintf(f, "%s\"%x\"", (i > 0) ? "," : "", i);
    }
    fprintf(f, "]}\n");
    for (i = 0; i < n; i++) {
        fprintf(f,
                "{\"INSTRUCTION\":\"MEMORY\",\"NAME\":\"%x\",\"MEMORY\":16}\n"
                "{\"INSTRUCTION\":\"ALIAS\",\"NAME\":\"%x\",\"ALIAS\":-1}\n",
                i, i);
    }
    fprintf(f, "{\"INSTRUCTION\":\"MUTATE\",\"NAME\":\"g_\",\"MUTATE\":[0,1,0],\"TIME\":1,"
               "\"ARGS\":[");
    for (i = 0; i < n; i++) {
        fprintf(f, "%s\"%x\"", (i > 0) ? "," : "", i / 2); /* each twice */
    }
    fprintf(f, "]}\n");
    CU_ASSERT_FATAL(fclose(f) == 0);

    fflush(NULL);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        alarm(20);
        mt_import_opts_init(&opts);
        opts.format = MT_IMPORT_DTR;
        if (mt_import(&opts, in, out, &st, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "import: %s\n", err);
            _exit(1);
        }
        _exit(((st.allocs == (uint64_t)n) && (st.computes == 2) &&
               (st.recorded_peak == 16ull * n))
                  ? 0
                  : 2);
    }
    CU_ASSERT_FATAL(waitpid(pid, &wst, 0) == pid);
    CU_ASSERT_FALSE(WIFSIGNALED(wst)); /* SIGALRM: the import took over 20 s */
    CU_ASSERT_TRUE(WIFEXITED(wst) && (WEXITSTATUS(wst) == 0));
    unlink(in);
    unlink(out);
}

static void test_snapshot_malformed(void)
{
    const mt_import_format_t S = MT_IMPORT_SNAPSHOT;

#define SNAP(entry)                                                                                \
    "{\"device_traces\": [[{\"action\":\"alloc\",\"addr\":16,\"size\":8}, " entry "]]}"
    expect_bad(S, "{\"device_traces\": 5}", "device_traces: missing or not an array", NULL);
    expect_bad(S, "{\"segments\": []}", "device_traces: missing", NULL);
    expect_bad(S, "[]", "(top): expected an object", NULL);
    expect_bad(S, "{\"device_traces\": [5]}", "device_traces[0]: expected an array", NULL);
    expect_bad(S, SNAP("7"), "device_traces[0][1]: expected an object", NULL);
    expect_bad(S, SNAP("{\"addr\":1,\"size\":1}"), "device_traces[0][1].action: missing", NULL);
    expect_bad(S, SNAP("{\"action\":\"borrow\",\"addr\":1,\"size\":1}"),
               "device_traces[0][1].action: unknown action 'borrow'", NULL);
    expect_bad(S, SNAP("{\"action\":\"alloc\",\"addr\":32,\"size\":-8}"),
               "device_traces[0][1].size", "negative");
    expect_bad(S, SNAP("{\"action\":\"alloc\",\"addr\":32,\"size\":\"8\"}"),
               "device_traces[0][1].size", NULL);
    expect_bad(S, SNAP("{\"action\":\"alloc\",\"size\":8}"), "device_traces[0][1].addr", NULL);
    expect_bad(S, SNAP("{\"action\":\"alloc\",\"addr\":16,\"size\":8}"),
               "device_traces[0][1]: address 0x10 allocated twice", NULL);
    expect_bad(S, SNAP("{\"action\":\"free_completed\",\"addr\":16,\"size\":9}"),
               "device_traces[0][1]: frees 9 bytes at 0x10 which holds 8 bytes", NULL);
    expect_bad(S, SNAP("{\"action\":\"alloc\",\"addr\":32,\"size\":8,\"time_us\":-1}"),
               "device_traces[0][1].time_us", NULL);
    expect_bad(S, SNAP("{\"action\":\"alloc\",\"addr\":32,\"size\":8,\"frames\":{}}"),
               "device_traces[0][1].frames: not an array", NULL);
    expect_bad(S, "{\"device_traces\": [[\n{\"action\": \"alloc\",\n \"addr\": 0x10}]]}",
               "line 3, column", "invalid JSON");
#undef SNAP
}

static void test_chrome_malformed(void)
{
    const mt_import_format_t C = MT_IMPORT_CHROME;

#define MEM(args)                                                                                  \
    "{\"traceEvents\": [{\"name\":\"x\"}, {\"name\":\"[memory]\",\"ts\":1,\"args\":" args "}]}"
#define OK_ARGS "\"Addr\":16,\"Total Allocated\":8,\"Device Type\":1,\"Device Id\":0"
    expect_bad(C, "{\"events\": []}", "traceEvents: missing", NULL);
    expect_bad(C, "{\"traceEvents\": [1]}", "traceEvents[0]: expected an object", NULL);
    expect_bad(C, MEM("5"), "traceEvents[1].args: missing or not an object", NULL);
    expect_bad(C, MEM("{\"Bytes\":\"8\"," OK_ARGS "}"), "traceEvents[1].args.Bytes", NULL);
    expect_bad(C,
               MEM("{\"Bytes\":8,\"Addr\":-16,\"Total Allocated\":8,\"Device Type\":1,"
                   "\"Device Id\":0}"),
               "traceEvents[1].args.Addr", NULL);
    expect_bad(C,
               MEM("{\"Bytes\":8,\"Addr\":16,\"Total Allocated\":8,\"Device Type\":1,"
                   "\"Device Id\":64}"),
               "traceEvents[1].args.Device Id", NULL);
    expect_bad(C, MEM("{\"Bytes\":8,\"Addr\":16,\"Device Type\":1,\"Device Id\":0}"),
               "traceEvents[1].args.Total Allocated", NULL);
    expect_bad(C, MEM("{\"Bytes\":8,\"Addr\":16,\"Total Allocated\":8,\"Device Id\":0}"),
               "traceEvents[1].args.Device Type", NULL);
    expect_bad(C, "{\"traceEvents\": [{\"name\":\"[memory]\",\"args\":{\"Bytes\":8," OK_ARGS "}}]}",
               "traceEvents[0].ts", NULL);
    expect_bad(C,
               "{\"traceEvents\": [{\"name\":\"[memory]\",\"ts\":1,\"args\":{\"Bytes\":8," OK_ARGS
               "}}, {\"name\":\"[memory]\",\"ts\":2,\"args\":{\"Bytes\":8," OK_ARGS "}}]}",
               "traceEvents[1]: address 0x10 allocated twice", NULL);
    expect_bad(C, "{\"traceEvents\": [\n\n{\"name\": \"[memory]\" \"ts\": 1}]}", "line 3, column",
               "invalid JSON");
#undef MEM
#undef OK_ARGS
}

/* A Chrome trace's device capacity: the smallest listed; the default node's without one. */
static void test_chrome_capacity(void)
{
    mt_import_stats_t st;
    got_t            *g = malloc(sizeof(*g));
    char              in[64];
    FILE             *f;

#define ONE_MEM                                                                                    \
    "\"traceEvents\": [{\"name\":\"[memory]\",\"ts\":1,\"args\":{\"Bytes\":8,\"Addr\":16,"         \
    "\"Total Allocated\":8,\"Device Type\":1,\"Device Id\":1}}]"
    CU_ASSERT_FATAL(g != NULL);
    tmp_path(in, sizeof(in));
    f = fopen(in, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("{\"deviceProperties\": [{\"id\": 0, \"totalGlobalMem\": 34359738368}, {\"id\": 1, "
          "\"totalGlobalMem\": 17179869184}, {\"id\": 2}], " ONE_MEM "}",
          f);
    fclose(f);
    import_and_read(MT_IMPORT_CHROME, 1000, in, &st, g);
    CU_ASSERT_EQUAL(g->header.node.hbm_bytes, 17179869184ull);
    CU_ASSERT_EQUAL(g->header.node.num_npus >= 2, true);
    f = fopen(in, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("{" ONE_MEM "}", f);
    fclose(f);
    import_and_read(MT_IMPORT_CHROME, 1000, in, &st, g);
    CU_ASSERT_EQUAL(g->header.node.hbm_bytes, 64ull << 20); /* tiny's */
    CU_ASSERT_STRING_EQUAL(meta(&g->header, "device_total_mem"), "(absent)");
    unlink(in);
    free(g);

    expect_bad(MT_IMPORT_CHROME, "{\"deviceProperties\": 3, " ONE_MEM "}",
               "deviceProperties: not an array", NULL);
    expect_bad(MT_IMPORT_CHROME, "{\"deviceProperties\": [{\"totalGlobalMem\": -1}], " ONE_MEM "}",
               "deviceProperties[0].totalGlobalMem: not a positive integer", NULL);
    expect_bad(MT_IMPORT_CHROME, "{\"deviceProperties\": [7], " ONE_MEM "}",
               "deviceProperties[0]: expected an object", NULL);
#undef ONE_MEM
}

/* An input that yields no events is an error that says why, not an empty trace. */
static void test_no_events(void)
{
    const char *cpu_only = "{\"traceEvents\": [{\"name\":\"[memory]\",\"ts\":1,\"args\":{"
                           "\"Bytes\":8,\"Addr\":16,\"Total Allocated\":8,\"Device Type\":0}}]}";
    char        cmd[512], in[64];
    FILE       *f;
    int         lines;

    expect_bad(MT_IMPORT_CHROME, "{\"traceEvents\": []}", "no events: no device memory events",
               "profile_memory=True");
    expect_bad(MT_IMPORT_CHROME, "[{\"name\": \"aten::mm\", \"ph\": \"X\", \"ts\": 1}]",
               "no device memory events", "(0 input records skipped)");
    expect_bad(MT_IMPORT_CHROME, cpu_only, "no device memory events", "(1 input records skipped)");
    expect_bad(MT_IMPORT_SNAPSHOT, "{\"device_traces\": []}", "no events",
               "_record_memory_history");
    expect_bad(MT_IMPORT_SNAPSHOT,
               "{\"device_traces\": [[{\"action\":\"segment_alloc\",\"addr\":0,\"size\":8}]]}",
               "no events: device_traces has no alloc", NULL);
    expect_bad(MT_IMPORT_DTR, "\n\n", "no events", NULL);

    /* the command line exits 1 with the reason, not "0 events" and 0 */
    tmp_path(in, sizeof(in));
    f = fopen(in, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs("{\"traceEvents\": []}", f);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace import --from chrome %s %s.trace 2>&1 | grep -q 'no events: no device "
             "memory events' && test ! -e %s.trace",
             test_bin_dir(), in, in, in);
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 0);
    snprintf(cmd, sizeof(cmd), "%s/memtrace import --from chrome %s %s.trace 2>/dev/null",
             test_bin_dir(), in, in);
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 1);
    unlink(in);
}

/* Every prefix of every sample imports cleanly or fails with FORMAT: never crashes. */
static void test_truncated_samples(void)
{
    static const struct {
        mt_import_format_t format;
        const char        *path;
    } samples[] = {{MT_IMPORT_SNAPSHOT, DATA "snapshot_small.json"},
                   {MT_IMPORT_CHROME, DATA "chrome_small.json"},
                   {MT_IMPORT_DTR, DATA "dtr_small.jsonl"}};
    mt_import_opts_t opts;
    char             in[64], out[64], err[512], *buf;
    size_t           i, len, cut;
    FILE            *f;
    int              ok, bad;

    tmp_path(in, sizeof(in));
    tmp_path(out, sizeof(out));
    for (i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        f = fopen(samples[i].path, "rb");
        CU_ASSERT_FATAL(f != NULL);
        buf = malloc(65536);
        len = fread(buf, 1, 65536, f);
        fclose(f);
        ok = bad = 0;
        mt_import_opts_init(&opts);
        opts.format = samples[i].format;
        for (cut = 0; cut < len; cut++) {
            memsvc_status_t status;

            f = fopen(in, "wb");
            CU_ASSERT_FATAL((f != NULL) && (fwrite(buf, 1, cut, f) == cut));
            fclose(f);
            status = mt_import(&opts, in, out, NULL, err, sizeof(err));
            CU_ASSERT((status == MEMSVC_OK) || (status == MEMSVC_ERR_FORMAT));
            ok += (status == MEMSVC_OK);
            bad += (status == MEMSVC_ERR_FORMAT);
        }
        CU_ASSERT(bad > 0);
        if (samples[i].format == MT_IMPORT_DTR) {
            CU_ASSERT(ok > 0); /* prefixes ending between complete instructions are valid */
        }
        free(buf);
    }
    unlink(in);
    unlink(out);
}

static void test_parsers(void)
{
    mt_import_format_t f;
    uint64_t           ns;

    CU_ASSERT_EQUAL(mt_import_format_parse("pytorch-snapshot", &f), MEMSVC_OK);
    CU_ASSERT_EQUAL(f, MT_IMPORT_SNAPSHOT);
    CU_ASSERT_EQUAL(mt_import_format_parse("dtr", &f), MEMSVC_OK);
    CU_ASSERT_EQUAL(f, MT_IMPORT_DTR);
    CU_ASSERT_EQUAL(mt_import_format_parse("nvtx", &f), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(mt_import_time_unit_parse("ms", &ns), MEMSVC_OK);
    CU_ASSERT_EQUAL(ns, 1000000);
    CU_ASSERT_EQUAL(mt_import_time_unit_parse("h", &ns), MEMSVC_ERR_UNKNOWN_KEY);
}

/* Run a shell command; return its exit status and the number of lines on its stdout. */
static int run_sh(const char *cmd, int *lines_p)
{
    char  line[8192];
    FILE *p = popen(cmd, "r");
    int   st;

    CU_ASSERT_FATAL(p != NULL);
    *lines_p = 0;
    while (fgets(line, sizeof(line), p) != NULL) {
        (*lines_p)++;
    }
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void)
{
    char cmd[512], out[64];
    int  lines;

    tmp_path(out, sizeof(out));
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace import --from dtr " DATA "dtr_small.jsonl %s 2>/dev/null", test_bin_dir(),
             out);
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 0);
    snprintf(cmd, sizeof(cmd), "%s/memtrace dump %s", test_bin_dir(), out);
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 0);
    CU_ASSERT_EQUAL(lines, 1 + 15);
    snprintf(cmd, sizeof(cmd), "%s/memtrace dump --limit 3 %s", test_bin_dir(), out);
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 0);
    CU_ASSERT_EQUAL(lines, 1 + 3);
    snprintf(cmd, sizeof(cmd), "%s/memtrace dump --header - < %s", test_bin_dir(), out);
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 0);
    CU_ASSERT_EQUAL(lines, 1);
    snprintf(cmd, sizeof(cmd), "%s/memtrace dump " DATA "dtr_small.jsonl 2>/dev/null",
             test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 1);
    snprintf(cmd, sizeof(cmd), "%s/memtrace import --from xyz a b 2>/dev/null", test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 2);
    snprintf(cmd, sizeof(cmd), "%s/memtrace frobnicate 2>/dev/null", test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 2);
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay x 2>/dev/null", test_bin_dir());
    CU_ASSERT_EQUAL(run_sh(cmd, &lines), 1);
    unlink(out);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("trace_import", NULL, NULL);

    CU_add_test(s, "PyTorch snapshot sample: counts, sizes, peak", test_snapshot_sample);
    CU_add_test(s, "Chrome trace sample: counts, order, peak", test_chrome_sample);
    CU_add_test(s, "DTR log sample: aliases, refs, recompute, peak", test_dtr_sample);
    CU_add_test(s, "malformed DTR logs name line and problem", test_dtr_malformed);
    CU_add_test(s, "DTR lines with 50000 results or arguments import quickly",
                test_dtr_wide_lines);
    CU_add_test(s, "malformed snapshots name path and problem", test_snapshot_malformed);
    CU_add_test(s, "malformed Chrome traces name path and problem", test_chrome_malformed);
    CU_add_test(s, "truncated samples never crash", test_truncated_samples);
    CU_add_test(s, "Chrome traces: the device's capacity from deviceProperties",
                test_chrome_capacity);
    CU_add_test(s, "inputs that yield no events are errors that say why", test_no_events);
    CU_add_test(s, "format and unit names", test_parsers);
    CU_add_test(s, "memtrace import and dump from the command line", test_cli);
}

TEST_REGISTER(trace_import, add_suite)
