/* import.c - memtrace import: the two-pass driver, shared helpers and the command line */
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/import_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char            *name;
    const mt_import_ops_t *ops;
} mt_formats[MT_IMPORT_COUNT] = {
    [MT_IMPORT_SNAPSHOT] = {"pytorch-snapshot", &mt_import_snapshot_ops},
    [MT_IMPORT_CHROME]   = {"chrome", &mt_import_chrome_ops},
    [MT_IMPORT_DTR]      = {"dtr", &mt_import_dtr_ops},
};

void mt_import_opts_init(mt_import_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->format       = MT_IMPORT_SNAPSHOT;
    opts->time_unit_ns = 1; /* DTR's logger writes std::chrono::nanoseconds counts */
}

memsvc_status_t mt_import_format_parse(const char *name, mt_import_format_t *format_p)
{
    int i;

    for (i = 0; i < MT_IMPORT_COUNT; i++) {
        if (strcmp(name, mt_formats[i].name) == 0) {
            *format_p = (mt_import_format_t)i;
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_UNKNOWN_KEY;
}

memsvc_status_t mt_import_time_unit_parse(const char *name, uint64_t *ns_p)
{
    static const struct {
        const char *name;
        uint64_t    ns;
    } units[] = {{"ns", 1}, {"us", 1000}, {"ms", 1000000}, {"s", 1000000000}};
    size_t i;

    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(name, units[i].name) == 0) {
            *ns_p = units[i].ns;
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_UNKNOWN_KEY;
}

/* ---- shared helpers ---------------------------------------------------------------------- */

memsvc_status_t mt_imp_emit(mt_imp_t *imp, const mt_event_t *e)
{
    memsvc_status_t status = MEMSVC_OK;

    if (imp->writer != NULL) {
        status = mt_writer_put(imp->writer, e);
        if (status != MEMSVC_OK) {
            snprintf(imp->err, imp->errlen, "writing the trace failed: %s",
                     memsvc_strerror(status));
            return status;
        }
    }
    imp->stats.events++;
    switch (e->type) {
    case MT_EV_ALLOC:
        imp->stats.allocs++;
        break;
    case MT_EV_FREE:
        imp->stats.frees++;
        break;
    case MT_EV_COMPUTE:
        imp->stats.computes++;
        break;
    case MT_EV_HINT:
        imp->stats.hints++;
        break;
    default:
        break;
    }
    return MEMSVC_OK;
}

memsvc_status_t mt_imp_fail(mt_imp_t *imp, const char *fmt, ...)
{
    va_list ap;

    if ((imp->err != NULL) && (imp->errlen > 0)) {
        va_start(ap, fmt);
        vsnprintf(imp->err, imp->errlen, fmt, ap);
        va_end(ap);
    }
    return MEMSVC_ERR_FORMAT;
}

void mt_imp_meta_u64(mt_imp_t *imp, const char *key, uint64_t value)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%" PRIu64, value);
    (void)mt_header_set_meta(imp->header, key, buf); /* keys are ours and short: always fits */
}

bool mt_json_get_u64(const json_t *v, bool allow_string, uint64_t max, uint64_t *v_p)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);

        if ((i < 0) || ((uint64_t)i > max)) {
            return false;
        }
        *v_p = (uint64_t)i;
        return true;
    }
    if (allow_string && json_is_string(v)) {
        const char        *s = json_string_value(v);
        char              *end;
        unsigned long long u;

        if ((s[0] < '0') || (s[0] > '9')) {
            return false;
        }
        errno = 0;
        u     = strtoull(s, &end, 10);
        if ((errno != 0) || (*end != '\0') || (u > max)) {
            return false;
        }
        *v_p = u;
        return true;
    }
    return false;
}

bool mt_json_get_double(const json_t *v, bool allow_string, double *v_p)
{
    double d;

    if (json_is_number(v)) {
        d = json_number_value(v);
    } else if (allow_string && json_is_string(v)) {
        const char *s = json_string_value(v);
        char       *end;

        if (((s[0] < '0') || (s[0] > '9')) && (s[0] != '.')) {
            return false;
        }
        d = strtod(s, &end);
        if (*end != '\0') {
            return false;
        }
    } else {
        return false;
    }
    if (!isfinite(d) || (d < 0)) {
        return false;
    }
    *v_p = d;
    return true;
}

memsvc_status_t mt_import_load_json(const char *path, void **input_p, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t      *root;

    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        if (access(path, R_OK) != 0) {
            snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
            return MEMSVC_ERR_IO;
        }
        snprintf(err, errlen, "line %d, column %d: invalid JSON: %s", jerr.line, jerr.column,
                 jerr.text);
        return MEMSVC_ERR_FORMAT;
    }
    *input_p = root;
    return MEMSVC_OK;
}

