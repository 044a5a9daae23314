/* import.h - convert PyTorch snapshots, PyTorch profiler Chrome traces and DTR logs to traces */
#ifndef MT_IMPORT_H
#define MT_IMPORT_H

#include "tools/memtrace/trace.h"

typedef enum mt_import_format {
    MT_IMPORT_SNAPSHOT = 0, /* "pytorch-snapshot": torch.cuda.memory._snapshot() saved as JSON */
    MT_IMPORT_CHROME   = 1, /* "chrome": torch.profiler trace with profile_memory=True */
    MT_IMPORT_DTR      = 2, /* "dtr": DTR operator log, one JSON object per line */
    MT_IMPORT_COUNT
} mt_import_format_t;

typedef struct mt_import_opts {
    mt_import_format_t format;
    uint64_t           time_unit_ns; /* DTR: nanoseconds per unit of TIME (default 1: ns) */
    const char        *model;        /* model name for the header, or NULL */
} mt_import_opts_t;

typedef struct mt_import_stats {
    uint64_t events; /* events written */
    uint64_t allocs, frees, computes, hints;
    uint64_t recorded_peak; /* the header's recorded_peak */
    uint64_t skipped;       /* input records ignored (CPU memory, frees of unknown addresses) */
} mt_import_stats_t;

#define MT_IMPORT_SIZE_MAX (1ull << 48) /* larger sizes in an input are refused as absurd */

/* Defaults: format snapshot, time unit microseconds, no model name. */
void mt_import_opts_init(mt_import_opts_t *opts);

/* "pytorch-snapshot", "chrome", "dtr" -> format; MEMSVC_ERR_UNKNOWN_KEY otherwise. */
memsvc_status_t mt_import_format_parse(const char *name, mt_import_format_t *format_p);

/* "ns", "us", "ms", "s" -> nanoseconds per unit; MEMSVC_ERR_UNKNOWN_KEY otherwise. */
memsvc_status_t mt_import_time_unit_parse(const char *name, uint64_t *ns_p);

/*
 * Convert in_path (a regular file: it is read twice, once to find the header's recorded peak)
 * into the trace out_path ("-": stdout). Nothing is written unless the whole input is valid.
 * Errors: MEMSVC_ERR_IO, MEMSVC_ERR_FORMAT (malformed input: err names the line, or the JSON
 * path, and the problem), MEMSVC_ERR_NO_RESOURCE. stats_p may be NULL.
 */
memsvc_status_t mt_import(const mt_import_opts_t *opts, const char *in_path, const char *out_path,
                          mt_import_stats_t *stats_p, char *err, size_t errlen);

#endif /* MT_IMPORT_H */
