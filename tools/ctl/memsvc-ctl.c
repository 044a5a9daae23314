/* memsvc-ctl.c - look at a running memsvcd: ping, stats, list (text or --json), as a control
 * session; or at every daemon of a cluster file at once (--cluster) */
#include "client/memsvc.h"
#include "memsvc/msd_peer.h"
#include "sim_npu/sim_desc.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ctl {
    const char   *cluster; /* --cluster FILE */
    const char   *address;
    uint32_t      timeout_ms;
    bool          json;
    memsvc_conn_h conn;
} ctl_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: memsvc-ctl [--address HOST:PORT] [--timeout MS] [--json] COMMAND\n"
            "       memsvc-ctl --cluster FILE [--timeout MS] [--json] stats|list|health\n"
            "\n"
            "  ping             round trip to the daemon\n"
            "  stats            per device and pool: allocated, reserved, largest free block,\n"
            "                   fragmentation, tensors by state and kind, swaps, stalls;\n"
            "                   sessions and transport\n"
            "  list [JOB]       tensors of a job (default: all jobs)\n"
            "  health           (--cluster) exit 0 when every node answers and sees every\n"
            "                   peer up, else 1 and the problems\n"
            "\n"
            "--cluster FILE: every node of the cluster file (docs/cluster.md) as one table:\n"
            "reachable, HBM and host use, and the state of each peer as each node sees it.\n"
            "The address defaults to $MEMSVC_ADDR, else 127.0.0.1:13337.\n");
}

static int cmd_ping(ctl_t *ctl)
{
    memsvc_status_t status;
    uint64_t        rtt = 0;

    status = memsvc_ping(ctl->conn, &rtt);
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memsvc-ctl: ping: %s\n", memsvc_strerror(status));
        return 1;
    }
    if (ctl->json) {
        printf("{\"ok\": true, \"rtt_ns\": %llu, \"transport\": ", (unsigned long long)rtt);
        memsvc_json_string(memsvc_conn_transport(ctl->conn), stdout);
        printf("}\n");
    } else {
        printf("memsvcd at %s: alive, round trip %.1f us over %s\n", ctl->address, rtt / 1e3,
               memsvc_conn_transport(ctl->conn));
    }
    return 0;
}

