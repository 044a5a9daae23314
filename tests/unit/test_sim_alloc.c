/* test_sim_alloc.c - device allocator: alignment, coalescing, fragmentation, reference model */
#include "sim_npu/sim_alloc.h"
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>

#define A 512ull

static uint64_t round_up(uint64_t n)
{
    return (n + A - 1) / A * A;
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void test_create_and_params(void)
{
    sim_alloc_t       *a;
    sim_alloc_stats_t  s;
    sim_alloc_block_t *b;
    uint64_t           off;

    CU_ASSERT_EQUAL(sim_alloc_create(100, &a), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_alloc_create(0, &a), MEMSVC_ERR_INVALID_PARAM);
    TEST_ASSERT_OK(sim_alloc_create(1000, &a)); /* rounded down to 512 */
    CU_ASSERT_EQUAL(sim_alloc_capacity(a), 512);
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.capacity, 512);
    CU_ASSERT_EQUAL(s.free, 512);
    CU_ASSERT_EQUAL(s.largest_free, 512);
    CU_ASSERT_EQUAL(s.free_blocks, 1);
    CU_ASSERT_DOUBLE_EQUAL(s.fragmentation, 0.0, 1e-12);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 0, &off, &b), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_alloc_can_fit(a, 0), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, UINT64_MAX, &off, &b), MEMSVC_ERR_NO_MEMORY);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 513, &off, &b), MEMSVC_ERR_NO_MEMORY);
    TEST_ASSERT_OK(sim_alloc_alloc(a, 1, &off, &b));
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.free, 0);
    CU_ASSERT_EQUAL(s.largest_free, 0);
    CU_ASSERT_EQUAL(s.free_blocks, 0);
    CU_ASSERT_DOUBLE_EQUAL(s.fragmentation, 0.0, 1e-12); /* 0 when nothing is free */
    CU_ASSERT_EQUAL(s.fail_oom, 2);
    sim_alloc_free(a, b);
    sim_alloc_free(a, NULL);
    sim_alloc_destroy(a);
    sim_alloc_destroy(NULL);
    CU_ASSERT_TRUE(sim_alloc_block_overhead() > 0);
    CU_ASSERT_TRUE(sim_alloc_block_overhead() <= 48);
}

static void test_alignment_and_rounding(void)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *blocks[2000];
    sim_alloc_stats_t  s;
    uint64_t           off, x = 7, req = 0, res = 0;
    int                i;

    TEST_ASSERT_OK(sim_alloc_create(1ull << 30, &a));
    for (i = 0; i < 2000; i++) {
        uint64_t size = 1 + xorshift(&x) % 100000;

        TEST_ASSERT_OK(sim_alloc_alloc(a, size, &off, &blocks[i]));
        CU_ASSERT_EQUAL(off % A, 0);
        CU_ASSERT_EQUAL(sim_alloc_block_offset(blocks[i]), off);
        CU_ASSERT_EQUAL(sim_alloc_block_size(blocks[i]), round_up(size));
        req += size;
        res += round_up(size);
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.allocated, req);
    CU_ASSERT_EQUAL(s.reserved, res);
    CU_ASSERT_EQUAL(s.live_blocks, 2000);
    CU_ASSERT_EQUAL(s.peak_allocated, req);
    CU_ASSERT_EQUAL(s.peak_reserved, res);
    CU_ASSERT_EQUAL(s.high_water, res); /* nothing freed: packed from offset 0 */
    for (i = 0; i < 2000; i++) {
        sim_alloc_free(a, blocks[i]);
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.allocated, 0);
    CU_ASSERT_EQUAL(s.reserved, 0);
    CU_ASSERT_EQUAL(s.peak_allocated, req);
    CU_ASSERT_EQUAL(s.high_water, res);
    CU_ASSERT_EQUAL(s.free_blocks, 1);
    CU_ASSERT_EQUAL(s.largest_free, 1ull << 30);
    sim_alloc_destroy(a);
}

