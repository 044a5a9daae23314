/* policy_trace.c - the planning policies' test step: written as a trace, replayed */
#include "tests/policy_trace.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a small trace: one tensor X idle across a long middle that needs the room -------------- */

void pt_put(pt_trace_t *tb, const mt_event_t *e)
{
    TEST_ASSERT_OK(mt_writer_put(tb->w, e));
}

void pt_alloc(pt_trace_t *tb, uint64_t id, const char *key, uint64_t size,
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
    pt_put(tb, &e);
}

void pt_free(pt_trace_t *tb, uint64_t id)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type   = MT_EV_FREE;
    e.tensor = id;
    pt_put(tb, &e);
}

/* An operator on the compute stream reading r (0: none) and writing w (0: none). */
void pt_op(pt_trace_t *tb, uint64_t ns, uint64_t r, uint64_t w)
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
    pt_put(tb, &e);
}

void pt_hint(pt_trace_t *tb, memsvc_hint_type_t hint, int32_t step)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type       = MT_EV_HINT;
    e.hint       = hint;
    e.step       = step;
    e.layer      = -1;
    e.microbatch = -1;
    pt_put(tb, &e);
}

/*
 * `steps` steps on a 48 MiB device: X (16 MiB, recompute cost x_rc) is written, then a 40 MiB
 * tensor Y is used by five 20 ms operators, freed, and X is read after 20, 20 and 2 ms
 * operators; a 1 MiB workspace W is used by every operator but Y's. Reading X only one short
 * operator ahead, a swap-in on demand cannot hide. X + Y does not fit: X must leave during the
 * middle (about 17 ms each way on the tiny preset's 1 GB/s links, well under the 100 ms it is
 * idle).
 */
void pt_write_x_y(pt_trace_t *tb, int steps, uint64_t x_rc)
{
    mt_header_t h;
    int         fd, s, i;

    snprintf(tb->path, sizeof(tb->path), "/tmp/test_policy_trace_XXXXXX");
    fd = mkstemp(tb->path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(tb->path, &h, &tb->w));
    tb->op = 0;
    for (s = 0; s < steps; s++) {
        uint64_t x = 10 * (uint64_t)s + 1, y = x + 1, w = x + 2;

        pt_hint(tb, MEMSVC_HINT_STEP_BEGIN, s);
        pt_alloc(tb, w, "W", 1 * MiB, MEMSVC_KIND_WORKSPACE, 0);
        pt_alloc(tb, x, "X", 16 * MiB, MEMSVC_KIND_ACTIVATION, x_rc);
        pt_op(tb, 1 * MS, 0, x);
        pt_op(tb, 20 * MS, 0, w);
        pt_op(tb, 20 * MS, w, w);
        pt_alloc(tb, y, "Y", 40 * MiB, MEMSVC_KIND_WORKSPACE, 0);
        for (i = 0; i < 5; i++) {
            pt_op(tb, 20 * MS, y, y);
        }
        pt_free(tb, y);
        pt_op(tb, 20 * MS, w, w);
        pt_op(tb, 20 * MS, w, w);
        pt_op(tb, 2 * MS, w, w);
        pt_op(tb, 1 * MS, x, w);
        pt_free(tb, x);
        pt_free(tb, w);
        pt_hint(tb, MEMSVC_HINT_STEP_END, s);
    }
    TEST_ASSERT_OK(mt_writer_close(tb->w));
}

/* Replay on the tiny preset with 48 MiB of HBM; slow: host links of 100 MB/s. */
void pt_replay_on(const char *path, const char *policy, bool slow, mt_replay_report_t *rep)
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

void pt_replay(const char *path, const char *policy, mt_replay_report_t *rep)
{
    pt_replay_on(path, policy, false, rep);
}
