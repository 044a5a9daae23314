/* msd_metrics.c - memsvcd's Prometheus endpoint (text exposition format 0.0.4, libmicrohttpd) */
#include "client/msp_ucx.h"
#include "memsvc/msd.h"
#include "memsvc/msd_repl.h"
#include "sim_npu/sim_node.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSD_LOG_COMP "metrics"
#include "memsvc/msd_log.h"

/* Upper bounds (seconds) of the request-duration histogram's buckets (+Inf is implicit): the
 * daemon serves most requests in microseconds; a slow one is a stall or a big copy. */
static const double lat_bounds[MSD_LAT_BUCKETS] = {1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5,
                                                   1e-4, 2.5e-4, 1e-3, 1e-2, 1e-1,   1.0};

/* ---- what the request path records (engine lock held) ------------------------------------ */

void msd_metrics_request(msd_server_t *srv, uint32_t op, memsvc_status_t status, uint64_t ns)
{
    msd_metrics_t *m = &srv->metrics;
    unsigned       b;

    op &= ~MSP_OP_ONEWAY;
    if (op < MSD_METRICS_OPS) {
        for (b = 0; (b < MSD_LAT_BUCKETS) && ((double)ns > lat_bounds[b] * 1e9); b++) {
        }
        m->lat[op][b]++; /* per bucket; cumulated when written */
        m->lat_sum_ns[op] += ns;
    }
    if (status < 0) {
        msd_metrics_error(srv, status);
    }
}

void msd_metrics_error(msd_server_t *srv, memsvc_status_t status)
{
    unsigned idx = (unsigned)-status;

    srv->metrics.errors[(idx < MSD_METRICS_STATUSES) ? idx : 0]++;
}

/* ---- a snapshot, taken under the engine lock ---------------------------------------------- */

typedef struct met_job {
    uint32_t job;
    uint64_t tensors, sessions;
    uint64_t bytes[MEMSVC_STATE_COUNT];
} met_job_t;

typedef struct met_snap {
    eng_stats_t     es;
    eng_dev_stats_t dev[MEMSVC_MAX_DEVICES];
    unsigned        ndev;
    uint64_t        uptime_ns, messages, orphans;
    uint64_t        fast[4]; /* pin tables: acquires, published, revoked, held */
    uint64_t        sessions[2]; /* live, bound: [0] tcp, [1] local */
    msd_metrics_t   m;
    met_job_t      *jobs;
    size_t          njobs, capjobs;
    bool                  repl; /* replication on (a cluster member) */
    memsvc_cluster_info_t ci;
} met_snap_t;

static met_job_t *snap_job(met_snap_t *sn, uint32_t job)
{
    met_job_t *j;
    size_t     i;

    for (i = 0; i < sn->njobs; i++) {
        if (sn->jobs[i].job == job) {
            return &sn->jobs[i];
        }
    }
    if (sn->njobs == sn->capjobs) {
        size_t cap = (sn->capjobs == 0) ? 16 : sn->capjobs * 2;

        j = realloc(sn->jobs, cap * sizeof(*j));
        if (j == NULL) {
            return NULL;
        }
        sn->jobs    = j;
        sn->capjobs = cap;
    }
    j = &sn->jobs[sn->njobs++];
    memset(j, 0, sizeof(*j));
    j->job = job;
    return j;
}

static bool snap_tensor(void *arg, const eng_tensor_info_t *info)
{
    met_snap_t *sn = arg;
    met_job_t  *j  = snap_job(sn, info->job);

    if (j != NULL) {
        j->tensors++;
        if ((unsigned)info->state < MEMSVC_STATE_COUNT) {
            j->bytes[info->state] += info->size;
        }
    }
    return true;
}

