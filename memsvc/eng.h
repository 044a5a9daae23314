/* eng.h - the memory engine: tensor registry, state machine, moves on sim_npu, accounting */
#ifndef ENG_H
#define ENG_H

#include "client/memsvc_status.h"
#include "client/memsvc_types.h"
#include "policy/policy.h"
#include "sim_npu/sim_node.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * One engine serves the daemon (real clock) and the replay tool (virtual clock). It is not
 * thread-safe: the daemon runs it from its one event loop, run-to-completion.
 *
 * A handle names one allocation (index + generation; stale handles are detected); a key names
 * the same logical tensor in every step, scoped by job.
 */
typedef uint64_t eng_handle_t;
#define ENG_HANDLE_NULL ((eng_handle_t)0)

typedef struct eng eng_t;

typedef struct eng_params {
    const sim_desc_t *desc;       /* the node (copied) */
    sim_mem_mode_t    mode;       /* backed or phantom */
    sim_clock_kind_t  clock;      /* virtual (replay) or real (daemon) */
    const char       *policy;     /* "NAME[:key=value,...]"; NULL means "lru" */
} eng_params_t;

/* What a new tensor is. */
typedef struct eng_tensor_desc {
    const char    *key;          /* stable key, 1..MEMSVC_KEY_MAX bytes, unique per job */
    uint64_t       size;         /* bytes, > 0 */
    memsvc_kind_t  kind;
    unsigned       device;       /* NPU index on the node */
    memsvc_tags_t  tags;
    bool           recomputable; /* may be dropped and recomputed by its owner */
    uint64_t       recompute_ns; /* device time to recompute it */
    bool           durable;      /* never dropped (parameters, optimizer state) */
    uint32_t       job;          /* owner job */
    uint32_t       rank;         /* owner rank */
} eng_tensor_desc_t;

/* A read-only snapshot of one tensor. */
typedef struct eng_tensor_info {
    eng_handle_t   handle;
    const char    *key;          /* valid until the tensor is freed */
    uint64_t       size;
    memsvc_kind_t  kind;
    memsvc_state_t state;
    unsigned       device;
    memsvc_tags_t  tags;
    bool           recomputable;
    uint64_t       recompute_ns;
    bool           durable;
    uint32_t       job, rank;
    uint32_t       pins;
    bool           valid;        /* false after a recompute until written */
    uint64_t       dev_offset;   /* HBM offset while on device */
} eng_tensor_info_t;

/* Accounting of one device and the tensors that belong to it. */
typedef struct eng_dev_stats {
    sim_alloc_stats_t alloc;                          /* HBM allocator figures */
    uint64_t   resident_by_kind[MEMSVC_KIND_COUNT];   /* bytes on device, by kind */
    uint64_t   peak_by_kind[MEMSVC_KIND_COUNT];       /* peak of each */
    uint64_t   bytes_by_state[MEMSVC_STATE_COUNT];    /* bytes of this device's tensors */
    uint64_t   tensors_by_state[MEMSVC_STATE_COUNT];
    uint64_t   peak_resident;                         /* peak bytes on device */
    uint64_t   pinned_tensors, pinned_bytes;
    uint64_t   swap_out_bytes, swap_outs;             /* device to host */
    uint64_t   swap_in_bytes, swap_ins;               /* host/disk to device */
    uint64_t   spill_bytes, spills;                   /* host to disk */
    uint64_t   drops, recomputes;
    uint64_t   prefetches, prefetch_bytes;                /* swap-ins started ahead of an acquire */
    sim_time_t recompute_ns;                          /* compute time charged to recompute */
    sim_time_t stall_ns;                              /* time acquires/allocs waited for room or moves */
    uint64_t   stalls;                                /* waits that took > 0 ns */
    uint64_t   oom_events, fragmented_events;         /* requests failed for lack of memory */
} eng_dev_stats_t;

typedef struct eng_stats {
    unsigned         num_devices;
    sim_host_stats_t host;
    uint64_t         live_tensors;
    uint64_t         moves_in_flight;
    sim_time_t       now;
} eng_stats_t;

/* Called when an operation that returned MEMSVC_INPROGRESS completes. status is the final one
 * (MEMSVC_OK, MEMSVC_RECOMPUTE, or an error such as MEMSVC_ERR_NO_MEMORY). */
typedef void (*eng_done_cb_t)(void *arg, eng_handle_t handle, memsvc_status_t status);

