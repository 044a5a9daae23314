/* mcl_local.h - libmemsvc's side of the co-located path: socket, shared-memory endpoint, mapping */
#ifndef MCL_LOCAL_H
#define MCL_LOCAL_H

#include "client/memsvc_status.h"
#include "client/msl_local.h"
#include "client/msl_pintab.h"

#include <ucp/api/ucp.h>

#include <stdbool.h>
#include <stdint.h>

/* What this process holds of one tensor, for the pin table (memsvc_local.c). */
typedef struct mcl_fpin {
    uint64_t handle; /* 0: an empty entry */
    uint32_t lpins;  /* pins taken in the table (released there) */
    uint32_t lwpins; /* of those, write pins (memsvc_acquire_map): counted in the slot's writers */
    uint32_t wpins;  /* write pins the daemon counts (memsvc_acquire_map): released by message */
    uint32_t slot;   /* table slot it was published in (UINT32_MAX: none known) */
    bool     fast;   /* acquires may be tried in the table (not after this process freed it) */
} mcl_fpin_t;

typedef struct mcl_local {
    int      sock;               /* the daemon's Unix socket; -1: not a local connection */
    char     path[MSL_PATH_MAX];
    uint32_t region;             /* mapped region id (MSP_REGION_NONE: nothing mapped) */
    uint8_t *base;               /* its bytes in this process */
    uint64_t size;
    uint64_t next_check_ns;      /* while spinning, when the socket is looked at next */
    msl_pin_slot_t *pins;        /* the pin table (NULL: none, every acquire is a message) */
    mcl_fpin_t     *fp;          /* open addressing by handle; fp_cap a power of two */
    size_t          fp_cap, fp_count;
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

/*
 * The pin table (docs/api.md, "Acquires without a message"). mcl_local_pin: pin handle in the
 * table and set *addr_p and *where_p (either may be NULL); false: take the slow path.
 * mcl_local_published: an acquire by message of handle succeeded; look for its slot.
 * mcl_local_write_pin: an acquire by message that the daemon counts as a write pin.
 * mcl_local_unpin: true when the release was done in the table (a pin taken there), false
 * when it must be a message. mcl_local_writing: a pin taken by mcl_local_pin starts (+1) or
 * ends (-1) writing in place (client/msl_pintab.h). mcl_local_forget: this process freed handle.
 */
bool mcl_local_pin(mcl_local_t *lo, uint64_t handle, void **addr_p, msl_pin_where_t *where_p);
void mcl_local_published(mcl_local_t *lo, uint64_t handle);
void mcl_local_write_pin(mcl_local_t *lo, uint64_t handle);
bool mcl_local_unpin(mcl_local_t *lo, uint64_t handle);
void mcl_local_writing(mcl_local_t *lo, uint64_t handle, int delta);
/* The pin just taken by mcl_local_pin is a write pin, counted as writing until its release. */
void mcl_local_write_local(mcl_local_t *lo, uint64_t handle);
void mcl_local_drop(mcl_local_t *lo, uint64_t handle); /* undo a mcl_local_pin */
void mcl_local_forget(mcl_local_t *lo, uint64_t handle);

/* Close the socket and unmap. */
void mcl_local_close(mcl_local_t *lo);

#endif /* MCL_LOCAL_H */
