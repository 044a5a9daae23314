/* replay_live.c - live replay: trainer processes replay their ranks through libmemsvc */
#include "tools/memtrace/replay_live.h"
#include "tools/memtrace/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LIVE_BATCH 64 /* handles per acquire/release message */

/* ---- tensor id -> handle, per trainer (open addressing, grows with live tensors) ------------ */

typedef struct live_map {
    uint64_t *ids;     /* 0: empty */
    uint64_t *handles;
    uint64_t  cap, n;
} live_map_t;

static uint64_t live_hash(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static memsvc_status_t live_map_grow(live_map_t *m)
{
    uint64_t  cap = m->cap ? m->cap * 2 : 1024, i;
    uint64_t *ids = calloc(cap, sizeof(*ids)), *hs = calloc(cap, sizeof(*hs));

    if (ids == NULL || hs == NULL) {
        free(ids);
        free(hs);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < m->cap; i++) {
        if (m->ids[i] != 0) {
            uint64_t j = live_hash(m->ids[i]) & (cap - 1);

            while (ids[j] != 0) {
                j = (j + 1) & (cap - 1);
            }
            ids[j] = m->ids[i];
            hs[j]  = m->handles[i];
        }
    }
    free(m->ids);
    free(m->handles);
    m->ids     = ids;
    m->handles = hs;
    m->cap     = cap;
    return MEMSVC_OK;
}

static uint64_t *live_map_slot(live_map_t *m, uint64_t id)
{
    uint64_t j;

    if (m->cap == 0) {
        return NULL;
    }
    for (j = live_hash(id) & (m->cap - 1); m->ids[j] != 0; j = (j + 1) & (m->cap - 1)) {
        if (m->ids[j] == id) {
            return &m->handles[j];
        }
    }
    return NULL;
}

static memsvc_status_t live_map_put(live_map_t *m, uint64_t id, uint64_t handle)
{
    uint64_t j;

    if (id == 0) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if ((m->n + 1) * 2 > m->cap && live_map_grow(m) != MEMSVC_OK) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (j = live_hash(id) & (m->cap - 1); m->ids[j] != 0; j = (j + 1) & (m->cap - 1)) {
        if (m->ids[j] == id) {
            m->handles[j] = handle;
            return MEMSVC_OK;
        }
    }
    m->ids[j]     = id;
    m->handles[j] = handle;
    m->n++;
    return MEMSVC_OK;
}

/* Remove with backward shift. */
static void live_map_del(live_map_t *m, uint64_t id)
{
    uint64_t i, j, mask = m->cap - 1;

    if (m->cap == 0) {
        return;
    }
    for (i = live_hash(id) & mask; m->ids[i] != id; i = (i + 1) & mask) {
        if (m->ids[i] == 0) {
            return;
        }
    }
    for (j = i;;) {
        uint64_t home;

        j = (j + 1) & mask;
        if (m->ids[j] == 0) {
            break;
        }
        home = live_hash(m->ids[j]) & mask;
        if ((i <= j) ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }
        m->ids[i]     = m->ids[j];
        m->handles[i] = m->handles[j];
        i             = j;
    }
    m->ids[i] = 0;
    m->n--;
}

/* ---- one trainer ------------------------------------------------------------------------- */

typedef struct live_trainer {
    memsvc_conn_h       conn;
    live_map_t          map;
    live_map_t          keys; /* id -> hash of its key (an alloc after a free of its key waits) */
    live_map_t          pend; /* id -> 2 x seq of the group whose batch allocates it (+1: pinned) */
    live_map_t          hold; /* id -> seq of the last group that holds its alloc's pin */
    live_map_t          freeing; /* key hash -> frees of that key loaded but not sent yet */
    uint64_t            seq;     /* groups loaded */
    const mt_live_params_t *p;
    mt_live_rank_t     *r;
    uint64_t            sched_ns; /* where the compute schedule stands (monotonic) */
    bool                lost;     /* the daemon went away: the trainer stops */
} live_trainer_t;

static uint64_t live_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define LIVE_LEAD_NS 2000000ull /* device work the trainer keeps queued ahead of the device */

static void live_sleep_until(uint64_t due)
{
    struct timespec ts = {.tv_sec  = (time_t)(due / 1000000000ull),
                          .tv_nsec = (long)(due % 1000000000ull)};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/*
 * Queue `ns` of (scaled) device time on the trainer's compute schedule. The device runs
 * asynchronously from the trainer, as an NPU's stream does: tr->sched_ns is when it will have
 * finished what was queued. The trainer sleeps only while more than LIVE_LEAD_NS is queued, and
 * wakes with that much still queued, so that its next requests overlap the device's work.
 */
static void live_compute(live_trainer_t *tr, uint64_t ns)
{
    uint64_t now = live_now();

    if (tr->sched_ns < now) {
        tr->sched_ns = now; /* the device was idle (a stall): it starts again from now */
    }
    tr->sched_ns += ns;
    /* short operators add up until a sleep is worth it */
    if (tr->sched_ns > now + 2 * LIVE_LEAD_NS) {
        memsvc_progress(tr->conn); /* the batches in flight leave, their answers come in */
        live_sleep_until(tr->sched_ns - LIVE_LEAD_NS);
        memsvc_progress(tr->conn);
    }
}

/* Time since t0 during which the device had nothing queued (it waited for the trainer). */
static uint64_t live_idle_since(const live_trainer_t *tr, uint64_t t0)
{
    uint64_t now = live_now(), from = (tr->sched_ns > t0) ? tr->sched_ns : t0;

    return (now > from) ? now - from : 0;
}

/*
 * A transport error, or a timeout after which the daemon does not answer a ping, means the
 * daemon is gone: every later request would fail the same way (after its timeout), so the
 * trainer stops with that status instead of replaying the rest into errors.
 */
static void live_check_lost(live_trainer_t *tr, memsvc_status_t s)
{
    if (tr->lost || (s != MEMSVC_ERR_TRANSPORT && s != MEMSVC_ERR_TIMEOUT)) {
        return;
    }
    if (s == MEMSVC_ERR_TIMEOUT && memsvc_ping(tr->conn, NULL) == MEMSVC_OK) {
        return; /* slow, not gone */
    }
    tr->lost      = true;
    tr->r->status = MEMSVC_ERR_TRANSPORT;
    snprintf(tr->r->message, sizeof(tr->r->message),
             "the daemon went away (%s after %" PRIu64 " events): replay stopped",
             memsvc_status_name(s), tr->r->events);
}

static void live_refused(live_trainer_t *tr, memsvc_status_t s)
{
    if (s == MEMSVC_ERR_NO_MEMORY || s == MEMSVC_ERR_FRAGMENTED) {
        tr->r->ooms++;
    } else {
        tr->r->errors++;
        live_check_lost(tr, s);
    }
}

/* Acquire (or release) the mapped handles among ids, in batches; acquire answers RECOMPUTE
 * for dropped tensors, whose recompute time is slept. */
static void live_pin(live_trainer_t *tr, const uint64_t *ids, uint32_t n, bool acquire,
                     const uint64_t *rc_ns)
{
    memsvc_handle_t hs[LIVE_BATCH];
    memsvc_status_t st[LIVE_BATCH];
    uint32_t        i = 0, k, idx[LIVE_BATCH];

    while (i < n) {
        uint32_t m = 0;

        for (; i < n && m < LIVE_BATCH; i++) {
            uint64_t *h = live_map_slot(&tr->map, ids[i]);

            if (h != NULL) {
                idx[m]  = i;
                hs[m++] = *h;
            }
        }
        if (m == 0) {
            continue;
        }
        if (acquire) {
            uint64_t t0 = live_now();

            memsvc_acquire_many(tr->conn, hs, m, st);
            tr->r->stall_ns += live_idle_since(tr, t0);
            for (k = 0; k < m; k++) {
                if (st[k] == MEMSVC_RECOMPUTE) {
                    uint64_t ns = (rc_ns != NULL) ? rc_ns[idx[k]] : 0;

                    tr->r->recomputes++;
                    tr->r->recompute_ns += (uint64_t)((double)ns * tr->p->time_scale);
                    live_compute(tr, (uint64_t)((double)ns * tr->p->time_scale));
                } else if (st[k] < 0) {
                    live_refused(tr, st[k]);
                }
            }
        } else {
            memsvc_release_many(tr->conn, hs, m, st);
        }
    }
}

/* Recompute costs of tensors are not in COMPUTE events: remember them per id. */
typedef struct live_cost {
    live_map_t map; /* id -> recompute_ns */
} live_cost_t;

static void live_event(live_trainer_t *tr, live_cost_t *cost, const mt_event_t *ev, char *key,
                       size_t keylen)
{
    memsvc_status_t s;

    tr->r->events++;
    switch (ev->type) {
    case MT_EV_ALLOC: {
        memsvc_alloc_params_t ap;
        memsvc_handle_t       h;

        memset(&ap, 0, sizeof(ap));
        ap.field_mask = MEMSVC_ALLOC_FIELD_KIND | MEMSVC_ALLOC_FIELD_TAGS |
                        MEMSVC_ALLOC_FIELD_RECOMPUTE_NS | MEMSVC_ALLOC_FIELD_FLAGS;
        ap.kind         = ev->kind;
        ap.tags         = ev->tags;
        ap.recompute_ns = ev->recompute_ns;
        ap.flags        = (ev->durable ? MEMSVC_ALLOC_DURABLE : 0) |
                          (ev->recomputable ? MEMSVC_ALLOC_RECOMPUTABLE : 0);
        snprintf(key, keylen, "r%u.%s", ev->rank, ev->key);
        s = memsvc_alloc(tr->conn, key, ev->size, &ap, &h);
        if (s == MEMSVC_OK) {
            live_map_put(&tr->map, ev->tensor, h);
            live_map_put(&cost->map, ev->tensor, ev->recompute_ns + 1);
        } else {
            live_refused(tr, s);
        }
        break;
    }
    case MT_EV_FREE: {
        uint64_t *h = live_map_slot(&tr->map, ev->tensor);

        if (h != NULL) {
            memsvc_free(tr->conn, *h);
            live_map_del(&tr->map, ev->tensor);
            live_map_del(&cost->map, ev->tensor);
        }
        break;
    }
    case MT_EV_ACCESS:
        live_pin(tr, &ev->tensor, 1, true, NULL);
        live_pin(tr, &ev->tensor, 1, false, NULL);
        break;
    case MT_EV_HINT: {
        memsvc_hint_t hint;

        memset(&hint, 0, sizeof(hint));
        hint.type       = ev->hint;
        hint.step       = ev->step;
        hint.layer      = ev->layer;
        hint.microbatch = ev->microbatch;
        hint.phase      = ev->phase;
        if (ev->hint != MEMSVC_HINT_UPCOMING) {
            memsvc_hint(tr->conn, &hint);
        }
        break;
    }
    case MT_EV_COMPUTE: {
        uint32_t  n = ev->num_reads + ev->num_writes, i;
        uint64_t *ids, *rc;

        if (ev->stream != 0 || n == 0) {
            if (ev->stream == 0) {
                live_compute(tr, (uint64_t)((double)ev->duration_ns * tr->p->time_scale));
                tr->r->compute_ns += (uint64_t)((double)ev->duration_ns * tr->p->time_scale);
                tr->r->ops++;
            }
            break;
        }
        ids = malloc(2 * n * sizeof(*ids));
        if (ids == NULL) {
            tr->r->errors++;
            break;
        }
        rc = ids + n;
        memcpy(ids, ev->reads, ev->num_reads * sizeof(*ids));
        memcpy(ids + ev->num_reads, ev->writes, ev->num_writes * sizeof(*ids));
        for (i = 0; i < n; i++) {
            uint64_t *c = live_map_slot(&cost->map, ids[i]);

            rc[i] = (c != NULL) ? *c - 1 : 0;
        }
        live_pin(tr, ids, n, true, rc);
        live_compute(tr, (uint64_t)((double)ev->duration_ns * tr->p->time_scale));
        tr->r->compute_ns += (uint64_t)((double)ev->duration_ns * tr->p->time_scale);
        tr->r->ops++;
        live_pin(tr, ids, n, false, NULL);
        free(ids);
        break;
    }
    default:
        break;
    }
}

/* ---- batched: one operator's events, prefetched as one batch -------------------------------- */

/*
 * The trainer keeps up to `prefetch` operators' batches in flight ahead of the one it runs.
 * A tensor allocated by a batch still in flight has no handle yet: a later operator that reads
 * it does not acquire it; instead the pin its alloc took (MEMSVC_ALLOC_PIN) is held until that
 * later operator has run ("held": trainer->hold maps the id to the last such operator).
 */

/* A copy of an event that outlives the reader's buffer. */
typedef struct live_ev {
    mt_event_t ev;                      /* pointers below are fixed up to the group's storage */
    char       key[MEMSVC_KEY_MAX + 1]; /* ALLOC: "r<rank>.<key>" */
    uint32_t   ids_off;                 /* COMPUTE: reads then writes, in the group's ids */
    bool       deferred;                /* ALLOC: its key was freed earlier in the group */
} live_ev_t;

/* What batch entry i is for. */
typedef struct live_slot {
    uint8_t  what; /* LIVE_SLOT_* */
    bool     pin;  /* ALLOC: with MEMSVC_ALLOC_PIN */
    uint64_t tensor;
    uint64_t recompute_ns;
} live_slot_t;

enum { LIVE_SLOT_HINT, LIVE_SLOT_ALLOC, LIVE_SLOT_ACQUIRE, LIVE_SLOT_RETRY = 0x80 };

/* One operator: the events up to a COMPUTE and the COMPUTE (or the trace's tail). */
typedef struct live_group {
    uint64_t       seq; /* 1, 2, ... in trace order */
    live_ev_t     *ev;
    size_t         n, cap;
    uint64_t      *ids; /* COMPUTE reads and writes */
    size_t         nids, cap_ids;
    memsvc_batch_h batch;     /* hints, allocs and acquires, prefetched */
    memsvc_req_h   req;       /* the batch in flight (NULL: done or empty) */
    bool           collected; /* its outcomes were taken */
    live_slot_t   *slot;
    size_t         nslot, cap_slot;
    uint64_t      *pinned; /* handles to release after the operator */
    size_t         npinned, cap_pinned;
    uint64_t      *held; /* ids whose alloc's pin may be held until after this operator */
    size_t         nheld, cap_held;
} live_group_t;

static bool live_grow(void **p, size_t *cap, size_t elem)
{
    size_t nc = *cap ? 2 * *cap : 64;
    void  *np = realloc(*p, nc * elem);

    if (np == NULL) {
        return false;
    }
    *p   = np;
    *cap = nc;
    return true;
}

#define LIVE_PUSH(arr, n, cap, v)                                                                  \
    ((((n) < (cap)) || live_grow((void **)&(arr), &(cap), sizeof(*(arr))))                         \
         ? ((arr)[(n)++] = (v), true)                                                              \
         : false)

static void live_group_free(live_group_t *g)
{
    memsvc_batch_destroy(g->batch);
    free(g->ev);
    free(g->ids);
    free(g->slot);
    free(g->pinned);
    free(g->held);
    memset(g, 0, sizeof(*g));
}

static uint64_t live_key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h | 1; /* never 0 (the maps' empty slot) */
}

/* Read this rank's events up to and including the next COMPUTE into g. *end_p at the end of
 * the trace (g may still hold a tail without a COMPUTE). */
static memsvc_status_t live_group_load(live_trainer_t *tr, mt_reader_t *reader, uint32_t rank,
                                       live_group_t *g, bool *end_p)
{
    memsvc_status_t s;
    mt_event_t      ev;
    char            err[256];

    g->n         = 0;
    g->nids      = 0;
    g->nslot     = 0;
    g->npinned   = 0;
    g->nheld     = 0;
    g->req       = NULL;
    g->collected = false;
    g->seq       = ++tr->seq;
    for (;;) {
        live_ev_t *e;

        s = mt_reader_next(reader, &ev, end_p, err, sizeof(err));
        if (s != MEMSVC_OK) {
            tr->r->status = s;
            snprintf(tr->r->message, sizeof(tr->r->message), "%.200s", err);
            return s;
        }
        if (*end_p) {
            return MEMSVC_OK;
        }
        if (ev.rank != rank) {
            continue;
        }
        if ((g->n == g->cap) && !live_grow((void **)&g->ev, &g->cap, sizeof(*g->ev))) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        e           = &g->ev[g->n++];
        e->ev       = ev;
        e->deferred = false;
        e->ev.key = e->ev.name = NULL;
        e->ev.reads = e->ev.writes = e->ev.inputs = NULL;
        if (ev.type == MT_EV_ALLOC) {
            snprintf(e->key, sizeof(e->key), "r%u.%s", ev.rank, ev.key);
        } else if (ev.type == MT_EV_COMPUTE) {
            uint32_t n = ev.num_reads + ev.num_writes;

            while (g->nids + n > g->cap_ids) {
                if (!live_grow((void **)&g->ids, &g->cap_ids, sizeof(*g->ids))) {
                    return MEMSVC_ERR_NO_RESOURCE;
                }
            }
            e->ids_off = (uint32_t)g->nids;
            if (ev.num_reads > 0) {
                memcpy(&g->ids[g->nids], ev.reads, ev.num_reads * sizeof(*g->ids));
            }
            if (ev.num_writes > 0) {
                memcpy(&g->ids[g->nids + ev.num_reads], ev.writes, ev.num_writes * sizeof(*g->ids));
            }
            g->nids += n;
            return MEMSVC_OK;
        }
    }
}

static memsvc_alloc_params_t live_alloc_params(const mt_event_t *ev, bool pin)
{
    memsvc_alloc_params_t ap;

    memset(&ap, 0, sizeof(ap));
    ap.field_mask = MEMSVC_ALLOC_FIELD_KIND | MEMSVC_ALLOC_FIELD_TAGS |
                    MEMSVC_ALLOC_FIELD_RECOMPUTE_NS | MEMSVC_ALLOC_FIELD_FLAGS;
    ap.kind         = ev->kind;
    ap.tags         = ev->tags;
    ap.recompute_ns = ev->recompute_ns;
    ap.flags        = (ev->durable ? MEMSVC_ALLOC_DURABLE : 0) | (pin ? MEMSVC_ALLOC_PIN : 0);
    ap.flags |= ev->recomputable ? MEMSVC_ALLOC_RECOMPUTABLE : 0;
    return ap;
}

/* Is tensor id allocated in g (before event k)? */
static bool live_allocated_here(const live_group_t *g, size_t k, uint64_t id)
{
    size_t i;

    for (i = 0; i < k; i++) {
        if ((g->ev[i].ev.type == MT_EV_ALLOC) && (g->ev[i].ev.tensor == id)) {
            return true;
        }
    }
    return false;
}

/* Does the group's operator (a stream-0 COMPUTE, its last event) read or write id? Those of
 * its allocs are pinned by the alloc itself (MEMSVC_ALLOC_PIN); the others are not pinned. */
static bool live_used_by_op(const live_group_t *g, uint64_t id)
{
    const live_ev_t *c = (g->n > 0) ? &g->ev[g->n - 1] : NULL;
    uint32_t         i;

    if ((c == NULL) || (c->ev.type != MT_EV_COMPUTE) || (c->ev.stream != 0)) {
        return false;
    }
    for (i = 0; i < c->ev.num_reads + c->ev.num_writes; i++) {
        if (g->ids[c->ids_off + i] == id) {
            return true;
        }
    }
    return false;
}

static const live_ev_t *live_alloc_event(const live_group_t *g, uint64_t id)
{
    size_t k;

    for (k = 0; k < g->n; k++) {
        if ((g->ev[k].ev.type == MT_EV_ALLOC) && (g->ev[k].ev.tensor == id)) {
            return &g->ev[k];
        }
    }
    return NULL;
}

static bool live_no_room(memsvc_status_t s)
{
    return (s == MEMSVC_ERR_NO_MEMORY) || (s == MEMSVC_ERR_FRAGMENTED);
}

/* A tensor's alloc succeeded: its handle, cost and key are known; its pin (if it took one) is
 * released after g's operator, or after a later one that holds it. */
static void live_alloc_done(live_trainer_t *tr, live_cost_t *cost, live_group_t *g, uint64_t id,
                            memsvc_handle_t h, bool pin)
{
    const live_ev_t *e = live_alloc_event(g, id);

    live_map_put(&tr->map, id, h);
    live_map_del(&tr->pend, id);
    if (e != NULL) {
        live_map_put(&cost->map, id, e->ev.recompute_ns + 1);
    }
    if (pin && (live_map_slot(&tr->hold, id) == NULL) &&
        !LIVE_PUSH(g->pinned, g->npinned, g->cap_pinned, h)) {
        tr->r->errors++;
    }
}

/* The batch's outcomes: handles of the allocs, recomputes, refusals; what to release. With
 * `retry`, entries refused for lack of room are left for a second try (their slot's `what`
 * gets LIVE_SLOT_RETRY added) instead of being counted. */
static void live_group_collect(live_trainer_t *tr, live_cost_t *cost, live_group_t *g, bool retry)
{
    size_t i;

    for (i = 0; i < g->nslot; i++) {
        live_slot_t    *sl = &g->slot[i];
        memsvc_handle_t h  = 0;
        memsvc_status_t s  = memsvc_batch_result(g->batch, i, &h);

        if (retry && live_no_room(s) && (sl->what != LIVE_SLOT_HINT)) {
            sl->what |= LIVE_SLOT_RETRY;
            continue;
        }

        switch (sl->what) {
        case LIVE_SLOT_ALLOC:
            if (s == MEMSVC_OK) {
                live_alloc_done(tr, cost, g, sl->tensor, h, sl->pin);
            } else {
                live_map_del(&tr->pend, sl->tensor);
                live_refused(tr, s);
            }
            break;
        case LIVE_SLOT_ACQUIRE: {
            uint64_t *hp = live_map_slot(&tr->map, sl->tensor);

            if (s == MEMSVC_RECOMPUTE) {
                uint64_t ns = (uint64_t)((double)sl->recompute_ns * tr->p->time_scale);

                tr->r->recomputes++;
                tr->r->recompute_ns += ns;
                live_compute(tr, ns);
            }
            if ((s == MEMSVC_OK || s == MEMSVC_RECOMPUTE) && (hp != NULL)) {
                LIVE_PUSH(g->pinned, g->npinned, g->cap_pinned, *hp);
            } else if (s < 0) {
                live_refused(tr, s);
            }
            break;
        }
        default:
            if (s < 0) {
                tr->r->errors++;
                live_check_lost(tr, s);
            }
            break;
        }
    }
}

/* Wait for g's batch (if in flight) and take its outcomes, once. */
static void live_group_complete(live_trainer_t *tr, live_cost_t *cost, live_group_t *g)
{
    if (g->collected) {
        return;
    }
    if (g->req != NULL) {
        memsvc_wait(g->req, -1); /* outcomes per entry, read in collect */
        g->req = NULL;
    }
    live_group_collect(tr, cost, g, true);
    g->collected = true;
}

/* The in-flight group (among the `n` of ring, from index `from`) whose batch allocates id. */
static live_group_t *live_find_group(live_group_t *ring, size_t n, uint64_t seq)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (ring[i].seq == seq) {
            return &ring[i];
        }
    }
    return NULL;
}

