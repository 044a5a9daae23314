/* pol_util.c - helpers the policies share: parameter values, key modules, handle groups, LRU */
#include "policy/pol_util.h"
#include "sim_npu/sim_desc.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameter values ------------------------------------------------------------------------ */

memsvc_status_t pol_param_bool(const char *pol, const char *key, const char *value, bool *out_p,
                               char *err, size_t errlen)
{
    if (strcmp(value, "on") == 0 || strcmp(value, "1") == 0 || strcmp(value, "true") == 0) {
        *out_p = true;
    } else if (strcmp(value, "off") == 0 || strcmp(value, "0") == 0 ||
               strcmp(value, "false") == 0) {
        *out_p = false;
    } else {
        snprintf(err, errlen, "%s: %s=%s: expected on or off", pol, key, value);
        return MEMSVC_ERR_PARSE;
    }
    return MEMSVC_OK;
}

memsvc_status_t pol_param_u64(const char *pol, const char *key, const char *value, uint64_t max,
                              uint64_t *out_p, char *err, size_t errlen)
{
    char              *end;
    unsigned long long v;

    errno = 0;
    v     = strtoull(value, &end, 10);
    if (!isdigit((unsigned char)value[0]) || *end != '\0' || errno != 0 || v > max) {
        snprintf(err, errlen, "%s: %s=%s: expected an integer from 0 to %llu", pol, key, value,
                 (unsigned long long)max);
        return MEMSVC_ERR_PARSE;
    }
    *out_p = v;
    return MEMSVC_OK;
}

memsvc_status_t pol_param_size(const char *pol, const char *key, const char *value, uint64_t *out_p,
                               char *err, size_t errlen)
{
    if (sim_parse_size(value, out_p) != MEMSVC_OK) {
        snprintf(err, errlen, "%s: %s=%s: expected a size such as 2GiB or 4096", pol, key, value);
        return MEMSVC_ERR_PARSE;
    }
    return MEMSVC_OK;
}

memsvc_status_t pol_param_double(const char *pol, const char *key, const char *value, double min,
                                 double max, double *out_p, char *err, size_t errlen)
{
    char  *end;
    double v;

    errno = 0;
    v     = strtod(value, &end);
    if (value[0] == '\0' || *end != '\0' || errno != 0 || !isfinite(v) || v < min || v > max) {
        snprintf(err, errlen, "%s: %s=%s: expected a number from %g to %g", pol, key, value, min,
                 max);
        return MEMSVC_ERR_PARSE;
    }
    *out_p = v;
    return MEMSVC_OK;
}

memsvc_status_t pol_parse_params_lists(const char *params, const char *const *list_keys,
                                       memsvc_status_t (*fn)(void *arg, const char *key,
                                                             const char *value, char *err,
                                                             size_t errlen),
                                       void *arg, char *err, size_t errlen)
{
    char           *copy, *item, *save = NULL;
    const char     *list   = NULL; /* the list key bare items continue */
    memsvc_status_t status = MEMSVC_OK;
    size_t          i;

    if (params == NULL || params[0] == '\0') {
        return MEMSVC_OK;
    }
    copy = strdup(params);
    if (copy == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');

        if (eq == NULL && list != NULL) {
            status = fn(arg, list, item, err, errlen);
        } else if (eq == NULL || eq == item) {
            snprintf(err, errlen, "policy parameter '%s' is not key=value", item);
            status = MEMSVC_ERR_PARSE;
        } else {
            *eq  = '\0';
            list = NULL;
            for (i = 0; list_keys != NULL && list_keys[i] != NULL; i++) {
                if (strcmp(list_keys[i], item) == 0) {
                    list = list_keys[i];
                }
            }
            status = fn(arg, item, eq + 1, err, errlen);
        }
        if (status != MEMSVC_OK) {
            break;
        }
    }
    free(copy);
    return status;
}

/* ---- keys --------------------------------------------------------------------------------------
 */

/* A leading segment "<prefix><digits>." of a key. */
static size_t pol_tag_segment(const char *s, const char *prefix)
{
    size_t plen = strlen(prefix);
    size_t i    = plen;

    if (strncmp(s, prefix, plen) != 0 || !isdigit((unsigned char)s[i])) {
        return 0;
    }
    while (isdigit((unsigned char)s[i])) {
        i++;
    }
    return (s[i] == '.') ? i + 1 : 0;
}

