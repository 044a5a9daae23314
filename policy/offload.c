/* offload.c - the `offload` policy: parameters and optimizer state on host, MoE expert residency */
#include "policy/pol_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * ZeRO-Offload/Infinity-style offload (Ren et al. 2021, Rajbhandari et al. 2021) and the
 * Pangu/MindSpeed optimizer swap, with MoE expert residency (MoE-Infinity, Pre-gated MoE):
 * - parameters are swapped out after each use (release) and prefetched ahead of their layer:
 *   at LAYER_BEGIN of L, the parameters of L (whatever their size) and of the following
 *   layers (upwards in forward, downwards in backward) while their bytes fit in `window`;
 * - gradients are swapped out when released in backward (grads=on);
 * - optimizer state comes to the device only in the optimizer phase, `chunk` bytes at a time:
 *   each released chunk goes back out and the next is brought in;
 * - experts: accesses per (layer, expert) are counted in forward and decayed per step
 *   (score = score x decay + count); the `hot` experts of each layer with the highest score
 *   stay on device after use; cold experts with a non-zero score are prefetched with their
 *   layer after the dense parameters, those never routed to are fetched on demand.
 * When room is short: first parameters, gradients and optimizer state not wanted soon, then
 * LRU over everything.
 */

#define OFF_JOBS 16

typedef struct off_expert {
    double   score; /* decayed accesses */
    uint32_t count; /* accesses this step */
    bool     hot;
} off_expert_t;

typedef struct off_state {
    uint64_t      window, chunk, hot;
    double        decay;
    bool          grads;
    pol_groups_t  params; /* by (job, layer, 0) */
    pol_groups_t  optim;  /* by (job, 0, 0) */
    pol_layers_t  layers; /* layers with parameters */
    off_expert_t *ex;     /* [layer][expert], nl x ne */
    size_t        nl, ne;
    uint64_t      epoch; /* pol_word of parameters wanted soon (the last prefetch window) */
    size_t        opt_cursor;
    uint64_t      opt_in; /* optimizer-state bytes brought in and not yet released */
    struct {
        uint32_t job;
        uint8_t  phase;
    } phase[OFF_JOBS];
    unsigned num_phase;
} off_state_t;

static memsvc_status_t off_param(void *arg, const char *key, const char *value, char *err,
                                 size_t errlen)
{
    off_state_t *s = arg;

    if (strcmp(key, "window") == 0) {
        return pol_param_size("offload", key, value, &s->window, err, errlen);
    }
    if (strcmp(key, "chunk") == 0) {
        memsvc_status_t status = pol_param_size("offload", key, value, &s->chunk, err, errlen);

        if (status == MEMSVC_OK && s->chunk == 0) {
            snprintf(err, errlen, "offload: chunk=%s: must be more than 0", value);
            status = MEMSVC_ERR_PARSE;
        }
        return status;
    }
    if (strcmp(key, "hot") == 0) {
        return pol_param_u64("offload", key, value, 65535, &s->hot, err, errlen);
    }
    if (strcmp(key, "decay") == 0) {
        return pol_param_double("offload", key, value, 0.0, 1.0, &s->decay, err, errlen);
    }
    if (strcmp(key, "grads") == 0) {
        return pol_param_bool("offload", key, value, &s->grads, err, errlen);
    }
    return pol_no_params(NULL, key, value, err, errlen);
}

static memsvc_status_t off_create(const char *params, void **state_p, char *err, size_t errlen)
{
    off_state_t    *s = calloc(1, sizeof(*s));
    memsvc_status_t status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    s->window = 2ull << 30;
    s->chunk  = 1ull << 30;
    s->hot    = 0;
    s->decay  = 0.5;
    s->grads  = true;
    s->epoch  = 1;
    status    = pol_parse_params(params, off_param, s, err, errlen);
    if (status != MEMSVC_OK) {
        free(s);
        return status;
    }
    *state_p = s;
    return MEMSVC_OK;
}

