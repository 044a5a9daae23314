/* memsvc-ctl.c - look at a running memsvcd: ping, stats, jobs, list, watch (text or --json),
 * evict, as a control session; or at every daemon of a cluster file at once (--cluster) */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "memsvc/msd_peer.h"
#include "sim_npu/sim_desc.h"
#include "tools/version.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct ctl {
    const char   *cluster; /* --cluster FILE */
    const char   *address;
    uint32_t      timeout_ms;
    bool          json;
    uint32_t      job;      /* --job: UINT32_MAX when not given */
    double        interval; /* watch: seconds between refreshes */
    unsigned long count;    /* watch: refreshes (0: until interrupted) */
    memsvc_conn_h conn;
} ctl_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: memsvc-ctl [--address HOST:PORT] [--timeout MS] [--json] COMMAND\n"
            "       memsvc-ctl --cluster FILE [--timeout MS] [--json] stats|list|health\n"
            "\n"
            "  ping             round trip to the daemon\n"
            "  stats [--job N]  per device and pool: allocated, reserved, largest free block,\n"
            "                   fragmentation, tensors by state and kind, swaps, stalls;\n"
            "                   sessions and transport; with --job, that job's ranks\n"
            "  jobs             every job and rank holding tensors: counts and bytes by place\n"
            "  list [JOB]       tensors of a job (default: all jobs)\n"
            "  watch [--interval S] [--count N] [--job N]\n"
            "                   stats every S seconds (default 2) with rates since the last\n"
            "                   refresh; redrawn on a terminal, a block per refresh otherwise;\n"
            "                   N refreshes (default: until interrupted)\n"
            "  health           (--cluster) exit 0 when every node answers and sees every\n"
            "                   peer up, else 1 and the problems\n"
            "  evict SESSION    close a session (an id from stats) as if its process had died:\n"
            "                   its pins are released (a stopped or hung client)\n"
            "\n"
            "  --address HOST:PORT  the daemon (default $MEMSVC_ADDR, else 127.0.0.1:13337)\n"
            "  --timeout MS     give up on an answer after MS milliseconds (default 5000)\n"
            "  --json           machine-readable output (ping, stats, jobs, list)\n"
            "  --version        print the version and exit\n"
            "\n"
            "--cluster FILE: every node of the cluster file (docs/cluster.md) as one table:\n"
            "reachable, HBM and host use, and the state of each peer as each node sees it\n"
            "(stats, list, health).\n"
            "\n"
            "Exit status: 0 done, 1 the daemon could not be reached or refused, 2 usage error.\n");
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
    printf("  \"durable_tensors\": %llu, \"durable_bytes\": %llu, \"durable_recovered\": %llu, "
           "\"durable_corrupt\": %llu,\n",
           (unsigned long long)st->durable_tensors, (unsigned long long)st->durable_bytes,
           (unsigned long long)st->durable_recovered, (unsigned long long)st->durable_corrupt);
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
    printf("\n  ],\n  \"limits\": {\"sessions_refused\": %llu, \"handshake_timeouts\": %llu, "
           "\"overloads\": %llu, \"deferred\": %llu, \"evictions\": %llu},\n  \"pin_tables\": "
           "{\"fast_acquires\": %llu, \"published\": %llu, \"revoked\": %llu, \"held\": %llu},"
           "\n  \"jobs\": [",
           (unsigned long long)st->sessions_refused, (unsigned long long)st->handshake_timeouts,
           (unsigned long long)st->overloads, (unsigned long long)st->deferred,
           (unsigned long long)st->evictions, (unsigned long long)st->fast_acquires,
           (unsigned long long)st->fast_published, (unsigned long long)st->fast_revoked,
           (unsigned long long)st->fast_held);
    for (k = 0; k < st->num_jobs; k++) {
        const memsvc_job_stats_t *j = &st->job[k];

        printf("%s\n    {\"job\": %u, \"tensors\": %llu, \"hbm_bytes\": %llu, "
               "\"host_bytes\": %llu, \"disk_bytes\": %llu, \"inflight_bytes\": %llu, "
               "\"quota_refused\": %llu}",
               (k > 0) ? "," : "", j->job, (unsigned long long)j->tensors,
               (unsigned long long)j->hbm_bytes, (unsigned long long)j->host_bytes,
               (unsigned long long)j->disk_bytes, (unsigned long long)j->inflight_bytes,
               (unsigned long long)j->quota_refused);
    }
    printf("\n  ],\n  \"session_list\": [");
    for (k = 0; k < st->num_sessions; k++) {
        const memsvc_session_stats_t *x = &st->session[k];

        printf("%s\n    {\"id\": %llu, \"job\": %u, \"rank\": %u, \"device\": %u, "
               "\"pid\": %u, \"bound\": %s, \"control\": %s, \"local\": %s, \"pins\": %llu, "
               "\"oldest_pin_ns\": %llu, \"idle_ns\": %llu, \"inflight_bytes\": %llu, "
               "\"queued\": %llu, \"requests\": %llu, \"errors\": %llu}",
               (k > 0) ? "," : "", (unsigned long long)x->id, x->job, x->rank, x->device, x->pid,
               (x->flags & MEMSVC_SESSION_BOUND) ? "true" : "false",
               (x->flags & MEMSVC_SESSION_CONTROL) ? "true" : "false",
               (x->flags & MEMSVC_SESSION_LOCAL) ? "true" : "false", (unsigned long long)x->pins,
               (unsigned long long)x->oldest_pin_ns, (unsigned long long)x->idle_ns,
               (unsigned long long)x->inflight_bytes, (unsigned long long)x->queued,
               (unsigned long long)x->requests, (unsigned long long)x->errors);
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
    printf("durable state: %llu tensors (%s) kept across restarts; at start %llu recovered, "
           "%llu corrupt (not served)\n",
           (unsigned long long)st->durable_tensors, sim_format_size(st->durable_bytes, a, sizeof(a)),
           (unsigned long long)st->durable_recovered, (unsigned long long)st->durable_corrupt);
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
    printf("limits: %llu connections refused, %llu handshake timeouts, %llu overloads, "
           "%llu messages deferred, %llu evictions\n",
           (unsigned long long)st->sessions_refused, (unsigned long long)st->handshake_timeouts,
           (unsigned long long)st->overloads, (unsigned long long)st->deferred,
           (unsigned long long)st->evictions);
    printf("pin tables: %llu acquires without a message, %llu slots published, %llu revoked "
           "before a move, %llu moves refused (held by a client)\n",
           (unsigned long long)st->fast_acquires, (unsigned long long)st->fast_published,
           (unsigned long long)st->fast_revoked, (unsigned long long)st->fast_held);
    for (k = 0; k < st->num_jobs; k++) {
        const memsvc_job_stats_t *j = &st->job[k];

        printf("job %u: %llu tensors, HBM %s, host %s, disk %s, in flight %s, %llu refused by "
               "quota\n",
               j->job, (unsigned long long)j->tensors, sim_format_size(j->hbm_bytes, a, sizeof(a)),
               sim_format_size(j->host_bytes, b, sizeof(b)),
               sim_format_size(j->disk_bytes, c, sizeof(c)),
               sim_format_size(j->inflight_bytes, e, sizeof(e)), (unsigned long long)j->quota_refused);
    }
    for (k = 0; k < st->num_sessions; k++) {
        const memsvc_session_stats_t *x = &st->session[k];

        printf("session %llu: %s job %u rank %u device %u%s pid %u: %llu pins (oldest %s), idle "
               "%s, %s in flight, %llu queued, %llu requests, %llu errors\n",
               (unsigned long long)x->id,
               !(x->flags & MEMSVC_SESSION_BOUND)     ? "(no HELLO yet)"
               : (x->flags & MEMSVC_SESSION_CONTROL) ? "control"
                                                     : "trainer",
               x->job, x->rank, x->device, (x->flags & MEMSVC_SESSION_LOCAL) ? " local" : " tcp",
               x->pid, (unsigned long long)x->pins, sim_format_time(x->oldest_pin_ns, a, sizeof(a)),
               sim_format_time(x->idle_ns, b, sizeof(b)),
               sim_format_size(x->inflight_bytes, c, sizeof(c)), (unsigned long long)x->queued,
               (unsigned long long)x->requests, (unsigned long long)x->errors);
    }
}

