/* gen.c - synthetic per-rank training-step traces: layout, validation, setup, memory estimate */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- layout -------------------------------------------------------------------------- */

uint32_t mt_gen_stage_of_rank(const mt_layout_t *l, uint32_t rank)
{
    return rank / (l->tp * l->cp * l->dp);
}

void mt_gen_chunk_layers(const mt_model_t *m, const mt_layout_t *l, uint32_t v, uint32_t *first_p,
                         uint32_t *count_p)
{
    uint64_t c = (uint64_t)l->pp * l->vpp;
    uint64_t a = (uint64_t)v * m->layers / c, b = (uint64_t)(v + 1) * m->layers / c;

    *first_p = (uint32_t)a;
    *count_p = (uint32_t)(b - a);
}

memsvc_status_t mt_layout_parse(const char *s, mt_layout_t *layout, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        size_t      off;
    } keys[]         = {{"tp", offsetof(mt_layout_t, tp)},
                        {"pp", offsetof(mt_layout_t, pp)},
                        {"vpp", offsetof(mt_layout_t, vpp)},
                        {"ep", offsetof(mt_layout_t, ep)},
                        {"dp", offsetof(mt_layout_t, dp)},
                        {"cp", offsetof(mt_layout_t, cp)},
                        {"mb", offsetof(mt_layout_t, microbatches)},
                        {"microbatches", offsetof(mt_layout_t, microbatches)}};
    mt_layout_t l    = *layout;
    const char *item = s;

    while (*item != '\0') {
        const char   *end = strchr(item, ',');
        const char   *eq  = strchr(item, '=');
        size_t        len = (end != NULL) ? (size_t)(end - item) : strlen(item);
        size_t        klen, i;
        char          num[32], *nend;
        unsigned long v;
        bool          found = false;

        if (eq == NULL || eq >= item + len) {
            set_err(err, errlen, "layout '%.*s': expected key=value", (int)len, item);
            return MEMSVC_ERR_PARSE;
        }
        klen = (size_t)(eq - item);
        if (len - klen - 1 == 0 || len - klen - 1 >= sizeof(num)) {
            set_err(err, errlen, "layout '%.*s': bad value", (int)len, item);
            return MEMSVC_ERR_PARSE;
        }
        memcpy(num, eq + 1, len - klen - 1);
        num[len - klen - 1] = '\0';
        v                   = strtoul(num, &nend, 10);
        if (num[0] < '0' || num[0] > '9' || *nend != '\0' || v == 0 || v > 1000000) {
            set_err(err, errlen, "layout '%.*s': '%s' is not a positive integer", (int)len, item,
                    num);
            return MEMSVC_ERR_PARSE;
        }
        for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            if (strlen(keys[i].key) == klen && !strncmp(keys[i].key, item, klen)) {
                uint32_t u = (uint32_t)v;

                memcpy((char *)&l + keys[i].off, &u, sizeof(u));
                found = true;
            }
        }
        if (!found) {
            set_err(err, errlen, "unknown layout key '%.*s' (tp, pp, vpp, ep, dp, cp, mb)",
                    (int)klen, item);
            return MEMSVC_ERR_UNKNOWN_KEY;
        }
        item += len + (end != NULL ? 1 : 0);
    }
    *layout = l;
    return MEMSVC_OK;
}

void mt_gen_params_init(mt_gen_params_t *p, const mt_model_t *model, const sim_desc_t *node)
{
    memset(p, 0, sizeof(*p));
    p->model = model;
    p->node  = node;
    p->layout =
        (mt_layout_t){.tp = 1, .pp = 1, .vpp = 1, .ep = 1, .dp = 1, .cp = 1, .microbatches = 1};
    p->steps          = 1;
    p->seed           = 1;
    p->pipeline_waits = true;
    (void)mt_gen_overlap_parse(model->overlap, p, NULL, 0);
}

