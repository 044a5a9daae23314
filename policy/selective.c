/* selective.c - the `selective` policy: recompute (and swap) listed modules, LRU for the rest */
#include "policy/pol_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Selective recomputation as in Megatron-LM (Korthikanti et al., 2022), DeepSeek-V3 and the
 * Pangu "selective R/S": activations whose module (the key without its L<n>./mb<n>./e<n>.
 * parts) matches the `recompute` list are dropped when their layer's forward ends (LAYER_END
 * in phase forward; pinned ones when released, still in forward), and first when room is
 * needed; those matching the `swap` list are swapped out at the same points; the rest is
 * left to LRU. A released tensor is not dropped at once, since a later operator of the same
 * layer may still read it in forward, unless the previous step's timeline says this was its
 * last forward use (as many forward acquires of the key as then): then it goes at that release.
 */

#define SEL_RECOMPUTE 1u /* pol_word: the tensor's class */
#define SEL_SWAP 2u
#define SEL_CLASS 3u
#define SEL_PENDING 4u /* pinned at layer end: act on release */
#define SEL_JOBS 16

/* Names that stand for the modules Megatron/DeepSeek/Pangu recompute, as key patterns. */
static const struct {
    const char *alias;
    const char *patterns[6];
} sel_aliases[] = {
    {"norm", {"ln?.out", "*_norm", "norm.out", "*layernorm*", "*rmsnorm*", NULL}},
    {"act", {"act", "act_out", "*act_fn*", "swiglu.out", "gelu.out", NULL}},
    {"up_proj", {"q_up", "kv_up", "*up_proj*", NULL}},
    {"permute", {"*permute*", NULL}},
};

typedef struct sel_state {
    pol_patterns_t recompute, swap;
    bool           recompute_set, swap_set; /* given by the user (defaults replaced) */
    bool           eager;                   /* act at the end of the layer's forward */
    pol_groups_t   acts;                    /* listed activations by (job, layer, mb) */
    uint32_t      *fwd_uses;                /* by key id: 1 + forward acquires in the previous
                                             * step of keys allocated then; 0: unknown */
    size_t num_fwd_uses;
    struct {
        uint32_t job;
        uint8_t  phase;
    } phase[SEL_JOBS];
    unsigned num_phase;
} sel_state_t;

/* Add a pattern or the patterns an alias stands for. */
static memsvc_status_t sel_add(pol_patterns_t *p, const char *item)
{
    memsvc_status_t status = MEMSVC_OK;
    size_t          i, j;

    for (i = 0; i < sizeof(sel_aliases) / sizeof(sel_aliases[0]); i++) {
        if (strcmp(sel_aliases[i].alias, item) == 0) {
            for (j = 0; sel_aliases[i].patterns[j] != NULL && status == MEMSVC_OK; j++) {
                status = pol_patterns_add(p, sel_aliases[i].patterns[j]);
            }
            return status;
        }
    }
    return pol_patterns_add(p, item);
}

static memsvc_status_t sel_param(void *arg, const char *key, const char *value, char *err,
                                 size_t errlen)
{
    sel_state_t    *s = arg;
    pol_patterns_t *p;
    bool           *set;

    if (strcmp(key, "eager") == 0) {
        return pol_param_bool("selective", key, value, &s->eager, err, errlen);
    }
    if (strcmp(key, "recompute") == 0) {
        p   = &s->recompute;
        set = &s->recompute_set;
    } else if (strcmp(key, "swap") == 0) {
        p   = &s->swap;
        set = &s->swap_set;
    } else {
        return pol_no_params(NULL, key, value, err, errlen);
    }
    if (!*set) {
        pol_patterns_clear(p);
        *set = true;
    }
    if (value[0] == '\0' || strcmp(value, "none") == 0) {
        return MEMSVC_OK;
    }
    if (strchr(value, '.') == value || strlen(value) > MEMSVC_KEY_MAX) {
        snprintf(err, errlen, "selective: %s=%s: expected a module name or pattern", key, value);
        return MEMSVC_ERR_PARSE;
    }
    return sel_add(p, value);
}

static void sel_destroy(void *state)
{
    sel_state_t *s = state;

    pol_patterns_clear(&s->recompute);
    pol_patterns_clear(&s->swap);
    pol_groups_free(&s->acts);
    free(s->fwd_uses);
    free(s);
}

