/* memsvc.h - libmemsvc: the public C API of the memsvc client (connect, tensors, hints, stats) */
#ifndef MEMSVC_H
#define MEMSVC_H

#include "client/memsvc_status.h"
#include "client/memsvc_types.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A trainer process connects to the memsvcd of its node (memsvc_connect), names itself by
 * job, rank and device, and then allocates tensors by key, writes and reads their bytes,
 * acquires them before use (which makes them resident on the device and pins them there) and
 * releases them after. Between acquire and release the daemon may move the tensor to host
 * memory or drop it; an acquire of a dropped tensor answers MEMSVC_RECOMPUTE and the owner
 * recomputes and writes it back.
 *
 * Thread safety: every call taking a memsvc_conn_h must be made by one thread at a time for
 * that connection (use one connection per thread, or serialize). Different connections are
 * independent and may be used from different threads at once. memsvc_strerror and the
 * *_name functions are thread-safe.
 *
 * Every call returns a memsvc_status_t: MEMSVC_OK, a positive outcome (MEMSVC_INPROGRESS,
 * MEMSVC_RECOMPUTE) or a negative error; memsvc_strerror() gives its message. Errors common
 * to all calls on a connection: MEMSVC_ERR_TRANSPORT (the daemon went away; the connection
 * is unusable, close it), MEMSVC_ERR_TIMEOUT (no answer within the connection's timeout),
 * MEMSVC_ERR_INVALID_PARAM (a NULL or out-of-range argument).
 */

/* The library's version (memsvc_version() gives the one linked at run time). */
#define MEMSVC_VERSION_STRING "0.2.0"

typedef struct memsvc_conn *memsvc_conn_h;   /* a connection (a session in the daemon) */
typedef struct memsvc_req  *memsvc_req_h;    /* an asynchronous operation */
typedef uint64_t            memsvc_handle_t; /* one tensor allocation; 0 is never valid */

#define MEMSVC_MAX_DEVICES 64

/* ---- connection ------------------------------------------------------------------------ */

enum memsvc_conn_field {
    MEMSVC_CONN_FIELD_ADDRESS    = 1u << 0,
    MEMSVC_CONN_FIELD_JOB        = 1u << 1,
    MEMSVC_CONN_FIELD_RANK       = 1u << 2,
    MEMSVC_CONN_FIELD_DEVICE     = 1u << 3,
    MEMSVC_CONN_FIELD_TIMEOUT_MS = 1u << 4,
    MEMSVC_CONN_FIELD_FLAGS      = 1u << 5,
    MEMSVC_CONN_FIELD_NAME       = 1u << 6,
    MEMSVC_CONN_FIELD_CORK_US    = 1u << 7,
    MEMSVC_CONN_FIELD_UNIX_PATH  = 1u << 8,
    MEMSVC_CONN_FIELD_SECRET_FILE = 1u << 9
};

enum memsvc_conn_flags {
    MEMSVC_CONN_CONTROL = 1u << 0, /* a control session (memsvc-ctl): stats, list, ping only */
    MEMSVC_CONN_SYNC    = 1u << 1, /* memsvc_free, memsvc_release and memsvc_hint wait for the
                                    * daemon's answer and return its status (protocol version 1
                                    * behaviour) instead of going one-way */
    MEMSVC_CONN_TCP     = 1u << 2  /* never the local socket: tcp as a remote client would */
};

typedef struct memsvc_conn_params {
    uint64_t    field_mask; /* which fields below are set (memsvc_conn_field) */
    const char *address;    /* "HOST:PORT" of the daemon; default "127.0.0.1:13337" */
    uint32_t    job;        /* job id, >= 1 (0 is reserved for control sessions); default 1 */
    uint32_t    rank;       /* rank within the job; default 0 */
    uint32_t    device;     /* NPU index on the node this session uses; default 0 */
    uint32_t    timeout_ms; /* bound on connect and on each blocking call; default 30000 */
    uint32_t    flags;      /* memsvc_conn_flags */
    const char *name;       /* shown in the daemon's logs; default "pid<N>" */
    uint32_t    cork_us;    /* a queued one-way operation is sent at the first library call
                             * this long after it was queued (or sooner: see "one-way
                             * operations" below); 0 sends each at once; default 100 */
    const char *unix_path;  /* the daemon's local socket; default derived from a loopback
                             * address's port (docs/daemon.md), e.g.
                             * /run/memsvc/memsvcd-13337.sock */
    const char *secret_file; /* the cluster secret, proven to a daemon reached over tcp (and
                              * the daemon must prove it back); default $MEMSVC_SECRET_FILE,
                              * else none. Mode 0600, owned by this user (docs/security.md) */
} memsvc_conn_params_t;

/*
 * Connect and perform the handshake (protocol version, job, rank, device; over tcp with a
 * secret, the mutual proof of it).
 *
 * Path: with a loopback address (or an explicit unix_path) the library first tries the
 * daemon's Unix socket: the daemon then serves this connection from a UCX worker of its own
 * over shared memory (sysv), and, in backed memory mode, hands over the device's memory
 * so that memsvc_acquire_map gives pointers and memsvc_read/write copy through them. Without
 * a socket there (or with MEMSVC_CONN_TCP) it connects over tcp, and says so on stderr and in
 * memsvc_conn_transport. Errors:
 * MEMSVC_ERR_VERSION (the daemon speaks another protocol version), MEMSVC_ERR_TRANSPORT (no
 * daemon there), MEMSVC_ERR_TIMEOUT (a daemon accepted but did not answer within the
 * timeout, e.g. a stopped or hung one: the local socket's silence is not followed by a try
 * over tcp), MEMSVC_ERR_SHUTDOWN (it is stopping), MEMSVC_ERR_INVALID_PARAM (device out of
 * range, job 0 without MEMSVC_CONN_CONTROL, malformed address), MEMSVC_ERR_PERMISSION (the job
 * belongs to another user), MEMSVC_ERR_AUTH (a tcp connection the daemon cannot identify and
 * no secret, a wrong secret, an unsafe secret file, or a daemon that did not prove the secret;
 * the reason is printed on stderr). *conn_p is set only on success; the library never aborts
 * the process, whatever the daemon does.
 *
 * When the daemon stops (SIGTERM) it tells its clients: the connection's calls in flight and
 * every later call answer MEMSVC_ERR_SHUTDOWN (MEMSVC_ERR_TRANSPORT if the notice was missed);
 * close it and connect again once the daemon is back.
 */
memsvc_status_t memsvc_connect(const memsvc_conn_params_t *params, memsvc_conn_h *conn_p);

/* Close the connection. Queued one-way operations are sent (their errors are lost);
 * outstanding requests are freed; the daemon releases this session's
 * pins and frees its non-durable tensors (durable ones are kept for re-attach). NULL is a no-op. */
void memsvc_close(memsvc_conn_h conn);

/* The path and UCX transport lanes this connection uses, e.g.
 * "shm: sysv/memory.0(am) (local worker, mapped, /run/memsvc/memsvcd-13337.sock)"
 * or "tcp: tcp/lo.0(am)" ("(am)": the lane that carries the messages; a fallback to tcp says
 * why). Valid until memsvc_close. */
const char *memsvc_conn_transport(memsvc_conn_h conn);

/* Round trip to the daemon; *rtt_ns_p (may be NULL) gets the time it took. */
memsvc_status_t memsvc_ping(memsvc_conn_h conn, uint64_t *rtt_ns_p);

/* ---- tensors --------------------------------------------------------------------------- */

enum memsvc_alloc_field {
    MEMSVC_ALLOC_FIELD_KIND         = 1u << 0,
    MEMSVC_ALLOC_FIELD_TAGS         = 1u << 1,
    MEMSVC_ALLOC_FIELD_RECOMPUTE_NS = 1u << 2,
    MEMSVC_ALLOC_FIELD_FLAGS        = 1u << 3
};

enum memsvc_alloc_flags {
    MEMSVC_ALLOC_DURABLE      = 1u << 0, /* never dropped; kept after a crash for re-attach */
    MEMSVC_ALLOC_RECOMPUTABLE = 1u << 1, /* may be dropped; the owner recomputes it */
    MEMSVC_ALLOC_PIN          = 1u << 2  /* allocated and acquired in one: it comes back pinned
                                          * and needs a memsvc_release like an acquire */
};

typedef struct memsvc_alloc_params {
    uint64_t      field_mask;   /* memsvc_alloc_field */
    memsvc_kind_t kind;         /* default MEMSVC_KIND_ACTIVATION */
    memsvc_tags_t tags;         /* default MEMSVC_TAGS_NONE */
    uint64_t      recompute_ns; /* device time to recompute it; default 0 */
    uint32_t      flags;        /* memsvc_alloc_flags; default 0 */
} memsvc_alloc_params_t;

/*
 * Allocate `size` bytes on the session's device under `key` (1..MEMSVC_KEY_MAX bytes,
 * unique among the job's live tensors). The new tensor is resident and not pinned; its
 * contents are undefined until written. params may be NULL. Errors: MEMSVC_ERR_EXISTS,
 * MEMSVC_ERR_TOO_LARGE (larger than the device), MEMSVC_ERR_NO_MEMORY,
 * MEMSVC_ERR_FRAGMENTED (nothing more could be evicted), MEMSVC_ERR_INVALID_PARAM.
 */
memsvc_status_t memsvc_alloc(memsvc_conn_h conn, const char *key, uint64_t size,
                             const memsvc_alloc_params_t *params, memsvc_handle_t *handle_p);

/* End a tensor (pinned or not; other sessions' pins on it go too). One-way (see below): the
 * daemon's errors, MEMSVC_ERR_NOT_FOUND (unknown, already freed, or another job's: a handle of
 * another job is always answered as one nobody holds), are deferred; on a MEMSVC_CONN_SYNC
 * connection they are returned. */
memsvc_status_t memsvc_free(memsvc_conn_h conn, memsvc_handle_t handle);

/*
 * Copy len bytes from buf into the tensor at offset (write) or from the tensor into buf
 * (read). Legal whether the tensor is on its device, swapped out to host or spilled to disk
 * (read and written there, where it stays); while it is being moved the call waits (up to
 * the timeout). A write of a durable tensor returns once its bytes are kept for a restart of
 * the daemon (MEMSVC_ERR_HOST_MEMORY if the daemon's durable arena is full: written, but not
 * kept). On a local connection with mapped memory,
 * transfers of 64 KiB and more to a tensor on its device are one memcpy through the mapping,
 * with the tensor pinned around it, in the pin table when it can be (then no message, or one
 * for a durable tensor's write); a write left unfinished by this process's death leaves the
 * tensor uncommitted. Otherwise transfers are split into 4 MiB messages, 3 in flight; bytes
 * go as UCX active-message payloads (rendezvous when large). Errors:
 * MEMSVC_ERR_OUT_OF_RANGE (past the tensor's end), MEMSVC_ERR_NOT_FOUND (also another job's),
 * MEMSVC_ERR_UNSUPPORTED (daemon in phantom memory mode), MEMSVC_ERR_ILLEGAL_STATE (dropped,
 * or uncommitted for a read: acquire it first).
 */
memsvc_status_t memsvc_write(memsvc_conn_h conn, memsvc_handle_t handle, uint64_t offset,
                             const void *buf, uint64_t len);
memsvc_status_t memsvc_read(memsvc_conn_h conn, memsvc_handle_t handle, uint64_t offset, void *buf,
                            uint64_t len);

/*
 * Make the tensor resident on its device and pin it there until memsvc_release. Returns
 * MEMSVC_OK, or MEMSVC_RECOMPUTE when the daemon had dropped it: space is pinned and the
 * caller must recompute the tensor and memsvc_write it. Errors: MEMSVC_ERR_NOT_FOUND,
 * MEMSVC_ERR_NO_MEMORY, MEMSVC_ERR_FRAGMENTED. Acquires nest: each needs its own release.
 */
memsvc_status_t memsvc_acquire(memsvc_conn_h conn, memsvc_handle_t handle);

/*
 * Acquire (as memsvc_acquire: resident and pinned, MEMSVC_OK or MEMSVC_RECOMPUTE) and set
 * *addr_p to the tensor's bytes in this process, valid until the matching memsvc_release.
 * *addr_p is NULL when the bytes are not mapped here (a tcp connection, phantom memory, a
 * daemon started with --no-map, a tensor of another device); the pin holds all the same and
 * memsvc_read/memsvc_write work.
 *
 * The pointer may be read and written (size bytes of the tensor, no more) until the release;
 * after it, the daemon may move other bytes there. Writes through it are committed at the
 * release: if this session ends (close, crash, kill) while holding the pin, the tensor is
 * marked uncommitted and its next acquire answers MEMSVC_RECOMPUTE (READ answers
 * MEMSVC_ERR_ILLEGAL_STATE) until it is written again (readers: memsvc_acquire_map_ro). A
 * mapping shows the whole device's memory (docs/api.md, "Mapped tensors"). A tensor acquired
 * before, resident and not durable, is pinned in the connection's pin table without a message
 * (docs/api.md, "Acquires without a message"); the rules above hold all the same.
 */
memsvc_status_t memsvc_acquire_map(memsvc_conn_h conn, memsvc_handle_t handle, void **addr_p);

/*
 * As memsvc_acquire_map, for reading only: the pin is not a write pin, so this session ending
 * while it holds it leaves the tensor committed (e.g. parameters read in the forward pass
 * stay valid for re-attach when the trainer crashes). Writing through *addr_p is a bug the
 * daemon cannot see: such bytes may be served as valid.
 */
memsvc_status_t memsvc_acquire_map_ro(memsvc_conn_h conn, memsvc_handle_t handle,
                                      const void **addr_p);

/* Unpin. One-way (see below): MEMSVC_ERR_NOT_PINNED (no matching acquire by this session),
 * MEMSVC_ERR_NOT_FOUND are deferred; on a MEMSVC_CONN_SYNC connection they are returned.
 * The daemon sees it before any later request of this connection (a
 * release followed by an acquire arrives in that order). */
memsvc_status_t memsvc_release(memsvc_conn_h conn, memsvc_handle_t handle);

/* Batched forms: n (1..64) handles in one message; status_p[i] gets each outcome. The call
 * returns MEMSVC_OK when every outcome is >= 0, else the first error. */
memsvc_status_t memsvc_acquire_many(memsvc_conn_h conn, const memsvc_handle_t *handles, size_t n,
                                    memsvc_status_t *status_p);
memsvc_status_t memsvc_release_many(memsvc_conn_h conn, const memsvc_handle_t *handles, size_t n,
                                    memsvc_status_t *status_p);

/*
 * Asynchronous forms: send the request and return at once with *req_p set (MEMSVC_INPROGRESS),
 * or fail at once (an error, *req_p untouched). Complete it with memsvc_test or memsvc_wait.
 * (memsvc_release_nb is answered, unlike memsvc_release.) Batches can be asynchronous too.
 */
memsvc_status_t memsvc_acquire_nb(memsvc_conn_h conn, memsvc_handle_t handle, memsvc_req_h *req_p);
memsvc_status_t memsvc_release_nb(memsvc_conn_h conn, memsvc_handle_t handle, memsvc_req_h *req_p);

/* Progress the connection once; MEMSVC_INPROGRESS if req is not done, else its final status,
 * and req is freed. */
memsvc_status_t memsvc_test(memsvc_req_h req);

/* Wait up to timeout_ms (negative: the connection's timeout) for req. On completion returns
 * its final status and frees req; on MEMSVC_ERR_TIMEOUT req stays valid (wait again or
 * memsvc_req_free it). */
memsvc_status_t memsvc_wait(memsvc_req_h req, int timeout_ms);

/*
 * Progress the connection without waiting: push out sends UCX still holds, take the answers
 * that arrived (completing requests for memsvc_test). A caller that keeps asynchronous requests
 * in flight while it does other work (computes) calls it now and then, e.g. before sleeping,
 * so that its requests leave and their answers are in when it needs them. Returns how many
 * transport events it handled (0: nothing to do).
 */
unsigned memsvc_progress(memsvc_conn_h conn);

/* Abandon a request; a late answer is discarded (an acquire that still completes stays
 * pinned: release it). */
void memsvc_req_free(memsvc_req_h req);

/* ---- lookup, hints ---------------------------------------------------------------------- */

/* What the daemon knows of a tensor. */
typedef struct memsvc_tensor_info {
    memsvc_handle_t handle;
    char            key[MEMSVC_KEY_MAX + 1];
    uint64_t        size;
    memsvc_kind_t   kind;
    memsvc_state_t  state;
    uint32_t        device;
    uint32_t        job;
    uint32_t        rank; /* rank that allocated it */
    uint32_t        pins;
    bool            durable;
    bool            recomputable;
    memsvc_tags_t   tags;
} memsvc_tensor_info_t;

/*
 * Find a live tensor of the session's job by key, e.g. a durable tensor kept after this
 * rank's previous process died; the session then owns it. MEMSVC_ERR_NOT_FOUND if none.
 */
memsvc_status_t memsvc_lookup(memsvc_conn_h conn, const char *key, memsvc_tensor_info_t *info_p);

typedef struct memsvc_hint {
    memsvc_hint_type_t     type;
    int32_t                step;  /* STEP_BEGIN/END; MEMSVC_TAG_NONE if unknown */
    int32_t                layer; /* LAYER_BEGIN/END */
    int32_t                microbatch;
    memsvc_phase_t         phase;   /* PHASE */
    const memsvc_handle_t *handles; /* UPCOMING: tensors about to be used (<= 64) */
    size_t                 num_handles;
} memsvc_hint_t;

/* Give the daemon's policy a hint. Errors at once: MEMSVC_ERR_INVALID_PARAM,
 * MEMSVC_ERR_TOO_LARGE (more than 64 handles). One-way (see below): MEMSVC_ERR_NOT_FOUND (an
 * UPCOMING handle is unknown, or another job's) is deferred, or returned on a
 * MEMSVC_CONN_SYNC connection. */
memsvc_status_t memsvc_hint(memsvc_conn_h conn, const memsvc_hint_t *hint);

/* ---- one-way operations and deferred errors ---------------------------------------------- */

/*
 * memsvc_free, memsvc_release and memsvc_hint are one-way: the daemon answers them only when
 * they fail. The call checks its arguments, queues the operation and returns MEMSVC_OK (or an
 * error found at once: MEMSVC_ERR_INVALID_PARAM, MEMSVC_ERR_TOO_LARGE, MEMSVC_ERR_TRANSPORT).
 * Queued operations are sent, in order and before it, with the next request that needs an
 * answer (in the same message when they fit), or when a call has to wait for an answer that
 * has not arrived (memsvc_wait, memsvc_test, memsvc_flush, any synchronous call), when 64 are
 * queued, or at the first library call `cork_us` after the oldest was queued. So the daemon sees
 * every request of a connection in the order it was made. A caller that goes quiet for long after a
 * release (computing) should call memsvc_flush, or connect with cork_us = 0, so that the daemon can
 * move the tensor meanwhile.
 *
 * A failed one-way operation never changes the status of another call. Its error is kept in
 * the connection's deferred-error queue (the first 256 unread; later ones are only counted):
 * read it with memsvc_errors. memsvc_flush waits until the daemon has handled every one-way
 * operation made so far and returns MEMSVC_ERR_DEFERRED when errors are waiting to be read.
 */

typedef enum memsvc_op {
    MEMSVC_OP_ALLOC   = 2,
    MEMSVC_OP_FREE    = 3,
    MEMSVC_OP_ACQUIRE = 4,
    MEMSVC_OP_RELEASE = 5,
    MEMSVC_OP_HINT    = 9
} memsvc_op_t;

#define MEMSVC_MESSAGE_MAX 127

/* One failed one-way operation. */
typedef struct memsvc_deferred_error {
    memsvc_status_t status;               /* what the daemon answered */
    memsvc_op_t     op;                   /* FREE, RELEASE or HINT */
    memsvc_handle_t handle;               /* the handle it named (0 for a hint) */
    uint64_t        seq;                  /* its number among the connection's one-way
                                           * operations, from 1 (see oneway_issued) */
    char message[MEMSVC_MESSAGE_MAX + 1]; /* the daemon's explanation */
} memsvc_deferred_error_t;

/*
 * Send what is queued and wait (up to the connection's timeout) until the daemon has handled
 * every one-way operation made before the call. MEMSVC_OK, MEMSVC_ERR_DEFERRED when the
 * deferred-error queue is not empty (read it with memsvc_errors), or a transport error.
 */
memsvc_status_t memsvc_flush(memsvc_conn_h conn);

/* Move up to max deferred errors, oldest first, into errors[]; returns how many. */
size_t memsvc_errors(memsvc_conn_h conn, memsvc_deferred_error_t *errors, size_t max);

enum memsvc_conn_attr_field {
    MEMSVC_CONN_ATTR_FIELD_ONEWAY  = 1u << 0, /* oneway_issued, _completed, _failed, queued */
    MEMSVC_CONN_ATTR_FIELD_ERRORS  = 1u << 1, /* errors_pending, errors_lost */
    MEMSVC_CONN_ATTR_FIELD_SESSION = 1u << 2  /* session, protocol */
};

typedef struct memsvc_conn_attr {
    uint64_t field_mask;       /* which fields to fill (memsvc_conn_attr_field) */
    uint64_t oneway_issued;    /* one-way operations made (the last one's seq) */
    uint64_t oneway_completed; /* of those, known to be handled by the daemon (in order) */
    uint64_t oneway_failed;    /* of those, failed */
    uint32_t queued;           /* still queued in the library, not sent */
    uint32_t errors_pending;   /* deferred errors not read yet */
    uint64_t errors_lost;      /* deferred errors that did not fit in the queue */
    uint64_t session;          /* the daemon's session id */
    uint32_t protocol;         /* the wire protocol version in use */
} memsvc_conn_attr_t;

/* Fill the fields of *attr asked for in attr->field_mask (no communication). */
memsvc_status_t memsvc_conn_query(memsvc_conn_h conn, memsvc_conn_attr_t *attr);

/* ---- batches: an operator's requests in one message -------------------------------------- */

/*
 * A batch collects allocs, acquires, releases, frees and hints and sends them in one message
 * (several when more than 64 or 4096 header bytes: they still go back to back, in order)
 * with one round trip in all. Each entry is answered and keeps its own status; entries run
 * in the order they were added, after every request made before the submit. A typical
 * operator: alloc its outputs with MEMSVC_ALLOC_PIN, acquire its inputs, submit, compute,
 * then memsvc_release (one-way) and memsvc_free what died. For prefetch, submit the next
 * operator's batch asynchronously before computing this one.
 *
 * A batch belongs to one connection and follows its threading rule. It is reusable: after
 * completion its results stay readable until memsvc_batch_reset or another add.
 */
typedef struct memsvc_batch *memsvc_batch_h;

/* An empty batch. MEMSVC_ERR_NO_RESOURCE. */
memsvc_status_t memsvc_batch_create(memsvc_conn_h conn, memsvc_batch_h *batch_p);

/* Free a batch. One still in flight is abandoned (its allocations, if they complete, stay
 * owned by the session but their handles are lost; acquires stay pinned until close). */
void memsvc_batch_destroy(memsvc_batch_h batch);

/* Empty the batch for reuse. MEMSVC_ERR_BUSY while in flight. */
memsvc_status_t memsvc_batch_reset(memsvc_batch_h batch);

/*
 * Add an entry; *index_p (may be NULL) gets its index (0, 1, ...). The arguments are those of
 * memsvc_alloc, memsvc_acquire, memsvc_release, memsvc_free, memsvc_hint and are checked
 * here (MEMSVC_ERR_INVALID_PARAM, MEMSVC_ERR_TOO_LARGE for a hint). MEMSVC_ERR_BUSY while in
 * flight; MEMSVC_ERR_NO_RESOURCE when the batch cannot grow.
 */
memsvc_status_t memsvc_batch_alloc(memsvc_batch_h batch, const char *key, uint64_t size,
                                   const memsvc_alloc_params_t *params, size_t *index_p);
memsvc_status_t memsvc_batch_acquire(memsvc_batch_h batch, memsvc_handle_t handle, size_t *index_p);
memsvc_status_t memsvc_batch_release(memsvc_batch_h batch, memsvc_handle_t handle, size_t *index_p);
memsvc_status_t memsvc_batch_free(memsvc_batch_h batch, memsvc_handle_t handle, size_t *index_p);
memsvc_status_t memsvc_batch_hint(memsvc_batch_h batch, const memsvc_hint_t *hint, size_t *index_p);

/* Entries in the batch. */
size_t memsvc_batch_size(memsvc_batch_h batch);

/*
 * Send the batch. With req_p NULL, wait for every entry: MEMSVC_OK when every entry's status
 * is >= 0 (some may be MEMSVC_RECOMPUTE), else the first error (read each with
 * memsvc_batch_result). With req_p, return MEMSVC_INPROGRESS at once and complete *req_p with
 * memsvc_test / memsvc_wait (which then return what the synchronous form would);
 * memsvc_req_free abandons it (see memsvc_batch_destroy). An empty batch is MEMSVC_OK at
 * once. MEMSVC_ERR_BUSY if it is already in flight.
 */
memsvc_status_t memsvc_batch_submit(memsvc_batch_h batch, memsvc_req_h *req_p);

/*
 * The outcome of entry `index` of a completed batch: its status (MEMSVC_INPROGRESS while in
 * flight, MEMSVC_ERR_INVALID_PARAM for an index out of range, MEMSVC_ERR_CANCELED if it was
 * abandoned); for an alloc, *handle_p (may be NULL) gets the new handle.
 */
memsvc_status_t memsvc_batch_result(memsvc_batch_h batch, size_t index, memsvc_handle_t *handle_p);

/* The version of the library, "MAJOR.MINOR.PATCH", and the wire protocol it speaks. */
const char *memsvc_version(uint32_t *protocol_p);

/* ---- stats and listing ------------------------------------------------------------------ */

typedef struct memsvc_dev_stats {
    uint64_t capacity, allocated, reserved, free, largest_free; /* HBM, bytes */
    double   fragmentation;                                     /* 1 - largest_free / free */
    uint64_t peak_reserved;
    uint64_t tensors_by_state[MEMSVC_STATE_COUNT]; /* this device's tensors */
    uint64_t bytes_by_state[MEMSVC_STATE_COUNT];
    uint64_t tensors_by_kind[MEMSVC_KIND_COUNT];  /* live tensors, any state */
    uint64_t resident_by_kind[MEMSVC_KIND_COUNT]; /* bytes on device */
    uint64_t pinned_tensors, pinned_bytes;
    uint64_t swap_out_bytes, swap_outs, swap_in_bytes, swap_ins;
    uint64_t spill_bytes, drops, recomputes;
    uint64_t stall_ns, stalls, oom_events, fragmented_events;
} memsvc_dev_stats_t;

/* What one job holds (STATS lists the first MEMSVC_STATS_JOBS_MAX jobs holding anything). */
#define MEMSVC_STATS_JOBS_MAX 32
typedef struct memsvc_job_stats {
    uint32_t job;
    uint64_t tensors;                /* live tensors */
    uint64_t hbm_bytes;              /* on device, moving in or out */
    uint64_t host_bytes, disk_bytes; /* in the host pool; spilled to disk */
    uint64_t inflight_bytes;         /* bulk bytes in flight for its sessions */
    uint64_t quota_refused;          /* requests refused by its quota (MEMSVC_ERR_QUOTA) */
} memsvc_job_stats_t;

/* One live session (STATS lists the first MEMSVC_STATS_SESSIONS_MAX, oldest first). */
#define MEMSVC_STATS_SESSIONS_MAX 64
#define MEMSVC_SESSION_BOUND 0x1u   /* said HELLO */
#define MEMSVC_SESSION_CONTROL 0x2u /* a control session */
#define MEMSVC_SESSION_LOCAL 0x4u   /* came through the local (Unix) socket */
typedef struct memsvc_session_stats {
    uint64_t id;             /* what memsvc_evict takes */
    uint32_t job, rank, device;
    uint32_t pid;            /* local sessions: the client's pid (0: unknown) */
    uint32_t flags;          /* MEMSVC_SESSION_* */
    uint64_t pins;           /* pins held (acquires not released) */
    uint64_t oldest_pin_ns;  /* age of its oldest pin (0: none) */
    uint64_t idle_ns;        /* since its last request */
    uint64_t inflight_bytes; /* bulk bytes in flight (back-pressure budget in use) */
    uint64_t queued;         /* messages waiting for that budget */
    uint64_t requests, errors;
} memsvc_session_stats_t;

typedef struct memsvc_stats {
    char               node[32]; /* preset name */
    char               mode[16]; /* "backed" or "phantom" */
    char               policy[64];
    char               transport[128]; /* transports of the server's sessions */
    uint64_t           uptime_ns;
    uint64_t           host_capacity, host_used, host_peak;
    uint64_t           disk_capacity, disk_used;
    uint64_t           live_tensors, moves_in_flight;
    uint64_t           sessions, sessions_total, orphans; /* orphans: kept durable tensors */
    uint64_t           requests, errors;
    uint32_t           num_devices;
    memsvc_dev_stats_t dev[MEMSVC_MAX_DEVICES];
    /* Durable state (docs/daemon.md, "Durable state and restart"): durable tensors whose
     * bytes are in the durable arena now, and their bytes; tensors recovered at the daemon's
     * start; journal records or tensor bytes found corrupt then (never served). */
    uint64_t           durable_tensors, durable_bytes, durable_recovered, durable_corrupt;
    /* limits (docs/daemon.md, "Limits") */
    uint64_t sessions_refused;   /* connections refused: --max-sessions, handshakes at once */
    uint64_t handshake_timeouts; /* sessions closed for want of a HELLO in time */
    uint64_t overloads;          /* messages answered MEMSVC_ERR_OVERLOAD */
    uint64_t deferred;           /* messages that waited for a session's bytes in flight */
    uint64_t evictions;          /* sessions closed by memsvc_evict */
    uint32_t num_jobs, num_sessions;
    memsvc_job_stats_t     job[MEMSVC_STATS_JOBS_MAX];
    memsvc_session_stats_t session[MEMSVC_STATS_SESSIONS_MAX];
    /* Local clients' pin tables (docs/api.md, "Acquires without a message"): acquires they
     * made in place (counted by the daemon some milliseconds later, and at each STATS), slots
     * published to them, revoked before a move or free, and moves refused because a client
     * held the tensor there. */
    uint64_t fast_acquires, fast_published, fast_revoked, fast_held;
} memsvc_stats_t;

/* Figures of the daemon (any session may ask). A session of a user who does not administer the
 * daemon gets the node's room but counts of its own jobs only (docs/security.md). */
memsvc_status_t memsvc_stats(memsvc_conn_h conn, memsvc_stats_t *stats_p);

/* ---- cluster membership ----------------------------------------------------------------- */

/* How a daemon sees one of its peers (docs/cluster.md, "Membership"). */
typedef enum memsvc_peer_state {
    MEMSVC_PEER_CONNECTING = 0, /* not yet reached since this daemon started */
    MEMSVC_PEER_UP         = 1, /* authenticated, heartbeats arriving */
    MEMSVC_PEER_SUSPECT    = 2, /* a heartbeat missed or a transport error; not yet down */
    MEMSVC_PEER_DOWN       = 3, /* nothing heard for the peer timeout */
    MEMSVC_PEER_REFUSED    = 4, /* its cluster file or secret differs (reason says which) */
    MEMSVC_PEER_STATE_COUNT
} memsvc_peer_state_t;

/* "connecting", "up", "suspect", "down", "refused". */
const char *memsvc_peer_state_name(memsvc_peer_state_t state);

typedef struct memsvc_peer_info {
    char                name[32];    /* its name in the cluster file */
    char                address[64]; /* its HOST:PORT in the cluster file */
    memsvc_peer_state_t state;
    char                reason[96];  /* why it is suspect, down or refused ("" when up) */
    uint64_t            heard_ago_ns; /* since its last message; UINT64_MAX: never heard */
    uint64_t            state_age_ns; /* time in the current state */
    uint64_t            boot_id;      /* its boot id (random per start; 0: never heard) */
    uint64_t            restarts;     /* boot id changes seen */
    /* its figures, from its last heartbeat */
    uint64_t hbm_used, hbm_total;   /* all devices, bytes */
    uint64_t host_used, host_total; /* host pool, bytes */
    uint64_t sessions, uptime_ns;
    /* replication with it (docs/cluster.md, "Replication"), as this daemon counts it */
    bool     target;                     /* it holds copies of this node's durable tensors */
    uint64_t acked_tensors;              /* of those, current versions it acknowledged */
    uint64_t owed_tensors, owed_bytes;   /* current versions it has not acknowledged yet */
    uint64_t held_tensors, held_bytes;   /* copies of its durable tensors kept here */
} memsvc_peer_info_t;

typedef struct memsvc_cluster_info {
    char     node[32];         /* this daemon's name in its cluster file; "" if not in one */
    char     cluster_hash[65]; /* hex of its cluster file's hash */
    uint64_t boot_id;
    uint32_t num_peers;
    /* replication (docs/cluster.md, "Replication"); 0 when off */
    uint32_t replicas;                 /* copies of each durable tensor wanted (--replicas) */
    uint32_t targets;                  /* peers placed to hold them now (fewer: not enough) */
    uint64_t repl_rate;                /* bytes/s cap (--repl-rate; 0: unlimited) */
    uint64_t owed_tensors, owed_bytes; /* (tensor, target) versions not yet acknowledged */
    uint64_t lag_ns;                   /* since the oldest of them was committed (0: none) */
    uint64_t sent_bytes;               /* replica bytes sent since start */
    uint64_t held_tensors, held_bytes, held_capacity; /* other nodes' copies kept here */
    /* recovery from peers (a daemon that started empty) */
    uint64_t recovery_wanted;   /* copies asked for (an offer of a tensor this node lacks) */
    uint64_t recovery_restored; /* of those, back in this node's durable state */
    uint64_t recovery_bytes;    /* their bytes */
    uint64_t recovery_failed;   /* lost on the way (link down, checksum, no room) */
    /* the peer tier (docs/cluster.md, "The peer tier") */
    uint64_t tier_out_tensors, tier_out_bytes;   /* this node's tensors kept on peers now */
    uint64_t tier_held_tensors, tier_held_bytes; /* other nodes' tensors kept here (same room) */
} memsvc_cluster_info_t;

typedef bool (*memsvc_peer_cb_t)(void *arg, const memsvc_peer_info_t *peer);

/*
 * The daemon's cluster membership into *info_p (node "" when it runs without --cluster), and
 * its peer table, one cb call per peer (return false to stop). Any session may ask. A daemon
 * older than this call answers MEMSVC_ERR_PROTOCOL.
 */
memsvc_status_t memsvc_peers(memsvc_conn_h conn, memsvc_cluster_info_t *info_p, memsvc_peer_cb_t cb,
                             void *arg);

/*
 * Close session `session` (an id from memsvc_stats) as if its process had died: its pins are
 * released, its non-durable tensors freed, its durable ones kept for re-attach
 * (--keep-durable). For a client that stopped (SIGSTOP, a debugger) or hangs holding pins.
 * Control sessions only (else MEMSVC_ERR_ACCESS); MEMSVC_ERR_NOT_FOUND if no such live session.
 * The evicted client's next call fails (MEMSVC_ERR_TRANSPORT: the connection is gone).
 */
memsvc_status_t memsvc_evict(memsvc_conn_h conn, uint64_t session);

/* Called once per tensor; return false to stop. */
typedef bool (*memsvc_list_cb_t)(void *arg, const memsvc_tensor_info_t *info);

/*
 * Visit the tensors of a job: a normal session may list only its own job (other jobs:
 * MEMSVC_ERR_ACCESS); a control session any job, or all with job == UINT32_MAX; of those, a
 * control session of an ordinary user sees only jobs its user owns (docs/security.md).
 */
memsvc_status_t memsvc_list(memsvc_conn_h conn, uint32_t job, memsvc_list_cb_t cb, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* MEMSVC_H */
