/* policy_trace.h - a small two-tensor training step, written as a trace and replayed, for the
 * planning policies' tests */
#ifndef TEST_POLICY_TRACE_H
#define TEST_POLICY_TRACE_H

#include "tools/memtrace/replay.h"
#include "tools/memtrace/trace.h"

#include <stdbool.h>
#include <stdint.h>

#define MiB (1024ull * 1024ull)
#define US  1000ull
#define MS  1000000ull

typedef struct pt_trace {
    mt_writer_t *w;
    char         path[64];
    uint64_t     op;
} pt_trace_t;

void pt_put(pt_trace_t *tb, const mt_event_t *e);
void pt_alloc(pt_trace_t *tb, uint64_t id, const char *key, uint64_t size, memsvc_kind_t kind,
              uint64_t recompute_ns);
void pt_free(pt_trace_t *tb, uint64_t id);
/* An operator on the compute stream reading r (0: none) and writing w (0: none). */
void pt_op(pt_trace_t *tb, uint64_t ns, uint64_t r, uint64_t w);
void pt_hint(pt_trace_t *tb, memsvc_hint_type_t hint, int32_t step);

/*
 * `steps` steps on a 48 MiB device: X (16 MiB, recompute cost x_rc) is written, then a 40 MiB
 * tensor Y is used by five 20 ms operators, freed, and X is read after 20, 20 and 2 ms
 * operators; a 1 MiB workspace W is used by every operator but Y's. X + Y does not fit: X must
 * leave during the middle. The trace is written to tb->path (a temporary file).
 */
void pt_write_x_y(pt_trace_t *tb, int steps, uint64_t x_rc);

/* Replay on the tiny preset with 48 MiB of HBM; slow: host links of 100 MB/s. */
void pt_replay_on(const char *path, const char *policy, bool slow, mt_replay_report_t *rep);
void pt_replay(const char *path, const char *policy, mt_replay_report_t *rep);

#endif /* TEST_POLICY_TRACE_H */