/* Count (add) or uncount g's frees in tr->freeing, by key: an alloc of a key whose free has not
 * been sent yet must wait for it. */
static void live_freeing(live_trainer_t *tr, const live_group_t *g, bool add)
{
    size_t k;

    for (k = 0; k < g->n; k++) {
        uint64_t *kh, *n;

        if ((g->ev[k].ev.type != MT_EV_FREE) ||
            ((kh = live_map_slot(&tr->keys, g->ev[k].ev.tensor)) == NULL)) {
            continue;
        }
        n = live_map_slot(&tr->freeing, *kh);
        if (add) {
            live_map_put(&tr->freeing, *kh, (n != NULL) ? *n + 1 : 1);
        } else if ((n != NULL) && (*n > 1)) {
            (*n)--;
        } else if (n != NULL) {
            live_map_del(&tr->freeing, *kh);
        }
    }
}

/*
 * Build g's batch (hints; allocs that need no earlier free; acquires of the operator's reads
 * and writes whose handles are known) and submit it without waiting. Reads allocated by a
 * batch still in flight are held pinned from their alloc instead (or, if that alloc does not
 * pin, that batch is completed first).
 */
static void live_group_prefetch(live_trainer_t *tr, live_cost_t *cost, live_group_t *g,
                                live_group_t *ring, size_t nring)
{
    memsvc_batch_h  b = g->batch;
    size_t          k;
    memsvc_status_t s;

    live_freeing(tr, g, true); /* its frees are not sent before its start */
    memsvc_batch_reset(b);
    for (k = 0; k < g->n; k++) {
        live_ev_t        *e  = &g->ev[k];
        const mt_event_t *ev = &e->ev;

        switch (ev->type) {
        case MT_EV_HINT: {
            memsvc_hint_t hint;

            if (ev->hint == MEMSVC_HINT_UPCOMING) {
                break;
            }
            memset(&hint, 0, sizeof(hint));
            hint.type       = ev->hint;
            hint.step       = ev->step;
            hint.layer      = ev->layer;
            hint.microbatch = ev->microbatch;
            hint.phase      = ev->phase;
            if (memsvc_batch_hint(b, &hint, NULL) == MEMSVC_OK) {
                LIVE_PUSH(g->slot, g->nslot, g->cap_slot, ((live_slot_t){.what = LIVE_SLOT_HINT}));
            }
            break;
        }
        case MT_EV_ALLOC: {
            bool                  pin = live_used_by_op(g, ev->tensor);
            memsvc_alloc_params_t ap  = live_alloc_params(ev, pin);
            uint64_t              kh  = live_key_hash(e->key);

            live_map_put(&tr->keys, ev->tensor, kh);
            if (live_map_slot(&tr->freeing, kh) != NULL) {
                e->deferred = true; /* after the free of its key, at the operator's start */
                live_map_put(&tr->pend, ev->tensor, 2 * g->seq + (pin ? 1 : 0));
                break;
            }
            s = memsvc_batch_alloc(b, e->key, ev->size, &ap, NULL);
            if ((s != MEMSVC_OK) ||
                !LIVE_PUSH(
                    g->slot, g->nslot, g->cap_slot,
                    ((live_slot_t){.what = LIVE_SLOT_ALLOC, .pin = pin, .tensor = ev->tensor}))) {
                tr->r->errors++;
                break;
            }
            live_map_put(&tr->pend, ev->tensor, 2 * g->seq + (pin ? 1 : 0));
            break;
        }
        case MT_EV_ACCESS:
        case MT_EV_COMPUTE: {
            uint32_t        n   = (ev->type == MT_EV_ACCESS) ? 1 : ev->num_reads + ev->num_writes;
            const uint64_t *ids = (ev->type == MT_EV_ACCESS) ? &ev->tensor : &g->ids[e->ids_off];
            uint32_t        i;

            if ((ev->type == MT_EV_COMPUTE) && (ev->stream != 0)) {
                break;
            }
            for (i = 0; i < n; i++) {
                uint64_t *h, *c, *pend;

                if (live_allocated_here(g, k, ids[i])) {
                    continue; /* pinned by its alloc (when the operator uses it); an ACCESS
                               * right after the alloc is a no-op */
                }
                pend = live_map_slot(&tr->pend, ids[i]);
                if ((pend != NULL) && (*pend & 1) && (ev->type == MT_EV_COMPUTE)) {
                    /* allocated, pinned, by a batch in flight: hold that pin through g */
                    live_map_put(&tr->hold, ids[i], g->seq);
                    LIVE_PUSH(g->held, g->nheld, g->cap_held, ids[i]);
                    continue;
                }
                if (pend != NULL) {
                    live_group_t *a = live_find_group(ring, nring, *pend / 2);

                    if (a != NULL) {
                        live_group_complete(tr, cost, a); /* its handle is needed now */
                    }
                }
                h = live_map_slot(&tr->map, ids[i]);
                if ((h == NULL) || (*h == 0)) {
                    continue; /* refused earlier */
                }
                c = live_map_slot(&cost->map, ids[i]);
                if ((memsvc_batch_acquire(b, *h, NULL) != MEMSVC_OK) ||
                    !LIVE_PUSH(g->slot, g->nslot, g->cap_slot,
                               ((live_slot_t){.what         = LIVE_SLOT_ACQUIRE,
                                              .tensor       = ids[i],
                                              .recompute_ns = (c != NULL) ? *c - 1 : 0}))) {
                    tr->r->errors++;
                }
            }
            break;
        }
        default:
            break;
        }
    }
    if (memsvc_batch_size(b) == 0) {
        return;
    }
    tr->r->batches++;
    s = memsvc_batch_submit(b, &g->req);
    if (s != MEMSVC_INPROGRESS) {
        g->req = NULL; /* failed at once: every entry says why */
    } else {
        memsvc_progress(tr->conn); /* on its way */
    }
}

