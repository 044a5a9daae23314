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

/* ---- the pin table ---------------------------------------------------------------------- */

static void mcl_local_drop_pins(mcl_local_t *lo)
{
    if (lo->pins != NULL) {
        munmap(lo->pins, MSL_PINTAB_BYTES);
        lo->pins = NULL;
    }
    free(lo->fp);
    lo->fp       = NULL;
    lo->fp_cap   = 0;
    lo->fp_count = 0;
}

static size_t fp_home(const mcl_local_t *lo, uint64_t handle)
{
    return (size_t)(handle * 0x9e3779b97f4a7c15ull >> 17) & (lo->fp_cap - 1);
}

static mcl_fpin_t *fp_get(mcl_local_t *lo, uint64_t handle)
{
    size_t i;

    if (lo->fp_cap == 0) {
        return NULL;
    }
    for (i = fp_home(lo, handle); lo->fp[i].handle != 0; i = (i + 1) & (lo->fp_cap - 1)) {
        if (lo->fp[i].handle == handle) {
            return &lo->fp[i];
        }
    }
    return NULL;
}

/* Entries that hold nothing are dropped (a table of tensors freed by others stays bounded). */
static bool fp_idle(const mcl_fpin_t *e)
{
    return (e->lpins == 0) && (e->wpins == 0) && !e->fast;
}

static bool fp_rehash(mcl_local_t *lo, size_t cap, bool keep_fast)
{
    mcl_fpin_t *old = lo->fp, *nf = calloc(cap, sizeof(*nf));
    size_t      oldcap = lo->fp_cap, i, j;

    if (nf == NULL) {
        return false;
    }
    lo->fp       = nf;
    lo->fp_cap   = cap;
    lo->fp_count = 0;
    for (i = 0; i < oldcap; i++) {
        if ((old[i].handle == 0) || fp_idle(&old[i]) ||
            (!keep_fast && (old[i].lpins == 0) && (old[i].wpins == 0))) {
            continue;
        }
        for (j = fp_home(lo, old[i].handle); nf[j].handle != 0; j = (j + 1) & (cap - 1)) {
        }
        nf[j] = old[i];
        lo->fp_count++;
    }
    free(old);
    return true;
}

static mcl_fpin_t *fp_put(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e = fp_get(lo, handle);
    size_t      i;

    if (e != NULL) {
        return e;
    }
    if (2 * (lo->fp_count + 1) > lo->fp_cap) {
        /* past 64 Ki entries, forget where unpinned tensors were rather than grow */
        bool keep = lo->fp_cap < 65536;

        if (!fp_rehash(lo, keep ? ((lo->fp_cap != 0) ? 2 * lo->fp_cap : 256) : lo->fp_cap,
                       keep) ||
            (2 * (lo->fp_count + 1) > lo->fp_cap)) {
            return NULL;
        }
    }
    for (i = fp_home(lo, handle); lo->fp[i].handle != 0; i = (i + 1) & (lo->fp_cap - 1)) {
    }
    lo->fp[i] = (mcl_fpin_t){.handle = handle, .slot = UINT32_MAX};
    lo->fp_count++;
    return &lo->fp[i];
}

/* Remove e if it holds nothing (backward-shift deletion keeps the probe chains whole). */
static void fp_tidy(mcl_local_t *lo, mcl_fpin_t *e)
{
    size_t i, j, k;

    if (!fp_idle(e)) {
        return;
    }
    i = (size_t)(e - lo->fp);
    for (j = (i + 1) & (lo->fp_cap - 1); lo->fp[j].handle != 0; j = (j + 1) & (lo->fp_cap - 1)) {
        k = fp_home(lo, lo->fp[j].handle);
        /* j's entry may fill the hole at i unless its home lies cyclically in (i, j] */
        if ((i <= j) ? ((i < k) && (k <= j)) : ((i < k) || (k <= j))) {
            continue;
        }
        lo->fp[i] = lo->fp[j];
        i         = j;
    }
    lo->fp[i].handle = 0;
    lo->fp_count--;
}