static void stats_json(const memsvc_stats_t *st)
{
    unsigned d, k;

    printf("{\n  \"node\": ");
    memsvc_json_string(st->node, stdout);
    printf(",\n  \"mode\": ");
    memsvc_json_string(st->mode, stdout);
    printf(",\n  \"policy\": ");
    memsvc_json_string(st->policy, stdout);
    printf(",\n  \"transport\": ");
    memsvc_json_string(st->transport, stdout);
    printf(",\n  \"uptime_ns\": %llu,\n", (unsigned long long)st->uptime_ns);
    printf("  \"sessions\": %llu, \"sessions_total\": %llu, \"orphans\": %llu,\n",
           (unsigned long long)st->sessions, (unsigned long long)st->sessions_total,
           (unsigned long long)st->orphans);
    printf("  \"requests\": %llu, \"errors\": %llu,\n", (unsigned long long)st->requests,
           (unsigned long long)st->errors);
    printf("  \"live_tensors\": %llu, \"moves_in_flight\": %llu,\n",
           (unsigned long long)st->live_tensors, (unsigned long long)st->moves_in_flight);
    printf("  \"host\": {\"capacity\": %llu, \"used\": %llu, \"peak\": %llu, "
           "\"disk_capacity\": %llu, \"disk_used\": %llu},\n",
           (unsigned long long)st->host_capacity, (unsigned long long)st->host_used,
           (unsigned long long)st->host_peak, (unsigned long long)st->disk_capacity,
           (unsigned long long)st->disk_used);
    printf("  \"devices\": [");
    for (d = 0; d < st->num_devices; d++) {
        const memsvc_dev_stats_t *ds = &st->dev[d];

        printf("%s\n    {\"device\": %u, \"capacity\": %llu, \"allocated\": %llu, "
               "\"reserved\": %llu, \"free\": %llu, \"largest_free\": %llu, "
               "\"fragmentation\": %.6f, \"peak_reserved\": %llu,\n",
               (d > 0) ? "," : "", d, (unsigned long long)ds->capacity,
               (unsigned long long)ds->allocated, (unsigned long long)ds->reserved,
               (unsigned long long)ds->free, (unsigned long long)ds->largest_free,
               ds->fragmentation, (unsigned long long)ds->peak_reserved);
        printf("     \"tensors_by_state\": {");
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            printf("%s\"%s\": %llu", (k > 0) ? ", " : "", memsvc_state_name((memsvc_state_t)k),
                   (unsigned long long)ds->tensors_by_state[k]);
        }
        printf("},\n     \"bytes_by_state\": {");
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            printf("%s\"%s\": %llu", (k > 0) ? ", " : "", memsvc_state_name((memsvc_state_t)k),
                   (unsigned long long)ds->bytes_by_state[k]);
        }
        printf("},\n     \"tensors_by_kind\": {");
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            printf("%s\"%s\": %llu", (k > 0) ? ", " : "", memsvc_kind_name((memsvc_kind_t)k),
                   (unsigned long long)ds->tensors_by_kind[k]);
        }
        printf("},\n     \"resident_by_kind\": {");
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            printf("%s\"%s\": %llu", (k > 0) ? ", " : "", memsvc_kind_name((memsvc_kind_t)k),
                   (unsigned long long)ds->resident_by_kind[k]);
        }
        printf("},\n     \"pinned_tensors\": %llu, \"pinned_bytes\": %llu, "
               "\"swap_out_bytes\": %llu, \"swap_outs\": %llu, \"swap_in_bytes\": %llu, "
               "\"swap_ins\": %llu, \"spill_bytes\": %llu, \"drops\": %llu, \"recomputes\": %llu, "
               "\"stall_ns\": %llu, \"stalls\": %llu, \"oom_events\": %llu, "
               "\"fragmented_events\": %llu}",
               (unsigned long long)ds->pinned_tensors, (unsigned long long)ds->pinned_bytes,
               (unsigned long long)ds->swap_out_bytes, (unsigned long long)ds->swap_outs,
               (unsigned long long)ds->swap_in_bytes, (unsigned long long)ds->swap_ins,
               (unsigned long long)ds->spill_bytes, (unsigned long long)ds->drops,
               (unsigned long long)ds->recomputes, (unsigned long long)ds->stall_ns,
               (unsigned long long)ds->stalls, (unsigned long long)ds->oom_events,
               (unsigned long long)ds->fragmented_events);
    }
    printf("\n  ]\n}\n");
}

static void stats_text(const memsvc_stats_t *st)
{
    char     a[32], b[32], c[32], e[32], f[32];
    unsigned d, k;

    printf("node %s, %s memory, policy %s, up %s\n", st->node, st->mode, st->policy,
           sim_format_time(st->uptime_ns, a, sizeof(a)));
    printf("sessions %llu live (%llu since start), transport %s\n",
           (unsigned long long)st->sessions, (unsigned long long)st->sessions_total, st->transport);
    printf("requests %llu, errors %llu; %llu live tensors, %llu moves in flight, "
           "%llu durable tensors kept for re-attach\n",
           (unsigned long long)st->requests, (unsigned long long)st->errors,
           (unsigned long long)st->live_tensors, (unsigned long long)st->moves_in_flight,
           (unsigned long long)st->orphans);
    printf("host pool: %s used of %s (peak %s); disk: %s used of %s\n",
           sim_format_size(st->host_used, a, sizeof(a)),
           sim_format_size(st->host_capacity, b, sizeof(b)),
           sim_format_size(st->host_peak, c, sizeof(c)),
           sim_format_size(st->disk_used, e, sizeof(e)),
           sim_format_size(st->disk_capacity, f, sizeof(f)));
    for (d = 0; d < st->num_devices; d++) {
        const memsvc_dev_stats_t *ds = &st->dev[d];

        printf("device %u HBM %s: allocated %s, reserved %s, free %s, largest free block %s, "
               "fragmentation %.1f%%\n",
               d, sim_format_size(ds->capacity, a, sizeof(a)),
               sim_format_size(ds->allocated, b, sizeof(b)),
               sim_format_size(ds->reserved, c, sizeof(c)), sim_format_size(ds->free, e, sizeof(e)),
               sim_format_size(ds->largest_free, f, sizeof(f)), ds->fragmentation * 100.0);
        printf("  tensors by state:");
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            printf(" %s=%llu", memsvc_state_name((memsvc_state_t)k),
                   (unsigned long long)ds->tensors_by_state[k]);
        }
        printf("\n  tensors by kind: ");
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            printf(" %s=%llu", memsvc_kind_name((memsvc_kind_t)k),
                   (unsigned long long)ds->tensors_by_kind[k]);
        }
        printf("\n  pinned %llu (%s); swapped out %s in %llu moves, in %s in %llu; "
               "drops %llu, recomputes %llu\n",
               (unsigned long long)ds->pinned_tensors,
               sim_format_size(ds->pinned_bytes, a, sizeof(a)),
               sim_format_size(ds->swap_out_bytes, b, sizeof(b)), (unsigned long long)ds->swap_outs,
               sim_format_size(ds->swap_in_bytes, c, sizeof(c)), (unsigned long long)ds->swap_ins,
               (unsigned long long)ds->drops, (unsigned long long)ds->recomputes);
        printf("  stalls %llu, stall time %s; refused: %llu out of memory, %llu fragmented\n",
               (unsigned long long)ds->stalls, sim_format_time(ds->stall_ns, a, sizeof(a)),
               (unsigned long long)ds->oom_events, (unsigned long long)ds->fragmented_events);
    }
}

