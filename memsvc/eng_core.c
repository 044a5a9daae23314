/* eng_core.c - the engine: requests, the state machine in action, moves, room, accounting */
#include "memsvc/eng_internal.h"
#include "memsvc/mem_hint.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void eng_service_event(void *arg, sim_time_t when);
static void eng_move_event(void *arg, sim_time_t when);

static inline sim_time_t eng_now(const eng_t *eng)
{
    return sim_clock_now(eng->clock);
}

static inline eng_dev_t *eng_dev_of(eng_t *eng, const eng_tensor_t *t)
{
    return &eng->devs[t->pub.device];
}

/* ---- accounting helpers ------------------------------------------------------------------ */

static void eng_state_enter(eng_t *eng, eng_tensor_t *t, memsvc_state_t s)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    t->pub.state = (uint8_t)s;
    d->st.bytes_by_state[s] += t->pub.size;
    d->st.tensors_by_state[s]++;
    if (eng->usage_cb != NULL) {
        eng->usage_cb(eng->usage_arg, t->pub.job, s, 1, (int64_t)t->pub.size);
    }
}

static void eng_state_leave(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    d->st.bytes_by_state[t->pub.state] -= t->pub.size;
    d->st.tensors_by_state[t->pub.state]--;
    if (eng->usage_cb != NULL) {
        eng->usage_cb(eng->usage_arg, t->pub.job, (memsvc_state_t)t->pub.state, -1,
                      -(int64_t)t->pub.size);
    }
}

/* Apply a state-machine operation; MEMSVC_ERR_ILLEGAL_STATE leaves the tensor unchanged. */
static memsvc_status_t eng_apply(eng_t *eng, eng_tensor_t *t, eng_op_t op)
{
    memsvc_state_t  next;
    memsvc_status_t status = eng_transition((memsvc_state_t)t->pub.state, op, &next);

    if (status != MEMSVC_OK) {
        return status;
    }
    eng_state_leave(eng, t);
    eng_state_enter(eng, t, next);
    return MEMSVC_OK;
}

static memsvc_status_t eng_block_get(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t      *d = eng_dev_of(eng, t);
    uint64_t        offset;
    memsvc_status_t status;

    status = sim_alloc_alloc(d->sim->alloc, t->pub.size, &offset, &t->block);
    if (status != MEMSVC_OK) {
        return status;
    }
    d->resident += t->pub.size;
    d->st.resident_by_kind[t->pub.kind] += t->pub.size;
    if (d->st.resident_by_kind[t->pub.kind] > d->st.peak_by_kind[t->pub.kind]) {
        d->st.peak_by_kind[t->pub.kind] = d->st.resident_by_kind[t->pub.kind];
    }
    if (d->resident > d->st.peak_resident) {
        d->st.peak_resident = d->resident;
    }
    return MEMSVC_OK;
}

static void eng_block_put(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    sim_alloc_free(d->sim->alloc, t->block);
    t->block = NULL;
    d->resident -= t->pub.size;
    d->st.resident_by_kind[t->pub.kind] -= t->pub.size;
}

static void eng_host_put(eng_t *eng, eng_tensor_t *t)
{
    sim_host_buf_t hb = {.ptr = t->host_ptr, .size = t->pub.size};

    sim_host_free(eng->node, &hb);
    t->host_ptr = NULL;
    t->flags &= (uint8_t)~ENG_TF_HOSTBUF;
}

static sim_disk_buf_t eng_disk_buf(const eng_tensor_t *t)
{
    sim_disk_buf_t db = {.block  = t->disk_block,
                         .offset = sim_alloc_block_offset(t->disk_block),
                         .size   = t->pub.size};
    return db;
}

static void eng_disk_put(eng_t *eng, eng_tensor_t *t)
{
    sim_disk_buf_t db = eng_disk_buf(t);

    sim_disk_free(eng->node, &db);
    t->disk_block = NULL;
}

/* Bytes move to and from the peer tier for real (backed memory with far operations). */
static bool eng_far_real(const eng_t *eng)
{
    return (sim_node_mode(eng->node) == SIM_MEM_BACKED) && eng->has_far;
}

/* Is there a peer tier? (in backed memory only with someone to move its bytes) */
static bool eng_peer_tier(const eng_t *eng)
{
    return (sim_node_desc(eng->node)->peer_bytes > 0) &&
           ((sim_node_mode(eng->node) != SIM_MEM_BACKED) || eng->has_far);
}

static void eng_peer_put(eng_t *eng, eng_tensor_t *t)
{
    if (t->flags & ENG_TF_PEER) {
        sim_peer_free(eng->node, t->pub.size);
        if (eng_far_real(eng)) {
            eng->far.release(eng->far.arg, t->pub.handle);
        }
        t->flags &= (uint8_t)~(ENG_TF_PEER | ENG_TF_FAR | ENG_TF_LOST);
    }
}

/* Give back whatever room below the host pool t holds (disk or peer). */
static void eng_lower_put(eng_t *eng, eng_tensor_t *t)
{
    if (t->disk_block != NULL) {
        eng_disk_put(eng, t);
    }
    eng_peer_put(eng, t);
}

/*
 * Room below the host pool for t: the peer tier and the disk, the one with the faster link
 * first (the node description's nic and disk rates). *peer_p tells which it got.
 * MEMSVC_ERR_HOST_MEMORY when neither has room.
 */
