/* full.c - the `full` policy: keep each layer's input, drop its other activations at its end */
#include "policy/pol_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Full activation recomputation (activation checkpointing per layer; Chen et al. 2016, the
 * "2sbh" row of Korthikanti et al.). At the end of a layer's forward (LAYER_END in phase
 * forward) every recomputable activation of that layer and micro-batch is dropped except the
 * layer's input: with keep=input, the first activation allocated for the (layer, micro-batch);
 * otherwise the activations whose module matches the `keep` patterns. Pinned ones are dropped
 * when released, still in forward. Backward recomputes through the engine's RECOMPUTE answer.
 * When room is short, LRU swaps.
 */

#define FULL_INPUT 1u   /* pol_word: kept as the layer's input */
#define FULL_PENDING 2u /* pinned at layer end: drop on release */
#define FULL_JOBS 16

typedef struct full_state {
    bool           keep_input; /* keep=input */
    pol_patterns_t keep;       /* else: modules kept */
    bool           keep_set;
    pol_groups_t   acts; /* activations by (job, layer, mb) */
    struct {
        uint32_t job;
        uint8_t  phase;
    } phase[FULL_JOBS];
    unsigned num_phase;
} full_state_t;

static memsvc_status_t full_param(void *arg, const char *key, const char *value, char *err,
                                  size_t errlen)
{
    full_state_t *s = arg;

    if (strcmp(key, "keep") != 0) {
        return pol_no_params(NULL, key, value, err, errlen);
    }
    if (!s->keep_set) {
        s->keep_set   = true;
        s->keep_input = false;
    }
    if (strcmp(value, "input") == 0) {
        s->keep_input = true;
        return MEMSVC_OK;
    }
    if (value[0] == '\0' || value[0] == '.' || strlen(value) > MEMSVC_KEY_MAX) {
        snprintf(err, errlen, "full: keep=%s: expected input or module patterns", value);
        return MEMSVC_ERR_PARSE;
    }
    return pol_patterns_add(&s->keep, value);
}

static void full_destroy(void *state)
{
    full_state_t *s = state;

    pol_patterns_clear(&s->keep);
    pol_groups_free(&s->acts);
    free(s);
}

static memsvc_status_t full_create(const char *params, void **state_p, char *err, size_t errlen)
{
    static const char *const lists[] = {"keep", NULL};
    full_state_t            *s       = calloc(1, sizeof(*s));
    memsvc_status_t          status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    s->keep_input = true;
    status        = pol_parse_params_lists(params, lists, full_param, s, err, errlen);
    if (status != MEMSVC_OK) {
        full_destroy(s);
        return status;
    }
    *state_p = s;
    return MEMSVC_OK;
}

static uint8_t *full_phase_of(full_state_t *s, uint32_t job)
{
    unsigned i;

    for (i = 0; i < s->num_phase; i++) {
        if (s->phase[i].job == job) {
            return &s->phase[i].phase;
        }
    }
    if (s->num_phase == FULL_JOBS) {
        return NULL;
    }
    s->phase[s->num_phase].job   = job;
    s->phase[s->num_phase].phase = MEMSVC_PHASE_NONE;
    return &s->phase[s->num_phase++].phase;
}

static void full_layer_end_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    if (t->state != MEMSVC_STATE_ON_DEVICE || (t->pol_word & FULL_INPUT) || !t->recomputable) {
        return;
    }
    if (t->pins > 0) {
        pol_set_word(ctx, t, FULL_PENDING);
        return;
    }
    pol_drop(ctx, t);
}

static void full_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    full_state_t *s     = state;
    uint8_t      *phase = full_phase_of(s, hint->job);

    if (phase != NULL && hint->phase != MEMSVC_PHASE_NONE) {
        *phase = (uint8_t)hint->phase;
    }
    if (hint->type == MEMSVC_HINT_LAYER_END && hint->phase == MEMSVC_PHASE_FORWARD &&
        hint->layer >= 0) {
        pol_set_reason(ctx, "full recompute layer forward done", "L%d mb%d", (int)hint->layer,
                       (int)hint->microbatch);
        pol_groups_each_layer(&s->acts, ctx, hint->job, hint->layer, hint->microbatch,
                              full_layer_end_one, NULL);
    }
}

static void full_on_access(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    full_state_t *s = state;
    pol_group_t  *g;

    if (t->kind != MEMSVC_KIND_ACTIVATION || t->tags.layer < 0) {
        return;
    }
    if (a == POL_ACCESS_ALLOC) {
        bool input;

        g = pol_groups_get(&s->acts, pol_group_key(t->job, t->tags.layer, t->tags.microbatch),
                           true);
        if (g == NULL) {
            return;
        }
        if (s->keep_input) {
            input = pol_group_compact(g, ctx) == 0; /* the first live one of (layer, mb) */
        } else {
            input = pol_patterns_match(&s->keep, pol_key_module(pol_key(t))) >= 0;
        }
        pol_set_word(ctx, t, input ? FULL_INPUT : 0);
        pol_group_add(g, ctx, t->handle);
    } else if (a == POL_ACCESS_RELEASE && t->pol_word == FULL_PENDING && t->pins == 0) {
        uint8_t *phase = full_phase_of(s, t->job);

        pol_set_word(ctx, t, 0);
        if (phase != NULL && *phase == MEMSVC_PHASE_FORWARD && pol_evictable(t)) {
            pol_set_reason(ctx, "full recompute layer forward done, released", "L%d mb%d",
                           (int)t->tags.layer, (int)t->tags.microbatch);
            pol_drop(ctx, t);
        }
    }
}

static void full_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    pol_evict_lru(ctx, dev, need, false, NULL, NULL, "full lru fallback");
}

const pol_ops_t pol_full_ops = {
    .name    = "full",
    .summary = "full recompute: keep each layer's input, drop its other activations after forward",
    .params  = "keep=input: what survives a layer's forward: input (the first activation of "
               "each layer and micro-batch) or module patterns (e.g. keep=ln1.in)",
    .create  = full_create,
    .destroy = full_destroy,
    .make_room = full_make_room,
    .on_hint   = full_on_hint,
    .on_access = full_on_access,
};
