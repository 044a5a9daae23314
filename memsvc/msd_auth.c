/* msd_auth.c - memsvcd's identities: the kernel's word on peers, job owners, operators, loopback */
#include "memsvc/msd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MSD_LOG_COMP "auth"
#include "memsvc/msd_log.h"

#define AUTH_GROUPS_MAX 256 /* supplementary groups looked at per peer */

/* ---- set-up ------------------------------------------------------------------------------- */

memsvc_status_t msd_auth_init(msd_auth_t *a, const msd_config_t *cfg)
{
    char            err[256] = "";
    memsvc_status_t status;

    memset(a, 0, sizeof(*a));
    if (cfg->secret_file != NULL) {
        status = msp_secret_load(cfg->secret_file, a->key, err, sizeof(err));
        if (status != MEMSVC_OK) {
            LOG_ERR("--secret-file: %s", err);
            return status;
        }
        a->has_secret = true;
    }
    if (cfg->job_secrets != NULL) {
        struct stat st;

        if ((stat(cfg->job_secrets, &st) != 0) || !S_ISDIR(st.st_mode)) {
            LOG_ERR("--job-secrets: %s is not a directory", cfg->job_secrets);
            msd_auth_fini(a);
            return MEMSVC_ERR_IO;
        }
        if ((st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
            LOG_ERR("--job-secrets: %s must belong to this user and not be writable by group "
                    "or others (mode %04o)",
                    cfg->job_secrets, (unsigned)(st.st_mode & 07777));
            msd_auth_fini(a);
            return MEMSVC_ERR_AUTH;
        }
    }
    if (cfg->operator_group != NULL) {
        struct group *g = getgrnam(cfg->operator_group);

        if (g == NULL) {
            LOG_ERR("--operator-group: no group named '%s'", cfg->operator_group);
            msd_auth_fini(a);
            return MEMSVC_ERR_UNKNOWN_KEY;
        }
        a->has_operators = true;
        a->operator_gid  = g->gr_gid;
        snprintf(a->operator_group, sizeof(a->operator_group), "%s", cfg->operator_group);
    }
    return MEMSVC_OK;
}

void msd_auth_fini(msd_auth_t *a)
{
    msp_auth_wipe(a->key, sizeof(a->key));
    free(a->jobs);
    memset(a, 0, sizeof(*a));
}

memsvc_status_t msd_auth_check_config(const msd_config_t *cfg)
{
    msd_auth_t      a;
    memsvc_status_t status = msd_auth_init(&a, cfg);

    if (status == MEMSVC_OK) {
        if (a.has_secret) {
            LOG("tcp clients not on this host must prove the secret of %s", cfg->secret_file);
        }
        if (cfg->job_secrets != NULL) {
            LOG("tcp clients not on this host may prove instead their job's secret, the file "
                "named by the job id in %s",
                cfg->job_secrets);
        }
        if (a.has_operators) {
            LOG("operators: root and the members of group %s (gid %u)", a.operator_group,
                (unsigned)a.operator_gid);
        }
        msd_auth_fini(&a);
    }
    return status;
}

/* ---- loopback ----------------------------------------------------------------------------- */

bool msd_auth_sockaddr_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            return a6->s6_addr[12] == 127;
        }
        return IN6_IS_ADDR_LOOPBACK(a6);
    }
    return false;
}

bool msd_auth_addr_loopback(const char *hostport, char *why, size_t whylen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    char            host[256], shown[INET6_ADDRSTRLEN];
    const char     *end;
    size_t          hlen;
    int             rc;

    if ((hostport == NULL) || (hostport[0] == '\0')) {
        memsvc_errf(why, whylen, "empty address");
        return false;
    }
    if (hostport[0] == '[') {
        end = strchr(hostport, ']');
        if (end == NULL) {
            memsvc_errf(why, whylen, "'%s': unbalanced '['", hostport);
            return false;
        }
        hostport++;
    } else {
        end = strrchr(hostport, ':');
        if (end == NULL) {
            end = hostport + strlen(hostport);
        }
    }
    hlen = (size_t)(end - hostport);
    if ((hlen == 0) || (hlen >= sizeof(host))) {
        memsvc_errf(why, whylen, "no host in the address");
        return false;
    }
    memcpy(host, hostport, hlen);
    host[hlen] = '\0';
    rc         = getaddrinfo(host, NULL, &hints, &res);
    if ((rc != 0) || (res == NULL)) {
        memsvc_errf(why, whylen, "'%s' does not resolve (%s)", host, gai_strerror(rc));
        return false;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (!msd_auth_sockaddr_loopback(ai->ai_addr)) {
            const void *p = (ai->ai_family == AF_INET)
                                ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;

            if (inet_ntop(ai->ai_family, p, shown, sizeof(shown)) == NULL) {
                snprintf(shown, sizeof(shown), "?");
            }
            memsvc_errf(why, whylen, "'%s' resolves to %s, not a loopback address", host, shown);
            freeaddrinfo(res);
            return false;
        }
    }
    freeaddrinfo(res);
    return true;
}