/* Copy the figures (engine lock held briefly: a walk of the live tensors for the per-job ones). */
static void snap_take(msd_server_t *srv, met_snap_t *sn)
{
    msd_session_t *s;
    unsigned       d;

    msd_lock(srv);
    eng_stats(srv->eng, &sn->es);
    sn->ndev = (sn->es.num_devices < MEMSVC_MAX_DEVICES) ? sn->es.num_devices : MEMSVC_MAX_DEVICES;
    for (d = 0; d < sn->ndev; d++) {
        if (eng_dev_stats(srv->eng, d, &sn->dev[d]) != MEMSVC_OK) {
            memset(&sn->dev[d], 0, sizeof(sn->dev[d]));
        }
    }
    sn->uptime_ns = msp_now_ns() - srv->start_ns;
    sn->messages  = srv->requests;
    sn->orphans   = srv->orphans;
    sn->fast[0]   = srv->fast_acquires; /* as of the last fold (every 10-160 ms) */
    sn->fast[1]   = srv->fast_published;
    sn->fast[2]   = srv->fast_revoked;
    sn->fast[3]   = srv->fast_held;
    sn->m         = srv->metrics;
    sn->repl      = (srv->repl != NULL);
    if (sn->repl) {
        msd_repl_self_info(srv, &sn->ci);
    }
    for (s = srv->sessions; s != NULL; s = s->next) {
        met_job_t *j;

        if (s->dead || !s->bound) {
            continue;
        }
        sn->sessions[s->local ? 1 : 0]++;
        if (!s->control && ((j = snap_job(sn, s->job)) != NULL)) {
            j->sessions++;
        }
    }
    eng_foreach(srv->eng, UINT32_MAX, snap_tensor, sn);
    msd_unlock(srv);
}

/* ---- the text format ---------------------------------------------------------------------- */

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family with one sample per device. */
#define PER_DEV(f, sn, name, type, help, expr)                                                     \
    do {                                                                                           \
        unsigned d_;                                                                               \
        head(f, name, type, help);                                                                 \
        for (d_ = 0; d_ < (sn)->ndev; d_++) {                                                      \
            const eng_dev_stats_t *ds = &(sn)->dev[d_];                                            \
            fprintf(f, "%s{device=\"%u\"} %.17g\n", name, d_, (double)(expr));                     \
        }                                                                                          \
    } while (0)

