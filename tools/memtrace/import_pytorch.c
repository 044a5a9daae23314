/* import_pytorch.c - importers for PyTorch CUDA memory snapshots and profiler Chrome traces */
#include "tools/memtrace/import_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A live block: what an address holds. */
typedef struct mt_block {
    uint64_t tensor;
    uint64_t size;
} mt_block_t;

/* Per-device accounting shared by both importers. */
typedef struct mt_pt_dev {
    mt_map_t live;      /* "addr" (hex) -> mt_block_t */
    uint64_t allocated; /* sum of live block sizes */
    uint64_t peak;      /* peak of allocated */
    uint64_t reserved;  /* snapshot: sum of live segments */
    uint64_t peak_reserved;
    uint64_t peak_total; /* chrome: max "Total Allocated" */
    bool     seen;       /* chrome: a memory event of this device was applied */
    uint64_t pre_size;   /* chrome: bytes allocated before the recording (one stand-in block) */
    uint64_t pre_addr;   /* chrome: the stand-in block's address key */
} mt_pt_dev_t;

typedef struct mt_pt {
    mt_imp_t   *imp;
    mt_pt_dev_t dev[SIM_MAX_NPUS];
    uint64_t    next_tensor;
    unsigned    num_devices; /* highest device index used + 1 */
    uint64_t    unmatched_frees;
    uint64_t    frees_before; /* chrome: frees of blocks from before the recording */
    uint64_t    oom_count;
} mt_pt_t;

static void mt_pt_init(mt_pt_t *pt, mt_imp_t *imp)
{
    unsigned d;

    memset(pt, 0, sizeof(*pt));
    pt->imp         = imp;
    pt->next_tensor = 1;
    for (d = 0; d < SIM_MAX_NPUS; d++) {
        mt_map_init(&pt->dev[d].live);
    }
}

static void mt_pt_destroy(mt_pt_t *pt)
{
    unsigned d;

    for (d = 0; d < SIM_MAX_NPUS; d++) {
        mt_map_destroy(&pt->dev[d].live, free);
    }
}

