/* test_cluster.c - memtrace cluster: replica placement and the per-node durable state plan */
#include "tests/test_util.h"
#include "tools/memtrace/cluster.h"
#include "tools/memtrace/cmd.h"

#include <stdio.h>
#include <string.h>

/* Every node's replicas are other nodes of its own group, distinct, and every node holds
 * exactly R replicas (no node is left holding more than its share). */
static void test_placement(void)
{
    uint32_t nodes_list[] = {2, 3, 7, 8, 10, 768};
    uint32_t r, i, n, k, j;

    for (r = 1; r <= 3; r++) {
        for (i = 0; i < sizeof(nodes_list) / sizeof(nodes_list[0]); i++) {
            uint32_t nodes = nodes_list[i], g = r + 1, groups = nodes / g;
            uint32_t held[768] = {0}, out[3];

            if (nodes < g) {
                continue;
            }
            for (n = 0; n < nodes; n++) {
                uint32_t gi = n / g < groups ? n / g : groups - 1;

                mt_cluster_replica_nodes(nodes, r, n, out);
                for (k = 0; k < r; k++) {
                    uint32_t gk = out[k] / g < groups ? out[k] / g : groups - 1;

                    CU_ASSERT_NOT_EQUAL(out[k], n);
                    CU_ASSERT(out[k] < nodes);
                    CU_ASSERT_EQUAL(gk, gi);
                    for (j = 0; j < k; j++) {
                        CU_ASSERT_NOT_EQUAL(out[j], out[k]);
                    }
                    held[out[k]]++;
                }
            }
            for (n = 0; n < nodes; n++) {
                CU_ASSERT_EQUAL(held[n], r);
            }
        }
    }
}

/* The plan's per-node figures are the generator's per-rank durable bytes summed over the
 * node's ranks, and its times follow from them and the rates given. */
