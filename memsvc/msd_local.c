/* msd_local.c - memsvcd's co-located path: Unix socket, a shared-memory UCX worker per client,
 * memory regions passed as fds, pins that write in place */
#include "client/msl_local.h"
#include "client/msl_pintab.h"
#include "client/msp_ucx.h"
#include "memsvc/msd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MSD_LOG_COMP "local"
#include "memsvc/msd_log.h"

#define LOCAL_HANDSHAKE_MS 5000 /* a client that connects and says nothing is dropped */
#define LOCAL_HANDSHAKES_MAX 64 /* socket handshakes (a thread each) at once; more are refused */

/* ---- requests on a local worker ------------------------------------------------------------ */

static ucs_status_t local_am_cb(void *arg, const void *header, size_t header_length, void *data,
                                size_t length, const ucp_am_recv_param_t *param)
{
    msd_session_t *s   = arg;
    msd_server_t  *srv = s->loop->srv;
    ucs_status_t   ret = UCS_OK;

    msd_lock(srv);
    if (!s->dead) {
        ret = msd_handle_message(srv, s, header, header_length, data, length, param);
    }
    msd_unlock(srv);
    return ret;
}

/* ---- accepting ------------------------------------------------------------------------------- */

static void local_refuse(int fd, memsvc_status_t status, const char *msg)
{
    msl_welcome_t w = {.magic = MSL_MAGIC_WELCOME, .status = status};

    snprintf(w.msg, sizeof(w.msg), "%s", msg);
    msl_send(fd, &w, sizeof(w), NULL, 0);
}

