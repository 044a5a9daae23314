/* msp_proto.c - msgpack encoding (msgpack-c packer) and bounded decoding of memsvc messages */
#include "client/msp_proto.h"

#include <msgpack.h>

#include <string.h>

/* Decoders: return the status of a step that failed (each has a local `status`). */
#define RD(call)                                                                                   \
    do {                                                                                           \
        status = (call);                                                                           \
        if (status != MEMSVC_OK) {                                                                 \
            return status;                                                                         \
        }                                                                                          \
    } while (0)

/*
 * Decoding uses a small cursor reader instead of msgpack-c's unpacker: the unpacker
 * allocates storage for the element count an array *declares*, so a 5-byte header could ask
 * for gigabytes. The reader below never allocates and never reads past the end.
 */

typedef struct msp_rd {
    const uint8_t *p;
    const uint8_t *end;
} msp_rd_t;

static const char *const op_names[MSP_OP_COUNT] = {
    [MSP_OP_HELLO] = "hello",     [MSP_OP_ALLOC] = "alloc",     [MSP_OP_FREE] = "free",
    [MSP_OP_ACQUIRE] = "acquire", [MSP_OP_RELEASE] = "release", [MSP_OP_WRITE] = "write",
    [MSP_OP_READ] = "read",       [MSP_OP_LOOKUP] = "lookup",   [MSP_OP_HINT] = "hint",
    [MSP_OP_STATS] = "stats",     [MSP_OP_LIST] = "list",       [MSP_OP_PING] = "ping",
    [MSP_OP_AUTH] = "auth",
    [MSP_OP_PEERS] = "peers",
    [MSP_OP_EVICT] = "evict",
    [MSP_OP_COMMIT] = "commit",
};

const char *msp_op_name(uint32_t op)
{
    if ((op == 0) || (op >= MSP_OP_COUNT)) {
        return "unknown";
    }
    return op_names[op];
}

bool msp_op_has_payload(uint32_t op)
{
    return (op == MSP_OP_WRITE);
}

bool msp_reply_has_payload(uint32_t op)
{
    return (op == MSP_OP_READ) || (op == MSP_OP_STATS) || (op == MSP_OP_LIST) ||
           (op == MSP_OP_PEERS);
}

bool msp_op_oneway_ok(uint32_t op)
{
    return (op == MSP_OP_FREE) || (op == MSP_OP_RELEASE) || (op == MSP_OP_HINT);
}

size_t msp_request_bound(const msp_req_t *r)
{
    size_t n = 3 + 5 + 9; /* array header, op (with flags), id */

    switch (r->op) {
    case MSP_OP_HELLO:
        return n + 5 * 5 + 5 + MSP_NAME_MAX + 2 + MSP_NONCE_BYTES;
    case MSP_OP_AUTH:
        return n + 2 + MSP_PROOF_BYTES;
    case MSP_OP_ALLOC:
        return n + 5 + strlen(r->u.alloc.key) + 9 + 5 + 5 * 5 + 1 + 9 + 1 + 5;
    case MSP_OP_FREE:
    case MSP_OP_RELEASE:
    case MSP_OP_EVICT:
    case MSP_OP_COMMIT:
        return n + 9;
    case MSP_OP_ACQUIRE:
        return n + 9 + 5; /* handle, flags (version 2) */
    case MSP_OP_WRITE:
    case MSP_OP_READ:
        return n + 3 * 9;
    case MSP_OP_LOOKUP:
        return n + 5 + strlen(r->u.lookup.key);
    case MSP_OP_HINT:
        return n + 5 * 5 + 5 + 9 * (size_t)r->u.hint.num_handles;
    case MSP_OP_LIST:
        return n + 3 * 5;
    case MSP_OP_PEERS:
        return n + 5;
    default:
        return n;
    }
}

/* ---- reader -------------------------------------------------------------------------------- */

static bool rd_need(const msp_rd_t *rd, size_t n)
{
    return (size_t)(rd->end - rd->p) >= n;
}

