/* msd_loop.c - memsvcd's loops: one thread each, epoll over its sessions' workers; the engine lock */
#include "client/msp_ucx.h"
#include "memsvc/msd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSD_LOG_COMP "loop"
#include "memsvc/msd_log.h"

#define LOOP_EVENTS 64

/* Work handed to a loop by another thread. */
typedef enum { ITEM_ADOPT, ITEM_SEND } item_kind_t;

typedef struct msd_item {
    struct msd_item *next;
    item_kind_t      kind;
    msd_session_t   *s;    /* holds a reference (ITEM_SEND) */
    srv_send_t      *send; /* ITEM_SEND */
} msd_item_t;

static __thread msd_loop_t *loop_current;
static __thread unsigned    lock_depth;

/* ---- the engine lock ----------------------------------------------------------------------- */

void msd_lock(msd_server_t *srv)
{
    if (lock_depth++ == 0) {
        pthread_mutex_lock(&srv->lock);
    }
}

void msd_unlock(msd_server_t *srv)
{
    if (--lock_depth == 0) {
        pthread_mutex_unlock(&srv->lock);
    }
}

msd_loop_t *msd_loop_current(void)
{
    return loop_current;
}

void msd_after_batch(msd_server_t *srv)
{
    sim_time_t next;
    uint64_t   now, when = UINT64_MAX;

    eng_progress(srv->eng);
    next = eng_next_event(srv->eng);
    now  = msp_now_ns();
    if (next != SIM_TIME_NEVER) {
        sim_time_t enow = sim_clock_now(eng_clock(srv->eng));

        when = now + ((next > enow) ? (next - enow) : 0);
    }
    if (srv->orphan_next < when) {
        when = srv->orphan_next;
    }
    if (srv->peers != NULL) {
        uint64_t peers_at = msd_peers_next(srv);

        when = (peers_at < when) ? peers_at : when;
    }
    if (srv->hs_next < when) {
        when = srv->hs_next;
    }
    if (srv->reclaim_head < srv->reclaim_n) {
        when = now; /* loop 0 frees the next slice at once */
    }
    if (srv->fast_slots > 0) {
        uint64_t fold_at = msd_fast_fold(srv, false); /* clients' local acquires */

        when = (fold_at < when) ? fold_at : when;
    }
    atomic_store(&srv->timer_at, when);
    if ((when < atomic_load(&srv->timer_armed)) && (loop_current != &srv->loops[0]) &&
        (srv->loops != NULL)) {
        msd_loop_wake(&srv->loops[0]); /* it sleeps past the new deadline */
    }
}

/* ---- inbox --------------------------------------------------------------------------------- */

void msd_loop_wake(msd_loop_t *loop)
{
    uint64_t one = 1;

    if (write(loop->evfd, &one, sizeof(one)) < 0) {
        /* the counter is saturated: it is readable anyway */
    }
}

static void loop_post(msd_loop_t *loop, msd_item_t *item)
{
    bool was_empty;

    item->next = NULL;
    pthread_mutex_lock(&loop->qlock);
    was_empty = (loop->qhead == NULL);
    if (loop->qtail != NULL) {
        loop->qtail->next = item;
    } else {
        loop->qhead = item;
    }
    loop->qtail = item;
    atomic_store(&loop->qpending, true);
    pthread_mutex_unlock(&loop->qlock);
    if (was_empty) {
        msd_loop_wake(loop);
    }
}

void msd_loop_post_send(msd_server_t *srv, msd_session_t *s, srv_send_t *send)
{
    msd_item_t *item = calloc(1, sizeof(*item));

    if (item == NULL) {
        LOG("session %llu: out of memory queueing a reply", (unsigned long long)s->id);
        msd_send_discard(send);
        return;
    }
    item->kind = ITEM_SEND;
    item->s    = s;
    item->send = send;
    s->refs++;
    loop_post(s->loop, item);
}