static memsvc_status_t eng_lower_get(eng_t *eng, eng_tensor_t *t, bool *peer_p)
{
    const sim_desc_t *desc       = sim_node_desc(eng->node);
    bool              peer_first = desc->nic.bw > desc->disk.bw;
    sim_disk_buf_t    db;
    unsigned          k;

    for (k = 0; k < 2; k++) {
        bool peer = (k == 0) ? peer_first : !peer_first;

        if (peer) {
            if (eng_peer_tier(eng) && (sim_peer_alloc(eng->node, t->pub.size) == MEMSVC_OK)) {
                t->flags |= ENG_TF_PEER;
                *peer_p = true;
                return MEMSVC_OK;
            }
        } else if (sim_disk_alloc(eng->node, t->pub.size, &db) == MEMSVC_OK) {
            t->disk_block = db.block;
            *peer_p       = false;
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_HOST_MEMORY;
}

static bool eng_out_spills(const eng_tensor_t *t)
{
    return (t->out_kind == ENG_OUT_SPILL) || (t->out_kind == ENG_OUT_SPILL_PEER);
}

/* Where a swap-in that cannot go on leaves the tensor. */
static eng_op_t eng_abort_op(const eng_tensor_t *t)
{
    return (t->in_kind == ENG_IN_DISK)   ? ENG_OP_ABORT_TO_DISK
           : (t->in_kind == ENG_IN_PEER) ? ENG_OP_ABORT_TO_PEER
                                         : ENG_OP_ABORT_TO_HOST;
}

static void *eng_dev_ptr(eng_t *eng, const eng_tensor_t *t)
{
    return sim_device_ptr(eng_dev_of(eng, t)->sim, sim_alloc_block_offset(t->block));
}

static void eng_pin(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    if (t->flags & ENG_TF_ON_LRU) {
        eng_list_remove(&d->lru, t);
        t->flags &= (uint8_t)~ENG_TF_ON_LRU;
    }
    if (t->pub.pins++ == 0) {
        d->st.pinned_tensors++;
        d->st.pinned_bytes += t->pub.size;
    }
    t->pub.accesses++;
    t->pub.last_access = eng_now(eng);
}

/* Put an unpinned resident tensor at the most-recently-used end. */
static void eng_lru_touch(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    if (t->flags & ENG_TF_ON_LRU) {
        eng_list_remove(&d->lru, t);
    }
    eng_list_append(&d->lru, t);
    t->flags |= ENG_TF_ON_LRU;
    t->pub.last_access = eng_now(eng);
}

static void eng_lru_drop(eng_t *eng, eng_tensor_t *t)
{
    if (t->flags & ENG_TF_ON_LRU) {
        eng_list_remove(&eng_dev_of(eng, t)->lru, t);
        t->flags &= (uint8_t)~ENG_TF_ON_LRU;
    }
}

static void eng_kick(eng_t *eng, eng_dev_t *d)
{
    if (d->queue.head == NULL || d->service_pending) {
        return;
    }
    if (sim_clock_schedule(eng->clock, eng_now(eng), eng_service_event, d) == MEMSVC_OK) {
        d->service_pending = true;
    }
}

static memsvc_status_t eng_schedule_move(eng_t *eng, eng_tensor_t *t, sim_time_t end)
{
    eng_move_t     *m = malloc(sizeof(*m));
    memsvc_status_t status;

    if (m == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    if (++eng->next_move_id == 0) {
        eng->next_move_id = 1;
    }
    m->eng     = eng;
    m->handle  = t->pub.handle;
    m->move_id = eng->next_move_id;
    status     = sim_clock_schedule(eng->clock, end, eng_move_event, m);
    if (status != MEMSVC_OK) {
        free(m);
        return status;
    }
    m->prev = NULL;
    m->next = eng->moves;
    if (eng->moves != NULL) {
        eng->moves->prev = m;
    }
    eng->moves = m;
    t->move_id = m->move_id;
    eng->moves_in_flight++;
    return MEMSVC_OK;
}

/* ---- waiters ------------------------------------------------------------------------------ */

static memsvc_status_t eng_add_waiter(eng_t *eng, eng_tensor_t *t, eng_done_cb_t cb, void *arg,
                                      bool pin)
{
    eng_waiter_t *w = malloc(sizeof(*w));

    if (w == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    w->cb    = cb;
    w->arg   = arg;
    w->since = eng_now(eng);
    w->pin   = pin;
    w->next  = t->waiters;
    t->waiters = w;
    return MEMSVC_OK;
}

/*
 * Finish the waits on a tensor with `status`. Pins are taken for every waiter that asked
 * before any callback runs; callbacks run last and may free the tensor.
 */
static void eng_finish_waiters(eng_t *eng, eng_tensor_t *t, memsvc_status_t status)
{
    eng_dev_t    *d       = eng_dev_of(eng, t);
    eng_waiter_t *w       = t->waiters;
    eng_waiter_t *rev     = NULL;
    eng_handle_t  handle  = t->pub.handle;
    bool          success = (status == MEMSVC_OK || status == MEMSVC_RECOMPUTE);
    sim_time_t    now     = eng_now(eng);

    t->waiters = NULL;
    while (w != NULL) { /* restore arrival order */
        eng_waiter_t *next = w->next;

        w->next = rev;
        rev     = w;
        w       = next;
    }
    for (w = rev; w != NULL; w = w->next) {
        if (success && w->pin) {
            eng_pin(eng, t);
        }
        if (now > w->since) {
            d->st.stall_ns += now - w->since;
            d->st.stalls++;
        }
    }
    if (success && t->pub.pins == 0 && t->pub.state == MEMSVC_STATE_ON_DEVICE) {
        eng_lru_touch(eng, t);
    }
    while (rev != NULL) {
        eng_waiter_t *next = rev->next;

        if (rev->cb != NULL) {
            rev->cb(rev->arg, handle, status);
        }
        free(rev);
        rev = next;
    }
}

/* ---- policy calls ------------------------------------------------------------------------- */

static void eng_pol_notify(eng_t *eng, eng_tensor_t *t, pol_access_t a)
{
    eng_dl_saved_t saved;

    if (eng->pol->on_access != NULL) {
        eng_dl_enter(eng, &saved);
        eng->pol->on_access(eng->pol_state, &eng->pol_ctx, &t->pub, a);
        eng_dl_leave(eng, &saved);
    }
}

void eng_policy_flush(eng_t *eng)
{
    size_t i, n = eng->pol_ndeferred;

    eng->pol_ndeferred = 0; /* (a policy call below may come back here: nothing left) */
    for (i = 0; i < n; i++) {
        eng_tensor_t *t = eng_reg_get(eng, eng->pol_deferred[i]);

        if (t != NULL) {
            eng_pol_notify(eng, t, POL_ACCESS_ACQUIRE);
        }
    }
}

size_t eng_policy_pending(const eng_t *eng)
{
    return eng->pol_ndeferred;
}

void eng_policy_defer(eng_t *eng, bool on)
{
    if (!on) {
        eng_policy_flush(eng);
    }
    eng->pol_defer = on;
}

static void eng_pol_access(eng_t *eng, eng_tensor_t *t, pol_access_t a)
{
    eng_policy_flush(eng); /* the policy hears of accesses in the order they happened */
    eng_tl_record(eng, t, a);
    eng_pol_notify(eng, t, a);
}

/* An acquire of a resident tensor: the engine's bookkeeping now; the policy now, or (while
 * deferred) at the next eng_policy_flush, so that the answer does not wait for it. */
static void eng_pol_acquire_resident(eng_t *eng, eng_tensor_t *t)
{
    if (!eng->pol_defer || (eng->pol->on_access == NULL)) {
        eng_pol_access(eng, t, POL_ACCESS_ACQUIRE);
        return;
    }
    if ((eng->pol_ndeferred == eng->pol_cap_deferred)) {
        size_t        cap = eng->pol_cap_deferred ? 2 * eng->pol_cap_deferred : 64;
        eng_handle_t *p   = realloc(eng->pol_deferred, cap * sizeof(*p));

        if (p == NULL) {
            eng_pol_access(eng, t, POL_ACCESS_ACQUIRE); /* no room to defer: now */
            return;
        }
        eng->pol_deferred     = p;
        eng->pol_cap_deferred = cap;
    }
    eng_tl_record(eng, t, POL_ACCESS_ACQUIRE);
    eng->pol_deferred[eng->pol_ndeferred++] = t->pub.handle;
}

/* Free bytes plus bytes on their way out: what asking the policy can increase. */
static uint64_t eng_room_bytes(const eng_dev_t *d)
{
    return sim_alloc_free_bytes(d->sim->alloc) + d->outgoing;
}

/* Bytes the policy should move out so that `t` can fit, beyond what is free or on its way. */
static uint64_t eng_need(eng_t *eng, eng_dev_t *d, const eng_tensor_t *t)
{
    uint64_t have = eng_room_bytes(d);

    if (have < t->pub.size) {
        return t->pub.size - have;
    }
    if (d->outgoing == 0) {
        /* enough bytes, but fragmented: ask for more than the shortfall of the largest block */
        return t->pub.size - sim_alloc_largest_free(d->sim->alloc);
    }
    return 0; /* enough is already on its way out */
}

static void eng_ask_policy(eng_t *eng, eng_dev_t *d, const eng_tensor_t *t)
{
    uint64_t       need = eng_need(eng, d, t);
    eng_dl_saved_t saved;

    if (need > 0 && eng->pol->make_room != NULL) {
        eng_policy_flush(eng);
        eng_dl_enter(eng, &saved);
        eng->pol->make_room(eng->pol_state, &eng->pol_ctx, d->sim->id, need);
        eng_dl_leave(eng, &saved);
    }
}

/* ---- placement: moving_in tensors get their block --------------------------------------- */

/* t holds its block now: finish a new allocation or recompute, or start the transfer in. */
static void eng_placed(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t      *d = eng_dev_of(eng, t);
    sim_time_t      end;
    memsvc_status_t status;

    switch (t->in_kind) {
    case ENG_IN_NEW:
        eng_apply(eng, t, ENG_OP_PLACED);
        t->flags |= ENG_TF_VALID;
        eng_finish_waiters(eng, t, MEMSVC_OK);
        return;
    case ENG_IN_RECOMPUTE:
        eng_apply(eng, t, ENG_OP_PLACED);
        t->flags &= (uint8_t)~ENG_TF_VALID;
        d->st.recomputes++;
        d->st.recompute_ns += t->pub.recompute_ns;
        eng_finish_waiters(eng, t, MEMSVC_RECOMPUTE);
        return;
    case ENG_IN_DISK:
        end = sim_link_submit(sim_node_disk_link(eng->node), eng_now(eng), t->pub.size);
        end = sim_link_submit(&d->sim->h2d, end, t->pub.size);
        break;
    case ENG_IN_PEER:
        end = sim_link_submit(sim_node_peer_link(eng->node), eng_now(eng), t->pub.size);
        end = sim_link_submit(&d->sim->h2d, end, t->pub.size);
        break;
    default:
        end = sim_link_submit(&d->sim->h2d, eng_now(eng), t->pub.size);
        break;
    }
    t->flags |= ENG_TF_IN_XFER;
    status = eng_schedule_move(eng, t, end);
    if (status != MEMSVC_OK) {
        /* cannot even queue the event: give the room back and fail the waiters */
        t->flags &= (uint8_t)~ENG_TF_IN_XFER;
        eng_block_put(eng, t);
        eng_apply(eng, t, eng_abort_op(t));
        eng_finish_waiters(eng, t, status);
    }
}

static void eng_count_failure(eng_dev_t *d, memsvc_status_t status)
{
    if (status == MEMSVC_ERR_FRAGMENTED) {
        d->st.fragmented_events++;
    } else {
        d->st.oom_events++;
    }
}

static void eng_destroy_tensor(eng_t *eng, eng_tensor_t *t);
static void eng_put_tensor(eng_t *eng, eng_tensor_t *t);

/* A queued request cannot be served: revert the tensor and tell its waiters. */
static void eng_fail_request(eng_t *eng, eng_tensor_t *t, memsvc_status_t status)
{
    eng_count_failure(eng_dev_of(eng, t), status);
    switch (t->in_kind) {
    case ENG_IN_NEW: {
        eng_handle_t handle = t->pub.handle;

        eng_finish_waiters(eng, t, status);
        t = eng_reg_get(eng, handle); /* unless a callback freed it */
        if (t != NULL) {
            eng_destroy_tensor(eng, t);
        }
        return;
    }
    case ENG_IN_RECOMPUTE:
        eng_apply(eng, t, ENG_OP_ABORT_TO_DROPPED);
        break;
    case ENG_IN_DISK:
        eng_apply(eng, t, ENG_OP_ABORT_TO_DISK);
        break;
    case ENG_IN_PEER:
        eng_apply(eng, t, ENG_OP_ABORT_TO_PEER);
        break;
    default:
        eng_apply(eng, t, ENG_OP_ABORT_TO_HOST);
        break;
    }
    eng_finish_waiters(eng, t, status);
}

/*
 * Get t its block, asking the policy for more as long as it makes progress: a fragmented
 * device may need several rounds before the holes join. Returns MEMSVC_OK (block held) or the
 * allocator's last error (then either moves are on their way out, or nothing more can go).
 */
static memsvc_status_t eng_get_room(eng_t *eng, eng_dev_t *d, eng_tensor_t *t)
{
    memsvc_status_t status;
    uint64_t        before;

    for (;;) {
        status = eng_block_get(eng, t);
        if (status == MEMSVC_OK) {
            return MEMSVC_OK;
        }
        before = eng_room_bytes(d);
        eng_ask_policy(eng, d, t);
        if (eng_room_bytes(d) == before) {
            return status; /* the policy freed nothing more */
        }
    }
}

static memsvc_status_t eng_place_now(eng_t *eng, eng_dev_t *d, eng_tensor_t *t)
{
    memsvc_status_t status = eng_get_room(eng, d, t);

    if (status == MEMSVC_OK) {
        eng_placed(eng, t);
    }
    return status;
}

/*
 * A tensor in moving_in needs room. Place it at once when nothing waits ahead of it; else
 * queue it. Returns MEMSVC_OK (placed), MEMSVC_INPROGRESS (queued; moves are on their way),
 * or the allocation error when nothing can make room (the caller reverts the tensor).
 */
static memsvc_status_t eng_request_room(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t      *d = eng_dev_of(eng, t);
    memsvc_status_t status;

    if (d->queue.head == NULL) {
        status = eng_place_now(eng, d, t);
        if (status == MEMSVC_OK) {
            return MEMSVC_OK;
        }
        if (d->outgoing == 0) {
            eng_count_failure(d, status);
            return status;
        }
    }
    eng_list_append(&d->queue, t);
    t->flags |= ENG_TF_QUEUED;
    eng_kick(eng, d);
    return MEMSVC_INPROGRESS;
}

/* Serve the device's wait queue in order (clock event). */
static void eng_service(eng_t *eng, eng_dev_t *d)
{
    while (d->queue.head != NULL) {
        eng_tensor_t   *t      = d->queue.head;
        memsvc_status_t status = eng_get_room(eng, d, t);

        if (status == MEMSVC_OK) {
            eng_list_remove(&d->queue, t);
            t->flags &= (uint8_t)~ENG_TF_QUEUED;
            eng_placed(eng, t);
            continue;
        }
        if (d->outgoing > 0) {
            return; /* a move-out completion serves the queue again */
        }
        eng_list_remove(&d->queue, t);
        t->flags &= (uint8_t)~ENG_TF_QUEUED;
        eng_fail_request(eng, t, status);
    }
}

static void eng_service_event(void *arg, sim_time_t when)
{
    eng_dev_t *d = arg;

    d->service_pending = false;
    eng_service(d->eng, d);
}

/* Writes of at least this many bytes (eng_write, write loans) populate their destination's pages
 * with one madvise first, instead of a page fault per 4 KiB page during the copy. */
#define ENG_POPULATE_MIN (1ull << 20)

/* ---- moves -------------------------------------------------------------------------------- */

/* Something outside the engine uses the tensor's bytes where they are: a loan (eng_lend) or
 * what the guard answers for (memsvcd's pin tables). It stays on its device. */
static bool eng_held_outside(eng_t *eng, eng_tensor_t *t)
{
    return (t->loans > 0) ||
           ((eng->guard_cb != NULL) && !eng->guard_cb(eng->guard_arg, t->pub.handle, false));
}

static memsvc_status_t eng_start_swap_out(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t      *d = eng_dev_of(eng, t);
    memsvc_state_t  next;
    memsvc_status_t status;
    sim_host_buf_t  hb;
    sim_time_t      end;

    status = eng_transition((memsvc_state_t)t->pub.state, ENG_OP_SWAP_OUT, &next);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (t->pub.pins > 0) {
        return MEMSVC_ERR_PINNED;
    }
    if (eng_held_outside(eng, t)) {
        return MEMSVC_ERR_PINNED;
    }
    status = sim_host_alloc(eng->node, t->pub.size, &hb);
    if (status == MEMSVC_OK) {
        t->host_ptr = hb.ptr;
        t->flags |= ENG_TF_HOSTBUF;
        t->out_kind = ENG_OUT_HOST;
        end         = sim_link_submit(&d->sim->d2h, eng_now(eng), t->pub.size);
    } else {
        /* host pool full: straight through to the tier below rather than fail */
        bool peer;

        if (eng_lower_get(eng, t, &peer) != MEMSVC_OK) {
            return MEMSVC_ERR_HOST_MEMORY;
        }
        t->out_kind = peer ? ENG_OUT_PEER : ENG_OUT_DISK;
        end         = sim_link_submit(&d->sim->d2h, eng_now(eng), t->pub.size);
        end         = sim_link_submit(peer ? sim_node_peer_link(eng->node)
                                           : sim_node_disk_link(eng->node),
                                      end, t->pub.size);
    }
    status = eng_schedule_move(eng, t, end);
    if (status != MEMSVC_OK) {
        if (t->out_kind == ENG_OUT_HOST) {
            eng_host_put(eng, t);
        } else {
            eng_lower_put(eng, t);
        }
        return status;
    }
    eng_lru_drop(eng, t);
    eng_apply(eng, t, ENG_OP_SWAP_OUT);
    d->outgoing += t->pub.size;
    return MEMSVC_INPROGRESS;
}

static memsvc_status_t eng_start_spill(eng_t *eng, eng_tensor_t *t)
{
    memsvc_state_t  next;
    memsvc_status_t status;
    sim_time_t      end;
    bool            peer;

    status = eng_transition((memsvc_state_t)t->pub.state, ENG_OP_SPILL, &next);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = eng_lower_get(eng, t, &peer);
    if (status != MEMSVC_OK) {
        return status;
    }
    t->out_kind = peer ? ENG_OUT_SPILL_PEER : ENG_OUT_SPILL;
    end = sim_link_submit(peer ? sim_node_peer_link(eng->node) : sim_node_disk_link(eng->node),
                          eng_now(eng), t->pub.size);
    status = eng_schedule_move(eng, t, end);
    if (status != MEMSVC_OK) {
        eng_lower_put(eng, t);
        return status;
    }
    eng_apply(eng, t, ENG_OP_SPILL);
    return MEMSVC_INPROGRESS;
}

static memsvc_status_t eng_start_swap_in(eng_t *eng, eng_tensor_t *t)
{
    memsvc_state_t  from = (memsvc_state_t)t->pub.state;
    memsvc_status_t status;

    if (t->flags & ENG_TF_LOST) {
        return MEMSVC_ERR_IO; /* its only copy was on a peer that is gone */
    }
    t->in_kind = (from == MEMSVC_STATE_ON_DISK)   ? ENG_IN_DISK
                 : (from == MEMSVC_STATE_ON_PEER) ? ENG_IN_PEER
                                                  : ENG_IN_HOST;
    status     = eng_apply(eng, t, ENG_OP_SWAP_IN);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = eng_request_room(eng, t);
    if (status == MEMSVC_OK || status == MEMSVC_INPROGRESS) {
        return MEMSVC_INPROGRESS;
    }
    eng_apply(eng, t, eng_abort_op(t));
    return status;
}

/* Acquire of a tensor still moving out from its device: keep the device copy. */
static void eng_cancel_out(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    if (t->out_kind == ENG_OUT_HOST) {
        eng_host_put(eng, t);
    } else {
        eng_lower_put(eng, t); /* (a far write under way: its end finds the move over) */
    }
    d->outgoing -= t->pub.size;
    t->move_id = 0;
    eng->moves_in_flight--;
    eng_apply(eng, t, ENG_OP_CANCEL_OUT);
    /* a queued request may have been waiting for this move to free room: it will not */
    eng_kick(eng, d);
}

/* Acquired while spilling: bring it back. */
static void eng_spilled_wanted(eng_t *eng, eng_tensor_t *t)
{
    if (t->waiters != NULL) {
        memsvc_status_t status = eng_start_swap_in(eng, t);

        if (status != MEMSVC_INPROGRESS) {
            eng_finish_waiters(eng, t, status);
        }
    }
}

/*
 * The simulated time of a peer-tier move is over. With far operations (backed memory) the
 * bytes go now, as a second part of the same move: a new move id that eng_far_done must name.
 * false when there is nothing more to do (phantom memory).
 */
static bool eng_far_start(eng_t *eng, eng_tensor_t *t, bool out)
{
    if (!eng_far_real(eng)) {
        return false;
    }
    if (++eng->next_move_id == 0) {
        eng->next_move_id = 1;
    }
    t->move_id = eng->next_move_id;
    eng->moves_in_flight++;
    t->flags |= ENG_TF_FAR;
    if (out) {
        eng->far.write(eng->far.arg, t->pub.handle, t->move_id,
                       (t->out_kind == ENG_OUT_PEER) ? eng_dev_ptr(eng, t) : t->host_ptr,
                       t->pub.size);
    } else {
        eng->far.read(eng->far.arg, t->pub.handle, t->move_id, t->pub.size);
    }
    return true;
}

/* A move to the peer tier ended (the bytes are kept there, or status says why not). */
static void eng_peer_out_end(eng_t *eng, eng_tensor_t *t, memsvc_status_t status)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    t->flags &= (uint8_t)~ENG_TF_FAR;
    if (status != MEMSVC_OK) {
        /* the peer did not keep it: it stays where it was */
        eng_peer_put(eng, t);
        if (t->out_kind == ENG_OUT_PEER) {
            d->outgoing -= t->pub.size;
            eng_apply(eng, t, ENG_OP_CANCEL_OUT);
            if (t->pub.pins == 0) {
                eng_lru_touch(eng, t);
            }
        } else {
            eng_apply(eng, t, ENG_OP_OUT_DONE); /* back on host */
            eng_spilled_wanted(eng, t);
        }
        eng_kick(eng, d);
        return;
    }
    if (t->out_kind == ENG_OUT_PEER) {
        eng_block_put(eng, t);
        d->outgoing -= t->pub.size;
        d->st.swap_out_bytes += t->pub.size;
        d->st.swap_outs++;
    } else {
        eng_host_put(eng, t);
    }
    d->st.spill_bytes += t->pub.size;
    d->st.spills++;
    eng_apply(eng, t, ENG_OP_PEER_DONE);
    eng_spilled_wanted(eng, t);
    eng_kick(eng, d);
}

/* A swap-in from the peer tier ended (bytes: the tensor's, when status is OK). */
static void eng_peer_in_end(eng_t *eng, eng_tensor_t *t, memsvc_status_t status,
                            const void *bytes, uint64_t len)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    t->flags &= (uint8_t)~(ENG_TF_FAR | ENG_TF_IN_XFER);
    if ((status == MEMSVC_OK) && (bytes != NULL) && (len != t->pub.size)) {
        status = MEMSVC_ERR_IO;
    }
    if (status != MEMSVC_OK) {
        /* its only copy is gone with the peer: it can only be freed now */
        eng_peer_put(eng, t);
        t->flags |= ENG_TF_PEER | ENG_TF_LOST;
        sim_peer_alloc(eng->node, t->pub.size); /* counted on_peer until freed */
        eng_block_put(eng, t);
        eng_apply(eng, t, ENG_OP_ABORT_TO_PEER);
        eng_finish_waiters(eng, t, MEMSVC_ERR_IO);
        eng_kick(eng, d);
        return;
    }
    if (bytes != NULL) {
        memcpy(eng_dev_ptr(eng, t), bytes, t->pub.size);
    }
    eng_peer_put(eng, t);
    d->st.swap_in_bytes += t->pub.size;
    d->st.swap_ins++;
    eng_apply(eng, t, ENG_OP_PLACED);
    eng_finish_waiters(eng, t, MEMSVC_OK);
}

void eng_set_far_ops(eng_t *eng, const eng_far_ops_t *ops)
{
    eng->has_far = (ops != NULL);
    if (ops != NULL) {
        eng->far = *ops;
    }
}

void eng_far_done(eng_t *eng, eng_handle_t h, uint32_t move_id, memsvc_status_t status,
                  const void *bytes, uint64_t len)
{
    eng_tensor_t *t = eng_reg_get(eng, h);

    if ((t == NULL) || (move_id == 0) || (t->move_id != move_id) || !(t->flags & ENG_TF_FAR)) {
        return; /* canceled or freed meanwhile */
    }
    t->move_id = 0;
    eng->moves_in_flight--;
    if (t->pub.state == MEMSVC_STATE_MOVING_OUT) {
        eng_peer_out_end(eng, t, status);
    } else if (t->pub.state == MEMSVC_STATE_MOVING_IN) {
        eng_peer_in_end(eng, t, status, bytes, len);
    }
}

static void eng_out_done(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t     *d      = eng_dev_of(eng, t);
    bool           backed = sim_node_mode(eng->node) == SIM_MEM_BACKED;
    sim_disk_buf_t db;

    switch (t->out_kind) {
    case ENG_OUT_HOST:
        if (backed) {
            memcpy(t->host_ptr, eng_dev_ptr(eng, t), t->pub.size);
        }
        eng_block_put(eng, t);
        d->outgoing -= t->pub.size;
        d->st.swap_out_bytes += t->pub.size;
        d->st.swap_outs++;
        eng_apply(eng, t, ENG_OP_OUT_DONE);
        break;
    case ENG_OUT_DISK:
        db = eng_disk_buf(t);
        if (backed) {
            sim_disk_write(eng->node, &db, eng_dev_ptr(eng, t), t->pub.size);
        }
        eng_block_put(eng, t);
        d->outgoing -= t->pub.size;
        d->st.swap_out_bytes += t->pub.size;
        d->st.swap_outs++;
        d->st.spill_bytes += t->pub.size;
        d->st.spills++;
        eng_apply(eng, t, ENG_OP_SPILL_DONE);
        break;
    case ENG_OUT_PEER:
    case ENG_OUT_SPILL_PEER:
        if (eng_far_start(eng, t, true)) {
            return; /* the move ends when the bytes are kept (eng_far_done) */
        }
        eng_peer_out_end(eng, t, MEMSVC_OK);
        return;
    default: /* spill from host */
        db = eng_disk_buf(t);
        if (backed) {
            sim_disk_write(eng->node, &db, t->host_ptr, t->pub.size);
        }
        eng_host_put(eng, t);
        d->st.spill_bytes += t->pub.size;
        d->st.spills++;
        eng_apply(eng, t, ENG_OP_SPILL_DONE);
        eng_spilled_wanted(eng, t);
        break;
    }
    eng_kick(eng, d);
}

static void eng_in_done(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t     *d      = eng_dev_of(eng, t);
    bool           backed = sim_node_mode(eng->node) == SIM_MEM_BACKED;
    sim_disk_buf_t db;

    if (t->in_kind == ENG_IN_PEER) {
        if (!eng_far_start(eng, t, false)) {
            eng_peer_in_end(eng, t, MEMSVC_OK, NULL, 0);
        }
        return;
    }
    if (t->in_kind == ENG_IN_DISK) {
        db = eng_disk_buf(t);
        if (backed) {
            sim_disk_read(eng->node, &db, eng_dev_ptr(eng, t), t->pub.size);
        }
        eng_disk_put(eng, t);
    } else {
        if (backed) {
            memcpy(eng_dev_ptr(eng, t), t->host_ptr, t->pub.size);
        }
        eng_host_put(eng, t);
    }
    t->flags &= (uint8_t)~ENG_TF_IN_XFER;
    d->st.swap_in_bytes += t->pub.size;
    d->st.swap_ins++;
    eng_apply(eng, t, ENG_OP_PLACED);
    eng_finish_waiters(eng, t, MEMSVC_OK);
}

static void eng_move_event(void *arg, sim_time_t when)
{
    eng_move_t   *m   = arg;
    eng_t        *eng = m->eng;
    eng_tensor_t *t   = eng_reg_get(eng, m->handle);

    if (t != NULL && t->move_id == m->move_id) {
        t->move_id = 0;
        eng->moves_in_flight--;
        if (t->pub.state == MEMSVC_STATE_MOVING_OUT) {
            eng_out_done(eng, t);
        } else if (t->pub.state == MEMSVC_STATE_MOVING_IN) {
            eng_in_done(eng, t);
        }
    }
    if (m->prev != NULL) {
        m->prev->next = m->next;
    } else {
        eng->moves = m->next;
    }
    if (m->next != NULL) {
        m->next->prev = m->prev;
    }
    free(m);
}

/* ---- creation ----------------------------------------------------------------------------- */

memsvc_status_t eng_create(const eng_params_t *params, eng_t **eng_p, char *err, size_t errlen)
{
    const char     *pol_params;
    memsvc_status_t status;
    eng_t          *eng;
    unsigned        i;
    char            dummy[1];

    if (err == NULL) {
        err    = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    if (params == NULL || params->desc == NULL) {
        snprintf(err, errlen, "engine: no node description");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    eng = calloc(1, sizeof(*eng));
    if (eng == NULL) {
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err;
    }
    snprintf(eng->pol_spec, sizeof(eng->pol_spec), "%s",
             params->policy != NULL ? params->policy : "lru");
    status = pol_lookup_spec(eng->pol_spec, &eng->pol, &pol_params);
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "unknown policy '%s'", eng->pol_spec);
        goto err_free_eng;
    }
    status = eng->pol->create(pol_params, &eng->pol_state, err, errlen);
    if (status != MEMSVC_OK) {
        goto err_free_eng;
    }
    eng->pol_ctx.eng = eng;
    eng_tl_init(eng, eng->pol->wants_timeline);

    status = sim_clock_create(params->clock, &eng->clock);
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "cannot create the clock");
        goto err_destroy_policy;
    }
    status = sim_node_create(params->desc, params->mode, eng->clock, &eng->node);
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "cannot create the %s node '%s': %s", sim_mem_mode_name(params->mode),
                 params->desc->name, memsvc_strerror(status));
        goto err_destroy_clock;
    }
    eng->num_devices = sim_node_num_devices(eng->node);
    eng->devs        = calloc(eng->num_devices, sizeof(*eng->devs));
    if (eng->devs == NULL) {
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_destroy_node;
    }
    for (i = 0; i < eng->num_devices; i++) {
        eng->devs[i].sim = sim_node_device(eng->node, i);
        eng->devs[i].eng = eng;
    }
    status = eng_reg_init(eng);
    if (status != MEMSVC_OK) {
        goto err_free_devs;
    }
    *eng_p = eng;
    return MEMSVC_OK;

