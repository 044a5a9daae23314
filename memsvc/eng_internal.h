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
    ENG_IN_RECOMPUTE  /* room for the owner to recompute into */
};

/* Where a tensor in moving_out goes. */
enum eng_out_kind {
    ENG_OUT_HOST,     /* device -> host */
    ENG_OUT_DISK,     /* device -> disk (host pool full) */
    ENG_OUT_SPILL     /* host -> disk */
};

#define ENG_TF_VALID     0x01u /* content is valid (false after a recompute, until written) */
#define ENG_TF_ON_LRU    0x02u /* linked on its device's LRU list */
#define ENG_TF_QUEUED    0x04u /* linked on its device's wait-for-room queue */
#define ENG_TF_IN_XFER   0x08u /* moving_in: room found, transfer running */
#define ENG_TF_HOSTBUF   0x10u /* holds host-pool space (host_ptr is NULL in phantom mode) */

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

struct eng {
    sim_clock_t     *clock;
    sim_node_t      *node;
    unsigned         num_devices;
    eng_dev_t       *devs;

    const pol_ops_t *pol;
    void            *pol_state;
    pol_ctx_t        pol_ctx;
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

/* lists */
void eng_list_append(eng_list_t *l, eng_tensor_t *t);
void eng_list_remove(eng_list_t *l, eng_tensor_t *t);

#endif /* ENG_INTERNAL_H */
