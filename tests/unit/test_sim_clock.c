/* test_sim_clock.c - event ordering, FIFO ties, reentrant scheduling, virtual and real time */
#include "sim_npu/sim_clock.h"
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>

#define LOG_MAX 4096

typedef struct rec {
    sim_clock_t *clock;
    int          ids[LOG_MAX];
    sim_time_t   whens[LOG_MAX];
    sim_time_t   nows[LOG_MAX];
    int          n;
} rec_t;

typedef struct ev_arg {
    rec_t *rec;
    int    id;
} ev_arg_t;

static void record_cb(void *arg, sim_time_t when)
{
    ev_arg_t *a = arg;
    rec_t    *r = a->rec;

    if (r->n < LOG_MAX) {
        r->ids[r->n]   = a->id;
        r->whens[r->n] = when;
        r->nows[r->n]  = sim_clock_now(r->clock);
        r->n++;
    }
}

static void test_out_of_order_run_in_time_order(void)
{
    static const sim_time_t times[] = { 50, 10, 40, 20, 30, 10, 0, 1000, 5 };
    sim_clock_t            *c;
    rec_t                  *r = calloc(1, sizeof(*r));
    ev_arg_t                args[9];
    int                     i;

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    r->clock = c;
    CU_ASSERT_STRING_EQUAL(sim_clock_name(c), "virtual");
    CU_ASSERT_TRUE(sim_clock_is_virtual(c));
    CU_ASSERT_EQUAL(sim_clock_next(c), SIM_TIME_NEVER);
    CU_ASSERT_FALSE(sim_clock_step(c));
    for (i = 0; i < 9; i++) {
        args[i] = (ev_arg_t){ .rec = r, .id = i };
        TEST_ASSERT_OK(sim_clock_schedule(c, times[i], record_cb, &args[i]));
    }
    CU_ASSERT_EQUAL(sim_clock_pending(c), 9);
    CU_ASSERT_EQUAL(sim_clock_next(c), 0);
    /* At time 0 only the event due at 0 runs. */
    CU_ASSERT_EQUAL(sim_clock_run_due(c), 1);
    while (sim_clock_step(c)) {
    }
    CU_ASSERT_EQUAL(r->n, 9);
    for (i = 1; i < r->n; i++) {
        CU_ASSERT_TRUE(r->whens[i - 1] <= r->whens[i]);
    }
    /* Virtual time jumped exactly to each event's time. */
    for (i = 0; i < r->n; i++) {
        CU_ASSERT_EQUAL(r->nows[i], r->whens[i]);
    }
    CU_ASSERT_EQUAL(sim_clock_now(c), 1000);
    CU_ASSERT_EQUAL(sim_clock_pending(c), 0);
    /* The two events at 10 ran in the order they were scheduled (ids 1 then 5). */
    CU_ASSERT_EQUAL(r->ids[2], 1);
    CU_ASSERT_EQUAL(r->ids[3], 5);
    sim_clock_destroy(c);
    free(r);
}

static void test_fifo_ties_many(void)
{
    sim_clock_t *c;
    rec_t       *r    = calloc(1, sizeof(*r));
    ev_arg_t    *args = calloc(1000, sizeof(*args));
    int          i;

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    r->clock = c;
    /* Interleave two times so the heap reorders a lot. */
    for (i = 0; i < 1000; i++) {
        args[i] = (ev_arg_t){ .rec = r, .id = i };
        TEST_ASSERT_OK(sim_clock_schedule(c, (i % 2) ? 100 : 200, record_cb, &args[i]));
    }
    CU_ASSERT_TRUE(sim_clock_step(c));
    CU_ASSERT_EQUAL(r->n, 500);
    CU_ASSERT_TRUE(sim_clock_step(c));
    CU_ASSERT_EQUAL(r->n, 1000);
    for (i = 0; i < 500; i++) {
        CU_ASSERT_EQUAL(r->ids[i], 2 * i + 1);
        CU_ASSERT_EQUAL(r->ids[500 + i], 2 * i);
    }
    sim_clock_destroy(c);
    free(args);
    free(r);
}

typedef struct chain {
    sim_clock_t *clock;
    int          remaining;
    int          ran;
    sim_time_t   delay;
    sim_time_t   last;
} chain_t;

/* Reschedules itself `remaining` times, `delay` later (0: at the current time). */
static void chain_cb(void *arg, sim_time_t when)
{
    chain_t *ch = arg;

    ch->ran++;
    ch->last = when;
    if (ch->remaining-- > 0) {
        CU_ASSERT_EQUAL(sim_clock_schedule(ch->clock, when + ch->delay, chain_cb, ch), MEMSVC_OK);
    }
}

static void test_callbacks_schedule_more(void)
{
    sim_clock_t *c;
    chain_t      now_chain, later_chain;

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    /* Scheduling at the current time from a callback: runs in the same run_due, and the
     * heap grows (past its first allocation) while callbacks run. */
    now_chain = (chain_t){ .clock = c, .remaining = 500, .delay = 0 };
    TEST_ASSERT_OK(sim_clock_schedule(c, 0, chain_cb, &now_chain));
    CU_ASSERT_EQUAL(sim_clock_run_due(c), 501);
    CU_ASSERT_EQUAL(now_chain.ran, 501);
    CU_ASSERT_EQUAL(sim_clock_pending(c), 0);

    /* Scheduling later: each step runs one, time jumps by the delay. */
    later_chain = (chain_t){ .clock = c, .remaining = 3, .delay = 7 };
    TEST_ASSERT_OK(sim_clock_schedule(c, 5, chain_cb, &later_chain));
    CU_ASSERT_TRUE(sim_clock_step(c));
    CU_ASSERT_EQUAL(sim_clock_now(c), 5);
    CU_ASSERT_EQUAL(later_chain.ran, 1);
    while (sim_clock_step(c)) {
    }
    CU_ASSERT_EQUAL(later_chain.ran, 4);
    CU_ASSERT_EQUAL(sim_clock_now(c), 5 + 3 * 7);
    sim_clock_destroy(c);
}

