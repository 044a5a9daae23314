/* test_limits.c - one client must not hurt the others: quotas, back-pressure, connection floods,
 * stopped clients and eviction, paged listing, rate-limited logging */
#include "client/memsvc.h"
#include "client/msp_proto.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#define MSD_LOG_COMP "test"
#include "memsvc/msd_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1ull << 20)
#define OP_TIMEOUT_NS 2000000000ull /* no-stall bound of one small request (not a speed claim) */

/* ---- helpers ----------------------------------------------------------------------------------
 */

static long proc_rss_kb(pid_t pid)
{
    char  path[64], line[256];
    long  kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb;
}

static int proc_fds(pid_t pid)
{
    char           path[64];
    struct dirent *e;
    DIR           *dir;
    int            n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (dir == NULL) {
        return -1;
    }
    while ((e = readdir(dir)) != NULL) {
        n += (e->d_name[0] != '.') ? 1 : 0;
    }
    closedir(dir);
    return n;
}

static long file_lines(const char *path)
{
    long  n = 0;
    int   c;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        return -1;
    }
    while ((c = fgetc(f)) != EOF) {
        n += (c == '\n') ? 1 : 0;
    }
    fclose(f);
    return n;
}

static memsvc_status_t connect_as(const integ_daemon_t *d, uint32_t job, uint32_t device,
                                  uint32_t flags, memsvc_conn_h *conn_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_DEVICE | MEMSVC_CONN_FIELD_FLAGS |
                                            MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = d->addr,
                              .job        = job,
                              .device     = device,
                              .flags      = flags,
                              .timeout_ms = 10000};

    return memsvc_connect(&p, conn_p);
}

static const memsvc_job_stats_t *job_stats(const memsvc_stats_t *st, uint32_t job)
{
    uint32_t i;

    for (i = 0; i < st->num_jobs; i++) {
        if (st->job[i].job == job) {
            return &st->job[i];
        }
    }
    return NULL;
}

static const memsvc_session_stats_t *session_of_job(const memsvc_stats_t *st, uint32_t job)
{
    uint32_t i;

    for (i = 0; i < st->num_sessions; i++) {
        if ((st->session[i].job == job) && (st->session[i].flags & MEMSVC_SESSION_BOUND) &&
            !(st->session[i].flags & MEMSVC_SESSION_CONTROL)) {
            return &st->session[i];
        }
    }
    return NULL;
}

static size_t encode_one(const msp_req_t *req, void *buf, size_t cap)
{
    msp_buf_t b = {buf, cap, 0, false};

    return (msp_encode_requests(req, 1, &b) == MEMSVC_OK) ? b.len : 0;
}

/* ---- rate-limited logging ------------------------------------------------------------------- */

static void log_bad(int i)
{
    LOG_RL(300, "bad input number %d", i);
}

static void log_other(int i)
{
    LOG_RL(300, "other input number %d", i);
}

static void test_log_rate_limited(void)
{
    char  path[] = "/tmp/memsvc-logrl-XXXXXX";
    int   fd = mkstemp(path), saved = dup(2), i;
    char  line[512];
    bool  summary = false;
    FILE *f;

    CU_ASSERT_FATAL((fd >= 0) && (saved >= 0));
    fflush(stderr);
    dup2(fd, 2);
    for (i = 0; i < 1000; i++) {
        log_bad(i); /* one line; 999 suppressed */
    }
    log_other(0); /* another call site: its own budget */
    log_other(1);
    usleep(350000);
    log_bad(1000); /* the next interval: one line with the count */
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    CU_ASSERT_EQUAL(file_lines(path), 3);
    f = fopen(path, "r");
    CU_ASSERT_FATAL(f != NULL);
    while (fgets(line, sizeof(line), f) != NULL) {
        CU_ASSERT(strstr(line, "test: ") != NULL);
        summary = summary || ((strstr(line, "bad input number 1000") != NULL) &&
                              (strstr(line, "(999 similar lines suppressed)") != NULL));
    }
    fclose(f);
    CU_ASSERT(summary);
    unlink(path);
}

/* ---- quotas -----------------------------------------------------------------------------------
 */