static int cmd_stats(ctl_t *ctl)
{
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    memsvc_status_t status;

    if (st == NULL) {
        fprintf(stderr, "memsvc-ctl: out of memory\n");
        return 1;
    }
    status = memsvc_stats(ctl->conn, st);
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memsvc-ctl: stats: %s\n", memsvc_strerror(status));
        free(st);
        return 1;
    }
    if (ctl->json) {
        stats_json(st);
    } else {
        stats_text(st);
    }
    free(st);
    return 0;
}

typedef struct list_state {
    ctl_t   *ctl;
    unsigned count;
} list_state_t;

static bool list_one(void *arg, const memsvc_tensor_info_t *t)
{
    list_state_t *ls = arg;
    char          sz[32];

    if (ls->ctl->json) {
        printf("%s\n  {\"handle\": %llu, \"key\": ", (ls->count > 0) ? "," : "",
               (unsigned long long)t->handle);
        memsvc_json_string(t->key, stdout);
        printf(", \"size\": %llu, \"kind\": \"%s\", \"state\": \"%s\", \"device\": %u, "
               "\"job\": %u, \"rank\": %u, \"pins\": %u, \"durable\": %s, \"recomputable\": %s, "
               "\"layer\": %d, \"microbatch\": %d, \"expert\": %d, \"stage\": %d, \"step\": %d}",
               (unsigned long long)t->size, memsvc_kind_name(t->kind), memsvc_state_name(t->state),
               t->device, t->job, t->rank, t->pins, t->durable ? "true" : "false",
               t->recomputable ? "true" : "false", t->tags.layer, t->tags.microbatch,
               t->tags.expert, t->tags.stage, t->tags.step);
    } else {
        if (ls->count == 0) {
            printf("%-18s %-5s %-4s %-10s %-10s %-11s %-4s %s\n", "HANDLE", "JOB", "RANK", "SIZE",
                   "KIND", "STATE", "PINS", "KEY");
        }
        printf("0x%-16llx %-5u %-4u %-10s %-10s %-11s %-4u %s%s\n", (unsigned long long)t->handle,
               t->job, t->rank, sim_format_size(t->size, sz, sizeof(sz)), memsvc_kind_name(t->kind),
               memsvc_state_name(t->state), t->pins, t->key, t->durable ? " (durable)" : "");
    }
    ls->count++;
    return true;
}

static int cmd_list(ctl_t *ctl, uint32_t job)
{
    list_state_t    ls = {ctl, 0};
    memsvc_status_t status;

    if (ctl->json) {
        printf("[");
    }
    status = memsvc_list(ctl->conn, job, list_one, &ls);
    if (ctl->json) {
        printf("%s]\n", (ls.count > 0) ? "\n" : "");
    } else if (ls.count == 0) {
        printf("no tensors\n");
    }
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memsvc-ctl: list: %s\n", memsvc_strerror(status));
        return 1;
    }
    return 0;
}

/* ---- --cluster: every node of a cluster file ------------------------------------------------ */

typedef struct cl_node {
    const msd_cluster_node_t *node;
    bool                      reachable;
    char                      error[160];
    memsvc_conn_h             conn;
    memsvc_stats_t           *st;
    memsvc_cluster_info_t     info;
    memsvc_peer_info_t       *peers; /* npeers of them */
    uint32_t                  npeers, cap;
    uint64_t                  hbm_used, hbm_total;
} cl_node_t;

