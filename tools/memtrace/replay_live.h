/* replay_live.h - live replay: a trace's ranks as trainer processes against a running memsvcd */
#ifndef MT_REPLAY_LIVE_H
#define MT_REPLAY_LIVE_H

#include "client/memsvc.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define MT_LIVE_MAX_PROCS 64
#define LIVE_PREFETCH_MAX 16 /* operators' batches in flight ahead, at most */
#define LIVE_PREFETCH_DEFAULT 8

typedef struct mt_live_params {
    const char *address;    /* memsvcd's HOST:PORT */
    uint32_t    job;        /* job id the trainers use (default: 1000 + pid % 1000) */
    double      time_scale; /* compute and recompute durations are slept for this fraction */
    int         timeout_ms; /* per request; 0: the client's default */
    bool        per_request; /* one answered request per event (as before batching) */
    unsigned    prefetch;    /* operators whose batches are in flight ahead (1..16; 0: 8) */
} mt_live_params_t;

/* What one trainer process saw (wall-clock figures, in nanoseconds). */
typedef struct mt_live_rank {
    uint32_t trace;       /* index of its trace on the command line */
    uint32_t rank;        /* rank in that trace */
    uint32_t device;      /* device its session is bound to */
    int32_t  status;      /* MEMSVC_OK, or the error that stopped it */
    uint64_t events;      /* events replayed */
    uint64_t ops;         /* compute operators run */
    uint64_t wall_ns;     /* from connect to the last event */
    uint64_t compute_ns;  /* scaled operator time slept (the ideal step) */
    uint64_t stall_ns;    /* device idle while the trainer waited for its acquires/batches */
    uint64_t recompute_ns;/* scaled recompute time slept after RECOMPUTE answers */
    uint64_t recomputes;
    uint64_t ooms;        /* allocations refused (NO_MEMORY / FRAGMENTED) */
    uint64_t errors;      /* other refused requests (and failed one-way ones) */
    uint64_t batches;     /* operator batches submitted (0 in per-request mode) */
    uint64_t retries;     /* prefetched allocs/acquires refused for room, asked again on demand */
    uint64_t late_allocs; /* allocs that waited at the operator's start for a free of their key */
    char     transport[64];
    char     message[256]; /* the error, if status < 0 */
} mt_live_rank_t;

typedef struct mt_live_report {
    uint32_t       num_procs;
    mt_live_rank_t procs[MT_LIVE_MAX_PROCS];
    memsvc_stats_t daemon;      /* the daemon's figures after the replay */
    bool           have_daemon;
    uint64_t       wall_ns;     /* longest trainer */
    uint64_t       compute_ns;  /* largest ideal (scaled) compute of a trainer */
    uint64_t       requests;    /* request messages the daemon received during the replay */
    uint64_t       stall_before[MEMSVC_MAX_DEVICES]; /* daemon-side stall_ns before it */
} mt_live_report_t;

/*
 * Replay the traces through the daemon: one trainer process per (trace, rank), each with its
 * own session (job params->job, its rank, device = its index modulo the daemon's devices);
 * keys are prefixed with "r<rank>." so that ranks do not collide within the job. Each
 * process walks its rank's events one operator at a time: the events up to a COMPUTE and the
 * COMPUTE itself. Its hints, allocs (pinned) and the acquires of the operator's reads and
 * writes go in one batch, submitted asynchronously while the previous operator computes
 * (prefetch); the operator waits for it, sleeps its duration x time_scale (on a schedule, so
 * short operators add up), then releases what it pinned and frees what died with one-way
 * requests that ride on the next batch. An alloc whose key was freed earlier in the same
 * operator waits for that free (a second, synchronous batch). A RECOMPUTE answer sleeps the
 * tensor's recompute time x time_scale. Communication (stream != 0) is not slept.
 * With params->per_request, each event is its own answered request (MEMSVC_CONN_SYNC):
 * ALLOC -> memsvc_alloc, FREE -> memsvc_free, HINT -> memsvc_hint, ACCESS -> acquire +
 * release, COMPUTE -> acquire_many, sleep, release_many. Errors: MEMSVC_ERR_IO / MEMSVC_ERR_FORMAT
 * (trace), MEMSVC_ERR_TRANSPORT (daemon unreachable), MEMSVC_ERR_TOO_LARGE (more than
 * MT_LIVE_MAX_PROCS ranks); the message is in err. A trainer's own failure is in its entry.
 */
memsvc_status_t mt_replay_live(const char *const *paths, int num_paths,
                               const mt_live_params_t *params, mt_live_report_t *report_p,
                               char *err, size_t errlen);

void mt_live_report_print(const mt_live_report_t *report, const mt_live_params_t *params,
                          FILE *out);
void mt_live_report_json(const mt_live_report_t *report, const mt_live_params_t *params,
                         FILE *out);

#endif /* MT_REPLAY_LIVE_H */