err_free_devs:
    free(eng->devs);
err_destroy_node:
    sim_node_destroy(eng->node);
err_destroy_clock:
    sim_clock_destroy(eng->clock);
err_destroy_policy:
    eng->pol->destroy(eng->pol_state);
err_free_eng:
    free(eng);
err:
    if (err[0] == '\0') {
        snprintf(err, errlen, "engine: %s", memsvc_strerror(status));
    }
    return status;
}

/* eng_destroy's end of a tensor: its space back to the allocators, no accounting. */
static void eng_teardown_tensor(eng_t *eng, eng_tensor_t *t)
{
    if (t->block != NULL) {
        sim_alloc_free(eng_dev_of(eng, t)->sim->alloc, t->block);
    }
    if (t->flags & ENG_TF_HOSTBUF) {
        eng_host_put(eng, t);
    }
    eng_lower_put(eng, t); /* (has_far is off: the daemon is gone) */
    free(t);
}

void eng_destroy(eng_t *eng)
{
    eng_move_t *m;
    uint32_t    i;

    if (eng == NULL) {
        return;
    }
    eng->has_far = false; /* whoever moved the peer tier's bytes is gone */
    for (i = 0; i < eng->num_devices; i++) {
        eng->devs[i].queue.head = eng->devs[i].queue.tail = NULL;
    }
    for (i = 0; i < eng->num_slots; i++) {
        eng_tensor_t *t = eng_reg_slot(eng, i);
        eng_waiter_t *w;

        if (t == NULL) {
            continue;
        }
        while ((w = t->waiters) != NULL) {
            t->waiters = w->next;
            free(w);
        }
        eng_teardown_tensor(eng, t);
    }
    while (eng->lent_freed.head != NULL) { /* (loans the daemon never ended: it is gone) */
        eng_tensor_t *t = eng->lent_freed.head;

        eng_list_remove(&eng->lent_freed, t);
        eng_teardown_tensor(eng, t);
    }
    /* pending events are dropped with the clock; their records are freed here */
    while ((m = eng->moves) != NULL) {
        eng->moves = m->next;
        free(m);
    }
    eng_reg_cleanup(eng);
    free(eng->devs);
    sim_node_destroy(eng->node);
    sim_clock_destroy(eng->clock);
    eng->pol->destroy(eng->pol_state);
    free(eng->pol_deferred);
    eng_tl_cleanup(eng);
    eng_dl_cleanup(eng);
    free(eng);
}

