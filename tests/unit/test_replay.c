/* test_replay.c - memtrace replay: hand-built traces whose timings and peaks are known exactly */
#include "tests/test_util.h"
#include "tools/memtrace/import.h"
#include "tools/memtrace/replay.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB (1024ull)
#define MiB (1024ull * 1024ull)
#define US 1000ull
#define MS 1000000ull
#define DATA "tests/data/"

/* ---- building traces ------------------------------------------------------------------------ */

typedef struct tb {
    mt_writer_t *w;
    char         path[64];
} tb_t;

static void tb_open(tb_t *tb)
{
    mt_header_t h;
    int         fd;

    snprintf(tb->path, sizeof(tb->path), "/tmp/test_replay_XXXXXX");
    fd = mkstemp(tb->path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(tb->path, &h, &tb->w));
}

static void tb_close(tb_t *tb)
{
    TEST_ASSERT_OK(mt_writer_close(tb->w));
}

static void tb_alloc(tb_t *tb, uint64_t id, const char *key, uint64_t size, memsvc_kind_t kind,
                     uint64_t recompute_ns, const uint64_t *inputs, uint32_t num_inputs)
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
    e.durable      = (kind == MEMSVC_KIND_PARAM);
    e.inputs       = inputs;
    e.num_inputs   = num_inputs;
    TEST_ASSERT_OK(mt_writer_put(tb->w, &e));
}

static void tb_free(tb_t *tb, uint64_t id)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type   = MT_EV_FREE;
    e.tensor = id;
    TEST_ASSERT_OK(mt_writer_put(tb->w, &e));
}

static void tb_op(tb_t *tb, uint64_t op, uint32_t stream, uint64_t ns, const uint64_t *reads,
                  uint32_t nr, const uint64_t *writes, uint32_t nw)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type        = MT_EV_COMPUTE;
    e.op          = op;
    e.name        = "op";
    e.duration_ns = ns;
    e.stream      = stream;
    e.reads       = reads;
    e.num_reads   = nr;
    e.writes      = writes;
    e.num_writes  = nw;
    TEST_ASSERT_OK(mt_writer_put(tb->w, &e));
}

static void tb_hint(tb_t *tb, memsvc_hint_type_t hint, int32_t step)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type       = MT_EV_HINT;
    e.hint       = hint;
    e.step       = step;
    e.layer      = -1;
    e.microbatch = -1;
    TEST_ASSERT_OK(mt_writer_put(tb->w, &e));
}

static memsvc_status_t replay(const char *path, const char *policy, const char *const *ov,
                              size_t nov, bool baseline, mt_replay_report_t *rep, char *err,
                              size_t errlen)
{
    mt_replay_params_t p;

    mt_replay_params_init(&p);
    p.policy        = policy;
    p.overrides     = ov;
    p.num_overrides = nov;
    p.baseline      = baseline;
    p.timeline      = true;
    return mt_replay_file(&p, path, rep, err, errlen);
}

/* ---- (a) unconstrained: no stalls, overhead 0, peak by hand; a communication stream -------- */

