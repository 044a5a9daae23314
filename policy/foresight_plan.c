/* foresight_plan.c - plan a step from the previous one's timeline; fire the plan; Belady fallback
 */
#include "policy/foresight_plan.h"
#include "sim_npu/sim_alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FSP_BUCKETS 8192 /* link-time buckets over the step */
#define FSP_NONE UINT32_MAX

static void fsp_watch_run(fsp_t *p, pol_ctx_t *ctx);
#define FSP_LEAD_MAX 200000000ull /* learnt prefetch lead is capped at 200 ms */

/* ---- parameters ------------------------------------------------------------------------------ */

memsvc_status_t fsp_param(fsp_params_t *prm, const char *pol, const char *key, const char *value,
                          char *err, size_t errlen)
{
    if (strcmp(key, "swap") == 0) {
        return pol_param_bool(pol, key, value, &prm->swap, err, errlen);
    }
    if (strcmp(key, "drop") == 0) {
        return pol_param_bool(pol, key, value, &prm->drop, err, errlen);
    }
    if (strcmp(key, "margin") == 0) {
        return pol_param_double(pol, key, value, 0.0, 0.5, &prm->margin, err, errlen);
    }
    if (strcmp(key, "slack") == 0) {
        return pol_param_double(pol, key, value, 0.0, 100.0, &prm->slack, err, errlen);
    }
    if (strcmp(key, "min_bytes") == 0) {
        return pol_param_size(pol, key, value, &prm->min_bytes, err, errlen);
    }
    snprintf(err, errlen, "%s: unknown parameter '%s'", pol, key);
    return MEMSVC_ERR_UNKNOWN_KEY;
}

memsvc_status_t fsp_init(fsp_t *p, const fsp_params_t *prm)
{
    memset(p, 0, sizeof(*p));
    p->prm = *prm;
    return MEMSVC_OK;
}

static void fsp_free_plan(fsp_t *p)
{
    free(p->act);
    free(p->act_off);
    free(p->act_n);
    free(p->ent_off);
    free(p->ent_n);
    free(p->ent_time);
    free(p->ent_access);
    p->act     = NULL;
    p->act_off = p->act_n = p->ent_off = p->ent_n = NULL;
    p->ent_time                                   = NULL;
    p->ent_access                                 = NULL;
    p->num_act = p->cap_act = 0;
    p->num_keys             = 0;
    p->have_plan            = false;
}

void fsp_cleanup(fsp_t *p)
{
    fsp_free_plan(p);
    free(p->occ);
    free(p->handle);
    free(p->next_act);
    free(p->planned_in);
    free(p->lead_ns);
    free(p->watch);
    memset(p, 0, sizeof(*p));
}

/* Per-key run-time arrays cover ids < n (zeroed when grown). false when out of memory. */
static bool fsp_grow_keys(fsp_t *p, uint32_t n)
{
    uint32_t cap = p->cap_keys ? p->cap_keys : 1024;
    void    *a, *b, *c, *d, *e;

    if (n <= p->cap_keys) {
        return true;
    }
    while (cap < n) {
        cap *= 2;
    }
    a = realloc(p->occ, cap * sizeof(*p->occ));
    if (a != NULL) {
        p->occ = a;
    }
    b = realloc(p->handle, cap * sizeof(*p->handle));
    if (b != NULL) {
        p->handle = b;
    }
    c = realloc(p->next_act, cap * sizeof(*p->next_act));
    if (c != NULL) {
        p->next_act = c;
    }
    d = realloc(p->planned_in, cap * sizeof(*p->planned_in));
    if (d != NULL) {
        p->planned_in = d;
    }
    e = realloc(p->lead_ns, cap * sizeof(*p->lead_ns));
    if (e != NULL) {
        p->lead_ns = e;
    }
    if (a == NULL || b == NULL || c == NULL || d == NULL || e == NULL) {
        return false;
    }
    memset(p->occ + p->cap_keys, 0, (cap - p->cap_keys) * sizeof(*p->occ));
    memset(p->handle + p->cap_keys, 0, (cap - p->cap_keys) * sizeof(*p->handle));
    memset(p->next_act + p->cap_keys, 0, (cap - p->cap_keys) * sizeof(*p->next_act));
    memset(p->planned_in + p->cap_keys, 0, (cap - p->cap_keys) * sizeof(*p->planned_in));
    memset(p->lead_ns + p->cap_keys, 0, (cap - p->cap_keys) * sizeof(*p->lead_ns));
    p->cap_keys = cap;
    return true;
}

/* ---- a max segment tree with range add ------------------------------------------------------ */

typedef struct fsp_tree {
    int64_t *mx, *lz;
    uint32_t n;
} fsp_tree_t;

static void fsp_tree_build(fsp_tree_t *t, uint32_t node, uint32_t lo, uint32_t hi, const int64_t *v)
{
    if (hi - lo == 1) {
        t->mx[node] = v[lo];
        return;
    }
    fsp_tree_build(t, 2 * node, lo, (lo + hi) / 2, v);
    fsp_tree_build(t, 2 * node + 1, (lo + hi) / 2, hi, v);
    t->mx[node] = (t->mx[2 * node] > t->mx[2 * node + 1]) ? t->mx[2 * node] : t->mx[2 * node + 1];
}

static void fsp_tree_add(fsp_tree_t *t, uint32_t node, uint32_t lo, uint32_t hi, uint32_t a,
                         uint32_t b, int64_t d)
{
    int64_t l, r;

    if (b <= lo || hi <= a) {
        return;
    }
    if (a <= lo && hi <= b) {
        t->mx[node] += d;
        t->lz[node] += d;
        return;
    }
    fsp_tree_add(t, 2 * node, lo, (lo + hi) / 2, a, b, d);
    fsp_tree_add(t, 2 * node + 1, (lo + hi) / 2, hi, a, b, d);
    l           = t->mx[2 * node];
    r           = t->mx[2 * node + 1];
    t->mx[node] = ((l > r) ? l : r) + t->lz[node];
}

/* Max over [a, b). */
static int64_t fsp_tree_max(const fsp_tree_t *t, uint32_t node, uint32_t lo, uint32_t hi,
                            uint32_t a, uint32_t b)
{
    int64_t l, r;

    if (b <= lo || hi <= a) {
        return INT64_MIN / 2;
    }
    if (a <= lo && hi <= b) {
        return t->mx[node];
    }
    l = fsp_tree_max(t, 2 * node, lo, (lo + hi) / 2, a, b);
    r = fsp_tree_max(t, 2 * node + 1, (lo + hi) / 2, hi, a, b);
    return ((l > r) ? l : r) + t->lz[node];
}

/* Position of the overall maximum. */
static uint32_t fsp_tree_argmax(const fsp_tree_t *t)
{
    uint32_t node = 1, lo = 0, hi = t->n;

    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;

        if (t->mx[2 * node] >= t->mx[2 * node + 1]) {
            node = 2 * node;
            hi   = mid;
        } else {
            node = 2 * node + 1;
            lo   = mid;
        }
    }
    return lo;
}

/* ---- one device's plan ------------------------------------------------------------------------
 */

typedef struct fsp_cand {
    uint32_t   key;  /* local key index */
    uint32_t   s, e; /* idle from entry s (release; FSP_NONE: step start) to entry e (acquire) */
    uint32_t   tail; /* cyclic: the last release (the interval runs to the step end) */
    sim_time_t dur;  /* idle time */
    bool       chosen;
} fsp_cand_t;

typedef struct fsp_lkey {
    uint32_t   key_id;
    sim_time_t tx; /* one-way transfer time of its size */
    uint64_t   size, rc;
    bool       recomputable, durable, persistent, skip;
} fsp_lkey_t;

typedef struct fsp_choice {
    uint32_t   c; /* candidate */
    bool       drop;
    uint32_t   p; /* prefetch trigger entry (swap) */
    sim_time_t tx;
} fsp_choice_t;