sim_node_t *eng_node(eng_t *eng)
{
    return eng->node;
}

sim_clock_t *eng_clock(eng_t *eng)
{
    return eng->clock;
}

const char *eng_policy_name(const eng_t *eng)
{
    return eng->pol_spec;
}

/* ---- requests ----------------------------------------------------------------------------- */

static bool eng_tag_ok(int32_t v)
{
    return v >= MEMSVC_TAG_NONE && v <= INT16_MAX;
}

static memsvc_status_t eng_check_desc(const eng_t *eng, const eng_tensor_desc_t *desc)
{
    size_t keylen;

    if (desc == NULL || desc->key == NULL || desc->size == 0 ||
        (unsigned)desc->kind >= MEMSVC_KIND_COUNT || desc->device >= eng->num_devices) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    keylen = strnlen(desc->key, MEMSVC_KEY_MAX + 1);
    if (keylen == 0 || keylen > MEMSVC_KEY_MAX) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!eng_tag_ok(desc->tags.layer) || !eng_tag_ok(desc->tags.microbatch) ||
        !eng_tag_ok(desc->tags.expert) || !eng_tag_ok(desc->tags.stage) ||
        desc->tags.step < MEMSVC_TAG_NONE) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (desc->size > sim_node_desc(eng->node)->hbm_bytes) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    return MEMSVC_OK;
}

