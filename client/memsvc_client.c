/* memsvc_client.c - libmemsvc: connection, request tracking and the calls of client/memsvc.h */
#include "client/mcl_int.h"
#include "client/msp_ucx.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONN_DEFAULT_ADDR "127.0.0.1:13337"
#define CONN_DEFAULT_TIMEOUT 30000u
#define CONN_SPIN_NS 50000ull        /* busy-poll this long before sleeping on the event fd */
/* Local connections: a reply takes ~2.5 us; spinning longer only takes the CPU from the daemon
 * and other trainers when cores are short (measured: 50 us spins cut 2-4 clients' aggregate
 * rate 3-6x on 2 cores; 10 us kept it). */
#define CONN_SPIN_LOCAL_NS 10000ull
#define CONN_BUSY_RETRY_NS 200000ull /* pause before retrying a read/write of a moving tensor */
/* Bytes per READ/WRITE message (the protocol allows MSP_DATA_MAX). 4 MiB bounds the copy the
 * daemon's loop does per message (other clients get their turn in between) and measured 2-3x
 * faster than 64 MiB messages, whose buffers are fresh mappings that page-fault each time. */
#define CONN_CHUNK (4ull << 20)
#define CONN_IO_WINDOW 3u /* chunks of a READ or WRITE in flight at once */
/* Local mapped connections: transfers of at least this many bytes are copied through the
 * mapping (acquire, memcpy, release); smaller ones travel in one message. */
#define CONN_MAP_MIN (64ull << 10)
#define CONN_LOCAL_CHECK_NS 1000000ull /* while spinning, look at the socket this often */
#define CONN_SPIN_CLOCK_TURNS 8u        /* while spinning, read the clock every this many turns */

/*
 * A UCX operation in flight whose callback names requests: a send (it owns the encoded header)
 * or a rendezvous receive (one request). Kept on the connection's list, so that a request
 * freed before the callback runs (the connection failed, the caller gave up, the worker is
 * being destroyed and purges its operations) is unnamed from it: the callback then skips it.
 */
typedef struct conn_op {
    struct conn_op *next, *prev;
    memsvc_conn_h   conn;
    memsvc_req_h    reqs[MSP_BATCH_MAX];
    size_t          nreqs;
    size_t          hlen;
    uint8_t         hdr[];
} conn_op_t;

typedef conn_op_t conn_send_t;

static void op_track(memsvc_conn_h conn, conn_op_t *op)
{
    size_t i;

    op->conn = conn;
    op->prev = NULL;
    op->next = conn->ops;
    if (conn->ops != NULL) {
        conn->ops->prev = op;
    }
    conn->ops = op;
    for (i = 0; i < op->nreqs; i++) {
        if (op->reqs[i] != NULL) {
            op->reqs[i]->ucx_refs++;
        }
    }
}

/* Its callback ran: off the list; the requests it named are no longer named by it. */
static void op_untrack(conn_op_t *op)
{
    size_t i;

    if (op->prev != NULL) {
        op->prev->next = op->next;
    } else {
        op->conn->ops = op->next;
    }
    if (op->next != NULL) {
        op->next->prev = op->prev;
    }
    for (i = 0; i < op->nreqs; i++) {
        if (op->reqs[i] != NULL) {
            op->reqs[i]->ucx_refs--;
        }
    }
}

/* A request is freed: the operations still in flight forget it. */
static void op_unname(memsvc_req_h req)
{
    conn_op_t *op;
    size_t     i;

    for (op = req->conn->ops; (op != NULL) && (req->ucx_refs > 0); op = op->next) {
        for (i = 0; i < op->nreqs; i++) {
            if (op->reqs[i] == req) {
                op->reqs[i] = NULL;
                req->ucx_refs--;
            }
        }
    }
}

/* ---- request list -------------------------------------------------------------------------- */

memsvc_req_h mcl_req_new(memsvc_conn_h conn, uint32_t op)
{
    memsvc_req_h req = calloc(1, sizeof(*req));

    if (req == NULL) {
        return NULL;
    }
    req->conn             = conn;
    req->op               = op;
    req->id               = conn->next_id++;
    req->status           = MEMSVC_INPROGRESS;
    req->next             = &conn->reqs;
    req->prev             = conn->reqs.prev;
    conn->reqs.prev->next = req;
    conn->reqs.prev       = req;
    return req;
}

void mcl_req_unlink_free(memsvc_req_h req)
{
    if (req->batch != NULL) {
        mcl_batch_detach(req->batch);
    }
    req->prev->next = req->next;
    req->next->prev = req->prev;
    if (req->ucx_refs > 0) {
        op_unname(req);
    }
    if (req->own_rbuf) {
        free(req->rbuf);
    }
    free(req);
}

bool mcl_req_finished(memsvc_req_h req)
{
    if (req->batch != NULL) {
        return mcl_batch_done(req->batch);
    }
    return req->done && !req->recv_pending && (req->send_pending == 0);
}

/* Free an abandoned request once nothing refers to it any more. */
static void req_maybe_reap(memsvc_req_h req)
{
    if (req->abandoned && mcl_req_finished(req)) {
        mcl_req_unlink_free(req);
    }
}

static memsvc_req_h req_find(memsvc_conn_h conn, uint64_t id)
{
    memsvc_req_h req;

    for (req = conn->reqs.next; req != &conn->reqs; req = req->next) {
        if (req->id == id) {
            return req;
        }
    }
    return NULL;
}

static void req_complete(memsvc_req_h req, memsvc_status_t status)
{
    if (!req->done) {
        req->done   = true;
        req->status = status;
    }
    req_maybe_reap(req);
}

/* The endpoint failed: every outstanding request fails with `status`. */
static void conn_fail(memsvc_conn_h conn, memsvc_status_t status)
{
    memsvc_req_h req, next;

    if (!conn->broken) {
        conn->broken        = true;
        conn->broken_status = status;
    }
    for (req = conn->reqs.next; req != &conn->reqs; req = next) {
        next = req->next;
        if (req->recv_pending && (req->status >= 0)) {
            req->status = status; /* answered, but its payload never arrived whole */
        }
        req->recv_pending = false;
        req->send_pending = 0;
        req_complete(req, status);
    }
}

/* ---- UCX callbacks ------------------------------------------------------------------------ */

static void conn_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    conn_fail(arg, MEMSVC_ERR_TRANSPORT);
}

static void conn_send_cb(void *request, ucs_status_t status, void *user_data)
{
    conn_send_t *send = user_data;
    size_t       i;

    op_untrack(send);
    for (i = 0; i < send->nreqs; i++) {
        memsvc_req_h req = send->reqs[i];

        if (req == NULL) {
            continue; /* one-way */
        }
        if (req->send_pending > 0) {
            req->send_pending--;
        }
        req_maybe_reap(req);
    }
    free(send);
    ucp_request_free(request);
}

static void conn_recv_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
    conn_op_t   *op  = user_data;
    memsvc_req_h req = op->reqs[0];

    op_untrack(op);
    free(op);
    ucp_request_free(request);
    if (req == NULL) {
        return; /* freed meanwhile */
    }
    req->recv_pending = false;
    if ((status != UCS_OK) && (req->status >= 0)) {
        req->status = msp_from_ucs(status);
    }
    req_maybe_reap(req);
}

/* A READ reply's payload: copy it (eager) or start the rendezvous receive into the buffer. */
static void conn_take_payload(memsvc_conn_h conn, memsvc_req_h req, void *data, size_t length,
                              const ucp_am_recv_param_t *param)
{
    ucp_request_param_t rp = {0};
    ucs_status_ptr_t    sp;
    conn_op_t          *op;

    if ((req->rep.plen != length) || (length > req->rlen) || req->abandoned) {
        if (!req->abandoned) {
            req->status = MEMSVC_ERR_PROTOCOL;
        }
        return; /* returning UCS_OK from the callback drops the data */
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        if (length > 0) {
            memcpy(req->rbuf, data, length);
        }
        return;
    }
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        req->status = MEMSVC_ERR_NO_RESOURCE; /* the payload is dropped */
        return;
    }
    op->reqs[0]     = req;
    op->nreqs       = 1;
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv_am   = conn_recv_cb;
    rp.user_data    = op;
    sp              = ucp_am_recv_data_nbx(conn->worker, data, req->rbuf, length, &rp);
    if (UCS_PTR_IS_ERR(sp)) {
        req->status = msp_from_ucs(UCS_PTR_STATUS(sp));
        free(op);
    } else if (sp != NULL) {
        req->recv_pending = true;
        op_track(conn, op);
    } else {
        free(op);
    }
}