/* Free the middle, then each neighbour: always one free block; ends at full capacity. */
static void test_coalescing(void)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *b[3];
    sim_alloc_stats_t  s;
    uint64_t           off;
    int                order, i;
    static const int   orders[2][3] = { { 1, 0, 2 }, { 0, 2, 1 } };

    for (order = 0; order < 2; order++) {
        TEST_ASSERT_OK(sim_alloc_create(3 * 4096, &a));
        for (i = 0; i < 3; i++) {
            TEST_ASSERT_OK(sim_alloc_alloc(a, 4096, &off, &b[i]));
            CU_ASSERT_EQUAL(off, (uint64_t)i * 4096);
        }
        for (i = 0; i < 3; i++) {
            sim_alloc_free(a, b[orders[order][i]]);
            sim_alloc_get_stats(a, &s);
            CU_ASSERT_EQUAL(s.free, (uint64_t)(i + 1) * 4096);
            if ((order == 1) && (i == 1)) {
                CU_ASSERT_EQUAL(s.free_blocks, 2); /* the two ends, not adjacent */
            } else {
                CU_ASSERT_EQUAL(s.free_blocks, 1);
                CU_ASSERT_EQUAL(s.largest_free, s.free);
            }
        }
        CU_ASSERT_EQUAL(s.largest_free, 3 * 4096);
        /* The whole range is one block again. */
        TEST_ASSERT_OK(sim_alloc_alloc(a, 3 * 4096, &off, &b[0]));
        CU_ASSERT_EQUAL(off, 0);
        sim_alloc_destroy(a);
    }
}

/* 100 blocks, every other freed: 50 free blocks of 512 B, fragmentation 1 - 1/50. */
static void test_checkerboard_fragmentation(void)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *b[100], *x;
    sim_alloc_stats_t  s;
    uint64_t           off;
    int                i;

    TEST_ASSERT_OK(sim_alloc_create(100 * A, &a));
    for (i = 0; i < 100; i++) {
        TEST_ASSERT_OK(sim_alloc_alloc(a, A, &off, &b[i]));
    }
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 1, &off, &x), MEMSVC_ERR_NO_MEMORY);
    for (i = 0; i < 100; i += 2) {
        sim_alloc_free(a, b[i]);
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.free, 50 * A);
    CU_ASSERT_EQUAL(s.free_blocks, 50);
    CU_ASSERT_EQUAL(s.largest_free, A);
    CU_ASSERT_DOUBLE_EQUAL(s.fragmentation, 1.0 - 1.0 / 50.0, 1e-12);

    /* Enough bytes, no block: FRAGMENTED. More than free: NO_MEMORY. */
    CU_ASSERT_EQUAL(sim_alloc_can_fit(a, 2 * A), MEMSVC_ERR_FRAGMENTED);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 2 * A, &off, &x), MEMSVC_ERR_FRAGMENTED);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, A + 1, &off, &x), MEMSVC_ERR_FRAGMENTED);
    CU_ASSERT_EQUAL(sim_alloc_can_fit(a, 51 * A), MEMSVC_ERR_NO_MEMORY);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 51 * A, &off, &x), MEMSVC_ERR_NO_MEMORY);
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.fail_fragmented, 2);
    CU_ASSERT_EQUAL(s.fail_oom, 2);
    CU_ASSERT_EQUAL(sim_alloc_can_fit(a, A), MEMSVC_OK);
    TEST_ASSERT_OK(sim_alloc_alloc(a, A, &off, &x));
    CU_ASSERT_EQUAL(off % (2 * A), 0); /* one of the holes */

    /* Freeing one live neighbour joins three blocks. */
    sim_alloc_free(a, b[51]);
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.largest_free, 3 * A);
    CU_ASSERT_EQUAL(s.free_blocks, 48);
    sim_alloc_destroy(a);
}

