/* gen_sched.c - the generator's schedule: one step of (interleaved) 1F1B for a stage, with the
 * stage's waits for the other stages (pipeline bubbles) derived from the whole pipeline */
#include "tools/memtrace/gen_int.h"

#include <stdlib.h>
#include <string.h>

/* One chunk execution of a stage's step: forward or backward of (chunk, micro-batch). */
typedef struct sched_item {
    bool     fwd;
    uint32_t chunk, mb;
} sched_item_t;

/* Virtual micro-batch k of the interleaved schedule -> (chunk, micro-batch) (Megatron). */
static void vmb(uint32_t pp, uint32_t vpp, uint32_t k, bool forward, uint32_t *chunk_p,
                uint32_t *mb_p)
{
    uint32_t group = pp * vpp, c = (k % group) / pp;

    *chunk_p = forward ? c : vpp - 1 - c;
    *mb_p    = (k / group) * pp + k % pp;
    if (vpp == 1) {
        *chunk_p = 0;
        *mb_p    = k;
    }
}

/* The stage's chunk executions in order: warm-up forwards, steady 1F1B, cool-down backwards.
 * items has room for 2 * microbatches * vpp; returns how many. */
static uint32_t sched_items(uint32_t pp, uint32_t vpp, uint32_t stage, uint32_t microbatches,
                            sched_item_t *items)
{
    uint32_t total = microbatches * vpp, warm, k, n = 0;

    warm = (vpp == 1) ? pp - stage - 1 : (pp - stage - 1) * 2 + (vpp - 1) * pp;
    warm = (warm > total) ? total : warm;
#define PUT(f, kk)                                                                                 \
    do {                                                                                           \
        items[n].fwd = (f);                                                                        \
        vmb(pp, vpp, (kk), (f), &items[n].chunk, &items[n].mb);                                    \
        n++;                                                                                       \
    } while (0)
    for (k = 0; k < warm; k++) {
        PUT(true, k);
    }
    for (k = 0; k < total - warm; k++) {
        PUT(true, warm + k);
        PUT(false, k);
    }
    for (k = total - warm; k < total; k++) {
        PUT(false, k);
    }
#undef PUT
    return n;
}

/* ---- timing of one stage: a two-stream replay of its step without memory limits -------- */

typedef struct tsink {
    uint64_t *ready; /* by tensor id: when its writer ends */
    uint64_t  cap;
    uint64_t  comp_free, stream_free[8];
    int64_t   cur;                /* chunk execution being timed, -1 before the first */
    uint64_t *begin, *end, *send; /* per chunk execution */
    uint32_t  n;
    uint64_t  opt_begin, total;
    bool      in_opt;
} tsink_t;

static memsvc_status_t tsink_fn(void *arg, const mt_event_t *ev)
{
    tsink_t *t  = arg;
    uint64_t rr = 0, start, end;
    uint32_t i, s;

    if (ev->type == MT_EV_HINT && ev->hint == MEMSVC_HINT_PHASE) {
        if (ev->phase == MEMSVC_PHASE_OPTIMIZER) {
            t->in_opt    = true;
            t->opt_begin = t->comp_free;
        } else if ((ev->phase == MEMSVC_PHASE_FORWARD || ev->phase == MEMSVC_PHASE_BACKWARD) &&
                   t->cur + 1 < (int64_t)t->n) {
            t->cur++;
            t->begin[t->cur] = t->end[t->cur] = t->send[t->cur] = t->comp_free;
        }
        return MEMSVC_OK;
    }
    if (ev->type != MT_EV_COMPUTE) {
        return MEMSVC_OK;
    }
    for (i = 0; i < ev->num_reads; i++) {
        if (ev->reads[i] < t->cap && t->ready[ev->reads[i]] > rr) {
            rr = t->ready[ev->reads[i]];
        }
    }
    s     = (ev->stream < 8) ? ev->stream : 7;
    start = (ev->stream == 0) ? t->comp_free : t->stream_free[s];
    start = (rr > start) ? rr : start;
    start = (t->comp_free > start) ? t->comp_free : start; /* issued in program order */
    end   = start + ev->duration_ns;
    if (ev->stream == 0) {
        t->comp_free = end;
        if (t->cur >= 0 && !t->in_opt) {
            t->end[t->cur] = end;
        }
    } else {
        t->stream_free[s] = end;
        if (t->cur >= 0 && !t->in_opt && !strncmp(ev->name, "pp.send", 7)) {
            t->send[t->cur] = end;
        }
    }
    t->total = (end > t->total) ? end : t->total;
    for (i = 0; i < ev->num_writes; i++) {
        uint64_t id = ev->writes[i];

        if (id >= t->cap) {
            uint64_t  cap = 2 * id + 4096;
            uint64_t *nr  = realloc(t->ready, cap * sizeof(*nr));

            if (nr == NULL) {
                return MEMSVC_ERR_NO_RESOURCE;
            }
            memset(nr + t->cap, 0, (cap - t->cap) * sizeof(*nr));
            t->ready = nr;
            t->cap   = cap;
        }
        t->ready[id] = end;
    }
    return MEMSVC_OK;
}

