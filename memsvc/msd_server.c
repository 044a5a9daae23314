/* msd_server.c - memsvcd's tcp loop (listener, worker, timerfd, signalfd), sessions, replies */
#include "client/msp_ucx.h"
#include "memsvc/mem_hint.h"
#include "memsvc/msd.h"
#include "sim_npu/sim_desc.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define MSD_LOG_COMP "server"
#include "memsvc/msd_log.h"

/* What loop 0's epoll events are about (besides its eventfd). */
static msd_ev_t ev_tcp_worker = {.kind = MSD_EV_WORKER};
static msd_ev_t ev_timer      = {.kind = MSD_EV_TIMER};
static msd_ev_t ev_signal     = {.kind = MSD_EV_SIGNAL};

/* ---- sessions ----------------------------------------------------------------------------- */

static msd_session_t *session_find(msd_server_t *srv, ucp_ep_h ep)
{
    msd_session_t *s;

    for (s = srv->sessions; s != NULL; s = s->next) {
        if ((s->ep == ep) && !s->dead) {
            return s;
        }
    }
    return NULL;
}

/* Drop one reference; unlink and free a dead, cleaned session nobody refers to. */
void msd_session_put(msd_server_t *srv, msd_session_t *s)
{
    msd_session_t **pp;

    if (s->refs > 0) {
        s->refs--;
    }
    if (!s->dead || !s->cleaned || (s->refs > 0) || (s->ep != NULL)) {
        return;
    }
    for (pp = &srv->sessions; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            msp_auth_wipe(s->key, sizeof(s->key));
            msd_fast_close(srv, s); /* (closed at its end already) */
            if (s->loop == &srv->loops[0]) {
                atomic_fetch_sub(&srv->loops[0].nsessions, 1); /* a tcp session */
            }
            free(s);
            return;
        }
    }
}

static void session_close_ep(msd_server_t *srv, msd_session_t *s)
{
    ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                             .flags        = UCP_EP_CLOSE_FLAG_FORCE};
    ucs_status_ptr_t    sp;

    if (s->ep == NULL) {
        return;
    }
    sp    = ucp_ep_close_nbx(s->ep, &p);
    s->ep = NULL;
    if (UCS_PTR_IS_PTR(sp)) {
        ucp_request_free(sp); /* completes on its own during progress */
    }
}

/* Reap sessions marked dead by the error handler (done from the loop, not from UCX callbacks). */
static void sessions_reap(msd_server_t *srv)
{
    msd_session_t *s, *next;

    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        if (!s->dead || s->cleaned || s->local) {
            continue; /* local sessions are ended by their loop (msd_local_session_end) */
        }
        msd_peers_session_gone(srv, s);
        msd_defer_drop(srv, s, true);
        msd_ops_session_gone(srv, s);
        s->cleaned = true;
        session_close_ep(srv, s);
        s->refs++;
        msd_session_put(srv, s);
    }
}

static void srv_ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    msd_session_t *s   = arg;
    msd_server_t  *srv = s->loop->srv;

    msd_lock(srv);
    if (!s->dead && !s->bound) { /* what a flood of silent connections causes */
        LOG_RL(1000, "session %llu (no HELLO): disconnected (%s)", (unsigned long long)s->id,
               ucs_status_string(status));
    } else if (!s->dead) {
        LOG("session %llu (job %u rank %u '%s'): disconnected (%s)", (unsigned long long)s->id,
            s->job, s->rank, s->name, ucs_status_string(status));
    }
    if (!s->dead) {
        s->dead = true;
        atomic_store(&srv->reap_tcp, true);
    }
    msd_unlock(srv);
}

/*
 * Who opened this connection, when it comes from this host: the owner of the client's socket,
 * found by its address in /proc/net/tcp (the kernel's word, as SO_PEERCRED is on the Unix
 * socket). Must run before the request is consumed by ucp_ep_create.
 */
static void srv_conn_identify(msd_server_t *srv, ucp_conn_request_h conn_request, msd_session_t *s)
{
    ucp_conn_request_attr_t attr = {.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR};

    if (ucp_conn_request_query(conn_request, &attr) != UCS_OK) {
        return;
    }
    s->uid_known = msd_auth_tcp_peer_uid((struct sockaddr *)&attr.client_address,
                                         (struct sockaddr *)&srv->listen_addr, &s->uid);
}

static void srv_conn_cb(ucp_conn_request_h conn_request, void *arg)
{
    msd_server_t   *srv = arg;
    ucp_ep_params_t ep  = {0};
    msd_session_t  *s;
    ucs_status_t    status;
    bool            admit;

    msd_lock(srv);
    admit = msd_sessions_make_room(srv, false);
    msd_unlock(srv);
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        LOG_ERR("out of memory for a new session: connection refused");
        ucp_listener_reject(srv->listener, conn_request);
        return;
    }
    s->loop       = &srv->loops[0];
    s->worker     = srv->worker;
    s->sock       = -1;
    s->wefd       = -1;
    srv_conn_identify(srv, conn_request, s);
    ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.conn_request    = conn_request;
    ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb  = srv_ep_err_cb;
    ep.err_handler.arg = s;
    status             = ucp_ep_create(srv->worker, &ep, &s->ep);
    if (status != UCS_OK) {
        LOG_RL(1000, "cannot accept a connection: %s", ucs_status_string(status));
        free(s);
        return;
    }
    snprintf(s->name, sizeof(s->name), "?");
    msd_lock(srv);
    s->id         = srv->next_sid++;
    s->created_ns = s->last_ns = msp_now_ns();
    s->next       = srv->sessions;
    srv->sessions = s;
    srv->sessions_total++;
    atomic_fetch_add(&srv->loops[0].nsessions, 1);
    if (!admit) {
        /* Refused: accepted and closed at once (loop 0 reaps it), rather than
         * ucp_listener_reject, after which UCX 1.13's tcp_sockcm aborted the daemon once
         * in a flood (an assertion in uct_tcp_sockcm_ep_progress_send). */
        s->dead = true;
        atomic_store(&srv->reap_tcp, true);
    } else if (s->created_ns + srv->cfg.handshake_timeout_ns < srv->hs_next) {
        srv->hs_next = s->created_ns + srv->cfg.handshake_timeout_ns;
        msd_after_batch(srv); /* loop 0's timer covers the deadline */
    }
    msd_unlock(srv);
}

/*
 * Destroy the listener. UCX 1.13's tcp_sockcm can hand a connection it accepted before
 * ucp_listener_destroy to ucp_cm_server_conn_request_cb after it, on the freed listener
 * (openucx/ucx#11087): a stopping daemon crashed so while peers kept dialling it. So the
 * listening socket (the one bound to the listen address and port) is closed first: nothing
 * new is accepted. The worker is progressed for a moment so that connections already accepted
 * arrive while the listener stands (they become sessions that are answered SHUTDOWN and closed
 * with the rest), and only then is it destroyed. This narrows the race to a connection whose
 * request UCX delivers more than 20 ms after its accept; it does not close it.
 */
