/* replay_live.c - live replay: trainer processes replay their ranks through libmemsvc */
#include "tools/memtrace/replay_live.h"
#include "tools/memtrace/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LIVE_BATCH 64 /* handles per acquire/release message */

/* ---- tensor id -> handle, per trainer (open addressing, grows with live tensors) ------------ */

typedef struct live_map {
    uint64_t *ids;     /* 0: empty */
    uint64_t *handles;
    uint64_t  cap, n;
} live_map_t;

static uint64_t live_hash(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static memsvc_status_t live_map_grow(live_map_t *m)
{
    uint64_t  cap = m->cap ? m->cap * 2 : 1024, i;
    uint64_t *ids = calloc(cap, sizeof(*ids)), *hs = calloc(cap, sizeof(*hs));

    if (ids == NULL || hs == NULL) {
        free(ids);
        free(hs);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < m->cap; i++) {
        if (m->ids[i] != 0) {
            uint64_t j = live_hash(m->ids[i]) & (cap - 1);

            while (ids[j] != 0) {
                j = (j + 1) & (cap - 1);
            }
            ids[j] = m->ids[i];
            hs[j]  = m->handles[i];
        }
    }
    free(m->ids);
    free(m->handles);
    m->ids     = ids;
    m->handles = hs;
    m->cap     = cap;
    return MEMSVC_OK;
}

static uint64_t *live_map_slot(live_map_t *m, uint64_t id)
{
    uint64_t j;

    if (m->cap == 0) {
        return NULL;
    }
    for (j = live_hash(id) & (m->cap - 1); m->ids[j] != 0; j = (j + 1) & (m->cap - 1)) {
        if (m->ids[j] == id) {
            return &m->handles[j];
        }
    }
    return NULL;
}

static memsvc_status_t live_map_put(live_map_t *m, uint64_t id, uint64_t handle)
{
    uint64_t j;

    if (id == 0) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if ((m->n + 1) * 2 > m->cap && live_map_grow(m) != MEMSVC_OK) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (j = live_hash(id) & (m->cap - 1); m->ids[j] != 0; j = (j + 1) & (m->cap - 1)) {
        if (m->ids[j] == id) {
            m->handles[j] = handle;
            return MEMSVC_OK;
        }
    }
    m->ids[j]     = id;
    m->handles[j] = handle;
    m->n++;
    return MEMSVC_OK;
}

/* Remove with backward shift. */
static void live_map_del(live_map_t *m, uint64_t id)
{
    uint64_t i, j, mask = m->cap - 1;

    if (m->cap == 0) {
        return;
    }
    for (i = live_hash(id) & mask; m->ids[i] != id; i = (i + 1) & mask) {
        if (m->ids[i] == 0) {
            return;
        }
    }
    for (j = i;;) {
        uint64_t home;

        j = (j + 1) & mask;
        if (m->ids[j] == 0) {
            break;
        }
        home = live_hash(m->ids[j]) & mask;
        if ((i <= j) ? (i < home && home <= j) : (i < home || home <= j)) {
            continue;
        }
        m->ids[i]     = m->ids[j];
        m->handles[i] = m->handles[j];
        i             = j;
    }
    m->ids[i] = 0;
    m->n--;
}

/* ---- one trainer ------------------------------------------------------------------------- */

typedef struct live_trainer {
    memsvc_conn_h       conn;
    live_map_t          map;
    const mt_live_params_t *p;
    mt_live_rank_t     *r;
    uint64_t            sched_ns; /* where the compute schedule stands (monotonic) */
} live_trainer_t;

static uint64_t live_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleep `ns` of (scaled) device time on the trainer's compute schedule. */
static void live_compute(live_trainer_t *tr, uint64_t ns)
{
    uint64_t now = live_now();
    uint64_t due;

    if (tr->sched_ns < now) {
        tr->sched_ns = now; /* behind (stalled): the schedule starts again from now */
    }
    tr->sched_ns += ns;
    due = tr->sched_ns;
    if (due > now + 100000) { /* short operators add up until a sleep is worth it */
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull),
                              .tv_nsec = (long)(due % 1000000000ull)};

        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
    }
}

