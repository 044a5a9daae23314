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
/* Set the policy's own word of a tensor. */
void            pol_set_word(pol_ctx_t *ctx, const pol_tensor_t *t, uint64_t word);

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