static void srv_listener_close(msd_server_t *srv)
{
    uint64_t       deadline;
    struct dirent *de;
    DIR           *dir;

    if (srv->listener == NULL) {
        return;
    }
    dir = opendir("/proc/self/fd");
    while ((dir != NULL) && ((de = readdir(dir)) != NULL)) {
        struct sockaddr_storage ss;
        socklen_t               len = sizeof(ss), olen = sizeof(int);
        int                     fd  = atoi(de->d_name), on = 0;

        if ((fd > 2) && (fd != dirfd(dir)) &&
            (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &olen) == 0) && on &&
            (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) &&
            msd_same_sockaddr(&ss, &srv->listen_addr)) {
            /* In its place, a socket that listens to nothing: the listening one is closed
             * (and leaves the async thread's epoll set), the listener's fd stays valid. */
            int dummy = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

            if ((dummy >= 0) && (dup2(dummy, fd) == fd)) {
                LOG_DEBUG("listener: socket %d closed under UCX", fd);
            }
            if (dummy >= 0) {
                close(dummy);
            }
        }
    }
    if (dir != NULL) {
        closedir(dir);
    }
    deadline = msp_now_ns() + 20000000ull;
    while (msp_now_ns() < deadline) {
        if (ucp_worker_progress(srv->worker) == 0) {
            usleep(1000);
        }
    }
    msd_log_ucx_expected(true); /* UCX cannot take the closed socket out of its epoll set */
    ucp_listener_destroy(srv->listener);
    msd_log_ucx_expected(false);
    srv->listener = NULL;
}

void msd_session_evict(msd_server_t *srv, msd_session_t *s)
{
    s->evicted = true;
    if (s->local) {
        /* Its loop sees the socket end and ends the session as on the client's death (only
         * that thread may destroy its worker). */
        shutdown(s->sock, SHUT_RDWR);
        return;
    }
    s->dead = true;
    atomic_store(&srv->reap_tcp, true);
    if (msd_loop_current() != &srv->loops[0]) {
        msd_loop_wake(&srv->loops[0]);
    }
}

/* Close tcp sessions that sent no HELLO within the handshake timeout; recompute hs_next. */
static void sessions_expire_handshakes(msd_server_t *srv, uint64_t now)
{
    msd_session_t *s;
    uint64_t       next = UINT64_MAX, deadline;

    for (s = srv->sessions; s != NULL; s = s->next) {
        if (s->bound || s->dead || s->local || s->peer_up) {
            continue; /* (a peer daemon's authenticated link never says a client's HELLO) */
        }
        deadline = s->created_ns + srv->cfg.handshake_timeout_ns;
        if (deadline <= now) {
            srv->hs_timeouts++;
            LOG_RL(1000, "session %llu: no HELLO within %.1f s: closed", (unsigned long long)s->id,
                   (double)srv->cfg.handshake_timeout_ns / 1e9);
            s->dead = true; /* reaped (its endpoint closed) below */
        } else if (deadline < next) {
            next = deadline;
        }
    }
    srv->hs_next = next;
}

/* ---- sending -------------------------------------------------------------------------------- */

static void send_untrack(srv_send_t *send)
{
    if (send->head == NULL) {
        return;
    }
    if (send->prev != NULL) {
        send->prev->next = send->next;
    } else {
        *send->head = send->next;
    }
    if (send->next != NULL) {
        send->next->prev = send->prev;
    }
    send->head = NULL;
}

void *msd_buf_get(msd_server_t *srv, size_t len)
{
    unsigned i, best = MSD_POOL_SLOTS;
    void    *p;

    if (len >= MSD_POOL_MIN) {
        for (i = 0; i < MSD_POOL_SLOTS; i++) {
            if ((srv->pool[i].p != NULL) && (srv->pool[i].cap >= len) &&
                (srv->pool[i].cap / 2 <= len) &&
                ((best == MSD_POOL_SLOTS) || (srv->pool[i].cap < srv->pool[best].cap))) {
                best = i;
            }
        }
        if (best < MSD_POOL_SLOTS) {
            p                   = srv->pool[best].p;
            srv->pool_bytes    -= srv->pool[best].cap;
            srv->pool[best].p   = NULL;
            srv->pool[best].cap = 0;
            return p;
        }
    }
    p = malloc((len > 0) ? len : 1);
    if ((p != NULL) && (len >= 2 * MEM_HINT_HUGE)) {
        mem_hint_huge(p, len); /* a fresh buffer's pages fault in 2 MiB at a time */
    }
    return p;
}

void msd_buf_put(msd_server_t *srv, void *buf, size_t len)
{
    unsigned i;

    if ((buf == NULL) || (len < MSD_POOL_MIN) || (srv->pool_bytes + len > MSD_POOL_BYTES)) {
        free(buf);
        return;
    }
    for (i = 0; i < MSD_POOL_SLOTS; i++) {
        if (srv->pool[i].p == NULL) {
            srv->pool[i].p   = buf;
            srv->pool[i].cap = len;
            srv->pool_bytes += len;
            return;
        }
    }
    free(buf);
}

void msd_buf_fini(msd_server_t *srv)
{
    unsigned i;

    for (i = 0; i < MSD_POOL_SLOTS; i++) {
        free(srv->pool[i].p);
        srv->pool[i].p = NULL;
    }
    srv->pool_bytes = 0;
}

/* A send is over (done, failed or abandoned with its worker): its payload no longer counts
 * against its session's budget; serve = the session's loop thread may serve what waits. */
static void send_free(srv_send_t *send, bool serve)
{
    msd_session_t *s = send->acct;

    send_untrack(send);
    if (s != NULL) {
        msd_server_t *srv = s->loop->srv;

        msd_lock(srv);
        if (send->loan.t != NULL) {
            eng_lend_end(srv->eng, &send->loan, true); /* (a READ: NOT_FOUND if freed since) */
        } else {
            msd_buf_put(srv, send->payload, send->plen); /* kept for the next READ */
        }
        send->payload = NULL;
        msd_out_bytes(srv, s, -(int64_t)send->plen, serve);
        msd_session_put(srv, s);
        msd_unlock(srv);
    }
    free(send->payload);
    free(send);
}

void msd_send_discard(srv_send_t *send)
{
    send_free(send, false);
}

static void srv_send_cb(void *request, ucs_status_t status, void *user_data)
{
    send_free(user_data, true);
    ucp_request_free(request);
}

void msd_send_forget_all(srv_send_t **head)
{
    srv_send_t *send;

    while ((send = *head) != NULL) {
        send_free(send, false);
    }
}

