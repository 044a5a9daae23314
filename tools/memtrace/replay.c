/* replay.c - memtrace replay: a trace's events as engine requests on the virtual clock */
#include "tools/memtrace/replay.h"
#include "policy/policy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- live tensors and what their recomputation needs ----------------------------------- */

#define RP_TF_SKIPPED 0x01u   /* its allocation failed: events naming it are ignored */
#define RP_TF_VISITING 0x02u  /* being recomputed (cycle guard) */
#define RP_TF_WRITTEN 0x04u   /* an operator has written it (recompute makes sense; a later
                                 write is an in-place mutation) */
#define RP_TF_RECOMP 0x08u    /* recomputable: its recipe is kept */
#define RP_TF_FREED 0x10u     /* the program freed it */
#define RP_TF_KEPT 0x20u      /* ... and it is kept for its dependants' recipes */

typedef struct rp_tensor rp_tensor_t;

/*
 * A tensor of the trace. It lives while the program holds it, and after its FREE for as long
 * as a live recomputable tensor's recipe names it (refs > 0): a runtime that recomputes must
 * keep it, resident or itself dropped and recomputable (docs/replay.md, "Recompute").
 */
struct rp_tensor {
    uint64_t      id;
    uint32_t      rank;
    uint8_t       flags; /* RP_TF_* */
    uint8_t       kind;  /* memsvc_kind_t */
    uint16_t      device;
    eng_handle_t  handle; /* ENG_HANDLE_NULL when skipped */
    uint64_t      size;
    sim_time_t    ready_at;   /* written by an operator on another stream that ends then */
    uint64_t      producer;   /* operator id (0: none) */
    uint64_t      op_ns;      /* its producer's cost */
    uint64_t      extra_ns;   /* in-place mutations and views taken of it since, re-run with it */
    rp_tensor_t **inputs;     /* what its recomputation reads (each holds a ref) */
    uint32_t      num_inputs, cap_inputs;
    uint32_t      refs;       /* recipes of other tensors that name it */
    rp_tensor_t **deps;       /* those tensors (for the policy's graph queries) */
    uint32_t      num_deps, cap_deps;
    rp_tensor_t  *sib;        /* ring of the outputs of the same operator (itself if alone) */
    rp_tensor_t  *all_prev, *all_next; /* every tensor held, for the cleanup */
};

/* (rank, id) -> pointer, open addressing sized by its entries. */
typedef struct rp_slot {
    uint64_t id;
    uint32_t rank;
    void    *p; /* NULL: empty */
} rp_slot_t;

typedef struct rp_map {
    rp_slot_t *slots;
    size_t     cap; /* power of two */
    size_t     live;
} rp_map_t;

static inline size_t rp_hash(uint32_t rank, uint64_t id)
{
    uint64_t h = (id ^ ((uint64_t)rank << 40)) * 0x9e3779b97f4a7c15ull;

    return (size_t)(h ^ (h >> 29));
}

static rp_slot_t *rp_map_slot(const rp_map_t *m, uint32_t rank, uint64_t id)
{
    size_t i, mask = m->cap - 1;

    for (i = rp_hash(rank, id) & mask; m->slots[i].p != NULL; i = (i + 1) & mask) {
        if (m->slots[i].id == id && m->slots[i].rank == rank) {
            return &m->slots[i];
        }
    }
    return NULL;
}

static void *rp_map_get(const rp_map_t *m, uint32_t rank, uint64_t id)
{
    rp_slot_t *s = rp_map_slot(m, rank, id);

    return (s != NULL) ? s->p : NULL;
}

static memsvc_status_t rp_map_init(rp_map_t *m, size_t cap)
{
    m->slots = calloc(cap, sizeof(*m->slots));
    m->cap   = cap;
    m->live  = 0;
    return (m->slots == NULL) ? MEMSVC_ERR_NO_RESOURCE : MEMSVC_OK;
}

static memsvc_status_t rp_map_grow(rp_map_t *m)
{
    rp_map_t        bigger;
    size_t          i;
    memsvc_status_t status = rp_map_init(&bigger, m->cap * 2);

    if (status != MEMSVC_OK) {
        return status;
    }
    for (i = 0; i < m->cap; i++) {
        if (m->slots[i].p != NULL) {
            size_t j, mask = bigger.cap - 1;

            for (j = rp_hash(m->slots[i].rank, m->slots[i].id) & mask; bigger.slots[j].p != NULL;
                 j = (j + 1) & mask) {
            }
            bigger.slots[j] = m->slots[i];
        }
    }
    bigger.live = m->live;
    free(m->slots);
    *m = bigger;
    return MEMSVC_OK;
}

/* Map (rank, id), which must not be present, to p (not NULL). */
static memsvc_status_t rp_map_put(rp_map_t *m, uint32_t rank, uint64_t id, void *p)
{
    size_t i, mask;

    if ((m->live + 1) * 2 > m->cap && rp_map_grow(m) != MEMSVC_OK) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    mask = m->cap - 1;
    for (i = rp_hash(rank, id) & mask; m->slots[i].p != NULL; i = (i + 1) & mask) {
    }
    m->slots[i] = (rp_slot_t){.id = id, .rank = rank, .p = p};
    m->live++;
    return MEMSVC_OK;
}

/* Remove (rank, id) if present (backward-shift deletion: no tombstones). */
static void rp_map_del(rp_map_t *m, uint32_t rank, uint64_t id)
{
    rp_slot_t *s    = rp_map_slot(m, rank, id);
    size_t     mask = m->cap - 1;
    size_t     i, j;

    if (s == NULL) {
        return;
    }
    i = j = (size_t)(s - m->slots);
    for (;;) {
        size_t home;

        j = (j + 1) & mask;
        if (m->slots[j].p == NULL) {
            break;
        }
        home = rp_hash(m->slots[j].rank, m->slots[j].id) & mask;
        /* move j back to i unless its home lies cyclically in (i, j] */
        if ((i <= j) ? ((i < home) && (home <= j)) : ((i < home) || (home <= j))) {
            continue;
        }
        m->slots[i] = m->slots[j];
        i           = j;
    }
    memset(&m->slots[i], 0, sizeof(m->slots[i]));
    m->live--;
}

