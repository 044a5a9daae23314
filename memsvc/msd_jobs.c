/* msd_jobs.c - memsvcd's per-job table: usage by tier from the engine's observer, quota checks */
#include "memsvc/msd_jobs.h"
#include "sim_npu/sim_desc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOBS_INITIAL_CAP 64u

static size_t job_hash(uint32_t job)
{
    uint64_t x = (uint64_t)job * 0x9e3779b97f4a7c15ull;

    return (size_t)(x ^ (x >> 29));
}

memsvc_status_t msd_jobs_init(msd_jobs_t *jobs, const msd_quota_t *quota)
{
    memset(jobs, 0, sizeof(*jobs));
    jobs->slots = calloc(JOBS_INITIAL_CAP, sizeof(*jobs->slots));
    if (jobs->slots == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    jobs->cap = JOBS_INITIAL_CAP;
    if (quota != NULL) {
        jobs->quota = *quota;
    }
    return MEMSVC_OK;
}

void msd_jobs_fini(msd_jobs_t *jobs)
{
    free(jobs->slots);
    memset(jobs, 0, sizeof(*jobs));
}

static msd_job_t *jobs_slot(msd_job_t *slots, size_t cap, uint32_t job)
{
    size_t i = job_hash(job) & (cap - 1);

    while (slots[i].used && (slots[i].job != job)) {
        i = (i + 1) & (cap - 1);
    }
    return &slots[i];
}

static memsvc_status_t jobs_grow(msd_jobs_t *jobs)
{
    size_t     cap   = jobs->cap * 2, i;
    msd_job_t *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < jobs->cap; i++) {
        if (jobs->slots[i].used) {
            *jobs_slot(slots, cap, jobs->slots[i].job) = jobs->slots[i];
        }
    }
    free(jobs->slots);
    jobs->slots = slots;
    jobs->cap   = cap;
    return MEMSVC_OK;
}

msd_job_t *msd_jobs_get(msd_jobs_t *jobs, uint32_t job, bool create)
{
    msd_job_t *j = jobs_slot(jobs->slots, jobs->cap, job);

    if (j->used || !create) {
        return j->used ? j : NULL;
    }
    if ((jobs->count + 1) * 4 > jobs->cap * 3) {
        if (jobs_grow(jobs) != MEMSVC_OK) {
            return NULL;
        }
        j = jobs_slot(jobs->slots, jobs->cap, job);
    }
    memset(j, 0, sizeof(*j));
    j->used = true;
    j->job  = job;
    jobs->count++;
    return j;
}

void msd_jobs_usage(void *arg, uint32_t job, memsvc_state_t state, int tensors, int64_t bytes)
{
    msd_job_t *j = msd_jobs_get(arg, job, true);

    if ((j == NULL) || ((unsigned)state >= MEMSVC_STATE_COUNT)) {
        return; /* out of memory: the job's figures are short (checks err on the lenient side) */
    }
    j->tensors_by_state[state] += tensors;
    j->bytes_by_state[state] += bytes;
}

static uint64_t pos(int64_t v)
{
    return (v > 0) ? (uint64_t)v : 0;
}

uint64_t msd_job_hbm(const msd_job_t *j)
{
    return pos(j->bytes_by_state[MEMSVC_STATE_ON_DEVICE] +
               j->bytes_by_state[MEMSVC_STATE_MOVING_IN] +
               j->bytes_by_state[MEMSVC_STATE_MOVING_OUT]);
}

uint64_t msd_job_host(const msd_job_t *j)
{
    return pos(j->bytes_by_state[MEMSVC_STATE_ON_HOST]);
}

uint64_t msd_job_disk(const msd_job_t *j)
{
    return pos(j->bytes_by_state[MEMSVC_STATE_ON_DISK]);
}

uint64_t msd_job_tensors(const msd_job_t *j)
{
    int64_t  n = 0;
    unsigned s;

    for (s = 0; s < MEMSVC_STATE_COUNT; s++) {
        if (s != MEMSVC_STATE_FREED) {
            n += j->tensors_by_state[s];
        }
    }
    return pos(n);
}

/* Refuse with a message naming the quota, its limit and the job's use. */
static memsvc_status_t refuse(msd_job_t *j, const char *what, uint64_t used, uint64_t want,
                              uint64_t limit, bool bytes, char *msg, size_t msglen)
{
    char u[32], w[32], l[32];

    if (j != NULL) {
        j->refused++;
    }
    if (bytes) {
        snprintf(msg, msglen, "job %u: %s quota %s: %s in use, %s more asked", j->job, what,
                 sim_format_size(limit, l, sizeof(l)), sim_format_size(used, u, sizeof(u)),
                 sim_format_size(want, w, sizeof(w)));
    } else {
        snprintf(msg, msglen, "job %u: %s quota %llu: %llu in use", j->job, what,
                 (unsigned long long)limit, (unsigned long long)used);
    }
    return MEMSVC_ERR_QUOTA;
}