const char *pol_key_module(const char *key)
{
    static const char *const prefixes[] = {"L", "mb", "e"};
    bool                     more       = true;

    while (more) {
        size_t i;

        more = false;
        for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
            size_t n = pol_tag_segment(key, prefixes[i]);

            if (n > 0) {
                key += n;
                more = true;
            }
        }
    }
    return key;
}

memsvc_status_t pol_patterns_add(pol_patterns_t *p, const char *pattern)
{
    char *copy;

    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        char **np  = realloc(p->pat, cap * sizeof(*np));

        if (np == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        p->pat = np;
        p->cap = cap;
    }
    copy = strdup(pattern);
    if (copy == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    p->pat[p->n++] = copy;
    return MEMSVC_OK;
}

void pol_patterns_clear(pol_patterns_t *p)
{
    size_t i;

    for (i = 0; i < p->n; i++) {
        free(p->pat[i]);
    }
    free(p->pat);
    memset(p, 0, sizeof(*p));
}

int pol_patterns_match(const pol_patterns_t *p, const char *module)
{
    char   seg[MEMSVC_KEY_MAX + 1];
    size_t i;

    for (i = 0; i < p->n; i++) {
        const char *s = module;

        if (fnmatch(p->pat[i], module, 0) == 0) {
            return (int)i;
        }
        while (*s != '\0') {
            const char *dot = strchr(s, '.');
            size_t      len = (dot != NULL) ? (size_t)(dot - s) : strlen(s);

            memcpy(seg, s, len);
            seg[len] = '\0';
            if (fnmatch(p->pat[i], seg, 0) == 0 || fnmatch(p->pat[i], s, 0) == 0) {
                return (int)i;
            }
            s += len;
            if (*s == '.') {
                s++;
            }
        }
    }
    return -1;
}

/* ---- groups -------------------------------------------------------------------------------------
 */

static uint64_t pol_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void pol_groups_put(pol_groups_t *gs, size_t idx)
{
    size_t i = pol_mix(gs->g[idx].key) & (gs->num_buckets - 1);

    while (gs->buckets[i] != 0) {
        i = (i + 1) & (gs->num_buckets - 1);
    }
    gs->buckets[i] = (uint32_t)idx + 1;
}

pol_group_t *pol_groups_get(pol_groups_t *gs, uint64_t key, bool create)
{
    pol_group_t *g;
    size_t       i;

    if (gs->num_buckets > 0) {
        for (i = pol_mix(key) & (gs->num_buckets - 1); gs->buckets[i] != 0;
             i = (i + 1) & (gs->num_buckets - 1)) {
            if (gs->g[gs->buckets[i] - 1].key == key) {
                return &gs->g[gs->buckets[i] - 1];
            }
        }
    }
    if (!create) {
        return NULL;
    }
    if (gs->n == gs->cap) {
        size_t       cap = gs->cap ? 2 * gs->cap : 16;
        pol_group_t *ng  = realloc(gs->g, cap * sizeof(*ng));

        if (ng == NULL) {
            return NULL;
        }
        gs->g   = ng;
        gs->cap = cap;
    }
    if (2 * (gs->n + 1) > gs->num_buckets) {
        size_t    nb = gs->num_buckets ? 2 * gs->num_buckets : 64;
        uint32_t *b  = calloc(nb, sizeof(*b));

        if (b == NULL) {
            return NULL;
        }
        free(gs->buckets);
        gs->buckets     = b;
        gs->num_buckets = nb;
        for (i = 0; i < gs->n; i++) {
            pol_groups_put(gs, i);
        }
    }
    g = &gs->g[gs->n];
    memset(g, 0, sizeof(*g));
    g->key = key;
    pol_groups_put(gs, gs->n++);
    return g;
}

void pol_groups_free(pol_groups_t *gs)
{
    size_t i;

    for (i = 0; i < gs->n; i++) {
        free(gs->g[i].h);
    }
    free(gs->g);
    free(gs->buckets);
    memset(gs, 0, sizeof(*gs));
}

size_t pol_group_compact(pol_group_t *g, const pol_ctx_t *ctx)
{
    size_t i, j = 0;

    for (i = 0; i < g->n; i++) {
        if (pol_tensor(ctx, g->h[i]) != NULL) {
            g->h[j++] = g->h[i];
        }
    }
    g->n         = j;
    g->compacted = j;
    return j;
}

memsvc_status_t pol_group_add(pol_group_t *g, const pol_ctx_t *ctx, uint64_t handle)
{
    if (g->n >= 16 && g->n >= 2 * g->compacted) {
        pol_group_compact(g, ctx);
    }
    if (g->n == g->cap) {
        size_t    cap = g->cap ? 2 * g->cap : 16;
        uint64_t *nh  = realloc(g->h, cap * sizeof(*nh));

        if (nh == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        g->h   = nh;
        g->cap = cap;
    }
    g->h[g->n++] = handle;
    return MEMSVC_OK;
}

static void pol_group_each(pol_group_t *g, pol_ctx_t                                          *ctx,
                           void (*fn)(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t), void *arg)
{
    size_t i;

    pol_group_compact(g, ctx);
    for (i = 0; i < g->n; i++) {
        const pol_tensor_t *t = pol_tensor(ctx, g->h[i]);

        if (t != NULL) {
            fn(arg, ctx, t);
        }
    }
}

void pol_groups_each_layer(pol_groups_t *gs, pol_ctx_t *ctx, uint32_t job, int32_t layer,
                           int32_t mb, void (*fn)(void *arg, pol_ctx_t *ctx, const pol_tensor_t *t),
                           void   *arg)
{
    uint64_t want = pol_group_key(job, layer, 0);
    size_t   i;

    if (mb >= 0) {
        pol_group_t *g = pol_groups_get(gs, pol_group_key(job, layer, mb), false);

        if (g != NULL) {
            pol_group_each(g, ctx, fn, arg);
        }
        return;
    }
    for (i = 0; i < gs->n; i++) {
        if ((gs->g[i].key & ~(uint64_t)0xffff) == want) {
            pol_group_each(&gs->g[i], ctx, fn, arg);
        }
    }
}

/* ---- layers
 * -------------------------------------------------------------------------------------- */

memsvc_status_t pol_layers_add(pol_layers_t *l, int32_t layer)
{
    size_t lo = 0, hi = l->n;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (l->v[mid] == layer) {
            return MEMSVC_OK;
        }
        if (l->v[mid] < layer) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (l->n == l->cap) {
        size_t   cap = l->cap ? 2 * l->cap : 32;
        int32_t *nv  = realloc(l->v, cap * sizeof(*nv));

        if (nv == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        l->v   = nv;
        l->cap = cap;
    }
    memmove(&l->v[lo + 1], &l->v[lo], (l->n - lo) * sizeof(*l->v));
    l->v[lo] = layer;
    l->n++;
    return MEMSVC_OK;
}

int32_t pol_layers_next(const pol_layers_t *l, int32_t layer, int dir)
{
    size_t i;

    if (dir > 0) {
        for (i = 0; i < l->n; i++) {
            if (l->v[i] > layer) {
                return l->v[i];
            }
        }
    } else {
        for (i = l->n; i > 0; i--) {
            if (l->v[i - 1] < layer) {
                return l->v[i - 1];
            }
        }
    }
    return INT32_MIN;
}

void pol_layers_free(pol_layers_t *l)
{
    free(l->v);
    memset(l, 0, sizeof(*l));
}

/* ---- eviction
 * ------------------------------------------------------------------------------------ */

uint64_t pol_evict_lru(pol_ctx_t *ctx, unsigned dev, uint64_t need, bool drop,
                       bool (*skip)(void *arg, const pol_tensor_t *t), void *arg,
                       const char *reason)
{
    const pol_tensor_t *t   = pol_lru_first(ctx, dev);
    uint64_t            got = 0;

    pol_set_reason(ctx, reason != NULL ? reason : "lru fallback", "need %llu bytes",
                   (unsigned long long)need);
    while (t != NULL && got < need) {
        const pol_tensor_t *next = pol_lru_next(ctx, t);
        uint64_t            size = t->size;
        memsvc_status_t     status;

        if (skip != NULL && skip(arg, t)) {
            t = next;
            continue;
        }
        if (drop && t->recomputable && !t->durable) {
            status = pol_drop(ctx, t);
        } else {
            status = pol_swap_out(ctx, t);
        }
        if (pol_moved(status)) {
            got += size;
        } else if (status == MEMSVC_ERR_HOST_MEMORY && !drop) {
            break; /* host and disk are full: nothing more can go */
        }
        t = next;
    }
    return got;
}
