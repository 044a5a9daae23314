/* test_tune.c - memtrace tune: the sweep grid, budgets, outputs, determinism, argument errors */
#include "tests/test_util.h"
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/tune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1ull << 20)

static char tune_trace[] = "/tmp/memsvc-tune-XXXXXX";
static char tune_dir[]   = "/tmp/memsvc-tune-d-XXXXXX";

/* A tiny generated trace: tiny-moe on the tiny node, 2 stages, 4 micro-batches, 2 steps. */
static int tune_setup(void)
{
    int   fd     = mkstemp(tune_trace);
    char *argv[] = {"gen",
                    "--model",
                    "tiny-moe",
                    "--layout",
                    "tp=1,pp=2,vpp=1,ep=1",
                    "--microbatches",
                    "4",
                    "--steps",
                    "2",
                    "--node",
                    "tiny",
                    "-o",
                    tune_trace,
                    NULL};

    if (fd < 0 || mkdtemp(tune_dir) == NULL) {
        return 1;
    }
    close(fd);
    return (mt_cmd_gen(13, argv) == 0) ? 0 : 1;
}

static int tune_cleanup(void)
{
    char cmd[256];

    unlink(tune_trace);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tune_dir);
    return (system(cmd) == 0) ? 0 : 1;
}

/* Read a whole file into a malloc'd string (NULL if it cannot be read). */
static char *slurp(const char *dir, const char *name)
{
    char  path[512], *buf;
    FILE *f;
    long  n;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "r");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static size_t count(const char *s, const char *what)
{
    size_t n = 0;

    for (s = strstr(s, what); s != NULL; s = strstr(s + 1, what)) {
        n++;
    }
    return n;
}

/* Drop the last CSV column (wall_s, host-dependent) of every line, in place. */
static void strip_wall(char *csv)
{
    char *r = csv, *w = csv, *line_start = csv;

    for (; *r != '\0'; r++) {
        if (*r == '\n') {
            char *comma = w - 1;

            while (comma > line_start && *comma != ',') {
                comma--;
            }
            w          = (comma > line_start) ? comma : w;
            *w++       = '\n';
            line_start = w;
            continue;
        }
        *w++ = *r;
    }
    *w = '\0';
}

/* Run memtrace tune with none,lru over 64 MiB (above the peak), 32 and 16 MiB into sub. */
static int run_sweep(const char *sub, const char *jobs)
{
    char  out[512];
    char *argv[] = {
        "tune", tune_trace,   "--policies", "none,lru", "--budgets", "64MiB,32MiB,16MiB",
        "-j",   (char *)jobs, "--quiet",    "--out",    out,         NULL};

    snprintf(out, sizeof(out), "%s/%s", tune_dir, sub);
    return mt_cmd_tune(11, argv);
}

static void test_tune_csv_grid(void)
{
    char        sub[512], *csv, *line, *save = NULL;
    int         rows         = 0;
    bool        none_fits[3] = {false}, lru_fits[3] = {false};
    const char *budgets[3] = {"67108864", "33554432", "16777216"};

    CU_ASSERT_EQUAL_FATAL(run_sweep("j2", "2"), 0);
    snprintf(sub, sizeof(sub), "%s/j2", tune_dir);
    csv = slurp(sub, "results.csv");
    CU_ASSERT_PTR_NOT_NULL_FATAL(csv);
    line = strtok_r(csv, "\n", &save);
    CU_ASSERT_STRING_EQUAL(line, MT_TUNE_CSV_HEADER);
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        char  *f[32], *tok, *s2 = NULL;
        size_t nf = 0;
        int    b;

        for (tok = strtok_r(line, ",", &s2); tok != NULL && nf < 32;
             tok = strtok_r(NULL, ",", &s2)) {
            f[nf++] = tok;
        }
        CU_ASSERT_EQUAL(nf, 16);
        if (nf != 16) {
            continue;
        }
        rows++;
        CU_ASSERT_STRING_EQUAL(f[0], tune_trace);
        CU_ASSERT_STRING_EQUAL(f[1], "tiny-moe");
        for (b = 0; b < 3 && strcmp(f[3], budgets[b]) != 0; b++) {
        }
        CU_ASSERT_FATAL(b < 3);
        if (!strcmp(f[2], "none")) {
            none_fits[b] = !strcmp(f[4], "yes");
            CU_ASSERT_EQUAL(strcmp(f[5], "0") == 0, none_fits[b]);
        } else {
            CU_ASSERT_STRING_EQUAL(f[2], "lru");
            lru_fits[b] = !strcmp(f[4], "yes");
        }
    }
    CU_ASSERT_EQUAL(rows, 6);
    /* the unconstrained peak is about 39 MiB: none fits above it only; lru always fits */
    CU_ASSERT_TRUE(none_fits[0]);
    CU_ASSERT_FALSE(none_fits[1]);
    CU_ASSERT_FALSE(none_fits[2]);
    CU_ASSERT_TRUE(lru_fits[0] && lru_fits[1] && lru_fits[2]);
    free(csv);
}

