/* sim_node.c - a simulated node at run time: HBM per device, host pool, disk tier, links */
#include "sim_npu/sim_node.h"

#include <errno.h>
#include <fcntl.h>
#include <jemalloc/jemalloc.h>
#include <liburing.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Largest single read or write submitted to io_uring (its length field is 32-bit). */
#define SIM_DISK_IO_MAX (1u << 30)

struct sim_node {
    sim_desc_t     desc;
    sim_mem_mode_t mode;
    sim_clock_t   *clock;     /* borrowed */
    sim_device_t  *devices;   /* desc.num_npus of them */
    sim_link_t     d2d;       /* the node's device-to-device fabric */
    sim_link_t     disk_link; /* host <-> disk queue */
    sim_link_t     peer_link; /* host <-> peers' host pools (the nic), the peer tier's queue */
    uint64_t       peer_used, peer_peak;

    uint64_t       host_used, host_peak;
    unsigned       arena;      /* backed: jemalloc arena of the host pool */
    bool           has_arena;

    sim_alloc_t   *disk_alloc; /* NULL: no disk tier */
    uint64_t       disk_used, disk_peak;
    int            disk_fd;    /* backed: unlinked spill file, else -1 */
    struct io_uring ring;
    bool           has_ring;
};

static void sim_link_init(sim_link_t *link, const sim_link_desc_t *desc)
{
    memset(link, 0, sizeof(*link));
    link->desc = *desc;
}

const char *sim_mem_mode_name(sim_mem_mode_t mode)
{
    switch (mode) {
    case SIM_MEM_PHANTOM:
        return "phantom";
    case SIM_MEM_BACKED:
        return "backed";
    }
    return "unknown";
}

memsvc_status_t sim_mem_mode_parse(const char *s, sim_mem_mode_t *mode_p)
{
    if ((s == NULL) || (mode_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (strcmp(s, "phantom") == 0) {
        *mode_p = SIM_MEM_PHANTOM;
    } else if (strcmp(s, "backed") == 0) {
        *mode_p = SIM_MEM_BACKED;
    } else {
        return MEMSVC_ERR_UNKNOWN_KEY;
    }
    return MEMSVC_OK;
}

/*
 * Open an unlinked spill file in $TMPDIR (or /tmp): O_TMPFILE where the file system has it,
 * else mkstemp + unlink. Returns the descriptor or -1 with a message printed.
 */
static int sim_spill_open(void)
{
    const char *dir = getenv("TMPDIR");
    char        path[4096];
    int         fd;

    if ((dir == NULL) || (dir[0] == '\0')) {
        dir = "/tmp";
    }
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        return fd;
    }
    if (snprintf(path, sizeof(path), "%s/memsvc-spill-XXXXXX", dir) >= (int)sizeof(path)) {
        fprintf(stderr, "sim_node: spill directory path too long: %s\n", dir);
        return -1;
    }
    fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "sim_node: cannot create a spill file in %s: %s\n", dir, strerror(errno));
        return -1;
    }
    unlink(path);
    return fd;
}

/* Backed mode: the jemalloc arena of the host pool. */
static memsvc_status_t sim_host_arena_create(sim_node_t *node)
{
    size_t sz = sizeof(node->arena);
    int    rc = mallctl("arenas.create", &node->arena, &sz, NULL, 0);

    if (rc != 0) {
        fprintf(stderr, "sim_node: jemalloc arenas.create failed: %s\n", strerror(rc));
        return MEMSVC_ERR_NO_RESOURCE;
    }
    node->has_arena = true;
    /* Keep freed host pages mapped: the pool is reused by the next swap-out, and giving pages
     * back only to fault them in again would cost more than the copy itself. */
    {
        char    name[64];
        ssize_t never = -1;

        snprintf(name, sizeof(name), "arena.%u.dirty_decay_ms", node->arena);
        mallctl(name, NULL, NULL, &never, sizeof(never));
        snprintf(name, sizeof(name), "arena.%u.muzzy_decay_ms", node->arena);
        mallctl(name, NULL, NULL, &never, sizeof(never));
    }
    return MEMSVC_OK;
}

static void sim_host_arena_destroy(sim_node_t *node)
{
    char name[64];

    if (!node->has_arena) {
        return;
    }
    snprintf(name, sizeof(name), "arena.%u.destroy", node->arena);
    mallctl(name, NULL, NULL, NULL, 0);
    node->has_arena = false;
}

