/* test_gen_cmd.c - `memtrace gen` end to end: through the real trace writer and back */
#include "tests/test_util.h"
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_gen_writes_a_readable_trace(void)
{
    char         path[] = "/tmp/memsvc-gen-XXXXXX";
    int          fd     = mkstemp(path);
    char        *argv[] = {"gen", "--model", "tiny-moe", "--layout", "tp=1,pp=2,vpp=1,ep=1",
                           "--microbatches", "4", "--steps", "2", "--node", "tiny", "-o", path, NULL};
    mt_reader_t *r = NULL;
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

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("gen_cmd", NULL, NULL);

    CU_add_test(s, "gen writes a trace the reader accepts", test_gen_writes_a_readable_trace);
}

TEST_REGISTER(gen_cmd, add_suite)
