/* policy.h - the policy interface: an ops table per policy, registered by name, no I/O */
#ifndef POLICY_H
#define POLICY_H

#include "client/memsvc_status.h"
#include "client/memsvc_types.h"
#include "sim_npu/sim_clock.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A policy decides; the engine executes. The engine calls the policy when a device is short
 * of memory and at hints; the policy looks at tensors through pol_ctx_t and asks for moves
 * (swap out, drop, prefetch, spill), which the engine validates (pinned and durable rules)
 * and carries out. A policy does no I/O and knows nothing of the transport.
 */

/* Tags as the engine stores them (compact: the public memsvc_tags_t values, range-checked). */
typedef struct pol_tags {
    int16_t layer, microbatch, expert, stage; /* MEMSVC_TAG_NONE (-1) where not applicable */
    int32_t step;
} pol_tags_t;

/* What a policy sees of a tensor (owned by the engine; read-only to the policy). */
typedef struct pol_tensor {
    uint64_t       handle;       /* engine handle */
    uint64_t       size;         /* bytes */
    sim_time_t     last_access;  /* last acquire/release/alloc time */
    uint64_t       recompute_ns; /* cost to recompute */
    uint64_t       pol_word;     /* for the policy's own use (zero at alloc) */
    pol_tags_t     tags;
    uint32_t       pins;         /* > 0: acquired, never moved */
    uint32_t       accesses;     /* acquires so far */
    uint32_t       job;
    uint16_t       device;
    uint8_t        kind;         /* memsvc_kind_t */
    uint8_t        state;        /* memsvc_state_t */
    bool           recomputable;
    bool           durable;
} pol_tensor_t;

/* The stable key of a tensor (e.g. "L12.mb3.attn.qkv"). */
const char *pol_key(const pol_tensor_t *t);

typedef struct pol_ctx pol_ctx_t; /* the engine, as a policy sees it */

/* ---- what a policy may ask of the engine (implemented in memsvc/) ---------------------- */

sim_time_t pol_now(const pol_ctx_t *ctx);
unsigned   pol_num_devices(const pol_ctx_t *ctx);
uint64_t   pol_device_capacity(const pol_ctx_t *ctx, unsigned dev);
uint64_t   pol_device_free(const pol_ctx_t *ctx, unsigned dev);     /* free HBM bytes now */
uint64_t   pol_device_incoming(const pol_ctx_t *ctx, unsigned dev); /* bytes being moved out */
/* Largest free block of HBM now: with pol_device_free, tells a fragmented device apart. */
uint64_t   pol_device_largest_free(const pol_ctx_t *ctx, unsigned dev);

/* Evictable tensors of a device (on device, unpinned), least recently used first. */
const pol_tensor_t *pol_lru_first(const pol_ctx_t *ctx, unsigned dev);
const pol_tensor_t *pol_lru_next(const pol_ctx_t *ctx, const pol_tensor_t *t);

const pol_tensor_t *pol_tensor(const pol_ctx_t *ctx, uint64_t handle); /* NULL if stale */

/*
 * Moves. Each returns MEMSVC_INPROGRESS (transfer started), MEMSVC_OK (done at once, e.g. a
 * drop), or an error: MEMSVC_ERR_PINNED, MEMSVC_ERR_ILLEGAL_STATE, MEMSVC_ERR_INVALID_PARAM
 * (dropping a durable or non-recomputable tensor), MEMSVC_ERR_HOST_MEMORY.
 */
memsvc_status_t pol_swap_out(pol_ctx_t *ctx, const pol_tensor_t *t);
memsvc_status_t pol_drop(pol_ctx_t *ctx, const pol_tensor_t *t);
memsvc_status_t pol_prefetch(pol_ctx_t *ctx, const pol_tensor_t *t);
memsvc_status_t pol_spill(pol_ctx_t *ctx, const pol_tensor_t *t);
/* Visit every tensor of `dev` that holds a block of HBM (on device, pinned or not, or moving),
 * with the block's offset and rounded size: the gaps between them are the free holes, so that
 * a policy can free a contiguous range on a fragmented device. */