static void test_virtual_advance_and_past_events(void)
{
    sim_clock_t *c;
    rec_t       *r = calloc(1, sizeof(*r));
    ev_arg_t     a = { .rec = r, .id = 1 }, b = { .rec = r, .id = 2 };

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    r->clock = c;
    sim_clock_advance_to(c, 1000);
    CU_ASSERT_EQUAL(sim_clock_now(c), 1000);
    sim_clock_advance_to(c, 500); /* the past: no-op */
    CU_ASSERT_EQUAL(sim_clock_now(c), 1000);
    /* An event in the past runs at the next run_due, without moving time back. */
    TEST_ASSERT_OK(sim_clock_schedule(c, 10, record_cb, &a));
    TEST_ASSERT_OK(sim_clock_schedule(c, 2000, record_cb, &b));
    CU_ASSERT_EQUAL(sim_clock_run_due(c), 1);
    CU_ASSERT_EQUAL(r->n, 1);
    CU_ASSERT_EQUAL(r->nows[0], 1000);
    /* Advancing does not run events by itself. */
    sim_clock_advance_to(c, 3000);
    CU_ASSERT_EQUAL(r->n, 1);
    CU_ASSERT_EQUAL(sim_clock_run_due(c), 1);
    CU_ASSERT_EQUAL(r->whens[1], 2000);
    CU_ASSERT_EQUAL(sim_clock_schedule(c, 1, NULL, NULL), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_clock_schedule(c, SIM_TIME_NEVER, record_cb, &a), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_clock_pending(c), 0);
    sim_clock_destroy(c);
    free(r);
}

/* Randomized: a large heap pops in (time, seq) order. */
static void test_heap_order_randomized(void)
{
    sim_clock_t *c;
    rec_t       *r    = calloc(1, sizeof(*r));
    ev_arg_t    *args = calloc(LOG_MAX, sizeof(*args));
    uint64_t     x    = 12345;
    int          i;

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    r->clock = c;
    for (i = 0; i < LOG_MAX; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        args[i] = (ev_arg_t){ .rec = r, .id = i };
        TEST_ASSERT_OK(sim_clock_schedule(c, x % 97, record_cb, &args[i]));
    }
    while (sim_clock_step(c)) {
    }
    CU_ASSERT_EQUAL_FATAL(r->n, LOG_MAX);
    for (i = 1; i < LOG_MAX; i++) {
        CU_ASSERT_TRUE((r->whens[i - 1] < r->whens[i]) ||
                       ((r->whens[i - 1] == r->whens[i]) && (r->ids[i - 1] < r->ids[i])));
    }
    sim_clock_destroy(c);
    free(args);
    free(r);
}

static void test_real_clock_fires_no_sooner_than_due(void)
{
    static const sim_time_t due[] = { 3000000, 1000000, 2000000, 1000000 };
    sim_clock_t            *c;
    rec_t                  *r = calloc(1, sizeof(*r));
    ev_arg_t                args[4];
    sim_time_t              t0, t1;
    int                     i;

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_REAL, &c));
    r->clock = c;
    CU_ASSERT_STRING_EQUAL(sim_clock_name(c), "real");
    CU_ASSERT_FALSE(sim_clock_is_virtual(c));
    t0 = sim_clock_now(c);
    t1 = sim_clock_now(c);
    CU_ASSERT_TRUE(t1 >= t0);
    for (i = 0; i < 4; i++) {
        args[i] = (ev_arg_t){ .rec = r, .id = i };
        TEST_ASSERT_OK(sim_clock_schedule(c, t0 + due[i], record_cb, &args[i]));
    }
    while (sim_clock_step(c)) {
    }
    CU_ASSERT_EQUAL_FATAL(r->n, 4);
    for (i = 0; i < 4; i++) {
        CU_ASSERT_TRUE(r->nows[i] >= r->whens[i]);
        if (i > 0) {
            CU_ASSERT_TRUE(r->whens[i - 1] <= r->whens[i]);
        }
    }
    CU_ASSERT_EQUAL(r->ids[0], 1);
    CU_ASSERT_EQUAL(r->ids[1], 3);
    /* advance_to on the real clock waits until then. */
    t0 = sim_clock_now(c) + 500000;
    sim_clock_advance_to(c, t0);
    CU_ASSERT_TRUE(sim_clock_now(c) >= t0);
    sim_clock_destroy(c);
    free(r);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("sim_clock", NULL, NULL);

    CU_add_test(s, "out-of-order events run in time order", test_out_of_order_run_in_time_order);
    CU_add_test(s, "ties run first-in first-out", test_fifo_ties_many);
    CU_add_test(s, "callbacks schedule more events", test_callbacks_schedule_more);
    CU_add_test(s, "virtual advance and past events", test_virtual_advance_and_past_events);
    CU_add_test(s, "heap order, randomized", test_heap_order_randomized);
    CU_add_test(s, "real clock fires no sooner than due", test_real_clock_fires_no_sooner_than_due);
}

TEST_REGISTER(sim_clock, add_suite)
