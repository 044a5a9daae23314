/* msd.h - memsvcd internals: the server, its sessions, the ownership table, the request handlers */
#ifndef MSD_H
#define MSD_H

#include "client/memsvc.h"
#include "client/msp_proto.h"
#include "memsvc/eng.h"

#include <ucp/api/ucp.h>

#include <stdbool.h>
#include <stdint.h>

/* Daemon configuration (from the command line). */
typedef struct msd_config {
    const char *listen;          /* "HOST:PORT" */
    uint64_t    keep_durable_ns; /* how long a dead session's durable tensors are kept */
    bool        allow_remote;    /* listening on a non-loopback address was asked for */
    uint64_t    spin_ns;         /* busy-poll this long after activity before sleeping */
} msd_config_t;

/* One connected client. Freed when dead and no callback refers to it (refs == 0). */
typedef struct msd_session {
    struct msd_session *next;
    uint64_t            id; /* unique, never reused */
    ucp_ep_h            ep;
    bool                bound;   /* HELLO accepted */
    bool                control; /* control session (memsvc-ctl) */
    bool                dead;    /* peer gone: cleanup done or pending */
    bool                cleaned; /* pins and tensors dealt with */
    uint32_t            job, rank, device;
    unsigned            refs; /* pending callbacks holding this session */
    uint64_t            requests, errors;
    char                name[MSP_NAME_MAX + 1];
    char                transport[MSP_TRANSPORT_MAX + 1];
} msd_session_t;

/* Value of the ownership table. Key (handle, 0): the tensor's owner; (handle, sid): pins. */
typedef struct msd_own {
    uint64_t sid;      /* owner session (0: orphan, kept for re-attach until deadline) */
    uint64_t deadline; /* orphans: msp_now_ns() after which the tensor is freed */
    uint32_t pins;     /* pin entries: acquires by that session not yet released */
    uint32_t rank;     /* owner entries: rank that allocated it */
} msd_own_t;

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
    msd_map_t      own;
    char           transport[MSP_TRANSPORT_MAX + 1]; /* transports seen on sessions */
    msp_req_t      reqs[MSP_BATCH_MAX];              /* decode scratch */
    msp_rep_t      reps[MSP_BATCH_MAX];
    msp_tensor_t   list[MSP_LIST_MAX];
    memsvc_stats_t stats;
    uint8_t        body_data[MSP_BODY_MAX]; /* STATS/LIST bodies are encoded here */
    msp_buf_t      body;
} msd_server_t;

/* ---- msd_map.c ---------------------------------------------------------------------------- */

memsvc_status_t msd_map_init(msd_map_t *map);
void            msd_map_fini(msd_map_t *map);
msd_own_t      *msd_map_get(msd_map_t *map, uint64_t handle, uint64_t sid);
/* Insert (or find) an entry; NULL when out of memory. New entries are zeroed. */
msd_own_t *msd_map_put(msd_map_t *map, uint64_t handle, uint64_t sid);
void       msd_map_del(msd_map_t *map, uint64_t handle, uint64_t sid);

/* ---- msd_server.c ------------------------------------------------------------------------- */

/* Set up UCX (context, worker, listener), the epoll set, timer and signal fds. */
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

/* ---- msd_ops.c ---------------------------------------------------------------------------- */

/* Handle one decoded request message from session s (data/param: the AM payload). */
void msd_ops_handle(msd_server_t *srv, msd_session_t *s, size_t n, void *data, size_t length,
                    const ucp_am_recv_param_t *param);

/* The session's peer is gone: release its pins, free its non-durable tensors, orphan the
 * durable ones for cfg.keep_durable_ns (or hand them to a live session of the same job and
 * rank: the process that replaced it, connected before the old one was declared dead). */
void msd_ops_session_gone(msd_server_t *srv, msd_session_t *s);

/* Free orphans whose deadline passed; recompute srv->orphan_next. */
void msd_ops_expire_orphans(msd_server_t *srv, uint64_t now);

void msd_session_put(msd_server_t *srv, msd_session_t *s);

#endif /* MSD_H */