static void write_devices(FILE *f, const met_snap_t *sn)
{
    unsigned d, k;

    PER_DEV(f, sn, "memsvc_device_hbm_capacity_bytes", "gauge", "HBM of the device.",
            ds->alloc.capacity);
    PER_DEV(f, sn, "memsvc_device_hbm_allocated_bytes", "gauge",
            "HBM bytes in live blocks (tensor sizes).", ds->alloc.allocated);
    PER_DEV(f, sn, "memsvc_device_hbm_reserved_bytes", "gauge",
            "HBM bytes reserved by the allocator (blocks with their rounding).",
            ds->alloc.reserved);
    PER_DEV(f, sn, "memsvc_device_hbm_free_bytes", "gauge", "HBM bytes free.", ds->alloc.free);
    PER_DEV(f, sn, "memsvc_device_hbm_largest_free_bytes", "gauge", "Largest free HBM block.",
            ds->alloc.largest_free);
    PER_DEV(f, sn, "memsvc_device_hbm_fragmentation_ratio", "gauge",
            "1 - largest free block / free bytes (0: one free block).", ds->alloc.fragmentation);
    PER_DEV(f, sn, "memsvc_device_hbm_peak_reserved_bytes", "gauge",
            "Highest HBM reservation since start.", ds->alloc.peak_reserved);
    PER_DEV(f, sn, "memsvc_device_pinned_tensors", "gauge", "Tensors pinned (acquired).",
            ds->pinned_tensors);
    PER_DEV(f, sn, "memsvc_device_pinned_bytes", "gauge", "Bytes of pinned tensors.",
            ds->pinned_bytes);
    head(f, "memsvc_device_tensors", "gauge", "Tensors of the device, by state.");
    for (d = 0; d < sn->ndev; d++) {
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            fprintf(f, "memsvc_device_tensors{device=\"%u\",state=\"%s\"} %llu\n", d,
                    memsvc_state_name((memsvc_state_t)k),
                    (unsigned long long)sn->dev[d].tensors_by_state[k]);
        }
    }
    head(f, "memsvc_device_tensor_bytes", "gauge", "Bytes of the device's tensors, by state.");
    for (d = 0; d < sn->ndev; d++) {
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            fprintf(f, "memsvc_device_tensor_bytes{device=\"%u\",state=\"%s\"} %llu\n", d,
                    memsvc_state_name((memsvc_state_t)k),
                    (unsigned long long)sn->dev[d].bytes_by_state[k]);
        }
    }
    PER_DEV(f, sn, "memsvc_device_swap_outs_total", "counter", "Moves from HBM to host.",
            ds->swap_outs);
    PER_DEV(f, sn, "memsvc_device_swap_out_bytes_total", "counter", "Bytes moved from HBM to host.",
            ds->swap_out_bytes);
    PER_DEV(f, sn, "memsvc_device_swap_ins_total", "counter", "Moves from host or disk to HBM.",
            ds->swap_ins);
    PER_DEV(f, sn, "memsvc_device_swap_in_bytes_total", "counter",
            "Bytes moved from host or disk to HBM.", ds->swap_in_bytes);
    PER_DEV(f, sn, "memsvc_device_prefetches_total", "counter",
            "Swap-ins started ahead of an acquire.", ds->prefetches);
    PER_DEV(f, sn, "memsvc_device_spills_total", "counter", "Moves from host to disk.", ds->spills);
    PER_DEV(f, sn, "memsvc_device_spill_bytes_total", "counter", "Bytes moved from host to disk.",
            ds->spill_bytes);
    PER_DEV(f, sn, "memsvc_device_drops_total", "counter",
            "Recomputable tensors dropped instead of moved.", ds->drops);
    PER_DEV(f, sn, "memsvc_device_recomputes_total", "counter",
            "Acquires answered 'recompute' (the tensor had been dropped).", ds->recomputes);
    PER_DEV(f, sn, "memsvc_device_stalls_total", "counter",
            "Acquires and allocations that waited for room or a move.", ds->stalls);
    PER_DEV(f, sn, "memsvc_device_stall_seconds_total", "counter",
            "Time acquires and allocations waited.", (double)ds->stall_ns / 1e9);
    head(f, "memsvc_device_refusals_total", "counter",
         "Requests refused for lack of HBM, by reason.");
    for (d = 0; d < sn->ndev; d++) {
        fprintf(f, "memsvc_device_refusals_total{device=\"%u\",reason=\"no_memory\"} %llu\n", d,
                (unsigned long long)sn->dev[d].oom_events);
        fprintf(f, "memsvc_device_refusals_total{device=\"%u\",reason=\"fragmented\"} %llu\n", d,
                (unsigned long long)sn->dev[d].fragmented_events);
    }
}

static void write_gauge(FILE *f, const char *name, const char *type, const char *help, double v)
{
    head(f, name, type, help);
    fprintf(f, "%s %.17g\n", name, v);
}

