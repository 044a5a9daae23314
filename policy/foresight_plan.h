/* foresight_plan.h - step planning from the previous step's timeline, and running the plan */
#ifndef FORESIGHT_PLAN_H
#define FORESIGHT_PLAN_H

#include "policy/pol_util.h"

/*
 * Shared by `foresight` and `capuchin`. From step N's access timeline (pol_timeline_prev) a
 * plan for step N+1 is built per device: the memory curve if nothing moved, the idle intervals
 * of each key (between a release that leaves it unpinned and its next acquire; for keys live
 * across the step boundary, the tail after the last use joined with the head before the first
 * one), and a choice per interval of keep, swap (out after the access, in before the next, on
 * FIFO link models) or drop (recomputed at the next use). The chosen moves become actions
 * triggered by accesses: "after the c-th access of key K, swap K out / drop K", "at the c-th
 * access of key J, prefetch K". At run time fsp_run_access() fires them; fsp_make_room()
 * evicts by Belady (furthest planned next use) for anything the plan did not foresee.
 */

typedef enum fsp_select {
    FSP_SELECT_GLOBAL,  /* foresight: highest excess first, best bytes x time per exposed cost */
    FSP_SELECT_CAPUCHIN /* capuchin: swaps that hide by free time, then recompute by bytes/ns */
} fsp_select_t;

typedef struct fsp_params {
    fsp_select_t select;
    bool         swap;         /* swapping allowed */
    bool         drop;         /* dropping (recomputation) allowed */
    double       margin;       /* fraction of HBM kept free for fragmentation */
    double       slack;        /* prefetch lead beyond the transfer time, as a fraction of it */
    uint64_t     min_bytes;    /* smaller tensors are never planned */
    uint64_t     min_slack_ns; /* lower bound of the prefetch lead beyond the transfer */
    bool         guess;        /* without a plan, guess next uses from kinds and tags */
} fsp_params_t;

typedef enum fsp_act {
    FSP_ACT_OUT,     /* swap the key out (at its own release) */
    FSP_ACT_DROP,    /* drop the key (at its own release) */
    FSP_ACT_PREFETCH /* swap the target key in */
} fsp_act_t;

typedef struct fsp_action {
    uint32_t trig_key, trig_occ; /* fires at the trig_occ-th (0-based) access of trig_key */
    uint32_t target;             /* key id moved */
    uint8_t  act;                /* fsp_act_t */
} fsp_action_t;

/* Figures of the last plan (all devices). */
typedef struct fsp_summary {
    uint64_t entries, keys, candidates;
    uint64_t swaps, drops, prefetches;
    uint64_t peak_before, peak_after; /* planned curve, max over devices (bytes) */
    uint64_t budget;                  /* of the device with the highest peak */
    uint64_t unresolved_bytes;        /* excess no candidate could cover (sum of points) */
    uint64_t predicted_stall_ns;      /* late swap-ins in the FIFO check */
    uint64_t predicted_recompute_ns;
    uint64_t converted; /* swaps turned into drops by the FIFO check */
    double   plan_s;    /* host time to plan */
} fsp_summary_t;

#define FSP_DEFER_MAX 64 /* actions triggered by a free, waiting for the next access */

typedef struct fsp_watch {
    sim_time_t at; /* previous-step time at which to start the swap-in */
    uint32_t   key;
} fsp_watch_t;

typedef struct fsp {
    fsp_params_t prm;
    /* the plan */
    fsp_action_t *act; /* sorted by (trig_key, trig_occ) */
    size_t        num_act, cap_act;
    uint32_t      num_keys; /* key ids < num_keys have the arrays below */
    uint32_t     *act_off;  /* first action of a key (index in act) */
    uint32_t     *act_n;
    /* the previous step per key: its entries' times and kinds, for Belady and the cursor */
    uint32_t   *ent_off, *ent_n;
    sim_time_t *ent_time;
    uint8_t    *ent_access;
    sim_time_t  step_len;
    bool        have_plan;
    /* run time, per key id */
    uint32_t     *occ;        /* accesses seen in this step */
    uint64_t     *handle;     /* last live handle seen */
    uint32_t     *next_act;   /* first action of the key not yet fired */
    uint8_t      *planned_in; /* 1: a prefetch is planned for the key */
    uint64_t     *lead_ns;    /* extra prefetch lead learnt from late arrivals (kept) */
    uint32_t      cap_keys;
    sim_time_t    cursor;      /* previous-step time of the last matched access */
    uint64_t      late, plans; /* prefetches that arrived late; plans made */
    fsp_watch_t  *watch;       /* swap-ins due for tensors the fallback swapped out (heap) */
    size_t        num_watch, cap_watch;
    uint32_t      deferred[FSP_DEFER_MAX]; /* actions (index in act) to fire at the next access */
    size_t        num_deferred;
    fsp_summary_t sum;
    /* scratch */
    void *scratch;
} fsp_t;

memsvc_status_t fsp_init(fsp_t *p, const fsp_params_t *prm);
void            fsp_cleanup(fsp_t *p);

/* Build the plan for the step that begins now from pol_timeline_prev(); resets the per-step
 * counters. Without a previous step (or out of memory) there is no plan (have_plan false). */
void fsp_plan(fsp_t *p, pol_ctx_t *ctx);

/* Count an access and fire the actions it triggers. */
void fsp_run_access(fsp_t *p, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a);

/*
 * Unplanned pressure: evict from `dev` the evictable tensors whose next planned use is
 * furthest (unknown keys count as furthest, then least recently used), swapping when the round
 * trip fits before that use, else dropping when recomputable, until `need` bytes are on their
 * way. Returns the bytes moved.
 */
uint64_t fsp_make_room(fsp_t *p, pol_ctx_t *ctx, unsigned dev, uint64_t need);

/* Parameters shared by both policies ("swap", "drop", "margin", "slack", "min_bytes"). */
memsvc_status_t fsp_param(fsp_params_t *prm, const char *pol, const char *key, const char *value,
                          char *err, size_t errlen);

#endif /* FORESIGHT_PLAN_H */