static int cmd_evict(ctl_t *ctl, uint64_t session)
{
    memsvc_status_t status = memsvc_evict(ctl->conn, session);

    if (status != MEMSVC_OK) {
        fprintf(stderr, "memsvc-ctl: evict %llu: %s\n", (unsigned long long)session,
                (status == MEMSVC_ERR_NOT_FOUND) ? "no such live session (memsvc-ctl stats)"
                                                 : memsvc_strerror(status));
        return 1;
    }
    if (ctl->json) {
        printf("{\"ok\": true, \"evicted\": %llu}\n", (unsigned long long)session);
    } else {
        printf("session %llu evicted: its pins are released\n", (unsigned long long)session);
    }
    return 0;
}

/* ---- jobs and ranks: aggregated from the tensor list ---------------------------------------- */

typedef struct rank_use {
    uint32_t job, rank;
    uint64_t tensors, durable, pinned;
    uint64_t bytes[MEMSVC_STATE_COUNT];
} rank_use_t;

typedef struct rank_table {
    rank_use_t *rows;
    size_t      n, cap;
    bool        oom;
} rank_table_t;

static bool rank_visit(void *arg, const memsvc_tensor_info_t *t)
{
    rank_table_t *tab = arg;
    rank_use_t   *r   = NULL;
    size_t        i;

    for (i = 0; i < tab->n; i++) {
        if ((tab->rows[i].job == t->job) && (tab->rows[i].rank == t->rank)) {
            r = &tab->rows[i];
            break;
        }
    }
    if (r == NULL) {
        if (tab->n == tab->cap) {
            size_t      cap  = (tab->cap == 0) ? 16 : 2 * tab->cap;
            rank_use_t *rows = realloc(tab->rows, cap * sizeof(*rows));

            if (rows == NULL) {
                tab->oom = true;
                return false;
            }
            tab->rows = rows;
            tab->cap  = cap;
        }
        r = &tab->rows[tab->n++];
        memset(r, 0, sizeof(*r));
        r->job  = t->job;
        r->rank = t->rank;
    }
    r->tensors++;
    r->durable += t->durable ? 1 : 0;
    r->pinned += (t->pins > 0) ? 1 : 0;
    if ((unsigned)t->state < MEMSVC_STATE_COUNT) {
        r->bytes[t->state] += t->size;
    }
    return true;
}