/*
 * Entries the prefetch could not place (earlier operators still held their pins) are asked
 * again now, on demand, after the previous operator's releases: one synchronous batch, in
 * the original order.
 */
static void live_group_retry(live_trainer_t *tr, live_cost_t *cost, live_group_t *g)
{
    live_slot_t *keep;
    size_t       i, n = 0, m = 0;

    for (i = 0; i < g->nslot; i++) {
        n += (g->slot[i].what & LIVE_SLOT_RETRY) != 0;
    }
    if (n == 0) {
        return;
    }
    keep = malloc(n * sizeof(*keep));
    if (keep == NULL) {
        tr->r->errors += n;
        return;
    }
    memsvc_batch_reset(g->batch);
    for (i = 0; i < g->nslot; i++) {
        live_slot_t    *sl = &g->slot[i];
        memsvc_status_t s  = MEMSVC_ERR_NOT_FOUND;

        if (!(sl->what & LIVE_SLOT_RETRY)) {
            continue;
        }
        sl->what &= (uint8_t)~LIVE_SLOT_RETRY;
        if (sl->what == LIVE_SLOT_ALLOC) {
            const live_ev_t *e = live_alloc_event(g, sl->tensor);

            if (e != NULL) {
                memsvc_alloc_params_t ap = live_alloc_params(&e->ev, sl->pin);

                s = memsvc_batch_alloc(g->batch, e->key, e->ev.size, &ap, NULL);
            }
        } else {
            uint64_t *h = live_map_slot(&tr->map, sl->tensor);

            if ((h != NULL) && (*h != 0)) {
                s = memsvc_batch_acquire(g->batch, *h, NULL);
            }
        }
        if (s == MEMSVC_OK) {
            keep[m++] = *sl;
        } else {
            if (sl->what == LIVE_SLOT_ALLOC) {
                live_map_del(&tr->pend, sl->tensor);
            }
            tr->r->errors++;
        }
    }
    g->nslot = 0;
    for (i = 0; i < m; i++) {
        LIVE_PUSH(g->slot, g->nslot, g->cap_slot, keep[i]);
    }
    free(keep);
    tr->r->retries += g->nslot;
    memsvc_batch_submit(g->batch, NULL);
    live_group_collect(tr, cost, g, false);
}

