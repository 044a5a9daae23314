/* trace.c - memtrace trace files: msgpack writer, streaming and defensive reader, JSON printing */
#include "tools/memtrace/trace.h"

#include <msgpack.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MT_READ_CHUNK (64 * 1024) /* bytes read from the file at a time (at least) */

typedef enum mt_scan_result {
    MT_SCAN_DONE, /* one complete object of *len_p bytes */
    MT_SCAN_MORE, /* the object continues past the available bytes */
    MT_SCAN_BAD   /* malformed: *bad_p is the offset of the offending byte, *why_p says why */
} mt_scan_result_t;

struct mt_writer {
    FILE           *file;
    bool            is_stdout;
    msgpack_packer  pk;
    memsvc_status_t status; /* first write error */
    uint64_t        count;
};

struct mt_reader {
    FILE            *file;
    bool             is_stdin;
    bool             eof;
    msgpack_unpacker unp;
    uint64_t         offset;      /* file offset of the next object */
    size_t           buffer_peak; /* largest unpacker buffer seen, bytes */
    mt_header_t      header;
    char             key[MEMSVC_KEY_MAX + 1];
    char             name[MT_NAME_MAX + 1];
    uint64_t        *arr[4]; /* inputs, reads, writes, aliases */
    uint32_t         arr_cap[4];
    uint32_t         version; /* of the file: MT_FORMAT_VERSION_MIN..MT_FORMAT_VERSION */
};

/* ---- writer ------------------------------------------------------------------------------ */

static int mt_writer_write_cb(void *data, const char *buf, size_t len)
{
    mt_writer_t *w = data;

    if ((len > 0) && (fwrite(buf, 1, len, w->file) != len) && (w->status == MEMSVC_OK)) {
        fprintf(stderr, "memtrace: write failed: %s\n", strerror(errno));
        w->status = MEMSVC_ERR_IO;
    }
    return 0;
}

static void mt_pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t len = (s != NULL) ? strlen(s) : 0;

    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, (s != NULL) ? s : "", len);
}

static void mt_pack_kv_str(msgpack_packer *pk, const char *key, const char *value)
{
    mt_pack_cstr(pk, key);
    mt_pack_cstr(pk, value);
}

static void mt_pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t value)
{
    mt_pack_cstr(pk, key);
    msgpack_pack_uint64(pk, value);
}

static void mt_pack_kv_double(msgpack_packer *pk, const char *key, double value)
{
    mt_pack_cstr(pk, key);
    msgpack_pack_double(pk, value);
}

static void mt_pack_kv_link(msgpack_packer *pk, const char *key, const sim_link_desc_t *link)
{
    mt_pack_cstr(pk, key);
    msgpack_pack_array(pk, 2);
    msgpack_pack_double(pk, link->bw);
    msgpack_pack_uint64(pk, link->lat_ns);
}

static void mt_pack_header(msgpack_packer *pk, const mt_header_t *h)
{
    const sim_desc_t  *n = &h->node;
    const mt_layout_t *l = &h->layout;
    uint32_t           i, num_meta = (h->num_meta <= MT_META_MAX) ? h->num_meta : MT_META_MAX;

    msgpack_pack_map(pk, 8);
    mt_pack_kv_u64(pk, "version", MT_FORMAT_VERSION);
    mt_pack_cstr(pk, "node");
    msgpack_pack_map(pk, 13);
    mt_pack_kv_str(pk, "name", n->name);
    mt_pack_kv_u64(pk, "num_npus", n->num_npus);
    mt_pack_kv_u64(pk, "hbm_bytes", n->hbm_bytes);
    mt_pack_kv_double(pk, "hbm_bw", n->hbm_bw);
    mt_pack_kv_u64(pk, "host_bytes", n->host_bytes);
    mt_pack_kv_u64(pk, "disk_bytes", n->disk_bytes);
    mt_pack_kv_link(pk, "h2d", &n->h2d);
    mt_pack_kv_link(pk, "d2h", &n->d2h);
    mt_pack_kv_link(pk, "d2d", &n->d2d);
    mt_pack_kv_link(pk, "disk", &n->disk);
    mt_pack_kv_link(pk, "nic", &n->nic);
    mt_pack_kv_double(pk, "flops", n->flops);
    mt_pack_kv_double(pk, "mfu", n->mfu);
    mt_pack_kv_str(pk, "model", h->model);
    mt_pack_cstr(pk, "layout");
    msgpack_pack_map(pk, 9);
    mt_pack_kv_u64(pk, "tp", l->tp);
    mt_pack_kv_u64(pk, "pp", l->pp);
    mt_pack_kv_u64(pk, "vpp", l->vpp);
    mt_pack_kv_u64(pk, "ep", l->ep);
    mt_pack_kv_u64(pk, "dp", l->dp);
    mt_pack_kv_u64(pk, "cp", l->cp);
    mt_pack_kv_u64(pk, "microbatches", l->microbatches);
    mt_pack_kv_u64(pk, "micro_batch_size", l->micro_batch_size);
    mt_pack_kv_u64(pk, "seq_len", l->seq_len);
    mt_pack_kv_u64(pk, "ranks", h->ranks);
    mt_pack_kv_u64(pk, "steps", h->steps);
    mt_pack_kv_u64(pk, "recorded_peak", h->recorded_peak);
    mt_pack_cstr(pk, "meta");
    msgpack_pack_map(pk, num_meta);
    for (i = 0; i < num_meta; i++) {
        mt_pack_kv_str(pk, h->meta_key[i], h->meta_value[i]);
    }
}

/* Strings of a header must be NUL-terminated within their arrays. */
static bool mt_header_strings_ok(const mt_header_t *h)
{
    uint32_t i;

    if ((memchr(h->node.name, 0, sizeof(h->node.name)) == NULL) ||
        (memchr(h->model, 0, sizeof(h->model)) == NULL) || (h->num_meta > MT_META_MAX)) {
        return false;
    }
    for (i = 0; i < h->num_meta; i++) {
        if ((memchr(h->meta_key[i], 0, sizeof(h->meta_key[i])) == NULL) ||
            (memchr(h->meta_value[i], 0, sizeof(h->meta_value[i])) == NULL)) {
            return false;
        }
    }
    return true;
}