void msd_inflight_add(msd_session_t *s, msd_inflight_t *in)
{
    in->prev = NULL;
    in->next = s->inflight;
    if (s->inflight != NULL) {
        s->inflight->prev = in;
    }
    s->inflight = in;
}

void msd_inflight_del(msd_session_t *s, msd_inflight_t *in)
{
    if (in->prev != NULL) {
        in->prev->next = in->next;
    } else if (s->inflight == in) {
        s->inflight = in->next;
    }
    if (in->next != NULL) {
        in->next->prev = in->prev;
    }
    in->next = in->prev = NULL;
}

void msd_inflight_drop_all(msd_session_t *s)
{
    msd_inflight_t *in;

    while ((in = s->inflight) != NULL) {
        msd_inflight_del(s, in);
        in->drop(in);
    }
}

void msd_send_now(msd_server_t *srv, msd_session_t *s, srv_send_t *send)
{
    ucp_request_param_t param = {0};
    ucs_status_ptr_t    sp;

    if (s->dead || (s->ep == NULL)) {
        send_free(send, false);
        return;
    }
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.send      = srv_send_cb;
    param.user_data    = send;
    sp = ucp_am_send_nbx(s->ep, MSP_AM_REPLY, send->hdr, send->hlen, send->payload, send->plen,
                         &param);
    if (UCS_PTR_IS_PTR(sp)) {
        /* Its worker may be destroyed before this completes (a local client's death, the
         * shutdown): keep track, so that it is freed then. */
        send->head = s->local ? &s->sends : &srv->tcp_sends;
        send->prev = NULL;
        send->next = *send->head;
        if (*send->head != NULL) {
            (*send->head)->prev = send;
        }
        *send->head = send;
        return;
    }
    if (UCS_PTR_IS_ERR(sp)) {
        LOG_RL(1000, "session %llu: reply not sent: %s", (unsigned long long)s->id,
               ucs_status_string(UCS_PTR_STATUS(sp)));
    }
    send_free(send, true);
}

/* A payload that will not be sent: freed, or its loan ended. Engine lock held. */
static void payload_drop(msd_server_t *srv, void *payload, eng_loan_t *loan)
{
    if ((loan != NULL) && (loan->t != NULL)) {
        eng_lend_end(srv->eng, loan, true);
    } else {
        free(payload);
    }
}

static void send_replies(msd_server_t *srv, msd_session_t *s, const msp_rep_t *reps, size_t n,
                         void *payload, size_t plen, eng_loan_t *loan);

void msd_send_replies(msd_server_t *srv, msd_session_t *s, const msp_rep_t *reps, size_t n,
                      void *payload, size_t plen)
{
    send_replies(srv, s, reps, n, payload, plen, NULL);
}

void msd_send_lent(msd_server_t *srv, msd_session_t *s, const msp_rep_t *rep, eng_loan_t *loan,
                   size_t plen)
{
    send_replies(srv, s, rep, 1, loan->ptr, plen, loan);
}

static void send_replies(msd_server_t *srv, msd_session_t *s, const msp_rep_t *reps, size_t n,
                         void *payload, size_t plen, eng_loan_t *loan)
{
    static uint8_t  tmp[MSP_HEADER_MAX]; /* under the engine lock */
    msp_buf_t       buf = {tmp, sizeof(tmp), 0, false};
    memsvc_status_t status;
    srv_send_t     *send;

    if (s->dead || (s->ep == NULL)) {
        payload_drop(srv, payload, loan);
        return;
    }
    status = msp_encode_replies(reps, n, &buf);
    if (status != MEMSVC_OK) {
        LOG("session %llu: cannot encode %zu replies: %s", (unsigned long long)s->id, n,
            memsvc_strerror(status));
        payload_drop(srv, payload, loan);
        return;
    }
    if ((payload == NULL) && (s->loop == msd_loop_current())) {
        /* The usual case, a small reply the transport takes at once: sent from tmp, with
         * no copy to keep until completion. Only if it would have to wait is it copied. */
        ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FLAG_FORCE_IMM_CMPL};
        ucs_status_ptr_t    sp;

        sp = ucp_am_send_nbx(s->ep, MSP_AM_REPLY, tmp, buf.len, NULL, 0, &param);
        if (sp == NULL) {
            return;
        }
        /* It would have to wait (or failed: msd_send_now reports it) */
    }
    send = calloc(1, sizeof(*send) + buf.len);
    if (send == NULL) {
        LOG_ERR("session %llu: out of memory for a reply", (unsigned long long)s->id);
        payload_drop(srv, payload, loan);
        return;
    }
    memcpy(send->hdr, tmp, buf.len);
    send->hlen    = buf.len;
    send->payload = payload;
    send->plen    = plen;
    if (loan != NULL) {
        send->loan = *loan; /* the send's now */
        loan->t    = NULL;
    }
    if (plen > 0) {
        /* Counted until the send completes: bytes the client has not taken yet. */
        send->acct = s;
        s->refs++;
        msd_out_bytes(srv, s, (int64_t)plen, false);
    }
    if (s->loop == msd_loop_current()) {
        msd_send_now(srv, s, send);
    } else {
        msd_loop_post_send(srv, s, send); /* only its loop's thread may use its worker */
    }
}

/* ---- requests ------------------------------------------------------------------------------- */

static ucs_status_t srv_am_request_cb(void *arg, const void *header, size_t header_length,
                                      void *data, size_t length, const ucp_am_recv_param_t *param)
{
    msd_server_t  *srv = arg;
    msd_session_t *s;
    ucs_status_t   ret;

    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || (param->reply_ep == NULL)) {
        LOG_WARN_RL(1000, "request without a reply endpoint: dropped");
        msd_lock(srv);
        srv->errors++;
        msd_unlock(srv);
        return UCS_OK;
    }
    msd_lock(srv);
    s = session_find(srv, param->reply_ep);
    if (s == NULL) {
        LOG_WARN_RL(1000, "request from an unknown endpoint: dropped");
        srv->errors++;
        msd_unlock(srv);
        return UCS_OK;
    }
    ret = msd_handle_message(srv, s, header, header_length, data, length, param);
    msd_unlock(srv);
    return ret;
}

/* ---- back-pressure ---------------------------------------------------------------------------
 *
 * Each session may have cfg.session_inflight bulk bytes in flight: READ replies the client has
 * not taken yet, WRITE payloads being received. A message whose bulk bytes do not fit waits, in
 * arrival order, with every later message of the session (order is kept); the wait ends when
 * the session's sends and receives complete. A rendezvous WRITE that waits leaves its bytes with
 * the sender (UCX keeps the descriptor until ucp_am_recv_data_nbx), so neither direction grows
 * the daemon. Past cfg.session_queue waiting messages the session is answered OVERLOAD. */