/* The operator's start: frees (one-way), deferred allocs, then its prefetched batch. */
static void live_group_start(live_trainer_t *tr, live_cost_t *cost, live_group_t *g)
{
    memsvc_batch_h late = NULL;
    uint64_t       t0   = live_now();
    size_t         k;

    live_freeing(tr, g, false); /* (before the frees below forget the keys) */
    for (k = 0; k < g->n; k++) {
        live_ev_t *e = &g->ev[k];

        tr->r->events++;
        if (e->ev.type == MT_EV_FREE) {
            uint64_t *h = live_map_slot(&tr->map, e->ev.tensor);

            if (h != NULL) {
                memsvc_free(tr->conn, *h);
                live_map_del(&tr->map, e->ev.tensor);
                live_map_del(&cost->map, e->ev.tensor);
                live_map_del(&tr->keys, e->ev.tensor);
                live_map_del(&tr->hold, e->ev.tensor);
            }
        } else if ((e->ev.type == MT_EV_ALLOC) && e->deferred) {
            bool                  pin = live_used_by_op(g, e->ev.tensor);
            memsvc_alloc_params_t ap  = live_alloc_params(&e->ev, pin);
            memsvc_handle_t       h;
            memsvc_status_t       s;

            tr->r->late_allocs++;
            if ((late == NULL) && (memsvc_batch_create(tr->conn, &late) != MEMSVC_OK)) {
                tr->r->errors++;
                continue;
            }
            memsvc_batch_reset(late);
            s = memsvc_batch_alloc(late, e->key, e->ev.size, &ap, NULL);
            if (s == MEMSVC_OK) {
                memsvc_batch_submit(late, NULL); /* carries the frees before it */
                s = memsvc_batch_result(late, 0, &h);
            }
            if (s == MEMSVC_OK) {
                live_alloc_done(tr, cost, g, e->ev.tensor, h, pin);
            } else {
                live_map_del(&tr->pend, e->ev.tensor);
                live_refused(tr, s);
            }
        }
    }
    memsvc_batch_destroy(late);
    live_group_complete(tr, cost, g);
    live_group_retry(tr, cost, g);
    tr->r->stall_ns += live_idle_since(tr, t0);
}

