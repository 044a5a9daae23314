/* memsvc_local.c - libmemsvc's side of the co-located path: socket, shared-memory endpoint, mapping */
#include "client/mcl_local.h"
#include "client/msp_proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Regions up to this size are prefaulted at connect (first touches run at ~0.7 GB/s). */
#define MSC_PREFAULT_MAX (1ull << 30)

void mcl_local_init(mcl_local_t *lo)
{
    memset(lo, 0, sizeof(*lo));
    lo->sock   = -1;
    lo->region = MSP_REGION_NONE;
}

memsvc_status_t mcl_local_open(mcl_local_t *lo, const char *path, char *why, size_t whylen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t             len = strlen(path);
    int                fd;

    if (len >= sizeof(sa.sun_path)) {
        snprintf(why, whylen, "socket path too long");
        return MEMSVC_ERR_TRANSPORT;
    }
    memcpy(sa.sun_path, path, len + 1);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        return MEMSVC_ERR_TRANSPORT;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(why, whylen, "no memsvcd socket at %s (%s)", path, strerror(errno));
        close(fd);
        return MEMSVC_ERR_TRANSPORT;
    }
    lo->sock = fd;
    snprintf(lo->path, sizeof(lo->path), "%s", path);
    return MEMSVC_OK;
}

memsvc_status_t mcl_local_context(ucp_context_h *ctx_p)
{
    ucp_params_t  params = {0};
    ucp_config_t *config;
    ucs_status_t  us;

    if (ucp_config_read(NULL, NULL, &config) != UCS_OK) {
        return MEMSVC_ERR_TRANSPORT;
    }
    ucp_config_modify(config, "TLS", MSL_UCX_TLS);
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    params.features   = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    params.name       = "libmemsvc-local";
    us                = ucp_init(&params, config, ctx_p);
    ucp_config_release(config);
    return (us == UCS_OK) ? MEMSVC_OK : MEMSVC_ERR_TRANSPORT;
}

memsvc_status_t mcl_local_handshake(mcl_local_t *lo, ucp_worker_h worker, int timeout_ms,
                                    ucp_ep_h *ep_p, char *why, size_t whylen)
{
    uint8_t         buf[MSL_MSG_MAX];
    msl_hello_t     hello = {.magic = MSL_MAGIC_HELLO, .version = MSL_VERSION};
    msl_welcome_t   w;
    ucp_ep_params_t ep = {0};
    ucp_address_t  *addr;
    size_t          alen, len;
    memsvc_status_t status;
    ucs_status_t    us;

    if (ucp_worker_get_address(worker, &addr, &alen) != UCS_OK) {
        snprintf(why, whylen, "no worker address");
        return MEMSVC_ERR_TRANSPORT;
    }
    if (alen > sizeof(buf) - sizeof(hello)) {
        ucp_worker_release_address(worker, addr);
        snprintf(why, whylen, "worker address too large (%zu bytes)", alen);
        return MEMSVC_ERR_TRANSPORT;
    }
    hello.addr_len = (uint32_t)alen;
    memcpy(buf, &hello, sizeof(hello));
    memcpy(buf + sizeof(hello), addr, alen);
    ucp_worker_release_address(worker, addr);
    status = msl_send(lo->sock, buf, sizeof(hello) + alen, NULL, 0);
    if (status == MEMSVC_OK) {
        status = msl_recv(lo->sock, buf, sizeof(buf), &len, NULL, NULL, timeout_ms);
    }
    if (status != MEMSVC_OK) {
        snprintf(why, whylen, "the daemon did not answer on %s (%s)", lo->path,
                 memsvc_strerror(status));
        return status;
    }
    if (len < sizeof(w)) {
        snprintf(why, whylen, "short answer on %s", lo->path);
        return MEMSVC_ERR_PROTOCOL;
    }
    memcpy(&w, buf, sizeof(w));
    w.msg[sizeof(w.msg) - 1] = '\0';
    if ((w.magic != MSL_MAGIC_WELCOME) || (w.status < 0) || (w.addr_len == 0) ||
        (w.addr_len > len - sizeof(w))) {
        snprintf(why, whylen, "refused on %s: %s", lo->path,
                 (w.status < 0) ? w.msg : "malformed answer");
        return (w.status < 0) ? (memsvc_status_t)w.status : MEMSVC_ERR_PROTOCOL;
    }
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address    = (const ucp_address_t *)(buf + sizeof(w));
    us            = ucp_ep_create(worker, &ep, ep_p);
    if (us != UCS_OK) {
        snprintf(why, whylen, "cannot reach the daemon's worker: %s", ucs_status_string(us));
        return MEMSVC_ERR_TRANSPORT;
    }
    return MEMSVC_OK;
}

memsvc_status_t mcl_local_regions(mcl_local_t *lo, int timeout_ms)
{
    msl_regions_t   msg;
    int             fds[MSL_REGIONS_MAX];
    unsigned        nfds = MSL_REGIONS_MAX, i;
    size_t          len;
    memsvc_status_t status;
    void           *p;

    status = msl_recv(lo->sock, &msg, sizeof(msg), &len, fds, &nfds, timeout_ms);
    if (status != MEMSVC_OK) {
        return status;
    }
    if ((len != sizeof(msg)) || (msg.magic != MSL_MAGIC_REGIONS) || (msg.count > nfds)) {
        status = MEMSVC_ERR_PROTOCOL;
        goto out;
    }
    if (msg.count > 0) {
        int flags = MAP_SHARED | ((msg.region[0].size <= MSC_PREFAULT_MAX) ? MAP_POPULATE : 0);

        p = mmap(NULL, msg.region[0].size, PROT_READ | PROT_WRITE, flags, fds[0], 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "libmemsvc: cannot map the device memory (%s): bytes are copied\n",
                    strerror(errno));
        } else {
            lo->base   = p;
            lo->size   = msg.region[0].size;
            lo->region = msg.region[0].id;
        }
    }
out:
    for (i = 0; i < nfds; i++) {
        close(fds[i]); /* the mapping keeps the memory */
    }
    return status;
}

bool mcl_local_gone(mcl_local_t *lo)
{
    char    c;
    ssize_t rc;

    if (lo->sock < 0) {
        return false;
    }
    rc = recv(lo->sock, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return (rc == 0) || ((rc < 0) && (errno != EAGAIN) && (errno != EWOULDBLOCK) && (errno != EINTR));
}

void *mcl_local_addr(const mcl_local_t *lo, uint32_t region, uint64_t offset, uint64_t size)
{
    if ((lo->base == NULL) || (region != lo->region) || (offset > lo->size) ||
        (size > lo->size - offset)) {
        return NULL;
    }
    return lo->base + offset;
}

void mcl_local_close(mcl_local_t *lo)
{
    if (lo->sock >= 0) {
        close(lo->sock);
        lo->sock = -1;
    }
    if (lo->base != NULL) {
        munmap(lo->base, lo->size);
        lo->base   = NULL;
        lo->region = MSP_REGION_NONE;
    }
}