static void live_refused(live_trainer_t *tr, memsvc_status_t s)
{
    if (s == MEMSVC_ERR_NO_MEMORY || s == MEMSVC_ERR_FRAGMENTED) {
        tr->r->ooms++;
    } else {
        tr->r->errors++;
    }
}

/* Acquire (or release) the mapped handles among ids, in batches; acquire answers RECOMPUTE
 * for dropped tensors, whose recompute time is slept. */
static void live_pin(live_trainer_t *tr, const uint64_t *ids, uint32_t n, bool acquire,
                     const uint64_t *rc_ns)
{
    memsvc_handle_t hs[LIVE_BATCH];
    memsvc_status_t st[LIVE_BATCH];
    uint32_t        i = 0, k, idx[LIVE_BATCH];

    while (i < n) {
        uint32_t m = 0;

        for (; i < n && m < LIVE_BATCH; i++) {
            uint64_t *h = live_map_slot(&tr->map, ids[i]);

            if (h != NULL) {
                idx[m]  = i;
                hs[m++] = *h;
            }
        }
        if (m == 0) {
            continue;
        }
        if (acquire) {
            uint64_t t0 = live_now();

            memsvc_acquire_many(tr->conn, hs, m, st);
            tr->r->stall_ns += live_now() - t0;
            for (k = 0; k < m; k++) {
                if (st[k] == MEMSVC_RECOMPUTE) {
                    uint64_t ns = (rc_ns != NULL) ? rc_ns[idx[k]] : 0;

                    tr->r->recomputes++;
                    tr->r->recompute_ns += (uint64_t)((double)ns * tr->p->time_scale);
                    live_compute(tr, (uint64_t)((double)ns * tr->p->time_scale));
                } else if (st[k] < 0) {
                    live_refused(tr, st[k]);
                }
            }
        } else {
            memsvc_release_many(tr->conn, hs, m, st);
        }
    }
}

/* Recompute costs of tensors are not in COMPUTE events: remember them per id. */
typedef struct live_cost {
    live_map_t map; /* id -> recompute_ns */
} live_cost_t;