/* The operator itself, then its releases (one-way), and those of pins held for it. */
static void live_group_run(live_trainer_t *tr, live_group_t *g)
{
    size_t i;

    if ((g->n > 0) && (g->ev[g->n - 1].ev.type == MT_EV_COMPUTE) &&
        (g->ev[g->n - 1].ev.stream == 0)) {
        uint64_t ns = (uint64_t)((double)g->ev[g->n - 1].ev.duration_ns * tr->p->time_scale);

        live_compute(tr, ns);
        tr->r->compute_ns += ns;
        tr->r->ops++;
    }
    for (i = 0; i < g->npinned; i++) {
        memsvc_release(tr->conn, g->pinned[i]);
    }
    for (i = 0; i < g->nheld; i++) {
        uint64_t *last = live_map_slot(&tr->hold, g->held[i]);
        uint64_t *h    = live_map_slot(&tr->map, g->held[i]);

        if ((last != NULL) && (*last == g->seq)) { /* the last operator holding it */
            if ((h != NULL) && (*h != 0)) {
                memsvc_release(tr->conn, *h);
            }
            live_map_del(&tr->hold, g->held[i]);
        }
    }
    g->npinned = 0;
    g->nheld   = 0;
}

/* Deferred errors of one-way requests count as errors. */
static void live_drain_errors(live_trainer_t *tr, bool flush)
{
    memsvc_deferred_error_t e[16];
    size_t                  n, i;
    memsvc_status_t         s = MEMSVC_OK;

    if (flush && ((s = memsvc_flush(tr->conn)) == MEMSVC_OK)) {
        return;
    }
    live_check_lost(tr, s);
    while ((n = memsvc_errors(tr->conn, e, 16)) > 0) {
        tr->r->errors += n;
        for (i = 0; i < n; i++) {
            live_check_lost(tr, e[i].status);
        }
    }
}

