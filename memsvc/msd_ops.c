/* msd_ops.c - memsvcd's request handlers: validation, job isolation, engine calls, session cleanup
 */
#include "client/msp_ucx.h"
#include "memsvc/msd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSD_LOG_COMP "ops"
#include "memsvc/msd_log.h"

/* An operation that completes later: an engine callback or a rendezvous receive. */
typedef struct ops_pending {
    msd_inflight_t inflight; /* rendezvous receive: tracked on the session */
    msd_server_t  *srv;
    msd_session_t *s;
    uint64_t       id;
    uint32_t       op;
    eng_handle_t   handle;
    uint8_t       *buf;  /* WRITE: the received bytes (NULL: received into the tensor) */
    eng_loan_t     loan; /* WRITE into the tensor: its bytes, lent */
    uint64_t       offset, len;
    bool           pin;    /* ALLOC with MSP_ALLOC_PIN: the tensor comes back pinned */
    uint32_t       flags;  /* ACQUIRE: MSP_ACQ_* */
    uint32_t       region; /* ACQUIRE: where the pinned tensor is (MSP_REGION_NONE: nowhere) */
    uint64_t       size;   /* ACQUIRE: the tensor's size */
} ops_pending_t;

static ops_pending_t *pending_new(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                  eng_handle_t handle)
{
    ops_pending_t *p = calloc(1, sizeof(*p));

    if (p == NULL) {
        return NULL;
    }
    p->srv    = srv;
    p->s      = s;
    p->id     = req->id;
    p->op     = req->op;
    p->handle = handle;
    p->flags  = (req->op == MSP_OP_ACQUIRE) ? req->u.h.flags : 0;
    p->region = MSP_REGION_NONE;
    s->refs++;
    return p;
}

static void pending_reply(ops_pending_t *p, memsvc_status_t status, const char *msg)
{
    msp_rep_t rep = {.id = p->id, .op = p->op, .status = status};

    if (status < 0) {
        p->srv->errors++;
        p->s->errors++;
        snprintf(rep.msg, sizeof(rep.msg), "%s", (msg != NULL) ? msg : memsvc_strerror(status));
    }
    if (p->op == MSP_OP_ALLOC) {
        rep.u.alloc.handle = p->handle;
    }
    if (p->op == MSP_OP_ACQUIRE) {
        rep.u.acquire.region = p->region;
        rep.u.acquire.offset = p->offset;
        rep.u.acquire.size   = p->size;
    }
    msd_send_replies(p->srv, p->s, &rep, 1, NULL, 0);
}

static void pending_done(ops_pending_t *p)
{
    msd_session_put(p->srv, p->s);
    msd_buf_put(p->srv, p->buf, p->len);
    free(p);
}

/* ---- ownership ------------------------------------------------------------------------------ */

/* Forget a tensor that was freed: its owner entry and every session's pins. */
static void own_forget(msd_server_t *srv, eng_handle_t h)
{
    msd_session_t *s;
    msd_own_t     *own = msd_map_get(&srv->own, h, 0);

    if ((own != NULL) && (own->sid == 0) && (srv->orphans > 0)) {
        srv->orphans--;
    }
    if (own != NULL) {
        msd_auth_tensor_del(srv, own->job); /* the job may lose its owner */
    }
    msd_durable_forget(srv, h);
    msd_map_del(&srv->own, h, 0);
    for (s = srv->sessions; s != NULL; s = s->next) {
        msd_map_del(&srv->own, h, s->id);
    }
}

/* A pin that is not a write pin and asks for no location (ALLOC with MSP_ALLOC_PIN). */
static void pin_add(msd_server_t *srv, msd_session_t *s, eng_handle_t h)
{
    msp_rep_t where;

    (void)msd_acquired(srv, s, h, 0, MEMSVC_OK, &where); /* on failure: released, logged */
}

/* ---- engine callbacks ----------------------------------------------------------------------- */

static void ops_engine_cb(void *arg, eng_handle_t handle, memsvc_status_t status)
{
    ops_pending_t *p   = arg;
    msd_server_t  *srv = p->srv;

    if (p->op == MSP_OP_ACQUIRE) {
        if ((status == MEMSVC_OK) || (status == MEMSVC_RECOMPUTE)) {
            if (p->s->dead) {
                eng_release(srv->eng, p->handle); /* nobody left to release it */
            } else {
                msp_rep_t where = {.u.acquire.region = MSP_REGION_NONE};

                status    = msd_acquired(srv, p->s, p->handle, p->flags, status, &where);
                p->region = where.u.acquire.region;
                p->offset = where.u.acquire.offset;
                p->size   = where.u.acquire.size;
            }
        }
    } else if (p->op == MSP_OP_ALLOC) {
        if ((status == MEMSVC_OK) && p->pin) {
            if (p->s->dead) {
                eng_release(srv->eng, p->handle);
            } else {
                pin_add(srv, p->s, p->handle);
            }
        }
        if ((status < 0) && (status != MEMSVC_ERR_CANCELED)) {
            eng_tensor_info_t info;

            if (eng_info(srv->eng, p->handle, &info) == MEMSVC_OK) {
                eng_free(srv->eng, p->handle);
            }
            own_forget(srv, p->handle);
        }
    }
    pending_reply(p, status, NULL);
    pending_done(p);
}

/*
 * A WRITE's payload is in (received = true) or lost: end its loan (a lost one leaves the
 * tensor uncommitted) or copy its buffer into the tensor, then journal a durable tensor.
 * Returns the status to answer; msg gets its message.
 */
static memsvc_status_t ops_write_done(msd_server_t *srv, ops_pending_t *p, bool received,
                                      memsvc_status_t lost, char *msg, size_t msglen)
{
    memsvc_status_t status = received ? MEMSVC_OK : lost;

    if (p->loan.t != NULL) {
        memsvc_status_t lent = eng_lend_end(srv->eng, &p->loan, received);

        if (received && (lent == MEMSVC_ERR_NOT_FOUND)) {
            snprintf(msg, msglen, "tensor 0x%llx was freed during the write",
                     (unsigned long long)p->handle);
        }
        status = received ? lent : status;
    } else if (received) {
        status = eng_write(srv->eng, p->handle, p->offset, p->buf, p->len);
    }
    if (status == MEMSVC_OK) {
        status = msd_durable_commit(srv, p->handle, msg, msglen);
    }
    return status;
}

static void ops_write_recv_cb(void *request, ucs_status_t ustatus, size_t length, void *user_data)
{
    ops_pending_t  *p = user_data;
    msd_server_t   *srv = p->srv;
    memsvc_status_t status;
    char            msg[MSP_MSG_MAX + 1] = "";

    msd_lock(srv);
    msd_inflight_del(p->s, &p->inflight);
    if (ustatus != UCS_OK) {
        LOG_RL(1000, "session %llu: write payload lost: %s", (unsigned long long)p->s->id,
               ucs_status_string(ustatus));
    }
    status = ops_write_done(srv, p, ustatus == UCS_OK, MEMSVC_ERR_TRANSPORT, msg, sizeof(msg));
    pending_reply(p, status, ((status < 0) && (msg[0] != '\0')) ? msg : NULL);
    msd_out_bytes(srv, p->s, -(int64_t)p->len, true);
    pending_done(p);
    ucp_request_free(request);
    msd_unlock(srv);
}