void msd_loop_adopt(msd_server_t *srv, msd_session_t *s)
{
    msd_loop_t *best = NULL;
    msd_item_t *item;
    unsigned    i;

    for (i = 1; i < srv->nloops; i++) {
        if ((best == NULL) ||
            (atomic_load(&srv->loops[i].nsessions) < atomic_load(&best->nsessions))) {
            best = &srv->loops[i];
        }
    }
    item = calloc(1, sizeof(*item));
    if ((best == NULL) || (item == NULL)) {
        LOG("session %llu: no loop to serve it", (unsigned long long)s->id);
        free(item);
        close(s->sock); /* the client sees EOF; the session is never served */
        s->sock = -1;
        return;
    }
    atomic_fetch_add(&best->nsessions, 1);
    s->loop    = best;
    item->kind = ITEM_ADOPT;
    item->s    = s;
    loop_post(best, item);
}

static void loop_add_session(msd_loop_t *loop, msd_session_t *s)
{
    struct epoll_event ev = {0};

    s->ev_worker   = (msd_ev_t){.kind = MSD_EV_WORKER, .s = s};
    s->ev_sock     = (msd_ev_t){.kind = MSD_EV_SOCK, .s = s};
    ev.events      = EPOLLIN;
    ev.data.ptr    = &s->ev_worker;
    epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s->wefd, &ev);
    ev.events      = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr    = &s->ev_sock;
    epoll_ctl(loop->epfd, EPOLL_CTL_ADD, s->sock, &ev);
    s->loop_next   = loop->sessions;
    loop->sessions = s;
}

void msd_loop_drain(msd_loop_t *loop)
{
    msd_server_t *srv = loop->srv;
    msd_item_t   *item, *next, *puts = NULL;

    if (!atomic_load(&loop->qpending)) {
        return;
    }
    pthread_mutex_lock(&loop->qlock);
    item        = loop->qhead;
    loop->qhead = loop->qtail = NULL;
    atomic_store(&loop->qpending, false);
    pthread_mutex_unlock(&loop->qlock);
    for (; item != NULL; item = next) {
        next = item->next;
        if (item->kind == ITEM_ADOPT) {
            loop_add_session(loop, item->s);
            loop->last_active = msp_now_ns();
            free(item);
            continue;
        }
        msd_send_now(srv, item->s, item->send); /* drops it if the session is dead */
        item->next = puts;
        puts       = item;
    }
    if (puts == NULL) {
        return;
    }
    msd_lock(srv);
    for (item = puts; item != NULL; item = next) {
        next = item->next;
        msd_session_put(srv, item->s);
        free(item);
    }
    msd_unlock(srv);
}

/* ---- the local loops ------------------------------------------------------------------------- */

/* Did the session's socket end (or carry something it should not)? */
static bool sock_ended(msd_session_t *s)
{
    char    buf[64];
    ssize_t rc = recv(s->sock, buf, sizeof(buf), MSG_DONTWAIT);

    if (rc > 0) {
        return false; /* nothing is expected after the handshake: ignored */
    }
    return (rc == 0) || ((errno != EAGAIN) && (errno != EWOULDBLOCK) && (errno != EINTR));
}

/* Milliseconds until the first handshake deadline of the loop's sessions without HELLO (-1:
 * none, sleep until something happens). */
static int loop_handshake_wait(msd_loop_t *loop, uint64_t now)
{
    msd_server_t  *srv   = loop->srv;
    uint64_t       first = UINT64_MAX;
    msd_session_t *s;

    for (s = loop->sessions; s != NULL; s = s->loop_next) {
        if (!s->bound && (s->created_ns + srv->cfg.handshake_timeout_ns < first)) {
            first = s->created_ns + srv->cfg.handshake_timeout_ns;
        }
    }
    if (first == UINT64_MAX) {
        return -1;
    }
    return (first <= now) ? 0 : (int)((first - now) / 1000000ull + 1);
}