static void test_quota_named_others_unaffected(void)
{
    static const char *const args[] = {
        "--node", "tiny", "--memory", "backed", "--job-quota", "tensors=3,hbm=8MiB", NULL};
    memsvc_stats_t           *st = calloc(1, sizeof(*st));
    const memsvc_job_stats_t *js;
    memsvc_handle_t           h[4], o[3];
    memsvc_conn_h             a, b;
    integ_daemon_t            d;
    integ_raw_t              *raw;
    memsvc_status_t           status;
    msp_req_t                 req = {.op = MSP_OP_ALLOC, .id = 7};
    uint8_t                   hdr[512];
    char                      msg[MSP_MSG_MAX + 1] = "";
    size_t                    len;
    unsigned                  i;

    CU_ASSERT_FATAL(st != NULL);
    START(&d, args);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &a));
    TEST_ASSERT_OK(integ_connect(&d, 2, 0, &b));
    TEST_ASSERT_OK(memsvc_alloc(a, "a0", 1 * MIB, NULL, &h[0]));
    TEST_ASSERT_OK(memsvc_alloc(a, "a1", 1 * MIB, NULL, &h[1]));
    TEST_ASSERT_OK(memsvc_alloc(a, "a2", 1 * MIB, NULL, &h[2]));
    CU_ASSERT_EQUAL(memsvc_alloc(a, "a3", 1 * MIB, NULL, &h[3]), MEMSVC_ERR_QUOTA);
    /* another job is not charged for job 1's use */
    for (i = 0; i < 3; i++) {
        char key[16];

        snprintf(key, sizeof(key), "b%u", i);
        TEST_ASSERT_OK(memsvc_alloc(b, key, 2 * MIB, NULL, &o[i]));
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    js = job_stats(st, 1);
    CU_ASSERT_FATAL(js != NULL);
    CU_ASSERT_EQUAL(js->tensors, 3);
    CU_ASSERT_EQUAL(js->hbm_bytes, 3 * MIB);
    CU_ASSERT_EQUAL(js->quota_refused, 1);
    js = job_stats(st, 2);
    CU_ASSERT_FATAL(js != NULL);
    CU_ASSERT_EQUAL(js->tensors, 3);
    CU_ASSERT_EQUAL(js->hbm_bytes, 6 * MIB);
    CU_ASSERT_EQUAL(js->quota_refused, 0);

    /* freeing gives the quota back; then the HBM quota is the one that bites */
    TEST_ASSERT_OK(memsvc_free(a, h[2]));
    TEST_ASSERT_OK(memsvc_flush(a));
    CU_ASSERT_EQUAL(memsvc_alloc(a, "big", 7 * MIB, NULL, &h[3]), MEMSVC_ERR_QUOTA);
    TEST_ASSERT_OK(memsvc_alloc(a, "fits", 6 * MIB, NULL, &h[2]));

    /* the reply names the quota (a raw peer sees the message) */
    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 1, 1);
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, len, NULL, 0, &status, NULL, NULL, 0));
    TEST_ASSERT_OK(status);
    snprintf(req.u.alloc.key, sizeof(req.u.alloc.key), "raw");
    req.u.alloc.size = 1 * MIB;
    len              = encode_one(&req, hdr, sizeof(hdr));
    CU_ASSERT_FATAL(len > 0);
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, len, NULL, 0, &status, NULL, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(status, MEMSVC_ERR_QUOTA);
    CU_ASSERT(strstr(msg, "tensors quota 3") != NULL);
    integ_raw_close(raw);

    for (i = 0; i < 3; i++) {
        TEST_ASSERT_OK(memsvc_free(a, h[i]));
    }
    TEST_ASSERT_OK(memsvc_flush(a));
    TEST_ASSERT_OK(integ_stats(&d, st));
    js = job_stats(st, 1);
    CU_ASSERT_FATAL(js != NULL); /* listed still: it was refused */
    CU_ASSERT_EQUAL(js->tensors, 0);
    CU_ASSERT_EQUAL(js->hbm_bytes, 0);
    CU_ASSERT_EQUAL(js->quota_refused, 3);
    memsvc_close(a);
    memsvc_close(b);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* ---- flood: reads never taken, writes streamed; another client on another device ------------- */