/* Build a session for the client on fd: handshake, its own worker, endpoints. */
static void local_accept_one(msd_server_t *srv, int fd)
{
    ucp_worker_params_t    wp = {0};
    ucp_ep_params_t        ep = {0};
    struct ucred           cred;
    socklen_t              clen = sizeof(cred);
    uint8_t                in[MSL_MSG_MAX], out[MSL_MSG_MAX];
    msl_hello_t            hello;
    msl_welcome_t          w = {.magic = MSL_MAGIC_WELCOME};
    ucp_address_t         *addr;
    size_t                 len, alen;
    msd_session_t         *s;
    ucs_status_t           us;
    uint64_t               t0 = msp_now_ns();

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        LOG_RL(1000, "local client: SO_PEERCRED: %s: refused", strerror(errno));
        close(fd);
        return;
    }
    if ((msl_recv(fd, in, sizeof(in), &len, NULL, NULL, LOCAL_HANDSHAKE_MS) != MEMSVC_OK) ||
        (len < sizeof(hello))) {
        LOG_RL(1000, "local client pid %d: no handshake within %d ms: dropped", (int)cred.pid,
               LOCAL_HANDSHAKE_MS);
        msd_lock(srv);
        srv->hs_timeouts++;
        msd_unlock(srv);
        close(fd);
        return;
    }
    msd_lock(srv);
    if (!msd_sessions_make_room(srv, true)) {
        msd_unlock(srv);
        local_refuse(fd, MEMSVC_ERR_OVERLOAD, "too many sessions (--max-sessions): retry later");
        close(fd);
        return;
    }
    msd_unlock(srv);
    memcpy(&hello, in, sizeof(hello));
    if ((hello.magic != MSL_MAGIC_HELLO) || (hello.version != MSL_VERSION) ||
        (hello.addr_len == 0) || (hello.addr_len > len - sizeof(hello))) {
        LOG_WARN_RL(1000, "local client pid %d: bad handshake (magic 0x%x version %u): refused",
                    (int)cred.pid, hello.magic, hello.version);
        local_refuse(fd, MEMSVC_ERR_VERSION, "unknown local handshake version");
        close(fd);
        return;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        local_refuse(fd, MEMSVC_ERR_NO_RESOURCE, "out of memory");
        close(fd);
        return;
    }
    s->local = true;
    s->sock  = fd;
    s->wefd  = -1;
    s->pid   = cred.pid;
    s->uid   = cred.uid;
    s->gid   = cred.gid;
    s->uid_known = true; /* the kernel's word: job ownership is checked against it */
    s->loop  = &srv->loops[1]; /* until adopted; only used for its srv */
    snprintf(s->name, sizeof(s->name), "?");

    wp.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    us             = ucp_worker_create(srv->lctx, &wp, &s->worker);
    if (us != UCS_OK) {
        LOG_RL(1000, "local client pid %d: ucp_worker_create: %s: refused", (int)cred.pid,
            ucs_status_string(us));
        goto err_refuse;
    }
    if (ucp_worker_get_efd(s->worker, &s->wefd) != UCS_OK) {
        goto err_worker;
    }
    if (msp_ucx_am_handler(s->worker, MSP_AM_REQUEST, local_am_cb, s) != UCS_OK) {
        goto err_worker;
    }
    /* No peer error handling: the socket tells of the client's death, and on it the worker is
     * destroyed whole (its endpoint never closed, its requests never touched again). */
    ep.field_mask     = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address        = (const ucp_address_t *)(in + sizeof(hello));
    us                = ucp_ep_create(s->worker, &ep, &s->ep);
    if (us != UCS_OK) {
        LOG_RL(1000, "local client pid %d: cannot reach its worker: %s: refused", (int)cred.pid,
            ucs_status_string(us));
        goto err_worker;
    }
    if (ucp_worker_get_address(s->worker, &addr, &alen) != UCS_OK) {
        goto err_worker;
    }
    if (alen > sizeof(out) - sizeof(w)) {
        ucp_worker_release_address(s->worker, addr);
        goto err_worker;
    }
    w.status   = MEMSVC_OK;
    w.addr_len = (uint32_t)alen;
    memcpy(out, &w, sizeof(w));
    memcpy(out + sizeof(w), addr, alen);
    ucp_worker_release_address(s->worker, addr);
    if (msl_send(fd, out, sizeof(w) + alen, NULL, 0) != MEMSVC_OK) {
        LOG_RL(1000, "local client pid %d: gone during the handshake", (int)cred.pid);
        ucp_worker_destroy(s->worker);
        close(fd);
        free(s);
        return;
    }
    msp_ep_transport(s->ep, s->transport, sizeof(s->transport));
    if (atomic_load(&srv->draining) || atomic_load(&srv->stopping)) {
        /* too late: the daemon is shutting down (its EOF tells the client) */
        ucp_worker_destroy(s->worker);
        close(fd);
        free(s);
        return;
    }
    msd_lock(srv);
    s->id         = srv->next_sid++;
    s->created_ns = s->last_ns = msp_now_ns();
    s->next       = srv->sessions;
    srv->sessions = s;
    srv->sessions_total++;
    msd_unlock(srv);
    LOG("session %llu: local client pid %d uid %u gid %u on the unix socket: own worker "
        "(%s), set up in %.1f ms",
        (unsigned long long)s->id, (int)s->pid, (unsigned)s->uid, (unsigned)s->gid, s->transport,
        (double)(msp_now_ns() - t0) / 1e6);
    msd_loop_adopt(srv, s);
    return;

err_worker:
    ucp_worker_destroy(s->worker);
err_refuse:
    local_refuse(fd, MEMSVC_ERR_TRANSPORT, "the daemon could not set up a local worker");
    close(fd);
    free(s);
}

typedef struct local_handshake {
    msd_server_t *srv;
    int           fd;
} local_handshake_t;

/* One client's handshake in a thread of its own: a slow or silent client holds up nobody,
 * and trainers starting together get their workers (milliseconds each) in parallel. */
static void *local_handshake_main(void *arg)
{
    local_handshake_t *h   = arg;
    msd_server_t      *srv = h->srv;

    local_accept_one(srv, h->fd);
    free(h);
    atomic_fetch_sub(&srv->handshakes, 1);
    return NULL;
}

static void local_handshake_start(msd_server_t *srv, int fd)
{
    local_handshake_t *h = malloc(sizeof(*h));
    pthread_attr_t     attr;
    pthread_t          th;
    int                rc = -1;

    atomic_fetch_add(&srv->handshakes, 1);
    if (h != NULL) {
        h->srv = srv;
        h->fd  = fd;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        rc = pthread_create(&th, &attr, local_handshake_main, h);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) { /* no thread: do it here */
        free(h);
        local_accept_one(srv, fd);
        atomic_fetch_sub(&srv->handshakes, 1);
    }
}

