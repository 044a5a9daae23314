/* test_badinput.c - a raw UCX peer sends memsvcd malformed messages; each gets a named error */
#include "client/memsvc.h"
#include "client/msp_proto.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <msgpack.h>

#include <stdlib.h>
#include <string.h>

static const char *const tiny_backed[] = {"--node", "tiny", "--memory", "backed", NULL};

/* Send hdr (+payload) and expect one reply with `want` status. */
static void expect(integ_raw_t *raw, const void *hdr, size_t hlen, const void *payload, size_t plen,
                   memsvc_status_t want, uint64_t want_id)
{
    memsvc_status_t got      = MEMSVC_OK;
    uint64_t        id       = 0;
    char            msg[160] = "";

    CU_ASSERT_EQUAL_FATAL(
        integ_raw_call(raw, hdr, hlen, payload, plen, &got, &id, msg, sizeof(msg)), MEMSVC_OK);
    CU_ASSERT_EQUAL(got, want);
    CU_ASSERT_EQUAL(id, want_id);
    CU_ASSERT(msg[0] != '\0'); /* every error says what was wrong */
}

/* One request [op, id, fields...] packed by hand. */
typedef struct hand {
    msgpack_sbuffer sb;
    msgpack_packer  pk;
} hand_t;

static msgpack_packer *hand_begin(hand_t *h, uint32_t op, uint64_t id, uint32_t nfields)
{
    msgpack_sbuffer_init(&h->sb);
    msgpack_packer_init(&h->pk, &h->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&h->pk, 1);
    msgpack_pack_array(&h->pk, 2 + nfields);
    msgpack_pack_uint32(&h->pk, op);
    msgpack_pack_uint64(&h->pk, id);
    return &h->pk;
}

