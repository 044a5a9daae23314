/* msd_fast.c - memsvcd's pin tables: local clients acquire and release resident tensors in place */
#include "client/msl_pintab.h"
#include "client/msp_ucx.h"
#include "memsvc/msd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MSD_LOG_COMP "fastpin"
#include "memsvc/msd_log.h"

/*
 * The protocol is described in client/msl_pintab.h and docs/protocol.md ("Pin table"). The
 * daemon keeps its own record of every slot (rec[]): what it published there and under which
 * generation. It never trusts the shared memory: a ctl word whose generation is not the one it
 * stored, or whose count it did not expect, only ever makes the tensor count as pinned.
 */

typedef enum pin_state {
    PIN_FREE = 0, /* nothing published; reusable */
    PIN_OPEN,     /* published: the client may pin it locally */
    PIN_CLOSED    /* no new local pins; the client may still hold some (reclaimed at count 0) */
} pin_state_t;

typedef struct msd_pinrec {
    uint64_t handle;
    uint32_t gen;
    uint32_t uses_seen; /* the slot's uses when last folded */
    uint8_t  state;     /* pin_state_t */
} msd_pinrec_t;

typedef struct msd_pintab {
    int             fd;
    msl_pin_slot_t *tab;   /* shared with the client */
    uint32_t        nused; /* slots not PIN_FREE */
    uint32_t        next_gen;
    msd_pinrec_t    rec[MSL_PIN_SLOTS];
} msd_pintab_t;

