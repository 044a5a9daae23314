/* mcl_int.h - libmemsvc internals shared by its files: connection, requests, sending, waiting */
#ifndef MCL_INT_H
#define MCL_INT_H

#include "client/memsvc.h"
#include "client/mcl_local.h"
#include "client/msp_proto.h"

#include <ucp/api/ucp.h>

#include <stdbool.h>
#include <stdint.h>

#define MCL_CORK_MAX MSP_BATCH_MAX /* one-way requests queued before they are sent */
#define MCL_OW_MAX 4096u           /* one-way requests in flight before a flush is forced */
#define MCL_ERR_MAX 256u           /* deferred errors kept until read (the rest are counted) */
#define MCL_CORK_US 100u           /* default bound on how long a queued one-way request waits */

struct memsvc_req {
    struct memsvc_req   *next, *prev; /* outstanding list of the connection */
    memsvc_conn_h        conn;
    uint64_t             id;
    uint32_t             op;
    bool                 done;         /* reply (and payload) arrived */
    bool                 abandoned;    /* freed by the user: drop when done */
    bool                 recv_pending; /* rendezvous payload still arriving */
    int                  send_pending; /* our send still owns the header/payload */
    memsvc_status_t      status;
    msp_rep_t            rep;  /* the reply */
    void                *rbuf; /* payload destination: READ buffer, STATS/LIST body */
    uint64_t             rlen;
    bool                 own_rbuf; /* rbuf is ours (a body buffer): freed with the request */
    struct memsvc_batch *batch;    /* a submitted batch: done when all its entries are */
    unsigned             ucx_refs; /* UCX operations (sends, a receive) whose callbacks name it:
                                      a freed request is unnamed from them first */
};

/* A one-way request sent (or queued) and not yet known to be complete. */
typedef struct mcl_ow {
    uint64_t id;
    uint64_t seq; /* its number among the connection's one-way requests, from 1 */
    uint64_t handle;
    uint32_t op;
} mcl_ow_t;

struct memsvc_conn {
    ucp_context_h     ctx;
    ucp_worker_h      worker;
    ucp_ep_h          ep;
    int               efd;
    bool              broken; /* the endpoint failed: every call fails */
    memsvc_status_t   broken_status;
    uint64_t          next_id;
    struct memsvc_req reqs; /* list head of outstanding requests */
    struct conn_op   *ops;  /* UCX sends and receives in flight that name requests */
    uint32_t          timeout_ms, job, rank, device, flags;
    uint64_t          spin_ns; /* busy-poll this long before sleeping */
    uint64_t          session;
    uint32_t          num_devices;
    char              transport[MSP_TRANSPORT_MAX + 1];
    msp_rep_t         reps[MSP_BATCH_MAX]; /* decode scratch */
    mcl_local_t       local;               /* the co-located path (local.sock >= 0) */

    /* one-way requests (memsvc_oneway.c) */
    bool                     sync;    /* MEMSVC_CONN_SYNC: they wait for their answers */
    uint64_t                 cork_ns; /* longest a queued one waits (checked at each call) */
    msp_req_t               *cork;    /* queued, not sent: MSP_BATCH_MAX slots (see mcl_send) */
    size_t                   ncork;
    size_t                   cork_bytes; /* bound of their encoded size */
    uint64_t                 cork_since; /* when the oldest was queued */
    mcl_ow_t                *ow;         /* in flight, by increasing id: a ring of MCL_OW_MAX */
    size_t                   ow_head, ow_count;
    uint64_t                 ow_issued, ow_completed, ow_failed;
    memsvc_deferred_error_t *errs; /* a ring of MCL_ERR_MAX */
    size_t                   err_head, err_count;
    uint64_t                 err_lost;
};

/* ---- memsvc_client.c ------------------------------------------------------------------------ */

/* A new request record of op, with the next id, on the connection's list. NULL: no memory. */
memsvc_req_h mcl_req_new(memsvc_conn_h conn, uint32_t op);
void         mcl_req_unlink_free(memsvc_req_h req);
/* Reply, payload and send all done (for a batch: all its entries). */
bool mcl_req_finished(memsvc_req_h req);
/* Give up on a request: freed now, or when its reply arrives. */
void mcl_req_abandon(memsvc_req_h req);

/* Send n requests in one message as they are (reqs[i] NULL: a one-way request, nothing
 * waits for it). The header is copied; the payload must live until the send completes. */
memsvc_status_t mcl_send_raw(memsvc_conn_h conn, memsvc_req_h *reqs, const msp_req_t *msgs,
                             size_t n, const void *payload, size_t plen);
/* Send and wait for one request; *rep_p (optional) gets the reply. */
memsvc_status_t mcl_call(memsvc_conn_h conn, msp_req_t *msg, const void *payload, size_t plen,
                         msp_rep_t *rep_p);

/* Fill an ALLOC or HINT request from the public arguments (validated). */
memsvc_status_t mcl_alloc_msg(const char *key, uint64_t size, const memsvc_alloc_params_t *params,
                              msp_req_t *msg);
memsvc_status_t mcl_hint_msg(const memsvc_hint_t *hint, msp_req_t *msg);

/* ---- memsvc_oneway.c ------------------------------------------------------------------------ */

memsvc_status_t mcl_oneway_init(memsvc_conn_h conn, const memsvc_conn_params_t *params);
void            mcl_oneway_fini(memsvc_conn_h conn);

/* The one way out: queued one-way requests go first, in the same message when they fit. */
memsvc_status_t mcl_send(memsvc_conn_h conn, memsvc_req_h *reqs, const msp_req_t *msgs, size_t n,
                         const void *payload, size_t plen);
/* Send the queued one-way requests now (before waiting for anything). */
memsvc_status_t mcl_cork_send(memsvc_conn_h conn);
/* FREE, RELEASE or HINT: one-way (queued), or a plain call on a MEMSVC_CONN_SYNC connection. */
memsvc_status_t mcl_oneway_call(memsvc_conn_h conn, msp_req_t *msg, uint64_t handle);
/* A reply arrived: retire the one-way requests it proves complete. True if it answered one
 * of them (an error, now queued for memsvc_errors). */
bool mcl_oneway_on_reply(memsvc_conn_h conn, const msp_rep_t *rep);

/* ---- memsvc_batch.c ------------------------------------------------------------------------- */

bool mcl_batch_done(struct memsvc_batch *batch);
/* Finished: take the entries' outcomes, free their records; the batch's status. */
memsvc_status_t mcl_batch_collect(struct memsvc_batch *batch);
/* The batch's request is abandoned or freed: entries still in flight are abandoned. */
void mcl_batch_detach(struct memsvc_batch *batch);

#endif /* MCL_INT_H */