static void test_unconstrained(void)
{
    static const uint64_t a[] = {1}, b[] = {2}, c[] = {3};
    mt_replay_report_t    r;
    tb_t                  tb;
    char                  err[256];

    tb_open(&tb);
    tb_hint(&tb, MEMSVC_HINT_STEP_BEGIN, 0);
    tb_alloc(&tb, 1, "A", 1 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_alloc(&tb, 2, "B", 2 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(&tb, 1, 0, 100 * US, NULL, 0, a, 1); /* 0 .. 100 us */
    tb_op(&tb, 2, 1, 300 * US, a, 1, b, 1);    /* stream 1: waits for A, 100 .. 400 us */
    tb_alloc(&tb, 3, "C", 4 * MiB + 100, MEMSVC_KIND_WORKSPACE, 0, NULL, 0);
    tb_op(&tb, 3, 0, 50 * US, b, 1, c, 1); /* waits for B: 400 .. 450 us */
    tb_free(&tb, 1);
    tb_free(&tb, 2);
    tb_free(&tb, 3);
    tb_hint(&tb, MEMSVC_HINT_STEP_END, 0);
    tb_close(&tb);

    TEST_ASSERT_OK(replay(tb.path, "none", NULL, 0, true, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(r.events, 11);
    CU_ASSERT_EQUAL(r.total_ns, 450 * US);
    CU_ASSERT_EQUAL(r.baseline_ns, 450 * US);
    CU_ASSERT_EQUAL(r.overhead, 0.0);
    CU_ASSERT_EQUAL(r.stall_ns, 0);
    CU_ASSERT_EQUAL(r.compute_ns, 150 * US);
    CU_ASSERT_EQUAL(r.comm_ns, 300 * US);
    CU_ASSERT_EQUAL(r.comm_wait_ns, 300 * US); /* op 3 waited 400 - 100 us for B */
    CU_ASSERT_EQUAL(r.peak_allocated, 7 * MiB + 100);
    CU_ASSERT_EQUAL(r.peak_reserved, 7 * MiB + 512); /* 100 B rounded up to 512 */
    CU_ASSERT_EQUAL(r.devs[0].peak_by_kind[MEMSVC_KIND_WORKSPACE], 4 * MiB + 100);
    CU_ASSERT_EQUAL(r.unconstrained_peak, 7 * MiB + 100);
    CU_ASSERT_EQUAL(r.num_steps, 1);
    CU_ASSERT_EQUAL(r.steps[0].end - r.steps[0].begin, 450 * US);
    CU_ASSERT_EQUAL(r.steps[0].baseline_ns, 450 * US);
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL(r.swap_outs + r.drops + r.recomputes, 0);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/* ---- (b) a swap out and back on a small HBM under lru ---------------------------------------- */

/*
 * HBM 4 MiB. X (2 MiB) written by op1 (0-100 us); W (1 MiB) written by op2 (100 us-1.1 ms);
 * Y (2 MiB) does not fit: op1's pin on X ends at 100 us, lru swaps X out (d2h of 2 MiB), Y is
 * placed when it ends; op3 (100 us) writes Y; W is freed; op4 reads X: swapped back (h2d).
 * Each transfer overlaps the compute that was running: op2's 1 ms, then op3's 100 us.
 */
static void write_swap_trace(tb_t *tb)
{
    static const uint64_t x[] = {1}, w[] = {2}, y[] = {3};

    tb_open(tb);
    tb_alloc(tb, 1, "X", 2 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(tb, 1, 0, 100 * US, NULL, 0, x, 1);
    tb_alloc(tb, 2, "W", 1 * MiB, MEMSVC_KIND_WORKSPACE, 0, NULL, 0);
    tb_op(tb, 2, 0, 1 * MS, NULL, 0, w, 1);
    tb_alloc(tb, 3, "Y", 2 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(tb, 3, 0, 100 * US, NULL, 0, y, 1);
    tb_free(tb, 2);
    tb_op(tb, 4, 0, 200 * US, x, 1, NULL, 0);
    tb_close(tb);
}

static void test_swap_stall(void)
{
    static const char *const ov[] = {"hbm=4MiB"};
    mt_replay_report_t       r;
    sim_desc_t               tiny;
    uint64_t                 d2h, h2d;
    tb_t                     tb;
    char                     err[256];

    TEST_ASSERT_OK(sim_desc_preset("tiny", &tiny));
    d2h = sim_link_time_ns(&tiny.d2h, 2 * MiB);
    h2d = sim_link_time_ns(&tiny.h2d, 2 * MiB);
    write_swap_trace(&tb);
    TEST_ASSERT_OK(replay(tb.path, "lru", ov, 1, true, &r, err, sizeof(err)));
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL(r.swap_outs, 1);
    CU_ASSERT_EQUAL(r.swap_ins, 1);
    CU_ASSERT_EQUAL(r.swap_out_bytes, 2 * MiB);
    CU_ASSERT_EQUAL(r.swap_in_bytes, 2 * MiB);
    CU_ASSERT_EQUAL(r.stalls, 2);
    /* the swap-out started at 100 us and overlapped op2's 1 ms; the swap-in overlapped op3 */
    CU_ASSERT_EQUAL(r.stall_ns, (d2h - 1 * MS) + (h2d - 100 * US));
    CU_ASSERT_EQUAL(r.baseline_ns, 1400 * US);
    CU_ASSERT_EQUAL(r.total_ns, 100 * US + d2h + h2d + 200 * US);
    CU_ASSERT_EQUAL(r.total_ns, r.baseline_ns + r.stall_ns);
    CU_ASSERT_DOUBLE_EQUAL(r.overhead, (double)r.total_ns / (1400.0 * US) - 1.0, 1e-12);
    CU_ASSERT_EQUAL(r.peak_allocated, 4 * MiB);
    CU_ASSERT_EQUAL(r.host_peak, 2 * MiB);
    CU_ASSERT_EQUAL(r.unconstrained_peak, 5 * MiB); /* X, W, Y at once */
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/* ---- (c) a dropped tensor is recomputed, its input made resident first ----------------------- */

static void test_recompute(void)
{
    static const char *const ov[] = {"hbm=4608KiB"};
    static const uint64_t    p[] = {10}, x[] = {1}, w[] = {2}, y[] = {3};
    mt_replay_report_t       r;
    tb_t                     tb;
    char                     err[256];

    tb_open(&tb);
    tb_alloc(&tb, 10, "P", 256 * KiB, MEMSVC_KIND_PARAM, 0, NULL, 0);
    tb_alloc(&tb, 1, "X", 2 * MiB, MEMSVC_KIND_ACTIVATION, 500 * US, p, 1);
    tb_op(&tb, 1, 0, 100 * US, NULL, 0, x, 1);
    tb_alloc(&tb, 2, "W", 1 * MiB, MEMSVC_KIND_WORKSPACE, 0, NULL, 0);
    tb_op(&tb, 2, 0, 1 * MS, p, 1, w, 1);
    tb_alloc(&tb, 3, "Y", 2 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0); /* X is dropped */
    tb_op(&tb, 3, 0, 100 * US, NULL, 0, y, 1);
    tb_free(&tb, 2);
    tb_op(&tb, 4, 0, 200 * US, x, 1, NULL, 0); /* X is recomputed from P */
    tb_close(&tb);

    TEST_ASSERT_OK(replay(tb.path, "lru:drop=on", ov, 1, true, &r, err, sizeof(err)));
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL(r.drops, 1);
    CU_ASSERT_EQUAL(r.swap_outs, 0);
    CU_ASSERT_EQUAL(r.recomputes, 1);
    CU_ASSERT_EQUAL(r.recompute_ns, 500 * US);
    CU_ASSERT_EQUAL(r.stall_ns, 0);
    CU_ASSERT_EQUAL(r.baseline_ns, 1400 * US);
    CU_ASSERT_EQUAL(r.total_ns, r.baseline_ns + 500 * US);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/*
 * The input of a dropped tensor was swapped out: the recomputation waits for it to come back.
 * That wait is a stall (the stream is idle), the recomputation is not.
 */
static void test_recompute_input_swapped(void)
{
    static const char *const ov[] = {"hbm=4MiB"};
    static const uint64_t    p[] = {10}, x[] = {1}, w[] = {2}, y[] = {3};
    mt_replay_report_t       r;
    sim_desc_t               tiny;
    uint64_t                 d2h, h2d;
    tb_t                     tb;
    char                     err[256];

    TEST_ASSERT_OK(sim_desc_preset("tiny", &tiny));
    d2h = sim_link_time_ns(&tiny.d2h, 1 * MiB);
    h2d = sim_link_time_ns(&tiny.h2d, 1 * MiB);
    tb_open(&tb);
    tb_alloc(&tb, 10, "P", 1 * MiB, MEMSVC_KIND_PARAM, 0, NULL, 0);
    tb_op(&tb, 1, 0, 100 * US, NULL, 0, p, 1); /* 0 .. 100 us */
    tb_alloc(&tb, 1, "X", 2 * MiB, MEMSVC_KIND_ACTIVATION, 500 * US, p, 1);
    tb_op(&tb, 2, 0, 100 * US, p, 1, x, 1); /* 100 .. 200 us */
    tb_alloc(&tb, 2, "W", 1 * MiB, MEMSVC_KIND_WORKSPACE, 0, NULL, 0);
    tb_op(&tb, 3, 0, 1 * MS, NULL, 0, w, 1); /* 200 us .. 1.2 ms */
    /* room for Y when op 2 ends (200 us): P is swapped out, then X dropped */
    tb_alloc(&tb, 3, "Y", 3 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(&tb, 4, 0, 100 * US, NULL, 0, y, 1);
    tb_free(&tb, 3);
    tb_free(&tb, 2);
    tb_op(&tb, 5, 0, 200 * US, x, 1, NULL, 0); /* X recomputed once P is back */
    tb_close(&tb);

    TEST_ASSERT_OK(replay(tb.path, "lru:drop=on", ov, 1, false, &r, err, sizeof(err)));
    CU_ASSERT(r.fits);
    CU_ASSERT_EQUAL(r.swap_outs, 1);
    CU_ASSERT_EQUAL(r.drops, 1);
    CU_ASSERT_EQUAL(r.swap_ins, 1);
    CU_ASSERT_EQUAL(r.recomputes, 1);
    CU_ASSERT_EQUAL(r.recompute_ns, 500 * US);
    /* op 4 waits for P's swap-out past op 3's end; op 5 for P's swap-in past op 4's end */
    CU_ASSERT_EQUAL(r.stall_ns, (200 * US + d2h - 1200 * US) + (h2d - 100 * US));
    /* Y placed at 200 us + d2h; P's swap-in starts then (overlapping op 4), recompute, op 5 */
    CU_ASSERT_EQUAL(r.total_ns, 200 * US + d2h + h2d + 500 * US + 200 * US);
    CU_ASSERT_EQUAL(r.total_ns, r.compute_ns + r.recompute_ns + r.stall_ns);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/* Two dropped tensors that name each other as inputs: the recursion stops. */
static void test_recompute_cycle(void)
{
    static const char *const ov[] = {"hbm=4MiB"};
    static const uint64_t    a[] = {1}, b[] = {2}, ab[] = {1, 2}, y[] = {3};
    mt_replay_report_t       r;
    tb_t                     tb;
    char                     err[256];

    tb_open(&tb);
    tb_alloc(&tb, 1, "A", 1 * MiB, MEMSVC_KIND_ACTIVATION, 10 * US, b, 1);
    tb_alloc(&tb, 2, "B", 1 * MiB, MEMSVC_KIND_ACTIVATION, 20 * US, a, 1);
    tb_op(&tb, 1, 0, 100 * US, NULL, 0, ab, 2);
    tb_alloc(&tb, 3, "Y", 4 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0); /* drops A and B */
    tb_op(&tb, 2, 0, 100 * US, NULL, 0, y, 1);
    tb_free(&tb, 3);
    tb_op(&tb, 3, 0, 100 * US, ab, 2, NULL, 0);
    tb_close(&tb);
    TEST_ASSERT_OK(replay(tb.path, "lru:drop=on", ov, 1, false, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(r.drops, 2);
    CU_ASSERT_EQUAL(r.recomputes, 2);
    CU_ASSERT_EQUAL(r.recompute_ns, 30 * US);
    CU_ASSERT_EQUAL(r.total_ns, 330 * US);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/* ---- (d) out of memory with policy none ------------------------------------------------------ */

static void test_oom(void)
{
    static const char *const ov[] = {"hbm=4MiB"};
    static const uint64_t    a[] = {1}, b[] = {2};
    mt_replay_report_t       r;
    tb_t                     tb;
    char                     err[256];

    tb_open(&tb);
    tb_alloc(&tb, 1, "A", 3 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(&tb, 1, 0, 100 * US, NULL, 0, a, 1);
    /* does not fit; none never evicts, so there is no point waiting for op 1's pins */
    tb_alloc(&tb, 2, "L7.mb0.attn.qkv", 2 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(&tb, 2, 0, 100 * US, b, 1, NULL, 0);
    tb_alloc(&tb, 3, "huge", 8 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_free(&tb, 2);
    tb_free(&tb, 1);
    tb_close(&tb);
    TEST_ASSERT_OK(replay(tb.path, "none", ov, 1, true, &r, err, sizeof(err)));
    CU_ASSERT_FALSE(r.fits);
    CU_ASSERT_EQUAL(r.oom_count, 2);
    CU_ASSERT_STRING_EQUAL(r.ooms[0].key, "L7.mb0.attn.qkv");
    CU_ASSERT_EQUAL(r.ooms[0].time, 0);
    CU_ASSERT_EQUAL(r.ooms[0].size, 2 * MiB);
    CU_ASSERT_EQUAL(r.ooms[0].short_bytes, 1 * MiB);
    CU_ASSERT_EQUAL(r.ooms[0].status, MEMSVC_ERR_NO_MEMORY);
    CU_ASSERT_STRING_EQUAL(r.ooms[1].key, "huge");
    CU_ASSERT_EQUAL(r.ooms[1].short_bytes, 7 * MiB);
    CU_ASSERT_EQUAL(r.ooms[1].status, MEMSVC_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(r.ignored_refs, 1); /* op 2 reads the skipped tensor */
    CU_ASSERT_EQUAL(r.stall_ns, 0);
    CU_ASSERT_EQUAL(r.total_ns, 200 * US);
    CU_ASSERT_EQUAL(r.peak_allocated, 3 * MiB);
    CU_ASSERT_EQUAL(r.unconstrained_peak, 13 * MiB); /* the baseline fits everything */
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/*
 * Operator durations that add up past the end of simulated time: the clock saturates and an
 * operator's release falls due at SIM_TIME_NEVER. Waiting for it while out of memory spun
 * forever; now the release runs and the allocation is reported out of memory. The replay runs
 * in a child that a 20 s alarm ends, so that a regression fails instead of stalling.
 */
static void test_saturated_clock(void)
{
    static const char *const ov[] = {"hbm=4MiB"};
    static const uint64_t    a[]  = {1};
    mt_replay_report_t       r;
    tb_t                     tb;
    char                     err[256];
    pid_t                    pid;
    int                      st;

    tb_open(&tb);
    tb_alloc(&tb, 1, "A", 3 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_op(&tb, 1, 0, 1ull << 63, NULL, 0, a, 1);
    tb_op(&tb, 2, 0, 1ull << 63, a, 1, NULL, 0); /* ends at SIM_TIME_NEVER */
    tb_alloc(&tb, 2, "B", 2 * MiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_free(&tb, 2);
    tb_free(&tb, 1);
    tb_close(&tb);

    fflush(NULL);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        alarm(20);
        if (replay(tb.path, "lru", ov, 1, false, &r, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "replay: %s\n", err);
            _exit(1);
        }
        _exit(((r.oom_count == 1) && (strcmp(r.ooms[0].key, "B") == 0) &&
               (r.ooms[0].status == MEMSVC_ERR_NO_MEMORY) && (r.total_ns == SIM_TIME_NEVER))
                  ? 0
                  : 2);
    }
    CU_ASSERT_FATAL(waitpid(pid, &st, 0) == pid);
    CU_ASSERT_FALSE(WIFSIGNALED(st)); /* SIGALRM: the replay hung */
    CU_ASSERT_TRUE(WIFEXITED(st) && (WEXITSTATUS(st) == 0));
    unlink(tb.path);
}

/* ---- (e) malformed and foreign inputs, bad options ------------------------------------------- */

static void test_errors(void)
{
    static const char *const bad_key[] = {"hbm_size=4MiB"};
    static const char *const bad_val[] = {"hbm=lots"};
    mt_replay_params_t       p;
    mt_replay_report_t       r;
    tb_t                     tb;
    mt_event_t               e;
    char                     err[256];

    CU_ASSERT_EQUAL(replay("/nonexistent/x.trace", "lru", NULL, 0, true, &r, err, sizeof(err)),
                    MEMSVC_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/x.trace"));
    CU_ASSERT_EQUAL(replay(DATA "chrome_small.json", "lru", NULL, 0, true, &r, err, sizeof(err)),
                    MEMSVC_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a memtrace file"));

    write_swap_trace(&tb);
    CU_ASSERT_EQUAL(replay(tb.path, "fifo", NULL, 0, true, &r, err, sizeof(err)),
                    MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "fifo"));
    CU_ASSERT_EQUAL(replay(tb.path, "lru:evict=all", NULL, 0, true, &r, err, sizeof(err)),
                    MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(replay(tb.path, "lru", bad_key, 1, true, &r, err, sizeof(err)),
                    MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "hbm_size"));
    CU_ASSERT_EQUAL(replay(tb.path, "lru", bad_val, 1, true, &r, err, sizeof(err)),
                    MEMSVC_ERR_PARSE);
    mt_replay_params_init(&p);
    p.node = "h100";
    CU_ASSERT_EQUAL(mt_replay_file(&p, tb.path, &r, err, sizeof(err)), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "h100"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "ascend-910b"));
    unlink(tb.path);

    /* an event on a device the node does not have; an id allocated twice */
    tb_open(&tb);
    memset(&e, 0, sizeof(e));
    e.type   = MT_EV_FREE;
    e.device = 5;
    TEST_ASSERT_OK(mt_writer_put(tb.w, &e));
    tb_close(&tb);
    CU_ASSERT_EQUAL(replay(tb.path, "lru", NULL, 0, true, &r, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "device 5"));
    unlink(tb.path);
    tb_open(&tb);
    tb_alloc(&tb, 1, "A", 1 * KiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_alloc(&tb, 1, "B", 1 * KiB, MEMSVC_KIND_ACTIVATION, 0, NULL, 0);
    tb_close(&tb);
    CU_ASSERT_EQUAL(replay(tb.path, "lru", NULL, 0, true, &r, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "allocated twice"));
    unlink(tb.path);
}

/* ---- (f) determinism: the same trace twice gives the same JSON, wall times aside ------------- */

static char *json_of(const char *path)
{
    mt_replay_report_t r;
    char              *buf = NULL, *line, *save = NULL, *out;
    size_t             len = 0, n = 0;
    FILE              *f;
    char               err[256];

    TEST_ASSERT_OK(replay(path, "lru", NULL, 0, true, &r, err, sizeof(err)));
    f = open_memstream(&buf, &len);
    CU_ASSERT_FATAL(f != NULL);
    mt_replay_print_json(&r, f);
    fclose(f);
    mt_replay_report_free(&r);
    out = calloc(1, len + 1);
    for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, "\"wall_s") == NULL && strstr(line, "\"events_per_s") == NULL) {
            n += (size_t)sprintf(out + n, "%s\n", line);
        }
    }
    free(buf);
    return out;
}

static void test_deterministic(void)
{
    static const char *const ov[] = {"hbm=4MiB"};
    mt_replay_params_t       p;
    mt_replay_report_t       r;
    tb_t                     tb;
    char                    *a, *b;
    char                     err[256];
    char                    *svg = NULL;
    size_t                   len = 0;
    FILE                    *f;

    write_swap_trace(&tb);
    a = json_of(tb.path);
    b = json_of(tb.path);
    CU_ASSERT_STRING_EQUAL(a, b);
    CU_ASSERT_PTR_NOT_NULL(strstr(a, "\"policy_decisions\""));
    free(a);
    free(b);

    /* and the plot: stacked kinds, the capacity line, a stall mark */
    mt_replay_params_init(&p);
    p.overrides     = ov;
    p.num_overrides = 1;
    p.timeline      = true;
    p.baseline      = false;
    TEST_ASSERT_OK(mt_replay_file(&p, tb.path, &r, err, sizeof(err)));
    f = open_memstream(&svg, &len);
    TEST_ASSERT_OK(mt_replay_plot_svg(&r, f));
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "<svg"));
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "HBM capacity 4.0 MiB"));
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "#d62728\"/>\n")); /* a stall tick */
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, "</svg>"));
    free(svg);
    mt_replay_report_free(&r);
    unlink(tb.path);
}

static void tb_alloc_on(tb_t *tb, unsigned device, uint64_t id, const char *key, uint64_t size,
                        int32_t layer)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type       = MT_EV_ALLOC;
    e.device     = device;
    e.tensor     = id;
    e.key        = key;
    e.size       = size;
    e.kind       = MEMSVC_KIND_ACTIVATION;
    e.tags       = MEMSVC_TAGS_NONE;
    e.tags.layer = layer;
    TEST_ASSERT_OK(mt_writer_put(tb->w, &e));
}

static void tb_free_on(tb_t *tb, unsigned device, uint64_t id)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type   = MT_EV_FREE;
    e.device = device;
    e.tensor = id;
    TEST_ASSERT_OK(mt_writer_put(tb->w, &e));
}

/* Each device's peak: its largest live tensors then (not the freed ones); a panel per device. */
static void test_top_and_every_device(void)
{
    mt_replay_params_t p;
    mt_replay_report_t r;
    tb_t               tb;
    char               err[256], *buf = NULL;
    size_t             len = 0;
    FILE              *f;

    tb_open(&tb);
    tb_alloc_on(&tb, 0, 1, "a", 1 * MiB, 0);  /* npu0: 1 */
    tb_alloc_on(&tb, 1, 2, "x", 8 * MiB, -1); /* npu1: 8, its peak */
    tb_alloc_on(&tb, 0, 3, "b", 3 * MiB, 1);  /* npu0: 4 */
    tb_free_on(&tb, 0, 1);                    /* npu0: 3 */
    tb_free_on(&tb, 1, 2);                    /* npu1: 0 */
    tb_alloc_on(&tb, 0, 4, "c", 2 * MiB, 2);  /* npu0: 5, its peak (event 5) */
    tb_alloc_on(&tb, 1, 5, "y", 1 * MiB, -1); /* npu1: 1 */
    tb_free_on(&tb, 0, 3);
    tb_close(&tb);

    mt_replay_params_init(&p);
    p.policy   = "none";
    p.baseline = false;
    p.timeline = true;
    p.top_n    = 10;
    TEST_ASSERT_OK(mt_replay_file(&p, tb.path, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(r.devs[0].live_peak, 5 * MiB);
    CU_ASSERT_EQUAL(r.devs[0].live_peak_event, 5);
    CU_ASSERT_EQUAL(r.devs[0].live_peak_tensors, 2);
    CU_ASSERT_EQUAL_FATAL(r.devs[0].num_top, 2);
    CU_ASSERT_STRING_EQUAL(r.devs[0].top[0].key, "b");
    CU_ASSERT_EQUAL(r.devs[0].top[0].size, 3 * MiB);
    CU_ASSERT_EQUAL(r.devs[0].top[0].layer, 1);
    CU_ASSERT_EQUAL(r.devs[0].top[0].kind, MEMSVC_KIND_ACTIVATION);
    CU_ASSERT_STRING_EQUAL(r.devs[0].top[1].key, "c");
    CU_ASSERT_EQUAL(r.devs[1].live_peak, 8 * MiB);
    CU_ASSERT_EQUAL_FATAL(r.devs[1].num_top, 1);
    CU_ASSERT_STRING_EQUAL(r.devs[1].top[0].key, "x");
    CU_ASSERT_EQUAL(r.busiest, 1);

    f = open_memstream(&buf, &len);
    mt_replay_print_json(&r, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"live_peak\": 5242880, \"live_peak_tensors\": 2, "
                                       "\"live_peak_event\": 5, \"top\": [{\"key\": \"b\", "
                                       "\"rank\": 0, \"kind\": \"activation\", \"layer\": 1, "
                                       "\"size\": 3145728}, {\"key\": \"c\""));
    free(buf);
    buf = NULL;
    f   = open_memstream(&buf, &len);
    mt_replay_print_text(&r, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "5.0 MiB live in 2 tensors at event 5; the largest 2:"));
    free(buf);

    /* the plot: both devices, the busiest marked */
    buf = NULL;
    f   = open_memstream(&buf, &len);
    TEST_ASSERT_OK(mt_replay_plot_svg(&r, f));
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "Device memory of npu0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "Device memory of npu1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "height=\"1040\"")); /* two panels of 520 */
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "(the busiest)"));
    CU_ASSERT_PTR_NULL(strstr(strstr(buf, "(the busiest)") + 1, "(the busiest)")); /* once */
    CU_ASSERT_PTR_NOT_NULL(strstr(strstr(buf, "Device memory of npu1"), "(the busiest)"));
    free(buf);
    mt_replay_report_free(&r);

    /* --top 1, and 0: none */
    p.top_n = 1;
    TEST_ASSERT_OK(mt_replay_file(&p, tb.path, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(r.devs[0].num_top, 1);
    CU_ASSERT_STRING_EQUAL(r.devs[0].top[0].key, "b");
    mt_replay_report_free(&r);
    p.top_n = 0;
    TEST_ASSERT_OK(mt_replay_file(&p, tb.path, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(r.devs[0].num_top, 0);
    CU_ASSERT_EQUAL(r.devs[0].live_peak, 5 * MiB); /* still known */
    mt_replay_report_free(&r);
    unlink(tb.path);
}

/* The plot keeps a bounded number of samples whatever the trace length. */
static void test_plot_bounded(void)
{
    mt_replay_report_t r;
    char              *svg[2];
    size_t             len[2];
    int                round;

    for (round = 0; round < 2; round++) {
        tb_t     tb;
        uint64_t i, n = (round == 0) ? 20000 : 80000;
        char     err[256];
        FILE    *f;

        tb_open(&tb);
        for (i = 0; i < n; i++) {
            uint64_t id = 1 + (i % 8);

            tb_alloc(&tb, id, (i % 8) ? "act" : "w", (1 + i % 5) * KiB,
                     (memsvc_kind_t)(i % MEMSVC_KIND_COUNT), 0, NULL, 0);
            tb_op(&tb, i + 1, 0, 1 * US, &id, 1, NULL, 0);
            tb_free(&tb, id);
        }
        tb_close(&tb);
        {
            mt_replay_params_t p;

            mt_replay_params_init(&p);
            p.timeline = true;
            p.baseline = false;
            TEST_ASSERT_OK(mt_replay_file(&p, tb.path, &r, err, sizeof(err)));
        }
        CU_ASSERT_EQUAL(r.total_ns, n * US);
        f = open_memstream(&svg[round], &len[round]);
        TEST_ASSERT_OK(mt_replay_plot_svg(&r, f));
        fclose(f);
        mt_replay_report_free(&r);
        unlink(tb.path);
    }
    /* 4x the events, about the same picture size (bounded by the sample count) */
    CU_ASSERT(len[1] < len[0] + len[0] / 4);
    CU_ASSERT(len[1] < 1500000);
    free(svg[0]);
    free(svg[1]);
}

/* ---- (g) imported recordings: the unconstrained replay reproduces the recorded peak ---------- */

static void replay_import(mt_import_format_t format, const char *in, mt_replay_report_t *r)
{
    mt_import_opts_t opts;
    char             out[64], err[256];
    int              fd;

    snprintf(out, sizeof(out), "/tmp/test_replay_imp_XXXXXX");
    fd = mkstemp(out);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    mt_import_opts_init(&opts);
    opts.format = format;
    TEST_ASSERT_OK(mt_import(&opts, in, out, NULL, err, sizeof(err)));
    TEST_ASSERT_OK(replay(out, "none", NULL, 0, false, r, err, sizeof(err)));
    unlink(out);
}

static void test_recorded_peak(void)
{
    mt_replay_report_t r;

    replay_import(MT_IMPORT_SNAPSHOT, DATA "snapshot_small.json", &r);
    CU_ASSERT_EQUAL(r.recorded_peak, 5376);
    CU_ASSERT_EQUAL(r.unconstrained_peak, r.recorded_peak);
    CU_ASSERT_EQUAL(r.total_ns, 20 * US); /* follows the recorded times */
    mt_replay_report_free(&r);

    replay_import(MT_IMPORT_DTR, DATA "dtr_small.jsonl", &r);
    CU_ASSERT_EQUAL(r.recorded_peak, 9220);
    CU_ASSERT_EQUAL(r.unconstrained_peak, r.recorded_peak);
    mt_replay_report_free(&r);

    /*
     * Chrome: the recorded peak is the allocator's "Total Allocated"; memory allocated before
     * profiling started is imported as a stand-in block, so the replay reproduces it exactly.
     */
    replay_import(MT_IMPORT_CHROME, DATA "chrome_small.json", &r);
    CU_ASSERT_EQUAL(r.recorded_peak, 12800);
    CU_ASSERT_EQUAL(r.events_peak, 12800);
    CU_ASSERT_EQUAL(r.unconstrained_peak, r.recorded_peak);
    mt_replay_report_free(&r);
}

/* ---- the command line: exit codes, --json, --json-out, --plot, backed memory ----------------- */

/* Run a shell command; its exit status, and its output (stdout and stderr) in out. */
static int run(const char *cmd, char *out, size_t len)
{
    FILE  *p = popen(cmd, "r");
    size_t n = 0, got;
    int    st;
    char   drain[4096];

    CU_ASSERT_FATAL(p != NULL);
    while (n + 1 < len && (got = fread(out + n, 1, len - 1 - n, p)) > 0) {
        n += got;
    }
    out[n] = '\0';
    while (fread(drain, 1, sizeof(drain), p) > 0) { /* the rest: no SIGPIPE for the child */
    }
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void cli_json(const char *trace, const char *mode, json_int_t *step_p, json_int_t *swaps_p)
{
    char         cmd[1024], jpath[64], svg[64], out[16384];
    json_t      *j;
    json_error_t jerr;
    FILE        *f;
    int          fd;

    snprintf(jpath, sizeof(jpath), "/tmp/test_replay_json_XXXXXX");
    snprintf(svg, sizeof(svg), "/tmp/test_replay_svg_XXXXXX");
    CU_ASSERT_FATAL((fd = mkstemp(jpath)) >= 0);
    close(fd);
    CU_ASSERT_FATAL((fd = mkstemp(svg)) >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace replay %s hbm=4MiB --memory %s --json --json-out %s --plot %s --quiet",
             test_bin_dir(), trace, mode, jpath, svg);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    j = json_loads(out, 0, &jerr); /* stdout is the same report */
    CU_ASSERT_PTR_NOT_NULL(j);
    json_decref(j);
    j = json_load_file(jpath, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "memory")), mode);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "policy")), "lru");
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "fits")));
    *step_p  = json_integer_value(json_object_get(j, "step_time_ns"));
    *swaps_p = json_integer_value(json_object_get(json_object_get(j, "policy_decisions"), "swaps"));
    {
        /* the decision log explains the swaps: lru's reason, and as many moves as swaps */
        json_t *log = json_object_get(j, "decision_log");
        json_t *by  = json_object_get(log, "by_reason");

        CU_ASSERT_TRUE(json_is_object(log));
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(log, "policy")), "lru");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(log, "by_action"),
                                                           "swap_out")),
                        *swaps_p);
        CU_ASSERT_TRUE(json_is_array(by) && json_array_size(by) >= 1);
        CU_ASSERT_TRUE(json_array_size(json_object_get(log, "recent")) > 0 || *swaps_p == 0);
    }
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "unconstrained_step_time_ns")),
                    1400 * US);
    json_decref(j);
    f = fopen(svg, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL(fgets(out, sizeof(out), f));
    CU_ASSERT_EQUAL(strncmp(out, "<svg", 4), 0);
    fclose(f);
    unlink(jpath);
    unlink(svg);
}