/* Per stage: chunk durations, send offsets, and the optimizer's time, from a timing run. */
typedef struct stage_time {
    sched_item_t *items;
    uint32_t      n;
    uint64_t     *dur, *send_off, *start, *send_at;
    uint64_t      opt, free_at;
    uint32_t      next;
} stage_time_t;

static memsvc_status_t time_stage(gen_t *g, uint32_t s, stage_time_t *st)
{
    mt_gen_params_t q      = *g->p;
    uint32_t        per    = g->tp * g->cp * g->dp, i;
    tsink_t         t      = {0};
    memsvc_status_t status = MEMSVC_ERR_NO_RESOURCE;

    q.rank           = s * per + g->p->rank % per;
    q.steps          = 1;
    q.pipeline_waits = false;
    t.n              = st->n;
    t.cur            = -1;
    t.begin          = calloc(st->n, sizeof(*t.begin));
    t.end            = calloc(st->n, sizeof(*t.end));
    t.send           = calloc(st->n, sizeof(*t.send));
    if (t.begin == NULL || t.end == NULL || t.send == NULL) {
        goto out;
    }
    status = mt_gen_run(&q, tsink_fn, &t, NULL, 0);
    if (status != MEMSVC_OK) {
        goto out;
    }
    for (i = 0; i < st->n; i++) {
        st->dur[i]      = t.end[i] - t.begin[i];
        st->send_off[i] = (t.send[i] > t.begin[i]) ? t.send[i] - t.begin[i] : st->dur[i];
    }
    st->opt = (t.total > t.opt_begin) ? t.total - t.opt_begin : 0;
out:
    free(t.ready);
    free(t.begin);
    free(t.end);
    free(t.send);
    return status;
}

/* Index of (fwd, chunk, mb) in a stage's items (linear search from a per-stage hint is enough:
 * dependencies are met in order). */
static int64_t find_item(const stage_time_t *st, bool fwd, uint32_t chunk, uint32_t mb)
{
    uint32_t i;

    for (i = 0; i < st->n; i++) {
        if (st->items[i].fwd == fwd && st->items[i].chunk == chunk && st->items[i].mb == mb) {
            return i;
        }
    }
    return -1;
}