static ucs_status_t conn_am_reply_cb(void *arg, const void *header, size_t header_length,
                                     void *data, size_t length, const ucp_am_recv_param_t *param)
{
    memsvc_conn_h   conn = arg;
    memsvc_status_t status;
    size_t          n, i;

    status = msp_decode_replies(header, header_length, conn->reps, MSP_BATCH_MAX, &n);
    if (status != MEMSVC_OK) {
        fprintf(stderr, "libmemsvc: malformed reply from the daemon (%s); closing\n",
                memsvc_status_name(status));
        conn_fail(conn, MEMSVC_ERR_PROTOCOL);
        return UCS_OK;
    }
    for (i = 0; i < n; i++) {
        msp_rep_t   *rep = &conn->reps[i];
        memsvc_req_h req;

        if ((rep->id == MSP_ID_NOTICE) && (rep->status == MEMSVC_ERR_SHUTDOWN)) {
            conn_fail(conn, MEMSVC_ERR_SHUTDOWN); /* every call from now on says so */
            continue;
        }
        if (mcl_oneway_on_reply(conn, rep)) {
            continue; /* a one-way request's error: queued for memsvc_errors */
        }
        req = req_find(conn, rep->id);

        if ((req == NULL) || req->done) {
            continue; /* a late answer to a request nobody waits for */
        }
        req->rep    = *rep;
        req->status = rep->status;
        if ((rep->status >= 0) && (rep->op != req->op)) {
            req->status = MEMSVC_ERR_PROTOCOL;
        } else if ((rep->status >= 0) && msp_reply_has_payload(req->op)) {
            if (n != 1) {
                req->status = MEMSVC_ERR_PROTOCOL;
            } else {
                conn_take_payload(conn, req, data, length, param);
            }
        }
        req->done = true;
        req_maybe_reap(req);
    }
    return UCS_OK;
}

/* ---- sending and waiting ------------------------------------------------------------------- */

/* Send n requests (already created) in one message, with an optional payload. */
memsvc_status_t mcl_send_raw(memsvc_conn_h conn, memsvc_req_h *reqs, const msp_req_t *msgs,
                             size_t n, const void *payload, size_t plen)
{
    ucp_request_param_t param = {0};
    memsvc_status_t     status;
    ucs_status_ptr_t    sp;
    conn_send_t        *send;
    msp_buf_t           buf;
    size_t              i;
    uint8_t             tmp[MSP_HEADER_MAX];

    if (conn->broken) {
        return conn->broken_status;
    }
    buf    = (msp_buf_t){tmp, sizeof(tmp), 0, false};
    status = msp_encode_requests(msgs, n, &buf);
    if (status != MEMSVC_OK) {
        return status;
    }
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags        = (conn->local.sock >= 0) ? 0 : UCP_AM_SEND_FLAG_REPLY; /* local: own ep */
    if (plen == 0) {
        /* The usual case, a small message the transport takes at once: sent from tmp, with
         * no copy to keep until completion. Only if it would have to wait is it copied. */
        param.op_attr_mask |= UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
        sp = ucp_am_send_nbx(conn->ep, MSP_AM_REQUEST, tmp, buf.len, NULL, 0, &param);
        if (sp == NULL) {
            return MEMSVC_OK;
        }
        /* It would have to wait (or failed: the send below reports it) */
        param.op_attr_mask &= ~(uint32_t)UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL;
    }
    send = malloc(sizeof(*send) + buf.len);
    if (send == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    memcpy(send->hdr, tmp, buf.len);
    send->hlen  = buf.len;
    send->nreqs = n;
    for (i = 0; i < n; i++) {
        send->reqs[i] = reqs[i];
        if (reqs[i] != NULL) {
            reqs[i]->send_pending++;
        }
    }
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.send   = conn_send_cb;
    param.user_data = send;
    sp = ucp_am_send_nbx(conn->ep, MSP_AM_REQUEST, send->hdr, send->hlen, payload, plen, &param);
    if (UCS_PTR_IS_PTR(sp)) {
        op_track(conn, send); /* before any progress can run its callback */
    }
    if (sp == NULL) {
        for (i = 0; i < n; i++) {
            if (reqs[i] != NULL) {
                reqs[i]->send_pending--;
            }
        }
        free(send);
        return MEMSVC_OK;
    }
    if (UCS_PTR_IS_ERR(sp)) {
        for (i = 0; i < n; i++) {
            if (reqs[i] != NULL) {
                reqs[i]->send_pending--;
            }
        }
        free(send);
        return msp_from_ucs(UCS_PTR_STATUS(sp));
    }
    return MEMSVC_OK;
}

/* Progress until *done(arg) or the deadline (absolute, ns). Caller owns the connection. */
static memsvc_status_t conn_wait_until(memsvc_conn_h conn, bool (*done)(void *), void *arg,
                                       uint64_t deadline)
{
    uint64_t start  = msp_now_ns(), now;
    bool     corked = true;
    unsigned turns  = 0;
    int      ms;

    for (;;) {
        while (ucp_worker_progress(conn->worker) != 0) {
        }
        if (done(arg)) {
            return MEMSVC_OK;
        }
        if (corked) {
            /* Not done: nothing waited for may stay behind queued one-way requests (one may
             * free the room it waits for). Done at once, they wait for the next request. */
            mcl_cork_send(conn);
            corked = false;
            continue;
        }
        if ((++turns % CONN_SPIN_CLOCK_TURNS) != 0) {
            continue; /* a clock read costs about as much as a turn's progress */
        }
        now = msp_now_ns();
        if (now >= deadline) {
            return MEMSVC_ERR_TIMEOUT;
        }
        if ((conn->local.sock >= 0) && (now >= conn->local.next_check_ns)) {
            conn->local.next_check_ns = now + CONN_LOCAL_CHECK_NS;
            if (mcl_local_gone(&conn->local)) { /* the daemon's end closed: it died */
                conn_fail(conn, MEMSVC_ERR_TRANSPORT);
                continue;
            }
        }
        if (now - start < conn->spin_ns) {
            continue;
        }
        if (ucp_worker_arm(conn->worker) == UCS_ERR_BUSY) {
            continue;
        }
        ms = (int)((deadline - now) / 1000000ull) + 1;
        if (ms > 100) {
            ms = 100;
        }
        {
            struct pollfd pfd[2] = {{.fd = conn->efd, .events = POLLIN},
                                    {.fd = conn->local.sock, .events = POLLIN}};

            if ((poll(pfd, (conn->local.sock >= 0) ? 2 : 1, ms) > 0) && (pfd[1].revents != 0)) {
                conn->local.next_check_ns = 0; /* look at it now */
            }
        }
    }
}

static bool req_is_finished(void *arg)
{
    return mcl_req_finished(arg);
}

static uint64_t conn_deadline(memsvc_conn_h conn, int timeout_ms)
{
    uint64_t t = (timeout_ms < 0) ? conn->timeout_ms : (uint64_t)timeout_ms;

    return msp_now_ns() + t * 1000000ull;
}

/* Wait for one request; on completion its status is returned and it stays allocated. */
static memsvc_status_t req_wait_keep(memsvc_req_h req, int timeout_ms)
{
    memsvc_status_t status;

    status = conn_wait_until(req->conn, req_is_finished, req, conn_deadline(req->conn, timeout_ms));
    if (status != MEMSVC_OK) {
        return status;
    }
    return req->status;
}

/* Give up on the connection at once (the transport may hold a caller's buffer). */
static void conn_force_close(memsvc_conn_h conn)
{
    ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                             .flags        = UCP_EP_CLOSE_FLAG_FORCE};
    ucs_status_ptr_t    sp;

    if (conn->ep == NULL) {
        return;
    }
    if (conn->local.sock >= 0) {
        /* No error handling on a local endpoint (a forced close is not for it): leave it to
         * the worker's destruction at memsvc_close; nothing progresses it before. */
        conn->ep = NULL;
        conn_fail(conn, MEMSVC_ERR_TIMEOUT);
        return;
    }
    sp       = ucp_ep_close_nbx(conn->ep, &p);
    conn->ep = NULL;
    if (UCS_PTR_IS_PTR(sp)) {
        while (ucp_request_check_status(sp) == UCS_INPROGRESS) {
            ucp_worker_progress(conn->worker);
        }
        ucp_request_free(sp);
    }
    conn_fail(conn, MEMSVC_ERR_TIMEOUT);
}