void            pol_device_blocks(const pol_ctx_t *ctx, unsigned dev,
                                  void (*fn)(void *arg, const pol_tensor_t *t, uint64_t offset,
                                             uint64_t size),
                                  void *arg);
/* Set the policy's own word of a tensor. */
void            pol_set_word(pol_ctx_t *ctx, const pol_tensor_t *t, uint64_t word);

/* Estimated time to copy `bytes` out of device `dev` to the host and back, from the link
 * model (latency + size / bandwidth each way, without queueing), in ns. */
uint64_t        pol_swap_cost_ns(const pol_ctx_t *ctx, unsigned dev, uint64_t bytes);

/* ---- the operator graph: what recomputing a tensor involves ---------------------------- */

/*
 * The engine knows no operators; its owner may (the replayer reads them from the trace) and
 * lends them to the policy through these calls. A tensor's inputs are the tensors its
 * recomputation reads (its producer's inputs, and those of the in-place operators that
 * mutated it); its dependants are the live recomputable tensors whose recomputation reads
 * it. Tensors the program has freed but that a dependant still needs stay in the engine
 * (dropped or resident), so neighbours are always tensors the policy can look at.
 */
typedef enum pol_nb_dir {
    POL_NB_INPUTS,     /* what t's recomputation reads */
    POL_NB_DEPENDANTS  /* what reads t when it is recomputed */
} pol_nb_dir_t;

/* Supplied by the engine's owner (eng_set_graph); called only from within a policy call. */
typedef struct pol_graph_ops {
    /* Call fn(arg, handle) for each neighbour of the tensor `handle` in direction dir. */
    void (*neighbours)(void *owner, uint64_t handle, pol_nb_dir_t dir,
                       void (*fn)(void *arg, uint64_t handle), void *arg);
} pol_graph_ops_t;

/* Does the engine's owner supply the graph? (false: the daemon, traces without operators) */
bool pol_has_graph(const pol_ctx_t *ctx);
/* Visit t's neighbours in direction dir (those the engine still holds); nothing without a
 * graph. fn must not ask for moves. */
void pol_neighbours(const pol_ctx_t *ctx, const pol_tensor_t *t, pol_nb_dir_t dir,
                    void (*fn)(void *arg, const pol_tensor_t *nb), void *arg);

/* ---- the decision log: why a policy moved what it moved -------------------------------- */

typedef enum pol_action {
    POL_ACTION_SWAP_OUT,
    POL_ACTION_DROP,
    POL_ACTION_PREFETCH,
    POL_ACTION_SPILL,
    POL_ACTION_COUNT
} pol_action_t;

const char *pol_action_name(pol_action_t action); /* "swap_out", "drop", "prefetch", "spill" */

/*
 * Say why the moves asked next are asked for, until the next call or until the engine's call
 * into the policy returns. `reason` is a short fixed class ("lru oldest"), counted per action
 * (the engine keeps a copy); the printf-style detail ("L12 mb3", "h=1.2e-9") goes with each
 * entry of the log ring only. Moves asked without a reason are logged as "unspecified".
 */