/* The session's worker was destroyed with this receive in flight: its callback never runs. */
static void ops_write_recv_drop(msd_inflight_t *in)
{
    ops_pending_t *p = (ops_pending_t *)in; /* inflight is the first member */

    if (p->loan.t != NULL) {
        eng_lend_end(p->srv->eng, &p->loan, false); /* what arrived of it is not to be served */
    }
    msd_out_bytes(p->srv, p->s, -(int64_t)p->len, false);
    pending_done(p);
}

/* ---- validation ----------------------------------------------------------------------------- */

/*
 * The tensor exists and belongs to the session's job. Another job's tensor is answered exactly
 * as a handle nobody holds (same status, same words): a probe learns nothing of other jobs.
 */
static memsvc_status_t ops_check(msd_server_t *srv, msd_session_t *s, eng_handle_t h,
                                 eng_tensor_info_t *info, msp_rep_t *rep)
{
    if (s->control) {
        snprintf(rep->msg, sizeof(rep->msg), "a control session cannot use tensors");
        return MEMSVC_ERR_ACCESS;
    }
    if ((h == ENG_HANDLE_NULL) || (eng_info(srv->eng, h, info) != MEMSVC_OK) ||
        (info->job != s->job)) {
        snprintf(rep->msg, sizeof(rep->msg), "no tensor with handle 0x%llx in job %u",
                 (unsigned long long)h, s->job);
        return MEMSVC_ERR_NOT_FOUND;
    }
    return MEMSVC_OK;
}

/* What LOOKUP and LIST say of a tensor: pins held in clients' pin tables count as pins. */
static void info_to_wire(msd_server_t *srv, const eng_tensor_info_t *info, msp_tensor_t *t)
{
    memset(t, 0, sizeof(*t));
    t->handle = info->handle;
    snprintf(t->key, sizeof(t->key), "%s", (info->key != NULL) ? info->key : "");
    t->size         = info->size;
    t->kind         = info->kind;
    t->state        = info->state;
    t->device       = info->device;
    t->job          = info->job;
    t->rank         = info->rank;
    t->pins         = info->pins + msd_fast_pins(srv, info->handle);
    t->durable      = info->durable;
    t->recomputable = info->recomputable;
    t->tags         = info->tags;
}

/* ---- handlers ------------------------------------------------------------------------------- */

/* The binding both sides' proofs cover. */
static msp_auth_bind_t hello_bind(const msd_session_t *s)
{
    return (msp_auth_bind_t){.job     = s->job,
                             .rank    = s->rank,
                             .device  = s->device,
                             .flags   = s->hello_flags,
                             .session = s->id};
}

/* HELLO (or AUTH after it) accepted: the session is bound to its job. */
static void hello_bound(msd_server_t *srv, msd_session_t *s)
{
    char who[48];

    s->bound = true;
    msp_ep_transport(s->ep, s->transport, sizeof(s->transport));
    snprintf(srv->transport, sizeof(srv->transport), "%s", s->transport);
    LOG("session %llu: %s job %u rank %u device %u '%s' over %s, as %s%s%s",
        (unsigned long long)s->id, s->control ? "control" : "trainer", s->job, s->rank,
        s->device, s->name, s->transport, msd_auth_principal_name(s->principal, who, sizeof(who)),
        s->admin ? " (operator)" : "", s->authed ? ", secret proven" : "");
}

