/* dtr.c - the `dtr` policy: evict the lowest cost(e*) / (bytes x staleness), drop or swap */
#include "policy/pol_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Dynamic Tensor Rematerialization (Kirisame et al., ICLR'21), with the engine's swap as a
 * second way out. Each evictable tensor t gets
 *
 *     h(t) = cost(t) / (bytes(t) x staleness(t)),   staleness = now - last access (+1 ns)
 *
 * and the lowest goes first, one at a time, re-scoring the candidates whose score it changed.
 * cost(t) for a drop is DTR's (h=dtr, the default): t's recompute time plus that of its
 * evicted neighbourhood e*(t), the dropped tensors that would be recomputed with it: dropped
 * ancestors its recomputation needs (through dropped tensors) and dropped descendants whose
 * recomputation needs it (likewise). This is the heuristic of DTR's simulator, simrd
 * (uwsampl/dtr-prototype, simrd/heuristic/dtr.py, `DTR`: compute + region + region_rev). The
 * graph comes from the engine's owner (pol_neighbours); without one (the daemon), and with
 * h=local, cost(t) is t's own recompute time (the paper's h_DTR-local). A tensor that cannot be
 * recomputed, or whose recomputation costs more than a round trip over the host link, is
 * swapped at the cost of that round trip (unless swap=off). The owner recomputes on demand.
 *
 * frag=on (default): when no free hole holds the request (the TLSF allocator fragments), the
 * memory term of h is the contiguous range a candidate's block opens with the free holes
 * beside it (at most the request): bytes freed next to a hole count, scattered ones less.
 */

#define DTR_NB_MAX 4096 /* largest neighbourhood walked per score (beyond: cost is a floor) */

typedef struct dtr_cand {
    double   h;
    uint64_t handle, cost, size, stale;
    uint64_t offset, span; /* its block, and the free range it would open (frag) */
    size_t   pos;          /* LRU position: ties go to the older */
    bool     drop, dirty, gone, fits;
} dtr_cand_t;

/* handle -> value, open addressing, cleared by bumping the stamp */
typedef struct dtr_hmap {
    uint64_t *keys, *vals;
    uint32_t *stamps;
    uint32_t  cap, n, stamp;
} dtr_hmap_t;

typedef struct dtr_state {
    bool        swap;   /* swap tensors that cannot be (cheaply) recomputed */
    bool        local;  /* h=local: no neighbourhood */
    bool        frag;   /* fragmentation-aware order */
    uint64_t    sample; /* candidates looked at per call, from the oldest (0: all) */
    dtr_cand_t *cand;
    size_t      cap;
    dtr_hmap_t  seen;   /* a walk's visited tensors */
    dtr_hmap_t  index;  /* candidate handle -> index + 1 */
    uint64_t   *stack;
    size_t      nstack, capstack;
    uint64_t    walk_cost; /* summed by the walk */
    size_t      walked;
    /* fragmentation: the device's blocks in address order */
    uint64_t   *blk_off, *blk_size;
    size_t      nblk, capblk;
} dtr_state_t;

/* ---- small tables ----------------------------------------------------------------------- */

static void dtr_hmap_clear(dtr_hmap_t *m)
{
    m->n = 0;
    if (++m->stamp == 0) { /* wrapped: really clear */
        if (m->stamps != NULL) {
            memset(m->stamps, 0, m->cap * sizeof(*m->stamps));
        }
        m->stamp = 1;
    }
}