bool mcl_local_pin(mcl_local_t *lo, uint64_t handle, void **addr_p, msl_pin_where_t *where_p)
{
    mcl_fpin_t     *e;
    msl_pin_where_t w;
    void           *p;

    if ((lo->pins == NULL) || ((e = fp_get(lo, handle)) == NULL) || !e->fast ||
        (e->slot == UINT32_MAX)) {
        return false;
    }
    if (!msl_pin_try(lo->pins, e->slot, handle, &w)) {
        if (e->lpins == 0) {
            e->fast = false; /* revoked or moved: the next acquire by message looks again */
            e->slot = UINT32_MAX;
            fp_tidy(lo, e);
        }
        return false;
    }
    p = mcl_local_addr(lo, w.region, w.offset, w.size);
    if (p == NULL) {
        msl_pin_drop(lo->pins, e->slot); /* not where this process can see it: by message */
        return false;
    }
    e->lpins++;
    if (addr_p != NULL) {
        *addr_p = p;
    }
    if (where_p != NULL) {
        *where_p = w;
    }
    return true;
}

void mcl_local_published(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e;
    uint32_t    idx;

    if (lo->pins == NULL) {
        return;
    }
    e = fp_get(lo, handle);
    if ((e != NULL) && (e->lpins > 0)) {
        e->fast = true; /* its slot stays the one its pins were taken in */
        return;
    }
    idx = msl_pin_find(lo->pins, handle);
    if ((idx == UINT32_MAX) || ((e == NULL) && ((e = fp_put(lo, handle)) == NULL))) {
        return;
    }
    e->slot = idx;
    e->fast = true;
}

void mcl_local_write_pin(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e;

    if ((lo->pins != NULL) && ((e = fp_put(lo, handle)) != NULL)) {
        e->wpins++;
    }
}

bool mcl_local_unpin(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e = (lo->pins != NULL) ? fp_get(lo, handle) : NULL;

    if (e == NULL) {
        return false;
    }
    if (e->wpins > 0) {
        /* the daemon releases a write pin first (and commits with the last): so do we */
        e->wpins--;
        fp_tidy(lo, e);
        return false;
    }
    if (e->lpins == 0) {
        return false;
    }
    if (e->lwpins > 0) {
        msl_pin_writing(lo->pins, e->slot, -1); /* a write pin first, as the daemon does */
        e->lwpins--;
    }
    msl_pin_drop(lo->pins, e->slot);
    e->lpins--;
    return true;
}

void mcl_local_write_local(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e = (lo->pins != NULL) ? fp_get(lo, handle) : NULL;

    if ((e != NULL) && (e->lpins > e->lwpins)) {
        msl_pin_writing(lo->pins, e->slot, 1);
        e->lwpins++;
    }
}

void mcl_local_writing(mcl_local_t *lo, uint64_t handle, int delta)
{
    mcl_fpin_t *e = (lo->pins != NULL) ? fp_get(lo, handle) : NULL;

    if ((e != NULL) && (e->lpins > 0)) {
        msl_pin_writing(lo->pins, e->slot, delta);
    }
}

void mcl_local_drop(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e = (lo->pins != NULL) ? fp_get(lo, handle) : NULL;

    if ((e != NULL) && (e->lpins > 0)) {
        msl_pin_drop(lo->pins, e->slot);
        e->lpins--;
    }
}

void mcl_local_forget(mcl_local_t *lo, uint64_t handle)
{
    mcl_fpin_t *e = (lo->pins != NULL) ? fp_get(lo, handle) : NULL;

    if (e != NULL) {
        e->fast = false;
        if (e->lpins == 0) {
            e->slot = UINT32_MAX;
        }
        fp_tidy(lo, e);
    }
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
    for (i = 0; i < msg.count; i++) {
        const msl_region_t *r = &msg.region[i];
        int flags = MAP_SHARED | ((r->size <= MSC_PREFAULT_MAX) ? MAP_POPULATE : 0);

        if ((r->kind == MSL_REGION_PINTAB) && (r->size == MSL_PINTAB_BYTES) &&
            (lo->pins == NULL)) {
            p = mmap(NULL, MSL_PINTAB_BYTES, PROT_READ | PROT_WRITE, flags, fds[i], 0);
            lo->pins = (p == MAP_FAILED) ? NULL : p; /* none: acquires are messages */
            continue;
        }
        if ((r->kind != 0) || (lo->base != NULL)) {
            continue; /* a kind this library does not know: not mapped */
        }
        p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, flags, fds[i], 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "libmemsvc: cannot map the device memory (%s): bytes are copied\n",
                    strerror(errno));
        } else {
            lo->base   = p;
            lo->size   = r->size;
            lo->region = r->id;
        }
    }
    if (lo->base == NULL) {
        mcl_local_drop_pins(lo); /* a table without the memory it points into is no use */
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
    mcl_local_drop_pins(lo);
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
