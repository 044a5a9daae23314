/* vdnn.c - the `vdnn` policy: offload layer activations in forward, prefetch ahead in backward */
#include "policy/pol_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * vDNN (Rhu et al., MICRO'16). At the end of a layer's forward (LAYER_END in phase forward),
 * that layer's activations of that micro-batch are swapped out (pinned ones when released,
 * while still in forward). At the start of a layer's backward (LAYER_BEGIN in phase backward)
 * the layer's own activations and those of the `ahead` layers below it are prefetched. When a
 * request does not fit, the least recently used tensors are swapped.
 */

#define VDNN_PENDING 1u /* pol_word: swap out when released (it was pinned at layer end) */
#define VDNN_JOBS 16    /* jobs whose phase is tracked */

typedef struct vdnn_state {
    unsigned     ahead;  /* layers prefetched ahead in backward */
    pol_groups_t acts;   /* activations by (job, layer, micro-batch) */
    pol_layers_t layers; /* layers seen, sorted */
    struct {
        uint32_t job;
        uint8_t  phase;
    } phase[VDNN_JOBS];
    unsigned num_phase;
} vdnn_state_t;

static memsvc_status_t vdnn_param(void *arg, const char *key, const char *value, char *err,
                                  size_t errlen)
{
    vdnn_state_t *s = arg;
    uint64_t      v;

    if (strcmp(key, "ahead") == 0) {
        memsvc_status_t status = pol_param_u64("vdnn", key, value, 64, &v, err, errlen);

        s->ahead = (unsigned)v;
        return status;
    }
    return pol_no_params(NULL, key, value, err, errlen);
}

static memsvc_status_t vdnn_create(const char *params, void **state_p, char *err, size_t errlen)
{
    vdnn_state_t   *s = calloc(1, sizeof(*s));
    memsvc_status_t status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    s->ahead = 1;
    status   = pol_parse_params(params, vdnn_param, s, err, errlen);
    if (status != MEMSVC_OK) {
        free(s);
        return status;
    }
    *state_p = s;
    return MEMSVC_OK;
}

static void vdnn_destroy(void *state)
{
    vdnn_state_t *s = state;

    pol_groups_free(&s->acts);
    pol_layers_free(&s->layers);
    free(s);
}

static uint8_t *vdnn_phase_of(vdnn_state_t *s, uint32_t job)
{
    unsigned i;

    for (i = 0; i < s->num_phase; i++) {
        if (s->phase[i].job == job) {
            return &s->phase[i].phase;
        }
    }
    if (s->num_phase == VDNN_JOBS) {
        return NULL;
    }
    s->phase[s->num_phase].job   = job;
    s->phase[s->num_phase].phase = MEMSVC_PHASE_NONE;
    return &s->phase[s->num_phase++].phase;
}

static void vdnn_offload_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    if (t->state != MEMSVC_STATE_ON_DEVICE) {
        return;
    }
    if (t->pins > 0) {
        pol_set_word(ctx, t, VDNN_PENDING);
        return;
    }
    pol_swap_out(ctx, t);
}

static void vdnn_prefetch_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    pol_set_word(ctx, t, 0);
    if (t->state == MEMSVC_STATE_ON_HOST || t->state == MEMSVC_STATE_ON_DISK ||
        t->state == MEMSVC_STATE_ON_PEER || t->state == MEMSVC_STATE_MOVING_OUT) {
        pol_prefetch(ctx, t);
    }
}

static void vdnn_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    vdnn_state_t *s     = state;
    uint8_t      *phase = vdnn_phase_of(s, hint->job);
    int32_t       layer = hint->layer;
    unsigned      k;

    if (phase != NULL && hint->phase != MEMSVC_PHASE_NONE) {
        *phase = (uint8_t)hint->phase;
    }
    if (layer < 0) {
        return;
    }
    if (hint->type == MEMSVC_HINT_LAYER_END && hint->phase == MEMSVC_PHASE_FORWARD) {
        pol_set_reason(ctx, "vdnn layer forward done", "L%d mb%d", (int)layer,
                       (int)hint->microbatch);
        pol_groups_each_layer(&s->acts, ctx, hint->job, layer, hint->microbatch, vdnn_offload_one,
                              NULL);
    } else if (hint->type == MEMSVC_HINT_LAYER_BEGIN && hint->phase == MEMSVC_PHASE_BACKWARD) {
        pol_set_reason(ctx, "vdnn backward layer begins", "L%d mb%d", (int)layer,
                       (int)hint->microbatch);
        pol_groups_each_layer(&s->acts, ctx, hint->job, layer, hint->microbatch, vdnn_prefetch_one,
                              NULL);
        for (k = 0; k < s->ahead; k++) {
            layer = pol_layers_next(&s->layers, layer, -1);
            if (layer == INT32_MIN) {
                break;
            }
            pol_set_reason(ctx, "vdnn prefetch ahead", "L%d for L%d mb%d", (int)layer,
                           (int)hint->layer, (int)hint->microbatch);
            pol_groups_each_layer(&s->acts, ctx, hint->job, layer, hint->microbatch,
                                  vdnn_prefetch_one, NULL);
        }
    }
}

static void vdnn_on_access(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    vdnn_state_t *s = state;
    pol_group_t  *g;

    if (t->kind != MEMSVC_KIND_ACTIVATION || t->tags.layer < 0) {
        return;
    }
    if (a == POL_ACCESS_ALLOC) {
        g = pol_groups_get(&s->acts, pol_group_key(t->job, t->tags.layer, t->tags.microbatch),
                           true);
        if (g != NULL) {
            pol_group_add(g, ctx, t->handle);
        }
        pol_layers_add(&s->layers, t->tags.layer);
    } else if (a == POL_ACCESS_RELEASE && t->pol_word == VDNN_PENDING && t->pins == 0) {
        uint8_t *phase = vdnn_phase_of(s, t->job);

        pol_set_word(ctx, t, 0);
        if (phase != NULL && *phase == MEMSVC_PHASE_FORWARD && pol_evictable(t)) {
            pol_set_reason(ctx, "vdnn layer forward done, released", "L%d mb%d", (int)t->tags.layer,
                           (int)t->tags.microbatch);
            pol_swap_out(ctx, t);
        }
    }
}

static void vdnn_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    pol_evict_lru(ctx, dev, need, false, NULL, NULL, "vdnn lru fallback");
}

const pol_ops_t pol_vdnn_ops = {
    .name = "vdnn",
    .summary =
        "vDNN: offload each layer's activations after its forward, prefetch ahead in backward",
    .params    = "ahead=1: layers below the current one prefetched at each backward layer begin",
    .create    = vdnn_create,
    .destroy   = vdnn_destroy,
    .make_room = vdnn_make_room,
    .on_hint   = vdnn_on_hint,
    .on_access = vdnn_on_access,
};