memsvc_status_t eng_alloc(eng_t *eng, const eng_tensor_desc_t *desc, unsigned flags,
                          eng_done_cb_t cb, void *arg, eng_handle_t *handle_p)
{
    memsvc_status_t status;
    eng_tensor_t   *t;
    size_t          keylen;
    uint32_t        hash;

    status = eng_check_desc(eng, desc);
    if (status != MEMSVC_OK) {
        return status;
    }
    keylen = strlen(desc->key);
    hash   = eng_key_hash(desc->job, desc->key, keylen);
    if (eng_reg_find_hashed(eng, desc->job, desc->key, hash) != NULL) {
        return MEMSVC_ERR_EXISTS;
    }
    t = malloc(ENG_TENSOR_BYTES(keylen));
    if (t == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    memset(t, 0, offsetof(eng_tensor_t, key));
    memcpy(t->key, desc->key, keylen + 1);
    t->hash             = hash;
    t->pub.size         = desc->size;
    t->pub.kind         = (uint8_t)desc->kind;
    t->pub.device       = (uint16_t)desc->device;
    t->pub.tags.layer      = (int16_t)desc->tags.layer;
    t->pub.tags.microbatch = (int16_t)desc->tags.microbatch;
    t->pub.tags.expert     = (int16_t)desc->tags.expert;
    t->pub.tags.stage      = (int16_t)desc->tags.stage;
    t->pub.tags.step       = desc->tags.step;
    t->pub.recomputable = desc->recomputable && !desc->durable;
    t->pub.recompute_ns = desc->recompute_ns;
    t->pub.durable      = desc->durable;
    t->pub.job          = desc->job;
    t->pub.last_access  = eng_now(eng);
    t->rank             = desc->rank;
    t->in_kind          = ENG_IN_NEW;

    status = eng_reg_insert(eng, t);
    if (status != MEMSVC_OK) {
        free(t);
        return status;
    }
    eng_state_enter(eng, t, MEMSVC_STATE_MOVING_IN);
    eng_pol_access(eng, t, POL_ACCESS_ALLOC);

    status = eng_request_room(eng, t);
    if (status == MEMSVC_OK) {
        /* placed at once: eng_placed found no waiters */
        if (flags & ENG_ALLOC_PIN) {
            eng_pin(eng, t);
        } else {
            eng_lru_touch(eng, t);
        }
        *handle_p = t->pub.handle;
        return MEMSVC_OK;
    }
    if (status == MEMSVC_INPROGRESS) {
        status = eng_add_waiter(eng, t, cb, arg, (flags & ENG_ALLOC_PIN) != 0);
        if (status == MEMSVC_OK) {
            *handle_p = t->pub.handle;
            return MEMSVC_INPROGRESS;
        }
    }
    eng_destroy_tensor(eng, t);
    return status;
}

memsvc_status_t eng_acquire(eng_t *eng, eng_handle_t handle, eng_done_cb_t cb, void *arg)
{
    eng_tensor_t   *t = eng_reg_get(eng, handle);
    memsvc_status_t status;

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    switch (t->pub.state) {
    case MEMSVC_STATE_ON_DEVICE:
        eng_pin(eng, t);
        eng_pol_acquire_resident(eng, t);
        return MEMSVC_OK;
    case MEMSVC_STATE_MOVING_OUT:
        if (!eng_out_spills(t)) {
            eng_cancel_out(eng, t);
            eng_pin(eng, t);
            eng_pol_access(eng, t, POL_ACCESS_ACQUIRE);
            return MEMSVC_OK;
        }
        status = eng_add_waiter(eng, t, cb, arg, true); /* swapped in when the spill ends */
        break;
    case MEMSVC_STATE_MOVING_IN:
        status = eng_add_waiter(eng, t, cb, arg, true);
        break;
    case MEMSVC_STATE_ON_HOST:
    case MEMSVC_STATE_ON_DISK:
    case MEMSVC_STATE_ON_PEER:
        status = eng_start_swap_in(eng, t);
        if (status != MEMSVC_INPROGRESS) {
            return status;
        }
        status = eng_add_waiter(eng, t, cb, arg, true);
        break;
    case MEMSVC_STATE_DROPPED:
        t->in_kind = ENG_IN_RECOMPUTE;
        eng_apply(eng, t, ENG_OP_RECOMPUTE_WAIT);
        status = eng_request_room(eng, t);
        if (status == MEMSVC_OK) {
            eng_pin(eng, t);
            eng_pol_access(eng, t, POL_ACCESS_ACQUIRE);
            return MEMSVC_RECOMPUTE;
        }
        if (status != MEMSVC_INPROGRESS) {
            eng_apply(eng, t, ENG_OP_ABORT_TO_DROPPED);
            return status;
        }
        status = eng_add_waiter(eng, t, cb, arg, true);
        break;
    default:
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    if (status != MEMSVC_OK) {
        return status;
    }
    eng_pol_access(eng, t, POL_ACCESS_ACQUIRE);
    return MEMSVC_INPROGRESS;
}

memsvc_status_t eng_release(eng_t *eng, eng_handle_t handle)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);
    eng_dev_t    *d;

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    if (t->pub.pins == 0) {
        return MEMSVC_ERR_NOT_PINNED;
    }
    d = eng_dev_of(eng, t);
    if (--t->pub.pins == 0) {
        d->st.pinned_tensors--;
        d->st.pinned_bytes -= t->pub.size;
        if (t->pub.state == MEMSVC_STATE_ON_DEVICE) {
            eng_lru_touch(eng, t);
        }
    }
    t->pub.last_access = eng_now(eng);
    eng_pol_access(eng, t, POL_ACCESS_RELEASE);
    return MEMSVC_OK;
}

