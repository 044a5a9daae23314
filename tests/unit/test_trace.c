/* test_trace.c - trace format: round trip, streaming bounds, hostile and truncated input, JSON */
#include "tests/test_util.h"
#include "tools/memtrace/trace.h"

#include <msgpack.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void tmp_path(char *buf, size_t len)
{
    int fd;

    snprintf(buf, len, "/tmp/memsvc-test-trace-XXXXXX");
    fd = mkstemp(buf);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
}

static void full_header(mt_header_t *h)
{
    mt_header_init(h);
    snprintf(h->node.name, sizeof(h->node.name), "custom");
    h->node.num_npus   = 8;
    h->node.hbm_bytes  = 64ull << 30;
    h->node.hbm_bw     = 1.6e12;
    h->node.host_bytes = 1ull << 40;
    h->node.disk_bytes = 1ull << 42;
    h->node.h2d        = (sim_link_desc_t){25e9, 2000};
    h->node.d2h        = (sim_link_desc_t){24e9, 2100};
    h->node.d2d        = (sim_link_desc_t){196e9, 1000};
    h->node.disk       = (sim_link_desc_t){3e9, 50000};
    h->node.nic        = (sim_link_desc_t){25e9, 5000};
    h->node.flops      = 3e14;
    h->node.mfu        = 0.3;
    snprintf(h->model, sizeof(h->model), "pangu-ultra-moe");
    h->layout        = (mt_layout_t){8, 16, 2, 4, 3, 1, 32, 2, 4096};
    h->ranks         = 128;
    h->steps         = 3;
    h->recorded_peak = 61ull << 30;
    CU_ASSERT_EQUAL(mt_header_set_meta(h, "source", "unit \"test\""), MEMSVC_OK);
    CU_ASSERT_EQUAL(mt_header_set_meta(h, "seed", "42"), MEMSVC_OK);
    CU_ASSERT_EQUAL(mt_header_set_meta(h, "seed", "43"), MEMSVC_OK); /* replaces */
    CU_ASSERT_EQUAL(h->num_meta, 2);
}

static const uint64_t ev_inputs[] = {7, 8, 9};
static const uint64_t ev_reads[]  = {11, 12};
static const uint64_t ev_writes[] = {13};

/* One event of each type, every field set to something that is not its default. */
static void sample_events(mt_event_t ev[MT_EV_COUNT])
{
    memset(ev, 0, MT_EV_COUNT * sizeof(ev[0]));
    ev[0] = (mt_event_t){.type         = MT_EV_ALLOC,
                         .time_ns      = 1000,
                         .rank         = 3,
                         .device       = 5,
                         .tensor       = 77,
                         .key          = "L12.mb3.attn.qkv",
                         .size         = 1ull << 33,
                         .kind         = MEMSVC_KIND_OPTIM,
                         .tags         = {12, 3, -1, 7, 2},
                         .recomputable = true,
                         .recompute_ns = 4321,
                         .durable      = true,
                         .producer     = 99,
                         .inputs       = ev_inputs,
                         .num_inputs   = 3};
    ev[1] = (mt_event_t){.type    = MT_EV_ACCESS,
                         .time_ns = 2000,
                         .rank    = 3,
                         .device  = 5,
                         .tensor  = 77,
                         .write   = true,
                         .op      = 1234};
    ev[2] = (mt_event_t){
        .type = MT_EV_FREE, .time_ns = UINT64_MAX, .rank = 1, .device = 63, .tensor = UINT64_MAX};
    ev[3] = (mt_event_t){.type        = MT_EV_COMPUTE,
                         .time_ns     = 3000,
                         .rank        = 2,
                         .device      = 1,
                         .op          = 55,
                         .name        = "moe.dispatch",
                         .duration_ns = 777,
                         .stream      = 2,
                         .reads       = ev_reads,
                         .num_reads   = 2,
                         .writes      = ev_writes,
                         .num_writes  = 1};
    ev[4] = (mt_event_t){.type       = MT_EV_HINT,
                         .time_ns    = 4000,
                         .rank       = 0,
                         .device     = 0,
                         .hint       = MEMSVC_HINT_PHASE,
                         .step       = 2,
                         .layer      = -1,
                         .microbatch = 31,
                         .phase      = MEMSVC_PHASE_OPTIMIZER};
}