static void test_flood_rss_bounded_other_served(void)
{
    static const char *const      args[] = {"--node",     "tiny",
                                            "--memory",   "backed",
                                            "hbm=128MiB", "--session-inflight",
                                            "32MiB",      "--session-queue",
                                            "64",         NULL};
    memsvc_stats_t               *st     = calloc(1, sizeof(*st));
    const memsvc_session_stats_t *ss;
    integ_daemon_t                d;
    integ_raw_t                  *reader, *writer;
    memsvc_conn_h                 owner, other;
    memsvc_handle_t               big, mine;
    memsvc_status_t               status;
    msp_req_t                     req = {0};
    uint8_t                       hdr[512], *bytes = malloc(32 * MIB), want[65536], got[65536];
    size_t                        len;
    long                          rss0, rss, rss_max = 0, limit_kb;
    uint64_t                      t0, worst = 0, deadline;
    unsigned                      i, ops    = 0;

    CU_ASSERT_FATAL((st != NULL) && (bytes != NULL));
    START(&d, args);
    /* job 1 device 0: a 32 MiB tensor, written; job 2 device 1: a small one */
    TEST_ASSERT_OK(connect_as(&d, 1, 0, 0, &owner));
    TEST_ASSERT_OK(memsvc_alloc(owner, "big", 32 * MIB, NULL, &big));
    test_fill(bytes, 32 * MIB, 5);
    TEST_ASSERT_OK(memsvc_write(owner, big, 0, bytes, 32 * MIB));
    TEST_ASSERT_OK(connect_as(&d, 2, 1, 0, &other));
    TEST_ASSERT_OK(memsvc_alloc(other, "mine", sizeof(want), NULL, &mine));
    test_fill(want, sizeof(want), 6);
    TEST_ASSERT_OK(memsvc_write(other, mine, 0, want, sizeof(want)));

    rss0 = proc_rss_kb(d.pid);
    /* the reader's and the writer's budgets, the daemon's pool of kept buffers (64 MiB,
     * MSD_POOL_BYTES) and slack for UCX's own buffers */
    limit_kb = rss0 + (long)((2 * 32 + 64) * MIB / 1024) + 96 * 1024;
    CU_ASSERT_FATAL(rss0 > 0);

    /* 48 reads of 32 MiB, never taken (the reader never progresses again) */
    TEST_ASSERT_OK(integ_raw_connect(&d, &reader));
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 1, 2);
    TEST_ASSERT_OK(integ_raw_call(reader, hdr, len, NULL, 0, &status, NULL, NULL, 0));
    TEST_ASSERT_OK(status);
    for (i = 0; i < 48; i++) {
        req             = (msp_req_t){.op = MSP_OP_READ, .id = 100 + i};
        req.u.io.handle = big;
        req.u.io.len    = 32 * MIB;
        len             = encode_one(&req, hdr, sizeof(hdr));
        TEST_ASSERT_OK(integ_raw_post(reader, hdr, len, NULL, 0));
    }
    /* writes of 8 MiB streamed by another session of job 1, as fast as it can post them */
    TEST_ASSERT_OK(integ_raw_connect(&d, &writer));
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 1, 3);
    TEST_ASSERT_OK(integ_raw_call(writer, hdr, len, NULL, 0, &status, NULL, NULL, 0));
    TEST_ASSERT_OK(status);
    for (i = 0; i < 48; i++) {
        req             = (msp_req_t){.op = MSP_OP_WRITE, .id = 200 + i};
        req.u.io.handle = big;
        req.u.io.offset = 8 * MIB * (i % 4);
        req.u.io.len    = 8 * MIB;
        len             = encode_one(&req, hdr, sizeof(hdr));
        TEST_ASSERT_OK(integ_raw_post(writer, hdr, len, bytes + req.u.io.offset, 8 * MIB));
    }

    /* meanwhile: the other job's acquires, each within the no-stall bound, its bytes exact */
    deadline = msp_now_ns() + 3000000000ull;
    while (msp_now_ns() < deadline) {
        integ_raw_progress(writer, 20000000ull);
        t0     = msp_now_ns();
        status = memsvc_acquire(other, mine);
        if (status == MEMSVC_OK) {
            status = memsvc_release(other, mine);
        }
        if (msp_now_ns() - t0 > worst) {
            worst = msp_now_ns() - t0;
        }
        CU_ASSERT_EQUAL(status, MEMSVC_OK);
        ops++;
        rss     = proc_rss_kb(d.pid);
        rss_max = (rss > rss_max) ? rss : rss_max;
    }
    memset(got, 0, sizeof(got));
    TEST_ASSERT_OK(memsvc_read(other, mine, 0, got, sizeof(got)));
    CU_ASSERT(memcmp(got, want, sizeof(got)) == 0);
    CU_ASSERT(ops > 10);
    CU_ASSERT(worst < OP_TIMEOUT_NS);
    CU_ASSERT(rss_max <= limit_kb);
    if ((rss_max > limit_kb) || (worst >= OP_TIMEOUT_NS)) {
        fprintf(stderr,
                "memsvcd RSS %ld kB, bound %ld kB (start %ld kB); slowest acquire %.1f ms\n",
                rss_max, limit_kb, rss0, (double)worst / 1e6);
    }
    /* the flood really arrived and waits: the reader's reads are queued, not dropped */
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->deferred > 0);
    CU_ASSERT_EQUAL(st->overloads, 0);
    ss = NULL;
    for (i = 0; i < st->num_sessions; i++) {
        if (st->session[i].rank == 2) {
            ss = &st->session[i];
        }
    }
    CU_ASSERT_FATAL(ss != NULL);
    CU_ASSERT(ss->queued > 0);
    CU_ASSERT(ss->inflight_bytes <= 32 * MIB);

    /* the reader goes away: what it kept is dropped, the daemon serves on */
    integ_raw_close(reader);
    integ_raw_close(writer);
    TEST_ASSERT_OK(memsvc_read(owner, big, 0, bytes, 4096));
    memsvc_close(owner);
    memsvc_close(other);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(bytes);
    free(st);
}