static void live_event(live_trainer_t *tr, live_cost_t *cost, const mt_event_t *ev, char *key,
                       size_t keylen)
{
    memsvc_status_t s;

    tr->r->events++;
    switch (ev->type) {
    case MT_EV_ALLOC: {
        memsvc_alloc_params_t ap;
        memsvc_handle_t       h;

        memset(&ap, 0, sizeof(ap));
        ap.field_mask = MEMSVC_ALLOC_FIELD_KIND | MEMSVC_ALLOC_FIELD_TAGS |
                        MEMSVC_ALLOC_FIELD_RECOMPUTE_NS | MEMSVC_ALLOC_FIELD_FLAGS;
        ap.kind         = ev->kind;
        ap.tags         = ev->tags;
        ap.recompute_ns = ev->recompute_ns;
        ap.flags        = (ev->durable ? MEMSVC_ALLOC_DURABLE : 0) |
                          (ev->recomputable ? MEMSVC_ALLOC_RECOMPUTABLE : 0);
        snprintf(key, keylen, "r%u.%s", ev->rank, ev->key);
        s = memsvc_alloc(tr->conn, key, ev->size, &ap, &h);
        if (s == MEMSVC_OK) {
            live_map_put(&tr->map, ev->tensor, h);
            live_map_put(&cost->map, ev->tensor, ev->recompute_ns + 1);
        } else {
            live_refused(tr, s);
        }
        break;
    }
    case MT_EV_FREE: {
        uint64_t *h = live_map_slot(&tr->map, ev->tensor);

        if (h != NULL) {
            memsvc_free(tr->conn, *h);
            live_map_del(&tr->map, ev->tensor);
            live_map_del(&cost->map, ev->tensor);
        }
        break;
    }
    case MT_EV_ACCESS:
        live_pin(tr, &ev->tensor, 1, true, NULL);
        live_pin(tr, &ev->tensor, 1, false, NULL);
        break;
    case MT_EV_HINT: {
        memsvc_hint_t hint;

        memset(&hint, 0, sizeof(hint));
        hint.type       = ev->hint;
        hint.step       = ev->step;
        hint.layer      = ev->layer;
        hint.microbatch = ev->microbatch;
        hint.phase      = ev->phase;
        if (ev->hint != MEMSVC_HINT_UPCOMING) {
            memsvc_hint(tr->conn, &hint);
        }
        break;
    }
    case MT_EV_COMPUTE: {
        uint32_t  n = ev->num_reads + ev->num_writes, i;
        uint64_t *ids, *rc;

        if (ev->stream != 0 || n == 0) {
            if (ev->stream == 0) {
                live_compute(tr, (uint64_t)((double)ev->duration_ns * tr->p->time_scale));
                tr->r->compute_ns += (uint64_t)((double)ev->duration_ns * tr->p->time_scale);
                tr->r->ops++;
            }
            break;
        }
        ids = malloc(2 * n * sizeof(*ids));
        if (ids == NULL) {
            tr->r->errors++;
            break;
        }
        rc = ids + n;
        memcpy(ids, ev->reads, ev->num_reads * sizeof(*ids));
        memcpy(ids + ev->num_reads, ev->writes, ev->num_writes * sizeof(*ids));
        for (i = 0; i < n; i++) {
            uint64_t *c = live_map_slot(&cost->map, ids[i]);

            rc[i] = (c != NULL) ? *c - 1 : 0;
        }
        live_pin(tr, ids, n, true, rc);
        live_compute(tr, (uint64_t)((double)ev->duration_ns * tr->p->time_scale));
        tr->r->compute_ns += (uint64_t)((double)ev->duration_ns * tr->p->time_scale);
        tr->r->ops++;
        live_pin(tr, ids, n, false, NULL);
        free(ids);
        break;
    }
    default:
        break;
    }
}

/* The body of one trainer process: replays `rank` of the trace at path. */
static void live_trainer(const char *path, uint32_t rank, const mt_live_params_t *p,
                         mt_live_rank_t *r)
{
    memsvc_conn_params_t cp;
    live_trainer_t       tr;
    live_cost_t          cost;
    mt_reader_t         *reader = NULL;
    mt_event_t           ev;
    bool                 end = false;
    char                 key[MEMSVC_KEY_MAX + 1], err[256], name[32];
    uint64_t             t0;
    memsvc_status_t      s;

    memset(&tr, 0, sizeof(tr));
    memset(&cost, 0, sizeof(cost));
    tr.p = p;
    tr.r = r;
    s    = mt_reader_open(path, &reader, err, sizeof(err));
    if (s != MEMSVC_OK) {
        r->status = s;
        snprintf(r->message, sizeof(r->message), "%.200s", err);
        return;
    }
    snprintf(name, sizeof(name), "memtrace-live-r%u", rank);
    memset(&cp, 0, sizeof(cp));
    cp.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_RANK |
                    MEMSVC_CONN_FIELD_DEVICE | MEMSVC_CONN_FIELD_NAME;
    cp.address = p->address;
    cp.job     = p->job;
    cp.rank    = rank;
    cp.device  = r->device;
    cp.name    = name;
    if (p->timeout_ms > 0) {
        cp.field_mask |= MEMSVC_CONN_FIELD_TIMEOUT_MS;
        cp.timeout_ms = p->timeout_ms;
    }
    s = memsvc_connect(&cp, &tr.conn);
    if (s != MEMSVC_OK) {
        r->status = s;
        snprintf(r->message, sizeof(r->message), "cannot connect to %s: %s", p->address,
                 memsvc_strerror(s));
        mt_reader_close(reader);
        return;
    }
    snprintf(r->transport, sizeof(r->transport), "%s", memsvc_conn_transport(tr.conn));
    t0          = live_now();
    tr.sched_ns = t0;
    for (;;) {
        s = mt_reader_next(reader, &ev, &end, err, sizeof(err));
        if (s != MEMSVC_OK) {
            r->status = s;
            snprintf(r->message, sizeof(r->message), "%.200s", err);
            break;
        }
        if (end) {
            break;
        }
        if (ev.rank == rank) {
            live_event(&tr, &cost, &ev, key, sizeof(key));
        }
    }
    live_compute(&tr, 0); /* finish the schedule */
    r->wall_ns = live_now() - t0;
    memsvc_close(tr.conn);
    mt_reader_close(reader);
    free(tr.map.ids);
    free(tr.map.handles);
    free(cost.map.ids);
    free(cost.map.handles);
}