static void assert_event_equal(const mt_event_t *a, const mt_event_t *b)
{
    uint32_t i;

    CU_ASSERT_EQUAL(a->type, b->type);
    CU_ASSERT_EQUAL(a->time_ns, b->time_ns);
    CU_ASSERT_EQUAL(a->rank, b->rank);
    CU_ASSERT_EQUAL(a->device, b->device);
    CU_ASSERT_EQUAL(a->tensor, b->tensor);
    CU_ASSERT_EQUAL(a->size, b->size);
    CU_ASSERT_EQUAL(a->kind, b->kind);
    CU_ASSERT_EQUAL(memcmp(&a->tags, &b->tags, sizeof(a->tags)), 0);
    CU_ASSERT_EQUAL(a->recomputable, b->recomputable);
    CU_ASSERT_EQUAL(a->recompute_ns, b->recompute_ns);
    CU_ASSERT_EQUAL(a->durable, b->durable);
    CU_ASSERT_EQUAL(a->producer, b->producer);
    CU_ASSERT_EQUAL(a->write, b->write);
    CU_ASSERT_EQUAL(a->op, b->op);
    CU_ASSERT_EQUAL(a->duration_ns, b->duration_ns);
    CU_ASSERT_EQUAL(a->stream, b->stream);
    CU_ASSERT_EQUAL(a->hint, b->hint);
    CU_ASSERT_EQUAL(a->step, b->step);
    CU_ASSERT_EQUAL(a->layer, b->layer);
    CU_ASSERT_EQUAL(a->microbatch, b->microbatch);
    CU_ASSERT_EQUAL(a->phase, b->phase);
    if (a->type == MT_EV_ALLOC) {
        CU_ASSERT_STRING_EQUAL(a->key, b->key);
    }
    if (a->type == MT_EV_COMPUTE) {
        CU_ASSERT_STRING_EQUAL(a->name, b->name);
    }
    CU_ASSERT_EQUAL_FATAL(a->num_inputs, b->num_inputs);
    CU_ASSERT_EQUAL_FATAL(a->num_reads, b->num_reads);
    CU_ASSERT_EQUAL_FATAL(a->num_writes, b->num_writes);
    for (i = 0; i < a->num_inputs; i++) {
        CU_ASSERT_EQUAL(a->inputs[i], b->inputs[i]);
    }
    for (i = 0; i < a->num_reads; i++) {
        CU_ASSERT_EQUAL(a->reads[i], b->reads[i]);
    }
    for (i = 0; i < a->num_writes; i++) {
        CU_ASSERT_EQUAL(a->writes[i], b->writes[i]);
    }
}

