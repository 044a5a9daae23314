/* test_proto.c - the wire codec: round trips, and every kind of malformed header */
#include "client/msp_proto.h"
#include "tests/test_util.h"

#include <msgpack.h>

#include <stdlib.h>
#include <string.h>

static uint8_t   wire[MSP_HEADER_MAX];
static msp_req_t reqs[MSP_BATCH_MAX];

static size_t encode_reqs(const msp_req_t *r, size_t n)
{
    msp_buf_t buf = {wire, sizeof(wire), 0, false};

    CU_ASSERT_EQUAL_FATAL(msp_encode_requests(r, n, &buf), MEMSVC_OK);
    return buf.len;
}

static void sample_requests(msp_req_t *r)
{
    memset(r, 0, 6 * sizeof(*r));
    r[0].op              = MSP_OP_HELLO;
    r[0].id              = 1;
    r[0].u.hello.version = MSP_VERSION;
    r[0].u.hello.job     = 7;
    r[0].u.hello.rank    = 3;
    r[0].u.hello.device  = 1;
    strcpy(r[0].u.hello.name, "trainer");
    r[1].op = MSP_OP_ALLOC;
    r[1].id = 2;
    strcpy(r[1].u.alloc.key, "L12.mb3.attn.qkv");
    r[1].u.alloc.size         = 1ull << 40;
    r[1].u.alloc.kind         = MEMSVC_KIND_ACTIVATION;
    r[1].u.alloc.tags         = MEMSVC_TAGS_NONE;
    r[1].u.alloc.tags.layer   = 12;
    r[1].u.alloc.recomputable = true;
    r[1].u.alloc.recompute_ns = 123456;
    r[2].op                   = MSP_OP_ACQUIRE;
    r[2].id                   = UINT64_MAX;
    r[2].u.h.handle           = 0x1234567890abcdefull;
    r[3].op                   = MSP_OP_HINT;
    r[3].id                   = 4;
    r[3].u.hint.type          = MEMSVC_HINT_UPCOMING;
    r[3].u.hint.step          = -1;
    r[3].u.hint.layer         = 5;
    r[3].u.hint.microbatch    = INT32_MIN;
    r[3].u.hint.phase         = MEMSVC_PHASE_BACKWARD;
    r[3].u.hint.num_handles   = 3;
    r[3].u.hint.handles[0]    = 1;
    r[3].u.hint.handles[1]    = 1ull << 33;
    r[3].u.hint.handles[2]    = UINT64_MAX;
    r[4].op                   = MSP_OP_LIST;
    r[4].id                   = 5;
    r[4].u.list.job           = 7;
    r[4].u.list.max           = MSP_LIST_MAX;
    r[5].op                   = MSP_OP_PING;
    r[5].id                   = 6;
}

static void test_request_round_trip(void)
{
    msp_req_t in[6], out[6];
    size_t    len, n, i;

    sample_requests(in);
    len = encode_reqs(in, 6);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 6, &n));
    CU_ASSERT_EQUAL_FATAL(n, 6);
    for (i = 0; i < n; i++) {
        /* LIST answers with a payload, so it must travel alone */
        CU_ASSERT_EQUAL(out[i].status, (in[i].op == MSP_OP_LIST) ? MEMSVC_ERR_PROTOCOL : MEMSVC_OK);
        CU_ASSERT_EQUAL(out[i].op, in[i].op);
        CU_ASSERT_EQUAL(out[i].id, in[i].id);
    }
    len = encode_reqs(&in[4], 1);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 6, &n));
    CU_ASSERT_EQUAL(out[0].status, MEMSVC_OK);
    CU_ASSERT_EQUAL(out[0].u.list.job, 7);
    CU_ASSERT_EQUAL(out[0].u.list.max, MSP_LIST_MAX);
    len = encode_reqs(in, 6);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 6, &n));
    CU_ASSERT_STRING_EQUAL(out[0].u.hello.name, "trainer");
    CU_ASSERT_EQUAL(out[0].u.hello.rank, 3);
    CU_ASSERT_STRING_EQUAL(out[1].u.alloc.key, "L12.mb3.attn.qkv");
    CU_ASSERT_EQUAL(out[1].u.alloc.size, 1ull << 40);
    CU_ASSERT_EQUAL(out[1].u.alloc.tags.layer, 12);
    CU_ASSERT_EQUAL(out[1].u.alloc.tags.expert, MEMSVC_TAG_NONE);
    CU_ASSERT_TRUE(out[1].u.alloc.recomputable);
    CU_ASSERT_EQUAL(out[1].u.alloc.recompute_ns, 123456);
    CU_ASSERT_EQUAL(out[2].u.h.handle, 0x1234567890abcdefull);
    CU_ASSERT_EQUAL(out[3].u.hint.num_handles, 3);
    CU_ASSERT_EQUAL(out[3].u.hint.handles[2], UINT64_MAX);
    CU_ASSERT_EQUAL(out[3].u.hint.microbatch, INT32_MIN);
    CU_ASSERT_EQUAL(out[3].u.hint.step, -1);
}

