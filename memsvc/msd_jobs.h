/* msd_jobs.h - memsvcd's per-job table: what each job holds where, and its quotas */
#ifndef MSD_JOBS_H
#define MSD_JOBS_H

#include "client/memsvc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of one job; 0 is unlimited. The same for every job (--job-quota). */
typedef struct msd_quota {
    uint64_t hbm;      /* bytes on device (resident, moving in or out) */
    uint64_t host;     /* bytes in the host pool */
    uint64_t disk;     /* bytes spilled to disk */
    uint64_t tensors;  /* live tensors */
    uint64_t inflight; /* bulk bytes in flight (READ replies sent, WRITE payloads received) */
} msd_quota_t;

/* What one job holds. Counters are signed so that a bookkeeping slip shows as < 0. */
typedef struct msd_job {
    uint32_t job;
    bool     used;
    int64_t  tensors_by_state[MEMSVC_STATE_COUNT];
    int64_t  bytes_by_state[MEMSVC_STATE_COUNT];
    uint64_t inflight; /* bulk bytes in flight, all its sessions */
    uint64_t refused;  /* requests refused by a quota */
} msd_job_t;

typedef struct msd_jobs {
    msd_job_t  *slots; /* open addressing by job id; never deleted (a job id is 4 bytes) */
    size_t      cap;   /* power of two */
    size_t      count;
    msd_quota_t quota;
} msd_jobs_t;

memsvc_status_t msd_jobs_init(msd_jobs_t *jobs, const msd_quota_t *quota);
void            msd_jobs_fini(msd_jobs_t *jobs);

/* The job's entry; created (zeroed) when absent and create is set. NULL: absent, or out of
 * memory when creating. */
msd_job_t *msd_jobs_get(msd_jobs_t *jobs, uint32_t job, bool create);

/* The engine's usage observer (eng_set_usage_observer) with arg = the table. */
void msd_jobs_usage(void *arg, uint32_t job, memsvc_state_t state, int tensors, int64_t bytes);

/* A job's figures: bytes on device (incl. moving), on host, on disk; live tensors. */
uint64_t msd_job_hbm(const msd_job_t *j);
uint64_t msd_job_host(const msd_job_t *j);
uint64_t msd_job_disk(const msd_job_t *j);
uint64_t msd_job_tensors(const msd_job_t *j);

/*
 * May the job allocate a tensor of size bytes (it lands on device)? MEMSVC_OK, or
 * MEMSVC_ERR_QUOTA with msg naming the quota (tensors, hbm, or host/disk already over theirs:
 * a job past its host or disk quota gets no new tensors until it frees some).
 */
memsvc_status_t msd_jobs_check_alloc(msd_jobs_t *jobs, uint32_t job, uint64_t size, char *msg,
                                     size_t msglen);
/* May the job bring a tensor of size bytes (not on device now) onto its device? */
memsvc_status_t msd_jobs_check_resident(msd_jobs_t *jobs, uint32_t job, uint64_t size, char *msg,
                                        size_t msglen);
/* Would need more bytes in flight stay within the job's inflight quota? (Always true when
 * nothing of the job is in flight, so a single large transfer is never refused.) */
bool msd_jobs_inflight_fits(msd_jobs_t *jobs, uint32_t job, uint64_t need);

/*
 * Parse "hbm=8GiB,host=64GiB,disk=1TiB,tensors=1000000,inflight=1GiB" (any subset; sizes with
 * the units of sim_parse_size; 0 or "none" is unlimited) into *quota (fields not named keep
 * their value). MEMSVC_ERR_UNKNOWN_KEY / MEMSVC_ERR_PARSE with the reason in err.
 */
memsvc_status_t msd_jobs_parse_quota(const char *spec, msd_quota_t *quota, char *err,
                                     size_t errlen);

#endif /* MSD_JOBS_H */