void pol_set_reason(pol_ctx_t *ctx, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the access timeline: step N's accesses by key, read while planning step N+1 -------- */

#define POL_TL_NO_KEY UINT32_MAX

/* One access, as the engine recorded it (only for policies with .wants_timeline set, or when
 * the engine's owner enabled it). */
typedef struct pol_tl_entry {
    sim_time_t time;         /* simulated time of the access */
    uint64_t   size;         /* bytes */
    uint64_t   recompute_ns; /* recompute cost of the tensor */
    uint32_t   key_id;       /* interned (job, key): equal ids, same key, in both steps */
    uint32_t   job;
    pol_tags_t tags;         /* the tensor's tags */
    int32_t    step;         /* step current at the time (from hints; -1 if none) */
    int16_t    layer;        /* layer current at the time (LAYER_BEGIN..LAYER_END; else -1) */
    int16_t    microbatch;   /* micro-batch of the current layer (-1 if none) */
    uint16_t   device;
    uint8_t    access;       /* pol_access_t */
    uint8_t    kind;         /* memsvc_kind_t */
    uint8_t    phase;        /* memsvc_phase_t current at the time */
    bool       recomputable;
    bool       durable;
} pol_tl_entry_t;

/* The previous step's entries (in time order), or the current step's so far. Empty (NULL, 0)
 * before the first step boundary or when nothing is recorded. Valid until the next hint. */
void pol_timeline_prev(const pol_ctx_t *ctx, const pol_tl_entry_t **entries_p, size_t *n_p);
void pol_timeline_cur(const pol_ctx_t *ctx, const pol_tl_entry_t **entries_p, size_t *n_p);
/* The key of an interned id (NULL if unknown), and the id of a live tensor's key
 * (POL_TL_NO_KEY if the key is in neither step). */
const char *pol_timeline_key(const pol_ctx_t *ctx, uint32_t key_id);
uint32_t    pol_timeline_key_id(const pol_ctx_t *ctx, const pol_tensor_t *t);

/* ---- what a policy provides -------------------------------------------------------------- */

typedef enum pol_access {
    POL_ACCESS_ALLOC,
    POL_ACCESS_ACQUIRE,
    POL_ACCESS_RELEASE,
    POL_ACCESS_FREE
} pol_access_t;

typedef struct pol_hint {
    memsvc_hint_type_t type;
    uint32_t           job, rank;
    int32_t            step, layer, microbatch;
    memsvc_phase_t     phase;
    const uint64_t    *handles;
    size_t             num_handles;
} pol_hint_t;

typedef struct pol_ops {
    const char *name;    /* selection name */
    const char *summary; /* one line for --help */
    const char *params;  /* accepted parameters, "key=default: meaning; ..." ("" if none) */

    /* Parse parameters ("k=v,k=v" or ""), set up state. Unknown key: MEMSVC_ERR_UNKNOWN_KEY;
     * bad value: MEMSVC_ERR_PARSE; message in err. */
    memsvc_status_t (*create)(const char *params, void **state_p, char *err, size_t errlen);
    void (*destroy)(void *state);

    /*
     * Device `dev` needs `need` more bytes than are free or already being moved out. Ask for
     * moves until enough is on its way, or return when nothing more can go. May be NULL
     * (nothing is ever evicted).
     */
    void (*make_room)(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need);

    void (*on_hint)(void *state, pol_ctx_t *ctx, const pol_hint_t *hint);                 /* or NULL */
    void (*on_access)(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a); /* or NULL */

    bool wants_timeline; /* the engine records the access timeline for this policy */
} pol_ops_t;

/* The registry: every policy compiled in. */
const pol_ops_t        *pol_find(const char *name);
const pol_ops_t *const *pol_all(void); /* NULL-terminated */

/*
 * Split "NAME[:params]" into the ops and a pointer to the parameter text ("" if none).
 * MEMSVC_ERR_UNKNOWN_KEY if NAME is not registered.
 */
memsvc_status_t pol_lookup_spec(const char *spec, const pol_ops_t **ops_p, const char **params_p);

/*
 * Helper for policies: iterate "k=v,k=v". Calls fn(arg, key, value) for each pair, stopping
 * at the first error it returns. MEMSVC_ERR_PARSE for a pair without '='.
 */
memsvc_status_t pol_parse_params(const char *params,
                                 memsvc_status_t (*fn)(void *arg, const char *key, const char *value,
                                                       char *err, size_t errlen),
                                 void *arg, char *err, size_t errlen);

/* Parameter callback for policies that take no parameters: rejects every key. */
memsvc_status_t pol_no_params(void *arg, const char *key, const char *value, char *err,
                              size_t errlen);

#endif /* POLICY_H */
