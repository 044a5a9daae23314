/* tune.c - memtrace tune: the sweep grid, forked replay workers, results through pipes */
#include "tools/memtrace/tune.h"

#include "tools/memtrace/replay.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MT_TUNE_MIN_STEP (1ull << 20) /* smallest --budget-auto step: 1 MiB */

/* A job is a cell, or a trace's baseline (cell == NULL). */
typedef struct mt_tune_job {
    mt_tune_cell_t  *cell;
    mt_tune_trace_t *trace;
    pid_t            pid;
    int              fd; /* read end of the worker's pipe */
    size_t           got;
} mt_tune_job_t;

/*
 * Replay one trace with policy `spec` and HBM `hbm` (a size string), in this process, and fill
 * *res. Never fails: a failed replay is res->status with its message.
 */
static void mt_tune_replay_one(const mt_tune_params_t *p, const char *path, const char *spec,
                               const char *hbm, mt_tune_result_t *res)
{
    mt_replay_params_t rp;
    mt_replay_report_t rep;
    const char       **ov;
    size_t             i, n = 0;
    char               hbm_kv[64];

    memset(res, 0, sizeof(*res));
    ov = calloc(p->num_overrides + 1, sizeof(*ov));
    if (ov == NULL) {
        res->status = MEMSVC_ERR_NO_RESOURCE;
        snprintf(res->err, sizeof(res->err), "out of memory");
        return;
    }
    for (i = 0; i < p->num_overrides; i++) {
        if (strncmp(p->overrides[i], "hbm=", 4) != 0) {
            ov[n++] = p->overrides[i];
        }
    }
    snprintf(hbm_kv, sizeof(hbm_kv), "hbm=%s", hbm);
    ov[n++] = hbm_kv;

    mt_replay_params_init(&rp);
    rp.node          = p->node;
    rp.overrides     = ov;
    rp.num_overrides = n;
    rp.mode          = SIM_MEM_PHANTOM;
    rp.policy        = spec;
    rp.baseline      = false;
    rp.timeline      = false;
    rp.progress      = false;
    res->status      = mt_replay_file(&rp, path, &rep, res->err, sizeof(res->err));
    free(ov);
    if (res->status != MEMSVC_OK) {
        return;
    }
    snprintf(res->model, sizeof(res->model), "%s", rep.trace_model);
    snprintf(res->node, sizeof(res->node), "%s", rep.node);
    res->fits      = rep.fits;
    res->ooms      = rep.oom_count;
    res->total_ns  = rep.total_ns;
    res->num_steps = (uint32_t)rep.num_steps;
    res->step_ns   = rep.total_ns;
    if (rep.num_steps > 0) {
        uint64_t sum = 0;

        for (i = 0; i < rep.num_steps; i++) {
            sum += rep.steps[i].end - rep.steps[i].begin;
        }
        res->step_ns = sum / rep.num_steps;
    }
    res->stall_ns       = rep.stall_ns;
    res->recompute_ns   = rep.recompute_ns;
    res->swap_out_bytes = rep.swap_out_bytes;
    res->swap_in_bytes  = rep.swap_in_bytes;
    res->peak_allocated = rep.peak_allocated;
    res->host_peak      = rep.host_peak;
    res->wall_s         = rep.wall_s;
    mt_replay_report_free(&rep);
}

/* Write all of buf to fd (a pipe), retrying on EINTR. */
static bool mt_tune_write_all(int fd, const void *buf, size_t len)
{
    const char *c = buf;

    while (len > 0) {
        ssize_t w = write(fd, c, len);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        c += w;
        len -= (size_t)w;
    }
    return true;
}

/*
 * Fork a worker for job j. The child replays, writes one mt_tune_result_t to the pipe and
 * _exits (no atexit handlers, no stdio flushed twice). MEMSVC_ERR_NO_RESOURCE if pipe or fork
 * fails (message in err).
 */
