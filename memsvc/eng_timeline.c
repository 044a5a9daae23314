/* eng_timeline.c - the access timeline: per step, each access by interned key, two steps kept */
#include "memsvc/eng_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- interned keys -------------------------------------------------------------------------- */

static uint32_t eng_tl_probe_start(const eng_tl_t *tl, uint32_t hash)
{
    return hash & (tl->num_kbuckets - 1);
}

/* Id of (job, key) or POL_TL_NO_KEY. */
static uint32_t eng_tl_find(const eng_tl_t *tl, uint32_t job, const char *key, uint32_t hash)
{
    uint32_t i;

    if (tl->num_kbuckets == 0) {
        return POL_TL_NO_KEY;
    }
    for (i = eng_tl_probe_start(tl, hash);; i = (i + 1) & (tl->num_kbuckets - 1)) {
        uint32_t            b = tl->kbuckets[i];
        const eng_tl_key_t *k;

        if (b == 0) {
            return POL_TL_NO_KEY;
        }
        k = &tl->keys[b - 1];
        if (k->hash == hash && k->job == job && strcmp(k->key, key) == 0) {
            return b - 1;
        }
    }
}

static void eng_tl_bucket_put(eng_tl_t *tl, uint32_t id)
{
    uint32_t i = eng_tl_probe_start(tl, tl->keys[id].hash);

    while (tl->kbuckets[i] != 0) {
        i = (i + 1) & (tl->num_kbuckets - 1);
    }
    tl->kbuckets[i] = id + 1;
}

/* Rebuild the buckets for the live ids, at a size keeping the load at most one half. */
static memsvc_status_t eng_tl_rehash(eng_tl_t *tl, uint32_t want)
{
    uint32_t  n = 64;
    uint32_t *b;
    uint32_t  id;

    while (n < 2 * want) {
        n *= 2;
    }
    b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    free(tl->kbuckets);
    tl->kbuckets     = b;
    tl->num_kbuckets = n;
    for (id = 0; id < tl->num_keys; id++) {
        if (tl->keys[id].key != NULL) {
            eng_tl_bucket_put(tl, id);
        }
    }
    return MEMSVC_OK;
}

/* Id of the tensor's key, interning it if new; POL_TL_NO_KEY when out of memory. */
static uint32_t eng_tl_intern(eng_tl_t *tl, const eng_tensor_t *t)
{
    uint32_t      id = eng_tl_find(tl, t->pub.job, t->key, t->hash);
    eng_tl_key_t *k;

    if (id != POL_TL_NO_KEY) {
        return id;
    }
    if (2 * (tl->live_keys + 1) > tl->num_kbuckets &&
        eng_tl_rehash(tl, tl->live_keys + 1) != MEMSVC_OK) {
        return POL_TL_NO_KEY;
    }
    if (tl->free_key != POL_TL_NO_KEY) {
        id           = tl->free_key;
        tl->free_key = tl->keys[id].next_free;
    } else {
        if (tl->num_keys == tl->cap_keys) {
            uint32_t      cap = tl->cap_keys ? 2 * tl->cap_keys : 256;
            eng_tl_key_t *nk  = realloc(tl->keys, cap * sizeof(*nk));

            if (nk == NULL) {
                return POL_TL_NO_KEY;
            }
            tl->keys     = nk;
            tl->cap_keys = cap;
        }
        id = tl->num_keys++;
    }
    k      = &tl->keys[id];
    k->key = strdup(t->key);
    if (k->key == NULL) {
        k->next_free = tl->free_key;
        tl->free_key = id;
        return POL_TL_NO_KEY;
    }
    k->job  = t->pub.job;
    k->hash = t->hash;
    tl->live_keys++;
    eng_tl_bucket_put(tl, id);
    return id;
}

