/* sim_clock.c - the simulated node's clock: one event heap, virtual and real time as ops */
#include "sim_npu/sim_clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct sim_event {
    sim_time_t     when; /* due time */
    uint64_t       seq;  /* insertion order: FIFO among equal times */
    sim_event_cb_t cb;
    void          *arg;
} sim_event_t;

struct sim_clock {
    const sim_clock_ops_t *ops;
    sim_clock_kind_t       kind;
    sim_time_t             vnow;   /* virtual: current time */
    struct timespec        origin; /* real: CLOCK_MONOTONIC at creation */
    sim_event_t           *heap;   /* binary min-heap on (when, seq) */
    size_t                 count;
    size_t                 cap;
    uint64_t               seq;
};

/* ---- the two clocks ------------------------------------------------------------------------ */

static sim_time_t sim_virtual_now(const sim_clock_t *clock)
{
    return clock->vnow;
}

static void sim_virtual_advance_to(sim_clock_t *clock, sim_time_t t)
{
    if (t > clock->vnow) {
        clock->vnow = t;
    }
}

static sim_time_t sim_real_now(const sim_clock_t *clock)
{
    struct timespec ts;
    int64_t         ns;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ns = (int64_t)(ts.tv_sec - clock->origin.tv_sec) * 1000000000 +
         (ts.tv_nsec - clock->origin.tv_nsec);
    return (ns > 0) ? (sim_time_t)ns : 0;
}

/* Sleep until the clock reads at least t (absolute deadline, so EINTR just retries). */
static void sim_real_advance_to(sim_clock_t *clock, sim_time_t t)
{
    struct timespec deadline;
    uint64_t        nsec;

    if (t == SIM_TIME_NEVER) {
        return;
    }
    nsec             = (uint64_t)clock->origin.tv_nsec + t % 1000000000u;
    deadline.tv_sec  = clock->origin.tv_sec + (time_t)(t / 1000000000u) + (time_t)(nsec / 1000000000u);
    deadline.tv_nsec = (long)(nsec % 1000000000u);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR) {
    }
}

static const sim_clock_ops_t sim_clock_virtual_ops = {
    .name       = "virtual",
    .now        = sim_virtual_now,
    .advance_to = sim_virtual_advance_to,
};

static const sim_clock_ops_t sim_clock_real_ops = {
    .name       = "real",
    .now        = sim_real_now,
    .advance_to = sim_real_advance_to,
};

memsvc_status_t sim_clock_create(sim_clock_kind_t kind, sim_clock_t **clock_p)
{
    sim_clock_t *clock;

    if ((clock_p == NULL) || ((kind != SIM_CLOCK_VIRTUAL) && (kind != SIM_CLOCK_REAL))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    clock = calloc(1, sizeof(*clock));
    if (clock == NULL) {
        fprintf(stderr, "sim_clock: out of memory creating the clock\n");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    clock->kind = kind;
    clock->ops  = (kind == SIM_CLOCK_VIRTUAL) ? &sim_clock_virtual_ops : &sim_clock_real_ops;
    clock_gettime(CLOCK_MONOTONIC, &clock->origin);
    *clock_p = clock;
    return MEMSVC_OK;
}

void sim_clock_destroy(sim_clock_t *clock)
{
    if (clock == NULL) {
        return;
    }
    free(clock->heap);
    free(clock);
}

sim_time_t sim_clock_now(const sim_clock_t *clock)
{
    return clock->ops->now(clock);
}

const char *sim_clock_name(const sim_clock_t *clock)
{
    return clock->ops->name;
}

bool sim_clock_is_virtual(const sim_clock_t *clock)
{
    return clock->kind == SIM_CLOCK_VIRTUAL;
}

/* ---- the event heap ------------------------------------------------------------------------ */

static bool sim_event_before(const sim_event_t *a, const sim_event_t *b)
{
    return (a->when < b->when) || ((a->when == b->when) && (a->seq < b->seq));
}

memsvc_status_t sim_clock_schedule(sim_clock_t *clock, sim_time_t when, sim_event_cb_t cb, void *arg)
{
    sim_event_t ev;
    size_t      i;

    if ((cb == NULL) || (when == SIM_TIME_NEVER)) {
        return MEMSVC_ERR_INVALID_PARAM; /* an event at NEVER could never run */
    }
    if (clock->count == clock->cap) {
        size_t       cap  = (clock->cap == 0) ? 64 : clock->cap * 2;
        sim_event_t *heap = realloc(clock->heap, cap * sizeof(*heap));

        if (heap == NULL) {
            fprintf(stderr, "sim_clock: cannot grow the event queue to %zu events\n", cap);
            return MEMSVC_ERR_NO_RESOURCE;
        }
        clock->heap = heap;
        clock->cap  = cap;
    }
    ev.when = when;
    ev.seq  = clock->seq++;
    ev.cb   = cb;
    ev.arg  = arg;
    /* Sift up. */
    i = clock->count++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (!sim_event_before(&ev, &clock->heap[parent])) {
            break;
        }
        clock->heap[i] = clock->heap[parent];
        i              = parent;
    }
    clock->heap[i] = ev;
    return MEMSVC_OK;
}

/* Remove the earliest event into *ev_p. Caller checks count > 0. */
static void sim_clock_pop(sim_clock_t *clock, sim_event_t *ev_p)
{
    sim_event_t last;
    size_t      i = 0, n;

    *ev_p = clock->heap[0];
    n     = --clock->count;
    if (n == 0) {
        return;
    }
    last = clock->heap[n];
    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= n) {
            break;
        }
        if ((c + 1 < n) && sim_event_before(&clock->heap[c + 1], &clock->heap[c])) {
            c++;
        }
        if (!sim_event_before(&clock->heap[c], &last)) {
            break;
        }
        clock->heap[i] = clock->heap[c];
        i              = c;
    }
    clock->heap[i] = last;
}

sim_time_t sim_clock_next(const sim_clock_t *clock)
{
    return (clock->count == 0) ? SIM_TIME_NEVER : clock->heap[0].when;
}

size_t sim_clock_pending(const sim_clock_t *clock)
{
    return clock->count;
}

/*
 * Run every event due at or before the time read at entry, in (time, insertion) order. The
 * event is removed from the heap before its callback runs, so callbacks may schedule (even at
 * the current time: such events run in this same call) while the heap grows.
 */
size_t sim_clock_run_due(sim_clock_t *clock)
{
    sim_time_t  now = sim_clock_now(clock);
    sim_event_t ev;
    size_t      ran = 0;

    while ((clock->count > 0) && (clock->heap[0].when <= now)) {
        sim_clock_pop(clock, &ev);
        ev.cb(ev.arg, ev.when);
        ran++;
    }
    return ran;
}

bool sim_clock_step(sim_clock_t *clock)
{
    if (clock->count == 0) {
        return false;
    }
    clock->ops->advance_to(clock, clock->heap[0].when);
    sim_clock_run_due(clock);
    return true;
}

void sim_clock_advance_to(sim_clock_t *clock, sim_time_t t)
{
    clock->ops->advance_to(clock, t);
}
