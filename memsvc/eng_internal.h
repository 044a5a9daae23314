/* eng_internal.h - the engine's own structures, shared by memsvc/eng_*.c only */
#ifndef ENG_INTERNAL_H
#define ENG_INTERNAL_H

#include "memsvc/eng.h"
#include "policy/policy.h"

#include <stddef.h>

/* How a tensor in moving_in becomes resident. */
enum eng_in_kind {
    ENG_IN_NEW,       /* a new allocation waiting for room */
    ENG_IN_HOST,      /* swap-in from the host pool */
    ENG_IN_DISK,      /* swap-in from the disk tier */
    ENG_IN_PEER,      /* swap-in from the peer tier */
    ENG_IN_RECOMPUTE  /* room for the owner to recompute into */
};

/* Where a tensor in moving_out goes. */
enum eng_out_kind {
    ENG_OUT_HOST,     /* device -> host */
    ENG_OUT_DISK,     /* device -> disk (host pool full) */
    ENG_OUT_SPILL,    /* host -> disk */
    ENG_OUT_PEER,     /* device -> peer tier (host pool full) */
    ENG_OUT_SPILL_PEER /* host -> peer tier */
};

#define ENG_TF_VALID     0x01u /* content is valid (false after a recompute, until written) */
#define ENG_TF_ON_LRU    0x02u /* linked on its device's LRU list */
#define ENG_TF_QUEUED    0x04u /* linked on its device's wait-for-room queue */
#define ENG_TF_IN_XFER   0x08u /* moving_in: room found, transfer running */
#define ENG_TF_HOSTBUF   0x10u /* holds host-pool space (host_ptr is NULL in phantom mode) */
#define ENG_TF_PEER      0x20u /* holds peer-tier room (on_peer, or the target of a move) */
#define ENG_TF_LOST      0x40u /* on_peer, and its bytes could not be fetched back: gone */
#define ENG_TF_FAR       0x80u /* a far write or read of it is under way (move_id names it) */

typedef struct eng_waiter {
    eng_done_cb_t      cb;
    void              *arg;
    sim_time_t         since;  /* when the wait began (stall accounting) */
    bool               pin;    /* pin when it completes */
    struct eng_waiter *next;
} eng_waiter_t;

/* Laid out tightly: a live tensor costs this struct plus its key (see eng_metadata_per_tensor). */
typedef struct eng_tensor {
    pol_tensor_t       pub;        /* what policies see; first member */
    uint32_t           rank;
    uint32_t           move_id;    /* id of the move in flight (stale events are ignored) */
    sim_alloc_block_t *block;      /* HBM block (on device, moving out, moving in placed) */
    void              *host_ptr;   /* host copy (on host, or target of a swap-out) */
    sim_alloc_block_t *disk_block; /* disk copy (on disk, or target of a spill) */
    struct eng_tensor *prev, *next;/* LRU list or wait queue of its device */
    eng_waiter_t      *waiters;    /* acquires waiting for it to become resident */
    uint8_t            flags;      /* ENG_TF_* */
    uint8_t            in_kind;    /* enum eng_in_kind while moving_in */
    uint8_t            out_kind;   /* enum eng_out_kind while moving_out */
    uint8_t            loans;      /* eng_lend: transfers outside the engine using its bytes */
    uint32_t           hash;       /* of (job, key) */
    char               key[];      /* NUL-terminated */
} eng_tensor_t;

#define ENG_TENSOR_BYTES(keylen) (offsetof(eng_tensor_t, key) + (keylen) + 1)

typedef struct eng_list {
    eng_tensor_t *head, *tail;
} eng_list_t;

typedef struct eng_dev {
    struct eng     *eng;              /* back pointer, for clock events */
    sim_device_t   *sim;
    eng_list_t      lru;              /* on device, unpinned, least recently used first */
    eng_list_t      queue;            /* moving_in, waiting for room, FIFO */
    uint64_t        outgoing;         /* bytes of blocks being moved out */
    bool            service_pending;  /* a service event is scheduled */
    eng_dev_stats_t st;               /* alloc figures are filled in on demand */
    uint64_t        resident;         /* bytes of blocks held */
} eng_dev_t;

/* A move in flight: the clock event that ends it. Stale ones (tensor freed, move canceled)
 * find a different move_id or no tensor and do nothing. */
typedef struct eng_move {
    struct eng      *eng;
    eng_handle_t     handle;
    uint32_t         move_id;
    struct eng_move *prev, *next; /* all records, so that destroy can free them */
} eng_move_t;

struct pol_ctx {
    struct eng *eng;
};

/* ---- timeline (eng_timeline.c) ---- */

/* What the hints of one (job, rank) last said. */
typedef struct eng_tl_where {
    uint32_t job, rank;
    int32_t  step;
    int16_t  layer, microbatch;
    uint8_t  phase;
} eng_tl_where_t;

typedef struct eng_tl_steplog {
    pol_tl_entry_t *e;
    size_t          n, cap;
} eng_tl_steplog_t;

/* An interned (job, key); ids are stable while either kept step refers to them. */
typedef struct eng_tl_key {
    char    *key;       /* NULL: free id */
    uint32_t job, hash;
    uint32_t next_free; /* free list, when key is NULL */
} eng_tl_key_t;

typedef struct eng_tl {
    bool              on;           /* recording (policy asked, or enabled) */
    bool              forced;       /* eng_timeline_enable */
    bool              started;      /* a step boundary was seen */
    int32_t           step;         /* step number of `cur` */
    eng_tl_steplog_t  cur, prev;
    uint64_t          overflow;     /* entries not kept: a step longer than ENG_TL_MAX_ENTRIES */
    eng_tl_key_t     *keys;
    uint32_t          num_keys, cap_keys, free_key, live_keys;
    uint32_t         *kbuckets;     /* id + 1, linear probing; 0: empty */
    uint32_t          num_kbuckets;
    eng_tl_where_t   *where;
    size_t            num_where, cap_where;
} eng_tl_t;

