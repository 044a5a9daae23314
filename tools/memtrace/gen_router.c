/* gen_router.c - the generator's seeded router: tokens per expert per micro-batch and layer */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- deterministic random numbers ---------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    r->s += 0x9e3779b97f4a7c15ull;
    return mix64(r->s);
}

static double rng_unit(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

/* A Binomial(n, p) draw: normal approximation when the variance is large, else inversion. */
static uint64_t binomial(rng_t *r, uint64_t n, double p)
{
    double   mean, var, u, f, q, x;
    uint64_t k;

    if (n == 0 || p <= 0) {
        return 0;
    }
    if (p >= 1) {
        return n;
    }
    if (p > 0.5) {
        return n - binomial(r, n, 1 - p);
    }
    mean = (double)n * p;
    var  = mean * (1 - p);
    if (var >= 20) {
        double u1 = rng_unit(r), u2 = rng_unit(r);

        x = mean + sqrt(var) * sqrt(-2 * log(u1 > 0 ? u1 : 0x1p-53)) * cos(2 * M_PI * u2);
        x = floor(x + 0.5);
        return (x < 0) ? 0 : (x > (double)n) ? n : (uint64_t)x;
    }
    q = 1 - p;
    f = exp((double)n * log(q));
    u = rng_unit(r);
    for (k = 0; u > f && k < n; k++) {
        u -= f;
        f *= (double)(n - k) / (double)(k + 1) * p / q;
    }
    return k;
}

/* ---- router -------------------------------------------------------------------------- */

/* Router probabilities of local layer li: Zipf(skew) over a per-layer seeded permutation. */
void gen_router_weights(gen_t *g, uint32_t li)
{
    uint32_t E = g->m->experts, e, *perm;
    double  *w = &g->weights[(size_t)li * E], sum = 0;
    rng_t    r = {mix64(g->p->seed * 0x632be59bd9b4e019ull + g->layer_of[li] + 1)};

    perm = malloc(E * sizeof(*perm));
    if (perm == NULL) {
        g->status = MEMSVC_ERR_NO_RESOURCE;
        return;
    }
    for (e = 0; e < E; e++) {
        perm[e] = e;
    }
    for (e = E - 1; e > 0; e--) {
        uint32_t j = (uint32_t)(rng_next(&r) % (e + 1)), t = perm[e];

        perm[e] = perm[j];
        perm[j] = t;
    }
    for (e = 0; e < E; e++) {
        w[e] = pow(perm[e] + 1.0, -g->p->skew);
        sum += w[e];
    }
    for (e = 0; e < E; e++) {
        w[e] /= sum;
    }
    free(perm);
}

/* Tokens per local expert for (step, micro-batch, layer): the ep*T*top_k routing choices of
 * the EP group drawn as a multinomial (sequential binomials) over the router probabilities,
 * each count capped at the group's tokens (a token picks an expert once). */
void gen_route(gen_t *g, uint32_t li, uint32_t mb, lstate_t *st)
{
    const double *w    = &g->weights[(size_t)li * g->m->experts];
    uint64_t      toks = (uint64_t)g->ep * g->T, n = toks * g->m->top_k;
    double        rest = 1;
    uint32_t      e;
    rng_t         r;

    r.s      = mix64(g->p->seed ^
                     mix64(((uint64_t)g->step << 40) ^ ((uint64_t)mb << 20) ^ g->layer_of[li]));
    st->rows = 0;
    for (e = 0; e < g->e0 + g->e_loc; e++) {
        uint64_t c = (rest > 0) ? binomial(&r, n, fmin(1.0, w[e] / rest)) : 0;

        n -= c;
        rest -= w[e];
        if (e >= g->e0) {
            c                     = (c > toks) ? toks : c;
            st->ecount[e - g->e0] = (uint32_t)c;
            st->rows += c;
        }
    }
}
