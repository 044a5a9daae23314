/* msd.h - memsvcd internals: the server, its sessions, the ownership table, the request handlers */
#ifndef MSD_H
#define MSD_H

#include "client/memsvc.h"
#include "client/msp_proto.h"
#include "memsvc/eng.h"
#include "memsvc/msd_auth.h"
#include "memsvc/msd_peer.h"
#include "memsvc/msd_jobs.h"

#include <ucp/api/ucp.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* While a loop spins it looks at its fds (epoll_wait with no timeout) at most this often:
 * UCX progress and the inbox flag are checked every turn without a system call, and what
 * only the fds tell (a socket's end, a signal, a wake-up counter to reset) can wait this
 * long. One epoll_wait per turn cost about half of each spin turn on the VMs measured,
 * a delay every request arriving during that call paid. */
#define MSD_BUSY_FDS_NS 100000ull
/* An idle spinning loop reads the clock (to know when to stop spinning) every this many
 * turns: a clock read costs about as much as a turn's UCX progress on these VMs. */
#define MSD_SPIN_CLOCK_TURNS 16u
/* UCX progress calls per worker per loop turn: a worker that always has something (a client
 * flooding requests) yields to the others' workers, the inbox and the timers in between. */
#define MSD_PROGRESS_PER_TURN 8u
/* A deferred message keeps a copy of an eager payload up to this size; past it (eager payloads
 * are small: UCX sends large ones by rendezvous, which are left with the sender) the message is
 * refused as an overload. */
#define MSD_DEFER_EAGER_MAX (1ull << 20)
/* At --max-sessions, a new connection closes the oldest session without HELLO if that one is
 * at least this old (a client says HELLO within milliseconds of connecting), else it is
 * refused. */
#define MSD_SHED_AGE_NS 20000000ull
/* Tensors of an ended session freed per slice (msd_ops_reclaim); the engine lock is let go
 * between slices, so other sessions are served while a big session is torn down. */
#define MSD_RECLAIM_SLICE 1024u
/* Large transfer buffers (READ replies, WRITE receives, >= MSD_POOL_MIN bytes) kept for reuse,
 * MSD_POOL_BYTES in all: on the development VM the first touch of a page costs ~65 us (530 ms
 * for 32 MiB, against 3 ms to copy into memory already touched), and a READ paid it under the
 * engine lock, stalling every other session. */
#define MSD_POOL_MIN (1ull << 20)
#define MSD_POOL_BYTES (64ull << 20)
#define MSD_POOL_SLOTS 16u
/* READs and WRITEs of at least this many bytes of a tensor on its device go straight from and
 * into its memory (eng_lend), not through a buffer copied under the engine lock. */
#define MSD_LEND_MIN (1ull << 20)
/* Registry positions one LIST request walks at most (a page may come back short, even empty,
 * with a cursor to go on from: bounded work per request whatever the job's share). */
#define MSD_LIST_VISIT 65536u

/* On SIGTERM/SIGINT the daemon drains: it tells its clients at once, then waits for the moves
 * in flight to end, at least MSD_NOTICE_NS (the notices leave) and at most MSD_DRAIN_NS. */
#define MSD_NOTICE_NS 20000000ull
#define MSD_DRAIN_NS 2000000000ull

/* Where durable state lives by default (docs/daemon.md, "Durable state and restart"). */
#define MSD_STATE_DIR "/dev/shm"
#define MSD_DURABLE_BYTES (1ull << 30)

/* Daemon configuration (from the command line). */
typedef struct msd_config {
    const char *listen;          /* "HOST:PORT" */
    uint64_t    keep_durable_ns; /* how long a dead session's durable tensors are kept */
    bool        allow_remote;    /* listening on a non-loopback address was asked for */
    uint64_t    spin_ns;         /* busy-poll this long after activity before sleeping */
    const char *unix_path;       /* local socket; NULL: derived from listen (msl_default_path) */
    bool        no_unix;         /* serve tcp only */
    bool        no_map;          /* never hand memory regions to local clients */
    bool        no_fast_pin;     /* no pin tables: every acquire and release is a message */
    bool        poll;            /* loops never sleep (a core each, lowest latency) */
    unsigned    local_loops;     /* threads serving local sessions (>= 1) */
    const char *secret_file;     /* cluster secret for tcp peers (--secret-file); NULL: none */
    const char *operator_group;  /* members administer every job (--operator-group); NULL */
    bool        require_secret;  /* every tcp session proves the secret (--require-secret) */
    const char *job_secrets;     /* directory of per-job secrets, file = job id (--job-secrets) */
    int         log_level;       /* msd_log_level_t */
    int         log_target;      /* msd_log_target_t */
    const char *metrics;         /* "HOST:PORT" of the Prometheus endpoint; NULL: none */
    /* SIGHUP: build the configuration anew (config file and command line again) into *cfg;
     * false (and logged) when it cannot. NULL: SIGHUP only says nothing can be reloaded. */
    bool (*reread)(void *arg, struct msd_config *cfg);
    void *reread_arg;
    /* -- the cluster (msd_peer.c); all NULL/0 when the daemon stands alone -- */
    const char *cluster_file;    /* --cluster: one "NAME HOST:PORT" a line, same on every node */
    const char *node_name;       /* --node-name: this daemon's line of the cluster file */
    const char *cluster_secret;  /* --cluster-secret: the file whose bytes authenticate peers */
    uint64_t    heartbeat_ns;    /* --heartbeat-ms */
    uint64_t    peer_timeout_ns; /* --peer-timeout: no heartbeat this long: the peer is down */
    unsigned    replicas;        /* --replicas: peers holding a copy of each durable tensor */
    double      repl_rate;       /* --repl-rate: bytes/s of replication (0: unlimited) */
    uint64_t    replica_bytes;   /* --replica-bytes: room for other nodes' replicas */
    uint64_t    peer_lost_ns;    /* --peer-lost: down this long: its replicas go elsewhere */
    uint64_t    peer_tier_bytes; /* --peer-tier: room this node may use in peers' rooms */
    const char *state_dir;       /* durable state; NULL: MSD_STATE_DIR; "none": off */
    uint64_t    durable_bytes;   /* durable arena capacity */
    /* -- limits (docs/daemon.md, "Limits") -- */
    msd_quota_t quota;              /* every job's quota (--job-quota) */
    uint64_t    session_inflight;   /* bulk bytes in flight per session; 0: unbounded */
    unsigned    session_queue;      /* messages a session may have waiting for that budget */
    unsigned    max_sessions;       /* live sessions (bound or not); more are refused */
    uint64_t    handshake_timeout_ns; /* a session without HELLO this long is closed */
} msd_config_t;

typedef struct msd_durable msd_durable_t; /* durable state (msd_durable.c) */

struct msd_session;
struct msd_loop;

/* An operation whose completion callback a UCX worker owes (a rendezvous receive). When a
 * local session's worker is destroyed that callback never runs: drop() frees it instead
 * (engine lock held). */
typedef struct msd_inflight {
    struct msd_inflight *next, *prev;
    void (*drop)(struct msd_inflight *in);
} msd_inflight_t;

/* What an epoll event of a loop is about. */
typedef enum msd_ev_kind {
    MSD_EV_WAKE,   /* the loop's eventfd: inbox or stop */
    MSD_EV_TIMER,  /* engine completions, orphan expiry (the tcp loop) */
    MSD_EV_SIGNAL, /* SIGTERM/SIGINT (the tcp loop) */
    MSD_EV_WORKER, /* a UCX worker's event fd */
    MSD_EV_SOCK    /* a local session's Unix socket: its end is the client's death */
} msd_ev_kind_t;

typedef struct msd_ev {
    msd_ev_kind_t       kind;
    struct msd_session *s; /* WORKER (local), SOCK */
} msd_ev_t;

/* One connected client. Freed when dead and no callback refers to it (refs == 0). */
typedef struct msd_session {
    struct msd_session *next;
    uint64_t            id; /* unique, never reused */
    ucp_ep_h            ep;
    bool                bound;   /* HELLO accepted */
    bool                control; /* control session (memsvc-ctl) */
    bool                dead;    /* peer gone: cleanup done or pending */
    bool                cleaned; /* pins and tensors dealt with */
    bool                peer;    /* carries a link from a peer daemon (msd_peer.c) */
    bool                peer_up; /* ... authenticated: no HELLO owed, never shed (msd_peer.c) */
    uint32_t            job, rank, device;
    unsigned            refs; /* pending callbacks holding this session */
    uint64_t            requests, errors;
    char                name[MSP_NAME_MAX + 1];
    char                transport[MSP_TRANSPORT_MAX + 1];
    /* -- the loop that serves it (msd_loop.c, msd_local.c) -- */
    struct msd_loop    *loop;      /* owner of its worker: only that thread sends on ep */
    ucp_worker_h        worker;    /* local: its own; tcp: the tcp loop's */
    bool                local;     /* came through the Unix socket, shared-memory worker */
    bool                regions_sent;
    int                 sock;      /* local: the Unix socket (-1 when closed) */
    int                 wefd;      /* local: the worker's event fd */
    pid_t               pid;       /* local: SO_PEERCRED of the socket */
    uid_t               uid;       /* local: SO_PEERCRED; tcp: owner of the peer's socket */
    gid_t               gid;
    /* -- identity (msd_auth.c) -- */
    bool                uid_known; /* uid is the kernel's word (always for local sessions) */
    bool                admin;     /* root or --operator-group: administers every job */
    bool                auth_wait; /* HELLO answered with a challenge: only AUTH may follow */
    bool                authed;    /* proved the cluster secret */
    bool                auth_failed; /* a wrong proof: nothing more on this connection */
    bool                counted;   /* counted in its job's msd_job_owner_t.sessions */
    uint64_t            principal; /* MSD_PRINCIPAL_* or a uid */
    uint32_t            hello_flags;
    uint8_t             nonce_c[MSP_NONCE_BYTES], nonce_d[MSP_NONCE_BYTES];
    uint8_t             key[MSP_KEY_BYTES]; /* the secret it must prove (until AUTH) */
    bool                job_secret;         /* that secret is its job's (--job-secrets) */
    msd_ev_t            ev_worker, ev_sock;
    struct msd_session *loop_next; /* the loop's own list */
    struct srv_send    *sends;     /* local: replies in flight on its worker */
    msd_inflight_t     *inflight;  /* receives in flight on its worker */
    /* -- limits (msd_server.c "back-pressure", engine lock) -- */
    uint64_t            created_ns, last_ns; /* connected; last request */
    uint64_t            out_bytes;           /* bulk bytes in flight: READ replies, WRITE receives */
    struct msd_defer   *dq_head, *dq_tail;   /* messages waiting for out_bytes to drop */
    unsigned            ndefer;
    bool                serving;             /* msd_defer_serve runs (no re-entry) */
    bool                kick;                /* out_bytes dropped while serving was unsafe */
    bool                evicted;             /* closed by an operator (EVICT) */
    struct msd_pintab  *pintab;              /* local, mapped: its pin table (msd_fast.c) */
} msd_session_t;

/* Value of the ownership table. Key (handle, 0): the tensor's owner; (handle, sid): pins. */
typedef struct msd_own {
    uint64_t sid;      /* owner session (0: orphan, kept for re-attach until deadline) */
    uint64_t deadline; /* orphans: msp_now_ns() after which the tensor is freed */
    uint32_t pins;     /* pin entries: acquires by that session not yet released */
    uint32_t rank;     /* owner entries: rank that allocated it */
    uint32_t wpins;    /* pin entries: of those, pins that may write in place (MSP_ACQ_WRITE) */
    uint32_t job;      /* owner entries: the tensor's job (its owner's count in msd_auth_t) */
    uint64_t since;    /* pin entries: msp_now_ns() of the oldest pin still held (about) */
} msd_own_t;

/* A tensor of an ended session, queued for msd_ops_reclaim (its owner entry keeps sid). */
typedef struct msd_reclaim {
    uint64_t handle, sid;
    uint32_t job, rank;
} msd_reclaim_t;

typedef struct msd_map_slot {
    uint64_t  handle, sid;
    msd_own_t v;
    bool      used;
} msd_map_slot_t;

typedef struct msd_map {
    msd_map_slot_t *slots;
    size_t          cap; /* power of two */
    size_t          count;
} msd_map_t;

/* A thread with an epoll loop; loop 0 serves tcp (listener, its worker, timers, signals), the
 * others local sessions, each with its own worker (msd_loop.c). */
typedef struct msd_loop {
    struct msd_server  *srv;
    unsigned            idx;
    pthread_t           thread;
    bool                started;
    int                 epfd, evfd;
    msd_ev_t            ev_wake;
    msd_session_t      *sessions; /* local sessions it serves (loop thread only) */
    _Atomic unsigned    nsessions;
    pthread_mutex_t     qlock; /* guards the inbox */
    struct msd_item    *qhead, *qtail;
    _Atomic bool        qpending; /* the inbox is not empty (read without the lock) */
    uint64_t            last_active;
} msd_loop_t;

/* Figures only the metrics endpoint reports (msd_metrics.c); engine lock. */
#define MSD_LAT_BUCKETS      12 /* request-duration histogram buckets, besides +Inf */
#define MSD_METRICS_OPS      32 /* op codes with a histogram (MSP_OP_COUNT and room to grow) */
#define MSD_METRICS_STATUSES 64 /* error statuses counted by name ([0]: any beyond) */
typedef struct msd_metrics {
    struct MHD_Daemon *httpd;                                  /* NULL: no endpoint */
    uint64_t           lat[MSD_METRICS_OPS][MSD_LAT_BUCKETS + 1]; /* per bucket, not cumulated */
    uint64_t           lat_sum_ns[MSD_METRICS_OPS];
    uint64_t           errors[MSD_METRICS_STATUSES];           /* by -status */
    uint64_t           sessions[2];                            /* bound: [0] tcp, [1] local */
    uint64_t           reloads;
    unsigned           status_local, status_tcp; /* session counts last sent as STATUS= */
} msd_metrics_t;

typedef struct msd_server {
    msd_config_t   cfg;
    eng_t         *eng;
    ucp_context_h  ctx;
    ucp_worker_h   worker;
    ucp_listener_h listener;
    int            epfd, efd, timerfd, sigfd;
    bool           stop;
    msd_session_t *sessions; /* live and dead-but-referenced */
    uint64_t       next_sid;
    uint64_t       sessions_total;
    uint64_t       requests, errors;
    uint64_t       start_ns;
    uint64_t       spin_ns;
    uint64_t       orphans, orphan_next; /* count, earliest deadline */
    uint64_t       hs_next; /* earliest handshake deadline of a tcp session without HELLO */
    msd_map_t      own;
    msd_auth_t     auth;       /* job owners, secret, operators (msd_auth.c) */
    struct sockaddr_storage listen_addr; /* what the listener is bound to (ucp_listener_query) */
    /* -- loops, the engine lock, the local path -- */
    pthread_mutex_t  lock; /* the engine lock: engine, sessions list, ownership table, counters */
    msd_loop_t      *loops; /* nloops of them; [0] is the tcp loop (main thread) */
    unsigned         nloops;
    _Atomic uint64_t timer_at;    /* when the engine or an orphan next needs loop 0 (ns) */
    _Atomic uint64_t timer_armed; /* what loop 0 armed its timerfd for */
    _Atomic bool     reap_tcp;    /* a tcp session died: loop 0 reaps it */
    _Atomic bool     draining; /* shutting down: no new clients, requests refused, moves end */
    _Atomic bool     stopping; /* the loops end their sessions and return */
    uint64_t         drain_from, drain_until; /* ns: when the notices went, the latest end */
    struct srv_send *tcp_sends; /* replies in flight on the tcp worker (loop 0 only) */
    msd_durable_t   *dur;       /* durable state; NULL: off */
    ucp_context_h    lctx;     /* shared-memory-only context of local workers */
    int              usock;    /* the Unix socket, -1 if none */
    pthread_t        acceptor; /* accepts local clients; a thread each builds their workers */
    _Atomic unsigned handshakes; /* handshake threads running */
    bool             has_acceptor;
    char             unix_path[MSP_TRANSPORT_MAX + 1];
    char             lanes_local[MSP_TRANSPORT_MAX + 1]; /* lanes seen on a local session */
    char             lanes_tcp[MSP_TRANSPORT_MAX + 1];   /* lanes seen on a tcp session */
    char           transport[MSP_TRANSPORT_MAX + 1]; /* transports seen on sessions */
    msp_req_t      reqs[MSP_BATCH_MAX];              /* decode scratch */
    msp_rep_t      reps[MSP_BATCH_MAX];
    msp_tensor_t   list[MSP_LIST_MAX];
    msd_jobs_t     jobs; /* per-job usage and quotas */
    struct {
        void  *p;
        size_t cap;
    } pool[MSD_POOL_SLOTS]; /* msd_buf_get/put: touched buffers kept for reuse */
    size_t         pool_bytes;
    struct msd_reclaim *reclaim; /* tensors of ended sessions to deal with (msd_ops_reclaim) */
    size_t         reclaim_head, reclaim_n, reclaim_cap;
    uint64_t       reclaim_freed, reclaim_kept;
    uint64_t       refused, hs_timeouts, overloads, deferred, evictions; /* limits counters */
    unsigned       in_handle; /* msd_ops_handle runs (engine lock): srv->reqs/reps are in use */
    unsigned       kicks;     /* sessions with kick set */
    bool           kicking;
    bool           rndv_taken; /* op_write handed the message's descriptor to UCX */
    memsvc_stats_t stats;
    uint8_t        body_data[MSP_BODY_MAX]; /* STATS/LIST bodies are encoded here */
    msp_buf_t      body;
    msd_metrics_t  metrics;
    struct msd_peers *peers; /* the cluster (msd_peer.c); NULL when standing alone */
    struct msd_repl  *repl;  /* replication to peers (msd_repl.c); NULL when off */
    struct msd_tier  *tier;  /* the peer tier's objects (msd_tier.c); NULL when none */
    /* -- pin tables of local sessions (msd_fast.c; engine lock) -- */
    unsigned       fast_tables;    /* sessions with one */
    uint64_t       fast_slots;     /* slots not free, all tables */
    uint64_t       fast_fold_at;   /* when the clients' local acquires are next folded in */
    uint64_t       fast_fold_ns;   /* the interval now (MSD_FAST_FOLD_NS..MAX) */
    uint64_t       fast_acquires;  /* local acquires folded in so far */
    uint64_t       fast_published; /* slots published */
    uint64_t       fast_revoked;   /* slots revoked before a move or free */
    uint64_t       fast_held;      /* moves refused: a client held the tensor in its table */
} msd_server_t;

/* ---- msd_map.c ---------------------------------------------------------------------------- */

memsvc_status_t msd_map_init(msd_map_t *map);
void            msd_map_fini(msd_map_t *map);
msd_own_t      *msd_map_get(msd_map_t *map, uint64_t handle, uint64_t sid);
/* Insert (or find) an entry; NULL when out of memory. New entries are zeroed. */
msd_own_t *msd_map_put(msd_map_t *map, uint64_t handle, uint64_t sid);
void       msd_map_del(msd_map_t *map, uint64_t handle, uint64_t sid);

/* ---- msd_server.c ------------------------------------------------------------------------- */

/* Set up UCX (context, worker, listener), the epoll set, timer and signal fds. srv is
 * zeroed except srv->peers, which the caller sets (msd_peers_create) or leaves NULL. */
memsvc_status_t msd_server_init(msd_server_t *srv, eng_t *eng, const msd_config_t *cfg);
/* Serve until SIGTERM/SIGINT. */
memsvc_status_t msd_server_run(msd_server_t *srv);
void            msd_server_fini(msd_server_t *srv);

/*
 * Send replies to a session: one message of n replies, with an optional payload that the
 * send then owns (free()d when the send completes). Errors are logged, never fatal.
 */
void msd_send_replies(msd_server_t *srv, msd_session_t *s, const msp_rep_t *reps, size_t n,
                      void *payload, size_t plen);
/* The same for one reply whose payload is lent tensor bytes (eng_lend): the loan ends when the
 * send does (or at once if it cannot start). */
void msd_send_lent(msd_server_t *srv, msd_session_t *s, const msp_rep_t *rep, eng_loan_t *loan,
                   size_t plen);

/*
 * Decode and serve one request message of session s (the caller holds the engine lock), or keep
 * it for later when its bulk bytes do not fit the session's budget (back-pressure). Returns what
 * the AM callback returns: UCS_INPROGRESS when a rendezvous descriptor was kept.
 */
ucs_status_t msd_handle_message(msd_server_t *srv, msd_session_t *s, const void *header,
                                size_t header_length, void *data, size_t length,
                                const ucp_am_recv_param_t *param);
/* Bulk bytes of s in flight changed by delta (a send or receive started: > 0; ended: < 0);
 * when they drop, serve what waits (the caller is s's loop thread, engine lock held). */
void msd_out_bytes(msd_server_t *srv, msd_session_t *s, int64_t delta, bool serve);
/* Drop the messages s kept (its end); release=true gives rendezvous descriptors back to UCX
 * (s's worker still exists). */
void msd_defer_drop(msd_server_t *srv, msd_session_t *s, bool release);
/* Close session s by an operator's order (EVICT): its loop ends it as if it had died. */
void msd_session_evict(msd_server_t *srv, msd_session_t *s);
/* Live sessions, not counting those being closed (engine lock). */
unsigned msd_sessions_live(msd_server_t *srv);
/* A new connection (local: through the Unix socket, else tcp) when that door already admits
 * cfg.max_sessions: close the oldest of its sessions that has not said HELLO (if old enough,
 * MSD_SHED_AGE_NS) and return true, or return false (refuse it). Each door has its own count,
 * so that a flood through one does not lock clients out of the other. Counts srv->refused.
 * Engine lock. */
bool msd_sessions_make_room(msd_server_t *srv, bool local);

/* ---- msd_loop.c --------------------------------------------------------------------------- */

/*
 * The engine lock. Held run-to-completion while a request message is served, an engine
 * completion runs, a session is cleaned up; never across a UCX progress call of a loop, a
 * worker's creation or destruction, or a copy of tensor bytes by a client. Nests (per thread).
 */
void msd_lock(msd_server_t *srv);
void msd_unlock(msd_server_t *srv);

/* The loop of the calling thread (NULL in other threads). */
msd_loop_t *msd_loop_current(void);

memsvc_status_t msd_loops_init(msd_server_t *srv);
/* Start the local loops' threads (loop 0 runs in the caller, msd_server_run). */
memsvc_status_t msd_loops_start(msd_server_t *srv);
/* Wake every loop (stop) and join them; then free what they held. */
void msd_loops_stop(msd_server_t *srv);
void msd_loops_fini(msd_server_t *srv);
/* Serve a loop's inbox: adopt new sessions, send replies queued by other threads. */
void msd_loop_drain(msd_loop_t *loop);
/* Wake a loop's epoll. */
void msd_loop_wake(msd_loop_t *loop);
/* Hand a new local session to a loop (the one serving the fewest). */
void msd_loop_adopt(msd_server_t *srv, msd_session_t *s);
/* Queue an encoded reply for the loop owning s (caller holds the engine lock; takes a ref). */
void msd_loop_post_send(msd_server_t *srv, msd_session_t *s, struct srv_send *send);
/* After a batch under the engine lock: run due completions, tell loop 0 when to wake next. */
void msd_after_batch(msd_server_t *srv);

/* ---- msd_server.c: shared with the loops -------------------------------------------------- */

/* An encoded reply in flight: owns its header and payload. */
typedef struct srv_send {
    struct srv_send    *next, *prev; /* on the list of sends in flight of its worker */
    struct srv_send   **head;        /* that list (s->sends, srv->tcp_sends); NULL: none */
    msd_session_t      *acct;        /* payload counted in acct->out_bytes (holds a ref) */
    void               *payload;
    size_t              plen;
    eng_loan_t          loan;        /* payload is a tensor's bytes (loan.t != NULL) */
    size_t              hlen;
    uint8_t             hdr[];
} srv_send_t;

/* A buffer of at least len bytes for a transfer (a kept one when there is one that fits);
 * NULL when out of memory. msd_buf_put keeps it for reuse (or frees it); free() is also
 * fine. Engine lock held. */
void *msd_buf_get(msd_server_t *srv, size_t len);
void  msd_buf_put(msd_server_t *srv, void *buf, size_t len);
void  msd_buf_fini(msd_server_t *srv);

/* Start the send on s->ep (the caller is s's loop thread). Frees send when done or failed. */
void msd_send_now(msd_server_t *srv, msd_session_t *s, srv_send_t *send);
/* A send that will not be made: its payload freed (or loan ended), its accounting undone. */
void msd_send_discard(srv_send_t *send);
/* Free the sends still on a list whose worker was destroyed (s->sends, srv->tcp_sends). */
void msd_send_forget_all(struct srv_send **head);
/* Track an operation in flight on s's worker / forget it (its callback ran) / drop all those
 * left when the worker was destroyed. Engine lock held. */
void msd_inflight_add(msd_session_t *s, msd_inflight_t *in);
void msd_inflight_del(msd_session_t *s, msd_inflight_t *in);
void msd_inflight_drop_all(msd_session_t *s);
/* Recompute srv->transport ("shm: ... ; tcp: ...") from the live sessions (engine lock). */
void msd_transport_summary(msd_server_t *srv);

/* ---- msd_local.c -------------------------------------------------------------------------- */

/* Bind the Unix socket, create the local UCX context, start the acceptor thread. */
memsvc_status_t msd_local_init(msd_server_t *srv);
void            msd_local_stop(msd_server_t *srv); /* stop accepting (joins the acceptor) */
void            msd_local_fini(msd_server_t *srv);
/* Local session s: its UCX worker has something (progress it) or its socket ended. */
void msd_local_session_end(msd_server_t *srv, msd_session_t *s, const char *why);
/* After HELLO bound a local session: send the regions it may map (engine lock held). */
void msd_local_send_regions(msd_server_t *srv, msd_session_t *s);
/* Region id (device) and offset of a pinned tensor for session s, or MSP_REGION_NONE. */
uint32_t msd_local_locate(msd_server_t *srv, msd_session_t *s, const eng_tensor_info_t *info,
                          uint64_t *offset_p);
/*
 * An acquire by s of handle h (with MSP_ACQ_* flags) came out with status: record the pin
 * (and whether it may write in place), turn an uncommitted tensor into MEMSVC_RECOMPUTE, fill
 * the reply's location. Returns the status to answer. Engine lock held.
 */
memsvc_status_t msd_acquired(msd_server_t *srv, msd_session_t *s, eng_handle_t h, uint32_t flags,
                             memsvc_status_t status, msp_rep_t *rep);
/* A release by s of h: commit an in-place write when its last write pin goes (a durable
 * tensor's bytes are journaled then: msd_durable_commit's status and msg). */
memsvc_status_t msd_released(msd_server_t *srv, msd_session_t *s, eng_handle_t h, msd_own_t *pin,
                             char *msg, size_t msglen);

/* ---- msd_fast.c: pin tables ---------------------------------------------------------------- */

/* How often the clients' local acquires are folded into the engine's access records: every
 * MSD_FAST_FOLD_NS while clients acquire locally, backing off (doubling) to MSD_FAST_FOLD_MAX_NS
 * while they do not. */
#define MSD_FAST_FOLD_NS 10000000ull
#define MSD_FAST_FOLD_MAX_NS 160000000ull

/* Give local session s a pin table (before its regions are sent). false: none (logged). */
bool msd_fast_open(msd_server_t *srv, msd_session_t *s);
/* The table's fd, to send with the regions (-1: none). */
int msd_fast_fd(const msd_session_t *s);
/* s ends: close every slot, unmap, forget the table; a tensor it held while writing in place is
 * left uncommitted. Engine lock. */
void msd_fast_close(msd_server_t *srv, msd_session_t *s);
/* s acquired h, resident at (region, offset, size) of its mapping: publish it (durable: its
 * writes in place need COMMIT). Engine lock. */
void msd_fast_publish(msd_server_t *srv, msd_session_t *s, eng_handle_t h, uint32_t region,
                      uint64_t offset, uint64_t size, bool durable);
/* h's bytes may no longer be trusted (uncommitted): no new local acquire of it. Engine lock. */
void msd_fast_invalidate(msd_server_t *srv, eng_handle_t h);

/* Pins of h held in all sessions' pin tables (as LOOKUP and LIST report them). Engine lock. */
uint32_t msd_fast_pins(msd_server_t *srv, eng_handle_t h);
/* Does session s hold a pin of h in its pin table? Engine lock. */
bool msd_fast_holds(const msd_session_t *s, eng_handle_t h);
/* The engine's guard (eng_set_guard): revoke h's slots before it moves, close them before it
 * is freed; false while a client holds it. Engine lock. */
bool msd_fast_guard(void *arg, eng_handle_t h, bool freeing);
/* Fold the local acquires into the engine (access records, policy) and reclaim closed slots
 * whose pins are gone; now: whatever the time, else when MSD_FAST_FOLD_NS has passed. Returns
 * when it wants to run next (UINT64_MAX: no slot in use). Engine lock. */
uint64_t msd_fast_fold(msd_server_t *srv, bool now);

/* ---- msd_ops.c ---------------------------------------------------------------------------- */

/* Handle one decoded request message from session s (data/param: the AM payload). */
void msd_ops_handle(msd_server_t *srv, msd_session_t *s, size_t n, void *data, size_t length,
                    const ucp_am_recv_param_t *param);

/* The session's peer is gone: release its pins, free its non-durable tensors, orphan the
 * durable ones for cfg.keep_durable_ns (or hand them to a live session of the same job and
 * rank: the process that replaced it, connected before the old one was declared dead). */
void msd_ops_session_gone(msd_server_t *srv, msd_session_t *s);

/* Shutdown, sessions all dead: free every tensor, so that operations waiting in the engine
 * complete (CANCELED) and free what they hold. Durable state (msd_durable) is not touched. */
void msd_ops_cancel_all(msd_server_t *srv);
/* Deal with up to max tensors of ended sessions (free, keep for re-attach, hand to the rank's
 * new session); returns how many were taken off the queue. Engine lock held. */
size_t msd_ops_reclaim(msd_server_t *srv, size_t max);

/* Free orphans whose deadline passed; recompute srv->orphan_next. */
void msd_ops_expire_orphans(msd_server_t *srv, uint64_t now);

void msd_session_put(msd_server_t *srv, msd_session_t *s);

/* ---- msd_metrics.c ------------------------------------------------------------------------ */

/* Serve GET /metrics on addr ("[HOST:]PORT"; a bare port is loopback; a non-loopback host needs
 * cfg.allow_remote) from libmicrohttpd's own thread. Errors: MEMSVC_ERR_PARSE,
 * MEMSVC_ERR_ACCESS, MEMSVC_ERR_TRANSPORT (cannot bind); logged. */
memsvc_status_t msd_metrics_start(msd_server_t *srv, const char *addr);
void            msd_metrics_stop(msd_server_t *srv); /* idempotent */
/* Would msd_metrics_start accept addr? (Checked before the daemon starts; logged.) */
bool msd_metrics_addr_ok(const char *addr, bool allow_remote);
/* A request (op) was served in ns with status; an error reply with status. Engine lock. */
void msd_metrics_request(msd_server_t *srv, uint32_t op, memsvc_status_t status, uint64_t ns);
void msd_metrics_error(msd_server_t *srv, memsvc_status_t status);

/* ---- msd_reload.c ------------------------------------------------------------------------- */

/*
 * Apply what can change while running from cfg (the log level, --keep-durable, --spin-us) and
 * log each change; name the settings that differ but need a restart. Other reloadable settings
 * join here. Called by loop 0's thread.
 */
void msd_reload(msd_server_t *srv, const msd_config_t *cfg);
/* SIGHUP: cfg.reread, then msd_reload; a configuration that cannot be read changes nothing. */
void msd_reload_signal(msd_server_t *srv);
/* ---- msd_durable.c ------------------------------------------------------------------------ */

/*
 * Open the durable state of this daemon (arena and journal in cfg.state_dir, named by the
 * port), replay the journal, verify every record and every tensor's bytes, and bring the live
 * durable tensors back as orphans of their job and rank (re-attach by key). Corrupt records
 * and bytes are logged and counted, never served. Off (MEMSVC_OK, nothing kept) in phantom
 * mode or with --state-dir none. Call before serving. Errors: MEMSVC_ERR_IO,
 * MEMSVC_ERR_EXISTS (another daemon holds the files), MEMSVC_ERR_NO_RESOURCE.
 */
memsvc_status_t msd_durable_open(msd_server_t *srv);
void            msd_durable_close(msd_server_t *srv);
/*
 * A write of tensor h was committed: if it is durable, copy its bytes into the arena and
 * journal them (synced) before the write is answered. On failure the write stands but would
 * not survive a restart: the status (HOST_MEMORY: arena full; IO) and msg say so. Engine lock.
 */
memsvc_status_t msd_durable_commit(msd_server_t *srv, eng_handle_t h, char *msg, size_t msglen);
/* Tensor h was freed: journal its deletion (not while the daemon is stopping). Engine lock. */
void msd_durable_forget(msd_server_t *srv, eng_handle_t h);
void msd_durable_stats(msd_server_t *srv, memsvc_stats_t *st);

#endif /* MSD_H */