#define ENG_TL_MAX_ENTRIES (1u << 22) /* per step */

/* ---- decision log (eng_declog.c) ---- */

#define ENG_DL_REASONS    64  /* distinct reason classes counted; later ones count as "other" */
#define ENG_DL_DETAIL     96

typedef struct eng_dl_rec {
    sim_time_t time;
    uint64_t   handle, bytes;
    uint32_t   job;
    uint16_t   device;
    uint8_t    action;
    uint8_t    reason;
    int32_t    status;
    char       detail[ENG_DL_DETAIL];
    char       key[MEMSVC_KEY_MAX + 1];
} eng_dl_rec_t;

typedef struct eng_dl {
    eng_dl_rec_t *ring;
    size_t        cap, head, n;      /* head: next slot written */
    bool          sized;             /* capacity set (else the default on first use) */
    uint64_t      total;
    char         *reasons[ENG_DL_REASONS];
    unsigned      num_reasons;
    uint64_t      count[ENG_DL_REASONS][POL_ACTION_COUNT];
    uint64_t      bytes[ENG_DL_REASONS][POL_ACTION_COUNT];
    uint64_t      refused[ENG_DL_REASONS][POL_ACTION_COUNT];
    unsigned      cur_reason;        /* for the moves asked next */
    char          cur_detail[ENG_DL_DETAIL];
} eng_dl_t;

#define ENG_DL_DEFAULT_CAP 1024

struct eng {
    sim_clock_t     *clock;
    sim_node_t      *node;
    unsigned         num_devices;
    eng_dev_t       *devs;

    const pol_ops_t *pol;
    void            *pol_state;
    pol_ctx_t        pol_ctx;
    bool             pol_defer;    /* eng_policy_defer: resident acquires notified later */
    eng_handle_t    *pol_deferred; /* their handles, in order, until eng_policy_flush */
    size_t           pol_ndeferred, pol_cap_deferred;
    char             pol_spec[128];

    /* registry: handle = generation << 32 | slot; free slots are chained through `slots`
     * (an odd value: next free slot << 1 | 1) */
    eng_tensor_t   **slots;
    uint32_t        *gens;
    uint64_t         free_head;  /* first free slot + 1, 0 if none */
    uint32_t         num_slots, cap_slots;
    uint64_t         live;

    /* key hash: (job, key) -> hash << 32 | slot + 1, linear probing (0: empty); keeping the
     * hash in the bucket lets probes and deletions run without touching the tensors */
    uint64_t        *buckets;
    uint64_t         num_buckets;

    uint32_t         next_move_id;
    eng_move_t      *moves;           /* records of pending move events */
    uint64_t         moves_in_flight;

    eng_tl_t         tl;              /* access timeline */
    eng_dl_t         dl;              /* decision log */

    const pol_graph_ops_t *graph;     /* the owner's operator graph, or NULL */
    void                  *graph_owner;

    eng_usage_cb_t   usage_cb;        /* eng_set_usage_observer */
    void            *usage_arg;

    eng_far_ops_t    far;             /* eng_set_far_ops (backed peer tier) */
    bool             has_far;
    eng_guard_cb_t   guard_cb;        /* eng_set_guard */
    void            *guard_arg;
    eng_list_t       lent_freed;      /* freed while lent: kept until their last loan ends */
};

/* registry (eng_registry.c) */
memsvc_status_t eng_reg_init(eng_t *eng);
void            eng_reg_cleanup(eng_t *eng);
memsvc_status_t eng_reg_insert(eng_t *eng, eng_tensor_t *t);   /* assigns pub.handle */
void            eng_reg_remove(eng_t *eng, eng_tensor_t *t);
eng_tensor_t   *eng_reg_get(const eng_t *eng, eng_handle_t handle); /* NULL if stale */
eng_tensor_t   *eng_reg_slot(const eng_t *eng, uint32_t slot);      /* NULL if free */
eng_tensor_t   *eng_reg_find(const eng_t *eng, uint32_t job, const char *key);
uint32_t        eng_key_hash(uint32_t job, const char *key, size_t len);
eng_tensor_t   *eng_reg_find_hashed(const eng_t *eng, uint32_t job, const char *key, uint32_t hash);
size_t          eng_reg_bytes(const eng_t *eng);               /* table memory */

/* timeline (eng_timeline.c) */
memsvc_status_t eng_tl_init(eng_t *eng, bool on);
void            eng_tl_cleanup(eng_t *eng);
void            eng_tl_hint(eng_t *eng, const eng_hint_t *hint);  /* before the policy's */
void            eng_tl_record(eng_t *eng, const eng_tensor_t *t, pol_access_t a);

/* decision log (eng_declog.c) */
void            eng_dl_cleanup(eng_t *eng);
void            eng_dl_record(eng_t *eng, pol_action_t action, const eng_tensor_t *t,
                              memsvc_status_t status);
/* Around each call into the policy: save and clear the current reason; restore it after. */
typedef struct eng_dl_saved {
    unsigned reason;
    char     detail[ENG_DL_DETAIL];
} eng_dl_saved_t;
void            eng_dl_enter(eng_t *eng, eng_dl_saved_t *saved);
void            eng_dl_leave(eng_t *eng, const eng_dl_saved_t *saved);

/* lists */
void eng_list_append(eng_list_t *l, eng_tensor_t *t);
void eng_list_remove(eng_list_t *l, eng_tensor_t *t);

#endif /* ENG_INTERNAL_H */
