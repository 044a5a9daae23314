/* capuchin.c - the `capuchin` policy: learn the access timeline, swap what hides, recompute the
 * rest */
#include "policy/foresight_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Capuchin (Peng et al., ASPLOS'20). The first step runs passively (least recently used
 * swapping) while the engine records the access timeline. From then on, at each step begin the
 * previous step's timeline gives each key's idle intervals; tensors are taken by idle time,
 * longest first, and swapped when both transfers fit in the links' free time within the
 * interval; while the memory curve is still over the budget, recomputation is chosen by memory
 * saved per ns of recompute; then the swaps that do not hide. Each swap-in is triggered by an
 * earlier access (an access count), its transfer time plus a lead before the use; when a
 * prefetched tensor is still on its way at its use, its lead is doubled for the next step.
 * Pressure the plan did not foresee is met by least recently used swapping.
 */

typedef struct cap_state {
    fsp_t   plan;
    int32_t step;
    bool    started;
} cap_state_t;

static memsvc_status_t cap_param(void *arg, const char *key, const char *value, char *err,
                                 size_t errlen)
{
    return fsp_param(arg, "capuchin", key, value, err, errlen);
}

static memsvc_status_t cap_create(const char *params, void **state_p, char *err, size_t errlen)
{
    cap_state_t    *s = calloc(1, sizeof(*s));
    fsp_params_t    prm;
    memsvc_status_t status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    prm    = (fsp_params_t){.select       = FSP_SELECT_CAPUCHIN,
                            .swap         = true,
                            .drop         = true,
                            .margin       = 0.03,
                            .slack        = 0.1,
                            .min_bytes    = 64 * 1024,
                            .min_slack_ns = 20000};
    status = pol_parse_params(params, cap_param, &prm, err, errlen);
    if (status != MEMSVC_OK) {
        goto err_free_state;
    }
    if (!prm.swap && !prm.drop) {
        snprintf(err, errlen, "capuchin: swap=off and drop=off leave nothing to do");
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

static void cap_destroy(void *state)
{
    cap_state_t *s = state;

    fsp_cleanup(&s->plan);
    free(s);
}

static void cap_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    cap_state_t *s = state;

    if (hint->type != MEMSVC_HINT_STEP_BEGIN ||
        (s->started && hint->step >= 0 && hint->step == s->step)) {
        return;
    }
    s->started = true;
    s->step    = hint->step;
    fsp_plan(&s->plan, ctx);
}

static void cap_on_access(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    cap_state_t *s = state;

    fsp_run_access(&s->plan, ctx, t, a);
}

/* Passive mode: least recently used first; recomputable tensors dropped only with swap=off. */
static void cap_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    cap_state_t *s = state;

    pol_evict_lru(ctx, dev, need, !s->plan.prm.swap, NULL, NULL, "capuchin passive lru");
}

const pol_ops_t pol_capuchin_ops = {
    .name      = "capuchin",
    .summary   = "Capuchin: learn the timeline in step one; swap what hides in free link time, "
                 "recompute by memory saved per ns; access-count prefetch triggers",
    .params    = "swap=on: plan swaps; drop=on: plan recomputation; margin=0.03: fraction of HBM "
                 "kept free; slack=0.1: prefetch lead beyond the transfer time, as a fraction of "
                 "it; min_bytes=64KiB: smaller tensors are not planned",
    .create    = cap_create,
    .destroy   = cap_destroy,
    .make_room = cap_make_room,
    .on_hint   = cap_on_hint,
    .on_access = cap_on_access,
    .wants_timeline = true,
};