/* A message kept for later. */
typedef struct msd_defer {
    struct msd_defer   *next;
    ucp_am_recv_param_t param;
    void               *data;   /* rendezvous descriptor, or an owned copy of eager bytes */
    size_t              length;
    bool                rndv;
    uint64_t            need;   /* bulk bytes */
    size_t              hlen;
    uint8_t             hdr[];
} msd_defer_t;

static bool fits(uint64_t used, uint64_t need, uint64_t cap)
{
    return (cap == 0) || (used == 0) || (used + need <= cap);
}

/* Bulk bytes of a decoded message: READ lengths and a WRITE's payload. */
static uint64_t msg_bulk(const msp_req_t *reqs, size_t n)
{
    uint64_t need = 0;
    size_t   i;

    for (i = 0; i < n; i++) {
        if ((reqs[i].status == MEMSVC_OK) &&
            ((reqs[i].op == MSP_OP_READ) || (reqs[i].op == MSP_OP_WRITE))) {
            need += reqs[i].u.io.len;
        }
    }
    return need;
}

unsigned msd_sessions_live(msd_server_t *srv)
{
    msd_session_t *s;
    unsigned       n = 0;

    for (s = srv->sessions; s != NULL; s = s->next) {
        n += (s->dead || s->evicted) ? 0 : 1;
    }
    return n;
}

bool msd_sessions_make_room(msd_server_t *srv, bool local)
{
    msd_session_t *s, *oldest = NULL;
    unsigned       live = 0;

    for (s = srv->sessions; s != NULL; s = s->next) {
        if (s->dead || s->evicted || (s->local != local)) {
            continue;
        }
        live++;
        if (!s->bound && !s->peer_up &&
            ((oldest == NULL) || (s->created_ns < oldest->created_ns))) {
            oldest = s;
        }
    }
    if (live < srv->cfg.max_sessions) {
        return true;
    }
    srv->refused++;
    if ((oldest == NULL) || (msp_now_ns() - oldest->created_ns < MSD_SHED_AGE_NS)) {
        /* A burst: refusing costs nothing, while accepting would open the new connection's
         * sockets before the old one's are closed. */
        LOG_RL(1000, "%s connection refused: %u sessions live (--max-sessions %u)%s",
               local ? "local" : "tcp", live, srv->cfg.max_sessions,
               (oldest == NULL) ? ", every one past its HELLO" : ", the silent ones young");
        return false;
    }
    /* Silent connections make way for new ones: a flood of them cannot lock clients out. */
    LOG_RL(1000, "%u %s sessions live (--max-sessions %u): the oldest without HELLO (session "
                 "%llu) closed to make room",
           live, local ? "local" : "tcp", srv->cfg.max_sessions, (unsigned long long)oldest->id);
    msd_session_evict(srv, oldest);
    return true;
}

/* Answer every request of the decoded message in srv->reqs with status. */
static void answer_all(msd_server_t *srv, msd_session_t *s, size_t n, memsvc_status_t status,
                       const char *msg)
{
    size_t i;

    for (i = 0; i < n; i++) {
        memset(&srv->reps[i], 0, sizeof(srv->reps[i]));
        srv->reps[i].id     = srv->reqs[i].id;
        srv->reps[i].op     = srv->reqs[i].op;
        srv->reps[i].status = status;
        snprintf(srv->reps[i].msg, sizeof(srv->reps[i].msg), "%s", msg);
        srv->errors++;
        s->errors++;
    }
    if (n > 0) {
        msd_send_replies(srv, s, srv->reps, n, NULL, 0);
    }
}

static ucs_status_t defer_message(msd_server_t *srv, msd_session_t *s, const void *header,
                                  size_t hlen, void *data, size_t length,
                                  const ucp_am_recv_param_t *param, size_t n, uint64_t need)
{
    bool         rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    msd_defer_t *d    = NULL;
    char         msg[MSP_MSG_MAX + 1];

    if ((s->ndefer < srv->cfg.session_queue) && (rndv || (length <= MSD_DEFER_EAGER_MAX))) {
        d = calloc(1, sizeof(*d) + hlen);
    }
    if ((d != NULL) && !rndv && (length > 0)) {
        d->data = malloc(length);
        if (d->data == NULL) {
            free(d);
            d = NULL;
        } else {
            memcpy(d->data, data, length);
        }
    }
    if (d == NULL) {
        srv->overloads++;
        snprintf(msg, sizeof(msg),
                 "overload: %u messages already wait for this session's %llu bytes in flight "
                 "(--session-queue); retry later",
                 s->ndefer, (unsigned long long)s->out_bytes);
        LOG_RL(1000, "session %llu (job %u rank %u): %s", (unsigned long long)s->id, s->job,
               s->rank, msg);
        answer_all(srv, s, n, MEMSVC_ERR_OVERLOAD, msg);
        return UCS_OK; /* a rendezvous payload is dropped (its sender completes) */
    }
    if (rndv) {
        d->data = data;
    }
    d->param  = *param;
    d->length = length;
    d->rndv   = rndv;
    d->need   = need;
    d->hlen   = hlen;
    memcpy(d->hdr, header, hlen);
    if (s->dq_tail != NULL) {
        s->dq_tail->next = d;
    } else {
        s->dq_head = d;
    }
    s->dq_tail = d;
    s->ndefer++;
    srv->deferred++;
    return rndv ? UCS_INPROGRESS : UCS_OK;
}

void msd_defer_drop(msd_server_t *srv, msd_session_t *s, bool release)
{
    msd_defer_t *d;

    while ((d = s->dq_head) != NULL) {
        s->dq_head = d->next;
        if (d->rndv) {
            if (release && (s->worker != NULL)) {
                ucp_am_data_release(s->worker, d->data);
            }
        } else {
            free(d->data);
        }
        free(d);
    }
    s->dq_tail = NULL;
    s->ndefer  = 0;
    if (s->kick) {
        s->kick = false;
        srv->kicks--;
    }
}

/* Serve what s kept, in order, while it fits (s's loop thread, engine lock). */
static ucs_status_t handle_message(msd_server_t *srv, msd_session_t *s, const void *header,
                                   size_t header_length, void *data, size_t length,
                                   const ucp_am_recv_param_t *param, bool *taken_p);

static void defer_serve(msd_server_t *srv, msd_session_t *s)
{
    msd_defer_t *d;
    bool         taken;

    if (s->serving) {
        return;
    }
    s->serving = true;
    while (((d = s->dq_head) != NULL) && !s->dead) {
        bool job_ok = msd_jobs_inflight_fits(&srv->jobs, s->job, d->need);

        if (!fits(s->out_bytes, d->need, srv->cfg.session_inflight) ||
            (!job_ok && (s->out_bytes > 0))) {
            break; /* its own completions will call again */
        }
        s->dq_head = d->next;
        if (s->dq_head == NULL) {
            s->dq_tail = NULL;
        }
        s->ndefer--;
        /* Served as if it had just arrived; a descriptor nobody took is given back. */
        if ((handle_message(srv, s, d->hdr, d->hlen, d->data, d->length, &d->param, &taken) !=
             UCS_INPROGRESS) &&
            d->rndv && !taken) {
            ucp_am_data_release(s->worker, d->data);
        }
        if (!d->rndv) {
            free(d->data);
        }
        free(d);
    }
    s->serving = false;
}

