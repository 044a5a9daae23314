/* msd_cluster.c - the cluster file (nodes, canonical hash) and the cluster secret (MAC key) */
#include "client/msp_ucx.h"
#include "memsvc/msd_peer.h"

#include <sodium.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLUSTER_LINE_MAX 512
#define CLUSTER_CANON_HEAD "memsvc-cluster 1\n"

static bool name_ok(const char *s)
{
    size_t n = strlen(s), i;

    if ((n == 0) || (n > MSD_NODE_NAME_MAX)) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && (strchr("._-", s[i]) == NULL)) {
            return false;
        }
    }
    return true;
}

/* Same endpoint: family, address and port (host names resolved by msp_parse_addr). */
bool msd_same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

        return (x->sin_port == y->sin_port) && (x->sin_addr.s_addr == y->sin_addr.s_addr);
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

        return (x->sin6_port == y->sin6_port) &&
               (memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0);
    }
    return false;
}

void msd_cluster_free(msd_cluster_t *c)
{
    free(c->nodes);
    memset(c, 0, sizeof(*c));
}

int msd_cluster_find(const msd_cluster_t *c, const char *name)
{
    unsigned i;

    for (i = 0; i < c->n; i++) {
        if (strcmp(c->nodes[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* One line (comment stripped): a node, nothing, or an error in err. */
static memsvc_status_t parse_line(char *line, msd_cluster_node_t *node, bool *empty_p, char *err,
                                  size_t errlen)
{
    char *name, *addr, *extra, *save = NULL, *hash = strchr(line, '#');

    if (hash != NULL) {
        *hash = '\0';
    }
    name     = strtok_r(line, " \t\r\n", &save);
    *empty_p = (name == NULL);
    if (name == NULL) {
        return MEMSVC_OK;
    }
    addr  = strtok_r(NULL, " \t\r\n", &save);
    extra = strtok_r(NULL, " \t\r\n", &save);
    if ((addr == NULL) || (extra != NULL)) {
        memsvc_errf(err, errlen, "want 'NAME HOST:PORT', got %s field%s",
                    (addr == NULL) ? "one" : "more than two", (addr == NULL) ? "" : "s");
        return MEMSVC_ERR_FORMAT;
    }
    if (!name_ok(name)) {
        memsvc_errf(err, errlen, "node name '%.40s' is not 1..%u characters of [A-Za-z0-9._-]",
                    name, MSD_NODE_NAME_MAX);
        return MEMSVC_ERR_FORMAT;
    }
    if (strlen(addr) > MSD_NODE_ADDR_MAX) {
        memsvc_errf(err, errlen, "address of '%s' longer than %u characters", name,
                    MSD_NODE_ADDR_MAX);
        return MEMSVC_ERR_FORMAT;
    }
    snprintf(node->name, sizeof(node->name), "%s", name);
    snprintf(node->addr, sizeof(node->addr), "%s", addr);
    return MEMSVC_OK;
}

/* Duplicate name or address of node i among nodes 0..i-1. */
static memsvc_status_t check_unique(const msd_cluster_t *c, unsigned i, struct sockaddr_storage *ss,
                                    char *err, size_t errlen)
{
    const msd_cluster_node_t *nd = &c->nodes[i];
    socklen_t                 len;
    unsigned                  j;

    if (msp_parse_addr(nd->addr, &ss[i], &len) != MEMSVC_OK) {
        memsvc_errf(err, errlen, "address '%s' of '%s' is not HOST:PORT (or does not resolve)",
                    nd->addr, nd->name);
        return MEMSVC_ERR_FORMAT;
    }
    for (j = 0; j < i; j++) {
        if (strcmp(c->nodes[j].name, nd->name) == 0) {
            memsvc_errf(err, errlen, "node name '%s' already on line %u", nd->name,
                        c->nodes[j].line);
            return MEMSVC_ERR_FORMAT;
        }
        if (msd_same_sockaddr(&ss[j], &ss[i])) {
            memsvc_errf(err, errlen, "address '%s' of '%s' is that of '%s' (line %u)", nd->addr,
                        nd->name, c->nodes[j].name, c->nodes[j].line);
            return MEMSVC_ERR_FORMAT;
        }
    }
    return MEMSVC_OK;
}

static void cluster_hash(msd_cluster_t *c)
{
    crypto_generichash_state st;
    unsigned                 i;

    crypto_generichash_init(&st, NULL, 0, sizeof(c->hash));
    crypto_generichash_update(&st, (const uint8_t *)CLUSTER_CANON_HEAD, strlen(CLUSTER_CANON_HEAD));
    for (i = 0; i < c->n; i++) {
        crypto_generichash_update(&st, (const uint8_t *)c->nodes[i].name, strlen(c->nodes[i].name));
        crypto_generichash_update(&st, (const uint8_t *)" ", 1);
        crypto_generichash_update(&st, (const uint8_t *)c->nodes[i].addr, strlen(c->nodes[i].addr));
        crypto_generichash_update(&st, (const uint8_t *)"\n", 1);
    }
    crypto_generichash_final(&st, c->hash, sizeof(c->hash));
    sodium_bin2hex(c->hash_hex, sizeof(c->hash_hex), c->hash, sizeof(c->hash));
}

memsvc_status_t msd_cluster_load(const char *path, msd_cluster_t *c, char *err, size_t errlen)
{
    struct sockaddr_storage *ss     = NULL;
    memsvc_status_t          status = MEMSVC_OK;
    char                     line[CLUSTER_LINE_MAX + 2], what[160] = "";
    unsigned                 lineno = 0, cap = 0;
    bool                     empty;
    FILE                    *f;

    memset(c, 0, sizeof(*c));
    if (sodium_init() < 0) {
        memsvc_errf(err, errlen, "libsodium cannot initialise");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        memsvc_errf(err, errlen, "%s: %s", path, strerror(errno));
        return (errno == ENOENT) ? MEMSVC_ERR_NOT_FOUND : MEMSVC_ERR_IO;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        msd_cluster_node_t node = {0};

        lineno++;
        if ((strlen(line) > CLUSTER_LINE_MAX) && (strchr(line, '\n') == NULL)) {
            memsvc_errf(what, sizeof(what), "line longer than %u characters", CLUSTER_LINE_MAX);
            status = MEMSVC_ERR_FORMAT;
            break;
        }
        status = parse_line(line, &node, &empty, what, sizeof(what));
        if ((status != MEMSVC_OK) || empty) {
            if (status != MEMSVC_OK) {
                break;
            }
            continue;
        }
        if (c->n == MSD_CLUSTER_MAX) {
            memsvc_errf(what, sizeof(what), "more than %u nodes", MSD_CLUSTER_MAX);
            status = MEMSVC_ERR_FORMAT;
            break;
        }
        if (c->n == cap) {
            msd_cluster_node_t      *nn;
            struct sockaddr_storage *ns;

            cap = (cap == 0) ? 16 : 2 * cap;
            nn  = realloc(c->nodes, cap * sizeof(*nn));
            if (nn != NULL) {
                c->nodes = nn;
            }
            ns = realloc(ss, cap * sizeof(*ns));
            if (ns != NULL) {
                ss = ns;
            }
            if ((nn == NULL) || (ns == NULL)) {
                memsvc_errf(what, sizeof(what), "out of memory");
                status = MEMSVC_ERR_NO_RESOURCE;
                break;
            }
        }
        node.line      = lineno;
        c->nodes[c->n] = node;
        status         = check_unique(c, c->n, ss, what, sizeof(what));
        if (status != MEMSVC_OK) {
            break;
        }
        c->n++;
    }
    if ((status == MEMSVC_OK) && ferror(f)) {
        memsvc_errf(err, errlen, "%s: read error", path);
        status = MEMSVC_ERR_IO;
    } else if (status != MEMSVC_OK) {
        memsvc_errf(err, errlen, "%s:%u: %s", path, lineno, what);
    } else if (c->n == 0) {
        memsvc_errf(err, errlen, "%s: no nodes (want lines of 'NAME HOST:PORT')", path);
        status = MEMSVC_ERR_FORMAT;
    }
    fclose(f);
    free(ss);
    if (status != MEMSVC_OK) {
        msd_cluster_free(c);
        return status;
    }
    cluster_hash(c);
    return MEMSVC_OK;
}

memsvc_status_t msd_cluster_secret_load(const char *path, uint8_t key[MSD_PEER_KEY_LEN], char *err,
                                        size_t errlen)
{
    uint8_t         buf[MSD_SECRET_MAX + 1];
    struct stat     st;
    memsvc_status_t status = MEMSVC_OK;
    ssize_t         n;
    size_t          len = 0;
    int             fd;

    if (sodium_init() < 0) {
        memsvc_errf(err, errlen, "libsodium cannot initialise");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        memsvc_errf(err, errlen, "cluster secret %s: %s", path, strerror(errno));
        return (errno == ENOENT) ? MEMSVC_ERR_NOT_FOUND : MEMSVC_ERR_ACCESS;
    }
    if (fstat(fd, &st) != 0) {
        memsvc_errf(err, errlen, "cluster secret %s: %s", path, strerror(errno));
        close(fd);
        return MEMSVC_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        memsvc_errf(err, errlen, "cluster secret %s: not a regular file", path);
        status = MEMSVC_ERR_ACCESS;
    } else if (st.st_uid != geteuid()) {
        memsvc_errf(err, errlen, "cluster secret %s: owned by uid %u, not by this daemon's uid %u",
                    path, (unsigned)st.st_uid, (unsigned)geteuid());
        status = MEMSVC_ERR_ACCESS;
    } else if ((st.st_mode & 077) != 0) {
        memsvc_errf(err, errlen,
                    "cluster secret %s: mode %04o lets others read it (want 0600 or 0400)", path,
                    (unsigned)(st.st_mode & 07777));
        status = MEMSVC_ERR_ACCESS;
    }
    while ((status == MEMSVC_OK) && (len < sizeof(buf)) &&
           ((n = read(fd, buf + len, sizeof(buf) - len)) != 0)) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            memsvc_errf(err, errlen, "cluster secret %s: %s", path, strerror(errno));
            status = MEMSVC_ERR_IO;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    while ((len > 0) && isspace(buf[len - 1])) {
        len--;
    }
    if ((status == MEMSVC_OK) && ((len < MSD_SECRET_MIN) || (len > MSD_SECRET_MAX))) {
        memsvc_errf(err, errlen, "cluster secret %s: %zu bytes; want %u to %u", path, len,
                    MSD_SECRET_MIN, MSD_SECRET_MAX);
        status = MEMSVC_ERR_PARSE;
    }
    if (status == MEMSVC_OK) {
        crypto_generichash(key, MSD_PEER_KEY_LEN, buf, len, (const uint8_t *)"memsvc-peer-key-v1",
                           18);
    }
    sodium_memzero(buf, sizeof(buf));
    return status;
}
