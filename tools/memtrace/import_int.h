/* import_int.h - what the importers share: one pass's context, event output, a string map */
#ifndef MT_IMPORT_INT_H
#define MT_IMPORT_INT_H

#include "tools/memtrace/import.h"

#include <jansson.h>

/* One pass over the input. The first pass has no writer: it validates and fills the header. */
typedef struct mt_imp {
    mt_writer_t      *writer; /* NULL on the validating pass */
    mt_header_t      *header; /* the validating pass fills recorded_peak, meta, num_npus */
    mt_import_stats_t stats;
    char             *err;
    size_t            errlen;
} mt_imp_t;

/* Count the event and write it (second pass). Errors: those of mt_writer_put. */
memsvc_status_t mt_imp_emit(mt_imp_t *imp, const mt_event_t *event);

/* Format a message into imp->err; returns MEMSVC_ERR_FORMAT. */
memsvc_status_t mt_imp_fail(mt_imp_t *imp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Set a numeric metadata pair in the header. */
void mt_imp_meta_u64(mt_imp_t *imp, const char *key, uint64_t value);

/*
 * JSON number helpers: an integer (or, if allow_string, a string holding a decimal integer)
 * in [0, max]. Return false if absent or not such a number.
 */
bool mt_json_get_u64(const json_t *v, bool allow_string, uint64_t max, uint64_t *v_p);
/* A non-negative number (integer or real; or a string holding one, if allow_string). */
bool mt_json_get_double(const json_t *v, bool allow_string, double *v_p);

/* String -> pointer map with owned keys. */
typedef struct mt_map_ent mt_map_ent_t;
typedef struct mt_map {
    mt_map_ent_t **buckets;
    size_t         num_buckets;
    size_t         count;
} mt_map_t;

void mt_map_init(mt_map_t *map);
/* Free the map; free_val (may be NULL) is called on each value. */
void  mt_map_destroy(mt_map_t *map, void (*free_val)(void *val));
void *mt_map_get(const mt_map_t *map, const char *key);
/* Insert a key that is not present. MEMSVC_ERR_NO_RESOURCE if out of memory. */
memsvc_status_t mt_map_put(mt_map_t *map, const char *key, void *val);
/* Remove a key; returns its value, or NULL if absent. */
void *mt_map_del(mt_map_t *map, const char *key);

/* The formats: each runs one pass over its loaded input. */
typedef struct mt_import_ops {
    const char *name;
    /* Load or open the input; *input_p is passed to run and unload. */
    memsvc_status_t (*load)(const char *path, void **input_p, char *err, size_t errlen);
    memsvc_status_t (*run)(mt_imp_t *imp, const mt_import_opts_t *opts, void *input);
    void (*unload)(void *input);
} mt_import_ops_t;

extern const mt_import_ops_t mt_import_snapshot_ops;
extern const mt_import_ops_t mt_import_chrome_ops;
extern const mt_import_ops_t mt_import_dtr_ops;

/* load/unload for formats that are one JSON document. */
memsvc_status_t mt_import_load_json(const char *path, void **input_p, char *err, size_t errlen);
void            mt_import_unload_json(void *input);

#endif /* MT_IMPORT_INT_H */