static void write_node(FILE *f, const met_snap_t *sn)
{
    const sim_host_stats_t *h = &sn->es.host;

    head(f, "memsvc_build_info", "gauge", "Version of this memsvcd (always 1).");
    fprintf(f, "memsvc_build_info{version=\"%s\"} 1\n", MEMSVC_VERSION_STRING);
    write_gauge(f, "memsvc_uptime_seconds", "gauge", "Time since the daemon started.",
                (double)sn->uptime_ns / 1e9);
    write_gauge(f, "memsvc_host_capacity_bytes", "gauge", "Host pool size.", (double)h->capacity);
    write_gauge(f, "memsvc_host_used_bytes", "gauge", "Host pool bytes in use.", (double)h->used);
    write_gauge(f, "memsvc_host_peak_bytes", "gauge", "Highest host pool use since start.",
                (double)h->peak);
    write_gauge(f, "memsvc_disk_capacity_bytes", "gauge", "Disk tier size.",
                (double)h->disk_capacity);
    write_gauge(f, "memsvc_disk_used_bytes", "gauge", "Disk tier bytes in use.",
                (double)h->disk_used);
    write_gauge(f, "memsvc_live_tensors", "gauge", "Tensors allocated and not freed.",
                (double)sn->es.live_tensors);
    write_gauge(f, "memsvc_moves_in_flight", "gauge", "Swaps and spills under way.",
                (double)sn->es.moves_in_flight);
    write_gauge(f, "memsvc_kept_durable_tensors", "gauge",
                "Durable tensors of dead clients kept for re-attach.", (double)sn->orphans);
    head(f, "memsvc_sessions", "gauge", "Connected client sessions, by transport.");
    fprintf(f, "memsvc_sessions{transport=\"tcp\"} %llu\n", (unsigned long long)sn->sessions[0]);
    fprintf(f, "memsvc_sessions{transport=\"local\"} %llu\n", (unsigned long long)sn->sessions[1]);
    head(f, "memsvc_sessions_total", "counter",
         "Sessions that completed the handshake, by "
         "transport.");
    fprintf(f, "memsvc_sessions_total{transport=\"tcp\"} %llu\n",
            (unsigned long long)sn->m.sessions[0]);
    fprintf(f, "memsvc_sessions_total{transport=\"local\"} %llu\n",
            (unsigned long long)sn->m.sessions[1]);
    write_gauge(f, "memsvc_request_messages_total", "counter",
                "Request messages received (a message carries one request or a batch).",
                (double)sn->messages);
    write_gauge(f, "memsvc_reloads_total", "counter", "Configuration reloads (SIGHUP).",
                (double)sn->m.reloads);
    write_gauge(f, "memsvc_pin_table_acquires_total", "counter",
                "Acquires local clients made in their pin tables (no message).",
                (double)sn->fast[0]);
    write_gauge(f, "memsvc_pin_table_published_total", "counter",
                "Tensors published in local clients' pin tables.", (double)sn->fast[1]);
    write_gauge(f, "memsvc_pin_table_revoked_total", "counter",
                "Pin table slots revoked before their tensor moved.", (double)sn->fast[2]);
    write_gauge(f, "memsvc_pin_table_held_total", "counter",
                "Moves refused because a client held the tensor in its pin table.",
                (double)sn->fast[3]);
}

/* Replication (docs/cluster.md, "Replication"): only on a cluster member. */
static void write_repl(FILE *f, const met_snap_t *sn)
{
    const memsvc_cluster_info_t *c = &sn->ci;

    if (!sn->repl) {
        return;
    }
    write_gauge(f, "memsvc_repl_copies_wanted", "gauge",
                "Copies of each durable tensor to keep on peers (--replicas).",
                (double)c->replicas);
    write_gauge(f, "memsvc_repl_copies_placed", "gauge", "Peers placed to hold them now.",
                (double)c->targets);
    write_gauge(f, "memsvc_repl_owed_tensors", "gauge",
                "(tensor, holder) versions not yet acknowledged.", (double)c->owed_tensors);
    write_gauge(f, "memsvc_repl_owed_bytes", "gauge", "Bytes of those versions.",
                (double)c->owed_bytes);
    write_gauge(f, "memsvc_repl_lag_seconds", "gauge",
                "Age of the oldest version not yet acknowledged (0: none).",
                (double)c->lag_ns / 1e9);
    write_gauge(f, "memsvc_repl_sent_bytes_total", "counter", "Copy bytes sent to peers.",
                (double)c->sent_bytes);
    write_gauge(f, "memsvc_repl_held_tensors", "gauge", "Copies of peers' tensors kept here.",
                (double)c->held_tensors);
    write_gauge(f, "memsvc_repl_held_bytes", "gauge", "Their bytes.", (double)c->held_bytes);
    write_gauge(f, "memsvc_repl_held_capacity_bytes", "gauge",
                "Room for peers' copies (--replica-bytes).", (double)c->held_capacity);
    write_gauge(f, "memsvc_repl_recovery_wanted_total", "counter",
                "Copies asked back from peers (this node started empty).",
                (double)c->recovery_wanted);
    write_gauge(f, "memsvc_repl_recovery_restored_total", "counter",
                "Of those, restored into the durable state.", (double)c->recovery_restored);
    write_gauge(f, "memsvc_repl_recovery_failed_total", "counter",
                "Of those, lost on the way (link down, checksum, no room).",
                (double)c->recovery_failed);
}

