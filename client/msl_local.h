/* msl_local.h - the co-located path: memsvcd's Unix socket, its handshake messages, fd passing */
#ifndef MSL_LOCAL_H
#define MSL_LOCAL_H

#include "client/memsvc_status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * A client on the daemon's node connects to its Unix socket (SOCK_SEQPACKET) and sends an
 * msl_hello_t followed by its UCX worker address. The daemon creates a UCX worker for this
 * client alone, in a shared-memory-only context (MSL_UCX_TLS), and answers an msl_welcome_t
 * followed by that worker's address; each side then creates an endpoint to the other's
 * address and the wire protocol (docs/protocol.md) runs over it. After the HELLO request is
 * accepted, the daemon sends one msl_regions_t with the memory regions the client may map
 * (their fds ride along as SCM_RIGHTS, in the order of the entries). The socket stays open for
 * the life of the session: its end (EOF) is how either side learns of the other's death.
 */

#define MSL_MAGIC_HELLO 0x314c534du   /* "MSL1" */
#define MSL_MAGIC_WELCOME 0x574c534du /* "MSLW" */
#define MSL_MAGIC_REGIONS 0x524c534du /* "MSLR" */
#define MSL_VERSION 1u
#define MSL_MSG_MAX 4096u    /* largest handshake message */
#define MSL_REGIONS_MAX 4u   /* regions per session (its device's HBM; room to grow) */
#define MSL_UCX_TLS "sysv,self" /* no cma: a peer dying mid-transfer would abort us */
#define MSL_PATH_MAX 108u    /* sun_path */

typedef struct msl_hello {
    uint32_t magic;    /* MSL_MAGIC_HELLO */
    uint32_t version;  /* MSL_VERSION */
    uint32_t addr_len; /* bytes of UCX worker address that follow */
    uint32_t reserved;
} msl_hello_t;

typedef struct msl_welcome {
    uint32_t magic;    /* MSL_MAGIC_WELCOME */
    int32_t  status;   /* memsvc_status_t; < 0: refused, msg says why, no address */
    uint32_t addr_len; /* bytes of UCX worker address that follow */
    uint32_t reserved;
    char     msg[96];
} msl_welcome_t;

typedef struct msl_region {
    uint32_t id;   /* region id as in ACQUIRE replies (the device index) */
    uint32_t kind; /* 0: device HBM */
    uint64_t size; /* bytes to map from offset 0 of the fd */
} msl_region_t;

typedef struct msl_regions {
    uint32_t     magic; /* MSL_MAGIC_REGIONS */
    uint32_t     count; /* entries (and fds) that follow; 0: nothing to map */
    msl_region_t region[MSL_REGIONS_MAX];
} msl_regions_t;

/*
 * The socket path for a daemon listening on HOST:PORT: $MEMSVC_RUN_DIR/memsvcd-PORT.sock when
 * MEMSVC_RUN_DIR is set, else DIR/memsvcd-PORT.sock with DIR the first of /run/memsvc,
 * $XDG_RUNTIME_DIR/memsvc, /tmp/memsvc-UID that the daemon can use (created, mode 0755, if
 * need be); a client picks the first of them where such a socket exists (else the first).
 * MEMSVC_ERR_PARSE for an address without a port, MEMSVC_ERR_TOO_LARGE if too long.
 */
memsvc_status_t msl_default_path(const char *addr, bool for_daemon, char *path, size_t len);

/* Is HOST of HOST:PORT a loopback address (127.x, localhost, ::1)? */
bool msl_addr_is_loopback(const char *addr);

/*
 * Send one message with up to MSL_REGIONS_MAX fds (nfds may be 0). MEMSVC_ERR_TRANSPORT when
 * the peer is gone.
 */
memsvc_status_t msl_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds);

/*
 * Receive one message within timeout_ms (< 0: forever) into buf; fds (up to *nfds_p, which
 * gets the count) are received too (close what you do not keep). *len_p gets the length.
 * MEMSVC_ERR_TRANSPORT on EOF or error, MEMSVC_ERR_TIMEOUT.
 */
memsvc_status_t msl_recv(int sock, void *buf, size_t cap, size_t *len_p, int *fds,
                         unsigned *nfds_p, int timeout_ms);

#endif /* MSL_LOCAL_H */
