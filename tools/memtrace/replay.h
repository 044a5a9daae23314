/* replay.h - memtrace replay: play a trace on a fresh engine with the virtual clock, and report */
#ifndef MT_REPLAY_H
#define MT_REPLAY_H

#include "client/memsvc_status.h"
#include "memsvc/eng.h"
#include "tools/memtrace/trace.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The semantics (operators, streams, stalls, recompute, out-of-memory, the unconstrained
 * baseline) are written down in docs/replay.md; users compare these figures across tools.
 */

#define MT_REPLAY_OOM_KEEP 64      /* out-of-memory events kept with their key (all are counted) */
#define MT_REPLAY_PLOT_MAX 2048    /* memory samples kept for the plot, per device */
#define MT_REPLAY_UNLIMITED "1PiB" /* HBM of the unconstrained baseline */
#define MT_REPLAY_DEPTH_MAX 64     /* deepest chain of recomputations of dropped inputs */

typedef struct mt_replay_params {
    const char        *node;      /* preset name; NULL: the trace header's node */
    const char *const *overrides; /* "key=value" node overrides, applied in order */
    size_t             num_overrides;
    sim_mem_mode_t     mode;        /* phantom (default) or backed */
    const char        *policy;      /* "NAME[:k=v,...]"; NULL: "lru" */
    bool               baseline;    /* mt_replay_file: also replay unconstrained (policy none) */
    bool               timeline;    /* keep memory samples for mt_replay_plot_svg */
    bool               progress;    /* progress bar on stderr (only if stderr is a terminal) */
    uint64_t           input_bytes; /* size of the trace file, for the progress bar (0: unknown) */
    double             thrash_limit; /* stop when recomputation exceeds this x the trace's
                                        compute (0: never; for comparisons only) */
    uint64_t           thrash_base_ns; /* that compute (mt_replay_file sets it from the
                                          unconstrained replay; 0: the compute so far) */
    uint32_t           top_n; /* mt_replay_file: the largest live tensors at each device's
                                 peak of live bytes, at most this many (0: none) */
} mt_replay_params_t;

#define MT_REPLAY_TOP_MAX 1000 /* largest top_n */

/* A live tensor at a device's peak (mt_replay_params_t.top_n). */
typedef struct mt_replay_top {
    char          key[MEMSVC_KEY_MAX + 1];
    uint32_t      rank;
    memsvc_kind_t kind;
    int32_t       layer; /* -1: none */
    uint64_t      size;
} mt_replay_top_t;

/* Figures of one device. */
typedef struct mt_replay_dev {
    bool       used;                            /* a tensor or operator of the trace was on it */
    uint64_t   capacity;                        /* HBM bytes */
    uint64_t   peak_allocated, peak_reserved;   /* allocator peaks, bytes */
    uint64_t   peak_by_kind[MEMSVC_KIND_COUNT]; /* peak resident bytes of each kind */
    sim_time_t compute_ns;                      /* operator time on its compute stream */
    sim_time_t stall_ns;                        /* operator waits for memory */
    sim_time_t recompute_ns;                    /* recomputation charged to its compute stream */
    uint64_t   recomputes;
    uint64_t   swap_out_bytes, swap_outs; /* device to host (or disk) */
    uint64_t   swap_in_bytes, swap_ins;   /* back to the device */
    uint64_t   spill_bytes, spills;       /* to disk */
    uint64_t   drops, prefetches;         /* policy decisions (swaps: swap_outs) */
    uint64_t   ooms;                      /* requests that failed for lack of memory */
    uint64_t   live_peak;       /* peak of the bytes of the live tensors the trace put on it
                                   (allocated and not yet freed, wherever the policy keeps them) */
    uint64_t   live_peak_event; /* index of the event (from 0) after which it was reached */
    uint64_t   live_peak_tensors; /* live tensors then */
    mt_replay_top_t *top;       /* the largest of them, by size (top_n; NULL: none) */
    uint32_t   num_top;
} mt_replay_dev_t;

