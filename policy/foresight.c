/* foresight.c - the `foresight` policy: plan step N+1 globally from step N's timeline, Belady fallback */
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
 * to fsp_make_room(): the evictable tensor used furthest in the future goes first. In the first
 * step (no timeline yet) all keys are unknown and the fallback is least-recently-used order.
 */

typedef struct fs_state {
    fsp_t   plan;
    int32_t step;    /* step of the last plan */
    bool    started; /* a STEP_BEGIN was seen */
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
    prm = (fsp_params_t){.select = FSP_SELECT_GLOBAL, .swap = true, .drop = true,
                         .margin = 0.03, .slack = 0.25, .min_bytes = 64 * 1024,
                         .min_slack_ns = 50000};
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
    free(s);
}

static void fs_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    fs_state_t *s = state;

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

    fsp_run_access(&s->plan, ctx, t, a);
}

static void fs_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    fs_state_t *s = state;

    fsp_make_room(&s->plan, ctx, dev, need);
}

const pol_ops_t pol_foresight_ops = {
    .name      = "foresight",
    .summary   = "plan each step from the previous one: keep, swap or drop per idle interval "
                 "under the budget at least exposed cost; Belady fallback",
    .params    = "swap=on: plan and fall back on swaps; drop=on: plan and fall back on drops "
                 "(recomputation); margin=0.03: fraction of HBM kept free; slack=0.25: prefetch "
                 "lead beyond the transfer time, as a fraction of it; min_bytes=64KiB: smaller "
                 "tensors are not planned",
    .create    = fs_create,
    .destroy   = fs_destroy,
    .make_room = fs_make_room,
    .on_hint   = fs_on_hint,
    .on_access = fs_on_access,
    .wants_timeline = true,
};
