/* sim_node.h - a simulated node at run time: devices with HBM, host pool, disk, links, streams */
#ifndef SIM_NODE_H
#define SIM_NODE_H

#include "sim_npu/sim_alloc.h"
#include "sim_npu/sim_clock.h"
#include "sim_npu/sim_desc.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum sim_mem_mode {
    SIM_MEM_PHANTOM, /* sizes and offsets only, no bytes */
    SIM_MEM_BACKED   /* real bytes: HBM buffers per device, jemalloc host arena, disk file */
} sim_mem_mode_t;

/* A queue of transfers: each starts when the previous one ends. */
typedef struct sim_link {
    sim_link_desc_t desc;
    sim_time_t      busy_until; /* when the last queued transfer ends */
    uint64_t        bytes;      /* bytes carried so far */
    uint64_t        transfers;  /* transfers so far */
    sim_time_t      busy_ns;    /* total time spent transferring */
} sim_link_t;

/* A compute stream: operators and recomputations, one after another. */
typedef struct sim_stream {
    sim_time_t busy_until; /* when the last queued work ends */
    sim_time_t busy_ns;    /* total busy time */
    uint64_t   ops;        /* work items queued */
} sim_stream_t;

typedef struct sim_device {
    unsigned     id;      /* index on the node */
    sim_alloc_t *alloc;   /* HBM allocator */
    uint8_t     *base;    /* HBM bytes in backed mode, NULL in phantom mode */
    int          fd;      /* backed: the memfd holding those bytes (shareable), else -1 */
    sim_link_t   h2d;     /* host to this device */
    sim_link_t   d2h;     /* this device to host */
    sim_stream_t compute; /* compute stream */
} sim_device_t;

typedef struct sim_node sim_node_t;

/* Host memory held by a swapped tensor. */
typedef struct sim_host_buf {
    void    *ptr;  /* bytes (backed), NULL (phantom) */
    uint64_t size; /* bytes accounted against the host pool */
} sim_host_buf_t;

/* Disk space held by a spilled tensor. */
typedef struct sim_disk_buf {
    sim_alloc_block_t *block;  /* space in the spill file */
    uint64_t           offset; /* byte offset in the spill file */
    uint64_t           size;
} sim_disk_buf_t;

typedef struct sim_host_stats {
    uint64_t capacity, used, peak;
    uint64_t disk_capacity, disk_used, disk_peak;
    uint64_t peer_capacity, peer_used, peer_peak; /* the peer tier (desc.peer_bytes) */
} sim_host_stats_t;

/*
 * Create the node. The clock is borrowed (not owned). Backed mode maps each device's HBM
 * from a memfd (sim_device_t.fd; MAP_SHARED | MAP_NORESERVE, so untouched pages cost nothing;
 * another process may map the same fd and see the same bytes), creates a jemalloc arena for the host
 * pool and, when disk_bytes > 0, an unlinked spill file under $TMPDIR driven by io_uring.
 * Errors: MEMSVC_ERR_INVALID_PARAM (bad description), MEMSVC_ERR_NO_RESOURCE (mapping or
 * arena failed; the message says which and how much), MEMSVC_ERR_IO (spill file).
 */
memsvc_status_t sim_node_create(const sim_desc_t *desc, sim_mem_mode_t mode, sim_clock_t *clock,
                                sim_node_t **node_p);
void            sim_node_destroy(sim_node_t *node);

const sim_desc_t *sim_node_desc(const sim_node_t *node);
sim_mem_mode_t    sim_node_mode(const sim_node_t *node);
sim_clock_t      *sim_node_clock(sim_node_t *node);
unsigned          sim_node_num_devices(const sim_node_t *node);
sim_device_t     *sim_node_device(sim_node_t *node, unsigned id);
sim_link_t       *sim_node_d2d(sim_node_t *node);
sim_link_t       *sim_node_disk_link(sim_node_t *node);
sim_link_t       *sim_node_peer_link(sim_node_t *node); /* the nic, for the peer tier */
const char       *sim_mem_mode_name(sim_mem_mode_t mode);
memsvc_status_t   sim_mem_mode_parse(const char *s, sim_mem_mode_t *mode_p);

/* Pointer to device bytes at offset, or NULL in phantom mode. */
void *sim_device_ptr(sim_device_t *dev, uint64_t offset);

/* Queue a transfer of `bytes` on a link at time `now`; returns its completion time. */
sim_time_t sim_link_submit(sim_link_t *link, sim_time_t now, uint64_t bytes);

/* Queue `duration` of work on a stream at `now`; returns its completion time. */
sim_time_t sim_stream_submit(sim_stream_t *stream, sim_time_t now, sim_time_t duration);

/*
 * Host pool. sim_host_alloc accounts `size` against host capacity and, in backed mode, gets
 * the bytes from the node's jemalloc arena. MEMSVC_ERR_HOST_MEMORY when the pool is full.
 */
memsvc_status_t sim_host_alloc(sim_node_t *node, uint64_t size, sim_host_buf_t *buf_p);
void            sim_host_free(sim_node_t *node, sim_host_buf_t *buf);

/* Disk tier. MEMSVC_ERR_HOST_MEMORY when full or absent; MEMSVC_ERR_IO on I/O failure. */
memsvc_status_t sim_disk_alloc(sim_node_t *node, uint64_t size, sim_disk_buf_t *buf_p);
void            sim_disk_free(sim_node_t *node, sim_disk_buf_t *buf);
/*
 * Peer tier (desc.peer_bytes of room in peers' host pools, reached over the nic): accounting
 * only; the bytes are moved by the daemon (eng_far_ops_t). MEMSVC_ERR_HOST_MEMORY when full or
 * absent.
 */
memsvc_status_t sim_peer_alloc(sim_node_t *node, uint64_t size);
void            sim_peer_free(sim_node_t *node, uint64_t size);

/* Backed mode: synchronous write/read of the spill file (no-ops in phantom mode). */
memsvc_status_t sim_disk_write(sim_node_t *node, const sim_disk_buf_t *buf, const void *src, uint64_t len);
memsvc_status_t sim_disk_read(sim_node_t *node, const sim_disk_buf_t *buf, void *dst, uint64_t len);
/* The same for [offset, offset + len) of the buffer (a part of a spilled tensor). */
memsvc_status_t sim_disk_write_at(sim_node_t *node, const sim_disk_buf_t *buf, uint64_t offset,
                                  const void *src, uint64_t len);
memsvc_status_t sim_disk_read_at(sim_node_t *node, const sim_disk_buf_t *buf, uint64_t offset,
                                 void *dst, uint64_t len);

/*
 * How the spill file is read and written: "io_uring", "pread" (io_uring refused by the
 * system, or MEMSVC_SIM_NO_IO_URING set; a message says so at create), or "none" (phantom
 * mode or no disk tier).
 */
const char *sim_node_disk_io_name(const sim_node_t *node);

void sim_node_host_stats(const sim_node_t *node, sim_host_stats_t *stats_p);

/* Time to compute `flops` floating-point operations at the node's effective rate, ns. */
sim_time_t sim_node_compute_ns(const sim_node_t *node, double flops);

#endif /* SIM_NODE_H */
