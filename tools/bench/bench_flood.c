/* bench_flood.c - one client floods memsvcd (reads never taken, streamed writes, silent
 * connections); another client's acquire latency and the daemon's RSS meanwhile */
#include "client/memsvc.h"
#include "client/msp_proto.h"
#include "client/msp_ucx.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * usage: bench_flood ADDR victim SECS DAEMON_PID
 *            job 2 on device 1: acquire + release of a resident 4 KiB tensor for SECS;
 *            prints acquire_p50_us, acquire_p99_us, acquire_max_us, ops, and the daemon's
 *            rss_max_kb (VmRSS sampled every 64 operations)
 *        bench_flood ADDR reads|writes|conns SECS
 *            job 1 on device 0 floods for SECS, then exits:
 *              reads   48 READs of 32 MiB posted on a raw UCX endpoint that never takes them
 *              writes  WRITEs of 8 MiB streamed, up to 64 in flight
 *              conns   300 UCX connections that never say HELLO, closed and opened again
 *                      every second
 * Exits non-zero with a message on any error.
 */

#define MIB (1ull << 20)
#define POSTED_MAX 64

static const char *addr;

static void die(const char *what, memsvc_status_t status)
{
    fprintf(stderr, "bench_flood: %s: %s\n", what, memsvc_strerror(status));
    exit(1);
}

static memsvc_conn_h connect_job(uint32_t job, uint32_t device)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_DEVICE | MEMSVC_CONN_FIELD_NAME,
                              .address = addr,
                              .job     = job,
                              .device  = device,
                              .name    = "bench_flood"};
    memsvc_status_t      status;
    memsvc_conn_h        conn;

    status = memsvc_connect(&p, &conn);
    if (status != MEMSVC_OK) {
        die("connect", status);
    }
    return conn;
}

static long rss_kb(int pid)
{
    char  path[64], line[256];
    long  kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
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

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

static void victim(double secs, int pid)
{
    memsvc_conn_h   conn = connect_job(2, 1);
    memsvc_handle_t h;
    size_t          cap = 1u << 20, n = 0;
    uint64_t       *t = calloc(cap, sizeof(*t)), t0, end;
    long            rss, rss_max = rss_kb(pid);
    memsvc_status_t status;

    if (t == NULL) {
        die("victim", MEMSVC_ERR_NO_RESOURCE);
    }
    status = memsvc_alloc(conn, "victim", 4096, NULL, &h);
    if (status != MEMSVC_OK) {
        die("alloc", status);
    }
    end = msp_now_ns() + (uint64_t)(secs * 1e9);
    while ((msp_now_ns() < end) && (n < cap)) {
        t0     = msp_now_ns();
        status = memsvc_acquire(conn, h);
        t[n++] = msp_now_ns() - t0;
        if ((status != MEMSVC_OK) || ((status = memsvc_release(conn, h)) != MEMSVC_OK)) {
            die("acquire/release", status);
        }
        if ((n % 64) == 0) {
            rss     = rss_kb(pid);
            rss_max = (rss > rss_max) ? rss : rss_max;
        }
    }
    qsort(t, n, sizeof(*t), cmp_u64);
    printf("acquire_p50_us %.2f\n", t[n / 2] / 1e3);
    printf("acquire_p99_us %.2f\n", t[(n * 99) / 100] / 1e3);
    printf("acquire_max_us %.2f\n", t[n - 1] / 1e3);
    printf("ops %zu\n", n);
    printf("rss_max_kb %ld\n", rss_max);
    memsvc_free(conn, h);
    memsvc_flush(conn);
    memsvc_close(conn);
    free(t);
}

/* ---- a raw UCX peer ---------------------------------------------------------------------------
 */

typedef struct raw {
    ucp_context_h ctx;
    ucp_worker_h  worker;
    ucp_ep_h      ep;
    unsigned      replies;
    void         *posted[POSTED_MAX];
} raw_t;

static ucs_status_t raw_reply_cb(void *arg, const void *header, size_t header_length, void *data,
                                 size_t length, const ucp_am_recv_param_t *param)
{
    ((raw_t *)arg)->replies++;
    return UCS_OK;
}

static void raw_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
}

static ucp_ep_h raw_ep(ucp_worker_h worker, void *arg)
{
    ucp_ep_params_t         ep = {0};
    struct sockaddr_storage ss;
    socklen_t               sslen;
    ucp_ep_h                h;

    if (msp_parse_addr(addr, &ss, &sslen) != MEMSVC_OK) {
        die("address", MEMSVC_ERR_PARSE);
    }
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr    = (struct sockaddr *)&ss;
    ep.sockaddr.addrlen = sslen;
    ep.err_mode         = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb   = raw_err_cb;
    ep.err_handler.arg  = arg;
    if (ucp_ep_create(worker, &ep, &h) != UCS_OK) {
        die("ucp_ep_create", MEMSVC_ERR_TRANSPORT);
    }
    return h;
}

static void raw_init(raw_t *raw)
{
    ucp_params_t        cp = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_AM};
    ucp_worker_params_t wp = {.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};

    memset(raw, 0, sizeof(*raw));
    if ((ucp_init(&cp, NULL, &raw->ctx) != UCS_OK) ||
        (ucp_worker_create(raw->ctx, &wp, &raw->worker) != UCS_OK)) {
        die("ucx", MEMSVC_ERR_TRANSPORT);
    }
    msp_ucx_am_handler(raw->worker, MSP_AM_REPLY, raw_reply_cb, raw);
}

/* Send one request; returns its UCX request (NULL: done at once). The header is a heap copy
 * that is never freed: a flood's few hundred bytes a message, gone with the process. */