/* Write the full header and the sample events to path; returns the writer's count. */
static uint64_t write_sample(const char *path)
{
    mt_event_t   ev[MT_EV_COUNT];
    mt_header_t  h;
    mt_writer_t *w;
    uint64_t     n;
    int          i;

    full_header(&h);
    sample_events(ev);
    TEST_ASSERT_OK(mt_writer_open(path, &h, &w));
    for (i = 0; i < MT_EV_COUNT; i++) {
        TEST_ASSERT_OK(mt_writer_put(w, &ev[i]));
    }
    n = mt_writer_count(w);
    TEST_ASSERT_OK(mt_writer_close(w));
    return n;
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    long  n;

    CU_ASSERT_FATAL(f != NULL);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

static void test_round_trip(void)
{
    const mt_header_t *rh;
    mt_event_t         ev[MT_EV_COUNT], e;
    mt_header_t        h;
    mt_reader_t       *r;
    char               path[64], err[256];
    bool               end;
    int                i;

    tmp_path(path, sizeof(path));
    CU_ASSERT_EQUAL(write_sample(path), MT_EV_COUNT);
    full_header(&h);
    sample_events(ev);

    TEST_ASSERT_OK(mt_reader_open(path, &r, err, sizeof(err)));
    rh = mt_reader_header(r);
    CU_ASSERT_EQUAL(rh->version, MT_FORMAT_VERSION);
    CU_ASSERT_STRING_EQUAL(rh->node.name, "custom");
    CU_ASSERT_EQUAL(rh->node.num_npus, 8);
    CU_ASSERT_EQUAL(rh->node.hbm_bytes, 64ull << 30);
    CU_ASSERT_EQUAL(rh->node.hbm_bw, 1.6e12);
    CU_ASSERT_EQUAL(rh->node.host_bytes, 1ull << 40);
    CU_ASSERT_EQUAL(rh->node.disk_bytes, 1ull << 42);
    CU_ASSERT_EQUAL(memcmp(&rh->node.h2d, &h.node.h2d, sizeof(h.node.h2d)), 0);
    CU_ASSERT_EQUAL(memcmp(&rh->node.d2h, &h.node.d2h, sizeof(h.node.d2h)), 0);
    CU_ASSERT_EQUAL(memcmp(&rh->node.d2d, &h.node.d2d, sizeof(h.node.d2d)), 0);
    CU_ASSERT_EQUAL(memcmp(&rh->node.disk, &h.node.disk, sizeof(h.node.disk)), 0);
    CU_ASSERT_EQUAL(memcmp(&rh->node.nic, &h.node.nic, sizeof(h.node.nic)), 0);
    CU_ASSERT_EQUAL(rh->node.flops, 3e14);
    CU_ASSERT_EQUAL(rh->node.mfu, 0.3);
    CU_ASSERT_STRING_EQUAL(rh->model, "pangu-ultra-moe");
    CU_ASSERT_EQUAL(memcmp(&rh->layout, &h.layout, sizeof(h.layout)), 0);
    CU_ASSERT_EQUAL(rh->ranks, 128);
    CU_ASSERT_EQUAL(rh->steps, 3);
    CU_ASSERT_EQUAL(rh->recorded_peak, 61ull << 30);
    CU_ASSERT_EQUAL_FATAL(rh->num_meta, 2);
    CU_ASSERT_STRING_EQUAL(rh->meta_key[0], "source");
    CU_ASSERT_STRING_EQUAL(rh->meta_value[0], "unit \"test\"");
    CU_ASSERT_STRING_EQUAL(rh->meta_key[1], "seed");
    CU_ASSERT_STRING_EQUAL(rh->meta_value[1], "43");
    for (i = 0; i < MT_EV_COUNT; i++) {
        TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
        CU_ASSERT_FALSE_FATAL(end);
        assert_event_equal(&e, &ev[i]);
    }
    TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
    CU_ASSERT_TRUE(end);
    CU_ASSERT_EQUAL(mt_reader_offset(r), (uint64_t)file_size(path));
    mt_reader_close(r);
    unlink(path);
}

static void test_header_init(void)
{
    mt_header_t h;

    memset(&h, 0xff, sizeof(h));
    mt_header_init(&h);
    CU_ASSERT_EQUAL(h.version, MT_FORMAT_VERSION);
    CU_ASSERT_STRING_EQUAL(h.node.name, "tiny");
    CU_ASSERT_EQUAL(h.node.num_npus, 2);
    CU_ASSERT_EQUAL(h.node.hbm_bytes, 64ull << 20);
    CU_ASSERT_EQUAL(h.node.host_bytes, 256ull << 20);
    CU_ASSERT_EQUAL(h.num_meta, 0);
    CU_ASSERT_EQUAL(h.recorded_peak, 0);
    CU_ASSERT_STRING_EQUAL(h.model, "");
}

static void test_writer_refuses_invalid(void)
{
    mt_event_t   ev[MT_EV_COUNT], e;
    mt_header_t  h;
    mt_writer_t *w;
    char         path[64], longkey[MEMSVC_KEY_MAX + 2];

    tmp_path(path, sizeof(path));
    mt_header_init(&h);
    sample_events(ev);
    TEST_ASSERT_OK(mt_writer_open(path, &h, &w));
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    e                            = ev[0];
    e.key                        = longkey;
    CU_ASSERT_EQUAL(mt_writer_put(w, &e), MEMSVC_ERR_INVALID_PARAM);
    e      = ev[0];
    e.kind = MEMSVC_KIND_COUNT;
    CU_ASSERT_EQUAL(mt_writer_put(w, &e), MEMSVC_ERR_INVALID_PARAM);
    e      = ev[4];
    e.hint = MEMSVC_HINT_COUNT;
    CU_ASSERT_EQUAL(mt_writer_put(w, &e), MEMSVC_ERR_INVALID_PARAM);
    e      = ev[0];
    e.type = MT_EV_COUNT;
    CU_ASSERT_EQUAL(mt_writer_put(w, &e), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(mt_writer_count(w), 0);
    TEST_ASSERT_OK(mt_writer_close(w));
    CU_ASSERT_EQUAL(mt_writer_open("/nonexistent-dir/x.trace", &h, &w), MEMSVC_ERR_IO);
    unlink(path);
}

/* 1M events stream back with a read buffer that does not grow with the trace. */
static void test_million_events_bounded(void)
{
    const uint64_t n = 1000000;
    uint64_t       ids[4], i, seen = 0, sum = 0, want = 0;
    mt_header_t    h;
    mt_writer_t   *w;
    mt_reader_t   *r;
    mt_event_t     e;
    char           path[64], err[256], key[32];
    bool           end = false;

    tmp_path(path, sizeof(path));
    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(path, &h, &w));
    for (i = 0; i < n; i++) {
        memset(&e, 0, sizeof(e));
        e.time_ns = i;
        switch (i % 3) {
        case 0:
            e.tensor = i;
            snprintf(key, sizeof(key), "t%llu", (unsigned long long)i);
            e.type = MT_EV_ALLOC;
            e.key  = key;
            e.size = i * 16;
            break;
        case 1:
            ids[0]       = i - 1;
            ids[1]       = i;
            e.type       = MT_EV_COMPUTE;
            e.name       = "op";
            e.op         = i;
            e.reads      = ids;
            e.num_reads  = 2;
            e.writes     = ids + 1;
            e.num_writes = 1;
            break;
        default:
            e.type   = MT_EV_FREE;
            e.tensor = i;
            break;
        }
        want += e.type + e.size + e.tensor;
        TEST_ASSERT_OK(mt_writer_put(w, &e));
    }
    CU_ASSERT_EQUAL(mt_writer_count(w), n);
    TEST_ASSERT_OK(mt_writer_close(w));
    CU_ASSERT(file_size(path) > 10 * 1024 * 1024);

    TEST_ASSERT_OK(mt_reader_open(path, &r, err, sizeof(err)));
    while (mt_reader_next(r, &e, &end, err, sizeof(err)) == MEMSVC_OK && !end) {
        sum += e.type + e.size + e.tensor;
        seen++;
    }
    CU_ASSERT_TRUE(end);
    CU_ASSERT_EQUAL(seen, n);
    CU_ASSERT_EQUAL(sum, want);
    /* a few read chunks, not the 10+ MiB of the file */
    CU_ASSERT(mt_reader_buffer_peak(r) > 0);
    CU_ASSERT(mt_reader_buffer_peak(r) <= 256 * 1024);
    mt_reader_close(r);
    unlink(path);
}

/* One large event: the buffer grows to hold it (and no more than about twice it). */
static void test_large_event_bounded(void)
{
    const uint32_t n   = 200000;
    uint64_t      *ids = calloc(n, sizeof(*ids));
    mt_header_t    h;
    mt_writer_t   *w;
    mt_reader_t   *r;
    mt_event_t     e;
    char           path[64], err[256];
    bool           end;
    size_t         event_bytes = (size_t)n * 9; /* uint64 ids above 2^32: 9 bytes each */
    uint32_t       i;

    CU_ASSERT_FATAL(ids != NULL);
    for (i = 0; i < n; i++) {
        ids[i] = (1ull << 40) + i;
    }
    tmp_path(path, sizeof(path));
    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(path, &h, &w));
    memset(&e, 0, sizeof(e));
    e.type       = MT_EV_ALLOC;
    e.key        = "big";
    e.inputs     = ids;
    e.num_inputs = n;
    TEST_ASSERT_OK(mt_writer_put(w, &e));
    e.num_inputs = 1;
    TEST_ASSERT_OK(mt_writer_put(w, &e));
    TEST_ASSERT_OK(mt_writer_close(w));

    TEST_ASSERT_OK(mt_reader_open(path, &r, err, sizeof(err)));
    TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
    CU_ASSERT_EQUAL_FATAL(e.num_inputs, n);
    CU_ASSERT_EQUAL(e.inputs[n - 1], (1ull << 40) + n - 1);
    TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
    CU_ASSERT_EQUAL(e.num_inputs, 1);
    CU_ASSERT(mt_reader_buffer_peak(r) >= event_bytes);
    CU_ASSERT(mt_reader_buffer_peak(r) <= 2 * event_bytes + 256 * 1024);
    mt_reader_close(r);
    unlink(path);
    free(ids);
}

