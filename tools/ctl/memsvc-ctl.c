/* memsvc-ctl.c - look at a running memsvcd: ping, stats, jobs, list, watch (text or --json), as
 * a control session */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "sim_npu/sim_desc.h"
#include "tools/version.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct ctl {
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
            "\n"
            "  --address HOST:PORT  the daemon (default $MEMSVC_ADDR, else 127.0.0.1:13337)\n"
            "  --timeout MS     give up on an answer after MS milliseconds (default 5000)\n"
            "  --json           machine-readable output (ping, stats, jobs, list)\n"
            "  --version        print the version and exit\n"
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
    char   a[32], b[32], c[32], d[32], e[32];
    size_t i;

    if (tab->n == 0) {
        printf("no tensors\n");
        return;
    }
    printf("%-6s %-5s %8s %10s %10s %10s %10s %10s %7s %7s\n", "JOB", "RANK", "TENSORS",
           "ON_DEVICE", "MOVING", "ON_HOST", "ON_DISK", "DROPPED", "DURABLE", "PINNED");
    for (i = 0; i < tab->n; i++) {
        const rank_use_t *r = &tab->rows[i];

        printf("%-6u %-5u %8llu %10s %10s %10s %10s %10s %7llu %7llu\n", r->job, r->rank,
               (unsigned long long)r->tensors,
               sim_format_size(r->bytes[MEMSVC_STATE_ON_DEVICE], a, sizeof(a)),
               sim_format_size(r->bytes[MEMSVC_STATE_MOVING_OUT] + r->bytes[MEMSVC_STATE_MOVING_IN],
                               b, sizeof(b)),
               sim_format_size(r->bytes[MEMSVC_STATE_ON_HOST], c, sizeof(c)),
               sim_format_size(r->bytes[MEMSVC_STATE_ON_DISK], d, sizeof(d)),
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

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"address", required_argument, NULL, 'a'},
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
        (strcmp(cmd, "jobs") != 0) && (strcmp(cmd, "watch") != 0)) {
        return usage_error("unknown command '%s'", cmd);
    }
    if (nargs > ((strcmp(cmd, "list") == 0) ? 1 : 0)) {
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
    } else {
        rc = cmd_list(&ctl, job);
    }
    memsvc_close(ctl.conn);
    return rc;
}
