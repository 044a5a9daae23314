/* cluster_cmd.c - `memtrace cluster`: a job's durable state per node, replication, recovery */
#include "tools/memtrace/cluster.h"
#include "tools/memtrace/cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void cluster_usage(FILE *out)
{
    fprintf(out,
            "usage: memtrace cluster --model NAME [key=value ...] [--layout L] [--node PRESET]\n"
            "                        [--npus-per-node N] [--replicas R] [--link RATE]\n"
            "                        [--link-share F] [--disk RATE] [--ckpt-interval DURATION]\n"
            "                        [--json]\n"
            "\n"
            "The durable state of a training job per node (bf16 parameters and the ZeRO shard of\n"
            "fp32 master weights and Adam moments, as `memtrace gen --describe` counts them), what\n"
            "replicating it to R peers costs per step, and recovering a node from a peer against\n"
            "reading a checkpoint. See docs/cluster.md for the model and its assumptions.\n"
            "\n"
            "  --model NAME          a preset (memtrace models); key=value overrides as in gen\n"
            "  --layout L            tp=8,pp=16,vpp=2,ep=4,dp=48 (default: the model's published)\n"
            "  --node PRESET         node description (default ascend-910b)\n"
            "  --npus-per-node N     ranks per node (default: the node's NPUs)\n"
            "  --replicas R          peer copies of each node's durable state (default 1)\n"
            "  --link RATE           a node's network rate for replicas (default: NPUs x nic)\n"
            "  --link-share F        fraction of it replication may use (default 0.1)\n"
            "  --disk RATE           a node's checkpoint read rate (default: the node's disk)\n"
            "  --ckpt-interval D     interval of disk checkpoints (default 1h)\n"
            "  --json                one JSON object instead of the table\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memtrace cluster: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (memtrace cluster --help for the options)\n");
    return 2;
}

static double gib(uint64_t b)
{
    return b / (double)(1ull << 30);
}

static void print_plan(const mt_cluster_params_t *p, const mt_cluster_plan_t *pl, double link,
                       double disk)
{
    const mt_layout_t *l = &p->gen.layout;

    printf("job: %s, tp %u pp %u vpp %u ep %u dp %u cp %u: %u ranks on %u nodes of %u NPUs "
           "(%s)\n",
           p->gen.model->name, l->tp, l->pp, l->vpp, l->ep, l->dp, l->cp, pl->ranks, pl->nodes,
           pl->ranks / pl->nodes, p->gen.node->name);
    printf("durable state per node (bf16 parameters + ZeRO optimizer shards):\n");
    printf("  most: node %u, %.2f GiB (parameters %.2f, optimizer %.2f); mean %.2f GiB; job "
           "%.2f TiB\n",
           pl->worst_node, gib(pl->node_durable_max), gib(pl->node_params_max),
           gib(pl->node_optim_max), gib(pl->node_durable_mean), gib(pl->job_durable) / 1024);
    printf("replicas: R = %u, groups of %u nodes (last group %u); a node holds up to %.2f GiB "
           "of its peers'\n",
           p->replicas, pl->group_size, pl->last_group_size, gib(pl->node_held_max));
    printf("step: %.3f s (the slowest stage's operators and pipeline waits, as memtrace gen "
           "times them)\n",
           pl->step_s);
    printf("replication per step: %.3f s at %.0f%% of %.1f GB/s = %.2f steps -> every %u "
           "step(s)\n",
           pl->repl_s, p->link_share * 100, link / 1e9,
           pl->step_s > 0 ? pl->repl_s / pl->step_s : 0, pl->repl_every);
    printf("recovery of one node: from a peer %.2f s at %.1f GB/s; from a checkpoint %.2f s at "
           "%.1f GB/s (%.1fx)\n",
           pl->recover_peer_s, link / 1e9, pl->recover_disk_s, disk / 1e9,
           pl->recover_peer_s > 0 ? pl->recover_disk_s / pl->recover_peer_s : 0);
    printf("training lost on a failure (expected): %.1f s with peer replicas; %.0f s with "
           "checkpoints every %.0f s\n",
           pl->lost_peer_s, pl->lost_disk_s, p->ckpt_interval_s);
}

static void print_json(const mt_cluster_params_t *p, const mt_cluster_plan_t *pl, double link,
                       double disk)
{
    printf("{\"model\":\"%s\",\"node\":\"%s\",\"ranks\":%u,\"nodes\":%u,\"replicas\":%u,"
           "\"node_durable_max_bytes\":%llu,\"node_params_max_bytes\":%llu,"
           "\"node_optim_max_bytes\":%llu,\"node_durable_mean_bytes\":%llu,"
           "\"job_durable_bytes\":%llu,\"node_held_max_bytes\":%llu,\"worst_node\":%u,"
           "\"group_size\":%u,\"last_group_size\":%u,\"step_s\":%.6f,\"link_bytes_per_s\":%.6g,"
           "\"link_share\":%g,\"disk_bytes_per_s\":%.6g,\"replication_s\":%.6f,"
           "\"replicate_every_steps\":%u,\"recover_peer_s\":%.6f,\"recover_disk_s\":%.6f,"
           "\"lost_peer_s\":%.6f,\"lost_disk_s\":%.6f}\n",
           p->gen.model->name, p->gen.node->name, pl->ranks, pl->nodes, p->replicas,
           (unsigned long long)pl->node_durable_max, (unsigned long long)pl->node_params_max,
           (unsigned long long)pl->node_optim_max, (unsigned long long)pl->node_durable_mean,
           (unsigned long long)pl->job_durable, (unsigned long long)pl->node_held_max,
           pl->worst_node, pl->group_size, pl->last_group_size, pl->step_s, link, p->link_share,
           disk, pl->repl_s, pl->repl_every, pl->recover_peer_s, pl->recover_disk_s,
           pl->lost_peer_s, pl->lost_disk_s);
}