static void off_destroy(void *state)
{
    off_state_t *s = state;

    pol_groups_free(&s->params);
    pol_groups_free(&s->optim);
    pol_layers_free(&s->layers);
    free(s->ex);
    free(s);
}

static uint8_t *off_phase_of(off_state_t *s, uint32_t job)
{
    unsigned i;

    for (i = 0; i < s->num_phase; i++) {
        if (s->phase[i].job == job) {
            return &s->phase[i].phase;
        }
    }
    if (s->num_phase == OFF_JOBS) {
        return NULL;
    }
    s->phase[s->num_phase].job   = job;
    s->phase[s->num_phase].phase = MEMSVC_PHASE_NONE;
    return &s->phase[s->num_phase++].phase;
}

/* ---- experts ------------------------------------------------------------------------------- */

/* The entry of (layer, expert), growing the table (NULL if out of memory or untagged). */
static off_expert_t *off_expert(off_state_t *s, int32_t layer, int32_t expert, bool grow)
{
    if (layer < 0 || expert < 0) {
        return NULL;
    }
    if ((size_t)layer >= s->nl || (size_t)expert >= s->ne) {
        size_t        nl = s->nl, ne = s->ne, l;
        off_expert_t *nx;

        if (!grow) {
            return NULL;
        }
        while ((size_t)layer >= nl) {
            nl = nl ? 2 * nl : 16;
        }
        while ((size_t)expert >= ne) {
            ne = ne ? 2 * ne : 16;
        }
        nx = calloc(nl * ne, sizeof(*nx));
        if (nx == NULL) {
            return NULL;
        }
        for (l = 0; l < s->nl; l++) {
            memcpy(&nx[l * ne], &s->ex[l * s->ne], s->ne * sizeof(*nx));
        }
        free(s->ex);
        s->ex = nx;
        s->nl = nl;
        s->ne = ne;
    }
    return &s->ex[(size_t)layer * s->ne + (size_t)expert];
}

static bool off_hot(off_state_t *s, const pol_tensor_t *t)
{
    const off_expert_t *e = off_expert(s, t->tags.layer, t->tags.expert, false);

    return e != NULL && e->hot;
}

/* Step boundary: decay the scores, pick each layer's hot experts. */
static void off_new_step(off_state_t *s)
{
    size_t l, e, k;

    for (l = 0; l < s->nl; l++) {
        off_expert_t *row = &s->ex[l * s->ne];

        for (e = 0; e < s->ne; e++) {
            row[e].score = row[e].score * s->decay + row[e].count;
            row[e].count = 0;
            row[e].hot   = false;
        }
        for (k = 0; k < s->hot; k++) { /* K passes: K is small */
            off_expert_t *best = NULL;

            for (e = 0; e < s->ne; e++) {
                if (!row[e].hot && row[e].score > 0 &&
                    (best == NULL || row[e].score > best->score)) {
                    best = &row[e];
                }
            }
            if (best == NULL) {
                break;
            }
            best->hot = true;
        }
    }
}

/* ---- prefetch ----------------------------------------------------------------------------- */

typedef struct off_fetch {
    off_state_t *s;
    uint64_t     budget;  /* bytes still allowed */
    bool         experts; /* this pass: experts (else dense parameters) */
    bool         forced;  /* the current layer: fetched whatever the budget */
    bool         full;    /* the window is used up */
} off_fetch_t;

static void off_fetch_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    off_fetch_t        *f = arg;
    const off_expert_t *e;

    if (t->kind != MEMSVC_KIND_PARAM || (t->tags.expert >= 0) != f->experts || f->full) {
        return;
    }
    if (f->experts) {
        e = off_expert(f->s, t->tags.layer, t->tags.expert, false);
        if (e == NULL || e->score <= 0) {
            return; /* never routed to lately: on demand */
        }
    }
    pol_set_word(ctx, t, f->s->epoch);
    if (t->state == MEMSVC_STATE_ON_DEVICE || t->state == MEMSVC_STATE_MOVING_IN) {
        return;
    }
    if (!f->forced && t->size > f->budget) {
        f->full = true;
        return;
    }
    if (pol_moved(pol_prefetch(ctx, t)) && !f->forced) {
        f->budget -= t->size;
    }
}