static uint32_t dtr_slot(const dtr_hmap_t *m, uint64_t key)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    uint32_t i = (uint32_t)(h >> 32) & (m->cap - 1);

    while (m->stamps[i] == m->stamp && m->keys[i] != key) {
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

/* Value of key, or 0. */
static uint64_t dtr_hmap_get(const dtr_hmap_t *m, uint64_t key)
{
    uint32_t i;

    if (m->cap == 0) {
        return 0;
    }
    i = dtr_slot(m, key);
    return (m->stamps[i] == m->stamp) ? m->vals[i] : 0;
}

/* Set key (true), or false if there is no memory; existing keys are overwritten. */
static bool dtr_hmap_put(dtr_hmap_t *m, uint64_t key, uint64_t val)
{
    uint32_t i;

    if ((m->n + 1) * 2 > m->cap) {
        dtr_hmap_t big = {.cap = m->cap ? 2 * m->cap : 256, .stamp = 1};
        uint32_t   j;

        big.keys   = malloc(big.cap * sizeof(*big.keys));
        big.vals   = malloc(big.cap * sizeof(*big.vals));
        big.stamps = calloc(big.cap, sizeof(*big.stamps));
        if (big.keys == NULL || big.vals == NULL || big.stamps == NULL) {
            free(big.keys);
            free(big.vals);
            free(big.stamps);
            return false;
        }
        for (j = 0; j < m->cap; j++) {
            if (m->stamps[j] == m->stamp) {
                uint32_t k = dtr_slot(&big, m->keys[j]);

                big.keys[k]   = m->keys[j];
                big.vals[k]   = m->vals[j];
                big.stamps[k] = big.stamp;
                big.n++;
            }
        }
        free(m->keys);
        free(m->vals);
        free(m->stamps);
        *m = big;
    }
    i = dtr_slot(m, key);
    if (m->stamps[i] != m->stamp) {
        m->n++;
    }
    m->keys[i]   = key;
    m->vals[i]   = val;
    m->stamps[i] = m->stamp;
    return true;
}

static void dtr_hmap_free(dtr_hmap_t *m)
{
    free(m->keys);
    free(m->vals);
    free(m->stamps);
}

static bool dtr_push(dtr_state_t *s, uint64_t handle)
{
    if (s->nstack == s->capstack) {
        size_t    cap = s->capstack ? 2 * s->capstack : 256;
        uint64_t *a   = realloc(s->stack, cap * sizeof(*a));

        if (a == NULL) {
            return false;
        }
        s->stack    = a;
        s->capstack = cap;
    }
    s->stack[s->nstack++] = handle;
    return true;
}

/* ---- parameters --------------------------------------------------------------------------- */

static memsvc_status_t dtr_param(void *arg, const char *key, const char *value, char *err,
                                 size_t errlen)
{
    dtr_state_t *s = arg;

    if (strcmp(key, "swap") == 0) {
        return pol_param_bool("dtr", key, value, &s->swap, err, errlen);
    }
    if (strcmp(key, "frag") == 0) {
        return pol_param_bool("dtr", key, value, &s->frag, err, errlen);
    }
    if (strcmp(key, "sample") == 0) {
        return pol_param_u64("dtr", key, value, UINT32_MAX, &s->sample, err, errlen);
    }
    if (strcmp(key, "h") == 0) {
        if (strcmp(value, "dtr") == 0 || strcmp(value, "local") == 0) {
            s->local = (value[0] == 'l');
            return MEMSVC_OK;
        }
        snprintf(err, errlen, "dtr: h=%s: expected dtr or local", value);
        return MEMSVC_ERR_PARSE;
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
    s->frag = true;
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

    dtr_hmap_free(&s->seen);
    dtr_hmap_free(&s->index);
    free(s->stack);
    free(s->blk_off);
    free(s->blk_size);
    free(s->cand);
    free(s);
}

/* ---- e*: the evicted neighbourhood --------------------------------------------------------- */

typedef struct dtr_walk {
    dtr_state_t *s;
    bool         ok;
} dtr_walk_t;

static void dtr_visit(void *arg, const pol_tensor_t *nb)
{
    dtr_walk_t  *w = arg;
    dtr_state_t *s = w->s;

    if (nb->state != MEMSVC_STATE_DROPPED || s->walked >= DTR_NB_MAX ||
        dtr_hmap_get(&s->seen, nb->handle) != 0) {
        return;
    }
    if (!dtr_hmap_put(&s->seen, nb->handle, 1) || !dtr_push(s, nb->handle)) {
        w->ok = false;
        return;
    }
    s->walked++;
    s->walk_cost += nb->recompute_ns;
}

/* Walk dropped tensors from t in one direction; their recompute times add to s->walk_cost. */
static void dtr_walk(dtr_state_t *s, pol_ctx_t *ctx, const pol_tensor_t *t, pol_nb_dir_t dir)
{
    dtr_walk_t w = {.s = s, .ok = true};

    s->nstack = 0;
    pol_neighbours(ctx, t, dir, dtr_visit, &w);
    while (s->nstack > 0 && w.ok) {
        const pol_tensor_t *u = pol_tensor(ctx, s->stack[--s->nstack]);

        if (u != NULL) {
            pol_neighbours(ctx, u, dir, dtr_visit, &w);
        }
    }
}

/* cost(e*(t)) beyond t itself: dropped ancestors t needs, dropped descendants that need t. */
static uint64_t dtr_estar(dtr_state_t *s, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    dtr_hmap_clear(&s->seen);
    dtr_hmap_put(&s->seen, t->handle, 1);
    s->walk_cost = 0;
    s->walked    = 0;
    dtr_walk(s, ctx, t, POL_NB_INPUTS);
    dtr_walk(s, ctx, t, POL_NB_DEPENDANTS);
    return s->walk_cost;
}

/* ---- candidates ----------------------------------------------------------------------------- */

static void dtr_score(dtr_state_t *s, pol_ctx_t *ctx, dtr_cand_t *c, const pol_tensor_t *t)
{
    uint64_t swap_ns = pol_swap_cost_ns(ctx, t->device, t->size);

    if (t->recomputable && !t->durable && (!s->swap || t->recompute_ns <= swap_ns)) {
        c->cost = t->recompute_ns;
        if (!s->local && pol_has_graph(ctx)) {
            c->cost += dtr_estar(s, ctx, t);
        }
        c->drop = true;
    } else {
        c->cost = swap_ns;
        c->drop = false;
    }
    /* fragmented: the bytes that count are those of the contiguous range it opens */
    c->h     = (double)c->cost / ((double)(c->span > 0 ? c->span : c->size) * (double)c->stale);
    c->dirty = false;
}

/* Fill s->cand from the device's evictable tensors; returns how many. */
static size_t dtr_collect(dtr_state_t *s, pol_ctx_t *ctx, unsigned dev)
{
    sim_time_t          now = pol_now(ctx);
    const pol_tensor_t *t;
    size_t              n = 0, pos = 0;

    dtr_hmap_clear(&s->index);
    for (t = pol_lru_first(ctx, dev); t != NULL && (s->sample == 0 || pos < s->sample);
         t = pol_lru_next(ctx, t), pos++) {
        bool        can_drop = t->recomputable && !t->durable;
        dtr_cand_t *c;

        if (!can_drop && !s->swap) {
            continue;
        }
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
        memset(c, 0, sizeof(*c));
        c->stale  = (now > t->last_access ? now - t->last_access : 0) + 1;
        c->size   = t->size;
        c->handle = t->handle;
        c->pos    = pos;
        c->dirty  = true;
        if (!dtr_hmap_put(&s->index, t->handle, n + 1)) {
            break;
        }
        n++;
    }
    return n;
}

/* ---- fragmentation ------------------------------------------------------------------------ */

static void dtr_block(void *arg, const pol_tensor_t *t, uint64_t offset, uint64_t size)
{
    dtr_state_t *s = arg;
    dtr_cand_t  *c;
    uint64_t     idx = dtr_hmap_get(&s->index, t->handle);

    if (s->nblk == s->capblk) {
        size_t    cap = s->capblk ? 2 * s->capblk : 256;
        uint64_t *o   = realloc(s->blk_off, cap * sizeof(*o));
        uint64_t *z;

        if (o == NULL) {
            return;
        }
        s->blk_off = o;
        z          = realloc(s->blk_size, cap * sizeof(*z));
        if (z == NULL) {
            return;
        }
        s->blk_size = z;
        s->capblk   = cap;
    }
    s->blk_off[s->nblk]  = offset;
    s->blk_size[s->nblk] = size;
    s->nblk++;
    if (idx != 0) {
        c         = &s->cand[idx - 1];
        c->offset = offset;
        c->span   = size;
    }
}

static int dtr_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/*
 * The device is fragmented: for each candidate, the free range its block would join (the
 * holes before and after it), and whether that reaches `target` bytes.
 */
static void dtr_frag(dtr_state_t *s, pol_ctx_t *ctx, unsigned dev, size_t n, uint64_t target)
{
    uint64_t cap = pol_device_capacity(ctx, dev);
    size_t   i;

    s->nblk = 0;
    pol_device_blocks(ctx, dev, dtr_block, s);
    /* sort the block offsets together with their sizes: pack (offset, size) pairs */
    {
        uint64_t *pairs = malloc(2 * s->nblk * sizeof(*pairs) + 1);

        if (pairs == NULL) {
            return;
        }
        for (i = 0; i < s->nblk; i++) {
            pairs[2 * i]     = s->blk_off[i];
            pairs[2 * i + 1] = s->blk_size[i];
        }
        qsort(pairs, s->nblk, 2 * sizeof(*pairs), dtr_u64_cmp); /* by offset (first word) */
        for (i = 0; i < s->nblk; i++) {
            s->blk_off[i]  = pairs[2 * i];
            s->blk_size[i] = pairs[2 * i + 1];
        }
        free(pairs);
    }
    for (i = 0; i < n; i++) {
        dtr_cand_t *c = &s->cand[i];
        size_t      lo = 0, hi = s->nblk;
        uint64_t    prev_end, next_off;

        if (c->span == 0) {
            continue; /* no block (moving): not a candidate for contiguity */
        }
        while (lo < hi) { /* the block's index */
            size_t mid = (lo + hi) / 2;

            if (s->blk_off[mid] < c->offset) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        prev_end = (lo > 0) ? s->blk_off[lo - 1] + s->blk_size[lo - 1] : 0;
        next_off = (lo + 1 < s->nblk) ? s->blk_off[lo + 1] : cap;
        c->span  = next_off - prev_end;
        c->fits  = c->span >= target;
        if (c->span > target) {
            c->span = target; /* more than the request helps no more */
        }
    }
}

/* ---- making room ---------------------------------------------------------------------------- */

/* After t was dropped: candidates next to its dropped component score anew. */
typedef struct dtr_mark {
    dtr_state_t *s;
} dtr_mark_t;

static void dtr_mark_nb(void *arg, const pol_tensor_t *nb)
{
    dtr_state_t *s   = ((dtr_mark_t *)arg)->s;
    uint64_t     idx = dtr_hmap_get(&s->index, nb->handle);

    if (idx != 0) {
        s->cand[idx - 1].dirty = true;
    }
    if (nb->state == MEMSVC_STATE_DROPPED && s->walked < DTR_NB_MAX &&
        dtr_hmap_get(&s->seen, nb->handle) == 0 && dtr_hmap_put(&s->seen, nb->handle, 1) &&
        dtr_push(s, nb->handle)) {
        s->walked++;
    }
}

static void dtr_mark_dirty(dtr_state_t *s, pol_ctx_t *ctx, uint64_t handle)
{
    dtr_mark_t m = {.s = s};

    dtr_hmap_clear(&s->seen);
    dtr_hmap_put(&s->seen, handle, 1);
    s->nstack = 0;
    s->walked = 0;
    if (!dtr_push(s, handle)) {
        return;
    }
    while (s->nstack > 0) {
        const pol_tensor_t *u = pol_tensor(ctx, s->stack[--s->nstack]);

        if (u != NULL) {
            pol_neighbours(ctx, u, POL_NB_INPUTS, dtr_mark_nb, &m);
            pol_neighbours(ctx, u, POL_NB_DEPENDANTS, dtr_mark_nb, &m);
        }
    }
}

/* Is a better than b? (fragmented: those that open a large enough range first) */
static bool dtr_better(const dtr_cand_t *a, const dtr_cand_t *b, bool frag)
{
    (void)frag; /* fragmentation is in h: the memory term is the usable range */
    if (a->h != b->h) {
        return a->h < b->h;
    }
    return a->pos < b->pos;
}

static int dtr_cmp_r(const void *a, const void *b, void *frag)
{
    const dtr_cand_t *x = a, *y = b;

    if (dtr_better(x, y, *(bool *)frag)) {
        return -1;
    }
    return dtr_better(y, x, *(bool *)frag) ? 1 : 0;
}

/* Without a neighbourhood no score changes as others go: sort once, evict in order. */
static void dtr_evict_sorted(dtr_state_t *s, pol_ctx_t *ctx, size_t n, uint64_t need, bool frag)
{
    bool     host_ok = true;
    uint64_t got     = 0;
    size_t   i;

    for (i = 0; i < n; i++) {
        const pol_tensor_t *t = pol_tensor(ctx, s->cand[i].handle);

        if (t != NULL) {
            dtr_score(s, ctx, &s->cand[i], t);
        }
    }
    if (n > 0) { /* s->cand is NULL until a first candidate */
        qsort_r(s->cand, n, sizeof(*s->cand), dtr_cmp_r, &frag);
    }
    for (i = 0; i < n && got < need; i++) {
        const dtr_cand_t   *c = &s->cand[i];
        const pol_tensor_t *t = pol_tensor(ctx, c->handle);
        memsvc_status_t     status;

        if (t == NULL || !pol_evictable(t) || (!c->drop && !host_ok)) {
            continue;
        }
        pol_set_reason(ctx, c->drop ? "dtr lowest h, recompute" : "dtr lowest h, swap",
                       "h=cost/(bytes*staleness)=%.4g cost=%lluns bytes=%llu stale=%lluns%s", c->h,
                       (unsigned long long)c->cost, (unsigned long long)c->size,
                       (unsigned long long)c->stale, (frag && c->fits) ? " opens a range" : "");
        status = c->drop ? pol_drop(ctx, t) : pol_swap_out(ctx, t);
        if (pol_moved(status)) {
            got += (frag && c->fits) ? need : c->size;
        } else if (status == MEMSVC_ERR_HOST_MEMORY) {
            host_ok = false;
        }
    }
}

static void dtr_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    dtr_state_t *s       = state;
    size_t       n       = dtr_collect(s, ctx, dev);
    bool         host_ok = true, graph = !s->local && pol_has_graph(ctx);
    uint64_t     got     = 0, freeb = pol_device_free(ctx, dev);
    uint64_t     largest = pol_device_largest_free(ctx, dev);
    bool         frag    = false;
    size_t       i;

    if (s->frag && n > 0 && freeb > 0) {
        /* the size asked for: with enough bytes but no block, the engine asks for the shortfall
         * of the largest block; otherwise for the bytes missing beyond the free and outgoing */
        uint64_t in     = pol_device_incoming(ctx, dev);
        uint64_t target = (freeb + in >= largest + need && largest < freeb) ? largest + need
                                                                            : freeb + in + need;

        if (largest < target) { /* no hole holds it: where the room opens matters */
            frag = true;
            dtr_frag(s, ctx, dev, n, target);
        }
    }
    if (!graph) {
        dtr_evict_sorted(s, ctx, n, need, frag);
        return;
    }
    while (got < need) {
        dtr_cand_t         *best = NULL;
        const pol_tensor_t *t;
        memsvc_status_t     status;

        for (i = 0; i < n; i++) {
            dtr_cand_t *c = &s->cand[i];

            if (c->gone) {
                continue;
            }
            t = pol_tensor(ctx, c->handle);
            if (t == NULL || !pol_evictable(t)) {
                c->gone = true;
                continue;
            }
            if (c->dirty) {
                dtr_score(s, ctx, c, t);
            }
            if (!c->drop && !host_ok) {
                continue;
            }
            if (best == NULL || dtr_better(c, best, frag)) {
                best = c;
            }
        }
        if (best == NULL) {
            return;
        }
        best->gone = true;
        t          = pol_tensor(ctx, best->handle);
        pol_set_reason(ctx, best->drop ? "dtr lowest h(e*), recompute" : "dtr lowest h, swap",
                       "h=cost/(bytes*staleness)=%.4g cost=%lluns bytes=%llu stale=%lluns%s", best->h,
                       (unsigned long long)best->cost, (unsigned long long)best->size,
                       (unsigned long long)best->stale, (frag && best->fits) ? " opens a range" : "");
        status = best->drop ? pol_drop(ctx, t) : pol_swap_out(ctx, t);
        if (pol_moved(status)) {
            got += (frag && best->fits) ? need : best->size;
            if (best->drop) {
                dtr_mark_dirty(s, ctx, best->handle);
            }
        } else if (status == MEMSVC_ERR_HOST_MEMORY) {
            host_ok = false;
        }
    }
}

const pol_ops_t pol_dtr_ops = {
    .name = "dtr",
    .summary =
        "DTR: evict the lowest cost(e*) / (bytes x staleness) one at a time; drop or swap",
    .params    = "h=dtr: dtr (cost of the evicted neighbourhood e*, from the replay's graph) or "
                 "local (the tensor's own cost); "
                 "swap=on: swap what cannot be recomputed, or costs more to recompute than a "
                 "round trip to the host (off: drop only); "
                 "frag=on: on a fragmented device, first what opens a large enough range; "
                 "sample=0: candidates considered per eviction, from the least recently used "
                 "(0: all)",
    .create    = dtr_create,
    .destroy   = dtr_destroy,
    .make_room = dtr_make_room,
    .on_hint   = NULL,
    .on_access = NULL,
};