/* Serve sessions of this loop whose bytes dropped while serving was unsafe. */
static void defer_kicked(msd_server_t *srv)
{
    msd_loop_t    *loop = msd_loop_current();
    msd_session_t *s;

    if ((srv->kicks == 0) || srv->kicking || (srv->in_handle > 0)) {
        return;
    }
    srv->kicking = true;
    for (s = srv->sessions; s != NULL; s = s->next) {
        if (s->kick && (s->loop == loop)) {
            s->kick = false;
            srv->kicks--;
            defer_serve(srv, s);
        }
    }
    srv->kicking = false;
}

void msd_out_bytes(msd_server_t *srv, msd_session_t *s, int64_t delta, bool serve)
{
    msd_job_t *j = msd_jobs_get(&srv->jobs, s->job, true);

    s->out_bytes = (uint64_t)((int64_t)s->out_bytes + delta);
    if (j != NULL) {
        j->inflight = (uint64_t)((int64_t)j->inflight + delta);
    }
    if ((delta >= 0) || (s->dq_head == NULL) || s->dead) {
        return;
    }
    if (serve && (srv->in_handle == 0) && (s->loop == msd_loop_current())) {
        defer_serve(srv, s);
    } else if (!s->kick) {
        s->kick = true; /* served at the end of the message being handled */
        srv->kicks++;
    }
}

/* msd_handle_message; *taken_p: a rendezvous descriptor was handed to ucp_am_recv_data_nbx. */
static ucs_status_t handle_message(msd_server_t *srv, msd_session_t *s, const void *header,
                                   size_t header_length, void *data, size_t length,
                                   const ucp_am_recv_param_t *param, bool *taken_p)
{
    memsvc_status_t status;
    size_t          n;
    uint64_t        need;
    bool            was_bound = s->bound;

    *taken_p   = false;
    s->last_ns = msp_now_ns();
    status     = msp_decode_requests(header, header_length, srv->reqs, MSP_BATCH_MAX, &n);
    if (status != MEMSVC_OK) {
        msp_rep_t rep = {.id = 0, .op = 0, .status = status};

        srv->requests++;
        s->requests++;
        snprintf(rep.msg, sizeof(rep.msg), "undecodable request header (%zu bytes): %s",
                 header_length, memsvc_strerror(status));
        LOG_WARN_RL(1000, "session %llu (job %u rank %u): %s", (unsigned long long)s->id, s->job,
                    s->rank, rep.msg);
        srv->errors++;
        s->errors++;
        msd_metrics_error(srv, status);
        msd_send_replies(srv, s, &rep, 1, NULL, 0);
        return UCS_OK; /* any rendezvous payload is dropped */
    }
    need = msg_bulk(srv->reqs, n);
    if ((s->dq_head != NULL) && !s->serving) {
        return defer_message(srv, s, header, header_length, data, length, param, n, need);
    }
    if ((need > 0) && !fits(s->out_bytes, need, srv->cfg.session_inflight)) {
        return defer_message(srv, s, header, header_length, data, length, param, n, need);
    }
    if ((need > 0) && !msd_jobs_inflight_fits(&srv->jobs, s->job, need)) {
        char msg[MSP_MSG_MAX + 1];

        if (s->out_bytes > 0) { /* its own completions make room */
            return defer_message(srv, s, header, header_length, data, length, param, n, need);
        }
        snprintf(msg, sizeof(msg), "job %u: inflight quota: its other sessions have it in use",
                 s->job);
        answer_all(srv, s, n, MEMSVC_ERR_QUOTA, msg);
        return UCS_OK;
    }
    srv->requests++;
    s->requests++;
    srv->in_handle++;
    srv->rndv_taken = false;
    msd_ops_handle(srv, s, n, data, length, param);
    *taken_p = srv->rndv_taken;
    srv->in_handle--;
    if (s->bound && !was_bound) {
        srv->metrics.sessions[s->local ? 1 : 0]++;
        if (s->local) {
            msd_local_send_regions(srv, s);
        }
        msd_transport_summary(srv);
    }
    msd_after_batch(srv);
    defer_kicked(srv);
    return UCS_OK;
}

ucs_status_t msd_handle_message(msd_server_t *srv, msd_session_t *s, const void *header,
                                size_t header_length, void *data, size_t length,
                                const ucp_am_recv_param_t *param)
{
    bool taken;

    return handle_message(srv, s, header, header_length, data, length, param, &taken);
}

void msd_transport_summary(msd_server_t *srv)
{
    msd_session_t *s;
    unsigned       nlocal = 0, ntcp = 0;
    int            n      = 0;

    for (s = srv->sessions; s != NULL; s = s->next) {
        if (s->dead || !s->bound) {
            continue;
        }
        if (s->local) {
            nlocal++;
            snprintf(srv->lanes_local, sizeof(srv->lanes_local), "%s", s->transport);
        } else {
            ntcp++;
            snprintf(srv->lanes_tcp, sizeof(srv->lanes_tcp), "%s", s->transport);
        }
    }
    if ((nlocal != srv->metrics.status_local) || (ntcp != srv->metrics.status_tcp)) {
        /* systemctl status shows it (a no-op outside systemd) */
        srv->metrics.status_local = nlocal;
        srv->metrics.status_tcp   = ntcp;
        sd_notifyf(0, "STATUS=serving on %s: %u local and %u tcp sessions", srv->cfg.listen,
                   nlocal, ntcp);
    }
    if ((nlocal == 0) && (ntcp == 0)) {
        return; /* keep naming what the last sessions used */
    }
    if (nlocal > 0) {
        n = snprintf(srv->transport, sizeof(srv->transport),
                     "shm: %.64s (%u local, own worker each, unix socket)", srv->lanes_local,
                     nlocal);
    }
    if ((ntcp > 0) && (n >= 0) && ((size_t)n < sizeof(srv->transport))) {
        snprintf(srv->transport + n, sizeof(srv->transport) - (size_t)n, "%stcp: %.48s (%u)",
                 (n > 0) ? "; " : "", srv->lanes_tcp, ntcp);
    }
}

/* ---- set-up --------------------------------------------------------------------------------- */

