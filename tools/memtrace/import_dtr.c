/* import_dtr.c - importer for DTR operator logs (one JSON object per line) */
#include "tools/memtrace/import_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MT_DTR_LINE_MAX (1u << 20) /* longest accepted line, bytes */

/* A storage: what one or more names (and aliases) refer to. */
typedef struct mt_dtr_storage {
    uint64_t tensor; /* tensor id in the trace */
    uint64_t size;
    uint64_t refs; /* names bound to it */
    uint64_t mark; /* mt_dtr_unique's pass that last listed it */
} mt_dtr_storage_t;

/* A result of the pending CALL, or the pending CONSTANT. */
typedef struct mt_dtr_result {
    char    *name;
    uint64_t size;
    int64_t  alias; /* -1: new storage; else index into the call's ARGS */
    bool     have_size, have_alias;
} mt_dtr_result_t;

typedef struct mt_dtr {
    mt_imp_t               *imp;
    const mt_import_opts_t *opts;
    mt_map_t                names;    /* name -> mt_dtr_storage_t */
    uint64_t                line;     /* current line number, from 1 */
    uint64_t                clock_ns; /* simulated time: sum of the durations so far */
    uint64_t                next_tensor, next_op;
    uint64_t                live, peak; /* bytes of live storages */
    int32_t                 step;       /* START annotations seen - 1 */

    /* the CALL or CONSTANT waiting for its MEMORY / ALIAS lines */
    enum { MT_DTR_IDLE, MT_DTR_CONSTANT, MT_DTR_CALL } pending;
    uint64_t           pending_line;
    char              *op_name;
    uint64_t           op_ns;
    mt_dtr_storage_t **args;
    uint32_t           num_args;
    mt_dtr_result_t   *results;
    uint32_t           num_results;
    uint32_t           num_done;      /* results with all their MEMORY/ALIAS lines in */
    mt_map_t           result_names;  /* name -> its mt_dtr_result_t */
    uint64_t           unique_pass;   /* mt_dtr_unique's counter */

    uint64_t *ids; /* scratch for reads/writes/inputs */
    uint64_t *ids2;
    uint64_t *ids3; /* scratch for the storages a CALL's results are views of */
} mt_dtr_t;

/* Fail with "line N: <message>"; returns MEMSVC_ERR_FORMAT. */
static memsvc_status_t __attribute__((format(printf, 2, 3)))
mt_dtr_fail(mt_dtr_t *t, const char *fmt, ...)
{
    char    msg[384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return mt_imp_fail(t->imp, "line %" PRIu64 ": %s", t->line, msg);
}

static void mt_dtr_clear_pending(mt_dtr_t *t)
{
    uint32_t i;

    for (i = 0; i < t->num_results; i++) {
        free(t->results[i].name);
    }
    free(t->results);
    free(t->args);
    free(t->op_name);
    mt_map_destroy(&t->result_names, NULL);
    t->results     = NULL;
    t->args        = NULL;
    t->op_name     = NULL;
    t->num_results = 0;
    t->num_done    = 0;
    t->num_args    = 0;
    t->pending     = MT_DTR_IDLE;
}

/* A string field of obj (a tensor or operator name: 1..MEMSVC_KEY_MAX bytes). */
static memsvc_status_t mt_dtr_str(mt_dtr_t *t, const json_t *obj, const char *field,
                                  const char **s_p)
{
    const char *s = json_string_value(json_object_get(obj, field));

    if (s == NULL) {
        return mt_dtr_fail(t, "field %s: missing or not a string", field);
    }
    if ((s[0] == '\0') || (strlen(s) > MEMSVC_KEY_MAX)) {
        return mt_dtr_fail(t, "field %s: empty or longer than %d bytes", field, MEMSVC_KEY_MAX);
    }
    *s_p = s;
    return MEMSVC_OK;
}

static memsvc_status_t mt_dtr_time(mt_dtr_t *t, const json_t *obj, uint64_t *ns_p)
{
    double v;

    if (!mt_json_get_double(json_object_get(obj, "TIME"), true, &v)) {
        return mt_dtr_fail(t, "field TIME: missing or not a non-negative number");
    }
    v *= (double)t->opts->time_unit_ns;
    if (v >= 1e18) {
        return mt_dtr_fail(t, "field TIME: absurdly large");
    }
    *ns_p = (uint64_t)llround(v);
    return MEMSVC_OK;
}

static memsvc_status_t mt_dtr_lookup(mt_dtr_t *t, const char *name, mt_dtr_storage_t **s_p)
{
    mt_dtr_storage_t *s = mt_map_get(&t->names, name);

    if (s == NULL) {
        return mt_dtr_fail(t, "unknown tensor name '%.80s'", name);
    }
    *s_p = s;
    return MEMSVC_OK;
}

/* ARGS of a CALL or MUTATE: names already bound, resolved to storages (caller frees). */
static memsvc_status_t mt_dtr_args(mt_dtr_t *t, const json_t *obj, mt_dtr_storage_t ***args_p,
                                   uint32_t *num_p)
{
    const json_t      *a = json_object_get(obj, "ARGS");
    mt_dtr_storage_t **args;
    memsvc_status_t    status;
    size_t             i, n;

    if (!json_is_array(a)) {
        return mt_dtr_fail(t, "field ARGS: missing or not an array");
    }
    n = json_array_size(a);
    if (n > MT_ARRAY_MAX) {
        return mt_dtr_fail(t, "field ARGS: too many arguments");
    }
    args = calloc((n > 0) ? n : 1, sizeof(*args));
    if (args == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(a, i));

        if (name == NULL) {
            free(args);
            return mt_dtr_fail(t, "field ARGS: element is not a string");
        }
        status = mt_dtr_lookup(t, name, &args[i]);
        if (status != MEMSVC_OK) {
            free(args);
            return status;
        }
    }
    *args_p = args;
    *num_p  = (uint32_t)n;
    return MEMSVC_OK;
}