static void *local_acceptor(void *arg)
{
    msd_server_t *srv = arg;
    int           fd;

    while (!atomic_load(&srv->stopping)) {
        fd = accept4(srv->usock, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (atomic_load(&srv->stopping) || (errno == EINVAL) || (errno == EBADF)) {
                break;
            }
            if ((errno != EINTR) && (errno != ECONNABORTED)) {
                LOG_RL(1000, "accept on %s: %s", srv->unix_path, strerror(errno));
                usleep(10000); /* e.g. out of fds: do not spin */
            }
            continue;
        }
        if (atomic_load(&srv->handshakes) >= LOCAL_HANDSHAKES_MAX) {
            /* Silent connections each hold a thread for LOCAL_HANDSHAKE_MS: cap them. */
            msd_lock(srv);
            srv->refused++;
            msd_unlock(srv);
            LOG_RL(1000, "local client refused: %d handshakes in progress", LOCAL_HANDSHAKES_MAX);
            local_refuse(fd, MEMSVC_ERR_OVERLOAD, "too many handshakes in progress: retry later");
            close(fd);
            continue;
        }
        local_handshake_start(srv, fd);
    }
    return NULL;
}

/* ---- set-up ------------------------------------------------------------------------------------ */

/* Bind the socket; a stale file (no daemon answers on it) is replaced, a live one refused. */
static memsvc_status_t local_bind(msd_server_t *srv)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int                fd, probe;

    memcpy(sa.sun_path, srv->unix_path, strnlen(srv->unix_path, sizeof(sa.sun_path) - 1));
    probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if ((probe >= 0) && (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)) {
        close(probe);
        LOG_ERR("another memsvcd serves %s: refusing to start (use --unix PATH)", srv->unix_path);
        return MEMSVC_ERR_EXISTS;
    }
    if (probe >= 0) {
        close(probe);
    }
    unlink(srv->unix_path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG("unix socket: %s", strerror(errno));
        return MEMSVC_ERR_NO_RESOURCE;
    }
    if ((bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) || (listen(fd, 64) != 0)) {
        LOG_ERR("cannot listen on %s: %s", srv->unix_path, strerror(errno));
        close(fd);
        return MEMSVC_ERR_TRANSPORT;
    }
    /* Any local user may connect: each session acts as its SO_PEERCRED uid, and a job
     * belongs to the uid that first bound it (docs/security.md). */
    chmod(srv->unix_path, 0666);
    srv->usock = fd;
    return MEMSVC_OK;
}

memsvc_status_t msd_local_init(msd_server_t *srv)
{
    ucp_params_t    params = {0};
    ucp_config_t   *config;
    memsvc_status_t status;
    ucs_status_t    us;
    int             rc;

    if (srv->cfg.unix_path != NULL) {
        if (strlen(srv->cfg.unix_path) >= MSL_PATH_MAX) {
            LOG("--unix: path longer than %u bytes", MSL_PATH_MAX - 1);
            return MEMSVC_ERR_TOO_LARGE;
        }
        snprintf(srv->unix_path, sizeof(srv->unix_path), "%s", srv->cfg.unix_path);
    } else {
        status = msl_default_path(srv->cfg.listen, true, srv->unix_path, sizeof(srv->unix_path));
        if (status != MEMSVC_OK) {
            LOG("cannot derive a unix socket path from %s: %s", srv->cfg.listen,
                memsvc_strerror(status));
            return status;
        }
    }
    us = ucp_config_read(NULL, NULL, &config);
    if (us != UCS_OK) {
        LOG("ucp_config_read: %s", ucs_status_string(us));
        return MEMSVC_ERR_TRANSPORT;
    }
    /* Shared memory only, and no cma: with cma a rendezvous whose peer died fails in
     * process_vm_readv, which UCX treats as fatal on an endpoint without error handling (the
     * daemon aborted in the kill test). sysv alone does rendezvous through its own segments,
     * 5-20x faster here than eager fragments; what a client's death leaves in flight goes with
     * its worker (msd_local_session_end). */
    ucp_config_modify(config, "TLS", MSL_UCX_TLS);
    /* Workers of this context are created by the acceptor and used and destroyed by the loops,
     * concurrently: the context must allow that. */
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME |
                        UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features          = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    params.name              = "memsvcd-local";
    params.mt_workers_shared = 1;
    us                = ucp_init(&params, config, &srv->lctx);
    ucp_config_release(config);
    if (us != UCS_OK) {
        LOG("local UCX context (%s): %s", MSL_UCX_TLS, ucs_status_string(us));
        return MEMSVC_ERR_TRANSPORT;
    }
    status = local_bind(srv);
    if (status != MEMSVC_OK) {
        goto err_ctx;
    }
    rc = pthread_create(&srv->acceptor, NULL, local_acceptor, srv);
    if (rc != 0) {
        LOG("cannot start the local acceptor: %s", strerror(rc));
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_sock;
    }
    srv->has_acceptor = true;
    LOG("local clients: unix socket %s, a %s worker each (no tcp on their path); memory "
        "regions %s",
        srv->unix_path, MSL_UCX_TLS,
        srv->cfg.no_map ? "not mapped (--no-map)"
        : (sim_node_mode(eng_node(srv->eng)) == SIM_MEM_BACKED)
            ? "mapped in place (each client maps its device's HBM)"
            : "not mapped (phantom memory)");
    return MEMSVC_OK;

err_sock:
    close(srv->usock);
    srv->usock = -1;
    unlink(srv->unix_path);
err_ctx:
    ucp_cleanup(srv->lctx);
    srv->lctx = NULL;
    return status;
}