/* Allocation of size bytes at addr on device d: an ALLOC event with key "<label>#<tensor>". */
static memsvc_status_t mt_pt_alloc(mt_pt_t *pt, const char *path, unsigned d, uint64_t addr,
                                   uint64_t size, uint64_t time_ns, const char *label)
{
    mt_pt_dev_t    *dev = &pt->dev[d];
    char            addr_key[24], key[MEMSVC_KEY_MAX + 1];
    mt_event_t      e;
    mt_block_t     *b;
    memsvc_status_t status;

    snprintf(addr_key, sizeof(addr_key), "%" PRIx64, addr);
    if (mt_map_get(&dev->live, addr_key) != NULL) {
        return mt_imp_fail(pt->imp, "%s: address 0x%" PRIx64 " allocated twice without a free",
                           path, addr);
    }
    if (dev->allocated + size < dev->allocated) {
        return mt_imp_fail(pt->imp, "%s: allocated bytes overflow", path);
    }
    b = malloc(sizeof(*b));
    if (b == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    b->tensor = pt->next_tensor++;
    b->size   = size;
    status    = mt_map_put(&dev->live, addr_key, b);
    if (status != MEMSVC_OK) {
        free(b);
        return status;
    }
    dev->allocated += size;
    if (dev->allocated > dev->peak) {
        dev->peak = dev->allocated;
    }
    if (d + 1 > pt->num_devices) {
        pt->num_devices = d + 1;
    }
    /* label is at most MEMSVC_KEY_MAX - 21 bytes, so "#<id>" always fits */
    snprintf(key, sizeof(key), "%.*s#%" PRIu64, MEMSVC_KEY_MAX - 21, label, b->tensor);
    memset(&e, 0, sizeof(e));
    e.type    = MT_EV_ALLOC;
    e.time_ns = time_ns;
    e.device  = d;
    e.tensor  = b->tensor;
    e.key     = key;
    e.size    = size;
    e.kind    = MEMSVC_KIND_ACTIVATION;
    e.tags    = MEMSVC_TAGS_NONE;
    return mt_imp_emit(pt->imp, &e);
}

/*
 * Free of the block at addr on device d. A free of an unknown address (allocated before the
 * recording started) is counted and skipped. If expect_size is nonzero it must match.
 */
static memsvc_status_t mt_pt_free(mt_pt_t *pt, const char *path, unsigned d, uint64_t addr,
                                  uint64_t expect_size, uint64_t time_ns)
{
    mt_pt_dev_t *dev = &pt->dev[d];
    char         addr_key[24];
    mt_event_t   e;
    mt_block_t  *b;

    snprintf(addr_key, sizeof(addr_key), "%" PRIx64, addr);
    b = mt_map_get(&dev->live, addr_key);
    if (b == NULL) {
        pt->unmatched_frees++;
        pt->imp->stats.skipped++;
        return MEMSVC_OK;
    }
    if ((expect_size != 0) && (expect_size != b->size)) {
        return mt_imp_fail(
            pt->imp, "%s: frees %" PRIu64 " bytes at 0x%" PRIx64 " which holds %" PRIu64 " bytes",
            path, expect_size, addr, b->size);
    }
    memset(&e, 0, sizeof(e));
    e.type    = MT_EV_FREE;
    e.time_ns = time_ns;
    e.device  = d;
    e.tensor  = b->tensor;
    dev->allocated -= b->size;
    free(mt_map_del(&dev->live, addr_key));
    return mt_imp_emit(pt->imp, &e);
}

/* ---- PyTorch CUDA memory snapshot -------------------------------------------------------- */

static memsvc_status_t mt_snap_entry(mt_pt_t *pt, unsigned d, size_t i, const json_t *ent)
{
    const json_t *frames, *frame;
    const char   *action, *label = "alloc";
    mt_pt_dev_t  *dev = &pt->dev[d];
    char          path[64];
    uint64_t      addr = 0, size = 0, time_us = 0, stream = 0;
    bool          is_alloc, is_free, is_seg_alloc, is_seg_free;

    snprintf(path, sizeof(path), "device_traces[%u][%zu]", d, i);
    if (!json_is_object(ent)) {
        return mt_imp_fail(pt->imp, "%s: expected an object", path);
    }
    action = json_string_value(json_object_get(ent, "action"));
    if (action == NULL) {
        return mt_imp_fail(pt->imp, "%s.action: missing or not a string", path);
    }
    is_alloc     = (strcmp(action, "alloc") == 0);
    is_free      = (strcmp(action, "free_completed") == 0);
    is_seg_alloc = (strcmp(action, "segment_alloc") == 0) || (strcmp(action, "segment_map") == 0);
    is_seg_free  = (strcmp(action, "segment_free") == 0) || (strcmp(action, "segment_unmap") == 0);
    if (strcmp(action, "oom") == 0) {
        pt->oom_count++;
        return MEMSVC_OK;
    }
    if ((strcmp(action, "free_requested") == 0) || (strcmp(action, "snapshot") == 0)) {
        return MEMSVC_OK; /* the free takes effect at free_completed */
    }
    if (!is_alloc && !is_free && !is_seg_alloc && !is_seg_free) {
        return mt_imp_fail(pt->imp, "%s.action: unknown action '%.40s'", path, action);
    }
    if (!mt_json_get_u64(json_object_get(ent, "addr"), false, INT64_MAX, &addr)) {
        return mt_imp_fail(pt->imp, "%s.addr: missing or not a non-negative integer", path);
    }
    if (!mt_json_get_u64(json_object_get(ent, "size"), false, MT_IMPORT_SIZE_MAX, &size)) {
        return mt_imp_fail(pt->imp, "%s.size: missing, negative, not an integer or above 2^48",
                           path);
    }
    if ((json_object_get(ent, "time_us") != NULL) &&
        !mt_json_get_u64(json_object_get(ent, "time_us"), false, UINT64_MAX / 1000, &time_us)) {
        return mt_imp_fail(pt->imp, "%s.time_us: not a non-negative integer", path);
    }
    if ((json_object_get(ent, "stream") != NULL) &&
        !mt_json_get_u64(json_object_get(ent, "stream"), false, INT64_MAX, &stream)) {
        return mt_imp_fail(pt->imp, "%s.stream: not a non-negative integer", path);
    }
    frames = json_object_get(ent, "frames");
    if ((frames != NULL) && !json_is_array(frames)) {
        return mt_imp_fail(pt->imp, "%s.frames: not an array", path);
    }
    frame = json_array_get(frames, 0);
    if ((frame != NULL) && json_is_string(json_object_get(frame, "name"))) {
        label = json_string_value(json_object_get(frame, "name"));
    }

    if (is_alloc) {
        return mt_pt_alloc(pt, path, d, addr, size, time_us * 1000, label);
    }
    if (is_free) {
        return mt_pt_free(pt, path, d, addr, size, time_us * 1000);
    }
    if (is_seg_alloc) {
        if (dev->reserved + size < dev->reserved) {
            return mt_imp_fail(pt->imp, "%s: reserved bytes overflow", path);
        }
        dev->reserved += size;
        if (dev->reserved > dev->peak_reserved) {
            dev->peak_reserved = dev->reserved;
        }
    } else {
        /* a segment reserved before the recording started may be freed: saturate */
        dev->reserved = (size <= dev->reserved) ? dev->reserved - size : 0;
    }
    return MEMSVC_OK;
}

static void mt_pt_finish(mt_pt_t *pt, bool chrome)
{
    mt_imp_t *imp  = pt->imp;
    uint64_t  peak = 0, peak_reserved = 0, peak_running = 0;
    unsigned  d;

    for (d = 0; d < SIM_MAX_NPUS; d++) {
        peak_running = (pt->dev[d].peak > peak_running) ? pt->dev[d].peak : peak_running;
        peak_reserved =
            (pt->dev[d].peak_reserved > peak_reserved) ? pt->dev[d].peak_reserved : peak_reserved;
        peak = (pt->dev[d].peak_total > peak) ? pt->dev[d].peak_total : peak;
    }
    imp->stats.recorded_peak = chrome ? peak : peak_running;
    if (imp->header->node.num_npus < pt->num_devices) {
        imp->header->node.num_npus = pt->num_devices;
    }
    mt_imp_meta_u64(imp, "devices", pt->num_devices);
    mt_imp_meta_u64(imp, "peak_reserved", peak_reserved);
    mt_imp_meta_u64(imp, "unmatched_frees", pt->unmatched_frees);
    if (chrome) {
        mt_imp_meta_u64(imp, "peak_running_sum", peak_running);
        mt_imp_meta_u64(imp, "frees_before_recording", pt->frees_before);
        mt_imp_meta_u64(imp, "cpu_events", imp->stats.skipped - pt->unmatched_frees);
        if (peak_running > peak) {
            (void)mt_header_set_meta(imp->header, "warning",
                                     "running sum of allocations exceeds Total Allocated");
        }
    } else {
        mt_imp_meta_u64(imp, "oom_count", pt->oom_count);
    }
}

static memsvc_status_t mt_snap_run(mt_imp_t *imp, const mt_import_opts_t *opts, void *input)
{
    const json_t   *root   = input, *traces;
    memsvc_status_t status = MEMSVC_OK;
    mt_pt_t        *pt;
    size_t          d, i;

    if (!json_is_object(root)) {
        return mt_imp_fail(imp, "(top): expected an object with device_traces");
    }
    traces = json_object_get(root, "device_traces");
    if (!json_is_array(traces)) {
        return mt_imp_fail(imp, "device_traces: missing or not an array");
    }
    if (json_array_size(traces) > SIM_MAX_NPUS) {
        return mt_imp_fail(imp, "device_traces: %zu devices, more than %d", json_array_size(traces),
                           SIM_MAX_NPUS);
    }
    pt = malloc(sizeof(*pt));
    if (pt == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    mt_pt_init(pt, imp);
    for (d = 0; (d < json_array_size(traces)) && (status == MEMSVC_OK); d++) {
        const json_t *list = json_array_get(traces, d);

        if (!json_is_array(list)) {
            status = mt_imp_fail(imp, "device_traces[%zu]: expected an array", d);
            break;
        }
        for (i = 0; (i < json_array_size(list)) && (status == MEMSVC_OK); i++) {
            status = mt_snap_entry(pt, (unsigned)d, i, json_array_get(list, i));
        }
    }
    if (status == MEMSVC_OK) {
        mt_pt_finish(pt, false);
    }
    mt_pt_destroy(pt);
    free(pt);
    return status;
}

const mt_import_ops_t mt_import_snapshot_ops = {
    "pytorch-snapshot",
    mt_import_load_json,
    mt_snap_run,
    mt_import_unload_json,
};

/* ---- PyTorch profiler Chrome trace ------------------------------------------------------- */

typedef struct mt_chrome_ev {
    size_t index; /* in traceEvents */
    double ts;    /* microseconds */
} mt_chrome_ev_t;

static int mt_chrome_ev_cmp(const void *a, const void *b)
{
    const mt_chrome_ev_t *x = a, *y = b;

    if (x->ts != y->ts) {
        return (x->ts < y->ts) ? -1 : 1;
    }
    return (x->index < y->index) ? -1 : (x->index > y->index);
}

/* Check a "[memory]" event; *device_p is -1 for host memory (Device Type 0: CPU). */
static memsvc_status_t mt_chrome_check(mt_pt_t *pt, size_t i, const json_t *ev, int *device_p,
                                       double *ts_p)
{
    const json_t *args = json_object_get(ev, "args"), *bytes;
    uint64_t      type, id, u;
    double        ts;

    if (!json_is_object(args)) {
        return mt_imp_fail(pt->imp, "traceEvents[%zu].args: missing or not an object", i);
    }
    if (!mt_json_get_u64(json_object_get(args, "Device Type"), false, INT32_MAX, &type)) {
        return mt_imp_fail(pt->imp,
                           "traceEvents[%zu].args.Device Type: missing or not a "
                           "non-negative integer",
                           i);
    }
    if (!mt_json_get_double(json_object_get(ev, "ts"), false, &ts) || (ts > 1e13)) {
        return mt_imp_fail(pt->imp,
                           "traceEvents[%zu].ts: missing or not a non-negative number "
                           "of microseconds",
                           i);
    }
    bytes = json_object_get(args, "Bytes");
    if (!json_is_integer(bytes) || (json_integer_value(bytes) < -(json_int_t)MT_IMPORT_SIZE_MAX) ||
        (json_integer_value(bytes) > (json_int_t)MT_IMPORT_SIZE_MAX)) {
        return mt_imp_fail(pt->imp,
                           "traceEvents[%zu].args.Bytes: missing, not an integer or "
                           "beyond 2^48",
                           i);
    }
    if (!mt_json_get_u64(json_object_get(args, "Addr"), false, INT64_MAX, &u)) {
        return mt_imp_fail(pt->imp,
                           "traceEvents[%zu].args.Addr: missing or not a non-negative "
                           "integer",
                           i);
    }
    if (!mt_json_get_u64(json_object_get(args, "Total Allocated"), false, INT64_MAX, &u)) {
        return mt_imp_fail(pt->imp,
                           "traceEvents[%zu].args.Total Allocated: missing or not a "
                           "non-negative integer",
                           i);
    }
    if ((json_object_get(args, "Total Reserved") != NULL) &&
        !mt_json_get_u64(json_object_get(args, "Total Reserved"), false, INT64_MAX, &u)) {
        return mt_imp_fail(pt->imp,
                           "traceEvents[%zu].args.Total Reserved: not a non-negative "
                           "integer",
                           i);
    }
    if (type == 0) {
        *device_p = -1;
    } else {
        if (!mt_json_get_u64(json_object_get(args, "Device Id"), false, SIM_MAX_NPUS - 1, &id)) {
            return mt_imp_fail(pt->imp,
                               "traceEvents[%zu].args.Device Id: missing or not in "
                               "0..%d",
                               i, SIM_MAX_NPUS - 1);
        }
        *device_p = (int)id;
    }
    *ts_p = ts;
    return MEMSVC_OK;
}

static memsvc_status_t mt_chrome_apply(mt_pt_t *pt, const json_t *ev, size_t i, unsigned d,
                                       double ts)
{
    const json_t *args  = json_object_get(ev, "args");
    json_int_t    bytes = json_integer_value(json_object_get(args, "Bytes"));
    uint64_t      addr = 0, total = 0, reserved = 0;
    uint64_t      time_ns = (uint64_t)(ts * 1000.0 + 0.5);
    mt_pt_dev_t  *dev     = &pt->dev[d];
    char          path[48];

    snprintf(path, sizeof(path), "traceEvents[%zu]", i);
    (void)mt_json_get_u64(json_object_get(args, "Addr"), false, INT64_MAX, &addr);
    (void)mt_json_get_u64(json_object_get(args, "Total Allocated"), false, INT64_MAX, &total);
    (void)mt_json_get_u64(json_object_get(args, "Total Reserved"), false, INT64_MAX, &reserved);
    memsvc_status_t status;

    if (total > dev->peak_total) {
        dev->peak_total = total;
    }
    if (reserved > dev->peak_reserved) {
        dev->peak_reserved = reserved;
    }
    if (!dev->seen) {
        /* Memory allocated before the recording started shows only in "Total Allocated":
         * stand for it with one block, so that a replay reproduces the recorded totals. */
        uint64_t moved  = (bytes >= 0) ? (uint64_t)bytes : (uint64_t)-bytes;
        uint64_t before = (bytes >= 0) ? ((total >= moved) ? total - moved : 0) : total + moved;

        dev->seen     = true;
        dev->pre_addr = UINT64_MAX - d; /* no real address: never a valid profiler Addr */
        if (total > 0 && before > 0) {
            status = mt_pt_alloc(pt, path, d, dev->pre_addr, before, time_ns, "before-recording");
            if (status != MEMSVC_OK) {
                return status;
            }
            dev->pre_size = before;
        }
    }
    if (bytes > 0) {
        return mt_pt_alloc(pt, path, d, addr, (uint64_t)bytes, time_ns, "mem");
    }
    if (bytes < 0) {
        char addr_key[24];

        snprintf(addr_key, sizeof(addr_key), "%" PRIx64, addr);
        if (mt_map_get(&dev->live, addr_key) == NULL && dev->pre_size >= (uint64_t)-bytes &&
            dev->pre_size > 0) {
            /* a block from before the recording ends: shrink the stand-in */
            uint64_t left = dev->pre_size - (uint64_t)-bytes;

            pt->frees_before++;
            status = mt_pt_free(pt, path, d, dev->pre_addr, 0, time_ns);
            dev->pre_size = 0;
            if (status == MEMSVC_OK && left > 0) {
                status = mt_pt_alloc(pt, path, d, dev->pre_addr, left, time_ns, "before-recording");
                dev->pre_size = left;
            }
            return status;
        }
        return mt_pt_free(pt, path, d, addr, (uint64_t)-bytes, time_ns);
    }
    return MEMSVC_OK;
}

/*
 * The devices' capacity from a Kineto trace's deviceProperties[].totalGlobalMem: the node's HBM
 * becomes the smallest listed (one size for all NPUs), so that a replay has the recorded
 * device's room rather than the default node's. Absent: the header keeps its node.
 */
static memsvc_status_t mt_chrome_capacity(mt_imp_t *imp, const json_t *root)
{
    const json_t *props = json_is_object(root) ? json_object_get(root, "deviceProperties") : NULL;
    uint64_t      cap   = 0, mem;
    size_t        i;

    if (props == NULL) {
        return MEMSVC_OK;
    }
    if (!json_is_array(props)) {
        return mt_imp_fail(imp, "deviceProperties: not an array");
    }
    for (i = 0; i < json_array_size(props); i++) {
        const json_t *dev = json_array_get(props, i), *v;

        if (!json_is_object(dev)) {
            return mt_imp_fail(imp, "deviceProperties[%zu]: expected an object", i);
        }
        v = json_object_get(dev, "totalGlobalMem");
        if (v == NULL) {
            continue;
        }
        if (!mt_json_get_u64(v, false, MT_IMPORT_SIZE_MAX, &mem) || (mem == 0)) {
            return mt_imp_fail(imp,
                               "deviceProperties[%zu].totalGlobalMem: not a positive integer "
                               "up to 2^48",
                               i);
        }
        cap = (cap == 0 || mem < cap) ? mem : cap;
    }
    if (cap > 0) {
        imp->header->node.hbm_bytes = cap;
        mt_imp_meta_u64(imp, "device_total_mem", cap);
    }
    return MEMSVC_OK;
}

static memsvc_status_t mt_chrome_run(mt_imp_t *imp, const mt_import_opts_t *opts, void *input)
{
    const json_t   *root   = input, *events;
    mt_chrome_ev_t *mem    = NULL;
    memsvc_status_t status = MEMSVC_OK;
    size_t          i, n, num_mem = 0;
    mt_pt_t        *pt;

    events = json_is_array(root) ? root : json_object_get(root, "traceEvents");
    if (!json_is_array(events)) {
        return mt_imp_fail(imp, "traceEvents: missing or not an array");
    }
    status = mt_chrome_capacity(imp, root);
    if (status != MEMSVC_OK) {
        return status;
    }
    n  = json_array_size(events);
    pt = malloc(sizeof(*pt));
    if (pt == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    mt_pt_init(pt, imp);
    mem = calloc((n > 0) ? n : 1, sizeof(*mem));
    if (mem == NULL) {
        status = MEMSVC_ERR_NO_RESOURCE;
        goto out;
    }
    /* Collect the device "[memory]" events; profilers do not always write them in time order. */
    for (i = 0; i < n; i++) {
        const json_t *ev = json_array_get(events, i);
        const char   *name;
        double        ts     = 0;
        int           device = -1;

        if (!json_is_object(ev)) {
            status = mt_imp_fail(imp, "traceEvents[%zu]: expected an object", i);
            goto out;
        }
        name = json_string_value(json_object_get(ev, "name"));
        if ((name == NULL) || (strcmp(name, "[memory]") != 0)) {
            continue;
        }
        status = mt_chrome_check(pt, i, ev, &device, &ts);
        if (status != MEMSVC_OK) {
            goto out;
        }
        if (device < 0) {
            imp->stats.skipped++;
            continue;
        }
        mem[num_mem].index = i;
        mem[num_mem].ts    = ts;
        num_mem++;
    }
    qsort(mem, num_mem, sizeof(*mem), mt_chrome_ev_cmp);
    for (i = 0; (i < num_mem) && (status == MEMSVC_OK); i++) {
        const json_t *ev = json_array_get(events, mem[i].index);
        uint64_t      id = 0;

        (void)mt_json_get_u64(json_object_get(json_object_get(ev, "args"), "Device Id"), false,
                              SIM_MAX_NPUS - 1, &id);
        status = mt_chrome_apply(pt, ev, mem[i].index, (unsigned)id, mem[i].ts);
    }
    if (status == MEMSVC_OK) {
        mt_pt_finish(pt, true);
    }
out:
    free(mem);
    mt_pt_destroy(pt);
    free(pt);
    return status;
}

const mt_import_ops_t mt_import_chrome_ops = {
    "chrome",
    mt_import_load_json,
    mt_chrome_run,
    mt_import_unload_json,
};