static void log_context_transports(msd_server_t *srv)
{
    char       *text = NULL, *line, *save = NULL;
    size_t      len = 0;
    FILE       *f   = open_memstream(&text, &len);
    const char *tls = getenv("UCX_TLS");
    const char *dev = getenv("UCX_NET_DEVICES");
    FILE       *ps;
    int         scope = -1;

    if (f != NULL) {
        ucp_context_print_info(srv->ctx, f);
        fclose(f);
        for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
            if ((strstr(line, "md[") != NULL) || (strstr(line, "resource") != NULL)) {
                msd_log(MSD_LOG_INFO, "ucx", "%s", line + strspn(line, "# "));
            }
        }
        free(text);
    }
    msd_log(MSD_LOG_INFO, "ucx",
            "UCX_TLS=%s UCX_NET_DEVICES=%s (each session logs the transports it got)",
        (tls != NULL) ? tls : "(all)", (dev != NULL) ? dev : "(all)");
    ps = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
    if (ps != NULL) {
        if (fscanf(ps, "%d", &scope) != 1) {
            scope = -1;
        }
        fclose(ps);
    }
    if (scope > 0) {
        msd_log(MSD_LOG_INFO, "ucx",
                "kernel.yama.ptrace_scope=%d: the cma transport (cross-process memory "
                "access) will not work; UCX falls back to other transports",
                scope);
    }
}

/* What the listener is bound to: kept (tcp peers are found by it) and, unless remote clients
 * are allowed, checked to be loopback: the name said so, the socket must too. */
static memsvc_status_t srv_listener_check(msd_server_t *srv)
{
    ucp_listener_attr_t attr = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
    ucs_status_t        us   = ucp_listener_query(srv->listener, &attr);

    if (us != UCS_OK) {
        LOG_ERR("ucp_listener_query: %s", ucs_status_string(us));
        return MEMSVC_ERR_TRANSPORT;
    }
    srv->listen_addr = attr.sockaddr;
    if (!srv->cfg.allow_remote && !msd_auth_sockaddr_loopback((struct sockaddr *)&attr.sockaddr)) {
        LOG_ERR("the listener of %s is bound to a non-loopback address: refusing to serve "
                "(add --allow-remote)",
                srv->cfg.listen);
        return MEMSVC_ERR_ACCESS;
    }
    return MEMSVC_OK;
}

static void log_limits(msd_server_t *srv)
{
    const msd_config_t *c = &srv->cfg;
    const msd_quota_t  *q = &c->quota;
    char                a[32], b[32], d[32], e[32];

    LOG("limits: %u sessions per door (tcp, unix socket), HELLO within %.1f s, %s in flight per "
        "session (then up to %u messages wait)",
        c->max_sessions, (double)c->handshake_timeout_ns / 1e9,
        (c->session_inflight > 0) ? sim_format_size(c->session_inflight, a, sizeof(a))
                                  : "unbounded",
        c->session_queue);
    LOG("job quota: hbm %s, host %s, disk %s, tensors %llu, in flight %s (0: unlimited)",
        sim_format_size(q->hbm, a, sizeof(a)), sim_format_size(q->host, b, sizeof(b)),
        sim_format_size(q->disk, d, sizeof(d)), (unsigned long long)q->tensors,
        sim_format_size(q->inflight, e, sizeof(e)));
}