void msd_local_stop(msd_server_t *srv)
{
    uint64_t deadline = msp_now_ns() + 2ull * LOCAL_HANDSHAKE_MS * 1000000ull;

    if (srv->has_acceptor) {
        shutdown(srv->usock, SHUT_RDWR); /* wakes accept() */
        pthread_join(srv->acceptor, NULL);
        srv->has_acceptor = false;
    }
    while ((atomic_load(&srv->handshakes) > 0) && (msp_now_ns() < deadline)) {
        usleep(1000); /* handshakes finish within their timeout */
    }
}

void msd_local_fini(msd_server_t *srv)
{
    msd_local_stop(srv);
    if (srv->usock >= 0) {
        close(srv->usock);
        srv->usock = -1;
        unlink(srv->unix_path);
    }
    if (srv->lctx != NULL) {
        ucp_cleanup(srv->lctx);
        srv->lctx = NULL;
    }
}

/* ---- a local session's end --------------------------------------------------------------------- */

void msd_local_session_end(msd_server_t *srv, msd_session_t *s, const char *why)
{
    msd_loop_t     *loop = s->loop;
    msd_session_t **pp;

    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s->wefd, NULL);
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, s->sock, NULL);
    for (pp = &loop->sessions; *pp != NULL; pp = &(*pp)->loop_next) {
        if (*pp == s) {
            *pp = s->loop_next;
            break;
        }
    }
    atomic_fetch_sub(&loop->nsessions, 1);

    msd_lock(srv);
    if (s->evicted) {
        why = s->bound ? "evicted by an operator" : "closed to make room (no HELLO yet)";
    }
    if (!s->dead && !s->bound) {
        /* what a flood of silent connections causes: rate-limited */
        LOG_RL(1000, "session %llu (pid %d, no HELLO): disconnected: %s",
               (unsigned long long)s->id, (int)s->pid, why);
    } else if (!s->dead) {
        LOG("session %llu (job %u rank %u '%s', pid %d): disconnected: %s",
            (unsigned long long)s->id, s->job, s->rank, s->name, (int)s->pid, why);
    }
    s->dead = true;
    msd_fast_close(srv, s); /* its local pins go with it */
    msd_defer_drop(srv, s, true); /* its worker still exists: descriptors go back to it */
    msd_ops_session_gone(srv, s);
    s->cleaned = true;
    msd_transport_summary(srv);
    msd_after_batch(srv);
    msd_unlock(srv);

    /* Outside the lock (it takes milliseconds). Endpoints are not closed and requests in
     * flight are not touched: the peer may have died holding a slot of a shared queue. */
    ucp_worker_destroy(s->worker);
    msd_send_forget_all(&s->sends);
    close(s->sock);
    s->sock = -1;

    msd_lock(srv);
    msd_inflight_drop_all(s); /* receives whose callbacks went with the worker */
    s->ep     = NULL;
    s->worker = NULL;
    s->refs++;
    msd_session_put(srv, s);
    msd_unlock(srv);
}

/* ---- regions and pins ---------------------------------------------------------------------------- */