/* Abandon a request: freed now if nothing refers to it, else when its reply arrives. A
 * receive into a caller's buffer still running makes the connection unusable. */
void mcl_req_abandon(memsvc_req_h req)
{
    if (req->batch != NULL) {
        mcl_req_unlink_free(req); /* the batch abandons its entries */
        return;
    }
    if (req->recv_pending && !req->own_rbuf) {
        conn_force_close(req->conn);
    }
    req->abandoned = true;
    if (req->conn->broken) {
        req->send_pending = 0;
        req->recv_pending = false;
        req->done         = true;
    }
    req_maybe_reap(req);
}

/* Create the request record of msg (sets msg->id); the caller sends it. */
static memsvc_status_t conn_prepare(memsvc_conn_h conn, msp_req_t *msg, memsvc_req_h *req_p)
{
    memsvc_req_h req;

    *req_p = NULL;
    if (conn->broken) {
        return conn->broken_status;
    }
    req = mcl_req_new(conn, msg->op);
    if (req == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    msg->id = req->id;
    *req_p  = req;
    return MEMSVC_OK;
}

/* One request, sent and waited for; *rep_p (optional) gets the reply. */
memsvc_status_t mcl_call(memsvc_conn_h conn, msp_req_t *msg, const void *payload, size_t plen,
                         msp_rep_t *rep_p)
{
    memsvc_status_t status;
    memsvc_req_h    req;

    status = conn_prepare(conn, msg, &req);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = mcl_send(conn, &req, msg, 1, payload, plen);
    if (status != MEMSVC_OK) {
        mcl_req_unlink_free(req);
        return status;
    }
    status = req_wait_keep(req, -1);
    if ((status == MEMSVC_ERR_TIMEOUT) && (req->send_pending > 0) && (payload != NULL)) {
        conn_force_close(conn); /* the transport still holds the caller's buffer */
    }
    if (rep_p != NULL) {
        *rep_p = req->rep;
    }
    if (mcl_req_finished(req)) {
        mcl_req_unlink_free(req);
    } else {
        mcl_req_abandon(req);
    }
    return status;
}

/* ---- connection ---------------------------------------------------------------------------- */

/* UCX context (shared-memory only for a local connection), worker, event fd, reply handler. */
static memsvc_status_t conn_ucx_setup(memsvc_conn_h conn, bool local)
{
    ucp_params_t           ctx_params = {0};
    ucp_worker_params_t    wparams    = {0};
    memsvc_status_t        status;

    if (local) {
        status = mcl_local_context(&conn->ctx);
        if (status != MEMSVC_OK) {
            return status;
        }
    } else {
        ctx_params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
        ctx_params.features   = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
        ctx_params.name       = "libmemsvc";
        if (ucp_init(&ctx_params, NULL, &conn->ctx) != UCS_OK) {
            return MEMSVC_ERR_TRANSPORT;
        }
    }
    wparams.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (ucp_worker_create(conn->ctx, &wparams, &conn->worker) != UCS_OK) {
        status = MEMSVC_ERR_TRANSPORT;
        goto err_cleanup_ctx;
    }
    if (ucp_worker_get_efd(conn->worker, &conn->efd) != UCS_OK) {
        status = MEMSVC_ERR_TRANSPORT;
        goto err_destroy_worker;
    }
    if (msp_ucx_am_handler(conn->worker, MSP_AM_REPLY, conn_am_reply_cb, conn) != UCS_OK) {
        status = MEMSVC_ERR_TRANSPORT;
        goto err_destroy_worker;
    }
    return MEMSVC_OK;

err_destroy_worker:
    ucp_worker_destroy(conn->worker);
err_cleanup_ctx:
    ucp_cleanup(conn->ctx);
    conn->worker = NULL;
    conn->ctx    = NULL;
    return status;
}

/* Try the daemon's Unix socket. MEMSVC_OK: connected there. MEMSVC_ERR_TIMEOUT: a daemon
 * accepted on it but did not answer in time (stopped or hung: tcp would not fare better).
 * Another error: tcp must serve (the reason is in why). */
static memsvc_status_t conn_try_local(memsvc_conn_h conn, const char *path, char *why,
                                      size_t whylen)
{
    memsvc_status_t status;

    status = mcl_local_open(&conn->local, path, why, whylen);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (conn_ucx_setup(conn, true) != MEMSVC_OK) {
        snprintf(why, whylen, "no shared-memory UCX transport (%s)", MSL_UCX_TLS);
        mcl_local_close(&conn->local);
        return MEMSVC_ERR_TRANSPORT;
    }
    status = mcl_local_handshake(&conn->local, conn->worker, (int)conn->timeout_ms, &conn->ep,
                                 why, whylen);
    if (status != MEMSVC_OK) {
        ucp_worker_destroy(conn->worker);
        ucp_cleanup(conn->ctx);
        conn->worker = NULL;
        conn->ctx    = NULL;
        mcl_local_close(&conn->local);
        return status;
    }
    return MEMSVC_OK;
}

/* The secret a tcp connection proves: the parameter, else $MEMSVC_SECRET_FILE; NULL: none. */
static const char *conn_secret_path(const memsvc_conn_params_t *params)
{
    if ((params->field_mask & MEMSVC_CONN_FIELD_SECRET_FILE) && (params->secret_file != NULL) &&
        (params->secret_file[0] != '\0')) {
        return params->secret_file;
    }
    if ((getenv("MEMSVC_SECRET_FILE") != NULL) && (getenv("MEMSVC_SECRET_FILE")[0] != '\0')) {
        return getenv("MEMSVC_SECRET_FILE");
    }
    return NULL;
}

/*
 * After a HELLO sent with a nonce: the daemon must have challenged back; prove the secret
 * (AUTH) and check the daemon's proof in its answer, so that neither side trusts the other
 * without it (docs/protocol.md, "Authentication").
 */
static memsvc_status_t conn_authenticate(memsvc_conn_h conn, const uint8_t key[MSP_KEY_BYTES],
                                         const msp_req_t *hello, const msp_rep_t *hrep,
                                         const char *addr)
{
    msp_auth_bind_t bind = {.job     = hello->u.hello.job,
                            .rank    = hello->u.hello.rank,
                            .device  = hello->u.hello.device,
                            .flags   = hello->u.hello.flags,
                            .session = hrep->u.hello.session};
    msp_req_t       msg  = {.op = MSP_OP_AUTH};
    msp_rep_t       rep;
    memsvc_status_t status;

    if (!hrep->u.hello.auth) {
        fprintf(stderr, "libmemsvc: the daemon at %s did not ask for the secret: it holds none "
                        "(no --secret-file) or is not the daemon meant; refusing it\n", addr);
        return MEMSVC_ERR_AUTH;
    }
    msp_auth_proof(key, MSP_ROLE_CLIENT, hello->u.hello.nonce, hrep->u.hello.nonce, &bind,
                   msg.u.auth.proof);
    status = mcl_call(conn, &msg, NULL, 0, &rep);
    if (status != MEMSVC_OK) {
        if (status == MEMSVC_ERR_AUTH) {
            fprintf(stderr, "libmemsvc: the daemon at %s refused the secret: %s\n", addr,
                    rep.msg);
        }
        return status;
    }
    if (!msp_auth_check(key, MSP_ROLE_DAEMON, hello->u.hello.nonce, hrep->u.hello.nonce, &bind,
                        rep.u.auth.proof)) {
        fprintf(stderr, "libmemsvc: the daemon at %s did not prove the secret; refusing it\n",
                addr);
        return MEMSVC_ERR_AUTH;
    }
    return MEMSVC_OK;
}

memsvc_status_t memsvc_connect(const memsvc_conn_params_t *params, memsvc_conn_h *conn_p)
{
    ucp_ep_params_t         eparams = {0};
    struct sockaddr_storage ss;
    socklen_t               sslen;
    const char             *addr = CONN_DEFAULT_ADDR, *upath = NULL;
    char                    path[MSL_PATH_MAX], why[256] = "", lanes[MSP_TRANSPORT_MAX + 1];
    memsvc_status_t         status;
    ucs_status_t            ustatus;
    memsvc_conn_h           conn;
    msp_req_t               hello = {0};
    msp_rep_t               rep;
    uint64_t                mask;
    bool                    local = false;
    const char             *secret;
    uint8_t                 key[MSP_KEY_BYTES];

    if ((params == NULL) || (conn_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    mask = params->field_mask;
    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    conn->reqs.next = conn->reqs.prev = &conn->reqs;
    conn->next_id                     = 1;
    conn->efd                         = -1;
    mcl_local_init(&conn->local);
    conn->job  = (mask & MEMSVC_CONN_FIELD_JOB) ? params->job : 1;
    conn->rank = (mask & MEMSVC_CONN_FIELD_RANK) ? params->rank : 0;
    conn->device = (mask & MEMSVC_CONN_FIELD_DEVICE) ? params->device : 0;
    conn->timeout_ms =
        (mask & MEMSVC_CONN_FIELD_TIMEOUT_MS) ? params->timeout_ms : CONN_DEFAULT_TIMEOUT;
    conn->flags   = (mask & MEMSVC_CONN_FIELD_FLAGS) ? params->flags : 0;
    conn->spin_ns = CONN_SPIN_NS;
    if (getenv("MEMSVC_SPIN_US") != NULL) {
        conn->spin_ns = strtoull(getenv("MEMSVC_SPIN_US"), NULL, 10) * 1000ull;
    }
    if ((mask & MEMSVC_CONN_FIELD_ADDRESS) && (params->address != NULL)) {
        addr = params->address;
    }
    if ((mask & MEMSVC_CONN_FIELD_UNIX_PATH) && (params->unix_path != NULL) &&
        (params->unix_path[0] != '\0')) {
        upath = params->unix_path;
    }
    if ((conn->timeout_ms == 0) || (conn->timeout_ms > INT32_MAX) ||
        ((conn->job == MSP_JOB_CONTROL) != !!(conn->flags & MEMSVC_CONN_CONTROL))) {
        status = MEMSVC_ERR_INVALID_PARAM;
        goto err_free_conn;
    }
    if (msp_parse_addr(addr, &ss, &sslen) != MEMSVC_OK) {
        status = MEMSVC_ERR_INVALID_PARAM;
        goto err_free_conn;
    }
    status = mcl_oneway_init(conn, params);
    if (status != MEMSVC_OK) {
        goto err_free_conn;
    }

    /* The co-located path first: the daemon's Unix socket, a worker of its own over shm. */
    if (!(conn->flags & MEMSVC_CONN_TCP) && ((upath != NULL) || msl_addr_is_loopback(addr))) {
        if ((upath == NULL) && (msl_default_path(addr, false, path, sizeof(path)) == MEMSVC_OK)) {
            upath = path;
        }
        if (upath != NULL) {
            status = conn_try_local(conn, upath, why, sizeof(why));
            if (status == MEMSVC_ERR_TIMEOUT) {
                goto err_free_conn; /* the daemon is there but does not answer */
            }
            local = (status == MEMSVC_OK);
        }
        if (!local && !(conn->flags & MEMSVC_CONN_CONTROL)) {
            fprintf(stderr, "libmemsvc: %s: connecting over tcp\n", why);
        }
    }
    secret = local ? NULL : conn_secret_path(params);
    if (secret != NULL) {
        /* Before anything goes out: an unsafe or unreadable secret is never sent a proof of. */
        char err[256] = "";

        status = msp_secret_load(secret, key, err, sizeof(err));
        if (status != MEMSVC_OK) {
            fprintf(stderr, "libmemsvc: %s\n", err);
            goto err_free_conn;
        }
        hello.u.hello.has_nonce = true;
        msp_auth_nonce(hello.u.hello.nonce);
    }
    if (!local) {
        status = conn_ucx_setup(conn, false);
        if (status != MEMSVC_OK) {
            goto err_free_conn;
        }
        eparams.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                             UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        eparams.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        eparams.sockaddr.addr    = (struct sockaddr *)&ss;
        eparams.sockaddr.addrlen = sslen;
        eparams.err_mode         = UCP_ERR_HANDLING_MODE_PEER;
        eparams.err_handler.cb   = conn_err_cb;
        eparams.err_handler.arg  = conn;
        ustatus                  = ucp_ep_create(conn->worker, &eparams, &conn->ep);
        if (ustatus != UCS_OK) {
            status = MEMSVC_ERR_TRANSPORT;
            goto err_destroy_worker;
        }
    }

    hello.op              = MSP_OP_HELLO;
    hello.u.hello.version = MSP_VERSION;
    hello.u.hello.job     = conn->job;
    hello.u.hello.rank    = conn->rank;
    hello.u.hello.device  = conn->device;
    hello.u.hello.flags   = (conn->flags & MEMSVC_CONN_CONTROL) ? MSP_HELLO_CONTROL : 0;
    if ((mask & MEMSVC_CONN_FIELD_NAME) && (params->name != NULL)) {
        snprintf(hello.u.hello.name, sizeof(hello.u.hello.name), "%s", params->name);
    } else {
        snprintf(hello.u.hello.name, sizeof(hello.u.hello.name), "pid%d", (int)getpid());
    }
    status = mcl_call(conn, &hello, NULL, 0, &rep);
    if ((status == MEMSVC_ERR_PERMISSION) || (status == MEMSVC_ERR_AUTH)) {
        fprintf(stderr, "libmemsvc: the daemon refused the connection: %s\n", rep.msg);
    }
    if ((status == MEMSVC_OK) && (secret != NULL)) {
        status = conn_authenticate(conn, key, &hello, &rep, addr);
    }
    if (secret != NULL) {
        msp_auth_wipe(key, sizeof(key));
    }
    if (status != MEMSVC_OK) {
        /* The endpoint may still be wiring up, its HELLO pending (a daemon that accepted
         * but never answered): only a forced close purges that; a destroyed worker with a
         * request pending aborts the process inside UCX. */
        conn_fail(conn, status);
        goto err_close_ep;
    }
    conn->session     = rep.u.hello.session;
    conn->num_devices = rep.u.hello.num_devices;
    msp_ep_transport(conn->ep, lanes, sizeof(lanes));
    if (local) {
        if (getenv("MEMSVC_SPIN_US") == NULL) {
            conn->spin_ns = CONN_SPIN_LOCAL_NS;
        }
        if (mcl_local_regions(&conn->local, (int)conn->timeout_ms) != MEMSVC_OK) {
            fprintf(stderr, "libmemsvc: no memory regions from the daemon: bytes are copied\n");
        }
        snprintf(conn->transport, sizeof(conn->transport), "shm: %.40s (local worker, %s, %.50s)",
                 lanes, (conn->local.base != NULL) ? "mapped" : "not mapped", conn->local.path);
    } else if (why[0] != '\0') {
        snprintf(conn->transport, sizeof(conn->transport), "tcp: %.32s (fallback: %.70s)", lanes,
                 why);
    } else {
        snprintf(conn->transport, sizeof(conn->transport), "tcp: %.100s", lanes);
    }
    *conn_p = conn;
    return MEMSVC_OK;

err_close_ep:
    if ((status == MEMSVC_ERR_TIMEOUT) && !conn->broken) {
        /* No answer (an unreachable address): the endpoint never wired up and a flushing
         * close would leave its requests pending at the worker's destruction. */
        conn_force_close(conn);
    }
    memsvc_close(conn); /* tears down ep, worker and context */
    return status;
err_destroy_worker:
    ucp_worker_destroy(conn->worker);
    ucp_cleanup(conn->ctx);
err_free_conn:
    mcl_oneway_fini(conn);
    free(conn);
    return status;
}

void memsvc_close(memsvc_conn_h conn)
{
    memsvc_req_h req, next;
    conn_op_t   *op;

    if (conn == NULL) {
        return;
    }
    if (!conn->broken) {
        if ((conn->local.sock >= 0) && ((conn->ncork > 0) || (conn->ow_count > 0))) {
            /* The worker goes without a flush below: let the daemon handle the queued and
             * unconfirmed one-way requests first (one round trip), e.g. a durable tensor's
             * free, which the end of the session would otherwise keep for re-attach. */
            (void)memsvc_flush(conn);
        } else {
            mcl_cork_send(conn); /* the close flushes the endpoint: they reach the daemon */
        }
    }
    if (conn->local.sock >= 0) {
        /* The socket's end tells the daemon; our worker goes whole, its endpoint unclosed
         * (the daemon destroys its side the same way). */
        mcl_local_close(&conn->local);
        conn->ep     = NULL;
        conn->broken = true;
        ucp_worker_destroy(conn->worker);
        conn->worker = NULL;
    }
    if (conn->ep != NULL) {
        ucp_request_param_t p        = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                        .flags        = conn->broken ? UCP_EP_CLOSE_FLAG_FORCE : 0};
        ucs_status_ptr_t    sp       = ucp_ep_close_nbx(conn->ep, &p);
        uint64_t            deadline = msp_now_ns() + 2000000000ull;

        if (UCS_PTR_IS_PTR(sp)) {
            while ((ucp_request_check_status(sp) == UCS_INPROGRESS) && (msp_now_ns() < deadline)) {
                ucp_worker_progress(conn->worker);
            }
            ucp_request_free(sp);
        }
        conn->ep = NULL;
    }
    conn->broken = true;
    for (req = conn->reqs.next; req != &conn->reqs; req = next) {
        next = req->next;
        mcl_req_unlink_free(req);
    }
    if (conn->worker != NULL) {
        ucp_worker_destroy(conn->worker);
    }
    while ((op = conn->ops) != NULL) { /* operations whose callbacks went with the worker */
        conn->ops = op->next;
        free(op);
    }
    ucp_cleanup(conn->ctx);
    mcl_oneway_fini(conn);
    free(conn);
}

const char *memsvc_version(uint32_t *protocol_p)
{
    if (protocol_p != NULL) {
        *protocol_p = MSP_VERSION;
    }
    return MEMSVC_VERSION_STRING;
}

const char *memsvc_conn_transport(memsvc_conn_h conn)
{
    return (conn != NULL) ? conn->transport : "none";
}

memsvc_status_t memsvc_ping(memsvc_conn_h conn, uint64_t *rtt_ns_p)
{
    msp_req_t       msg = {.op = MSP_OP_PING};
    memsvc_status_t status;
    uint64_t        t0;

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    t0     = msp_now_ns();
    status = mcl_call(conn, &msg, NULL, 0, NULL);
    if ((status == MEMSVC_OK) && (rtt_ns_p != NULL)) {
        *rtt_ns_p = msp_now_ns() - t0;
    }
    return status;
}

/* ---- tensors ------------------------------------------------------------------------------- */

static memsvc_status_t copy_key(char *dst, const char *key)
{
    size_t len;

    if (key == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    len = strlen(key);
    if ((len == 0) || (len > MEMSVC_KEY_MAX)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    memcpy(dst, key, len + 1);
    return MEMSVC_OK;
}

memsvc_status_t mcl_alloc_msg(const char *key, uint64_t size, const memsvc_alloc_params_t *params,
                              msp_req_t *msg)
{
    memsvc_status_t status;
    uint64_t        mask = (params != NULL) ? params->field_mask : 0;
    uint32_t        flags;

    memset(msg, 0, sizeof(*msg));
    msg->op = MSP_OP_ALLOC;
    if (size == 0) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = copy_key(msg->u.alloc.key, key);
    if (status != MEMSVC_OK) {
        return status;
    }
    msg->u.alloc.size = size;
    msg->u.alloc.kind = (mask & MEMSVC_ALLOC_FIELD_KIND) ? params->kind : MEMSVC_KIND_ACTIVATION;
    msg->u.alloc.tags = (mask & MEMSVC_ALLOC_FIELD_TAGS) ? params->tags : MEMSVC_TAGS_NONE;
    msg->u.alloc.recompute_ns = (mask & MEMSVC_ALLOC_FIELD_RECOMPUTE_NS) ? params->recompute_ns : 0;
    flags                     = (mask & MEMSVC_ALLOC_FIELD_FLAGS) ? params->flags : 0;
    msg->u.alloc.durable      = !!(flags & MEMSVC_ALLOC_DURABLE);
    msg->u.alloc.recomputable = !!(flags & MEMSVC_ALLOC_RECOMPUTABLE);
    msg->u.alloc.pin          = !!(flags & MEMSVC_ALLOC_PIN);
    if ((unsigned)msg->u.alloc.kind >= MEMSVC_KIND_COUNT) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return MEMSVC_OK;
}

memsvc_status_t memsvc_alloc(memsvc_conn_h conn, const char *key, uint64_t size,
                             const memsvc_alloc_params_t *params, memsvc_handle_t *handle_p)
{
    memsvc_status_t status;
    msp_req_t       msg;
    msp_rep_t       rep;

    if ((conn == NULL) || (handle_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = mcl_alloc_msg(key, size, params, &msg);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = mcl_call(conn, &msg, NULL, 0, &rep);
    if (status == MEMSVC_OK) {
        *handle_p = rep.u.alloc.handle;
    }
    return status;
}

memsvc_status_t memsvc_free(memsvc_conn_h conn, memsvc_handle_t handle)
{
    msp_req_t msg = {.op = MSP_OP_FREE};

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    msg.u.h.handle = handle;
    mcl_local_forget(&conn->local, handle);
    return mcl_oneway_call(conn, &msg, handle);
}

/* A local acquire in the pin table (docs/api.md, "Acquires without a message"): true when
 * pinned there (*addr_p and *where_p, when given, get the address and the slot's fields). Not
 * on a broken connection, nor once the daemon's end of the socket closed (looked at every
 * CONN_LOCAL_CHECK_NS). */
static bool acquire_local(memsvc_conn_h conn, memsvc_handle_t handle, void **addr_p,
                          msl_pin_where_t *where_p)
{
    uint64_t now;

    if ((conn->local.pins == NULL) || conn->broken) {
        return false;
    }
    now = msp_now_ns();
    if (now >= conn->local.next_check_ns) {
        conn->local.next_check_ns = now + CONN_LOCAL_CHECK_NS;
        if (mcl_local_gone(&conn->local)) {
            conn_fail(conn, MEMSVC_ERR_TRANSPORT);
            return false;
        }
    }
    return mcl_local_pin(&conn->local, handle, addr_p, where_p);
}

memsvc_status_t memsvc_acquire(memsvc_conn_h conn, memsvc_handle_t handle)
{
    msp_req_t       msg = {.op = MSP_OP_ACQUIRE};
    memsvc_status_t status;

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (acquire_local(conn, handle, NULL, NULL)) {
        return MEMSVC_OK;
    }
    msg.u.h.handle = handle;
    status         = mcl_call(conn, &msg, NULL, 0, NULL);
    if (status == MEMSVC_OK) {
        mcl_local_published(&conn->local, handle); /* the next one may need no message */
    }
    return status;
}

/* ACQUIRE asking for the tensor's location; *addr_p gets its address here or NULL. */
static memsvc_status_t acquire_map(memsvc_conn_h conn, memsvc_handle_t handle, bool write,
                                   void **addr_p)
{
    msp_req_t       msg = {.op = MSP_OP_ACQUIRE};
    memsvc_status_t status;
    msp_rep_t       rep;
    msl_pin_where_t w;

    if ((conn == NULL) || (addr_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    *addr_p        = NULL;
    if (acquire_local(conn, handle, addr_p, &w)) {
        if (!write) {
            return MEMSVC_OK;
        }
        if (!(w.flags & MSL_PIN_F_DURABLE)) {
            /* a write pin in the table: marked writing until its release (no COMMIT: the
             * bytes in place are the commit) */
            mcl_local_write_local(&conn->local, handle);
            return MEMSVC_OK;
        }
        mcl_local_drop(&conn->local, handle); /* durable: journaled at a release by message */
        *addr_p = NULL;
    }
    msg.u.h.handle = handle;
    if (conn->local.base != NULL) {
        msg.u.h.flags = MSP_ACQ_MAP | (write ? MSP_ACQ_WRITE : 0);
    }
    status = mcl_call(conn, &msg, NULL, 0, &rep);
    if ((status == MEMSVC_OK) || (status == MEMSVC_RECOMPUTE)) {
        *addr_p = mcl_local_addr(&conn->local, rep.u.acquire.region, rep.u.acquire.offset,
                                 rep.u.acquire.size);
        if (write && (rep.u.acquire.region != MSP_REGION_NONE)) {
            mcl_local_write_pin(&conn->local, handle); /* its release is a message */
        } else if (!write && (status == MEMSVC_OK)) {
            mcl_local_published(&conn->local, handle);
        }
    }
    return status;
}

memsvc_status_t memsvc_acquire_map(memsvc_conn_h conn, memsvc_handle_t handle, void **addr_p)
{
    return acquire_map(conn, handle, true, addr_p);
}

memsvc_status_t memsvc_acquire_map_ro(memsvc_conn_h conn, memsvc_handle_t handle,
                                      const void **addr_p)
{
    return acquire_map(conn, handle, false, (void **)addr_p);
}

memsvc_status_t memsvc_release(memsvc_conn_h conn, memsvc_handle_t handle)
{
    msp_req_t msg = {.op = MSP_OP_RELEASE};

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (mcl_local_unpin(&conn->local, handle)) {
        return MEMSVC_OK; /* a pin taken in the pin table */
    }
    msg.u.h.handle = handle;
    return mcl_oneway_call(conn, &msg, handle);
}

/* Send a WRITE (with its bytes) or a READ (into buf) of one chunk; *req_p gets its request. */
static memsvc_status_t io_send(memsvc_conn_h conn, uint32_t op, memsvc_handle_t handle,
                               uint64_t offset, void *buf, uint64_t len, memsvc_req_h *req_p)
{
    memsvc_status_t status;
    memsvc_req_h    req;
    msp_req_t       msg = {.op = op};

    msg.u.io.handle = handle;
    msg.u.io.offset = offset;
    msg.u.io.len    = len;
    status          = conn_prepare(conn, &msg, &req);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (op == MSP_OP_READ) {
        req->rbuf = buf;
        req->rlen = len;
    }
    status = mcl_send(conn, &req, &msg, 1, (op == MSP_OP_WRITE) ? buf : NULL,
                      (op == MSP_OP_WRITE) ? len : 0);
    if (status != MEMSVC_OK) {
        mcl_req_unlink_free(req);
        return status;
    }
    *req_p = req;
    return MEMSVC_OK;
}

/* Wait for a chunk's request until deadline and let it go: its status. */
static memsvc_status_t io_wait(memsvc_conn_h conn, memsvc_req_h req, uint64_t deadline)
{
    memsvc_status_t status;

    status = conn_wait_until(conn, req_is_finished, req, deadline);
    if (status == MEMSVC_OK) {
        status = req->status;
    }
    if (mcl_req_finished(req)) {
        mcl_req_unlink_free(req);
        return status;
    }
    if (req->send_pending > 0) {
        conn_force_close(conn); /* the transport still holds the caller's bytes */
    }
    req->rbuf = NULL;
    mcl_req_abandon(req);
    return status;
}

/*
 * A copy through a pin taken in the pin table (no message to pin or unpin). A write is counted
 * in the slot's writers until it is done, so that this process's death mid-write leaves the
 * tensor uncommitted; a durable tensor's write is committed by an answered COMMIT (its bytes
 * journaled) while the pin is still held; another's needs no message.
 */
static memsvc_status_t io_table(memsvc_conn_h conn, uint32_t op, memsvc_handle_t handle,
                                uint64_t offset, uint8_t *p, void *buf, uint64_t len,
                                const msl_pin_where_t *w)
{
    msp_req_t       msg = {.op = MSP_OP_COMMIT};
    memsvc_status_t status = MEMSVC_OK;

    if ((offset > w->size) || (len > w->size - offset)) {
        status = MEMSVC_ERR_OUT_OF_RANGE;
    } else if (op == MSP_OP_READ) {
        memcpy(buf, p + offset, len);
    } else {
        mcl_local_writing(&conn->local, handle, 1);
        memcpy(p + offset, buf, len);
        if (w->flags & MSL_PIN_F_DURABLE) {
            msg.u.h.handle = handle;
            status         = mcl_call(conn, &msg, NULL, 0, NULL);
        }
        mcl_local_writing(&conn->local, handle, -1);
    }
    mcl_local_drop(&conn->local, handle);
    return status;
}

/*
 * A copy through the mapping: pin the tensor where it is, in the pin table when it is
 * published there, else by an ACQUIRE (only if it is on its device and mapped here;
 * MSP_ACQ_IO), memcpy, unpin. A write pin that this process's death leaves held makes the
 * daemon mark the tensor uncommitted. *done_p is false when the tensor was not pinned (not on
 * its device, not mapped, uncommitted for a read): the caller sends messages.
 */
static memsvc_status_t io_mapped(memsvc_conn_h conn, uint32_t op, memsvc_handle_t handle,
                                 uint64_t offset, void *buf, uint64_t len, bool *done_p)
{
    msp_req_t       msg = {.op = MSP_OP_ACQUIRE};
    memsvc_status_t status, rstatus;
    msp_rep_t       rep;
    uint8_t        *p;
    void           *tp;
    msl_pin_where_t w;

    *done_p = false;
    if (acquire_local(conn, handle, &tp, &w)) {
        *done_p = true;
        return io_table(conn, op, handle, offset, tp, buf, len, &w);
    }
    msg.u.h.handle   = handle;
    msg.u.h.flags    = MSP_ACQ_IO | ((op == MSP_OP_WRITE) ? MSP_ACQ_WRITE : 0);
    status           = mcl_call(conn, &msg, NULL, 0, &rep);
    if (status < 0) {
        return status;
    }
    if (rep.u.acquire.region == MSP_REGION_NONE) {
        return MEMSVC_OK; /* not pinned */
    }
    *done_p = true;
    if (status == MEMSVC_OK) {
        mcl_local_published(&conn->local, handle); /* the next copy may pin it in the table */
    }
    p       = mcl_local_addr(&conn->local, rep.u.acquire.region, rep.u.acquire.offset,
                             rep.u.acquire.size);
    if ((offset > rep.u.acquire.size) || (len > rep.u.acquire.size - offset)) {
        status = MEMSVC_ERR_OUT_OF_RANGE;
    } else if (p == NULL) {
        status = MEMSVC_ERR_PROTOCOL; /* a region we did not map: the daemon is confused */
    } else if (op == MSP_OP_WRITE) {
        memcpy(p + offset, buf, len);
        status = MEMSVC_OK;
    } else {
        memcpy(buf, p + offset, len);
        status = MEMSVC_OK;
    }
    memset(&msg, 0, sizeof(msg));
    msg.op         = MSP_OP_RELEASE;
    msg.u.h.handle = handle;
    if (op == MSP_OP_WRITE) {
        /* The release commits the write (a durable tensor's bytes are journaled then): the
         * write is done when the daemon says so, as on the copying path. */
        rstatus = mcl_call(conn, &msg, NULL, 0, NULL);
        return (status != MEMSVC_OK) ? status : rstatus;
    }
    /* One-way (deferred errors, as memsvc_release), sent at once: no second round trip, and
     * the pin does not wait in the queue for the trainer's next call. */
    rstatus = mcl_oneway_call(conn, &msg, handle);
    if (rstatus == MEMSVC_OK) {
        rstatus = mcl_cork_send(conn);
    }
    return (status != MEMSVC_OK) ? status : rstatus;
}

/*
 * Through messages: CONN_CHUNK bytes per request, CONN_IO_WINDOW requests in flight, so that
 * the daemon's copy of one chunk overlaps the transfer of the next (docs/protocol.md,
 * "Messages"). A chunk answered MEMSVC_ERR_BUSY (its tensor was moving) is sent again. After an
 * error no chunk is sent; those in flight are waited for (they hold the caller's buffer).
 */
static memsvc_status_t io_messages(memsvc_conn_h conn, uint32_t op, memsvc_handle_t handle,
                                   uint64_t offset, uint8_t *buf, uint64_t len)
{
    memsvc_req_h    win[CONN_IO_WINDOW];
    uint64_t        off[CONN_IO_WINDOW], clen[CONN_IO_WINDOW];
    uint64_t        deadline = conn_deadline(conn, -1), next = 0;
    uint64_t        chunks = (len == 0) ? 1 : (len + CONN_CHUNK - 1) / CONN_CHUNK, sent = 0;
    memsvc_status_t status, first = MEMSVC_OK;
    unsigned        head = 0, n = 0, k;

    for (;;) {
        while ((first == MEMSVC_OK) && (n < CONN_IO_WINDOW) && (sent < chunks)) {
            k       = (head + n) % CONN_IO_WINDOW;
            off[k]  = next;
            clen[k] = (len - next > CONN_CHUNK) ? CONN_CHUNK : len - next;
            status  = io_send(conn, op, handle, offset + next, buf + next, clen[k], &win[k]);
            if (status != MEMSVC_OK) {
                first = status;
                break;
            }
            n++;
            sent++;
            next += clen[k];
        }
        if (n == 0) {
            return first;
        }
        status = io_wait(conn, win[head], deadline);
        if ((status == MEMSVC_ERR_BUSY) && (first == MEMSVC_OK) && (msp_now_ns() < deadline)) {
            usleep(CONN_BUSY_RETRY_NS / 1000); /* moving: this chunk again, in its place */
            status = io_send(conn, op, handle, offset + off[head], buf + off[head], clen[head],
                             &win[head]);
            if (status == MEMSVC_OK) {
                continue;
            }
        }
        if ((status != MEMSVC_OK) && (first == MEMSVC_OK)) {
            first = status;
        }
        head = (head + 1) % CONN_IO_WINDOW;
        n--;
    }
}

static memsvc_status_t io_call(memsvc_conn_h conn, uint32_t op, memsvc_handle_t handle,
                               uint64_t offset, void *buf, uint64_t len)
{
    memsvc_status_t status;
    bool            mapped;

    if ((conn == NULL) || ((buf == NULL) && (len > 0))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (offset + len < offset) {
        return MEMSVC_ERR_OUT_OF_RANGE;
    }
    if ((conn->local.base != NULL) && (len >= CONN_MAP_MIN)) {
        status = io_mapped(conn, op, handle, offset, buf, len, &mapped);
        if ((status < 0) || mapped) {
            return status;
        }
    }
    return io_messages(conn, op, handle, offset, buf, len);
}

memsvc_status_t memsvc_write(memsvc_conn_h conn, memsvc_handle_t handle, uint64_t offset,
                             const void *buf, uint64_t len)
{
    return io_call(conn, MSP_OP_WRITE, handle, offset, (void *)buf, len);
}

memsvc_status_t memsvc_read(memsvc_conn_h conn, memsvc_handle_t handle, uint64_t offset, void *buf,
                            uint64_t len)
{
    return io_call(conn, MSP_OP_READ, handle, offset, buf, len);
}

/* n handle requests of one op in one message. */
static memsvc_status_t handle_batch(memsvc_conn_h conn, uint32_t op, const memsvc_handle_t *handles,
                                    size_t n, memsvc_status_t *status_p)
{
    memsvc_req_h    reqs[MSP_BATCH_MAX];
    msp_req_t      *msgs;
    memsvc_status_t status, first = MEMSVC_OK;
    uint64_t        deadline;
    size_t          i;

    if ((conn == NULL) || (handles == NULL) || (n == 0) || (n > MSP_BATCH_MAX)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (conn->broken) {
        return conn->broken_status;
    }
    msgs = calloc(n, sizeof(*msgs));
    if (msgs == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < n; i++) {
        /* a release of a pin taken in the pin table is done here; a PING answers for it */
        msgs[i].op = ((op == MSP_OP_RELEASE) && mcl_local_unpin(&conn->local, handles[i]))
                         ? MSP_OP_PING
                         : op;
        reqs[i]    = mcl_req_new(conn, msgs[i].op);
        if (reqs[i] == NULL) {
            while (i-- > 0) {
                mcl_req_unlink_free(reqs[i]);
            }
            free(msgs);
            return MEMSVC_ERR_NO_RESOURCE;
        }
        msgs[i].id         = reqs[i]->id;
        msgs[i].u.h.handle = handles[i];
    }
    status = mcl_send(conn, reqs, msgs, n, NULL, 0);
    free(msgs);
    if (status != MEMSVC_OK) {
        for (i = 0; i < n; i++) {
            mcl_req_unlink_free(reqs[i]);
        }
        return status;
    }
    deadline = conn_deadline(conn, -1);
    for (i = 0; i < n; i++) {
        status = conn_wait_until(conn, req_is_finished, reqs[i], deadline);
        if (status == MEMSVC_OK) {
            status = reqs[i]->status;
        }
        if (status_p != NULL) {
            status_p[i] = status;
        }
        if ((op == MSP_OP_ACQUIRE) && (status == MEMSVC_OK)) {
            mcl_local_published(&conn->local, handles[i]); /* the next one may need no message */
        }
        if ((status < 0) && (first == MEMSVC_OK)) {
            first = status;
        }
        if (mcl_req_finished(reqs[i])) {
            mcl_req_unlink_free(reqs[i]);
        } else {
            mcl_req_abandon(reqs[i]);
        }
    }
    return first;
}

memsvc_status_t memsvc_acquire_many(memsvc_conn_h conn, const memsvc_handle_t *handles, size_t n,
                                    memsvc_status_t *status_p)
{
    return handle_batch(conn, MSP_OP_ACQUIRE, handles, n, status_p);
}

memsvc_status_t memsvc_release_many(memsvc_conn_h conn, const memsvc_handle_t *handles, size_t n,
                                    memsvc_status_t *status_p)
{
    return handle_batch(conn, MSP_OP_RELEASE, handles, n, status_p);
}

static memsvc_status_t handle_nb(memsvc_conn_h conn, uint32_t op, memsvc_handle_t handle,
                                 memsvc_req_h *req_p)
{
    msp_req_t       msg = {.op = op};
    memsvc_status_t status;
    memsvc_req_h    req;

    if ((conn == NULL) || (req_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    msg.u.h.handle = handle;
    if ((op == MSP_OP_RELEASE) && mcl_local_unpin(&conn->local, handle)) {
        msg.op = MSP_OP_PING; /* released in the pin table: the request is only answered */
    }
    status = conn_prepare(conn, &msg, &req);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = mcl_send(conn, &req, &msg, 1, NULL, 0);
    if (status != MEMSVC_OK) {
        mcl_req_unlink_free(req);
        return status;
    }
    *req_p = req;
    return MEMSVC_INPROGRESS;
}

memsvc_status_t memsvc_acquire_nb(memsvc_conn_h conn, memsvc_handle_t handle, memsvc_req_h *req_p)
{
    return handle_nb(conn, MSP_OP_ACQUIRE, handle, req_p);
}

memsvc_status_t memsvc_release_nb(memsvc_conn_h conn, memsvc_handle_t handle, memsvc_req_h *req_p)
{
    return handle_nb(conn, MSP_OP_RELEASE, handle, req_p);
}

unsigned memsvc_progress(memsvc_conn_h conn)
{
    unsigned n = 0, k;

    if ((conn == NULL) || conn->broken) {
        return 0;
    }
    while ((k = ucp_worker_progress(conn->worker)) != 0) {
        n += k;
    }
    return n;
}

memsvc_status_t memsvc_test(memsvc_req_h req)
{
    memsvc_status_t status;

    if (req == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    ucp_worker_progress(req->conn->worker);
    if (!mcl_req_finished(req)) {
        mcl_cork_send(req->conn); /* as any wait: see conn_wait_until */
        return MEMSVC_INPROGRESS;
    }
    status = (req->batch != NULL) ? mcl_batch_collect(req->batch) : req->status;
    mcl_req_unlink_free(req);
    return status;
}

memsvc_status_t memsvc_wait(memsvc_req_h req, int timeout_ms)
{
    memsvc_status_t status;

    if (req == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = req_wait_keep(req, timeout_ms);
    if (status == MEMSVC_ERR_TIMEOUT && !mcl_req_finished(req)) {
        return status;
    }
    status = (req->batch != NULL) ? mcl_batch_collect(req->batch) : req->status;
    mcl_req_unlink_free(req);
    return status;
}

void memsvc_req_free(memsvc_req_h req)
{
    if (req != NULL) {
        mcl_req_abandon(req);
    }
}

/* ---- lookup, hints, stats ------------------------------------------------------------------ */

memsvc_status_t memsvc_lookup(memsvc_conn_h conn, const char *key, memsvc_tensor_info_t *info_p)
{
    msp_req_t       msg = {.op = MSP_OP_LOOKUP};
    memsvc_status_t status;
    msp_rep_t       rep;

    if ((conn == NULL) || (info_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = copy_key(msg.u.lookup.key, key);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = mcl_call(conn, &msg, NULL, 0, &rep);
    if (status == MEMSVC_OK) {
        *info_p = rep.u.lookup;
    }
    return status;
}

memsvc_status_t mcl_hint_msg(const memsvc_hint_t *hint, msp_req_t *msg)
{
    memset(msg, 0, sizeof(*msg));
    msg->op = MSP_OP_HINT;
    if ((hint == NULL) || ((unsigned)hint->type >= MEMSVC_HINT_COUNT) ||
        ((unsigned)hint->phase >= MEMSVC_PHASE_COUNT) ||
        ((hint->num_handles > 0) && (hint->handles == NULL))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (hint->num_handles > MSP_HINT_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    msg->u.hint.type        = hint->type;
    msg->u.hint.step        = hint->step;
    msg->u.hint.layer       = hint->layer;
    msg->u.hint.microbatch  = hint->microbatch;
    msg->u.hint.phase       = hint->phase;
    msg->u.hint.num_handles = (uint32_t)hint->num_handles;
    if (hint->num_handles > 0) {
        memcpy(msg->u.hint.handles, hint->handles, hint->num_handles * sizeof(uint64_t));
    }
    return MEMSVC_OK;
}

memsvc_status_t memsvc_hint(memsvc_conn_h conn, const memsvc_hint_t *hint)
{
    memsvc_status_t status;
    msp_req_t       msg;

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = mcl_hint_msg(hint, &msg);
    if (status != MEMSVC_OK) {
        return status;
    }
    return mcl_oneway_call(conn, &msg, 0);
}

/*
 * A request whose reply carries a msgpack body (STATS, LIST): sent and waited for. On
 * MEMSVC_OK *req_p holds the finished request with the body in rbuf (rep.plen bytes); the
 * caller frees it with mcl_req_unlink_free.
 */
static memsvc_status_t body_call(memsvc_conn_h conn, msp_req_t *msg, memsvc_req_h *req_p)
{
    memsvc_status_t status;
    memsvc_req_h    req;

    status = conn_prepare(conn, msg, &req);
    if (status != MEMSVC_OK) {
        return status;
    }
    req->rbuf     = malloc(MSP_BODY_MAX);
    req->rlen     = MSP_BODY_MAX;
    req->own_rbuf = true;
    if (req->rbuf == NULL) {
        mcl_req_unlink_free(req);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    status = mcl_send(conn, &req, msg, 1, NULL, 0);
    if (status != MEMSVC_OK) {
        mcl_req_unlink_free(req);
        return status;
    }
    status = req_wait_keep(req, -1);
    if (!mcl_req_finished(req)) {
        mcl_req_abandon(req);
        return status;
    }
    if (status < 0) {
        mcl_req_unlink_free(req);
        return status;
    }
    *req_p = req;
    return MEMSVC_OK;
}

memsvc_status_t memsvc_stats(memsvc_conn_h conn, memsvc_stats_t *stats_p)
{
    msp_req_t       msg = {.op = MSP_OP_STATS};
    memsvc_status_t status;
    memsvc_req_h    req;

    if ((conn == NULL) || (stats_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = body_call(conn, &msg, &req);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = msp_decode_stats(req->rbuf, req->rep.plen, stats_p);
    mcl_req_unlink_free(req);
    return status;
}

memsvc_status_t memsvc_evict(memsvc_conn_h conn, uint64_t session)
{
    msp_req_t msg = {.op = MSP_OP_EVICT};
    msp_rep_t rep;

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    msg.u.h.handle = session;
    return mcl_call(conn, &msg, NULL, 0, &rep);
}

memsvc_status_t memsvc_list(memsvc_conn_h conn, uint32_t job, memsvc_list_cb_t cb, void *arg)
{
    memsvc_status_t status = MEMSVC_OK;
    msp_tensor_t   *tensors;
    uint32_t        start = 0, i, count, next;
    memsvc_req_h    req;
    msp_req_t       msg;

    if ((conn == NULL) || (cb == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    tensors = calloc(MSP_LIST_MAX, sizeof(*tensors));
    if (tensors == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (;;) {
        memset(&msg, 0, sizeof(msg));
        msg.op           = MSP_OP_LIST;
        msg.u.list.job   = job;
        msg.u.list.start = start;
        msg.u.list.max   = MSP_LIST_MAX;
        status           = body_call(conn, &msg, &req);
        if (status != MEMSVC_OK) {
            break;
        }
        next   = req->rep.u.list.next;
        status = msp_decode_list(req->rbuf, req->rep.plen, tensors, MSP_LIST_MAX, &count);
        mcl_req_unlink_free(req);
        if (status != MEMSVC_OK) {
            break;
        }
        for (i = 0; i < count; i++) {
            if (!cb(arg, &tensors[i])) {
                goto out;
            }
        }
        if ((next == 0) || (next <= start)) {
            break;
        }
        start = next;
    }
out:
    free(tensors);
    return status;
}

memsvc_status_t memsvc_peers(memsvc_conn_h conn, memsvc_cluster_info_t *info_p, memsvc_peer_cb_t cb,
                             void *arg)
{
    memsvc_status_t     status = MEMSVC_OK;
    memsvc_peer_info_t *peers;
    uint32_t            start = 0, i, count, next;
    memsvc_req_h        req;
    msp_req_t           msg;

    if ((conn == NULL) || (info_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    peers = calloc(MSP_PEERS_MAX, sizeof(*peers));
    if (peers == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (;;) {
        memset(&msg, 0, sizeof(msg));
        msg.op            = MSP_OP_PEERS;
        msg.u.peers.start = start;
        status            = body_call(conn, &msg, &req);
        if (status != MEMSVC_OK) {
            break;
        }
        next   = req->rep.u.list.next;
        status = msp_decode_peers(req->rbuf, req->rep.plen, info_p, peers, MSP_PEERS_MAX, &count);
        mcl_req_unlink_free(req);
        if (status != MEMSVC_OK) {
            break;
        }
        for (i = 0; (cb != NULL) && (i < count); i++) {
            if (!cb(arg, &peers[i])) {
                goto out;
            }
        }
        if ((next == 0) || (next <= start)) {
            break;
        }
        start = next;
    }
out:
    free(peers);
    return status;
}
