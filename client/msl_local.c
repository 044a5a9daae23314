/* msl_local.c - the co-located path: socket paths, handshake message and fd passing helpers */
#include "client/msl_local.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

bool msl_addr_is_loopback(const char *addr)
{
    return (addr != NULL) &&
           ((strncmp(addr, "127.", 4) == 0) || (strncmp(addr, "localhost:", 10) == 0) ||
            (strncmp(addr, "[::1]:", 6) == 0));
}

static bool dir_usable(const char *dir, bool create)
{
    struct stat st;

    if ((stat(dir, &st) == 0) && S_ISDIR(st.st_mode)) {
        return !create || (access(dir, W_OK | X_OK) == 0);
    }
    return create && (mkdir(dir, 0755) == 0);
}

/* Candidate directories in order of preference; returns how many were written. */
static unsigned candidate_dirs(char dirs[][256])
{
    const char *env = getenv("MEMSVC_RUN_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    unsigned    n   = 0;
    int         len;

    if ((env != NULL) && (env[0] != '\0')) {
        snprintf(dirs[n++], 256, "%s", env);
        return n; /* explicit: nothing else */
    }
    snprintf(dirs[n++], 256, "/run/memsvc");
    if ((xdg != NULL) && (xdg[0] != '\0')) {
        len = snprintf(dirs[n], 256, "%s/memsvc", xdg);
        n += ((len > 0) && (len < 256)) ? 1 : 0;
    }
    snprintf(dirs[n++], 256, "/tmp/memsvc-%u", (unsigned)getuid());
    return n;
}

memsvc_status_t msl_default_path(const char *addr, bool for_daemon, char *path, size_t len)
{
    const char *colon = (addr != NULL) ? strrchr(addr, ':') : NULL;
    char        dirs[3][256], cand[1024];
    struct stat st;
    unsigned    n, i, pick = 0;
    int         w;

    if ((colon == NULL) || (colon[1] == '\0') ||
        (strspn(colon + 1, "0123456789") != strlen(colon + 1))) {
        return MEMSVC_ERR_PARSE;
    }
    n = candidate_dirs(dirs);
    for (i = 0; i < n; i++) {
        if (for_daemon) {
            /* the first directory we can use (created if need be, e.g. /run/memsvc as root) */
            if ((n == 1) || dir_usable(dirs[i], true)) {
                pick = i;
                break;
            }
        } else {
            /* the first candidate where a daemon's socket exists */
            snprintf(cand, sizeof(cand), "%s/memsvcd-%s.sock", dirs[i], colon + 1);
            if ((stat(cand, &st) == 0) && S_ISSOCK(st.st_mode)) {
                pick = i;
                break;
            }
        }
    }
    w = snprintf(path, len, "%s/memsvcd-%s.sock", dirs[pick], colon + 1);
    if ((w < 0) || ((size_t)w >= len) || ((size_t)w >= MSL_PATH_MAX)) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    return MEMSVC_OK;
}

memsvc_status_t msl_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds)
{
    union {
        char           buf[CMSG_SPACE(sizeof(int) * MSL_REGIONS_MAX)];
        struct cmsghdr align;
    } ctl;
    struct iovec  iov = {.iov_base = (void *)msg, .iov_len = len};
    struct msghdr mh  = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t       rc;

    if (nfds > MSL_REGIONS_MAX) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (nfds > 0) {
        struct cmsghdr *c;

        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control    = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c                 = CMSG_FIRSTHDR(&mh);
        c->cmsg_level     = SOL_SOCKET;
        c->cmsg_type      = SCM_RIGHTS;
        c->cmsg_len       = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    do {
        rc = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while ((rc < 0) && (errno == EINTR));
    return (rc == (ssize_t)len) ? MEMSVC_OK : MEMSVC_ERR_TRANSPORT;
}

memsvc_status_t msl_recv(int sock, void *buf, size_t cap, size_t *len_p, int *fds,
                         unsigned *nfds_p, int timeout_ms)
{
    union {
        char           buf[CMSG_SPACE(sizeof(int) * MSL_REGIONS_MAX)];
        struct cmsghdr align;
    } ctl;
    struct iovec    iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr   mh  = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *c;
    unsigned        want = (nfds_p != NULL) ? *nfds_p : 0, got = 0, i;
    ssize_t         rc;
    int             prc;

    if (nfds_p != NULL) {
        *nfds_p = 0;
    }
    do {
        prc = poll(&(struct pollfd){.fd = sock, .events = POLLIN}, 1, timeout_ms);
    } while ((prc < 0) && (errno == EINTR));
    if (prc == 0) {
        return MEMSVC_ERR_TIMEOUT;
    }
    mh.msg_control    = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    do {
        rc = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while ((rc < 0) && (errno == EINTR));
    if (rc <= 0) {
        return MEMSVC_ERR_TRANSPORT;
    }
    for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        int    *in;
        unsigned n;

        if ((c->cmsg_level != SOL_SOCKET) || (c->cmsg_type != SCM_RIGHTS)) {
            continue;
        }
        in = (int *)CMSG_DATA(c);
        n  = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (i = 0; i < n; i++) {
            if (got < want) {
                fds[got++] = in[i];
            } else {
                close(in[i]);
            }
        }
    }
    if (nfds_p != NULL) {
        *nfds_p = got;
    }
    *len_p = (size_t)rc;
    return MEMSVC_OK;
}