/* Sizes 64 and 65 granules share a size class: the fit must skip the 64 to find the 65. */
static void test_same_class_fit(void)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *b[4], *x;
    sim_alloc_stats_t  s;
    uint64_t           off;

    TEST_ASSERT_OK(sim_alloc_create((64 + 1 + 65 + 1) * A, &a));
    TEST_ASSERT_OK(sim_alloc_alloc(a, 64 * A, &off, &b[0]));
    TEST_ASSERT_OK(sim_alloc_alloc(a, A, &off, &b[1]));
    TEST_ASSERT_OK(sim_alloc_alloc(a, 65 * A, &off, &b[2]));
    TEST_ASSERT_OK(sim_alloc_alloc(a, A, &off, &b[3]));
    sim_alloc_free(a, b[2]);
    sim_alloc_free(a, b[0]);
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.free_blocks, 2);
    CU_ASSERT_EQUAL(s.largest_free, 65 * A);
    CU_ASSERT_EQUAL(sim_alloc_can_fit(a, 65 * A), MEMSVC_OK);
    TEST_ASSERT_OK(sim_alloc_alloc(a, 65 * A, &off, &x));
    CU_ASSERT_EQUAL(off, 65 * A);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 65 * A, &off, &x), MEMSVC_ERR_NO_MEMORY);
    sim_alloc_destroy(a);
}

static void test_exhaustion_and_double_free(void)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *b[64], *x;
    sim_alloc_stats_t  s, s2;
    uint64_t           off;
    int                n = 0;

    TEST_ASSERT_OK(sim_alloc_create(1 << 20, &a));
    while (sim_alloc_alloc(a, 20000, &off, &x) == MEMSVC_OK) {
        CU_ASSERT_TRUE_FATAL(n < 64);
        b[n++] = x;
    }
    CU_ASSERT_EQUAL(n, (1 << 20) / round_up(20000));
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.fail_oom, 1);
    CU_ASSERT_EQUAL(s.free, (1 << 20) - n * round_up(20000));
    /* The remainder still serves a small request. */
    TEST_ASSERT_OK(sim_alloc_alloc(a, s.free, &off, &x));
    sim_alloc_free(a, x);

    /* A second free of the same block is refused and changes nothing. */
    sim_alloc_free(a, b[0]);
    sim_alloc_get_stats(a, &s);
    sim_alloc_free(a, b[0]);
    sim_alloc_get_stats(a, &s2);
    CU_ASSERT_EQUAL(memcmp(&s, &s2, sizeof(s)), 0);
    sim_alloc_destroy(a);
}

/* ---- randomized, against a reference model ------------------------------------------------ */

typedef struct ref_blk {
    uint64_t           off, size, req;
    sim_alloc_block_t *b;
} ref_blk_t;

static int ref_cmp(const void *x, const void *y)
{
    const ref_blk_t *p = x, *q = y;

    return (p->off < q->off) ? -1 : (p->off > q->off);
}

/* Check the allocator against the live set: no overlap, sums, free blocks, largest hole. */
static void ref_check(sim_alloc_t *a, ref_blk_t *live, size_t n, uint64_t cap)
{
    ref_blk_t        *sorted = malloc((n + 1) * sizeof(*sorted));
    sim_alloc_stats_t s;
    uint64_t          req = 0, res = 0, pos = 0, largest = 0, holes = 0;
    size_t            i;

    memcpy(sorted, live, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), ref_cmp);
    for (i = 0; i < n; i++) {
        CU_ASSERT_TRUE(sorted[i].off >= pos); /* no overlap */
        CU_ASSERT_EQUAL(sorted[i].off % A, 0);
        CU_ASSERT_EQUAL(sim_alloc_block_offset(sorted[i].b), sorted[i].off);
        CU_ASSERT_EQUAL(sim_alloc_block_size(sorted[i].b), sorted[i].size);
        if (sorted[i].off > pos) {
            holes++;
            largest = (sorted[i].off - pos > largest) ? sorted[i].off - pos : largest;
        }
        pos = sorted[i].off + sorted[i].size;
        req += sorted[i].req;
        res += sorted[i].size;
    }
    CU_ASSERT_TRUE(pos <= cap);
    if (pos < cap) {
        holes++;
        largest = (cap - pos > largest) ? cap - pos : largest;
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.allocated, req);
    CU_ASSERT_EQUAL(s.reserved, res);
    CU_ASSERT_EQUAL(s.free, cap - res);
    CU_ASSERT_EQUAL(s.live_blocks, n);
    CU_ASSERT_EQUAL(s.free_blocks, holes); /* fully coalesced */
    CU_ASSERT_EQUAL(s.largest_free, largest);
    CU_ASSERT_TRUE(s.peak_reserved >= s.reserved);
    CU_ASSERT_TRUE(s.peak_allocated >= s.allocated);
    CU_ASSERT_TRUE(s.high_water <= cap);
    free(sorted);
}