static int rank_cmp(const void *a, const void *b)
{
    const rank_use_t *x = a, *y = b;

    if (x->job != y->job) {
        return (x->job < y->job) ? -1 : 1;
    }
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* Usage per (job, rank) of one job or all (UINT32_MAX). */
static int ranks_get(ctl_t *ctl, uint32_t job, rank_table_t *tab)
{
    memsvc_status_t status;

    memset(tab, 0, sizeof(*tab));
    status = memsvc_list(ctl->conn, job, rank_visit, tab);
    if ((status != MEMSVC_OK) || tab->oom) {
        fprintf(stderr, "memsvc-ctl: listing tensors: %s\n",
                tab->oom ? "out of memory" : memsvc_strerror(status));
        free(tab->rows);
        return 1;
    }
    qsort(tab->rows, tab->n, sizeof(tab->rows[0]), rank_cmp);
    return 0;
}

static void ranks_print(const rank_table_t *tab)
{
    char   a[32], b[32], c[32], d[32], e[32], g[32];
    size_t i;

    if (tab->n == 0) {
        printf("no tensors\n");
        return;
    }
    printf("%-6s %-5s %8s %10s %10s %10s %10s %10s %10s %7s %7s\n", "JOB", "RANK", "TENSORS",
           "ON_DEVICE", "MOVING", "ON_HOST", "ON_DISK", "ON_PEER", "DROPPED", "DURABLE",
           "PINNED");
    for (i = 0; i < tab->n; i++) {
        const rank_use_t *r = &tab->rows[i];

        printf("%-6u %-5u %8llu %10s %10s %10s %10s %10s %10s %7llu %7llu\n", r->job, r->rank,
               (unsigned long long)r->tensors,
               sim_format_size(r->bytes[MEMSVC_STATE_ON_DEVICE], a, sizeof(a)),
               sim_format_size(r->bytes[MEMSVC_STATE_MOVING_OUT] + r->bytes[MEMSVC_STATE_MOVING_IN],
                               b, sizeof(b)),
               sim_format_size(r->bytes[MEMSVC_STATE_ON_HOST], c, sizeof(c)),
               sim_format_size(r->bytes[MEMSVC_STATE_ON_DISK], d, sizeof(d)),
               sim_format_size(r->bytes[MEMSVC_STATE_ON_PEER], g, sizeof(g)),
               sim_format_size(r->bytes[MEMSVC_STATE_DROPPED], e, sizeof(e)),
               (unsigned long long)r->durable, (unsigned long long)r->pinned);
    }
}

static void ranks_json(const rank_table_t *tab)
{
    size_t   i;
    unsigned k;

    printf("[");
    for (i = 0; i < tab->n; i++) {
        const rank_use_t *r = &tab->rows[i];

        printf("%s\n  {\"job\": %u, \"rank\": %u, \"tensors\": %llu, \"durable\": %llu, "
               "\"pinned\": %llu, \"bytes_by_state\": {",
               (i > 0) ? "," : "", r->job, r->rank, (unsigned long long)r->tensors,
               (unsigned long long)r->durable, (unsigned long long)r->pinned);
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            printf("%s\"%s\": %llu", (k > 0) ? ", " : "", memsvc_state_name((memsvc_state_t)k),
                   (unsigned long long)r->bytes[k]);
        }
        printf("}}");
    }
    printf("%s]\n", (tab->n > 0) ? "\n" : "");
}