/* The rank's events, operator by operator, the next `prefetch` operators' batches in flight. */
static void live_trainer_batched(live_trainer_t *tr, live_cost_t *cost, mt_reader_t *reader,
                                 uint32_t rank)
{
    live_group_t ring[LIVE_PREFETCH_MAX + 1];
    size_t       depth = tr->p->prefetch, nring, head = 0, ahead = 0, i;
    bool         end = false;
    uint64_t     ops = 0;

    if (depth == 0) {
        depth = LIVE_PREFETCH_DEFAULT;
    }
    if (depth > LIVE_PREFETCH_MAX) {
        depth = LIVE_PREFETCH_MAX;
    }
    nring = depth + 1;
    memset(ring, 0, sizeof(ring));
    for (i = 0; i < nring; i++) {
        if (memsvc_batch_create(tr->conn, &ring[i].batch) != MEMSVC_OK) {
            tr->r->status = MEMSVC_ERR_NO_RESOURCE;
            goto out;
        }
    }
    /* ring[head] is the operator to run; ring[head+1 .. head+ahead] are prefetched after it */
    if ((live_group_load(tr, reader, rank, &ring[head], &end) != MEMSVC_OK) ||
        (ring[head].n == 0)) {
        goto out;
    }
    live_group_prefetch(tr, cost, &ring[head], ring, nring);
    for (;;) {
        live_group_t *cur = &ring[head];

        live_group_start(tr, cost, cur);
        while (!end && (ahead < depth)) {
            live_group_t *g = &ring[(head + 1 + ahead) % nring];

            if (live_group_load(tr, reader, rank, g, &end) != MEMSVC_OK) {
                goto out;
            }
            if (g->n == 0) {
                break;
            }
            live_group_prefetch(tr, cost, g, ring, nring); /* in flight while earlier ones run */
            ahead++;
        }
        live_group_run(tr, cur);
        if ((++ops % 4096) == 0) {
            live_drain_errors(tr, false);
        }
        if (tr->lost) {
            goto out; /* what is in flight fails too: nothing more to learn */
        }
        if (ahead == 0) {
            break;
        }
        head = (head + 1) % nring;
        ahead--;
    }
    live_drain_errors(tr, true);
out:
    for (i = 0; i < nring; i++) {
        live_group_free(&ring[i]);
    }
}

/* The body of one trainer process: replays `rank` of the trace at path. */
static void live_trainer(const char *path, uint32_t rank, const mt_live_params_t *p,
                         mt_live_rank_t *r)
{
    memsvc_conn_params_t cp;
    live_trainer_t       tr;
    live_cost_t          cost;
    mt_reader_t         *reader = NULL;
    mt_event_t           ev;
    bool                 end = false;
    char                 key[MEMSVC_KEY_MAX + 1], err[256], name[32];
    uint64_t             t0;
    memsvc_status_t      s;

    memset(&tr, 0, sizeof(tr));
    memset(&cost, 0, sizeof(cost));
    tr.p = p;
    tr.r = r;
    s    = mt_reader_open(path, &reader, err, sizeof(err));
    if (s != MEMSVC_OK) {
        r->status = s;
        snprintf(r->message, sizeof(r->message), "%.200s", err);
        return;
    }
    snprintf(name, sizeof(name), "memtrace-live-r%u", rank);
    memset(&cp, 0, sizeof(cp));
    cp.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_RANK |
                    MEMSVC_CONN_FIELD_DEVICE | MEMSVC_CONN_FIELD_NAME;
    cp.address = p->address;
    cp.job     = p->job;
    cp.rank    = rank;
    cp.device  = r->device;
    cp.name    = name;
    if (p->per_request) {
        cp.field_mask |= MEMSVC_CONN_FIELD_FLAGS;
        cp.flags = MEMSVC_CONN_SYNC; /* every request answered, as before batching */
    } else {
        /* releases and frees ride on the next operator's batch, whatever the operator's length */
        cp.field_mask |= MEMSVC_CONN_FIELD_CORK_US;
        cp.cork_us = 10000;
    }
    if (p->timeout_ms > 0) {
        cp.field_mask |= MEMSVC_CONN_FIELD_TIMEOUT_MS;
        cp.timeout_ms = p->timeout_ms;
    }
    s = memsvc_connect(&cp, &tr.conn);
    if (s != MEMSVC_OK) {
        r->status = s;
        snprintf(r->message, sizeof(r->message), "cannot connect to %s: %s", p->address,
                 memsvc_strerror(s));
        mt_reader_close(reader);
        return;
    }
    snprintf(r->transport, sizeof(r->transport), "%s", memsvc_conn_transport(tr.conn));
    t0          = live_now();
    tr.sched_ns = t0;
    if (!p->per_request) {
        live_trainer_batched(&tr, &cost, reader, rank);
    }
    while (p->per_request) {
        s = mt_reader_next(reader, &ev, &end, err, sizeof(err));
        if (s != MEMSVC_OK) {
            r->status = s;
            snprintf(r->message, sizeof(r->message), "%.200s", err);
            break;
        }
        if (end) {
            break;
        }
        if (ev.rank == rank) {
            live_event(&tr, &cost, &ev, key, sizeof(key));
        }
        if (tr.lost) {
            break;
        }
    }
    live_compute(&tr, 0);
    live_sleep_until(tr.sched_ns); /* the device finishes what was queued */
    r->wall_ns = live_now() - t0;
    memsvc_close(tr.conn);
    mt_reader_close(reader);
    free(tr.map.ids);
    free(tr.map.handles);
    free(cost.map.ids);
    free(cost.map.handles);
    free(tr.keys.ids);
    free(tr.keys.handles);
    free(tr.pend.ids);
    free(tr.pend.handles);
    free(tr.hold.ids);
    free(tr.hold.handles);
    free(tr.freeing.ids);
    free(tr.freeing.handles);
}