/* Tensor ids of storages, without duplicates, into ids; returns the count. Linear: a line
 * may list a million arguments. */
static uint32_t mt_dtr_unique(mt_dtr_t *t, mt_dtr_storage_t **s, uint32_t n, uint64_t *ids)
{
    uint64_t pass = ++t->unique_pass;
    uint32_t i, k = 0;

    for (i = 0; i < n; i++) {
        if (s[i]->mark != pass) {
            s[i]->mark = pass;
            ids[k++]   = s[i]->tensor;
        }
    }
    return k;
}

/* Add name as the next pending result (t->results has room). Refuses a name listed twice. */
static memsvc_status_t mt_dtr_add_result(mt_dtr_t *t, const char *name)
{
    mt_dtr_result_t *r = &t->results[t->num_results];

    if (mt_map_get(&t->result_names, name) != NULL) {
        return mt_dtr_fail(t, "result '%.80s' listed twice", name);
    }
    r->name = strdup(name);
    if ((r->name == NULL) || (mt_map_put(&t->result_names, name, r) != MEMSVC_OK)) {
        free(r->name);
        r->name = NULL;
        return MEMSVC_ERR_NO_RESOURCE;
    }
    t->num_results++;
    return MEMSVC_OK;
}

static memsvc_status_t mt_dtr_scratch(mt_dtr_t *t, uint32_t n)
{
    free(t->ids);
    free(t->ids2);
    free(t->ids3);
    t->ids  = calloc(n + 1, sizeof(*t->ids));
    t->ids2 = calloc(n + 1, sizeof(*t->ids2));
    t->ids3 = calloc(n + 1, sizeof(*t->ids3));
    return ((t->ids != NULL) && (t->ids2 != NULL) && (t->ids3 != NULL)) ? MEMSVC_OK
                                                                          : MEMSVC_ERR_NO_RESOURCE;
}

/* Bind name to storage s (one more reference). */
static memsvc_status_t mt_dtr_bind(mt_dtr_t *t, const char *name, mt_dtr_storage_t *s)
{
    memsvc_status_t status;

    if (mt_map_get(&t->names, name) != NULL) {
        return mt_dtr_fail(t, "tensor name '%.80s' is already defined", name);
    }
    status = mt_map_put(&t->names, name, s);
    if (status == MEMSVC_OK) {
        s->refs++;
    }
    return status;
}

/* Drop name's reference; the storage ends (FREE) when none remains. */
static memsvc_status_t mt_dtr_unbind(mt_dtr_t *t, const char *name)
{
    mt_dtr_storage_t *s = mt_map_del(&t->names, name);
    mt_event_t        e;

    if (s == NULL) {
        return mt_dtr_fail(t, "unknown tensor name '%.80s'", name);
    }
    if (--s->refs > 0) {
        return MEMSVC_OK;
    }
    memset(&e, 0, sizeof(e));
    e.type    = MT_EV_FREE;
    e.time_ns = t->clock_ns;
    e.tensor  = s->tensor;
    t->live -= s->size;
    free(s);
    return mt_imp_emit(t->imp, &e);
}