/* Flags of eng_alloc. */
#define ENG_ALLOC_PIN 0x1u /* the new tensor is pinned (as if acquired) */

/*
 * Create an engine: node, clock and policy. Errors: MEMSVC_ERR_INVALID_PARAM,
 * MEMSVC_ERR_UNKNOWN_KEY (policy name), MEMSVC_ERR_PARSE (policy parameters),
 * MEMSVC_ERR_NO_RESOURCE. The message goes to err when given.
 */
memsvc_status_t eng_create(const eng_params_t *params, eng_t **eng_p, char *err, size_t errlen);
void            eng_destroy(eng_t *eng);

sim_node_t  *eng_node(eng_t *eng);
sim_clock_t *eng_clock(eng_t *eng);
const char  *eng_policy_name(const eng_t *eng);

/*
 * Allocate a tensor on its device. MEMSVC_OK: resident now. MEMSVC_INPROGRESS: waiting for
 * room (the policy is moving others out); cb runs when it is resident or failed; *handle_p is
 * valid either way. Errors: MEMSVC_ERR_INVALID_PARAM, MEMSVC_ERR_EXISTS (key live in the job),
 * MEMSVC_ERR_NO_MEMORY / MEMSVC_ERR_FRAGMENTED (cannot fit even after the policy acted),
 * MEMSVC_ERR_TOO_LARGE (larger than the device).
 */
memsvc_status_t eng_alloc(eng_t *eng, const eng_tensor_desc_t *desc, unsigned flags,
                          eng_done_cb_t cb, void *arg, eng_handle_t *handle_p);

/*
 * Make a tensor resident and pin it. MEMSVC_OK: resident and pinned. MEMSVC_RECOMPUTE: it had
 * been dropped; space is allocated and pinned, the owner recomputes and writes it.
 * MEMSVC_INPROGRESS: a swap-in (or a wait for room) started; cb reports OK, RECOMPUTE or an
 * error. Errors: MEMSVC_ERR_NOT_FOUND, MEMSVC_ERR_NO_MEMORY, MEMSVC_ERR_FRAGMENTED.
 */
memsvc_status_t eng_acquire(eng_t *eng, eng_handle_t handle, eng_done_cb_t cb, void *arg);

/*
 * While on, an acquire of a resident tensor does only the engine's bookkeeping (pin, LRU,
 * access timeline) and returns; the policy hears of it (on_access) at eng_policy_flush, or
 * before the policy hears anything else (another access, a hint, a request for room), so the
 * order it sees is unchanged. memsvcd turns it on while it handles a message and flushes after
 * sending the answers, so that such an acquire is answered without waiting for the policy's
 * work (foresight, for one, may start the moves it planned for that point). Turning it off
 * flushes. Off by default (the replay tool never defers).
 */
void eng_policy_defer(eng_t *eng, bool on);
void eng_policy_flush(eng_t *eng);
/* Acquires the policy has not heard of yet. */
size_t eng_policy_pending(const eng_t *eng);

/* Unpin. MEMSVC_ERR_NOT_PINNED without a matching acquire. */
memsvc_status_t eng_release(eng_t *eng, eng_handle_t handle);

/* End a tensor (pinned or not, in any state); its space is returned. Waiters get CANCELED. */
memsvc_status_t eng_free(eng_t *eng, eng_handle_t handle);

/* Explicit moves (also what policies ask for). MEMSVC_INPROGRESS when a transfer started. */
memsvc_status_t eng_swap_out(eng_t *eng, eng_handle_t handle);
memsvc_status_t eng_drop(eng_t *eng, eng_handle_t handle);
memsvc_status_t eng_prefetch(eng_t *eng, eng_handle_t handle);
memsvc_status_t eng_spill(eng_t *eng, eng_handle_t handle);

/*
 * Tensor bytes (backed mode; MEMSVC_ERR_UNSUPPORTED in phantom mode). Legal on a tensor that
 * is on device, on host or on disk (read and written in the disk tier, where it stays);
 * MEMSVC_ERR_ILLEGAL_STATE when dropped; MEMSVC_ERR_BUSY while moving; MEMSVC_ERR_OUT_OF_RANGE past its end.
 * A write over a recomputed tensor marks it valid.
 */
memsvc_status_t eng_write(eng_t *eng, eng_handle_t handle, uint64_t offset, const void *src,
                          uint64_t len);