static void test_truncated_and_trailing(void)
{
    msp_req_t in[6];
    uint8_t   copy[4096];
    size_t    len, cut, n;

    sample_requests(in);
    len = encode_reqs(in, 6);
    CU_ASSERT_FATAL(len < sizeof(copy));
    memcpy(copy, wire, len);
    for (cut = 0; cut < len; cut++) {
        /* Every strict prefix is refused as a whole; nothing is read past the cut (ASan). */
        uint8_t *p = malloc(cut + 1);

        memcpy(p, copy, cut);
        CU_ASSERT_EQUAL(msp_decode_requests(p, cut, reqs, MSP_BATCH_MAX, &n), MEMSVC_ERR_PROTOCOL);
        CU_ASSERT_EQUAL(n, 0);
        free(p);
    }
    copy[len] = 0xc0; /* trailing nil */
    CU_ASSERT_EQUAL(msp_decode_requests(copy, len + 1, reqs, MSP_BATCH_MAX, &n),
                    MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(msp_decode_requests(NULL, 0, reqs, MSP_BATCH_MAX, &n), MEMSVC_ERR_PROTOCOL);
}

/* Pack a raw request header with msgpack-c directly (to build what our encoder refuses). */
typedef struct raw {
    msgpack_sbuffer sb;
    msgpack_packer  pk;
} raw_t;

static void raw_init(raw_t *r)
{
    msgpack_sbuffer_init(&r->sb);
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
}

static memsvc_status_t raw_decode_one(raw_t *r, msp_req_t *out)
{
    memsvc_status_t status;
    size_t          n;

    status = msp_decode_requests(r->sb.data, r->sb.size, reqs, MSP_BATCH_MAX, &n);
    if ((status == MEMSVC_OK) && (n >= 1)) {
        *out   = reqs[0];
        status = reqs[0].status;
    }
    msgpack_sbuffer_destroy(&r->sb);
    return status;
}

/* Version 2: one-way FREE/RELEASE/HINT, ALLOC with PIN; the bound covers what is encoded. */
static void test_oneway_and_pin(void)
{
    msp_req_t in[4], out[4];
    msp_buf_t buf = {wire, sizeof(wire), 0, false};
    raw_t     r;
    size_t    len, n, i, bound = MSP_MSG_OVERHEAD;

    memset(in, 0, sizeof(in));
    in[0].op          = MSP_OP_RELEASE;
    in[0].id          = 10;
    in[0].oneway      = true;
    in[0].u.h.handle  = 77;
    in[1].op          = MSP_OP_FREE;
    in[1].id          = 11;
    in[1].oneway      = true;
    in[2].op          = MSP_OP_HINT;
    in[2].id          = 12;
    in[2].oneway      = true;
    in[2].u.hint.type = MEMSVC_HINT_STEP_END;
    in[3].op          = MSP_OP_ALLOC;
    in[3].id          = 13;
    strcpy(in[3].u.alloc.key, "out");
    in[3].u.alloc.size = 4096;
    in[3].u.alloc.kind = MEMSVC_KIND_ACTIVATION;
    in[3].u.alloc.tags = MEMSVC_TAGS_NONE;
    in[3].u.alloc.pin  = true;
    len                = encode_reqs(in, 4);
    for (i = 0; i < 4; i++) {
        bound += msp_request_bound(&in[i]);
    }
    CU_ASSERT(len <= bound);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 4, &n));
    CU_ASSERT_EQUAL_FATAL(n, 4);
    for (i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(out[i].status, MEMSVC_OK);
        CU_ASSERT_TRUE(out[i].oneway);
        CU_ASSERT_EQUAL(out[i].op, in[i].op);
    }
    CU_ASSERT_EQUAL(out[0].u.h.handle, 77);
    CU_ASSERT_FALSE(out[3].oneway);
    CU_ASSERT_TRUE(out[3].u.alloc.pin);

    /* only FREE, RELEASE and HINT may be one-way: the encoder refuses, the decoder answers */
    in[0].op = MSP_OP_ACQUIRE;
    CU_ASSERT_EQUAL(msp_encode_requests(in, 1, &buf), MEMSVC_ERR_INVALID_PARAM);
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_uint32(&r.pk, MSP_OP_ACQUIRE | MSP_OP_ONEWAY);
    msgpack_pack_uint32(&r.pk, 44);
    msgpack_pack_uint64(&r.pk, 5);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out[0]), MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(out[0].id, 44);
    CU_ASSERT_TRUE(out[0].oneway); /* (so the error goes out at once) */
    /* unknown flag bits make the op unknown */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_uint32(&r.pk, MSP_OP_RELEASE | 0x200);
    msgpack_pack_uint32(&r.pk, 45);
    msgpack_pack_uint64(&r.pk, 5);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out[0]), MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(out[0].id, 45);
}