/* A new storage of size bytes bound to name, announced by an ALLOC event. */
static memsvc_status_t mt_dtr_new(mt_dtr_t *t, const char *name, uint64_t size, bool constant,
                                  const uint64_t *inputs, uint32_t num_inputs,
                                  mt_dtr_storage_t **s_p)
{
    mt_dtr_storage_t *s;
    mt_event_t        e;
    memsvc_status_t   status;

    if (t->live + size < t->live) {
        return mt_dtr_fail(t, "live bytes overflow");
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    s->tensor = t->next_tensor++;
    s->size   = size;
    status    = mt_dtr_bind(t, name, s);
    if (status != MEMSVC_OK) {
        free(s);
        return status;
    }
    t->live += size;
    if (t->live > t->peak) {
        t->peak = t->live;
    }
    memset(&e, 0, sizeof(e));
    e.type         = MT_EV_ALLOC;
    e.time_ns      = t->clock_ns;
    e.tensor       = s->tensor;
    e.key          = name;
    e.size         = size;
    e.kind         = constant ? MEMSVC_KIND_PARAM : MEMSVC_KIND_ACTIVATION;
    e.tags         = MEMSVC_TAGS_NONE;
    e.durable      = constant;
    e.recomputable = !constant;
    e.recompute_ns = constant ? 0 : t->op_ns;
    e.producer     = constant ? 0 : t->next_op;
    e.inputs       = inputs;
    e.num_inputs   = num_inputs;
    *s_p           = s;
    return mt_imp_emit(t->imp, &e);
}

static memsvc_status_t mt_dtr_compute(mt_dtr_t *t, const char *name, uint64_t ns,
                                      const uint64_t *reads, uint32_t num_reads,
                                      const uint64_t *writes, uint32_t num_writes,
                                      const uint64_t *aliases, uint32_t num_aliases)
{
    mt_event_t e;

    memset(&e, 0, sizeof(e));
    e.type        = MT_EV_COMPUTE;
    e.time_ns     = t->clock_ns;
    e.op          = t->next_op++;
    e.name        = name;
    e.duration_ns = ns;
    e.reads       = reads;
    e.num_reads   = num_reads;
    e.writes      = writes;
    e.num_writes  = num_writes;
    e.aliases     = aliases;
    e.num_aliases = num_aliases;
    t->clock_ns += ns;
    return mt_imp_emit(t->imp, &e);
}

/* All MEMORY/ALIAS lines of the pending CALL or CONSTANT are in: emit its events. */
static memsvc_status_t mt_dtr_complete(mt_dtr_t *t)
{
    mt_dtr_storage_t *s;
    memsvc_status_t   status = MEMSVC_OK;
    uint32_t          i, num_inputs, num_writes = 0, num_aliases = 0;
    uint64_t          pass;

    if (t->pending == MT_DTR_CONSTANT) {
        status = mt_dtr_new(t, t->results[0].name, t->results[0].size, true, NULL, 0, &s);
        mt_dtr_clear_pending(t);
        return status;
    }
    status = mt_dtr_scratch(t, t->num_args + t->num_results);
    if (status != MEMSVC_OK) {
        return status;
    }
    num_inputs = mt_dtr_unique(t, t->args, t->num_args, t->ids);
    for (i = 0; (i < t->num_results) && (status == MEMSVC_OK); i++) {
        mt_dtr_result_t *r = &t->results[i];

        if (r->alias < 0) {
            status = mt_dtr_new(t, r->name, r->size, false, t->ids, num_inputs, &s);
            if (status == MEMSVC_OK) {
                t->ids2[num_writes++] = s->tensor;
            }
        } else {
            status = mt_dtr_bind(t, r->name, t->args[r->alias]);
        }
    }
    /* the storages the results are views of, once each (re-run when those are recomputed) */
    pass = ++t->unique_pass;
    for (i = 0; i < t->num_results; i++) {
        mt_dtr_storage_t *a = (t->results[i].alias >= 0) ? t->args[t->results[i].alias] : NULL;

        if (a != NULL && a->mark != pass) {
            a->mark                 = pass;
            t->ids3[num_aliases++] = a->tensor;
        }
    }
    if (status == MEMSVC_OK) {
        status = mt_dtr_compute(t, t->op_name, t->op_ns, t->ids, num_inputs, t->ids2, num_writes,
                                t->ids3, num_aliases);
    }
    mt_dtr_clear_pending(t);
    return status;
}

/* MEMORY or ALIAS for a pending result. */
static memsvc_status_t mt_dtr_result_line(mt_dtr_t *t, const json_t *obj, bool memory)
{
    mt_dtr_result_t *r;
    memsvc_status_t  status;
    const char      *name;
    uint64_t         u;

    status = mt_dtr_str(t, obj, "NAME", &name);
    if (status != MEMSVC_OK) {
        return status;
    }
    r = mt_map_get(&t->result_names, name);
    if (r == NULL) {
        return mt_dtr_fail(t, "%s for '%.80s', which is no pending CALL result or CONSTANT",
                           memory ? "MEMORY" : "ALIAS", name);
    }
    if (memory) {
        if (r->have_size) {
            return mt_dtr_fail(t, "second MEMORY for '%.80s'", name);
        }
        if (!mt_json_get_u64(json_object_get(obj, "MEMORY"), true, MT_IMPORT_SIZE_MAX, &u)) {
            return mt_dtr_fail(t, "field MEMORY: missing, negative, not an integer or above "
                                  "2^48");
        }
        r->size      = u;
        r->have_size = true;
    } else {
        const json_t *a = json_object_get(obj, "ALIAS");
        int64_t       alias;

        if (r->have_alias || (t->pending != MT_DTR_CALL)) {
            return mt_dtr_fail(t, "unexpected ALIAS for '%.80s'", name);
        }
        if (json_is_string(a) && (strcmp(json_string_value(a), "-1") == 0)) {
            alias = -1;
        } else if (json_is_integer(a) && (json_integer_value(a) == -1)) {
            alias = -1;
        } else if (mt_json_get_u64(a, true, UINT32_MAX, &u) && (u < t->num_args)) {
            alias = (int64_t)u;
        } else {
            return mt_dtr_fail(t, "field ALIAS: not -1 or the index of an argument");
        }
        r->alias      = alias;
        r->have_alias = true;
    }
    if (r->have_size && (r->have_alias || (t->pending == MT_DTR_CONSTANT))) {
        t->num_done++;
    }
    return (t->num_done == t->num_results) ? mt_dtr_complete(t) : MEMSVC_OK;
}

static memsvc_status_t mt_dtr_call(mt_dtr_t *t, const json_t *obj)
{
    const json_t   *res = json_object_get(obj, "RESULT");
    memsvc_status_t status;
    const char     *op;
    size_t          i, n;

    if (((status = mt_dtr_str(t, obj, "NAME", &op)) != MEMSVC_OK) ||
        ((status = mt_dtr_time(t, obj, &t->op_ns)) != MEMSVC_OK)) {
        return status;
    }
    if (!json_is_array(res) || (json_array_size(res) > MT_ARRAY_MAX)) {
        return mt_dtr_fail(t, "field RESULT: missing or not an array");
    }
    status = mt_dtr_args(t, obj, &t->args, &t->num_args);
    if (status != MEMSVC_OK) {
        return status;
    }
    t->pending      = MT_DTR_CALL;
    t->pending_line = t->line;
    n               = json_array_size(res);
    t->op_name      = strdup(op);
    t->results      = calloc((n > 0) ? n : 1, sizeof(*t->results));
    if ((t->op_name == NULL) || (t->results == NULL)) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < n; i++) {
        const char *name = json_string_value(json_array_get(res, i));

        if ((name == NULL) || (name[0] == '\0') || (strlen(name) > MEMSVC_KEY_MAX)) {
            return mt_dtr_fail(t, "field RESULT: element is not a tensor name");
        }
        if (mt_map_get(&t->names, name) != NULL) {
            return mt_dtr_fail(t, "result '%.80s' is already defined", name);
        }
        status = mt_dtr_add_result(t, name);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    return (n == 0) ? mt_dtr_complete(t) : MEMSVC_OK;
}

static memsvc_status_t mt_dtr_mutate(mt_dtr_t *t, const json_t *obj)
{
    const json_t      *mut = json_object_get(obj, "MUTATE");
    mt_dtr_storage_t **args, **written;
    memsvc_status_t    status;
    const char        *op;
    uint32_t           num_args, num_reads, num_writes;
    uint64_t           ns, idx;
    size_t             i;

    if (((status = mt_dtr_str(t, obj, "NAME", &op)) != MEMSVC_OK) ||
        ((status = mt_dtr_time(t, obj, &ns)) != MEMSVC_OK)) {
        return status;
    }
    if (!json_is_array(mut) || (json_array_size(mut) > MT_ARRAY_MAX)) {
        return mt_dtr_fail(t, "field MUTATE: missing or not an array");
    }
    status = mt_dtr_args(t, obj, &args, &num_args);
    if (status != MEMSVC_OK) {
        return status;
    }
    written = calloc(json_array_size(mut) + 1, sizeof(*written));
    if ((written == NULL) || (mt_dtr_scratch(t, num_args + json_array_size(mut)) != MEMSVC_OK)) {
        status = MEMSVC_ERR_NO_RESOURCE;
        goto out;
    }
    for (i = 0; i < json_array_size(mut); i++) {
        if (!mt_json_get_u64(json_array_get(mut, i), true, UINT32_MAX, &idx) || (idx >= num_args)) {
            status = mt_dtr_fail(t, "field MUTATE: element is not the index of an argument");
            goto out;
        }
        written[i] = args[idx];
    }
    num_reads  = mt_dtr_unique(t, args, num_args, t->ids);
    num_writes = mt_dtr_unique(t, written, (uint32_t)json_array_size(mut), t->ids2);
    status     = mt_dtr_compute(t, op, ns, t->ids, num_reads, t->ids2, num_writes, NULL, 0);
out:
    free(written);
    free(args);
    return status;
}

static memsvc_status_t mt_dtr_hint(mt_dtr_t *t, const json_t *obj)
{
    const char *a = json_string_value(json_object_get(obj, "ANNOTATION"));
    mt_event_t  e;

    if (a == NULL) {
        return mt_dtr_fail(t, "field ANNOTATION: missing or not a string");
    }
    memset(&e, 0, sizeof(e));
    e.type       = MT_EV_HINT;
    e.time_ns    = t->clock_ns;
    e.layer      = MEMSVC_TAG_NONE;
    e.microbatch = MEMSVC_TAG_NONE;
    if (strcmp(a, "START") == 0) {
        e.hint = MEMSVC_HINT_STEP_BEGIN;
        e.step = ++t->step;
    } else if (strcmp(a, "BACKWARD") == 0) {
        e.hint  = MEMSVC_HINT_PHASE;
        e.step  = t->step;
        e.phase = MEMSVC_PHASE_BACKWARD;
    } else {
        return mt_dtr_fail(t, "unknown ANNOTATION '%.40s' (START or BACKWARD)", a);
    }
    return mt_imp_emit(t->imp, &e);
}

static memsvc_status_t mt_dtr_line(mt_dtr_t *t, const json_t *obj)
{
    const char       *ins = json_string_value(json_object_get(obj, "INSTRUCTION"));
    const char       *a, *b;
    mt_dtr_storage_t *s = NULL;
    memsvc_status_t   status;

    if (!json_is_object(obj)) {
        return mt_dtr_fail(t, "expected a JSON object");
    }
    if (ins == NULL) {
        return mt_dtr_fail(t, "field INSTRUCTION: missing or not a string");
    }
    if (strcmp(ins, "MEMORY") == 0) {
        return mt_dtr_result_line(t, obj, true);
    }
    if (strcmp(ins, "ALIAS") == 0) {
        return mt_dtr_result_line(t, obj, false);
    }
    if (t->pending != MT_DTR_IDLE) {
        return mt_dtr_fail(
            t, "%.40s before the MEMORY/ALIAS lines of the instruction at line %" PRIu64, ins,
            t->pending_line);
    }
    if (strcmp(ins, "CONSTANT") == 0) {
        status = mt_dtr_str(t, obj, "NAME", &a);
        if (status != MEMSVC_OK) {
            return status;
        }
        if (mt_map_get(&t->names, a) != NULL) {
            return mt_dtr_fail(t, "tensor name '%.80s' is already defined", a);
        }
        t->results = calloc(1, sizeof(*t->results));
        if (t->results == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
        t->pending      = MT_DTR_CONSTANT;
        t->pending_line = t->line;
        return mt_dtr_add_result(t, a);
    }
    if (strcmp(ins, "CALL") == 0) {
        return mt_dtr_call(t, obj);
    }
    if (strcmp(ins, "MUTATE") == 0) {
        return mt_dtr_mutate(t, obj);
    }
    if ((strcmp(ins, "COPY") == 0) || (strcmp(ins, "COPY_FROM") == 0)) {
        if (((status = mt_dtr_str(t, obj, "DST", &a)) != MEMSVC_OK) ||
            ((status = mt_dtr_str(t, obj, "SRC", &b)) != MEMSVC_OK) ||
            ((status = mt_dtr_lookup(t, b, &s)) != MEMSVC_OK)) {
            return status;
        }
        if (ins[4] == '\0') {
            return mt_dtr_bind(t, a, s); /* COPY: a new name for SRC's tensor */
        }
        /* COPY_FROM: DST lets go of its tensor and refers to SRC's */
        if (mt_map_get(&t->names, a) == NULL) {
            return mt_dtr_fail(t, "unknown tensor name '%.80s'", a);
        }
        s->refs++; /* keep SRC's storage alive if DST was its last other name */
        status = mt_dtr_unbind(t, a);
        s->refs--;
        return (status == MEMSVC_OK) ? mt_dtr_bind(t, a, s) : status;
    }
    if (strcmp(ins, "RELEASE") == 0) {
        status = mt_dtr_str(t, obj, "NAME", &a);
        return (status == MEMSVC_OK) ? mt_dtr_unbind(t, a) : status;
    }
    if (strcmp(ins, "ANNOTATE") == 0) {
        return mt_dtr_hint(t, obj);
    }
    return mt_dtr_fail(t, "unknown INSTRUCTION '%.40s'", ins);
}

static void mt_dtr_free_storage(void *val)
{
    mt_dtr_storage_t *s = val;

    if (--s->refs == 0) {
        free(s);
    }
}

static memsvc_status_t mt_dtr_load(const char *path, void **input_p, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    *input_p = f;
    return MEMSVC_OK;
}

static void mt_dtr_unload(void *input)
{
    fclose(input);
}

static memsvc_status_t mt_dtr_run(mt_imp_t *imp, const mt_import_opts_t *opts, void *input)
{
    FILE           *f    = input;
    char           *line = NULL;
    size_t          cap  = 0;
    ssize_t         len;
    memsvc_status_t status = MEMSVC_OK;
    mt_dtr_t        t;

    memset(&t, 0, sizeof(t));
    t.imp         = imp;
    t.opts        = opts;
    t.next_tensor = 1;
    t.next_op     = 1;
    t.step        = -1;
    mt_map_init(&t.names);
    mt_map_init(&t.result_names);
    rewind(f);
    while ((status == MEMSVC_OK) && ((len = getline(&line, &cap, f)) >= 0)) {
        json_error_t jerr;
        json_t      *obj;

        t.line++;
        if ((size_t)len > MT_DTR_LINE_MAX) {
            status = mt_dtr_fail(&t, "line longer than 1 MiB");
            break;
        }
        if (strspn(line, " \t\r\n") == (size_t)len) {
            continue; /* blank line */
        }
        obj = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
        if (obj == NULL) {
            status = mt_imp_fail(imp, "line %" PRIu64 ", column %d: invalid JSON: %s", t.line,
                                 jerr.column, jerr.text);
            break;
        }
        status = mt_dtr_line(&t, obj);
        json_decref(obj);
    }
    if ((status == MEMSVC_OK) && ferror(f)) {
        status = mt_imp_fail(imp, "line %" PRIu64 ": read failed", t.line);
    }
    if ((status == MEMSVC_OK) && (t.pending != MT_DTR_IDLE)) {
        t.line++;
        status = mt_imp_fail(imp,
                             "line %" PRIu64 ": the log ends before the MEMORY/ALIAS lines "
                             "of the instruction at line %" PRIu64,
                             t.line, t.pending_line);
    }
    if (status == MEMSVC_OK) {
        imp->stats.recorded_peak = t.peak;
        imp->header->steps       = (t.step >= 0) ? (uint32_t)t.step + 1 : 1;
        mt_imp_meta_u64(imp, "time_unit_ns", opts->time_unit_ns);
        mt_imp_meta_u64(imp, "live_at_end", t.live);
    }
    mt_dtr_clear_pending(&t);
    mt_map_destroy(&t.names, mt_dtr_free_storage);
    free(t.ids);
    free(t.ids2);
    free(t.ids3);
    free(line);
    return status;
}

const mt_import_ops_t mt_import_dtr_ops = {
    "dtr",
    mt_dtr_load,
    mt_dtr_run,
    mt_dtr_unload,
};
