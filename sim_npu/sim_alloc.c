/* sim_alloc.c - TLSF-style device allocator: segregated free lists, bitmaps, O(1) coalescing */
#include "sim_npu/sim_alloc.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/*
 * Sizes are counted in granules of SIM_ALLOC_ALIGN bytes. A free block of g granules lives in
 * list (fl, sl): fl is the position of g's top bit (shifted so that small sizes share fl 0)
 * and sl the next SL_LOG bits, so each power-of-two range is split in SL_COUNT lists. Two
 * levels of bitmaps find the first non-empty list at or above a class in O(1).
 *
 * Every block (free or live) has a 48-byte header from a pooled slab, linked to its address
 * neighbours, so a free merges with free neighbours in O(1) with no boundary tags in the
 * managed range (which may be phantom memory).
 */
#define SIM_GRAN_SHIFT 9
#define SL_LOG         5
#define SL_COUNT       (1u << SL_LOG)
#define FL_COUNT       (64 - SIM_GRAN_SHIFT - SL_LOG + 1)
#define SLAB_FIRST     (64u << 10) /* the first slab: small allocators stay small */
#define SLAB_BYTES     (2u << 20)  /* later slabs: one huge page where the kernel gives them */

#define BLOCK_FREE_BIT  1ull   /* in offset_flags: block is free */
#define BLOCK_BYTES_BIT 2ull   /* in offset_flags: a byte-mode block; size_slack is its size */
#define BLOCK_SLACK_MSK 511ull /* in size_slack: rounded size - requested size */

struct sim_alloc_block {
    uint64_t           offset_flags; /* offset | BLOCK_FREE_BIT */
    uint64_t           size_slack;   /* rounded size | (size - requested) */
    sim_alloc_block_t *prev_phys;    /* address-ordered neighbours, NULL at the ends */
    sim_alloc_block_t *next_phys;
    sim_alloc_block_t *prev_free;    /* free list of its class (free blocks); pool link */
    sim_alloc_block_t *next_free;
};

typedef struct sim_alloc_slab {
    struct sim_alloc_slab *next;
    sim_alloc_block_t      blocks[];
} sim_alloc_slab_t;

struct sim_alloc {
    uint64_t           capacity;
    sim_alloc_mode_t   mode;
    uint64_t           fl_bitmap;               /* bit fl: some list in row fl is non-empty */
    uint32_t           sl_bitmap[FL_COUNT];     /* bit sl: list (fl, sl) is non-empty */
    sim_alloc_block_t *lists[FL_COUNT][SL_COUNT];
    sim_alloc_slab_t  *slabs;                   /* every slab, for destroy */
    sim_alloc_block_t *spare;                   /* returned headers, linked by next_free */
    sim_alloc_block_t *bump, *bump_end;         /* never-used headers of the newest slab */
    uint64_t           allocated, reserved, free_blocks, live_blocks;
    uint64_t           peak_allocated, peak_reserved, high_water;
    uint64_t           fail_oom, fail_fragmented;
};

static inline uint64_t blk_offset(const sim_alloc_block_t *b)
{
    return b->offset_flags & ~(BLOCK_FREE_BIT | BLOCK_BYTES_BIT);
}

static inline uint64_t blk_size(const sim_alloc_block_t *b)
{
    return (b->offset_flags & BLOCK_BYTES_BIT) ? b->size_slack : (b->size_slack & ~BLOCK_SLACK_MSK);
}

static inline bool blk_is_free(const sim_alloc_block_t *b)
{
    return (b->offset_flags & BLOCK_FREE_BIT) != 0;
}

static inline int sim_log2(uint64_t x)
{
    return 63 - __builtin_clzll(x);
}