static uint8_t *slurp(const char *path, size_t *len_p)
{
    long     n   = file_size(path);
    uint8_t *buf = malloc((size_t)n + 1);
    FILE    *f   = fopen(path, "rb");

    CU_ASSERT_FATAL((buf != NULL) && (f != NULL));
    CU_ASSERT_FATAL(fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    *len_p = (size_t)n;
    return buf;
}

static void spit(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");

    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fwrite(buf, 1, len, f) == len);
    fclose(f);
}

/*
 * Read all of path: returns the status of the first failure (open or next) or MEMSVC_OK at a
 * clean end; *events_p counts the events read, err holds the message.
 */
static memsvc_status_t read_all(const char *path, uint64_t *events_p, char *err, size_t errlen)
{
    memsvc_status_t status;
    mt_reader_t    *r;
    mt_event_t      e;
    bool            end = false;

    *events_p = 0;
    err[0]    = '\0';
    status    = mt_reader_open(path, &r, err, errlen);
    if (status != MEMSVC_OK) {
        return status;
    }
    while (((status = mt_reader_next(r, &e, &end, err, errlen)) == MEMSVC_OK) && !end) {
        (*events_p)++;
    }
    mt_reader_close(r);
    return status;
}

static void test_truncated_everywhere(void)
{
    uint64_t     boundaries[MT_EV_COUNT + 1], events;
    mt_reader_t *r;
    mt_event_t   e;
    uint8_t     *buf;
    size_t       len, cut;
    char         path[64], cutpath[64], err[256];
    bool         end;
    int          i, clean = 0;

    tmp_path(path, sizeof(path));
    tmp_path(cutpath, sizeof(cutpath));
    write_sample(path);
    TEST_ASSERT_OK(mt_reader_open(path, &r, err, sizeof(err)));
    boundaries[0] = mt_reader_offset(r);
    for (i = 1; i <= MT_EV_COUNT; i++) {
        TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
        boundaries[i] = mt_reader_offset(r);
    }
    mt_reader_close(r);
    buf = slurp(path, &len);
    CU_ASSERT_EQUAL(boundaries[MT_EV_COUNT], len);

    for (cut = 0; cut <= len; cut++) {
        memsvc_status_t status;
        bool            at_boundary = false;

        spit(cutpath, buf, cut);
        status = read_all(cutpath, &events, err, sizeof(err));
        for (i = 0; i <= MT_EV_COUNT; i++) {
            if (cut == boundaries[i]) {
                at_boundary = true;
                CU_ASSERT_EQUAL(status, MEMSVC_OK);
                CU_ASSERT_EQUAL(events, (uint64_t)i);
                clean++;
            }
        }
        if (!at_boundary) {
            CU_ASSERT_EQUAL(status, MEMSVC_ERR_FORMAT);
            CU_ASSERT_PTR_NOT_NULL(strstr(err, "offset "));
            if ((cut > MT_MAGIC_LEN) && (strstr(err, "truncated") == NULL)) {
                CU_FAIL("truncation not reported as such");
                fprintf(stderr, "cut %zu: %s\n", cut, err);
            }
        }
    }
    CU_ASSERT_EQUAL(clean, MT_EV_COUNT + 1);
    free(buf);
    unlink(path);
    unlink(cutpath);
}

