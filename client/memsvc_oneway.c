/* memsvc_oneway.c - libmemsvc: one-way requests, the queue that corks them, deferred errors */
#include "client/mcl_int.h"
#include "client/msp_ucx.h"

#include <stdlib.h>
#include <string.h>

/*
 * FREE, RELEASE and HINT go one-way: the daemon answers them only when they fail. They are
 * queued in conn->cork and sent ahead of the next request, in its message when they fit
 * (mcl_send), so an operator's releases and frees ride on its next acquire. Each one sent is
 * remembered in conn->ow (a FIFO by id) until a reply proves it handled: the daemon handles
 * a connection's requests in order and sends a one-way request's error before the reply of
 * any later request, so a reply with id R retires every one-way request with a smaller id
 * (and the one with id R, if it is the error of that one).
 */

memsvc_status_t mcl_oneway_init(memsvc_conn_h conn, const memsvc_conn_params_t *params)
{
    uint64_t mask = params->field_mask;
    uint32_t us   = (mask & MEMSVC_CONN_FIELD_CORK_US) ? params->cork_us : MCL_CORK_US;

    conn->sync    = (mask & MEMSVC_CONN_FIELD_FLAGS) && (params->flags & MEMSVC_CONN_SYNC);
    conn->cork_ns = (uint64_t)us * 1000ull;
    conn->cork    = calloc(MSP_BATCH_MAX, sizeof(*conn->cork));
    conn->ow      = calloc(MCL_OW_MAX, sizeof(*conn->ow));
    conn->errs    = calloc(MCL_ERR_MAX, sizeof(*conn->errs));
    if ((conn->cork == NULL) || (conn->ow == NULL) || (conn->errs == NULL)) {
        mcl_oneway_fini(conn);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    return MEMSVC_OK;
}

void mcl_oneway_fini(memsvc_conn_h conn)
{
    free(conn->cork);
    free(conn->ow);
    free(conn->errs);
    conn->cork = NULL;
    conn->ow   = NULL;
    conn->errs = NULL;
}

static bool alone_op(uint32_t op)
{
    return msp_op_has_payload(op) || msp_reply_has_payload(op);
}

memsvc_status_t mcl_cork_send(memsvc_conn_h conn)
{
    memsvc_req_h    none[MSP_BATCH_MAX] = {NULL};
    memsvc_status_t status;

    if ((conn->ncork == 0) || conn->broken) {
        return conn->broken ? conn->broken_status : MEMSVC_OK;
    }
    status           = mcl_send_raw(conn, none, conn->cork, conn->ncork, NULL, 0);
    conn->ncork      = 0;
    conn->cork_bytes = 0;
    return status;
}

memsvc_status_t mcl_send(memsvc_conn_h conn, memsvc_req_h *reqs, const msp_req_t *msgs, size_t n,
                         const void *payload, size_t plen)
{
    memsvc_req_h    all[MSP_BATCH_MAX] = {NULL};
    memsvc_status_t status;
    size_t          bytes = conn->cork_bytes + MSP_MSG_OVERHEAD, i, q = conn->ncork;

    if (q == 0) {
        return mcl_send_raw(conn, reqs, msgs, n, payload, plen);
    }
    for (i = 0; i < n; i++) {
        bytes += msp_request_bound(&msgs[i]);
    }
    if ((payload != NULL) || (n != 0 && alone_op(msgs[0].op)) || (q + n > MSP_BATCH_MAX) ||
        (bytes > MSP_HEADER_MAX)) {
        status = mcl_cork_send(conn); /* in a message of their own, just before */
        if (status != MEMSVC_OK) {
            return status;
        }
        return mcl_send_raw(conn, reqs, msgs, n, payload, plen);
    }
    /* The queue has room for the whole message after it: send them together, in order. */
    memcpy(&conn->cork[q], msgs, n * sizeof(*msgs));
    memcpy(&all[q], reqs, n * sizeof(*reqs));
    status           = mcl_send_raw(conn, all, conn->cork, q + n, NULL, 0);
    conn->ncork      = 0;
    conn->cork_bytes = 0;
    return status;
}

static void err_push(memsvc_conn_h conn, const mcl_ow_t *ow, const msp_rep_t *rep)
{
    memsvc_deferred_error_t *e;

    conn->ow_failed++;
    if (conn->err_count == MCL_ERR_MAX) {
        conn->err_lost++;
        return;
    }
    e         = &conn->errs[(conn->err_head + conn->err_count++) % MCL_ERR_MAX];
    e->status = rep->status;
    e->op     = (memsvc_op_t)((ow != NULL) ? ow->op : rep->op);
    e->handle = (ow != NULL) ? ow->handle : 0;
    e->seq    = (ow != NULL) ? ow->seq : 0;
    snprintf(e->message, sizeof(e->message), "%s", rep->msg);
}

bool mcl_oneway_on_reply(memsvc_conn_h conn, const msp_rep_t *rep)
{
    while (conn->ow_count > 0) {
        mcl_ow_t *ow = &conn->ow[conn->ow_head];

        if (ow->id > rep->id) {
            break;
        }
        conn->ow_head = (conn->ow_head + 1) % MCL_OW_MAX;
        conn->ow_count--;
        conn->ow_completed++;
        if (ow->id == rep->id) {
            if (rep->status < 0) {
                err_push(conn, ow, rep);
            }
            return true;
        }
    }
    return false;
}

memsvc_status_t mcl_oneway_call(memsvc_conn_h conn, msp_req_t *msg, uint64_t handle)
{
    memsvc_status_t status;
    mcl_ow_t       *ow;
    size_t          bound;

    if (conn->sync || (conn->flags & MEMSVC_CONN_CONTROL)) {
        return mcl_call(conn, msg, NULL, 0, NULL);
    }
    if (conn->broken) {
        return conn->broken_status;
    }
    if (conn->ow_count == MCL_OW_MAX) {
        /* Nothing has proved them handled for a long time: make sure before adding more. */
        status = memsvc_flush(conn);
        if ((status != MEMSVC_OK) && (status != MEMSVC_ERR_DEFERRED)) {
            return status;
        }
    }
    bound = msp_request_bound(msg);
    if ((conn->ncork == MCL_CORK_MAX) ||
        (conn->cork_bytes + bound + MSP_MSG_OVERHEAD > MSP_HEADER_MAX)) {
        status = mcl_cork_send(conn);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    msg->id     = conn->next_id++;
    msg->oneway = true;
    if (conn->ncork == 0) {
        conn->cork_since = msp_now_ns();
    }
    conn->cork[conn->ncork++] = *msg;
    conn->cork_bytes += bound;
    ow         = &conn->ow[(conn->ow_head + conn->ow_count++) % MCL_OW_MAX];
    ow->id     = msg->id;
    ow->seq    = ++conn->ow_issued;
    ow->handle = handle;
    ow->op     = msg->op;
    if ((conn->ncork == MCL_CORK_MAX) || (conn->cork_ns == 0) ||
        (msp_now_ns() - conn->cork_since >= conn->cork_ns)) {
        return mcl_cork_send(conn);
    }
    return MEMSVC_OK;
}

/* ---- public ---------------------------------------------------------------------------------- */

memsvc_status_t memsvc_flush(memsvc_conn_h conn)
{
    msp_req_t       msg = {.op = MSP_OP_PING};
    memsvc_status_t status;

    if (conn == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    /* The daemon handles requests in order: once the PING (behind the queue) is answered,
     * every earlier one-way request has been handled and its error, if any, has arrived. */
    status = mcl_call(conn, &msg, NULL, 0, NULL);
    if (status != MEMSVC_OK) {
        return status;
    }
    return (conn->err_count > 0) ? MEMSVC_ERR_DEFERRED : MEMSVC_OK;
}

size_t memsvc_errors(memsvc_conn_h conn, memsvc_deferred_error_t *errors, size_t max)
{
    size_t n = 0;

    if ((conn == NULL) || (errors == NULL)) {
        return 0;
    }
    while ((n < max) && (conn->err_count > 0)) {
        errors[n++]    = conn->errs[conn->err_head];
        conn->err_head = (conn->err_head + 1) % MCL_ERR_MAX;
        conn->err_count--;
    }
    return n;
}

memsvc_status_t memsvc_conn_query(memsvc_conn_h conn, memsvc_conn_attr_t *attr)
{
    if ((conn == NULL) || (attr == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (attr->field_mask & MEMSVC_CONN_ATTR_FIELD_ONEWAY) {
        attr->oneway_issued    = conn->ow_issued;
        attr->oneway_completed = conn->ow_completed;
        attr->oneway_failed    = conn->ow_failed;
        attr->queued           = (uint32_t)conn->ncork;
    }
    if (attr->field_mask & MEMSVC_CONN_ATTR_FIELD_ERRORS) {
        attr->errors_pending = (uint32_t)conn->err_count;
        attr->errors_lost    = conn->err_lost;
    }
    if (attr->field_mask & MEMSVC_CONN_ATTR_FIELD_SESSION) {
        attr->session  = conn->session;
        attr->protocol = MSP_VERSION;
    }
    return MEMSVC_OK;
}