static void sim_devices_destroy(sim_node_t *node)
{
    unsigned i;

    if (node->devices == NULL) {
        return;
    }
    for (i = 0; i < node->desc.num_npus; i++) {
        sim_device_t *dev = &node->devices[i];

        if (dev->base != NULL) {
            munmap(dev->base, node->desc.hbm_bytes);
        }
        if (dev->fd >= 0) {
            close(dev->fd);
        }
        sim_alloc_destroy(dev->alloc);
    }
    free(node->devices);
    node->devices = NULL;
}

/*
 * Devices: an HBM allocator each and, backed, a memfd of hbm_bytes mapped shared (pages are
 * allocated on first touch), so that the daemon can hand the fd to co-located clients.
 */
static memsvc_status_t sim_devices_create(sim_node_t *node)
{
    memsvc_status_t status;
    char            buf[32];
    unsigned        i;

    node->devices = calloc(node->desc.num_npus, sizeof(*node->devices));
    if (node->devices == NULL) {
        fprintf(stderr, "sim_node: out of memory for %u devices\n", node->desc.num_npus);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < node->desc.num_npus; i++) {
        sim_device_t *dev = &node->devices[i];

        dev->id = i;
        dev->fd = -1;
        sim_link_init(&dev->h2d, &node->desc.h2d);
        sim_link_init(&dev->d2h, &node->desc.d2h);
        status = sim_alloc_create_mode(node->desc.hbm_bytes, node->desc.alloc, &dev->alloc);
        if (status != MEMSVC_OK) {
            goto err_destroy;
        }
        if (node->mode == SIM_MEM_BACKED) {
            char  name[32];
            void *p = MAP_FAILED;

            snprintf(name, sizeof(name), "memsvc-hbm%u", i);
            dev->fd = memfd_create(name, MFD_CLOEXEC);
            if ((dev->fd >= 0) && (ftruncate(dev->fd, (off_t)node->desc.hbm_bytes) == 0)) {
                p = mmap(NULL, node->desc.hbm_bytes, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_NORESERVE, dev->fd, 0);
            }
            if (p == MAP_FAILED) {
                fprintf(stderr, "sim_node: cannot map %s of HBM for device %u: %s\n",
                        sim_format_size(node->desc.hbm_bytes, buf, sizeof(buf)), i,
                        strerror(errno));
                status = MEMSVC_ERR_NO_RESOURCE;
                goto err_destroy;
            }
            dev->base = p;
        }
    }
    return MEMSVC_OK;

err_destroy:
    sim_devices_destroy(node);
    return status;
}

static memsvc_status_t sim_disk_create(sim_node_t *node)
{
    memsvc_status_t status;
    int             rc;

    if (node->desc.disk_bytes == 0) {
        return MEMSVC_OK;
    }
    status = sim_alloc_create(node->desc.disk_bytes, &node->disk_alloc);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (node->mode != SIM_MEM_BACKED) {
        return MEMSVC_OK;
    }
    node->disk_fd = sim_spill_open();
    if (node->disk_fd < 0) {
        status = MEMSVC_ERR_IO;
        goto err_free_alloc;
    }
    /* Where io_uring is refused (seccomp in containers, old kernels), say so and fall back. */
    rc = (getenv("MEMSVC_SIM_NO_IO_URING") != NULL) ? -ENOSYS
                                                    : io_uring_queue_init(8, &node->ring, 0);
    if (rc < 0) {
        fprintf(stderr, "sim_node: io_uring unavailable (%s); spill file uses pread/pwrite\n",
                strerror(-rc));
    } else {
        node->has_ring = true;
    }
    return MEMSVC_OK;

err_free_alloc:
    sim_alloc_destroy(node->disk_alloc);
    node->disk_alloc = NULL;
    return status;
}

static void sim_disk_destroy(sim_node_t *node)
{
    if (node->has_ring) {
        io_uring_queue_exit(&node->ring);
        node->has_ring = false;
    }
    if (node->disk_fd >= 0) {
        close(node->disk_fd);
        node->disk_fd = -1;
    }
    sim_alloc_destroy(node->disk_alloc);
    node->disk_alloc = NULL;
}