static void write_requests(FILE *f, const met_snap_t *sn)
{
    const char *name = "memsvc_request_duration_seconds";
    unsigned    op, b, st;
    uint64_t    cum;

    head(f, name, "histogram",
         "Time the daemon spent serving a request, by operation (the wait of an acquire for a "
         "move is not included).");
    for (op = 1; op < MSD_METRICS_OPS; op++) {
        for (b = 0, cum = 0; b <= MSD_LAT_BUCKETS; b++) {
            cum += sn->m.lat[op][b];
        }
        if (cum == 0) {
            continue; /* an operation never requested, or none the protocol has */
        }
        for (b = 0, cum = 0; b < MSD_LAT_BUCKETS; b++) {
            cum += sn->m.lat[op][b];
            fprintf(f, "%s_bucket{op=\"%s\",le=\"%g\"} %llu\n", name, msp_op_name(op),
                    lat_bounds[b], (unsigned long long)cum);
        }
        cum += sn->m.lat[op][MSD_LAT_BUCKETS];
        fprintf(f, "%s_bucket{op=\"%s\",le=\"+Inf\"} %llu\n", name, msp_op_name(op),
                (unsigned long long)cum);
        fprintf(f, "%s_sum{op=\"%s\"} %.9f\n", name, msp_op_name(op),
                (double)sn->m.lat_sum_ns[op] / 1e9);
        fprintf(f, "%s_count{op=\"%s\"} %llu\n", name, msp_op_name(op), (unsigned long long)cum);
    }
    head(f, "memsvc_errors_total", "counter", "Error replies, by status.");
    for (st = 1; st < MSD_METRICS_STATUSES; st++) {
        if (sn->m.errors[st] > 0) {
            fprintf(f, "memsvc_errors_total{status=\"%s\"} %llu\n",
                    memsvc_status_name(-(memsvc_status_t)st), (unsigned long long)sn->m.errors[st]);
        }
    }
    if (sn->m.errors[0] > 0) {
        fprintf(f, "memsvc_errors_total{status=\"other\"} %llu\n",
                (unsigned long long)sn->m.errors[0]);
    }
}

static void write_jobs(FILE *f, const met_snap_t *sn)
{
    size_t   i;
    unsigned k;

    head(f, "memsvc_job_sessions", "gauge", "Connected sessions of a job.");
    for (i = 0; i < sn->njobs; i++) {
        fprintf(f, "memsvc_job_sessions{job=\"%u\"} %llu\n", sn->jobs[i].job,
                (unsigned long long)sn->jobs[i].sessions);
    }
    head(f, "memsvc_job_tensors", "gauge", "Live tensors of a job.");
    for (i = 0; i < sn->njobs; i++) {
        fprintf(f, "memsvc_job_tensors{job=\"%u\"} %llu\n", sn->jobs[i].job,
                (unsigned long long)sn->jobs[i].tensors);
    }
    head(f, "memsvc_job_tensor_bytes", "gauge", "Bytes of a job's tensors, by state.");
    for (i = 0; i < sn->njobs; i++) {
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            if (k == MEMSVC_STATE_FREED) {
                continue;
            }
            fprintf(f, "memsvc_job_tensor_bytes{job=\"%u\",state=\"%s\"} %llu\n", sn->jobs[i].job,
                    memsvc_state_name((memsvc_state_t)k), (unsigned long long)sn->jobs[i].bytes[k]);
        }
    }
}

/* The whole exposition into a malloc()ed buffer; NULL when out of memory. */
static char *metrics_text(msd_server_t *srv, size_t *len_p)
{
    met_snap_t *sn   = calloc(1, sizeof(*sn));
    char       *text = NULL;
    FILE       *f;

    if (sn == NULL) {
        return NULL;
    }
    snap_take(srv, sn);
    f = open_memstream(&text, len_p);
    if (f != NULL) {
        write_node(f, sn);
        write_repl(f, sn);
        write_devices(f, sn);
        write_requests(f, sn);
        write_jobs(f, sn);
        if (fclose(f) != 0) {
            free(text);
            text = NULL;
        }
    }
    free(sn->jobs);
    free(sn);
    return text;
}

