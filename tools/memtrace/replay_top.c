/* replay_top.c - the largest live tensors at each device's peak, from a second read of the trace */
#include "tools/memtrace/replay.h"

#include <stdlib.h>
#include <string.h>

/*
 * The replay notes, per device, the event after which the trace's live bytes there peaked.
 * Taking the top-N at every new peak would cost a scan of the live set per new peak (many, while
 * a forward pass grows); instead the trace is read again up to the last of those events, with
 * only ALLOC/FREE bookkeeping, and each device's live set is ranked once, at its event.
 */

typedef struct top_ent {
    struct top_ent *next; /* hash chain */
    uint64_t        id;
    uint32_t        rank;
    uint16_t        device;
    uint8_t         kind;
    int32_t         layer;
    uint64_t        size;
    char            key[]; /* NUL-terminated */
} top_ent_t;

typedef struct top_map {
    top_ent_t **b;
    size_t      nb, n;
} top_map_t;

static size_t top_hash(const top_map_t *m, uint32_t rank, uint64_t id)
{
    uint64_t h = (id ^ ((uint64_t)rank << 40)) * 0x9e3779b97f4a7c15ull;

    return (size_t)(h >> 17) & (m->nb - 1);
}

static top_ent_t **top_slot(top_map_t *m, uint32_t rank, uint64_t id)
{
    top_ent_t **p = &m->b[top_hash(m, rank, id)];

    while (*p != NULL && ((*p)->id != id || (*p)->rank != rank)) {
        p = &(*p)->next;
    }
    return p;
}

static memsvc_status_t top_grow(top_map_t *m)
{
    size_t      nb = m->nb ? 2 * m->nb : 1024, i;
    top_ent_t **b = calloc(nb, sizeof(*b)), **old = m->b;
    size_t      onb = m->nb;

    if (b == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    m->b  = b;
    m->nb = nb;
    for (i = 0; i < onb; i++) {
        top_ent_t *e = old[i], *next;

        for (; e != NULL; e = next) {
            top_ent_t **p = &m->b[top_hash(m, e->rank, e->id)];

            next    = e->next;
            e->next = *p;
            *p      = e;
        }
    }
    free(old);
    return MEMSVC_OK;
}

static void top_map_free(top_map_t *m)
{
    size_t i;

    for (i = 0; i < m->nb; i++) {
        top_ent_t *e = m->b[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->b);
}

static memsvc_status_t top_alloc(top_map_t *m, const mt_event_t *ev)
{
    size_t      len = strlen(ev->key);
    top_ent_t **p, *e;

    if (m->n >= m->nb && top_grow(m) != MEMSVC_OK) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    p = top_slot(m, ev->rank, ev->tensor);
    if (*p != NULL) {
        return MEMSVC_OK; /* allocated twice: the replay has refused such a trace already */
    }
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    e->next   = NULL;
    e->id     = ev->tensor;
    e->rank   = ev->rank;
    e->device = (uint16_t)ev->device;
    e->kind   = (uint8_t)ev->kind;
    e->layer  = ev->tags.layer;
    e->size   = ev->size;
    memcpy(e->key, ev->key, len + 1);
    *p = e;
    m->n++;
    return MEMSVC_OK;
}

static void top_free(top_map_t *m, const mt_event_t *ev)
{
    top_ent_t **p, *e;

    if (m->nb == 0) {
        return;
    }
    p = top_slot(m, ev->rank, ev->tensor);
    if (*p == NULL) {
        return;
    }
    e  = *p;
    *p = e->next;
    free(e);
    m->n--;
}

static int top_cmp(const void *a, const void *b)
{
    const top_ent_t *x = *(const top_ent_t *const *)a, *y = *(const top_ent_t *const *)b;
    int              c;

    if (x->size != y->size) {
        return (x->size > y->size) ? -1 : 1;
    }
    c = strcmp(x->key, y->key);
    return (c != 0) ? c : (x->rank > y->rank) - (x->rank < y->rank);
}

/* Rank device dev's live tensors now: its top (at most n). */
static memsvc_status_t top_take(const top_map_t *m, unsigned dev, uint32_t n, mt_replay_dev_t *rd)
{
    top_ent_t **all;
    size_t      i, k = 0;
    top_ent_t  *e;

    all = malloc((m->n ? m->n : 1) * sizeof(*all));
    if (all == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < m->nb; i++) {
        for (e = m->b[i]; e != NULL; e = e->next) {
            if (e->device == dev) {
                all[k++] = e;
            }
        }
    }
    qsort(all, k, sizeof(*all), top_cmp);
    if (k > n) {
        k = n;
    }
    free(rd->top);
    rd->top     = calloc(k ? k : 1, sizeof(*rd->top));
    rd->num_top = 0;
    if (rd->top == NULL) {
        free(all);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < k; i++) {
        mt_replay_top_t *t = &rd->top[i];

        snprintf(t->key, sizeof(t->key), "%s", all[i]->key);
        t->rank  = all[i]->rank;
        t->kind  = (memsvc_kind_t)all[i]->kind;
        t->layer = all[i]->layer;
        t->size  = all[i]->size;
    }
    rd->num_top = (uint32_t)k;
    free(all);
    return MEMSVC_OK;
}

memsvc_status_t mt_replay_top(const char *path, uint32_t top_n, mt_replay_report_t *report,
                              char *err, size_t errlen)
{
    mt_reader_t    *r;
    mt_event_t      ev;
    top_map_t       m = {NULL, 0, 0};
    memsvc_status_t status;
    uint64_t        last = 0, index;
    unsigned        d, todo = 0;
    bool            end = false;
    char            msg[256];

    if (top_n > MT_REPLAY_TOP_MAX) {
        top_n = MT_REPLAY_TOP_MAX;
    }
    for (d = 0; d < SIM_MAX_NPUS; d++) {
        if (report->devs[d].live_peak > 0) {
            todo++;
            last =
                (report->devs[d].live_peak_event > last) ? report->devs[d].live_peak_event : last;
        }
    }
    if (todo == 0) {
        return MEMSVC_OK;
    }
    status = mt_reader_open(path, &r, msg, sizeof(msg));
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "%s: %s", path, msg);
        return status;
    }
    for (index = 0; index <= last; index++) {
        status = mt_reader_next(r, &ev, &end, msg, sizeof(msg));
        if (status != MEMSVC_OK || end) {
            snprintf(err, errlen, "%s: %s", path,
                     end ? "ended before the replay's peak (changed while replaying?)" : msg);
            status = (status != MEMSVC_OK) ? status : MEMSVC_ERR_FORMAT;
            break;
        }
        if (ev.type == MT_EV_ALLOC) {
            status = top_alloc(&m, &ev);
        } else if (ev.type == MT_EV_FREE) {
            top_free(&m, &ev);
        }
        for (d = 0; d < SIM_MAX_NPUS && status == MEMSVC_OK; d++) {
            mt_replay_dev_t *rd = &report->devs[d];

            if (rd->live_peak > 0 && rd->live_peak_event == index) {
                status = top_take(&m, d, top_n, rd);
            }
        }
        if (status != MEMSVC_OK) {
            if (status == MEMSVC_ERR_NO_RESOURCE) {
                snprintf(err, errlen, "out of memory");
            }
            break;
        }
    }
    mt_reader_close(r);
    top_map_free(&m);
    return status;
}