static int cmd_jobs(ctl_t *ctl)
{
    rank_table_t tab;

    if (ranks_get(ctl, UINT32_MAX, &tab) != 0) {
        return 1;
    }
    if (ctl->json) {
        ranks_json(&tab);
    } else {
        ranks_print(&tab);
    }
    free(tab.rows);
    return 0;
}

/* stats; with --job, that job's ranks (in JSON: {"stats": {...}, "ranks": [...]}). */
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
        printf("%s", (ctl->job != UINT32_MAX) ? "{\"stats\": " : "");
        stats_json(st);
    } else {
        stats_text(st);
    }
    free(st);
    if (ctl->job != UINT32_MAX) {
        rank_table_t tab;

        if (ranks_get(ctl, ctl->job, &tab) != 0) {
            return 1;
        }
        if (ctl->json) {
            printf(", \"ranks\": ");
            ranks_json(&tab);
            printf("}\n");
        } else {
            printf("job %u:\n", ctl->job);
            ranks_print(&tab);
        }
        free(tab.rows);
    }
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

/* ---- watch ---------------------------------------------------------------------------------- */

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Sum over devices of a per-device counter. */
#define DEV_SUM(st, field, out)                                                                \
    do {                                                                                       \
        unsigned d_;                                                                           \
        (out) = 0;                                                                             \
        for (d_ = 0; d_ < (st)->num_devices; d_++) {                                           \
            (out) += (st)->dev[d_].field;                                                      \
        }                                                                                      \
    } while (0)