/* One training step, delimited by STEP_BEGIN / STEP_END hints. */
typedef struct mt_replay_step {
    int32_t    step;       /* step number from the hint */
    sim_time_t begin, end; /* simulated time */
    sim_time_t compute_ns, stall_ns, recompute_ns;
    sim_time_t baseline_ns; /* the same step in the unconstrained replay (0: none) */
} mt_replay_step_t;

/* One request that failed for lack of device memory. */
typedef struct mt_replay_oom {
    char            key[MEMSVC_KEY_MAX + 1];
    uint32_t        rank, device;
    sim_time_t      time;        /* simulated time of the failure */
    uint64_t        size;        /* bytes asked for */
    uint64_t        short_bytes; /* size - largest free block at that moment */
    memsvc_status_t status;      /* MEMSVC_ERR_NO_MEMORY, _FRAGMENTED or _TOO_LARGE */
} mt_replay_oom_t;

typedef struct mt_replay_timeline mt_replay_timeline_t; /* memory samples for the plot */

#define MT_REPLAY_DECISIONS_KEEP 64 /* most recent policy moves kept in the report */

typedef struct mt_replay_report {
    /* what ran */
    char           trace_model[64];
    char           node[32];
    char           policy[128];
    sim_mem_mode_t mode;
    sim_alloc_mode_t alloc; /* the HBM allocator */
    uint64_t       hbm_bytes;
    unsigned       num_devices;

    /* events */
    uint64_t events; /* events replayed */
    uint64_t events_by_type[MT_EV_COUNT];
    uint64_t ignored_refs; /* references to skipped or unknown tensors */
    uint64_t renamed_keys; /* ALLOC keys live twice in a job, made unique */

    /* time (simulated, ns) */
    sim_time_t        total_ns;     /* first event to the end of the last operator */
    sim_time_t        compute_ns;   /* operator time on compute streams (stream 0) */
    sim_time_t        comm_ns;      /* operator time on other streams */
    sim_time_t        stall_ns;     /* operators waiting for memory */
    uint64_t          stalls;       /* operators that waited */
    sim_time_t        comm_wait_ns; /* operators waiting for other streams' outputs */
    sim_time_t        recompute_ns; /* recomputation charged to compute streams */
    uint64_t          recomputes;
    uint64_t          kept_freed;      /* tensors freed by the program but kept for a recipe */
    uint64_t          kept_freed_live; /* of those, held now */
    uint64_t          kept_freed_peak; /* most held at once */
    uint64_t          kept_dropped;    /* of those, dropped at their FREE (not in drops) */
    bool              thrashed;        /* stopped by params.thrash_limit */
    mt_replay_step_t *steps; /* per step (hints), num_steps of them */
    size_t            num_steps;

    /* memory */
    mt_replay_dev_t devs[SIM_MAX_NPUS];
    unsigned        busiest;                       /* device with the highest peak allocated */
    uint64_t        peak_allocated, peak_reserved; /* max over devices */
    uint64_t        host_peak, disk_peak, peer_peak; /* peer_peak: the peer tier (node peer=) */
    uint64_t        swap_out_bytes, swap_in_bytes, swap_outs, swap_ins, spill_bytes;
    uint64_t        drops, prefetches;

    /* out of memory */
    uint64_t        oom_count;
    mt_replay_oom_t ooms[MT_REPLAY_OOM_KEEP]; /* the first ones */
    bool            fits;                     /* no request failed for lack of memory */

    /* unconstrained baseline (policy none, HBM unlimited) */
    bool       has_baseline;
    sim_time_t baseline_ns;      /* its total simulated time */
    double     overhead;         /* total_ns / baseline_ns - 1 */
    uint64_t   baseline_peak;    /* its peak allocated bytes (max over devices) */
    uint64_t   recorded_peak;    /* the trace header's (0: unknown) */
    uint64_t   events_peak;      /* header meta peak_running_sum (Chrome imports: the
                                    peak of the recorded events alone; 0: none) */
    uint64_t unconstrained_peak; /* peak of the unconstrained replay (baseline, or this
                                    replay when its policy is none and nothing failed) */
    double   model_flops; /* header meta model_flops: model FLOPs of a step on one rank (0: none) */
    double   peak_flops;  /* the node's peak FLOPS per NPU */

    /* host figures (not deterministic) */
    double wall_s; /* wall time of this replay (baseline excluded) */
    double events_per_s;
    double baseline_wall_s;

    mt_replay_timeline_t *timeline; /* when params.timeline */
    char *decisions_json; /* the policy's decision log as a JSON object (what moved and why):
                             counts by action and reason, and the most recent moves; or NULL */
} mt_replay_report_t;