/* ---- the parent: one process per (trace, rank) --------------------------------------------- */

static memsvc_status_t live_daemon_stats(const mt_live_params_t *p, memsvc_stats_t *stats_p)
{
    memsvc_conn_params_t cp;
    memsvc_conn_h        conn;
    memsvc_status_t      s;

    memset(&cp, 0, sizeof(cp));
    cp.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_FLAGS |
                    MEMSVC_CONN_FIELD_NAME;
    cp.address    = p->address;
    cp.job        = 0; /* a control session: it sees the daemon, owns no tensors */
    cp.flags      = MEMSVC_CONN_CONTROL;
    cp.name       = "memtrace-live";
    s             = memsvc_connect(&cp, &conn);
    if (s != MEMSVC_OK) {
        return s;
    }
    s = memsvc_stats(conn, stats_p);
    memsvc_close(conn);
    return s;
}

memsvc_status_t mt_replay_live(const char *const *paths, int num_paths,
                               const mt_live_params_t *params, mt_live_report_t *report_p,
                               char *err, size_t errlen)
{
    pid_t           pids[MT_LIVE_MAX_PROCS];
    int             fds[MT_LIVE_MAX_PROCS];
    uint32_t        n = 0, i, devices = 1;
    memsvc_stats_t  st;
    memsvc_status_t s;
    int             t;

    memset(report_p, 0, sizeof(*report_p));
    /* the daemon must be there before any trainer starts; it also says how many devices */
    s = live_daemon_stats(params, &st);
    if (s != MEMSVC_OK) {
        memsvc_errf(err, errlen, "cannot reach memsvcd at %s: %s", params->address,
                    memsvc_strerror(s));
        return MEMSVC_ERR_TRANSPORT;
    }
    devices = (st.num_devices > 0) ? st.num_devices : 1;
    for (t = 0; t < num_paths; t++) {
        /* the ranks a trace holds: the distinct ranks of its events, in order of appearance */
        uint32_t     ranks[MT_LIVE_MAX_PROCS], nr = 0, k;
        mt_reader_t *r;
        mt_event_t   ev;
        bool         end = false;

        s = mt_reader_open(paths[t], &r, err, errlen);
        if (s != MEMSVC_OK) {
            return s;
        }
        while ((s = mt_reader_next(r, &ev, &end, err, errlen)) == MEMSVC_OK && !end) {
            for (k = 0; k < nr && ranks[k] != ev.rank; k++) {
            }
            if (k == nr) {
                if (nr == MT_LIVE_MAX_PROCS) {
                    break;
                }
                ranks[nr++] = ev.rank;
            }
        }
        mt_reader_close(r);
        if (s != MEMSVC_OK) {
            return s;
        }
        for (k = 0; k < nr; k++) {
            if (n == MT_LIVE_MAX_PROCS) {
                memsvc_errf(err, errlen, "more than %d ranks in all", MT_LIVE_MAX_PROCS);
                return MEMSVC_ERR_TOO_LARGE;
            }
            report_p->procs[n].trace  = (uint32_t)t;
            report_p->procs[n].rank   = ranks[k];
            report_p->procs[n].device = n % devices;
            n++;
        }
    }
    report_p->num_procs = n;
    fflush(NULL);
    for (i = 0; i < n; i++) {
        int   pipefd[2];
        pid_t pid;

        if (pipe(pipefd) != 0) {
            memsvc_errf(err, errlen, "pipe: %s", strerror(errno));
            n = i;
            break;
        }
        pid = fork();
        if (pid == 0) {
            mt_live_rank_t *r = &report_p->procs[i];
            ssize_t         w;

            close(pipefd[0]);
            live_trainer(paths[r->trace], r->rank, params, r);
            w = write(pipefd[1], r, sizeof(*r));
            _exit(w == (ssize_t)sizeof(*r) ? 0 : 1);
        }
        close(pipefd[1]);
        if (pid < 0) {
            close(pipefd[0]);
            memsvc_errf(err, errlen, "fork: %s", strerror(errno));
            n = i;
            break;
        }
        pids[i] = pid;
        fds[i]  = pipefd[0];
    }
    for (i = 0; i < n; i++) {
        mt_live_rank_t r;
        ssize_t        got = read(fds[i], &r, sizeof(r));
        int            wst;

        close(fds[i]);
        waitpid(pids[i], &wst, 0);
        if (got == (ssize_t)sizeof(r)) {
            report_p->procs[i] = r;
        } else {
            report_p->procs[i].status = MEMSVC_ERR_TRANSPORT;
            snprintf(report_p->procs[i].message, sizeof(report_p->procs[i].message),
                     "trainer process ended without a result (status %d)", wst);
        }
        if (report_p->procs[i].wall_ns > report_p->wall_ns) {
            report_p->wall_ns = report_p->procs[i].wall_ns;
        }
        if (report_p->procs[i].compute_ns > report_p->compute_ns) {
            report_p->compute_ns = report_p->procs[i].compute_ns;
        }
    }
    report_p->have_daemon = (live_daemon_stats(params, &report_p->daemon) == MEMSVC_OK);
    return (n == report_p->num_procs) ? MEMSVC_OK : MEMSVC_ERR_NO_RESOURCE;
}