/* Every byte replaced by a few hostile values: an error or a clean read, never a crash. */
static void test_corrupted_bytes(void)
{
    static const uint8_t values[] = {0x00, 0xff, 0xc1, 0xdd, 0xdf, 0xdb, 0x7f, 0x91, 0x07};
    uint8_t             *buf, saved;
    uint64_t             events;
    size_t               len, pos, v;
    char                 path[64], bad[64], err[256];
    int                  errors = 0;

    tmp_path(path, sizeof(path));
    tmp_path(bad, sizeof(bad));
    write_sample(path);
    buf = slurp(path, &len);
    for (pos = 0; pos < len; pos++) {
        saved = buf[pos];
        for (v = 0; v < sizeof(values); v++) {
            memsvc_status_t status;

            buf[pos] = values[v];
            spit(bad, buf, len);
            status = read_all(bad, &events, err, sizeof(err));
            CU_ASSERT((status == MEMSVC_OK) || (status == MEMSVC_ERR_FORMAT) ||
                      (status == MEMSVC_ERR_VERSION));
            if (status != MEMSVC_OK) {
                CU_ASSERT_PTR_NOT_NULL(strstr(err, "offset "));
                errors++;
            }
        }
        buf[pos] = saved;
    }
    CU_ASSERT(errors > (int)len); /* most corruptions are caught */
    free(buf);
    unlink(path);
    unlink(bad);
}

static void test_bad_magic_and_version(void)
{
    uint8_t *buf;
    uint64_t events;
    size_t   len;
    char     path[64], err[256];

    tmp_path(path, sizeof(path));
    write_sample(path);
    buf = slurp(path, &len);
    CU_ASSERT_EQUAL(memcmp(buf, "MEMTRACE\0\0\0\2", 12), 0);

    buf[0] = 'X';
    spit(path, buf, len);
    CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "offset 0: not a memtrace file"));
    buf[0] = 'M';

    buf[11] = 3;
    spit(path, buf, len);
    CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_ERR_VERSION);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "version 3"));
    buf[8]  = 1;
    buf[11] = 1;
    spit(path, buf, len);
    CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_ERR_VERSION);

    spit(path, "", 0);
    CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    CU_ASSERT_EQUAL(read_all("/nonexistent/x.trace", &events, err, sizeof(err)), MEMSVC_ERR_IO);
    free(buf);
    unlink(path);
}

/* A valid header (tiny node) followed by the raw bytes given. */
static void raw_trace(const char *path, const void *bytes, size_t len, uint64_t *event_off_p)
{
    mt_header_t  h;
    mt_writer_t *w;
    FILE        *f;

    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(path, &h, &w));
    TEST_ASSERT_OK(mt_writer_close(w));
    *event_off_p = (uint64_t)file_size(path);
    f            = fopen(path, "ab");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fwrite(bytes, 1, len, f) == len);
    fclose(f);
}

/* Expect MEMSVC_ERR_FORMAT with "offset <first event + rel>" and what in the message. */
static void expect_bad_event(const void *bytes, size_t len, uint64_t rel, const char *what)
{
    uint64_t off, events;
    char     path[64], err[256], want[64];

    tmp_path(path, sizeof(path));
    raw_trace(path, bytes, len, &off);
    CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    snprintf(want, sizeof(want), "offset %llu:", (unsigned long long)(off + rel));
    if ((strstr(err, want) == NULL) || (strstr(err, what) == NULL)) {
        CU_FAIL("error message lacks the offset or the problem");
        fprintf(stderr, "want '%s' and '%s', got: %s\n", want, what, err);
    }
    unlink(path);
}

/* msgpack-encode an event array from a format: i=uint, n=negative -5, s=str, b=true, a=[] */
static size_t pack(char *out, const char *fmt, const uint64_t *vals)
{
    msgpack_sbuffer sb;
    msgpack_packer  pk;
    size_t          n = strlen(fmt), i, len;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (i = 0; i < n; i++) {
        switch (fmt[i]) {
        case 'i':
            msgpack_pack_uint64(&pk, vals[i]);
            break;
        case 'n':
            msgpack_pack_int64(&pk, -5);
            break;
        case 's':
            msgpack_pack_str_with_body(&pk, "ab", 2);
            break;
        case 'z':
            msgpack_pack_str_with_body(&pk, "a\0b", 3);
            break;
        case 'b':
            msgpack_pack_true(&pk);
            break;
        case 'a':
            msgpack_pack_array(&pk, 0);
            break;
        case 't': /* tags */
            msgpack_pack_array(&pk, 5);
            for (len = 0; len < 5; len++) {
                msgpack_pack_int32(&pk, -1);
            }
            break;
        default:
            CU_FAIL("bad pack format");
            break;
        }
    }
    memcpy(out, sb.data, sb.size);
    len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return len;
}

