/* foresight.c - the `foresight` policy: plan step N+1 globally from step N's timeline, Belady
 * fallback */
#include "policy/foresight_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * At each new step, fsp_plan() rebuilds the plan from the previous step's timeline: the memory
 * curve if nothing moved, and per idle interval of each key keep, swap or drop, chosen greedily
 * at the point of highest excess over the budget (HBM minus a margin) by bytes x covered time
 * per unit of exposed cost (transfer time the link cannot hide; recompute time), checked on a
 * FIFO model of the host link. The plan runs from on_access; anything it did not foresee goes
 * to fsp_make_room(): the evictable tensor used furthest in the future goes first, and on a
 * fragmented device the cheapest run of neighbouring blocks that leaves room. In the first step
 * (no timeline yet) next uses are guessed from kinds and tags (fsp_guess), and a backward
 * layer's activations that were swapped out are brought back at its LAYER_BEGIN (one layer
 * ahead when room is free).
 */

typedef struct fs_state {
    fsp_t        plan;
    int32_t      step;    /* step of the last plan */
    bool         started; /* a STEP_BEGIN was seen */
    pol_groups_t acts;    /* activations by (job, layer, micro-batch), for the first step */
    pol_layers_t layers;  /* layers seen */
} fs_state_t;

static memsvc_status_t fs_param(void *arg, const char *key, const char *value, char *err,
                                size_t errlen)
{
    return fsp_param(arg, "foresight", key, value, err, errlen);
}

static memsvc_status_t fs_create(const char *params, void **state_p, char *err, size_t errlen)
{
    fs_state_t     *s = calloc(1, sizeof(*s));
    fsp_params_t    prm;
    memsvc_status_t status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    prm    = (fsp_params_t){.select       = FSP_SELECT_GLOBAL,
                            .swap         = true,
                            .drop         = true,
                            .margin       = 0.03,
                            .slack        = 0.25,
                            .min_bytes    = 64 * 1024,
                            .min_slack_ns = 50000,
                            .guess        = true};
    status = pol_parse_params(params, fs_param, &prm, err, errlen);
    if (status != MEMSVC_OK) {
        goto err_free_state;
    }
    if (!prm.swap && !prm.drop) {
        snprintf(err, errlen, "foresight: swap=off and drop=off leave nothing to do");
        status = MEMSVC_ERR_PARSE;
        goto err_free_state;
    }
    fsp_init(&s->plan, &prm);
    *state_p = s;
    return MEMSVC_OK;

err_free_state:
    free(s);
    return status;
}

static void fs_destroy(void *state)
{
    fs_state_t *s = state;

    fsp_cleanup(&s->plan);
    pol_groups_free(&s->acts);
    pol_layers_free(&s->layers);
    free(s);
}

/* First step: bring back what an unplanned eviction sent to the host (forced). */
static void fs_prefetch_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    if (t->state == MEMSVC_STATE_ON_HOST || t->state == MEMSVC_STATE_ON_DISK ||
        t->state == MEMSVC_STATE_ON_PEER) {
        pol_prefetch(ctx, t);
    }
}

/* First step, one layer ahead: only into room that is free now. */
static void fs_prefetch_free(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    if ((t->state == MEMSVC_STATE_ON_HOST || t->state == MEMSVC_STATE_ON_DISK ||
         t->state == MEMSVC_STATE_ON_PEER) &&
        pol_device_largest_free(ctx, t->device) >= t->size + t->size / 8) {
        pol_prefetch(ctx, t);
    }
}

typedef struct fs_layer_sum {
    uint64_t bytes; /* resident activation bytes of the layer and micro-batch */
    int      dev;   /* their device (-1: none) */
} fs_layer_sum_t;

static void fs_sum_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    fs_layer_sum_t *ls = arg;

    if (t->state == MEMSVC_STATE_ON_DEVICE) {
        ls->bytes += t->size;
        ls->dev = (int)t->device;
    }
}

static void fs_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    fs_state_t *s = state;

    /*
     * First step, end of a forward layer: the next layer will allocate about what this one
     * kept. If that is not free, make the room now, while the next operators compute, rather
     * than when their allocations wait for it.
     */
    if (!s->plan.have_plan && hint->type == MEMSVC_HINT_LAYER_END &&
        hint->phase == MEMSVC_PHASE_FORWARD && hint->layer >= 0) {
        fs_layer_sum_t ls = {.bytes = 0, .dev = -1};
        uint64_t       fr;

        pol_groups_each_layer(&s->acts, ctx, hint->job, hint->layer, hint->microbatch, fs_sum_one,
                              &ls);
        if (ls.dev >= 0) {
            fr = pol_device_free(ctx, (unsigned)ls.dev);
            if (fr < ls.bytes) {
                fsp_make_room(&s->plan, ctx, (unsigned)ls.dev, ls.bytes - fr);
            }
        }
        return;
    }

    if (!s->plan.have_plan && hint->type == MEMSVC_HINT_LAYER_BEGIN &&
        hint->phase == MEMSVC_PHASE_BACKWARD && hint->layer >= 0) {
        int32_t below = pol_layers_next(&s->layers, hint->layer, -1);

        pol_set_reason(ctx, "foresight first step, backward layer", "L%d mb%d", (int)hint->layer,
                       (int)hint->microbatch);
        pol_groups_each_layer(&s->acts, ctx, hint->job, hint->layer, hint->microbatch,
                              fs_prefetch_one, NULL);
        if (below != INT32_MIN) {
            pol_set_reason(ctx, "foresight first step, layer ahead", "L%d for L%d mb%d", (int)below,
                           (int)hint->layer, (int)hint->microbatch);
            pol_groups_each_layer(&s->acts, ctx, hint->job, below, hint->microbatch,
                                  fs_prefetch_free, NULL);
        }
        return;
    }
    if (hint->type != MEMSVC_HINT_STEP_BEGIN ||
        (s->started && hint->step >= 0 && hint->step == s->step)) {
        return; /* the same step begun by another rank */
    }
    s->started = true;
    s->step    = hint->step;
    fsp_plan(&s->plan, ctx);
}

static void fs_on_access(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    fs_state_t *s = state;

    if (!s->plan.have_plan && a == POL_ACCESS_ALLOC && t->kind == MEMSVC_KIND_ACTIVATION &&
        t->tags.layer >= 0) {
        pol_group_t *g = pol_groups_get(
            &s->acts, pol_group_key(t->job, t->tags.layer, t->tags.microbatch), true);

        if (g != NULL) {
            pol_group_add(g, ctx, t->handle);
        }
        pol_layers_add(&s->layers, t->tags.layer);
    }
    fsp_run_access(&s->plan, ctx, t, a);
}

static void fs_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    fs_state_t *s = state;

    fsp_make_room(&s->plan, ctx, dev, need);
}

const pol_ops_t pol_foresight_ops = {
    .name           = "foresight",
    .summary        = "plan each step from the previous one: keep, swap or drop per idle interval "
                      "under the budget at least exposed cost; Belady fallback",
    .params         = "swap=on: plan and fall back on swaps; drop=on: plan and fall back on drops "
                      "(recomputation); margin=0.03: fraction of HBM kept free; slack=0.25: prefetch "
                      "lead beyond the transfer time, as a fraction of it; min_bytes=64KiB: smaller "
                      "tensors are not planned",
    .create         = fs_create,
    .destroy        = fs_destroy,
    .make_room      = fs_make_room,
    .on_hint        = fs_on_hint,
    .on_access      = fs_on_access,
    .wants_timeline = true,
};