memsvc_status_t sim_node_create(const sim_desc_t *desc, sim_mem_mode_t mode, sim_clock_t *clock,
                                sim_node_t **node_p)
{
    memsvc_status_t status;
    sim_node_t     *node;
    char            err[256];

    if ((desc == NULL) || (clock == NULL) || (node_p == NULL) ||
        ((mode != SIM_MEM_PHANTOM) && (mode != SIM_MEM_BACKED))) {
        fprintf(stderr, "sim_node: create: missing description, clock or result, or bad mode\n");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if ((mode == SIM_MEM_BACKED) && (desc->alloc == SIM_ALLOC_BYTES)) {
        fprintf(stderr, "sim_node: create: alloc=bytes needs phantom memory (no offsets)\n");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    status = sim_desc_validate(desc, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "sim_node: bad node description: %s\n", err);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    node = calloc(1, sizeof(*node));
    if (node == NULL) {
        fprintf(stderr, "sim_node: out of memory creating the node\n");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    node->desc    = *desc;
    node->mode    = mode;
    node->clock   = clock;
    node->disk_fd = -1;
    sim_link_init(&node->d2d, &desc->d2d);
    sim_link_init(&node->disk_link, &desc->disk);
    sim_link_init(&node->peer_link, &desc->nic);

    status = sim_devices_create(node);
    if (status != MEMSVC_OK) {
        goto err_free_node;
    }
    if (mode == SIM_MEM_BACKED) {
        status = sim_host_arena_create(node);
        if (status != MEMSVC_OK) {
            goto err_destroy_devices;
        }
    }
    status = sim_disk_create(node);
    if (status != MEMSVC_OK) {
        goto err_destroy_arena;
    }
    *node_p = node;
    return MEMSVC_OK;

err_destroy_arena:
    sim_host_arena_destroy(node);
err_destroy_devices:
    sim_devices_destroy(node);
err_free_node:
    free(node);
    return status;
}

void sim_node_destroy(sim_node_t *node)
{
    if (node == NULL) {
        return;
    }
    sim_disk_destroy(node);
    sim_host_arena_destroy(node);
    sim_devices_destroy(node);
    free(node);
}

const sim_desc_t *sim_node_desc(const sim_node_t *node)
{
    return &node->desc;
}

sim_mem_mode_t sim_node_mode(const sim_node_t *node)
{
    return node->mode;
}

sim_clock_t *sim_node_clock(sim_node_t *node)
{
    return node->clock;
}

unsigned sim_node_num_devices(const sim_node_t *node)
{
    return node->desc.num_npus;
}

sim_device_t *sim_node_device(sim_node_t *node, unsigned id)
{
    return (id < node->desc.num_npus) ? &node->devices[id] : NULL;
}

sim_link_t *sim_node_d2d(sim_node_t *node)
{
    return &node->d2d;
}

sim_link_t *sim_node_peer_link(sim_node_t *node)
{
    return &node->peer_link;
}

memsvc_status_t sim_peer_alloc(sim_node_t *node, uint64_t size)
{
    if (size == 0) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (size > node->desc.peer_bytes - node->peer_used) {
        return MEMSVC_ERR_HOST_MEMORY;
    }
    node->peer_used += size;
    if (node->peer_used > node->peer_peak) {
        node->peer_peak = node->peer_used;
    }
    return MEMSVC_OK;
}

void sim_peer_free(sim_node_t *node, uint64_t size)
{
    node->peer_used -= (size <= node->peer_used) ? size : node->peer_used;
}

sim_link_t *sim_node_disk_link(sim_node_t *node)
{
    return &node->disk_link;
}

void *sim_device_ptr(sim_device_t *dev, uint64_t offset)
{
    if ((dev->base == NULL) || (offset >= sim_alloc_capacity(dev->alloc))) {
        return NULL;
    }
    return dev->base + offset;
}

static sim_time_t sim_time_add(sim_time_t a, sim_time_t b)
{
    sim_time_t r;

    return __builtin_add_overflow(a, b, &r) ? SIM_TIME_NEVER : r;
}

sim_time_t sim_link_submit(sim_link_t *link, sim_time_t now, uint64_t bytes)
{
    sim_time_t start = (now > link->busy_until) ? now : link->busy_until;
    sim_time_t dur   = sim_link_time_ns(&link->desc, bytes);

    link->busy_until = sim_time_add(start, dur);
    link->bytes     += bytes;
    link->transfers++;
    link->busy_ns = sim_time_add(link->busy_ns, dur);
    return link->busy_until;
}

sim_time_t sim_stream_submit(sim_stream_t *stream, sim_time_t now, sim_time_t duration)
{
    sim_time_t start = (now > stream->busy_until) ? now : stream->busy_until;

    stream->busy_until = sim_time_add(start, duration);
    stream->busy_ns    = sim_time_add(stream->busy_ns, duration);
    stream->ops++;
    return stream->busy_until;
}

/* ---- host pool ----------------------------------------------------------------------------- */

memsvc_status_t sim_host_alloc(sim_node_t *node, uint64_t size, sim_host_buf_t *buf_p)
{
    void *p = NULL;

    if ((size == 0) || (buf_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (size > node->desc.host_bytes - node->host_used) {
        return MEMSVC_ERR_HOST_MEMORY;
    }
    if (node->mode == SIM_MEM_BACKED) {
        if (size > SIZE_MAX) {
            return MEMSVC_ERR_TOO_LARGE;
        }
        p = mallocx((size_t)size, MALLOCX_ARENA(node->arena) | MALLOCX_TCACHE_NONE);
        if (p == NULL) {
            fprintf(stderr, "sim_node: host arena could not provide %llu bytes\n",
                    (unsigned long long)size);
            return MEMSVC_ERR_NO_RESOURCE;
        }
    }
    node->host_used += size;
    if (node->host_used > node->host_peak) {
        node->host_peak = node->host_used;
    }
    buf_p->ptr  = p;
    buf_p->size = size;
    return MEMSVC_OK;
}

void sim_host_free(sim_node_t *node, sim_host_buf_t *buf)
{
    if ((buf == NULL) || (buf->size == 0)) {
        return;
    }
    if (buf->ptr != NULL) {
        dallocx(buf->ptr, MALLOCX_TCACHE_NONE);
    }
    node->host_used -= (buf->size <= node->host_used) ? buf->size : node->host_used;
    buf->ptr  = NULL;
    buf->size = 0;
}

/* ---- disk tier ----------------------------------------------------------------------------- */

memsvc_status_t sim_disk_alloc(sim_node_t *node, uint64_t size, sim_disk_buf_t *buf_p)
{
    memsvc_status_t status;
    uint64_t        offset;

    if ((size == 0) || (buf_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (node->disk_alloc == NULL) {
        return MEMSVC_ERR_HOST_MEMORY;
    }
    status = sim_alloc_alloc(node->disk_alloc, size, &offset, &buf_p->block);
    if ((status == MEMSVC_ERR_NO_MEMORY) || (status == MEMSVC_ERR_FRAGMENTED)) {
        return MEMSVC_ERR_HOST_MEMORY;
    } else if (status != MEMSVC_OK) {
        return status;
    }
    buf_p->offset    = offset;
    buf_p->size      = size;
    node->disk_used += size;
    if (node->disk_used > node->disk_peak) {
        node->disk_peak = node->disk_used;
    }
    return MEMSVC_OK;
}

void sim_disk_free(sim_node_t *node, sim_disk_buf_t *buf)
{
    if ((buf == NULL) || (buf->block == NULL) || (node->disk_alloc == NULL)) {
        return;
    }
    sim_alloc_free(node->disk_alloc, buf->block);
    node->disk_used -= (buf->size <= node->disk_used) ? buf->size : node->disk_used;
    buf->block  = NULL;
    buf->offset = 0;
    buf->size   = 0;
}

/*
 * One read or write of up to `chunk` bytes at `off`: through io_uring, or pread/pwrite where
 * io_uring is unavailable. Returns bytes transferred (0 at end of file) or -errno.
 */
static int sim_disk_io_once(sim_node_t *node, bool write, uint64_t off, uint8_t *p, unsigned chunk)
{
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    ssize_t              n;
    int                  rc, res;

    if (!node->has_ring) {
        n = write ? pwrite(node->disk_fd, p, chunk, (off_t)off)
                  : pread(node->disk_fd, p, chunk, (off_t)off);
        return (n < 0) ? -errno : (int)n;
    }
    sqe = io_uring_get_sqe(&node->ring);
    if (sqe == NULL) {
        return -EBUSY;
    }
    if (write) {
        io_uring_prep_write(sqe, node->disk_fd, p, chunk, off);
    } else {
        io_uring_prep_read(sqe, node->disk_fd, p, chunk, off);
    }
    rc = io_uring_submit_and_wait(&node->ring, 1);
    if (rc < 0) {
        return rc;
    }
    rc = io_uring_wait_cqe(&node->ring, &cqe);
    if (rc < 0) {
        return rc;
    }
    res = cqe->res;
    io_uring_cqe_seen(&node->ring, cqe);
    return res;
}

/*
 * Read or write `len` bytes at file offset `off`, one request at a time, resubmitting the
 * remainder after a short transfer. A read that meets the end of the file (a region never
 * written) gives zeros. MEMSVC_ERR_IO with a message on failure.
 */
static memsvc_status_t sim_disk_rw(sim_node_t *node, bool write, uint64_t off, uint8_t *p,
                                   uint64_t len)
{
    uint64_t done = 0;

    while (done < len) {
        unsigned chunk = (len - done > SIM_DISK_IO_MAX) ? SIM_DISK_IO_MAX : (unsigned)(len - done);
        int      res   = sim_disk_io_once(node, write, off + done, p + done, chunk);

        if ((res == -EINTR) || (res == -EAGAIN)) {
            continue;
        }
        if (res < 0) {
            fprintf(stderr, "sim_node: spill file %s of %u bytes at %llu failed: %s\n",
                    write ? "write" : "read", chunk, (unsigned long long)(off + done),
                    strerror(-res));
            return MEMSVC_ERR_IO;
        }
        if (res == 0) {
            if (write) {
                fprintf(stderr, "sim_node: spill file write made no progress at %llu\n",
                        (unsigned long long)(off + done));
                return MEMSVC_ERR_IO;
            }
            memset(p + done, 0, len - done);
            return MEMSVC_OK;
        }
        done += (uint64_t)res;
    }
    return MEMSVC_OK;
}

static memsvc_status_t sim_disk_check(sim_node_t *node, const sim_disk_buf_t *buf,
                                      const void *p, uint64_t len)
{
    if ((buf == NULL) || (buf->block == NULL) || ((p == NULL) && (len > 0))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (len > buf->size) {
        return MEMSVC_ERR_OUT_OF_RANGE;
    }
    return MEMSVC_OK;
}

memsvc_status_t sim_disk_write(sim_node_t *node, const sim_disk_buf_t *buf, const void *src,
                               uint64_t len)
{
    memsvc_status_t status = sim_disk_check(node, buf, src, len);

    if ((status != MEMSVC_OK) || (node->mode != SIM_MEM_BACKED) || (len == 0)) {
        return status;
    }
    return sim_disk_rw(node, true, buf->offset, (uint8_t *)(uintptr_t)src, len);
}

memsvc_status_t sim_disk_read(sim_node_t *node, const sim_disk_buf_t *buf, void *dst, uint64_t len)
{
    memsvc_status_t status = sim_disk_check(node, buf, dst, len);

    if ((status != MEMSVC_OK) || (node->mode != SIM_MEM_BACKED) || (len == 0)) {
        return status;
    }
    return sim_disk_rw(node, false, buf->offset, dst, len);
}

memsvc_status_t sim_disk_write_at(sim_node_t *node, const sim_disk_buf_t *buf, uint64_t offset,
                                  const void *src, uint64_t len)
{
    memsvc_status_t status = sim_disk_check(node, buf, src, len);

    if ((status == MEMSVC_OK) && (offset > buf->size - len)) {
        status = MEMSVC_ERR_OUT_OF_RANGE;
    }
    if ((status != MEMSVC_OK) || (node->mode != SIM_MEM_BACKED) || (len == 0)) {
        return status;
    }
    return sim_disk_rw(node, true, buf->offset + offset, (uint8_t *)(uintptr_t)src, len);
}

memsvc_status_t sim_disk_read_at(sim_node_t *node, const sim_disk_buf_t *buf, uint64_t offset,
                                 void *dst, uint64_t len)
{
    memsvc_status_t status = sim_disk_check(node, buf, dst, len);

    if ((status == MEMSVC_OK) && (offset > buf->size - len)) {
        status = MEMSVC_ERR_OUT_OF_RANGE;
    }
    if ((status != MEMSVC_OK) || (node->mode != SIM_MEM_BACKED) || (len == 0)) {
        return status;
    }
    return sim_disk_rw(node, false, buf->offset + offset, dst, len);
}

const char *sim_node_disk_io_name(const sim_node_t *node)
{
    if (node->disk_fd < 0) {
        return "none";
    }
    return node->has_ring ? "io_uring" : "pread";
}

void sim_node_host_stats(const sim_node_t *node, sim_host_stats_t *stats_p)
{
    memset(stats_p, 0, sizeof(*stats_p));
    stats_p->capacity      = node->desc.host_bytes;
    stats_p->used          = node->host_used;
    stats_p->peak          = node->host_peak;
    stats_p->disk_capacity = (node->disk_alloc != NULL) ? sim_alloc_capacity(node->disk_alloc) : 0;
    stats_p->disk_used     = node->disk_used;
    stats_p->disk_peak     = node->disk_peak;
    stats_p->peer_capacity = node->desc.peer_bytes;
    stats_p->peer_used     = node->peer_used;
    stats_p->peer_peak     = node->peer_peak;
}

sim_time_t sim_node_compute_ns(const sim_node_t *node, double flops)
{
    double ns;

    if (!(flops > 0.0)) {
        return 0;
    }
    ns = ceil(flops * 1e9 / (node->desc.flops * node->desc.mfu));
    return (ns >= 18446744073709551616.0) ? SIM_TIME_NEVER : (sim_time_t)ns;
}
