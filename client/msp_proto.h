/* msp_proto.h - the memsvc wire protocol: message layout, limits, and the msgpack codec */
#ifndef MSP_PROTO_H
#define MSP_PROTO_H

#include "client/memsvc.h"
#include "client/msp_auth.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Requests and replies are UCX active messages. The AM header is msgpack (see
 * docs/protocol.md); bulk bytes travel as the AM payload (UCX picks eager or rendezvous by
 * size): tensor bytes of WRITE requests and READ replies, and the msgpack bodies of STATS and
 * LIST replies (too large for a UCX AM header). The codec is pure: no allocation, no I/O,
 * bounded by the limits below, so it can be fuzzed on its own.
 */

#define MSP_VERSION 3u             /* what this side speaks */
#define MSP_VERSION_MIN 1u         /* the oldest version the daemon still accepts */
#define MSP_AM_REQUEST 17u         /* AM id: client to server */
#define MSP_AM_REPLY 18u           /* AM id: server to client */
/* A reply with this id and status MEMSVC_ERR_SHUTDOWN is the daemon's notice that it is
 * stopping: the connection is over (clients that do not know it ignore an unknown id). */
#define MSP_ID_NOTICE 0u
#define MSP_HEADER_MAX 4096u       /* largest AM header, bytes (UCX allows ~8 KiB over tcp) */
#define MSP_BODY_MAX 65536u        /* largest msgpack body of a STATS or LIST reply */
#define MSP_BATCH_MAX 64u          /* requests (or replies) per message */
#define MSP_DATA_MAX (64ull << 20) /* largest payload per message (a WRITE or READ chunk) */
#define MSP_HINT_MAX 64u           /* handles per UPCOMING hint */
#define MSP_NAME_MAX 63u           /* client name in HELLO */
#define MSP_MSG_MAX 127u           /* error message text in a reply */
#define MSP_LIST_MAX 128u          /* tensors per LIST reply */
#define MSP_PEERS_MAX 64u          /* peers per PEERS reply */
#define MSP_TRANSPORT_MAX 127u
#define MSP_DEPTH_MAX 8 /* nesting accepted when skipping unknown values */

#define MSP_HELLO_CONTROL 0x1u /* HELLO flag: a control session (job 0, read-only) */
#define MSP_OP_ONEWAY 0x100u   /* op field flag (version 2): answered only on error */
#define MSP_ALLOC_PIN 0x1u     /* ALLOC flag (version 2): the new tensor comes back acquired */
#define MSP_JOB_CONTROL 0u     /* job id reserved for control sessions */

/* ACQUIRE request flags (version 2). */
#define MSP_ACQ_MAP 0x1u   /* answer the tensor's location in a region mapped by the client */
#define MSP_ACQ_WRITE 0x2u /* the client may write in place: committed at release; left
                            * uncommitted if the session ends while holding this pin */
#define MSP_ACQ_IO 0x4u    /* pin only if resident and mapped; else no pin, region NONE */
#define MSP_ACQ_FLAGS (MSP_ACQ_MAP | MSP_ACQ_WRITE | MSP_ACQ_IO)
#define MSP_REGION_NONE UINT32_MAX /* ACQUIRE reply: the bytes are not in a mapped region */

typedef enum msp_op {
    MSP_OP_HELLO   = 1,
    MSP_OP_ALLOC   = 2,
    MSP_OP_FREE    = 3,
    MSP_OP_ACQUIRE = 4,
    MSP_OP_RELEASE = 5,
    MSP_OP_WRITE   = 6,
    MSP_OP_READ    = 7,
    MSP_OP_LOOKUP  = 8,
    MSP_OP_HINT    = 9,
    MSP_OP_STATS   = 10,
    MSP_OP_LIST    = 11,
    MSP_OP_PING    = 12,
    MSP_OP_AUTH    = 13, /* version 3: the client's proof of the shared secret */
    MSP_OP_PEERS   = 14, /* this daemon's cluster membership and peer table (paged) */
    MSP_OP_EVICT   = 15, /* control sessions: close a session, release its pins (u.h.handle: id) */
    MSP_OP_COMMIT  = 16, /* bytes written in place under a pin-table pin are committed */
    MSP_OP_COUNT
} msp_op_t;

/* One decoded request. `status` is MEMSVC_OK when the request decoded and validated; else the
 * error to answer for this id (the other requests of the batch are still served). */
typedef struct msp_req {
    uint32_t        op;     /* msp_op_t (may be unknown when status < 0) */
    uint64_t        id;     /* chosen by the client, echoed in the reply; 0 if unreadable */
    memsvc_status_t status; /* decode verdict for this request */
    bool            oneway; /* MSP_OP_ONEWAY: no reply unless it fails (FREE, RELEASE, HINT) */
    union {
        struct {
            uint32_t version, job, rank, device, flags;
            char     name[MSP_NAME_MAX + 1];
            bool     has_nonce;               /* version 3: the client holds a secret */
            uint8_t  nonce[MSP_NONCE_BYTES];  /* its challenge to the daemon */
        } hello;
        struct {
            uint8_t proof[MSP_PROOF_BYTES];
        } auth;
        struct {
            char          key[MEMSVC_KEY_MAX + 1];
            uint64_t      size;
            uint32_t      kind;
            memsvc_tags_t tags;
            bool          recomputable;
            uint64_t      recompute_ns;
            bool          durable;
            bool          pin; /* MSP_ALLOC_PIN */
        } alloc;
        struct {
            uint64_t handle;
            uint32_t flags; /* ACQUIRE: MSP_ACQ_* (0 when absent) */
        } h;                /* FREE, ACQUIRE, RELEASE; EVICT: handle is the session id */
        struct {
            uint64_t handle, offset, len;
        } io; /* WRITE, READ */
        struct {
            char key[MEMSVC_KEY_MAX + 1];
        } lookup;
        struct {
            uint32_t type;
            int32_t  step, layer, microbatch;
            uint32_t phase;
            uint32_t num_handles;
            uint64_t handles[MSP_HINT_MAX];
        } hint;
        struct {
            uint32_t job, start, max;
        } list;
        struct {
            uint32_t start; /* index of the first peer wanted */
        } peers;
    } u;
} msp_req_t;

