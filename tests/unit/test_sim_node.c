/* test_sim_node.c - simulated node: links, streams, host pool, HBM and disk in both modes */
#include "sim_npu/sim_node.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)

static sim_node_t *make_node(const char *preset, sim_mem_mode_t mode, sim_clock_t **clock_p)
{
    sim_desc_t  d;
    sim_node_t *node = NULL;

    CU_ASSERT_EQUAL_FATAL(sim_desc_preset(preset, &d), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(sim_clock_create(SIM_CLOCK_VIRTUAL, clock_p), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(sim_node_create(&d, mode, *clock_p, &node), MEMSVC_OK);
    return node;
}

static void test_mode_names(void)
{
    sim_mem_mode_t m;

    TEST_ASSERT_OK(sim_mem_mode_parse("backed", &m));
    CU_ASSERT_EQUAL(m, SIM_MEM_BACKED);
    TEST_ASSERT_OK(sim_mem_mode_parse("phantom", &m));
    CU_ASSERT_EQUAL(m, SIM_MEM_PHANTOM);
    CU_ASSERT_EQUAL(sim_mem_mode_parse("Backed", &m), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(sim_mem_mode_parse("", &m), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_STRING_EQUAL(sim_mem_mode_name(SIM_MEM_BACKED), "backed");
    CU_ASSERT_STRING_EQUAL(sim_mem_mode_name(SIM_MEM_PHANTOM), "phantom");
}

static void test_create_rejects_bad_desc(void)
{
    sim_desc_t   d;
    sim_clock_t *c;
    sim_node_t  *node = (sim_node_t *)&d; /* must stay untouched on error */

    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    d.num_npus = 0;
    CU_ASSERT_EQUAL(sim_node_create(&d, SIM_MEM_PHANTOM, c, &node), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_PTR_EQUAL(node, (sim_node_t *)&d);
    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    CU_ASSERT_EQUAL(sim_node_create(&d, SIM_MEM_PHANTOM, NULL, &node), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_node_create(&d, (sim_mem_mode_t)7, c, &node), MEMSVC_ERR_INVALID_PARAM);
    sim_clock_destroy(c);
}

/* Transfers queue on a link: each starts when the previous ends; latency + bytes / bw. */
static void test_link_queueing(void)
{
    sim_clock_t  *c;
    sim_node_t   *node = make_node("tiny", SIM_MEM_PHANTOM, &c); /* h2d: 1 GB/s, 10 us */
    sim_device_t *dev  = sim_node_device(node, 0);
    sim_link_t   *l    = &dev->h2d;

    CU_ASSERT_EQUAL(sim_node_num_devices(node), 2);
    CU_ASSERT_PTR_NULL(sim_node_device(node, 2));
    CU_ASSERT_EQUAL(l->desc.lat_ns, 10000);
    /* 1 MB at 1 GB/s = 1 ms, + 10 us. */
    CU_ASSERT_EQUAL(sim_link_submit(l, 0, 1000000), 1010000);
    /* Submitted at 500 us, the link is busy until 1010 us: queued behind it. */
    CU_ASSERT_EQUAL(sim_link_submit(l, 500000, 1000000), 2020000);
    /* Submitted after the link went idle: starts at once. */
    CU_ASSERT_EQUAL(sim_link_submit(l, 3000000, 1000), 3011000);
    CU_ASSERT_EQUAL(l->busy_until, 3011000);
    CU_ASSERT_EQUAL(l->bytes, 2001000);
    CU_ASSERT_EQUAL(l->transfers, 3);
    CU_ASSERT_EQUAL(l->busy_ns, 1010000 + 1010000 + 11000);
    /* Links are independent queues. */
    CU_ASSERT_EQUAL(dev->d2h.busy_until, 0);
    CU_ASSERT_EQUAL(sim_node_device(node, 1)->h2d.busy_until, 0);
    /* The shared fabric and the disk queue: 2 GB/s + 5 us; 0.5 GB/s + 50 us. */
    CU_ASSERT_EQUAL(sim_link_submit(sim_node_d2d(node), 0, 2000000), 1005000);
    CU_ASSERT_EQUAL(sim_link_submit(sim_node_disk_link(node), 100, 500000), 100 + 1050000);

    /* Compute stream queues the same way; compute cost from flops * mfu. */
    CU_ASSERT_EQUAL(sim_stream_submit(&dev->compute, 100, 50), 150);
    CU_ASSERT_EQUAL(sim_stream_submit(&dev->compute, 120, 50), 200);
    CU_ASSERT_EQUAL(sim_stream_submit(&dev->compute, 1000, 1), 1001);
    CU_ASSERT_EQUAL(dev->compute.ops, 3);
    CU_ASSERT_EQUAL(dev->compute.busy_ns, 101);
    /* tiny: 1 TFLOPS * 0.5: 1e9 FLOP take 2 ms. */
    CU_ASSERT_EQUAL(sim_node_compute_ns(node, 1e9), 2000000);
    CU_ASSERT_EQUAL(sim_node_compute_ns(node, 0), 0);
    CU_ASSERT_EQUAL(sim_node_compute_ns(node, -5), 0);
    sim_node_destroy(node);
    sim_clock_destroy(c);
}

static void host_pool_checks(sim_mem_mode_t mode)
{
    sim_clock_t     *c;
    sim_node_t      *node = make_node("tiny", mode, &c); /* host 256 MiB */
    sim_host_buf_t   a, b, x;
    sim_host_stats_t s;

    TEST_ASSERT_OK(sim_host_alloc(node, 200 * MIB, &a));
    CU_ASSERT_EQUAL(a.size, 200 * MIB);
    CU_ASSERT_EQUAL(a.ptr != NULL, mode == SIM_MEM_BACKED);
    memset(&x, 0x5a, sizeof(x));
    CU_ASSERT_EQUAL(sim_host_alloc(node, 57 * MIB, &x), MEMSVC_ERR_HOST_MEMORY);
    CU_ASSERT_EQUAL(sim_host_alloc(node, 0, &x), MEMSVC_ERR_INVALID_PARAM);
    TEST_ASSERT_OK(sim_host_alloc(node, 56 * MIB, &b));
    sim_node_host_stats(node, &s);
    CU_ASSERT_EQUAL(s.capacity, 256 * MIB);
    CU_ASSERT_EQUAL(s.used, 256 * MIB);
    CU_ASSERT_EQUAL(s.peak, 256 * MIB);
    CU_ASSERT_EQUAL(sim_host_alloc(node, 1, &x), MEMSVC_ERR_HOST_MEMORY);
    if (mode == SIM_MEM_BACKED) {
        /* Real bytes: write the whole of the small buffer and read it back. */
        uint8_t *ref = malloc(b.size);

        test_fill(ref, b.size, 3);
        memcpy(b.ptr, ref, b.size);
        CU_ASSERT_EQUAL(memcmp(b.ptr, ref, b.size), 0);
        free(ref);
    }
    sim_host_free(node, &a);
    CU_ASSERT_PTR_NULL(a.ptr);
    CU_ASSERT_EQUAL(a.size, 0);
    sim_host_free(node, &a); /* second free of a cleared buffer: nothing */
    sim_node_host_stats(node, &s);
    CU_ASSERT_EQUAL(s.used, 56 * MIB);
    CU_ASSERT_EQUAL(s.peak, 256 * MIB);
    TEST_ASSERT_OK(sim_host_alloc(node, 200 * MIB, &a));
    sim_host_free(node, &a);
    sim_host_free(node, &b);
    sim_node_host_stats(node, &s);
    CU_ASSERT_EQUAL(s.used, 0);
    sim_node_destroy(node);
    sim_clock_destroy(c);
}

static void test_host_pool_phantom(void)
{
    host_pool_checks(SIM_MEM_PHANTOM);
}

static void test_host_pool_backed(void)
{
    host_pool_checks(SIM_MEM_BACKED);
}

/* Backed HBM: bytes written at an allocated offset read back through the device pointer. */
static void test_backed_hbm_round_trip(void)
{
    sim_clock_t       *c;
    sim_node_t        *node = make_node("tiny", SIM_MEM_BACKED, &c);
    sim_device_t      *dev[2];
    sim_alloc_block_t *blk[2];
    uint64_t           off[2];
    uint8_t           *ref = malloc(3 * MIB);
    int                i;

    CU_ASSERT_EQUAL(sim_node_mode(node), SIM_MEM_BACKED);
    CU_ASSERT_PTR_NOT_NULL(sim_node_clock(node));
    CU_ASSERT_EQUAL(sim_node_desc(node)->hbm_bytes, 64 * MIB);
    for (i = 0; i < 2; i++) {
        dev[i] = sim_node_device(node, (unsigned)i);
        CU_ASSERT_EQUAL(dev[i]->id, (unsigned)i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(dev[i]->base);
        TEST_ASSERT_OK(sim_alloc_alloc(dev[i]->alloc, 3 * MIB, &off[i], &blk[i]));
        CU_ASSERT_PTR_EQUAL(sim_device_ptr(dev[i], off[i]), dev[i]->base + off[i]);
        test_fill(sim_device_ptr(dev[i], off[i]), 3 * MIB, 10 + (uint64_t)i);
    }
    CU_ASSERT_PTR_NOT_EQUAL(dev[0]->base, dev[1]->base);
    /* Each device kept its own bytes. */
    for (i = 0; i < 2; i++) {
        test_fill(ref, 3 * MIB, 10 + (uint64_t)i);
        CU_ASSERT_EQUAL(memcmp(sim_device_ptr(dev[i], off[i]), ref, 3 * MIB), 0);
    }
    /* The last byte of HBM is addressable; one past it is not. */
    CU_ASSERT_PTR_NOT_NULL(sim_device_ptr(dev[0], 64 * MIB - 1));
    CU_ASSERT_PTR_NULL(sim_device_ptr(dev[0], 64 * MIB));
    *(uint8_t *)sim_device_ptr(dev[0], 64 * MIB - 1) = 0xab;
    CU_ASSERT_EQUAL(dev[0]->base[64 * MIB - 1], 0xab);
    free(ref);
    sim_node_destroy(node);
    sim_clock_destroy(c);
}

/* Backed disk: what is written to the spill file reads back byte for byte. */
static void disk_round_trip(const char *io)
{
    sim_clock_t     *c;
    sim_node_t      *node = make_node("tiny", SIM_MEM_BACKED, &c); /* disk 256 MiB */
    sim_disk_buf_t   a, b, z, x;
    sim_host_stats_t s;
    const uint64_t   na = 5 * MIB + 123, nb = 777;
    uint8_t         *src = malloc(na), *dst = malloc(na);

    CU_ASSERT_STRING_EQUAL(sim_node_disk_io_name(node), io);
    TEST_ASSERT_OK(sim_disk_alloc(node, na, &a));
    TEST_ASSERT_OK(sim_disk_alloc(node, nb, &b));
    TEST_ASSERT_OK(sim_disk_alloc(node, 4096, &z));
    CU_ASSERT_EQUAL(a.size, na);
    CU_ASSERT_NOT_EQUAL(a.offset, b.offset);
    CU_ASSERT_EQUAL(b.offset % SIM_ALLOC_ALIGN, 0);
    test_fill(src, na, 42);
    TEST_ASSERT_OK(sim_disk_write(node, &a, src, na));
    test_fill(src, nb, 43);
    TEST_ASSERT_OK(sim_disk_write(node, &b, src, nb));
    memset(dst, 0, na);
    TEST_ASSERT_OK(sim_disk_read(node, &b, dst, nb));
    CU_ASSERT_EQUAL(memcmp(dst, src, nb), 0);
    test_fill(src, na, 42);
    TEST_ASSERT_OK(sim_disk_read(node, &a, dst, na));
    CU_ASSERT_EQUAL(memcmp(dst, src, na), 0); /* b's write did not clobber a */
    /* Never written (beyond the end of the file): zeros. */
    memset(dst, 0xee, 4096);
    memset(src, 0, 4096);
    TEST_ASSERT_OK(sim_disk_read(node, &z, dst, 4096));
    CU_ASSERT_EQUAL(memcmp(dst, src, 4096), 0);
    sim_disk_free(node, &z);
    /* Beyond the buffer: refused. */
    CU_ASSERT_EQUAL(sim_disk_write(node, &b, src, nb + 1), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(sim_disk_read(node, &b, dst, nb + 1), MEMSVC_ERR_OUT_OF_RANGE);
    CU_ASSERT_EQUAL(sim_disk_read(node, &b, NULL, nb), MEMSVC_ERR_INVALID_PARAM);
    sim_node_host_stats(node, &s);
    CU_ASSERT_EQUAL(s.disk_capacity, 256 * MIB);
    CU_ASSERT_EQUAL(s.disk_used, na + nb);
    /* Full: HOST_MEMORY. */
    CU_ASSERT_EQUAL(sim_disk_alloc(node, 256 * MIB, &x), MEMSVC_ERR_HOST_MEMORY);
    sim_disk_free(node, &a);
    sim_disk_free(node, &b);
    sim_node_host_stats(node, &s);
    CU_ASSERT_EQUAL(s.disk_used, 0);
    CU_ASSERT_EQUAL(s.disk_peak, na + nb + 4096);
    TEST_ASSERT_OK(sim_disk_alloc(node, 256 * MIB, &x));
    sim_disk_free(node, &x);
    free(src);
    free(dst);
    sim_node_destroy(node);
    sim_clock_destroy(c);
}

static void test_backed_disk_round_trip(void)
{
    disk_round_trip("io_uring");
}

/* The same through pread/pwrite, as where io_uring is refused. */
static void test_backed_disk_round_trip_pread(void)
{
    setenv("MEMSVC_SIM_NO_IO_URING", "1", 1);
    disk_round_trip("pread");
    unsetenv("MEMSVC_SIM_NO_IO_URING");
}

static void test_no_disk_tier(void)
{
    sim_desc_t     d;
    sim_clock_t   *c;
    sim_node_t    *node;
    sim_disk_buf_t x;

    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    TEST_ASSERT_OK(sim_desc_set(&d, "disk=0", NULL, 0));
    TEST_ASSERT_OK(sim_clock_create(SIM_CLOCK_VIRTUAL, &c));
    TEST_ASSERT_OK(sim_node_create(&d, SIM_MEM_BACKED, c, &node));
    CU_ASSERT_EQUAL(sim_disk_alloc(node, 512, &x), MEMSVC_ERR_HOST_MEMORY);
    CU_ASSERT_STRING_EQUAL(sim_node_disk_io_name(node), "none");
    sim_node_destroy(node);
    sim_clock_destroy(c);
}

/* Pages of this process: total (virtual) and resident, from /proc/self/statm. */
static void statm(uint64_t *virt_p, uint64_t *rss_p)
{
    unsigned long long v = 0, r = 0;
    FILE              *f = fopen("/proc/self/statm", "r");

    if (f != NULL) {
        if (fscanf(f, "%llu %llu", &v, &r) != 2) {
            v = r = 0;
        }
        fclose(f);
    }
    *virt_p = v * (uint64_t)sysconf(_SC_PAGESIZE);
    *rss_p  = r * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* ascend-910b in phantom mode: 8 x 61 GiB of HBM with no mapping and no bytes. */
static void test_phantom_full_scale(void)
{
    sim_clock_t       *c;
    sim_node_t        *node;
    sim_disk_buf_t     dk;
    sim_host_buf_t     h;
    sim_alloc_block_t *blk;
    sim_alloc_stats_t  s;
    uint64_t           v0, r0, v1, r1, off;
    unsigned           i;

    statm(&v0, &r0);
    node = make_node("ascend-910b", SIM_MEM_PHANTOM, &c);
    statm(&v1, &r1);
    CU_ASSERT_EQUAL(sim_node_mode(node), SIM_MEM_PHANTOM);
    CU_ASSERT_EQUAL(sim_node_num_devices(node), 8);
    CU_ASSERT_TRUE(v1 - v0 < 1 * GIB); /* not 512 GiB of address space */
    CU_ASSERT_TRUE(r1 - r0 < 64 * MIB);
    for (i = 0; i < 8; i++) {
        sim_device_t *dev = sim_node_device(node, i);

        CU_ASSERT_PTR_NULL(dev->base);
        CU_ASSERT_PTR_NULL(sim_device_ptr(dev, 0));
        /* A whole device's worth of tensors, by size only. */
        TEST_ASSERT_OK(sim_alloc_alloc(dev->alloc, 60 * GIB, &off, &blk));
        sim_alloc_get_stats(dev->alloc, &s);
        CU_ASSERT_EQUAL(s.reserved, 60 * GIB);
        sim_alloc_free(dev->alloc, blk);
    }
    /* Host and disk by size only, too. */
    TEST_ASSERT_OK(sim_host_alloc(node, 1024 * GIB, &h));
    CU_ASSERT_PTR_NULL(h.ptr);
    TEST_ASSERT_OK(sim_disk_alloc(node, 2048 * GIB, &dk));
    TEST_ASSERT_OK(sim_disk_write(node, &dk, NULL, 0));
    statm(&v1, &r1);
    CU_ASSERT_TRUE(r1 - r0 < 64 * MIB);
    sim_disk_free(node, &dk);
    sim_host_free(node, &h);
    sim_node_destroy(node);
    sim_clock_destroy(c);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("sim_node", NULL, NULL);

    CU_add_test(s, "memory mode names", test_mode_names);
    CU_add_test(s, "create rejects a bad description", test_create_rejects_bad_desc);
    CU_add_test(s, "link and stream queueing arithmetic", test_link_queueing);
    CU_add_test(s, "host pool accounting, phantom", test_host_pool_phantom);
    CU_add_test(s, "host pool accounting, backed", test_host_pool_backed);
    CU_add_test(s, "backed HBM round trip", test_backed_hbm_round_trip);
    CU_add_test(s, "backed disk round trip", test_backed_disk_round_trip);
    CU_add_test(s, "backed disk round trip, pread fallback", test_backed_disk_round_trip_pread);
    CU_add_test(s, "no disk tier", test_no_disk_tier);
    CU_add_test(s, "phantom ascend-910b maps no HBM", test_phantom_full_scale);
}

TEST_REGISTER(sim_node, add_suite)