memsvc_status_t mt_writer_open(const char *path, const mt_header_t *header, mt_writer_t **writer_p)
{
    static const char magic[MT_MAGIC_LEN] = MT_MAGIC;
    uint8_t           version[4]          = {0, 0, 0, MT_FORMAT_VERSION};
    memsvc_status_t   status;
    mt_writer_t      *w;

    if (!mt_header_strings_ok(header)) {
        fprintf(stderr, "memtrace: header strings not terminated or too many metadata pairs\n");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    w->is_stdout = (strcmp(path, "-") == 0);
    w->file      = w->is_stdout ? stdout : fopen(path, "wb");
    if (w->file == NULL) {
        fprintf(stderr, "memtrace: cannot create %s: %s\n", path, strerror(errno));
        status = MEMSVC_ERR_IO;
        goto err_free;
    }
    msgpack_packer_init(&w->pk, w, mt_writer_write_cb);
    mt_writer_write_cb(w, magic, sizeof(magic));
    mt_writer_write_cb(w, (const char *)version, sizeof(version));
    mt_pack_header(&w->pk, header);
    if (w->status != MEMSVC_OK) {
        status = w->status;
        goto err_close;
    }
    *writer_p = w;
    return MEMSVC_OK;

err_close:
    if (!w->is_stdout) {
        fclose(w->file);
    }
err_free:
    free(w);
    return status;
}

static void mt_pack_ids(msgpack_packer *pk, const uint64_t *ids, uint32_t n)
{
    uint32_t i;

    msgpack_pack_array(pk, n);
    for (i = 0; i < n; i++) {
        msgpack_pack_uint64(pk, ids[i]);
    }
}

/* Check an event before writing it, so that a writer never produces what a reader refuses. */
static memsvc_status_t mt_event_check(const mt_event_t *e)
{
    const char *why = NULL;

    if ((unsigned)e->type >= MT_EV_COUNT) {
        why = "unknown event type";
    } else if ((e->type == MT_EV_ALLOC) &&
               ((e->key == NULL) || (strlen(e->key) > MEMSVC_KEY_MAX))) {
        why = "ALLOC key missing or longer than MEMSVC_KEY_MAX";
    } else if ((e->type == MT_EV_ALLOC) && ((unsigned)e->kind >= MEMSVC_KIND_COUNT)) {
        why = "ALLOC kind out of range";
    } else if ((e->type == MT_EV_ALLOC) &&
               ((e->num_inputs > MT_ARRAY_MAX) || ((e->num_inputs > 0) && (e->inputs == NULL)))) {
        why = "ALLOC inputs too many or NULL";
    } else if ((e->type == MT_EV_COMPUTE) && (e->name != NULL) && (strlen(e->name) > MT_NAME_MAX)) {
        why = "COMPUTE name longer than MT_NAME_MAX";
    } else if ((e->type == MT_EV_COMPUTE) &&
               ((e->num_reads > MT_ARRAY_MAX) || (e->num_writes > MT_ARRAY_MAX) ||
                ((e->num_reads > 0) && (e->reads == NULL)) ||
                ((e->num_writes > 0) && (e->writes == NULL)) || (e->num_aliases > MT_ARRAY_MAX) ||
                ((e->num_aliases > 0) && (e->aliases == NULL)))) {
        why = "COMPUTE reads/writes/aliases too many or NULL";
    } else if ((e->type == MT_EV_HINT) && (((unsigned)e->hint >= MEMSVC_HINT_COUNT) ||
                                           ((unsigned)e->phase >= MEMSVC_PHASE_COUNT))) {
        why = "HINT type or phase out of range";
    }
    if (why != NULL) {
        fprintf(stderr, "memtrace: refusing to write event: %s\n", why);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return MEMSVC_OK;
}

memsvc_status_t mt_writer_put(mt_writer_t *w, const mt_event_t *e)
{
    msgpack_packer       *pk = &w->pk;
    memsvc_status_t       status;
    static const uint32_t lens[MT_EV_COUNT] = {14, 7, 5, 11, 9};

    if (w->status != MEMSVC_OK) {
        return w->status;
    }
    status = mt_event_check(e);
    if (status != MEMSVC_OK) {
        return status;
    }
    msgpack_pack_array(pk, lens[e->type]);
    msgpack_pack_uint32(pk, e->type);
    msgpack_pack_uint64(pk, e->time_ns);
    msgpack_pack_uint32(pk, e->rank);
    msgpack_pack_uint32(pk, e->device);
    switch (e->type) {
    case MT_EV_ALLOC:
        msgpack_pack_uint64(pk, e->tensor);
        mt_pack_cstr(pk, e->key);
        msgpack_pack_uint64(pk, e->size);
        msgpack_pack_uint32(pk, e->kind);
        msgpack_pack_array(pk, 5);
        msgpack_pack_int32(pk, e->tags.layer);
        msgpack_pack_int32(pk, e->tags.microbatch);
        msgpack_pack_int32(pk, e->tags.expert);
        msgpack_pack_int32(pk, e->tags.stage);
        msgpack_pack_int32(pk, e->tags.step);
        if (e->recomputable) {
            msgpack_pack_true(pk);
        } else {
            msgpack_pack_false(pk);
        }
        msgpack_pack_uint64(pk, e->recompute_ns);
        if (e->durable) {
            msgpack_pack_true(pk);
        } else {
            msgpack_pack_false(pk);
        }
        msgpack_pack_uint64(pk, e->producer);
        mt_pack_ids(pk, e->inputs, e->num_inputs);
        break;
    case MT_EV_ACCESS:
        msgpack_pack_uint64(pk, e->tensor);
        if (e->write) {
            msgpack_pack_true(pk);
        } else {
            msgpack_pack_false(pk);
        }
        msgpack_pack_uint64(pk, e->op);
        break;
    case MT_EV_FREE:
        msgpack_pack_uint64(pk, e->tensor);
        break;
    case MT_EV_COMPUTE:
        msgpack_pack_uint64(pk, e->op);
        mt_pack_cstr(pk, e->name);
        msgpack_pack_uint64(pk, e->duration_ns);
        msgpack_pack_uint32(pk, e->stream);
        mt_pack_ids(pk, e->reads, e->num_reads);
        mt_pack_ids(pk, e->writes, e->num_writes);
        mt_pack_ids(pk, e->aliases, e->num_aliases);
        break;
    case MT_EV_HINT:
        msgpack_pack_uint32(pk, e->hint);
        msgpack_pack_int32(pk, e->step);
        msgpack_pack_int32(pk, e->layer);
        msgpack_pack_int32(pk, e->microbatch);
        msgpack_pack_uint32(pk, e->phase);
        break;
    default:
        break;
    }
    if (w->status == MEMSVC_OK) {
        w->count++;
    }
    return w->status;
}

memsvc_status_t mt_writer_close(mt_writer_t *w)
{
    memsvc_status_t status;

    if (w == NULL) {
        return MEMSVC_OK;
    }
    status = w->status;
    if ((fflush(w->file) != 0) && (status == MEMSVC_OK)) {
        fprintf(stderr, "memtrace: flush failed: %s\n", strerror(errno));
        status = MEMSVC_ERR_IO;
    }
    if (!w->is_stdout && (fclose(w->file) != 0) && (status == MEMSVC_OK)) {
        fprintf(stderr, "memtrace: close failed: %s\n", strerror(errno));
        status = MEMSVC_ERR_IO;
    }
    free(w);
    return status;
}

uint64_t mt_writer_count(const mt_writer_t *w)
{
    return w->count;
}

/* ---- reader: scanning raw bytes ---------------------------------------------------------- */

static uint64_t mt_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/*
 * Find the extent of the msgpack object at buf[0..avail), checking every length against the
 * limits before msgpack-c allocates anything for it: array and map counts at most MT_ARRAY_MAX,
 * string/bin/ext lengths at most MT_ARRAY_MAX, nesting at most MT_DEPTH_MAX.
 */
static mt_scan_result_t mt_scan(const uint8_t *buf, size_t avail, size_t *len_p, size_t *bad_p,
                                const char **why_p)
{
    uint64_t pending[MT_DEPTH_MAX + 1]; /* items still expected at each open level */
    int      depth = 0;
    size_t   pos   = 0;

    pending[0] = 1;
    while (depth >= 0) {
        uint64_t count = 0, body = 0;
        unsigned lenbytes = 0;
        uint8_t  c;

        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        if (pos >= avail) {
            return MT_SCAN_MORE;
        }
        c = buf[pos];
        pending[depth]--;
        if ((c <= 0x7f) || (c >= 0xe0) || (c == 0xc0) || (c == 0xc2) || (c == 0xc3)) {
            pos++;
            continue;
        } else if ((c & 0xf0) == 0x80) {
            count = 2 * (uint64_t)(c & 0x0f);
        } else if ((c & 0xf0) == 0x90) {
            count = c & 0x0f;
        } else if ((c & 0xe0) == 0xa0) {
            body = c & 0x1f;
        } else if (c == 0xc1) {
            *bad_p = pos;
            *why_p = "byte 0xc1 is not valid msgpack";
            return MT_SCAN_BAD;
        } else {
            /* c in 0xc4..0xdf */
            static const struct {
                uint8_t lenbytes; /* length field size */
                uint8_t fixed;    /* fixed body size (numbers, fixext) */
                uint8_t what;     /* 0 number, 1 str/bin, 2 ext (+1 type byte), 3 array, 4 map */
            } t[28] = {
                {1, 0, 1}, {2, 0, 1}, {4, 0, 1},                        /* c4-c6 bin */
                {1, 0, 2}, {2, 0, 2}, {4, 0, 2},                        /* c7-c9 ext */
                {0, 4, 0}, {0, 8, 0},                                   /* ca-cb float */
                {0, 1, 0}, {0, 2, 0}, {0, 4, 0}, {0, 8, 0},             /* cc-cf uint */
                {0, 1, 0}, {0, 2, 0}, {0, 4, 0}, {0, 8, 0},             /* d0-d3 int */
                {0, 2, 0}, {0, 3, 0}, {0, 5, 0}, {0, 9, 0}, {0, 17, 0}, /* d4-d8 fixext */
                {1, 0, 1}, {2, 0, 1}, {4, 0, 1},                        /* d9-db str */
                {2, 0, 3}, {4, 0, 3},                                   /* dc-dd array */
                {2, 0, 4}, {4, 0, 4},                                   /* de-df map */
            };
            unsigned idx = c - 0xc4;

            lenbytes = t[idx].lenbytes;
            if (t[idx].lenbytes == 0) {
                body = t[idx].fixed;
            } else {
                uint64_t n;

                if (avail - pos < 1 + (size_t)lenbytes) {
                    return MT_SCAN_MORE;
                }
                n = mt_be(buf + pos + 1, lenbytes);
                if (n > MT_ARRAY_MAX) {
                    *bad_p = pos;
                    *why_p = (t[idx].what >= 3) ? "array or map longer than the limit (1<<20)"
                                                : "string or binary longer than the limit (1<<20)";
                    return MT_SCAN_BAD;
                }
                if (t[idx].what == 3) {
                    count = n;
                } else if (t[idx].what == 4) {
                    count = 2 * n;
                } else {
                    body = n + ((t[idx].what == 2) ? 1 : 0);
                }
            }
            if (t[idx].what < 3) {
                if (avail - pos < 1 + (size_t)lenbytes + body) {
                    return MT_SCAN_MORE;
                }
                pos += 1 + lenbytes + body;
                continue;
            }
        }
        if (((c & 0xe0) == 0xa0)) {
            if (avail - pos < 1 + body) {
                return MT_SCAN_MORE;
            }
            pos += 1 + body;
            continue;
        }
        /* array or map with count items */
        if (depth == MT_DEPTH_MAX) {
            *bad_p = pos;
            *why_p = "arrays or maps nested deeper than the limit";
            return MT_SCAN_BAD;
        }
        pos += 1 + lenbytes;
        pending[++depth] = count;
    }
    *len_p = pos;
    return MT_SCAN_DONE;
}

/* ---- reader: decoding objects ------------------------------------------------------------ */

/* Decoding context: where we are, for error messages. */
typedef struct mt_dec {
    uint64_t    offset; /* file offset of the object being decoded */
    const char *what;   /* "header" or "event" */
    char       *err;
    size_t      errlen;
    uint32_t    version; /* the file's format version */
} mt_dec_t;

static memsvc_status_t mt_dec_fail(mt_dec_t *d, const char *field, const char *fmt, ...)
{
    char    msg[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if ((d->err != NULL) && (d->errlen > 0)) {
        snprintf(d->err, d->errlen, "offset %" PRIu64 ": %s field '%s': %s", d->offset, d->what,
                 field, msg);
    }
    return MEMSVC_ERR_FORMAT;
}

static const char *mt_obj_type_name(msgpack_object_type t)
{
    switch (t) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return "unsigned integer";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "negative integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "string";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "binary";
    case MSGPACK_OBJECT_EXT:
        return "extension";
    default:
        return "unknown";
    }
}

static memsvc_status_t mt_get_uint(mt_dec_t *d, const msgpack_object *o, const char *field,
                                   uint64_t max, uint64_t *v_p)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return mt_dec_fail(d, field, "expected unsigned integer, got %s",
                           mt_obj_type_name(o->type));
    }
    if (o->via.u64 > max) {
        return mt_dec_fail(d, field, "value %" PRIu64 " out of range (max %" PRIu64 ")", o->via.u64,
                           max);
    }
    *v_p = o->via.u64;
    return MEMSVC_OK;
}