typedef struct fsp_dev {
    const fsp_params_t   *prm;
    const pol_tl_entry_t *E;
    uint32_t             *ix; /* entries of the device */
    uint32_t              m;
    sim_time_t           *t;   /* their times */
    uint32_t             *lk;  /* local key of each */
    uint32_t             *ord; /* ordinal of the entry among its key's entries */
    fsp_lkey_t           *keys;
    uint32_t              nk;
    fsp_cand_t           *cand;
    uint32_t              nc;
    fsp_choice_t         *ch;
    uint32_t              nch;
    fsp_tree_t            tree;
    int64_t               budget;
    sim_time_t            t0, t1, bw; /* step span; bucket width */
    double               *lf[2];      /* free link time per bucket: 0 out, 1 in */
    double               *pf[2];      /* prefix sums */
    uint32_t             *cov_off;    /* candidates covering each tree node: offsets (4m+2) */
    uint32_t             *cov;        /* and the candidate indices */
    const uint64_t       *lead;       /* learnt lead per key id (or NULL) */
    uint32_t              nlead;
    uint64_t              unresolved;
} fsp_dev_t;

/* One-way transfer time: half the modelled round trip. */
static sim_time_t fsp_tx(uint64_t bytes, pol_ctx_t *ctx, unsigned dev)
{
    return pol_swap_cost_ns(ctx, dev, bytes) / 2;
}

static uint32_t fsp_bucket(const fsp_dev_t *d, sim_time_t t)
{
    if (t <= d->t0) {
        return 0;
    }
    t = (t - d->t0) / d->bw;
    return (t >= FSP_BUCKETS) ? FSP_BUCKETS - 1 : (uint32_t)t;
}

static void fsp_prefix(fsp_dev_t *d, int l)
{
    uint32_t i;

    d->pf[l][0] = 0;
    for (i = 0; i < FSP_BUCKETS; i++) {
        d->pf[l][i + 1] = d->pf[l][i] + d->lf[l][i];
    }
}

/* Free link time in [a, b). */
static double fsp_free(const fsp_dev_t *d, int l, sim_time_t a, sim_time_t b)
{
    if (b <= a) {
        return 0;
    }
    return d->pf[l][fsp_bucket(d, b)] - d->pf[l][fsp_bucket(d, a)];
}

/* Reserve tx on the out link from a forward; returns when it is done. */
static sim_time_t fsp_reserve_fwd(fsp_dev_t *d, int l, sim_time_t a, sim_time_t tx)
{
    uint32_t i   = fsp_bucket(d, a);
    double   rem = (double)tx;

    for (; i < FSP_BUCKETS && rem > 0; i++) {
        double take = (d->lf[l][i] < rem) ? d->lf[l][i] : rem;

        d->lf[l][i] -= take;
        rem -= take;
        if (rem <= 0) {
            break;
        }
    }
    fsp_prefix(d, l);
    if (i >= FSP_BUCKETS) {
        return d->t1 + tx;
    }
    return d->t0 + (sim_time_t)(i + 1) * d->bw;
}

/* Reserve tx on the in link backward from b; returns when the transfer starts. */
static sim_time_t fsp_reserve_bwd(fsp_dev_t *d, int l, sim_time_t b, sim_time_t tx)
{
    int64_t i   = fsp_bucket(d, b);
    double  rem = (double)tx;

    for (; i >= 0 && rem > 0; i--) {
        double take = (d->lf[l][i] < rem) ? d->lf[l][i] : rem;

        d->lf[l][i] -= take;
        rem -= take;
        if (rem <= 0) {
            break;
        }
    }
    fsp_prefix(d, l);
    if (i < 0) {
        return d->t0;
    }
    return d->t0 + (sim_time_t)i * d->bw;
}