memsvc_status_t gen_sched_waits(gen_t *g)
{
    uint32_t        pp = g->pp, V = g->pp * g->vpp, M = g->p->layout.microbatches;
    uint32_t        n = 2 * M * g->vpp, s, i;
    stage_time_t   *st;
    memsvc_status_t status   = MEMSVC_OK;
    uint64_t        step_end = 0;
    bool            progress = true, done = false;

    g->waits = calloc(n, sizeof(*g->waits));
    st       = calloc(pp, sizeof(*st));
    if (g->waits == NULL || st == NULL) {
        free(st);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (s = 0; s < pp && status == MEMSVC_OK; s++) {
        st[s].items    = calloc(n, sizeof(*st[s].items));
        st[s].dur      = calloc(n, sizeof(uint64_t));
        st[s].send_off = calloc(n, sizeof(uint64_t));
        st[s].start    = calloc(n, sizeof(uint64_t));
        st[s].send_at  = calloc(n, sizeof(uint64_t));
        if (!st[s].items || !st[s].dur || !st[s].send_off || !st[s].start || !st[s].send_at) {
            status = MEMSVC_ERR_NO_RESOURCE;
            break;
        }
        st[s].n = sched_items(pp, g->vpp, s, M, st[s].items);
        status  = time_stage(g, s, &st[s]);
    }
    /* play the stages against each other: a forward of virtual stage v needs v-1's forward
     * of the micro-batch sent, a backward needs v+1's backward sent */
    while (status == MEMSVC_OK && progress && !done) {
        progress = false;
        done     = true;
        for (s = 0; s < pp; s++) {
            while (st[s].next < st[s].n) {
                sched_item_t *it     = &st[s].items[st[s].next];
                uint32_t      v      = it->chunk * pp + s, dv;
                uint64_t      arrive = 0, start;
                int64_t       j      = -1;

                if ((it->fwd && v > 0) || (!it->fwd && v < V - 1)) {
                    dv = it->fwd ? v - 1 : v + 1;
                    j  = find_item(&st[dv % pp], it->fwd, dv / pp, it->mb);
                    if (j < 0) {
                        status = MEMSVC_ERR_INVALID_PARAM;
                        break;
                    }
                    if ((uint32_t)j >= st[dv % pp].next) {
                        break; /* not sent yet */
                    }
                    arrive = st[dv % pp].send_at[j];
                }
                i                = st[s].next;
                start            = (arrive > st[s].free_at) ? arrive : st[s].free_at;
                st[s].start[i]   = start;
                st[s].send_at[i] = start + st[s].send_off[i];
                if (s == g->stage) {
                    g->waits[i] = start - st[s].free_at;
                }
                st[s].free_at = start + st[s].dur[i];
                st[s].next++;
                progress = true;
            }
            done = done && st[s].next == st[s].n;
        }
    }
    if (status == MEMSVC_OK && !done) {
        status = MEMSVC_ERR_INVALID_PARAM; /* a dependency cycle: cannot happen with 1F1B */
    }
    if (status == MEMSVC_OK) {
        for (s = 0; s < pp; s++) {
            step_end =
                (st[s].free_at + st[s].opt > step_end) ? st[s].free_at + st[s].opt : step_end;
        }
        /* the step ends for everyone when the slowest stage is done */
        g->wait_end = step_end - (st[g->stage].free_at + st[g->stage].opt);
        g->n_waits  = n;
    }
    for (s = 0; s < pp; s++) {
        free(st[s].items);
        free(st[s].dur);
        free(st[s].send_off);
        free(st[s].start);
        free(st[s].send_at);
    }
    free(st);
    if (status != MEMSVC_OK) {
        free(g->waits);
        g->waits   = NULL;
        g->n_waits = 0;
    }
    return status;
}

/* One step of interleaved 1F1B for this rank's stage: warm-up forwards, steady 1F1B,
 * cool-down backwards, then the optimizer; each chunk after the stage's wait for its input. */
void gen_step(gen_t *g)
{
    uint32_t      M     = g->p->layout.microbatches, n, i;
    sched_item_t *items = calloc(2 * (size_t)M * g->vpp, sizeof(*items));

    if (items == NULL) {
        g->status = MEMSVC_ERR_NO_RESOURCE;
        return;
    }
    n = sched_items(g->pp, g->vpp, g->stage, M, items);
    gen_hint(g, MEMSVC_HINT_STEP_BEGIN, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_NONE);
    if (g->step == 0) {
        gen_alloc_params(g);
    }
    for (i = 0; i < n && g->status == MEMSVC_OK; i++) {
        if (i < g->n_waits) {
            gen_wait(g, g->waits[i]);
        }
        if (items[i].fwd) {
            gen_chunk_fwd(g, items[i].chunk, items[i].mb);
        } else {
            gen_chunk_bwd(g, items[i].chunk, items[i].mb);
        }
    }
    gen_optimizer(g);
    gen_wait(g, g->wait_end);
    gen_hint(g, MEMSVC_HINT_STEP_END, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_NONE);
    free(items);
}
