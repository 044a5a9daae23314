/* msl_pintab.h - the co-located pin table: slots in memory shared by memsvcd and one local client
 */
#ifndef MSL_PINTAB_H
#define MSL_PINTAB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * A local session whose device is mapped gets a pin table (docs/protocol.md, "Pin table"): a
 * memfd the daemon creates, sends with the session's regions (kind MSL_REGION_PINTAB) and maps
 * too, shared with that client alone. One slot per tensor the daemon published to the session
 * (in msd_acquired, when an acquire for reading found it resident in the mapped region); the
 * client then acquires and releases it without a message.
 *
 * A slot's ctl word holds, in one 64-bit atomic, the daemon's generation (bits 63..32), OPEN
 * (bit 31) and the client's pin count (bits 30..0). Having state and count in one word is what
 * makes revocation race-free, as a Linux page's refcount "freeze" does (page_ref_freeze:
 * cmpxchg(count, expected, 0), against get_page_unless_zero which never increments a frozen
 * count):
 *   - client acquire: w = load(ctl); OPEN set, generation as read, handle = the tensor, count
 *     below MSL_PIN_MAX; then CAS(ctl, w, w + 1). Fails (slow path) if the daemon changed ctl
 *     in between.
 *   - client release: fetch_sub(ctl, 1); the client only does it for pins it took there, so
 *     the count never borrows from OPEN.
 *   - daemon revoke (before the engine moves, drops or frees the tensor): CAS(ctl,
 *     gen|OPEN|0, gen|0). It fails while any pin is held: the tensor then counts as pinned
 *     (the move is refused, MEMSVC_ERR_PINNED). Once it succeeds no client CAS can succeed
 *     on the slot, whatever it read before.
 *   - daemon close (free, invalidation, session end): clear OPEN, keep the count; pins held
 *     stay the client's, new acquires take the slow path.
 * The handle, offset, size and region of a slot are written by the daemon only between a
 * revoke (or close at count 0) and the next publication, which stores ctl with a new
 * generation: a client that read them between its load and a successful CAS read the fields of
 * the generation it pinned (the seqlock argument, with the fences of Boehm, "Can seqlocks get
 * along with programming language memory models?", MSPC 2012: a release fence after the
 * daemon's revoke, an acquire fence before the client's CAS).
 *
 * A pin may write in place (memsvc_write of a co-located client): the client adds 1 to writers
 * after its CAS and before its first byte; after its last, for a durable tensor
 * (MSL_PIN_F_DURABLE) it asks the daemon to commit (MSP_OP_COMMIT, answered: the bytes are
 * journaled), and only then subtracts 1 from writers and drops the pin. A session that ends
 * while a slot it holds has writers above 0 leaves that tensor uncommitted (never served as
 * valid), as a write pin taken by message does. Other tensors need no message: the bytes in
 * place are the commit.
 *
 * The daemon trusts nothing it reads here: its own copy says what each slot holds; a count or
 * generation it did not expect counts as pinned (no worse than an acquire never released, and
 * only of tensors this session may pin); everything goes with the session.
 */

#define MSL_REGION_PINTAB 1u        /* msl_region_t.kind of the pin table */
#define MSL_PIN_SLOTS 4096u         /* slots per session (a power of two) */
#define MSL_PIN_PROBE 4u            /* a handle's slot: one of PROBE from its hash on */
#define MSL_PIN_OPEN (1ull << 31)   /* ctl: acquires may succeed locally */
#define MSL_PIN_COUNT 0x7fffffffull /* ctl: pins held by the client */
#define MSL_PIN_MAX (1u << 20)      /* the client pins no more locally; beyond: absurd */
#define MSL_PIN_GEN(w) ((uint32_t)((w) >> 32))
#define MSL_PIN_F_DURABLE 0x1u      /* flags: a write in place is committed by COMMIT */