/* Version 2: ACQUIRE flags (optional: absent means 0), the reply's location. */
static void test_acquire_flags_and_location(void)
{
    uint8_t   out_wire[MSP_HEADER_MAX];
    msp_buf_t buf = {out_wire, sizeof(out_wire), 0, false};
    msp_req_t req = {.op = MSP_OP_ACQUIRE, .id = 9}, out;
    msp_rep_t rep = {.op = MSP_OP_ACQUIRE, .id = 9, .status = MEMSVC_RECOMPUTE}, back[1];
    raw_t     r;
    size_t    n;

    req.u.h.handle = 77;
    req.u.h.flags  = MSP_ACQ_IO | MSP_ACQ_WRITE;
    n              = encode_reqs(&req, 1);
    CU_ASSERT_EQUAL_FATAL(msp_decode_requests(wire, n, reqs, MSP_BATCH_MAX, &n), MEMSVC_OK);
    CU_ASSERT_EQUAL(reqs[0].status, MEMSVC_OK);
    CU_ASSERT_EQUAL(reqs[0].u.h.handle, 77);
    CU_ASSERT_EQUAL(reqs[0].u.h.flags, MSP_ACQ_IO | MSP_ACQ_WRITE);

    /* without the flags field (as version 1 sent it): flags 0 */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_uint32(&r.pk, MSP_OP_ACQUIRE);
    msgpack_pack_uint32(&r.pk, 10);
    msgpack_pack_uint32(&r.pk, 78);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_OK);
    CU_ASSERT_EQUAL(out.u.h.handle, 78);
    CU_ASSERT_EQUAL(out.u.h.flags, 0);

    /* unknown flag bits are refused; fields after the flags are skipped */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 4);
    msgpack_pack_uint32(&r.pk, MSP_OP_ACQUIRE);
    msgpack_pack_uint32(&r.pk, 11);
    msgpack_pack_uint32(&r.pk, 79);
    msgpack_pack_uint32(&r.pk, 0x80);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_INVALID_PARAM);
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 5);
    msgpack_pack_uint32(&r.pk, MSP_OP_ACQUIRE);
    msgpack_pack_uint32(&r.pk, 12);
    msgpack_pack_uint32(&r.pk, 80);
    msgpack_pack_uint32(&r.pk, MSP_ACQ_MAP);
    msgpack_pack_str(&r.pk, 2);
    msgpack_pack_str_body(&r.pk, "v3", 2);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_OK);
    CU_ASSERT_EQUAL(out.u.h.flags, MSP_ACQ_MAP);

    /* the reply carries region, offset and size */
    rep.u.acquire.region = 1;
    rep.u.acquire.offset = 1ull << 33;
    rep.u.acquire.size   = 4096;
    CU_ASSERT_EQUAL_FATAL(msp_encode_replies(&rep, 1, &buf), MEMSVC_OK);
    CU_ASSERT_EQUAL_FATAL(msp_decode_replies(out_wire, buf.len, back, 1, &n), MEMSVC_OK);
    CU_ASSERT_EQUAL(back[0].status, MEMSVC_RECOMPUTE);
    CU_ASSERT_EQUAL(back[0].u.acquire.region, 1);
    CU_ASSERT_EQUAL(back[0].u.acquire.offset, 1ull << 33);
    CU_ASSERT_EQUAL(back[0].u.acquire.size, 4096);
}

