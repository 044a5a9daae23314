/* dtr.c - the `dtr` policy: evict the lowest cost / (bytes x staleness), drop or swap */
#include "policy/pol_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Dynamic Tensor Rematerialization (Kirisame et al., ICLR'21), with the engine's swap as a
 * second way out. For each evictable tensor, the cost of evicting it is its recompute time
 * when it is recomputable and recomputing is no dearer than a round trip over the host link,
 * else that round trip (unless swap=off: then only recomputable tensors go). The tensor with
 * the lowest h = cost / (bytes x staleness) goes first, staleness = now - last access. The
 * engine has no operator graph, so h is DTR's "local" heuristic, without the cost of dropped
 * neighbours. The owner recomputes on demand (the engine's RECOMPUTE answer).
 */

typedef struct dtr_cand {
    double   h;
    uint64_t handle, cost, size, stale;
    size_t   pos; /* LRU position: ties go to the older */
    bool     drop;
} dtr_cand_t;

typedef struct dtr_state {
    bool        swap;   /* swap tensors that cannot be (cheaply) recomputed */
    uint64_t    sample; /* candidates looked at per call, from the oldest (0: all) */
    dtr_cand_t *cand;
    size_t      cap;
} dtr_state_t;

static memsvc_status_t dtr_param(void *arg, const char *key, const char *value, char *err,
                                 size_t errlen)
{
    dtr_state_t *s = arg;

    if (strcmp(key, "swap") == 0) {
        return pol_param_bool("dtr", key, value, &s->swap, err, errlen);
    }
    if (strcmp(key, "sample") == 0) {
        return pol_param_u64("dtr", key, value, UINT32_MAX, &s->sample, err, errlen);
    }
    return pol_no_params(NULL, key, value, err, errlen);
}

static memsvc_status_t dtr_create(const char *params, void **state_p, char *err, size_t errlen)
{
    dtr_state_t    *s = calloc(1, sizeof(*s));
    memsvc_status_t status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    s->swap = true;
    status  = pol_parse_params(params, dtr_param, s, err, errlen);
    if (status != MEMSVC_OK) {
        free(s);
        return status;
    }
    *state_p = s;
    return MEMSVC_OK;
}

static void dtr_destroy(void *state)
{
    dtr_state_t *s = state;

    free(s->cand);
    free(s);
}

static int dtr_cmp(const void *a, const void *b)
{
    const dtr_cand_t *x = a, *y = b;

    if (x->h != y->h) {
        return (x->h < y->h) ? -1 : 1;
    }
    return (x->pos < y->pos) ? -1 : (x->pos > y->pos);
}

/* Fill s->cand from the device's evictable tensors; returns how many. */
static size_t dtr_collect(dtr_state_t *s, pol_ctx_t *ctx, unsigned dev)
{
    sim_time_t          now = pol_now(ctx);
    const pol_tensor_t *t;
    size_t              n = 0, pos = 0;

    for (t = pol_lru_first(ctx, dev); t != NULL && (s->sample == 0 || pos < s->sample);
         t = pol_lru_next(ctx, t), pos++) {
        uint64_t    swap_ns = pol_swap_cost_ns(ctx, dev, t->size);
        dtr_cand_t *c;

        if (n == s->cap) {
            size_t      cap = s->cap ? 2 * s->cap : 256;
            dtr_cand_t *nc  = realloc(s->cand, cap * sizeof(*nc));

            if (nc == NULL) {
                break;
            }
            s->cand = nc;
            s->cap  = cap;
        }
        c = &s->cand[n];
        if (t->recomputable && !t->durable && (!s->swap || t->recompute_ns <= swap_ns)) {
            c->cost = t->recompute_ns;
            c->drop = true;
        } else if (s->swap) {
            c->cost = swap_ns;
            c->drop = false;
        } else {
            continue;
        }
        c->stale  = (now > t->last_access ? now - t->last_access : 0) + 1;
        c->size   = t->size;
        c->handle = t->handle;
        c->pos    = pos;
        c->h      = (double)c->cost / ((double)c->size * (double)c->stale);
        n++;
    }
    return n;
}

static void dtr_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    dtr_state_t *s       = state;
    size_t       n       = dtr_collect(s, ctx, dev);
    bool         host_ok = true;
    uint64_t     got     = 0;
    size_t       i;

    if (n > 0) {
        qsort(s->cand, n, sizeof(*s->cand), dtr_cmp); /* s->cand is NULL until a first candidate */
    }
    for (i = 0; i < n && got < need; i++) {
        const dtr_cand_t   *c = &s->cand[i];
        const pol_tensor_t *t = pol_tensor(ctx, c->handle);
        memsvc_status_t     status;

        if (t == NULL || !pol_evictable(t) || (!c->drop && !host_ok)) {
            continue;
        }
        pol_set_reason(ctx, c->drop ? "dtr lowest h, recompute" : "dtr lowest h, swap",
                       "h=cost/(bytes*staleness)=%.4g cost=%lluns bytes=%llu stale=%lluns", c->h,
                       (unsigned long long)c->cost, (unsigned long long)c->size,
                       (unsigned long long)c->stale);
        status = c->drop ? pol_drop(ctx, t) : pol_swap_out(ctx, t);
        if (pol_moved(status)) {
            got += c->size;
        } else if (status == MEMSVC_ERR_HOST_MEMORY) {
            host_ok = false;
        }
    }
}

const pol_ops_t pol_dtr_ops = {
    .name = "dtr",
    .summary =
        "DTR: evict the lowest recompute cost / (bytes x staleness); drop or swap, the cheaper",
    .params    = "swap=on: swap what cannot be recomputed, or costs more to recompute than a "
                 "round trip to the host (off: drop only); "
                 "sample=0: candidates considered per eviction, from the least recently used "
                 "(0: all)",
    .create    = dtr_create,
    .destroy   = dtr_destroy,
    .make_room = dtr_make_room,
    .on_hint   = NULL,
    .on_access = NULL,
};