memsvc_status_t eng_read(eng_t *eng, eng_handle_t handle, uint64_t offset, void *dst, uint64_t len);

/*
 * Lend a tensor's bytes [offset, offset + len) to a transfer outside the engine: memsvcd
 * receives a remote WRITE straight into them and sends a READ straight from them, instead of
 * copying through a buffer under its lock. MEMSVC_OK: loan->ptr stays valid until
 * eng_lend_end, whatever happens to the tensor meanwhile. While lent, the tensor stays on its
 * device (a swap-out or drop is refused with MEMSVC_ERR_PINNED, as for a pin, but it is not a
 * pin: no acquire or release is seen, pins and stats do not count it); a free ends the
 * handle at once (lookups fail, the key is free) and returns the space when the last loan
 * ends. Only a tensor on its device, in backed mode: otherwise MEMSVC_ERR_BUSY (also at 255
 * loans at once), and the caller copies with eng_write/eng_read. MEMSVC_ERR_NOT_FOUND,
 * MEMSVC_ERR_OUT_OF_RANGE as for those.
 */
typedef struct eng_loan {
    void               *ptr;   /* the bytes lent */
    struct eng_tensor  *t;     /* (the engine's) */
    bool                write;
} eng_loan_t;

memsvc_status_t eng_lend(eng_t *eng, eng_handle_t handle, uint64_t offset, uint64_t len,
                         bool write, eng_loan_t *loan);
/*
 * The transfer is over. A write loan that succeeded (ok) marks the content valid, as
 * eng_write does; one that failed leaves it uncommitted (eng_set_valid false: the bytes may
 * be half old, half new). MEMSVC_ERR_NOT_FOUND when the tensor was freed meanwhile (its space
 * is returned now if this was its last loan); MEMSVC_OK otherwise.
 */
memsvc_status_t eng_lend_end(eng_t *eng, eng_loan_t *loan, bool ok);

/*
 * Mark a tensor's content valid (written in place and committed) or not (its writer died
 * mid-write: not to be served until written again). MEMSVC_ERR_NOT_FOUND for a stale handle.
 */
memsvc_status_t eng_set_valid(eng_t *eng, eng_handle_t handle, bool valid);

/* Lookup by (job, key). MEMSVC_ERR_NOT_FOUND if no live tensor has it. */
memsvc_status_t eng_lookup(eng_t *eng, uint32_t job, const char *key, eng_handle_t *handle_p);
memsvc_status_t eng_info(eng_t *eng, eng_handle_t handle, eng_tensor_info_t *info_p);

/* A hint from a trainer; passed to the policy. */
typedef struct eng_hint {
    memsvc_hint_type_t  type;
    uint32_t            job, rank;
    int32_t             step, layer, microbatch;
    memsvc_phase_t      phase;
    const eng_handle_t *handles;     /* MEMSVC_HINT_UPCOMING: tensors about to be used */
    size_t              num_handles;
} eng_hint_t;

memsvc_status_t eng_hint(eng_t *eng, const eng_hint_t *hint);

/* Run the completions that are due now (real clock: by the wall clock). Returns how many. */
size_t eng_progress(eng_t *eng);
/* Virtual clock: jump to the next completion and run it. false when nothing is pending. */
bool   eng_step(eng_t *eng);
/* Time of the next pending completion, or SIM_TIME_NEVER. */
sim_time_t eng_next_event(const eng_t *eng);

/* Lend the policy the owner's operator graph (policy.h, pol_neighbours); NULL: none. */
void eng_set_graph(eng_t *eng, const pol_graph_ops_t *ops, void *owner);

/* A tensor's recompute cost changed (its recipe grew: an in-place operator mutated it, a view
 * of it was taken). MEMSVC_ERR_NOT_FOUND for a stale handle. */
memsvc_status_t eng_set_recompute_ns(eng_t *eng, eng_handle_t handle, uint64_t recompute_ns);

/* Charge recompute work to a device's compute stream (replay); returns when it completes. */
sim_time_t eng_charge_compute(eng_t *eng, unsigned device, sim_time_t duration, bool recompute);

memsvc_status_t eng_dev_stats(const eng_t *eng, unsigned device, eng_dev_stats_t *stats_p);
void            eng_stats(const eng_t *eng, eng_stats_t *stats_p);
void            eng_print_stats(const eng_t *eng, FILE *out);