/* One tensor record of a LIST or LOOKUP reply. */
typedef memsvc_tensor_info_t msp_tensor_t;

/* One reply. On error (status < 0) only `msg` is meaningful. */
typedef struct msp_rep {
    uint64_t        id;
    uint32_t        op;
    memsvc_status_t status;
    char            msg[MSP_MSG_MAX + 1];
    uint64_t        plen; /* READ, STATS, LIST: bytes of the AM payload that follows */
    union {
        struct {
            uint32_t version;
            uint64_t session;
            uint32_t num_devices;
            uint64_t hbm_bytes;
            uint64_t max_data;
            char     transport[MSP_TRANSPORT_MAX + 1];
            bool     auth;                   /* version 3: AUTH must follow (nonce below) */
            uint8_t  nonce[MSP_NONCE_BYTES]; /* the daemon's challenge to the client */
        } hello;
        struct {
            uint8_t proof[MSP_PROOF_BYTES]; /* the daemon's proof, after the client's */
        } auth;
        struct {
            uint64_t handle;
        } alloc;
        struct {
            uint32_t region; /* mapped region (the device index), MSP_REGION_NONE if none */
            uint64_t offset; /* byte offset of the tensor in that region */
            uint64_t size;   /* the tensor's size, bytes */
        } acquire;
        msp_tensor_t lookup;
        struct {
            uint64_t now_ns;
            uint32_t sessions;
        } ping;
        struct {
            uint32_t next; /* start of the next page; 0 when done */
            uint32_t count;
        } list; /* LIST and PEERS */
    } u;
} msp_rep_t;

/* A bounded output buffer. */
typedef struct msp_buf {
    uint8_t *data;
    size_t   cap;
    size_t   len;
    bool     overflow;
} msp_buf_t;

const char *msp_op_name(uint32_t op);

/* Does the op's request carry an AM payload (WRITE)? Such requests travel alone. */
bool msp_op_has_payload(uint32_t op);

/* Does the op's reply carry an AM payload (READ, STATS, LIST, PEERS)? Such replies travel
 * alone. */
bool msp_reply_has_payload(uint32_t op);

/* May the op travel one-way (MSP_OP_ONEWAY)? FREE, RELEASE and HINT. */
bool msp_op_oneway_ok(uint32_t op);

/* An upper bound of the encoded size of one request (for packing batches under
 * MSP_HEADER_MAX without encoding twice). */
size_t msp_request_bound(const msp_req_t *req);

/* Bytes of the array header of a message of n requests (at most). */
#define MSP_MSG_OVERHEAD 5u

/*
 * Encode n (1..MSP_BATCH_MAX) requests into buf. MEMSVC_ERR_TOO_LARGE if it does not fit,
 * MEMSVC_ERR_INVALID_PARAM for a count out of range or an unknown op.
 */
memsvc_status_t msp_encode_requests(const msp_req_t *reqs, size_t n, msp_buf_t *buf);

/*
 * Decode a request header. On MEMSVC_OK, *n_p requests are in reqs (each with its own
 * status: a malformed request does not spoil the others). Message-level errors (not an
 * array, truncated, more than `max` requests, trailing bytes): MEMSVC_ERR_PROTOCOL or
 * MEMSVC_ERR_TOO_LARGE, and *n_p is 0. Never reads past len, never allocates.
 */
memsvc_status_t msp_decode_requests(const void *data, size_t len, msp_req_t *reqs, size_t max,
                                    size_t *n_p);

/* Encode n replies. Same errors as requests. */
memsvc_status_t msp_encode_replies(const msp_rep_t *reps, size_t n, msp_buf_t *buf);

/* Decode a reply header. Errors as for msp_decode_requests; any malformed reply makes the
 * whole message invalid. */
memsvc_status_t msp_decode_replies(const void *data, size_t len, msp_rep_t *reps, size_t max,
                                   size_t *n_p);

/* Bodies of STATS and LIST replies (the AM payload). Decoders must consume all of data;
 * errors: MEMSVC_ERR_PROTOCOL, MEMSVC_ERR_TOO_LARGE (more devices/tensors than fit). */
memsvc_status_t msp_encode_stats(const memsvc_stats_t *stats, msp_buf_t *buf);
memsvc_status_t msp_decode_stats(const void *data, size_t len, memsvc_stats_t *stats_p);
memsvc_status_t msp_encode_list(const msp_tensor_t *tensors, uint32_t n, msp_buf_t *buf);
memsvc_status_t msp_decode_list(const void *data, size_t len, msp_tensor_t *tensors, uint32_t max,
                                uint32_t *n_p);
/* Body of a PEERS reply: the daemon's own membership, then n (<= MSP_PEERS_MAX) peers. */
memsvc_status_t msp_encode_peers(const memsvc_cluster_info_t *self, const memsvc_peer_info_t *peers,
                                 uint32_t n, msp_buf_t *buf);
memsvc_status_t msp_decode_peers(const void *data, size_t len, memsvc_cluster_info_t *self_p,
                                 memsvc_peer_info_t *peers, uint32_t max, uint32_t *n_p);

#endif /* MSP_PROTO_H */