/*
 * The byte-counting mode: the checkerboard that TLSF refuses as FRAGMENTED fits, sizes are not
 * rounded, and the only failure is NO_MEMORY.
 */
static void test_bytes_mode(void)
{
    sim_alloc_t       *a;
    sim_alloc_block_t *b[8];
    sim_alloc_stats_t  st;
    uint64_t           off;
    int                i;

    TEST_ASSERT_OK(sim_alloc_create_mode(8 * A + 100, SIM_ALLOC_BYTES, &a));
    CU_ASSERT_EQUAL(sim_alloc_capacity(a), 8 * A + 100); /* not rounded */
    for (i = 0; i < 8; i++) {
        TEST_ASSERT_OK(sim_alloc_alloc(a, A, &off, &b[i]));
        CU_ASSERT_EQUAL(off, 0);
    }
    for (i = 0; i < 8; i += 2) {
        sim_alloc_free(a, b[i]); /* every other block: 4 x 512 B holes under TLSF */
    }
    CU_ASSERT_EQUAL(sim_alloc_free_bytes(a), 4 * A + 100);
    CU_ASSERT_EQUAL(sim_alloc_largest_free(a), 4 * A + 100);
    TEST_ASSERT_OK(sim_alloc_can_fit(a, 4 * A + 100));
    TEST_ASSERT_OK(sim_alloc_alloc(a, 4 * A + 99, &off, &b[0])); /* not rounded to 512 B */
    sim_alloc_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.allocated, 8 * A + 99);
    CU_ASSERT_EQUAL(st.reserved, 8 * A + 99);
    CU_ASSERT_EQUAL(st.peak_allocated, 8 * A + 99);
    CU_ASSERT_EQUAL(sim_alloc_block_size(b[0]), 4 * A + 99);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 2, &off, &b[2]), MEMSVC_ERR_NO_MEMORY);
    TEST_ASSERT_OK(sim_alloc_alloc(a, 1, &off, &b[2]));
    sim_alloc_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.free, 0);
    CU_ASSERT_EQUAL(st.fail_fragmented, 0);
    CU_ASSERT_EQUAL(st.fail_oom, 1);
    sim_alloc_free(a, b[2]);
    sim_alloc_free(a, b[0]);
    for (i = 1; i < 8; i += 2) {
        sim_alloc_free(a, b[i]);
    }
    sim_alloc_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.allocated, 0);
    CU_ASSERT_EQUAL(st.live_blocks, 0);
    CU_ASSERT_STRING_EQUAL(sim_alloc_mode_name(SIM_ALLOC_BYTES), "bytes");
    CU_ASSERT_STRING_EQUAL(sim_alloc_mode_name(SIM_ALLOC_TLSF), "tlsf");
    sim_alloc_destroy(a);
}