/* Visit the tensors of one job (job == UINT32_MAX: all). Stops when fn returns false. */
void eng_foreach(eng_t *eng, uint32_t job, bool (*fn)(void *arg, const eng_tensor_info_t *info),
                 void *arg);

/*
 * Visit the tensors of one job (UINT32_MAX: all) from registry position *cursor_p on, at most
 * `visit` positions (bounded work per call, whatever the job's share of the registry). On
 * return *cursor_p is where to go on, or 0 when the registry was walked to its end. A tensor
 * that lives through a whole walk is visited exactly once (positions do not move). Stops early
 * (and *cursor_p points at the tensor fn declined) when fn returns false.
 */
void eng_foreach_from(eng_t *eng, uint32_t job, uint64_t *cursor_p, uint32_t visit,
                      bool (*fn)(void *arg, const eng_tensor_info_t *info), void *arg);

/*
 * Told of every change in where tensors are: a tensor of `job` entered (tensors +1, bytes +size)
 * or left (-1, -size) `state`. Creation enters, freeing leaves. One observer; NULL: none.
 */
typedef void (*eng_usage_cb_t)(void *arg, uint32_t job, memsvc_state_t state, int tensors,
                               int64_t bytes);
void eng_set_usage_observer(eng_t *eng, eng_usage_cb_t cb, void *arg);

/*
 * The peer tier (desc.peer_bytes > 0): room in other nodes' host pools, reached over the nic,
 * below the host pool and ordered against the disk by their bandwidths (the faster first). In
 * phantom memory its moves take their simulated time only. In backed memory its bytes are
 * moved by the owner of the engine (memsvcd) through these operations, which complete later:
 *   write: keep `len` bytes of src (copied before the call returns) on a peer as object h;
 *   read:  fetch object h;
 *   release: object h is not needed any more (a write or read of it may still be under way).
 * Each write and read ends with one eng_far_done(h, move_id, ...), engine lock held, never
 * from inside the call that started it. Without them, a backed engine has no peer tier.
 */
typedef struct eng_far_ops {
    void *arg;
    void (*write)(void *arg, eng_handle_t h, uint32_t move_id, const void *src, uint64_t len);
    void (*read)(void *arg, eng_handle_t h, uint32_t move_id, uint64_t len);
    void (*release)(void *arg, eng_handle_t h);
} eng_far_ops_t;

void eng_set_far_ops(eng_t *eng, const eng_far_ops_t *ops);

/*
 * A write or read of the peer tier ended: status, and for a read the object's bytes (len of
 * them; copied before it returns). Stale ends (the move was canceled, the tensor freed) are
 * ignored. A failed write leaves the tensor where it was (on its device or on host); a failed
 * read loses it: its acquires answer MEMSVC_ERR_IO from then on (the peer holding its only
 * copy is gone), and it can only be freed.
 */
void eng_far_done(eng_t *eng, eng_handle_t h, uint32_t move_id, memsvc_status_t status,
                  const void *bytes, uint64_t len);

/*
 * Asked before a tensor that no engine pin holds leaves its device (a swap-out or a drop, the
 * policy's or asked for): false keeps it there, and the move is refused with MEMSVC_ERR_PINNED
 * as if it were pinned (something outside the engine holds it: memsvcd's pin tables, see
 * docs/protocol.md, "Pin table"). Told before a tensor is freed (freeing = true: the answer is
 * not heeded). The callback must not call back into the engine. One guard; NULL: none.
 */
typedef bool (*eng_guard_cb_t)(void *arg, eng_handle_t handle, bool freeing);
void eng_set_guard(eng_t *eng, eng_guard_cb_t cb, void *arg);

/* Bytes of engine metadata held per live tensor at the moment (registry + allocator). */
double eng_metadata_per_tensor(const eng_t *eng);

/* ---- the access timeline (memsvc/eng_timeline.c) ------------------------------------------ */

/*
 * Per step, every alloc/acquire/release/free by tensor key, with the step, layer, micro-batch
 * and phase current at the time (from the hints of the tensor's job and rank). A step starts at
 * a STEP_BEGIN whose step number differs from the current one (or has none); only the current
 * and the previous step are kept. Recorded when the policy asks for it (pol_ops_t
 * .wants_timeline) or when enabled here (a report, a test).
 */