/* Return every resource a tensor holds and remove it from the registry. A lent tensor
 * (eng_lend) leaves the registry now and keeps its space until its last loan ends. */
static void eng_destroy_tensor(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    if (t->flags & ENG_TF_QUEUED) {
        eng_list_remove(&d->queue, t);
        t->flags &= (uint8_t)~ENG_TF_QUEUED;
    }
    eng_lru_drop(eng, t);
    eng_reg_remove(eng, t);
    if (t->loans > 0) {
        eng_list_append(&eng->lent_freed, t);
        return;
    }
    eng_put_tensor(eng, t);
}

/* The second half of eng_destroy_tensor: the tensor is out of the registry and its lists. */
static void eng_put_tensor(eng_t *eng, eng_tensor_t *t)
{
    eng_dev_t *d = eng_dev_of(eng, t);

    if (t->pub.state == MEMSVC_STATE_MOVING_OUT && !eng_out_spills(t)) {
        d->outgoing -= t->pub.size;
    }
    if (t->move_id != 0) {
        eng->moves_in_flight--;
    }
    if (t->block != NULL) {
        eng_block_put(eng, t);
    }
    if (t->flags & ENG_TF_HOSTBUF) {
        eng_host_put(eng, t);
    }
    eng_lower_put(eng, t);
    if (t->pub.pins > 0) {
        d->st.pinned_tensors--;
        d->st.pinned_bytes -= t->pub.size;
    }
    eng_state_leave(eng, t);
    free(t);
    eng_kick(eng, d);
}

memsvc_status_t eng_free(eng_t *eng, eng_handle_t handle)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    if (eng->guard_cb != NULL) {
        eng->guard_cb(eng->guard_arg, handle, true);
    }
    eng_pol_access(eng, t, POL_ACCESS_FREE);
    if (t->waiters != NULL) {
        eng_waiter_t *w = t->waiters;

        t->waiters = NULL;
        while (w != NULL) {
            eng_waiter_t *next = w->next;

            if (w->cb != NULL) {
                w->cb(w->arg, handle, MEMSVC_ERR_CANCELED);
            }
            free(w);
            w = next;
        }
        t = eng_reg_get(eng, handle); /* a callback may have freed it already */
        if (t == NULL) {
            return MEMSVC_OK;
        }
    }
    eng_destroy_tensor(eng, t);
    return MEMSVC_OK;
}

memsvc_status_t eng_swap_out(eng_t *eng, eng_handle_t handle)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    return (t == NULL) ? MEMSVC_ERR_NOT_FOUND : eng_start_swap_out(eng, t);
}

static memsvc_status_t eng_do_drop(eng_t *eng, eng_tensor_t *t)
{
    memsvc_state_t next;

    if (eng_transition((memsvc_state_t)t->pub.state, ENG_OP_DROP, &next) != MEMSVC_OK) {
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    if (t->pub.pins > 0) {
        return MEMSVC_ERR_PINNED;
    }
    if (!t->pub.recomputable || t->pub.durable) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (eng_held_outside(eng, t)) {
        return MEMSVC_ERR_PINNED;
    }
    eng_lru_drop(eng, t);
    eng_block_put(eng, t);
    eng_apply(eng, t, ENG_OP_DROP);
    t->flags &= (uint8_t)~ENG_TF_VALID;
    eng_dev_of(eng, t)->st.drops++;
    eng_kick(eng, eng_dev_of(eng, t));
    return MEMSVC_OK;
}

memsvc_status_t eng_drop(eng_t *eng, eng_handle_t handle)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    return (t == NULL) ? MEMSVC_ERR_NOT_FOUND : eng_do_drop(eng, t);
}

static memsvc_status_t eng_do_prefetch(eng_t *eng, eng_tensor_t *t)
{
    switch (t->pub.state) {
    case MEMSVC_STATE_ON_DEVICE:
        return MEMSVC_OK;
    case MEMSVC_STATE_MOVING_IN:
        return MEMSVC_INPROGRESS;
    case MEMSVC_STATE_MOVING_OUT:
        if (eng_out_spills(t)) {
            return MEMSVC_ERR_BUSY;
        }
        eng_cancel_out(eng, t);
        eng_lru_touch(eng, t);
        return MEMSVC_OK;
    case MEMSVC_STATE_ON_HOST:
    case MEMSVC_STATE_ON_DISK:
    case MEMSVC_STATE_ON_PEER: {
        memsvc_status_t status = eng_start_swap_in(eng, t);

        if (status == MEMSVC_INPROGRESS) {
            eng_dev_of(eng, t)->st.prefetches++;
            eng_dev_of(eng, t)->st.prefetch_bytes += t->pub.size;
        }
        return status;
    }
    default:
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
}

memsvc_status_t eng_prefetch(eng_t *eng, eng_handle_t handle)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    return (t == NULL) ? MEMSVC_ERR_NOT_FOUND : eng_do_prefetch(eng, t);
}

memsvc_status_t eng_spill(eng_t *eng, eng_handle_t handle)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    return (t == NULL) ? MEMSVC_ERR_NOT_FOUND : eng_start_spill(eng, t);
}

/* ---- bytes -------------------------------------------------------------------------------- */

static memsvc_status_t eng_bytes_at(eng_t *eng, eng_tensor_t *t, uint64_t offset, uint64_t len,
                                    bool write, uint8_t **ptr_p)
{
    if (sim_node_mode(eng->node) != SIM_MEM_BACKED) {
        return MEMSVC_ERR_UNSUPPORTED;
    }
    if (offset > t->pub.size || len > t->pub.size - offset) {
        return MEMSVC_ERR_OUT_OF_RANGE;
    }
    switch (t->pub.state) {
    case MEMSVC_STATE_ON_DEVICE:
        *ptr_p = (uint8_t *)eng_dev_ptr(eng, t) + offset;
        return MEMSVC_OK;
    case MEMSVC_STATE_ON_HOST:
        *ptr_p = (uint8_t *)t->host_ptr + offset;
        return MEMSVC_OK;
    case MEMSVC_STATE_MOVING_OUT:
        if (!write && !eng_out_spills(t)) {
            *ptr_p = (uint8_t *)eng_dev_ptr(eng, t) + offset;
            return MEMSVC_OK;
        }
        return MEMSVC_ERR_BUSY;
    case MEMSVC_STATE_MOVING_IN:
        return MEMSVC_ERR_BUSY;
    case MEMSVC_STATE_ON_PEER: {
        /* its bytes are on a peer: on their way back now; the caller retries (BUSY) */
        memsvc_status_t status = eng_do_prefetch(eng, t);

        return (status == MEMSVC_INPROGRESS) ? MEMSVC_ERR_BUSY : status;
    }
    default:
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
}

/* A spilled tensor is read and written where it is, in the disk tier (synchronously: what a
 * read of it costs is the disk's; it stays spilled). */
static memsvc_status_t eng_disk_bytes(eng_t *eng, eng_tensor_t *t, uint64_t offset, void *p,
                                      uint64_t len, bool write)
{
    sim_disk_buf_t db = eng_disk_buf(t);

    if (sim_node_mode(eng->node) != SIM_MEM_BACKED) {
        return MEMSVC_ERR_UNSUPPORTED;
    }
    if ((offset > t->pub.size) || (len > t->pub.size - offset)) {
        return MEMSVC_ERR_OUT_OF_RANGE;
    }
    return write ? sim_disk_write_at(eng->node, &db, offset, p, len)
                 : sim_disk_read_at(eng->node, &db, offset, p, len);
}

memsvc_status_t eng_write(eng_t *eng, eng_handle_t handle, uint64_t offset, const void *src,
                          uint64_t len)
{
    eng_tensor_t   *t = eng_reg_get(eng, handle);
    uint8_t        *p;
    memsvc_status_t status;

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    if ((t->pub.state == MEMSVC_STATE_ON_DISK) && (t->disk_block != NULL)) {
        status = eng_disk_bytes(eng, t, offset, (void *)(uintptr_t)src, len, true);
        if (status == MEMSVC_OK) {
            t->flags |= ENG_TF_VALID;
        }
        return status;
    }
    status = eng_bytes_at(eng, t, offset, len, true, &p);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (len >= ENG_POPULATE_MIN) {
        mem_hint_populate(p, len); /* the simulated HBM's pages appear on first touch */
    }
    memcpy(p, src, len);
    t->flags |= ENG_TF_VALID;
    return MEMSVC_OK;
}

memsvc_status_t eng_read(eng_t *eng, eng_handle_t handle, uint64_t offset, void *dst, uint64_t len)
{
    eng_tensor_t   *t = eng_reg_get(eng, handle);
    uint8_t        *p;
    memsvc_status_t status;

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    if ((t->pub.state == MEMSVC_STATE_ON_DISK) && (t->disk_block != NULL)) {
        return eng_disk_bytes(eng, t, offset, dst, len, false);
    }
    status = eng_bytes_at(eng, t, offset, len, false, &p);
    if (status != MEMSVC_OK) {
        return status;
    }
    memcpy(dst, p, len);
    return MEMSVC_OK;
}

memsvc_status_t eng_lend(eng_t *eng, eng_handle_t handle, uint64_t offset, uint64_t len,
                         bool write, eng_loan_t *loan)
{
    eng_tensor_t   *t = eng_reg_get(eng, handle);
    uint8_t        *p;
    memsvc_status_t status;

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    if ((t->pub.state != MEMSVC_STATE_ON_DEVICE) || (t->loans == UINT8_MAX)) {
        return (sim_node_mode(eng->node) != SIM_MEM_BACKED) ? MEMSVC_ERR_UNSUPPORTED
                                                             : MEMSVC_ERR_BUSY;
    }
    status = eng_bytes_at(eng, t, offset, len, write, &p);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (write && (len >= ENG_POPULATE_MIN)) {
        mem_hint_populate(p, len); /* as eng_write: no page fault per page in the receive */
    }
    t->loans++;
    loan->ptr   = p;
    loan->t     = t;
    loan->write = write;
    return MEMSVC_OK;
}

memsvc_status_t eng_lend_end(eng_t *eng, eng_loan_t *loan, bool ok)
{
    eng_tensor_t *t = loan->t;

    loan->t   = NULL;
    loan->ptr = NULL;
    if ((t == NULL) || (t->loans == 0)) {
        return MEMSVC_ERR_INVALID_PARAM; /* not a loan, or ended twice */
    }
    t->loans--;
    if (eng_reg_get(eng, t->pub.handle) != t) { /* freed meanwhile */
        if (t->loans == 0) {
            eng_list_remove(&eng->lent_freed, t);
            eng_put_tensor(eng, t);
        }
        return MEMSVC_ERR_NOT_FOUND;
    }
    if (loan->write) {
        if (ok) {
            t->flags |= ENG_TF_VALID;
        } else {
            t->flags &= (uint8_t)~ENG_TF_VALID;
        }
    }
    return MEMSVC_OK;
}

memsvc_status_t eng_set_valid(eng_t *eng, eng_handle_t handle, bool valid)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    if (valid) {
        t->flags |= ENG_TF_VALID;
    } else {
        t->flags &= (uint8_t)~ENG_TF_VALID;
    }
    return MEMSVC_OK;
}