typedef struct msl_pin_slot {
    _Atomic uint64_t ctl;    /* generation | OPEN | count (above) */
    _Atomic uint64_t handle; /* daemon: the tensor published (under ctl's generation) */
    _Atomic uint64_t offset; /* daemon: its offset in the region */
    _Atomic uint64_t size;   /* daemon: its size */
    _Atomic uint32_t region; /* daemon: the region id (as in ACQUIRE replies) */
    _Atomic uint32_t uses;   /* client: local acquires so far (the daemon folds the growth) */
    _Atomic uint32_t writers; /* client: of its pins, those writing in place (see below) */
    _Atomic uint32_t flags;   /* daemon: MSL_PIN_F_* of the tensor published */
    uint64_t         pad[2];
} msl_pin_slot_t;

_Static_assert(sizeof(msl_pin_slot_t) == 64, "a slot is one cache line");

#define MSL_PINTAB_BYTES ((uint64_t)MSL_PIN_SLOTS * sizeof(msl_pin_slot_t))

static inline uint32_t msl_pin_hash(uint64_t handle)
{
    uint64_t x = handle * 0x9e3779b97f4a7c15ull;

    return (uint32_t)(x >> 40);
}

/* Where a pinned tensor is. */
typedef struct msl_pin_where {
    uint64_t offset, size;
    uint32_t region, flags;
} msl_pin_where_t;

/*
 * Client: try a local acquire of handle in slot idx. true: pinned (where filled). false: not
 * published there, revoked, contended: take the slow path.
 */
static inline bool msl_pin_try(msl_pin_slot_t *tab, uint32_t idx, uint64_t handle,
                               msl_pin_where_t *where)
{
    msl_pin_slot_t *sl = &tab[idx & (MSL_PIN_SLOTS - 1)];
    uint64_t        w  = atomic_load_explicit(&sl->ctl, memory_order_acquire);
    unsigned        tries;

    for (tries = 0; tries < 4; tries++) {
        if (!(w & MSL_PIN_OPEN) || ((w & MSL_PIN_COUNT) >= MSL_PIN_MAX) ||
            (atomic_load_explicit(&sl->handle, memory_order_relaxed) != handle)) {
            return false;
        }
        where->offset = atomic_load_explicit(&sl->offset, memory_order_relaxed);
        where->size   = atomic_load_explicit(&sl->size, memory_order_relaxed);
        where->region = atomic_load_explicit(&sl->region, memory_order_relaxed);
        where->flags  = atomic_load_explicit(&sl->flags, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_compare_exchange_strong_explicit(&sl->ctl, &w, w + 1, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            atomic_fetch_add_explicit(&sl->uses, 1, memory_order_relaxed);
            return true;
        }
        /* w now holds what is there: another thread's pin moved the count; look again */
    }
    return false;
}

/* Client: a pin taken by msl_pin_try on slot idx starts (+1) or ends (-1) writing in place. */
static inline void msl_pin_writing(msl_pin_slot_t *tab, uint32_t idx, int delta)
{
    msl_pin_slot_t *sl = &tab[idx & (MSL_PIN_SLOTS - 1)];

    if (delta > 0) {
        atomic_fetch_add_explicit(&sl->writers, 1, memory_order_seq_cst); /* before the bytes */
    } else {
        atomic_fetch_sub_explicit(&sl->writers, 1, memory_order_release);
    }
}

/* Client: drop a pin taken by msl_pin_try on slot idx. */
static inline void msl_pin_drop(msl_pin_slot_t *tab, uint32_t idx)
{
    atomic_fetch_sub_explicit(&tab[idx & (MSL_PIN_SLOTS - 1)].ctl, 1, memory_order_release);
}

/* Client: the slot where handle is published and open now (probing), or UINT32_MAX. */
static inline uint32_t msl_pin_find(msl_pin_slot_t *tab, uint64_t handle)
{
    uint32_t base = msl_pin_hash(handle), k, idx;

    for (k = 0; k < MSL_PIN_PROBE; k++) {
        idx = (base + k) & (MSL_PIN_SLOTS - 1);
        if ((atomic_load_explicit(&tab[idx].ctl, memory_order_acquire) & MSL_PIN_OPEN) &&
            (atomic_load_explicit(&tab[idx].handle, memory_order_relaxed) == handle)) {
            return idx;
        }
    }
    return UINT32_MAX;
}

#endif /* MSL_PINTAB_H */