/* ---- http --------------------------------------------------------------------------------- */

static enum MHD_Result metrics_reply(struct MHD_Connection *conn, unsigned code, char *body,
                                     size_t len, const char *type)
{
    struct MHD_Response *r;
    enum MHD_Result      ret;

    r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result metrics_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                       const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **con_cls)
{
    msd_server_t *srv = cls;
    char         *body;
    size_t        len = 0;

    if ((strcmp(method, MHD_HTTP_METHOD_GET) != 0) && (strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)) {
        body = strdup("only GET\n");
        return metrics_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, body, (body != NULL) ? 9 : 0,
                             "text/plain; charset=utf-8");
    }
    if (strcmp(url, "/metrics") != 0) {
        body = strdup("memsvcd: metrics are at /metrics\n");
        return metrics_reply(conn, MHD_HTTP_NOT_FOUND, body, (body != NULL) ? strlen(body) : 0,
                             "text/plain; charset=utf-8");
    }
    body = metrics_text(srv, &len);
    if (body == NULL) {
        return MHD_NO;
    }
    return metrics_reply(conn, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8");
}

static void metrics_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char   text[512];
    size_t n;

    vsnprintf(text, sizeof(text), fmt, ap);
    n = strlen(text);
    while ((n > 0) && (text[n - 1] == '\n')) {
        text[--n] = '\0';
    }
    LOG_WARN("http: %s", text);
}

/* [HOST:]PORT -> a socket address (a bare port: loopback, as node_exporter's docs advise for
 * what needs no remote access); full gets "HOST:PORT". Errors logged. */
static memsvc_status_t metrics_addr(const char *addr, bool allow_remote,
                                    struct sockaddr_storage *ss, socklen_t *len, char *full,
                                    size_t fullcap)
{
    bool loopback;

    if (strspn(addr, "0123456789") == strlen(addr)) {
        snprintf(full, fullcap, "127.0.0.1:%s", addr);
    } else {
        snprintf(full, fullcap, "%s", addr);
    }
    if (msp_parse_addr(full, ss, len) != MEMSVC_OK) {
        LOG_ERR("--metrics: '%s' is not [HOST:]PORT", addr);
        return MEMSVC_ERR_PARSE;
    }
    loopback = (ss->ss_family == AF_INET)
                   ? ((ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127)
                   : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ss)->sin6_addr);
    if (!loopback && !allow_remote) {
        LOG_ERR("refusing to serve metrics on %s: not a loopback address (add --allow-remote)",
                full);
        return MEMSVC_ERR_ACCESS;
    }
    return MEMSVC_OK;
}

bool msd_metrics_addr_ok(const char *addr, bool allow_remote)
{
    struct sockaddr_storage ss;
    socklen_t               len;
    char                    full[300];

    return metrics_addr(addr, allow_remote, &ss, &len, full, sizeof(full)) == MEMSVC_OK;
}

memsvc_status_t msd_metrics_start(msd_server_t *srv, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t               len;
    char                    full[300];
    unsigned                flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    memsvc_status_t         status;

    status = metrics_addr(addr, srv->cfg.allow_remote, &ss, &len, full, sizeof(full));
    if (status != MEMSVC_OK) {
        return status;
    }
    if (ss.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    srv->metrics.httpd = MHD_start_daemon(
        flags, 0, NULL, NULL, metrics_handler, srv, MHD_OPTION_EXTERNAL_LOGGER, metrics_mhd_log,
        NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 32u,
        MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (srv->metrics.httpd == NULL) {
        LOG_ERR("cannot serve metrics on %s (see the line above)", full);
        return MEMSVC_ERR_TRANSPORT;
    }
    LOG("serving http://%s/metrics (Prometheus text format)", full);
    return MEMSVC_OK;
}

void msd_metrics_stop(msd_server_t *srv)
{
    if (srv->metrics.httpd != NULL) {
        MHD_stop_daemon(srv->metrics.httpd);
        srv->metrics.httpd = NULL;
    }
}