/* A session past --session-queue waiting messages is answered OVERLOAD, by name. */
static void test_overload_named(void)
{
    static const char *const args[] = {
        "--node",          "tiny", "--memory", "backed", "--no-unix", "--session-inflight", "1MiB",
        "--session-queue", "4",    NULL};
    memsvc_stats_t *st = calloc(1, sizeof(*st));
    integ_daemon_t  d;
    integ_raw_t    *raw;
    memsvc_conn_h   owner;
    memsvc_handle_t h;
    memsvc_status_t status;
    msp_req_t       req;
    uint8_t         hdr[512];
    char            msg[MSP_MSG_MAX + 1] = "";
    size_t          len;
    unsigned        i;

    CU_ASSERT_FATAL(st != NULL);
    START(&d, args);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &owner));
    TEST_ASSERT_OK(memsvc_alloc(owner, "t", 8 * MIB, NULL, &h));
    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 1, 2);
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, len, NULL, 0, &status, NULL, NULL, 0));
    TEST_ASSERT_OK(status);
    for (i = 0; i < 5; i++) { /* one in flight, four wait */
        req             = (msp_req_t){.op = MSP_OP_READ, .id = 10 + i};
        req.u.io.handle = h;
        req.u.io.len    = 8 * MIB;
        len             = encode_one(&req, hdr, sizeof(hdr));
        TEST_ASSERT_OK(integ_raw_post(raw, hdr, len, NULL, 0));
    }
    req = (msp_req_t){.op = MSP_OP_PING, .id = 99};
    len = encode_one(&req, hdr, sizeof(hdr));
    /* the sixth message finds the queue full (the peer has taken nothing yet) */
    TEST_ASSERT_OK(integ_raw_post(raw, hdr, len, NULL, 0));
    TEST_ASSERT_OK(integ_raw_wait_id(raw, 99, 10000000000ull, &status, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(status, MEMSVC_ERR_OVERLOAD);
    CU_ASSERT(strstr(msg, "--session-queue") != NULL);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->overloads >= 1);
    integ_raw_close(raw);
    memsvc_close(owner);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* ---- connection flood ---------------------------------------------------------------------------
 */

static void err_cb_ignore(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    (void)arg;
    (void)ep;
    (void)status;
}

static void test_connection_flood(void)
{
    static const char *const args[] = {
        "--node", "tiny", "--max-sessions", "16", "--handshake-timeout", "1", NULL};
    enum { NFLOOD = 200 };
    ucp_params_t        cp = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_AM};
    ucp_worker_params_t wp = {.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};
    memsvc_stats_t     *st = calloc(1, sizeof(*st));
    ucp_ep_h            eps[NFLOOD];
    struct sockaddr_storage ss;
    socklen_t               sslen;
    struct rlimit           rl;
    ucp_context_h           ctx;
    ucp_worker_h            worker;
    integ_daemon_t          d;
    memsvc_conn_h           conn;
    memsvc_handle_t         h;
    integ_raw_t            *silent;
    unsigned                i, n = 0;
    int                     fds0, fds, fds_max = 0;
    uint64_t                rtt;

    CU_ASSERT_FATAL(st != NULL);
    if ((getrlimit(RLIMIT_NOFILE, &rl) == 0) && (rl.rlim_cur < rl.rlim_max)) {
        rl.rlim_cur = rl.rlim_max; /* this process holds the flood's sockets */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    START(&d, args);
    /* one silent connection alone: closed after the handshake timeout, and counted */
    TEST_ASSERT_OK(integ_raw_connect(&d, &silent));
    integ_raw_progress(silent, 1500000000ull);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->handshake_timeouts, 1);
    integ_raw_close(silent);
    fds0 = proc_fds(d.pid);
    CU_ASSERT_FATAL(fds0 > 0);
    TEST_ASSERT_OK(msp_parse_addr(d.addr, &ss, &sslen) == MEMSVC_OK ? MEMSVC_OK : MEMSVC_ERR_PARSE);
    CU_ASSERT_FATAL(ucp_init(&cp, NULL, &ctx) == UCS_OK);
    CU_ASSERT_FATAL(ucp_worker_create(ctx, &wp, &worker) == UCS_OK);
    for (i = 0; i < NFLOOD; i++) {
        ucp_ep_params_t ep = {0};

        ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        ep.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        ep.sockaddr.addr    = (struct sockaddr *)&ss;
        ep.sockaddr.addrlen = sslen;
        ep.err_mode         = UCP_ERR_HANDLING_MODE_PEER;
        ep.err_handler.cb   = err_cb_ignore;
        if (ucp_ep_create(worker, &ep, &eps[n]) == UCS_OK) {
            n++;
        }
        ucp_worker_progress(worker);
    }
    CU_ASSERT(n > NFLOOD / 2);
    /* during the flood: the daemon's fds stay bounded, a real client gets in and works */
    for (i = 0; i < 20; i++) {
        {
            uint64_t until = msp_now_ns() + 50000000ull;

            while (msp_now_ns() < until) {
                ucp_worker_progress(worker);
            }
        }
        fds = proc_fds(d.pid);
        if (i >= 2) { /* past the burst's own transient (the listener's backlog) */
            fds_max = (fds > fds_max) ? fds : fds_max;
        }
    }
    TEST_ASSERT_OK(integ_connect(&d, 4, 0, &conn));
    TEST_ASSERT_OK(memsvc_ping(conn, &rtt));
    TEST_ASSERT_OK(memsvc_alloc(conn, "during", 4096, NULL, &h));
    memsvc_close(conn);
    CU_ASSERT(fds_max <= fds0 + 16 * 3 + 128); /* uncapped: 200 connections x 2-3 fds */
    if (fds_max > fds0 + 16 * 3 + 128) {
        fprintf(stderr, "memsvcd fds: %d at start, %d during the flood\n", fds0, fds_max);
    }
    /* after the handshake timeout the silent ones are gone and counted */
    {
        uint64_t until = msp_now_ns() + 1500000000ull;

        while (msp_now_ns() < until) {
            ucp_worker_progress(worker);
        }
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->sessions_refused > 0);
    CU_ASSERT(st->sessions <= 16);
    TEST_ASSERT_OK(integ_connect(&d, 4, 0, &conn));
    TEST_ASSERT_OK(memsvc_ping(conn, &rtt));
    memsvc_close(conn);
    for (i = 0; i < n; i++) {
        ucp_request_param_t p  = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                  .flags        = UCP_EP_CLOSE_FLAG_FORCE};
        ucs_status_ptr_t    sp = ucp_ep_close_nbx(eps[i], &p);

        if (UCS_PTR_IS_PTR(sp)) {
            ucp_request_free(sp);
        }
    }
    ucp_worker_progress(worker);
    ucp_worker_destroy(worker);
    ucp_cleanup(ctx);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    /* the log stays short: refusals and timeouts are rate-limited */
    CU_ASSERT(file_lines(d.log) < 200);
    free(st);
}