static void test_hostile_events(void)
{
    static const uint64_t z[16] = {0};
    uint64_t              v[16];
    char                  buf[4096];
    size_t                len;

    /* baseline: a well-formed FREE reads fine */
    {
        uint64_t off, events;
        char     path[64], err[256];

        len = pack(buf, "iiiii", (uint64_t[]){2, 0, 0, 0, 9});
        tmp_path(path, sizeof(path));
        raw_trace(path, buf, len, &off);
        CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_OK);
        CU_ASSERT_EQUAL(events, 1);
        unlink(path);
    }
    len = pack(buf, "iiiii", (uint64_t[]){9, 0, 0, 0, 0});
    expect_bad_event(buf, len, 0, "field 'type': value 9 out of range");
    len = pack(buf, "iiii", (uint64_t[]){2, 0, 0, 0});
    expect_bad_event(buf, len, 0, "fewer than 5");
    len = pack(buf, "iiiis", (uint64_t[]){2, 0, 0, 0, 0});
    expect_bad_event(buf, len, 0, "field 'tensor': expected unsigned integer, got string");
    len = pack(buf, "iiini", (uint64_t[]){2, 0, 0, 0, 0});
    expect_bad_event(buf, len, 0, "field 'device'");
    len = pack(buf, "iiiii", (uint64_t[]){2, 0, 0, 64, 0});
    expect_bad_event(buf, len, 0, "field 'device': value 64 out of range");
    len = pack(buf, "iiiiiiiii", (uint64_t[]){4, 0, 0, 0, MEMSVC_HINT_COUNT, 0, 0, 0, 0});
    expect_bad_event(buf, len, 0, "field 'hint'");
    len = pack(buf, "iiiiiiiii", (uint64_t[]){4, 0, 0, 0, 0, 0, 0, 0, MEMSVC_PHASE_COUNT});
    expect_bad_event(buf, len, 0, "field 'phase'");
    memcpy(v, z, sizeof(v));
    v[7] = MEMSVC_KIND_COUNT;
    len  = pack(buf, "iiiiisiitbibia", v);
    expect_bad_event(buf, len, 0, "field 'kind'");
    len = pack(buf, "iiiiiziitbibia", z);
    expect_bad_event(buf, len, 0, "NUL byte");
    len = pack(buf, "iiiiisiiibibia", z);
    expect_bad_event(buf, len, 0, "field 'tags'");
    len = pack(buf, "iiiiisiitiibia", z);
    expect_bad_event(buf, len, 0, "field 'recomputable': expected boolean");
    len = pack(buf, "iiiiisiitbibii", z);
    expect_bad_event(buf, len, 0, "field 'inputs': expected array");
    len = pack(buf, "iiiiiiiiaa", z);
    expect_bad_event(buf, len, 0, "alloc event with 10 elements, fewer than 14");
    len = pack(buf, "iiiiiiiiaa", (uint64_t[]){3, 0, 0, 0, 0, 0, 0, 0, 0, 0});
    expect_bad_event(buf, len, 0, "field 'name': expected string");

    /* a key longer than MEMSVC_KEY_MAX */
    {
        msgpack_sbuffer sb;
        msgpack_packer  pk;
        char            key[300];
        int             i;

        memset(key, 'k', sizeof(key));
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 14);
        for (i = 0; i < 5; i++) {
            msgpack_pack_uint32(&pk, 0);
        }
        msgpack_pack_str_with_body(&pk, key, sizeof(key));
        for (i = 0; i < 8; i++) {
            msgpack_pack_uint32(&pk, 0);
        }
        expect_bad_event(sb.data, sb.size, 0, "field 'key': string of 300 bytes longer");
        msgpack_sbuffer_destroy(&sb);
    }
    /* absurd lengths are refused before anything is allocated for them */
    expect_bad_event("\xdd\xff\xff\xff\xff", 5, 0, "array or map longer than the limit");
    expect_bad_event("\x95\x00\x00\x00\x00\xdd\x7f\xff\xff\xff", 10, 5, "longer than the limit");
    expect_bad_event("\xdf\x00\x10\x00\x01", 5, 0, "array or map longer than the limit");
    expect_bad_event("\xdb\xff\xff\xff\xf0", 5, 0, "string or binary longer than the limit");
    expect_bad_event("\xc6\x00\x20\x00\x00", 5, 0, "string or binary longer than the limit");
    expect_bad_event("\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91", 11, 8, "nested deeper");
    expect_bad_event("\x95\x02\xc1", 3, 2, "0xc1");
    expect_bad_event("\x95\x02\x00\x00", 4, 0, "truncated");
    expect_bad_event("\x02", 1, 0, "expected array, got unsigned integer");
    expect_bad_event("\x95\x02\x00\x00\x00\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", 14, 0,
                     "field 'tensor': expected unsigned integer, got float");
}

/*
 * Version 2 adds COMPUTE's `aliases` (element 10); a version-1 file still reads, and there a
 * trailing element 10 is ignored as before.
 */