/* Sessions of the loop past their handshake deadline (at most LOOP_EVENTS) into ended[]. */
static unsigned loop_handshakes_expired(msd_loop_t *loop, uint64_t now, msd_session_t **ended)
{
    msd_server_t  *srv = loop->srv;
    msd_session_t *s;
    unsigned       n = 0;

    for (s = loop->sessions; (s != NULL) && (n < LOOP_EVENTS / 2); s = s->loop_next) {
        if (!s->bound && (s->created_ns + srv->cfg.handshake_timeout_ns <= now)) {
            ended[n++] = s;
            msd_lock(srv);
            srv->hs_timeouts++;
            msd_unlock(srv);
        }
    }
    return n;
}

static void *loop_main(void *arg)
{
    msd_loop_t        *loop = arg;
    msd_server_t      *srv  = loop->srv;
    struct epoll_event evs[LOOP_EVENTS];
    msd_session_t     *ended[LOOP_EVENTS + LOOP_EVENTS / 2], *s;
    unsigned           nended, k, hs;
    uint64_t           ticks, now, fds_at = 0;
    unsigned           turns = 0;
    bool               busy, active;
    int                n, i;

    loop_current = loop;
    while (!atomic_load(&srv->stopping)) {
        active = false;
        /* Round robin, a bounded number of progress calls each: one busy worker cannot keep
         * the loop from the others. */
        for (s = loop->sessions; s != NULL; s = s->loop_next) {
            for (k = 0; (k < MSD_PROGRESS_PER_TURN) && (ucp_worker_progress(s->worker) != 0);
                 k++) {
                active = true;
            }
        }
        if (active) {
            loop->last_active = msp_now_ns();
        }
        msd_loop_drain(loop);
        if (!active && ((++turns % MSD_SPIN_CLOCK_TURNS) != 0)) {
            continue; /* nothing happened: the clock need not be read every turn */
        }
        now  = msp_now_ns();
        /* --poll: a loop never sleeps while it serves sessions (one without any does) */
        busy = (srv->cfg.poll && (loop->sessions != NULL)) ||
               (now - loop->last_active < srv->spin_ns);
        if (busy && (now - fds_at < MSD_BUSY_FDS_NS)) {
            continue; /* spinning: the fds can wait (see MSD_BUSY_FDS_NS) */
        }
        fds_at = now;
        for (s = loop->sessions; !busy && (s != NULL); s = s->loop_next) {
            busy = (ucp_worker_arm(s->worker) == UCS_ERR_BUSY);
        }
        n = epoll_wait(loop->epfd, evs, LOOP_EVENTS, busy ? 0 : loop_handshake_wait(loop, now));
        if ((n < 0) && (errno != EINTR)) {
            LOG("loop %u: epoll_wait: %s", loop->idx, strerror(errno));
            break;
        }
        nended = hs = loop_handshakes_expired(loop, msp_now_ns(), ended);
        for (i = 0; i < n; i++) {
            const msd_ev_t *ev = evs[i].data.ptr;

            if (ev->kind == MSD_EV_WAKE) {
                if (read(loop->evfd, &ticks, sizeof(ticks)) < 0) {
                    ticks = 0;
                }
            } else if (ev->kind == MSD_EV_WORKER) {
                loop->last_active = msp_now_ns();
            } else if ((ev->kind == MSD_EV_SOCK) && sock_ended(ev->s)) {
                for (k = 0; (k < nended) && (ended[k] != ev->s); k++) {
                }
                if (k == nended) {
                    ended[nended++] = ev->s;
                }
            }
        }
        for (k = 0; k < nended; k++) {
            msd_local_session_end(srv, ended[k],
                                  (k < hs) ? "no HELLO within the handshake timeout"
                                           : "its socket closed (process ended)");
        }
    }
    /* Stopping: end the sessions still served here. */
    while (loop->sessions != NULL) {
        msd_local_session_end(srv, loop->sessions, "the daemon is stopping");
    }
    msd_loop_drain(loop);
    loop_current = NULL;
    return NULL;
}