static memsvc_status_t op_hello(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                msp_rep_t *rep)
{
    const sim_desc_t *desc    = sim_node_desc(eng_node(srv->eng));
    bool              control = !!(req->u.hello.flags & MSP_HELLO_CONTROL);
    memsvc_status_t   status;

    if (s->bound || s->auth_wait) {
        snprintf(rep->msg, sizeof(rep->msg), "session already bound (HELLO twice)");
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((req->u.hello.version < MSP_VERSION_MIN) || (req->u.hello.version > MSP_VERSION)) {
        snprintf(rep->msg, sizeof(rep->msg),
                 "client speaks protocol version %u; this daemon speaks versions %u to %u",
                 req->u.hello.version, MSP_VERSION_MIN, MSP_VERSION);
        LOG_WARN_RL(1000, "session %llu refused: %s", (unsigned long long)s->id, rep->msg);
        return MEMSVC_ERR_VERSION;
    }
    if (control != (req->u.hello.job == MSP_JOB_CONTROL)) {
        snprintf(rep->msg, sizeof(rep->msg), "job 0 is reserved for control sessions");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (req->u.hello.device >= desc->num_npus) {
        snprintf(rep->msg, sizeof(rep->msg), "device %u out of range (node has %u)",
                 req->u.hello.device, desc->num_npus);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    s->control     = control;
    s->job         = req->u.hello.job;
    s->rank        = req->u.hello.rank;
    s->device      = req->u.hello.device;
    s->hello_flags = req->u.hello.flags;
    snprintf(s->name, sizeof(s->name), "%s", req->u.hello.name);
    rep->u.hello.version     = req->u.hello.version; /* the client's: both speak it */
    rep->u.hello.session     = s->id;
    rep->u.hello.num_devices = desc->num_npus;
    rep->u.hello.hbm_bytes   = desc->hbm_bytes;
    rep->u.hello.max_data    = MSP_DATA_MAX;
    if (!s->local && req->u.hello.has_nonce &&
        (srv->auth.has_secret || (srv->cfg.job_secrets != NULL))) {
        /* A tcp client holding a secret: challenge it; AUTH binds (or refuses). */
        msd_auth_session_key(srv, s->job, s->key, &s->job_secret);
        memcpy(s->nonce_c, req->u.hello.nonce, MSP_NONCE_BYTES);
        msp_auth_nonce(s->nonce_d);
        memcpy(rep->u.hello.nonce, s->nonce_d, MSP_NONCE_BYTES);
        rep->u.hello.auth = true;
        s->auth_wait      = true;
        msp_ep_transport(s->ep, rep->u.hello.transport, sizeof(rep->u.hello.transport));
        return MEMSVC_OK;
    }
    if (!s->local && srv->cfg.require_secret) {
        snprintf(rep->msg, sizeof(rep->msg),
                 "this daemon requires every tcp client to prove the secret (MEMSVC_SECRET_FILE)");
        LOG_WARN("session %llu: HELLO for job %u without a secret refused (--require-secret)",
                 (unsigned long long)s->id, s->job);
        return MEMSVC_ERR_AUTH;
    }
    status = msd_auth_bind(srv, s, s->job, control, rep->msg, sizeof(rep->msg));
    if (status != MEMSVC_OK) {
        return status;
    }
    hello_bound(srv, s);
    snprintf(rep->u.hello.transport, sizeof(rep->u.hello.transport), "%s", s->transport);
    return MEMSVC_OK;
}

/* The client's proof of the secret; the daemon proves itself back in the reply. */
static memsvc_status_t op_auth(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                               msp_rep_t *rep)
{
    msp_auth_bind_t bind = hello_bind(s);
    memsvc_status_t status;

    if (!s->auth_wait) {
        snprintf(rep->msg, sizeof(rep->msg), "AUTH without a challenge (HELLO with a nonce first)");
        return MEMSVC_ERR_PROTOCOL;
    }
    s->auth_wait = false;
    if (!msp_auth_check(s->key, MSP_ROLE_CLIENT, s->nonce_c, s->nonce_d, &bind,
                        req->u.auth.proof)) {
        msp_auth_wipe(s->key, sizeof(s->key));
        s->auth_failed = true;
        snprintf(rep->msg, sizeof(rep->msg), "wrong secret: authentication failed");
        LOG_WARN("session %llu: job %u: the client's proof of the secret is wrong: refused",
                 (unsigned long long)s->id, s->job);
        return MEMSVC_ERR_AUTH;
    }
    s->authed = true;
    status    = msd_auth_bind(srv, s, s->job, s->control, rep->msg, sizeof(rep->msg));
    if (status != MEMSVC_OK) {
        msp_auth_wipe(s->key, sizeof(s->key));
        return status;
    }
    msp_auth_proof(s->key, MSP_ROLE_DAEMON, s->nonce_c, s->nonce_d, &bind, rep->u.auth.proof);
    msp_auth_wipe(s->key, sizeof(s->key));
    hello_bound(srv, s);
    return MEMSVC_OK;
}

static memsvc_status_t op_alloc(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                msp_rep_t *rep)
{
    eng_tensor_desc_t desc = {0};
    memsvc_status_t   status;
    ops_pending_t    *p;
    eng_handle_t      h = ENG_HANDLE_NULL;
    msd_own_t        *own;

    if (s->control) {
        snprintf(rep->msg, sizeof(rep->msg), "a control session cannot allocate");
        return MEMSVC_ERR_ACCESS;
    }
    status = msd_jobs_check_alloc(&srv->jobs, s->job, req->u.alloc.size, rep->msg,
                                  sizeof(rep->msg));
    if (status != MEMSVC_OK) {
        return status;
    }
    p = pending_new(srv, s, req, ENG_HANDLE_NULL);
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    desc.key          = req->u.alloc.key;
    desc.size         = req->u.alloc.size;
    desc.kind         = (memsvc_kind_t)req->u.alloc.kind;
    desc.device       = s->device;
    desc.tags         = req->u.alloc.tags;
    desc.recomputable = req->u.alloc.recomputable;
    desc.recompute_ns = req->u.alloc.recompute_ns;
    desc.durable      = req->u.alloc.durable;
    desc.job          = s->job;
    desc.rank         = s->rank;
    p->pin            = req->u.alloc.pin;
    status = eng_alloc(srv->eng, &desc, p->pin ? ENG_ALLOC_PIN : 0, ops_engine_cb, p, &h);
    if ((status != MEMSVC_OK) && (status != MEMSVC_INPROGRESS)) {
        pending_done(p);
        snprintf(rep->msg, sizeof(rep->msg), "alloc '%.48s' of %llu bytes: %s", desc.key,
                 (unsigned long long)desc.size, memsvc_strerror(status));
        return status;
    }
    own = msd_map_put(&srv->own, h, 0);
    if (own == NULL) {
        /* Untracked tensors would leak when the session dies: refuse. */
        LOG_ERR("session %llu: out of memory tracking a tensor: alloc refused",
                (unsigned long long)s->id);
        if (status == MEMSVC_INPROGRESS) {
            p->handle = h;
            eng_free(srv->eng, h); /* the callback answers (CANCELED) */
            return MEMSVC_INPROGRESS;
        }
        eng_free(srv->eng, h);
        pending_done(p);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    own->sid  = s->id;
    own->rank = s->rank;
    own->job  = s->job;
    msd_auth_tensor_add(srv, s->job);
    if (status == MEMSVC_INPROGRESS) {
        p->handle = h;
        return MEMSVC_INPROGRESS;
    }
    if (p->pin) {
        pin_add(srv, s, h);
    }
    pending_done(p);
    rep->u.alloc.handle = h;
    return MEMSVC_OK;
}

static memsvc_status_t op_free(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                               msp_rep_t *rep)
{
    eng_tensor_info_t info;
    memsvc_status_t   status;

    status = ops_check(srv, s, req->u.h.handle, &info, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = eng_free(srv->eng, req->u.h.handle);
    if (status == MEMSVC_OK) {
        own_forget(srv, req->u.h.handle);
    }
    return status;
}

static memsvc_status_t op_acquire(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                  msp_rep_t *rep)
{
    eng_tensor_info_t info;
    memsvc_status_t   status;
    ops_pending_t    *p;

    status = ops_check(srv, s, req->u.h.handle, &info, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (req->u.h.flags & MSP_ACQ_IO) {
        uint64_t offset;

        /* A pin for a copy through the client's mapping: only where that works now. */
        if ((msd_local_locate(srv, s, &info, &offset) == MSP_REGION_NONE) ||
            (!info.valid && !(req->u.h.flags & MSP_ACQ_WRITE))) {
            return MEMSVC_OK; /* not pinned, region NONE: the client sends READ/WRITE */
        }
    }
    if ((info.state == MEMSVC_STATE_ON_HOST) || (info.state == MEMSVC_STATE_ON_DISK) ||
        (info.state == MEMSVC_STATE_ON_PEER) || (info.state == MEMSVC_STATE_DROPPED)) {
        status = msd_jobs_check_resident(&srv->jobs, s->job, info.size, rep->msg,
                                         sizeof(rep->msg));
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    if (info.state == MEMSVC_STATE_ON_DEVICE) {
        /* resident: pinned at once, nothing to wait for, no pending record */
        status = eng_acquire(srv->eng, req->u.h.handle, NULL, NULL);
        if ((status == MEMSVC_OK) || (status == MEMSVC_RECOMPUTE)) {
            status = msd_acquired(srv, s, req->u.h.handle, req->u.h.flags, status, rep);
        }
        return status;
    }
    p = pending_new(srv, s, req, req->u.h.handle);
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    status = eng_acquire(srv->eng, req->u.h.handle, ops_engine_cb, p);
    if (status == MEMSVC_INPROGRESS) {
        return status;
    }
    pending_done(p);
    if ((status == MEMSVC_OK) || (status == MEMSVC_RECOMPUTE)) {
        status = msd_acquired(srv, s, req->u.h.handle, req->u.h.flags, status, rep);
    }
    return status;
}

static memsvc_status_t op_release(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                  msp_rep_t *rep)
{
    eng_tensor_info_t info;
    memsvc_status_t   status;
    msd_own_t        *pin;

    status = ops_check(srv, s, req->u.h.handle, &info, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    pin = msd_map_get(&srv->own, req->u.h.handle, s->id);
    if ((pin == NULL) || (pin->pins == 0)) {
        snprintf(rep->msg, sizeof(rep->msg), "release without a matching acquire by this session");
        return MEMSVC_ERR_NOT_PINNED;
    }
    status = eng_release(srv->eng, req->u.h.handle);
    if (status != MEMSVC_OK) {
        return status;
    }
    pin->pins--;
    status = msd_released(srv, s, req->u.h.handle, pin, rep->msg, sizeof(rep->msg));
    if (pin->pins == 0) {
        msd_map_del(&srv->own, req->u.h.handle, s->id);
    }
    return status;
}

/* COMMIT: the session wrote in place under a pin it holds in its pin table (client/msl_pintab.h,
 * "writers"). A table pin exists only on a committed tensor, so nothing becomes valid here; a
 * durable tensor's bytes are journaled, as at the release of a write pin. */
static memsvc_status_t op_commit(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                 msp_rep_t *rep)
{
    eng_tensor_info_t info;
    memsvc_status_t   status;

    status = ops_check(srv, s, req->u.h.handle, &info, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (!msd_fast_holds(s, req->u.h.handle)) {
        snprintf(rep->msg, sizeof(rep->msg), "commit of tensor 0x%llx without a pin of it in "
                 "this session's pin table", (unsigned long long)req->u.h.handle);
        return MEMSVC_ERR_NOT_PINNED;
    }
    if (!info.valid) {
        snprintf(rep->msg, sizeof(rep->msg), "tensor 0x%llx became uncommitted while written in "
                 "place (another writer ended mid-write): write all of it again",
                 (unsigned long long)req->u.h.handle);
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    return msd_durable_commit(srv, req->u.h.handle, rep->msg, sizeof(rep->msg));
}

static memsvc_status_t op_io_check(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                   msp_rep_t *rep)
{
    eng_tensor_info_t info;
    memsvc_status_t   status;

    status = ops_check(srv, s, req->u.io.handle, &info, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    if ((req->u.io.offset > info.size) || (req->u.io.len > info.size - req->u.io.offset)) {
        snprintf(rep->msg, sizeof(rep->msg), "bytes [%llu, %llu) beyond the tensor's %llu",
                 (unsigned long long)req->u.io.offset,
                 (unsigned long long)(req->u.io.offset + req->u.io.len),
                 (unsigned long long)info.size);
        return MEMSVC_ERR_OUT_OF_RANGE;
    }
    return MEMSVC_OK;
}

static memsvc_status_t op_write(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                msp_rep_t *rep, void *data, size_t length,
                                const ucp_am_recv_param_t *param)
{
    ucp_request_param_t rp = {0};
    memsvc_status_t     status;
    ucs_status_ptr_t    sp;
    ops_pending_t      *p;

    status = op_io_check(srv, s, req, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (length != req->u.io.len) {
        snprintf(rep->msg, sizeof(rep->msg), "payload of %zu bytes, header says %llu", length,
                 (unsigned long long)req->u.io.len);
        return MEMSVC_ERR_PROTOCOL;
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        /* (an empty write has no payload pointer: give the engine a valid one) */
        status = eng_write(srv->eng, req->u.io.handle, req->u.io.offset,
                           (data != NULL) ? data : (void *)"", length);
        if (status == MEMSVC_OK) {
            status = msd_durable_commit(srv, req->u.io.handle, rep->msg, sizeof(rep->msg));
        }
        return status;
    }
    p = pending_new(srv, s, req, req->u.io.handle);
    if (p == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    p->offset = req->u.io.offset;
    p->len    = length;
    if ((length < MSD_LEND_MIN) ||
        (eng_lend(srv->eng, p->handle, p->offset, length, true, &p->loan) != MEMSVC_OK)) {
        p->buf = msd_buf_get(srv, length); /* (not on its device: copied in when received) */
    }
    if ((p->loan.t == NULL) && (p->buf == NULL)) {
        pending_done(p);
        snprintf(rep->msg, sizeof(rep->msg), "no memory to receive %zu bytes", length);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv_am   = ops_write_recv_cb;
    rp.user_data    = p;
    sp = ucp_am_recv_data_nbx(s->worker, data, (p->loan.t != NULL) ? p->loan.ptr : p->buf,
                              length, &rp);
    srv->rndv_taken = true; /* UCX owns the descriptor now, whatever came of it */
    if (UCS_PTR_IS_PTR(sp)) {
        p->inflight.drop = ops_write_recv_drop;
        msd_inflight_add(s, &p->inflight);
        msd_out_bytes(srv, s, (int64_t)length, false); /* until received */
        return MEMSVC_INPROGRESS;
    }
    status = ops_write_done(srv, p, !UCS_PTR_IS_ERR(sp),
                            UCS_PTR_IS_ERR(sp) ? msp_from_ucs(UCS_PTR_STATUS(sp)) : MEMSVC_OK,
                            rep->msg, sizeof(rep->msg));
    pending_done(p);
    return status;
}

static memsvc_status_t op_read(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                               msp_rep_t *rep, void **payload_p, eng_loan_t *loan)
{
    eng_tensor_info_t info;
    memsvc_status_t   status;
    void             *buf;

    status = op_io_check(srv, s, req, rep);
    if (status != MEMSVC_OK) {
        return status;
    }
    if ((eng_info(srv->eng, req->u.io.handle, &info) == MEMSVC_OK) && !info.valid) {
        snprintf(rep->msg, sizeof(rep->msg), "tensor 0x%llx is uncommitted (dropped, or its "
                 "writer ended mid-write): acquire it and write it first",
                 (unsigned long long)req->u.io.handle);
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    if ((req->u.io.len >= MSD_LEND_MIN) &&
        (eng_lend(srv->eng, req->u.io.handle, req->u.io.offset, req->u.io.len, false, loan) ==
         MEMSVC_OK)) {
        /* sent from where it is (the send ends the loan) */
        rep->plen  = req->u.io.len;
        *payload_p = loan->ptr;
        return MEMSVC_OK;
    }
    buf = msd_buf_get(srv, req->u.io.len);
    if (buf == NULL) {
        snprintf(rep->msg, sizeof(rep->msg), "no memory to send %llu bytes",
                 (unsigned long long)req->u.io.len);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    status = eng_read(srv->eng, req->u.io.handle, req->u.io.offset, buf, req->u.io.len);
    if (status != MEMSVC_OK) {
        msd_buf_put(srv, buf, req->u.io.len);
        return status;
    }
    rep->plen  = req->u.io.len;
    *payload_p = buf;
    return MEMSVC_OK;
}

static memsvc_status_t op_lookup(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                 msp_rep_t *rep)
{
    eng_tensor_info_t info;
    eng_handle_t      h;
    msd_own_t        *own;

    if (s->control) {
        snprintf(rep->msg, sizeof(rep->msg), "a control session cannot use tensors");
        return MEMSVC_ERR_ACCESS;
    }
    if ((eng_lookup(srv->eng, s->job, req->u.lookup.key, &h) != MEMSVC_OK) ||
        (eng_info(srv->eng, h, &info) != MEMSVC_OK)) {
        snprintf(rep->msg, sizeof(rep->msg), "no live tensor '%.64s' in job %u", req->u.lookup.key,
                 s->job);
        return MEMSVC_ERR_NOT_FOUND;
    }
    own = msd_map_get(&srv->own, h, 0);
    if ((own != NULL) && (own->sid == 0) && (own->rank == s->rank)) {
        /* Re-attach: a restarted rank takes its kept durable tensor back. */
        own->sid = s->id;
        if (srv->orphans > 0) {
            srv->orphans--;
        }
        LOG("session %llu: re-attached '%s' (job %u rank %u)", (unsigned long long)s->id,
            req->u.lookup.key, s->job, s->rank);
    }
    info_to_wire(srv, &info, &rep->u.lookup);
    return MEMSVC_OK;
}

static memsvc_status_t op_hint(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                               msp_rep_t *rep)
{
    eng_tensor_info_t info;
    eng_hint_t        hint = {0};
    memsvc_status_t   status;
    uint32_t          i;

    if (s->control) {
        snprintf(rep->msg, sizeof(rep->msg), "a control session cannot give hints");
        return MEMSVC_ERR_ACCESS;
    }
    for (i = 0; i < req->u.hint.num_handles; i++) {
        status = ops_check(srv, s, req->u.hint.handles[i], &info, rep);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    hint.type        = (memsvc_hint_type_t)req->u.hint.type;
    hint.job         = s->job;
    hint.rank        = s->rank;
    hint.step        = req->u.hint.step;
    hint.layer       = req->u.hint.layer;
    hint.microbatch  = req->u.hint.microbatch;
    hint.phase       = (memsvc_phase_t)req->u.hint.phase;
    hint.handles     = req->u.hint.handles;
    hint.num_handles = req->u.hint.num_handles;
    return eng_hint(srv->eng, &hint);
}

/* Hand the encoded body in srv->body over as the reply's payload. */
static memsvc_status_t body_payload(msp_rep_t *rep, void **payload_p, memsvc_status_t status,
                                    msd_server_t *srv)
{
    void *copy;

    if (status != MEMSVC_OK) {
        LOG("cannot encode a %s reply body: %s", msp_op_name(rep->op), memsvc_strerror(status));
        return status;
    }
    copy = malloc(srv->body.len);
    if (copy == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    memcpy(copy, srv->body.data, srv->body.len);
    rep->plen  = srv->body.len;
    *payload_p = copy;
    return MEMSVC_OK;
}

static bool stats_count_kind(void *arg, const eng_tensor_info_t *info)
{
    memsvc_stats_t *st = arg;

    if ((info->device < st->num_devices) && ((unsigned)info->kind < MEMSVC_KIND_COUNT)) {
        st->dev[info->device].tensors_by_kind[info->kind]++;
    }
    return true;
}

typedef struct stats_own_ctx {
    msd_server_t        *srv;
    const msd_session_t *s;
    memsvc_stats_t      *st;
} stats_own_ctx_t;

/* One tensor of a job the session may see, into the figures that count tensors. */
static bool stats_count_own(void *arg, const eng_tensor_info_t *info)
{
    stats_own_ctx_t    *c = arg;
    memsvc_dev_stats_t *o;

    if ((info->device >= c->st->num_devices) || !msd_auth_sees_job(c->srv, c->s, info->job)) {
        return true;
    }
    o = &c->st->dev[info->device];
    c->st->live_tensors++;
    if ((unsigned)info->state < MEMSVC_STATE_COUNT) {
        o->tensors_by_state[info->state]++;
        o->bytes_by_state[info->state] += info->size;
    }
    if ((unsigned)info->kind < MEMSVC_KIND_COUNT) {
        o->tensors_by_kind[info->kind]++;
        if ((info->state == MEMSVC_STATE_ON_DEVICE) || (info->state == MEMSVC_STATE_MOVING_OUT) ||
            (info->state == MEMSVC_STATE_MOVING_IN)) {
            o->resident_by_kind[info->kind] += info->size; /* holds a device block */
        }
    }
    if (info->pins > 0) {
        o->pinned_tensors++;
        o->pinned_bytes += info->size;
    }
    return true;
}

/*
 * STATS for a session that does not administer: the node's room (capacity, free, largest free
 * block, fragmentation, host and disk use) as for everyone, but what counts tensors, sessions
 * and events only of the jobs it owns; node-wide event counters (swaps, drops, stalls,
 * requests, errors) cannot be split by job and read 0. docs/security.md.
 */
static void stats_restrict(msd_server_t *srv, const msd_session_t *s, memsvc_stats_t *st)
{
    stats_own_ctx_t c = {.srv = srv, .s = s, .st = st};
    msd_session_t  *o;
    size_t          i;
    unsigned        d;

    st->live_tensors = 0;
    st->moves_in_flight = 0;
    st->sessions = 0;
    st->sessions_total = 0;
    st->orphans = 0;
    st->requests = 0;
    st->errors = 0;
    for (o = srv->sessions; o != NULL; o = o->next) {
        st->sessions += (!o->dead && o->bound && !o->control && msd_auth_sees_job(srv, s, o->job));
    }
    for (i = 0; i < srv->own.cap; i++) {
        const msd_map_slot_t *slot = &srv->own.slots[i];

        st->orphans += (slot->used && (slot->sid == 0) && (slot->v.sid == 0) &&
                        msd_auth_sees_job(srv, s, slot->v.job));
    }
    for (d = 0; d < st->num_devices; d++) {
        memsvc_dev_stats_t *dv = &st->dev[d];

        memset(dv->tensors_by_state, 0, sizeof(dv->tensors_by_state));
        memset(dv->bytes_by_state, 0, sizeof(dv->bytes_by_state));
        memset(dv->tensors_by_kind, 0, sizeof(dv->tensors_by_kind));
        memset(dv->resident_by_kind, 0, sizeof(dv->resident_by_kind));
        dv->pinned_tensors = dv->pinned_bytes = 0;
        dv->swap_out_bytes = dv->swap_outs = dv->swap_in_bytes = dv->swap_ins = 0;
        dv->spill_bytes = dv->drops = dv->recomputes = 0;
        dv->stall_ns = dv->stalls = dv->oom_events = dv->fragmented_events = 0;
    }
    eng_foreach(srv->eng, UINT32_MAX, stats_count_own, &c);
}

/* The limits part of STATS: counters, jobs holding anything, live sessions with their pins.
 * A session that does not administer sees its own jobs and their sessions only, and the
 * node-wide counters read 0 (docs/security.md). */
static void stats_limits(msd_server_t *srv, const msd_session_t *me, memsvc_stats_t *st)
{
    msd_session_t *s, *listed[MEMSVC_STATS_SESSIONS_MAX];
    uint64_t       now = msp_now_ns();
    size_t         i;
    unsigned       k;

    st->sessions_refused   = srv->refused;
    st->handshake_timeouts = srv->hs_timeouts;
    st->overloads          = srv->overloads;
    st->deferred           = srv->deferred;
    st->evictions          = srv->evictions;
    st->fast_acquires      = srv->fast_acquires;
    st->fast_published     = srv->fast_published;
    st->fast_revoked       = srv->fast_revoked;
    st->fast_held          = srv->fast_held;
    if (!me->admin) {
        st->sessions_refused = st->handshake_timeouts = st->overloads = 0;
        st->deferred = st->evictions = 0;
    }
    for (i = 0; (i < srv->jobs.cap) && (st->num_jobs < MEMSVC_STATS_JOBS_MAX); i++) {
        const msd_job_t    *j = &srv->jobs.slots[i];
        memsvc_job_stats_t *o;

        if (!j->used || ((msd_job_tensors(j) == 0) && (j->inflight == 0) && (j->refused == 0)) ||
            !msd_auth_sees_job(srv, me, j->job)) {
            continue;
        }
        o                 = &st->job[st->num_jobs++];
        o->job            = j->job;
        o->tensors        = msd_job_tensors(j);
        o->hbm_bytes      = msd_job_hbm(j);
        o->host_bytes     = msd_job_host(j);
        o->disk_bytes     = msd_job_disk(j);
        o->inflight_bytes = j->inflight;
        o->quota_refused  = j->refused;
    }
    /* The list is newest first: take the oldest (those most likely stuck). */
    for (s = srv->sessions; s != NULL; s = s->next) {
        if (s->dead || (!me->admin && (s != me) &&
                        (!s->bound || s->control || !msd_auth_sees_job(srv, me, s->job)))) {
            continue;
        }
        if (st->num_sessions < MEMSVC_STATS_SESSIONS_MAX) {
            st->num_sessions++;
        }
        memmove(&listed[1], &listed[0], (st->num_sessions - 1) * sizeof(listed[0]));
        listed[0] = s;
    }
    for (k = 0; k < st->num_sessions; k++) {
        memsvc_session_stats_t *o = &st->session[k];

        s                 = listed[k];
        o->id             = s->id;
        o->job            = s->job;
        o->rank           = s->rank;
        o->device         = s->device;
        o->pid            = (uint32_t)s->pid;
        o->flags          = (s->bound ? MEMSVC_SESSION_BOUND : 0) |
                            (s->control ? MEMSVC_SESSION_CONTROL : 0) |
                            (s->local ? MEMSVC_SESSION_LOCAL : 0);
        o->idle_ns        = now - s->last_ns;
        o->inflight_bytes = s->out_bytes;
        o->queued         = s->ndefer;
        o->requests       = s->requests;
        o->errors         = s->errors;
    }
    if (st->num_sessions == 0) {
        return;
    }
    /* Pin entries (sid != 0) are few next to owner entries; one pass over the table. */
    for (i = 0; i < srv->own.cap; i++) {
        const msd_map_slot_t *slot = &srv->own.slots[i];

        if (!slot->used || (slot->sid == 0) || (slot->v.pins == 0)) {
            continue;
        }
        for (k = 0; (k < st->num_sessions) && (st->session[k].id != slot->sid); k++) {
        }
        if (k == st->num_sessions) {
            continue;
        }
        st->session[k].pins += slot->v.pins;
        if ((slot->v.since > 0) && (now - slot->v.since > st->session[k].oldest_pin_ns)) {
            st->session[k].oldest_pin_ns = now - slot->v.since;
        }
    }
}

static memsvc_status_t op_stats(msd_server_t *srv, msd_session_t *s, msp_rep_t *rep,
                                void **payload_p)
{
    memsvc_stats_t *st   = &srv->stats;
    sim_node_t     *node = eng_node(srv->eng);
    eng_stats_t     es;
    eng_dev_stats_t ds;
    msd_session_t  *x;
    unsigned        d, k;

    msd_fast_fold(srv, true); /* local acquires counted up to now */
    memset(st, 0, sizeof(*st));
    snprintf(st->node, sizeof(st->node), "%s", sim_node_desc(node)->name);
    snprintf(st->mode, sizeof(st->mode), "%s", sim_mem_mode_name(sim_node_mode(node)));
    snprintf(st->policy, sizeof(st->policy), "%s", eng_policy_name(srv->eng));
    snprintf(st->transport, sizeof(st->transport), "%s", srv->transport);
    eng_stats(srv->eng, &es);
    st->uptime_ns       = msp_now_ns() - srv->start_ns;
    st->host_capacity   = es.host.capacity;
    st->host_used       = es.host.used;
    st->host_peak       = es.host.peak;
    st->disk_capacity   = es.host.disk_capacity;
    st->disk_used       = es.host.disk_used;
    st->live_tensors    = es.live_tensors;
    st->moves_in_flight = es.moves_in_flight;
    for (x = srv->sessions; x != NULL; x = x->next) {
        st->sessions += (!x->dead && x->bound) ? 1 : 0;
    }
    st->sessions_total = srv->sessions_total;
    st->orphans        = srv->orphans;
    st->requests       = srv->requests;
    st->errors         = srv->errors;
    st->num_devices = (es.num_devices < MEMSVC_MAX_DEVICES) ? es.num_devices : MEMSVC_MAX_DEVICES;
    for (d = 0; d < st->num_devices; d++) {
        memsvc_dev_stats_t *o = &st->dev[d];

        if (eng_dev_stats(srv->eng, d, &ds) != MEMSVC_OK) {
            continue;
        }
        o->capacity      = ds.alloc.capacity;
        o->allocated     = ds.alloc.allocated;
        o->reserved      = ds.alloc.reserved;
        o->free          = ds.alloc.free;
        o->largest_free  = ds.alloc.largest_free;
        o->fragmentation = ds.alloc.fragmentation;
        o->peak_reserved = ds.alloc.peak_reserved;
        for (k = 0; k < MEMSVC_STATE_COUNT; k++) {
            o->tensors_by_state[k] = ds.tensors_by_state[k];
            o->bytes_by_state[k]   = ds.bytes_by_state[k];
        }
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            o->resident_by_kind[k] = ds.resident_by_kind[k];
        }
        o->pinned_tensors    = ds.pinned_tensors;
        o->pinned_bytes      = ds.pinned_bytes;
        o->swap_out_bytes    = ds.swap_out_bytes;
        o->swap_outs         = ds.swap_outs;
        o->swap_in_bytes     = ds.swap_in_bytes;
        o->swap_ins          = ds.swap_ins;
        o->spill_bytes       = ds.spill_bytes;
        o->drops             = ds.drops;
        o->recomputes        = ds.recomputes;
        o->stall_ns          = ds.stall_ns;
        o->stalls            = ds.stalls;
        o->oom_events        = ds.oom_events;
        o->fragmented_events = ds.fragmented_events;
    }
    if (s->admin) {
        eng_foreach(srv->eng, UINT32_MAX, stats_count_kind, st);
    } else {
        stats_restrict(srv, s, st);
    }
    msd_durable_stats(srv, st);
    stats_limits(srv, s, st);
    return body_payload(rep, payload_p, msp_encode_stats(st, &srv->body), srv);
}

typedef struct list_ctx {
    msd_server_t        *srv;
    const msd_session_t *s; /* set: list only the jobs it may see */
    uint32_t             max, count;
} list_ctx_t;

static bool list_visit(void *arg, const eng_tensor_info_t *info)
{
    list_ctx_t *lc = arg;

    if ((lc->s != NULL) && !msd_auth_sees_job(lc->srv, lc->s, info->job)) {
        return true; /* another user's job: as if it did not exist */
    }
    if (lc->count == lc->max) {
        return false; /* the cursor stops on it: the next page starts with it */
    }
    info_to_wire(lc->srv, info, &lc->srv->list[lc->count++]);
    return true;
}

static memsvc_status_t op_list(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                               msp_rep_t *rep, void **payload_p)
{
    list_ctx_t lc     = {.srv = srv, .max = req->u.list.max};
    uint64_t   cursor = req->u.list.start;

    if (!s->control && (req->u.list.job != s->job)) {
        snprintf(rep->msg, sizeof(rep->msg), "a session may list only its own job (%u)", s->job);
        return MEMSVC_ERR_ACCESS;
    }
    if (s->control && !s->admin) {
        lc.s = s; /* an ordinary user's control session: its own jobs only */
    }
    if (lc.max > MSP_LIST_MAX) {
        lc.max = MSP_LIST_MAX;
    }
    /* `start` is a cursor into the registry (0: from the beginning), not an ordinal: each page
     * costs a bounded walk (MSD_LIST_VISIT positions at most), never a walk from the start. */
    eng_foreach_from(srv->eng, req->u.list.job, &cursor, MSD_LIST_VISIT, list_visit, &lc);
    rep->u.list.count = lc.count;
    rep->u.list.next  = (uint32_t)cursor;
    return body_payload(rep, payload_p, msp_encode_list(srv->list, lc.count, &srv->body), srv);
}

static memsvc_status_t op_evict(msd_server_t *srv, msd_session_t *s, const msp_req_t *req,
                                msp_rep_t *rep)
{
    msd_session_t *victim;

    if (!s->control) {
        snprintf(rep->msg, sizeof(rep->msg), "only a control session may evict sessions");
        return MEMSVC_ERR_ACCESS;
    }
    for (victim = srv->sessions; victim != NULL; victim = victim->next) {
        if ((victim->id == req->u.h.handle) && !victim->dead && !victim->evicted) {
            break;
        }
    }
    /* An ordinary user may evict the trainer sessions of the jobs it owns; any other session
     * is answered as one that does not exist (docs/security.md). */
    if ((victim != NULL) && !s->admin &&
        (!victim->bound || victim->control || !msd_auth_sees_job(srv, s, victim->job))) {
        victim = NULL;
    }
    if (victim == NULL) {
        snprintf(rep->msg, sizeof(rep->msg), "no live session %llu",
                 (unsigned long long)req->u.h.handle);
        return MEMSVC_ERR_NOT_FOUND;
    }
    if (victim == s) {
        snprintf(rep->msg, sizeof(rep->msg), "a session cannot evict itself");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    LOG("session %llu (job %u rank %u '%s', pid %d) evicted by control session %llu",
        (unsigned long long)victim->id, victim->job, victim->rank, victim->name,
        (int)victim->pid, (unsigned long long)s->id);
    srv->evictions++;
    msd_session_evict(srv, victim);
    return MEMSVC_OK;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

void msd_ops_handle(msd_server_t *srv, msd_session_t *s, size_t n, void *data, size_t length,
                    const ucp_am_recv_param_t *param)
{
    msp_rep_t *reps = srv->reps;
    size_t     nrep = 0, i;

    eng_policy_defer(srv->eng, true); /* resident acquires: answered before the policy runs */
    if ((length > 0) && ((n != 1) || (srv->reqs[0].op != MSP_OP_WRITE))) {
        /* Only a lone WRITE carries a payload; drop it (returning from the callback does). */
        if (srv->reqs[0].status == MEMSVC_OK) {
            srv->reqs[0].status = MEMSVC_ERR_PROTOCOL;
        }
    }
    for (i = 0; i < n; i++) {
        const msp_req_t *req     = &srv->reqs[i];
        msp_rep_t       *rep     = &reps[nrep];
        void            *payload = NULL;
        eng_loan_t       loan    = {0}; /* READ: payload is the tensor's bytes, lent */
        memsvc_status_t  status;
        uint64_t         t0      = msp_now_ns(); /* the request-duration histogram's start */

        memset(rep, 0, sizeof(*rep));
        rep->id                = req->id;
        rep->op                = req->op;
        rep->u.acquire.region  = MSP_REGION_NONE;
        if (req->status != MEMSVC_OK) {
            status = req->status;
            snprintf(rep->msg, sizeof(rep->msg), "malformed %s request: %s", msp_op_name(req->op),
                     memsvc_strerror(status));
            LOG_WARN_RL(1000, "session %llu (job %u rank %u): request id %llu refused: %s",
                        (unsigned long long)s->id, s->job, s->rank, (unsigned long long)req->id,
                        rep->msg);
        } else if (atomic_load(&srv->draining)) {
            status = MEMSVC_ERR_SHUTDOWN;
            snprintf(rep->msg, sizeof(rep->msg), "the daemon is shutting down");
        } else if (s->auth_failed) {
            status = MEMSVC_ERR_AUTH;
            snprintf(rep->msg, sizeof(rep->msg), "authentication failed on this connection");
        } else if (s->auth_wait && (req->op != MSP_OP_AUTH)) {
            status = MEMSVC_ERR_PROTOCOL;
            snprintf(rep->msg, sizeof(rep->msg), "authenticate (AUTH) first");
        } else if (!s->bound && (req->op != MSP_OP_HELLO) && (req->op != MSP_OP_AUTH)) {
            status = MEMSVC_ERR_PROTOCOL;
            snprintf(rep->msg, sizeof(rep->msg), "handshake (HELLO) first");
        } else {
            switch (req->op) {
            case MSP_OP_HELLO:
                status = op_hello(srv, s, req, rep);
                break;
            case MSP_OP_AUTH:
                status = op_auth(srv, s, req, rep);
                break;
            case MSP_OP_ALLOC:
                status = op_alloc(srv, s, req, rep);
                break;
            case MSP_OP_FREE:
                status = op_free(srv, s, req, rep);
                break;
            case MSP_OP_ACQUIRE:
                status = op_acquire(srv, s, req, rep);
                break;
            case MSP_OP_RELEASE:
                status = op_release(srv, s, req, rep);
                break;
            case MSP_OP_WRITE:
                status = op_write(srv, s, req, rep, data, length, param);
                break;
            case MSP_OP_READ:
                status = op_read(srv, s, req, rep, &payload, &loan);
                break;
            case MSP_OP_LOOKUP:
                status = op_lookup(srv, s, req, rep);
                break;
            case MSP_OP_HINT:
                status = op_hint(srv, s, req, rep);
                break;
            case MSP_OP_STATS:
                status = op_stats(srv, s, rep, &payload);
                break;
            case MSP_OP_LIST:
                status = op_list(srv, s, req, rep, &payload);
                break;
            case MSP_OP_PEERS:
                status = msd_peers_op(srv, req, rep, &payload);
                break;
            case MSP_OP_EVICT:
                status = op_evict(srv, s, req, rep);
                break;
            case MSP_OP_COMMIT:
                status = op_commit(srv, s, req, rep);
                break;
            case MSP_OP_PING:
                rep->u.ping.now_ns   = msp_now_ns();
                rep->u.ping.sessions = (uint32_t)srv->sessions_total;
                status               = MEMSVC_OK;
                break;
            default:
                status = MEMSVC_ERR_PROTOCOL;
                break;
            }
        }
        msd_metrics_request(srv, req->op, status, msp_now_ns() - t0);
        if (status == MEMSVC_INPROGRESS) {
            continue; /* answered by its callback */
        }
        if (req->oneway && (status >= 0)) {
            continue; /* one-way: answered only when it fails */
        }
        rep->status = status;
        if (status < 0) {
            if (rep->msg[0] == '\0') {
                snprintf(rep->msg, sizeof(rep->msg), "%s: %s", msp_op_name(req->op),
                         memsvc_strerror(status));
            }
            srv->errors++;
            s->errors++;
            free(payload);
            payload = NULL;
        }
        if (loan.t != NULL) {
            msd_send_lent(srv, s, rep, &loan, rep->plen); /* travels alone */
            continue;
        }
        if (payload != NULL) {
            msd_send_replies(srv, s, rep, 1, payload, rep->plen); /* travels alone */
            continue;
        }
        if (req->oneway) {
            /* A one-way request's error goes out before anything a later request of this
             * message causes (an acquire it completes), so that the client, which retires
             * one-way requests by the ids of later replies, sees the error first. */
            msd_send_replies(srv, s, rep, 1, NULL, 0);
            continue;
        }
        nrep++;
    }
    if (nrep > 0) {
        msd_send_replies(srv, s, reps, nrep, NULL, 0);
    }
    eng_policy_defer(srv->eng, false); /* now the policy hears of them */
}

/* One tensor owned by session sid (job, rank) that ended: handed to a live session of the same
 * job and rank (the process that replaced it) if durable, else kept for re-attach if durable,
 * else freed. Nothing if it changed hands (freed, re-attached) since. */
static void reclaim_one(msd_server_t *srv, eng_handle_t h, uint64_t sid, uint32_t job,
                        uint32_t rank)
{
    msd_own_t        *own = msd_map_get(&srv->own, h, 0);
    eng_tensor_info_t info;
    msd_session_t    *heir;

    if ((own == NULL) || (own->sid != sid)) {
        return;
    }
    if (eng_info(srv->eng, h, &info) != MEMSVC_OK) {
        own_forget(srv, h);
        return;
    }
    if (info.durable) {
        for (heir = srv->sessions; heir != NULL; heir = heir->next) {
            if ((heir->id != sid) && !heir->dead && heir->bound && !heir->control &&
                (heir->job == job) && (heir->rank == rank)) {
                own->sid = heir->id; /* the rank came back before its old session ended */
                srv->reclaim_kept++;
                return;
            }
        }
        if (srv->cfg.keep_durable_ns > 0) {
            own->sid      = 0;
            own->deadline = msp_now_ns() + srv->cfg.keep_durable_ns;
            srv->orphans++;
            if (own->deadline < srv->orphan_next) {
                srv->orphan_next = own->deadline;
            }
            srv->reclaim_kept++;
            return;
        }
    }
    eng_free(srv->eng, h);
    own_forget(srv, h);
    srv->reclaim_freed++;
}

/* Queue the tensors an ended session s owned for msd_ops_reclaim. */
static memsvc_status_t reclaim_add(msd_server_t *srv, const msd_session_t *s,
                                   const eng_handle_t *h, size_t n)
{
    size_t           left = srv->reclaim_n - srv->reclaim_head, i;
    msd_reclaim_t   *q;

    if (srv->reclaim_head > 0) { /* compact what is left to the front */
        memmove(srv->reclaim, srv->reclaim + srv->reclaim_head, left * sizeof(*q));
        srv->reclaim_head = 0;
        srv->reclaim_n    = left;
    }
    if (left + n > srv->reclaim_cap) {
        q = realloc(srv->reclaim, (left + n) * sizeof(*q));
        if (q == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        srv->reclaim     = q;
        srv->reclaim_cap = left + n;
    }
    for (i = 0; i < n; i++) {
        srv->reclaim[left + i] =
            (msd_reclaim_t){.handle = h[i], .sid = s->id, .job = s->job, .rank = s->rank};
    }
    srv->reclaim_n = left + n;
    return MEMSVC_OK;
}

size_t msd_ops_reclaim(msd_server_t *srv, size_t max)
{
    size_t done = 0;

    while ((done < max) && (srv->reclaim_head < srv->reclaim_n)) {
        const msd_reclaim_t *r = &srv->reclaim[srv->reclaim_head++];

        reclaim_one(srv, r->handle, r->sid, r->job, r->rank);
        done++;
    }
    if ((done > 0) && (srv->reclaim_head == srv->reclaim_n)) {
        LOG("ended sessions' tensors dealt with: %llu freed, %llu durable kept or handed over",
            (unsigned long long)srv->reclaim_freed, (unsigned long long)srv->reclaim_kept);
        srv->reclaim_head = srv->reclaim_n = 0;
        srv->reclaim_freed = srv->reclaim_kept = 0;
        if (srv->reclaim_cap > 65536) { /* a big teardown's queue is not kept */
            free(srv->reclaim);
            srv->reclaim     = NULL;
            srv->reclaim_cap = 0;
        }
    }
    return done;
}

/* ---- session end, orphans ------------------------------------------------------------------- */

void msd_ops_session_gone(msd_server_t *srv, msd_session_t *s)
{
    eng_handle_t   *pins = NULL, *owned = NULL;
    uint32_t       *counts = NULL;
    size_t          npins = 0, nowned = 0, i, cap = srv->own.count;
    uint64_t        released = 0, uncommitted = 0;
    msd_inflight_t *in;

    msd_auth_session_gone(srv, s); /* after this, its tensors alone keep the job owned */
    for (in = s->inflight; in != NULL; in = in->next) {
        ops_pending_t *p = (ops_pending_t *)in; /* inflight is the first member */

        if ((in->drop == ops_write_recv_drop) && (p->loan.t != NULL)) {
            /* Being received in place, maybe half: not to be served until the receive ends
             * whole (its loan ends after the worker's destruction, outside this lock). */
            eng_set_valid(srv->eng, p->handle, false);
        }
    }
    if (!s->bound || s->control || (cap == 0)) {
        return;
    }
    pins   = calloc(cap, sizeof(*pins));
    counts = calloc(cap, sizeof(*counts));
    owned  = calloc(cap, sizeof(*owned));
    if ((pins == NULL) || (counts == NULL) || (owned == NULL)) {
        LOG_ERR("session %llu: out of memory cleaning up", (unsigned long long)s->id);
        goto out;
    }
    for (i = 0; i < srv->own.cap; i++) {
        const msd_map_slot_t *slot = &srv->own.slots[i];

        if (!slot->used) {
            continue;
        }
        if (slot->sid == s->id) {
            if (slot->v.wpins > 0) {
                /* It may have been writing in place: never serve half-written bytes. */
                eng_set_valid(srv->eng, slot->handle, false);
                msd_fast_invalidate(srv, slot->handle); /* nobody pins it locally either */
                uncommitted++;
            }
            pins[npins]     = slot->handle;
            counts[npins++] = slot->v.pins;
        } else if ((slot->sid == 0) && (slot->v.sid == s->id)) {
            owned[nowned++] = slot->handle;
        }
    }
    for (i = 0; i < npins; i++) {
        while (counts[i]-- > 0) {
            if (eng_release(srv->eng, pins[i]) == MEMSVC_OK) {
                released++;
            }
        }
        msd_map_del(&srv->own, pins[i], s->id);
    }
    /* What it owned is freed, kept or handed over in slices by loop 0 (msd_ops_reclaim): a
     * session that owned a million tensors must not stop the daemon while they go. */
    if ((nowned > 0) && (reclaim_add(srv, s, owned, nowned) != MEMSVC_OK)) {
        LOG("session %llu: out of memory queueing %zu tensors: dealt with at once",
            (unsigned long long)s->id, nowned);
        for (i = 0; i < nowned; i++) {
            reclaim_one(srv, owned[i], s->id, s->job, s->rank);
        }
    }
    LOG("session %llu (job %u rank %u) ended: %llu pins released, %zu owned tensors to free or "
        "keep, %llu left uncommitted (pinned for writing)",
        (unsigned long long)s->id, s->job, s->rank, (unsigned long long)released, nowned,
        (unsigned long long)uncommitted);
out:
    free(pins);
    free(counts);
    free(owned);
}

void msd_ops_cancel_all(msd_server_t *srv)
{
    eng_handle_t *all;
    size_t        n = 0, i;

    all = calloc(srv->own.count + 1, sizeof(*all));
    if (all == NULL) {
        LOG("shutdown: out of memory listing the tensors to cancel");
        return;
    }
    for (i = 0; i < srv->own.cap; i++) {
        const msd_map_slot_t *slot = &srv->own.slots[i];

        if (slot->used && (slot->sid == 0)) {
            all[n++] = slot->handle;
        }
    }
    for (i = 0; i < n; i++) {
        eng_free(srv->eng, all[i]); /* waiters get CANCELED; their callbacks free them */
        own_forget(srv, all[i]);
    }
    if (n > 0) {
        LOG("shutdown: %zu tensors released from the engine", n);
    }
    free(all);
}

void msd_ops_expire_orphans(msd_server_t *srv, uint64_t now)
{
    eng_handle_t *expired;
    size_t        n    = 0, i;
    uint64_t      next = UINT64_MAX;

    expired = calloc(srv->orphans + 1, sizeof(*expired));
    if (expired == NULL) {
        return;
    }
    for (i = 0; i < srv->own.cap; i++) {
        const msd_map_slot_t *slot = &srv->own.slots[i];

        if (!slot->used || (slot->sid != 0) || (slot->v.sid != 0)) {
            continue;
        }
        if ((slot->v.deadline <= now) && (n < srv->orphans)) {
            expired[n++] = slot->handle;
        } else if (slot->v.deadline < next) {
            next = slot->v.deadline;
        }
    }
    for (i = 0; i < n; i++) {
        eng_free(srv->eng, expired[i]);
        own_forget(srv, expired[i]);
    }
    if (n > 0) {
        LOG("%zu kept durable tensors expired (not re-attached in time): freed", n);
    }
    srv->orphan_next = next;
    free(expired);
}