static void test_bad_requests_get_named_errors(void)
{
    msp_req_t out;
    raw_t     r;
    size_t    n;
    char      big[400];

    /* unknown operation: answered for its id */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 2);
    msgpack_pack_uint32(&r.pk, 99);
    msgpack_pack_uint32(&r.pk, 42);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(out.id, 42);

    /* wrong type: a string where the handle goes */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_uint32(&r.pk, MSP_OP_FREE);
    msgpack_pack_uint32(&r.pk, 43);
    msgpack_pack_str(&r.pk, 3);
    msgpack_pack_str_body(&r.pk, "abc", 3);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(out.id, 43);

    /* negative size */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 5);
    msgpack_pack_uint32(&r.pk, MSP_OP_READ);
    msgpack_pack_uint32(&r.pk, 44);
    msgpack_pack_uint32(&r.pk, 1);
    msgpack_pack_uint32(&r.pk, 0);
    msgpack_pack_int32(&r.pk, -5);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_INVALID_PARAM);

    /* oversized payload length */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 5);
    msgpack_pack_uint32(&r.pk, MSP_OP_WRITE);
    msgpack_pack_uint32(&r.pk, 45);
    msgpack_pack_uint32(&r.pk, 1);
    msgpack_pack_uint32(&r.pk, 0);
    msgpack_pack_uint64(&r.pk, MSP_DATA_MAX + 1);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_TOO_LARGE);

    /* offset + len wraps around */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 5);
    msgpack_pack_uint32(&r.pk, MSP_OP_READ);
    msgpack_pack_uint32(&r.pk, 46);
    msgpack_pack_uint32(&r.pk, 1);
    msgpack_pack_uint64(&r.pk, UINT64_MAX - 1);
    msgpack_pack_uint64(&r.pk, 16);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_OUT_OF_RANGE);

    /* key longer than MEMSVC_KEY_MAX */
    memset(big, 'k', sizeof(big));
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_uint32(&r.pk, MSP_OP_LOOKUP);
    msgpack_pack_uint32(&r.pk, 47);
    msgpack_pack_str(&r.pk, sizeof(big));
    msgpack_pack_str_body(&r.pk, big, sizeof(big));
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_TOO_LARGE);

    /* too few fields */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 3);
    msgpack_pack_uint32(&r.pk, MSP_OP_WRITE);
    msgpack_pack_uint32(&r.pk, 48);
    msgpack_pack_uint32(&r.pk, 1);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_PROTOCOL);

    /* a request that is not an array: skipped, id unknown (0) */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_map(&r.pk, 1);
    msgpack_pack_uint32(&r.pk, 1);
    msgpack_pack_uint32(&r.pk, 2);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(out.id, 0);

    /* kind out of range */
    raw_init(&r);
    msgpack_pack_array(&r.pk, 1);
    msgpack_pack_array(&r.pk, 14);
    msgpack_pack_uint32(&r.pk, MSP_OP_ALLOC);
    msgpack_pack_uint32(&r.pk, 49);
    msgpack_pack_str(&r.pk, 1);
    msgpack_pack_str_body(&r.pk, "k", 1);
    msgpack_pack_uint32(&r.pk, 4096);
    msgpack_pack_uint32(&r.pk, MEMSVC_KIND_COUNT);
    for (n = 0; n < 5; n++) {
        msgpack_pack_int32(&r.pk, -1);
    }
    msgpack_pack_false(&r.pk);
    msgpack_pack_uint32(&r.pk, 0);
    msgpack_pack_false(&r.pk);
    msgpack_pack_uint32(&r.pk, 0);
    CU_ASSERT_EQUAL(raw_decode_one(&r, &out), MEMSVC_ERR_INVALID_PARAM);

    /* a batch larger than MSP_BATCH_MAX, and a declared length far beyond the data */
    (void)msp_reply_has_payload;
    raw_init(&r);
    msgpack_pack_array(&r.pk, MSP_BATCH_MAX + 1);
    CU_ASSERT_EQUAL(msp_decode_requests(r.sb.data, r.sb.size, reqs, MSP_BATCH_MAX, &n),
                    MEMSVC_ERR_TOO_LARGE);
    msgpack_sbuffer_destroy(&r.sb);
    {
        static const uint8_t huge[] = {0x91, 0x93, 0x02, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff};

        CU_ASSERT_EQUAL(msp_decode_requests(huge, sizeof(huge), reqs, MSP_BATCH_MAX, &n),
                        MEMSVC_ERR_PROTOCOL);
    }
}

static void test_batch_one_bad_rest_good(void)
{
    msp_req_t in[3];
    size_t    len, n;

    memset(in, 0, sizeof(in));
    in[0].op = MSP_OP_RELEASE;
    in[0].id = 10;
    in[1].op = MSP_OP_WRITE; /* payload ops travel alone */
    in[1].id = 11;
    in[2].op = MSP_OP_FREE;
    in[2].id = 12;
    len      = encode_reqs(in, 3);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, reqs, MSP_BATCH_MAX, &n));
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(reqs[0].status, MEMSVC_OK);
    CU_ASSERT_EQUAL(reqs[1].status, MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(reqs[2].status, MEMSVC_OK);
    CU_ASSERT_EQUAL(reqs[2].id, 12);
}