/* ---- lookup, info, hints, progress -------------------------------------------------------- */

memsvc_status_t eng_lookup(eng_t *eng, uint32_t job, const char *key, eng_handle_t *handle_p)
{
    eng_tensor_t *t;

    if (key == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    t = eng_reg_find(eng, job, key);
    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    *handle_p = t->pub.handle;
    return MEMSVC_OK;
}

static void eng_fill_info(const eng_tensor_t *t, eng_tensor_info_t *info)
{
    info->handle       = t->pub.handle;
    info->key          = t->key;
    info->size         = t->pub.size;
    info->kind         = (memsvc_kind_t)t->pub.kind;
    info->state        = (memsvc_state_t)t->pub.state;
    info->device       = t->pub.device;
    info->tags.layer      = t->pub.tags.layer;
    info->tags.microbatch = t->pub.tags.microbatch;
    info->tags.expert     = t->pub.tags.expert;
    info->tags.stage      = t->pub.tags.stage;
    info->tags.step       = t->pub.tags.step;
    info->recomputable = t->pub.recomputable;
    info->recompute_ns = t->pub.recompute_ns;
    info->durable      = t->pub.durable;
    info->job          = t->pub.job;
    info->rank         = t->rank;
    info->pins         = t->pub.pins;
    info->valid        = (t->flags & ENG_TF_VALID) != 0;
    info->dev_offset   = (t->block != NULL) ? sim_alloc_block_offset(t->block) : 0;
}

memsvc_status_t eng_info(eng_t *eng, eng_handle_t handle, eng_tensor_info_t *info_p)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    eng_fill_info(t, info_p);
    return MEMSVC_OK;
}

void eng_foreach(eng_t *eng, uint32_t job, bool (*fn)(void *arg, const eng_tensor_info_t *info),
                 void *arg)
{
    eng_tensor_info_t info;
    uint32_t          i;

    for (i = 0; i < eng->num_slots; i++) {
        const eng_tensor_t *t = eng_reg_slot(eng, i);

        if (t == NULL || (job != UINT32_MAX && t->pub.job != job)) {
            continue;
        }
        eng_fill_info(t, &info);
        if (!fn(arg, &info)) {
            return;
        }
    }
}

void eng_foreach_from(eng_t *eng, uint32_t job, uint64_t *cursor_p, uint32_t visit,
                      bool (*fn)(void *arg, const eng_tensor_info_t *info), void *arg)
{
    eng_tensor_info_t info;
    uint64_t          i = *cursor_p, end = *cursor_p + visit;

    for (; (i < eng->num_slots) && (i < end); i++) {
        const eng_tensor_t *t = eng_reg_slot(eng, (uint32_t)i);

        if (t == NULL || (job != UINT32_MAX && t->pub.job != job)) {
            continue;
        }
        eng_fill_info(t, &info);
        if (!fn(arg, &info)) {
            *cursor_p = i;
            return;
        }
    }
    *cursor_p = (i < eng->num_slots) ? i : 0;
}

void eng_set_guard(eng_t *eng, eng_guard_cb_t cb, void *arg)
{
    eng->guard_cb  = cb;
    eng->guard_arg = arg;
}

void eng_set_usage_observer(eng_t *eng, eng_usage_cb_t cb, void *arg)
{
    eng->usage_cb  = cb;
    eng->usage_arg = arg;
}