/* ---- set-up ---------------------------------------------------------------------------------- */

memsvc_status_t msd_loops_init(msd_server_t *srv)
{
    struct epoll_event ev = {0};
    unsigned           nlocal = srv->cfg.no_unix ? 0 : srv->cfg.local_loops, i;

    if (!srv->cfg.no_unix && (nlocal == 0)) {
        nlocal = 1;
    }
    srv->nloops = 1 + nlocal;
    srv->loops  = calloc(srv->nloops, sizeof(*srv->loops));
    if (srv->loops == NULL) {
        LOG("out of memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < srv->nloops; i++) {
        srv->loops[i].epfd = srv->loops[i].evfd = -1;
    }
    for (i = 0; i < srv->nloops; i++) {
        msd_loop_t *loop = &srv->loops[i];

        loop->srv     = srv;
        loop->idx     = i;
        loop->ev_wake = (msd_ev_t){.kind = MSD_EV_WAKE};
        pthread_mutex_init(&loop->qlock, NULL);
        loop->epfd = epoll_create1(EPOLL_CLOEXEC);
        loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if ((loop->epfd < 0) || (loop->evfd < 0)) {
            LOG("epoll/eventfd: %s", strerror(errno));
            msd_loops_fini(srv);
            return MEMSVC_ERR_NO_RESOURCE;
        }
        ev.events   = EPOLLIN;
        ev.data.ptr = &loop->ev_wake;
        epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev);
    }
    loop_current = &srv->loops[0]; /* the caller's thread runs loop 0 */
    return MEMSVC_OK;
}

memsvc_status_t msd_loops_start(msd_server_t *srv)
{
    unsigned i;
    int      rc;

    for (i = 1; i < srv->nloops; i++) {
        rc = pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]);
        if (rc != 0) {
            LOG("cannot start loop %u: %s", i, strerror(rc));
            atomic_store(&srv->stopping, true);
            msd_loops_stop(srv);
            return MEMSVC_ERR_NO_RESOURCE;
        }
        srv->loops[i].started = true;
    }
    LOG("%u loop%s: 1 for tcp sessions, %u for local sessions (%s)", srv->nloops,
        (srv->nloops > 1) ? "s" : "", srv->nloops - 1,
        srv->cfg.poll ? "polling: never sleep while serving sessions"
                      : "sleep in epoll when idle");
    return MEMSVC_OK;
}

void msd_loops_stop(msd_server_t *srv)
{
    unsigned i;

    atomic_store(&srv->stopping, true);
    for (i = 1; i < srv->nloops; i++) {
        if (srv->loops[i].started) {
            msd_loop_wake(&srv->loops[i]);
            pthread_join(srv->loops[i].thread, NULL);
            srv->loops[i].started = false;
        }
    }
    msd_loop_drain(&srv->loops[0]);
}

void msd_loops_fini(msd_server_t *srv)
{
    msd_item_t *item, *next;
    unsigned    i;

    if (srv->loops == NULL) {
        return;
    }
    for (i = 0; i < srv->nloops; i++) {
        msd_loop_t *loop = &srv->loops[i];

        for (item = loop->qhead; item != NULL; item = next) {
            next = item->next;
            if (item->send != NULL) {
                /* (sessions are gone: a loan's tensor goes with the engine, after this) */
                if (item->send->loan.t == NULL) {
                    free(item->send->payload);
                }
                free(item->send);
            }
            free(item);
        }
        if (loop->epfd >= 0) {
            close(loop->epfd);
        }
        if (loop->evfd >= 0) {
            close(loop->evfd);
        }
        pthread_mutex_destroy(&loop->qlock);
    }
    free(srv->loops);
    srv->loops  = NULL;
    srv->nloops = 0;
    loop_current = NULL;
}