/* A mapping shows the whole device, every job's bytes on it: only for sessions that may
 * administer every job anyway (root, the daemon's user, --operator-group); others copy. */
static bool local_may_map(msd_server_t *srv, const msd_session_t *s)
{
    return s->local && !s->control && s->admin && !srv->cfg.no_map &&
           (sim_node_mode(eng_node(srv->eng)) == SIM_MEM_BACKED);
}

void msd_local_send_regions(msd_server_t *srv, msd_session_t *s)
{
    msl_regions_t msg = {.magic = MSL_MAGIC_REGIONS};
    int           fds[2] = {-1, -1};

    if (local_may_map(srv, s)) {
        sim_device_t *dev = sim_node_device(eng_node(srv->eng), s->device);

        if ((dev != NULL) && (dev->fd >= 0)) {
            msg.region[0] = (msl_region_t){.id = s->device, .kind = 0,
                                           .size = sim_node_desc(eng_node(srv->eng))->hbm_bytes};
            msg.count     = 1;
            fds[0]        = dev->fd;
            if (msd_fast_open(srv, s)) {
                /* its pin table: resident tensors acquired without a message */
                msg.region[1] = (msl_region_t){.id = 0, .kind = MSL_REGION_PINTAB,
                                               .size = MSL_PINTAB_BYTES};
                fds[1]        = msd_fast_fd(s);
                msg.count     = 2;
            }
        }
    }
    if (msl_send(s->sock, &msg, sizeof(msg), fds, msg.count) != MEMSVC_OK) {
        LOG("session %llu: cannot send its memory regions (client gone?)",
            (unsigned long long)s->id);
    }
    s->regions_sent = true;
}

uint32_t msd_local_locate(msd_server_t *srv, msd_session_t *s, const eng_tensor_info_t *info,
                          uint64_t *offset_p)
{
    if (!s->regions_sent || !local_may_map(srv, s) || (info->device != s->device) ||
        (info->state != MEMSVC_STATE_ON_DEVICE)) {
        return MSP_REGION_NONE;
    }
    *offset_p = info->dev_offset;
    return info->device;
}

memsvc_status_t msd_acquired(msd_server_t *srv, msd_session_t *s, eng_handle_t h, uint32_t flags,
                             memsvc_status_t status, msp_rep_t *rep)
{
    eng_tensor_info_t info = {0};
    msd_own_t        *pin  = msd_map_put(&srv->own, h, s->id);
    uint32_t          region = MSP_REGION_NONE;
    uint64_t          offset = 0;

    if (pin == NULL) {
        /* Cannot track it: undo rather than leak a pin nobody would release. */
        LOG("out of memory tracking a pin: released");
        eng_release(srv->eng, h);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    if (pin->pins++ == 0) {
        pin->since = msp_now_ns();
    }
    if (eng_info(srv->eng, h, &info) == MEMSVC_OK) {
        if ((status == MEMSVC_OK) && !info.valid) {
            status = MEMSVC_RECOMPUTE; /* uncommitted bytes: the owner writes them again */
        }
        if (flags & (MSP_ACQ_MAP | MSP_ACQ_IO)) {
            region = msd_local_locate(srv, s, &info, &offset);
        }
    }
    if ((flags & MSP_ACQ_WRITE) && (region != MSP_REGION_NONE)) {
        pin->wpins++;
    }
    if ((status == MEMSVC_OK) && (s->pintab != NULL)) {
        uint64_t where;

        /* resident, committed, in its mapping: its next acquires need no message */
        if (msd_local_locate(srv, s, &info, &where) != MSP_REGION_NONE) {
            msd_fast_publish(srv, s, h, info.device, where, info.size, info.durable);
        }
    }
    rep->u.acquire.region = region;
    rep->u.acquire.offset = offset;
    rep->u.acquire.size   = info.size;
    return status;
}

memsvc_status_t msd_released(msd_server_t *srv, msd_session_t *s, eng_handle_t h, msd_own_t *pin,
                             char *msg, size_t msglen)
{
    if (pin->wpins == 0) {
        return MEMSVC_OK;
    }
    pin->wpins--;
    if (pin->wpins > 0) {
        return MEMSVC_OK;
    }
    eng_set_valid(srv->eng, h, true); /* written in place: committed */
    return msd_durable_commit(srv, h, msg, msglen);
}