/* Class of a free block of g granules (g >= 1). */
static inline void sim_mapping(uint64_t g, unsigned *fl_p, unsigned *sl_p)
{
    if (g < SL_COUNT) {
        *fl_p = 0;
        *sl_p = (unsigned)g;
    } else {
        int t = sim_log2(g);

        *fl_p = (unsigned)(t - SL_LOG + 1);
        *sl_p = (unsigned)((g >> (t - SL_LOG)) ^ SL_COUNT);
    }
}

/* ---- header pool --------------------------------------------------------------------------- */

/*
 * A header: a returned one if any (recently used, so likely cached), else the next unused one
 * of the newest slab. The first slab is small; later ones are 2 MiB, aligned and advised as
 * huge pages so that a million headers cost few TLB entries. Headers are touched only when
 * first used. NULL when out of memory.
 */
static sim_alloc_block_t *sim_block_get(sim_alloc_t *a)
{
    sim_alloc_block_t *b = a->spare;
    sim_alloc_slab_t  *slab;

    if (b != NULL) {
        a->spare = b->next_free;
        return b;
    }
    if (a->bump == a->bump_end) {
        size_t bytes = (a->slabs == NULL) ? SLAB_FIRST : SLAB_BYTES;

        slab = aligned_alloc(bytes, bytes);
        if (slab == NULL) {
            return NULL;
        }
        if (bytes == SLAB_BYTES) {
            madvise(slab, bytes, MADV_HUGEPAGE); /* advice only: failure is harmless */
        }
        slab->next  = a->slabs;
        a->slabs    = slab;
        a->bump     = slab->blocks;
        a->bump_end = slab->blocks + (bytes - sizeof(*slab)) / sizeof(*a->bump);
    }
    return a->bump++;
}

static void sim_block_put(sim_alloc_t *a, sim_alloc_block_t *b)
{
    b->offset_flags = 0;
    b->size_slack   = 0;
    b->next_free    = a->spare;
    a->spare        = b;
}

/* ---- free lists ---------------------------------------------------------------------------- */

static void sim_free_insert(sim_alloc_t *a, sim_alloc_block_t *b)
{
    unsigned           fl, sl;
    sim_alloc_block_t *head;

    sim_mapping(blk_size(b) >> SIM_GRAN_SHIFT, &fl, &sl);
    head            = a->lists[fl][sl];
    b->offset_flags |= BLOCK_FREE_BIT;
    b->size_slack   = blk_size(b);
    b->prev_free    = NULL;
    b->next_free    = head;
    if (head != NULL) {
        head->prev_free = b;
    }
    a->lists[fl][sl] = b;
    a->fl_bitmap    |= 1ull << fl;
    a->sl_bitmap[fl] |= 1u << sl;
    a->free_blocks++;
}

static void sim_free_remove(sim_alloc_t *a, sim_alloc_block_t *b)
{
    unsigned fl, sl;

    sim_mapping(blk_size(b) >> SIM_GRAN_SHIFT, &fl, &sl);
    if (b->prev_free != NULL) {
        b->prev_free->next_free = b->next_free;
    } else {
        a->lists[fl][sl] = b->next_free;
        if (b->next_free == NULL) {
            a->sl_bitmap[fl] &= ~(1u << sl);
            if (a->sl_bitmap[fl] == 0) {
                a->fl_bitmap &= ~(1ull << fl);
            }
        }
    }
    if (b->next_free != NULL) {
        b->next_free->prev_free = b->prev_free;
    }
    b->offset_flags &= ~BLOCK_FREE_BIT;
    a->free_blocks--;
}

/* First non-empty list at or above class (fl, sl), or NULL. */
static sim_alloc_block_t *sim_find_list(const sim_alloc_t *a, unsigned fl, unsigned sl)
{
    uint32_t sl_map = (sl < SL_COUNT) ? (a->sl_bitmap[fl] & (~0u << sl)) : 0;

    if (sl_map == 0) {
        uint64_t fl_map = (fl + 1 < 64) ? (a->fl_bitmap & (~0ull << (fl + 1))) : 0;

        if (fl_map == 0) {
            return NULL;
        }
        fl     = (unsigned)__builtin_ctzll(fl_map);
        sl_map = a->sl_bitmap[fl];
    }
    return a->lists[fl][__builtin_ctz(sl_map)];
}

