/* test_gen_cmd.c - `memtrace gen` end to end: through the real trace writer and back */
#include "tests/test_util.h"
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_gen_writes_a_readable_trace(void)
{
    char         path[] = "/tmp/memsvc-gen-XXXXXX";
    int          fd     = mkstemp(path);
    char        *argv[] = {"gen",
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
                           path,
                           NULL};
    mt_reader_t *r      = NULL;
    mt_event_t   ev;
    bool         end = false;
    char         err[256];
    uint64_t     counts[MT_EV_COUNT] = {0}, n = 0, live = 0, peak = 0, bytes = 0;
    int          steps_begun = 0;

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT_EQUAL_FATAL(mt_cmd_gen(13, argv), 0);
    CU_ASSERT_EQUAL_FATAL(mt_reader_open(path, &r, err, sizeof(err)), MEMSVC_OK);
    CU_ASSERT_STRING_EQUAL(mt_reader_header(r)->model, "tiny-moe");
    CU_ASSERT_STRING_EQUAL(mt_reader_header(r)->node.name, "tiny");
    CU_ASSERT_EQUAL(mt_reader_header(r)->steps, 2);
    CU_ASSERT_EQUAL(mt_reader_header(r)->layout.pp, 2);
    for (;;) {
        CU_ASSERT_EQUAL_FATAL(mt_reader_next(r, &ev, &end, err, sizeof(err)), MEMSVC_OK);
        if (end) {
            break;
        }
        counts[ev.type]++;
        n++;
        if (ev.type == MT_EV_ALLOC) {
            live++;
            bytes += ev.size;
            peak = (bytes > peak) ? bytes : peak;
        } else if (ev.type == MT_EV_HINT && ev.hint == MEMSVC_HINT_STEP_BEGIN) {
            steps_begun++;
        }
    }
    mt_reader_close(r);
    unlink(path);
    CU_ASSERT(n > 100);
    CU_ASSERT(counts[MT_EV_ALLOC] > 0);
    CU_ASSERT(counts[MT_EV_COMPUTE] > 0);
    CU_ASSERT_EQUAL(counts[MT_EV_FREE] <= counts[MT_EV_ALLOC], 1);
    CU_ASSERT_EQUAL(steps_begun, 2);
    CU_ASSERT(peak > 0);

    /* bad arguments are usage errors, and write nothing */
    {
        char *bad[] = {"gen", "--model", "gpt-5", "-o", path, NULL};

        CU_ASSERT_NOT_EQUAL(mt_cmd_gen(5, bad), 0);
        CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
    }
}

static const char *meta_of(const mt_header_t *h, const char *key)
{
    uint32_t i;

    for (i = 0; i < h->num_meta; i++) {
        if (!strcmp(h->meta_key[i], key)) {
            return h->meta_value[i];
        }
    }
    return NULL;
}

/* --stage N, worst and all: one stage, the one with the highest unconstrained peak, every one;
 * the trace carries the model FLOPs per step and rank for the replay's MFU. */
static void test_gen_stages(void)
{
    char         dir[]  = "/tmp/memsvc-genst-XXXXXX", out[256], path[300];
    char        *argv[] = {"gen", "--model", "tiny-moe", "--layout", "pp=4,dp=2", "--microbatches",
                           "4",   "--node",  "tiny",     "--stage",  "all",       "-o",
                           out,   NULL};
    mt_reader_t *r;
    char         err[256];
    const char  *flops;
    uint64_t     peak[4], best = 0;
    uint32_t     s, worst      = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(out, sizeof(out), "%s/t.trace", dir);
    CU_ASSERT_EQUAL_FATAL(mt_cmd_gen(13, argv), 0);
    for (s = 0; s < 4; s++) {
        snprintf(path, sizeof(path), "%s/t.stage%u.trace", dir, s);
        CU_ASSERT_EQUAL_FATAL(mt_reader_open(path, &r, err, sizeof(err)), MEMSVC_OK);
        snprintf(err, sizeof(err), "%u", s);
        CU_ASSERT_STRING_EQUAL(meta_of(mt_reader_header(r), "stage"), err);
        flops = meta_of(mt_reader_header(r), "model_flops");
        CU_ASSERT(flops != NULL && strtod(flops, NULL) > 0);
        peak[s] = mt_reader_header(r)->recorded_peak;
        if (peak[s] > best) {
            best  = peak[s];
            worst = s;
        }
        mt_reader_close(r);
        unlink(path);
    }

    argv[10] = "worst";
    CU_ASSERT_EQUAL_FATAL(mt_cmd_gen(13, argv), 0);
    CU_ASSERT_EQUAL_FATAL(mt_reader_open(out, &r, err, sizeof(err)), MEMSVC_OK);
    snprintf(err, sizeof(err), "%u", worst);
    CU_ASSERT_STRING_EQUAL(meta_of(mt_reader_header(r), "stage"), err);
    mt_reader_close(r);
    unlink(out);

    argv[10] = "2";
    CU_ASSERT_EQUAL_FATAL(mt_cmd_gen(13, argv), 0);
    CU_ASSERT_EQUAL_FATAL(mt_reader_open(out, &r, err, sizeof(err)), MEMSVC_OK);
    CU_ASSERT_STRING_EQUAL(meta_of(mt_reader_header(r), "stage"), "2");
    CU_ASSERT_EQUAL(mt_reader_header(r)->recorded_peak, peak[2]);
    mt_reader_close(r);
    unlink(out);

    argv[10] = "4"; /* no such stage */
    CU_ASSERT_EQUAL(mt_cmd_gen(13, argv), 2);
    rmdir(dir);
}

/* Count the lines of a shell command's output holding want; its exit status in *st_p. */
static int count_lines(const char *cmd, const char *want, int *st_p)
{
    FILE *p = popen(cmd, "r");
    char  line[4096];
    int   n = 0, st;

    CU_ASSERT_FATAL(p != NULL);
    while (fgets(line, sizeof(line), p) != NULL) {
        n += (strstr(line, want) != NULL);
    }
    st    = pclose(p);
    *st_p = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return n;
}

/* On a terminal, gen shows the step it is at; in a pipe it writes only its summary. */
static void test_gen_progress(void)
{
    char path[] = "/tmp/memsvc-gen-XXXXXX", cmd[1024];
    int  fd     = mkstemp(path), st;

    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    /* script(1) gives the command a terminal; its output is the terminal's */
    snprintf(cmd, sizeof(cmd),
             "script -qec '%s/memtrace gen --model tiny-moe --node tiny --steps 3 -o %s' "
             "/dev/null | tr '\\r' '\\n'",
             test_bin_dir(), path);
    CU_ASSERT_EQUAL(count_lines(cmd, "step 3/3, ", &st), 1);
    CU_ASSERT_EQUAL(st, 0);
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --model tiny-moe --node tiny --steps 3 -o %s 2>&1 | tr '\\r' '\\n'",
             test_bin_dir(), path);
    CU_ASSERT_EQUAL(count_lines(cmd, "step 3/3, ", &st), 0);
    CU_ASSERT_EQUAL(count_lines(cmd, "3 step(s)", &st), 1);
    unlink(path);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("gen_cmd", NULL, NULL);

    CU_add_test(s, "gen writes a trace the reader accepts", test_gen_writes_a_readable_trace);
    CU_add_test(s, "gen --stage N, worst, all; model FLOPs", test_gen_stages);
    CU_add_test(s, "gen shows its progress on a terminal only", test_gen_progress);
}

TEST_REGISTER(gen_cmd, add_suite)