memsvc_status_t msd_server_init(msd_server_t *srv, eng_t *eng, const msd_config_t *cfg)
{
    ucp_params_t            ctx_params = {0};
    ucp_worker_params_t     wparams    = {0};
    ucp_listener_params_t   lparams    = {0};
    struct epoll_event      ev         = {0};
    struct sockaddr_storage ss;
    socklen_t               sslen;
    memsvc_status_t         status;
    ucs_status_t            ustatus;
    sigset_t                mask;
    msd_peers_t            *peers = srv->peers; /* the caller's (may be NULL): kept */

    memset(srv, 0, sizeof(*srv));
    srv->peers       = peers;
    srv->cfg         = *cfg;
    srv->eng         = eng;
    srv->next_sid    = 1;
    srv->orphan_next = UINT64_MAX;
    srv->hs_next     = UINT64_MAX;
    srv->start_ns    = msp_now_ns();
    srv->epfd = srv->timerfd = srv->sigfd = -1;
    srv->usock                             = -1;
    pthread_mutex_init(&srv->lock, NULL);
    atomic_store(&srv->timer_at, UINT64_MAX);
    atomic_store(&srv->timer_armed, UINT64_MAX);
    srv->body    = (msp_buf_t){srv->body_data, sizeof(srv->body_data), 0, false};
    srv->spin_ns = cfg->spin_ns;
    snprintf(srv->transport, sizeof(srv->transport), "none yet");

    if (msp_parse_addr(cfg->listen, &ss, &sslen) != MEMSVC_OK) {
        LOG_ERR("cannot parse listen address '%s' (want HOST:PORT)", cfg->listen);
        return MEMSVC_ERR_PARSE;
    }
    status = msd_auth_init(&srv->auth, cfg);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = msd_map_init(&srv->own);
    if (status != MEMSVC_OK) {
        LOG("out of memory");
        goto err_auth;
    }
    /* A restart binds the port at once, even while connections of the previous process are
     * in TIME_WAIT (about 60 s after a shutdown with clients): SO_REUSEADDR on the listening
     * socket, UCX's own setting for its tcp connection manager, TCP_CM_REUSEADDR (default n;
     * `ucx_info -c`). UCX 1.13 reads the connection manager's settings from the environment
     * only (given to ucp_config_modify, the worker warns "invalid configuration"), so it is
     * set there, before UCX reads it; a value the user set wins. */
    setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
    status = msd_jobs_init(&srv->jobs, &cfg->quota);
    if (status != MEMSVC_OK) {
        LOG_ERR("out of memory");
        msd_map_fini(&srv->own);
        goto err_auth;
    }
    eng_set_usage_observer(eng, msd_jobs_usage, &srv->jobs);
    eng_set_guard(eng, msd_fast_guard, srv);
    ctx_params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    ctx_params.features   = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    ctx_params.name       = "memsvcd";
    ustatus               = ucp_init(&ctx_params, NULL, &srv->ctx);
    if (ustatus != UCS_OK) {
        LOG_ERR("ucp_init: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_map;
    }
    wparams.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
    ustatus             = ucp_worker_create(srv->ctx, &wparams, &srv->worker);
    if (ustatus != UCS_OK) {
        LOG_ERR("ucp_worker_create: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_ctx;
    }
    ustatus = ucp_worker_get_efd(srv->worker, &srv->efd);
    if (ustatus != UCS_OK) {
        LOG_ERR("ucp_worker_get_efd: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_worker;
    }
    ustatus = msp_ucx_am_handler(srv->worker, MSP_AM_REQUEST, srv_am_request_cb, srv);
    if (ustatus != UCS_OK) {
        LOG_ERR("ucp_worker_set_am_recv_handler: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_worker;
    }
    lparams.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lparams.sockaddr.addr    = (struct sockaddr *)&ss;
    lparams.sockaddr.addrlen = sslen;
    lparams.conn_handler.cb  = srv_conn_cb;
    lparams.conn_handler.arg = srv;
    ustatus                  = ucp_listener_create(srv->worker, &lparams, &srv->listener);
    if (ustatus != UCS_OK) {
        /* UCX says "Device is busy" for a port in use (memsvcd checks before, but another
         * process may have taken the port since). */
        LOG_ERR("cannot listen on %s: %s", cfg->listen,
                (ustatus == UCS_ERR_BUSY) ? "address in use" : ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_worker;
    }
    status = srv_listener_check(srv);
    if (status != MEMSVC_OK) {
        goto err_listener;
    }

    status = msd_loops_init(srv);
    if (status != MEMSVC_OK) {
        goto err_listener;
    }
    srv->epfd    = srv->loops[0].epfd;
    srv->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP); /* reload (msd_reload) */
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    srv->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if ((srv->timerfd < 0) || (srv->sigfd < 0)) {
        LOG_ERR("timerfd/signalfd: %s", strerror(errno));
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_fds;
    }
    ev.events   = EPOLLIN;
    ev.data.ptr = &ev_tcp_worker;
    epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->efd, &ev);
    ev.data.ptr = &ev_timer;
    epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->timerfd, &ev);
    ev.data.ptr = &ev_signal;
    epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sigfd, &ev);

    if (msd_peers_attach(srv) != MEMSVC_OK) {
        status = MEMSVC_ERR_TRANSPORT;
        goto err_fds;
    }
    LOG("listening on %s%s; remote (tcp) sessions served by their own loop", cfg->listen,
        cfg->allow_remote ? " (remote clients allowed)" : " (loopback)");
    log_context_transports(srv);
    log_limits(srv);
    if (!cfg->no_unix) {
        status = msd_local_init(srv);
        if (status != MEMSVC_OK) {
            goto err_fds;
        }
    } else {
        LOG("local socket disabled (--no-unix): every client comes over tcp");
    }
    if (cfg->metrics != NULL) {
        status = msd_metrics_start(srv, cfg->metrics);
        if (status != MEMSVC_OK) {
            goto err_local;
        }
    }
    return MEMSVC_OK;

err_local:
    if (!cfg->no_unix) {
        msd_local_stop(srv);
        msd_local_fini(srv);
    }
err_fds:
    if (srv->sigfd >= 0) {
        close(srv->sigfd);
    }
    if (srv->timerfd >= 0) {
        close(srv->timerfd);
    }
    msd_loops_fini(srv);
err_listener:
    ucp_listener_destroy(srv->listener);
err_worker:
    ucp_worker_destroy(srv->worker);
err_ctx:
    ucp_cleanup(srv->ctx);
err_map:
    eng_set_usage_observer(eng, NULL, NULL);
    eng_set_guard(eng, NULL, NULL);
    msd_jobs_fini(&srv->jobs);
    msd_map_fini(&srv->own);
err_auth:
    msd_auth_fini(&srv->auth);
    return status;
}

/* Arm loop 0's timer for srv->timer_at (the engine's next completion or orphan expiry). */
static void srv_arm_timer(msd_server_t *srv)
{
    struct itimerspec its  = {0};
    uint64_t          when = atomic_load(&srv->timer_at), now = msp_now_ns(), rel;

    if (when != UINT64_MAX) {
        rel                  = (when > now) ? (when - now) : 1;
        its.it_value.tv_sec  = (time_t)(rel / 1000000000ull);
        its.it_value.tv_nsec = (long)(rel % 1000000000ull);
    }
    atomic_store(&srv->timer_armed, when);
    timerfd_settime(srv->timerfd, 0, &its, NULL);
}

/* Begin an ordered shutdown: stop accepting (tcp listener, Unix socket), tell every client
 * (a notice reply, MEMSVC_ERR_SHUTDOWN), refuse new requests, and let the moves in flight end
 * (msd_server_run waits for them, bounded by MSD_DRAIN_NS). */
static void srv_begin_shutdown(msd_server_t *srv, unsigned signo)
{
    msp_rep_t      notice = {.id = MSP_ID_NOTICE, .status = MEMSVC_ERR_SHUTDOWN};
    msd_session_t *s;
    unsigned       told = 0;

    if (atomic_exchange(&srv->draining, true)) {
        return; /* a second signal: already on the way */
    }
    LOG("signal %u: shutting down: no new clients; telling those connected; ending moves in "
        "flight",
        signo);
    /* Goodbye to the peer daemons while their links still stand: they see this node down at
     * once instead of after their peer timeout. */
    msd_peers_stop(srv);
    srv_listener_close(srv);
    if (!srv->cfg.no_unix) {
        msd_local_stop(srv); /* the acceptor is joined, handshakes done */
    }
    snprintf(notice.msg, sizeof(notice.msg), "the daemon is shutting down");
    msd_lock(srv);
    for (s = srv->sessions; s != NULL; s = s->next) {
        if (!s->dead && (s->ep != NULL) && s->bound) {
            msd_send_replies(srv, s, &notice, 1, NULL, 0);
            told++;
        }
    }
    srv->drain_from  = msp_now_ns();
    srv->drain_until = srv->drain_from + MSD_DRAIN_NS;
    msd_unlock(srv);
    LOG("shutdown: %u sessions told", told);
}

/* Draining is over: the notices had time to leave and no move is in flight (or time is up). */
static bool srv_drained(msd_server_t *srv, uint64_t now)
{
    eng_stats_t es;

    if (now < srv->drain_from + MSD_NOTICE_NS) {
        return false;
    }
    msd_lock(srv);
    eng_progress(srv->eng);
    eng_stats(srv->eng, &es);
    msd_unlock(srv);
    if (es.moves_in_flight == 0) {
        return true;
    }
    if (now >= srv->drain_until) {
        LOG("shutdown: %llu moves still in flight after %.1f s: canceled",
            (unsigned long long)es.moves_in_flight, (double)MSD_DRAIN_NS / 1e9);
        return true;
    }
    return false;
}

/* After the loops: every session dead and cleaned (pins released, tensors freed or orphaned),
 * tcp endpoints closed, operations waiting in the engine canceled. Loop 0's thread. */
static void srv_end_sessions(msd_server_t *srv)
{
    msd_session_t *s;

    msd_lock(srv);
    for (s = srv->sessions; s != NULL; s = s->next) {
        if (!s->dead) {
            LOG("session %llu (job %u rank %u '%s'): closed: the daemon is stopping",
                (unsigned long long)s->id, s->job, s->rank, s->name);
            s->dead = true;
        }
    }
    sessions_reap(srv);
    msd_ops_cancel_all(srv);
    msd_unlock(srv);
}

memsvc_status_t msd_server_run(msd_server_t *srv)
{
    struct epoll_event evs[8];
    msd_loop_t        *loop = &srv->loops[0];
    uint64_t           ticks, now, fds_at = 0;
    bool               busy;
    unsigned           k;
    int                n, i;

    if (msd_loops_start(srv) != MEMSVC_OK) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    if (srv->peers != NULL) {
        msd_lock(srv);
        msd_after_batch(srv); /* the first dial and heartbeat are due */
        msd_unlock(srv);
    }
    /* Listener, local socket and loops are up: systemd (Type=notify) may start clients. */
    sd_notifyf(0, "READY=1\nSTATUS=serving on %s%s%s", srv->cfg.listen,
               srv->cfg.no_unix ? "" : " and ", srv->cfg.no_unix ? "" : srv->unix_path);
    while (!atomic_load(&srv->stopping)) {
        for (k = 0; (k < MSD_PROGRESS_PER_TURN) && (ucp_worker_progress(srv->worker) != 0); k++) {
            loop->last_active = msp_now_ns();
        }
        msd_loop_drain(loop);
        now = msp_now_ns();
        if ((now >= atomic_load(&srv->timer_at)) || atomic_load(&srv->reap_tcp)) {
            msd_lock(srv);
            atomic_store(&srv->reap_tcp, false);
            eng_progress(srv->eng);
            if (msd_peers_next(srv) <= now) {
                msd_peers_tick(srv);
            }
            if (srv->hs_next <= msp_now_ns()) {
                sessions_expire_handshakes(srv, msp_now_ns());
            }
            sessions_reap(srv);
            if (srv->orphan_next <= msp_now_ns()) {
                msd_ops_expire_orphans(srv, msp_now_ns());
            }
            msd_ops_reclaim(srv, MSD_RECLAIM_SLICE); /* one slice per turn */
            msd_transport_summary(srv);
            msd_after_batch(srv);
            msd_unlock(srv);
        }
        if (atomic_load(&srv->draining)) {
            if (srv_drained(srv, now)) {
                break;
            }
        }
        /* Busy-poll briefly after activity (a reply is often followed by the next request),
         * then sleep until UCX, the timer, another loop or a signal has something. Draining
         * spins: it is short. --poll: never sleep while tcp sessions or peers are served. */
        now = msp_now_ns();
        if ((srv->cfg.poll &&
             ((atomic_load(&loop->nsessions) > 0) || (srv->peers != NULL))) ||
            atomic_load(&srv->draining) ||
            (now - loop->last_active < srv->spin_ns)) {
            busy = true;
            if (now - fds_at < MSD_BUSY_FDS_NS) {
                continue; /* spinning: the fds can wait (see MSD_BUSY_FDS_NS) */
            }
        } else {
            busy = (ucp_worker_arm(srv->worker) == UCS_ERR_BUSY);
        }
        if (!busy) {
            srv_arm_timer(srv);
        }
        fds_at = now;
        n      = epoll_wait(srv->epfd, evs, 8, busy ? 0 : -1);
        if ((n < 0) && (errno != EINTR)) {
            LOG_ERR("epoll_wait: %s", strerror(errno));
            atomic_store(&srv->stopping, true);
            break;
        }
        for (i = 0; i < n; i++) {
            const msd_ev_t *ev = evs[i].data.ptr;

            if (ev->kind == MSD_EV_SIGNAL) {
                struct signalfd_siginfo si;

                if (read(srv->sigfd, &si, sizeof(si)) != sizeof(si)) {
                    continue;
                }
                if (si.ssi_signo == SIGHUP) {
                    msd_reload_signal(srv);
                } else {
                    sd_notify(0, "STOPPING=1\nSTATUS=shutting down");
                    srv_begin_shutdown(srv, si.ssi_signo);
                }
            } else if (ev->kind == MSD_EV_TIMER) {
                if (read(srv->timerfd, &ticks, sizeof(ticks)) < 0) {
                    ticks = 0;
                }
            } else if (ev->kind == MSD_EV_WAKE) {
                if (read(loop->evfd, &ticks, sizeof(ticks)) < 0) {
                    ticks = 0;
                }
            }
        }
    }
    atomic_store(&srv->draining, true);
    srv->stop = true;
    msd_metrics_stop(srv); /* before the caller destroys the engine it reads */
    if (!srv->cfg.no_unix) {
        msd_local_stop(srv);
    }
    msd_loops_stop(srv); /* local sessions ended, their workers destroyed */
    srv_end_sessions(srv);
    return MEMSVC_OK;
}

void msd_server_fini(msd_server_t *srv)
{
    msd_session_t *s;
    uint64_t       deadline;
    bool           again;

    msd_metrics_stop(srv); /* its thread reads the server under the lock: first to go */
    msd_peers_stop(srv);
    srv_listener_close(srv);
    for (s = srv->sessions; s != NULL; s = s->next) {
        s->dead = true;
        msd_defer_drop(srv, s, !s->local); /* local workers are gone with their loops */
        session_close_ep(srv, s);
    }
    /* Let the closes and what completes with them (sends, receives: their callbacks see dead
     * sessions) run, bounded. */
    deadline = msp_now_ns() + 500000000ull;
    while (msp_now_ns() < deadline) {
        if (ucp_worker_progress(srv->worker) == 0) {
            break;
        }
    }
    ucp_worker_destroy(srv->worker);
    /* The worker is gone: the callbacks of what was still in flight on it never run. */
    msd_lock(srv);
    msd_send_forget_all(&srv->tcp_sends);
    do {
        again = false;
        for (s = srv->sessions; s != NULL; s = s->next) {
            if (s->inflight != NULL) {
                msd_inflight_drop_all(s); /* may free s (its last reference) */
                again = true;
                break;
            }
        }
    } while (again);
    while ((s = srv->sessions) != NULL) {
        srv->sessions = s->next;
        msd_fast_close(srv, s);
        free(s);
    }
    msd_unlock(srv);
    ucp_cleanup(srv->ctx);
    if (!srv->cfg.no_unix) {
        msd_local_fini(srv);
    }
    close(srv->sigfd);
    close(srv->timerfd);
    msd_loops_fini(srv); /* closes loop 0's epoll (srv->epfd) */
    msd_map_fini(&srv->own);
    msd_auth_fini(&srv->auth);
    /* The engine outlives the server (it is destroyed last): it must no longer report usage
     * to the jobs table freed here. */
    eng_set_usage_observer(srv->eng, NULL, NULL);
    eng_set_guard(srv->eng, NULL, NULL);
    msd_jobs_fini(&srv->jobs);
    free(srv->reclaim); /* the engine, destroyed, took their tensors */
    msd_buf_fini(srv);
    pthread_mutex_destroy(&srv->lock);
    LOG("stopped: %llu sessions served, %llu requests, %llu errors",
        (unsigned long long)srv->sessions_total, (unsigned long long)srv->requests,
        (unsigned long long)srv->errors);
}