static void test_cli(void)
{
    json_int_t step_p, swaps_p, step_b, swaps_b;
    char       cmd[1024], out[4096];
    tb_t       tb;

    write_swap_trace(&tb);
    cli_json(tb.path, "phantom", &step_p, &swaps_p);
    cli_json(tb.path, "backed", &step_b, &swaps_b);
    CU_ASSERT_EQUAL(swaps_p, 1);
    CU_ASSERT_EQUAL(step_p, step_b); /* both memory modes run the same code */
    CU_ASSERT_EQUAL(swaps_p, swaps_b);

    snprintf(cmd, sizeof(cmd), "%s/memtrace replay %s --policy fifo 2>&1", test_bin_dir(), tb.path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "unknown policy 'fifo'"));
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay %s --node h100 2>&1", test_bin_dir(), tb.path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "unknown node preset 'h100'"));
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay %s hbm_size=1 2>&1", test_bin_dir(), tb.path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "hbm_size"));
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay %s --memory gpu 2>&1", test_bin_dir(), tb.path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 2);
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay 2>&1", test_bin_dir());
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 2);
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay /nonexistent.trace 2>&1", test_bin_dir());
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent.trace"));
    /* the text report, not on a terminal: no progress bar */
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay %s hbm=4MiB 2>&1", test_bin_dir(), tb.path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "policy decisions  swaps 1, drops 0, prefetches 0"));
    CU_ASSERT_PTR_NULL(strstr(out, "\r"));
    unlink(tb.path);
}