/* ---- reports ----------------------------------------------------------------------------- */

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

void mt_live_report_print(const mt_live_report_t *rep, const mt_live_params_t *p, FILE *out)
{
    uint32_t i, d;

    fprintf(out, "live replay      %u trainer process(es) against memsvcd at %s, job %u, "
                 "time scale %g\n",
            rep->num_procs, p->address, p->job, p->time_scale);
    if (rep->have_daemon) {
        fprintf(out, "daemon           node %s, %s memory, policy %s, transport %s\n",
                rep->daemon.node, rep->daemon.mode, rep->daemon.policy, rep->daemon.transport);
    }
    fprintf(out, "wall time        %.3f ms  (ideal compute %.3f ms, overhead %+.2f%%)\n",
            ms(rep->wall_ns), ms(rep->compute_ns),
            rep->compute_ns ? 100.0 * ((double)rep->wall_ns / (double)rep->compute_ns - 1.0)
                            : 0.0);
    fprintf(out, "                 wall = compute + waiting for memory (acquires, round trips\n"
                 "                 included) + recompute + other round trips (alloc, free,\n"
                 "                 release, hints: one each, so small operators pay most)\n");
    for (i = 0; i < rep->num_procs; i++) {
        const mt_live_rank_t *r = &rep->procs[i];

        fprintf(out,
                "  trainer %-2u     trace %u rank %u npu%u: %" PRIu64 " events, %" PRIu64
                " ops, wall %.3f ms = compute %.3f + waiting for memory %.3f + recompute %.3f"
                " (%" PRIu64 ") + other round trips %.3f; %" PRIu64 " refused for memory, %" PRIu64
                " other errors%s%s\n",
                i, r->trace, r->rank, r->device, r->events, r->ops, ms(r->wall_ns),
                ms(r->compute_ns), ms(r->stall_ns), ms(r->recompute_ns), r->recomputes,
                ms(r->wall_ns > r->compute_ns + r->stall_ns + r->recompute_ns
                       ? r->wall_ns - r->compute_ns - r->stall_ns - r->recompute_ns
                       : 0),
                r->ooms, r->errors, r->status < 0 ? "; FAILED: " : "",
                r->status < 0 ? r->message : "");
    }
    if (!rep->have_daemon) {
        return;
    }
    for (d = 0; d < rep->daemon.num_devices && d < MEMSVC_MAX_DEVICES; d++) {
        const memsvc_dev_stats_t *s = &rep->daemon.dev[d];

        if (s->peak_reserved == 0) {
            continue;
        }
        fprintf(out,
                "  npu%-2u          peak reserved %.1f MiB of %.1f MiB; swapped out %.1f MiB (%" PRIu64
                " moves), in %.1f MiB (%" PRIu64 "); drops %" PRIu64 ", recomputes %" PRIu64
                "; daemon-side stall %.3f ms\n",
                d, s->peak_reserved / 1048576.0, s->capacity / 1048576.0,
                s->swap_out_bytes / 1048576.0, s->swap_outs, s->swap_in_bytes / 1048576.0,
                s->swap_ins, s->drops, s->recomputes, ms(s->stall_ns));
    }
}

