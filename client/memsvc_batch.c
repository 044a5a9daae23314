/* memsvc_batch.c - libmemsvc: batches of mixed requests (an operator's sequence) in one message */
#include "client/mcl_int.h"

#include <stdlib.h>
#include <string.h>

struct memsvc_batch {
    memsvc_conn_h    conn;
    size_t           n, cap;
    msp_req_t       *msgs;   /* the entries, as requests */
    memsvc_status_t *status; /* outcome of each (MEMSVC_INPROGRESS while in flight) */
    memsvc_handle_t *handle; /* ALLOC: the new handle */
    memsvc_req_h    *child;  /* in flight: each entry's request record (NULL once collected) */
    memsvc_req_h     req;    /* in flight: the batch's own request (never on the wire) */
    bool            *local;  /* submitted: an ACQUIRE pinned in the pin table, not sent */
    msp_req_t       *out;    /* submit: the entries sent, in order */
    memsvc_req_h    *outreq; /* and their records */
};

memsvc_status_t memsvc_batch_create(memsvc_conn_h conn, memsvc_batch_h *batch_p)
{
    memsvc_batch_h b;

    if ((conn == NULL) || (batch_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->conn  = conn;
    *batch_p = b;
    return MEMSVC_OK;
}

void memsvc_batch_destroy(memsvc_batch_h b)
{
    if (b == NULL) {
        return;
    }
    if (b->req != NULL) {
        mcl_req_abandon(b->req); /* detaches: entries abandoned */
    }
    free(b->msgs);
    free(b->status);
    free(b->handle);
    free(b->child);
    free(b->local);
    free(b->out);
    free(b->outreq);
    free(b);
}

memsvc_status_t memsvc_batch_reset(memsvc_batch_h b)
{
    if (b == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (b->req != NULL) {
        return MEMSVC_ERR_BUSY;
    }
    b->n = 0;
    return MEMSVC_OK;
}

size_t memsvc_batch_size(memsvc_batch_h b)
{
    return (b != NULL) ? b->n : 0;
}

static memsvc_status_t batch_grow(memsvc_batch_h b)
{
    size_t cap = b->cap ? 2 * b->cap : 16;
    void  *p;

    p = realloc(b->msgs, cap * sizeof(*b->msgs));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->msgs = p;
    p       = realloc(b->status, cap * sizeof(*b->status));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->status = p;
    p         = realloc(b->handle, cap * sizeof(*b->handle));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->handle = p;
    p         = realloc(b->child, cap * sizeof(*b->child));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->child = p;
    p        = realloc(b->local, cap * sizeof(*b->local));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->local = p;
    p        = realloc(b->out, cap * sizeof(*b->out));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->out = p;
    p      = realloc(b->outreq, cap * sizeof(*b->outreq));
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->outreq = p;
    b->cap    = cap;
    return MEMSVC_OK;
}

/* A slot for a new entry, zeroed; NULL with *status_p set when there is none. */
static msp_req_t *batch_slot(memsvc_batch_h b, memsvc_status_t *status_p)
{
    if (b == NULL) {
        *status_p = MEMSVC_ERR_INVALID_PARAM;
        return NULL;
    }
    if (b->req != NULL) {
        *status_p = MEMSVC_ERR_BUSY;
        return NULL;
    }
    if ((b->n == b->cap) && ((*status_p = batch_grow(b)) != MEMSVC_OK)) {
        return NULL;
    }
    memset(&b->msgs[b->n], 0, sizeof(b->msgs[b->n]));
    return &b->msgs[b->n];
}

static memsvc_status_t batch_added(memsvc_batch_h b, size_t *index_p)
{
    b->status[b->n] = MEMSVC_INPROGRESS;
    b->handle[b->n] = 0;
    b->child[b->n]  = NULL;
    b->local[b->n]  = false;
    if (index_p != NULL) {
        *index_p = b->n;
    }
    b->n++;
    return MEMSVC_OK;
}

memsvc_status_t memsvc_batch_alloc(memsvc_batch_h b, const char *key, uint64_t size,
                                   const memsvc_alloc_params_t *params, size_t *index_p)
{
    memsvc_status_t status;
    msp_req_t      *m = batch_slot(b, &status);

    if (m == NULL) {
        return status;
    }
    status = mcl_alloc_msg(key, size, params, m);
    return (status == MEMSVC_OK) ? batch_added(b, index_p) : status;
}

static memsvc_status_t batch_handle_op(memsvc_batch_h b, uint32_t op, memsvc_handle_t handle,
                                       size_t *index_p)
{
    memsvc_status_t status;
    msp_req_t      *m = batch_slot(b, &status);

    if (m == NULL) {
        return status;
    }
    m->op         = op;
    m->u.h.handle = handle;
    if ((op == MSP_OP_RELEASE) && mcl_local_unpin(&b->conn->local, handle)) {
        m->op = MSP_OP_PING; /* released in the pin table: the entry is only answered */
    }
    if (op == MSP_OP_FREE) {
        mcl_local_forget(&b->conn->local, handle); /* never acquired in the table again */
    }
    return batch_added(b, index_p);
}

memsvc_status_t memsvc_batch_acquire(memsvc_batch_h b, memsvc_handle_t handle, size_t *index_p)
{
    return batch_handle_op(b, MSP_OP_ACQUIRE, handle, index_p);
}

memsvc_status_t memsvc_batch_release(memsvc_batch_h b, memsvc_handle_t handle, size_t *index_p)
{
    return batch_handle_op(b, MSP_OP_RELEASE, handle, index_p);
}

memsvc_status_t memsvc_batch_free(memsvc_batch_h b, memsvc_handle_t handle, size_t *index_p)
{
    return batch_handle_op(b, MSP_OP_FREE, handle, index_p);
}

memsvc_status_t memsvc_batch_hint(memsvc_batch_h b, const memsvc_hint_t *hint, size_t *index_p)
{
    memsvc_status_t status;
    msp_req_t      *m = batch_slot(b, &status);

    if (m == NULL) {
        return status;
    }
    status = mcl_hint_msg(hint, m);
    return (status == MEMSVC_OK) ? batch_added(b, index_p) : status;
}

/* Entries from i on fail with status before they were sent (pins taken in the table for them
 * are given back). */
static void batch_fail_from(memsvc_batch_h b, size_t i, memsvc_status_t status)
{
    for (; i < b->n; i++) {
        if (b->child[i] != NULL) {
            mcl_req_unlink_free(b->child[i]);
            b->child[i] = NULL;
        }
        if (b->local[i]) {
            mcl_local_drop(&b->conn->local, b->msgs[i].u.h.handle);
            b->local[i] = false;
        }
        b->status[i] = status;
    }
}

memsvc_status_t memsvc_batch_submit(memsvc_batch_h b, memsvc_req_h *req_p)
{
    memsvc_status_t status;
    memsvc_conn_h   conn;
    size_t          i, j, m = 0, bytes;

    if (b == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (b->req != NULL) {
        return MEMSVC_ERR_BUSY;
    }
    if (b->n == 0) {
        return MEMSVC_OK;
    }
    conn = b->conn;
    if (conn->broken) {
        return conn->broken_status;
    }
    memset(b->local, 0, b->n * sizeof(*b->local));
    /* ids in entry order, so that replies retire the one-way requests queued before; an
     * acquire of a tensor published in the pin table is pinned there and answered at once */
    for (i = 0; i < b->n; i++) {
        b->local[i] = (b->msgs[i].op == MSP_OP_ACQUIRE) &&
                      mcl_local_pin(&conn->local, b->msgs[i].u.h.handle, NULL, NULL);
        if (b->local[i]) {
            b->child[i]  = NULL;
            b->status[i] = MEMSVC_OK;
            b->handle[i] = 0;
            continue;
        }
        b->child[i] = mcl_req_new(conn, b->msgs[i].op);
        if (b->child[i] == NULL) {
            batch_fail_from(b, 0, MEMSVC_ERR_NO_RESOURCE);
            return MEMSVC_ERR_NO_RESOURCE;
        }
        b->msgs[i].id = b->child[i]->id;
        b->status[i]  = MEMSVC_INPROGRESS;
        b->handle[i]  = 0;
        b->out[m]     = b->msgs[i];
        b->outreq[m]  = b->child[i];
        m++;
    }
    b->req = mcl_req_new(conn, 0);
    if (b->req == NULL) {
        batch_fail_from(b, 0, MEMSVC_ERR_NO_RESOURCE);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->req->batch = b;
    /* as few messages as the limits allow: 64 requests, MSP_HEADER_MAX bytes */
    for (i = 0; i < m; i = j) {
        bytes = MSP_MSG_OVERHEAD;
        for (j = i; (j < m) && (j - i < MSP_BATCH_MAX); j++) {
            size_t r = msp_request_bound(&b->out[j]);

            if ((j > i) && (bytes + r > MSP_HEADER_MAX)) {
                break;
            }
            bytes += r;
        }
        status = mcl_send(conn, &b->outreq[i], &b->out[i], j - i, NULL, 0);
        if (status != MEMSVC_OK) {
            size_t k;

            for (k = 0; b->child[k] != b->outreq[i]; k++) {
            }
            batch_fail_from(b, k, status); /* from the first entry not sent */
            break;
        }
    }
    if (req_p != NULL) {
        *req_p = b->req;
        return MEMSVC_INPROGRESS;
    }
    return memsvc_wait(b->req, -1);
}

bool mcl_batch_done(struct memsvc_batch *b)
{
    size_t i;

    for (i = 0; i < b->n; i++) {
        if ((b->child[i] != NULL) && !mcl_req_finished(b->child[i])) {
            return false;
        }
    }
    return true;
}

memsvc_status_t mcl_batch_collect(struct memsvc_batch *b)
{
    memsvc_status_t first = MEMSVC_OK;
    size_t          i;

    for (i = 0; i < b->n; i++) {
        memsvc_req_h c = b->child[i];

        if (c != NULL) {
            b->status[i] = c->status;
            if ((c->op == MSP_OP_ALLOC) && (c->status == MEMSVC_OK)) {
                b->handle[i] = c->rep.u.alloc.handle;
            }
            if ((c->op == MSP_OP_ACQUIRE) && (c->status == MEMSVC_OK)) {
                /* published: the next acquire of it may be pinned in the table */
                mcl_local_published(&b->conn->local, b->msgs[i].u.h.handle);
            }
            mcl_req_unlink_free(c);
            b->child[i] = NULL;
        }
        if ((b->status[i] < 0) && (first == MEMSVC_OK)) {
            first = b->status[i];
        }
    }
    return first;
}

void mcl_batch_detach(struct memsvc_batch *b)
{
    size_t i;

    for (i = 0; i < b->n; i++) {
        if (b->child[i] != NULL) {
            /* on a broken connection the records stay on its list (memsvc_close frees them,
             * perhaps already has): do not touch them */
            if (!b->conn->broken) {
                mcl_req_abandon(b->child[i]);
            }
            b->child[i]  = NULL;
            b->status[i] = MEMSVC_ERR_CANCELED;
        }
    }
    if (b->req != NULL) {
        b->req->batch = NULL;
        b->req        = NULL;
    }
}

memsvc_status_t memsvc_batch_result(memsvc_batch_h b, size_t index, memsvc_handle_t *handle_p)
{
    if ((b == NULL) || (index >= b->n)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (b->req != NULL) {
        return MEMSVC_INPROGRESS;
    }
    if (handle_p != NULL) {
        *handle_p = b->handle[index];
    }
    return b->status[index];
}
