/* pol_util.h - helpers the policies share: parameter values, key modules, handle groups, LRU */
#ifndef POL_UTIL_H
#define POL_UTIL_H

#include "policy/policy.h"

/* ---- parameter values: on error a message "<policy>: <key>=<value>: ..." goes to err ----- */

memsvc_status_t pol_param_bool(const char *pol, const char *key, const char *value, bool *out_p,
                               char *err, size_t errlen);
memsvc_status_t pol_param_u64(const char *pol, const char *key, const char *value, uint64_t max,
                              uint64_t *out_p, char *err, size_t errlen);
memsvc_status_t pol_param_size(const char *pol, const char *key, const char *value, uint64_t *out_p,
                               char *err, size_t errlen);
memsvc_status_t pol_param_double(const char *pol, const char *key, const char *value, double min,
                                 double max, double *out_p, char *err, size_t errlen);

/*
 * Like pol_parse_params, but the keys named in list_keys (NULL-terminated) take a list: in
 * "recompute=norm,act,swap=x" the bare item "act" continues the list of "recompute", and fn
 * sees (recompute, norm), (recompute, act), (swap, x). MEMSVC_ERR_PARSE for a bare item that
 * follows no list key.
 */
memsvc_status_t pol_parse_params_lists(const char *params, const char *const *list_keys,
                                       memsvc_status_t (*fn)(void *arg, const char *key,
                                                             const char *value, char *err,
                                                             size_t errlen),
                                       void *arg, char *err, size_t errlen);

/* ---- keys ----------------------------------------------------------------------------------- */

/* The module part of a key: without its leading "L<n>.", "mb<n>." and "e<n>." segments
 * ("L12.mb3.attn.qkv" -> "attn.qkv", "L3.e5.mb0.act" -> "act"). */
const char *pol_key_module(const char *key);

/* A list of glob patterns matched against module parts. */
typedef struct pol_patterns {
    char **pat;
    size_t n, cap;
} pol_patterns_t;

memsvc_status_t pol_patterns_add(pol_patterns_t *p, const char *pattern);
void            pol_patterns_clear(pol_patterns_t *p);
/* Index of the first pattern matching the module (a whole dot-separated segment, or a dotted
 * suffix such as "ln1.out", or the whole module), or -1. */
int pol_patterns_match(const pol_patterns_t *p, const char *module);

/* ---- groups of handles by a 64-bit key (freed tensors are removed lazily) -------------------- */

typedef struct pol_group {
    uint64_t  key;
    uint64_t *h; /* handles, in the order added */
    size_t    n, cap;
    size_t    compacted; /* n after the last compaction */
} pol_group_t;

typedef struct pol_groups {
    pol_group_t *g;
    size_t       n, cap;
    uint32_t    *buckets; /* index + 1; 0: empty */
    size_t       num_buckets;
} pol_groups_t;

static inline uint64_t pol_group_key(uint32_t job, int32_t a, int32_t b)
{
    return ((uint64_t)job << 32) | ((uint64_t)(uint16_t)a << 16) | (uint64_t)(uint16_t)b;
}

/* The group of `key`; created empty when `create` (NULL when absent or out of memory). The
 * pointer is valid until the next creation. */
pol_group_t *pol_groups_get(pol_groups_t *gs, uint64_t key, bool create);
void         pol_groups_free(pol_groups_t *gs);
/* Add a handle; stale handles are compacted away when the group has doubled. */
memsvc_status_t pol_group_add(pol_group_t *g, const pol_ctx_t *ctx, uint64_t handle);
/* Remove stale handles now; returns how many live ones remain. */
size_t pol_group_compact(pol_group_t *g, const pol_ctx_t *ctx);

/*
 * Groups keyed pol_group_key(job, layer, micro-batch): call fn on each live tensor of (job,
 * layer) of micro-batch mb, or of every micro-batch when mb < 0. fn may move the tensor.
 */
void pol_groups_each_layer(pol_groups_t *gs, pol_ctx_t *ctx, uint32_t job, int32_t layer,
                           int32_t mb, void (*fn)(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t),
                           void   *arg);

/* ---- layers seen, sorted ------------------------------------------------------------------- */

typedef struct pol_layers {
    int32_t *v;
    size_t   n, cap;
} pol_layers_t;

memsvc_status_t pol_layers_add(pol_layers_t *l, int32_t layer);
/* The layer after `layer` going up (dir > 0) or down (dir < 0), or INT32_MIN if none. */
int32_t pol_layers_next(const pol_layers_t *l, int32_t layer, int dir);
void    pol_layers_free(pol_layers_t *l);

/* ---- eviction -------------------------------------------------------------------------------- */

/*
 * Move tensors of `dev` out from the least recently used until `need` bytes are on their way:
 * drop the recomputable ones when `drop`, swap the others. Tensors for which skip(arg, t) is
 * true are left alone (skip may be NULL). Sets the reason `reason` ("lru fallback" if NULL).
 * Returns the bytes freed or on their way.
 */
uint64_t pol_evict_lru(pol_ctx_t *ctx, unsigned dev, uint64_t need, bool drop,
                       bool (*skip)(void *arg, const pol_tensor_t *t), void *arg,
                       const char *reason);

/* A move the engine accepted (done or started). */
static inline bool pol_moved(memsvc_status_t status)
{
    return status == MEMSVC_OK || status == MEMSVC_INPROGRESS;
}

/* True when a tensor is on its device and may move (not pinned). */
static inline bool pol_evictable(const pol_tensor_t *t)
{
    return t->state == MEMSVC_STATE_ON_DEVICE && t->pins == 0;
}

#endif /* POL_UTIL_H */