bool msd_fast_open(msd_server_t *srv, msd_session_t *s)
{
    msd_pintab_t *pt;
    void         *p;
    int           fd;

    if (srv->cfg.no_fast_pin || (s->pintab != NULL)) {
        return s->pintab != NULL;
    }
    pt = calloc(1, sizeof(*pt));
    if (pt == NULL) {
        return false;
    }
    fd = memfd_create("memsvc-pintab", MFD_CLOEXEC);
    if ((fd < 0) || (ftruncate(fd, (off_t)MSL_PINTAB_BYTES) != 0)) {
        LOG_RL(1000, "session %llu: no pin table (%s): every acquire is a message",
               (unsigned long long)s->id, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        free(pt);
        return false;
    }
    p = mmap(NULL, MSL_PINTAB_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        LOG_RL(1000, "session %llu: cannot map its pin table (%s)", (unsigned long long)s->id,
               strerror(errno));
        close(fd);
        free(pt);
        return false;
    }
    pt->fd       = fd;
    pt->tab      = p;
    pt->next_gen = 1;
    s->pintab    = pt;
    srv->fast_tables++;
    return true;
}

int msd_fast_fd(const msd_session_t *s)
{
    return (s->pintab != NULL) ? s->pintab->fd : -1;
}

static void rec_free(msd_server_t *srv, msd_pintab_t *pt, msd_pinrec_t *r)
{
    if (r->state != PIN_FREE) {
        r->state = PIN_FREE;
        pt->nused--;
        srv->fast_slots--;
    }
}

/* Revoke slot i (its tensor is about to move): true when no pin is held and none can be taken
 * any more (the slot is free then). When a pin is held and close is set, the slot is closed (no
 * new local pin: the move can happen once the pins held are released). */
static bool slot_revoke(msd_server_t *srv, msd_pintab_t *pt, uint32_t i, bool close)
{
    msd_pinrec_t   *r  = &pt->rec[i];
    msl_pin_slot_t *sl = &pt->tab[i];
    uint64_t        want, w;

    if (r->state == PIN_FREE) {
        return true;
    }
    want = ((uint64_t)r->gen << 32) | ((r->state == PIN_OPEN) ? MSL_PIN_OPEN : 0);
    w    = want;
    if (atomic_compare_exchange_strong_explicit(&sl->ctl, &w, (uint64_t)r->gen << 32,
                                                memory_order_acq_rel, memory_order_acquire)) {
        atomic_thread_fence(memory_order_release); /* before any later write of the fields */
        rec_free(srv, pt, r);
        return true;
    }
    /* A pin is held, or the word is not what was stored (a client wrote it): pinned. Closed at
     * least, so that no new pin is taken on a generation the daemon knows. */
    if (close && (r->state == PIN_OPEN) && (MSL_PIN_GEN(w) == r->gen)) {
        atomic_fetch_and_explicit(&sl->ctl, ~MSL_PIN_OPEN, memory_order_acq_rel);
        r->state = PIN_CLOSED;
    }
    return false;
}

/* Close slot i: no new local pin; the ones held stay (freed at count 0 by the fold). */
static void slot_close(msd_server_t *srv, msd_pintab_t *pt, uint32_t i)
{
    msd_pinrec_t *r = &pt->rec[i];

    if (r->state == PIN_OPEN) {
        atomic_fetch_and_explicit(&pt->tab[i].ctl, ~MSL_PIN_OPEN, memory_order_acq_rel);
        r->state = PIN_CLOSED;
    }
    (void)slot_revoke(srv, pt, i, true); /* free at once when nothing is held */
}

/* The slot of h in pt (any state but free), or UINT32_MAX. */
static uint32_t slot_of(const msd_pintab_t *pt, eng_handle_t h)
{
    uint32_t base = msl_pin_hash(h), k, i;

    for (k = 0; k < MSL_PIN_PROBE; k++) {
        i = (base + k) & (MSL_PIN_SLOTS - 1);
        if ((pt->rec[i].state != PIN_FREE) && (pt->rec[i].handle == h)) {
            return i;
        }
    }
    return UINT32_MAX;
}

/* Does slot i hold pins of the generation the daemon published (the word as it stored it,
 * plus a count)? What the client wrote beyond that is its own business. */
static bool slot_held(const msd_pintab_t *pt, uint32_t i)
{
    uint64_t w = atomic_load_explicit(&pt->tab[i].ctl, memory_order_acquire);

    return (pt->rec[i].state != PIN_FREE) && (MSL_PIN_GEN(w) == pt->rec[i].gen) &&
           ((w & MSL_PIN_COUNT) > 0);
}

uint32_t msd_fast_pins(msd_server_t *srv, eng_handle_t h)
{
    const msd_session_t *s;
    uint64_t             n = 0;
    uint32_t             i;

    if (srv->fast_slots == 0) {
        return 0;
    }
    for (s = srv->sessions; s != NULL; s = s->next) {
        if ((s->pintab != NULL) && ((i = slot_of(s->pintab, h)) != UINT32_MAX) &&
            slot_held(s->pintab, i)) {
            /* a client's word: bounded as the client's own acquires are */
            uint64_t c = atomic_load_explicit(&s->pintab->tab[i].ctl, memory_order_relaxed) &
                         MSL_PIN_COUNT;

            n += (c < MSL_PIN_MAX) ? c : MSL_PIN_MAX;
        }
    }
    return (n < UINT32_MAX / 2) ? (uint32_t)n : UINT32_MAX / 2;
}

bool msd_fast_holds(const msd_session_t *s, eng_handle_t h)
{
    uint32_t i;

    return (s->pintab != NULL) && ((i = slot_of(s->pintab, h)) != UINT32_MAX) &&
           slot_held(s->pintab, i);
}

void msd_fast_close(msd_server_t *srv, msd_session_t *s)
{
    msd_pintab_t *pt = s->pintab;
    uint32_t      i, torn = 0;

    if (pt == NULL) {
        return;
    }
    /* Pins it held while writing in place: the bytes may be half-written, never served as
     * valid (as a write pin taken by message; msd_ops_session_gone). */
    for (i = 0; i < MSL_PIN_SLOTS; i++) {
        if (slot_held(pt, i) &&
            (atomic_load_explicit(&pt->tab[i].writers, memory_order_acquire) != 0)) {
            eng_set_valid(srv->eng, pt->rec[i].handle, false);
            msd_fast_invalidate(srv, pt->rec[i].handle); /* nobody pins it locally either */
            torn++;
        }
    }
    if (torn > 0) {
        LOG("session %llu: %u tensors it was writing in place are left uncommitted",
            (unsigned long long)s->id, torn);
    }
    /* A live client (evicted) must not pin on: every slot closed before the table goes. */
    for (i = 0; i < MSL_PIN_SLOTS; i++) {
        if (pt->rec[i].state == PIN_OPEN) {
            atomic_fetch_and_explicit(&pt->tab[i].ctl, ~MSL_PIN_OPEN, memory_order_acq_rel);
        }
        rec_free(srv, pt, &pt->rec[i]); /* its pins go with the session */
    }
    munmap(pt->tab, MSL_PINTAB_BYTES);
    close(pt->fd);
    free(pt);
    s->pintab = NULL;
    srv->fast_tables--;
}

void msd_fast_publish(msd_server_t *srv, msd_session_t *s, eng_handle_t h, uint32_t region,
                      uint64_t offset, uint64_t size, bool durable)
{
    msd_pintab_t   *pt = s->pintab;
    uint32_t        base, k, i, pick = UINT32_MAX;
    msd_pinrec_t   *r;
    msl_pin_slot_t *sl;

    if ((pt == NULL) || s->dead) {
        return;
    }
    i = slot_of(pt, h);
    if ((i != UINT32_MAX) && (pt->rec[i].state == PIN_OPEN)) {
        return; /* published already */
    }
    if (i != UINT32_MAX) {
        /* closed (invalidated, or a revoke that found it held): open again if untouched */
        uint64_t w = atomic_load_explicit(&pt->tab[i].ctl, memory_order_acquire);

        if ((MSL_PIN_GEN(w) != pt->rec[i].gen) || (w & MSL_PIN_OPEN)) {
            return; /* not what was stored: left closed */
        }
        if (atomic_compare_exchange_strong_explicit(&pt->tab[i].ctl, &w, w | MSL_PIN_OPEN,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            pt->rec[i].state = PIN_OPEN;
        }
        return;
    }
    base = msl_pin_hash(h);
    for (k = 0; (k < MSL_PIN_PROBE) && (pick == UINT32_MAX); k++) {
        i = (base + k) & (MSL_PIN_SLOTS - 1);
        if (pt->rec[i].state == PIN_FREE) {
            pick = i;
        }
    }
    for (k = 0; (k < MSL_PIN_PROBE) && (pick == UINT32_MAX); k++) {
        /* all taken: the first open one nobody holds makes room (its tensor goes slow) */
        i = (base + k) & (MSL_PIN_SLOTS - 1);
        if ((pt->rec[i].state != PIN_FREE) && slot_revoke(srv, pt, i, false)) {
            pick = i;
        }
    }
    if (pick == UINT32_MAX) {
        return; /* no room: this tensor's acquires stay messages */
    }
    r  = &pt->rec[pick];
    sl = &pt->tab[pick];
    /* Free: the last word stored was (gen << 32) with no pin, or the slot was never used. */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&sl->handle, h, memory_order_relaxed);
    atomic_store_explicit(&sl->offset, offset, memory_order_relaxed);
    atomic_store_explicit(&sl->size, size, memory_order_relaxed);
    atomic_store_explicit(&sl->region, region, memory_order_relaxed);
    atomic_store_explicit(&sl->flags, durable ? MSL_PIN_F_DURABLE : 0, memory_order_relaxed);
    r->handle    = h;
    r->gen       = pt->next_gen++;
    r->uses_seen = atomic_load_explicit(&sl->uses, memory_order_relaxed);
    r->state     = PIN_OPEN;
    if (pt->next_gen == 0) {
        pt->next_gen = 1;
    }
    atomic_store_explicit(&sl->ctl, ((uint64_t)r->gen << 32) | MSL_PIN_OPEN, memory_order_release);
    pt->nused++;
    srv->fast_slots++;
    srv->fast_published++;
}

void msd_fast_invalidate(msd_server_t *srv, eng_handle_t h)
{
    msd_session_t *s;
    uint32_t       i;

    if (srv->fast_slots == 0) {
        return;
    }
    for (s = srv->sessions; s != NULL; s = s->next) {
        if ((s->pintab != NULL) && ((i = slot_of(s->pintab, h)) != UINT32_MAX)) {
            slot_close(srv, s->pintab, i);
        }
    }
}

bool msd_fast_guard(void *arg, eng_handle_t h, bool freeing)
{
    msd_server_t  *srv = arg;
    msd_session_t *s;
    uint32_t       i;
    bool           may = true;

    if (srv->fast_slots == 0) {
        return true;
    }
    for (s = srv->sessions; s != NULL; s = s->next) {
        if ((s->pintab == NULL) || ((i = slot_of(s->pintab, h)) == UINT32_MAX)) {
            continue;
        }
        if (freeing) {
            slot_close(srv, s->pintab, i); /* a free goes ahead, pinned or not (as eng_free) */
        } else if (slot_revoke(srv, s->pintab, i, true)) {
            srv->fast_revoked++;
        } else {
            may = false; /* a client holds it: counts as pinned */
        }
    }
    if (!may) {
        srv->fast_held++;
    }
    return may;
}

/* One session's table: fold local acquires, reclaim closed slots nobody holds. Returns
 * whether any local acquire was found. */
static bool fold_table(msd_server_t *srv, msd_pintab_t *pt)
{
    uint32_t i;
    bool     used = false;

    for (i = 0; (i < MSL_PIN_SLOTS) && (pt->nused > 0); i++) {
        msd_pinrec_t     *r = &pt->rec[i];
        eng_tensor_info_t info;
        uint32_t          uses;

        if (r->state == PIN_FREE) {
            continue;
        }
        uses = atomic_load_explicit(&pt->tab[i].uses, memory_order_relaxed);
        if (uses != r->uses_seen) {
            uint32_t n = uses - r->uses_seen; /* a client may write anything: stats only */

            r->uses_seen = uses;
            srv->fast_acquires += n;
            used = true;
            /* The engine and the policy hear of the use (once per fold, not per acquire). */
            if ((r->state == PIN_OPEN) && (eng_info(srv->eng, r->handle, &info) == MEMSVC_OK) &&
                (info.state == MEMSVC_STATE_ON_DEVICE) &&
                (eng_acquire(srv->eng, r->handle, NULL, NULL) == MEMSVC_OK)) {
                eng_release(srv->eng, r->handle);
            }
        }
        if (r->state == PIN_CLOSED) {
            (void)slot_revoke(srv, pt, i, true); /* free once its pins are gone */
        }
    }
    return used;
}

uint64_t msd_fast_fold(msd_server_t *srv, bool now)
{
    uint64_t       t    = msp_now_ns();
    bool           used = false;
    msd_session_t *s;

    if (srv->fast_slots == 0) {
        return UINT64_MAX;
    }
    if (!now && (t < srv->fast_fold_at)) {
        return srv->fast_fold_at;
    }
    srv->fast_fold_at = t + srv->fast_fold_ns; /* first: the engine calls below come back */
    for (s = srv->sessions; s != NULL; s = s->next) {
        if ((s->pintab != NULL) && fold_table(srv, s->pintab)) {
            used = true;
        }
    }
    /* Tables in use but quiet: look less often (an idle daemon is not woken 100 times/s). */
    srv->fast_fold_ns =
        used ? MSD_FAST_FOLD_NS
             : ((srv->fast_fold_ns * 2 < MSD_FAST_FOLD_MAX_NS)
                    ? ((srv->fast_fold_ns != 0) ? srv->fast_fold_ns * 2 : MSD_FAST_FOLD_NS)
                    : MSD_FAST_FOLD_MAX_NS);
    srv->fast_fold_at = t + srv->fast_fold_ns;
    return (srv->fast_slots > 0) ? srv->fast_fold_at : UINT64_MAX;
}
