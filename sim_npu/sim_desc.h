/* sim_desc.h - description of a simulated node: NPUs, HBM, host memory, links, compute */
#ifndef SIM_DESC_H
#define SIM_DESC_H

#include "client/memsvc_status.h"
#include "sim_npu/sim_alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_NPUS 64

/* One link: transfers run one after another; a transfer of n bytes takes lat + n / bw. */
typedef struct sim_link_desc {
    double   bw;      /* bytes per second */
    uint64_t lat_ns;  /* fixed latency per transfer, nanoseconds */
} sim_link_desc_t;

typedef struct sim_desc {
    char            name[32];     /* preset name it started from ("custom" if none) */
    unsigned        num_npus;     /* NPUs on the node, 1..SIM_MAX_NPUS */
    uint64_t        hbm_bytes;    /* HBM capacity per NPU */
    double          hbm_bw;       /* HBM bandwidth per NPU, bytes/s (roofline only) */
    uint64_t        host_bytes;   /* host memory pool for swapped tensors */
    uint64_t        disk_bytes;   /* disk spill capacity (0: no disk tier) */
    uint64_t        peer_bytes;   /* room this node may use in peers' host pools over the nic
                                     (the peer tier; 0: none) */
    sim_link_desc_t h2d;          /* host to device, per NPU */
    sim_link_desc_t d2h;          /* device to host, per NPU */
    sim_link_desc_t d2d;          /* device to device (one shared fabric link per node) */
    sim_link_desc_t disk;         /* host <-> disk (one queue per node) */
    sim_link_desc_t nic;          /* node to node (collectives in generated traces) */
    double          flops;        /* dense BF16 peak compute, FLOP/s per NPU */
    double          mfu;          /* fraction of peak reached by operators, 0..1 */
    sim_alloc_mode_t alloc;       /* HBM allocator: tlsf (default) or bytes (phantom only; not
                                     written into trace headers) */
} sim_desc_t;

/* Fill *desc_p with a named preset ("ascend-910b", "tiny"). MEMSVC_ERR_UNKNOWN_KEY if none. */
memsvc_status_t sim_desc_preset(const char *name, sim_desc_t *desc_p);

/* Names of all presets, NULL-terminated. */
const char *const *sim_desc_preset_names(void);

/*
 * Apply one override "key=value" (e.g. "hbm=48GiB", "h2d_bw=25GB/s", "h2d_lat=2us").
 * Unknown key: MEMSVC_ERR_UNKNOWN_KEY; malformed or out-of-range value: MEMSVC_ERR_PARSE.
 * On error *desc is unchanged and, if err/errlen are given, err holds a message.
 */
memsvc_status_t sim_desc_set(sim_desc_t *desc, const char *assignment, char *err, size_t errlen);

/* Check consistency (nonzero capacities and rates, npus in range). */
memsvc_status_t sim_desc_validate(const sim_desc_t *desc, char *err, size_t errlen);

/* Print the description, one "key = value" per line, with units. */
void sim_desc_print(const sim_desc_t *desc, void *file /* FILE* */);

/* Time a link takes for n bytes, without queueing, in ns. */
uint64_t sim_link_time_ns(const sim_link_desc_t *link, uint64_t bytes);

/*
 * Parsers shared by the tools. Sizes: "4096", "64GiB", "1.5GB", "512KiB", "2MB", "8B"
 * (binary and decimal units). Rates: "25GB/s", "200Gbps", "1.6TB/s", "300TFLOPS". Durations:
 * "2us", "1.5ms", "100ns", "3s". Return MEMSVC_ERR_PARSE on anything malformed, negative,
 * or overflowing.
 */
memsvc_status_t sim_parse_size(const char *s, uint64_t *bytes_p);
memsvc_status_t sim_parse_rate(const char *s, double *per_second_p);
memsvc_status_t sim_parse_duration(const char *s, uint64_t *ns_p);

/* Format a byte count as "64.0 GiB" into buf; returns buf. */
const char *sim_format_size(uint64_t bytes, char *buf, size_t len);
/* Format nanoseconds as "1.234 ms"; returns buf. */
const char *sim_format_time(uint64_t ns, char *buf, size_t len);

#endif /* SIM_DESC_H */