static void off_layer_begin(off_state_t *s, pol_ctx_t *ctx, const pol_hint_t *hint, int dir)
{
    off_fetch_t f     = {.s = s, .budget = s->window};
    int32_t     layer = hint->layer;
    int         pass;

    s->epoch++;
    for (; layer != INT32_MIN && !f.full; layer = pol_layers_next(&s->layers, layer, dir)) {
        f.forced = (layer == hint->layer);
        pol_set_reason(ctx, f.forced ? "offload params of the layer" : "offload params ahead",
                       "L%d at L%d %s", (int)layer, (int)hint->layer,
                       dir > 0 ? "forward" : "backward");
        for (pass = 0; pass < 2; pass++) {
            f.experts = (pass == 1);
            pol_groups_each_layer(&s->params, ctx, hint->job, layer, 0, off_fetch_one, &f);
        }
    }
}

/* Optimizer phase: bring optimizer state in, up to `chunk` bytes not yet released. */
static void off_opt_fill(off_state_t *s, pol_ctx_t *ctx, uint32_t job)
{
    pol_group_t *g = pol_groups_get(&s->optim, pol_group_key(job, 0, 0), false);

    if (g == NULL) {
        return;
    }
    pol_set_reason(ctx, "offload optimizer chunk", "chunk %llu bytes",
                   (unsigned long long)s->chunk);
    while (s->opt_cursor < g->n) {
        const pol_tensor_t *t = pol_tensor(ctx, g->h[s->opt_cursor]);

        if (t == NULL) {
            s->opt_cursor++;
            continue;
        }
        if (s->opt_in > 0 && s->opt_in + t->size > s->chunk) {
            return;
        }
        s->opt_cursor++;
        if (t->state == MEMSVC_STATE_ON_DEVICE || pol_moved(pol_prefetch(ctx, t))) {
            s->opt_in += t->size;
        }
    }
}

/* Leaving the optimizer phase: what is left of optimizer state goes back to host. */
static void off_opt_flush(off_state_t *s, pol_ctx_t *ctx, uint32_t job)
{
    pol_group_t *g = pol_groups_get(&s->optim, pol_group_key(job, 0, 0), false);
    size_t       i;

    s->opt_in     = 0;
    s->opt_cursor = 0;
    if (g == NULL) {
        return;
    }
    pol_group_compact(g, ctx);
    pol_set_reason(ctx, "offload optimizer phase over", "%s", "");
    for (i = 0; i < g->n; i++) {
        const pol_tensor_t *t = pol_tensor(ctx, g->h[i]);

        if (t != NULL && pol_evictable(t)) {
            pol_swap_out(ctx, t);
        }
    }
}

static void off_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    off_state_t *s     = state;
    uint8_t     *phase = off_phase_of(s, hint->job);
    uint8_t      was   = (phase != NULL) ? *phase : MEMSVC_PHASE_NONE;

    if (phase != NULL && hint->phase != MEMSVC_PHASE_NONE) {
        *phase = (uint8_t)hint->phase;
    }
    if (hint->type == MEMSVC_HINT_STEP_BEGIN) {
        off_new_step(s);
    }
    if (phase != NULL && *phase != was) {
        if (*phase == MEMSVC_PHASE_OPTIMIZER) {
            pol_group_t *g = pol_groups_get(&s->optim, pol_group_key(hint->job, 0, 0), false);

            if (g != NULL) {
                pol_group_compact(g, ctx);
            }
            s->opt_in     = 0;
            s->opt_cursor = 0;
            off_opt_fill(s, ctx, hint->job);
        } else if (was == MEMSVC_PHASE_OPTIMIZER) {
            off_opt_flush(s, ctx, hint->job);
        }
    }
    if (hint->type == MEMSVC_HINT_LAYER_BEGIN && hint->layer >= 0) {
        if (hint->phase == MEMSVC_PHASE_FORWARD) {
            off_layer_begin(s, ctx, hint, +1);
        } else if (hint->phase == MEMSVC_PHASE_BACKWARD) {
            off_layer_begin(s, ctx, hint, -1);
        }
    }
}