void mt_import_unload_json(void *input)
{
    json_decref(input);
}

/* ---- string map -------------------------------------------------------------------------- */

struct mt_map_ent {
    mt_map_ent_t *next;
    uint64_t      hash;
    void         *val;
    char          key[];
};

static uint64_t mt_map_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

    while (*s != '\0') {
        h = (h ^ (uint8_t)*s++) * 0x100000001b3ull;
    }
    return h;
}

void mt_map_init(mt_map_t *map)
{
    memset(map, 0, sizeof(*map));
}

void mt_map_destroy(mt_map_t *map, void (*free_val)(void *val))
{
    size_t i;

    for (i = 0; i < map->num_buckets; i++) {
        mt_map_ent_t *e = map->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            if (free_val != NULL) {
                free_val(e->val);
            }
            free(e);
        }
    }
    free(map->buckets);
    memset(map, 0, sizeof(*map));
}

static mt_map_ent_t **mt_map_slot(const mt_map_t *map, const char *key, uint64_t hash)
{
    mt_map_ent_t **p;

    if (map->num_buckets == 0) {
        return NULL;
    }
    for (p = &map->buckets[hash & (map->num_buckets - 1)]; *p != NULL; p = &(*p)->next) {
        if (((*p)->hash == hash) && (strcmp((*p)->key, key) == 0)) {
            break;
        }
    }
    return p;
}

void *mt_map_get(const mt_map_t *map, const char *key)
{
    mt_map_ent_t **p = mt_map_slot(map, key, mt_map_hash(key));

    return ((p != NULL) && (*p != NULL)) ? (*p)->val : NULL;
}

