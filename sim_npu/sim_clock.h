/* sim_clock.h - the simulated node's clock: virtual (discrete-event) or real (wall clock) */
#ifndef SIM_CLOCK_H
#define SIM_CLOCK_H

#include "client/memsvc_status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t sim_time_t; /* nanoseconds since the clock was created */

#define SIM_TIME_NEVER UINT64_MAX

typedef struct sim_clock sim_clock_t;

typedef void (*sim_event_cb_t)(void *arg, sim_time_t when);

typedef enum sim_clock_kind {
    SIM_CLOCK_VIRTUAL, /* time jumps from event to event */
    SIM_CLOCK_REAL     /* time follows CLOCK_MONOTONIC; events fire no sooner than due */
} sim_clock_kind_t;

/* What varies between the two clocks. */
typedef struct sim_clock_ops {
    const char *name;
    sim_time_t (*now)(const sim_clock_t *clock);
    /* Move time forward to at least `t` (virtual: set; real: sleep until due). */
    void (*advance_to)(sim_clock_t *clock, sim_time_t t);
} sim_clock_ops_t;

memsvc_status_t sim_clock_create(sim_clock_kind_t kind, sim_clock_t **clock_p);
void            sim_clock_destroy(sim_clock_t *clock);

sim_time_t  sim_clock_now(const sim_clock_t *clock);
const char *sim_clock_name(const sim_clock_t *clock);
bool        sim_clock_is_virtual(const sim_clock_t *clock);

/*
 * Schedule cb(arg, when) to run at time `when` (a time in the past runs at the next
 * sim_clock_run_due). Events due at the same time run in the order they were scheduled.
 * Returns MEMSVC_ERR_NO_RESOURCE if the queue cannot grow.
 */
memsvc_status_t sim_clock_schedule(sim_clock_t *clock, sim_time_t when, sim_event_cb_t cb, void *arg);

/* Time of the earliest pending event, or SIM_TIME_NEVER. */
sim_time_t sim_clock_next(const sim_clock_t *clock);

/* Number of pending events. */
size_t sim_clock_pending(const sim_clock_t *clock);

/* Run every event due at or before now(); callbacks may schedule more. Returns how many ran. */
size_t sim_clock_run_due(sim_clock_t *clock);

/*
 * Advance to the next pending event and run all events due then. Virtual: time jumps.
 * Real: sleeps until it is due. Returns false if nothing was pending.
 */
bool sim_clock_step(sim_clock_t *clock);

/* Virtual clock only: move time forward to t (no-op if t is in the past) without running events. */
void sim_clock_advance_to(sim_clock_t *clock, sim_time_t t);

#endif /* SIM_CLOCK_H */
