/* cluster.c - durable state per node, replication and recovery of a job at scale (cluster.h) */
#include "tools/memtrace/cluster.h"
#include "memsvc/msd_place.h"

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

memsvc_status_t mt_cluster_params_init(mt_cluster_params_t *p, const mt_model_t *model,
                                       const sim_desc_t *node, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    mt_gen_params_init(&p->gen, model, node);
    p->replicas        = 1;
    p->link_share      = 0.1;
    p->ckpt_interval_s = 3600;
    return mt_gen_params_default_layout(&p->gen, err, errlen);
}

void mt_cluster_replica_nodes(uint32_t nodes, uint32_t replicas, uint32_t node, uint32_t *out)
{
    (void)msd_place_group(nodes, replicas, node, out); /* the plan checked R + 1 <= nodes */
}

/* Sums the stage's stream-0 operator time (compute, recompute-free, and pipeline waits). */
static memsvc_status_t step_sink(void *arg, const mt_event_t *ev)
{
    uint64_t *ns = arg;

    if (ev->type == MT_EV_COMPUTE && ev->stream == 0) {
        *ns += ev->duration_ns;
    }
    return MEMSVC_OK;
}

memsvc_status_t mt_cluster_plan(const mt_cluster_params_t *p, mt_cluster_plan_t *plan, char *err,
                                size_t errlen)
{
    const mt_layout_t *l   = &p->gen.layout;
    const sim_desc_t  *nd  = p->gen.node;
    uint32_t           per = l->tp * l->cp * l->dp; /* ranks of a pipeline stage */
    uint32_t           npn = p->npus_per_node ? p->npus_per_node : nd->num_npus;
    double             link = p->link_bw > 0 ? p->link_bw : nd->num_npus * nd->nic.bw;
    double             disk = p->disk_bw > 0 ? p->disk_bw : nd->disk.bw;
    mt_gen_params_t    q    = p->gen;
    uint64_t          *st_params = NULL, *st_optim = NULL, *durable = NULL;
    uint32_t          *peers = NULL;
    memsvc_status_t    status = MEMSVC_OK;
    uint64_t           sum = 0;
    uint32_t           s, n, r;

    memset(plan, 0, sizeof(*plan));
    plan->ranks = per * l->pp;
    if (npn == 0 || plan->ranks % npn != 0) {
        set_err(err, errlen, "cluster: %u ranks do not fill nodes of %u NPUs", plan->ranks, npn);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    plan->nodes = plan->ranks / npn;
    if (p->replicas == 0 || p->replicas + 1 > plan->nodes) {
        set_err(err, errlen, "cluster: %u replica(s) need at least %u nodes; the job has %u",
                p->replicas, p->replicas + 1, plan->nodes);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!(link > 0) || !(disk > 0) || !(p->link_share > 0 && p->link_share <= 1) ||
        !(p->ckpt_interval_s > 0)) {
        set_err(err, errlen, "cluster: link and disk rates and the checkpoint interval must be "
                             "positive, the link share in (0, 1]");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = mt_gen_validate(&p->gen, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    st_params = calloc(l->pp, sizeof(*st_params));
    st_optim  = calloc(l->pp, sizeof(*st_optim));
    durable   = calloc(plan->nodes, sizeof(*durable));
    peers     = calloc(p->replicas, sizeof(*peers));
    if (st_params == NULL || st_optim == NULL || durable == NULL || peers == NULL) {
        set_err(err, errlen, "cluster: out of memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto out;
    }
    /* Every rank of a stage holds equal shards in the generator (tp, ep and dp shards are even),
     * so the first rank of each stage stands for all of them. */
    for (s = 0; s < l->pp; s++) {
        mt_gen_memory_t mem;
        uint64_t        ns = 0;

        q.rank = s * per;
        q.steps = 1;
        status = mt_gen_memory(&q, &mem, err, errlen);
        if (status != MEMSVC_OK) {
            goto out;
        }
        st_params[s]         = mem.params;
        st_optim[s]          = mem.optim;
        q.pipeline_waits     = true;
        status               = mt_gen_run(&q, step_sink, &ns, err, errlen);
        if (status != MEMSVC_OK) {
            goto out;
        }
        plan->step_s = fmax(plan->step_s, ns / 1e9);
    }
    for (n = 0; n < plan->nodes; n++) {
        uint64_t pb = 0, ob = 0;

        for (r = n * npn; r < (n + 1) * npn; r++) {
            pb += st_params[r / per];
            ob += st_optim[r / per];
        }
        durable[n] = pb + ob;
        sum += durable[n];
        if (durable[n] > plan->node_durable_max) {
            plan->node_durable_max = durable[n];
            plan->node_params_max  = pb;
            plan->node_optim_max   = ob;
            plan->worst_node       = n;
        }
    }
    plan->job_durable       = sum;
    plan->node_durable_mean = sum / plan->nodes;
    /* what each node keeps for its peers */
    {
        uint64_t *held = calloc(plan->nodes, sizeof(*held));

        if (held == NULL) {
            set_err(err, errlen, "cluster: out of memory");
            status = MEMSVC_ERR_NO_RESOURCE;
            goto out;
        }
        for (n = 0; n < plan->nodes; n++) {
            mt_cluster_replica_nodes(plan->nodes, p->replicas, n, peers);
            for (r = 0; r < p->replicas; r++) {
                held[peers[r]] += durable[n];
            }
        }
        for (n = 0; n < plan->nodes; n++) {
            plan->node_held_max = held[n] > plan->node_held_max ? held[n] : plan->node_held_max;
        }
        free(held);
    }
    plan->group_size      = p->replicas + 1;
    plan->last_group_size = plan->nodes - (plan->nodes / plan->group_size - 1) * plan->group_size;
    /* The sender ships R copies through its own link; receivers take one copy each. */
    plan->repl_s     = (double)plan->node_durable_max * p->replicas / (link * p->link_share);
    plan->repl_every = plan->step_s > 0 ? (uint32_t)ceil(plan->repl_s / plan->step_s) : 1;
    if (plan->repl_every == 0) {
        plan->repl_every = 1;
    }
    /* A replacement node pulls its state at its full link (training waits for it anyway).
     * At a failure the last acknowledged version is on average half a replication period plus
     * one replication old; a disk checkpoint, half an interval (its write time left out). */
    plan->recover_peer_s = (double)plan->node_durable_max / link;
    plan->recover_disk_s = (double)plan->node_durable_max / disk;
    plan->lost_peer_s    = plan->repl_every * plan->step_s / 2 + plan->repl_s;
    plan->lost_disk_s    = p->ckpt_interval_s / 2;
out:
    free(st_params);
    free(st_optim);
    free(durable);
    free(peers);
    return status;
}