memsvc_status_t mt_map_put(mt_map_t *map, const char *key, void *val)
{
    uint64_t      hash = mt_map_hash(key);
    size_t        len  = strlen(key);
    mt_map_ent_t *e;
    size_t        i;

    if (map->count >= map->num_buckets) {
        size_t         n = (map->num_buckets == 0) ? 64 : 2 * map->num_buckets;
        mt_map_ent_t **b = calloc(n, sizeof(*b));

        if (b == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        for (i = 0; i < map->num_buckets; i++) {
            mt_map_ent_t *next;

            for (e = map->buckets[i]; e != NULL; e = next) {
                next                 = e->next;
                e->next              = b[e->hash & (n - 1)];
                b[e->hash & (n - 1)] = e;
            }
        }
        free(map->buckets);
        map->buckets     = b;
        map->num_buckets = n;
    }
    e = malloc(sizeof(*e) + len + 1);
    if (e == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    e->hash = hash;
    e->val  = val;
    memcpy(e->key, key, len + 1);
    e->next                                     = map->buckets[hash & (map->num_buckets - 1)];
    map->buckets[hash & (map->num_buckets - 1)] = e;
    map->count++;
    return MEMSVC_OK;
}

void *mt_map_del(mt_map_t *map, const char *key)
{
    mt_map_ent_t **p = mt_map_slot(map, key, mt_map_hash(key));
    mt_map_ent_t  *e;
    void          *val;

    if ((p == NULL) || (*p == NULL)) {
        return NULL;
    }
    e   = *p;
    val = e->val;
    *p  = e->next;
    free(e);
    map->count--;
    return val;
}

/* ---- driver ------------------------------------------------------------------------------ */

/* Why an input of this format can hold no events: what the user should record instead. */
static const char *mt_import_empty_why(mt_import_format_t format)
{
    switch (format) {
    case MT_IMPORT_SNAPSHOT:
        return "device_traces has no alloc or free_completed entry (record the allocator's "
               "history with torch.cuda.memory._record_memory_history() before the snapshot)";
    case MT_IMPORT_CHROME:
        return "no device memory events: traceEvents has no \"[memory]\" event of a device "
               "(Device Type above 0); record with torch.profiler.profile(profile_memory=True) "
               "on a run that uses the device";
    default:
        return "the log has no instruction that makes an event";
    }
}

memsvc_status_t mt_import(const mt_import_opts_t *opts, const char *in_path, const char *out_path,
                          mt_import_stats_t *stats_p, char *err, size_t errlen)
{
    const mt_import_ops_t *ops;
    mt_header_t            header, scratch;
    memsvc_status_t        status, close_status;
    mt_imp_t               imp;
    void                  *input;

    if (((unsigned)opts->format >= MT_IMPORT_COUNT) || (opts->time_unit_ns == 0)) {
        snprintf(err, errlen, "invalid import options");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    ops    = mt_formats[opts->format].ops;
    status = ops->load(in_path, &input, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }

    /* Pass 1: validate everything and find what the header says (peak, metadata). */
    mt_header_init(&header);
    if (opts->model != NULL) {
        snprintf(header.model, sizeof(header.model), "%s", opts->model);
    }
    (void)mt_header_set_meta(&header, "source", mt_formats[opts->format].name);
    memset(&imp, 0, sizeof(imp));
    imp.header = &header;
    imp.err    = err;
    imp.errlen = errlen;
    status     = ops->run(&imp, opts, input);
    if (status != MEMSVC_OK) {
        goto out_unload;
    }
    if (imp.stats.events == 0) {
        /* an empty trace replays to nothing and reports success: say why there is nothing */
        status = mt_imp_fail(&imp, "no events: %s (%" PRIu64 " input records skipped)",
                             mt_import_empty_why(opts->format), imp.stats.skipped);
        goto out_unload;
    }
    header.recorded_peak = imp.stats.recorded_peak;

    /* Pass 2: the same events, written. */
    memset(&imp, 0, sizeof(imp));
    scratch    = header;
    imp.header = &scratch;
    imp.err    = err;
    imp.errlen = errlen;
    status     = mt_writer_open(out_path, &header, &imp.writer);
    if (status != MEMSVC_OK) {
        snprintf(err, errlen, "cannot write %s", out_path);
        goto out_unload;
    }
    status       = ops->run(&imp, opts, input);
    close_status = mt_writer_close(imp.writer);
    if ((status == MEMSVC_OK) && (close_status != MEMSVC_OK)) {
        snprintf(err, errlen, "writing %s failed", out_path);
        status = close_status;
    }
    if ((status != MEMSVC_OK) && (strcmp(out_path, "-") != 0)) {
        unlink(out_path);
    }
    if ((status == MEMSVC_OK) && (stats_p != NULL)) {
        *stats_p = imp.stats;
    }

out_unload:
    ops->unload(input);
    return status;
}

/* ---- command line ------------------------------------------------------------------------ */

static void mt_import_usage(FILE *out)
{
    fprintf(out,
            "usage: memtrace import --from FORMAT [--time-unit ns|us|ms|s] [--model NAME] IN OUT\n"
            "  FORMAT: pytorch-snapshot  torch.cuda.memory._snapshot() saved as JSON\n"
            "          chrome            torch.profiler Chrome trace (profile_memory=True)\n"
            "          dtr               DTR operator log (JSON lines)\n"
            "  --time-unit  unit of DTR's TIME fields (default: ns, as DTR's logger writes them)\n"
            "  OUT may be '-' for standard output. See docs/trace-format.md.\n");
}

int mt_cmd_import(int argc, char **argv)
{
    mt_import_opts_t  opts;
    mt_import_stats_t st;
    const char       *paths[2] = {NULL, NULL};
    char              err[512];
    int               i, num_paths = 0;
    bool              have_format = false;

    mt_import_opts_init(&opts);
    for (i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--help") == 0) || (strcmp(argv[i], "-h") == 0)) {
            mt_import_usage(stdout);
            return 0;
        } else if ((strcmp(argv[i], "--from") == 0) && (i + 1 < argc)) {
            if (mt_import_format_parse(argv[++i], &opts.format) != MEMSVC_OK) {
                fprintf(stderr, "memtrace import: unknown format '%s'\n", argv[i]);
                return 2;
            }
            have_format = true;
        } else if ((strcmp(argv[i], "--time-unit") == 0) && (i + 1 < argc)) {
            if (mt_import_time_unit_parse(argv[++i], &opts.time_unit_ns) != MEMSVC_OK) {
                fprintf(stderr, "memtrace import: unknown time unit '%s'\n", argv[i]);
                return 2;
            }
        } else if ((strcmp(argv[i], "--model") == 0) && (i + 1 < argc)) {
            opts.model = argv[++i];
        } else if ((num_paths < 2) && ((argv[i][0] != '-') || (strcmp(argv[i], "-") == 0))) {
            paths[num_paths++] = argv[i];
        } else {
            mt_import_usage(stderr);
            return 2;
        }
    }
    if (!have_format || (num_paths != 2)) {
        mt_import_usage(stderr);
        return 2;
    }
    if (mt_import(&opts, paths[0], paths[1], &st, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "memtrace import: %s: %s\n", paths[0], err);
        return 1;
    }
    fprintf(stderr,
            "memtrace import: %" PRIu64 " events (%" PRIu64 " alloc, %" PRIu64 " free, %" PRIu64
            " compute, %" PRIu64 " hint), %" PRIu64 " input records skipped, recorded peak %" PRIu64
            " bytes\n",
            st.events, st.allocs, st.frees, st.computes, st.hints, st.skipped, st.recorded_peak);
    return 0;
}