static memsvc_status_t sel_create(const char *params, void **state_p, char *err, size_t errlen)
{
    static const char *const lists[]    = {"recompute", "swap", NULL};
    static const char *const defaults[] = {"norm", "act", "up_proj", "permute"};
    sel_state_t             *s          = calloc(1, sizeof(*s));
    memsvc_status_t          status     = MEMSVC_OK;
    size_t                   i;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    s->eager = true;
    for (i = 0; i < sizeof(defaults) / sizeof(defaults[0]) && status == MEMSVC_OK; i++) {
        status = sel_add(&s->recompute, defaults[i]);
    }
    if (status == MEMSVC_OK) {
        status = pol_parse_params_lists(params, lists, sel_param, s, err, errlen);
    }
    if (status != MEMSVC_OK) {
        sel_destroy(s);
        return status;
    }
    *state_p = s;
    return MEMSVC_OK;
}

static uint8_t *sel_phase_of(sel_state_t *s, uint32_t job)
{
    unsigned i;

    for (i = 0; i < s->num_phase; i++) {
        if (s->phase[i].job == job) {
            return &s->phase[i].phase;
        }
    }
    if (s->num_phase == SEL_JOBS) {
        return NULL;
    }
    s->phase[s->num_phase].job   = job;
    s->phase[s->num_phase].phase = MEMSVC_PHASE_NONE;
    return &s->phase[s->num_phase++].phase;
}

/* Drop or swap one listed tensor now (reason set by the caller). */
static void sel_act(pol_ctx_t *ctx, const pol_tensor_t *t)
{
    uint64_t cls = t->pol_word & SEL_CLASS;

    if (cls == SEL_RECOMPUTE && t->recomputable) {
        pol_drop(ctx, t);
    } else if (cls != 0) {
        pol_swap_out(ctx, t);
    }
}

static void sel_layer_end_one(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t)
{
    if (t->state != MEMSVC_STATE_ON_DEVICE || (t->pol_word & SEL_CLASS) == 0) {
        return;
    }
    if (t->pins > 0) {
        pol_set_word(ctx, t, t->pol_word | SEL_PENDING);
        return;
    }
    sel_act(ctx, t);
}

/* A new step: count, per key, the forward acquires of the step before. */
static void sel_learn(sel_state_t *s, pol_ctx_t *ctx)
{
    const pol_tl_entry_t *e;
    size_t                n, i, max = 0;
    uint32_t             *uses;

    pol_timeline_prev(ctx, &e, &n);
    for (i = 0; i < n; i++) {
        if (e[i].key_id != POL_TL_NO_KEY && e[i].key_id >= max) {
            max = (size_t)e[i].key_id + 1;
        }
    }
    uses = calloc(max > 0 ? max : 1, sizeof(*uses));
    if (uses == NULL) {
        return; /* keep what was learnt before */
    }
    for (i = 0; i < n; i++) {
        uint32_t id = e[i].key_id;

        if (id == POL_TL_NO_KEY || e[i].kind != MEMSVC_KIND_ACTIVATION) {
            continue;
        }
        if (e[i].access == POL_ACCESS_ALLOC && e[i].phase == MEMSVC_PHASE_FORWARD) {
            uses[id] = 1; /* a later allocation of the key in the step starts over */
        } else if (e[i].access == POL_ACCESS_ACQUIRE && e[i].phase == MEMSVC_PHASE_FORWARD &&
                   uses[id] > 0 && uses[id] < UINT32_MAX) {
            uses[id]++;
        }
    }
    free(s->fwd_uses);
    s->fwd_uses     = uses;
    s->num_fwd_uses = max;
}

static void sel_on_hint(void *state, pol_ctx_t *ctx, const pol_hint_t *hint)
{
    sel_state_t *s     = state;
    uint8_t     *phase = sel_phase_of(s, hint->job);

    if (phase != NULL && hint->phase != MEMSVC_PHASE_NONE) {
        *phase = (uint8_t)hint->phase;
    }
    if (hint->type == MEMSVC_HINT_STEP_BEGIN && s->eager) {
        sel_learn(s, ctx);
    }
    if (s->eager && hint->type == MEMSVC_HINT_LAYER_END && hint->phase == MEMSVC_PHASE_FORWARD &&
        hint->layer >= 0) {
        pol_set_reason(ctx, "selective layer forward done", "L%d mb%d", (int)hint->layer,
                       (int)hint->microbatch);
        pol_groups_each_layer(&s->acts, ctx, hint->job, hint->layer, hint->microbatch,
                              sel_layer_end_one, NULL);
    }
}