static void test_tune_deterministic_across_jobs(void)
{
    char a[512], b[512], *ca, *cb, *ja, *jb;

    CU_ASSERT_EQUAL_FATAL(run_sweep("d1", "1"), 0);
    CU_ASSERT_EQUAL_FATAL(run_sweep("d2", "2"), 0);
    snprintf(a, sizeof(a), "%s/d1", tune_dir);
    snprintf(b, sizeof(b), "%s/d2", tune_dir);
    ca = slurp(a, "results.csv");
    cb = slurp(b, "results.csv");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
    strip_wall(ca);
    strip_wall(cb);
    CU_ASSERT_STRING_EQUAL(ca, cb);
    free(ca);
    free(cb);
    /* the plots carry no host figures: identical */
    {
        const char *name = strrchr(tune_trace, '/') + 1;
        char        svg[128];

        snprintf(svg, sizeof(svg), "%s.svg", name);
        ja = slurp(a, svg);
        jb = slurp(b, svg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ja);
        CU_ASSERT_PTR_NOT_NULL_FATAL(jb);
        CU_ASSERT_STRING_EQUAL(ja, jb);
        free(ja);
        free(jb);
    }
}

static void test_tune_svg_and_json(void)
{
    const char *name = strrchr(tune_trace, '/') + 1;
    char        sub[512], svg_name[128], *svg, *json;

    CU_ASSERT_EQUAL_FATAL(run_sweep("p", "2"), 0);
    snprintf(sub, sizeof(sub), "%s/p", tune_dir);
    snprintf(svg_name, sizeof(svg_name), "%s.svg", name);
    svg = slurp(sub, svg_name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(svg);
    CU_ASSERT_EQUAL(strncmp(svg, "<svg", 4), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "</svg>\n"));
    CU_ASSERT_EQUAL(count(svg, "<polyline class=\"series\""), 2);
    CU_ASSERT_EQUAL(count(svg, "<path class=\"pareto\""), 1);
    CU_ASSERT_EQUAL(count(svg, "<svg"), 1);
    CU_ASSERT_EQUAL(count(svg, "<text"), count(svg, "</text>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "HBM budget per NPU (MiB)"));
    json = slurp(sub, "results.json");
    CU_ASSERT_PTR_NOT_NULL_FATAL(json);
    CU_ASSERT_EQUAL(count(json, "\"overhead_pct\""), 6);
    CU_ASSERT_EQUAL(count(json, "{"), count(json, "}"));
    CU_ASSERT_EQUAL(count(json, "["), count(json, "]"));
    free(svg);
    free(json);
}

static void test_tune_auto_budgets(void)
{
    uint64_t b[64];
    size_t   n = mt_tune_auto_budgets(40678144, 6, b, 64);

    /* step: 40678144 / 6 rounded up to a power of two = 8 MiB; from 40 MiB down to 8 MiB */
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT_EQUAL(b[0], 40 * MiB);
    CU_ASSERT_EQUAL(b[4], 8 * MiB);
    n = mt_tune_auto_budgets(64 * MiB, 4, b, 64);
    CU_ASSERT_EQUAL(n, 4);
    CU_ASSERT_EQUAL(b[0], 64 * MiB);
    CU_ASSERT_EQUAL(b[3], 16 * MiB);
    CU_ASSERT_EQUAL(mt_tune_auto_budgets(3 * MiB, 8, b, 64), 3); /* 1 MiB at least */
}

static void test_tune_auto_stops_where_all_oom(void)
{
    const char      *traces[] = {tune_trace};
    const char      *specs[]  = {"none"};
    mt_tune_params_t p;
    mt_tune_t        t;
    char             err[256];
    size_t           i, done = 0;

    memset(&p, 0, sizeof(p));
    p.traces     = traces;
    p.num_traces = 1;
    p.specs      = specs;
    p.num_specs  = 1;
    p.auto_n     = 6;
    p.jobs       = 2;
    TEST_ASSERT_OK(mt_tune_run(&p, &t, err, sizeof(err)));
    CU_ASSERT_EQUAL(t.traces[0].base.peak_allocated, 40678144);
    CU_ASSERT_EQUAL(t.traces[0].num_budgets, 5);
    /* none fits at the first budget (at or above the peak), not at the second: stop there */
    CU_ASSERT_EQUAL(t.traces[0].cutoff, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mt_tune_cell(&t, 0, 0, 0));
    CU_ASSERT_TRUE(mt_tune_cell(&t, 0, 0, 0)->res.fits);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mt_tune_cell(&t, 0, 1, 0));
    CU_ASSERT_FALSE(mt_tune_cell(&t, 0, 1, 0)->res.fits);
    for (i = 0; i < t.num_cells; i++) {
        done += (t.cells[i].state == MT_TUNE_DONE);
    }
    CU_ASSERT_EQUAL(done, 2);
    CU_ASSERT_DOUBLE_EQUAL(mt_tune_overhead_pct(&t, mt_tune_cell(&t, 0, 0, 0)), 0.0, 1e-9);
    mt_tune_free(&t);
}

static void test_tune_bad_arguments(void)
{
    char  out[512];
    char *unknown[] = {"tune",  tune_trace, "--policies", "none,nosuch", "--budgets",
                       "32MiB", "--quiet",  "--out",      out,           NULL};
    char *budget[]  = {"tune", tune_trace, "--budgets", "32XB", "--quiet", "--out", out, NULL};
    char *range[]   = {"tune", tune_trace, "--budget-range", "32MiB:8MiB", "--quiet", "--out",
                       out,    NULL};
    char *missing[] = {"tune", "/nonexistent/trace", "--budgets", "32MiB", "--quiet", "--out", out,
                       NULL};
    char *param[]   = {"tune",      tune_trace, "--policies", "lru",   "--param", "lru:nokey=1|2",
                       "--budgets", "32MiB",    "--quiet",    "--out", out,       NULL};
    char *stray[]   = {"tune",      tune_trace, "--param", "dtr:x=1", "--policies", "lru",
                       "--budgets", "32MiB",    "--quiet", "--out",   out,          NULL};
    char *noout[]   = {"tune", tune_trace, "--budgets", "32MiB", NULL};
    char *jobs[]    = {"tune", tune_trace, "-j", "0", "--out", out, NULL};
    char *preset[]  = {"tune",  tune_trace, "--node", "nosuch", "--budgets",
                       "32MiB", "--quiet",  "--out",  out,      NULL};

    snprintf(out, sizeof(out), "%s/bad", tune_dir);
    CU_ASSERT_EQUAL(mt_cmd_tune(9, unknown), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(7, budget), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(7, range), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(7, missing), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(11, param), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(11, stray), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(4, noout), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(6, jobs), 2);
    CU_ASSERT_EQUAL(mt_cmd_tune(9, preset), 2);
    CU_ASSERT_NOT_EQUAL(access(out, F_OK), 0); /* nothing written on a usage error */
}

/* An --out that cannot take the results fails before the sweep: no table, exit 1. */
static void test_tune_unwritable_out(void)
{
    const char *bad[] = {"/dev/null", "/dev/null/sub", "/nonexistent/dir/out", NULL};
    char        cmd[1024], line[512];
    size_t      i;

    for (i = 0; bad[i] != NULL; i++) {
        FILE *p;
        int   st, lines = 0, named = 0;

        snprintf(cmd, sizeof(cmd),
                 "%s/memtrace tune %s --policies none,lru --budgets 64MiB,32MiB --out %s 2>&1",
                 test_bin_dir(), tune_trace, bad[i]);
        p = popen(cmd, "r");
        CU_ASSERT_FATAL(p != NULL);
        while (fgets(line, sizeof(line), p) != NULL) {
            lines++;
            named +=
                (strstr(line, "memtrace tune: --out ") != NULL) && (strstr(line, bad[i]) != NULL);
        }
        st = pclose(p);
        CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
        CU_ASSERT_EQUAL(named, 1);
        CU_ASSERT_EQUAL(lines, 1); /* the error only: no progress, no table */
    }
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("tune", tune_setup, tune_cleanup);

    CU_add_test(s, "2 policies x 3 budgets, -j 2: the CSV grid", test_tune_csv_grid);
    CU_add_test(s, "-j 1 and -j 2 give the same results", test_tune_deterministic_across_jobs);
    CU_add_test(s, "the SVG and JSON are well-formed", test_tune_svg_and_json);
    CU_add_test(s, "--budget-auto budgets from the peak", test_tune_auto_budgets);
    CU_add_test(s, "--budget-auto stops where every policy fails",
                test_tune_auto_stops_where_all_oom);
    CU_add_test(s, "bad arguments exit 2 with a message", test_tune_bad_arguments);
    CU_add_test(s, "an --out that cannot be written fails before the sweep",
                test_tune_unwritable_out);
}

TEST_REGISTER(tune, add_suite)
