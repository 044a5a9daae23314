/* msd_server.c - memsvcd's one event loop: UCX listener and worker, timerfd, signalfd, sessions */
#include "client/msp_ucx.h"
#include "memsvc/msd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define LOG(fmt, ...) fprintf(stderr, "memsvcd: " fmt "\n", ##__VA_ARGS__)

/* A reply in flight: owns its header and payload. */
typedef struct srv_send {
    void   *payload;
    size_t  hlen;
    uint8_t hdr[];
} srv_send_t;

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
        if (!s->dead || s->cleaned) {
            continue;
        }
        msd_ops_session_gone(srv, s);
        s->cleaned = true;
        session_close_ep(srv, s);
        s->refs++;
        msd_session_put(srv, s);
    }
}

static void srv_ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    msd_session_t *s = arg;

    if (!s->dead) {
        LOG("session %llu (job %u rank %u '%s'): disconnected (%s)", (unsigned long long)s->id,
            s->job, s->rank, s->name, ucs_status_string(status));
        s->dead = true;
    }
}

static void srv_conn_cb(ucp_conn_request_h conn_request, void *arg)
{
    msd_server_t   *srv = arg;
    ucp_ep_params_t ep  = {0};
    msd_session_t  *s;
    ucs_status_t    status;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        LOG("out of memory for a new session: connection refused");
        ucp_listener_reject(srv->listener, conn_request);
        return;
    }
    s->id         = srv->next_sid++;
    ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.conn_request    = conn_request;
    ep.err_mode        = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb  = srv_ep_err_cb;
    ep.err_handler.arg = s;
    status             = ucp_ep_create(srv->worker, &ep, &s->ep);
    if (status != UCS_OK) {
        LOG("cannot accept a connection: %s", ucs_status_string(status));
        free(s);
        return;
    }
    snprintf(s->name, sizeof(s->name), "?");
    s->next       = srv->sessions;
    srv->sessions = s;
    srv->sessions_total++;
}

/* ---- sending -------------------------------------------------------------------------------- */

static void srv_send_cb(void *request, ucs_status_t status, void *user_data)
{
    srv_send_t *send = user_data;

    free(send->payload);
    free(send);
    ucp_request_free(request);
}

void msd_send_replies(msd_server_t *srv, msd_session_t *s, const msp_rep_t *reps, size_t n,
                      void *payload, size_t plen)
{
    static uint8_t      tmp[MSP_HEADER_MAX];
    ucp_request_param_t param = {0};
    msp_buf_t           buf   = {tmp, sizeof(tmp), 0, false};
    memsvc_status_t     status;
    ucs_status_ptr_t    sp;
    srv_send_t         *send;

    if (s->dead || (s->ep == NULL)) {
        free(payload);
        return;
    }
    status = msp_encode_replies(reps, n, &buf);
    if (status != MEMSVC_OK) {
        LOG("session %llu: cannot encode %zu replies: %s", (unsigned long long)s->id, n,
            memsvc_strerror(status));
        free(payload);
        return;
    }
    send = malloc(sizeof(*send) + buf.len);
    if (send == NULL) {
        LOG("session %llu: out of memory for a reply", (unsigned long long)s->id);
        free(payload);
        return;
    }
    memcpy(send->hdr, tmp, buf.len);
    send->hlen         = buf.len;
    send->payload      = payload;
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.send      = srv_send_cb;
    param.user_data    = send;
    sp = ucp_am_send_nbx(s->ep, MSP_AM_REPLY, send->hdr, send->hlen, payload, plen, &param);
    if (UCS_PTR_IS_PTR(sp)) {
        return;
    }
    if (UCS_PTR_IS_ERR(sp)) {
        LOG("session %llu: reply not sent: %s", (unsigned long long)s->id,
            ucs_status_string(UCS_PTR_STATUS(sp)));
    }
    free(send->payload);
    free(send);
}

/* ---- requests ------------------------------------------------------------------------------- */