/*
 * A free block of at least g granules, or NULL if there is none. Good fit: the lists whose
 * every block is large enough are tried first (O(1)); failing that, the list of g's own class
 * is searched, so that NULL really means no block is large enough.
 */
static sim_alloc_block_t *sim_find_fit(const sim_alloc_t *a, uint64_t g)
{
    sim_alloc_block_t *b;
    unsigned           fl, sl;
    uint64_t           up = g;

    if (g >= SL_COUNT) {
        up = g + (1ull << (sim_log2(g) - SL_LOG)) - 1;
    }
    if (up >= g) { /* no wrap-around */
        sim_mapping(up, &fl, &sl);
        if (fl < FL_COUNT) {
            b = sim_find_list(a, fl, sl);
            if (b != NULL) {
                return b;
            }
        }
    }
    sim_mapping(g, &fl, &sl);
    if (fl >= FL_COUNT) {
        return NULL;
    }
    for (b = a->lists[fl][sl]; b != NULL; b = b->next_free) {
        if ((blk_size(b) >> SIM_GRAN_SHIFT) >= g) {
            return b;
        }
    }
    return NULL;
}

/* ---- API ----------------------------------------------------------------------------------- */

memsvc_status_t sim_alloc_create(uint64_t capacity, sim_alloc_t **alloc_p)
{
    return sim_alloc_create_mode(capacity, SIM_ALLOC_TLSF, alloc_p);
}

const char *sim_alloc_mode_name(sim_alloc_mode_t mode)
{
    return (mode == SIM_ALLOC_BYTES) ? "bytes" : "tlsf";
}

memsvc_status_t sim_alloc_create_mode(uint64_t capacity, sim_alloc_mode_t mode,
                                      sim_alloc_t **alloc_p)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *b;

    if (mode != SIM_ALLOC_BYTES) {
        capacity &= ~(uint64_t)(SIM_ALLOC_ALIGN - 1);
    }
    if ((alloc_p == NULL) || (capacity == 0) ||
        (mode != SIM_ALLOC_TLSF && mode != SIM_ALLOC_BYTES)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        goto err_nomem;
    }
    a->capacity = capacity;
    a->mode     = mode;
    if (mode == SIM_ALLOC_BYTES) {
        *alloc_p = a; /* no free lists: a count of bytes */
        return MEMSVC_OK;
    }
    b           = sim_block_get(a);
    if (b == NULL) {
        goto err_free_alloc;
    }
    b->offset_flags = 0;
    b->size_slack   = capacity;
    b->prev_phys    = NULL;
    b->next_phys    = NULL;
    sim_free_insert(a, b);
    *alloc_p = a;
    return MEMSVC_OK;

err_free_alloc:
    free(a);
err_nomem:
    fprintf(stderr, "sim_alloc: out of memory creating an allocator\n");
    return MEMSVC_ERR_NO_RESOURCE;
}

void sim_alloc_destroy(sim_alloc_t *alloc)
{
    sim_alloc_slab_t *s, *next;

    if (alloc == NULL) {
        return;
    }
    for (s = alloc->slabs; s != NULL; s = next) {
        next = s->next;
        free(s);
    }
    free(alloc);
}