static void test_raw_bad_messages(void)
{
    integ_daemon_t  d;
    integ_raw_t    *raw;
    memsvc_conn_h   conn;
    memsvc_handle_t th;
    uint8_t         hdr[256], junk[512], *big;
    uint8_t         want[512], back[512];
    size_t          len;
    hand_t          h;
    msgpack_packer *pk;
    int             i;

    if (!integ_daemon_start(&d, tiny_backed)) {
        CU_FAIL_FATAL("memsvcd did not start");
    }
    /* A good client with data, to check after the abuse. */
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    test_fill(want, sizeof(want), 77);
    TEST_ASSERT_OK(memsvc_alloc(conn, "precious", sizeof(want), NULL, &th));
    TEST_ASSERT_OK(memsvc_write(conn, th, 0, want, sizeof(want)));

    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    /* before the handshake */
    pk = hand_begin(&h, MSP_OP_PING, 5, 0);
    expect(raw, h.sb.data, h.sb.size, NULL, 0, MEMSVC_ERR_PROTOCOL, 5);
    msgpack_sbuffer_destroy(&h.sb);
    /* an incompatible version */
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION + 41, 1, 0);
    expect(raw, hdr, len, NULL, 0, MEMSVC_ERR_VERSION, 1);
    /* now a good handshake */
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 2, 0);
    {
        memsvc_status_t got;

        TEST_ASSERT_OK(integ_raw_call(raw, hdr, len, NULL, 0, &got, NULL, NULL, 0));
        CU_ASSERT_EQUAL(got, MEMSVC_OK);
    }
    expect(raw, hdr, len, NULL, 0, MEMSVC_ERR_PROTOCOL, 1); /* HELLO twice */

    /* garbage and truncated headers: answered with id 0 */
    memset(junk, 0xc1, sizeof(junk)); /* 0xc1 is never valid msgpack */
    expect(raw, junk, 16, NULL, 0, MEMSVC_ERR_PROTOCOL, 0);
    expect(raw, hdr, len - 3, NULL, 0, MEMSVC_ERR_PROTOCOL, 0);
    /* unknown operation */
    pk = hand_begin(&h, 200, 6, 0);
    expect(raw, h.sb.data, h.sb.size, NULL, 0, MEMSVC_ERR_PROTOCOL, 6);
    msgpack_sbuffer_destroy(&h.sb);
    /* wrong type: a string for a handle */
    pk = hand_begin(&h, MSP_OP_ACQUIRE, 7, 1);
    msgpack_pack_str(pk, 2);
    msgpack_pack_str_body(pk, "hi", 2);
    expect(raw, h.sb.data, h.sb.size, NULL, 0, MEMSVC_ERR_PROTOCOL, 7);
    msgpack_sbuffer_destroy(&h.sb);
    /* oversized length */
    pk = hand_begin(&h, MSP_OP_READ, 8, 3);
    msgpack_pack_uint64(pk, th);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, MSP_DATA_MAX * 4);
    expect(raw, h.sb.data, h.sb.size, NULL, 0, MEMSVC_ERR_TOO_LARGE, 8);
    msgpack_sbuffer_destroy(&h.sb);
    /* a foreign handle (job 1's tensor, we are job 2): as if it did not exist */
    pk = hand_begin(&h, MSP_OP_READ, 9, 3);
    msgpack_pack_uint64(pk, th);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, 16);
    expect(raw, h.sb.data, h.sb.size, NULL, 0, MEMSVC_ERR_NOT_FOUND, 9);
    msgpack_sbuffer_destroy(&h.sb);
    /* a write whose payload does not match its header, small (eager) and large (rendezvous) */
    big = calloc(1, 4u << 20);
    CU_ASSERT_FATAL(big != NULL);
    {
        memsvc_status_t got;

        pk = hand_begin(&h, MSP_OP_ALLOC, 10, 12);
        msgpack_pack_str(pk, 4);
        msgpack_pack_str_body(pk, "mine", 4);
        msgpack_pack_uint64(pk, 8u << 20);
        msgpack_pack_uint32(pk, MEMSVC_KIND_ACTIVATION);
        for (i = 0; i < 5; i++) {
            msgpack_pack_int32(pk, -1);
        }
        msgpack_pack_false(pk);
        msgpack_pack_uint64(pk, 0);
        msgpack_pack_false(pk);
        msgpack_pack_uint32(pk, 0);
        TEST_ASSERT_OK(integ_raw_call(raw, h.sb.data, h.sb.size, NULL, 0, &got, NULL, NULL, 0));
        CU_ASSERT_EQUAL_FATAL(got, MEMSVC_OK);
        msgpack_sbuffer_destroy(&h.sb);
        CU_ASSERT_EQUAL(memsvc_lookup(conn, "mine", &(memsvc_tensor_info_t){0}),
                        MEMSVC_ERR_NOT_FOUND);
    }
    pk = hand_begin(&h, MSP_OP_WRITE, 11, 3);
    msgpack_pack_uint64(pk, th);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, 100);
    expect(raw, h.sb.data, h.sb.size, big, 50, MEMSVC_ERR_NOT_FOUND, 11); /* foreign first */
    msgpack_sbuffer_destroy(&h.sb);
    /* payload on a request that carries none */
    pk = hand_begin(&h, MSP_OP_PING, 12, 0);
    expect(raw, h.sb.data, h.sb.size, big, 4u << 20, MEMSVC_ERR_PROTOCOL, 12);
    msgpack_sbuffer_destroy(&h.sb);
    /* a header larger than any the protocol allows */
    {
        uint8_t *huge = calloc(1, MSP_HEADER_MAX + 100);

        huge[0] = 0x91;
        expect(raw, huge, MSP_HEADER_MAX + 100, NULL, 0, MEMSVC_ERR_TOO_LARGE, 0);
        free(huge);
    }
    /* a flood of random junk */
    for (i = 0; i < 200; i++) {
        memsvc_status_t got;

        test_fill(junk, sizeof(junk), (uint64_t)i);
        junk[0] = (i & 1) ? 0x91 : junk[0];
        CU_ASSERT_EQUAL(
            integ_raw_call(raw, junk, 1 + (size_t)(i % 500), NULL, 0, &got, NULL, NULL, 0),
            MEMSVC_OK);
        CU_ASSERT(got < 0);
    }
    free(big);
    integ_raw_close(raw);

    /* the daemon still serves, and the other job's bytes are intact */
    CU_ASSERT_EQUAL(memsvc_ping(conn, NULL), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_read(conn, th, 0, back, sizeof(back)));
    CU_ASSERT(memcmp(back, want, sizeof(want)) == 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

static void test_write_payload_mismatch_own_tensor(void)
{
    integ_daemon_t  d;
    integ_raw_t    *raw;
    uint8_t         hdr[256], *buf;
    size_t          len;
    hand_t          h;
    msgpack_packer *pk;
    memsvc_status_t got;
    uint64_t        handle;
    int             i;

    if (!integ_daemon_start(&d, tiny_backed)) {
        CU_FAIL_FATAL("memsvcd did not start");
    }
    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 4, 0);
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, len, NULL, 0, &got, NULL, NULL, 0));
    CU_ASSERT_EQUAL_FATAL(got, MEMSVC_OK);
    /* allocate through the raw peer, then read the handle with a lookup via a real client */
    pk = hand_begin(&h, MSP_OP_ALLOC, 2, 12);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "t", 1);
    msgpack_pack_uint64(pk, 1u << 20);
    msgpack_pack_uint32(pk, MEMSVC_KIND_ACTIVATION);
    for (i = 0; i < 5; i++) {
        msgpack_pack_int32(pk, -1);
    }
    msgpack_pack_false(pk);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_false(pk);
    msgpack_pack_uint32(pk, 0);
    TEST_ASSERT_OK(integ_raw_call(raw, h.sb.data, h.sb.size, NULL, 0, &got, NULL, NULL, 0));
    CU_ASSERT_EQUAL_FATAL(got, MEMSVC_OK);
    msgpack_sbuffer_destroy(&h.sb);
    {
        memsvc_conn_h        conn;
        memsvc_tensor_info_t info;

        TEST_ASSERT_OK(integ_connect(&d, 4, 1, &conn));
        TEST_ASSERT_OK(memsvc_lookup(conn, "t", &info));
        handle = info.handle;
        memsvc_close(conn);
    }
    buf = calloc(1, 1u << 20);
    CU_ASSERT_FATAL(buf != NULL);
    /* header says 100 bytes, 50 come (eager) / 1 MiB comes (rendezvous) */
    pk = hand_begin(&h, MSP_OP_WRITE, 3, 3);
    msgpack_pack_uint64(pk, handle);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, 100);
    expect(raw, h.sb.data, h.sb.size, buf, 50, MEMSVC_ERR_PROTOCOL, 3);
    expect(raw, h.sb.data, h.sb.size, buf, 1u << 20, MEMSVC_ERR_PROTOCOL, 3);
    msgpack_sbuffer_destroy(&h.sb);
    /* beyond the end */
    pk = hand_begin(&h, MSP_OP_WRITE, 4, 3);
    msgpack_pack_uint64(pk, handle);
    msgpack_pack_uint64(pk, (1u << 20) - 10);
    msgpack_pack_uint64(pk, 100);
    expect(raw, h.sb.data, h.sb.size, buf, 100, MEMSVC_ERR_OUT_OF_RANGE, 4);
    msgpack_sbuffer_destroy(&h.sb);
    /* and a matching write works (rendezvous-sized) */
    pk = hand_begin(&h, MSP_OP_WRITE, 5, 3);
    msgpack_pack_uint64(pk, handle);
    msgpack_pack_uint64(pk, 0);
    msgpack_pack_uint64(pk, 1u << 20);
    TEST_ASSERT_OK(integ_raw_call(raw, h.sb.data, h.sb.size, buf, 1u << 20, &got, NULL, NULL, 0));
    CU_ASSERT_EQUAL(got, MEMSVC_OK);
    msgpack_sbuffer_destroy(&h.sb);
    free(buf);
    integ_raw_close(raw);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* Valid requests with random bytes flipped: every one is answered, nothing else breaks. */
