/* memsvc-ctl.c - look at a running memsvcd: ping, stats, list (text or --json), evict, as a
 * control session */
#include "client/memsvc.h"
#include "sim_npu/sim_desc.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ctl {
    const char   *address;
    uint32_t      timeout_ms;
    bool          json;
    memsvc_conn_h conn;
} ctl_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: memsvc-ctl [--address HOST:PORT] [--timeout MS] [--json] COMMAND\n"
            "\n"
            "  ping             round trip to the daemon\n"
            "  stats            per device and pool: allocated, reserved, largest free block,\n"
            "                   fragmentation, tensors by state and kind, swaps, stalls;\n"
            "                   sessions and transport\n"
            "  list [JOB]       tensors of a job (default: all jobs)\n"
            "  evict SESSION    close a session (an id from stats) as if its process had died:\n"
            "                   its pins are released (a stopped or hung client)\n"
            "\n"
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
    printf("\n  ],\n  \"limits\": {\"sessions_refused\": %llu, \"handshake_timeouts\": %llu, "
           "\"overloads\": %llu, \"deferred\": %llu, \"evictions\": %llu},\n  \"jobs\": [",
           (unsigned long long)st->sessions_refused, (unsigned long long)st->handshake_timeouts,
           (unsigned long long)st->overloads, (unsigned long long)st->deferred,
           (unsigned long long)st->evictions);
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

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"address", required_argument, NULL, 'a'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    ctl_t                      ctl    = {.address = "127.0.0.1:13337", .timeout_ms = 5000};
    memsvc_conn_params_t       p      = {0};
    memsvc_status_t            status;
    const char                *cmd, *env = getenv("MEMSVC_ADDR");
    uint32_t                   job = UINT32_MAX;
    uint64_t                   sid = 0;
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
    } else if (strcmp(cmd, "evict") == 0) {
        if ((optind + 1 >= argc) ||
            ((sid = strtoull(argv[optind + 1], &end, 10)), (*end != '\0')) ||
            (argv[optind + 1][0] == '-') || (sid == 0)) {
            fprintf(stderr, "memsvc-ctl: evict: want a session id (memsvc-ctl stats lists them)\n");
            return 2;
        }
    } else if ((strcmp(cmd, "ping") != 0) && (strcmp(cmd, "stats") != 0) &&
               (strcmp(cmd, "list") != 0)) {
        fprintf(stderr, "memsvc-ctl: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
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
    } else if (strcmp(cmd, "evict") == 0) {
        rc = cmd_evict(&ctl, sid);
    } else {
        rc = cmd_list(&ctl, job);
    }
    memsvc_close(ctl.conn);
    return rc;
}