static void test_garbage_never_crashes(void)
{
    uint8_t junk[512];
    size_t  n, len;
    int     i;

    for (i = 0; i < 20000; i++) {
        len = 1 + (size_t)(i % (int)sizeof(junk));
        test_fill(junk, len, (uint64_t)i);
        if (i & 1) {
            junk[0] = 0x91; /* a plausible start */
        }
        (void)msp_decode_requests(junk, len, reqs, MSP_BATCH_MAX, &n);
        CU_ASSERT(n <= MSP_BATCH_MAX);
    }
}

static void test_reply_round_trip(void)
{
    static memsvc_stats_t stats_in, stats_out;
    static msp_tensor_t   list_in[3], list_out[MSP_LIST_MAX];
    static uint8_t        body[MSP_BODY_MAX];
    msp_rep_t             in[5], out[5];
    msp_buf_t             buf = {wire, sizeof(wire), 0, false};
    msp_buf_t             bb  = {body, sizeof(body), 0, false};
    uint32_t              count;
    size_t                n, i;

    memset(in, 0, sizeof(in));
    in[0].op                  = MSP_OP_HELLO;
    in[0].id                  = 1;
    in[0].u.hello.version     = MSP_VERSION;
    in[0].u.hello.session     = 99;
    in[0].u.hello.num_devices = 8;
    strcpy(in[0].u.hello.transport, "tcp/lo.0(am)");
    in[1].op     = MSP_OP_ACQUIRE;
    in[1].id     = 2;
    in[1].status = MEMSVC_RECOMPUTE;
    in[2].op     = MSP_OP_FREE;
    in[2].id     = 3;
    in[2].status = MEMSVC_ERR_ACCESS;
    strcpy(in[2].msg, "tensor belongs to another job");
    in[3].op           = MSP_OP_STATS;
    in[3].id           = 4;
    in[3].plen         = 1234;
    in[4].op           = MSP_OP_LIST;
    in[4].id           = 5;
    in[4].plen         = 77;
    in[4].u.list.count = 3;
    in[4].u.list.next  = 3;
    TEST_ASSERT_OK(msp_encode_replies(in, 5, &buf));
    TEST_ASSERT_OK(msp_decode_replies(wire, buf.len, out, 5, &n));
    CU_ASSERT_EQUAL_FATAL(n, 5);
    CU_ASSERT_STRING_EQUAL(out[0].u.hello.transport, "tcp/lo.0(am)");
    CU_ASSERT_EQUAL(out[0].u.hello.num_devices, 8);
    CU_ASSERT_EQUAL(out[1].status, MEMSVC_RECOMPUTE);
    CU_ASSERT_EQUAL(out[2].status, MEMSVC_ERR_ACCESS);
    CU_ASSERT_STRING_EQUAL(out[2].msg, "tensor belongs to another job");
    CU_ASSERT_EQUAL(out[3].plen, 1234);
    CU_ASSERT_EQUAL(out[4].plen, 77);
    CU_ASSERT_EQUAL(out[4].u.list.count, 3);
    /* every prefix of a reply message is refused */
    for (i = 0; i < buf.len; i++) {
        CU_ASSERT_NOT_EQUAL(msp_decode_replies(wire, i, out, 5, &n), MEMSVC_OK);
    }

    /* bodies */
    strcpy(stats_in.node, "tiny");
    strcpy(stats_in.transport, "tcp/lo.0");
    stats_in.num_devices                              = 2;
    stats_in.sessions                                 = 3;
    stats_in.errors                                   = 17;
    stats_in.dev[1].largest_free                      = 12345;
    stats_in.dev[1].fragmentation                     = 0.25;
    stats_in.dev[1].tensors_by_kind[MEMSVC_KIND_GRAD] = 5;
    stats_in.dev[1].fragmented_events                 = 9;
    TEST_ASSERT_OK(msp_encode_stats(&stats_in, &bb));
    TEST_ASSERT_OK(msp_decode_stats(body, bb.len, &stats_out));
    CU_ASSERT_EQUAL(stats_out.num_devices, 2);
    CU_ASSERT_EQUAL(stats_out.errors, 17);
    CU_ASSERT_EQUAL(stats_out.dev[1].largest_free, 12345);
    CU_ASSERT_DOUBLE_EQUAL(stats_out.dev[1].fragmentation, 0.25, 1e-12);
    CU_ASSERT_EQUAL(stats_out.dev[1].tensors_by_kind[MEMSVC_KIND_GRAD], 5);
    CU_ASSERT_EQUAL(stats_out.dev[1].fragmented_events, 9);
    CU_ASSERT_STRING_EQUAL(stats_out.transport, "tcp/lo.0");
    for (i = 0; i < bb.len; i++) {
        CU_ASSERT_NOT_EQUAL(msp_decode_stats(body, i, &stats_out), MEMSVC_OK);
    }
    for (i = 0; i < 3; i++) {
        list_in[i].handle = 100 + i;
        snprintf(list_in[i].key, sizeof(list_in[i].key), "key%zu", i);
        list_in[i].tags  = MEMSVC_TAGS_NONE;
        list_in[i].state = MEMSVC_STATE_ON_HOST;
    }
    TEST_ASSERT_OK(msp_encode_list(list_in, 3, &bb));
    TEST_ASSERT_OK(msp_decode_list(body, bb.len, list_out, MSP_LIST_MAX, &count));
    CU_ASSERT_EQUAL(count, 3);
    CU_ASSERT_STRING_EQUAL(list_out[2].key, "key2");
    CU_ASSERT_EQUAL(list_out[2].state, MEMSVC_STATE_ON_HOST);
    CU_ASSERT_EQUAL(msp_decode_list(body, bb.len, list_out, 2, &count), MEMSVC_ERR_TOO_LARGE);
    for (i = 0; i < bb.len; i++) {
        CU_ASSERT_NOT_EQUAL(msp_decode_list(body, i, list_out, MSP_LIST_MAX, &count), MEMSVC_OK);
    }
    /* a full page of tensors with the longest keys fits a body */
    for (i = 0; i < MSP_LIST_MAX; i++) {
        memset(list_out[i].key, 'k', MEMSVC_KEY_MAX);
        list_out[i].key[MEMSVC_KEY_MAX] = '\0';
        list_out[i].handle              = UINT64_MAX;
        list_out[i].size                = UINT64_MAX;
    }
    TEST_ASSERT_OK(msp_encode_list(list_out, MSP_LIST_MAX, &bb));
    stats_in.num_devices = MEMSVC_MAX_DEVICES;
    for (i = 0; i < MEMSVC_MAX_DEVICES; i++) {
        memset(&stats_in.dev[i], 0xff, sizeof(stats_in.dev[i]));
        stats_in.dev[i].fragmentation = 0.5;
    }
    TEST_ASSERT_OK(msp_encode_stats(&stats_in, &bb));
}