/* ---- the owner of a tcp peer's socket ------------------------------------------------------ */

/* An address as /proc/net/tcp{,6} prints it: words of the in-memory address, %08X each. */
static bool proc_addr_parse(const char *hex, struct sockaddr_storage *ss)
{
    size_t   len = strlen(hex), i;
    uint32_t w[4];
    char     part[9];

    memset(ss, 0, sizeof(*ss));
    if ((len != 8) && (len != 32)) {
        return false;
    }
    for (i = 0; i < len / 8; i++) {
        memcpy(part, hex + 8 * i, 8);
        part[8] = '\0';
        w[i]    = (uint32_t)strtoul(part, NULL, 16);
    }
    if (len == 8) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;

        in->sin_family      = AF_INET;
        in->sin_addr.s_addr = w[0];
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, w, sizeof(in6->sin6_addr));
    }
    return true;
}

/* Same host address? (a v4-mapped v6 address equals its v4 address) */
static bool addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    uint8_t  va[16], vb[16];
    unsigned la, lb;

    la = (a->sa_family == AF_INET) ? 4 : 16;
    lb = (b->sa_family == AF_INET) ? 4 : 16;
    memcpy(va,
           (a->sa_family == AF_INET) ? (const void *)&((struct sockaddr_in *)a)->sin_addr
                                     : (const void *)&((struct sockaddr_in6 *)a)->sin6_addr,
           la);
    memcpy(vb,
           (b->sa_family == AF_INET) ? (const void *)&((struct sockaddr_in *)b)->sin_addr
                                     : (const void *)&((struct sockaddr_in6 *)b)->sin6_addr,
           lb);
    if ((la == 16) && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)va)) {
        memmove(va, va + 12, 4);
        la = 4;
    }
    if ((lb == 16) && IN6_IS_ADDR_V4MAPPED((struct in6_addr *)vb)) {
        memmove(vb, vb + 12, 4);
        lb = 4;
    }
    return (la == lb) && (memcmp(va, vb, la) == 0);
}