static void test_version_2_aliases(void)
{
    static const char      magic1[] = "MEMTRACE\0\0\0\1";
    static const uint64_t  reads[] = {1}, aliases[] = {1, 7};
    mt_header_t            h;
    mt_writer_t           *w;
    mt_reader_t           *r;
    mt_event_t             e;
    msgpack_sbuffer        sb;
    msgpack_packer         pk;
    bool                   end;
    char                   path[64], err[256];
    int                    i;

    tmp_path(path, sizeof(path));
    mt_header_init(&h);
    TEST_ASSERT_OK(mt_writer_open(path, &h, &w));
    memset(&e, 0, sizeof(e));
    e.type        = MT_EV_COMPUTE;
    e.op          = 3;
    e.name        = "aten::view";
    e.duration_ns = 40;
    e.reads       = reads;
    e.num_reads   = 1;
    e.aliases     = aliases;
    e.num_aliases = 2;
    TEST_ASSERT_OK(mt_writer_put(w, &e));
    TEST_ASSERT_OK(mt_writer_close(w));
    TEST_ASSERT_OK(mt_reader_open(path, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(mt_reader_header(r)->version, 2);
    TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
    CU_ASSERT_FALSE(end);
    CU_ASSERT_EQUAL(e.num_aliases, 2);
    CU_ASSERT_EQUAL(e.aliases[0], 1);
    CU_ASSERT_EQUAL(e.aliases[1], 7);
    mt_reader_close(r);

    /* version 1: header {"version": 1}, then a COMPUTE of 11 elements */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "version", 7);
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_array(&pk, 11);
    for (i = 0; i < 4; i++) {
        msgpack_pack_uint32(&pk, (i == 0) ? MT_EV_COMPUTE : 0);
    }
    msgpack_pack_uint32(&pk, 3);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_uint32(&pk, 40);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint32(&pk, 1);
    {
        FILE *f = fopen(path, "wb");

        CU_ASSERT_FATAL(f != NULL);
        fwrite(magic1, 1, 12, f);
        fwrite(sb.data, 1, sb.size, f);
        fclose(f);
    }
    msgpack_sbuffer_destroy(&sb);
    TEST_ASSERT_OK(mt_reader_open(path, &r, err, sizeof(err)));
    CU_ASSERT_EQUAL(mt_reader_header(r)->version, 1);
    TEST_ASSERT_OK(mt_reader_next(r, &e, &end, err, sizeof(err)));
    CU_ASSERT_FALSE(end);
    CU_ASSERT_EQUAL(e.type, MT_EV_COMPUTE);
    CU_ASSERT_EQUAL(e.duration_ns, 40);
    CU_ASSERT_EQUAL(e.num_aliases, 0);
    mt_reader_close(r);
    unlink(path);
}

static void test_hostile_header(void)
{
    static const char magic[] = "MEMTRACE\0\0\0\1";
    msgpack_sbuffer   sb;
    msgpack_packer    pk;
    uint64_t          events;
    char              path[64], err[256];
    char              file[4096];
    int               i, variant;

    tmp_path(path, sizeof(path));
    memset(file, 'm', sizeof(file));
    for (variant = 0; variant < 6; variant++) {
        static const char *const want[] = {"header field '(top)': expected map, got array",
                                           "header field 'version': missing",
                                           "header field 'version': 2 differs",
                                           "header field 'meta': 17 pairs",
                                           "header field 'model': string of 64 bytes",
                                           "header field 'node.num_npus': value 65"};

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        switch (variant) {
        case 0:
            msgpack_pack_array(&pk, 0);
            break;
        case 1:
            msgpack_pack_map(&pk, 1);
            msgpack_pack_str_with_body(&pk, "ranks", 5);
            msgpack_pack_uint32(&pk, 1);
            break;
        case 2:
            msgpack_pack_map(&pk, 1);
            msgpack_pack_str_with_body(&pk, "version", 7);
            msgpack_pack_uint32(&pk, 2);
            break;
        case 3:
            msgpack_pack_map(&pk, 2);
            msgpack_pack_str_with_body(&pk, "version", 7);
            msgpack_pack_uint32(&pk, 1);
            msgpack_pack_str_with_body(&pk, "meta", 4);
            msgpack_pack_map(&pk, MT_META_MAX + 1);
            for (i = 0; i <= MT_META_MAX; i++) {
                msgpack_pack_str_with_body(&pk, "k", 1);
                msgpack_pack_str_with_body(&pk, "v", 1);
            }
            break;
        case 4:
            msgpack_pack_map(&pk, 2);
            msgpack_pack_str_with_body(&pk, "version", 7);
            msgpack_pack_uint32(&pk, 1);
            msgpack_pack_str_with_body(&pk, "model", 5);
            msgpack_pack_str_with_body(&pk, file, 64);
            break;
        default:
            msgpack_pack_map(&pk, 2);
            msgpack_pack_str_with_body(&pk, "version", 7);
            msgpack_pack_uint32(&pk, 1);
            msgpack_pack_str_with_body(&pk, "node", 4);
            msgpack_pack_map(&pk, 1);
            msgpack_pack_str_with_body(&pk, "num_npus", 8);
            msgpack_pack_uint32(&pk, 65);
            break;
        }
        CU_ASSERT_FATAL(sb.size + 12 < sizeof(file));
        memcpy(file, magic, 12);
        memcpy(file + 12, sb.data, sb.size);
        spit(path, file, 12 + sb.size);
        CU_ASSERT_EQUAL(read_all(path, &events, err, sizeof(err)), MEMSVC_ERR_FORMAT);
        if ((strstr(err, "offset 12:") == NULL) || (strstr(err, want[variant]) == NULL)) {
            CU_FAIL("header error message");
            fprintf(stderr, "variant %d: want '%s', got: %s\n", variant, want[variant], err);
        }
        msgpack_sbuffer_destroy(&sb);
    }
    unlink(path);
}

static char *print_event(const mt_event_t *e)
{
    char  *out = NULL;
    size_t len = 0;
    FILE  *f   = open_memstream(&out, &len);

    CU_ASSERT_FATAL(f != NULL);
    mt_event_print_json(e, f);
    fclose(f);
    return out;
}

static void test_json(void)
{
    mt_event_t  ev[MT_EV_COUNT], e;
    char       *s;
    char       *out = NULL;
    size_t      len = 0;
    FILE       *f;
    mt_header_t h;

    sample_events(ev);
    e     = ev[0];
    e.key = "q\"b\\s\n\x01\xc3\xa9\xff";
    s     = print_event(&e);
    CU_ASSERT_STRING_EQUAL(
        s, "{\"type\":\"alloc\",\"time_ns\":1000,\"rank\":3,\"device\":5,\"tensor\":77,"
           "\"key\":\"q\\\"b\\\\s\\u000a\\u0001\xc3\xa9\\ufffd\",\"size\":8589934592,"
           "\"kind\":\"optim\",\"tags\":{\"layer\":12,\"microbatch\":3,\"expert\":-1,\"stage\":7,"
           "\"step\":2},\"recomputable\":true,\"recompute_ns\":4321,\"durable\":true,"
           "\"producer\":99,\"inputs\":[7,8,9]}\n");
    free(s);
    s = print_event(&ev[3]);
    CU_ASSERT_STRING_EQUAL(s, "{\"type\":\"compute\",\"time_ns\":3000,\"rank\":2,\"device\":1,"
                              "\"op\":55,\"name\":\"moe.dispatch\",\"duration_ns\":777,"
                              "\"stream\":2,\"reads\":[11,12],\"writes\":[13]}\n");
    free(s);
    s = print_event(&ev[4]);
    CU_ASSERT_STRING_EQUAL(s, "{\"type\":\"hint\",\"time_ns\":4000,\"rank\":0,\"device\":0,"
                              "\"hint\":\"phase\",\"step\":2,\"layer\":-1,\"microbatch\":31,"
                              "\"phase\":\"optimizer\"}\n");
    free(s);

    full_header(&h);
    f = open_memstream(&out, &len);
    mt_header_print_json(&h, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(out, "\"meta\":{\"source\":\"unit \\\"test\\\"\",\"seed\":\"43\"}}\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"h2d\":{\"bw\":25000000000,\"lat_ns\":2000}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"mfu\":0.29999999999999999"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"layout\":{\"tp\":8,\"pp\":16,\"vpp\":2,\"ep\":4,"));
    CU_ASSERT_EQUAL(strchr(out, '\n'), out + strlen(out) - 1);
    free(out);
}

/* Regression (found by fuzzing): an empty string in a trace, which msgpack-c hands over with a
 * NULL pointer, was passed to memchr/memcpy (undefined behaviour; caught by UBSan). */
static void test_empty_string_field(void)
{
    mt_reader_t *r = NULL;
    mt_event_t   ev;
    bool         end = false;
    char         err[256];
    int          n   = 0;

    TEST_ASSERT_OK(mt_reader_open("tests/data/trace_empty_string.trace", &r, err, sizeof(err)));
    while (n < 1000000 && mt_reader_next(r, &ev, &end, err, sizeof(err)) == MEMSVC_OK && !end) {
        n++;
    }
    CU_ASSERT(n < 1000000);
    mt_reader_close(r);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("trace", NULL, NULL);

    CU_add_test(s, "an empty string field (NULL from msgpack-c) is read safely", test_empty_string_field);
    CU_add_test(s, "every event type and header field round-trips", test_round_trip);
    CU_add_test(s, "header defaults", test_header_init);
    CU_add_test(s, "writer refuses what a reader would refuse", test_writer_refuses_invalid);
    CU_add_test(s, "1M events stream with a bounded buffer", test_million_events_bounded);
    CU_add_test(s, "a large event is read with a buffer bounded by it", test_large_event_bounded);
    CU_add_test(s, "truncation at every offset", test_truncated_everywhere);
    CU_add_test(s, "corrupted bytes never crash", test_corrupted_bytes);
    CU_add_test(s, "wrong magic, wrong version, empty file", test_bad_magic_and_version);
    CU_add_test(s, "version 2: COMPUTE aliases; version 1 still reads", test_version_2_aliases);
    CU_add_test(s, "hostile events name offset and problem", test_hostile_events);
    CU_add_test(s, "hostile headers name offset and problem", test_hostile_header);
    CU_add_test(s, "JSON output is escaped and exact", test_json);
}

TEST_REGISTER(trace, add_suite)