static int parse_u32(const char *opt, const char *s, uint32_t *v)
{
    char              *end;
    unsigned long long x;

    if (s == NULL || *s < '0' || *s > '9') {
        return usage_error("%s needs a positive integer", opt);
    }
    x = strtoull(s, &end, 10);
    if (*end != '\0' || x == 0 || x > UINT32_MAX) {
        return usage_error("%s needs a positive integer", opt);
    }
    *v = (uint32_t)x;
    return 0;
}

int mt_cmd_cluster(int argc, char **argv)
{
    const char         *model_name = NULL, *node_name = "ascend-910b", *layout_s = NULL;
    bool                json = false;
    mt_model_t          model;
    sim_desc_t          node;
    mt_cluster_params_t p;
    mt_cluster_plan_t   plan;
    char                err[256];
    int                 i;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cluster_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--model") && i + 1 < argc) {
            model_name = argv[++i];
        } else if (!strcmp(argv[i], "--node") && i + 1 < argc) {
            node_name = argv[++i];
        }
    }
    if (model_name == NULL) {
        return usage_error("%s", "--model is required (see `memtrace models`)");
    }
    if (mt_model_preset(model_name, &model) != MEMSVC_OK) {
        return usage_error("unknown model '%s' (see `memtrace models`)", model_name);
    }
    if (sim_desc_preset(node_name, &node) != MEMSVC_OK) {
        return usage_error("unknown node preset '%s'", node_name);
    }
    /* model overrides first: the layout defaults and the rest read the model */
    for (i = 1; i < argc; i++) {
        if (argv[i][0] == '-') {
            i += strcmp(argv[i], "--json") != 0; /* every other option takes a value */
        } else if (strchr(argv[i], '=') != NULL &&
                   mt_model_set(&model, argv[i], err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "memtrace cluster: %s\n", err);
            return 2;
        }
    }
    if (mt_cluster_params_init(&p, &model, &node, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace cluster: the preset's layout: %s\n", err);
        return 2;
    }
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = (i + 1 < argc) ? argv[i + 1] : NULL;
        uint64_t    ns;

        if (!strcmp(a, "--model") || !strcmp(a, "--node")) {
            i++;
        } else if (a[0] != '-' && strchr(a, '=') != NULL) {
            continue; /* a model override, applied above */
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (v == NULL) {
            return usage_error("%s needs a value", a);
        } else if (!strcmp(a, "--layout")) {
            layout_s = v;
            i++;
        } else if (!strcmp(a, "--npus-per-node")) {
            if (parse_u32(a, v, &p.npus_per_node) != 0) {
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--replicas")) {
            if (parse_u32(a, v, &p.replicas) != 0) {
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--link") || !strcmp(a, "--disk")) {
            double rate;

            if (sim_parse_rate(v, &rate) != MEMSVC_OK || !(rate > 0)) {
                return usage_error("bad rate '%s' (e.g. 25GB/s, 200Gbps)", v);
            }
            *(!strcmp(a, "--link") ? &p.link_bw : &p.disk_bw) = rate;
            i++;
        } else if (!strcmp(a, "--link-share")) {
            char *end;

            p.link_share = strtod(v, &end);
            if (*end != '\0' || !(p.link_share > 0 && p.link_share <= 1)) {
                return usage_error("--link-share needs a fraction in (0, 1], not '%s'", v);
            }
            i++;
        } else if (!strcmp(a, "--ckpt-interval")) {
            if (sim_parse_duration(v, &ns) != MEMSVC_OK || ns == 0) {
                return usage_error("bad duration '%s' (e.g. 30min is 1800s, 1h is 3600s)", v);
            }
            p.ckpt_interval_s = ns / 1e9;
            i++;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
    }
    if (layout_s != NULL) {
        p.gen.tp_extend_ep = model.tp_extend_ep;
        if (mt_layout_parse(layout_s, &p.gen.layout, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "memtrace cluster: --layout: %s\n", err);
            return 2;
        }
    }
    if (mt_cluster_plan(&p, &plan, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace cluster: %s\n", err);
        return 2;
    }
    {
        double link = p.link_bw > 0 ? p.link_bw : node.num_npus * node.nic.bw;
        double disk = p.disk_bw > 0 ? p.disk_bw : node.disk.bw;

        if (json) {
            print_json(&p, &plan, link, disk);
        } else {
            print_plan(&p, &plan, link, disk);
        }
    }
    return 0;
}