static memsvc_status_t mt_get_u32(mt_dec_t *d, const msgpack_object *o, const char *field,
                                  uint32_t max, uint32_t *v_p)
{
    uint64_t        v      = 0;
    memsvc_status_t status = mt_get_uint(d, o, field, max, &v);

    if (status == MEMSVC_OK) {
        *v_p = (uint32_t)v;
    }
    return status;
}

static memsvc_status_t mt_get_i32(mt_dec_t *d, const msgpack_object *o, const char *field,
                                  int32_t *v_p)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT32_MAX) {
            return mt_dec_fail(d, field, "value %" PRIu64 " out of int32 range", o->via.u64);
        }
        *v_p = (int32_t)o->via.u64;
        return MEMSVC_OK;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (o->via.i64 < INT32_MIN) {
            return mt_dec_fail(d, field, "value %" PRId64 " out of int32 range", o->via.i64);
        }
        *v_p = (int32_t)o->via.i64;
        return MEMSVC_OK;
    }
    return mt_dec_fail(d, field, "expected integer, got %s", mt_obj_type_name(o->type));
}

static memsvc_status_t mt_get_bool(mt_dec_t *d, const msgpack_object *o, const char *field,
                                   bool *v_p)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN) {
        return mt_dec_fail(d, field, "expected boolean, got %s", mt_obj_type_name(o->type));
    }
    *v_p = o->via.boolean;
    return MEMSVC_OK;
}