/* Version 3: HELLO's nonce, the challenge in its reply, AUTH both ways; older HELLOs unchanged. */
static void test_auth_fields(void)
{
    msp_req_t in[2], out[2];
    msp_rep_t rin[2], rout[2];
    msp_buf_t buf = {wire, sizeof(wire), 0, false};
    size_t    n, len, plain;
    unsigned  i;

    memset(in, 0, sizeof(in));
    in[0].op              = MSP_OP_HELLO;
    in[0].id              = 1;
    in[0].u.hello.version = MSP_VERSION;
    in[0].u.hello.job     = 4;
    strcpy(in[0].u.hello.name, "t");
    plain = encode_reqs(in, 1);
    in[0].u.hello.has_nonce = true;
    for (i = 0; i < MSP_NONCE_BYTES; i++) {
        in[0].u.hello.nonce[i] = (uint8_t)(i * 7 + 1);
    }
    in[1].op = MSP_OP_AUTH;
    in[1].id = 2;
    memset(in[1].u.auth.proof, 0xab, MSP_PROOF_BYTES);
    len = encode_reqs(in, 1);
    CU_ASSERT_EQUAL(len, plain + 2 + MSP_NONCE_BYTES); /* one bin 8 more */
    CU_ASSERT(len <= msp_request_bound(&in[0]));
    len = encode_reqs(in, 2);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 2, &n));
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(out[0].status, MEMSVC_OK);
    CU_ASSERT(out[0].u.hello.has_nonce);
    CU_ASSERT_EQUAL(memcmp(out[0].u.hello.nonce, in[0].u.hello.nonce, MSP_NONCE_BYTES), 0);
    CU_ASSERT_EQUAL(out[1].status, MEMSVC_OK);
    CU_ASSERT_EQUAL(out[1].op, MSP_OP_AUTH);
    CU_ASSERT_EQUAL(memcmp(out[1].u.auth.proof, in[1].u.auth.proof, MSP_PROOF_BYTES), 0);

    /* a version 2 HELLO with an extra element: skipped, no nonce */
    in[0].u.hello.version = 2;
    len                   = encode_reqs(in, 1);
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 1, &n));
    CU_ASSERT_EQUAL(out[0].status, MEMSVC_OK);
    CU_ASSERT(!out[0].u.hello.has_nonce);

    /* a nonce of another type is a malformed request (the message still decodes) */
    in[0].u.hello.version = MSP_VERSION;
    len                   = encode_reqs(in, 1);
    CU_ASSERT_EQUAL_FATAL(wire[len - MSP_NONCE_BYTES - 2], 0xc4); /* bin 8 */
    wire[len - MSP_NONCE_BYTES - 2] = 0xd9;                       /* str 8, same length */
    TEST_ASSERT_OK(msp_decode_requests(wire, len, out, 1, &n));
    CU_ASSERT_EQUAL(out[0].status, MEMSVC_ERR_PROTOCOL);

    /* replies: the daemon's challenge after HELLO's fields, its proof in AUTH's */
    memset(rin, 0, sizeof(rin));
    rin[0].op              = MSP_OP_HELLO;
    rin[0].id              = 1;
    rin[0].u.hello.version = MSP_VERSION;
    rin[0].u.hello.session = 5;
    rin[0].u.hello.auth    = true;
    memset(rin[0].u.hello.nonce, 0x5c, MSP_NONCE_BYTES);
    rin[1].op = MSP_OP_AUTH;
    rin[1].id = 2;
    memset(rin[1].u.auth.proof, 0x3d, MSP_PROOF_BYTES);
    TEST_ASSERT_OK(msp_encode_replies(rin, 2, &buf));
    TEST_ASSERT_OK(msp_decode_replies(wire, buf.len, rout, 2, &n));
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT(rout[0].u.hello.auth);
    CU_ASSERT_EQUAL(memcmp(rout[0].u.hello.nonce, rin[0].u.hello.nonce, MSP_NONCE_BYTES), 0);
    CU_ASSERT_EQUAL(memcmp(rout[1].u.auth.proof, rin[1].u.auth.proof, MSP_PROOF_BYTES), 0);
    rin[0].u.hello.auth = false;
    TEST_ASSERT_OK(msp_encode_replies(rin, 1, &buf));
    TEST_ASSERT_OK(msp_decode_replies(wire, buf.len, rout, 1, &n));
    CU_ASSERT(!rout[0].u.hello.auth);
    /* the new statuses travel */
    rin[1].status = MEMSVC_ERR_AUTH;
    strcpy(rin[1].msg, "wrong secret");
    TEST_ASSERT_OK(msp_encode_replies(&rin[1], 1, &buf));
    TEST_ASSERT_OK(msp_decode_replies(wire, buf.len, rout, 1, &n));
    CU_ASSERT_EQUAL(rout[0].status, MEMSVC_ERR_AUTH);
    CU_ASSERT_STRING_EQUAL(rout[0].msg, "wrong secret");
}