void mt_live_report_json(const mt_live_report_t *rep, const mt_live_params_t *p, FILE *out)
{
    uint32_t i, d;

    fprintf(out, "{\n  \"address\": ");
    memsvc_json_string(p->address, out);
    fprintf(out, ",\n  \"job\": %u,\n  \"time_scale\": %g,\n", p->job, p->time_scale);
    fprintf(out, "  \"wall_ns\": %" PRIu64 ",\n  \"compute_ns\": %" PRIu64 ",\n  \"trainers\": [",
            rep->wall_ns, rep->compute_ns);
    for (i = 0; i < rep->num_procs; i++) {
        const mt_live_rank_t *r = &rep->procs[i];

        fprintf(out,
                "%s\n    {\"trace\": %u, \"rank\": %u, \"device\": %u, \"status\": \"%s\", "
                "\"events\": %" PRIu64 ", \"ops\": %" PRIu64 ", \"wall_ns\": %" PRIu64
                ", \"compute_ns\": %" PRIu64 ", \"stall_ns\": %" PRIu64 ", \"recomputes\": %" PRIu64
                ", \"recompute_ns\": %" PRIu64 ", \"refused_for_memory\": %" PRIu64
                ", \"errors\": %" PRIu64 "}",
                i ? "," : "", r->trace, r->rank, r->device,
                memsvc_status_name((memsvc_status_t)r->status), r->events, r->ops, r->wall_ns,
                r->compute_ns, r->stall_ns, r->recomputes, r->recompute_ns, r->ooms, r->errors);
    }
    fprintf(out, "\n  ]");
    if (rep->have_daemon) {
        fprintf(out, ",\n  \"daemon\": {\"node\": ");
        memsvc_json_string(rep->daemon.node, out);
        fprintf(out, ", \"memory\": ");
        memsvc_json_string(rep->daemon.mode, out);
        fprintf(out, ", \"policy\": ");
        memsvc_json_string(rep->daemon.policy, out);
        fprintf(out, ", \"devices\": [");
        for (d = 0; d < rep->daemon.num_devices && d < MEMSVC_MAX_DEVICES; d++) {
            const memsvc_dev_stats_t *s = &rep->daemon.dev[d];

            fprintf(out,
                    "%s{\"peak_reserved\": %" PRIu64 ", \"swap_out_bytes\": %" PRIu64
                    ", \"swap_in_bytes\": %" PRIu64 ", \"drops\": %" PRIu64
                    ", \"recomputes\": %" PRIu64 ", \"stall_ns\": %" PRIu64 "}",
                    d ? ", " : "", s->peak_reserved, s->swap_out_bytes, s->swap_in_bytes,
                    s->drops, s->recomputes, s->stall_ns);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "\n}\n");
}