static memsvc_status_t mt_get_double(mt_dec_t *d, const msgpack_object *o, const char *field,
                                     double *v_p)
{
    double v;

    if ((o->type == MSGPACK_OBJECT_FLOAT32) || (o->type == MSGPACK_OBJECT_FLOAT64)) {
        v = o->via.f64;
    } else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        v = (double)o->via.u64;
    } else {
        return mt_dec_fail(d, field, "expected number, got %s", mt_obj_type_name(o->type));
    }
    if (!isfinite(v) || (v < 0)) {
        return mt_dec_fail(d, field, "expected a finite non-negative number");
    }
    *v_p = v;
    return MEMSVC_OK;
}

/* Copy a string into buf[size] (NUL-terminated); it must fit and hold no NUL byte. */
static memsvc_status_t mt_get_str(mt_dec_t *d, const msgpack_object *o, const char *field,
                                  char *buf, size_t size)
{
    if (o->type != MSGPACK_OBJECT_STR) {
        return mt_dec_fail(d, field, "expected string, got %s", mt_obj_type_name(o->type));
    }
    if (o->via.str.size >= size) {
        return mt_dec_fail(d, field, "string of %" PRIu32 " bytes longer than the limit (%zu)",
                           o->via.str.size, size - 1);
    }
    if (o->via.str.size == 0) { /* msgpack-c gives an empty string a NULL pointer */
        buf[0] = '\0';
        return MEMSVC_OK;
    }
    if (memchr(o->via.str.ptr, 0, o->via.str.size) != NULL) {
        return mt_dec_fail(d, field, "string contains a NUL byte");
    }
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return MEMSVC_OK;
}

static bool mt_key_is(const msgpack_object *k, const char *name)
{
    size_t len = strlen(name);

    return (k->type == MSGPACK_OBJECT_STR) && (k->via.str.size == len) &&
           (memcmp(k->via.str.ptr, name, len) == 0);
}

static memsvc_status_t mt_get_link(mt_dec_t *d, const msgpack_object *o, const char *field,
                                   sim_link_desc_t *link)
{
    memsvc_status_t status;

    if ((o->type != MSGPACK_OBJECT_ARRAY) || (o->via.array.size != 2)) {
        return mt_dec_fail(d, field, "expected [bandwidth, latency_ns]");
    }
    status = mt_get_double(d, &o->via.array.ptr[0], field, &link->bw);
    if (status == MEMSVC_OK) {
        status = mt_get_uint(d, &o->via.array.ptr[1], field, UINT64_MAX, &link->lat_ns);
    }
    return status;
}

static memsvc_status_t mt_decode_node(mt_dec_t *d, const msgpack_object *o, sim_desc_t *n)
{
    memsvc_status_t status = MEMSVC_OK;
    uint32_t        i;

    if (o->type != MSGPACK_OBJECT_MAP) {
        return mt_dec_fail(d, "node", "expected map, got %s", mt_obj_type_name(o->type));
    }
    for (i = 0; (i < o->via.map.size) && (status == MEMSVC_OK); i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mt_key_is(k, "name")) {
            status = mt_get_str(d, v, "node.name", n->name, sizeof(n->name));
        } else if (mt_key_is(k, "num_npus")) {
            uint64_t npus = 0;

            status      = mt_get_uint(d, v, "node.num_npus", SIM_MAX_NPUS, &npus);
            n->num_npus = (unsigned)npus;
        } else if (mt_key_is(k, "hbm_bytes")) {
            status = mt_get_uint(d, v, "node.hbm_bytes", UINT64_MAX, &n->hbm_bytes);
        } else if (mt_key_is(k, "hbm_bw")) {
            status = mt_get_double(d, v, "node.hbm_bw", &n->hbm_bw);
        } else if (mt_key_is(k, "host_bytes")) {
            status = mt_get_uint(d, v, "node.host_bytes", UINT64_MAX, &n->host_bytes);
        } else if (mt_key_is(k, "disk_bytes")) {
            status = mt_get_uint(d, v, "node.disk_bytes", UINT64_MAX, &n->disk_bytes);
        } else if (mt_key_is(k, "h2d")) {
            status = mt_get_link(d, v, "node.h2d", &n->h2d);
        } else if (mt_key_is(k, "d2h")) {
            status = mt_get_link(d, v, "node.d2h", &n->d2h);
        } else if (mt_key_is(k, "d2d")) {
            status = mt_get_link(d, v, "node.d2d", &n->d2d);
        } else if (mt_key_is(k, "disk")) {
            status = mt_get_link(d, v, "node.disk", &n->disk);
        } else if (mt_key_is(k, "nic")) {
            status = mt_get_link(d, v, "node.nic", &n->nic);
        } else if (mt_key_is(k, "flops")) {
            status = mt_get_double(d, v, "node.flops", &n->flops);
        } else if (mt_key_is(k, "mfu")) {
            status = mt_get_double(d, v, "node.mfu", &n->mfu);
        } /* unknown keys: ignored (added by a later minor revision) */
    }
    return status;
}