static void watch_rates(const memsvc_stats_t *prev, const memsvc_stats_t *st, double dt)
{
    uint64_t so0, so1, si0, si1, dr0, dr1, rc0, rc1;
    char     a[32], b[32];
    uint64_t sob0, sob1, sib0, sib1;

    DEV_SUM(prev, swap_outs, so0);
    DEV_SUM(st, swap_outs, so1);
    DEV_SUM(prev, swap_ins, si0);
    DEV_SUM(st, swap_ins, si1);
    DEV_SUM(prev, swap_out_bytes, sob0);
    DEV_SUM(st, swap_out_bytes, sob1);
    DEV_SUM(prev, swap_in_bytes, sib0);
    DEV_SUM(st, swap_in_bytes, sib1);
    DEV_SUM(prev, drops, dr0);
    DEV_SUM(st, drops, dr1);
    DEV_SUM(prev, recomputes, rc0);
    DEV_SUM(st, recomputes, rc1);
    printf("rates over %.1f s: %.1f requests/s, %.1f errors/s, swap-out %.1f/s (%s/s), "
           "swap-in %.1f/s (%s/s), drops %.1f/s, recomputes %.1f/s\n",
           dt, (double)(st->requests - prev->requests) / dt,
           (double)(st->errors - prev->errors) / dt, (double)(so1 - so0) / dt,
           sim_format_size((uint64_t)((double)(sob1 - sob0) / dt), a, sizeof(a)),
           (double)(si1 - si0) / dt,
           sim_format_size((uint64_t)((double)(sib1 - sib0) / dt), b, sizeof(b)),
           (double)(dr1 - dr0) / dt, (double)(rc1 - rc0) / dt);
}

static int cmd_watch(ctl_t *ctl)
{
    memsvc_stats_t *st = calloc(2, sizeof(*st)), *cur, *prev;
    memsvc_status_t status;
    bool            tty = isatty(STDOUT_FILENO);
    unsigned long   i;
    double          t_prev = 0, t;
    char            stamp[32];
    time_t          now;
    rank_table_t    tab;
    int             rc = 0;

    if (st == NULL) {
        fprintf(stderr, "memsvc-ctl: out of memory\n");
        return 1;
    }
    for (i = 0; (ctl->count == 0) || (i < ctl->count); i++) {
        cur    = &st[i % 2];
        prev   = &st[(i + 1) % 2];
        status = memsvc_stats(ctl->conn, cur);
        t      = mono_s();
        if (status != MEMSVC_OK) {
            fprintf(stderr, "memsvc-ctl: watch: %s\n", memsvc_strerror(status));
            rc = 1;
            break;
        }
        now = time(NULL);
        strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&now));
        if (tty) {
            printf("\033[H\033[2J"); /* home, clear: redraw in place like top */
        } else if (i > 0) {
            printf("\n");
        }
        printf("--- memsvcd at %s, %s (every %.1f s)\n", ctl->address, stamp, ctl->interval);
        stats_text(cur);
        if (i > 0) {
            watch_rates(prev, cur, t - t_prev);
        }
        if ((ctl->job != UINT32_MAX) && (ranks_get(ctl, ctl->job, &tab) == 0)) {
            printf("job %u:\n", ctl->job);
            ranks_print(&tab);
            free(tab.rows);
        }
        fflush(stdout);
        t_prev = t;
        if ((ctl->count != 0) && (i + 1 == ctl->count)) {
            break;
        }
        usleep((useconds_t)(ctl->interval * 1e6));
    }
    free(st);
    return rc;
}

/* ---- the command line ------------------------------------------------------------------------ */

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "memsvc-ctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (memsvc-ctl --help)\n");
    return 2;
}

