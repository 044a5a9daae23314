/* sim_alloc.h - device memory allocator: offsets in one NPU's HBM, 512 B aligned, coalescing */
#ifndef SIM_ALLOC_H
#define SIM_ALLOC_H

#include "client/memsvc_status.h"

#include <stddef.h>
#include <stdint.h>

#define SIM_ALLOC_ALIGN 512u

typedef struct sim_alloc       sim_alloc_t;
typedef struct sim_alloc_block sim_alloc_block_t; /* opaque: one allocated block */

typedef struct sim_alloc_stats {
    uint64_t capacity;        /* bytes managed */
    uint64_t allocated;       /* bytes requested by live allocations */
    uint64_t reserved;        /* bytes held by live allocations (rounded to alignment) */
    uint64_t free;            /* capacity - reserved */
    uint64_t largest_free;    /* largest free block */
    uint64_t free_blocks;     /* number of free blocks */
    uint64_t live_blocks;     /* number of live allocations */
    uint64_t peak_allocated;  /* highest `allocated` seen */
    uint64_t peak_reserved;   /* highest `reserved` seen */
    uint64_t high_water;      /* highest end offset ever handed out */
    double   fragmentation;   /* 1 - largest_free / free (0 when free == 0): external */
    uint64_t fail_oom;        /* allocations refused: not enough free bytes */
    uint64_t fail_fragmented; /* allocations refused: enough bytes, no block large enough */
} sim_alloc_stats_t;

/* How an allocator places blocks. */
typedef enum sim_alloc_mode {
    SIM_ALLOC_TLSF  = 0, /* offsets in one range, 512 B granules, coalescing: fragmentation real */
    SIM_ALLOC_BYTES = 1  /* bytes counted only: no rounding, no fragmentation, every offset 0
                            (phantom memory only; what byte-counting simulators model) */
} sim_alloc_mode_t;

/* Create an allocator over [0, capacity). capacity is rounded down to the alignment. */
memsvc_status_t sim_alloc_create(uint64_t capacity, sim_alloc_t **alloc_p);
/* The same in a given mode (SIM_ALLOC_BYTES keeps the capacity as given). */
memsvc_status_t sim_alloc_create_mode(uint64_t capacity, sim_alloc_mode_t mode,
                                      sim_alloc_t **alloc_p);
const char     *sim_alloc_mode_name(sim_alloc_mode_t mode); /* "tlsf", "bytes" */
void            sim_alloc_destroy(sim_alloc_t *alloc);

/*
 * Allocate `size` bytes (size > 0). On success *offset_p is 512-B aligned and *block_p names
 * the block for sim_alloc_free. Errors: MEMSVC_ERR_NO_MEMORY (fewer free bytes than needed),
 * MEMSVC_ERR_FRAGMENTED (enough free bytes, no single block large enough),
 * MEMSVC_ERR_INVALID_PARAM (size 0), MEMSVC_ERR_NO_RESOURCE (metadata exhausted).
 */
memsvc_status_t sim_alloc_alloc(sim_alloc_t *alloc, uint64_t size, uint64_t *offset_p,
                                sim_alloc_block_t **block_p);

/* Free a block; it is merged with free neighbours. */
void sim_alloc_free(sim_alloc_t *alloc, sim_alloc_block_t *block);

/* Offset and rounded size of a live block. */
uint64_t sim_alloc_block_offset(const sim_alloc_block_t *block);
uint64_t sim_alloc_block_size(const sim_alloc_block_t *block);

/* Bytes managed (the capacity given to sim_alloc_create, rounded down to the alignment). */
uint64_t sim_alloc_capacity(const sim_alloc_t *alloc);

/* Free bytes (capacity - reserved), O(1); and the largest free block (walks one size class). */
uint64_t sim_alloc_free_bytes(const sim_alloc_t *alloc);
uint64_t sim_alloc_largest_free(const sim_alloc_t *alloc);

/* Would an allocation of `size` succeed now? */
memsvc_status_t sim_alloc_can_fit(const sim_alloc_t *alloc, uint64_t size);

void sim_alloc_get_stats(const sim_alloc_t *alloc, sim_alloc_stats_t *stats_p);

/* Bytes of allocator metadata per live block (for the per-tensor metadata figure). */
size_t sim_alloc_block_overhead(void);

#endif /* SIM_ALLOC_H */