static memsvc_status_t mt_decode_layout(mt_dec_t *d, const msgpack_object *o, mt_layout_t *l)
{
    static const char *const names[] = {
        "tp", "pp", "vpp", "ep", "dp", "cp", "microbatches", "micro_batch_size", "seq_len"};
    uint32_t       *fields[] = {&l->tp,     &l->pp, &l->vpp,          &l->ep,
                                &l->dp,     &l->cp, &l->microbatches, &l->micro_batch_size,
                                &l->seq_len};
    memsvc_status_t status   = MEMSVC_OK;
    uint32_t        i, j;

    if (o->type != MSGPACK_OBJECT_MAP) {
        return mt_dec_fail(d, "layout", "expected map, got %s", mt_obj_type_name(o->type));
    }
    for (i = 0; (i < o->via.map.size) && (status == MEMSVC_OK); i++) {
        for (j = 0; j < sizeof(names) / sizeof(names[0]); j++) {
            if (mt_key_is(&o->via.map.ptr[i].key, names[j])) {
                status = mt_get_u32(d, &o->via.map.ptr[i].val, names[j], UINT32_MAX, fields[j]);
            }
        }
    }
    return status;
}

static memsvc_status_t mt_decode_meta(mt_dec_t *d, const msgpack_object *o, mt_header_t *h)
{
    memsvc_status_t status = MEMSVC_OK;
    uint32_t        i;

    if (o->type != MSGPACK_OBJECT_MAP) {
        return mt_dec_fail(d, "meta", "expected map, got %s", mt_obj_type_name(o->type));
    }
    if (o->via.map.size > MT_META_MAX) {
        return mt_dec_fail(d, "meta", "%" PRIu32 " pairs, more than the limit (%d)",
                           o->via.map.size, MT_META_MAX);
    }
    for (i = 0; (i < o->via.map.size) && (status == MEMSVC_OK); i++) {
        status = mt_get_str(d, &o->via.map.ptr[i].key, "meta key", h->meta_key[i],
                            sizeof(h->meta_key[i]));
        if (status == MEMSVC_OK) {
            status = mt_get_str(d, &o->via.map.ptr[i].val, "meta value", h->meta_value[i],
                                sizeof(h->meta_value[i]));
        }
    }
    h->num_meta = (status == MEMSVC_OK) ? o->via.map.size : 0;
    return status;
}

static memsvc_status_t mt_decode_header(mt_dec_t *d, const msgpack_object *o, mt_header_t *h)
{
    memsvc_status_t status       = MEMSVC_OK;
    bool            have_version = false;
    uint32_t        i;

    memset(h, 0, sizeof(*h));
    if (o->type != MSGPACK_OBJECT_MAP) {
        return mt_dec_fail(d, "(top)", "expected map, got %s", mt_obj_type_name(o->type));
    }
    for (i = 0; (i < o->via.map.size) && (status == MEMSVC_OK); i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;

        if (mt_key_is(k, "version")) {
            status       = mt_get_u32(d, v, "version", UINT32_MAX, &h->version);
            have_version = true;
            if ((status == MEMSVC_OK) && (h->version != d->version)) {
                status = mt_dec_fail(d, "version", "%" PRIu32 " differs from the file's version %" PRIu32,
                                     h->version, d->version);
            }
        } else if (mt_key_is(k, "node")) {
            status = mt_decode_node(d, v, &h->node);
        } else if (mt_key_is(k, "model")) {
            status = mt_get_str(d, v, "model", h->model, sizeof(h->model));
        } else if (mt_key_is(k, "layout")) {
            status = mt_decode_layout(d, v, &h->layout);
        } else if (mt_key_is(k, "ranks")) {
            status = mt_get_u32(d, v, "ranks", UINT32_MAX, &h->ranks);
        } else if (mt_key_is(k, "steps")) {
            status = mt_get_u32(d, v, "steps", UINT32_MAX, &h->steps);
        } else if (mt_key_is(k, "recorded_peak")) {
            status = mt_get_uint(d, v, "recorded_peak", UINT64_MAX, &h->recorded_peak);
        } else if (mt_key_is(k, "meta")) {
            status = mt_decode_meta(d, v, h);
        }
    }
    if ((status == MEMSVC_OK) && !have_version) {
        status = mt_dec_fail(d, "version", "missing");
    }
    return status;
}

/* Decode an array of tensor ids into the reader's slot-th array (grown to the largest seen). */
static memsvc_status_t mt_get_ids(mt_reader_t *r, mt_dec_t *d, const msgpack_object *o,
                                  const char *field, int slot, const uint64_t **ids_p,
                                  uint32_t *num_p)
{
    memsvc_status_t status;
    uint32_t        i, n;

    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return mt_dec_fail(d, field, "expected array, got %s", mt_obj_type_name(o->type));
    }
    n = o->via.array.size; /* <= MT_ARRAY_MAX: checked by mt_scan */
    if (n > r->arr_cap[slot]) {
        uint64_t *a = realloc(r->arr[slot], n * sizeof(*a));

        if (a == NULL) {
            return mt_dec_fail(d, field, "no memory for %" PRIu32 " ids", n);
        }
        r->arr[slot]     = a;
        r->arr_cap[slot] = n;
    }
    for (i = 0; i < n; i++) {
        status = mt_get_uint(d, &o->via.array.ptr[i], field, UINT64_MAX, &r->arr[slot][i]);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    *ids_p = r->arr[slot];
    *num_p = n;
    return MEMSVC_OK;
}