static void *raw_post(raw_t *raw, const msp_req_t *req, const void *payload, size_t plen)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags        = UCP_AM_SEND_FLAG_REPLY};
    uint8_t            *hdr   = malloc(512); /* read by UCX until the send completes: leaked */
    msp_buf_t           b     = {hdr, 512, 0, false};
    ucs_status_ptr_t    sp;

    if ((hdr == NULL) || (msp_encode_requests(req, 1, &b) != MEMSVC_OK)) {
        die("encode", MEMSVC_ERR_PROTOCOL);
    }
    sp = ucp_am_send_nbx(raw->ep, MSP_AM_REQUEST, hdr, b.len, payload, plen, &param);
    if (UCS_PTR_IS_ERR(sp)) {
        die("send", MEMSVC_ERR_TRANSPORT);
    }
    return UCS_PTR_IS_PTR(sp) ? sp : NULL;
}

/* HELLO as job 1 and wait for its answer. */
static void raw_hello(raw_t *raw)
{
    msp_req_t req = {.op = MSP_OP_HELLO, .id = 1};
    uint64_t  end = msp_now_ns() + 10000000000ull;
    void     *sp;

    req.u.hello.version = MSP_VERSION;
    req.u.hello.job     = 1;
    req.u.hello.rank    = 9;
    snprintf(req.u.hello.name, sizeof(req.u.hello.name), "flood");
    raw->ep = raw_ep(raw->worker, raw);
    sp      = raw_post(raw, &req, NULL, 0);
    while ((raw->replies == 0) && (msp_now_ns() < end)) {
        ucp_worker_progress(raw->worker);
    }
    if (sp != NULL) {
        ucp_request_free(sp);
    }
    if (raw->replies == 0) {
        die("hello", MEMSVC_ERR_TIMEOUT);
    }
}

static void flood(const char *mode, double secs)
{
    memsvc_conn_h   owner = connect_job(1, 0);
    memsvc_handle_t big;
    memsvc_status_t status;
    uint8_t        *bytes = calloc(1, 32 * MIB);
    uint64_t        end;
    msp_req_t       req;
    raw_t           raw;
    unsigned        i, k;

    if (bytes == NULL) {
        die("flood", MEMSVC_ERR_NO_RESOURCE);
    }
    status = memsvc_alloc(owner, "flood.big", 32 * MIB, NULL, &big);
    if ((status != MEMSVC_OK) || ((status = memsvc_write(owner, big, 0, bytes, 32 * MIB)) != 0)) {
        die("flood tensor", status);
    }
    raw_init(&raw);
    end = msp_now_ns() + (uint64_t)(secs * 1e9);
    if (strcmp(mode, "reads") == 0) {
        raw_hello(&raw);
        for (i = 0; i < 48; i++) {
            req             = (msp_req_t){.op = MSP_OP_READ, .id = 100 + i};
            req.u.io.handle = big;
            req.u.io.len    = 32 * MIB;
            raw_post(&raw, &req, NULL, 0); /* never taken: requests leak with the process */
        }
        while (msp_now_ns() < end) {
            usleep(10000); /* and never progressed */
        }
    } else if (strcmp(mode, "writes") == 0) {
        raw_hello(&raw);
        for (i = 0; msp_now_ns() < end; i++) {
            k = i % POSTED_MAX;
            while ((raw.posted[k] != NULL) &&
                   (ucp_request_check_status(raw.posted[k]) == UCS_INPROGRESS) &&
                   (msp_now_ns() < end)) {
                ucp_worker_progress(raw.worker);
            }
            if (raw.posted[k] != NULL) {
                ucp_request_free(raw.posted[k]);
            }
            req             = (msp_req_t){.op = MSP_OP_WRITE, .id = 1000 + i};
            req.u.io.handle = big;
            req.u.io.offset = 8 * MIB * (i % 4);
            req.u.io.len    = 8 * MIB;
            raw.posted[k]   = raw_post(&raw, &req, bytes + req.u.io.offset, 8 * MIB);
            ucp_worker_progress(raw.worker);
        }
    } else if (strcmp(mode, "conns") == 0) {
        static ucp_ep_h eps[300];

        while (msp_now_ns() < end) {
            uint64_t round = msp_now_ns() + 1000000000ull;

            for (i = 0; i < 300; i++) {
                eps[i] = raw_ep(raw.worker, &raw);
                ucp_worker_progress(raw.worker);
            }
            while ((msp_now_ns() < round) && (msp_now_ns() < end)) {
                ucp_worker_progress(raw.worker);
            }
            for (i = 0; i < 300; i++) {
                ucp_request_param_t p  = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                          .flags        = UCP_EP_CLOSE_FLAG_FORCE};
                ucs_status_ptr_t    sp = ucp_ep_close_nbx(eps[i], &p);

                if (UCS_PTR_IS_PTR(sp)) {
                    ucp_request_free(sp);
                }
            }
        }
    } else {
        fprintf(stderr, "bench_flood: unknown flood '%s'\n", mode);
        exit(2);
    }
    _exit(0); /* what is in flight goes with the process, as with a client that dies */
}

int main(int argc, char **argv)
{
    double secs;

    if ((argc < 4) || ((strcmp(argv[2], "victim") == 0) != (argc == 5))) {
        fprintf(stderr, "usage: bench_flood ADDR victim SECS DAEMON_PID | "
                        "bench_flood ADDR reads|writes|conns SECS\n");
        return 2;
    }
    addr = argv[1];
    secs = atof(argv[3]);
    if (!(secs > 0) || (secs > 3600)) {
        fprintf(stderr, "bench_flood: SECS '%s' is not a number of seconds\n", argv[3]);
        return 2;
    }
    if (strcmp(argv[2], "victim") == 0) {
        victim(secs, atoi(argv[4]));
    } else {
        flood(argv[2], secs);
    }
    return 0;
}