static uint64_t rd_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Read a container header: array (map == false) or map. */
static memsvc_status_t rd_container(msp_rd_t *rd, bool map, uint32_t *n_p)
{
    uint8_t b;

    if (!rd_need(rd, 1)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    b = *rd->p;
    if (!map && ((b & 0xf0) == 0x90)) {
        rd->p++;
        *n_p = b & 0x0f;
        return MEMSVC_OK;
    }
    if (map && ((b & 0xf0) == 0x80)) {
        rd->p++;
        *n_p = b & 0x0f;
        return MEMSVC_OK;
    }
    if (b == (map ? 0xde : 0xdc)) {
        if (!rd_need(rd, 3)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        *n_p = (uint32_t)rd_be(rd->p + 1, 2);
        rd->p += 3;
        return MEMSVC_OK;
    }
    if (b == (map ? 0xdf : 0xdd)) {
        if (!rd_need(rd, 5)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        *n_p = (uint32_t)rd_be(rd->p + 1, 4);
        rd->p += 5;
        return MEMSVC_OK;
    }
    return MEMSVC_ERR_PROTOCOL;
}

static memsvc_status_t rd_array(msp_rd_t *rd, uint32_t *n_p)
{
    return rd_container(rd, false, n_p);
}

/* Any integer; *neg_p tells whether it is negative (then *v_p holds it as int64). */
static memsvc_status_t rd_integer(msp_rd_t *rd, uint64_t *v_p, bool *neg_p)
{
    uint8_t  b;
    unsigned n;
    uint64_t v;

    if (!rd_need(rd, 1)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    b = *rd->p;
    if (b <= 0x7f) {
        rd->p++;
        *v_p   = b;
        *neg_p = false;
        return MEMSVC_OK;
    }
    if (b >= 0xe0) {
        rd->p++;
        *v_p   = (uint64_t)(int64_t)(int8_t)b;
        *neg_p = true;
        return MEMSVC_OK;
    }
    if ((b >= 0xcc) && (b <= 0xcf)) {
        n = 1u << (b - 0xcc);
        if (!rd_need(rd, 1 + n)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        *v_p   = rd_be(rd->p + 1, n);
        *neg_p = false;
        rd->p += 1 + n;
        return MEMSVC_OK;
    }
    if ((b >= 0xd0) && (b <= 0xd3)) {
        n = 1u << (b - 0xd0);
        if (!rd_need(rd, 1 + n)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        v = rd_be(rd->p + 1, n);
        if (n < 8) { /* sign-extend */
            unsigned shift = 64 - 8 * n;
            v              = (uint64_t)((int64_t)(v << shift) >> shift);
        }
        *v_p   = v;
        *neg_p = ((int64_t)v < 0);
        rd->p += 1 + n;
        return MEMSVC_OK;
    }
    return MEMSVC_ERR_PROTOCOL;
}

static memsvc_status_t rd_u64(msp_rd_t *rd, uint64_t *v_p)
{
    memsvc_status_t status;
    bool            neg;

    status = rd_integer(rd, v_p, &neg);
    if ((status == MEMSVC_OK) && neg) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return status;
}

static memsvc_status_t rd_u32(msp_rd_t *rd, uint32_t *v_p)
{
    memsvc_status_t status;
    uint64_t        v;

    status = rd_u64(rd, &v);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (v > UINT32_MAX) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    *v_p = (uint32_t)v;
    return MEMSVC_OK;
}

static memsvc_status_t rd_i32(msp_rd_t *rd, int32_t *v_p)
{
    memsvc_status_t status;
    uint64_t        v;
    bool            neg;

    status = rd_integer(rd, &v, &neg);
    if (status != MEMSVC_OK) {
        return status;
    }
    if ((!neg && (v > INT32_MAX)) || (neg && ((int64_t)v < INT32_MIN))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    *v_p = (int32_t)(int64_t)v;
    return MEMSVC_OK;
}

static memsvc_status_t rd_bool(msp_rd_t *rd, bool *v_p)
{
    if (!rd_need(rd, 1)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((*rd->p != 0xc2) && (*rd->p != 0xc3)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    *v_p = (*rd->p == 0xc3);
    rd->p++;
    return MEMSVC_OK;
}

static memsvc_status_t rd_double(msp_rd_t *rd, double *v_p)
{
    uint64_t bits;
    uint32_t bits32;
    float    f;

    if (!rd_need(rd, 1)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((*rd->p == 0xcb) && rd_need(rd, 9)) {
        bits = rd_be(rd->p + 1, 8);
        memcpy(v_p, &bits, sizeof(*v_p));
        rd->p += 9;
        return MEMSVC_OK;
    }
    if ((*rd->p == 0xca) && rd_need(rd, 5)) {
        bits32 = (uint32_t)rd_be(rd->p + 1, 4);
        memcpy(&f, &bits32, sizeof(f));
        *v_p = f;
        rd->p += 5;
        return MEMSVC_OK;
    }
    return MEMSVC_ERR_PROTOCOL;
}

/* A string header; the bytes are left at rd->p. */
static memsvc_status_t rd_str_raw(msp_rd_t *rd, const char **s_p, uint32_t *len_p)
{
    uint8_t  b;
    uint32_t len;
    unsigned hdr;

    if (!rd_need(rd, 1)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    b = *rd->p;
    if ((b & 0xe0) == 0xa0) {
        len = b & 0x1f;
        hdr = 1;
    } else if ((b >= 0xd9) && (b <= 0xdb)) {
        unsigned n = 1u << (b - 0xd9);

        if (!rd_need(rd, 1 + n)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        len = (uint32_t)rd_be(rd->p + 1, n);
        hdr = 1 + n;
    } else {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (!rd_need(rd, (size_t)hdr + len)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    *s_p   = (const char *)rd->p + hdr;
    *len_p = len;
    rd->p += hdr + len;
    return MEMSVC_OK;
}

/* A string into a NUL-terminated buffer of cap bytes. Empty strings are refused when
 * !allow_empty; strings with NUL bytes always. */
static memsvc_status_t rd_str(msp_rd_t *rd, char *dst, size_t cap, bool allow_empty)
{
    memsvc_status_t status;
    const char     *s;
    uint32_t        len;

    status = rd_str_raw(rd, &s, &len);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (len >= cap) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    if ((len == 0) && !allow_empty) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (memchr(s, '\0', len) != NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
    return MEMSVC_OK;
}

/* A bin of exactly len bytes into dst. */
static memsvc_status_t rd_bin(msp_rd_t *rd, uint8_t *dst, size_t len)
{
    if (!rd_need(rd, 2)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((rd->p[0] != 0xc4) || (rd->p[1] != len)) { /* bin 8 holds every length used here */
        return MEMSVC_ERR_PROTOCOL;
    }
    if (!rd_need(rd, 2 + len)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    memcpy(dst, rd->p + 2, len);
    rd->p += 2 + len;
    return MEMSVC_OK;
}

/* Skip any one value, nested at most `depth` levels. */
static memsvc_status_t rd_skip(msp_rd_t *rd, int depth)
{
    memsvc_status_t status;
    uint8_t         b;
    uint64_t        len, n, i;
    unsigned        w;

    if (!rd_need(rd, 1)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (depth <= 0) {
        return MEMSVC_ERR_PROTOCOL;
    }
    b = *rd->p;
    if ((b <= 0x7f) || (b >= 0xe0) || (b == 0xc0) || (b == 0xc2) || (b == 0xc3)) {
        rd->p++;
        return MEMSVC_OK;
    }
    if (((b & 0xf0) == 0x90) || (b == 0xdc) || (b == 0xdd) || ((b & 0xf0) == 0x80) || (b == 0xde) ||
        (b == 0xdf)) {
        bool     map = ((b & 0xf0) == 0x80) || (b == 0xde) || (b == 0xdf);
        uint32_t cnt;

        status = rd_container(rd, map, &cnt);
        if (status != MEMSVC_OK) {
            return status;
        }
        n = map ? 2ull * cnt : cnt;
        for (i = 0; i < n; i++) {
            status = rd_skip(rd, depth - 1);
            if (status != MEMSVC_OK) {
                return status;
            }
        }
        return MEMSVC_OK;
    }
    switch (b) {
    case 0xcc:
    case 0xd0:
        len = 1;
        break;
    case 0xcd:
    case 0xd1:
        len = 2;
        break;
    case 0xce:
    case 0xd2:
    case 0xca:
        len = 4;
        break;
    case 0xcf:
    case 0xd3:
    case 0xcb:
        len = 8;
        break;
    case 0xd4:
        len = 2;
        break; /* fixext 1 */
    case 0xd5:
        len = 3;
        break;
    case 0xd6:
        len = 5;
        break;
    case 0xd7:
        len = 9;
        break;
    case 0xd8:
        len = 17;
        break;
    default:
        len = 0;
        break;
    }
    if (len > 0) {
        if (!rd_need(rd, 1 + len)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        rd->p += 1 + len;
        return MEMSVC_OK;
    }
    if (((b & 0xe0) == 0xa0) || ((b >= 0xd9) && (b <= 0xdb))) {
        const char *s;
        uint32_t    slen;

        return rd_str_raw(rd, &s, &slen);
    }
    if ((b >= 0xc4) && (b <= 0xc6)) { /* bin 8/16/32 */
        w = 1u << (b - 0xc4);
    } else if ((b >= 0xc7) && (b <= 0xc9)) { /* ext 8/16/32: length, type byte */
        w = 1u << (b - 0xc7);
    } else {
        return MEMSVC_ERR_PROTOCOL; /* 0xc1: never used */
    }
    if (!rd_need(rd, 1 + w)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    len = rd_be(rd->p + 1, w) + ((b >= 0xc7) ? 1 : 0);
    if (!rd_need(rd, 1 + w + len)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    rd->p += 1 + w + len;
    return MEMSVC_OK;
}

/* ---- writer (msgpack-c packer into a bounded buffer) -------------------------------------- */

static int buf_write(void *data, const char *src, size_t len)
{
    msp_buf_t *buf = data;

    if (buf->overflow || (len > buf->cap - buf->len)) {
        buf->overflow = true;
        return -1;
    }
    memcpy(buf->data + buf->len, src, len);
    buf->len += len;
    return 0;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);

    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void pk_bin(msgpack_packer *pk, const uint8_t *b, size_t len)
{
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, b, len);
}

static void pk_bool(msgpack_packer *pk, bool v)
{
    if (v) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

/* ---- requests ---------------------------------------------------------------------------- */

/* Fields after [op, id] per op; a request must have at least this many (extra are ignored). */
static const uint8_t req_nfields[MSP_OP_COUNT] = {
    [MSP_OP_HELLO] = 6,   [MSP_OP_ALLOC] = 12, [MSP_OP_FREE] = 1, [MSP_OP_ACQUIRE] = 1,
    [MSP_OP_RELEASE] = 1, [MSP_OP_WRITE] = 3,  [MSP_OP_READ] = 3, [MSP_OP_LOOKUP] = 1,
    [MSP_OP_HINT] = 6,    [MSP_OP_STATS] = 0,  [MSP_OP_LIST] = 3, [MSP_OP_PING] = 0,
    [MSP_OP_AUTH] = 1,
    [MSP_OP_PEERS] = 1,
    [MSP_OP_EVICT] = 1,
    [MSP_OP_COMMIT] = 1,
};

/* Optional fields a request carries after the required ones. */
static uint32_t req_extra(const msp_req_t *r)
{
    if (r->op == MSP_OP_ACQUIRE) {
        return 1; /* flags (version 2) */
    }
    if ((r->op == MSP_OP_HELLO) && r->u.hello.has_nonce) {
        return 1; /* nonce (version 3) */
    }
    return 0;
}

static memsvc_status_t encode_request(msgpack_packer *pk, const msp_req_t *r)
{
    uint32_t i;

    if ((r->op == 0) || (r->op >= MSP_OP_COUNT)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (r->oneway && !msp_op_oneway_ok(r->op)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    msgpack_pack_array(pk, 2 + req_nfields[r->op] + req_extra(r));
    msgpack_pack_uint32(pk, r->op | (r->oneway ? MSP_OP_ONEWAY : 0));
    msgpack_pack_uint64(pk, r->id);
    switch (r->op) {
    case MSP_OP_HELLO:
        msgpack_pack_uint32(pk, r->u.hello.version);
        msgpack_pack_uint32(pk, r->u.hello.job);
        msgpack_pack_uint32(pk, r->u.hello.rank);
        msgpack_pack_uint32(pk, r->u.hello.device);
        msgpack_pack_uint32(pk, r->u.hello.flags);
        pk_str(pk, r->u.hello.name);
        if (r->u.hello.has_nonce) {
            pk_bin(pk, r->u.hello.nonce, MSP_NONCE_BYTES);
        }
        break;
    case MSP_OP_AUTH:
        pk_bin(pk, r->u.auth.proof, MSP_PROOF_BYTES);
        break;
    case MSP_OP_ALLOC:
        pk_str(pk, r->u.alloc.key);
        msgpack_pack_uint64(pk, r->u.alloc.size);
        msgpack_pack_uint32(pk, r->u.alloc.kind);
        msgpack_pack_int32(pk, r->u.alloc.tags.layer);
        msgpack_pack_int32(pk, r->u.alloc.tags.microbatch);
        msgpack_pack_int32(pk, r->u.alloc.tags.expert);
        msgpack_pack_int32(pk, r->u.alloc.tags.stage);
        msgpack_pack_int32(pk, r->u.alloc.tags.step);
        pk_bool(pk, r->u.alloc.recomputable);
        msgpack_pack_uint64(pk, r->u.alloc.recompute_ns);
        pk_bool(pk, r->u.alloc.durable);
        msgpack_pack_uint32(pk, r->u.alloc.pin ? MSP_ALLOC_PIN : 0);
        break;
    case MSP_OP_FREE:
    case MSP_OP_RELEASE:
    case MSP_OP_EVICT:
    case MSP_OP_COMMIT:
        msgpack_pack_uint64(pk, r->u.h.handle);
        break;
    case MSP_OP_ACQUIRE:
        msgpack_pack_uint64(pk, r->u.h.handle);
        msgpack_pack_uint32(pk, r->u.h.flags); /* version 2: optional */
        break;
    case MSP_OP_WRITE:
    case MSP_OP_READ:
        msgpack_pack_uint64(pk, r->u.io.handle);
        msgpack_pack_uint64(pk, r->u.io.offset);
        msgpack_pack_uint64(pk, r->u.io.len);
        break;
    case MSP_OP_LOOKUP:
        pk_str(pk, r->u.lookup.key);
        break;
    case MSP_OP_HINT:
        if (r->u.hint.num_handles > MSP_HINT_MAX) {
            return MEMSVC_ERR_TOO_LARGE;
        }
        msgpack_pack_uint32(pk, r->u.hint.type);
        msgpack_pack_int32(pk, r->u.hint.step);
        msgpack_pack_int32(pk, r->u.hint.layer);
        msgpack_pack_int32(pk, r->u.hint.microbatch);
        msgpack_pack_uint32(pk, r->u.hint.phase);
        msgpack_pack_array(pk, r->u.hint.num_handles);
        for (i = 0; i < r->u.hint.num_handles; i++) {
            msgpack_pack_uint64(pk, r->u.hint.handles[i]);
        }
        break;
    case MSP_OP_LIST:
        msgpack_pack_uint32(pk, r->u.list.job);
        msgpack_pack_uint32(pk, r->u.list.start);
        msgpack_pack_uint32(pk, r->u.list.max);
        break;
    case MSP_OP_PEERS:
        msgpack_pack_uint32(pk, r->u.peers.start);
        break;
    default:
        break;
    }
    return MEMSVC_OK;
}

/* A batch: an array of n elements, each written by enc(pk, elems, i). */
static memsvc_status_t encode_batch(const void *elems, size_t n, msp_buf_t *buf,
                                    memsvc_status_t (*enc)(msgpack_packer *pk, const void *elems,
                                                           size_t i))
{
    memsvc_status_t status;
    msgpack_packer  pk;
    size_t          i;

    if ((n == 0) || (n > MSP_BATCH_MAX)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    buf->len      = 0;
    buf->overflow = false;
    msgpack_packer_init(&pk, buf, buf_write);
    msgpack_pack_array(&pk, n);
    for (i = 0; i < n; i++) {
        status = enc(&pk, elems, i);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    return buf->overflow ? MEMSVC_ERR_TOO_LARGE : MEMSVC_OK;
}

static memsvc_status_t encode_request_at(msgpack_packer *pk, const void *elems, size_t i)
{
    return encode_request(pk, &((const msp_req_t *)elems)[i]);
}

memsvc_status_t msp_encode_requests(const msp_req_t *reqs, size_t n, msp_buf_t *buf)
{
    return encode_batch(reqs, n, buf, encode_request_at);
}

/* Body of one request after [op, id]; nfields is what the array holds after them. */
static memsvc_status_t decode_request_body(msp_rd_t *rd, msp_req_t *r, uint32_t nfields)
{
    memsvc_status_t status = MEMSVC_OK;
    uint32_t        i, n, known = req_nfields[r->op];


    if (nfields < req_nfields[r->op]) {
        return MEMSVC_ERR_PROTOCOL;
    }
    switch (r->op) {
    case MSP_OP_HELLO:
        /* The HELLO layout is frozen across versions: check the version first. */
        RD(rd_u32(rd, &r->u.hello.version));
        RD(rd_u32(rd, &r->u.hello.job));
        RD(rd_u32(rd, &r->u.hello.rank));
        RD(rd_u32(rd, &r->u.hello.device));
        RD(rd_u32(rd, &r->u.hello.flags));
        RD(rd_str(rd, r->u.hello.name, sizeof(r->u.hello.name), true));
        if ((nfields > known) && (r->u.hello.version >= 3)) { /* version 3: nonce */
            RD(rd_bin(rd, r->u.hello.nonce, MSP_NONCE_BYTES));
            r->u.hello.has_nonce = true;
            known++;
        }
        break;
    case MSP_OP_AUTH:
        RD(rd_bin(rd, r->u.auth.proof, MSP_PROOF_BYTES));
        break;
    case MSP_OP_ALLOC:
        RD(rd_str(rd, r->u.alloc.key, sizeof(r->u.alloc.key), false));
        RD(rd_u64(rd, &r->u.alloc.size));
        RD(rd_u32(rd, &r->u.alloc.kind));
        RD(rd_i32(rd, &r->u.alloc.tags.layer));
        RD(rd_i32(rd, &r->u.alloc.tags.microbatch));
        RD(rd_i32(rd, &r->u.alloc.tags.expert));
        RD(rd_i32(rd, &r->u.alloc.tags.stage));
        RD(rd_i32(rd, &r->u.alloc.tags.step));
        RD(rd_bool(rd, &r->u.alloc.recomputable));
        RD(rd_u64(rd, &r->u.alloc.recompute_ns));
        RD(rd_bool(rd, &r->u.alloc.durable));
        RD(rd_u32(rd, &n)); /* flags: MSP_ALLOC_PIN (version 2); others must be 0 */
        if ((n & ~MSP_ALLOC_PIN) != 0) {
            return MEMSVC_ERR_INVALID_PARAM;
        }
        r->u.alloc.pin = !!(n & MSP_ALLOC_PIN);
        if (r->u.alloc.size == 0) {
            return MEMSVC_ERR_INVALID_PARAM;
        }
        if (r->u.alloc.kind >= MEMSVC_KIND_COUNT) {
            return MEMSVC_ERR_INVALID_PARAM;
        }
        if (r->u.alloc.durable && r->u.alloc.recomputable) {
            return MEMSVC_ERR_INVALID_PARAM;
        }
        break;
    case MSP_OP_FREE:
    case MSP_OP_RELEASE:
    case MSP_OP_EVICT:
    case MSP_OP_COMMIT:
        RD(rd_u64(rd, &r->u.h.handle));
        break;
    case MSP_OP_ACQUIRE:
        RD(rd_u64(rd, &r->u.h.handle));
        if (nfields > known) { /* version 2: flags */
            RD(rd_u32(rd, &r->u.h.flags));
            known++;
            if (r->u.h.flags & ~MSP_ACQ_FLAGS) {
                return MEMSVC_ERR_INVALID_PARAM;
            }
        }
        break;
    case MSP_OP_WRITE:
    case MSP_OP_READ:
        RD(rd_u64(rd, &r->u.io.handle));
        RD(rd_u64(rd, &r->u.io.offset));
        RD(rd_u64(rd, &r->u.io.len));
        if (r->u.io.len > MSP_DATA_MAX) {
            return MEMSVC_ERR_TOO_LARGE;
        }
        if (r->u.io.offset + r->u.io.len < r->u.io.offset) {
            return MEMSVC_ERR_OUT_OF_RANGE;
        }
        break;
    case MSP_OP_LOOKUP:
        RD(rd_str(rd, r->u.lookup.key, sizeof(r->u.lookup.key), false));
        break;
    case MSP_OP_HINT:
        RD(rd_u32(rd, &r->u.hint.type));
        RD(rd_i32(rd, &r->u.hint.step));
        RD(rd_i32(rd, &r->u.hint.layer));
        RD(rd_i32(rd, &r->u.hint.microbatch));
        RD(rd_u32(rd, &r->u.hint.phase));
        RD(rd_array(rd, &n));
        if (n > MSP_HINT_MAX) {
            return MEMSVC_ERR_TOO_LARGE;
        }
        for (i = 0; i < n; i++) {
            RD(rd_u64(rd, &r->u.hint.handles[i]));
        }
        r->u.hint.num_handles = n;
        if ((r->u.hint.type >= MEMSVC_HINT_COUNT) || (r->u.hint.phase >= MEMSVC_PHASE_COUNT)) {
            return MEMSVC_ERR_INVALID_PARAM;
        }
        break;
    case MSP_OP_LIST:
        RD(rd_u32(rd, &r->u.list.job));
        RD(rd_u32(rd, &r->u.list.start));
        RD(rd_u32(rd, &r->u.list.max));
        if ((r->u.list.max == 0) || (r->u.list.max > MSP_LIST_MAX)) {
            return MEMSVC_ERR_INVALID_PARAM;
        }
        break;
    case MSP_OP_PEERS:
        RD(rd_u32(rd, &r->u.peers.start));
        break;
    default:
        break;
    }
    /* Fields a later minor revision may add: skipped. */
    for (i = known; i < nfields; i++) {
        RD(rd_skip(rd, MSP_DEPTH_MAX));
    }
    return MEMSVC_OK;
}

/*
 * Decode one request. A malformed request that is still a well-formed msgpack value is
 * skipped and answered with its own error; *fatal_p tells whether the cursor is lost.
 */
static void decode_request(msp_rd_t *rd, msp_req_t *r, bool *fatal_p)
{
    const uint8_t  *start = rd->p;
    memsvc_status_t status;
    uint32_t        n;
    uint64_t        op;

    memset(r, 0, sizeof(*r));
    *fatal_p = false;
    status   = rd_array(rd, &n);
    if ((status != MEMSVC_OK) || (n < 2)) {
        goto err_skip;
    }
    status = rd_u64(rd, &op);
    if (status != MEMSVC_OK) {
        goto err_skip;
    }
    r->oneway = (op & MSP_OP_ONEWAY) != 0;
    op &= ~(uint64_t)MSP_OP_ONEWAY;
    r->op  = (op < MSP_OP_COUNT) ? (uint32_t)op : 0;
    status = rd_u64(rd, &r->id);
    if (status != MEMSVC_OK) {
        r->id = 0;
        goto err_skip;
    }
    if ((op == 0) || (op >= MSP_OP_COUNT)) {
        status = MEMSVC_ERR_PROTOCOL; /* unknown operation (or unknown flags) */
        goto err_skip;
    }
    if (r->oneway && !msp_op_oneway_ok(r->op)) {
        status = MEMSVC_ERR_PROTOCOL; /* only FREE, RELEASE and HINT may go unanswered */
        goto err_skip;
    }
    status = decode_request_body(rd, r, n - 2);
    if (status != MEMSVC_OK) {
        goto err_skip;
    }
    r->status = MEMSVC_OK;
    return;

err_skip:
    r->status = (status == MEMSVC_OK) ? MEMSVC_ERR_PROTOCOL : status;
    rd->p     = start;
    if (rd_skip(rd, MSP_DEPTH_MAX) != MEMSVC_OK) {
        *fatal_p = true;
    }
}

memsvc_status_t msp_decode_requests(const void *data, size_t len, msp_req_t *reqs, size_t max,
                                    size_t *n_p)
{
    msp_rd_t        rd = {data, (const uint8_t *)data + len};
    memsvc_status_t status;
    uint32_t        n, i;
    bool            fatal;

    *n_p = 0;
    if ((data == NULL) || (len == 0)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (len > MSP_HEADER_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    status = rd_array(&rd, &n);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (n == 0) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((n > max) || (n > MSP_BATCH_MAX)) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    for (i = 0; i < n; i++) {
        decode_request(&rd, &reqs[i], &fatal);
        if (fatal) {
            return MEMSVC_ERR_PROTOCOL;
        }
    }
    if (rd.p != rd.end) {
        return MEMSVC_ERR_PROTOCOL; /* trailing bytes */
    }
    /* Ops with a payload (in the request or the reply) travel alone. */
    if (n > 1) {
        for (i = 0; i < n; i++) {
            if ((reqs[i].status == MEMSVC_OK) &&
                (msp_op_has_payload(reqs[i].op) || msp_reply_has_payload(reqs[i].op))) {
                reqs[i].status = MEMSVC_ERR_PROTOCOL;
            }
        }
    }
    *n_p = n;
    return MEMSVC_OK;
}

/* ---- replies ----------------------------------------------------------------------------- */

static void encode_tensor(msgpack_packer *pk, const msp_tensor_t *t)
{
    msgpack_pack_array(pk, 17);
    msgpack_pack_uint64(pk, t->handle);
    pk_str(pk, t->key);
    msgpack_pack_uint64(pk, t->size);
    msgpack_pack_uint32(pk, t->kind);
    msgpack_pack_uint32(pk, t->state);
    msgpack_pack_uint32(pk, t->device);
    msgpack_pack_uint32(pk, t->job);
    msgpack_pack_uint32(pk, t->rank);
    msgpack_pack_uint32(pk, t->pins);
    pk_bool(pk, t->durable);
    pk_bool(pk, t->recomputable);
    msgpack_pack_int32(pk, t->tags.layer);
    msgpack_pack_int32(pk, t->tags.microbatch);
    msgpack_pack_int32(pk, t->tags.expert);
    msgpack_pack_int32(pk, t->tags.stage);
    msgpack_pack_int32(pk, t->tags.step);
    msgpack_pack_uint32(pk, 0); /* reserved */
}

static memsvc_status_t decode_tensor(msp_rd_t *rd, msp_tensor_t *t)
{
    memsvc_status_t status;
    uint32_t        n, i, kind, state;


    RD(rd_array(rd, &n));
    if (n < 16) {
        return MEMSVC_ERR_PROTOCOL;
    }
    RD(rd_u64(rd, &t->handle));
    RD(rd_str(rd, t->key, sizeof(t->key), true));
    RD(rd_u64(rd, &t->size));
    RD(rd_u32(rd, &kind));
    RD(rd_u32(rd, &state));
    RD(rd_u32(rd, &t->device));
    RD(rd_u32(rd, &t->job));
    RD(rd_u32(rd, &t->rank));
    RD(rd_u32(rd, &t->pins));
    RD(rd_bool(rd, &t->durable));
    RD(rd_bool(rd, &t->recomputable));
    RD(rd_i32(rd, &t->tags.layer));
    RD(rd_i32(rd, &t->tags.microbatch));
    RD(rd_i32(rd, &t->tags.expert));
    RD(rd_i32(rd, &t->tags.stage));
    RD(rd_i32(rd, &t->tags.step));
    if ((kind >= MEMSVC_KIND_COUNT) || (state >= MEMSVC_STATE_COUNT)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    t->kind  = (memsvc_kind_t)kind;
    t->state = (memsvc_state_t)state;
    for (i = 16; i < n; i++) {
        RD(rd_skip(rd, MSP_DEPTH_MAX));
    }
    return MEMSVC_OK;
}

/* Figures of one device, in this order (docs/protocol.md, "STATS"). */
#define DEV_U64_FIELDS(X)                                                                          \
    X(capacity)                                                                                    \
    X(allocated) X(reserved) X(free) X(largest_free) X(peak_reserved) X(pinned_tensors)            \
        X(pinned_bytes) X(swap_out_bytes) X(swap_outs) X(swap_in_bytes) X(swap_ins) X(spill_bytes) \
            X(drops) X(recomputes) X(stall_ns) X(stalls) X(oom_events) X(fragmented_events)
#define STATS_U64_FIELDS(X)                                                                        \
    X(uptime_ns)                                                                                   \
    X(host_capacity) X(host_used) X(host_peak) X(disk_capacity) X(disk_used) X(live_tensors)       \
        X(moves_in_flight) X(sessions) X(sessions_total) X(orphans) X(requests) X(errors)

/* Elements 7-9 of a STATS body: limits counters, jobs, sessions (docs/protocol.md). */
#define LIMITS_U64_FIELDS(X)                                                                       \
    X(sessions_refused) X(handshake_timeouts) X(overloads) X(deferred) X(evictions)
#define JOB_U64_FIELDS(X)                                                                          \
    X(job) X(tensors) X(hbm_bytes) X(host_bytes) X(disk_bytes) X(inflight_bytes) X(quota_refused)
#define SESSION_U64_FIELDS(X)                                                                      \
    X(id) X(job) X(rank) X(device) X(pid) X(flags) X(pins) X(oldest_pin_ns) X(idle_ns)             \
        X(inflight_bytes) X(queued) X(requests) X(errors)
#define COUNT1(f) +1
#define LIMITS_N (0 LIMITS_U64_FIELDS(COUNT1))
#define JOB_N (0 JOB_U64_FIELDS(COUNT1))
#define SESSION_N (0 SESSION_U64_FIELDS(COUNT1))

static void encode_u64_array(msgpack_packer *pk, const uint64_t *v, unsigned n)
{
    unsigned i;

    msgpack_pack_array(pk, n);
    for (i = 0; i < n; i++) {
        msgpack_pack_uint64(pk, v[i]);
    }
}

/* An array of at least `want` u64 into v (extra elements skipped). */
static memsvc_status_t decode_u64_array(msp_rd_t *rd, uint64_t *v, unsigned want)
{
    memsvc_status_t status;
    uint32_t        n, i;

    status = rd_array(rd, &n);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (n < want) {
        return MEMSVC_ERR_PROTOCOL;
    }
    for (i = 0; i < n; i++) {
        status = (i < want) ? rd_u64(rd, &v[i]) : rd_skip(rd, MSP_DEPTH_MAX);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    return MEMSVC_OK;
}

/* At least min and at most max of them are read (the rest of v is left as it is). */
static memsvc_status_t decode_u64_array_min(msp_rd_t *rd, uint64_t *v, unsigned min, unsigned max)
{
    memsvc_status_t status;
    uint32_t        n, i;

    status = rd_array(rd, &n);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (n < min) {
        return MEMSVC_ERR_PROTOCOL;
    }
    for (i = 0; i < n; i++) {
        status = (i < max) ? rd_u64(rd, &v[i]) : rd_skip(rd, MSP_DEPTH_MAX);
        if (status != MEMSVC_OK) {
            return status;
        }
    }
    return MEMSVC_OK;
}

static memsvc_status_t decode_stats_limits(msp_rd_t *rd, memsvc_stats_t *s)
{
    memsvc_status_t status;
    uint64_t        v[SESSION_N];
    uint32_t        n, i, k;

#define GET(f) x->f = v[k++];
    RD(decode_u64_array(rd, v, LIMITS_N));
    k = 0;
    {
        memsvc_stats_t *x = s;

        LIMITS_U64_FIELDS(GET)
    }
    RD(rd_array(rd, &n));
    if (n > MEMSVC_STATS_JOBS_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    s->num_jobs = n;
    for (i = 0; i < n; i++) {
        memsvc_job_stats_t *x = &s->job[i];

        RD(decode_u64_array(rd, v, JOB_N));
        k = 0;
        JOB_U64_FIELDS(GET)
    }
    RD(rd_array(rd, &n));
    if (n > MEMSVC_STATS_SESSIONS_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    s->num_sessions = n;
    for (i = 0; i < n; i++) {
        memsvc_session_stats_t *x = &s->session[i];

        RD(decode_u64_array(rd, v, SESSION_N));
        k = 0;
        SESSION_U64_FIELDS(GET)
    }
    return MEMSVC_OK;
#undef GET
}

static memsvc_status_t decode_stats(msp_rd_t *rd, memsvc_stats_t *s)
{
    memsvc_status_t status;
    uint32_t        n, nd, d, i;
    uint64_t        top[13];


    memset(s, 0, sizeof(*s));
    RD(rd_array(rd, &n));
    if (n < 6) {
        return MEMSVC_ERR_PROTOCOL;
    }
    RD(rd_str(rd, s->node, sizeof(s->node), true));
    RD(rd_str(rd, s->mode, sizeof(s->mode), true));
    RD(rd_str(rd, s->policy, sizeof(s->policy), true));
    RD(rd_str(rd, s->transport, sizeof(s->transport), true));
    RD(decode_u64_array(rd, top, 13));
    i = 0;
#define GET_U64(f) s->f = top[i++];
    STATS_U64_FIELDS(GET_U64)
#undef GET_U64
    RD(rd_array(rd, &nd));
    if (nd > MEMSVC_MAX_DEVICES) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    s->num_devices = nd;
    for (d = 0; d < nd; d++) {
        memsvc_dev_stats_t *ds = &s->dev[d];
        uint64_t            dv[19];
        uint32_t            m;

        RD(rd_array(rd, &m));
        if (m < 6) {
            return MEMSVC_ERR_PROTOCOL;
        }
        RD(decode_u64_array(rd, dv, 19));
        i = 0;
#define GET_DEV_U64(f) ds->f = dv[i++];
        DEV_U64_FIELDS(GET_DEV_U64)
#undef GET_DEV_U64
        RD(rd_double(rd, &ds->fragmentation));
        /* (a daemon older than the peer tier sends one state fewer) */
        RD(decode_u64_array_min(rd, ds->tensors_by_state, MEMSVC_STATE_ON_PEER, MEMSVC_STATE_COUNT));
        RD(decode_u64_array_min(rd, ds->bytes_by_state, MEMSVC_STATE_ON_PEER, MEMSVC_STATE_COUNT));
        RD(decode_u64_array(rd, ds->tensors_by_kind, MEMSVC_KIND_COUNT));
        RD(decode_u64_array(rd, ds->resident_by_kind, MEMSVC_KIND_COUNT));
        for (i = 6; i < m; i++) {
            RD(rd_skip(rd, MSP_DEPTH_MAX));
        }
    }
    if (n > 6) { /* durable state (daemons since durable state; absent: zeros) */
        uint64_t dur[4];

        RD(decode_u64_array(rd, dur, 4));
        s->durable_tensors   = dur[0];
        s->durable_bytes     = dur[1];
        s->durable_recovered = dur[2];
        s->durable_corrupt   = dur[3];
    }
    if (n >= 10) {
        RD(decode_stats_limits(rd, s));
    }
    if (n >= 11) { /* pin tables (absent before them: zeros) */
        uint64_t fp[4];

        RD(decode_u64_array(rd, fp, 4));
        s->fast_acquires  = fp[0];
        s->fast_published = fp[1];
        s->fast_revoked   = fp[2];
        s->fast_held      = fp[3];
    }
    for (i = (n >= 11) ? 11 : (n >= 10) ? 10 : ((n > 6) ? 7 : 6); i < n; i++) {
        RD(rd_skip(rd, MSP_DEPTH_MAX));
    }
    return MEMSVC_OK;
}

/* Fields after [id, op, status] of a successful reply, per op. */
static const uint8_t rep_nfields[MSP_OP_COUNT] = {
    [MSP_OP_HELLO] = 6, [MSP_OP_ALLOC] = 1, [MSP_OP_READ] = 1, [MSP_OP_LOOKUP] = 1,
    [MSP_OP_STATS] = 1, [MSP_OP_PING] = 2,  [MSP_OP_LIST] = 3, [MSP_OP_ACQUIRE] = 3,
    [MSP_OP_AUTH] = 1,
    [MSP_OP_PEERS] = 3,
};

static memsvc_status_t encode_reply(msgpack_packer *pk, const msp_rep_t *r)
{
    if (((r->op == 0) || (r->op >= MSP_OP_COUNT)) && (r->status >= 0)) {
        return MEMSVC_ERR_INVALID_PARAM; /* only errors may answer an unknown op (as op 0) */
    }
    if (r->status < 0) {
        msgpack_pack_array(pk, 4);
        msgpack_pack_uint64(pk, r->id);
        msgpack_pack_uint32(pk, (r->op < MSP_OP_COUNT) ? r->op : 0);
        msgpack_pack_int32(pk, r->status);
        pk_str(pk, r->msg);
        return MEMSVC_OK;
    }
    msgpack_pack_array(pk, 3 + rep_nfields[r->op] +
                               (((r->op == MSP_OP_HELLO) && r->u.hello.auth) ? 1 : 0));
    msgpack_pack_uint64(pk, r->id);
    msgpack_pack_uint32(pk, r->op);
    msgpack_pack_int32(pk, r->status);
    switch (r->op) {
    case MSP_OP_HELLO:
        msgpack_pack_uint32(pk, r->u.hello.version);
        msgpack_pack_uint64(pk, r->u.hello.session);
        msgpack_pack_uint32(pk, r->u.hello.num_devices);
        msgpack_pack_uint64(pk, r->u.hello.hbm_bytes);
        msgpack_pack_uint64(pk, r->u.hello.max_data);
        pk_str(pk, r->u.hello.transport);
        if (r->u.hello.auth) { /* version 3: the daemon's challenge */
            pk_bin(pk, r->u.hello.nonce, MSP_NONCE_BYTES);
        }
        break;
    case MSP_OP_AUTH:
        pk_bin(pk, r->u.auth.proof, MSP_PROOF_BYTES);
        break;
    case MSP_OP_ALLOC:
        msgpack_pack_uint64(pk, r->u.alloc.handle);
        break;
    case MSP_OP_ACQUIRE:
        msgpack_pack_uint32(pk, r->u.acquire.region);
        msgpack_pack_uint64(pk, r->u.acquire.offset);
        msgpack_pack_uint64(pk, r->u.acquire.size);
        break;
    case MSP_OP_READ:
    case MSP_OP_STATS:
        msgpack_pack_uint64(pk, r->plen);
        break;
    case MSP_OP_LOOKUP:
        encode_tensor(pk, &r->u.lookup);
        break;
    case MSP_OP_PING:
        msgpack_pack_uint64(pk, r->u.ping.now_ns);
        msgpack_pack_uint32(pk, r->u.ping.sessions);
        break;
    case MSP_OP_LIST:
    case MSP_OP_PEERS:
        msgpack_pack_uint64(pk, r->plen);
        msgpack_pack_uint32(pk, r->u.list.next);
        msgpack_pack_uint32(pk, r->u.list.count);
        break;
    default:
        break;
    }
    return MEMSVC_OK;
}

static memsvc_status_t encode_reply_at(msgpack_packer *pk, const void *elems, size_t i)
{
    return encode_reply(pk, &((const msp_rep_t *)elems)[i]);
}

memsvc_status_t msp_encode_replies(const msp_rep_t *reps, size_t n, msp_buf_t *buf)
{
    return encode_batch(reps, n, buf, encode_reply_at);
}

static memsvc_status_t decode_reply(msp_rd_t *rd, msp_rep_t *r)
{
    memsvc_status_t status;
    uint32_t        n, i, min;
    int32_t         st;


    memset(r, 0, sizeof(*r));
    RD(rd_array(rd, &n));
    if (n < 3) {
        return MEMSVC_ERR_PROTOCOL;
    }
    RD(rd_u64(rd, &r->id));
    RD(rd_u32(rd, &r->op));
    RD(rd_i32(rd, &st));
    if ((st <= MEMSVC_ERR_LAST) || (st > MEMSVC_RECOMPUTE)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    r->status = (memsvc_status_t)st;
    if (r->status < 0) {
        if (n < 4) {
            return MEMSVC_ERR_PROTOCOL;
        }
        RD(rd_str(rd, r->msg, sizeof(r->msg), true));
        min = 4;
    } else {
        if ((r->op == 0) || (r->op >= MSP_OP_COUNT)) {
            return MEMSVC_ERR_PROTOCOL;
        }
        min = 3 + rep_nfields[r->op];
        if (n < min) {
            return MEMSVC_ERR_PROTOCOL;
        }
        switch (r->op) {
        case MSP_OP_HELLO:
            RD(rd_u32(rd, &r->u.hello.version));
            RD(rd_u64(rd, &r->u.hello.session));
            RD(rd_u32(rd, &r->u.hello.num_devices));
            RD(rd_u64(rd, &r->u.hello.hbm_bytes));
            RD(rd_u64(rd, &r->u.hello.max_data));
            RD(rd_str(rd, r->u.hello.transport, sizeof(r->u.hello.transport), true));
            if ((n > min) && (r->u.hello.version >= 3)) {
                RD(rd_bin(rd, r->u.hello.nonce, MSP_NONCE_BYTES));
                r->u.hello.auth = true;
                min++;
            }
            break;
        case MSP_OP_AUTH:
            RD(rd_bin(rd, r->u.auth.proof, MSP_PROOF_BYTES));
            break;
        case MSP_OP_ALLOC:
            RD(rd_u64(rd, &r->u.alloc.handle));
            break;
        case MSP_OP_ACQUIRE:
            RD(rd_u32(rd, &r->u.acquire.region));
            RD(rd_u64(rd, &r->u.acquire.offset));
            RD(rd_u64(rd, &r->u.acquire.size));
            break;
        case MSP_OP_READ:
        case MSP_OP_STATS:
            RD(rd_u64(rd, &r->plen));
            break;
        case MSP_OP_LOOKUP:
            RD(decode_tensor(rd, &r->u.lookup));
            break;
        case MSP_OP_PING:
            RD(rd_u64(rd, &r->u.ping.now_ns));
            RD(rd_u32(rd, &r->u.ping.sessions));
            break;
        case MSP_OP_LIST:
            RD(rd_u64(rd, &r->plen));
            RD(rd_u32(rd, &r->u.list.next));
            RD(rd_u32(rd, &r->u.list.count));
            if (r->u.list.count > MSP_LIST_MAX) {
                return MEMSVC_ERR_TOO_LARGE;
            }
            break;
        case MSP_OP_PEERS:
            RD(rd_u64(rd, &r->plen));
            RD(rd_u32(rd, &r->u.list.next));
            RD(rd_u32(rd, &r->u.list.count));
            if (r->u.list.count > MSP_PEERS_MAX) {
                return MEMSVC_ERR_TOO_LARGE;
            }
            break;
        default:
            break;
        }
        if ((r->op == MSP_OP_READ) ? (r->plen > MSP_DATA_MAX)
                                   : (msp_reply_has_payload(r->op) && (r->plen > MSP_BODY_MAX))) {
            return MEMSVC_ERR_TOO_LARGE;
        }
    }
    for (i = min; i < n; i++) {
        RD(rd_skip(rd, MSP_DEPTH_MAX));
    }
    return MEMSVC_OK;
}

memsvc_status_t msp_decode_replies(const void *data, size_t len, msp_rep_t *reps, size_t max,
                                   size_t *n_p)
{
    msp_rd_t        rd = {data, (const uint8_t *)data + len};
    memsvc_status_t status;
    uint32_t        n, i;

    *n_p = 0;
    if ((data == NULL) || (len == 0)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (len > MSP_HEADER_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    status = rd_array(&rd, &n);
    if (status != MEMSVC_OK) {
        return status;
    }
    if (n == 0) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((n > max) || (n > MSP_BATCH_MAX)) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    for (i = 0; i < n; i++) {
        status = decode_reply(&rd, &reps[i]);
        if (status != MEMSVC_OK) {
            return (status == MEMSVC_ERR_TOO_LARGE) ? status : MEMSVC_ERR_PROTOCOL;
        }
    }
    if (rd.p != rd.end) {
        return MEMSVC_ERR_PROTOCOL;
    }
    *n_p = n;
    return MEMSVC_OK;
}

/* ---- reply bodies ---------------------------------------------------------------------------- */

static void encode_stats_limits(msgpack_packer *pk, const memsvc_stats_t *s)
{
    uint64_t v[SESSION_N];
    unsigned i, k;

#define PUT(f) v[k++] = (uint64_t)x->f;
    {
        const memsvc_stats_t *x = s;

        k = 0;
        LIMITS_U64_FIELDS(PUT)
        encode_u64_array(pk, v, LIMITS_N);
    }
    msgpack_pack_array(pk, s->num_jobs);
    for (i = 0; i < s->num_jobs; i++) {
        const memsvc_job_stats_t *x = &s->job[i];

        k = 0;
        JOB_U64_FIELDS(PUT)
        encode_u64_array(pk, v, JOB_N);
    }
    msgpack_pack_array(pk, s->num_sessions);
    for (i = 0; i < s->num_sessions; i++) {
        const memsvc_session_stats_t *x = &s->session[i];

        k = 0;
        SESSION_U64_FIELDS(PUT)
        encode_u64_array(pk, v, SESSION_N);
    }
#undef PUT
}

memsvc_status_t msp_encode_stats(const memsvc_stats_t *s, msp_buf_t *buf)
{
    msgpack_packer  pk_;
    msgpack_packer *pk = &pk_;
    unsigned        d;

    if ((s->num_devices > MEMSVC_MAX_DEVICES) || (s->num_jobs > MEMSVC_STATS_JOBS_MAX) ||
        (s->num_sessions > MEMSVC_STATS_SESSIONS_MAX)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    buf->len      = 0;
    buf->overflow = false;
    msgpack_packer_init(pk, buf, buf_write);

#define PK_U64(f) msgpack_pack_uint64(pk, s->f);
#define PK_DEV_U64(f) msgpack_pack_uint64(pk, ds->f);
    msgpack_pack_array(pk, 11);
    pk_str(pk, s->node);
    pk_str(pk, s->mode);
    pk_str(pk, s->policy);
    pk_str(pk, s->transport);
    msgpack_pack_array(pk, 13);
    STATS_U64_FIELDS(PK_U64)
    msgpack_pack_array(pk, s->num_devices);
    for (d = 0; d < s->num_devices; d++) {
        const memsvc_dev_stats_t *ds = &s->dev[d];

        msgpack_pack_array(pk, 6);
        msgpack_pack_array(pk, 19);
        DEV_U64_FIELDS(PK_DEV_U64)
        msgpack_pack_double(pk, ds->fragmentation);
        encode_u64_array(pk, ds->tensors_by_state, MEMSVC_STATE_COUNT);
        encode_u64_array(pk, ds->bytes_by_state, MEMSVC_STATE_COUNT);
        encode_u64_array(pk, ds->tensors_by_kind, MEMSVC_KIND_COUNT);
        encode_u64_array(pk, ds->resident_by_kind, MEMSVC_KIND_COUNT);
    }
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, s->durable_tensors);
    msgpack_pack_uint64(pk, s->durable_bytes);
    msgpack_pack_uint64(pk, s->durable_recovered);
    msgpack_pack_uint64(pk, s->durable_corrupt);
    encode_stats_limits(pk, s);
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint64(pk, s->fast_acquires);
    msgpack_pack_uint64(pk, s->fast_published);
    msgpack_pack_uint64(pk, s->fast_revoked);
    msgpack_pack_uint64(pk, s->fast_held);
#undef PK_U64
#undef PK_DEV_U64
    return buf->overflow ? MEMSVC_ERR_TOO_LARGE : MEMSVC_OK;
}

memsvc_status_t msp_decode_stats(const void *data, size_t len, memsvc_stats_t *stats_p)
{
    msp_rd_t        rd = {data, (const uint8_t *)data + len};
    memsvc_status_t status;

    if ((data == NULL) || (len == 0)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (len > MSP_BODY_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    status = decode_stats(&rd, stats_p);
    if (status != MEMSVC_OK) {
        return (status == MEMSVC_ERR_TOO_LARGE) ? status : MEMSVC_ERR_PROTOCOL;
    }
    return (rd.p == rd.end) ? MEMSVC_OK : MEMSVC_ERR_PROTOCOL;
}

memsvc_status_t msp_encode_list(const msp_tensor_t *tensors, uint32_t n, msp_buf_t *buf)
{
    msgpack_packer pk;
    uint32_t       i;

    if ((n > MSP_LIST_MAX) || ((n > 0) && (tensors == NULL))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    buf->len      = 0;
    buf->overflow = false;
    msgpack_packer_init(&pk, buf, buf_write);
    msgpack_pack_array(&pk, n);
    for (i = 0; i < n; i++) {
        encode_tensor(&pk, &tensors[i]);
    }
    return buf->overflow ? MEMSVC_ERR_TOO_LARGE : MEMSVC_OK;
}

memsvc_status_t msp_decode_list(const void *data, size_t len, msp_tensor_t *tensors, uint32_t max,
                                uint32_t *n_p)
{
    msp_rd_t        rd = {data, (const uint8_t *)data + len};
    memsvc_status_t status;
    uint32_t        n, i;

    *n_p = 0;
    if ((data == NULL) || (len == 0)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (len > MSP_BODY_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    status = rd_array(&rd, &n);
    if (status != MEMSVC_OK) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((n > max) || (n > MSP_LIST_MAX)) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    for (i = 0; i < n; i++) {
        status = decode_tensor(&rd, &tensors[i]);
        if (status != MEMSVC_OK) {
            return (status == MEMSVC_ERR_TOO_LARGE) ? status : MEMSVC_ERR_PROTOCOL;
        }
    }
    if (rd.p != rd.end) {
        return MEMSVC_ERR_PROTOCOL;
    }
    *n_p = n;
    return MEMSVC_OK;
}

/* One peer: [name, address, state, reason, figures[10]] (docs/protocol.md, "PEERS"). */
#define PEER_U64_FIELDS(X)                                                                         \
    X(heard_ago_ns)                                                                                \
    X(state_age_ns) X(boot_id) X(restarts) X(hbm_used) X(hbm_total) X(host_used) X(host_total)    \
        X(sessions) X(uptime_ns)

/* Replication figures: a 6th element of each peer, a 6th of the reply (older peers of the
 * protocol skip them; their absence reads as 0). */
#define PEER_REPL_FIELDS(X)                                                                        \
    X(target) X(acked_tensors) X(owed_tensors) X(owed_bytes) X(held_tensors) X(held_bytes)
#define SELF_REPL_FIELDS(X)                                                                        \
    X(replicas) X(targets) X(repl_rate) X(owed_tensors) X(owed_bytes) X(lag_ns) X(sent_bytes)      \
        X(held_tensors) X(held_bytes) X(held_capacity) X(recovery_wanted) X(recovery_restored)     \
            X(recovery_bytes) X(recovery_failed) X(tier_out_tensors) X(tier_out_bytes)            \
                X(tier_held_tensors) X(tier_held_bytes)
#define PK_PEER_U64X(f) msgpack_pack_uint64(&pk, (uint64_t)p->f);
#define PK_SELF_U64X(f) msgpack_pack_uint64(&pk, (uint64_t)self->f);

memsvc_status_t msp_encode_peers(const memsvc_cluster_info_t *self, const memsvc_peer_info_t *peers,
                                 uint32_t n, msp_buf_t *buf)
{
    msgpack_packer pk;
    uint32_t       i;

    if ((n > MSP_PEERS_MAX) || ((n > 0) && (peers == NULL))) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    buf->len      = 0;
    buf->overflow = false;
    msgpack_packer_init(&pk, buf, buf_write);
    msgpack_pack_array(&pk, 6);
    pk_str(&pk, self->node);
    pk_str(&pk, self->cluster_hash);
    msgpack_pack_uint64(&pk, self->boot_id);
    msgpack_pack_uint32(&pk, self->num_peers);
    msgpack_pack_array(&pk, n);
    for (i = 0; i < n; i++) {
        const memsvc_peer_info_t *p = &peers[i];

        msgpack_pack_array(&pk, 6);
        pk_str(&pk, p->name);
        pk_str(&pk, p->address);
        msgpack_pack_uint32(&pk, (uint32_t)p->state);
        pk_str(&pk, p->reason);
        msgpack_pack_array(&pk, 10);
#define PK_PEER_U64(f) msgpack_pack_uint64(&pk, p->f);
        PEER_U64_FIELDS(PK_PEER_U64)
#undef PK_PEER_U64
        msgpack_pack_array(&pk, 6);
        PEER_REPL_FIELDS(PK_PEER_U64X)
    }
    msgpack_pack_array(&pk, 18);
    SELF_REPL_FIELDS(PK_SELF_U64X)
    return buf->overflow ? MEMSVC_ERR_TOO_LARGE : MEMSVC_OK;
}

static memsvc_status_t decode_peer(msp_rd_t *rd, memsvc_peer_info_t *p)
{
    memsvc_status_t status;
    uint64_t        v[10];
    uint32_t        n, state, i = 0;


    memset(p, 0, sizeof(*p));
    RD(rd_array(rd, &n));
    if (n < 5) {
        return MEMSVC_ERR_PROTOCOL;
    }
    RD(rd_str(rd, p->name, sizeof(p->name), false));
    RD(rd_str(rd, p->address, sizeof(p->address), false));
    RD(rd_u32(rd, &state));
    RD(rd_str(rd, p->reason, sizeof(p->reason), true));
    RD(decode_u64_array(rd, v, 10));
    if (state >= MEMSVC_PEER_STATE_COUNT) {
        return MEMSVC_ERR_PROTOCOL;
    }
    p->state = (memsvc_peer_state_t)state;
#define GET_PEER_U64(f) p->f = v[i++];
    PEER_U64_FIELDS(GET_PEER_U64)
#undef GET_PEER_U64
    if (n >= 6) {
        uint64_t r[6];

        RD(decode_u64_array(rd, r, 6));
        i = 0;
#define GET_REPL(f) p->f = (__typeof__(p->f))r[i++];
        PEER_REPL_FIELDS(GET_REPL)
    }
    for (i = 6; i < n; i++) {
        RD(rd_skip(rd, MSP_DEPTH_MAX));
    }
    return MEMSVC_OK;
}

#define GET_SELF_REPL(f) self_p->f = (__typeof__(self_p->f))r[i++];

memsvc_status_t msp_decode_peers(const void *data, size_t len, memsvc_cluster_info_t *self_p,
                                 memsvc_peer_info_t *peers, uint32_t max, uint32_t *n_p)
{
    msp_rd_t        rd = {data, (const uint8_t *)data + len};
    memsvc_status_t status;
    uint32_t        n, m, i;

    *n_p = 0;
    memset(self_p, 0, sizeof(*self_p));
    if ((data == NULL) || (len == 0)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if (len > MSP_BODY_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    if ((rd_array(&rd, &m) != MEMSVC_OK) || (m < 5) ||
        (rd_str(&rd, self_p->node, sizeof(self_p->node), true) != MEMSVC_OK) ||
        (rd_str(&rd, self_p->cluster_hash, sizeof(self_p->cluster_hash), true) != MEMSVC_OK) ||
        (rd_u64(&rd, &self_p->boot_id) != MEMSVC_OK) ||
        (rd_u32(&rd, &self_p->num_peers) != MEMSVC_OK) || (rd_array(&rd, &n) != MEMSVC_OK)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    if ((n > max) || (n > MSP_PEERS_MAX)) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    for (i = 0; i < n; i++) {
        status = decode_peer(&rd, &peers[i]);
        if (status != MEMSVC_OK) {
            return (status == MEMSVC_ERR_TOO_LARGE) ? status : MEMSVC_ERR_PROTOCOL;
        }
    }
    if (m >= 6) {
        uint64_t r[18] = {0};

        if (decode_u64_array_min(&rd, r, 14, 18) != MEMSVC_OK) {
            return MEMSVC_ERR_PROTOCOL;
        }
        i = 0;
        SELF_REPL_FIELDS(GET_SELF_REPL)
    }
    for (i = 6; i < m; i++) {
        if (rd_skip(&rd, MSP_DEPTH_MAX) != MEMSVC_OK) {
            return MEMSVC_ERR_PROTOCOL;
        }
    }
    if (rd.p != rd.end) {
        return MEMSVC_ERR_PROTOCOL;
    }
    *n_p = n;
    return MEMSVC_OK;
}