/* ---- the parent: one process per (trace, rank) --------------------------------------------- */

static memsvc_status_t live_daemon_stats(const mt_live_params_t *p, memsvc_stats_t *stats_p)
{
    memsvc_conn_params_t cp;
    memsvc_conn_h        conn;
    memsvc_status_t      s;

    memset(&cp, 0, sizeof(cp));
    cp.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_FLAGS |
                    MEMSVC_CONN_FIELD_NAME;
    cp.address    = p->address;
    cp.job        = 0; /* a control session: it sees the daemon, owns no tensors */
    cp.flags      = MEMSVC_CONN_CONTROL;
    cp.name       = "memtrace-live";
    s             = memsvc_connect(&cp, &conn);
    if (s != MEMSVC_OK) {
        return s;
    }
    s = memsvc_stats(conn, stats_p);
    memsvc_close(conn);
    return s;
}

memsvc_status_t mt_replay_live(const char *const *paths, int num_paths,
                               const mt_live_params_t *params, mt_live_report_t *report_p,
                               char *err, size_t errlen)
{
    pid_t           pids[MT_LIVE_MAX_PROCS];
    int             fds[MT_LIVE_MAX_PROCS];
    uint32_t        n = 0, i, devices = 1;
    memsvc_stats_t  st;
    memsvc_status_t s;
    int             t;

    memset(report_p, 0, sizeof(*report_p));
    /* the daemon must be there before any trainer starts; it also says how many devices */
    s = live_daemon_stats(params, &st);
    if (s != MEMSVC_OK) {
        memsvc_errf(err, errlen, "cannot reach memsvcd at %s: %s", params->address,
                    memsvc_strerror(s));
        return MEMSVC_ERR_TRANSPORT;
    }
    devices = (st.num_devices > 0) ? st.num_devices : 1;
    for (i = 0; i < st.num_devices && i < MEMSVC_MAX_DEVICES; i++) {
        report_p->stall_before[i] = st.dev[i].stall_ns;
    }
    report_p->requests = st.requests;
    for (t = 0; t < num_paths; t++) {
        /* the ranks a trace holds: the distinct ranks of its events, in order of appearance */
        uint32_t     ranks[MT_LIVE_MAX_PROCS], nr = 0, k;
        mt_reader_t *r;
        mt_event_t   ev;
        bool         end = false;

        s = mt_reader_open(paths[t], &r, err, errlen);
        if (s != MEMSVC_OK) {
            return s;
        }
        while ((s = mt_reader_next(r, &ev, &end, err, errlen)) == MEMSVC_OK && !end) {
            for (k = 0; k < nr && ranks[k] != ev.rank; k++) {
            }
            if (k == nr) {
                if (nr == MT_LIVE_MAX_PROCS) {
                    break;
                }
                ranks[nr++] = ev.rank;
            }
        }
        mt_reader_close(r);
        if (s != MEMSVC_OK) {
            return s;
        }
        for (k = 0; k < nr; k++) {
            if (n == MT_LIVE_MAX_PROCS) {
                memsvc_errf(err, errlen, "more than %d ranks in all", MT_LIVE_MAX_PROCS);
                return MEMSVC_ERR_TOO_LARGE;
            }
            report_p->procs[n].trace  = (uint32_t)t;
            report_p->procs[n].rank   = ranks[k];
            report_p->procs[n].device = n % devices;
            n++;
        }
    }
    report_p->num_procs = n;
    fflush(NULL);
    for (i = 0; i < n; i++) {
        int   pipefd[2];
        pid_t pid;

        if (pipe(pipefd) != 0) {
            memsvc_errf(err, errlen, "pipe: %s", strerror(errno));
            n = i;
            break;
        }
        pid = fork();
        if (pid == 0) {
            mt_live_rank_t *r = &report_p->procs[i];
            ssize_t         w;

            close(pipefd[0]);
            live_trainer(paths[r->trace], r->rank, params, r);
            w = write(pipefd[1], r, sizeof(*r));
            _exit(w == (ssize_t)sizeof(*r) ? 0 : 1);
        }
        close(pipefd[1]);
        if (pid < 0) {
            close(pipefd[0]);
            memsvc_errf(err, errlen, "fork: %s", strerror(errno));
            n = i;
            break;
        }
        pids[i] = pid;
        fds[i]  = pipefd[0];
    }
    for (i = 0; i < n; i++) {
        mt_live_rank_t r;
        ssize_t        got = read(fds[i], &r, sizeof(r));
        int            wst;

        close(fds[i]);
        waitpid(pids[i], &wst, 0);
        if (got == (ssize_t)sizeof(r)) {
            report_p->procs[i] = r;
        } else {
            report_p->procs[i].status = MEMSVC_ERR_TRANSPORT;
            snprintf(report_p->procs[i].message, sizeof(report_p->procs[i].message),
                     "trainer process ended without a result (status %d)", wst);
        }
        if (report_p->procs[i].wall_ns > report_p->wall_ns) {
            report_p->wall_ns = report_p->procs[i].wall_ns;
        }
        if (report_p->procs[i].compute_ns > report_p->compute_ns) {
            report_p->compute_ns = report_p->procs[i].compute_ns;
        }
    }
    report_p->have_daemon = (live_daemon_stats(params, &report_p->daemon) == MEMSVC_OK);
    /* the two control sessions (before and after) sent HELLO and STATS each */
    report_p->requests =
        (report_p->have_daemon && report_p->daemon.requests >= report_p->requests + 3)
            ? report_p->daemon.requests - report_p->requests - 3
            : 0;
    return (n == report_p->num_procs) ? MEMSVC_OK : MEMSVC_ERR_NO_RESOURCE;
}

/* ---- reports ----------------------------------------------------------------------------- */

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

