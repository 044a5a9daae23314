/* cluster.h - durable state of a training job across nodes, its replicas and its recovery, on paper */
#ifndef MT_CLUSTER_H
#define MT_CLUSTER_H

#include "tools/memtrace/gen.h"

#include <stdint.h>

/*
 * What a job at scale asks of memsvc's replicated durable tensors. The durable state of a rank
 * is what the generator says it holds over a step: its bf16 parameters and its ZeRO shard of the
 * fp32 master weights and Adam moments (mt_gen_memory: params + optim); every byte of it changes
 * every step. Ranks are placed on nodes in Megatron order (tp fastest, then cp, dp, pp), a node
 * holding npus_per_node consecutive ranks. Replicas are placed like Gemini's group strategy
 * (SOSP 2023): nodes in groups of replicas + 1 consecutive nodes (the last group takes the
 * remainder), each node's replicas on the next `replicas` nodes of its group, round the group.
 */
typedef struct mt_cluster_params {
    mt_gen_params_t gen;           /* model, layout, node (rank is ignored) */
    uint32_t        npus_per_node; /* ranks per node (0: the node's num_npus) */
    uint32_t        replicas;      /* R >= 1 */
    double          link_bw;       /* bytes/s a node can send or receive for replicas
                                      (0: num_npus x nic bandwidth of the node) */
    double          link_share;    /* fraction of link_bw replication may take, (0, 1] */
    double          disk_bw;       /* bytes/s a node reads a checkpoint from storage
                                      (0: the node's disk link) */
    double          ckpt_interval_s; /* interval of disk checkpoints (lost work on a failure) */
} mt_cluster_params_t;

typedef struct mt_cluster_plan {
    uint32_t nodes, ranks, group_size, last_group_size;
    uint64_t node_params_max, node_optim_max; /* bytes of the node with the most durable state */
    uint64_t node_durable_max, node_durable_mean;
    uint32_t worst_node;
    uint64_t job_durable;      /* all nodes together */
    uint64_t node_held_max;    /* replica bytes the busiest holder keeps for its peers */
    double   step_s;           /* the slowest stage's compute and pipeline waits per step */
    double   repl_s;           /* time to ship one step's durable bytes to R peers at the share */
    uint32_t repl_every;       /* replicate every this many steps so replication keeps up */
    double   recover_peer_s;   /* one node's durable bytes from its peers at the full link */
    double   recover_disk_s;   /* the same bytes from storage at disk_bw */
    double   lost_peer_s;      /* expected training time lost: half a replication period + repl_s */
    double   lost_disk_s;      /* ... half a checkpoint interval */
} mt_cluster_plan_t;

/* Defaults: npus_per_node from the node, R = 1, link from the node, share 0.1, disk from the
 * node, disk checkpoints every 3600 s. gen is initialised with the model's published layout. */
memsvc_status_t mt_cluster_params_init(mt_cluster_params_t *p, const mt_model_t *model,
                                       const sim_desc_t *node, char *err, size_t errlen);

/* Compute the plan. MEMSVC_ERR_INVALID_PARAM (with a message) when the layout does not fill
 * whole nodes, R does not fit the cluster (R + 1 > nodes), or a rate or share is out of range;
 * else what the generator returns. */
memsvc_status_t mt_cluster_plan(const mt_cluster_params_t *p, mt_cluster_plan_t *plan, char *err,
                                size_t errlen);

/* The nodes that hold node's replicas (replicas of them), in order, as the plan places them. */
void mt_cluster_replica_nodes(uint32_t nodes, uint32_t replicas, uint32_t node, uint32_t *out);

#endif /* MT_CLUSTER_H */