/* Names that come from a trace (model, node, policy) are escaped in the SVG plots. */
static void test_xml_escape(void)
{
    char  *buf = NULL;
    size_t len = 0;
    FILE  *f   = open_memstream(&buf, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    mt_xml_string("<node a=\"1\">&x", f);
    fclose(f);
    CU_ASSERT_STRING_EQUAL(buf, "&lt;node a=&quot;1&quot;&gt;&amp;x");
    free(buf);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("replay", NULL, NULL);

    CU_add_test(s, "names from traces are escaped in SVG", test_xml_escape);
    CU_add_test(s, "unconstrained: no stall, overhead 0, peak by hand", test_unconstrained);
    CU_add_test(s, "swap out and back: stall = transfer - overlapped compute", test_swap_stall);
    CU_add_test(s, "dropped tensor recomputed: step grows by recompute_ns", test_recompute);
    CU_add_test(s, "recompute waits for a swapped input: a stall", test_recompute_input_swapped);
    CU_add_test(s, "recompute inputs that name each other", test_recompute_cycle);
    CU_add_test(s, "out of memory: key and bytes short", test_oom);
    CU_add_test(s, "durations past the end of simulated time: no hang", test_saturated_clock);
    CU_add_test(s, "missing, foreign and malformed inputs; bad options", test_errors);
    CU_add_test(s, "same trace twice: same JSON; the plot", test_deterministic);
    CU_add_test(s, "plot samples bounded", test_plot_bounded);
    CU_add_test(s, "top live tensors at each device's peak; a plot panel per device",
                test_top_and_every_device);
    CU_add_test(s, "imported samples: recorded peak reproduced", test_recorded_peak);
    CU_add_test(s, "command line: exit codes, JSON, plot, backed memory", test_cli);
}

TEST_REGISTER(replay, add_suite)