/* ---- a stopped client holding pins
 * --------------------------------------------------------------- */

/* Child "limits-pin": job 7 on device 0 holds a 48 MiB tensor pinned; stops itself; when
 * continued, tries to release it and exits 10 + -status (a named error expected). */
static void child_pin(integ_daemon_t *d, int fd)
{
    memsvc_conn_h   conn;
    memsvc_handle_t h;
    memsvc_status_t status;
    char            c = 'y';

    if ((integ_connect(d, 7, 0, &conn) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "held", 48 * MIB, NULL, &h) != MEMSVC_OK) ||
        (memsvc_acquire(conn, h) != MEMSVC_OK) || (write(fd, &c, 1) != 1)) {
        _exit(1);
    }
    raise(SIGSTOP);
    status = memsvc_acquire(conn, h);
    if (status >= 0) {
        _exit(2); /* the session should be gone */
    }
    if (strcmp(memsvc_status_name(status), "MEMSVC_ERR_UNKNOWN") == 0) {
        _exit(3);
    }
    _exit(10 + (-status));
}

/* Child "limits-many": job 9 owns TEARDOWN_N small tensors (allocated 64 per message), then
 * waits to be killed. */
#if defined(__SANITIZE_ADDRESS__)
#define TEARDOWN_N 50000u /* allocating 200k under ASan outlasts integ_spawn's 20 s */
#else
#define TEARDOWN_N 200000u
#endif
static void child_many(integ_daemon_t *d, int fd)
{
    memsvc_batch_h batch;
    memsvc_conn_h  conn;
    unsigned       i = 0, k;
    char           key[32], c = 'y';

    if ((integ_connect(d, 9, 0, &conn) != MEMSVC_OK) ||
        (memsvc_batch_create(conn, &batch) != MEMSVC_OK)) {
        _exit(1);
    }
    while (i < TEARDOWN_N) {
        memsvc_batch_reset(batch);
        for (k = 0; (k < 64) && (i < TEARDOWN_N); k++, i++) {
            snprintf(key, sizeof(key), "m%u", i);
            if (memsvc_batch_alloc(batch, key, 256, NULL, NULL) != MEMSVC_OK) {
                _exit(1);
            }
        }
        if (memsvc_batch_submit(batch, NULL) != MEMSVC_OK) {
            _exit(1);
        }
    }
    if (write(fd, &c, 1) != 1) {
        _exit(1);
    }
    for (;;) {
        pause();
    }
}