static memsvc_status_t mt_tune_start(const mt_tune_t *t, mt_tune_job_t *j, char *err, size_t errlen)
{
    int   fds[2];
    pid_t pid;

    if (pipe(fds) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return MEMSVC_ERR_NO_RESOURCE;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    if (pid == 0) {
        mt_tune_result_t res;
        char             hbm[32];

        close(fds[0]);
        if (j->cell == NULL) {
            mt_tune_replay_one(t->params, j->trace->path, "none", MT_REPLAY_UNLIMITED, &res);
        } else {
            snprintf(hbm, sizeof(hbm), "%" PRIu64, j->trace->budgets[j->cell->budget]);
            mt_tune_replay_one(t->params, j->trace->path, t->params->specs[j->cell->spec], hbm,
                               &res);
        }
        _exit(mt_tune_write_all(fds[1], &res, sizeof(res)) ? 0 : 1);
    }
    close(fds[1]);
    j->pid = pid;
    j->fd  = fds[0];
    j->got = 0;
    return MEMSVC_OK;
}

/* The record of a finished job: where it goes. */
static mt_tune_result_t *mt_tune_slot(mt_tune_job_t *j)
{
    return (j->cell != NULL) ? &j->cell->res : &j->trace->base;
}

/*
 * Read what is available from a running job; on end of file, reap the worker. Returns true when
 * the job is finished (its slot filled; a worker that died without a full record leaves
 * MEMSVC_ERR_NO_RESOURCE and a message there).
 */
static bool mt_tune_collect(mt_tune_job_t *j)
{
    mt_tune_result_t *res = mt_tune_slot(j);
    ssize_t           r;
    int               wstatus = 0;

    r = read(j->fd, (char *)res + j->got, sizeof(*res) - j->got);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
        return false;
    }
    if (r > 0) {
        j->got += (size_t)r;
        if (j->got < sizeof(*res)) {
            return false;
        }
    }
    close(j->fd);
    while (waitpid(j->pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    if (j->got < sizeof(*res)) {
        memset(res, 0, sizeof(*res));
        res->status = MEMSVC_ERR_NO_RESOURCE;
        if (WIFSIGNALED(wstatus)) {
            snprintf(res->err, sizeof(res->err), "replay worker killed by signal %d",
                     WTERMSIG(wstatus));
        } else {
            snprintf(res->err, sizeof(res->err), "replay worker exited without a result");
        }
    }
    return true;
}

/* Index in t->cells of (trace, budget, spec); the indexes must be in range. */
static size_t mt_tune_index(const mt_tune_t *t, size_t trace, size_t budget, size_t spec)
{
    size_t i, off = 0;

    for (i = 0; i < trace; i++) {
        off += t->traces[i].num_budgets * t->params->num_specs;
    }
    return off + budget * t->params->num_specs + spec;
}

/* Row (trace, budget) finished with every spec out of memory? */
static bool mt_tune_row_all_oom(const mt_tune_t *t, size_t tr, size_t b)
{
    size_t s;

    for (s = 0; s < t->params->num_specs; s++) {
        const mt_tune_cell_t *c = &t->cells[mt_tune_index(t, tr, b, s)];

        if (c->state != MT_TUNE_DONE || (c->res.status == MEMSVC_OK && c->res.fits)) {
            return false;
        }
    }
    return true;
}

static void mt_tune_progress(const mt_tune_params_t *p, const char *what, size_t done, size_t total)
{
    if (p->progress && isatty(STDERR_FILENO)) {
        fprintf(stderr, "\rmemtrace tune: %s %zu/%zu ", what, done, total);
        if (done == total) {
            fprintf(stderr, "\n");
        }
    }
}

/*
 * Run jobs[0..n) on at most params->jobs workers. Jobs whose cell is beyond its trace's cutoff
 * when their turn comes are marked skipped. After each finished cell, with auto budgets, the
 * cutoff moves up to a row where every spec ran out of memory (or failed). A cell whose replay
 * fails is a result (its status and message in the cell, a line on stderr, t->num_errors); a
 * failed baseline stops the pool (the other workers are killed) and its status is returned.
 */
static memsvc_status_t mt_tune_pool(mt_tune_t *t, mt_tune_job_t *jobs, size_t n, bool cutoff,
                                    const char *what, char *err, size_t errlen)
{
    const mt_tune_params_t *p       = t->params;
    mt_tune_job_t         **running = NULL;
    struct pollfd          *pfd     = NULL;
    memsvc_status_t         status  = MEMSVC_OK;
    size_t                  next = 0, nrun = 0, done = 0, i;

    running = calloc(p->jobs, sizeof(*running));
    pfd     = calloc(p->jobs, sizeof(*pfd));
    if (running == NULL || pfd == NULL) {
        snprintf(err, errlen, "out of memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto out;
    }
    while (next < n || nrun > 0) {
        while (status == MEMSVC_OK && nrun < p->jobs && next < n) {
            mt_tune_job_t *j = &jobs[next++];

            if (j->cell != NULL && j->cell->budget > j->trace->cutoff) {
                j->cell->state = MT_TUNE_SKIPPED;
                done++;
                continue;
            }
            status = mt_tune_start(t, j, err, errlen);
            if (status != MEMSVC_OK) {
                break;
            }
            if (j->cell != NULL) {
                j->cell->state = MT_TUNE_RUNNING;
            }
            running[nrun++] = j;
        }
        if (status != MEMSVC_OK) {
            next = n; /* start nothing more; reap what runs */
            for (i = 0; i < nrun; i++) {
                kill(running[i]->pid, SIGKILL);
            }
        }
        if (nrun == 0) {
            break;
        }
        for (i = 0; i < nrun; i++) {
            pfd[i].fd      = running[i]->fd;
            pfd[i].events  = POLLIN;
            pfd[i].revents = 0;
        }
        if (poll(pfd, nrun, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            snprintf(err, errlen, "poll: %s", strerror(errno));
            status = MEMSVC_ERR_NO_RESOURCE;
            next   = n;
            continue;
        }
        for (i = nrun; i-- > 0;) {
            mt_tune_job_t    *j = running[i];
            mt_tune_result_t *res;

            if (pfd[i].revents == 0 || !mt_tune_collect(j)) {
                continue;
            }
            running[i] = running[--nrun];
            done++;
            mt_tune_progress(p, what, done, n);
            res = mt_tune_slot(j);
            if (j->cell == NULL) {
                if (status == MEMSVC_OK && res->status != MEMSVC_OK) {
                    status = res->status; /* a baseline: the trace or the node is wrong */
                    snprintf(err, errlen, "%s", res->err);
                    next = n;
                }
                continue;
            }
            j->cell->state = MT_TUNE_DONE;
            if (res->status != MEMSVC_OK) { /* one policy at one budget: a result, reported */
                t->num_errors++;
                fprintf(stderr, "%smemtrace tune: %s, policy %s, HBM %" PRIu64 " B: %s\n",
                        (p->progress && isatty(STDERR_FILENO)) ? "\n" : "", j->trace->path,
                        p->specs[j->cell->spec], j->trace->budgets[j->cell->budget], res->err);
            }
            if (cutoff && j->cell->budget < j->trace->cutoff &&
                mt_tune_row_all_oom(t, j->cell->trace, j->cell->budget)) {
                j->trace->cutoff = j->cell->budget;
            }
        }
        if (status != MEMSVC_OK) {
            for (i = 0; i < nrun; i++) {
                kill(running[i]->pid, SIGKILL);
            }
        }
    }
out:
    free(running);
    free(pfd);
    return status;
}

size_t mt_tune_auto_budgets(uint64_t peak, unsigned n, uint64_t *budgets, size_t max)
{
    uint64_t step = MT_TUNE_MIN_STEP, b;
    size_t   k    = 0;

    if (n == 0) {
        n = 1;
    }
    while (step * n < peak) {
        step *= 2;
    }
    b = ((peak + step - 1) / step) * step;
    if (b == 0) {
        b = step;
    }
    for (; b >= step && k < max; b -= step) {
        budgets[k++] = b;
    }
    return k;
}

memsvc_status_t mt_tune_run(const mt_tune_params_t *params, mt_tune_t *tune_p, char *err,
                            size_t errlen)
{
    mt_tune_t       t;
    mt_tune_job_t  *jobs = NULL;
    memsvc_status_t status;
    size_t          i, b, s, n;

    memset(&t, 0, sizeof(t));
    t.params = params;
    t.traces = calloc(params->num_traces, sizeof(*t.traces));
    jobs     = calloc(params->num_traces, sizeof(*jobs));
    if (t.traces == NULL || jobs == NULL) {
        snprintf(err, errlen, "out of memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_free;
    }

    /* baselines, one per trace */
    for (i = 0; i < params->num_traces; i++) {
        t.traces[i].path = params->traces[i];
        jobs[i].trace    = &t.traces[i];
    }
    status = mt_tune_pool(&t, jobs, params->num_traces, false, "baselines", err, errlen);
    if (status != MEMSVC_OK) {
        goto err_free;
    }
    free(jobs);
    jobs = NULL;

    /* budgets, cells */
    for (i = 0; i < params->num_traces; i++) {
        mt_tune_trace_t *tr  = &t.traces[i];
        size_t           max = (params->budgets != NULL) ? params->num_budgets : 4096;

        tr->budgets = calloc(max ? max : 1, sizeof(*tr->budgets));
        if (tr->budgets == NULL) {
            snprintf(err, errlen, "out of memory");
            status = MEMSVC_ERR_NO_RESOURCE;
            goto err_free;
        }
        if (params->budgets != NULL) {
            memcpy(tr->budgets, params->budgets, max * sizeof(*tr->budgets));
            tr->num_budgets = max;
        } else {
            tr->num_budgets =
                mt_tune_auto_budgets(tr->base.peak_allocated, params->auto_n, tr->budgets, max);
        }
        tr->cutoff = tr->num_budgets;
        t.num_cells += tr->num_budgets * params->num_specs;
    }
    t.cells = calloc(t.num_cells ? t.num_cells : 1, sizeof(*t.cells));
    jobs    = calloc(t.num_cells ? t.num_cells : 1, sizeof(*jobs));
    if (t.cells == NULL || jobs == NULL) {
        snprintf(err, errlen, "out of memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_free;
    }
    for (i = 0, n = 0; i < params->num_traces; i++) {
        for (b = 0; b < t.traces[i].num_budgets; b++) {
            for (s = 0; s < params->num_specs; s++, n++) {
                t.cells[n].trace  = i;
                t.cells[n].budget = b;
                t.cells[n].spec   = s;
                jobs[n].cell      = &t.cells[n];
                jobs[n].trace     = &t.traces[i];
            }
        }
    }
    status = mt_tune_pool(&t, jobs, n, params->budgets == NULL, "replays", err, errlen);
    if (status != MEMSVC_OK) {
        goto err_free;
    }
    /* cells below a cutoff that ran anyway (workers already busy) do not count */
    for (i = 0; i < t.num_cells; i++) {
        if (t.cells[i].budget > t.traces[t.cells[i].trace].cutoff) {
            t.cells[i].state = MT_TUNE_SKIPPED;
        }
    }
    free(jobs);
    *tune_p = t;
    return MEMSVC_OK;

err_free:
    free(jobs);
    mt_tune_free(&t);
    return status;
}

void mt_tune_free(mt_tune_t *tune)
{
    size_t i;

    if (tune->traces != NULL) {
        for (i = 0; i < tune->params->num_traces; i++) {
            free(tune->traces[i].budgets);
        }
    }
    free(tune->traces);
    free(tune->cells);
    tune->traces    = NULL;
    tune->cells     = NULL;
    tune->num_cells = 0;
}

double mt_tune_overhead_pct(const mt_tune_t *tune, const mt_tune_cell_t *cell)
{
    const mt_tune_result_t *base = &tune->traces[cell->trace].base;

    if (base->total_ns == 0) {
        return 0.0;
    }
    return 100.0 * ((double)cell->res.total_ns / (double)base->total_ns - 1.0);
}

const mt_tune_cell_t *mt_tune_cell(const mt_tune_t *tune, size_t trace, size_t budget, size_t spec)
{
    const mt_tune_cell_t *c;

    if (trace >= tune->params->num_traces || budget >= tune->traces[trace].num_budgets ||
        spec >= tune->params->num_specs) {
        return NULL;
    }
    c = &tune->cells[mt_tune_index(tune, trace, budget, spec)];
    return (c->state == MT_TUNE_DONE) ? c : NULL;
}