/* After a rotation: keep the ids the previous step refers to, free the others. */
static void eng_tl_collect(eng_tl_t *tl)
{
    uint8_t *used;
    uint32_t id;
    size_t   i;

    if (tl->num_keys == 0) {
        return;
    }
    used = calloc(tl->num_keys, 1);
    if (used == NULL) {
        return; /* keep everything: correct, only larger */
    }
    for (i = 0; i < tl->prev.n; i++) {
        if (tl->prev.e[i].key_id != POL_TL_NO_KEY) {
            used[tl->prev.e[i].key_id] = 1;
        }
    }
    for (id = 0; id < tl->num_keys; id++) {
        eng_tl_key_t *k = &tl->keys[id];

        if (k->key != NULL && !used[id]) {
            free(k->key);
            k->key       = NULL;
            k->next_free = tl->free_key;
            tl->free_key = id;
            tl->live_keys--;
        }
    }
    free(used);
    memset(tl->kbuckets, 0, tl->num_kbuckets * sizeof(*tl->kbuckets));
    for (id = 0; id < tl->num_keys; id++) {
        if (tl->keys[id].key != NULL) {
            eng_tl_bucket_put(tl, id);
        }
    }
}

/* ---- steps ------------------------------------------------------------------------------------
 */

memsvc_status_t eng_tl_init(eng_t *eng, bool on)
{
    eng_tl_t *tl = &eng->tl;

    memset(tl, 0, sizeof(*tl));
    tl->on       = on;
    tl->step     = -1;
    tl->free_key = POL_TL_NO_KEY;
    return MEMSVC_OK;
}

void eng_tl_cleanup(eng_t *eng)
{
    eng_tl_t *tl = &eng->tl;
    uint32_t  id;

    for (id = 0; id < tl->num_keys; id++) {
        free(tl->keys[id].key);
    }
    free(tl->keys);
    free(tl->kbuckets);
    free(tl->cur.e);
    free(tl->prev.e);
    free(tl->where);
    memset(tl, 0, sizeof(*tl));
}

/* The current step becomes the previous one; the one before is forgotten. */
static void eng_tl_rotate(eng_tl_t *tl, int32_t step)
{
    eng_tl_steplog_t old = tl->prev;

    tl->prev    = tl->cur;
    tl->cur     = old;
    tl->cur.n   = 0;
    tl->step    = step;
    tl->started = true;
    eng_tl_collect(tl);
}

/* What the hints of (job, rank) said last; created on first use (NULL when out of memory). */
static eng_tl_where_t *eng_tl_where(eng_tl_t *tl, uint32_t job, uint32_t rank, bool create)
{
    eng_tl_where_t *w;
    size_t          i;

    for (i = 0; i < tl->num_where; i++) {
        if (tl->where[i].job == job && tl->where[i].rank == rank) {
            return &tl->where[i];
        }
    }
    if (!create) {
        return NULL;
    }
    if (tl->num_where == tl->cap_where) {
        size_t cap = tl->cap_where ? 2 * tl->cap_where : 8;

        w = realloc(tl->where, cap * sizeof(*w));
        if (w == NULL) {
            return NULL;
        }
        tl->where     = w;
        tl->cap_where = cap;
    }
    w             = &tl->where[tl->num_where++];
    w->job        = job;
    w->rank       = rank;
    w->step       = -1;
    w->layer      = -1;
    w->microbatch = -1;
    w->phase      = MEMSVC_PHASE_NONE;
    return w;
}

void eng_tl_hint(eng_t *eng, const eng_hint_t *hint)
{
    eng_tl_t       *tl = &eng->tl;
    eng_tl_where_t *w  = eng_tl_where(tl, hint->job, hint->rank, true);

    if (w != NULL) {
        if (hint->phase != MEMSVC_PHASE_NONE) {
            w->phase = (uint8_t)hint->phase;
        }
        switch (hint->type) {
        case MEMSVC_HINT_STEP_BEGIN:
            w->step       = hint->step;
            w->layer      = -1;
            w->microbatch = -1;
            break;
        case MEMSVC_HINT_LAYER_BEGIN:
            w->layer      = (int16_t)hint->layer;
            w->microbatch = (int16_t)hint->microbatch;
            break;
        case MEMSVC_HINT_LAYER_END:
            w->layer      = -1;
            w->microbatch = -1;
            break;
        default:
            break;
        }
    }
    if (hint->type == MEMSVC_HINT_STEP_BEGIN &&
        (hint->step < 0 || !tl->started || hint->step != tl->step)) {
        eng_tl_rotate(tl, hint->step);
    }
}