void integ_limits_child(integ_daemon_t *d, const char *role, int ready_fd)
{
    if (strcmp(role, "limits-pin") == 0) {
        child_pin(d, ready_fd);
    } else if (strcmp(role, "limits-many") == 0) {
        child_many(d, ready_fd);
    }
    _exit(2);
}

/* A session that owned 200k tensors (50k under ASan) dies: they go in slices, pings of another
 * client go on. */
static void test_big_teardown_sliced(void)
{
    static const char *const args[] = {"--node", "tiny", "hbm=1GiB", NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    integ_daemon_t           d;
    memsvc_conn_h            pinger;
    uint64_t                 t0, worst = 0, deadline, rtt;
    unsigned                 pings = 0;
    bool                     gone  = false;
    char                     line[64];
    int                      wst;
    pid_t                    pid;

    CU_ASSERT_FATAL(st != NULL);
    START(&d, args);
    TEST_ASSERT_OK(connect_as(&d, 10, 1, 0, &pinger));
    pid = integ_spawn(&d, "limits-many");
    CU_ASSERT_FATAL(pid > 0);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->live_tensors, TEARDOWN_N);
    kill(pid, SIGKILL);
    waitpid(pid, &wst, 0);
    deadline = msp_now_ns() + 60000000000ull;
    while (!gone && (msp_now_ns() < deadline)) {
        t0 = msp_now_ns();
        TEST_ASSERT_OK(memsvc_ping(pinger, &rtt));
        worst = (msp_now_ns() - t0 > worst) ? msp_now_ns() - t0 : worst;
        pings++;
        if (pings % 16 == 0) {
            TEST_ASSERT_OK(integ_stats(&d, st));
            gone = (st->live_tensors == 0);
        }
    }
    CU_ASSERT(gone);
    CU_ASSERT(worst < OP_TIMEOUT_NS);
    snprintf(line, sizeof(line), "%u owned tensors to free or keep", TEARDOWN_N);
    CU_ASSERT(integ_log_contains(&d, line));
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->live_tensors, 0);
    CU_ASSERT_PTR_NULL(job_stats(st, 9));
    memsvc_close(pinger);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static void test_stopped_client_evicted(void)
{
    static const char *const      args[] = {"--node", "tiny", "--memory", "backed", NULL};
    memsvc_stats_t               *st     = calloc(1, sizeof(*st));
    const memsvc_session_stats_t *ss;
    integ_daemon_t                d;
    memsvc_conn_h                 other, ctl;
    memsvc_handle_t               h;
    memsvc_status_t               status = MEMSVC_ERR_NO_MEMORY;
    uint64_t                      deadline, victim;
    int                           wst = 0;
    pid_t                         pid;

    CU_ASSERT_FATAL(st != NULL);
    START(&d, args);
    pid = integ_spawn(&d, "limits-pin");
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_FATAL(waitpid(pid, &wst, WUNTRACED) == pid);
    CU_ASSERT_FATAL(WIFSTOPPED(wst));
    /* the device is blocked: nothing pinned can move */
    TEST_ASSERT_OK(integ_connect(&d, 8, 0, &other));
    CU_ASSERT_EQUAL(memsvc_alloc(other, "want", 32 * MIB, NULL, &h), MEMSVC_ERR_NO_MEMORY);
    usleep(200000);
    TEST_ASSERT_OK(integ_stats(&d, st));
    ss = session_of_job(st, 7);
    CU_ASSERT_FATAL(ss != NULL);
    CU_ASSERT_EQUAL(ss->pins, 1);
    CU_ASSERT(ss->oldest_pin_ns >= 200000000ull);
    CU_ASSERT(ss->idle_ns >= 200000000ull);
    CU_ASSERT_EQUAL(ss->pid, (uint32_t)pid);
    victim = ss->id;

    /* a trainer may not evict; a control session may */
    CU_ASSERT_EQUAL(memsvc_evict(other, victim), MEMSVC_ERR_ACCESS);
    TEST_ASSERT_OK(connect_as(&d, 0, 0, MEMSVC_CONN_CONTROL, &ctl));
    CU_ASSERT_EQUAL(memsvc_evict(ctl, 999999), MEMSVC_ERR_NOT_FOUND);
    TEST_ASSERT_OK(memsvc_evict(ctl, victim));
    memsvc_close(ctl);
    deadline = msp_now_ns() + 5000000000ull;
    while ((status == MEMSVC_ERR_NO_MEMORY) && (msp_now_ns() < deadline)) {
        usleep(20000);
        status = memsvc_alloc(other, "want", 32 * MIB, NULL, &h);
    }
    CU_ASSERT_EQUAL(status, MEMSVC_OK);
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_EQUAL(st->evictions, 1);
    CU_ASSERT_PTR_NULL(session_of_job(st, 7));

    /* the evicted client, continued, gets a named error and exits on its own */
    kill(pid, SIGCONT);
    deadline = msp_now_ns() + 20000000000ull;
    while ((waitpid(pid, &wst, WNOHANG) != pid) && (msp_now_ns() < deadline)) {
        usleep(20000);
    }
    CU_ASSERT(WIFEXITED(wst) && (WEXITSTATUS(wst) >= 10));
    if (WIFEXITED(wst) && (WEXITSTATUS(wst) >= 10)) {
        CU_ASSERT((memsvc_status_t)(10 - WEXITSTATUS(wst)) > MEMSVC_ERR_LAST);
    } else {
        kill(pid, SIGKILL);
        waitpid(pid, &wst, 0);
    }
    memsvc_close(other);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* ---- paged listing ----------------------------------------------------------------------------
 */

typedef struct seen {
    uint8_t *count; /* per key index */
    unsigned n, total, foreign;
} seen_t;

static bool seen_one(void *arg, const memsvc_tensor_info_t *t)
{
    seen_t  *sn = arg;
    unsigned i;

    sn->total++;
    if ((sscanf(t->key, "t%u", &i) != 1) || (i >= sn->n) || (t->job != 5)) {
        sn->foreign++;
        return true;
    }
    sn->count[i]++;
    return true;
}

static void test_list_paged_exactly_once(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    enum { N = 3000 };
    memsvc_handle_t *h  = calloc(N, sizeof(*h));
    seen_t           sn = {.count = calloc(N, 1), .n = N};
    integ_daemon_t   d;
    memsvc_conn_h    conn, other, ctl;
    memsvc_handle_t  x;
    unsigned         i, once = 0;
    char             key[32];

    CU_ASSERT_FATAL((h != NULL) && (sn.count != NULL));
    START(&d, args);
    TEST_ASSERT_OK(integ_connect(&d, 5, 0, &conn));
    TEST_ASSERT_OK(integ_connect(&d, 6, 0, &other));
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "t%u", i);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, 4096, NULL, &h[i]));
        if (i % 7 == 0) { /* another job's tensors in between */
            snprintf(key, sizeof(key), "o%u", i);
            TEST_ASSERT_OK(memsvc_alloc(other, key, 4096, NULL, &x));
        }
    }
    for (i = 0; i < N; i += 3) { /* holes */
        TEST_ASSERT_OK(memsvc_free(conn, h[i]));
    }
    TEST_ASSERT_OK(memsvc_flush(conn));
    TEST_ASSERT_OK(memsvc_list(conn, 5, seen_one, &sn));
    for (i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(sn.count[i], (i % 3 == 0) ? 0 : 1);
        once += (sn.count[i] == 1) ? 1 : 0;
    }
    CU_ASSERT_EQUAL(once, N - (N + 2) / 3);
    CU_ASSERT_EQUAL(sn.foreign, 0);
    /* a control session pages through every job */
    memset(sn.count, 0, N);
    sn.total = sn.foreign = 0;
    TEST_ASSERT_OK(connect_as(&d, 0, 0, MEMSVC_CONN_CONTROL, &ctl));
    TEST_ASSERT_OK(memsvc_list(ctl, UINT32_MAX, seen_one, &sn));
    CU_ASSERT_EQUAL(sn.total, N - (N + 2) / 3 + (N + 6) / 7);
    CU_ASSERT_EQUAL(sn.foreign, (N + 6) / 7);
    memsvc_close(ctl);
    memsvc_close(conn);
    memsvc_close(other);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(h);
    free(sn.count);
}

