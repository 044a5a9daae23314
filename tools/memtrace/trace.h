/* trace.h - the memtrace trace format: header + a stream of timed events, msgpack-encoded */
#ifndef MT_TRACE_H
#define MT_TRACE_H

#include "client/memsvc_status.h"
#include "client/memsvc_types.h"
#include "sim_npu/sim_desc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MT_FORMAT_VERSION 2     /* what the writer writes */
#define MT_FORMAT_VERSION_MIN 1 /* oldest the reader reads (1: COMPUTE without aliases) */

typedef enum mt_event_type {
    MT_EV_ALLOC   = 0, /* a tensor comes to life (on its device) */
    MT_EV_ACCESS  = 1, /* a tensor is read or written outside a compute event */
    MT_EV_FREE    = 2, /* a tensor ends */
    MT_EV_COMPUTE = 3, /* an operator: needs its inputs resident, produces its outputs */
    MT_EV_HINT    = 4, /* step / layer / phase / micro-batch marker */
    MT_EV_COUNT
} mt_event_type_t;

/* Parallel layout of the traced run. */
typedef struct mt_layout {
    uint32_t tp, pp, vpp, ep, dp, cp;
    uint32_t microbatches; /* micro-batches per step */
    uint32_t micro_batch_size;
    uint32_t seq_len;
} mt_layout_t;

#define MT_META_MAX 16

typedef struct mt_header {
    uint32_t    version;             /* MT_FORMAT_VERSION */
    sim_desc_t  node;                /* node the trace was made for */
    char        model[64];           /* model name ("" if unknown) */
    mt_layout_t layout;              /* zeros if unknown */
    uint32_t    ranks;               /* ranks in the trace (events carry their rank) */
    uint32_t    steps;               /* training steps in the trace */
    uint64_t    recorded_peak;       /* peak allocated device bytes as recorded (0: unknown) */
    uint32_t    num_meta;            /* free-form metadata pairs */
    char        meta_key[MT_META_MAX][32];
    char        meta_value[MT_META_MAX][128];
} mt_header_t;

/*
 * One event. Strings and arrays point into the reader's buffers and stay valid until the next
 * mt_reader_next(). Tensor ids are unique among live tensors of a rank (an id may be reused
 * after its free). Fields that do not apply to a type are zero.
 */
typedef struct mt_event {
    mt_event_type_t type;
    uint64_t        time_ns;    /* recorded time (0 if the source had none) */
    uint32_t        rank;
    uint32_t        device;     /* device index on the node */
    uint64_t        tensor;     /* ALLOC, ACCESS, FREE: tensor id */

    /* ALLOC */
    const char     *key;        /* stable key (e.g. "L12.mb3.attn.qkv") */
    uint64_t        size;
    memsvc_kind_t   kind;
    memsvc_tags_t   tags;
    bool            recomputable;
    uint64_t        recompute_ns;
    bool            durable;
    uint64_t        producer;   /* op id that produces it (0: none) */
    const uint64_t *inputs;     /* tensors its recomputation reads */
    uint32_t        num_inputs;

    /* ACCESS */
    bool            write;
    /* ACCESS, COMPUTE: operator id (unique per rank) */
    uint64_t        op;

    /* COMPUTE */
    const char     *name;       /* operator name */
    uint64_t        duration_ns;
    uint32_t        stream;     /* 0: compute; others: communication streams */
    const uint64_t *reads;      /* tensors that must be resident */
    uint32_t        num_reads;
    const uint64_t *writes;     /* tensors it produces or updates (allocated before it) */
    uint32_t        num_writes;
    const uint64_t *aliases;    /* tensors its results are views of (version 2; re-run with
                                   them when they are recomputed) */
    uint32_t        num_aliases;

    /* HINT */
    memsvc_hint_type_t hint;
    int32_t         step, layer, microbatch;
    memsvc_phase_t  phase;
} mt_event_t;

typedef struct mt_writer mt_writer_t;
typedef struct mt_reader mt_reader_t;

/* Write a trace to path ("-" for stdout). Errors: MEMSVC_ERR_IO. */
memsvc_status_t mt_writer_open(const char *path, const mt_header_t *header, mt_writer_t **writer_p);
memsvc_status_t mt_writer_put(mt_writer_t *writer, const mt_event_t *event);
/* Flush and close; returns the first error met while writing, if any. */
memsvc_status_t mt_writer_close(mt_writer_t *writer);
uint64_t        mt_writer_count(const mt_writer_t *writer);

/*
 * Read a trace from path ("-" for stdin), streaming: memory stays bounded by the largest event.
 * Errors: MEMSVC_ERR_IO, MEMSVC_ERR_FORMAT (not a trace, or malformed: the message names the
 * byte offset and the problem), MEMSVC_ERR_VERSION.
 */
memsvc_status_t    mt_reader_open(const char *path, mt_reader_t **reader_p, char *err, size_t errlen);
const mt_header_t *mt_reader_header(const mt_reader_t *reader);
/* Next event: MEMSVC_OK with *end_p false, or
 * MEMSVC_OK with *end_p true at the clean end of the trace, or an error (message in err). */
memsvc_status_t    mt_reader_next(mt_reader_t *reader, mt_event_t *event_p, bool *end_p, char *err,
                                  size_t errlen);
uint64_t           mt_reader_offset(const mt_reader_t *reader); /* bytes consumed so far */
void               mt_reader_close(mt_reader_t *reader);

/* Fill a header with defaults (version, node "tiny"). */
void mt_header_init(mt_header_t *header);

/* Print an event as one JSON object on one line. */
void mt_event_print_json(const mt_event_t *event, FILE *out);
void mt_header_print_json(const mt_header_t *header, FILE *out);

const char *mt_event_type_name(mt_event_type_t type);

/* ---- additions: limits, reader statistics, helpers -------------------------------------- */

#define MT_MAGIC      "MEMTRACE" /* bytes 0..7 of a trace file; then the version, uint32 BE */
#define MT_MAGIC_LEN  8
#define MT_NAME_MAX   255        /* longest operator name, bytes */
#define MT_ARRAY_MAX  (1u << 20) /* longest msgpack array, map or string a reader accepts */
#define MT_DEPTH_MAX  8          /* deepest nesting of arrays and maps a reader accepts */
#define MT_OBJECT_MAX (32u << 20) /* largest encoded header or event, bytes */

/* Largest read buffer the reader has held, bytes (bounded by the largest event + 64 KiB). */
size_t mt_reader_buffer_peak(const mt_reader_t *reader);

/* Set (or replace) a header metadata pair. MEMSVC_ERR_TOO_LARGE if it does not fit. */
memsvc_status_t mt_header_set_meta(mt_header_t *header, const char *key, const char *value);

#endif /* MT_TRACE_H */