/* PEERS: request, reply and body round-trip; the decoder refuses what is out of bounds. */
static void test_peers_round_trip(void)
{
    static uint8_t        body[MSP_BODY_MAX];
    static memsvc_peer_info_t in[MSP_PEERS_MAX], out[MSP_PEERS_MAX];
    memsvc_cluster_info_t self = {.boot_id = 0xfeedull, .num_peers = MSP_PEERS_MAX + 5}, got;
    msp_req_t             req = {.op = MSP_OP_PEERS, .id = 9, .u.peers.start = 64};
    msp_rep_t             rep = {.op = MSP_OP_PEERS, .id = 9, .plen = 300}, rout;
    msp_buf_t             bb  = {body, sizeof(body), 0, false};
    msp_buf_t             buf = {wire, sizeof(wire), 0, false};
    uint32_t              count, i;
    size_t                n;

    TEST_ASSERT_OK(msp_decode_requests(wire, encode_reqs(&req, 1), reqs, MSP_BATCH_MAX, &n));
    CU_ASSERT_EQUAL(reqs[0].op, MSP_OP_PEERS);
    CU_ASSERT_EQUAL(reqs[0].u.peers.start, 64);
    rep.u.list.next  = 128;
    rep.u.list.count = MSP_PEERS_MAX;
    TEST_ASSERT_OK(msp_encode_replies(&rep, 1, &buf));
    TEST_ASSERT_OK(msp_decode_replies(wire, buf.len, &rout, 1, &n));
    CU_ASSERT_EQUAL(rout.plen, 300);
    CU_ASSERT_EQUAL(rout.u.list.next, 128);
    CU_ASSERT(msp_reply_has_payload(MSP_OP_PEERS));

    strcpy(self.node, "node-7");
    memset(self.cluster_hash, 'f', 64);
    for (i = 0; i < MSP_PEERS_MAX; i++) {
        snprintf(in[i].name, sizeof(in[i].name), "node-%026u", i);
        snprintf(in[i].address, sizeof(in[i].address), "[fe80::1234:5678:9abc:def0]:%u", 60000 + i);
        memset(in[i].reason, 'r', sizeof(in[i].reason) - 1);
        in[i].state        = (memsvc_peer_state_t)(i % MEMSVC_PEER_STATE_COUNT);
        in[i].heard_ago_ns = (i == 0) ? UINT64_MAX : i;
        in[i].boot_id      = UINT64_MAX - i;
        in[i].restarts     = i;
        in[i].hbm_total    = 1ull << 40;
        in[i].uptime_ns    = 5;
    }
    /* the largest page there can be (64 peers, every string full) fits a body */
    TEST_ASSERT_OK(msp_encode_peers(&self, in, MSP_PEERS_MAX, &bb));
    TEST_ASSERT_OK(msp_decode_peers(body, bb.len, &got, out, MSP_PEERS_MAX, &count));
    CU_ASSERT_EQUAL(count, MSP_PEERS_MAX);
    CU_ASSERT_STRING_EQUAL(got.node, "node-7");
    CU_ASSERT_EQUAL(got.num_peers, MSP_PEERS_MAX + 5);
    CU_ASSERT_EQUAL(got.boot_id, 0xfeedull);
    CU_ASSERT_EQUAL(memcmp(in, out, sizeof(in)), 0);
    CU_ASSERT_EQUAL(msp_decode_peers(body, bb.len, &got, out, 3, &count), MEMSVC_ERR_TOO_LARGE);
    for (i = 0; i < 200; i++) {
        CU_ASSERT_NOT_EQUAL(msp_decode_peers(body, i, &got, out, MSP_PEERS_MAX, &count),
                            MEMSVC_OK);
    }
    /* a state out of range is a protocol error */
    in[0].state = MEMSVC_PEER_STATE_COUNT;
    TEST_ASSERT_OK(msp_encode_peers(&self, in, 1, &bb));
    CU_ASSERT_EQUAL(msp_decode_peers(body, bb.len, &got, out, MSP_PEERS_MAX, &count),
                    MEMSVC_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(msp_encode_peers(&self, in, MSP_PEERS_MAX + 1, &bb), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_STRING_EQUAL(memsvc_peer_state_name(MEMSVC_PEER_REFUSED), "refused");
    CU_ASSERT_STRING_EQUAL(memsvc_peer_state_name(MEMSVC_PEER_STATE_COUNT), "unknown");
}

static void test_encoder_limits(void)
{
    msp_buf_t small = {wire, 8, 0, false};
    msp_req_t in[6];

    sample_requests(in);
    CU_ASSERT_EQUAL(msp_encode_requests(in, 6, &small), MEMSVC_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(msp_encode_requests(in, 0, &small), MEMSVC_ERR_INVALID_PARAM);
    in[0].op  = 77;
    small.cap = sizeof(wire);
    CU_ASSERT_EQUAL(msp_encode_requests(in, 1, &small), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_STRING_EQUAL(msp_op_name(MSP_OP_ACQUIRE), "acquire");
    CU_ASSERT_STRING_EQUAL(msp_op_name(0), "unknown");
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("proto", NULL, NULL);

    CU_add_test(s, "requests round-trip", test_request_round_trip);
    CU_add_test(s, "one-way requests and pinned allocs (version 2)", test_oneway_and_pin);
    CU_add_test(s, "truncated headers and trailing bytes are refused", test_truncated_and_trailing);
    CU_add_test(s, "bad requests get named errors", test_bad_requests_get_named_errors);
    CU_add_test(s, "ACQUIRE flags and the location in its reply", test_acquire_flags_and_location);
    CU_add_test(s, "one bad request in a batch spoils only itself", test_batch_one_bad_rest_good);
    CU_add_test(s, "garbage never crashes the decoder", test_garbage_never_crashes);
    CU_add_test(s, "replies round-trip (stats, list, errors)", test_reply_round_trip);
    CU_add_test(s, "encoder limits", test_encoder_limits);
    CU_add_test(s, "version 3: nonce, challenge and proofs (AUTH)", test_auth_fields);
    CU_add_test(s, "PEERS request, reply and body round-trip", test_peers_round_trip);
}

TEST_REGISTER(proto, add_suite)