static void off_on_access(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    off_state_t  *s     = state;
    uint8_t      *phase = off_phase_of(s, t->job);
    uint8_t       ph    = (phase != NULL) ? *phase : MEMSVC_PHASE_NONE;
    pol_group_t  *g;
    off_expert_t *e;

    if ((a == POL_ACCESS_ALLOC || a == POL_ACCESS_ACQUIRE) && ph == MEMSVC_PHASE_FORWARD &&
        (e = off_expert(s, t->tags.layer, t->tags.expert, true)) != NULL) {
        e->count++;
    }
    if (a == POL_ACCESS_ALLOC) {
        if (t->kind == MEMSVC_KIND_PARAM) {
            g = pol_groups_get(&s->params, pol_group_key(t->job, t->tags.layer, 0), true);
            if (g != NULL) {
                pol_group_add(g, ctx, t->handle);
            }
            if (t->tags.layer >= 0) {
                pol_layers_add(&s->layers, t->tags.layer);
            }
        } else if (t->kind == MEMSVC_KIND_OPTIM) {
            g = pol_groups_get(&s->optim, pol_group_key(t->job, 0, 0), true);
            if (g != NULL) {
                pol_group_add(g, ctx, t->handle);
            }
        }
        return;
    }
    if (a != POL_ACCESS_RELEASE || !pol_evictable(t)) {
        return;
    }
    switch (t->kind) {
    case MEMSVC_KIND_PARAM:
        if (off_hot(s, t)) {
            return; /* a hot expert stays */
        }
        pol_set_reason(ctx, "offload param after use", "L%d e%d", (int)t->tags.layer,
                       (int)t->tags.expert);
        pol_swap_out(ctx, t);
        break;
    case MEMSVC_KIND_GRAD:
        if (s->grads && ph == MEMSVC_PHASE_BACKWARD) {
            pol_set_reason(ctx, "offload grad produced", "L%d", (int)t->tags.layer);
            pol_swap_out(ctx, t);
        }
        break;
    case MEMSVC_KIND_OPTIM:
        if (ph == MEMSVC_PHASE_OPTIMIZER) {
            pol_set_reason(ctx, "offload optimizer chunk done", "%s", "");
            pol_swap_out(ctx, t);
            s->opt_in -= (t->size < s->opt_in) ? t->size : s->opt_in;
            off_opt_fill(s, ctx, t->job);
        }
        break;
    default:
        break;
    }
}

/* Pass 1 leaves activations and workspace to LRU, and keeps what is wanted soon. */
static bool off_skip_wanted(void *arg, const pol_tensor_t *t)
{
    off_state_t *s = arg;

    if (t->kind == MEMSVC_KIND_ACTIVATION || t->kind == MEMSVC_KIND_WORKSPACE) {
        return true;
    }
    return (t->kind == MEMSVC_KIND_PARAM && (t->pol_word == s->epoch || off_hot(s, t)));
}

static void off_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    off_state_t *s = state;
    uint64_t     got =
        pol_evict_lru(ctx, dev, need, false, off_skip_wanted, s, "offload state not wanted soon");

    if (got < need) {
        pol_evict_lru(ctx, dev, need - got, false, NULL, NULL, "offload lru fallback");
    }
}

const pol_ops_t pol_offload_ops = {
    .name = "offload",
    .summary =
        "parameters, gradients and optimizer state on host, prefetched ahead; hot experts stay",
    .params    = "window=2GiB: parameter bytes prefetched ahead of the current layer; "
                 "chunk=1GiB: optimizer-state bytes on device at a time in the optimizer phase; "
                 "hot=0: experts per layer kept on device (highest routing score); "
                 "decay=0.5: routing score decay per step (0..1); "
                 "grads=on: swap gradients out when released in backward",
    .create    = off_create,
    .destroy   = off_destroy,
    .make_room = off_make_room,
    .on_hint   = off_on_hint,
    .on_access = off_on_access,
};