static memsvc_status_t mt_decode_event(mt_reader_t *r, mt_dec_t *d, const msgpack_object *o,
                                       mt_event_t *e)
{
    static const uint32_t min_len[MT_EV_COUNT] = {14, 7, 5, 10, 9};
    const msgpack_object *a;
    memsvc_status_t       st;
    uint64_t              u;
    uint32_t              n;

    memset(e, 0, sizeof(*e));
    if (o->type != MSGPACK_OBJECT_ARRAY) {
        return mt_dec_fail(d, "(top)", "expected array, got %s", mt_obj_type_name(o->type));
    }
    a = o->via.array.ptr;
    n = o->via.array.size;
    if (n < 4) {
        return mt_dec_fail(d, "(top)", "%" PRIu32 " elements, fewer than 4", n);
    }
    st = mt_get_uint(d, &a[0], "type", MT_EV_COUNT - 1, &u);
    if (st != MEMSVC_OK) {
        return st;
    }
    e->type = (mt_event_type_t)u;
    if (n < min_len[e->type]) {
        return mt_dec_fail(d, "(top)", "%s event with %" PRIu32 " elements, fewer than %" PRIu32,
                           mt_event_type_name(e->type), n, min_len[e->type]);
    }
    if (((st = mt_get_uint(d, &a[1], "time_ns", UINT64_MAX, &e->time_ns)) != MEMSVC_OK) ||
        ((st = mt_get_u32(d, &a[2], "rank", UINT32_MAX, &e->rank)) != MEMSVC_OK) ||
        ((st = mt_get_u32(d, &a[3], "device", SIM_MAX_NPUS - 1, &e->device)) != MEMSVC_OK)) {
        return st;
    }
    switch (e->type) {
    case MT_EV_ALLOC:
        if (((st = mt_get_uint(d, &a[4], "tensor", UINT64_MAX, &e->tensor)) != MEMSVC_OK) ||
            ((st = mt_get_str(d, &a[5], "key", r->key, sizeof(r->key))) != MEMSVC_OK) ||
            ((st = mt_get_uint(d, &a[6], "size", UINT64_MAX, &e->size)) != MEMSVC_OK) ||
            ((st = mt_get_uint(d, &a[7], "kind", MEMSVC_KIND_COUNT - 1, &u)) != MEMSVC_OK)) {
            return st;
        }
        e->key  = r->key;
        e->kind = (memsvc_kind_t)u;
        if ((a[8].type != MSGPACK_OBJECT_ARRAY) || (a[8].via.array.size != 5)) {
            return mt_dec_fail(d, "tags", "expected an array of 5 integers");
        }
        if (((st = mt_get_i32(d, &a[8].via.array.ptr[0], "tags.layer", &e->tags.layer)) != 0) ||
            ((st = mt_get_i32(d, &a[8].via.array.ptr[1], "tags.microbatch", &e->tags.microbatch)) !=
             0) ||
            ((st = mt_get_i32(d, &a[8].via.array.ptr[2], "tags.expert", &e->tags.expert)) != 0) ||
            ((st = mt_get_i32(d, &a[8].via.array.ptr[3], "tags.stage", &e->tags.stage)) != 0) ||
            ((st = mt_get_i32(d, &a[8].via.array.ptr[4], "tags.step", &e->tags.step)) != 0) ||
            ((st = mt_get_bool(d, &a[9], "recomputable", &e->recomputable)) != 0) ||
            ((st = mt_get_uint(d, &a[10], "recompute_ns", UINT64_MAX, &e->recompute_ns)) != 0) ||
            ((st = mt_get_bool(d, &a[11], "durable", &e->durable)) != 0) ||
            ((st = mt_get_uint(d, &a[12], "producer", UINT64_MAX, &e->producer)) != 0) ||
            ((st = mt_get_ids(r, d, &a[13], "inputs", 0, &e->inputs, &e->num_inputs)) != 0)) {
            return st;
        }
        break;
    case MT_EV_ACCESS:
        if (((st = mt_get_uint(d, &a[4], "tensor", UINT64_MAX, &e->tensor)) != MEMSVC_OK) ||
            ((st = mt_get_bool(d, &a[5], "write", &e->write)) != MEMSVC_OK) ||
            ((st = mt_get_uint(d, &a[6], "op", UINT64_MAX, &e->op)) != MEMSVC_OK)) {
            return st;
        }
        break;
    case MT_EV_FREE:
        st = mt_get_uint(d, &a[4], "tensor", UINT64_MAX, &e->tensor);
        if (st != MEMSVC_OK) {
            return st;
        }
        break;
    case MT_EV_COMPUTE:
        if (((st = mt_get_uint(d, &a[4], "op", UINT64_MAX, &e->op)) != MEMSVC_OK) ||
            ((st = mt_get_str(d, &a[5], "name", r->name, sizeof(r->name))) != MEMSVC_OK) ||
            ((st = mt_get_uint(d, &a[6], "duration_ns", UINT64_MAX, &e->duration_ns)) != 0) ||
            ((st = mt_get_u32(d, &a[7], "stream", UINT32_MAX, &e->stream)) != MEMSVC_OK) ||
            ((st = mt_get_ids(r, d, &a[8], "reads", 1, &e->reads, &e->num_reads)) != 0) ||
            ((st = mt_get_ids(r, d, &a[9], "writes", 2, &e->writes, &e->num_writes)) != 0)) {
            return st;
        }
        if (r->version >= 2 && n > 10 &&
            (st = mt_get_ids(r, d, &a[10], "aliases", 3, &e->aliases, &e->num_aliases)) != 0) {
            return st;
        }
        e->name = r->name;
        break;
    case MT_EV_HINT:
        if (((st = mt_get_uint(d, &a[4], "hint", MEMSVC_HINT_COUNT - 1, &u)) != MEMSVC_OK)) {
            return st;
        }
        e->hint = (memsvc_hint_type_t)u;
        if (((st = mt_get_i32(d, &a[5], "step", &e->step)) != MEMSVC_OK) ||
            ((st = mt_get_i32(d, &a[6], "layer", &e->layer)) != MEMSVC_OK) ||
            ((st = mt_get_i32(d, &a[7], "microbatch", &e->microbatch)) != MEMSVC_OK) ||
            ((st = mt_get_uint(d, &a[8], "phase", MEMSVC_PHASE_COUNT - 1, &u)) != MEMSVC_OK)) {
            return st;
        }
        e->phase = (memsvc_phase_t)u;
        break;
    default:
        break;
    }
    return MEMSVC_OK;
}

/* ---- reader: streaming ------------------------------------------------------------------- */

/*
 * Make the next complete object available in the unpacker (reading from the file as needed)
 * and unpack it into *obj. Returns MEMSVC_OK with *end_p true when the file ends exactly at an
 * object boundary; MEMSVC_ERR_FORMAT on a malformed or truncated object; MEMSVC_ERR_IO.
 */
static memsvc_status_t mt_reader_fill(mt_reader_t *r, msgpack_unpacked *obj, size_t *len_p,
                                      bool *end_p, char *err, size_t errlen)
{
    msgpack_unpacker *u = &r->unp;
    const char       *why;
    size_t            len, bad, avail, want, got;

    *end_p = false;
    for (;;) {
        avail = u->used - u->off;
        switch (mt_scan((const uint8_t *)u->buffer + u->off, avail, &len, &bad, &why)) {
        case MT_SCAN_DONE:
            goto unpack;
        case MT_SCAN_BAD:
            memsvc_errf(err, errlen, "offset %" PRIu64 ": %s", r->offset + bad, why);
            return MEMSVC_ERR_FORMAT;
        case MT_SCAN_MORE:
            break;
        }
        if (r->eof) {
            if (avail == 0) {
                *end_p = true;
                return MEMSVC_OK;
            }
            memsvc_errf(err, errlen,
                    "offset %" PRIu64 ": truncated: the file ends %zu bytes into an "
                    "object",
                    r->offset, avail);
            return MEMSVC_ERR_FORMAT;
        }
        if (avail >= MT_OBJECT_MAX) {
            memsvc_errf(err, errlen, "offset %" PRIu64 ": object larger than the limit (%u bytes)",
                    r->offset, (unsigned)MT_OBJECT_MAX);
            return MEMSVC_ERR_FORMAT;
        }
        /* Read at least a chunk, and as much as is buffered, so rescans stay logarithmic. */
        want = (avail > MT_READ_CHUNK) ? avail : MT_READ_CHUNK;
        if (!msgpack_unpacker_reserve_buffer(u, want)) {
            memsvc_errf(err, errlen, "offset %" PRIu64 ": no memory for the read buffer", r->offset);
            return MEMSVC_ERR_NO_RESOURCE;
        }
        if (u->used + u->free > r->buffer_peak) {
            r->buffer_peak = u->used + u->free;
        }
        got = fread(msgpack_unpacker_buffer(u), 1, want, r->file);
        if (got < want) {
            if (ferror(r->file)) {
                memsvc_errf(err, errlen, "offset %" PRIu64 ": read failed: %s", r->offset,
                        strerror(errno));
                return MEMSVC_ERR_IO;
            }
            r->eof = true;
        }
        msgpack_unpacker_buffer_consumed(u, got);
    }
unpack:
    if (msgpack_unpacker_next(u, obj) != MSGPACK_UNPACK_SUCCESS) {
        memsvc_errf(err, errlen, "offset %" PRIu64 ": msgpack could not decode the object", r->offset);
        return MEMSVC_ERR_FORMAT;
    }
    *len_p = len;
    return MEMSVC_OK;
}