typedef struct cl {
    ctl_t        *ctl;
    msd_cluster_t file;
    cl_node_t    *nodes;
    char        **problems;
    unsigned      nproblems;
} cl_t;

static void cl_problem(cl_t *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cl_problem(cl_t *cl, const char *fmt, ...)
{
    char  **np = realloc(cl->problems, (cl->nproblems + 1) * sizeof(*np));
    va_list ap;

    if (np == NULL) {
        return;
    }
    cl->problems = np;
    va_start(ap, fmt);
    if (vasprintf(&np[cl->nproblems], fmt, ap) >= 0) {
        cl->nproblems++;
    }
    va_end(ap);
}

static bool cl_peer_cb(void *arg, const memsvc_peer_info_t *peer)
{
    cl_node_t *n = arg;

    if (n->npeers == n->cap) {
        uint32_t            cap = (n->cap == 0) ? 16 : 2 * n->cap;
        memsvc_peer_info_t *np  = realloc(n->peers, cap * sizeof(*np));

        if (np == NULL) {
            return false;
        }
        n->peers = np;
        n->cap   = cap;
    }
    n->peers[n->npeers++] = *peer;
    return true;
}

/* Connect to one node and read its stats and peer table; what is wrong goes to problems. */
static void cl_query(cl_t *cl, cl_node_t *n)
{
    memsvc_conn_params_t p = {0};
    memsvc_status_t      status;
    uint32_t             i, d;

    p.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_FLAGS |
                   MEMSVC_CONN_FIELD_TIMEOUT_MS | MEMSVC_CONN_FIELD_NAME;
    p.address    = n->node->addr;
    p.flags      = MEMSVC_CONN_CONTROL;
    p.timeout_ms = cl->ctl->timeout_ms;
    p.name       = "memsvc-ctl";
    status       = memsvc_connect(&p, &n->conn);
    if (status != MEMSVC_OK) {
        snprintf(n->error, sizeof(n->error), "cannot connect: %s", memsvc_strerror(status));
        cl_problem(cl, "%s (%s): unreachable: %s", n->node->name, n->node->addr,
                   memsvc_strerror(status));
        n->conn = NULL;
        return;
    }
    n->st  = calloc(1, sizeof(*n->st));
    status = (n->st == NULL) ? MEMSVC_ERR_NO_RESOURCE : memsvc_stats(n->conn, n->st);
    if (status == MEMSVC_OK) {
        status = memsvc_peers(n->conn, &n->info, cl_peer_cb, n);
    }
    if (status != MEMSVC_OK) {
        snprintf(n->error, sizeof(n->error), "stats: %s", memsvc_strerror(status));
        cl_problem(cl, "%s (%s): %s", n->node->name, n->node->addr, n->error);
        return;
    }
    n->reachable = true;
    for (d = 0; d < n->st->num_devices; d++) {
        n->hbm_used += n->st->dev[d].allocated;
        n->hbm_total += n->st->dev[d].capacity;
    }
    if (n->info.node[0] == '\0') {
        cl_problem(cl, "%s (%s): runs without --cluster", n->node->name, n->node->addr);
        return;
    }
    if (strcmp(n->info.node, n->node->name) != 0) {
        cl_problem(cl, "%s (%s): the daemon there is node '%s'", n->node->name, n->node->addr,
                   n->info.node);
    }
    if (strcmp(n->info.cluster_hash, cl->file.hash_hex) != 0) {
        cl_problem(cl, "%s: its cluster file differs from %s", n->node->name, cl->ctl->cluster);
    }
    for (i = 0; i < n->npeers; i++) {
        const memsvc_peer_info_t *pi = &n->peers[i];

        if (pi->state != MEMSVC_PEER_UP) {
            cl_problem(cl, "%s sees %s %s%s%s", n->node->name, pi->name,
                       memsvc_peer_state_name(pi->state), (pi->reason[0] != '\0') ? ": " : "",
                       pi->reason);
        }
    }
}

/* Node a's view of node b ("-" for itself, "?" when a was not reached or does not list b). */
static const char *cl_view(const cl_node_t *a, const char *b)
{
    uint32_t i;

    if (strcmp(a->node->name, b) == 0) {
        return "-";
    }
    for (i = 0; a->reachable && (i < a->npeers); i++) {
        if (strcmp(a->peers[i].name, b) == 0) {
            return memsvc_peer_state_name(a->peers[i].state);
        }
    }
    return "?";
}

static void cl_text(cl_t *cl)
{
    char     a[32], b[32], c[32], e[32], f[32];
    unsigned i, j, up, w = 4;

    printf("cluster %s: %u nodes, hash %.16s...\n", cl->ctl->cluster, cl->file.n,
           cl->file.hash_hex);
    for (i = 0; i < cl->file.n; i++) {
        w = (strlen(cl->file.nodes[i].name) > w) ? (unsigned)strlen(cl->file.nodes[i].name) : w;
    }
    printf("%-*s  %-21s %-9s %-8s %-23s %-23s %-8s %s\n", (int)w, "NODE", "ADDRESS", "REACHABLE",
           "PEERS UP", "HBM USED / TOTAL", "HOST USED / TOTAL", "SESSIONS", "UPTIME");
    for (i = 0; i < cl->file.n; i++) {
        const cl_node_t *n = &cl->nodes[i];
        char             hbm[48], host[48], peers[16];

        if (!n->reachable) {
            printf("%-*s  %-21s %-9s %s\n", (int)w, n->node->name, n->node->addr, "no", n->error);
            continue;
        }
        for (j = 0, up = 0; j < n->npeers; j++) {
            up += (n->peers[j].state == MEMSVC_PEER_UP) ? 1 : 0;
        }
        snprintf(peers, sizeof(peers), "%u/%u", up, n->npeers);
        snprintf(hbm, sizeof(hbm), "%s / %s", sim_format_size(n->hbm_used, a, sizeof(a)),
                 sim_format_size(n->hbm_total, b, sizeof(b)));
        snprintf(host, sizeof(host), "%s / %s", sim_format_size(n->st->host_used, c, sizeof(c)),
                 sim_format_size(n->st->host_capacity, e, sizeof(e)));
        printf("%-*s  %-21s %-9s %-8s %-23s %-23s %-8llu %s\n", (int)w, n->node->name,
               n->node->addr, "yes", peers, hbm, host, (unsigned long long)n->st->sessions,
               sim_format_time(n->st->uptime_ns, f, sizeof(f)));
    }
    printf("\npeer states, as the node of each row sees the node of each column:\n%-*s ", (int)w,
           "");
    for (j = 0; j < cl->file.n; j++) {
        printf(" %-10s", cl->file.nodes[j].name);
    }
    printf("\n");
    for (i = 0; i < cl->file.n; i++) {
        printf("%-*s ", (int)w, cl->file.nodes[i].name);
        for (j = 0; j < cl->file.n; j++) {
            printf(" %-10s", cl_view(&cl->nodes[i], cl->file.nodes[j].name));
        }
        printf("\n");
    }
}

static void cl_json(cl_t *cl)
{
    unsigned i, j;

    printf("{\"cluster\": ");
    memsvc_json_string(cl->ctl->cluster, stdout);
    printf(", \"hash\": \"%s\", \"healthy\": %s,\n \"nodes\": [", cl->file.hash_hex,
           (cl->nproblems == 0) ? "true" : "false");
    for (i = 0; i < cl->file.n; i++) {
        const cl_node_t *n = &cl->nodes[i];

        printf("%s\n  {\"name\": ", (i > 0) ? "," : "");
        memsvc_json_string(n->node->name, stdout);
        printf(", \"address\": ");
        memsvc_json_string(n->node->addr, stdout);
        printf(", \"reachable\": %s", n->reachable ? "true" : "false");
        if (!n->reachable) {
            printf(", \"error\": ");
            memsvc_json_string(n->error, stdout);
            printf("}");
            continue;
        }
        printf(", \"member\": ");
        memsvc_json_string(n->info.node, stdout);
        printf(", \"cluster_hash\": \"%s\", \"boot_id\": \"%016llx\", \"hbm_used\": %llu, "
               "\"hbm_total\": %llu, \"host_used\": %llu, \"host_total\": %llu, "
               "\"sessions\": %llu, \"uptime_ns\": %llu, \"live_tensors\": %llu,\n   \"peers\": [",
               n->info.cluster_hash, (unsigned long long)n->info.boot_id,
               (unsigned long long)n->hbm_used, (unsigned long long)n->hbm_total,
               (unsigned long long)n->st->host_used, (unsigned long long)n->st->host_capacity,
               (unsigned long long)n->st->sessions, (unsigned long long)n->st->uptime_ns,
               (unsigned long long)n->st->live_tensors);
        for (j = 0; j < n->npeers; j++) {
            const memsvc_peer_info_t *p = &n->peers[j];

            printf("%s\n    {\"name\": ", (j > 0) ? "," : "");
            memsvc_json_string(p->name, stdout);
            printf(", \"state\": \"%s\", \"reason\": ", memsvc_peer_state_name(p->state));
            memsvc_json_string(p->reason, stdout);
            if (p->heard_ago_ns == UINT64_MAX) {
                printf(", \"heard_ago_ns\": null");
            } else {
                printf(", \"heard_ago_ns\": %llu", (unsigned long long)p->heard_ago_ns);
            }
            printf(", \"state_age_ns\": %llu, \"boot_id\": \"%016llx\", \"restarts\": %llu, "
                   "\"hbm_used\": %llu, \"hbm_total\": %llu, \"host_used\": %llu, "
                   "\"host_total\": %llu, \"sessions\": %llu, \"uptime_ns\": %llu}",
                   (unsigned long long)p->state_age_ns, (unsigned long long)p->boot_id,
                   (unsigned long long)p->restarts, (unsigned long long)p->hbm_used,
                   (unsigned long long)p->hbm_total, (unsigned long long)p->host_used,
                   (unsigned long long)p->host_total, (unsigned long long)p->sessions,
                   (unsigned long long)p->uptime_ns);
        }
        printf("%s]}", (n->npeers > 0) ? "\n   " : "");
    }
    printf("\n ],\n \"problems\": [");
    for (i = 0; i < cl->nproblems; i++) {
        printf("%s", (i > 0) ? ", " : "");
        memsvc_json_string(cl->problems[i], stdout);
    }
    printf("]}\n");
}

/* list --cluster: the tensors of every node that answers. */
static int cl_list(cl_t *cl, uint32_t job)
{
    memsvc_status_t status;
    unsigned        i;
    int             rc = 0;

    if (cl->ctl->json) {
        printf("{\"cluster\": ");
        memsvc_json_string(cl->ctl->cluster, stdout);
        printf(", \"nodes\": [");
    }
    for (i = 0; i < cl->file.n; i++) {
        const cl_node_t *n  = &cl->nodes[i];
        list_state_t     ls = {cl->ctl, 0};

        if (cl->ctl->json) {
            printf("%s\n {\"name\": ", (i > 0) ? "," : "");
            memsvc_json_string(n->node->name, stdout);
            printf(", \"reachable\": %s", n->reachable ? "true" : "false");
        } else {
            printf("%s== %s (%s)%s\n", (i > 0) ? "\n" : "", n->node->name, n->node->addr,
                   n->reachable ? "" : ": unreachable");
        }
        if (!n->reachable) {
            printf("%s", cl->ctl->json ? "}" : "");
            rc = 1;
            continue;
        }
        printf("%s", cl->ctl->json ? ", \"tensors\": [" : "");
        status = memsvc_list(n->conn, job, list_one, &ls);
        if (cl->ctl->json) {
            printf("%s]}", (ls.count > 0) ? "\n" : "");
        } else if (ls.count == 0) {
            printf("no tensors\n");
        }
        if (status != MEMSVC_OK) {
            fprintf(stderr, "memsvc-ctl: list on %s: %s\n", n->node->name, memsvc_strerror(status));
            rc = 1;
        }
    }
    if (cl->ctl->json) {
        printf("\n]}\n");
    }
    return rc;
}

static int cmd_cluster(ctl_t *ctl, const char *cmd, uint32_t job)
{
    cl_t            cl = {.ctl = ctl};
    memsvc_status_t status;
    char            err[512];
    unsigned        i;
    int             rc = 0;

    status = msd_cluster_load(ctl->cluster, &cl.file, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memsvc-ctl: --cluster: %s\n", err);
        return 2;
    }
    cl.nodes = calloc(cl.file.n, sizeof(*cl.nodes));
    if (cl.nodes == NULL) {
        fprintf(stderr, "memsvc-ctl: out of memory\n");
        msd_cluster_free(&cl.file);
        return 1;
    }
    for (i = 0; i < cl.file.n; i++) {
        cl.nodes[i].node = &cl.file.nodes[i];
        cl_query(&cl, &cl.nodes[i]);
    }
    if (strcmp(cmd, "list") == 0) {
        rc = cl_list(&cl, job);
    } else if (ctl->json) {
        cl_json(&cl);
    } else {
        cl_text(&cl);
        if (strcmp(cmd, "health") == 0) {
            printf("\n%s\n", (cl.nproblems == 0) ? "healthy: every node answers and sees every "
                                                   "peer up"
                                                 : "NOT healthy:");
        } else if (cl.nproblems > 0) {
            printf("\nproblems:\n");
        }
        for (i = 0; i < cl.nproblems; i++) {
            printf("  %s\n", cl.problems[i]);
        }
    }
    if ((strcmp(cmd, "health") == 0) && (cl.nproblems > 0)) {
        rc = 1;
    }
    for (i = 0; i < cl.file.n; i++) {
        if (cl.nodes[i].conn != NULL) {
            memsvc_close(cl.nodes[i].conn);
        }
        free(cl.nodes[i].st);
        free(cl.nodes[i].peers);
    }
    for (i = 0; i < cl.nproblems; i++) {
        free(cl.problems[i]);
    }
    free(cl.problems);
    free(cl.nodes);
    msd_cluster_free(&cl.file);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"address", required_argument, NULL, 'a'},
                                         {"cluster", required_argument, NULL, 'c'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    ctl_t                      ctl    = {.address = "127.0.0.1:13337", .timeout_ms = 5000};
    memsvc_conn_params_t       p      = {0};
    memsvc_status_t            status;
    const char                *cmd, *env = getenv("MEMSVC_ADDR");
    uint32_t                   job = UINT32_MAX;
    char                      *end;
    int                        c, rc;

    if ((env != NULL) && (*env != '\0')) {
        ctl.address = env;
    }
    while ((c = getopt_long(argc, argv, "a:t:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            ctl.address = optarg;
            break;
        case 'c':
            ctl.cluster = optarg;
            break;
        case 't':
            ctl.timeout_ms = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'j':
            ctl.json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    cmd = argv[optind];
    if ((strcmp(cmd, "list") == 0) && (optind + 1 < argc)) {
        job = (uint32_t)strtoul(argv[optind + 1], &end, 10);
        if (*end != '\0') {
            fprintf(stderr, "memsvc-ctl: list: '%s' is not a job number\n", argv[optind + 1]);
            return 2;
        }
    } else if ((strcmp(cmd, "ping") != 0) && (strcmp(cmd, "stats") != 0) &&
               (strcmp(cmd, "list") != 0) && (strcmp(cmd, "health") != 0)) {
        fprintf(stderr, "memsvc-ctl: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    if ((ctl.cluster == NULL) && (strcmp(cmd, "health") == 0)) {
        fprintf(stderr, "memsvc-ctl: health needs --cluster FILE\n");
        return 2;
    }
    if ((ctl.cluster != NULL) && (strcmp(cmd, "ping") == 0)) {
        fprintf(stderr, "memsvc-ctl: with --cluster: stats, list or health\n");
        return 2;
    }
    if (ctl.cluster != NULL) {
        ctl.timeout_ms = (ctl.timeout_ms > 0) ? ctl.timeout_ms : 5000;
        return cmd_cluster(&ctl, cmd, job);
    }
    p.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_FLAGS |
                   MEMSVC_CONN_FIELD_TIMEOUT_MS | MEMSVC_CONN_FIELD_NAME;
    p.address    = ctl.address;
    p.job        = 0;
    p.flags      = MEMSVC_CONN_CONTROL;
    p.timeout_ms = (ctl.timeout_ms > 0) ? ctl.timeout_ms : 5000;
    p.name       = "memsvc-ctl";
    status       = memsvc_connect(&p, &ctl.conn);
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memsvc-ctl: cannot reach memsvcd at %s: %s\n", ctl.address,
                memsvc_strerror(status));
        return 1;
    }
    if (strcmp(cmd, "ping") == 0) {
        rc = cmd_ping(&ctl);
    } else if (strcmp(cmd, "stats") == 0) {
        rc = cmd_stats(&ctl);
    } else {
        rc = cmd_list(&ctl, job);
    }
    memsvc_close(ctl.conn);
    return rc;
}