static void sel_on_access(void *state, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    sel_state_t *s = state;

    if (t->kind != MEMSVC_KIND_ACTIVATION) {
        return;
    }
    if (a == POL_ACCESS_ALLOC) {
        const char  *module = pol_key_module(pol_key(t));
        uint64_t     cls    = 0;
        pol_group_t *g;

        if (pol_patterns_match(&s->recompute, module) >= 0 && t->recomputable) {
            cls = SEL_RECOMPUTE;
        } else if (pol_patterns_match(&s->swap, module) >= 0) {
            cls = SEL_SWAP;
        }
        pol_set_word(ctx, t, cls);
        if (cls != 0 && t->tags.layer >= 0) {
            g = pol_groups_get(&s->acts, pol_group_key(t->job, t->tags.layer, t->tags.microbatch),
                               true);
            if (g != NULL) {
                pol_group_add(g, ctx, t->handle);
            }
        }
    } else if (a == POL_ACCESS_RELEASE && s->eager && (t->pol_word & SEL_CLASS) != 0 &&
               !(t->pol_word & SEL_PENDING) && pol_evictable(t) && s->num_fwd_uses > 0) {
        uint8_t *phase = sel_phase_of(s, t->job);
        uint32_t id    = pol_timeline_key_id(ctx, t);

        if (phase != NULL && *phase == MEMSVC_PHASE_FORWARD && id < s->num_fwd_uses &&
            s->fwd_uses[id] > 0 && t->accesses + 1 >= s->fwd_uses[id]) {
            pol_set_reason(ctx, "selective last forward use", "L%d mb%d, %u forward uses",
                           (int)t->tags.layer, (int)t->tags.microbatch,
                           (unsigned)(s->fwd_uses[id] - 1));
            sel_act(ctx, t);
        }
    } else if (a == POL_ACCESS_RELEASE && (t->pol_word & SEL_PENDING) && t->pins == 0) {
        uint8_t *phase = sel_phase_of(s, t->job);

        pol_set_word(ctx, t, t->pol_word & SEL_CLASS);
        if (phase != NULL && *phase == MEMSVC_PHASE_FORWARD && pol_evictable(t)) {
            pol_set_reason(ctx, "selective layer forward done, released", "L%d mb%d",
                           (int)t->tags.layer, (int)t->tags.microbatch);
            sel_act(ctx, pol_tensor(ctx, t->handle));
        }
    }
}

static bool sel_skip_unless_recompute(void *arg, const pol_tensor_t *t)
{
    return (t->pol_word & SEL_CLASS) != SEL_RECOMPUTE || !t->recomputable ||
           t->kind != MEMSVC_KIND_ACTIVATION;
}

static bool sel_skip_unless_swap(void *arg, const pol_tensor_t *t)
{
    return (t->pol_word & SEL_CLASS) != SEL_SWAP || t->kind != MEMSVC_KIND_ACTIVATION;
}

static void sel_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    uint64_t got;

    got = pol_evict_lru(ctx, dev, need, true, sel_skip_unless_recompute, NULL,
                        "selective recompute listed");
    if (got < need) {
        got += pol_evict_lru(ctx, dev, need - got, false, sel_skip_unless_swap, NULL,
                             "selective swap listed");
    }
    if (got < need) {
        pol_evict_lru(ctx, dev, need - got, false, NULL, NULL, "selective lru fallback");
    }
}

const pol_ops_t pol_selective_ops = {
    .name = "selective",
    .summary =
        "selective recompute: drop listed modules after their layer's forward, LRU for the rest",
    .params         = "recompute=norm,act,up_proj,permute: modules dropped and recomputed (aliases "
                      "norm, act, up_proj, permute, or glob patterns on the key's module part; "
                      "none: nothing); "
                      "swap=none: modules swapped out likewise; "
                      "eager=on: act at the last forward use as the previous step's timeline shows, "
                      "else at the end of the layer's forward (off: only when room is needed)",
    .create         = sel_create,
    .destroy        = sel_destroy,
    .make_room      = sel_make_room,
    .on_hint        = sel_on_hint,
    .on_access      = sel_on_access,
    .wants_timeline = true,
};
