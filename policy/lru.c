/* lru.c - the `lru` policy: swap out the least recently used unpinned tensors until it fits */
#include "policy/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lru_state {
    bool drop; /* drop recomputable tensors instead of swapping them */
} lru_state_t;

static memsvc_status_t lru_param(void *arg, const char *key, const char *value, char *err,
                                 size_t errlen)
{
    lru_state_t *s = arg;

    if (strcmp(key, "drop") == 0) {
        if (strcmp(value, "on") == 0 || strcmp(value, "1") == 0) {
            s->drop = true;
        } else if (strcmp(value, "off") == 0 || strcmp(value, "0") == 0) {
            s->drop = false;
        } else {
            snprintf(err, errlen, "lru: drop=%s: expected on or off", value);
            return MEMSVC_ERR_PARSE;
        }
        return MEMSVC_OK;
    }
    return pol_no_params(NULL, key, value, err, errlen);
}

static memsvc_status_t lru_create(const char *params, void **state_p, char *err, size_t errlen)
{
    lru_state_t    *s = calloc(1, sizeof(*s));
    memsvc_status_t status;

    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    status = pol_parse_params(params, lru_param, s, err, errlen);
    if (status != MEMSVC_OK) {
        free(s);
        return status;
    }
    *state_p = s;
    return MEMSVC_OK;
}

static void lru_destroy(void *state)
{
    free(state);
}

/* Walk the device's LRU list from the oldest; move out until `need` bytes are on their way. */
static void lru_make_room(void *state, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    const lru_state_t  *s   = state;
    const pol_tensor_t *t   = pol_lru_first(ctx, dev);
    uint64_t            got = 0;

    pol_set_reason(ctx, "lru oldest", "need %llu bytes", (unsigned long long)need);
    while (t != NULL && got < need) {
        const pol_tensor_t *next = pol_lru_next(ctx, t);
        uint64_t            size = t->size;
        memsvc_status_t     status;

        if (s->drop && t->recomputable && !t->durable) {
            status = pol_drop(ctx, t);
        } else {
            status = pol_swap_out(ctx, t);
        }
        if (status == MEMSVC_OK || status == MEMSVC_INPROGRESS) {
            got += size;
        } else if (status == MEMSVC_ERR_HOST_MEMORY) {
            return; /* host and disk are full: nothing more can go */
        }
        t = next;
    }
}

const pol_ops_t pol_lru_ops = {
    .name      = "lru",
    .summary   = "swap out the least recently used unpinned tensors until the request fits",
    .params    = "drop=off: drop recomputable tensors instead of swapping them",
    .create    = lru_create,
    .destroy   = lru_destroy,
    .make_room = lru_make_room,
    .on_hint   = NULL,
    .on_access = NULL,
};