/* Append p to a growing array of pointers. */
static memsvc_status_t rp_push(rp_tensor_t ***a, uint32_t *n, uint32_t *cap, rp_tensor_t *p)
{
    if (*n == *cap) {
        uint32_t      c  = (*cap == 0) ? 4 : 2 * *cap;
        rp_tensor_t **na = realloc(*a, c * sizeof(*na));

        if (na == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        *a   = na;
        *cap = c;
    }
    (*a)[(*n)++] = p;
    return MEMSVC_OK;
}

/* ---- pending releases: unpin an operator's tensors when it ends (a min-heap by time) ------ */

typedef struct rp_release {
    sim_time_t   when;
    uint64_t     seq; /* FIFO among equal times: replays are deterministic */
    eng_handle_t handle;
    uint32_t     device;
} rp_release_t;

typedef struct rp_heap {
    rp_release_t *a;
    size_t        n, cap;
    uint64_t      seq;
} rp_heap_t;

static inline bool rp_rel_before(const rp_release_t *x, const rp_release_t *y)
{
    return (x->when < y->when) || ((x->when == y->when) && (x->seq < y->seq));
}

static memsvc_status_t rp_heap_push(rp_heap_t *h, sim_time_t when, eng_handle_t handle,
                                    uint32_t device)
{
    size_t i;

    if (h->n == h->cap) {
        size_t        cap = (h->cap == 0) ? 256 : h->cap * 2;
        rp_release_t *a   = realloc(h->a, cap * sizeof(*a));

        if (a == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        h->a   = a;
        h->cap = cap;
    }
    i       = h->n++;
    h->a[i] = (rp_release_t){.when = when, .seq = h->seq++, .handle = handle, .device = device};
    while (i > 0 && rp_rel_before(&h->a[i], &h->a[(i - 1) / 2])) {
        rp_release_t tmp  = h->a[i];
        h->a[i]           = h->a[(i - 1) / 2];
        h->a[(i - 1) / 2] = tmp;
        i                 = (i - 1) / 2;
    }
    return MEMSVC_OK;
}

static rp_release_t rp_heap_pop(rp_heap_t *h)
{
    rp_release_t top = h->a[0];
    size_t       i   = 0;

    h->a[0] = h->a[--h->n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;

        if (l < h->n && rp_rel_before(&h->a[l], &h->a[s])) {
            s = l;
        }
        if (r < h->n && rp_rel_before(&h->a[r], &h->a[s])) {
            s = r;
        }
        if (s == i) {
            break;
        }
        rp_release_t tmp = h->a[i];
        h->a[i]          = h->a[s];
        h->a[s]          = tmp;
        i                = s;
    }
    return top;
}

/* ---- the replayer ------------------------------------------------------------------------- */

typedef struct rp_stream {
    uint32_t   device, stream;
    sim_time_t busy_until;
} rp_stream_t;

/* One request waited on: the callback fills it. */
typedef struct rp_wait {
    memsvc_status_t status;
    bool            done;
    int            *pending;
} rp_wait_t;

typedef struct rp {
    eng_t              *eng;
    sim_clock_t        *clock;
    sim_node_t         *node;
    unsigned            num_devices;
    rp_map_t            map;  /* (rank, id) -> rp_tensor_t, the program's live tensors */
    rp_map_t            ops;  /* (rank, producer op) -> an rp_tensor_t of its outputs' ring */
    rp_map_t            byh;  /* (0, engine handle) -> rp_tensor_t, kept freed ones too */
    rp_tensor_t        *all;  /* every tensor held */
    rp_tensor_t       **work; /* rp_tensor_destroy's worklist */
    uint32_t            work_n, work_cap;
    rp_tensor_t       **ids_buf; /* an operator's reads and writes, resolved */
    uint32_t            ids_cap;
    double              thrash_limit; /* stop when recompute > this x compute (0: never) */
    sim_time_t          thrash_base;  /* that compute: the whole trace's (0: so far) */
    uint64_t            kept_dropped[SIM_MAX_NPUS]; /* eager drops of kept tensors, per device */
    sim_time_t          cur_op_ns;    /* duration of the operator being prepared */
    rp_heap_t           rel;
    uint64_t            inflight[SIM_MAX_NPUS];   /* pending releases per device */
    sim_time_t          mem_wait[SIM_MAX_NPUS];   /* memory waits since the device's last op */
    sim_time_t          prev_start[SIM_MAX_NPUS]; /* start of the device's last operator */
    sim_time_t          floor[SIM_MAX_NPUS];      /* no stall is counted before this (barriers) */
    rp_stream_t        *streams;                  /* communication streams */
    size_t              num_streams, cap_streams;
    bool                can_evict;    /* the policy makes room (else: never wait) */
    bool                seen_compute; /* else: follow the recorded times */
    bool                have_t0;
    uint64_t            t0;       /* first recorded time */
    mt_replay_step_t   *cur_step; /* open step, or NULL */
    size_t              cap_steps;
    mt_replay_report_t *rep;
    const mt_event_t   *ev; /* event being replayed (for messages) */
    char               *err;
    size_t              errlen;
    char                keybuf[MEMSVC_KEY_MAX + 1];
} rp_t;

static void rp_errf(rp_t *rp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rp_errf(rp_t *rp, const char *fmt, ...)
{
    va_list ap;
    int     n = snprintf(rp->err, rp->errlen, "event %" PRIu64 ": ", rp->rep->events);

    if (n < 0 || (size_t)n >= rp->errlen) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(rp->err + n, rp->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static inline sim_time_t rp_now(const rp_t *rp)
{
    return sim_clock_now(rp->clock);
}

static void rp_done_cb(void *arg, eng_handle_t handle, memsvc_status_t status)
{
    rp_wait_t *w = arg;

    w->status = status;
    w->done   = true;
    (*w->pending)--;
}

/*
 * Run the one next thing due (a release, else engine completions). false: nothing pending.
 * A release may be due at SIM_TIME_NEVER itself (operator durations saturate the clock).
 */
static bool rp_tick(rp_t *rp)
{
    sim_time_t te = eng_next_event(rp->eng);
    sim_time_t tr = (rp->rel.n > 0) ? rp->rel.a[0].when : SIM_TIME_NEVER;

    if (te == SIM_TIME_NEVER && rp->rel.n == 0) {
        return false;
    }
    if ((rp->rel.n > 0) && (tr <= te)) {
        rp_release_t r = rp_heap_pop(&rp->rel);

        sim_clock_advance_to(rp->clock, r.when);
        rp->inflight[r.device]--;
        eng_release(rp->eng, r.handle); /* NOT_FOUND: freed meanwhile */
        return true;
    }
    sim_clock_advance_to(rp->clock, te);
    eng_progress(rp->eng);
    return true;
}

/* Run everything due up to t, then set the clock to t (if later). */
static void rp_run_until(rp_t *rp, sim_time_t t)
{
    for (;;) {
        sim_time_t te = eng_next_event(rp->eng);
        sim_time_t tr = (rp->rel.n > 0) ? rp->rel.a[0].when : SIM_TIME_NEVER;

        if ((te > t && tr > t) || !rp_tick(rp)) {
            break;
        }
    }
    sim_clock_advance_to(rp->clock, t);
}

/*
 * Wait (in simulated time) until *pending is zero. MEMSVC_ERR_ILLEGAL_STATE if nothing is left
 * to run while requests are still pending (the engine lost them): the replay must stop, since
 * their callbacks point into the caller's frame.
 */
static memsvc_status_t rp_wait(rp_t *rp, int *pending)
{
    while (*pending > 0 && rp_tick(rp)) {
    }
    if (*pending > 0) {
        rp_errf(rp, "%d engine request(s) never completed", *pending);
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    return MEMSVC_OK;
}

/* Wait for one pending release of device dev. false: none is pending, or none came. */
static bool rp_wait_release(rp_t *rp, unsigned dev)
{
    uint64_t before = rp->inflight[dev];

    if (before == 0) {
        return false;
    }
    while (rp->inflight[dev] == before && rp_tick(rp)) {
    }
    return rp->inflight[dev] != before;
}

static inline bool rp_is_oom(memsvc_status_t s)
{
    return s == MEMSVC_ERR_NO_MEMORY || s == MEMSVC_ERR_FRAGMENTED || s == MEMSVC_ERR_TOO_LARGE;
}

static void rp_record_oom(rp_t *rp, const char *key, uint32_t rank, unsigned dev, uint64_t size,
                          memsvc_status_t status)
{
    mt_replay_report_t *rep = rp->rep;
    eng_dev_stats_t     st;

    if (rep->oom_count < MT_REPLAY_OOM_KEEP) {
        mt_replay_oom_t *o = &rep->ooms[rep->oom_count];

        eng_dev_stats(rp->eng, dev, &st);
        snprintf(o->key, sizeof(o->key), "%s", key);
        o->rank        = rank;
        o->device      = dev;
        o->time        = rp_now(rp);
        o->size        = size;
        o->short_bytes = (size > st.alloc.largest_free) ? size - st.alloc.largest_free : 0;
        o->status      = status;
    }
    rep->oom_count++;
    rep->devs[dev].ooms++;
}

/* The trace's live bytes on a device (what the program holds there): their peak, and the
 * event after which it was reached, for mt_replay_top. Called before report->events counts
 * the event. */
static void rp_live_account(mt_replay_report_t *rep, uint64_t *live, uint64_t *count, unsigned dev,
                            uint64_t bytes, bool alloc)
{
    mt_replay_dev_t *rd = &rep->devs[dev];

    if (!alloc) {
        live[dev] -= (bytes <= live[dev]) ? bytes : live[dev];
        count[dev] -= (count[dev] > 0);
        return;
    }
    live[dev] += bytes;
    count[dev]++;
    if (live[dev] > rd->live_peak) {
        rd->live_peak         = live[dev];
        rd->live_peak_event   = rep->events;
        rd->live_peak_tensors = count[dev];
    }
}

static void rp_sample(rp_t *rp, unsigned dev)
{
    eng_dev_stats_t st;

    if (rp->rep->timeline == NULL) {
        return;
    }
    eng_dev_stats(rp->eng, dev, &st);
    mt_timeline_sample(rp->rep->timeline, dev, rp_now(rp), st.resident_by_kind);
}

/* ---- requests ----------------------------------------------------------------------------- */

/* Allocate a new tensor (unpinned), waiting for room; out of memory marks it skipped. */
static memsvc_status_t rp_alloc(rp_t *rp, const mt_event_t *ev, rp_tensor_t *t)
{
    eng_tensor_desc_t d;
    memsvc_status_t   status;
    sim_time_t        start = rp_now(rp);
    int               pending;
    rp_wait_t         w;
    bool              renamed = false;

    memset(&d, 0, sizeof(d));
    d.key          = ev->key;
    d.size         = ev->size;
    d.kind         = ev->kind;
    d.device       = ev->device;
    d.tags         = ev->tags;
    d.recomputable = ev->recomputable;
    d.recompute_ns = ev->recompute_ns;
    d.durable      = ev->durable;
    d.job          = 1 + ev->rank;
    d.rank         = ev->rank;
    if (d.key == NULL || d.key[0] == '\0') {
        snprintf(rp->keybuf, sizeof(rp->keybuf), "t%" PRIu64, ev->tensor);
        d.key = rp->keybuf;
    }
    for (;;) {
        pending = 0;
        w       = (rp_wait_t){.pending = &pending};
        status  = eng_alloc(rp->eng, &d, 0, rp_done_cb, &w, &t->handle);
        if (status == MEMSVC_INPROGRESS) {
            pending = 1;
            if (rp_wait(rp, &pending) != MEMSVC_OK) {
                return MEMSVC_ERR_ILLEGAL_STATE;
            }
            status = w.status;
        }
        if (status == MEMSVC_ERR_EXISTS && !renamed) {
            /* the key is live twice in the job: keep them apart */
            snprintf(rp->keybuf, sizeof(rp->keybuf), "%.200s~%" PRIu64, ev->key, ev->tensor);
            d.key   = rp->keybuf;
            renamed = true;
            rp->rep->renamed_keys++;
            continue;
        }
        if (rp_is_oom(status) && status != MEMSVC_ERR_TOO_LARGE && rp->can_evict &&
            rp_wait_release(rp, ev->device)) {
            continue; /* the running operators hold pins: retry when one ends */
        }
        break;
    }
    rp->mem_wait[ev->device] += rp_now(rp) - start;
    if (status == MEMSVC_OK) {
        return MEMSVC_OK;
    }
    t->handle = ENG_HANDLE_NULL;
    t->flags |= RP_TF_SKIPPED;
    if (rp_is_oom(status)) {
        rp_record_oom(rp, d.key, ev->rank, ev->device, ev->size, status);
        return MEMSVC_OK;
    }
    rp_errf(rp, "cannot allocate '%s' (%" PRIu64 " bytes): %s", d.key, ev->size,
            memsvc_strerror(status));
    return status;
}

/* The operator (or recompute) on dev holding held[0..n) ends at end: release them then. */
static memsvc_status_t rp_release_at(rp_t *rp, sim_time_t end, const eng_handle_t *held, uint32_t n,
                                     unsigned dev)
{
    uint32_t i;

    for (i = 0; i < n; i++) {
        if (rp_heap_push(&rp->rel, end, held[i], dev) != MEMSVC_OK) {
            rp_errf(rp, "out of memory");
            return MEMSVC_ERR_NO_RESOURCE;
        }
        rp->inflight[dev]++;
    }
    return MEMSVC_OK;
}

/* ---- tensors: lifetime, recipes, the graph lent to the policy ------------------------------ */

/* Remove the first occurrence of p from a[0..*n) (order does not matter). */
static void rp_remove_ptr(rp_tensor_t **a, uint32_t *n, const rp_tensor_t *p)
{
    uint32_t i;

    for (i = 0; i < *n; i++) {
        if (a[i] == p) {
            a[i] = a[--*n];
            return;
        }
    }
}

/* in joins t's recipe (once); t becomes one of in's dependants. */
static memsvc_status_t rp_add_input(rp_t *rp, rp_tensor_t *t, rp_tensor_t *in)
{
    uint32_t i;

    if (in == t) {
        return MEMSVC_OK;
    }
    for (i = 0; i < t->num_inputs; i++) {
        if (t->inputs[i] == in) {
            return MEMSVC_OK;
        }
    }
    if (rp_push(&t->inputs, &t->num_inputs, &t->cap_inputs, in) != MEMSVC_OK ||
        rp_push(&in->deps, &in->num_deps, &in->cap_deps, t) != MEMSVC_OK) {
        rp_errf(rp, "out of memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    in->refs++;
    return MEMSVC_OK;
}

/* Take t out of its operator's ring of outputs. */
static void rp_sib_unlink(rp_t *rp, rp_tensor_t *t)
{
    rp_slot_t   *s = (t->producer != 0) ? rp_map_slot(&rp->ops, t->rank, t->producer) : NULL;
    rp_tensor_t *p;

    if (t->sib != t) {
        for (p = t->sib; p->sib != t; p = p->sib) {
        }
        p->sib = t->sib;
        if (s != NULL && s->p == t) {
            s->p = t->sib;
        }
    } else if (s != NULL && s->p == t) {
        rp_map_del(&rp->ops, t->rank, t->producer);
    }
    t->sib = t;
}

/*
 * End t for good: its engine tensor, its place in the graph. Inputs that the program freed
 * and that no other recipe names end with it (a worklist: chains of kept tensors can be long).
 */
static void rp_tensor_destroy(rp_t *rp, rp_tensor_t *t)
{
    rp->work_n = 0;
    for (;;) {
        uint32_t i;

        if (t->handle != ENG_HANDLE_NULL) {
            eng_free(rp->eng, t->handle);
            rp_map_del(&rp->byh, 0, t->handle);
            if (t->flags & RP_TF_KEPT) {
                rp->rep->kept_freed_live--;
            }
        }
        rp_sib_unlink(rp, t);
        for (i = 0; i < t->num_deps; i++) { /* recipes that named t lose it */
            rp_remove_ptr(t->deps[i]->inputs, &t->deps[i]->num_inputs, t);
        }
        for (i = 0; i < t->num_inputs; i++) {
            rp_tensor_t *in = t->inputs[i];

            rp_remove_ptr(in->deps, &in->num_deps, t);
            if (--in->refs == 0 && (in->flags & RP_TF_FREED) &&
                rp_push(&rp->work, &rp->work_n, &rp->work_cap, in) != MEMSVC_OK) {
                in->refs = 1; /* no memory for the worklist: it stays until the end */
            }
        }
        if (t->all_prev != NULL) {
            t->all_prev->all_next = t->all_next;
        } else {
            rp->all = t->all_next;
        }
        if (t->all_next != NULL) {
            t->all_next->all_prev = t->all_prev;
        }
        free(t->inputs);
        free(t->deps);
        free(t);
        if (rp->work_n == 0) {
            return;
        }
        t = rp->work[--rp->work_n];
    }
}

/* The policy's graph query (pol_graph_ops_t): neighbours of a tensor the engine holds. */
static void rp_graph_neighbours(void *owner, uint64_t handle, pol_nb_dir_t dir,
                                void (*fn)(void *arg, uint64_t handle), void *arg)
{
    rp_t        *rp = owner;
    rp_tensor_t *t  = rp_map_get(&rp->byh, 0, handle);
    rp_tensor_t **a;
    uint32_t     i, n;

    if (t == NULL) {
        return;
    }
    a = (dir == POL_NB_INPUTS) ? t->inputs : t->deps;
    n = (dir == POL_NB_INPUTS) ? t->num_inputs : t->num_deps;
    for (i = 0; i < n; i++) {
        if (a[i]->handle != ENG_HANDLE_NULL) {
            fn(arg, a[i]->handle);
        }
    }
}

static const pol_graph_ops_t rp_graph_ops = {.neighbours = rp_graph_neighbours};

/* ---- acquiring, recomputing ------------------------------------------------------------- */

static memsvc_status_t rp_acquire_set(rp_t *rp, rp_tensor_t *const *ts, uint32_t n,
                                      unsigned depth, sim_time_t *ready_p, uint32_t *held_p,
                                      eng_handle_t *held);

/* Start acquiring ts[0..n) (none NULL): w[i] gets each answer, *pending counts those queued. */
static void rp_pin_start(rp_t *rp, rp_tensor_t *const *ts, uint32_t n, rp_wait_t *w, int *pending)
{
    uint32_t i;

    for (i = 0; i < n; i++) {
        w[i]        = (rp_wait_t){.pending = pending};
        w[i].status = eng_acquire(rp->eng, ts[i]->handle, rp_done_cb, &w[i]);
        if (w[i].status == MEMSVC_INPROGRESS) {
            (*pending)++;
        } else {
            w[i].done = true;
        }
    }
}

/*
 * Wait for the acquires rp_pin_start began: st[i] gets each final status, retried while out of
 * memory and operators in flight hold pins that will go.
 */
static memsvc_status_t rp_pin_finish(rp_t *rp, rp_tensor_t *const *ts, uint32_t n, rp_wait_t *w,
                                     int *pending, memsvc_status_t *st)
{
    memsvc_status_t status = rp_wait(rp, pending);
    uint32_t        i;

    for (i = 0; i < n && status == MEMSVC_OK; i++) {
        /* out of memory while operators hold pins: retry as they end */
        while (rp_is_oom(w[i].status) && rp->can_evict && rp_wait_release(rp, ts[i]->device)) {
            int one = 0;

            w[i]        = (rp_wait_t){.pending = &one};
            w[i].status = eng_acquire(rp->eng, ts[i]->handle, rp_done_cb, &w[i]);
            if (w[i].status == MEMSVC_INPROGRESS) {
                one = 1;
                if (rp_wait(rp, &one) != MEMSVC_OK) {
                    status = MEMSVC_ERR_ILLEGAL_STATE;
                    break;
                }
            }
        }
        st[i] = w[i].status;
    }
    return status;
}

/* Acquire ts[0..n) (none NULL) at once and wait for all (rp_pin_start, rp_pin_finish). */
static memsvc_status_t rp_pin_all(rp_t *rp, rp_tensor_t *const *ts, uint32_t n,
                                  memsvc_status_t *st)
{
    rp_wait_t       stackbuf[16];
    rp_wait_t      *w       = stackbuf;
    int             pending = 0;
    memsvc_status_t status;

    if (n > 16) {
        w = malloc(n * sizeof(*w));
        if (w == NULL) {
            rp_errf(rp, "out of memory");
            return MEMSVC_ERR_NO_RESOURCE;
        }
    }
    rp_pin_start(rp, ts, n, w, &pending);
    status = rp_pin_finish(rp, ts, n, w, &pending, st);
    if (w != stackbuf) {
        free(w);
    }
    return status;
}

/* An acquire of t failed for lack of memory: record it, skip t from now on. */
static void rp_acquire_oom(rp_t *rp, rp_tensor_t *t, memsvc_status_t status)
{
    eng_tensor_info_t info;

    if (eng_info(rp->eng, t->handle, &info) != MEMSVC_OK) {
        info.key = "?";
    }
    rp_record_oom(rp, info.key, t->rank, t->device, t->size, status);
    t->flags |= RP_TF_SKIPPED;
}

/* Is t dropped (and so to be recomputed before anyone reads it)? */
static bool rp_dropped(rp_t *rp, const rp_tensor_t *t)
{
    eng_tensor_info_t info;

    return (t->flags & RP_TF_WRITTEN) && eng_info(rp->eng, t->handle, &info) == MEMSVC_OK &&
           info.state == MEMSVC_STATE_DROPPED;
}

/* Recomputation of `cost` ns on dev's compute stream, for `count` tensors; returns its end. */
static sim_time_t rp_charge_recompute(rp_t *rp, unsigned dev, uint64_t cost, uint32_t count)
{
    mt_replay_report_t *rep = rp->rep;
    sim_time_t          end = eng_charge_compute(rp->eng, dev, cost, true);

    rep->recompute_ns += cost;
    rep->recomputes += count;
    rep->devs[dev].recompute_ns += cost;
    rep->devs[dev].recomputes += count;
    if (rp->cur_step != NULL) {
        rp->cur_step->recompute_ns += cost;
    }
    if (rp->thrash_limit > 0.0 && !rp->rep->thrashed &&
        (double)rep->recompute_ns >
            rp->thrash_limit * (double)(rp->thrash_base > 0 ? rp->thrash_base
                                                            : rep->compute_ns + rp->cur_op_ns)) {
        rep->thrashed = true;
    }
    return end;
}

/*
 * Recompute dropped t as a runtime does (docs/replay.md, "Recompute"): its operator's inputs
 * first, made resident and pinned (recursively recomputing dropped ones), then room for t
 * and every other dropped output of its operator, all computed together for the operator's
 * cost plus the re-run mutations and views of each; the inputs are released as soon as that
 * is done (the clock moves to its end), before the level above takes its room. On success t
 * is pinned and *pinned_p is true; out of memory skips it (recorded).
 */
static memsvc_status_t rp_materialize(rp_t *rp, rp_tensor_t *t, unsigned depth, bool have_room,
                                      bool *pinned_p)
{
    rp_tensor_t    *gbuf[8], **group = gbuf, *s, *ibuf[8];
    rp_tensor_t   **ins   = ibuf;
    eng_handle_t    hbuf[8], *held = hbuf;
    memsvc_status_t gst[8], *st = gst;
    uint32_t        ng = 0, nin = 0, capin = 8, nheld = 0, i, j, count = 0;
    uint64_t        cost  = t->op_ns;
    sim_time_t      ready = 0, end;
    memsvc_status_t status = MEMSVC_OK;
    unsigned        dev    = t->device;

    *pinned_p = false;
    /* the outputs of the operator that come back with t */
    for (s = t, ng = 0;; s = s->sib) {
        if (s == t || (!(s->flags & (RP_TF_SKIPPED | RP_TF_VISITING)) && rp_dropped(rp, s))) {
            ng++;
        }
        if (s->sib == t) {
            break;
        }
    }
    if (ng > 8) {
        group = malloc(ng * sizeof(*group));
        st    = malloc(ng * sizeof(*st));
        if (group == NULL || st == NULL) {
            status = MEMSVC_ERR_NO_RESOURCE;
            goto out;
        }
    }
    for (s = t, ng = 0;; s = s->sib) {
        if (s == t || (!(s->flags & (RP_TF_SKIPPED | RP_TF_VISITING)) && rp_dropped(rp, s))) {
            group[ng++] = s;
            s->flags |= RP_TF_VISITING;
        }
        if (s->sib == t) {
            break;
        }
    }
    /* their inputs, made resident first */
    for (i = 0; i < ng; i++) {
        for (j = 0; j < group[i]->num_inputs; j++) {
            rp_tensor_t *in = group[i]->inputs[j];
            uint32_t     k;

            if (in->flags & RP_TF_VISITING) {
                continue; /* a member of the group, or a cycle */
            }
            for (k = 0; k < nin && ins[k] != in; k++) {
            }
            if (k < nin) {
                continue;
            }
            if (nin == capin) { /* past the stack buffer */
                rp_tensor_t **a = malloc(2 * capin * sizeof(*a));

                if (a == NULL) {
                    status = MEMSVC_ERR_NO_RESOURCE;
                    goto out_unmark;
                }
                memcpy(a, ins, nin * sizeof(*a));
                if (ins != ibuf) {
                    free(ins);
                }
                ins   = a;
                capin = 2 * capin;
            }
            ins[nin++] = in;
        }
    }
    if (nin > 0 && depth < MT_REPLAY_DEPTH_MAX) {
        if (nin > 8) {
            held = malloc(nin * sizeof(*held));
            if (held == NULL) {
                status = MEMSVC_ERR_NO_RESOURCE;
                goto out_unmark;
            }
        }
        status = rp_acquire_set(rp, ins, nin, depth + 1, &ready, &nheld, held);
        if (status != MEMSVC_OK) {
            goto out_unmark;
        }
    }
    /* then room for the outputs (a member may have come back meanwhile: then it is resident) */
    if (have_room) {
        st[0]  = MEMSVC_RECOMPUTE; /* t's room is taken and pinned already */
        status = rp_pin_all(rp, group + 1, ng - 1, st + 1);
    } else {
        status = rp_pin_all(rp, group, ng, st);
    }
    if (status != MEMSVC_OK) {
        goto out_unmark;
    }
    for (i = 0; i < ng; i++) {
        if (st[i] == MEMSVC_RECOMPUTE) {
            count++;
            cost += group[i]->extra_ns;
        } else if (rp_is_oom(st[i])) {
            rp_acquire_oom(rp, group[i], st[i]);
        } else if (st[i] != MEMSVC_OK) {
            rp_errf(rp, "acquire of tensor %" PRIu64 " failed: %s", group[i]->id,
                    memsvc_strerror(st[i]));
            status = st[i];
        }
    }
    end = rp_now(rp);
    if (count > 0) {
        end = rp_charge_recompute(rp, dev, cost, count);
    }
    for (i = 0; i < ng && status == MEMSVC_OK; i++) {
        if (st[i] == MEMSVC_OK || st[i] == MEMSVC_RECOMPUTE) {
            if (i == 0) {
                *pinned_p = true; /* the caller's */
            } else {
                status = rp_release_at(rp, end, &group[i]->handle, 1, dev);
            }
        }
    }
    if (status == MEMSVC_OK) {
        status = rp_release_at(rp, end, held, nheld, dev);
    }
    if (status == MEMSVC_OK && depth > 0) {
        /* a level of a chain: done, its inputs released, before the level above takes its
         * room (the operator itself keeps its one operator of look-ahead) */
        rp_run_until(rp, end);
    }
out_unmark:
    for (i = 0; i < ng; i++) {
        group[i]->flags &= (uint8_t)~RP_TF_VISITING;
    }
out:
    if (status == MEMSVC_ERR_NO_RESOURCE) {
        rp_errf(rp, "out of memory");
    }
    if (group != gbuf) {
        free(group);
    }
    if (st != gst) {
        free(st);
    }
    if (ins != ibuf) {
        free(ins);
    }
    if (held != hbuf) {
        free(held);
    }
    return status;
}

/*
 * Acquire ts[0..n) (NULL, skipped and unknown ones are counted and ignored), wait until all are
 * resident; dropped ones are recomputed (rp_materialize), after the others are pinned. Their
 * handles go to held (room for n), their count to *held_p; *ready_p is the latest ready_at
 * among them.
 */
static memsvc_status_t rp_acquire_set(rp_t *rp, rp_tensor_t *const *ts, uint32_t n,
                                      unsigned depth, sim_time_t *ready_p, uint32_t *held_p,
                                      eng_handle_t *held)
{
    rp_tensor_t    *pbuf[16] = {NULL}, **plain = pbuf, *lbuf[16] = {NULL}, **later = lbuf;
    memsvc_status_t sbuf[16], *st = sbuf;
    rp_wait_t       wbuf[16], *w = wbuf;
    uint32_t        i, np = 0, nl = 0, nheld = 0;
    int             pending = 0;
    sim_time_t      ready   = 0;
    memsvc_status_t status  = MEMSVC_OK, st2;

    if (n > 16) {
        plain = malloc(n * sizeof(*plain));
        st    = malloc(n * sizeof(*st));
        w     = malloc(n * sizeof(*w));
        later = malloc(n * sizeof(*later));
        if (plain == NULL || st == NULL || w == NULL || later == NULL) {
            status = MEMSVC_ERR_NO_RESOURCE;
            goto out;
        }
    }
    for (i = 0; i < n; i++) {
        rp_tensor_t *t = ts[i];

        if (t == NULL || (t->flags & (RP_TF_SKIPPED | RP_TF_VISITING))) {
            rp->rep->ignored_refs++;
            continue;
        }
        if (t->ready_at > ready) {
            ready = t->ready_at;
        }
        if (rp_dropped(rp, t)) {
            later[nl++] = t;
        } else {
            plain[np++] = t;
        }
    }
    /* the resident and swapped ones start coming now; the dropped ones are recomputed
     * meanwhile, each with its own inputs first; then the others are waited for */
    rp_pin_start(rp, plain, np, w, &pending);
    for (i = 0; i < nl && status == MEMSVC_OK; i++) {
        rp_tensor_t *t      = later[i];
        bool         pinned = false;

        if (t->flags & RP_TF_SKIPPED) {
            continue;
        }
        status = rp_materialize(rp, t, depth, false, &pinned);
        if (pinned) {
            held[nheld++] = t->handle;
        }
    }
    st2 = rp_pin_finish(rp, plain, np, w, &pending, st);
    if (status == MEMSVC_OK) {
        status = st2;
    }
    for (i = 0; i < np && status == MEMSVC_OK; i++) {
        rp_tensor_t *t = plain[i];

        if (st[i] == MEMSVC_OK) {
            held[nheld++] = t->handle;
        } else if (st[i] == MEMSVC_RECOMPUTE) {
            /* dropped while the others were waited for: its room is taken already */
            bool pinned;

            held[nheld++] = t->handle;
            if (t->flags & RP_TF_WRITTEN) {
                status = rp_materialize(rp, t, depth, true, &pinned);
            }
        } else if (rp_is_oom(st[i])) {
            rp_acquire_oom(rp, t, st[i]);
        } else {
            rp_errf(rp, "acquire of tensor %" PRIu64 " failed: %s", t->id,
                    memsvc_strerror(st[i]));
            status = st[i];
        }
    }
out:
    if (status == MEMSVC_ERR_NO_RESOURCE) {
        rp_errf(rp, "out of memory");
    }
    if (plain != pbuf) {
        free(plain);
    }
    if (st != sbuf) {
        free(st);
    }
    if (w != wbuf) {
        free(w);
    }
    if (later != lbuf) {
        free(later);
    }
    *held_p  = nheld;
    *ready_p = ready;
    return status;
}

/* Resolve ids of the rank's live tensors (NULL for unknown ones) into rp->ids_buf. */
static rp_tensor_t **rp_resolve(rp_t *rp, uint32_t rank, const uint64_t *ids, uint32_t n,
                                uint32_t at)
{
    uint32_t i;

    if (rp->ids_buf == NULL || at + n > rp->ids_cap) {
        uint32_t      cap = (at + n) * 2 + 16;
        rp_tensor_t **a   = realloc(rp->ids_buf, cap * sizeof(*a));

        if (a == NULL) {
            return NULL;
        }
        rp->ids_buf = a;
        rp->ids_cap = cap;
    }
    for (i = 0; i < n; i++) {
        rp->ids_buf[at + i] = rp_map_get(&rp->map, rank, ids[i]);
    }
    return rp->ids_buf + at;
}

/* ---- events ------------------------------------------------------------------------------- */

static memsvc_status_t rp_ev_alloc(rp_t *rp, const mt_event_t *ev)
{
    rp_tensor_t    *t = rp_map_get(&rp->map, ev->rank, ev->tensor);
    memsvc_status_t status;
    uint32_t        i;

    if (t != NULL) {
        rp_errf(rp, "tensor %" PRIu64 " of rank %" PRIu32 " allocated twice", ev->tensor, ev->rank);
        return MEMSVC_ERR_FORMAT;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL || rp_map_put(&rp->map, ev->rank, ev->tensor, t) != MEMSVC_OK) {
        free(t);
        rp_errf(rp, "out of memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    t->id       = ev->tensor;
    t->rank     = ev->rank;
    t->device   = (uint16_t)ev->device;
    t->kind     = (uint8_t)ev->kind;
    t->size     = ev->size;
    t->producer = ev->producer;
    t->op_ns    = ev->recompute_ns;
    t->sib      = t;
    t->all_next = rp->all;
    if (rp->all != NULL) {
        rp->all->all_prev = t;
    }
    rp->all = t;
    if (ev->recomputable && !ev->durable) {
        t->flags |= RP_TF_RECOMP;
        for (i = 0; i < ev->num_inputs; i++) {
            rp_tensor_t *in = rp_map_get(&rp->map, ev->rank, ev->inputs[i]);

            if (in != NULL && (status = rp_add_input(rp, t, in)) != MEMSVC_OK) {
                return status;
            }
        }
    }
    if (ev->producer != 0) {
        rp_tensor_t *s = rp_map_get(&rp->ops, ev->rank, ev->producer);

        if (s != NULL) {
            t->sib = s->sib;
            s->sib = t;
        } else if (rp_map_put(&rp->ops, ev->rank, ev->producer, t) != MEMSVC_OK) {
            rp_errf(rp, "out of memory");
            return MEMSVC_ERR_NO_RESOURCE;
        }
    }
    if (ev->size == 0) {
        t->flags |= RP_TF_SKIPPED; /* nothing to place */
        return MEMSVC_OK;
    }
    status = rp_alloc(rp, ev, t);
    if (status == MEMSVC_OK && t->handle != ENG_HANDLE_NULL &&
        rp_map_put(&rp->byh, 0, t->handle, t) != MEMSVC_OK) {
        rp_errf(rp, "out of memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    return status;
}

/*
 * The program frees a tensor. If a live recomputable tensor's recipe names it, a runtime that
 * recomputes keeps it: it is dropped at once when it can be recomputed itself (DTR's eager
 * eviction), else it stays where it is (memory charged) until the last such recipe goes.
 */
static memsvc_status_t rp_ev_free(rp_t *rp, const mt_event_t *ev)
{
    rp_tensor_t *t = rp_map_get(&rp->map, ev->rank, ev->tensor);

    if (t == NULL) {
        rp->rep->ignored_refs++;
        return MEMSVC_OK;
    }
    rp_map_del(&rp->map, ev->rank, ev->tensor);
    t->flags |= RP_TF_FREED;
    if (t->refs > 0 && rp->can_evict && t->handle != ENG_HANDLE_NULL &&
        !(t->flags & RP_TF_SKIPPED)) {
        t->flags |= RP_TF_KEPT;
        rp->rep->kept_freed++;
        if (++rp->rep->kept_freed_live > rp->rep->kept_freed_peak) {
            rp->rep->kept_freed_peak = rp->rep->kept_freed_live;
        }
        if ((t->flags & (RP_TF_RECOMP | RP_TF_WRITTEN)) == (RP_TF_RECOMP | RP_TF_WRITTEN) &&
            eng_drop(rp->eng, t->handle) == MEMSVC_OK) { /* pinned: stays resident */
            rp->rep->kept_dropped++;
            rp->kept_dropped[t->device]++;
        }
        return MEMSVC_OK;
    }
    rp_tensor_destroy(rp, t);
    return MEMSVC_OK;
}

static memsvc_status_t rp_ev_access(rp_t *rp, const mt_event_t *ev)
{
    eng_handle_t    h;
    uint32_t        nheld;
    sim_time_t      ready, start = rp_now(rp);
    rp_tensor_t    *t = rp_map_get(&rp->map, ev->rank, ev->tensor);
    memsvc_status_t status;

    status = rp_acquire_set(rp, &t, 1, 0, &ready, &nheld, &h);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (nheld > 0) {
        if (ev->write) {
            t->flags |= RP_TF_WRITTEN;
        }
        eng_release(rp->eng, h);
    }
    if (rp->seen_compute) {
        rp->mem_wait[ev->device] += rp_now(rp) - start;
    } else if (rp_now(rp) > start) { /* no operators: a wait delays the recorded timeline */
        rp->rep->stall_ns += rp_now(rp) - start;
        rp->rep->devs[ev->device].stall_ns += rp_now(rp) - start;
        rp->rep->stalls++;
    }
    return MEMSVC_OK;
}

static rp_stream_t *rp_stream(rp_t *rp, uint32_t device, uint32_t stream)
{
    size_t i;

    for (i = 0; i < rp->num_streams; i++) {
        if (rp->streams[i].device == device && rp->streams[i].stream == stream) {
            return &rp->streams[i];
        }
    }
    if (rp->num_streams == rp->cap_streams) {
        size_t       cap = (rp->cap_streams == 0) ? 8 : rp->cap_streams * 2;
        rp_stream_t *s   = realloc(rp->streams, cap * sizeof(*s));

        if (s == NULL) {
            return NULL;
        }
        rp->streams     = s;
        rp->cap_streams = cap;
    }
    rp->streams[rp->num_streams] = (rp_stream_t){.device = device, .stream = stream};
    return &rp->streams[rp->num_streams++];
}

/*
 * What an operator adds to the recipes of the tensors it touches: one that writes a
 * recomputable tensor already written mutates it in place, so recomputing that tensor re-runs
 * its producer and then this operator (its cost, its other reads as inputs); one whose
 * results are views of a recomputable tensor is re-run when that tensor is (its cost).
 */
static memsvc_status_t rp_record_recipes(rp_t *rp, const mt_event_t *ev, rp_tensor_t *const *tr,
                                         rp_tensor_t *const *tw)
{
    memsvc_status_t status;
    uint32_t        i, j;

    if (ev->stream != 0) {
        return MEMSVC_OK; /* communication: no recipe of ours */
    }
    for (i = 0; i < ev->num_writes; i++) {
        rp_tensor_t *t = tw[i];

        if (t == NULL || (t->flags & (RP_TF_RECOMP | RP_TF_WRITTEN)) !=
                             (RP_TF_RECOMP | RP_TF_WRITTEN)) {
            continue;
        }
        t->extra_ns += ev->duration_ns;
        for (j = 0; j < ev->num_reads; j++) {
            if (tr[j] != NULL && (status = rp_add_input(rp, t, tr[j])) != MEMSVC_OK) {
                return status;
            }
        }
        if (t->handle != ENG_HANDLE_NULL) {
            eng_set_recompute_ns(rp->eng, t->handle, t->op_ns + t->extra_ns);
        }
    }
    for (i = 0; i < ev->num_aliases; i++) {
        rp_tensor_t *t = rp_map_get(&rp->map, ev->rank, ev->aliases[i]);

        if (t == NULL || !(t->flags & RP_TF_RECOMP)) {
            continue;
        }
        t->extra_ns += ev->duration_ns;
        if (t->handle != ENG_HANDLE_NULL) {
            eng_set_recompute_ns(rp->eng, t->handle, t->op_ns + t->extra_ns);
        }
    }
    return MEMSVC_OK;
}

static memsvc_status_t rp_ev_compute(rp_t *rp, const mt_event_t *ev)
{
    mt_replay_report_t *rep = rp->rep;
    unsigned            dev = ev->device;
    sim_device_t       *sd  = sim_node_device(rp->node, dev);
    eng_handle_t        stackbuf[32];
    eng_handle_t       *held = stackbuf;
    uint64_t            n    = (uint64_t)ev->num_reads + ev->num_writes;
    uint32_t            nr = 0, nw = 0, i;
    sim_time_t          rr = 0, rw = 0, issue, free_at, start, end, ready, rc0;
    rp_stream_t        *cs = NULL;
    rp_tensor_t       **tr, **tw;
    memsvc_status_t     status;

    rp->seen_compute = true;
    if (ev->stream != 0) {
        cs = rp_stream(rp, dev, ev->stream);
        if (cs == NULL) {
            rp_errf(rp, "out of memory");
            return MEMSVC_ERR_NO_RESOURCE;
        }
    } else if (rp->prev_start[dev] > rp_now(rp)) {
        /* one operator of look-ahead: its memory is prepared while the previous one runs */
        rp_run_until(rp, rp->prev_start[dev]);
    }
    if (n > 32) {
        held = malloc(n * sizeof(*held));
        if (held == NULL) {
            rp_errf(rp, "out of memory");
            return MEMSVC_ERR_NO_RESOURCE;
        }
    }
    issue   = rp_now(rp);
    free_at = (sd->compute.busy_until > rp->floor[dev]) ? sd->compute.busy_until : rp->floor[dev];
    rc0     = rep->devs[dev].recompute_ns;
    rp->cur_op_ns = (cs == NULL) ? ev->duration_ns : 0;
    tr = rp_resolve(rp, ev->rank, ev->reads, ev->num_reads, 0);
    tw = (tr != NULL) ? rp_resolve(rp, ev->rank, ev->writes, ev->num_writes, ev->num_reads) : NULL;
    if (tw == NULL) {
        rp_errf(rp, "out of memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto out;
    }
    tr     = tw - ev->num_reads; /* the buffer may have moved */
    status = rp_record_recipes(rp, ev, tr, tw);
    if (status == MEMSVC_OK) {
        status = rp_acquire_set(rp, tr, ev->num_reads, 0, &rr, &nr, held);
    }
    if (status == MEMSVC_OK) {
        /* the recursion may have grown the buffer: resolve the writes again */
        tw     = rp_resolve(rp, ev->rank, ev->writes, ev->num_writes, 0);
        status = (tw != NULL) ? rp_acquire_set(rp, tw, ev->num_writes, 0, &rw, &nw, held + nr)
                              : MEMSVC_ERR_NO_RESOURCE;
    }
    rp->cur_op_ns = 0;
    if (status != MEMSVC_OK) {
        goto out;
    }
    ready = rp_now(rp); /* all resident (recomputes are queued on the stream) */
    if (cs == NULL) {
        sim_time_t wait = rp->mem_wait[dev] + (ready - issue);
        sim_time_t rc   = rep->devs[dev].recompute_ns - rc0; /* charged while preparing */
        sim_time_t go   = (sd->compute.busy_until > ready) ? sd->compute.busy_until : ready;
        sim_time_t gap  = (go > free_at + rc) ? go - free_at - rc : 0;
        /* the stream's idle time since it was free, as far as this device's memory waits
         * explain it (recomputations it ran meanwhile are not idle) */
        sim_time_t stall = (gap < wait) ? gap : wait;

        if (stall > 0) {
            rep->stall_ns += stall;
            rep->stalls++;
            rep->devs[dev].stall_ns += stall;
            if (rp->cur_step != NULL) {
                rp->cur_step->stall_ns += stall;
            }
            if (rep->timeline != NULL) {
                mt_timeline_stall(rep->timeline, dev, go, stall);
            }
        }
        rp->mem_wait[dev] = 0;
        start             = go;
        if (rr > start) {
            rep->comm_wait_ns += rr - start;
            start = rr;
        }
        end                 = sim_stream_submit(&sd->compute, start, ev->duration_ns);
        rp->prev_start[dev] = end - ev->duration_ns;
        rep->compute_ns += ev->duration_ns;
        rep->devs[dev].compute_ns += ev->duration_ns;
        if (rp->cur_step != NULL) {
            rp->cur_step->compute_ns += ev->duration_ns;
        }
    } else {
        start = (cs->busy_until > ready) ? cs->busy_until : ready;
        if (rr > start) {
            start = rr;
        }
        end            = start + ev->duration_ns;
        cs->busy_until = end;
        rep->comm_ns += ev->duration_ns;
    }
    for (i = 0; i < ev->num_writes; i++) {
        rp_tensor_t *t = rp_map_get(&rp->map, ev->rank, ev->writes[i]);

        if (t != NULL) {
            t->flags |= RP_TF_WRITTEN;
            t->ready_at = end; /* readers on other streams wait for it */
        }
    }
    status = rp_release_at(rp, end, held, nr + nw, dev);
out:
    if (held != stackbuf) {
        free(held);
    }
    return status;
}

/* Wait until every stream of every device is idle; returns that time. */
static sim_time_t rp_barrier(rp_t *rp)
{
    sim_time_t t = rp_now(rp);
    unsigned   d;
    size_t     i;

    for (d = 0; d < rp->num_devices; d++) {
        sim_device_t *sd = sim_node_device(rp->node, d);

        if (sd->compute.busy_until > t) {
            t = sd->compute.busy_until;
        }
    }
    for (i = 0; i < rp->num_streams; i++) {
        if (rp->streams[i].busy_until > t) {
            t = rp->streams[i].busy_until;
        }
    }
    rp_run_until(rp, t);
    for (d = 0; d < rp->num_devices; d++) {
        rp->floor[d] = t;
    }
    return t;
}

static memsvc_status_t rp_step_open(rp_t *rp, int32_t step)
{
    mt_replay_report_t *rep = rp->rep;
    size_t              i;

    for (i = 0; i < rep->num_steps; i++) {
        if (rep->steps[i].step == step) { /* another rank's marker of the same step */
            rp->cur_step = &rep->steps[i];
            return MEMSVC_OK;
        }
    }
    if (rep->num_steps == rp->cap_steps) {
        size_t            cap = (rp->cap_steps == 0) ? 16 : rp->cap_steps * 2;
        mt_replay_step_t *s   = realloc(rep->steps, cap * sizeof(*s));

        if (s == NULL) {
            rp_errf(rp, "out of memory");
            return MEMSVC_ERR_NO_RESOURCE;
        }
        rep->steps    = s;
        rp->cap_steps = cap;
    }
    rp->cur_step = &rep->steps[rep->num_steps++];
    memset(rp->cur_step, 0, sizeof(*rp->cur_step));
    rp->cur_step->step  = step;
    rp->cur_step->begin = rp_now(rp);
    rp->cur_step->end   = rp_now(rp);
    return MEMSVC_OK;
}

static memsvc_status_t rp_ev_hint(rp_t *rp, const mt_event_t *ev)
{
    eng_hint_t h;

    memset(&h, 0, sizeof(h));
    h.type       = ev->hint;
    h.job        = 1 + ev->rank;
    h.rank       = ev->rank;
    h.step       = ev->step;
    h.layer      = ev->layer;
    h.microbatch = ev->microbatch;
    h.phase      = ev->phase;
    if (ev->hint == MEMSVC_HINT_STEP_BEGIN) {
        bool same = (rp->cur_step != NULL) && (rp->cur_step->step == ev->step);

        if (!same) {
            if (rp->cur_step != NULL) {
                rp->cur_step->end = rp_barrier(rp);
            }
            rp_barrier(rp);
            if (rp_step_open(rp, ev->step) != MEMSVC_OK) {
                return MEMSVC_ERR_NO_RESOURCE;
            }
        }
    } else if (ev->hint == MEMSVC_HINT_STEP_END) {
        sim_time_t t = rp_barrier(rp);

        if (rp->cur_step == NULL && rp_step_open(rp, ev->step) != MEMSVC_OK) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        if (t > rp->cur_step->end) {
            rp->cur_step->end = t;
        }
        rp->cur_step = NULL;
    }
    eng_hint(rp->eng, &h);
    return MEMSVC_OK;
}

/* Free the replayer's tensors and tables (the engine goes with eng_destroy). */
static void rp_cleanup(rp_t *rp)
{
    while (rp->all != NULL) {
        rp_tensor_t *t = rp->all;

        rp->all = t->all_next;
        free(t->inputs);
        free(t->deps);
        free(t);
    }
    free(rp->map.slots);
    free(rp->ops.slots);
    free(rp->byh.slots);
    free(rp->work);
    free(rp->ids_buf);
}

/* ---- progress bar --------------------------------------------------------------------------- */

static double rp_wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void rp_progress(double frac, uint64_t events, bool done)
{
    char bar[41];
    int  i, fill = (int)(frac * 40.0);

    for (i = 0; i < 40; i++) {
        bar[i] = (i < fill) ? '#' : '.';
    }
    bar[40] = '\0';
    fprintf(stderr, "\rreplay [%s] %5.1f%%  %" PRIu64 " events%s", bar, 100.0 * frac, events,
            done ? "\n" : "");
    fflush(stderr);
}

/* ---- the pass ----------------------------------------------------------------------------- */

void mt_replay_params_init(mt_replay_params_t *params)
{
    memset(params, 0, sizeof(*params));
    params->mode     = SIM_MEM_PHANTOM;
    params->policy   = NULL;
    params->baseline = true;
}

memsvc_status_t mt_replay_node(const mt_replay_params_t *params, const mt_header_t *header,
                               sim_desc_t *desc_p, char *err, size_t errlen)
{
    sim_desc_t      desc;
    memsvc_status_t status;
    size_t          i;

    if (params->node != NULL) {
        if (sim_desc_preset(params->node, &desc) != MEMSVC_OK) {
            const char *const *names = sim_desc_preset_names();
            int n = snprintf(err, errlen, "unknown node preset '%s' (presets:", params->node);

            for (i = 0; names[i] != NULL && n > 0 && (size_t)n < errlen; i++) {
                n += snprintf(err + n, errlen - (size_t)n, " %s", names[i]);
            }
            if (n > 0 && (size_t)n < errlen) {
                snprintf(err + n, errlen - (size_t)n, ")");
            }
            return MEMSVC_ERR_UNKNOWN_KEY;
        }
    } else if (sim_desc_preset(header->node.name, &desc) == MEMSVC_OK) {
        /* the preset's rates; the header's shape (NPUs, capacities) where it gives them */
        if (header->node.num_npus > 0) {
            desc.num_npus = header->node.num_npus;
        }
        if (header->node.hbm_bytes > 0) {
            desc.hbm_bytes = header->node.hbm_bytes;
        }
    } else {
        desc = header->node;
    }
    for (i = 0; i < params->num_overrides; i++) {
        status = sim_desc_set(&desc, params->overrides[i], err, errlen);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    status = sim_desc_validate(&desc, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    *desc_p = desc;
    return MEMSVC_OK;
}

static void rp_collect(rp_t *rp)
{
    mt_replay_report_t *rep = rp->rep;
    eng_stats_t         es;
    unsigned            d;

    eng_stats(rp->eng, &es);
    rep->host_peak = es.host.peak;
    rep->disk_peak = es.host.disk_peak;
    rep->peer_peak = es.host.peer_peak;
    for (d = 0; d < rp->num_devices; d++) {
        mt_replay_dev_t *rd = &rep->devs[d];
        eng_dev_stats_t  st;
        int              k;

        eng_dev_stats(rp->eng, d, &st);
        rd->capacity       = st.alloc.capacity;
        rd->peak_allocated = st.alloc.peak_allocated;
        rd->peak_reserved  = st.alloc.peak_reserved;
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            rd->peak_by_kind[k] = st.peak_by_kind[k];
        }
        rd->swap_out_bytes = st.swap_out_bytes;
        rd->swap_outs      = st.swap_outs;
        rd->swap_in_bytes  = st.swap_in_bytes;
        rd->swap_ins       = st.swap_ins;
        rd->spill_bytes    = st.spill_bytes;
        rd->spills         = st.spills;
        rd->drops          = st.drops - rp->kept_dropped[d]; /* the policy's only */
        rd->prefetches     = st.prefetches;
        if (rd->peak_allocated > 0 || rd->compute_ns > 0) {
            rd->used = true;
        }
        if (rd->peak_allocated > rep->devs[rep->busiest].peak_allocated) {
            rep->busiest = d;
        }
        if (rd->peak_allocated > rep->peak_allocated) {
            rep->peak_allocated = rd->peak_allocated;
        }
        if (rd->peak_reserved > rep->peak_reserved) {
            rep->peak_reserved = rd->peak_reserved;
        }
        rep->swap_out_bytes += rd->swap_out_bytes;
        rep->swap_in_bytes += rd->swap_in_bytes;
        rep->swap_outs += rd->swap_outs;
        rep->swap_ins += rd->swap_ins;
        rep->spill_bytes += rd->spill_bytes;
        rep->drops += rd->drops;
        rep->prefetches += rd->prefetches;
    }
    rep->fits = (rep->oom_count == 0) && !rep->thrashed;
}

memsvc_status_t mt_replay(const mt_replay_params_t *params, mt_reader_t *reader,
                          mt_replay_report_t *report_p, char *err, size_t errlen)
{
    const mt_header_t *hdr = mt_reader_header(reader);
    eng_params_t       ep;
    sim_desc_t         desc;
    rp_t               rp;
    mt_event_t         ev;
    memsvc_status_t    status;
    bool               end = false, bar;
    double             wall0, last_bar;
    uint64_t           live_now[SIM_MAX_NPUS] = {0}, live_count[SIM_MAX_NPUS] = {0};
    uint64_t           live_bytes;
    unsigned           live_dev;
    uint32_t           i;
    char               dummy[1];

    if (err == NULL) {
        err    = dummy;
        errlen = sizeof(dummy);
    }
    memset(report_p, 0, sizeof(*report_p));
    memset(&rp, 0, sizeof(rp));
    rp.rep    = report_p;
    rp.err    = err;
    rp.errlen = errlen;
    status    = mt_replay_node(params, hdr, &desc, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    ep.desc   = &desc;
    ep.mode   = params->mode;
    ep.clock  = SIM_CLOCK_VIRTUAL;
    ep.policy = (params->policy != NULL) ? params->policy : "lru";
    status    = eng_create(&ep, &rp.eng, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    {
        const pol_ops_t *ops;
        const char      *pol_params;

        rp.can_evict =
            pol_lookup_spec(ep.policy, &ops, &pol_params) == MEMSVC_OK && ops->make_room != NULL;
    }
    rp.thrash_limit = params->thrash_limit;
    rp.thrash_base  = params->thrash_base_ns;
    rp.clock       = eng_clock(rp.eng);
    rp.node        = eng_node(rp.eng);
    rp.num_devices = sim_node_num_devices(rp.node);
    status         = rp_map_init(&rp.map, 1024);
    if (status == MEMSVC_OK) {
        status = rp_map_init(&rp.ops, 1024);
    }
    if (status == MEMSVC_OK) {
        status = rp_map_init(&rp.byh, 1024);
    }
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "out of memory");
        goto err_cleanup_map;
    }
    eng_set_graph(rp.eng, &rp_graph_ops, &rp);
    if (params->timeline) {
        report_p->timeline = mt_timeline_create();
        if (report_p->timeline == NULL) {
            status = MEMSVC_ERR_NO_RESOURCE;
            snprintf(err, errlen, "out of memory");
            goto err_cleanup_map;
        }
    }
    snprintf(report_p->trace_model, sizeof(report_p->trace_model), "%s", hdr->model);
    snprintf(report_p->node, sizeof(report_p->node), "%s", desc.name);
    snprintf(report_p->policy, sizeof(report_p->policy), "%s", eng_policy_name(rp.eng));
    report_p->mode          = params->mode;
    report_p->hbm_bytes     = desc.hbm_bytes;
    report_p->peak_flops    = desc.flops;
    report_p->alloc         = desc.alloc;
    report_p->num_devices   = rp.num_devices;
    report_p->recorded_peak = hdr->recorded_peak;
    for (i = 0; i < hdr->num_meta; i++) {
        if (strcmp(hdr->meta_key[i], "peak_running_sum") == 0) {
            report_p->events_peak = strtoull(hdr->meta_value[i], NULL, 10);
        } else if (strcmp(hdr->meta_key[i], "model_flops") == 0) {
            report_p->model_flops = strtod(hdr->meta_value[i], NULL);
        }
    }

    bar      = params->progress && isatty(STDERR_FILENO);
    wall0    = rp_wall();
    last_bar = wall0;
    for (;;) {
        status = mt_reader_next(reader, &ev, &end, err, errlen);
        if (status != MEMSVC_OK || end) {
            break;
        }
        rp.ev = &ev;
        if (ev.device >= rp.num_devices) {
            rp_errf(&rp, "device %" PRIu32 " but the node has %u NPUs (override npus=)", ev.device,
                    rp.num_devices);
            status = MEMSVC_ERR_FORMAT;
            break;
        }
        if (!rp.seen_compute && ev.type != MT_EV_COMPUTE && ev.time_ns > 0) {
            /* no operators (so far): follow the recorded timeline */
            if (!rp.have_t0) {
                rp.have_t0 = true;
                rp.t0      = ev.time_ns;
            }
            if (ev.time_ns > rp.t0 && ev.time_ns - rp.t0 > rp_now(&rp)) {
                rp_run_until(&rp, ev.time_ns - rp.t0);
            }
        }
        live_bytes = 0;
        live_dev   = ev.device;
        if (ev.type == MT_EV_ALLOC) {
            live_bytes = ev.size;
        } else if (ev.type == MT_EV_FREE) {
            rp_tensor_t *ft = rp_map_get(&rp.map, ev.rank, ev.tensor);

            if (ft != NULL) {
                live_bytes = ft->size;
                live_dev   = ft->device;
            }
        }
        switch (ev.type) {
        case MT_EV_ALLOC:
            status = rp_ev_alloc(&rp, &ev);
            break;
        case MT_EV_FREE:
            status = rp_ev_free(&rp, &ev);
            break;
        case MT_EV_ACCESS:
            status = rp_ev_access(&rp, &ev);
            break;
        case MT_EV_COMPUTE:
            status = rp_ev_compute(&rp, &ev);
            break;
        case MT_EV_HINT:
            status = rp_ev_hint(&rp, &ev);
            break;
        default:
            break;
        }
        if (status != MEMSVC_OK) {
            break;
        }
        if (live_bytes > 0) {
            rp_live_account(report_p, live_now, live_count, live_dev, live_bytes,
                            ev.type == MT_EV_ALLOC);
        }
        report_p->events++;
        if (report_p->thrashed) {
            break; /* the thrash limit: stop here */
        }
        report_p->events_by_type[ev.type]++;
        if (ev.type != MT_EV_HINT) {
            rp_sample(&rp, ev.device);
        }
        if (bar && (report_p->events & 4095) == 0) {
            double now = rp_wall();

            if (now - last_bar >= 0.1) {
                double frac = (params->input_bytes > 0)
                                  ? (double)mt_reader_offset(reader) / (double)params->input_bytes
                                  : 0.0;

                last_bar = now;
                rp_progress(frac > 1.0 ? 1.0 : frac, report_p->events, false);
            }
        }
    }
    if (status != MEMSVC_OK) {
        goto err_free_report;
    }
    report_p->total_ns = rp_barrier(&rp);
    if (rp.cur_step != NULL && report_p->total_ns > rp.cur_step->end) {
        rp.cur_step->end = report_p->total_ns;
    }
    rp_collect(&rp);
    if (report_p->timeline != NULL) {
        rp_sample(&rp, report_p->busiest);
    }
    {
        /* the decision log, kept as JSON text: the engine is gone when the report is printed */
        char  *buf = NULL;
        size_t len = 0;
        FILE  *mem = open_memstream(&buf, &len);

        if (mem != NULL) {
            if (eng_decision_log_json(rp.eng, mem, MT_REPLAY_DECISIONS_KEEP) != MEMSVC_OK) {
                fclose(mem);
                free(buf);
                buf = NULL;
            } else {
                fclose(mem);
            }
            report_p->decisions_json = buf;
        }
    }
    report_p->wall_s = rp_wall() - wall0;
    report_p->events_per_s =
        (report_p->wall_s > 0.0) ? (double)report_p->events / report_p->wall_s : 0.0;
    if (ep.policy != NULL && strncmp(ep.policy, "none", 4) == 0 &&
        (ep.policy[4] == '\0' || ep.policy[4] == ':') && report_p->fits) {
        report_p->unconstrained_peak = report_p->peak_allocated;
    }
    if (bar) {
        rp_progress(1.0, report_p->events, true);
    }
    free(rp.streams);
    free(rp.rel.a);
    rp_cleanup(&rp);
    eng_destroy(rp.eng);
    return MEMSVC_OK;

err_free_report:
    if (bar) {
        fputc('\n', stderr);
    }
    free(rp.streams);
    free(rp.rel.a);
    mt_replay_report_free(report_p);
err_cleanup_map:
    rp_cleanup(&rp);
    eng_destroy(rp.eng);
    return status;
}

static memsvc_status_t rp_open_and_run(const mt_replay_params_t *params, const char *path,
                                       mt_replay_report_t *report_p, char *err, size_t errlen)
{
    mt_reader_t       *r;
    mt_replay_params_t p = *params;
    struct stat        sb;
    memsvc_status_t    status;
    char               msg[512];

    status = mt_reader_open(path, &r, msg, sizeof(msg));
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "%s: %s", path, msg);
        return status;
    }
    if (p.input_bytes == 0 && strcmp(path, "-") != 0 && stat(path, &sb) == 0) {
        p.input_bytes = (uint64_t)sb.st_size;
    }
    status = mt_replay(&p, r, report_p, msg, sizeof(msg));
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "%s: %s", path, msg);
    }
    mt_reader_close(r);
    return status;
}

/* The unconstrained replay of path: policy none, phantom memory, HBM MT_REPLAY_UNLIMITED. */
static memsvc_status_t rp_run_baseline(const mt_replay_params_t *params, const char *path,
                                       mt_replay_report_t *base, char *err, size_t errlen)
{
    mt_replay_params_t bp;
    const char       **ov;
    memsvc_status_t    status;
    size_t             i, j;

    ov = malloc((params->num_overrides + 1) * sizeof(*ov));
    if (ov == NULL) {
        snprintf(err, errlen, "out of memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0, j = 0; i < params->num_overrides; i++) {
        if (strncmp(params->overrides[i], "hbm=", 4) != 0) {
            ov[j++] = params->overrides[i];
        }
    }
    ov[j++]          = "hbm=" MT_REPLAY_UNLIMITED;
    bp               = *params;
    bp.overrides     = ov;
    bp.num_overrides = j;
    bp.mode          = SIM_MEM_PHANTOM;
    bp.policy        = "none";
    bp.timeline      = false;
    bp.thrash_limit  = 0.0;
    status           = rp_open_and_run(&bp, path, base, err, errlen);
    free(ov);
    return status;
}

memsvc_status_t mt_replay_file(const mt_replay_params_t *params, const char *path,
                               mt_replay_report_t *report_p, char *err, size_t errlen)
{
    mt_replay_report_t base;
    mt_replay_params_t p = *params;
    memsvc_status_t    status;
    bool               have_base = false;
    size_t             i, j;
    char               dummy[1];

    if (err == NULL) {
        err    = dummy;
        errlen = sizeof(dummy);
    }
    if (params->thrash_limit > 0.0 && strcmp(path, "-") != 0) {
        /* the limit is relative to the whole trace's compute: the unconstrained replay's */
        status = rp_run_baseline(params, path, &base, err, errlen);
        if (status != MEMSVC_OK) {
            return status;
        }
        have_base        = true;
        p.thrash_base_ns = base.compute_ns;
    }
    status = rp_open_and_run(&p, path, report_p, err, errlen);
    if (status == MEMSVC_OK && params->top_n > 0 && strcmp(path, "-") != 0) {
        status = mt_replay_top(path, params->top_n, report_p, err, errlen);
        if (status != MEMSVC_OK) {
            mt_replay_report_free(report_p);
        }
    }
    if (status != MEMSVC_OK || (!params->baseline && !have_base)) {
        if (status == MEMSVC_OK && report_p->unconstrained_peak == 0 && report_p->fits &&
            report_p->policy[0] != '\0' && strncmp(report_p->policy, "none", 4) == 0) {
            report_p->unconstrained_peak = report_p->peak_allocated;
        }
        if (have_base) {
            mt_replay_report_free(&base);
        }
        return status;
    }
    if (!have_base) {
        if (strcmp(path, "-") == 0) {
            return MEMSVC_OK; /* standard input cannot be read twice */
        }
        status = rp_run_baseline(params, path, &base, err, errlen);
        if (status != MEMSVC_OK) {
            mt_replay_report_free(report_p);
            return status;
        }
    }
    report_p->has_baseline       = true;
    report_p->baseline_ns        = base.total_ns;
    report_p->baseline_peak      = base.peak_allocated;
    report_p->unconstrained_peak = base.peak_allocated;
    report_p->baseline_wall_s    = base.wall_s;
    report_p->overhead =
        (base.total_ns > 0) ? (double)report_p->total_ns / (double)base.total_ns - 1.0 : 0.0;
    for (i = 0; i < report_p->num_steps; i++) {
        for (j = 0; j < base.num_steps; j++) {
            if (base.steps[j].step == report_p->steps[i].step) {
                report_p->steps[i].baseline_ns = base.steps[j].end - base.steps[j].begin;
                break;
            }
        }
    }
    mt_replay_report_free(&base);
    return MEMSVC_OK;
}

void mt_replay_report_free(mt_replay_report_t *report)
{
    unsigned d;

    for (d = 0; d < SIM_MAX_NPUS; d++) {
        free(report->devs[d].top);
        report->devs[d].top     = NULL;
        report->devs[d].num_top = 0;
    }
    free(report->steps);
    report->steps     = NULL;
    report->num_steps = 0;
    mt_timeline_destroy(report->timeline);
    report->timeline = NULL;
    free(report->decisions_json);
    report->decisions_json = NULL;
}