memsvc_status_t eng_hint(eng_t *eng, const eng_hint_t *hint)
{
    pol_hint_t     ph;
    eng_dl_saved_t saved;

    if (hint == NULL || (unsigned)hint->type >= MEMSVC_HINT_COUNT ||
        (unsigned)hint->phase >= MEMSVC_PHASE_COUNT ||
        (hint->num_handles > 0 && hint->handles == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    eng_policy_flush(eng);
    eng_tl_hint(eng, hint);
    if (eng->pol->on_hint == NULL) {
        return MEMSVC_OK;
    }
    ph.type        = hint->type;
    ph.job         = hint->job;
    ph.rank        = hint->rank;
    ph.step        = hint->step;
    ph.layer       = hint->layer;
    ph.microbatch  = hint->microbatch;
    ph.phase       = hint->phase;
    ph.handles     = hint->handles;
    ph.num_handles = hint->num_handles;
    eng_dl_enter(eng, &saved);
    eng->pol->on_hint(eng->pol_state, &eng->pol_ctx, &ph);
    eng_dl_leave(eng, &saved);
    return MEMSVC_OK;
}

size_t eng_progress(eng_t *eng)
{
    return sim_clock_run_due(eng->clock);
}

bool eng_step(eng_t *eng)
{
    return sim_clock_step(eng->clock);
}

sim_time_t eng_next_event(const eng_t *eng)
{
    return sim_clock_next(eng->clock);
}

sim_time_t eng_charge_compute(eng_t *eng, unsigned device, sim_time_t duration, bool recompute)
{
    if (device >= eng->num_devices) {
        return eng_now(eng);
    }
    return sim_stream_submit(&eng->devs[device].sim->compute, eng_now(eng), duration);
}

void eng_set_graph(eng_t *eng, const pol_graph_ops_t *ops, void *owner)
{
    eng->graph       = ops;
    eng->graph_owner = owner;
}

memsvc_status_t eng_set_recompute_ns(eng_t *eng, eng_handle_t handle, uint64_t recompute_ns)
{
    eng_tensor_t *t = eng_reg_get(eng, handle);

    if (t == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    t->pub.recompute_ns = recompute_ns;
    return MEMSVC_OK;
}

/* ---- stats -------------------------------------------------------------------------------- */

memsvc_status_t eng_dev_stats(const eng_t *eng, unsigned device, eng_dev_stats_t *stats_p)
{
    if (device >= eng->num_devices) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    *stats_p = eng->devs[device].st;
    sim_alloc_get_stats(eng->devs[device].sim->alloc, &stats_p->alloc);
    return MEMSVC_OK;
}

void eng_stats(const eng_t *eng, eng_stats_t *stats_p)
{
    memset(stats_p, 0, sizeof(*stats_p));
    stats_p->num_devices     = eng->num_devices;
    sim_node_host_stats(eng->node, &stats_p->host);
    stats_p->live_tensors    = eng->live;
    stats_p->moves_in_flight = eng->moves_in_flight;
    stats_p->now             = eng_now(eng);
}

double eng_metadata_per_tensor(const eng_t *eng)
{
    uint64_t bytes = eng_reg_bytes(eng);
    uint32_t i;

    if (eng->live == 0) {
        return 0.0;
    }
    for (i = 0; i < eng->num_slots; i++) {
        const eng_tensor_t *t = eng_reg_slot(eng, i);

        if (t != NULL) {
            bytes += ENG_TENSOR_BYTES(strlen(t->key)) + sim_alloc_block_overhead();
        }
    }
    return (double)bytes / (double)eng->live;
}

void eng_print_stats(const eng_t *eng, FILE *out)
{
    eng_stats_t     s;
    eng_dev_stats_t d;
    char            b1[32], b2[32], b3[32], b4[32];
    unsigned        i;
    int             k;

    eng_stats(eng, &s);
    fprintf(out, "time %s, live tensors %" PRIu64 ", moves in flight %" PRIu64 "\n",
            sim_format_time(s.now, b1, sizeof(b1)), s.live_tensors, s.moves_in_flight);
    fprintf(out, "host pool: used %s of %s (peak %s); disk: used %s\n",
            sim_format_size(s.host.used, b1, sizeof(b1)),
            sim_format_size(s.host.capacity, b2, sizeof(b2)),
            sim_format_size(s.host.peak, b3, sizeof(b3)),
            sim_format_size(s.host.disk_used, b4, sizeof(b4)));
    for (i = 0; i < s.num_devices; i++) {
        eng_dev_stats(eng, i, &d);
        if (d.alloc.peak_reserved == 0) {
            continue;
        }
        fprintf(out, "npu%u: allocated %s, reserved %s, peak %s, largest free %s, fragmentation %.3f\n",
                i, sim_format_size(d.alloc.allocated, b1, sizeof(b1)),
                sim_format_size(d.alloc.reserved, b2, sizeof(b2)),
                sim_format_size(d.alloc.peak_reserved, b3, sizeof(b3)),
                sim_format_size(d.alloc.largest_free, b4, sizeof(b4)), d.alloc.fragmentation);
        fprintf(out, "  resident by kind:");
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            fprintf(out, " %s %s", memsvc_kind_name((memsvc_kind_t)k),
                    sim_format_size(d.resident_by_kind[k], b1, sizeof(b1)));
        }
        fprintf(out, "\n  tensors by state:");
        for (k = 0; k < MEMSVC_STATE_COUNT - 1; k++) {
            fprintf(out, " %s %" PRIu64, memsvc_state_name((memsvc_state_t)k), d.tensors_by_state[k]);
        }
        fprintf(out, "\n  swapped out %s in %" PRIu64 " moves, in %s in %" PRIu64
                     " moves, spilled %s; dropped %" PRIu64 ", recomputed %" PRIu64 " (%s)\n",
                sim_format_size(d.swap_out_bytes, b1, sizeof(b1)), d.swap_outs,
                sim_format_size(d.swap_in_bytes, b2, sizeof(b2)), d.swap_ins,
                sim_format_size(d.spill_bytes, b3, sizeof(b3)), d.drops, d.recomputes,
                sim_format_time(d.recompute_ns, b4, sizeof(b4)));
        fprintf(out, "  stalled %s in %" PRIu64 " waits; out-of-memory %" PRIu64
                     ", fragmented %" PRIu64 "\n",
                sim_format_time(d.stall_ns, b1, sizeof(b1)), d.stalls, d.oom_events,
                d.fragmented_events);
    }
}

/* ---- what policies see (pol_ctx_t) ---------------------------------------------------------- */

sim_time_t pol_now(const pol_ctx_t *ctx)
{
    return eng_now(ctx->eng);
}

unsigned pol_num_devices(const pol_ctx_t *ctx)
{
    return ctx->eng->num_devices;
}

uint64_t pol_device_capacity(const pol_ctx_t *ctx, unsigned dev)
{
    return (dev < ctx->eng->num_devices) ? sim_alloc_capacity(ctx->eng->devs[dev].sim->alloc) : 0;
}

uint64_t pol_device_free(const pol_ctx_t *ctx, unsigned dev)
{
    return (dev < ctx->eng->num_devices) ? sim_alloc_free_bytes(ctx->eng->devs[dev].sim->alloc) : 0;
}

uint64_t pol_device_largest_free(const pol_ctx_t *ctx, unsigned dev)
{
    return (dev < ctx->eng->num_devices) ? sim_alloc_largest_free(ctx->eng->devs[dev].sim->alloc) : 0;
}

uint64_t pol_device_incoming(const pol_ctx_t *ctx, unsigned dev)
{
    return (dev < ctx->eng->num_devices) ? ctx->eng->devs[dev].outgoing : 0;
}

const pol_tensor_t *pol_lru_first(const pol_ctx_t *ctx, unsigned dev)
{
    if (dev >= ctx->eng->num_devices || ctx->eng->devs[dev].lru.head == NULL) {
        return NULL;
    }
    return &ctx->eng->devs[dev].lru.head->pub;
}

const pol_tensor_t *pol_lru_next(const pol_ctx_t *ctx, const pol_tensor_t *t)
{
    const eng_tensor_t *et = (const eng_tensor_t *)t;

    if (!(et->flags & ENG_TF_ON_LRU) || et->next == NULL) {
        return NULL;
    }
    return &et->next->pub;
}

const char *pol_key(const pol_tensor_t *t)
{
    return ((const eng_tensor_t *)t)->key;
}

const pol_tensor_t *pol_tensor(const pol_ctx_t *ctx, uint64_t handle)
{
    eng_tensor_t *t = eng_reg_get(ctx->eng, handle);

    return (t != NULL) ? &t->pub : NULL;
}

/* The engine's own tensor behind a policy's pointer (policies hold no stale pointers: they
 * get them from the engine within the same call). */
static eng_tensor_t *pol_own(const pol_ctx_t *ctx, const pol_tensor_t *t)
{
    return (t != NULL) ? eng_reg_get(ctx->eng, t->handle) : NULL;
}

/* Carry out a move a policy asked for, and log it with the policy's current reason. */
static memsvc_status_t pol_move(pol_ctx_t *ctx, const pol_tensor_t *t, pol_action_t action)
{
    eng_tensor_t   *et = pol_own(ctx, t);
    memsvc_status_t status;

    if (et == NULL) {
        return MEMSVC_ERR_NOT_FOUND;
    }
    switch (action) {
    case POL_ACTION_SWAP_OUT:
        status = eng_start_swap_out(ctx->eng, et);
        break;
    case POL_ACTION_DROP:
        status = eng_do_drop(ctx->eng, et);
        break;
    case POL_ACTION_PREFETCH:
        status = eng_do_prefetch(ctx->eng, et);
        break;
    default:
        status = eng_start_spill(ctx->eng, et);
        break;
    }
    /* no move frees a tensor, so et is still valid */
    eng_dl_record(ctx->eng, action, et, status);
    return status;
}

memsvc_status_t pol_swap_out(pol_ctx_t *ctx, const pol_tensor_t *t)
{
    return pol_move(ctx, t, POL_ACTION_SWAP_OUT);
}

memsvc_status_t pol_drop(pol_ctx_t *ctx, const pol_tensor_t *t)
{
    return pol_move(ctx, t, POL_ACTION_DROP);
}

memsvc_status_t pol_prefetch(pol_ctx_t *ctx, const pol_tensor_t *t)
{
    return pol_move(ctx, t, POL_ACTION_PREFETCH);
}

memsvc_status_t pol_spill(pol_ctx_t *ctx, const pol_tensor_t *t)
{
    return pol_move(ctx, t, POL_ACTION_SPILL);
}

uint64_t pol_swap_cost_ns(const pol_ctx_t *ctx, unsigned dev, uint64_t bytes)
{
    const sim_device_t *d;

    if (dev >= ctx->eng->num_devices) {
        return 0;
    }
    d = ctx->eng->devs[dev].sim;
    return sim_link_time_ns(&d->d2h.desc, bytes) + sim_link_time_ns(&d->h2d.desc, bytes);
}

void pol_device_blocks(const pol_ctx_t *ctx, unsigned dev,
                       void (*fn)(void *arg, const pol_tensor_t *t, uint64_t offset,
                                  uint64_t size),
                       void *arg)
{
    uint32_t i;

    for (i = 0; i < ctx->eng->num_slots; i++) {
        const eng_tensor_t *t = eng_reg_slot(ctx->eng, i);

        if (t != NULL && t->block != NULL && t->pub.device == dev) {
            fn(arg, &t->pub, sim_alloc_block_offset(t->block), sim_alloc_block_size(t->block));
        }
    }
}

bool pol_has_graph(const pol_ctx_t *ctx)
{
    return ctx->eng->graph != NULL;
}

typedef struct pol_nb_visit {
    const pol_ctx_t *ctx;
    void (*fn)(void *arg, const pol_tensor_t *nb);
    void *arg;
} pol_nb_visit_t;

static void pol_nb_one(void *arg, uint64_t handle)
{
    pol_nb_visit_t     *v = arg;
    const pol_tensor_t *t = pol_tensor(v->ctx, handle);

    if (t != NULL) {
        v->fn(v->arg, t);
    }
}

void pol_neighbours(const pol_ctx_t *ctx, const pol_tensor_t *t, pol_nb_dir_t dir,
                    void (*fn)(void *arg, const pol_tensor_t *nb), void *arg)
{
    pol_nb_visit_t v = {.ctx = ctx, .fn = fn, .arg = arg};

    if (ctx->eng->graph != NULL && t != NULL) {
        ctx->eng->graph->neighbours(ctx->eng->graph_owner, t->handle, dir, pol_nb_one, &v);
    }
}

void pol_set_word(pol_ctx_t *ctx, const pol_tensor_t *t, uint64_t word)
{
    eng_tensor_t *et = pol_own(ctx, t);

    if (et != NULL) {
        et->pub.pol_word = word;
    }
}