memsvc_status_t mt_reader_open(const char *path, mt_reader_t **reader_p, char *err, size_t errlen)
{
    static const char magic[MT_MAGIC_LEN] = MT_MAGIC;
    uint8_t           pre[MT_MAGIC_LEN + 4];
    msgpack_unpacked  obj;
    memsvc_status_t   status;
    mt_reader_t      *r;
    mt_dec_t          d;
    uint64_t          version;
    size_t            got, len;
    bool              end;

    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        memsvc_errf(err, errlen, "no memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    r->is_stdin = (strcmp(path, "-") == 0);
    r->file     = r->is_stdin ? stdin : fopen(path, "rb");
    if (r->file == NULL) {
        memsvc_errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        status = MEMSVC_ERR_IO;
        goto err_free;
    }
    if (!msgpack_unpacker_init(&r->unp, MT_READ_CHUNK)) {
        memsvc_errf(err, errlen, "no memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_close;
    }
    got = fread(pre, 1, sizeof(pre), r->file);
    if ((got < MT_MAGIC_LEN) || (memcmp(pre, magic, MT_MAGIC_LEN) != 0)) {
        if (ferror(r->file)) {
            memsvc_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            status = MEMSVC_ERR_IO;
        } else {
            memsvc_errf(err, errlen, "offset 0: not a memtrace file (bad magic)");
            status = MEMSVC_ERR_FORMAT;
        }
        goto err_unpacker;
    }
    if (got < sizeof(pre)) {
        memsvc_errf(err, errlen, "offset %zu: truncated: the file ends inside the version", got);
        status = MEMSVC_ERR_FORMAT;
        goto err_unpacker;
    }
    version = mt_be(pre + MT_MAGIC_LEN, 4);
    if (version < MT_FORMAT_VERSION_MIN || version > MT_FORMAT_VERSION) {
        memsvc_errf(err, errlen, "offset %d: format version %" PRIu64 " (this reader supports %d..%d)",
                MT_MAGIC_LEN, version, MT_FORMAT_VERSION_MIN, MT_FORMAT_VERSION);
        status = MEMSVC_ERR_VERSION;
        goto err_unpacker;
    }
    r->offset  = sizeof(pre);
    r->version = (uint32_t)version;
    msgpack_unpacked_init(&obj);
    status = mt_reader_fill(r, &obj, &len, &end, err, errlen);
    if ((status == MEMSVC_OK) && end) {
        memsvc_errf(err, errlen, "offset %" PRIu64 ": truncated: no header", r->offset);
        status = MEMSVC_ERR_FORMAT;
    }
    if (status == MEMSVC_OK) {
        d      = (mt_dec_t){r->offset, "header", err, errlen, r->version};
        status = mt_decode_header(&d, &obj.data, &r->header);
    }
    msgpack_unpacked_destroy(&obj);
    if (status != MEMSVC_OK) {
        goto err_unpacker;
    }
    r->offset += len;
    *reader_p = r;
    return MEMSVC_OK;

err_unpacker:
    msgpack_unpacker_destroy(&r->unp);
err_close:
    if (!r->is_stdin) {
        fclose(r->file);
    }
err_free:
    free(r);
    return status;
}

const mt_header_t *mt_reader_header(const mt_reader_t *r)
{
    return &r->header;
}

memsvc_status_t mt_reader_next(mt_reader_t *r, mt_event_t *event_p, bool *end_p, char *err,
                               size_t errlen)
{
    msgpack_unpacked obj;
    memsvc_status_t  status;
    mt_dec_t         d;
    size_t           len;

    msgpack_unpacked_init(&obj);
    status = mt_reader_fill(r, &obj, &len, end_p, err, errlen);
    if ((status == MEMSVC_OK) && !*end_p) {
        d      = (mt_dec_t){r->offset, "event", err, errlen, r->version};
        status = mt_decode_event(r, &d, &obj.data, event_p);
        if (status == MEMSVC_OK) {
            r->offset += len;
        }
    }
    msgpack_unpacked_destroy(&obj);
    return status;
}

uint64_t mt_reader_offset(const mt_reader_t *r)
{
    return r->offset;
}

size_t mt_reader_buffer_peak(const mt_reader_t *r)
{
    return r->buffer_peak;
}

void mt_reader_close(mt_reader_t *r)
{
    int i;

    if (r == NULL) {
        return;
    }
    msgpack_unpacker_destroy(&r->unp);
    if (!r->is_stdin) {
        fclose(r->file);
    }
    for (i = 0; i < 4; i++) {
        free(r->arr[i]);
    }
    free(r);
}

/* ---- header defaults, names, JSON -------------------------------------------------------- */

void mt_header_init(mt_header_t *h)
{
    memset(h, 0, sizeof(*h));
    h->version = MT_FORMAT_VERSION;
    /* The "tiny" preset's capacities; its rates stay zero: sim_desc_preset(node.name) has them. */
    snprintf(h->node.name, sizeof(h->node.name), "tiny");
    h->node.num_npus   = 2;
    h->node.hbm_bytes  = 64ull << 20;
    h->node.host_bytes = 256ull << 20;
    h->ranks           = 1;
    h->steps           = 1;
}

const char *mt_event_type_name(mt_event_type_t type)
{
    static const char *const names[MT_EV_COUNT] = {"alloc", "access", "free", "compute", "hint"};

    return ((unsigned)type < MT_EV_COUNT) ? names[type] : "unknown";
}

static void mt_json_ids(const char *name, const uint64_t *ids, uint32_t n, FILE *out)
{
    uint32_t i;

    fprintf(out, ",\"%s\":[", name);
    for (i = 0; i < n; i++) {
        fprintf(out, "%s%" PRIu64, (i > 0) ? "," : "", ids[i]);
    }
    fputc(']', out);
}

static const char *mt_hint_name(memsvc_hint_type_t h)
{
    static const char *const names[MEMSVC_HINT_COUNT] = {"step_begin", "step_end", "layer_begin",
                                                         "layer_end",  "phase",    "upcoming"};

    return ((unsigned)h < MEMSVC_HINT_COUNT) ? names[h] : "unknown";
}

void mt_event_print_json(const mt_event_t *e, FILE *out)
{
    fprintf(out,
            "{\"type\":\"%s\",\"time_ns\":%" PRIu64 ",\"rank\":%" PRIu32 ",\"device\":%" PRIu32,
            mt_event_type_name(e->type), e->time_ns, e->rank, e->device);
    switch (e->type) {
    case MT_EV_ALLOC:
        fprintf(out, ",\"tensor\":%" PRIu64 ",\"key\":", e->tensor);
        memsvc_json_string(e->key, out);
        fprintf(
            out,
            ",\"size\":%" PRIu64 ",\"kind\":\"%s\",\"tags\":{\"layer\":%d,\"microbatch\":%d,"
            "\"expert\":%d,\"stage\":%d,\"step\":%d},\"recomputable\":%s,\"recompute_ns\":%" PRIu64
            ",\"durable\":%s,\"producer\":%" PRIu64,
            e->size, memsvc_kind_name(e->kind), e->tags.layer, e->tags.microbatch, e->tags.expert,
            e->tags.stage, e->tags.step, e->recomputable ? "true" : "false", e->recompute_ns,
            e->durable ? "true" : "false", e->producer);
        mt_json_ids("inputs", e->inputs, e->num_inputs, out);
        break;
    case MT_EV_ACCESS:
        fprintf(out, ",\"tensor\":%" PRIu64 ",\"write\":%s,\"op\":%" PRIu64, e->tensor,
                e->write ? "true" : "false", e->op);
        break;
    case MT_EV_FREE:
        fprintf(out, ",\"tensor\":%" PRIu64, e->tensor);
        break;
    case MT_EV_COMPUTE:
        fprintf(out, ",\"op\":%" PRIu64 ",\"name\":", e->op);
        memsvc_json_string(e->name, out);
        fprintf(out, ",\"duration_ns\":%" PRIu64 ",\"stream\":%" PRIu32, e->duration_ns, e->stream);
        mt_json_ids("reads", e->reads, e->num_reads, out);
        mt_json_ids("writes", e->writes, e->num_writes, out);
        if (e->num_aliases > 0) {
            mt_json_ids("aliases", e->aliases, e->num_aliases, out);
        }
        break;
    case MT_EV_HINT:
        fprintf(out, ",\"hint\":\"%s\",\"step\":%d,\"layer\":%d,\"microbatch\":%d,\"phase\":\"%s\"",
                mt_hint_name(e->hint), e->step, e->layer, e->microbatch,
                memsvc_phase_name(e->phase));
        break;
    default:
        break;
    }
    fputs("}\n", out);
}

static void mt_json_double(double v, FILE *out)
{
    if (isfinite(v)) {
        fprintf(out, "%.17g", v);
    } else {
        fputs("null", out);
    }
}

static void mt_json_link(const char *name, const sim_link_desc_t *l, FILE *out)
{
    fprintf(out, ",\"%s\":{\"bw\":", name);
    mt_json_double(l->bw, out);
    fprintf(out, ",\"lat_ns\":%" PRIu64 "}", l->lat_ns);
}

void mt_header_print_json(const mt_header_t *h, FILE *out)
{
    const sim_desc_t  *n = &h->node;
    const mt_layout_t *l = &h->layout;
    uint32_t           i;

    fprintf(out, "{\"version\":%" PRIu32 ",\"node\":{\"name\":", h->version);
    memsvc_json_string(n->name, out);
    fprintf(out, ",\"num_npus\":%u,\"hbm_bytes\":%" PRIu64 ",\"hbm_bw\":", n->num_npus,
            n->hbm_bytes);
    mt_json_double(n->hbm_bw, out);
    fprintf(out, ",\"host_bytes\":%" PRIu64 ",\"disk_bytes\":%" PRIu64, n->host_bytes,
            n->disk_bytes);
    mt_json_link("h2d", &n->h2d, out);
    mt_json_link("d2h", &n->d2h, out);
    mt_json_link("d2d", &n->d2d, out);
    mt_json_link("disk", &n->disk, out);
    mt_json_link("nic", &n->nic, out);
    fputs(",\"flops\":", out);
    mt_json_double(n->flops, out);
    fputs(",\"mfu\":", out);
    mt_json_double(n->mfu, out);
    fputs("},\"model\":", out);
    memsvc_json_string(h->model, out);
    fprintf(out,
            ",\"layout\":{\"tp\":%" PRIu32 ",\"pp\":%" PRIu32 ",\"vpp\":%" PRIu32 ",\"ep\":%" PRIu32
            ",\"dp\":%" PRIu32 ",\"cp\":%" PRIu32 ",\"microbatches\":%" PRIu32
            ",\"micro_batch_size\":%" PRIu32 ",\"seq_len\":%" PRIu32 "}",
            l->tp, l->pp, l->vpp, l->ep, l->dp, l->cp, l->microbatches, l->micro_batch_size,
            l->seq_len);
    fprintf(out,
            ",\"ranks\":%" PRIu32 ",\"steps\":%" PRIu32 ",\"recorded_peak\":%" PRIu64 ",\"meta\":{",
            h->ranks, h->steps, h->recorded_peak);
    for (i = 0; (i < h->num_meta) && (i < MT_META_MAX); i++) {
        if (i > 0) {
            fputc(',', out);
        }
        memsvc_json_string(h->meta_key[i], out);
        fputc(':', out);
        memsvc_json_string(h->meta_value[i], out);
    }
    fputs("}}\n", out);
}

memsvc_status_t mt_header_set_meta(mt_header_t *h, const char *key, const char *value)
{
    uint32_t i;

    if ((strlen(key) >= sizeof(h->meta_key[0])) || (strlen(value) >= sizeof(h->meta_value[0]))) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    for (i = 0; i < h->num_meta; i++) {
        if (strcmp(h->meta_key[i], key) == 0) {
            break;
        }
    }
    if (i == MT_META_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    snprintf(h->meta_key[i], sizeof(h->meta_key[i]), "%s", key);
    snprintf(h->meta_value[i], sizeof(h->meta_value[i]), "%s", value);
    if (i == h->num_meta) {
        h->num_meta++;
    }
    return MEMSVC_OK;
}