static uint16_t sockaddr_port(const struct sockaddr *sa)
{
    return ntohs((sa->sa_family == AF_INET) ? ((const struct sockaddr_in *)sa)->sin_port
                                            : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

static bool proc_tcp_find(const char *file, const struct sockaddr *client, uint16_t server_port,
                          uid_t *uid_p)
{
    char  *line  = NULL;
    size_t cap   = 0;
    bool   found = false;
    FILE  *f     = fopen(file, "r");

    if (f == NULL) {
        return false;
    }
    while (!found && (getline(&line, &cap, f) > 0)) {
        struct sockaddr_storage local;
        char                    lhex[33], rhex[33];
        unsigned                lport, rport, uid;

        if ((sscanf(line, " %*u: %32[0-9A-Fa-f]:%x %32[0-9A-Fa-f]:%x %*x %*x:%*x %*x:%*x %*x %u",
                    lhex, &lport, rhex, &rport, &uid) != 5) ||
            !proc_addr_parse(lhex, &local)) {
            continue; /* the header line */
        }
        if ((rport == server_port) && (lport == sockaddr_port(client)) &&
            addr_equal((struct sockaddr *)&local, client)) {
            *uid_p = (uid_t)uid;
            found  = true;
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* An address's bytes into a sock_diag id field (network order, v4 in the first word). */
static void diag_addr(const struct sockaddr *sa, __be32 out[4])
{
    memset(out, 0, 4 * sizeof(out[0]));
    if (sa->sa_family == AF_INET) {
        out[0] = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
    } else {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
}

static bool sockaddr_is_any(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

/*
 * The kernel's own lookup of one socket by its four-tuple (NETLINK_SOCK_DIAG, without a dump:
 * a hash lookup, not a scan). 1 found, 0 no such socket, -1 not available here.
 */
static int diag_find(const struct sockaddr *client, const struct sockaddr *server, uid_t *uid_p)
{
    struct {
        struct nlmsghdr         nlh;
        struct inet_diag_req_v2 r;
    } req                 = {0};
    struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
    union {
        struct nlmsghdr nlh;
        uint8_t         b[8192];
    } rep;
    struct timeval tv = {.tv_sec = 1};
    ssize_t        n;
    int            fd, found = -1;

    if (client->sa_family != server->sa_family) {
        return -1;
    }
    fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    req.nlh.nlmsg_len        = sizeof(req);
    req.nlh.nlmsg_type       = SOCK_DIAG_BY_FAMILY;
    req.nlh.nlmsg_flags      = NLM_F_REQUEST;
    req.r.sdiag_family       = (uint8_t)client->sa_family;
    req.r.sdiag_protocol     = IPPROTO_TCP;
    req.r.idiag_states       = ~0u;
    req.r.id.idiag_sport     = htons(sockaddr_port(client));
    req.r.id.idiag_dport     = htons(sockaddr_port(server));
    req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    diag_addr(client, req.r.id.idiag_src);
    diag_addr(server, req.r.id.idiag_dst);
    if ((sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&nl, sizeof(nl)) == sizeof(req)) &&
        ((n = recv(fd, &rep, sizeof(rep), 0)) >= (ssize_t)sizeof(struct nlmsghdr)) &&
        NLMSG_OK(&rep.nlh, (size_t)n)) {
        if (rep.nlh.nlmsg_type == SOCK_DIAG_BY_FAMILY) {
            const struct inet_diag_msg *m = NLMSG_DATA(&rep.nlh);

            *uid_p = (uid_t)m->idiag_uid;
            found  = 1;
        } else if (rep.nlh.nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = NLMSG_DATA(&rep.nlh);

            found = (e->error == -ENOENT) ? 0 : -1;
        }
    }
    close(fd);
    return found;
}

bool msd_auth_tcp_peer_uid(const struct sockaddr *client, const struct sockaddr *server,
                           uid_t *uid_p)
{
    int rc = -1;

    if ((client->sa_family != AF_INET) && (client->sa_family != AF_INET6)) {
        return false;
    }
    if (!sockaddr_is_any(server)) {
        rc = diag_find(client, server, uid_p);
    }
    if (rc >= 0) {
        return rc == 1;
    }
    /* No sock_diag, or a wildcard listener (the address the client used is not known). */
    return proc_tcp_find("/proc/net/tcp", client, sockaddr_port(server), uid_p) ||
           proc_tcp_find("/proc/net/tcp6", client, sockaddr_port(server), uid_p);
}

/* ---- operators ---------------------------------------------------------------------------- */

/*
 * A local peer's groups as the kernel holds them now: "Groups:" of /proc/PID/status (they
 * include groups gained without a passwd entry, e.g. in a container or by newgrp). The
 * status must still name the same uid (the pid was not reused). -1 when not readable.
 */
static int proc_groups(pid_t pid, uid_t uid, gid_t *groups, int max)
{
    char     path[64], *line = NULL, *p, *end;
    size_t   cap = 0;
    int      n   = -1;
    unsigned ruid, euid;
    bool     uid_ok = false;
    FILE    *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    while (getline(&line, &cap, f) > 0) {
        if (sscanf(line, "Uid: %u %u", &ruid, &euid) == 2) {
            uid_ok = (euid == uid);
        } else if (strncmp(line, "Groups:", 7) == 0) {
            n = 0;
            for (p = line + 7; n < max; p = end) {
                unsigned long g = strtoul(p, &end, 10);

                if (end == p) {
                    break;
                }
                groups[n++] = (gid_t)g;
            }
        }
    }
    free(line);
    fclose(f);
    return uid_ok ? n : -1;
}

/* The groups of uid's passwd entry (getgrouplist); -1 without one. */
static int passwd_groups(uid_t uid, gid_t *groups, int max)
{
    struct passwd pw, *res = NULL;
    char          buf[4096];
    int           n = max;

    if ((getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0) || (res == NULL)) {
        return -1;
    }
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0) {
        n = max; /* more than max: the first max are filled */
    }
    return n;
}

bool msd_auth_is_operator(const msd_auth_t *a, uid_t uid, gid_t gid, pid_t pid)
{
    gid_t groups[AUTH_GROUPS_MAX];
    int   n = -1, i;

    if ((uid == 0) || (uid == geteuid())) {
        return true; /* root, and the user the daemon runs as */
    }
    if (!a->has_operators) {
        return false;
    }
    if ((pid > 0) && (gid == a->operator_gid)) {
        return true;
    }
    if (pid > 0) {
        n = proc_groups(pid, uid, groups, AUTH_GROUPS_MAX);
    }
    if (n < 0) {
        n = passwd_groups(uid, groups, AUTH_GROUPS_MAX);
    }
    for (i = 0; i < n; i++) {
        if (groups[i] == a->operator_gid) {
            return true;
        }
    }
    return false;
}

/* ---- job owners --------------------------------------------------------------------------- */

const char *msd_auth_principal_name(uint64_t principal, char *buf, size_t len)
{
    if (principal == MSD_PRINCIPAL_SECRET) {
        snprintf(buf, len, "a holder of the cluster secret");
    } else if ((principal >> 32) == (MSD_PRINCIPAL_JOB >> 32)) {
        snprintf(buf, len, "a holder of job %u's secret", (unsigned)(principal & UINT32_MAX));
    } else if (principal == MSD_PRINCIPAL_NONE) {
        snprintf(buf, len, "an unidentified peer");
    } else {
        snprintf(buf, len, "uid %llu", (unsigned long long)principal);
    }
    return buf;
}

static msd_job_owner_t *owner_find(msd_auth_t *a, uint32_t job)
{
    size_t i;

    for (i = 0; i < a->njobs; i++) {
        if (a->jobs[i].job == job) {
            return &a->jobs[i];
        }
    }
    return NULL;
}

static msd_job_owner_t *owner_add(msd_auth_t *a, uint32_t job, uint64_t principal)
{
    msd_job_owner_t *o;

    if (a->njobs == a->cap) {
        size_t cap = (a->cap == 0) ? 16 : 2 * a->cap;

        o = realloc(a->jobs, cap * sizeof(*o));
        if (o == NULL) {
            return NULL;
        }
        a->jobs = o;
        a->cap  = cap;
    }
    o  = &a->jobs[a->njobs++];
    *o = (msd_job_owner_t){.job = job, .principal = principal};
    return o;
}

/* Ownership lasts while the job has a session or a tensor. */
static void owner_maybe_drop(msd_auth_t *a, msd_job_owner_t *o)
{
    if ((o->sessions == 0) && (o->tensors == 0)) {
        *o = a->jobs[--a->njobs];
    }
}

/* Who the session is, once it has said HELLO (and proved the secret, if it had to). */
static uint64_t session_principal(const msd_session_t *s)
{
    if (s->uid_known) {
        return s->uid;
    }
    if (!s->authed) {
        return MSD_PRINCIPAL_NONE;
    }
    return s->job_secret ? (MSD_PRINCIPAL_JOB | s->job) : MSD_PRINCIPAL_SECRET;
}

void msd_auth_session_key(const msd_server_t *srv, uint32_t job, uint8_t key[MSP_KEY_BYTES],
                          bool *job_secret_p)
{
    char path[4096], err[512];

    *job_secret_p = false;
    if ((srv->cfg.job_secrets != NULL) && (job != MSP_JOB_CONTROL)) {
        snprintf(path, sizeof(path), "%s/%u", srv->cfg.job_secrets, job);
        if (access(path, F_OK) == 0) {
            if (msp_secret_load(path, key, err, sizeof(err)) == MEMSVC_OK) {
                *job_secret_p = true;
                return;
            }
            LOG_ERR("job %u: %s: its clients cannot authenticate", job, err);
            msp_auth_nonce(key); /* (a random key: nobody proves it) */
            return;
        }
    }
    if (srv->auth.has_secret) {
        memcpy(key, srv->auth.key, MSP_KEY_BYTES);
    } else {
        msp_auth_nonce(key);
    }
}

memsvc_status_t msd_auth_bind(msd_server_t *srv, msd_session_t *s, uint32_t job, bool control,
                              char *msg, size_t msglen)
{
    msd_auth_t      *a = &srv->auth;
    msd_job_owner_t *o;
    char             who[48], owner[48];

    s->principal = session_principal(s);
    msd_auth_principal_name(s->principal, who, sizeof(who));
    if (s->principal == MSD_PRINCIPAL_NONE) {
        bool secrets = a->has_secret || (srv->cfg.job_secrets != NULL);

        memsvc_errf(msg, msglen, "%s",
                    secrets ? "peer not identified (not on this host): prove the secret "
                              "(client: MEMSVC_SECRET_FILE)"
                            : "peer not identified (not on this host) and the daemon has "
                              "no --secret-file: refused");
        LOG_WARN("session %llu: HELLO for job %u refused: %s", (unsigned long long)s->id, job, msg);
        return MEMSVC_ERR_AUTH;
    }
    s->admin = s->uid_known && msd_auth_is_operator(a, s->uid, s->gid, s->local ? s->pid : 0);
    if (control) {
        return MEMSVC_OK;
    }
    o = owner_find(a, job);
    if ((o != NULL) && (o->principal != s->principal) && !s->admin) {
        msd_auth_principal_name(o->principal, owner, sizeof(owner));
        memsvc_errf(msg, msglen, "job %u belongs to another user", job);
        LOG_WARN("session %llu (%s): HELLO for job %u refused: the job belongs to %s",
                 (unsigned long long)s->id, who, job, owner);
        return MEMSVC_ERR_PERMISSION;
    }
    if (o == NULL) {
        o = owner_add(a, job, s->principal);
        if (o == NULL) {
            memsvc_errf(msg, msglen, "out of memory recording the job's owner");
            return MEMSVC_ERR_NO_RESOURCE;
        }
        LOG("job %u now belongs to %s (session %llu)", job, who, (unsigned long long)s->id);
    } else if (o->principal != s->principal) {
        msd_auth_principal_name(o->principal, owner, sizeof(owner));
        LOG("session %llu: operator %s administers job %u of %s", (unsigned long long)s->id, who,
            job, owner);
    }
    o->sessions++;
    s->counted = true;
    return MEMSVC_OK;
}

void msd_auth_session_gone(msd_server_t *srv, msd_session_t *s)
{
    msd_job_owner_t *o;

    if (!s->counted) {
        return;
    }
    s->counted = false;
    o          = owner_find(&srv->auth, s->job);
    if ((o != NULL) && (o->sessions > 0)) {
        o->sessions--;
        owner_maybe_drop(&srv->auth, o);
    }
}

void msd_auth_tensor_add(msd_server_t *srv, uint32_t job)
{
    msd_job_owner_t *o = owner_find(&srv->auth, job);

    if (o != NULL) {
        o->tensors++;
    }
}

void msd_auth_tensor_del(msd_server_t *srv, uint32_t job)
{
    msd_job_owner_t *o = owner_find(&srv->auth, job);

    if ((o != NULL) && (o->tensors > 0)) {
        o->tensors--;
        owner_maybe_drop(&srv->auth, o);
    }
}

uint64_t msd_auth_job_owner(const msd_server_t *srv, uint32_t job)
{
    size_t i;

    for (i = 0; i < srv->auth.njobs; i++) {
        if (srv->auth.jobs[i].job == job) {
            return srv->auth.jobs[i].principal;
        }
    }
    return MSD_PRINCIPAL_NONE;
}

void msd_auth_tensor_restore(msd_server_t *srv, uint32_t job, uint64_t principal)
{
    msd_job_owner_t *o = owner_find(&srv->auth, job);
    char             a[64], b[64];

    if ((o == NULL) && (principal != MSD_PRINCIPAL_NONE)) {
        o = owner_add(&srv->auth, job, principal);
    }
    if (o == NULL) {
        return;
    }
    if ((principal != MSD_PRINCIPAL_NONE) && (o->principal != principal)) {
        LOG_WARN("durable tensors of job %u were written by %s and by %s: the job stays %s's",
                 job, msd_auth_principal_name(o->principal, a, sizeof(a)),
                 msd_auth_principal_name(principal, b, sizeof(b)),
                 msd_auth_principal_name(o->principal, a, sizeof(a)));
    }
    o->tensors++;
}

bool msd_auth_sees_job(const msd_server_t *srv, const msd_session_t *s, uint32_t job)
{
    size_t i;

    if (s->admin) {
        return true;
    }
    for (i = 0; i < srv->auth.njobs; i++) {
        if (srv->auth.jobs[i].job == job) {
            return srv->auth.jobs[i].principal == s->principal;
        }
    }
    return false;
}