/* A decimal integer in [lo, hi], nothing else. */
static bool parse_uint(const char *arg, unsigned long long lo, unsigned long long hi,
                       unsigned long long *v_p)
{
    char *end;

    if ((*arg < '0') || (*arg > '9')) {
        return false; /* strtoull would take "-5" and " 5" */
    }
    errno = 0;
    *v_p  = strtoull(arg, &end, 10);
    return (errno == 0) && (*end == '\0') && (*v_p >= lo) && (*v_p <= hi);
}

static bool address_ok(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t               len;

    return msp_parse_addr(addr, &ss, &len) == MEMSVC_OK;
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
    if (n->info.targets < n->info.replicas) {
        cl_problem(cl, "%s: %u of %u copies of its durable tensors placed (too few peers up)",
                   n->node->name, n->info.targets, n->info.replicas);
    }
    if (n->info.recovery_wanted > n->info.recovery_restored + n->info.recovery_failed) {
        cl_problem(cl, "%s: recovering from peers: %llu of %llu tensors back", n->node->name,
                   (unsigned long long)n->info.recovery_restored,
                   (unsigned long long)n->info.recovery_wanted);
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
    printf("\nreplication of durable tensors (docs/cluster.md, \"Replication\"):\n");
    printf("%-*s  %-8s %-20s %-10s %-24s %-22s %s\n", (int)w, "NODE", "COPIES", "OWED", "LAG",
           "HELD FOR PEERS", "PEER TIER OUT / HELD", "RECOVERED FROM PEERS");
    for (i = 0; i < cl->file.n; i++) {
        const cl_node_t *n = &cl->nodes[i];
        char             copies[16], owed[48], held[48], rec[64], tier[48], x[32], y[32];

        if (!n->reachable) {
            continue;
        }
        snprintf(copies, sizeof(copies), "%u/%u", n->info.targets, n->info.replicas);
        snprintf(owed, sizeof(owed), "%llu (%s)", (unsigned long long)n->info.owed_tensors,
                 sim_format_size(n->info.owed_bytes, a, sizeof(a)));
        snprintf(held, sizeof(held), "%llu (%s / %s)", (unsigned long long)n->info.held_tensors,
                 sim_format_size(n->info.held_bytes, b, sizeof(b)),
                 sim_format_size(n->info.held_capacity, c, sizeof(c)));
        snprintf(rec, sizeof(rec), "%llu of %llu asked (%s), %llu failed",
                 (unsigned long long)n->info.recovery_restored,
                 (unsigned long long)n->info.recovery_wanted,
                 sim_format_size(n->info.recovery_bytes, e, sizeof(e)),
                 (unsigned long long)n->info.recovery_failed);
        snprintf(tier, sizeof(tier), "%s / %s",
                 sim_format_size(n->info.tier_out_bytes, x, sizeof(x)),
                 sim_format_size(n->info.tier_held_bytes, y, sizeof(y)));
        printf("%-*s  %-8s %-20s %-10s %-24s %-22s %s\n", (int)w, n->node->name, copies, owed,
               (n->info.lag_ns > 0) ? sim_format_time(n->info.lag_ns, f, sizeof(f)) : "-", held,
               tier, rec);
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
               "\"sessions\": %llu, \"uptime_ns\": %llu, \"live_tensors\": %llu,",
               n->info.cluster_hash, (unsigned long long)n->info.boot_id,
               (unsigned long long)n->hbm_used, (unsigned long long)n->hbm_total,
               (unsigned long long)n->st->host_used, (unsigned long long)n->st->host_capacity,
               (unsigned long long)n->st->sessions, (unsigned long long)n->st->uptime_ns,
               (unsigned long long)n->st->live_tensors);
        printf("\n   \"replication\": {\"replicas\": %u, \"targets\": %u, \"rate\": %llu, "
               "\"owed_tensors\": %llu, \"owed_bytes\": %llu, \"lag_ns\": %llu, "
               "\"sent_bytes\": %llu, \"held_tensors\": %llu, \"held_bytes\": %llu, "
               "\"held_capacity\": %llu, \"recovery_wanted\": %llu, \"recovery_restored\": "
               "%llu, \"recovery_bytes\": %llu, \"recovery_failed\": %llu, \"tier_out_tensors\": "
               "%llu, \"tier_out_bytes\": %llu, \"tier_held_tensors\": %llu, "
               "\"tier_held_bytes\": %llu},\n   \"peers\": [",
               n->info.replicas, n->info.targets, (unsigned long long)n->info.repl_rate,
               (unsigned long long)n->info.owed_tensors, (unsigned long long)n->info.owed_bytes,
               (unsigned long long)n->info.lag_ns, (unsigned long long)n->info.sent_bytes,
               (unsigned long long)n->info.held_tensors, (unsigned long long)n->info.held_bytes,
               (unsigned long long)n->info.held_capacity,
               (unsigned long long)n->info.recovery_wanted,
               (unsigned long long)n->info.recovery_restored,
               (unsigned long long)n->info.recovery_bytes,
               (unsigned long long)n->info.recovery_failed,
               (unsigned long long)n->info.tier_out_tensors,
               (unsigned long long)n->info.tier_out_bytes,
               (unsigned long long)n->info.tier_held_tensors,
               (unsigned long long)n->info.tier_held_bytes);
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
                   "\"host_total\": %llu, \"sessions\": %llu, \"uptime_ns\": %llu, "
                   "\"target\": %s, \"acked_tensors\": %llu, \"owed_tensors\": %llu, "
                   "\"owed_bytes\": %llu, \"held_tensors\": %llu, \"held_bytes\": %llu}",
                   (unsigned long long)p->state_age_ns, (unsigned long long)p->boot_id,
                   (unsigned long long)p->restarts, (unsigned long long)p->hbm_used,
                   (unsigned long long)p->hbm_total, (unsigned long long)p->host_used,
                   (unsigned long long)p->host_total, (unsigned long long)p->sessions,
                   (unsigned long long)p->uptime_ns, p->target ? "true" : "false",
                   (unsigned long long)p->acked_tensors, (unsigned long long)p->owed_tensors,
                   (unsigned long long)p->owed_bytes, (unsigned long long)p->held_tensors,
                   (unsigned long long)p->held_bytes);
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
                                         {"cluster", required_argument, NULL, 'K'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"job", required_argument, NULL, 'J'},
                                         {"interval", required_argument, NULL, 'i'},
                                         {"count", required_argument, NULL, 'c'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    ctl_t                      ctl    = {.address  = "127.0.0.1:13337",
                                         .timeout_ms = 5000,
                                         .job      = UINT32_MAX,
                                         .interval = 2.0};
    memsvc_conn_params_t       p      = {0};
    memsvc_status_t            status;
    const char                *cmd, *env = getenv("MEMSVC_ADDR");
    const char                *addr_from = "$MEMSVC_ADDR";
    uint32_t                   job = UINT32_MAX;
    unsigned long long         v;
    bool                       watch_opts = false;
    uint64_t                   sid = 0;
    char                      *end;
    int                        c, rc, nargs;

    if ((env != NULL) && (*env != '\0')) {
        ctl.address = env;
    }
    while ((c = getopt_long(argc, argv, "a:t:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            ctl.address = optarg;
            addr_from   = "--address";
            break;
        case 'K':
            ctl.cluster = optarg;
            break;
        case 't':
            if (!parse_uint(optarg, 1, 3600000, &v)) {
                return usage_error("--timeout: '%s' is not a number of milliseconds (1..3600000)",
                                   optarg);
            }
            ctl.timeout_ms = (uint32_t)v;
            break;
        case 'j':
            ctl.json = true;
            break;
        case 'J':
            if (!parse_uint(optarg, 0, UINT32_MAX - 1, &v)) {
                return usage_error("--job: '%s' is not a job number (0..4294967294)", optarg);
            }
            ctl.job = (uint32_t)v;
            break;
        case 'i':
            ctl.interval = strtod(optarg, &end);
            if ((end == optarg) || (*end != '\0') || !(ctl.interval >= 0.1) ||
                !(ctl.interval <= 3600)) {
                return usage_error("--interval: '%s' is not a number of seconds (0.1..3600)",
                                   optarg);
            }
            watch_opts = true;
            break;
        case 'c':
            if (!parse_uint(optarg, 1, 1000000000ull, &v)) {
                return usage_error("--count: '%s' is not a count (1..1000000000)", optarg);
            }
            ctl.count  = (unsigned long)v;
            watch_opts = true;
            break;
        case 'V':
            tool_print_version("memsvc-ctl");
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default: /* getopt named the option */
            fprintf(stderr, "(memsvc-ctl --help for the options)\n");
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    cmd   = argv[optind];
    nargs = argc - optind - 1;
    if ((strcmp(cmd, "ping") != 0) && (strcmp(cmd, "stats") != 0) && (strcmp(cmd, "list") != 0) &&
        (strcmp(cmd, "jobs") != 0) && (strcmp(cmd, "watch") != 0) &&
        (strcmp(cmd, "health") != 0) && (strcmp(cmd, "evict") != 0)) {
        return usage_error("unknown command '%s'", cmd);
    }
    if (strcmp(cmd, "evict") == 0) {
        if ((nargs != 1) || !parse_uint(argv[optind + 1], 1, UINT64_MAX, &v)) {
            return usage_error("evict: want one session id, not '%s' (memsvc-ctl stats lists them)",
                               (nargs >= 1) ? argv[optind + 1] : "");
        }
        sid = v;
    } else if (nargs > ((strcmp(cmd, "list") == 0) ? 1 : 0)) {
        fprintf(stderr, "memsvc-ctl: %s: unexpected argument '%s' (memsvc-ctl --help)\n", cmd,
                argv[optind + 1 + ((strcmp(cmd, "list") == 0) ? 1 : 0)]);
        return 2;
    }
    if ((strcmp(cmd, "list") == 0) && (nargs == 1)) {
        if (!parse_uint(argv[optind + 1], 0, UINT32_MAX - 1, &v)) {
            return usage_error("list: '%s' is not a job number (0..4294967294)",
                               argv[optind + 1]);
        }
        job = (uint32_t)v;
    }
    if ((ctl.job != UINT32_MAX) && (strcmp(cmd, "stats") != 0) && (strcmp(cmd, "watch") != 0)) {
        return usage_error("--job goes with stats or watch, not %s", cmd);
    }
    if (watch_opts && (strcmp(cmd, "watch") != 0)) {
        return usage_error("--interval and --count go with watch, not %s", cmd);
    }
    if ((strcmp(cmd, "watch") == 0) && ctl.json) {
        return usage_error("%s: no --json output (use stats --json in a loop)", cmd);
    }
    if (!address_ok(ctl.address)) {
        fprintf(stderr, "memsvc-ctl: %s: '%s' is not HOST:PORT (memsvc-ctl --help)\n", addr_from,
                ctl.address);
        return 2;
    }
    if ((ctl.cluster == NULL) && (strcmp(cmd, "health") == 0)) {
        fprintf(stderr, "memsvc-ctl: health needs --cluster FILE\n");
        return 2;
    }
    if ((ctl.cluster != NULL) && (strcmp(cmd, "stats") != 0) && (strcmp(cmd, "list") != 0) &&
        (strcmp(cmd, "health") != 0)) {
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
    p.timeout_ms = ctl.timeout_ms;
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
    } else if (strcmp(cmd, "jobs") == 0) {
        rc = cmd_jobs(&ctl);
    } else if (strcmp(cmd, "watch") == 0) {
        rc = cmd_watch(&ctl);
    } else if (strcmp(cmd, "evict") == 0) {
        rc = cmd_evict(&ctl, sid);
    } else {
        rc = cmd_list(&ctl, job);
    }
    memsvc_close(ctl.conn);
    return rc;
}