memsvc_status_t mt_gen_overlap_parse(const char *s, mt_gen_params_t *p, char *err, size_t errlen)
{
    bool        tp = false, ep = false;
    const char *item = s;

    while (item != NULL && *item != '\0') {
        const char *end = strchr(item, ',');
        size_t      len = (end != NULL) ? (size_t)(end - item) : strlen(item);

        if (len == 2 && !strncmp(item, "tp", 2)) {
            tp = true;
        } else if (len == 2 && !strncmp(item, "ep", 2)) {
            ep = true;
        } else if (!(len == 4 && !strncmp(item, "none", 4)) && len > 0) {
            set_err(err, errlen, "overlap '%.*s': expected tp, ep or none", (int)len, item);
            return MEMSVC_ERR_PARSE;
        }
        item += len + (end != NULL ? 1 : 0);
    }
    p->overlap_tp = tp;
    p->overlap_ep = ep;
    return MEMSVC_OK;
}

memsvc_status_t mt_gen_params_default_layout(mt_gen_params_t *p, char *err, size_t errlen)
{
    mt_layout_t     l = {.tp = 1, .pp = 1, .vpp = 1, .ep = 1, .dp = 1, .cp = 1, .microbatches = 1};
    memsvc_status_t status;

    if (p->model->layout[0] == '\0') {
        return MEMSVC_OK;
    }
    l.seq_len          = p->layout.seq_len;
    l.micro_batch_size = p->layout.micro_batch_size;
    status             = mt_layout_parse(p->model->layout, &l, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    p->layout       = l;
    p->tp_extend_ep = p->model->tp_extend_ep;
    return MEMSVC_OK;
}

double mt_gen_model_flops(const mt_gen_params_t *p)
{
    const mt_layout_t *l      = &p->layout;
    const mt_model_t  *m      = p->model;
    double             s      = l->seq_len ? l->seq_len : m->seq_len;
    double             b      = l->micro_batch_size ? l->micro_batch_size : m->micro_batch;
    double             tokens = (double)l->dp * l->microbatches * b * s;
    double             ranks  = (double)l->tp * l->cp * l->dp * l->pp;

    return mt_model_flops_per_token(m, (uint32_t)s, 0, m->layers, true) * tokens / ranks;
}

memsvc_status_t mt_gen_validate(const mt_gen_params_t *p, char *err, size_t errlen)
{
    const mt_model_t  *m = p->model;
    const mt_layout_t *l = &p->layout;
    const sim_desc_t  *n = p->node;
    uint64_t           s, b, ranks;
    memsvc_status_t    status;

    if (m == NULL || n == NULL) {
        set_err(err, errlen, "gen: a model and a node are needed");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = mt_model_validate(m, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (!l->tp || !l->pp || !l->vpp || !l->ep || !l->dp || !l->cp || !l->microbatches ||
        !p->steps) {
        set_err(err, errlen, "gen: tp, pp, vpp, ep, dp, cp, microbatches and steps must be >= 1");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    s     = l->seq_len ? l->seq_len : m->seq_len;
    b     = l->micro_batch_size ? l->micro_batch_size : m->micro_batch;
    ranks = (uint64_t)l->tp * l->cp * l->dp * l->pp;
    if (p->rank >= ranks) {
        set_err(err, errlen, "gen: rank %u out of range (layout has %llu ranks)", p->rank,
                (unsigned long long)ranks);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->heads % l->tp != 0 || (m->attn != MT_ATTN_MLA && m->kv_heads % l->tp != 0)) {
        set_err(err, errlen, "gen: tp %u must divide heads %u and kv_heads %u", l->tp, m->heads,
                m->kv_heads);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (s % l->cp != 0 || (s / l->cp * b) % l->tp != 0) {
        set_err(err, errlen, "gen: cp must divide seq, tp the tokens per rank (%llu)",
                (unsigned long long)(s / l->cp * b));
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->experts > GEN_MAX_EXPERTS || m->experts % l->ep != 0 || (l->dp * l->cp) % l->ep != 0 ||
        (m->experts == 0 && l->ep != 1)) {
        set_err(err, errlen, "gen: ep %u must divide experts %u and dp*cp %u (ep=1 if dense)",
                l->ep, m->experts, l->dp * l->cp);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (p->tp_extend_ep && m->experts % (l->ep * l->tp) != 0) {
        set_err(err, errlen, "gen: tp-extend-ep needs ep*tp (%u) to divide experts %u",
                l->ep * l->tp, m->experts);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (m->layers < (uint64_t)l->pp * l->vpp) {
        set_err(err, errlen, "gen: %u layers cannot fill pp*vpp = %u chunks", m->layers,
                l->pp * l->vpp);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (l->vpp > 1 && l->microbatches % l->pp != 0) {
        set_err(err, errlen, "gen: interleaved 1F1B needs microbatches (%u) a multiple of pp (%u)",
                l->microbatches, l->pp);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!(n->flops > 0) || !(n->mfu > 0) || n->mfu > 1 || !(n->hbm_bw > 0) || !(n->nic.bw > 0) ||
        (l->tp > 1 && !(n->d2d.bw > 0))) {
        set_err(err, errlen,
                "gen: node needs flops, 0 < mfu <= 1, hbm_bw, nic bw (and d2d bw "
                "with tp > 1)");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!(p->skew >= 0) || p->skew > 100) {
        set_err(err, errlen, "gen: skew must be in [0, 100]");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return MEMSVC_OK;
}

/* ---- setup --------------------------------------------------------------------------- */

void gen_fini(gen_t *g)
{
    free(g->layer_of);
    free(g->chunk_first);
    free(g->chunk_count);
    free(g->ls);
    free(g->ebuf);
    free(g->cbuf);
    free(g->hs);
    free(g->weights);
    free(g->pg);
    free(g->lpg);
    free(g->epg);
    free(g->waits);
}

static memsvc_status_t gen_init(gen_t *g, const mt_gen_params_t *p, mt_sink_fn_t sink, void *arg)
{
    const mt_layout_t *l = &p->layout;
    const mt_model_t  *m = p->model;
    uint32_t           c, i, n, first, M = l->microbatches;
    size_t             nls;

    memset(g, 0, sizeof(*g));
    g->p    = p;
    g->m    = m;
    g->node = p->node;
    g->sink = sink;
    g->arg  = arg;
    g->tp = l->tp, g->pp = l->pp, g->vpp = l->vpp, g->ep = l->ep, g->dp = l->dp, g->cp = l->cp;
    g->seq     = l->seq_len ? l->seq_len : m->seq_len;
    g->mbs     = l->micro_batch_size ? l->micro_batch_size : m->micro_batch;
    g->stage   = mt_gen_stage_of_rank(l, p->rank);
    g->T       = (uint64_t)g->seq / g->cp * g->mbs;
    g->nsp     = g->T / g->tp;
    g->ep_rank = ((p->rank / g->tp) % (g->dp * g->cp)) % g->ep;
    g->etp     = p->tp_extend_ep ? 1 : g->tp;
    g->eps     = p->tp_extend_ep ? g->ep * g->tp : g->ep;
    if (p->tp_extend_ep) {
        g->ep_rank = g->ep_rank * g->tp + p->rank % g->tp;
    }
    g->e_loc = m->experts / g->eps;
    g->e0    = g->ep_rank * g->e_loc;

    g->chunk_first = calloc(g->vpp, sizeof(*g->chunk_first));
    g->chunk_count = calloc(g->vpp, sizeof(*g->chunk_count));
    g->layer_of    = calloc(m->layers, sizeof(*g->layer_of));
    if (!g->chunk_first || !g->chunk_count || !g->layer_of) {
        goto err_nomem;
    }
    for (c = 0; c < g->vpp; c++) {
        mt_gen_chunk_layers(m, l, c * g->pp + g->stage, &first, &n);
        g->chunk_first[c] = g->n_local;
        g->chunk_count[c] = n;
        for (i = 0; i < n; i++) {
            g->layer_of[g->n_local++] = first + i;
        }
    }
    nls    = (size_t)g->n_local * M;
    g->ls  = calloc(nls, sizeof(*g->ls));
    g->hs  = calloc(M, sizeof(*g->hs));
    g->lpg = calloc((size_t)g->n_local * PG_N, sizeof(*g->lpg));
    g->epg = calloc(g->n_local, sizeof(*g->epg));
    if (!g->ls || !g->hs || !g->lpg || !g->epg) {
        goto err_nomem;
    }
    if (m->experts > 0) {
        g->ebuf    = calloc(nls * g->e_loc * 2, sizeof(*g->ebuf));
        g->cbuf    = calloc(nls * g->e_loc, sizeof(*g->cbuf));
        g->weights = calloc((size_t)g->n_local * m->experts, sizeof(*g->weights));
        if (!g->ebuf || !g->cbuf || !g->weights) {
            goto err_nomem;
        }
        for (i = 0; i < nls; i++) {
            g->ls[i].efc1   = &g->ebuf[i * g->e_loc * 2];
            g->ls[i].eact   = &g->ebuf[i * g->e_loc * 2 + g->e_loc];
            g->ls[i].ecount = &g->cbuf[i * g->e_loc];
        }
        for (i = 0; i < g->n_local && g->status == MEMSVC_OK; i++) {
            gen_router_weights(g, i);
        }
    }

    /* parameter groups, in forward order per chunk */
    g->pg_embed = g->pg_head = g->pg_head_norm = -1;
    for (c = 0; c < g->vpp; c++) {
        uint32_t v = c * g->pp + g->stage;

        g->cur_v = v;
        if (v == 0) {
            g->pg_embed = gen_pg_add(g, MEMSVC_TAG_NONE, NOEXP,
                                     ((uint64_t)m->vocab + g->tp - 1) / g->tp * m->hidden +
                                         (m->bias ? (uint64_t)g->seq * m->hidden : 0),
                                     g->dp * g->cp, "embed|");
        }
        for (i = g->chunk_first[c]; i < g->chunk_first[c] + g->chunk_count[c]; i++) {
            gen_layer_params(g, i);
        }
        if (v == g->pp * g->vpp - 1) {
            g->pg_head_norm =
                gen_pg_add(g, MEMSVC_TAG_NONE, NOEXP, gen_norm_n(m), g->dp * g->cp, "head|.norm");
            if (m->tied_embeddings && g->pg_embed >= 0) {
                g->pg_head = g->pg_embed;
            } else {
                g->pg_head = gen_pg_add(g, MEMSVC_TAG_NONE, NOEXP,
                                        ((uint64_t)m->vocab + g->tp - 1) / g->tp * m->hidden,
                                        g->dp * g->cp, "head|");
            }
        }
    }
    if (g->status != MEMSVC_OK) {
        goto err_fini;
    }
    return MEMSVC_OK;

err_nomem:
    g->status = MEMSVC_ERR_NO_RESOURCE;
err_fini:
    gen_fini(g);
    return g->status;
}

memsvc_status_t mt_gen_run(const mt_gen_params_t *p, mt_sink_fn_t sink, void *arg, char *err,
                           size_t errlen)
{
    gen_t           g;
    memsvc_status_t status;

    status = mt_gen_validate(p, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = gen_init(&g, p, sink, arg);
    if (status != MEMSVC_OK) {
        set_err(err, errlen, "gen: out of memory");
        return status;
    }
    if (p->pipeline_waits && p->layout.pp > 1) {
        status = gen_sched_waits(&g);
        if (status != MEMSVC_OK) {
            set_err(err, errlen, "gen: timing the pipeline stages: %s", memsvc_strerror(status));
            gen_fini(&g);
            return status;
        }
    }
    for (g.step = 0; g.step < (int32_t)p->steps && g.status == MEMSVC_OK; g.step++) {
        gen_step(&g);
    }
    gen_free_params(&g);
    status = g.status;
    if (status != MEMSVC_OK) {
        set_err(err, errlen, "gen: the sink failed: %s", memsvc_strerror(status));
    }
    gen_fini(&g);
    return status;
}

/* ---- memory estimate ----------------------------------------------------------------- */

typedef struct mem_acc {
    mt_gen_memory_t *mem;
    uint64_t        *size; /* by tensor id */
    uint8_t         *kind;
    uint64_t         cap;
    uint64_t         live[MEMSVC_KIND_COUNT], total;
    memsvc_status_t  status;
} mem_acc_t;

static memsvc_status_t mem_sink(void *arg, const mt_event_t *ev)
{
    mem_acc_t       *a   = arg;
    mt_gen_memory_t *mem = a->mem;

    mem->events++;
    if (ev->type == MT_EV_ALLOC) {
        if (ev->tensor >= a->cap) {
            uint64_t  cap = 2 * ev->tensor + 1024;
            uint64_t *ns  = realloc(a->size, cap * sizeof(*ns));
            uint8_t  *nk;

            if (ns == NULL) {
                return MEMSVC_ERR_NO_RESOURCE;
            }
            a->size = ns;
            nk      = realloc(a->kind, cap * sizeof(*nk));
            if (nk == NULL) {
                return MEMSVC_ERR_NO_RESOURCE;
            }
            a->kind = nk;
            a->cap  = cap;
        }
        a->size[ev->tensor] = ev->size;
        a->kind[ev->tensor] = (uint8_t)ev->kind;
        a->live[ev->kind] += ev->size;
        a->total += ev->size;
        mem->params = a->live[MEMSVC_KIND_PARAM];
        mem->optim  = a->live[MEMSVC_KIND_OPTIM];
        if (a->live[MEMSVC_KIND_GRAD] > mem->grads) {
            mem->grads = a->live[MEMSVC_KIND_GRAD];
        }
        if (a->live[MEMSVC_KIND_ACTIVATION] > mem->activation_peak) {
            mem->activation_peak = a->live[MEMSVC_KIND_ACTIVATION];
        }
        if (a->total > mem->peak) {
            mem->peak = a->total;
        }
    } else if (ev->type == MT_EV_FREE && ev->tensor < a->cap) {
        a->live[a->kind[ev->tensor]] -= a->size[ev->tensor];
        a->total -= a->size[ev->tensor];
    } else if (ev->type == MT_EV_COMPUTE) {
        mem->ops++;
        if (ev->stream == 0) {
            mem->compute_ns += ev->duration_ns;
        }
    }
    return MEMSVC_OK;
}

static memsvc_status_t gen_count(const mt_gen_params_t *params, uint32_t steps,
                                 mt_gen_memory_t *mem_p, char *err, size_t errlen)
{
    mt_gen_params_t p = *params;
    mt_gen_memory_t mem;
    mem_acc_t       a;
    memsvc_status_t status;

    memset(&mem, 0, sizeof(mem));
    memset(&a, 0, sizeof(a));
    a.mem            = &mem;
    p.steps          = steps;
    p.pipeline_waits = false; /* waits allocate nothing: the memory figures do not need them */
    status           = mt_gen_run(&p, mem_sink, &a, err, errlen);
    free(a.size);
    free(a.kind);
    if (status == MEMSVC_OK) {
        *mem_p = mem;
    }
    return status;
}

memsvc_status_t mt_gen_memory(const mt_gen_params_t *params, mt_gen_memory_t *mem_p, char *err,
                              size_t errlen)
{
    return gen_count(params, 1, mem_p, err, errlen);
}

memsvc_status_t mt_gen_peak(const mt_gen_params_t *params, uint64_t *peak_p, char *err,
                            size_t errlen)
{
    mt_gen_memory_t mem;
    memsvc_status_t status = gen_count(params, params->steps, &mem, err, errlen);

    if (status == MEMSVC_OK) {
        *peak_p = mem.peak;
    }
    return status;
}
