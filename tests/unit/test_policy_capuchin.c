/* test_policy_capuchin.c - the capuchin policy on small hand-made steps with known answers */
#include "memsvc/eng.h"
#include "tests/policy_trace.h"
#include "tests/test_util.h"
#include "tools/memtrace/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_params(void)
{
    const pol_ops_t *ops = pol_find("capuchin");
    void            *st  = NULL;
    char             err[256];

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    CU_ASSERT(ops->wants_timeline);
    TEST_ASSERT_OK(ops->create("drop=off,slack=0.5", &st, err, sizeof(err)));
    ops->destroy(st);
    CU_ASSERT_EQUAL(ops->create("window=3", &st, err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(ops->create("swap=maybe", &st, err, sizeof(err)), MEMSVC_ERR_PARSE);
}

/* The first step is passive (least recently used swapping): exactly what lru does. */
static void test_first_step_is_lru(void)
{
    pt_trace_t        tb;
    mt_replay_report_t c, l;

    pt_write_x_y(&tb, 2, 500 * MS);
    pt_replay(tb.path, "capuchin", &c);
    pt_replay(tb.path, "lru", &l);
    CU_ASSERT_EQUAL_FATAL(c.num_steps, 2);
    CU_ASSERT_EQUAL(c.steps[0].end - c.steps[0].begin, l.steps[0].end - l.steps[0].begin);
    CU_ASSERT_EQUAL(c.steps[0].stall_ns, l.steps[0].stall_ns);
    CU_ASSERT(c.steps[0].stall_ns > 0);
    mt_replay_report_free(&c);
    mt_replay_report_free(&l);
    unlink(tb.path);
}

/* X's transfers fit in the links' free time while it is idle: swapped, prefetched, no stall. */
static void test_swap_in_free_time(void)
{
    pt_trace_t        tb;
    mt_replay_report_t r;

    pt_write_x_y(&tb, 3, 500 * MS);
    pt_replay(tb.path, "capuchin", &r);
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL_FATAL(r.num_steps, 3);
    CU_ASSERT_EQUAL(r.steps[1].stall_ns, 0);
    CU_ASSERT_EQUAL(r.steps[2].stall_ns, 0);
    CU_ASSERT_EQUAL(r.recompute_ns, 0);
    CU_ASSERT(r.prefetches >= 2);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/*
 * With 100 MB/s links the transfer does not fit in X's idle time: recomputation (100 us) is
 * chosen from the second step on; only the passive first step swapped it.
 */
static void test_recompute_when_swap_does_not_hide(void)
{
    pt_trace_t        tb;
    mt_replay_report_t r;

    pt_write_x_y(&tb, 3, 100 * US);
    pt_replay_on(tb.path, "capuchin", true, &r);
    CU_ASSERT(r.fits);
    CU_ASSERT(r.swap_out_bytes < 2 * 16 * MiB); /* not every step: the first only */
    CU_ASSERT(r.drops >= 2);
    CU_ASSERT_EQUAL(r.steps[1].recompute_ns, 100 * US);
    CU_ASSERT_EQUAL(r.steps[2].recompute_ns, 100 * US);
    CU_ASSERT_EQUAL(r.steps[2].stall_ns, 0);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

static void test_deterministic(void)
{
    pt_trace_t        tb;
    mt_replay_report_t a, b;

    pt_write_x_y(&tb, 4, 5 * MS);
    pt_replay(tb.path, "capuchin", &a);
    pt_replay(tb.path, "capuchin", &b);
    CU_ASSERT_EQUAL(a.total_ns, b.total_ns);
    CU_ASSERT_EQUAL(a.stall_ns, b.stall_ns);
    CU_ASSERT_EQUAL(a.recompute_ns, b.recompute_ns);
    CU_ASSERT_EQUAL(a.swap_out_bytes, b.swap_out_bytes);
    CU_ASSERT_EQUAL(a.drops, b.drops);
    mt_replay_report_free(&a);
    mt_replay_report_free(&b);
    unlink(tb.path);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("policy_capuchin", NULL, NULL);

    CU_add_test(s, "parameters: unknown and malformed rejected", test_params);
    CU_add_test(s, "first step: passive, as lru", test_first_step_is_lru);
    CU_add_test(s, "a swap hidden in free link time: no stall", test_swap_in_free_time);
    CU_add_test(s, "recompute where the swap cannot hide", test_recompute_when_swap_does_not_hide);
    CU_add_test(s, "same trace, same result", test_deterministic);
}

TEST_REGISTER(policy_capuchin, add_suite)