/* Byte mode: a block is a header holding its size; the count is all there is. */
static memsvc_status_t sim_alloc_bytes(sim_alloc_t *a, uint64_t size, uint64_t *offset_p,
                                       sim_alloc_block_t **block_p)
{
    sim_alloc_block_t *b;

    if (size > a->capacity - a->reserved) {
        a->fail_oom++;
        return MEMSVC_ERR_NO_MEMORY;
    }
    b = sim_block_get(a);
    if (b == NULL) {
        fprintf(stderr, "sim_alloc: out of memory for block metadata\n");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    memset(b, 0, sizeof(*b));
    b->offset_flags = BLOCK_BYTES_BIT;
    b->size_slack   = size;
    a->allocated += size;
    a->reserved  += size;
    a->live_blocks++;
    if (a->allocated > a->peak_allocated) {
        a->peak_allocated = a->allocated;
    }
    if (a->reserved > a->peak_reserved) {
        a->peak_reserved = a->reserved;
    }
    if (a->reserved > a->high_water) {
        a->high_water = a->reserved;
    }
    *offset_p = 0;
    *block_p  = b;
    return MEMSVC_OK;
}

memsvc_status_t sim_alloc_alloc(sim_alloc_t *a, uint64_t size, uint64_t *offset_p,
                                sim_alloc_block_t **block_p)
{
    sim_alloc_block_t *b, *rest;
    uint64_t           rsize, end;

    if ((size == 0) || (offset_p == NULL) || (block_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (a->mode == SIM_ALLOC_BYTES) {
        return sim_alloc_bytes(a, size, offset_p, block_p);
    }
    rsize = (size + SIM_ALLOC_ALIGN - 1) & ~(uint64_t)(SIM_ALLOC_ALIGN - 1);
    if ((rsize < size) || (rsize > a->capacity - a->reserved)) {
        a->fail_oom++;
        return MEMSVC_ERR_NO_MEMORY;
    }
    b = sim_find_fit(a, rsize >> SIM_GRAN_SHIFT);
    if (b == NULL) {
        a->fail_fragmented++;
        return MEMSVC_ERR_FRAGMENTED;
    }
    if (blk_size(b) > rsize) {
        rest = sim_block_get(a);
        if (rest == NULL) {
            fprintf(stderr, "sim_alloc: out of memory for block metadata\n");
            return MEMSVC_ERR_NO_RESOURCE;
        }
        sim_free_remove(a, b);
        rest->offset_flags = blk_offset(b) + rsize;
        rest->size_slack   = blk_size(b) - rsize;
        rest->prev_phys    = b;
        rest->next_phys    = b->next_phys;
        if (b->next_phys != NULL) {
            b->next_phys->prev_phys = rest;
        }
        b->next_phys = rest;
        sim_free_insert(a, rest);
    } else {
        sim_free_remove(a, b);
    }
    b->size_slack = rsize | (rsize - size);
    b->prev_free  = NULL;
    b->next_free  = NULL;

    a->allocated += size;
    a->reserved  += rsize;
    a->live_blocks++;
    if (a->allocated > a->peak_allocated) {
        a->peak_allocated = a->allocated;
    }
    if (a->reserved > a->peak_reserved) {
        a->peak_reserved = a->reserved;
    }
    end = blk_offset(b) + rsize;
    if (end > a->high_water) {
        a->high_water = end;
    }
    *offset_p = blk_offset(b);
    *block_p  = b;
    return MEMSVC_OK;
}

void sim_alloc_free(sim_alloc_t *a, sim_alloc_block_t *b)
{
    sim_alloc_block_t *n, *p;
    uint64_t           rsize;

    if (b == NULL) {
        return;
    }
    if (blk_is_free(b) || (blk_size(b) == 0)) {
        fprintf(stderr, "sim_alloc: free of a block that is not live (double free?); ignored\n");
        return;
    }
    if (b->offset_flags & BLOCK_BYTES_BIT) {
        a->allocated -= b->size_slack;
        a->reserved -= b->size_slack;
        a->live_blocks--;
        b->offset_flags = BLOCK_FREE_BIT;
        b->size_slack   = 0;
        sim_block_put(a, b);
        return;
    }
    rsize         = blk_size(b);
    a->allocated -= rsize - (b->size_slack & BLOCK_SLACK_MSK);
    a->reserved  -= rsize;
    a->live_blocks--;
    b->size_slack = rsize;

    n = b->next_phys;
    if ((n != NULL) && blk_is_free(n)) {
        sim_free_remove(a, n);
        b->size_slack += blk_size(n);
        b->next_phys   = n->next_phys;
        if (n->next_phys != NULL) {
            n->next_phys->prev_phys = b;
        }
        sim_block_put(a, n);
    }
    p = b->prev_phys;
    if ((p != NULL) && blk_is_free(p)) {
        sim_free_remove(a, p);
        p->size_slack += blk_size(b);
        p->next_phys   = b->next_phys;
        if (b->next_phys != NULL) {
            b->next_phys->prev_phys = p;
        }
        sim_block_put(a, b);
        b = p;
    }
    sim_free_insert(a, b);
}

uint64_t sim_alloc_block_offset(const sim_alloc_block_t *block)
{
    return blk_offset(block);
}

uint64_t sim_alloc_block_size(const sim_alloc_block_t *block)
{
    return blk_size(block);
}

uint64_t sim_alloc_capacity(const sim_alloc_t *alloc)
{
    return alloc->capacity;
}

memsvc_status_t sim_alloc_can_fit(const sim_alloc_t *a, uint64_t size)
{
    uint64_t rsize;

    if (size == 0) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (a->mode == SIM_ALLOC_BYTES) {
        return (size <= a->capacity - a->reserved) ? MEMSVC_OK : MEMSVC_ERR_NO_MEMORY;
    }
    rsize = (size + SIM_ALLOC_ALIGN - 1) & ~(uint64_t)(SIM_ALLOC_ALIGN - 1);
    if ((rsize < size) || (rsize > a->capacity - a->reserved)) {
        return MEMSVC_ERR_NO_MEMORY;
    }
    return (sim_find_fit(a, rsize >> SIM_GRAN_SHIFT) != NULL) ? MEMSVC_OK : MEMSVC_ERR_FRAGMENTED;
}

/* Largest free block: the largest in the highest non-empty list. */
static uint64_t sim_largest_free(const sim_alloc_t *a)
{
    const sim_alloc_block_t *b;
    uint64_t                 best = 0;
    unsigned                 fl;

    if (a->mode == SIM_ALLOC_BYTES) {
        return a->capacity - a->reserved; /* no fragmentation */
    }
    if (a->fl_bitmap == 0) {
        return 0;
    }
    fl = (unsigned)sim_log2(a->fl_bitmap);
    for (b = a->lists[fl][31 - __builtin_clz(a->sl_bitmap[fl])]; b != NULL; b = b->next_free) {
        if (blk_size(b) > best) {
            best = blk_size(b);
        }
    }
    return best;
}

void sim_alloc_get_stats(const sim_alloc_t *a, sim_alloc_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    s->capacity        = a->capacity;
    s->allocated       = a->allocated;
    s->reserved        = a->reserved;
    s->free            = a->capacity - a->reserved;
    s->largest_free    = sim_largest_free(a);
    s->free_blocks     = (a->mode == SIM_ALLOC_BYTES) ? (s->free > 0) : a->free_blocks;
    s->live_blocks     = a->live_blocks;
    s->peak_allocated  = a->peak_allocated;
    s->peak_reserved   = a->peak_reserved;
    s->high_water      = a->high_water;
    s->fragmentation   = (s->free == 0) ? 0.0
                                        : 1.0 - (double)s->largest_free / (double)s->free;
    s->fail_oom        = a->fail_oom;
    s->fail_fragmented = a->fail_fragmented;
}

uint64_t sim_alloc_free_bytes(const sim_alloc_t *a)
{
    return a->capacity - a->reserved;
}

uint64_t sim_alloc_largest_free(const sim_alloc_t *a)
{
    return sim_largest_free(a);
}

size_t sim_alloc_block_overhead(void)
{
    return sizeof(sim_alloc_block_t);
}