void eng_tl_record(eng_t *eng, const eng_tensor_t *t, pol_access_t a)
{
    eng_tl_t             *tl = &eng->tl;
    const eng_tl_where_t *w;
    pol_tl_entry_t       *e;

    if (!tl->on) {
        return;
    }
    if (tl->cur.n == tl->cur.cap) {
        size_t          cap = tl->cur.cap ? 2 * tl->cur.cap : 1024;
        pol_tl_entry_t *ne;

        if (cap > ENG_TL_MAX_ENTRIES) {
            cap = ENG_TL_MAX_ENTRIES;
        }
        if (tl->cur.n >= cap || (ne = realloc(tl->cur.e, cap * sizeof(*ne))) == NULL) {
            tl->overflow++;
            return;
        }
        tl->cur.e   = ne;
        tl->cur.cap = cap;
    }
    w               = eng_tl_where(tl, t->pub.job, t->rank, false);
    e               = &tl->cur.e[tl->cur.n++];
    e->time         = sim_clock_now(eng->clock);
    e->size         = t->pub.size;
    e->recompute_ns = t->pub.recompute_ns;
    e->key_id       = eng_tl_intern(tl, t);
    e->job          = t->pub.job;
    e->tags         = t->pub.tags;
    e->step         = (w != NULL) ? w->step : tl->step;
    e->layer        = (w != NULL) ? w->layer : -1;
    e->microbatch   = (w != NULL) ? w->microbatch : -1;
    e->device       = t->pub.device;
    e->access       = (uint8_t)a;
    e->kind         = t->pub.kind;
    e->phase        = (w != NULL) ? w->phase : MEMSVC_PHASE_NONE;
    e->recomputable = t->pub.recomputable;
    e->durable      = t->pub.durable;
}

/* ---- readers ----------------------------------------------------------------------------------
 */

void eng_timeline_enable(eng_t *eng, bool on)
{
    eng->tl.forced = on;
    eng->tl.on     = on || eng->pol->wants_timeline;
}

void eng_timeline(const eng_t *eng, bool prev, const pol_tl_entry_t **entries_p, size_t *n_p)
{
    const eng_tl_steplog_t *s = prev ? &eng->tl.prev : &eng->tl.cur;

    *entries_p = (s->n > 0) ? s->e : NULL;
    *n_p       = s->n;
}

const char *eng_timeline_key(const eng_t *eng, uint32_t key_id)
{
    return (key_id < eng->tl.num_keys) ? eng->tl.keys[key_id].key : NULL;
}

size_t eng_timeline_keys(const eng_t *eng)
{
    return eng->tl.live_keys;
}

void pol_timeline_prev(const pol_ctx_t *ctx, const pol_tl_entry_t **entries_p, size_t *n_p)
{
    eng_timeline(ctx->eng, true, entries_p, n_p);
}

void pol_timeline_cur(const pol_ctx_t *ctx, const pol_tl_entry_t **entries_p, size_t *n_p)
{
    eng_timeline(ctx->eng, false, entries_p, n_p);
}

const char *pol_timeline_key(const pol_ctx_t *ctx, uint32_t key_id)
{
    return eng_timeline_key(ctx->eng, key_id);
}

uint32_t pol_timeline_key_id(const pol_ctx_t *ctx, const pol_tensor_t *t)
{
    const eng_tensor_t *et = eng_reg_get(ctx->eng, t->handle);

    return (et != NULL) ? eng_tl_find(&ctx->eng->tl, et->pub.job, et->key, et->hash)
                        : POL_TL_NO_KEY;
}