void eng_timeline_enable(eng_t *eng, bool on);
/* Entries of the previous step (prev) or of the current one; valid until the next request. */
void eng_timeline(const eng_t *eng, bool prev, const pol_tl_entry_t **entries_p, size_t *n_p);
const char *eng_timeline_key(const eng_t *eng, uint32_t key_id); /* NULL if unknown */
/* Interned keys held now (bounded by the keys of the two steps kept). */
size_t eng_timeline_keys(const eng_t *eng);

/* ---- the decision log (memsvc/eng_declog.c) ---------------------------------------------- */

/* One move a policy asked for, with its reason and the engine's answer. */
typedef struct eng_decision {
    sim_time_t      time;
    uint64_t        handle, bytes;
    uint32_t        job;
    unsigned        device;
    pol_action_t    action;
    memsvc_status_t status;  /* MEMSVC_OK / MEMSVC_INPROGRESS: done or started; else refused */
    const char     *key;
    const char     *reason;  /* the class, as the policy named it */
    const char     *detail;  /* "" if none */
} eng_decision_t;

/* Count of one (reason, action) pair: moves accepted, their bytes, and moves refused. */
typedef struct eng_decision_count {
    const char   *reason;
    pol_action_t  action;
    uint64_t      count, bytes, refused;
} eng_decision_count_t;

/* Ring capacity (default 1024 entries; 0 keeps counters only). Clears the ring.
 * MEMSVC_ERR_NO_RESOURCE if it cannot be allocated (the old ring stays). */
memsvc_status_t eng_decision_log_size(eng_t *eng, size_t entries);
/* Visit the ring, oldest first; stops when fn returns false. */
void eng_decisions(const eng_t *eng, bool (*fn)(void *arg, const eng_decision_t *d), void *arg);
/* Visit the counters, by reason in first-seen order then by action; pairs with no moves are
 * skipped. Stops when fn returns false. */
void eng_decision_counts(const eng_t *eng,
                         bool (*fn)(void *arg, const eng_decision_count_t *c), void *arg);
/* Moves logged since creation (accepted + refused), and how many fell out of the ring. */
uint64_t eng_decision_total(const eng_t *eng, uint64_t *overwritten_p);
/* The log as one JSON object: {"policy", "total", "overwritten", "by_action", "by_reason",
 * "recent": the last max_recent entries of the ring}. MEMSVC_ERR_IO on a write error. */
memsvc_status_t eng_decision_log_json(const eng_t *eng, FILE *out, size_t max_recent);

/* ---- state machine --------------------------------------------------------------------- */

typedef enum eng_op {
    /* A new tensor starts on_device (placed at once) or moving_in (waiting for room). */
    ENG_OP_PLACED,         /* moving_in -> on_device: room found (and transfer done) */
    ENG_OP_SWAP_OUT,       /* on_device -> moving_out (to host, or to disk when host is full) */
    ENG_OP_SPILL,          /* on_host -> moving_out (to disk) */
    ENG_OP_OUT_DONE,       /* moving_out -> on_host (swap-out finished) */
    ENG_OP_SPILL_DONE,     /* moving_out -> on_disk (spill finished) */
    ENG_OP_CANCEL_OUT,     /* moving_out -> on_device (acquired while still moving out) */
    ENG_OP_SWAP_IN,        /* on_host / on_disk -> moving_in */
    ENG_OP_ABORT_TO_HOST,  /* moving_in -> on_host (no room could be made) */
    ENG_OP_ABORT_TO_DISK,  /* moving_in -> on_disk (no room could be made) */
    ENG_OP_ABORT_TO_DROPPED, /* moving_in -> dropped (no room to recompute into) */
    ENG_OP_DROP,           /* on_device -> dropped */
    ENG_OP_RECOMPUTE,      /* dropped -> on_device (owner recomputes) */
    ENG_OP_RECOMPUTE_WAIT, /* dropped -> moving_in (waiting for room to recompute into) */
    ENG_OP_FREE,           /* any live state -> freed */
    ENG_OP_PEER_DONE,      /* moving_out -> on_peer (a swap-out or spill to the peer tier done) */
    ENG_OP_ABORT_TO_PEER,  /* moving_in -> on_peer (no room, or its bytes could not be fetched) */
    ENG_OP_COUNT
} eng_op_t;

/* The transition table: MEMSVC_OK and *next_p, or MEMSVC_ERR_ILLEGAL_STATE. */
memsvc_status_t eng_transition(memsvc_state_t from, eng_op_t op, memsvc_state_t *next_p);
const char     *eng_op_name(eng_op_t op);

#endif /* ENG_H */
