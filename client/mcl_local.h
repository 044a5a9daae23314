/* mcl_local.h - libmemsvc's side of the co-located path: socket, shared-memory endpoint, mapping */
#ifndef MCL_LOCAL_H
#define MCL_LOCAL_H

#include "client/memsvc_status.h"
#include "client/msl_local.h"

#include <ucp/api/ucp.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct mcl_local {
    int      sock;               /* the daemon's Unix socket; -1: not a local connection */
    char     path[MSL_PATH_MAX];
    uint32_t region;             /* mapped region id (MSP_REGION_NONE: nothing mapped) */
    uint8_t *base;               /* its bytes in this process */
    uint64_t size;
    uint64_t next_check_ns;      /* while spinning, when the socket is looked at next */
} mcl_local_t;

void mcl_local_init(mcl_local_t *lo);

/* Connect to the socket at path. MEMSVC_ERR_TRANSPORT with the reason in why. */
memsvc_status_t mcl_local_open(mcl_local_t *lo, const char *path, char *why, size_t whylen);

/* A UCX context restricted to shared memory (MSL_UCX_TLS). */
memsvc_status_t mcl_local_context(ucp_context_h *ctx_p);

/* Exchange worker addresses over the socket and create the endpoint to the daemon's worker. */
memsvc_status_t mcl_local_handshake(mcl_local_t *lo, ucp_worker_h worker, int timeout_ms,
                                    ucp_ep_h *ep_p, char *why, size_t whylen);

/* After HELLO: receive the regions the daemon offers and map them (prefaulted when small). */
memsvc_status_t mcl_local_regions(mcl_local_t *lo, int timeout_ms);

/* Has the daemon's end of the socket closed (its death)? Non-blocking. */
bool mcl_local_gone(mcl_local_t *lo);

/* Address of [offset, offset + size) of a region in this process, or NULL. */
void *mcl_local_addr(const mcl_local_t *lo, uint32_t region, uint64_t offset, uint64_t size);

/* Close the socket and unmap. */
void mcl_local_close(mcl_local_t *lo);

#endif /* MCL_LOCAL_H */