static void test_randomized_against_reference(void)
{
    const uint64_t     cap  = 64ull << 20;
    const size_t       maxn = 4096;
    ref_blk_t         *live = calloc(maxn, sizeof(*live));
    sim_alloc_t       *a;
    sim_alloc_block_t *b;
    sim_alloc_stats_t  s;
    uint64_t           x = 99, off, fails_oom = 0, fails_frag = 0;
    size_t             n = 0;
    int                op;

    TEST_ASSERT_OK(sim_alloc_create(cap, &a));
    for (op = 0; op < 40000; op++) {
        uint64_t r = xorshift(&x);

        if ((n > 0) && ((r % 100 < 45) || (n == maxn))) {
            size_t i = (size_t)(xorshift(&x) % n);

            sim_alloc_free(a, live[i].b);
            live[i] = live[--n];
        } else {
            /* Mostly small, sometimes large sizes. */
            uint64_t        size = (r % 10 == 0) ? 1 + xorshift(&x) % (4 << 20)
                                                 : 1 + xorshift(&x) % 40000;
            memsvc_status_t st   = sim_alloc_alloc(a, size, &off, &b);

            if (st == MEMSVC_OK) {
                live[n++] = (ref_blk_t){ off, round_up(size), size, b };
            } else {
                /* Classify the failure from the model. */
                uint64_t used = 0, largest = 0, pos = 0;
                size_t   i;

                qsort(live, n, sizeof(*live), ref_cmp);
                for (i = 0; i < n; i++) {
                    used   += live[i].size;
                    largest = (live[i].off - pos > largest) ? live[i].off - pos : largest;
                    pos     = live[i].off + live[i].size;
                }
                largest = (cap - pos > largest) ? cap - pos : largest;
                if (round_up(size) > cap - used) {
                    CU_ASSERT_EQUAL(st, MEMSVC_ERR_NO_MEMORY);
                    fails_oom++;
                } else {
                    CU_ASSERT_EQUAL(st, MEMSVC_ERR_FRAGMENTED);
                    CU_ASSERT_TRUE(largest < round_up(size));
                    fails_frag++;
                }
            }
        }
        if (op % 1000 == 0) {
            ref_check(a, live, n, cap);
        }
    }
    ref_check(a, live, n, cap);
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.fail_oom, fails_oom);
    CU_ASSERT_EQUAL(s.fail_fragmented, fails_frag);
    while (n > 0) {
        sim_alloc_free(a, live[--n].b);
    }
    ref_check(a, live, 0, cap);
    sim_alloc_destroy(a);
    free(live);
}

/* A million live blocks; fill to the last byte, then free in two passes. */
static void test_million_blocks(void)
{
    const size_t        n      = 1000000;
    sim_alloc_block_t **blocks = malloc(n * sizeof(*blocks));
    sim_alloc_t        *a;
    sim_alloc_block_t  *x;
    sim_alloc_stats_t   s;
    uint64_t            off, req = 0;
    size_t              i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(blocks);
    TEST_ASSERT_OK(sim_alloc_create(n * A, &a));
    for (i = 0; i < n; i++) {
        uint64_t size = 1 + (i * 7919) % A;

        if (sim_alloc_alloc(a, size, &off, &blocks[i]) != MEMSVC_OK) {
            CU_FAIL("allocation failed");
            break;
        }
        if (off != i * A) {
            CU_FAIL("blocks not packed in address order");
            break;
        }
        req += size;
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.live_blocks, n);
    CU_ASSERT_EQUAL(s.allocated, req);
    CU_ASSERT_EQUAL(s.reserved, n * A);
    CU_ASSERT_EQUAL(s.free_blocks, 0);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 1, &off, &x), MEMSVC_ERR_NO_MEMORY);
    for (i = 1; i < n; i += 2) {
        sim_alloc_free(a, blocks[i]);
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.free_blocks, n / 2);
    CU_ASSERT_EQUAL(s.largest_free, A);
    CU_ASSERT_EQUAL(sim_alloc_alloc(a, 2 * A, &off, &x), MEMSVC_ERR_FRAGMENTED);
    for (i = 0; i < n; i += 2) {
        sim_alloc_free(a, blocks[i]);
    }
    sim_alloc_get_stats(a, &s);
    CU_ASSERT_EQUAL(s.live_blocks, 0);
    CU_ASSERT_EQUAL(s.free_blocks, 1);
    CU_ASSERT_EQUAL(s.largest_free, n * A);
    CU_ASSERT_EQUAL(s.allocated, 0);
    sim_alloc_destroy(a);
    free(blocks);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("sim_alloc", NULL, NULL);

    CU_add_test(s, "create and parameters", test_create_and_params);
    CU_add_test(s, "alignment and rounding", test_alignment_and_rounding);
    CU_add_test(s, "coalescing", test_coalescing);
    CU_add_test(s, "checkerboard fragmentation, NO_MEMORY vs FRAGMENTED",
                test_checkerboard_fragmentation);
    CU_add_test(s, "fit within one size class", test_same_class_fit);
    CU_add_test(s, "exhaustion and double free", test_exhaustion_and_double_free);
    CU_add_test(s, "bytes mode: no rounding, no fragmentation", test_bytes_mode);
    CU_add_test(s, "randomized against a reference model", test_randomized_against_reference);
    CU_add_test(s, "a million blocks", test_million_blocks);
}

TEST_REGISTER(sim_alloc, add_suite)