void mt_live_report_print(const mt_live_report_t *rep, const mt_live_params_t *p, FILE *out)
{
    uint32_t i, d;

    fprintf(out, "live replay      %u trainer process(es) against memsvcd at %s, job %u, "
                 "time scale %g\n",
            rep->num_procs, p->address, p->job, p->time_scale);
    if (rep->have_daemon) {
        fprintf(out, "daemon           node %s, %s memory, policy %s, transport %s\n",
                rep->daemon.node, rep->daemon.mode, rep->daemon.policy, rep->daemon.transport);
    }
    fprintf(out, "wall time        %.3f ms  (ideal compute %.3f ms, overhead %+.2f%%)\n",
            ms(rep->wall_ns), ms(rep->compute_ns),
            rep->compute_ns ? 100.0 * ((double)rep->wall_ns / (double)rep->compute_ns - 1.0)
                            : 0.0);
    {
        uint64_t busy = 0, waiting = 0;

        for (i = 0; i < rep->num_procs; i++) {
            const mt_live_rank_t *r = &rep->procs[i];

            if (r->wall_ns == rep->wall_ns) { /* the trainer that took longest */
                busy    = r->compute_ns + r->recompute_ns;
                waiting = r->stall_ns;
            }
        }
        fprintf(
            out,
            "device           busy %.3f ms (compute + recompute), idle waiting for memory %.3f ms"
            " (the policy's stalls and round trips not hidden): %.3f ms; wall is %+.2f%% over "
            "it\n",
            ms(busy), ms(waiting), ms(busy + waiting),
            (busy + waiting) ? 100.0 * ((double)rep->wall_ns / (double)(busy + waiting) - 1.0)
                             : 0.0);
    }
    fprintf(out, "requests         %" PRIu64 " request messages to the daemon (%s)\n",
            rep->requests,
            p->per_request ? "per-request mode: one answered request per event"
                           : "one batch per operator, prefetched; releases, frees one-way");
    fprintf(out,
            "                 wall = compute + recompute (the device busy) + waiting for memory\n"
            "                 (the device idle while its trainer waited for an operator's\n"
            "                 acquires) + the rest (the device idle otherwise: client work;\n"
            "                 in per-request mode the round trips of allocs, frees, releases\n"
            "                 and hints)\n");
    for (i = 0; i < rep->num_procs; i++) {
        const mt_live_rank_t *r = &rep->procs[i];

        fprintf(out,
                "  trainer %-2u     trace %u rank %u npu%u: %" PRIu64 " events, %" PRIu64
                " ops, wall %.3f ms = compute %.3f + waiting for memory %.3f + recompute %.3f"
                " (%" PRIu64 ") + rest %.3f; %" PRIu64 " batches, %" PRIu64 " prefetches retried"
                " on demand, %" PRIu64 " allocs after a free of their key; %" PRIu64
                " refused for memory, %" PRIu64 " other errors%s%s\n",
                i, r->trace, r->rank, r->device, r->events, r->ops, ms(r->wall_ns),
                ms(r->compute_ns), ms(r->stall_ns), ms(r->recompute_ns), r->recomputes,
                ms(r->wall_ns > r->compute_ns + r->stall_ns + r->recompute_ns
                       ? r->wall_ns - r->compute_ns - r->stall_ns - r->recompute_ns
                       : 0),
                r->batches, r->retries, r->late_allocs, r->ooms, r->errors,
                r->status < 0 ? "; FAILED: " : "", r->status < 0 ? r->message : "");
    }
    if (!rep->have_daemon) {
        return;
    }
    for (d = 0; d < rep->daemon.num_devices && d < MEMSVC_MAX_DEVICES; d++) {
        const memsvc_dev_stats_t *s = &rep->daemon.dev[d];

        if (s->peak_reserved == 0) {
            continue;
        }
        fprintf(
            out,
            "  npu%-2u          peak reserved %.1f MiB of %.1f MiB; swapped out %.1f MiB (%" PRIu64
            " moves), in %.1f MiB (%" PRIu64 "); drops %" PRIu64 ", recomputes %" PRIu64
            "; daemon-side stall %.3f ms during this replay (summed over waiting requests: "
            "prefetched ones overlap compute; other counters since the daemon started)\n",
            d, s->peak_reserved / 1048576.0, s->capacity / 1048576.0, s->swap_out_bytes / 1048576.0,
            s->swap_outs, s->swap_in_bytes / 1048576.0, s->swap_ins, s->drops, s->recomputes,
            ms(s->stall_ns - rep->stall_before[d]));
    }
}

void mt_live_report_json(const mt_live_report_t *rep, const mt_live_params_t *p, FILE *out)
{
    uint32_t i, d;

    fprintf(out, "{\n  \"address\": ");
    memsvc_json_string(p->address, out);
    fprintf(out, ",\n  \"job\": %u,\n  \"time_scale\": %g,\n", p->job, p->time_scale);
    fprintf(out,
            "  \"per_request\": %s,\n  \"requests\": %" PRIu64 ",\n  \"wall_ns\": %" PRIu64
            ",\n  \"compute_ns\": %" PRIu64 ",\n  \"trainers\": [",
            p->per_request ? "true" : "false", rep->requests, rep->wall_ns, rep->compute_ns);
    for (i = 0; i < rep->num_procs; i++) {
        const mt_live_rank_t *r = &rep->procs[i];

        fprintf(out,
                "%s\n    {\"trace\": %u, \"rank\": %u, \"device\": %u, \"status\": \"%s\", "
                "\"events\": %" PRIu64 ", \"ops\": %" PRIu64 ", \"wall_ns\": %" PRIu64
                ", \"compute_ns\": %" PRIu64 ", \"stall_ns\": %" PRIu64 ", \"recomputes\": %" PRIu64
                ", \"recompute_ns\": %" PRIu64 ", \"refused_for_memory\": %" PRIu64
                ", \"errors\": %" PRIu64 ", \"batches\": %" PRIu64 ", \"retries\": %" PRIu64 "}",
                i ? "," : "", r->trace, r->rank, r->device,
                memsvc_status_name((memsvc_status_t)r->status), r->events, r->ops, r->wall_ns,
                r->compute_ns, r->stall_ns, r->recomputes, r->recompute_ns, r->ooms, r->errors,
                r->batches, r->retries);
    }
    fprintf(out, "\n  ]");
    if (rep->have_daemon) {
        fprintf(out, ",\n  \"daemon\": {\"node\": ");
        memsvc_json_string(rep->daemon.node, out);
        fprintf(out, ", \"memory\": ");
        memsvc_json_string(rep->daemon.mode, out);
        fprintf(out, ", \"policy\": ");
        memsvc_json_string(rep->daemon.policy, out);
        fprintf(out, ", \"devices\": [");
        for (d = 0; d < rep->daemon.num_devices && d < MEMSVC_MAX_DEVICES; d++) {
            const memsvc_dev_stats_t *s = &rep->daemon.dev[d];

            fprintf(out,
                    "%s{\"peak_reserved\": %" PRIu64 ", \"swap_out_bytes\": %" PRIu64
                    ", \"swap_in_bytes\": %" PRIu64 ", \"drops\": %" PRIu64
                    ", \"recomputes\": %" PRIu64 ", \"stall_ns\": %" PRIu64 "}",
                    d ? ", " : "", s->peak_reserved, s->swap_out_bytes, s->swap_in_bytes,
                    s->drops, s->recomputes, s->stall_ns);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "\n}\n");
}
