/* test_policy_capuchin.c - the capuchin policy on small hand-made steps with known answers */
#include "memsvc/eng.h"
#include "tests/test_util.h"
#include "tools/memtrace/replay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024ull * 1024ull)
#define US 1000ull
#define MS 1000000ull

/* ---- a small trace: one tensor X idle across a long middle that needs the room -------------- */

typedef struct cpt_trace {
    mt_writer_t *w;
    char         path[64];
    uint64_t     op;
} cpt_trace_t;

static void cpt_put(cpt_trace_t *tb, const mt_event_t *e)
{
    TEST_ASSERT_OK(mt_writer_put(tb->w, e));
}

static void cpt_alloc(cpt_trace_t *tb, uint64_t id, const char *key, uint64_t size,
                      memsvc_kind_t kind, uint64_t recompute_ns)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type         = MT_EV_ALLOC;
    e.tensor       = id;
    e.key          = key;
    e.size         = size;
    e.kind         = kind;
    e.tags         = MEMSVC_TAGS_NONE;
    e.recomputable = recompute_ns > 0;
    e.recompute_ns = recompute_ns;
    e.durable      = (kind == MEMSVC_KIND_PARAM || kind == MEMSVC_KIND_OPTIM);
    cpt_put(tb, &e);
}

static void cpt_free(cpt_trace_t *tb, uint64_t id)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type   = MT_EV_FREE;
    e.tensor = id;
    cpt_put(tb, &e);
}

/* An operator on the compute stream reading r (0: none) and writing w (0: none). */
static void cpt_op(cpt_trace_t *tb, uint64_t ns, uint64_t r, uint64_t w)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type        = MT_EV_COMPUTE;
    e.op          = ++tb->op;
    e.name        = "op";
    e.duration_ns = ns;
    e.reads       = &r;
    e.num_reads   = (r != 0);
    e.writes      = &w;
    e.num_writes  = (w != 0);
    cpt_put(tb, &e);
}

static void cpt_hint(cpt_trace_t *tb, memsvc_hint_type_t hint, int32_t step)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type       = MT_EV_HINT;
    e.hint       = hint;
    e.step       = step;
    e.layer      = -1;
    e.microbatch = -1;
    cpt_put(tb, &e);
}

/*
 * `steps` steps on a 48 MiB device: X (16 MiB, recompute cost x_rc) is written, then a 40 MiB
 * tensor Y is used by five 20 ms operators, freed, and X is read after 20, 20 and 2 ms
 * operators; a 1 MiB workspace W is used by every operator but Y's. Reading X only one short
 * operator ahead, a swap-in on demand cannot hide. X + Y does not fit: X must leave during the
 * middle (about 17 ms each way on the tiny preset's 1 GB/s links, well under the 100 ms it is
 * idle).
 */
static void cpt_write_x_y(cpt_trace_t *tb, int steps, uint64_t x_rc)
{
    mt_header_t h;
    int         fd, s, i;

    snprintf(tb->path, sizeof(tb->path), "/tmp/test_capuchin_XXXXXX");
    fd = mkstemp(tb->path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(tb->path, &h, &tb->w));
    tb->op = 0;
    for (s = 0; s < steps; s++) {
        uint64_t x = 10 * (uint64_t)s + 1, y = x + 1, w = x + 2;

        cpt_hint(tb, MEMSVC_HINT_STEP_BEGIN, s);
        cpt_alloc(tb, w, "W", 1 * MiB, MEMSVC_KIND_WORKSPACE, 0);
        cpt_alloc(tb, x, "X", 16 * MiB, MEMSVC_KIND_ACTIVATION, x_rc);
        cpt_op(tb, 1 * MS, 0, x);
        cpt_op(tb, 20 * MS, 0, w);
        cpt_op(tb, 20 * MS, w, w);
        cpt_alloc(tb, y, "Y", 40 * MiB, MEMSVC_KIND_WORKSPACE, 0);
        for (i = 0; i < 5; i++) {
            cpt_op(tb, 20 * MS, y, y);
        }
        cpt_free(tb, y);
        cpt_op(tb, 20 * MS, w, w);
        cpt_op(tb, 20 * MS, w, w);
        cpt_op(tb, 2 * MS, w, w);
        cpt_op(tb, 1 * MS, x, w);
        cpt_free(tb, x);
        cpt_free(tb, w);
        cpt_hint(tb, MEMSVC_HINT_STEP_END, s);
    }
    TEST_ASSERT_OK(mt_writer_close(tb->w));
}

/* Replay on the tiny preset with 48 MiB of HBM; slow: host links of 100 MB/s. */
static void cpt_replay_on(const char *path, const char *policy, bool slow, mt_replay_report_t *rep)
{
    static const char *const ov[] = {"hbm=48MiB", "h2d_bw=100MB/s", "d2h_bw=100MB/s"};
    mt_replay_params_t       p;
    char                     err[256];

    mt_replay_params_init(&p);
    p.node          = "tiny";
    p.policy        = policy;
    p.overrides     = ov;
    p.num_overrides = slow ? 3 : 1;
    p.baseline      = false;
    memset(rep, 0, sizeof(*rep));
    TEST_ASSERT_OK(mt_replay_file(&p, path, rep, err, sizeof(err)));
}

static void cpt_replay(const char *path, const char *policy, mt_replay_report_t *rep)
{
    cpt_replay_on(path, policy, false, rep);
}

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
    cpt_trace_t        tb;
    mt_replay_report_t c, l;

    cpt_write_x_y(&tb, 2, 500 * MS);
    cpt_replay(tb.path, "capuchin", &c);
    cpt_replay(tb.path, "lru", &l);
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
    cpt_trace_t        tb;
    mt_replay_report_t r;

    cpt_write_x_y(&tb, 3, 500 * MS);
    cpt_replay(tb.path, "capuchin", &r);
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
    cpt_trace_t        tb;
    mt_replay_report_t r;

    cpt_write_x_y(&tb, 3, 100 * US);
    cpt_replay_on(tb.path, "capuchin", true, &r);
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
    cpt_trace_t        tb;
    mt_replay_report_t a, b;

    cpt_write_x_y(&tb, 4, 5 * MS);
    cpt_replay(tb.path, "capuchin", &a);
    cpt_replay(tb.path, "capuchin", &b);
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