static void test_mutated_requests(void)
{
    integ_daemon_t  d;
    integ_raw_t    *raw;
    memsvc_conn_h   conn;
    memsvc_handle_t th;
    msp_req_t       req;
    msp_buf_t       buf;
    uint8_t         hdr[MSP_HEADER_MAX], rnd[8];
    uint8_t         want[256], back[256];
    memsvc_status_t got;
    uint64_t        target;
    size_t          len;
    unsigned        i, answered = 0;

    if (!integ_daemon_start(&d, tiny_backed)) {
        CU_FAIL_FATAL("memsvcd did not start");
    }
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    test_fill(want, sizeof(want), 3);
    TEST_ASSERT_OK(memsvc_alloc(conn, "precious", sizeof(want), NULL, &th));
    TEST_ASSERT_OK(memsvc_write(conn, th, 0, want, sizeof(want)));
    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    len = integ_hello(hdr, sizeof(hdr), MSP_VERSION, 2, 9); /* job 2: "precious" is out of reach */
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, len, NULL, 0, &got, NULL, NULL, 0));
    {
        /* a tensor of job 2 for the mutated requests to aim at */
        memsvc_conn_h        c2;
        memsvc_tensor_info_t info;

        TEST_ASSERT_OK(integ_connect(&d, 2, 9, &c2));
        memset(&req, 0, sizeof(req));
        req.op = MSP_OP_ALLOC;
        req.id = 1;
        snprintf(req.u.alloc.key, sizeof(req.u.alloc.key), "target");
        req.u.alloc.size = 4096;
        req.u.alloc.tags = MEMSVC_TAGS_NONE;
        buf              = (msp_buf_t){hdr, sizeof(hdr), 0, false};
        TEST_ASSERT_OK(msp_encode_requests(&req, 1, &buf));
        TEST_ASSERT_OK(integ_raw_call(raw, hdr, buf.len, NULL, 0, &got, NULL, NULL, 0));
        TEST_ASSERT_OK(memsvc_lookup(c2, "target", &info));
        target = info.handle;
        memsvc_close(c2);
    }
    for (i = 0; i < 600; i++) {
        memset(&req, 0, sizeof(req));
        req.id = i + 100;
        req.op = 2 + (i % (MSP_OP_COUNT - 2)); /* every op but HELLO */
        switch (req.op) {
        case MSP_OP_ALLOC:
            snprintf(req.u.alloc.key, sizeof(req.u.alloc.key), "m%u", i);
            req.u.alloc.size = 4096;
            req.u.alloc.tags = MEMSVC_TAGS_NONE;
            break;
        case MSP_OP_LOOKUP:
            snprintf(req.u.lookup.key, sizeof(req.u.lookup.key), "precious");
            break;
        case MSP_OP_LIST:
            req.u.list.job = 1;
            req.u.list.max = 4;
            break;
        case MSP_OP_WRITE:
        case MSP_OP_READ:
            req.u.io.handle = target;
            req.u.io.len    = 16;
            break;
        default:
            req.u.h.handle = target;
            break;
        }
        buf = (msp_buf_t){hdr, sizeof(hdr), 0, false};
        TEST_ASSERT_OK(msp_encode_requests(&req, 1, &buf));
        test_fill(rnd, sizeof(rnd), i);
        hdr[rnd[0] % buf.len] ^= (uint8_t)(1u << (rnd[1] % 8));
        if (i & 1) {
            hdr[rnd[2] % buf.len] = rnd[3];
        }
        if (integ_raw_call(raw, hdr, buf.len, (req.op == MSP_OP_WRITE) ? back : NULL,
                           (req.op == MSP_OP_WRITE) ? 16 : 0, &got, NULL, NULL, 0) == MEMSVC_OK) {
            answered++;
            CU_ASSERT((got > MEMSVC_ERR_LAST) && (got <= MEMSVC_RECOMPUTE));
        }
    }
    CU_ASSERT_EQUAL(answered, 600);
    integ_raw_close(raw);
    CU_ASSERT_EQUAL(memsvc_ping(conn, NULL), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_read(conn, th, 0, back, sizeof(back)));
    CU_ASSERT(memcmp(back, want, sizeof(want)) == 0);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_badinput", NULL, NULL);

    CU_add_test(s, "raw peer: malformed, foreign, oversized, unknown", test_raw_bad_messages);
    CU_add_test(s, "raw peer: write payloads that do not match",
                test_write_payload_mismatch_own_tensor);
    CU_add_test(s, "raw peer: 600 mutated requests", test_mutated_requests);
}

TEST_REGISTER(service_badinput, add_suite)