static void test_plan_matches_generator(void)
{
    mt_model_t          model;
    sim_desc_t          node;
    mt_cluster_params_t p;
    mt_cluster_plan_t   plan;
    mt_gen_memory_t     mem;
    mt_gen_params_t     q;
    uint64_t            node_bytes[4] = {0}, max = 0, total = 0;
    uint32_t            r;
    char                err[256];

    CU_ASSERT_FATAL(mt_model_preset("tiny-moe", &model) == MEMSVC_OK);
    CU_ASSERT_FATAL(sim_desc_preset("tiny", &node) == MEMSVC_OK);
    CU_ASSERT_FATAL(mt_cluster_params_init(&p, &model, &node, err, sizeof(err)) == MEMSVC_OK);
    CU_ASSERT_FATAL(mt_layout_parse("tp=1,pp=2,vpp=1,ep=1,dp=4", &p.gen.layout, err,
                                    sizeof(err)) == MEMSVC_OK);
    p.gen.layout.microbatches = 2;
    p.npus_per_node           = 2;
    p.replicas                = 1;
    p.link_bw                 = 1e9;
    p.link_share              = 0.5;
    p.disk_bw                 = 2.5e8;
    CU_ASSERT_EQUAL_FATAL(mt_cluster_plan(&p, &plan, err, sizeof(err)), MEMSVC_OK);
    CU_ASSERT_EQUAL(plan.ranks, 8);
    CU_ASSERT_EQUAL(plan.nodes, 4);
    q = p.gen;
    for (r = 0; r < 8; r++) {
        q.rank = r;
        CU_ASSERT_FATAL(mt_gen_memory(&q, &mem, err, sizeof(err)) == MEMSVC_OK);
        node_bytes[r / 2] += mem.params + mem.optim;
        total += mem.params + mem.optim;
    }
    for (r = 0; r < 4; r++) {
        max = node_bytes[r] > max ? node_bytes[r] : max;
    }
    CU_ASSERT(max > 0);
    CU_ASSERT_EQUAL(plan.node_durable_max, max);
    CU_ASSERT_EQUAL(plan.node_params_max + plan.node_optim_max, max);
    CU_ASSERT_EQUAL(plan.job_durable, total);
    CU_ASSERT_EQUAL(plan.node_held_max, max); /* R = 1, groups of 2: a pair holds each other */
    CU_ASSERT_DOUBLE_EQUAL(plan.repl_s, max / (1e9 * 0.5), 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(plan.recover_peer_s, max / 1e9, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(plan.recover_disk_s / plan.recover_peer_s, 4.0, 1e-9);
    CU_ASSERT(plan.step_s > 0);
    CU_ASSERT(plan.repl_every >= 1 && plan.repl_every * plan.step_s >= plan.repl_s);

    /* two replicas on four nodes: groups of 3, the last takes the fourth node */
    p.replicas = 2;
    CU_ASSERT_EQUAL_FATAL(mt_cluster_plan(&p, &plan, err, sizeof(err)), MEMSVC_OK);
    CU_ASSERT_EQUAL(plan.group_size, 3);
    CU_ASSERT_EQUAL(plan.last_group_size, 4);
    CU_ASSERT_DOUBLE_EQUAL(plan.repl_s, 2.0 * max / (1e9 * 0.5), 1e-9);

    /* what cannot be planned is said */
    p.replicas = 4;
    CU_ASSERT_EQUAL(mt_cluster_plan(&p, &plan, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT(strstr(err, "replica") != NULL);
    p.replicas      = 1;
    p.npus_per_node = 3;
    CU_ASSERT_EQUAL(mt_cluster_plan(&p, &plan, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT(strstr(err, "fill") != NULL);
    p.npus_per_node = 2;
    p.link_share    = 1.5;
    CU_ASSERT_EQUAL(mt_cluster_plan(&p, &plan, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
}

static void test_cli_errors(void)
{
    char *ok[]    = {"cluster", "--model", "tiny-moe", "--node", "tiny", "--layout",
                     "tp=1,pp=2,vpp=1,ep=1,dp=2", "--npus-per-node", "2", "--json", NULL};
    char *bad1[]  = {"cluster", "--model", "tiny-moe", "--replicas", "0", NULL};
    char *bad2[]  = {"cluster", "--model", "tiny-moe", "--link", "fast", NULL};
    char *bad3[]  = {"cluster", "--model", "tiny-moe", "--bogus", NULL};
    char *bad4[]  = {"cluster", NULL};
    char *bad5[]  = {"cluster", "--model", "tiny-moe", "--link-share", "0", NULL};
    char *bad6[]  = {"cluster", "--model", "tiny-moe", "--replicas", NULL};
    FILE *saved   = stdout;
    FILE *devnull = fopen("/dev/null", "w");

    CU_ASSERT_FATAL(devnull != NULL);
    stdout = devnull;
    CU_ASSERT_EQUAL(mt_cmd_cluster(10, ok), 0);
    stdout = saved;
    fclose(devnull);
    CU_ASSERT_EQUAL(mt_cmd_cluster(5, bad1), 2);
    CU_ASSERT_EQUAL(mt_cmd_cluster(5, bad2), 2);
    CU_ASSERT_EQUAL(mt_cmd_cluster(4, bad3), 2);
    CU_ASSERT_EQUAL(mt_cmd_cluster(1, bad4), 2);
    CU_ASSERT_EQUAL(mt_cmd_cluster(5, bad5), 2);
    CU_ASSERT_EQUAL(mt_cmd_cluster(4, bad6), 2);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("cluster_plan", NULL, NULL);

    CU_add_test(s, "replicas placed in groups, R per holder", test_placement);
    CU_add_test(s, "plan = generator's durable bytes per node", test_plan_matches_generator);
    CU_add_test(s, "bad arguments are usage errors", test_cli_errors);
}

TEST_REGISTER(cluster_plan, add_suite)