/* ---- bad options ---------------------------------------------------------------------------- */

static void test_limit_options_checked(void)
{
    static const char *const bad[][3] = {
        {"--job-quota", "hbm=lots", NULL},   {"--job-quota", "gpu=1", NULL},
        {"--job-quota", "tensors=-1", NULL}, {"--session-inflight", "big", NULL},
        {"--max-sessions", "0", NULL},       {"--handshake-timeout", "0", NULL},
        {"--session-queue", "1.5", NULL},
    };
    char     cmd[512];
    unsigned i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(cmd, sizeof(cmd), "%s/memsvcd --node tiny --listen 127.0.0.1:1 %s %s 2>/dev/null",
                 test_bin_dir(), bad[i][0], bad[i][1]);
        CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 2);
    }
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("limits", NULL, NULL);

    CU_add_test(s, "LOG_RL: one line per interval, then a summary", test_log_rate_limited);
    CU_add_test(s, "quota: named status, other jobs unaffected, stats agree",
                test_quota_named_others_unaffected);
    CU_add_test(s, "flood of reads and writes: RSS bounded, others served",
                test_flood_rss_bounded_other_served);
    CU_add_test(s, "past --session-queue: OVERLOAD by name", test_overload_named);
    CU_add_test(s, "connection flood: fds and log bounded, clients get in", test_connection_flood);
    CU_add_test(s, "stopped client: pins in stats, evict frees the device",
                test_stopped_client_evicted);
    CU_add_test(s, "a 200k-tensor session torn down in slices, pings go on",
                test_big_teardown_sliced);
    CU_add_test(s, "paged list: every tensor exactly once", test_list_paged_exactly_once);
    CU_add_test(s, "limit options are checked", test_limit_options_checked);
}

TEST_REGISTER(limits, add_suite)