static ucs_status_t srv_am_request_cb(void *arg, const void *header, size_t header_length,
                                      void *data, size_t length, const ucp_am_recv_param_t *param)
{
    msd_server_t   *srv = arg;
    msd_session_t  *s;
    memsvc_status_t status;
    size_t          n;

    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || (param->reply_ep == NULL)) {
        LOG("request without a reply endpoint: dropped");
        srv->errors++;
        return UCS_OK;
    }
    s = session_find(srv, param->reply_ep);
    if (s == NULL) {
        LOG("request from an unknown endpoint: dropped");
        srv->errors++;
        return UCS_OK;
    }
    srv->requests++;
    s->requests++;
    status = msp_decode_requests(header, header_length, srv->reqs, MSP_BATCH_MAX, &n);
    if (status != MEMSVC_OK) {
        msp_rep_t rep = {.id = 0, .op = 0, .status = status};

        snprintf(rep.msg, sizeof(rep.msg), "undecodable request header (%zu bytes): %s",
                 header_length, memsvc_strerror(status));
        LOG("session %llu (job %u rank %u): %s", (unsigned long long)s->id, s->job, s->rank,
            rep.msg);
        srv->errors++;
        s->errors++;
        msd_send_replies(srv, s, &rep, 1, NULL, 0);
        return UCS_OK; /* any rendezvous payload is dropped */
    }
    msd_ops_handle(srv, s, n, data, length, param);
    return UCS_OK;
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
                LOG("ucx: %s", line + strspn(line, "# "));
            }
        }
        free(text);
    }
    LOG("ucx: UCX_TLS=%s UCX_NET_DEVICES=%s (each session logs the transports it got)",
        (tls != NULL) ? tls : "(all)", (dev != NULL) ? dev : "(all)");
    ps = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
    if (ps != NULL) {
        if (fscanf(ps, "%d", &scope) != 1) {
            scope = -1;
        }
        fclose(ps);
    }
    if (scope > 0) {
        LOG("ucx: kernel.yama.ptrace_scope=%d: the cma transport (cross-process memory "
            "access) will not work; UCX falls back to other transports",
            scope);
    }
}

memsvc_status_t msd_server_init(msd_server_t *srv, eng_t *eng, const msd_config_t *cfg)
{
    ucp_params_t            ctx_params = {0};
    ucp_worker_params_t     wparams    = {0};
    ucp_am_handler_param_t  am         = {0};
    ucp_listener_params_t   lparams    = {0};
    struct epoll_event      ev         = {0};
    struct sockaddr_storage ss;
    socklen_t               sslen;
    memsvc_status_t         status;
    ucs_status_t            ustatus;
    sigset_t                mask;

    memset(srv, 0, sizeof(*srv));
    srv->cfg         = *cfg;
    srv->eng         = eng;
    srv->next_sid    = 1;
    srv->orphan_next = UINT64_MAX;
    srv->start_ns    = msp_now_ns();
    srv->epfd = srv->timerfd = srv->sigfd = -1;
    srv->body    = (msp_buf_t){srv->body_data, sizeof(srv->body_data), 0, false};
    srv->spin_ns = cfg->spin_ns;
    snprintf(srv->transport, sizeof(srv->transport), "none yet");

    if (msp_parse_addr(cfg->listen, &ss, &sslen) != MEMSVC_OK) {
        LOG("cannot parse listen address '%s' (want HOST:PORT)", cfg->listen);
        return MEMSVC_ERR_PARSE;
    }
    status = msd_map_init(&srv->own);
    if (status != MEMSVC_OK) {
        LOG("out of memory");
        return status;
    }
    ctx_params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    ctx_params.features   = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    ctx_params.name       = "memsvcd";
    ustatus               = ucp_init(&ctx_params, NULL, &srv->ctx);
    if (ustatus != UCS_OK) {
        LOG("ucp_init: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_map;
    }
    wparams.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
    ustatus             = ucp_worker_create(srv->ctx, &wparams, &srv->worker);
    if (ustatus != UCS_OK) {
        LOG("ucp_worker_create: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_ctx;
    }
    ustatus = ucp_worker_get_efd(srv->worker, &srv->efd);
    if (ustatus != UCS_OK) {
        LOG("ucp_worker_get_efd: %s", ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_worker;
    }
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    am.id    = MSP_AM_REQUEST;
    am.cb    = srv_am_request_cb;
    am.arg   = srv;
    am.flags = UCP_AM_FLAG_WHOLE_MSG;
    ustatus  = ucp_worker_set_am_recv_handler(srv->worker, &am);
    if (ustatus != UCS_OK) {
        LOG("ucp_worker_set_am_recv_handler: %s", ucs_status_string(ustatus));
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
        LOG("cannot listen on %s: %s", cfg->listen, ucs_status_string(ustatus));
        status = MEMSVC_ERR_TRANSPORT;
        goto err_worker;
    }

    srv->epfd    = epoll_create1(EPOLL_CLOEXEC);
    srv->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    srv->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if ((srv->epfd < 0) || (srv->timerfd < 0) || (srv->sigfd < 0)) {
        LOG("epoll/timerfd/signalfd: %s", strerror(errno));
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_fds;
    }
    ev.events  = EPOLLIN;
    ev.data.fd = srv->efd;
    epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->efd, &ev);
    ev.data.fd = srv->timerfd;
    epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->timerfd, &ev);
    ev.data.fd = srv->sigfd;
    epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sigfd, &ev);

    LOG("listening on %s%s", cfg->listen,
        cfg->allow_remote ? " (remote clients allowed)" : " (loopback)");
    log_context_transports(srv);
    return MEMSVC_OK;

err_fds:
    if (srv->sigfd >= 0) {
        close(srv->sigfd);
    }
    if (srv->timerfd >= 0) {
        close(srv->timerfd);
    }
    if (srv->epfd >= 0) {
        close(srv->epfd);
    }
    ucp_listener_destroy(srv->listener);
err_worker:
    ucp_worker_destroy(srv->worker);
err_ctx:
    ucp_cleanup(srv->ctx);
err_map:
    msd_map_fini(&srv->own);
    return status;
}