void mt_replay_params_init(mt_replay_params_t *params);

/*
 * Build the node for a replay: params->node, else sim_desc_preset(header node name), else the
 * header's values; then the overrides. Errors: MEMSVC_ERR_UNKNOWN_KEY (preset or key),
 * MEMSVC_ERR_PARSE (value), MEMSVC_ERR_INVALID_PARAM (inconsistent); message in err.
 */
memsvc_status_t mt_replay_node(const mt_replay_params_t *params, const mt_header_t *header,
                               sim_desc_t *desc_p, char *err, size_t errlen);

/*
 * Play the rest of an opened trace once, on a fresh engine, and fill *report_p (zeroed first;
 * free it with mt_replay_report_free). No baseline here. Errors: those of mt_replay_node and
 * eng_create (unknown policy: MEMSVC_ERR_UNKNOWN_KEY), of mt_reader_next (MEMSVC_ERR_FORMAT,
 * MEMSVC_ERR_IO), MEMSVC_ERR_FORMAT for a trace that contradicts itself (an event on a device
 * the node does not have, a tensor id allocated twice), MEMSVC_ERR_NO_RESOURCE. Out-of-memory
 * is not an error: it is in the report. The message is in err.
 */
memsvc_status_t mt_replay(const mt_replay_params_t *params, mt_reader_t *reader,
                          mt_replay_report_t *report_p, char *err, size_t errlen);

/*
 * Open path, replay it, and unless !params->baseline replay it again unconstrained (policy
 * none, phantom memory, HBM MT_REPLAY_UNLIMITED) to fill the baseline fields. Errors: as
 * mt_replay and mt_reader_open; the message names the file.
 */
memsvc_status_t mt_replay_file(const mt_replay_params_t *params, const char *path,
                               mt_replay_report_t *report_p, char *err, size_t errlen);

void mt_replay_report_free(mt_replay_report_t *report);

/*
 * Read path again up to the last device's peak of live bytes (report->devs[].live_peak_event,
 * from the replay) and fill each used device's top: its top_n largest live tensors at that
 * moment (ties by key). Errors: those of the reader, MEMSVC_ERR_NO_RESOURCE; message in err.
 */
memsvc_status_t mt_replay_top(const char *path, uint32_t top_n, mt_replay_report_t *report,
                              char *err, size_t errlen);

/* Human-readable, aligned report. */
void mt_replay_print_text(const mt_replay_report_t *report, FILE *out);
/* The same as one JSON object (host-dependent fields are the ones named wall_*, events_per_s). */
void mt_replay_print_json(const mt_replay_report_t *report, FILE *out);

/*
 * SVG of each device's memory over simulated time (one panel per device that held memory,
 * the busiest marked), stacked by kind, with stalls and the HBM capacity.
 * MEMSVC_ERR_INVALID_PARAM if the report has no timeline; MEMSVC_ERR_IO.
 */
memsvc_status_t mt_replay_plot_svg(const mt_replay_report_t *report, FILE *out);

/* Write s as SVG/XML text, with < > & " escaped (names from traces are hostile). */
void mt_xml_string(const char *s, FILE *out);

/* ---- timeline sampling (replay_plot.c; used by replay.c) ---------------------------------- */

mt_replay_timeline_t *mt_timeline_create(void);
void                  mt_timeline_destroy(mt_replay_timeline_t *tl);
/* Record device dev's resident bytes by kind at time t (times never decrease). */
void mt_timeline_sample(mt_replay_timeline_t *tl, unsigned dev, sim_time_t t,
                        const uint64_t bytes_by_kind[MEMSVC_KIND_COUNT]);
/* Record that an operator on dev waited `len` ns for memory, ending at t. */
void mt_timeline_stall(mt_replay_timeline_t *tl, unsigned dev, sim_time_t t, sim_time_t len);

#endif /* MT_REPLAY_H */