/* First entry at or after time x (m if none). */
static uint32_t fsp_at(const fsp_dev_t *d, sim_time_t x)
{
    uint32_t lo = 0, hi = d->m;

    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;

        if (d->t[mid] < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Lead before a swap-in beyond its transfer time. */
static sim_time_t fsp_lead(const fsp_dev_t *d, uint32_t key, sim_time_t tx)
{
    sim_time_t l   = (sim_time_t)(d->prm->slack * (double)tx);
    uint32_t   kid = d->keys[key].key_id;

    if (l < d->prm->min_slack_ns) {
        l = d->prm->min_slack_ns;
    }
    if (d->lead != NULL && kid < d->nlead) {
        l += d->lead[kid];
    }
    return l;
}

/*
 * What a candidate would give. For a swap: the entry range of freed memory (one or two
 * ranges, cyclic), the prefetch trigger, the exposed time. For a drop: its range and cost.
 * Returns false when the option frees nothing.
 */
typedef struct fsp_eval {
    uint32_t   a1, b1, a2, b2; /* freed [a1, b1) and [a2, b2) (empty: a == b) */
    uint32_t   p;              /* prefetch trigger entry */
    sim_time_t cost, covered, tx;
} fsp_eval_t;

static bool fsp_eval_swap(const fsp_dev_t *d, const fsp_cand_t *c, sim_time_t tx, fsp_eval_t *ev)
{
    sim_time_t lead = fsp_lead(d, c->key, tx), ts, te, done, in_at;
    double     fo, fi, exp = 0;

    memset(ev, 0, sizeof(*ev));
    ev->tx = tx;
    if (c->tail != FSP_NONE) {
        /* cyclic: out after the last use, in before the first one */
        ts     = d->t[c->tail];
        done   = ts + tx;
        fo     = fsp_free(d, 0, ts, d->t1);
        te     = (c->e < d->m) ? d->t[c->e] : d->t1;
        fi     = fsp_free(d, 1, d->t0, te);
        exp    = ((double)tx > fo ? (double)tx - fo : 0) + ((double)tx > fi ? (double)tx - fi : 0);
        in_at  = (te > tx + lead + d->t0) ? te - tx - lead : d->t0;
        ev->a1 = fsp_at(d, done);
        ev->b1 = d->m;
        ev->p  = fsp_at(d, in_at);
        if (ev->p > 0 && d->t[ev->p] > in_at) {
            ev->p--;
        }
        if (ev->p >= c->e) {
            ev->p = 0;
        }
        ev->a2      = 0;
        ev->b2      = ev->p;
        ev->cost    = (sim_time_t)exp;
        ev->covered = (d->t1 > done ? d->t1 - done : 0) + (in_at - d->t0);
        return ev->a1 < ev->b1 || ev->a2 < ev->b2;
    }
    ts    = d->t[c->s];
    te    = d->t[c->e];
    done  = ts + tx;
    in_at = (te > tx + lead) ? te - tx - lead : 0;
    if (in_at <= done) {
        return false;
    }
    fo  = fsp_free(d, 0, ts, te - tx);
    fi  = fsp_free(d, 1, done, te);
    exp = ((double)tx > fo ? (double)tx - fo : 0) + ((double)tx > fi ? (double)tx - fi : 0);
    /* the trigger: the last entry at or before in_at, after the release */
    ev->p = fsp_at(d, in_at);
    if (ev->p > 0 && (ev->p >= d->m || d->t[ev->p] > in_at)) {
        ev->p--;
    }
    if (ev->p <= c->s) {
        return false;
    }
    ev->a1      = fsp_at(d, done);
    ev->b1      = ev->p;
    ev->cost    = (sim_time_t)exp;
    ev->covered = d->t[ev->p] - done;
    return ev->a1 < ev->b1;
}

static bool fsp_eval_drop(const fsp_dev_t *d, const fsp_cand_t *c, fsp_eval_t *ev)
{
    const fsp_lkey_t *k = &d->keys[c->key];

    memset(ev, 0, sizeof(*ev));
    if (c->tail != FSP_NONE || c->s == FSP_NONE || !k->recomputable || k->durable) {
        return false;
    }
    ev->a1      = c->s + 1;
    ev->b1      = c->e;
    ev->cost    = k->rc;
    ev->covered = d->t[c->e] - d->t[c->s];
    return ev->a1 < ev->b1;
}

static double fsp_score(const fsp_dev_t *d, const fsp_cand_t *c, const fsp_eval_t *ev)
{
    return (double)d->keys[c->key].size * (double)ev->covered / ((double)ev->cost + 1000.0);
}

static bool fsp_in(const fsp_eval_t *ev, uint32_t pos)
{
    return (pos >= ev->a1 && pos < ev->b1) || (pos >= ev->a2 && pos < ev->b2);
}

/* Commit a candidate: update the curve and the links, remember the choice. */
static void fsp_commit(fsp_dev_t *d, uint32_t ci, bool drop, const fsp_eval_t *ev0)
{
    fsp_cand_t *c    = &d->cand[ci];
    int64_t     size = (int64_t)d->keys[c->key].size;
    fsp_eval_t  ev   = *ev0;

    c->chosen = true;
    if (!drop) {
        /* reserve the links; the freed range follows the reservation */
        sim_time_t ts   = (c->tail != FSP_NONE) ? d->t[c->tail] : d->t[c->s];
        sim_time_t done = fsp_reserve_fwd(d, 0, ts, ev.tx);
        sim_time_t te   = (c->e < d->m) ? d->t[c->e] : d->t1;
        sim_time_t lead = fsp_lead(d, c->key, ev.tx);

        fsp_reserve_bwd(d, 1, (te > lead ? te - lead : 0), ev.tx);
        ev.a1 = fsp_at(d, done);
        if (c->tail == FSP_NONE) {
            uint32_t q;

            /* no room to come back into yet: start the swap-in after the last point over
             * budget before the use (later, but it fits) */
            for (q = c->e; q-- > ev.p;) {
                if (fsp_tree_max(&d->tree, 1, 0, d->m, q, q + 1) > d->budget) {
                    break;
                }
            }
            if (q + 1 > ev.p && q + 1 < c->e && q >= ev.p) {
                ev.p  = q + 1;
                ev.b1 = ev.p;
            }
            if (ev.a1 > ev.b1) {
                ev.a1 = ev.b1;
            }
        }
    }
    if (ev.a1 < ev.b1) {
        fsp_tree_add(&d->tree, 1, 0, d->m, ev.a1, ev.b1, -size);
    }
    if (ev.a2 < ev.b2) {
        fsp_tree_add(&d->tree, 1, 0, d->m, ev.a2, ev.b2, -size);
    }
    d->ch[d->nch++] = (fsp_choice_t){.c = ci, .drop = drop, .p = ev.p, .tx = ev.tx};
}

/* Best option of a candidate (swap or drop), or false. */
static bool fsp_best_option(const fsp_dev_t *d, pol_ctx_t *ctx, unsigned dev, const fsp_cand_t *c,
                            fsp_eval_t *ev_p, bool *drop_p, double *score_p)
{
    fsp_eval_t es, ed;
    bool       hs = false, hd = false;
    double     ss = 0, sd = 0;

    if (d->prm->swap) {
        hs = fsp_eval_swap(d, c, d->keys[c->key].tx, &es);
        ss = hs ? fsp_score(d, c, &es) : 0;
    }
    if (d->prm->drop) {
        hd = fsp_eval_drop(d, c, &ed);
        sd = hd ? fsp_score(d, c, &ed) : 0;
    }
    if (!hs && !hd) {
        return false;
    }
    if (hd && (!hs || sd > ss || (sd == ss && ed.cost == 0))) {
        *ev_p    = ed;
        *drop_p  = true;
        *score_p = sd;
    } else {
        *ev_p    = es;
        *drop_p  = false;
        *score_p = ss;
    }
    return true;
}

/*
 * An interval stabbing index over entry positions: each candidate is stored in the tree nodes
 * that make up the positions its idle interval covers (fsp_select_global only looks at the
 * candidates on the path to the point it resolves). fill: false counts (cov_off[node + 1]++),
 * true stores (cov_off[node] advanced as a cursor).
 */
static void fsp_cov_add(fsp_dev_t *d, uint32_t node, uint32_t lo, uint32_t hi, uint32_t a,
                        uint32_t b, uint32_t ci, bool fill)
{
    if (b <= lo || hi <= a) {
        return;
    }
    if (a <= lo && hi <= b) {
        if (fill) {
            d->cov[d->cov_off[node]++] = ci;
        } else {
            d->cov_off[node + 1]++;
        }
        return;
    }
    fsp_cov_add(d, 2 * node, lo, (lo + hi) / 2, a, b, ci, fill);
    fsp_cov_add(d, 2 * node + 1, (lo + hi) / 2, hi, a, b, ci, fill);
}

static void fsp_cov_each(fsp_dev_t *d, uint32_t ci, bool fill)
{
    const fsp_cand_t *c = &d->cand[ci];

    if (c->chosen) {
        return;
    }
    if (c->tail == FSP_NONE) {
        fsp_cov_add(d, 1, 0, d->m, c->s + 1, c->e, ci, fill);
    } else {
        fsp_cov_add(d, 1, 0, d->m, c->tail, d->m, ci, fill);
        fsp_cov_add(d, 1, 0, d->m, 0, c->e, ci, fill);
    }
}

/* Build the index (false when out of memory: fsp_select_global then scans every candidate). */
static bool fsp_cov_build(fsp_dev_t *d)
{
    uint32_t nn = 4 * d->m, i;

    d->cov_off = calloc((size_t)nn + 2, sizeof(*d->cov_off));
    if (d->cov_off == NULL) {
        return false;
    }
    for (i = 0; i < d->nc; i++) {
        fsp_cov_each(d, i, false);
    }
    for (i = 1; i <= nn + 1; i++) {
        d->cov_off[i] += d->cov_off[i - 1];
    }
    d->cov = malloc(((size_t)d->cov_off[nn + 1] + 1) * sizeof(*d->cov));
    if (d->cov == NULL) {
        free(d->cov_off);
        d->cov_off = NULL;
        return false;
    }
    for (i = 0; i < d->nc; i++) {
        fsp_cov_each(d, i, true);
    }
    /* the cursors ended at the next node's start: shift back */
    for (i = nn + 1; i > 0; i--) {
        d->cov_off[i] = d->cov_off[i - 1];
    }
    d->cov_off[0] = 0;
    return true;
}

/* Consider candidate i for the point pos (the best score wins; ties: the lowest index). */
static void fsp_consider(fsp_dev_t *d, pol_ctx_t *ctx, unsigned dev, uint32_t pos, uint32_t i,
                         double *best_p, uint32_t *bi_p, bool *bdrop_p, fsp_eval_t *bev_p)
{
    const fsp_cand_t *c = &d->cand[i];
    fsp_eval_t        ev;
    bool              drop;
    double            sc;

    if (c->chosen) {
        return;
    }
    if (c->tail == FSP_NONE && (c->s >= pos || c->e <= pos)) {
        return;
    }
    if (c->tail != FSP_NONE && pos < c->tail && pos >= c->e) {
        return;
    }
    if (!fsp_best_option(d, ctx, dev, c, &ev, &drop, &sc) || !fsp_in(&ev, pos)) {
        return;
    }
    if (sc > *best_p || (sc == *best_p && i < *bi_p)) {
        *best_p  = sc;
        *bi_p    = i;
        *bdrop_p = drop;
        *bev_p   = ev;
    }
}

/* foresight: the highest excess first; the covering candidate with the best score. */
static void fsp_select_global(fsp_dev_t *d, pol_ctx_t *ctx, unsigned dev)
{
    uint32_t guard   = d->nc + d->m + 16;
    bool     indexed = fsp_cov_build(d);

    while (guard-- > 0) {
        uint32_t   pos   = fsp_tree_argmax(&d->tree);
        int64_t    mx    = d->tree.mx[1];
        double     best  = -1;
        uint32_t   bi    = FSP_NONE, i;
        bool       bdrop = false;
        fsp_eval_t bev;

        if (mx <= d->budget) {
            return;
        }
        if (indexed) {
            uint32_t node = 1, lo = 0, hi = d->m, k;

            for (;;) {
                for (k = d->cov_off[node]; k < d->cov_off[node + 1]; k++) {
                    fsp_consider(d, ctx, dev, pos, d->cov[k], &best, &bi, &bdrop, &bev);
                }
                if (hi - lo <= 1) {
                    break;
                }
                if (pos < (lo + hi) / 2) {
                    hi   = (lo + hi) / 2;
                    node = 2 * node;
                } else {
                    lo   = (lo + hi) / 2;
                    node = 2 * node + 1;
                }
            }
        } else {
            for (i = 0; i < d->nc; i++) {
                fsp_consider(d, ctx, dev, pos, i, &best, &bi, &bdrop, &bev);
            }
        }
        if (bi == FSP_NONE) {
            /* nothing covers this point: leave it to the run-time fallback */
            d->unresolved += (uint64_t)(mx - d->budget);
            fsp_tree_add(&d->tree, 1, 0, d->m, pos, pos + 1, d->budget - mx - 1);
            continue;
        }
        fsp_commit(d, bi, bdrop, &bev);
    }
}

static const fsp_dev_t *fsp_sort_dev; /* qsort has no argument; planning is single-threaded */

static int fsp_cmp_idle(const void *a, const void *b)
{
    const fsp_cand_t *x = &fsp_sort_dev->cand[*(const uint32_t *)a];
    const fsp_cand_t *y = &fsp_sort_dev->cand[*(const uint32_t *)b];

    if (x->dur != y->dur) {
        return (x->dur > y->dur) ? -1 : 1;
    }
    return (*(const uint32_t *)a < *(const uint32_t *)b) ? -1 : 1;
}

static int fsp_cmp_msps(const void *a, const void *b)
{
    const fsp_lkey_t *x  = &fsp_sort_dev->keys[fsp_sort_dev->cand[*(const uint32_t *)a].key];
    const fsp_lkey_t *y  = &fsp_sort_dev->keys[fsp_sort_dev->cand[*(const uint32_t *)b].key];
    double            mx = (double)x->size / ((double)x->rc + 1.0);
    double            my = (double)y->size / ((double)y->rc + 1.0);

    if (mx != my) {
        return (mx > my) ? -1 : 1;
    }
    return (*(const uint32_t *)a < *(const uint32_t *)b) ? -1 : 1;
}

/* Does the option free memory where the curve is over budget? */
static bool fsp_helps(const fsp_dev_t *d, const fsp_eval_t *ev)
{
    return (ev->a1 < ev->b1 && fsp_tree_max(&d->tree, 1, 0, d->m, ev->a1, ev->b1) > d->budget) ||
           (ev->a2 < ev->b2 && fsp_tree_max(&d->tree, 1, 0, d->m, ev->a2, ev->b2) > d->budget);
}

/*
 * capuchin: tensors by idle time, longest first, swapped when the transfer hides in the links'
 * free time; then recomputation by memory saved per ns of recompute; then the swaps that do
 * not hide, while the curve is still over budget.
 */
static void fsp_select_capuchin(fsp_dev_t *d, pol_ctx_t *ctx, unsigned dev, uint32_t *order)
{
    uint32_t   i, pass;
    fsp_eval_t ev;

    for (i = 0; i < d->nc; i++) {
        order[i] = i;
    }
    fsp_sort_dev = d;
    qsort(order, d->nc, sizeof(*order), fsp_cmp_idle);
    for (pass = 0; pass < 3; pass++) {
        if (pass == 1) {
            qsort(order, d->nc, sizeof(*order), fsp_cmp_msps);
        } else if (pass == 2) {
            qsort(order, d->nc, sizeof(*order), fsp_cmp_idle);
        }
        for (i = 0; i < d->nc && d->tree.mx[1] > d->budget; i++) {
            fsp_cand_t *c = &d->cand[order[i]];

            if (c->chosen) {
                continue;
            }
            if (pass == 1) {
                if (d->prm->drop && fsp_eval_drop(d, c, &ev) && fsp_helps(d, &ev)) {
                    fsp_commit(d, order[i], true, &ev);
                }
                continue;
            }
            if (!d->prm->swap || !fsp_eval_swap(d, c, d->keys[c->key].tx, &ev) ||
                (pass == 0 && ev.cost > 0) || !fsp_helps(d, &ev)) {
                continue;
            }
            fsp_commit(d, order[i], false, &ev);
        }
    }
    /* what is left over budget stays to the run-time fallback */
    if (d->tree.mx[1] > d->budget) {
        d->unresolved += (uint64_t)(d->tree.mx[1] - d->budget);
    }
}

typedef struct fsp_xfer {
    sim_time_t issue, tx, deadline;
    uint32_t   ch;
} fsp_xfer_t;

static int fsp_cmp_xfer(const void *a, const void *b)
{
    const fsp_xfer_t *x = a, *y = b;

    if (x->issue != y->issue) {
        return (x->issue < y->issue) ? -1 : 1;
    }
    return (x->ch < y->ch) ? -1 : (x->ch > y->ch);
}

/*
 * Check the plan on the FIFO host-to-device link: swap-ins in the order their triggers come,
 * each after the one before. A swap-in that would end after its use is turned into a drop when the
 * recomputation is cheaper than the lateness; otherwise its lateness is predicted stall.
 */
static void fsp_verify(fsp_dev_t *d, fsp_summary_t *sum)
{
    fsp_xfer_t *x = malloc((d->nch + 1) * sizeof(*x));
    sim_time_t  busy;
    uint32_t    i, n = 0;

    if (x == NULL) {
        return;
    }
    for (i = 0; i < d->nch; i++) {
        const fsp_choice_t *ch = &d->ch[i];
        const fsp_cand_t   *c  = &d->cand[ch->c];

        if (ch->drop) {
            continue;
        }
        x[n++] = (fsp_xfer_t){.issue    = d->t[ch->p],
                              .tx       = ch->tx,
                              .deadline = (c->e < d->m) ? d->t[c->e] : d->t1,
                              .ch       = i};
    }
    if (n > 1) {
        qsort(x, n, sizeof(*x), fsp_cmp_xfer);
    }
    busy = 0;
    for (i = 0; i < n; i++) {
        sim_time_t        start = (x[i].issue > busy) ? x[i].issue : busy;
        sim_time_t        done  = start + x[i].tx;
        fsp_choice_t     *ch    = &d->ch[x[i].ch];
        const fsp_cand_t *c     = &d->cand[ch->c];
        const fsp_lkey_t *k     = &d->keys[c->key];

        busy = done;
        if (done <= x[i].deadline) {
            continue;
        }
        if (d->prm->drop && c->tail == FSP_NONE && k->recomputable && !k->durable &&
            k->rc < done - x[i].deadline) {
            ch->drop = true;
            sum->converted++;
            busy -= x[i].tx; /* the link does not carry it */
            continue;
        }
        sum->predicted_stall_ns += done - x[i].deadline;
    }
    for (i = 0; i < d->nch; i++) {
        if (d->ch[i].drop) {
            sum->predicted_recompute_ns += d->keys[d->cand[d->ch[i].c].key].rc;
        }
    }
    free(x);
}

static memsvc_status_t fsp_push_act(fsp_t *p, uint32_t tk, uint32_t to, uint32_t target,
                                    fsp_act_t act)
{
    if (p->num_act == p->cap_act) {
        size_t        cap = p->cap_act ? 2 * p->cap_act : 1024;
        fsp_action_t *na  = realloc(p->act, cap * sizeof(*na));

        if (na == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        p->act     = na;
        p->cap_act = cap;
    }
    p->act[p->num_act++] =
        (fsp_action_t){.trig_key = tk, .trig_occ = to, .target = target, .act = (uint8_t)act};
    return MEMSVC_OK;
}

/* Turn the choices of one device into actions. */
static memsvc_status_t fsp_emit(fsp_t *p, fsp_dev_t *d)
{
    uint32_t        i;
    memsvc_status_t status = MEMSVC_OK;

    for (i = 0; i < d->nch && status == MEMSVC_OK; i++) {
        const fsp_choice_t *ch  = &d->ch[i];
        const fsp_cand_t   *c   = &d->cand[ch->c];
        uint32_t            kid = d->keys[c->key].key_id;
        uint32_t            rel = (c->tail != FSP_NONE) ? c->tail : c->s;

        if (ch->drop) {
            status = fsp_push_act(p, kid, d->ord[rel], kid, FSP_ACT_DROP);
            p->sum.drops++;
            continue;
        }
        status = fsp_push_act(p, kid, d->ord[rel], kid, FSP_ACT_OUT);
        if (status == MEMSVC_OK) {
            status =
                fsp_push_act(p, d->keys[d->lk[ch->p]].key_id, d->ord[ch->p], kid, FSP_ACT_PREFETCH);
        }
        p->sum.swaps++;
        p->sum.prefetches++;
    }
    return status;
}

static int fsp_cmp_act(const void *a, const void *b)
{
    const fsp_action_t *x = a, *y = b;

    if (x->trig_key != y->trig_key) {
        return (x->trig_key < y->trig_key) ? -1 : 1;
    }
    if (x->trig_occ != y->trig_occ) {
        return (x->trig_occ < y->trig_occ) ? -1 : 1;
    }
    if (x->act != y->act) {
        return (x->act < y->act) ? -1 : 1;
    }
    return (x->target < y->target) ? -1 : (x->target > y->target);
}

/*
 * Plan device `dev` from its entries. lkmap: scratch of num_keys entries (all FSP_NONE on
 * entry, left so on return).
 */
static memsvc_status_t fsp_plan_dev(fsp_t *p, pol_ctx_t *ctx, unsigned dev, const pol_tl_entry_t *E,
                                    size_t n, uint32_t *lkmap)
{
    fsp_dev_t       d;
    memsvc_status_t status = MEMSVC_ERR_NO_RESOURCE;
    int64_t        *curve  = NULL;
    uint32_t       *kcnt = NULL, *order = NULL, *depth = NULL, *idle = NULL, *first = NULL;
    uint32_t        i, j, m = 0;
    int64_t         cur, base = 0, peak;
    uint64_t        cap = pol_device_capacity(ctx, dev);

    memset(&d, 0, sizeof(d));
    d.prm   = &p->prm;
    d.E     = E;
    d.lead  = p->lead_ns;
    d.nlead = p->cap_keys;
    for (i = 0; i < n; i++) {
        m += (E[i].device == dev && E[i].key_id != POL_TL_NO_KEY);
    }
    if (m < 2) {
        return MEMSVC_OK;
    }
    d.m       = m;
    d.ix      = malloc(m * sizeof(*d.ix));
    d.t       = malloc(m * sizeof(*d.t));
    d.lk      = malloc(m * sizeof(*d.lk));
    d.ord     = malloc(m * sizeof(*d.ord));
    d.keys    = malloc(m * sizeof(*d.keys));
    curve     = malloc(m * sizeof(*curve));
    kcnt      = calloc(m, sizeof(*kcnt));
    depth     = calloc(m, sizeof(*depth));
    idle      = malloc(m * sizeof(*idle));
    first     = malloc(m * sizeof(*first));
    d.cand    = malloc(m * sizeof(*d.cand));
    d.tree.mx = calloc(4 * (size_t)m, sizeof(*d.tree.mx));
    d.tree.lz = calloc(4 * (size_t)m, sizeof(*d.tree.lz));
    d.lf[0]   = malloc(FSP_BUCKETS * sizeof(double));
    d.lf[1]   = malloc(FSP_BUCKETS * sizeof(double));
    d.pf[0]   = malloc((FSP_BUCKETS + 1) * sizeof(double));
    d.pf[1]   = malloc((FSP_BUCKETS + 1) * sizeof(double));
    if (d.ix == NULL || d.t == NULL || d.lk == NULL || d.ord == NULL || d.keys == NULL ||
        curve == NULL || kcnt == NULL || depth == NULL || idle == NULL || first == NULL ||
        d.cand == NULL || d.tree.mx == NULL || d.tree.lz == NULL || d.lf[0] == NULL ||
        d.lf[1] == NULL || d.pf[0] == NULL || d.pf[1] == NULL) {
        goto out;
    }
    /* entries, local keys, ordinals */
    for (i = 0, j = 0; i < n; i++) {
        const pol_tl_entry_t *e = &E[i];
        uint32_t              k;

        if (e->device != dev || e->key_id == POL_TL_NO_KEY) {
            continue;
        }
        k = lkmap[e->key_id];
        if (k == FSP_NONE) {
            k                = d.nk++;
            lkmap[e->key_id] = k;
            d.keys[k]        = (fsp_lkey_t){.key_id       = e->key_id,
                                            .size         = e->size,
                                            .rc           = e->recompute_ns,
                                            .recomputable = e->recomputable,
                                            .durable      = e->durable,
                                            .persistent   = true};
            first[k]         = j;
            /* allocated in this step and never freed: its accesses next step differ (no
             * allocation, maybe no load); left to the fallback this time */
            d.keys[k].skip = (e->access == POL_ACCESS_ALLOC);
        }
        if (e->size > d.keys[k].size) {
            d.keys[k].size = e->size;
        }
        if (e->access == POL_ACCESS_FREE) {
            d.keys[k].persistent = false;
        }
        d.ix[j]  = i;
        d.t[j]   = e->time;
        d.lk[j]  = k;
        d.ord[j] = kcnt[k]++;
        j++;
    }
    for (i = 0; i < d.nk; i++) {
        d.keys[i].tx = fsp_tx(d.keys[i].size, ctx, dev);
    }
    d.t0 = E[0].time;
    d.t1 = E[n - 1].time + 1;
    d.bw = (d.t1 - d.t0) / FSP_BUCKETS + 1;
    for (i = 0; i < FSP_BUCKETS; i++) {
        d.lf[0][i] = d.lf[1][i] = (double)d.bw;
    }
    fsp_prefix(&d, 0);
    fsp_prefix(&d, 1);
    /* the curve if nothing moved */
    for (i = 0; i < d.nk; i++) {
        const pol_tl_entry_t *e = &E[d.ix[first[i]]];

        if (e->access != POL_ACCESS_ALLOC || (d.keys[i].persistent && d.keys[i].skip)) {
            base += (int64_t)d.keys[i].size; /* live at the start of the next step */
        }
    }
    cur = base;
    for (j = 0; j < m; j++) {
        const pol_tl_entry_t *e = &E[d.ix[j]];
        const fsp_lkey_t     *k = &d.keys[d.lk[j]];

        if (e->access == POL_ACCESS_ALLOC && !(k->persistent && k->skip)) {
            cur += (int64_t)e->size;
        } else if (e->access == POL_ACCESS_FREE) {
            cur -= (int64_t)e->size;
        }
        curve[j] = cur;
    }
    d.tree.n = m;
    fsp_tree_build(&d.tree, 1, 0, m, curve);
    peak     = d.tree.mx[1];
    d.budget = (int64_t)((double)cap * (1.0 - p->prm.margin));
    /* idle intervals */
    for (i = 0; i < d.nk; i++) {
        idle[i] = (E[d.ix[first[i]]].access == POL_ACCESS_ALLOC) ? FSP_NONE - 1 : FSP_NONE;
    }
    for (j = 0; j < m; j++) {
        const pol_tl_entry_t *e  = &E[d.ix[j]];
        uint32_t              k  = d.lk[j];
        fsp_lkey_t           *lk = &d.keys[k];

        switch (e->access) {
        case POL_ACCESS_ACQUIRE:
            if (depth[k] == 0 && idle[k] != FSP_NONE - 1 && !(lk->persistent && lk->skip) &&
                lk->size >= p->prm.min_bytes) {
                if (idle[k] == FSP_NONE) {
                    /* the head: joined with the tail below when the key lives on */
                    if (lk->persistent) {
                        d.cand[d.nc++] =
                            (fsp_cand_t){.key = k, .s = FSP_NONE, .e = j, .tail = FSP_NONE};
                    }
                } else if (j > idle[k] + 1) {
                    d.cand[d.nc++] = (fsp_cand_t){.key  = k,
                                                  .s    = idle[k],
                                                  .e    = j,
                                                  .tail = FSP_NONE,
                                                  .dur  = d.t[j] - d.t[idle[k]]};
                }
            }
            depth[k]++;
            idle[k] = FSP_NONE - 1;
            break;
        case POL_ACCESS_RELEASE:
            if (depth[k] > 0) {
                depth[k]--;
            }
            if (depth[k] == 0) {
                idle[k] = j;
            }
            break;
        default:
            idle[k] = FSP_NONE - 1;
            break;
        }
    }
    /* tails of persistent keys, joined with their heads */
    for (i = 0; i < d.nc; i++) {
        fsp_cand_t *c = &d.cand[i];

        if (c->s == FSP_NONE && c->tail == FSP_NONE) {
            uint32_t k = c->key;

            if (idle[k] < m && idle[k] >= c->e && depth[k] == 0) {
                c->tail = idle[k];
                c->dur  = (d.t1 - d.t[idle[k]]) + (d.t[c->e] - d.t0);
            } else {
                c->chosen = true; /* no tail to swap it out in: never a candidate */
            }
        }
    }
    d.ch = malloc((d.nc + 1) * sizeof(*d.ch));
    if (d.ch == NULL) {
        goto out;
    }
    if (p->prm.select == FSP_SELECT_CAPUCHIN) {
        order = malloc((d.nc + 1) * sizeof(*order));
        if (order == NULL) {
            goto out;
        }
        fsp_select_capuchin(&d, ctx, dev, order);
    } else {
        fsp_select_global(&d, ctx, dev);
    }
    fsp_verify(&d, &p->sum);
    status = fsp_emit(p, &d);
    p->sum.entries += m;
    p->sum.keys += d.nk;
    p->sum.candidates += d.nc;
    p->sum.unresolved_bytes += d.unresolved;
    if ((uint64_t)peak > p->sum.peak_before) {
        p->sum.peak_before = (uint64_t)peak;
        p->sum.budget      = (uint64_t)d.budget;
    }
    if (d.tree.mx[1] > (int64_t)p->sum.peak_after) {
        p->sum.peak_after = (uint64_t)(d.tree.mx[1] > 0 ? d.tree.mx[1] : 0);
    }
out:
    for (i = 0; i < d.nk; i++) {
        lkmap[d.keys[i].key_id] = FSP_NONE;
    }
    free(d.cov_off);
    free(d.cov);
    free(d.ix);
    free(d.t);
    free(d.lk);
    free(d.ord);
    free(d.keys);
    free(curve);
    free(kcnt);
    free(depth);
    free(idle);
    free(first);
    free(d.cand);
    free(d.ch);
    free(order);
    free(d.tree.mx);
    free(d.tree.lz);
    free(d.lf[0]);
    free(d.lf[1]);
    free(d.pf[0]);
    free(d.pf[1]);
    return status;
}

/* Index the previous step's entries per key (for Belady and the cursor). */
static memsvc_status_t fsp_index(fsp_t *p, const pol_tl_entry_t *E, size_t n)
{
    uint32_t *fill;
    size_t    i;
    uint32_t  k, off = 0;

    p->ent_off    = calloc(p->num_keys, sizeof(*p->ent_off));
    p->ent_n      = calloc(p->num_keys, sizeof(*p->ent_n));
    p->act_off    = calloc(p->num_keys, sizeof(*p->act_off));
    p->act_n      = calloc(p->num_keys, sizeof(*p->act_n));
    p->ent_time   = malloc((n + 1) * sizeof(*p->ent_time));
    p->ent_access = malloc(n + 1);
    fill          = calloc(p->num_keys, sizeof(*fill));
    if (p->ent_off == NULL || p->ent_n == NULL || p->act_off == NULL || p->act_n == NULL ||
        p->ent_time == NULL || p->ent_access == NULL || fill == NULL) {
        free(fill);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < n; i++) {
        if (E[i].key_id != POL_TL_NO_KEY) {
            p->ent_n[E[i].key_id]++;
        }
    }
    for (k = 0; k < p->num_keys; k++) {
        p->ent_off[k] = off;
        off += p->ent_n[k];
    }
    for (i = 0; i < n; i++) {
        uint32_t kid = E[i].key_id;

        if (kid != POL_TL_NO_KEY) {
            p->ent_time[p->ent_off[kid] + fill[kid]]   = E[i].time - E[0].time;
            p->ent_access[p->ent_off[kid] + fill[kid]] = E[i].access;
            fill[kid]++;
        }
    }
    free(fill);
    return MEMSVC_OK;
}

void fsp_plan(fsp_t *p, pol_ctx_t *ctx)
{
    const pol_tl_entry_t *E;
    size_t                n, i;
    uint32_t             *lkmap = NULL;
    struct timespec       a, b;
    unsigned              dev;
    memsvc_status_t       status = MEMSVC_OK;

    clock_gettime(CLOCK_MONOTONIC, &a);
    fsp_free_plan(p);
    memset(&p->sum, 0, sizeof(p->sum));
    p->cursor       = 0;
    p->num_watch    = 0;
    p->num_deferred = 0;
    if (p->cap_keys > 0) {
        memset(p->occ, 0, p->cap_keys * sizeof(*p->occ));
        memset(p->next_act, 0, p->cap_keys * sizeof(*p->next_act));
    }
    pol_timeline_prev(ctx, &E, &n);
    if (n < 2) {
        return;
    }
    for (i = 0; i < n; i++) {
        if (E[i].key_id != POL_TL_NO_KEY && E[i].key_id + 1 > p->num_keys) {
            p->num_keys = E[i].key_id + 1;
        }
    }
    if (!fsp_grow_keys(p, p->num_keys) || fsp_index(p, E, n) != MEMSVC_OK) {
        goto fail;
    }
    p->step_len = E[n - 1].time - E[0].time;
    lkmap       = malloc(p->num_keys * sizeof(*lkmap));
    if (lkmap == NULL) {
        goto fail;
    }
    memset(lkmap, 0xff, p->num_keys * sizeof(*lkmap));
    for (dev = 0; dev < pol_num_devices(ctx) && status == MEMSVC_OK; dev++) {
        status = fsp_plan_dev(p, ctx, dev, E, n, lkmap);
    }
    free(lkmap);
    if (status != MEMSVC_OK) {
        goto fail;
    }
    if (p->num_act > 1) {
        qsort(p->act, p->num_act, sizeof(*p->act), fsp_cmp_act);
    }
    for (i = p->num_act; i-- > 0;) {
        p->act_off[p->act[i].trig_key] = (uint32_t)i;
        p->act_n[p->act[i].trig_key]++;
    }
    for (i = 0; i < p->num_keys; i++) {
        p->next_act[i] = p->act_off[i];
    }
    p->have_plan = true;
    p->plans++;
    clock_gettime(CLOCK_MONOTONIC, &b);
    p->sum.plan_s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    return;
fail:
    fsp_free_plan(p);
}

/* ---- run time ----------------------------------------------------------------------------------
 */

static void fsp_fire(fsp_t *p, pol_ctx_t *ctx, const fsp_action_t *a, const pol_tensor_t *self)
{
    const pol_tensor_t *t = self;

    if (a->act == FSP_ACT_PREFETCH) {
        t = (a->target < p->cap_keys) ? pol_tensor(ctx, p->handle[a->target]) : NULL;
        if (t == NULL || pol_timeline_key_id(ctx, t) != a->target) {
            return;
        }
        p->planned_in[a->target] = 1;
        /* not while still moving out: cancelling a move-out that a queued request counts on
         * can leave that request waiting for a completion that never comes */
        if (t->state == MEMSVC_STATE_ON_HOST || t->state == MEMSVC_STATE_ON_DISK ||
            t->state == MEMSVC_STATE_ON_PEER) {
            pol_set_reason(ctx,
                           p->prm.select == FSP_SELECT_CAPUCHIN ? "capuchin planned prefetch"
                                                                : "foresight planned prefetch",
                           "%s before its next use", pol_key(t));
            pol_prefetch(ctx, t);
        }
        return;
    }
    if (t == NULL || !pol_evictable(t)) {
        return;
    }
    if (a->act == FSP_ACT_DROP) {
        if (t->recomputable && !t->durable) {
            pol_set_reason(ctx,
                           p->prm.select == FSP_SELECT_CAPUCHIN ? "capuchin planned recompute"
                                                                : "foresight planned drop",
                           "plan %llu: %.3f s, %llu swaps %llu drops", (unsigned long long)p->plans,
                           p->sum.plan_s, (unsigned long long)p->sum.swaps,
                           (unsigned long long)p->sum.drops);
            pol_drop(ctx, t);
        }
        return;
    }
    pol_set_reason(
        ctx,
        p->prm.select == FSP_SELECT_CAPUCHIN ? "capuchin planned swap" : "foresight planned swap",
        "plan %llu: %.3f s, %llu swaps %llu drops", (unsigned long long)p->plans, p->sum.plan_s,
        (unsigned long long)p->sum.swaps, (unsigned long long)p->sum.drops);
    pol_swap_out(ctx, t);
}

void fsp_run_access(fsp_t *p, pol_ctx_t *ctx, const pol_tensor_t *t, pol_access_t a)
{
    uint32_t kid = pol_timeline_key_id(ctx, t);
    uint32_t occ;

    if (kid == POL_TL_NO_KEY || !fsp_grow_keys(p, kid + 1)) {
        return;
    }
    if (p->num_deferred > 0 && a != POL_ACCESS_FREE && p->have_plan) {
        size_t i, n = p->num_deferred;

        p->num_deferred = 0;
        for (i = 0; i < n; i++) {
            fsp_fire(p, ctx, &p->act[p->deferred[i]], NULL);
        }
    }
    occ            = p->occ[kid]++;
    p->handle[kid] = (a == POL_ACCESS_FREE) ? 0 : t->handle;
    if (a == POL_ACCESS_ACQUIRE && p->planned_in[kid]) {
        p->planned_in[kid] = 0;
        if (t->state != MEMSVC_STATE_ON_DEVICE) {
            /* the prefetch came late: start it earlier next time */
            p->late++;
            p->lead_ns[kid] = 2 * p->lead_ns[kid] + 100000;
            if (p->lead_ns[kid] > FSP_LEAD_MAX) {
                p->lead_ns[kid] = FSP_LEAD_MAX;
            }
        }
    }
    if (!p->have_plan || kid >= p->num_keys) {
        return;
    }
    if (occ < p->ent_n[kid] && p->ent_time[p->ent_off[kid] + occ] > p->cursor) {
        p->cursor = p->ent_time[p->ent_off[kid] + occ];
        fsp_watch_run(p, ctx);
    }
    while (p->next_act[kid] < p->act_off[kid] + p->act_n[kid]) {
        const fsp_action_t *ac = &p->act[p->next_act[kid]];

        if (ac->trig_occ > occ) {
            break;
        }
        p->next_act[kid]++;
        if (ac->trig_occ != occ) {
            continue;
        }
        if (a == POL_ACCESS_FREE) {
            /* the engine frees the block after telling us: act at the next access */
            if (p->num_deferred < FSP_DEFER_MAX) {
                p->deferred[p->num_deferred++] = (uint32_t)(ac - p->act);
            }
            continue;
        }
        fsp_fire(p, ctx, ac, t);
    }
}

/* ---- swap-ins for what the fallback swapped out: a heap by time to start ----------------------
 */

static void fsp_watch(fsp_t *p, uint32_t kid, sim_time_t use, sim_time_t tx)
{
    sim_time_t lead = tx + tx / 4 + p->prm.min_slack_ns + (kid < p->cap_keys ? p->lead_ns[kid] : 0);
    sim_time_t at   = (use > lead) ? use - lead : 0;
    size_t     i;

    if (kid == POL_TL_NO_KEY) {
        return;
    }
    if (p->num_watch == p->cap_watch) {
        size_t       cap = p->cap_watch ? 2 * p->cap_watch : 256;
        fsp_watch_t *nw  = realloc(p->watch, cap * sizeof(*nw));

        if (nw == NULL) {
            return;
        }
        p->watch     = nw;
        p->cap_watch = cap;
    }
    i = p->num_watch++;
    while (i > 0 && p->watch[(i - 1) / 2].at > at) {
        p->watch[i] = p->watch[(i - 1) / 2];
        i           = (i - 1) / 2;
    }
    p->watch[i] = (fsp_watch_t){.at = at, .key = kid};
}

static fsp_watch_t fsp_watch_pop(fsp_t *p)
{
    fsp_watch_t top = p->watch[0], last = p->watch[--p->num_watch];
    size_t      i = 0, c;

    while ((c = 2 * i + 1) < p->num_watch) {
        if (c + 1 < p->num_watch && p->watch[c + 1].at < p->watch[c].at) {
            c++;
        }
        if (p->watch[c].at >= last.at) {
            break;
        }
        p->watch[i] = p->watch[c];
        i           = c;
    }
    if (p->num_watch > 0) {
        p->watch[i] = last;
    }
    return top;
}

/* Start the swap-ins that are due at the cursor. */
static void fsp_watch_run(fsp_t *p, pol_ctx_t *ctx)
{
    while (p->num_watch > 0 && p->watch[0].at <= p->cursor) {
        fsp_watch_t         w = fsp_watch_pop(p);
        const pol_tensor_t *t = (w.key < p->cap_keys) ? pol_tensor(ctx, p->handle[w.key]) : NULL;

        if (t == NULL || pol_timeline_key_id(ctx, t) != w.key) {
            continue;
        }
        /* only into room that is free now: an unplanned swap-in does not push others out */
        if ((t->state == MEMSVC_STATE_ON_HOST || t->state == MEMSVC_STATE_ON_DISK ||
             t->state == MEMSVC_STATE_ON_PEER) &&
            pol_device_largest_free(ctx, t->device) >= t->size + t->size / 8) {
            p->planned_in[w.key] = 1;
            pol_set_reason(ctx, "belady prefetch", "%s before its next use", pol_key(t));
            pol_prefetch(ctx, t);
        }
    }
}

typedef struct fsp_victim {
    uint64_t handle, dist, size;
    double   h; /* without a plan: DTR's cost / (bytes x staleness), lowest first */
    size_t   pos;
    bool     known; /* dist from the plan */
} fsp_victim_t;

static int fsp_cmp_victim(const void *a, const void *b)
{
    const fsp_victim_t *x = a, *y = b;

    if (x->h != y->h) {
        return (x->h < y->h) ? -1 : 1;
    }
    if (x->dist != y->dist) {
        return (x->dist > y->dist) ? -1 : 1;
    }
    return (x->pos < y->pos) ? -1 : (x->pos > y->pos);
}

/*
 * Without a plan for the key: a guess from what the tensor is. Optimizer state waits for the
 * optimizer step; an activation for the backward of its micro-batch, later micro-batches later,
 * and within one micro-batch lower layers later (backward runs down); one touched in the last
 * millisecond is in use. Parameters and gradients come back at every micro-batch.
 */
static uint64_t fsp_guess(pol_ctx_t *ctx, const pol_tensor_t *t)
{
    sim_time_t now = pol_now(ctx);

    if (t->kind == MEMSVC_KIND_OPTIM) {
        return 8000000000ull;
    }
    if (now < t->last_access + 1000000) {
        return 0;
    }
    if (t->kind == MEMSVC_KIND_ACTIVATION && t->tags.microbatch >= 0) {
        int layer = (t->tags.layer >= 0 && t->tags.layer < 1000) ? t->tags.layer : 0;

        return 100000000ull + 20000000ull * (uint64_t)t->tags.microbatch +
               100000ull * (uint64_t)(1000 - layer);
    }
    return (t->kind == MEMSVC_KIND_GRAD) ? 50000000ull : 20000000ull;
}

/*
 * Time from the cursor to the key's next acquire in the plan's step: UINT64_MAX when it is not
 * used again (freed first). *known_p: from the plan; else a guess (fsp_guess).
 */
static uint64_t fsp_next_use(const fsp_t *p, pol_ctx_t *ctx, const pol_tensor_t *t, bool *known_p)
{
    uint32_t kid = pol_timeline_key_id(ctx, t);
    uint32_t i, n;

    *known_p = false;
    if (!p->have_plan || kid == POL_TL_NO_KEY || kid >= p->num_keys || p->ent_n[kid] == 0) {
        return p->prm.guess ? fsp_guess(ctx, t) : UINT64_MAX - 1;
    }
    *known_p = true;
    n        = p->ent_n[kid];
    for (i = (kid < p->cap_keys) ? p->occ[kid] : 0; i < n; i++) {
        uint32_t   e  = p->ent_off[kid] + i;
        sim_time_t tm = p->ent_time[e];

        if (p->ent_access[e] == POL_ACCESS_ACQUIRE) {
            return (tm > p->cursor) ? tm - p->cursor : 0;
        }
        if (p->ent_access[e] == POL_ACCESS_FREE) {
            return UINT64_MAX;
        }
    }
    /* no more use this step: the first of the next one */
    for (i = 0; i < n; i++) {
        uint32_t e = p->ent_off[kid] + i;

        if (p->ent_access[e] == POL_ACCESS_ACQUIRE) {
            return p->step_len - p->cursor + p->ent_time[e];
        }
    }
    return UINT64_MAX;
}

/* ---- a contiguous range on a fragmented device ----------------------------------------------- */

typedef struct fsp_blk {
    uint64_t off, size, handle, cost;
    bool     movable;
} fsp_blk_t;

typedef struct fsp_blks {
    fsp_blk_t *b;
    size_t     n, cap;
    fsp_t     *p;
    pol_ctx_t *ctx;
    unsigned   dev;
} fsp_blks_t;

#define FSP_STALE_NS 100000000ull /* 100 ms: the first step's range cost grows below it */
#define FSP_COST_MAX (1ull << 50) /* a block's cost at most (sums of them do not overflow) */

/* Does freeing a range drop the tensor (else swap it)? rt: its round trip. */
static bool fsp_range_drops(const fsp_t *p, const pol_tensor_t *t, uint64_t rt)
{
    return p->prm.drop && t->recomputable && !t->durable && (!p->prm.swap || t->recompute_ns < rt);
}

static void fsp_blk_add(void *arg, const pol_tensor_t *t, uint64_t offset, uint64_t size)
{
    fsp_blks_t *bs = arg;
    fsp_blk_t  *b;
    uint64_t    dist, rt;
    bool        known;

    if (bs->n == bs->cap) {
        size_t     cap = bs->cap ? 2 * bs->cap : 256;
        fsp_blk_t *nb  = realloc(bs->b, cap * sizeof(*nb));

        if (nb == NULL) {
            return;
        }
        bs->b   = nb;
        bs->cap = cap;
    }
    b          = &bs->b[bs->n++];
    b->off     = offset;
    b->size    = size;
    b->handle  = t->handle;
    b->movable = pol_evictable(t);
    dist       = fsp_next_use(bs->p, bs->ctx, t, &known);
    rt         = pol_swap_cost_ns(bs->ctx, bs->dev, t->size);
    if (!bs->p->have_plan) {
        /*
         * First step: what the move costs in time (the recomputation, or the round trip), not
         * over staleness as DTR weighs it (which picks large stale tensors whose recomputation
         * then costs more than the small ones around them), but dearer for a tensor touched
         * in the last FSP_STALE_NS (x FSP_STALE_NS / staleness) and eight times dearer within
         * the last millisecond.
         */
        sim_time_t now   = pol_now(bs->ctx);
        uint64_t   age   = (now > t->last_access) ? now - t->last_access : 0;
        uint64_t   stale = (age < UINT64_MAX) ? age + 1 : age; /* never 0 */
        uint64_t   near  = (stale > UINT64_MAX - FSP_STALE_NS) ? 1 : (stale + FSP_STALE_NS) / stale;
        uint64_t   cost  = (fsp_range_drops(bs->p, t, rt) ? t->recompute_ns : rt) *
                            (stale < 1000000 ? 8 : 1) * near +
                        1;

        b->cost = (cost < FSP_COST_MAX) ? cost : FSP_COST_MAX;
        return;
    }
    /* what moving it costs: its bytes, more when it is needed again soon */
    b->cost = size * ((dist == UINT64_MAX)       ? 1
                      : (dist == UINT64_MAX - 1) ? 2
                      : (dist > 4 * rt)          ? 1
                                                 : 8);
}

static int fsp_cmp_blk(const void *a, const void *b)
{
    const fsp_blk_t *x = a, *y = b;

    return (x->off < y->off) ? -1 : (x->off > y->off);
}

/*
 * Move out the cheapest run of neighbouring movable blocks whose removal leaves a free range of
 * at least `req` bytes (with the holes around them). Returns the bytes moved (0: no such run).
 */
static uint64_t fsp_free_range(fsp_t *p, pol_ctx_t *ctx, unsigned dev, uint64_t req)
{
    fsp_blks_t bs  = {.p = p, .ctx = ctx, .dev = dev};
    uint64_t   cap = pol_device_capacity(ctx, dev), cost = 0, best = UINT64_MAX, got = 0;
    size_t     i = 0, j, bi = 0, bj = 0;

    req = (req + SIM_ALLOC_ALIGN - 1) / SIM_ALLOC_ALIGN * SIM_ALLOC_ALIGN;
    pol_device_blocks(ctx, dev, fsp_blk_add, &bs);
    if (bs.n == 0) {
        free(bs.b);
        return 0;
    }
    qsort(bs.b, bs.n, sizeof(*bs.b), fsp_cmp_blk);
    /* window [i, j]: the range from the end of block i-1 to the start of block j+1 */
    for (j = 0; j < bs.n; j++) {
        if (!bs.b[j].movable) {
            i    = j + 1;
            cost = 0;
            continue;
        }
        cost += bs.b[j].cost;
        for (;;) {
            uint64_t lo = (i == 0) ? 0 : bs.b[i - 1].off + bs.b[i - 1].size;
            uint64_t hi = (j + 1 < bs.n) ? bs.b[j + 1].off : cap;

            if (hi - lo < req || i > j) {
                break;
            }
            if (cost < best) {
                best = cost;
                bi   = i;
                bj   = j;
            }
            cost -= bs.b[i].cost;
            i++;
        }
    }
    if (best == UINT64_MAX) {
        free(bs.b);
        return 0;
    }
    for (i = bi; i <= bj; i++) {
        const pol_tensor_t *t = pol_tensor(ctx, bs.b[i].handle);
        bool                drop;
        uint64_t            size;
        memsvc_status_t     status;

        if (t == NULL || !pol_evictable(t)) {
            continue;
        }
        size = t->size;
        drop = fsp_range_drops(p, t, pol_swap_cost_ns(ctx, dev, t->size));
        if (!drop && !p->prm.swap) {
            continue;
        }
        pol_set_reason(ctx,
                       drop ? "fragmented, free a range: drop" : "fragmented, free a range: swap",
                       "%llu bytes wanted at offset %llu", (unsigned long long)req,
                       (unsigned long long)bs.b[bi].off);
        status = drop ? pol_drop(ctx, t) : pol_swap_out(ctx, t);
        if (pol_moved(status)) {
            bool     known;
            uint64_t dist = fsp_next_use(p, ctx, t, &known);

            if (!drop && known && dist < UINT64_MAX) {
                fsp_watch(p, pol_timeline_key_id(ctx, t), p->cursor + dist,
                          pol_swap_cost_ns(ctx, dev, size) / 2);
            }
            got += size;
        }
    }
    free(bs.b);
    return got;
}

uint64_t fsp_make_room(fsp_t *p, pol_ctx_t *ctx, unsigned dev, uint64_t need)
{
    fsp_victim_t       *v  = NULL;
    size_t              nv = 0, cap = 0, pos = 0, i;
    const pol_tensor_t *t;
    uint64_t            got     = 0, req;
    bool                host_ok = true;

    for (t = pol_lru_first(ctx, dev); t != NULL; t = pol_lru_next(ctx, t), pos++) {
        if (nv == cap) {
            size_t        nc  = cap ? 2 * cap : 256;
            fsp_victim_t *nvp = realloc(v, nc * sizeof(*nvp));

            if (nvp == NULL) {
                break;
            }
            v   = nvp;
            cap = nc;
        }
        v[nv]      = (fsp_victim_t){.handle = t->handle, .size = t->size, .pos = pos};
        v[nv].dist = fsp_next_use(p, ctx, t, &v[nv].known);
        if (!p->have_plan && p->prm.guess) {
            /* first step: DTR's local heuristic, recompute when no dearer than a round trip */
            uint64_t   rt   = pol_swap_cost_ns(ctx, dev, t->size);
            uint64_t   cost = (p->prm.drop && t->recomputable && !t->durable &&
                             (t->recompute_ns <= rt || !p->prm.swap))
                                  ? t->recompute_ns
                                  : rt;
            sim_time_t now  = pol_now(ctx);

            v[nv].h =
                (double)cost /
                ((double)t->size * (double)((now > t->last_access ? now - t->last_access : 0) + 1));
        }
        nv++;
    }
    if (nv > 0) {
        qsort(v, nv, sizeof(*v), fsp_cmp_victim);
    }
    /* fragmented (enough free bytes, no block large enough): free a contiguous range */
    req = need + pol_device_largest_free(ctx, dev);
    if (pol_device_free(ctx, dev) >= req) {
        got = fsp_free_range(p, ctx, dev, req);
        if (got > 0) {
            free(v);
            return got;
        }
    }
    for (i = 0; i < nv && got < need; i++) {
        uint64_t        rt;
        bool            can_drop, drop;
        memsvc_status_t status;

        t = pol_tensor(ctx, v[i].handle);
        if (t == NULL || !pol_evictable(t)) {
            continue;
        }
        rt       = pol_swap_cost_ns(ctx, dev, t->size);
        can_drop = p->prm.drop && t->recomputable && !t->durable;
        /* swap when the round trip fits before the next use (or recomputing costs more) */
        drop = can_drop && (!p->prm.swap || !host_ok || t->recompute_ns == 0 ||
                            ((!v[i].known || v[i].dist < rt + rt / 2) && t->recompute_ns < rt));
        if (!drop && (!p->prm.swap || !host_ok)) {
            continue;
        }
        pol_set_reason(ctx, drop ? "belady furthest use, drop" : "belady furthest use, swap",
                       "%s next use in %.3f ms", pol_key(t),
                       v[i].dist >= UINT64_MAX - 1 ? -1.0 : (double)v[i].dist / 1e6);
        status = drop ? pol_drop(ctx, t) : pol_swap_out(ctx, t);
        if (pol_moved(status) && !drop && v[i].known && v[i].dist < UINT64_MAX) {
            fsp_watch(p, pol_timeline_key_id(ctx, t), p->cursor + v[i].dist,
                      pol_swap_cost_ns(ctx, dev, t->size) / 2);
        }
        if (pol_moved(status)) {
            got += v[i].size;
        } else if (status == MEMSVC_ERR_HOST_MEMORY) {
            host_ok = false;
        }
    }
    free(v);
    return got;
}