static bool over(uint64_t used, uint64_t want, uint64_t limit)
{
    return (limit > 0) && ((want > limit) || (used > limit - want));
}

memsvc_status_t msd_jobs_check_alloc(msd_jobs_t *jobs, uint32_t job, uint64_t size, char *msg,
                                     size_t msglen)
{
    const msd_quota_t *q = &jobs->quota;
    msd_job_t         *j = msd_jobs_get(jobs, job, true);

    if (j == NULL) {
        return MEMSVC_OK;
    }
    if (over(msd_job_tensors(j), 1, q->tensors)) {
        return refuse(j, "tensors", msd_job_tensors(j), 1, q->tensors, false, msg, msglen);
    }
    if (over(msd_job_hbm(j), size, q->hbm)) {
        return refuse(j, "hbm", msd_job_hbm(j), size, q->hbm, true, msg, msglen);
    }
    if (over(msd_job_host(j), 0, q->host)) {
        return refuse(j, "host", msd_job_host(j), 0, q->host, true, msg, msglen);
    }
    if (over(msd_job_disk(j), 0, q->disk)) {
        return refuse(j, "disk", msd_job_disk(j), 0, q->disk, true, msg, msglen);
    }
    return MEMSVC_OK;
}

memsvc_status_t msd_jobs_check_resident(msd_jobs_t *jobs, uint32_t job, uint64_t size, char *msg,
                                        size_t msglen)
{
    msd_job_t *j = msd_jobs_get(jobs, job, true);

    if ((j == NULL) || !over(msd_job_hbm(j), size, jobs->quota.hbm)) {
        return MEMSVC_OK;
    }
    return refuse(j, "hbm", msd_job_hbm(j), size, jobs->quota.hbm, true, msg, msglen);
}

bool msd_jobs_inflight_fits(msd_jobs_t *jobs, uint32_t job, uint64_t need)
{
    msd_job_t *j = msd_jobs_get(jobs, job, false);

    return (j == NULL) || (j->inflight == 0) || !over(j->inflight, need, jobs->quota.inflight);
}

memsvc_status_t msd_jobs_parse_quota(const char *spec, msd_quota_t *quota, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t      off;
        bool        count;
    } keys[] = {
        {"hbm", offsetof(msd_quota_t, hbm), false},
        {"host", offsetof(msd_quota_t, host), false},
        {"disk", offsetof(msd_quota_t, disk), false},
        {"tensors", offsetof(msd_quota_t, tensors), true},
        {"inflight", offsetof(msd_quota_t, inflight), false},
    };
    msd_quota_t q = *quota;
    char        buf[256], *item, *save = NULL, *eq, *end;
    size_t      k;
    uint64_t    v;

    if (strlen(spec) >= sizeof(buf)) {
        snprintf(err, errlen, "quota spec longer than %zu bytes", sizeof(buf) - 1);
        return MEMSVC_ERR_PARSE;
    }
    snprintf(buf, sizeof(buf), "%s", spec);
    for (item = strtok_r(buf, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        eq = strchr(item, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "'%s': want KEY=VALUE (keys: hbm host disk tensors inflight)",
                     item);
            return MEMSVC_ERR_PARSE;
        }
        *eq++ = '\0';
        for (k = 0; (k < sizeof(keys) / sizeof(keys[0])) && (strcmp(keys[k].name, item) != 0);
             k++) {
        }
        if (k == sizeof(keys) / sizeof(keys[0])) {
            snprintf(err, errlen, "unknown quota '%s' (keys: hbm host disk tensors inflight)",
                     item);
            return MEMSVC_ERR_UNKNOWN_KEY;
        }
        if (strcmp(eq, "none") == 0) {
            v = 0;
        } else if (keys[k].count) {
            v = strtoull(eq, &end, 10);
            if ((*eq == '\0') || (*eq == '-') || (*end != '\0')) {
                snprintf(err, errlen, "%s=%s: not a count", keys[k].name, eq);
                return MEMSVC_ERR_PARSE;
            }
        } else if (sim_parse_size(eq, &v) != MEMSVC_OK) {
            snprintf(err, errlen, "%s=%s: not a size (e.g. 8GiB)", keys[k].name, eq);
            return MEMSVC_ERR_PARSE;
        }
        memcpy((char *)&q + keys[k].off, &v, sizeof(v));
    }
    *quota = q;
    return MEMSVC_OK;
}
