/* memsvc_status.h - the one status type of memsvc: 0 success, >0 progress, <0 named errors */
#ifndef MEMSVC_STATUS_H
#define MEMSVC_STATUS_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every call of the client library, the engine, the simulator and the tools returns a
 * memsvc_status_t. Zero is success. Positive values are outcomes that are not errors
 * (an operation was started and completes later; a dropped tensor must be recomputed by
 * its owner). Negative values are errors; each has a stable name and a message given by
 * memsvc_strerror(). The numeric values are part of the wire protocol: never renumber.
 */
typedef enum memsvc_status {
    MEMSVC_OK                 = 0,
    MEMSVC_INPROGRESS         = 1,   /* started; completes later (wait/test or callback) */
    MEMSVC_RECOMPUTE          = 2,   /* tensor was dropped: owner recomputes and writes it */

    MEMSVC_ERR_INVALID_PARAM  = -1,  /* an argument is out of range or malformed */
    MEMSVC_ERR_NO_MEMORY      = -2,  /* device memory exhausted and nothing can be evicted */
    MEMSVC_ERR_FRAGMENTED     = -3,  /* enough free bytes, but no free block large enough */
    MEMSVC_ERR_HOST_MEMORY    = -4,  /* host pool (and disk) exhausted */
    MEMSVC_ERR_NO_RESOURCE    = -5,  /* the process itself could not get memory or a resource */
    MEMSVC_ERR_NOT_FOUND      = -6,  /* no such tensor handle or key */
    MEMSVC_ERR_EXISTS         = -7,  /* a live tensor already has this key */
    MEMSVC_ERR_ILLEGAL_STATE  = -8,  /* the operation is not legal in the tensor's state */
    MEMSVC_ERR_PINNED         = -9,  /* the tensor is pinned (acquired) and cannot move */
    MEMSVC_ERR_NOT_PINNED     = -10, /* release without a matching acquire */
    MEMSVC_ERR_OUT_OF_RANGE   = -11, /* offset/length beyond the tensor's end */
    MEMSVC_ERR_UNKNOWN_KEY    = -12, /* unknown configuration key, preset or policy name */
    MEMSVC_ERR_PARSE          = -13, /* malformed value, number, size, rate or duration */
    MEMSVC_ERR_IO             = -14, /* file or disk I/O failed */
    MEMSVC_ERR_PROTOCOL       = -15, /* malformed, truncated or unknown message */
    MEMSVC_ERR_VERSION        = -16, /* incompatible protocol or file format version */
    MEMSVC_ERR_ACCESS         = -17, /* the object belongs to another job */
    MEMSVC_ERR_TOO_LARGE      = -18, /* a size exceeds a limit (message, tensor, pool) */
    MEMSVC_ERR_TRANSPORT      = -19, /* the transport failed or the peer went away */
    MEMSVC_ERR_TIMEOUT        = -20, /* the operation did not complete in time */
    MEMSVC_ERR_UNSUPPORTED    = -21, /* not supported in this mode or build */
    MEMSVC_ERR_BUSY           = -22, /* the object is in use (for example: moving) */
    MEMSVC_ERR_CANCELED       = -23, /* the operation was canceled (tensor freed, shutdown) */
    MEMSVC_ERR_FORMAT         = -24, /* malformed trace or input file */
    MEMSVC_ERR_DEFERRED       = -25, /* one-way operations failed: read them with memsvc_errors */
    MEMSVC_ERR_PERMISSION     = -26, /* the job belongs to another user (docs/security.md) */
    MEMSVC_ERR_AUTH           = -27, /* authentication failed: no secret, a wrong one, an
                                      * unsafe secret file, or a daemon that did not prove it */
    MEMSVC_ERR_SHUTDOWN       = -28, /* the daemon is shutting down: reconnect after its restart */
    MEMSVC_ERR_QUOTA          = -29, /* the job's quota (the message names which) is used up */
    MEMSVC_ERR_OVERLOAD       = -30, /* the session's (or daemon's) request queue is full */

    MEMSVC_ERR_LAST           = -31
} memsvc_status_t;

/* Message for a status; never NULL (unknown values give "unknown status"). */
const char *memsvc_strerror(memsvc_status_t status);

/* Stable identifier of a status, e.g. "MEMSVC_ERR_NO_MEMORY"; never NULL. */
const char *memsvc_status_name(memsvc_status_t status);

/*
 * Internal helper shared by the project's modules (not part of the client API): format an
 * error message into err[errlen]; does nothing when err is NULL or errlen is 0.
 */
void memsvc_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Internal helper: write s (NULL: "") to out as a JSON string literal. Quotes, backslashes and
 * control bytes are escaped; bytes that are not valid UTF-8 become U+FFFD, so that keys and
 * names from the network or a trace never make the JSON invalid.
 */
void memsvc_json_string(const char *s, FILE *out);

#ifdef __cplusplus
}
#endif

#endif /* MEMSVC_STATUS_H */