/* Arm the timer for the earlier of the engine's next completion and the next orphan expiry. */
static void srv_arm_timer(msd_server_t *srv)
{
    struct itimerspec its  = {0};
    sim_time_t        next = eng_next_event(srv->eng);
    uint64_t          now = msp_now_ns(), when = UINT64_MAX, rel;

    if (next != SIM_TIME_NEVER) {
        sim_time_t enow = sim_clock_now(eng_clock(srv->eng));

        when = now + ((next > enow) ? (next - enow) : 0);
    }
    if (srv->orphan_next < when) {
        when = srv->orphan_next;
    }
    if (when != UINT64_MAX) {
        rel                  = (when > now) ? (when - now) : 1;
        its.it_value.tv_sec  = (time_t)(rel / 1000000000ull);
        its.it_value.tv_nsec = (long)(rel % 1000000000ull);
    }
    timerfd_settime(srv->timerfd, 0, &its, NULL);
}

memsvc_status_t msd_server_run(msd_server_t *srv)
{
    struct epoll_event evs[4];
    msd_session_t     *s;
    uint64_t           ticks, last_active = 0;
    bool               busy;
    int                n, i;

    while (!srv->stop) {
        while (ucp_worker_progress(srv->worker) != 0) {
            last_active = msp_now_ns();
        }
        eng_progress(srv->eng);
        sessions_reap(srv);
        if (srv->orphan_next <= msp_now_ns()) {
            msd_ops_expire_orphans(srv, msp_now_ns());
        }
        /* Busy-poll briefly after activity (a reply is often followed by the next request),
         * then sleep until UCX, the timer or a signal has something. */
        if (msp_now_ns() - last_active < srv->spin_ns) {
            busy = true;
        } else {
            busy = (ucp_worker_arm(srv->worker) == UCS_ERR_BUSY);
        }
        if (!busy) {
            srv_arm_timer(srv);
        }
        n = epoll_wait(srv->epfd, evs, 4, busy ? 0 : -1);
        if ((n < 0) && (errno != EINTR)) {
            LOG("epoll_wait: %s", strerror(errno));
            return MEMSVC_ERR_IO;
        }
        for (i = 0; i < n; i++) {
            if (evs[i].data.fd == srv->sigfd) {
                struct signalfd_siginfo si;

                if (read(srv->sigfd, &si, sizeof(si)) == sizeof(si)) {
                    LOG("signal %u: shutting down", si.ssi_signo);
                    srv->stop = true;
                }
            } else if (evs[i].data.fd == srv->timerfd) {
                if (read(srv->timerfd, &ticks, sizeof(ticks)) < 0) {
                    ticks = 0;
                }
            }
        }
    }
    /* From here on nothing is sent: callbacks the engine runs while it is destroyed see dead
     * sessions. */
    for (s = srv->sessions; s != NULL; s = s->next) {
        s->dead = true;
    }
    return MEMSVC_OK;
}

void msd_server_fini(msd_server_t *srv)
{
    msd_session_t *s, *next;
    uint64_t       deadline;

    for (s = srv->sessions; s != NULL; s = s->next) {
        s->dead = true;
        session_close_ep(srv, s);
    }
    deadline = msp_now_ns() + 500000000ull;
    while (msp_now_ns() < deadline) {
        if (ucp_worker_progress(srv->worker) == 0) {
            break;
        }
    }
    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        free(s);
    }
    srv->sessions = NULL;
    ucp_listener_destroy(srv->listener);
    ucp_worker_destroy(srv->worker);
    ucp_cleanup(srv->ctx);
    close(srv->sigfd);
    close(srv->timerfd);
    close(srv->epfd);
    msd_map_fini(&srv->own);
    LOG("stopped: %llu sessions served, %llu requests, %llu errors",
        (unsigned long long)srv->sessions_total, (unsigned long long)srv->requests,
        (unsigned long long)srv->errors);
}
