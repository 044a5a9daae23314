/* test_auth.c - identity end to end: job ownership by uid, probes, secrets, loopback, operators */
#include "client/memsvc.h"
#include "client/msp_proto.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * The tests run as root; clients of other users are this binary re-executed, dropping to
 * MEMSVC_AUTH_UID/GID before they connect. With gid 0 such a client can attach the daemon's
 * shared memory (UCX makes its sysv segments mode 0660, group root here) and is served on the
 * local path, identified by SO_PEERCRED; with its own gid it falls back to tcp on loopback and
 * is identified by the owner of its socket. Both must be refused another user's job.
 */

#define AUTH_CHILD_MS 20000

static const char *const tiny_backed[] = {"--node", "tiny", "--memory", "backed", NULL};

/* ---- the other users' side (a re-executed child) ------------------------------------------- */

static void child_say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void child_say(int fd, const char *fmt, ...)
{
    char    line[256];
    va_list ap;
    int     n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if ((n < 0) || (n >= (int)sizeof(line) - 1)) {
        _exit(4);
    }
    line[n++] = '\n';
    if (write(fd, line, (size_t)n) != n) {
        _exit(3);
    }
}

static bool child_count(void *arg, const memsvc_tensor_info_t *info)
{
    (*(unsigned *)arg)++;
    return true;
}

static void child_drop_privileges(int fd)
{
    uid_t uid = (uid_t)atoi(getenv("MEMSVC_AUTH_UID"));
    gid_t gid = (gid_t)atoi(getenv("MEMSVC_AUTH_GID"));
    gid_t groups[1];
    int   ngroups = 0;

    if (getenv("MEMSVC_AUTH_GROUP") != NULL) {
        groups[ngroups++] = (gid_t)atoi(getenv("MEMSVC_AUTH_GROUP"));
    }
    if ((setgroups((size_t)ngroups, groups) != 0) || (setgid(gid) != 0) || (setuid(uid) != 0) ||
        (geteuid() != uid)) {
        child_say(fd, "status=999 cannot become uid %u", (unsigned)uid);
        _exit(1);
    }
}

void integ_auth_child(integ_daemon_t *d, const char *role, int fd)
{
    memsvc_alloc_params_t ap  = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS,
                                 .flags      = MEMSVC_ALLOC_DURABLE};
    uint32_t              job = (uint32_t)atoi(getenv("MEMSVC_AUTH_JOB"));
    memsvc_status_t       st;
    memsvc_conn_h         conn;
    memsvc_handle_t       h;
    uint8_t               buf[4096];

    child_drop_privileges(fd);
    if (strcmp(role, "auth-bind") == 0) { /* bind the job, allocate, leave */
        st = integ_connect(d, job, 0, &conn);
        if (st == MEMSVC_OK) {
            st = memsvc_alloc(conn, "c.t", 4096, NULL, &h);
            memsvc_close(conn);
        }
        child_say(fd, "status=%d", (int)st);
        _exit(0);
    }
    if (strcmp(role, "auth-hold") == 0) { /* own the job with a durable tensor; wait */
        test_fill(buf, sizeof(buf), 5);
        st = integ_connect(d, job, 0, &conn);
        if (st == MEMSVC_OK) {
            st = memsvc_alloc(conn, "n.t", sizeof(buf), &ap, &h);
        }
        if (st == MEMSVC_OK) {
            st = memsvc_write(conn, h, 0, buf, sizeof(buf));
        }
        child_say(fd, "status=%d %s", (int)st,
                  (st != MEMSVC_OK)                                             ? "-"
                  : (strstr(memsvc_conn_transport(conn), "not mapped") != NULL) ? "copied"
                  : (strstr(memsvc_conn_transport(conn), "mapped") != NULL)     ? "mapped"
                                                                                : "?");
        for (;;) {
            pause();
        }
    }
    if (strcmp(role, "auth-ctl") == 0) { /* what this user's control session sees */
        memsvc_conn_params_t  p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                                 MEMSVC_CONN_FIELD_FLAGS |
                                                 MEMSVC_CONN_FIELD_TIMEOUT_MS,
                                   .address    = d->addr,
                                   .job        = 0,
                                   .flags      = MEMSVC_CONN_CONTROL,
                                   .timeout_ms = 10000};
        static memsvc_stats_t stats;
        unsigned              all = 0, other = 0;

        st = memsvc_connect(&p, &conn);
        if (st == MEMSVC_OK) {
            st = memsvc_list(conn, UINT32_MAX, child_count, &all);
        }
        if (st == MEMSVC_OK) {
            st = memsvc_list(conn, (uint32_t)job, child_count, &other);
        }
        if (st == MEMSVC_OK) {
            st = memsvc_stats(conn, &stats);
        }
        child_say(fd, "status=%d all=%u job=%u live=%llu sessions=%llu kinds=%llu", (int)st, all,
                  other, (unsigned long long)stats.live_tensors, (unsigned long long)stats.sessions,
                  (unsigned long long)stats.dev[0].tensors_by_kind[MEMSVC_KIND_ACTIVATION] +
                      stats.dev[0].tensors_by_kind[MEMSVC_KIND_PARAM]);
        _exit(0);
    }
    _exit(2);
}

/* ---- the test's side --------------------------------------------------------------------- */

typedef struct auth_who {
    unsigned uid, gid;
    int      group; /* one supplementary group, or -1 */
} auth_who_t;

/* Start role as who, for job; *fd_p reads its report line. */
static pid_t auth_spawn(const integ_daemon_t *d, const char *role, auth_who_t who, uint32_t job,
                        int *fd_p)
{
    char        uid[16], gid[16], group[16], jobs[16];
    const char *env[] = {"MEMSVC_AUTH_UID", uid, "MEMSVC_AUTH_GID", gid, "MEMSVC_AUTH_JOB", jobs,
                         (who.group >= 0) ? "MEMSVC_AUTH_GROUP" : NULL, group, NULL};

    snprintf(uid, sizeof(uid), "%u", who.uid);
    snprintf(gid, sizeof(gid), "%u", who.gid);
    snprintf(jobs, sizeof(jobs), "%u", job);
    snprintf(group, sizeof(group), "%d", who.group);
    return integ_spawn_child(d, role, env, fd_p);
}

/* Read the child's report line (bounded); false if none came. */
static bool auth_read(int fd, char *line, size_t cap)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    size_t        n   = 0;
    char          c;

    while (n + 1 < cap) {
        if ((poll(&pfd, 1, AUTH_CHILD_MS) != 1) || (read(fd, &c, 1) != 1)) {
            break;
        }
        if (c == '\n') {
            line[n] = '\0';
            return true;
        }
        line[n++] = c;
    }
    line[n] = '\0';
    return false;
}

static void auth_reap(pid_t pid)
{
    int status;

    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

/* Run role as who to its end; its report in line. Returns the status it reported. */
static int auth_run(const integ_daemon_t *d, const char *role, auth_who_t who, uint32_t job,
                    char *line, size_t cap)
{
    int   fd, st = 1000;
    pid_t pid = auth_spawn(d, role, who, job, &fd);

    if (pid < 0) {
        return 1001;
    }
    if (auth_read(fd, line, cap) && (sscanf(line, "status=%d", &st) != 1)) {
        st = 1002;
    }
    close(fd);
    auth_reap(pid);
    return st;
}

/* The run directory holding the daemons' sockets: other users must reach their socket. */
static void auth_open_run_dir(void)
{
    const char *dir = getenv("MEMSVC_RUN_DIR");

    if (dir != NULL) {
        CU_ASSERT(chmod(dir, 0755) == 0);
    }
}

static const auth_who_t nobody_local = {65534, 0, -1};     /* shm path (group root) */
static const auth_who_t nobody_tcp   = {65534, 65534, -1}; /* falls back to tcp */
static const auth_who_t other_local  = {65533, 0, -1};
static const auth_who_t other_tcp    = {65533, 65533, -1};

static bool count_cb(void *arg, const memsvc_tensor_info_t *info)
{
    (*(unsigned *)arg)++;
    return true;
}

/* A job belongs to the uid that bound it: others are refused, the owner keeps working. */
static void test_takeover_refused(void)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS,
                                .flags      = MEMSVC_ALLOC_DURABLE};
    memsvc_conn_params_t  cp = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                              MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                                .job        = 0,
                                .flags      = MEMSVC_CONN_CONTROL,
                                .timeout_ms = 10000};
    static uint8_t        want[65536], got[65536];
    memsvc_tensor_info_t  info;
    memsvc_stats_t       *st = calloc(1, sizeof(*st));
    integ_daemon_t        d;
    memsvc_conn_h         root, ctl, admin;
    memsvc_handle_t       h;
    uint64_t              deadline;
    unsigned              n = 0;
    char                  line[256];
    pid_t                 hold;
    int                   fd, rc;

    CU_ASSERT_FATAL(st != NULL);
    START(&d, tiny_backed);
    auth_open_run_dir();
    cp.address = d.addr;
    TEST_ASSERT_OK(integ_connect(&d, 100, 0, &root));
    test_fill(want, sizeof(want), 11);
    TEST_ASSERT_OK(memsvc_alloc(root, "root.w", sizeof(want), &ap, &h));
    TEST_ASSERT_OK(memsvc_write(root, h, 0, want, sizeof(want)));

    /* nobody cannot bind root's job: on the local path nor over tcp */
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", nobody_local, 100, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    CU_ASSERT(integ_log_contains(&d, "uid 65534 gid 0 on the unix socket"));
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", nobody_tcp, 100, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    CU_ASSERT(integ_log_contains(&d, "(uid 65534): HELLO for job 100 refused"));
    /* root's session is untouched: bytes intact, still served */
    TEST_ASSERT_OK(memsvc_read(root, h, 0, got, sizeof(got)));
    CU_ASSERT_EQUAL(memcmp(got, want, sizeof(want)), 0);
    TEST_ASSERT_OK(memsvc_acquire(root, h));
    TEST_ASSERT_OK(memsvc_release(root, h));
    TEST_ASSERT_OK(memsvc_ping(root, NULL));

    /* a job nobody owns (a live session and a durable tensor) */
    hold = auth_spawn(&d, "auth-hold", nobody_local, 200, &fd);
    CU_ASSERT_FATAL(hold > 0);
    CU_ASSERT(auth_read(fd, line, sizeof(line)));
    /* on the local path, but the device's memory is not mapped into another user's process */
    CU_ASSERT_STRING_EQUAL(line, "status=0 copied");
    CU_ASSERT(strstr(memsvc_conn_transport(root), "local worker, mapped") != NULL);
    close(fd);
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", other_local, 200, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", other_tcp, 200, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    /* root administers it: lists it, binds it, reads its bytes */
    TEST_ASSERT_OK(memsvc_connect(&cp, &ctl));
    TEST_ASSERT_OK(memsvc_list(ctl, 200, count_cb, &n));
    CU_ASSERT_EQUAL(n, 1);
    TEST_ASSERT_OK(integ_connect(&d, 200, 0, &admin));
    CU_ASSERT(integ_log_contains(&d, "operator uid 0 administers job 200 of uid 65534"));
    TEST_ASSERT_OK(memsvc_lookup(admin, "n.t", &info));
    test_fill(want, 4096, 5);
    TEST_ASSERT_OK(memsvc_read(admin, info.handle, 0, got, 4096));
    CU_ASSERT_EQUAL(memcmp(got, want, 4096), 0);
    memsvc_close(admin);

    /* nobody's control session sees its job alone; another user's sees nothing */
    rc = auth_run(&d, "auth-ctl", nobody_tcp, 100, line, sizeof(line));
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(line, "status=0 all=1 job=0 live=1 sessions=1 kinds=1");
    rc = auth_run(&d, "auth-ctl", other_local, 200, line, sizeof(line));
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(line, "status=0 all=0 job=0 live=0 sessions=0 kinds=0");
    /* root's sees both jobs */
    n = 0;
    TEST_ASSERT_OK(memsvc_list(ctl, UINT32_MAX, count_cb, &n));
    CU_ASSERT_EQUAL(n, 2);
    TEST_ASSERT_OK(memsvc_stats(ctl, st));
    CU_ASSERT_EQUAL(st->live_tensors, 2);

    /* nobody's process dies: its durable tensor, kept for re-attach, keeps the job its own */
    auth_reap(hold);
    deadline = msp_now_ns() + 10000000000ull;
    do {
        TEST_ASSERT_OK(memsvc_stats(ctl, st));
    } while ((st->orphans == 0) && (msp_now_ns() < deadline) && (usleep(20000) == 0));
    CU_ASSERT_EQUAL(st->orphans, 1);
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", other_local, 200, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);

    /* a job with no session and no tensor left belongs to nobody: the next user takes it */
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", nobody_local, 300, line, sizeof(line)), 0);
    deadline = msp_now_ns() + 10000000000ull;
    do {
        rc = auth_run(&d, "auth-bind", other_local, 300, line, sizeof(line));
    } while ((rc == MEMSVC_ERR_PERMISSION) && (msp_now_ns() < deadline) && (usleep(50000) == 0));
    CU_ASSERT_EQUAL(rc, 0);

    memsvc_close(ctl);
    memsvc_close(root);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* A job's owner is kept with its durable tensors across a kill -9 of the daemon: after the
 * restart another user still cannot bind the job, its owner can, root lists it. */
static void test_owner_survives_restart(void)
{
    integ_daemon_t d, d2;
    char           addr[64], line[256];
    pid_t          hold;
    int            fd;

    START(&d, tiny_backed);
    auth_open_run_dir();
    hold = auth_spawn(&d, "auth-hold", nobody_local, 400, &fd);
    CU_ASSERT_FATAL(hold > 0);
    CU_ASSERT(auth_read(fd, line, sizeof(line)));
    CU_ASSERT_STRING_EQUAL(line, "status=0 copied");
    close(fd);
    auth_reap(hold);
    snprintf(addr, sizeof(addr), "%s", d.addr);
    CU_ASSERT(integ_daemon_signal(&d, SIGKILL) != -1);
    CU_ASSERT_FATAL(integ_daemon_start_at(&d2, addr, tiny_backed));
    CU_ASSERT(integ_log_contains(&d2, "recovered"));
    CU_ASSERT_EQUAL(auth_run(&d2, "auth-bind", other_local, 400, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    CU_ASSERT_EQUAL(auth_run(&d2, "auth-bind", other_tcp, 400, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    CU_ASSERT_EQUAL(auth_run(&d2, "auth-bind", nobody_local, 400, line, sizeof(line)), 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d2), 0);
}

/* An operator group's member administers every job: lists it, sees its figures. */
static void test_operator_group(void)
{
    static const char *const args[] = {"--node",           "tiny",    "--memory", "backed",
                                       "--operator-group", "nogroup", NULL};
    const auth_who_t         op     = {65533, 0, 65534}; /* supplementary nogroup */
    integ_daemon_t           d;
    memsvc_conn_h            root;
    memsvc_handle_t          h;
    char                     line[256];

    START(&d, args);
    auth_open_run_dir();
    TEST_ASSERT_OK(integ_connect(&d, 7, 0, &root));
    TEST_ASSERT_OK(memsvc_alloc(root, "a", 4096, NULL, &h));
    /* on the local path its groups are read from /proc/PID/status */
    CU_ASSERT_EQUAL(auth_run(&d, "auth-ctl", op, 7, line, sizeof(line)), 0);
    /* (an operator's figures are the node's: every session, its own control session too) */
    CU_ASSERT_STRING_EQUAL(line, "status=0 all=1 job=1 live=1 sessions=2 kinds=1");
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", op, 7, line, sizeof(line)), 0);
    CU_ASSERT(integ_log_contains(&d, "operator uid 65533 administers job 7 of uid 0"));
    /* without the group it is an ordinary user */
    CU_ASSERT_EQUAL(auth_run(&d, "auth-bind", other_local, 7, line, sizeof(line)),
                    MEMSVC_ERR_PERMISSION);
    memsvc_close(root);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* ---- probes ------------------------------------------------------------------------------- */

/* Replace every occurrence of what in s by "X" (so that messages naming the probed handle or
 * key compare equal). */
static void blot(char *s, const char *what)
{
    char  *p;
    size_t n = strlen(what);

    while ((n > 0) && ((p = strstr(s, what)) != NULL)) {
        *p = 'X';
        memmove(p + 1, p + n, strlen(p + n) + 1);
    }
}

typedef struct probe {
    memsvc_status_t status;
    char            msg[MSP_MSG_MAX + 1];
} probe_t;

static probe_t probe_op(integ_raw_t *raw, uint32_t op, uint64_t handle, const char *key)
{
    static uint8_t hdr[MSP_HEADER_MAX];
    static uint8_t payload[16];
    msp_req_t      req = {.op = op, .id = 77};
    msp_buf_t      b   = {hdr, sizeof(hdr), 0, false};
    probe_t        r   = {.status = MEMSVC_ERR_TIMEOUT};
    char           hex[32];

    switch (op) {
    case MSP_OP_READ:
    case MSP_OP_WRITE:
        req.u.io.handle = handle;
        req.u.io.len    = sizeof(payload);
        break;
    case MSP_OP_HINT:
        req.u.hint.type        = MEMSVC_HINT_UPCOMING;
        req.u.hint.num_handles = 1;
        req.u.hint.handles[0]  = handle;
        break;
    case MSP_OP_LOOKUP:
        snprintf(req.u.lookup.key, sizeof(req.u.lookup.key), "%s", key);
        break;
    default:
        req.u.h.handle = handle;
        break;
    }
    if (msp_encode_requests(&req, 1, &b) != MEMSVC_OK) {
        return r;
    }
    if (integ_raw_call(raw, hdr, b.len, (op == MSP_OP_WRITE) ? payload : NULL,
                       (op == MSP_OP_WRITE) ? sizeof(payload) : 0, &r.status, NULL, r.msg,
                       sizeof(r.msg)) != MEMSVC_OK) {
        r.status = MEMSVC_ERR_TIMEOUT;
    }
    snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)handle);
    blot(r.msg, hex);
    if (key != NULL) {
        blot(r.msg, key);
    }
    return r;
}

/* Another job's live handle and a handle nobody holds get the same answer, word for word. */
static void test_probes_indistinguishable(void)
{
    static const uint32_t ops[] = {MSP_OP_ACQUIRE, MSP_OP_READ,    MSP_OP_WRITE,
                                   MSP_OP_FREE,    MSP_OP_RELEASE, MSP_OP_HINT};
    uint8_t               hello[256], want[4096], got[4096];
    memsvc_tensor_info_t  info;
    integ_daemon_t        d;
    integ_raw_t          *raw;
    memsvc_conn_h         owner;
    memsvc_handle_t       h, stale;
    memsvc_status_t       st;
    uint64_t              handles[3];
    probe_t               p[3];
    size_t                len;
    unsigned              i, k;

    START(&d, tiny_backed);
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &owner));
    test_fill(want, sizeof(want), 3);
    TEST_ASSERT_OK(memsvc_alloc(owner, "probe.t", sizeof(want), NULL, &h));
    TEST_ASSERT_OK(memsvc_write(owner, h, 0, want, sizeof(want)));
    TEST_ASSERT_OK(memsvc_alloc(owner, "gone.t", 4096, NULL, &stale));
    TEST_ASSERT_OK(memsvc_free(owner, stale));
    TEST_ASSERT_OK(memsvc_flush(owner));
    handles[0] = h;                      /* job 1's, alive */
    handles[1] = stale;                  /* freed */
    handles[2] = h ^ 0x5a5a5a5a00000ull; /* never issued */

    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    len = integ_hello(hello, sizeof(hello), MSP_VERSION, 2, 0);
    TEST_ASSERT_OK(integ_raw_call(raw, hello, len, NULL, 0, &st, NULL, NULL, 0));
    CU_ASSERT_EQUAL_FATAL(st, MEMSVC_OK);
    for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        for (k = 0; k < 3; k++) {
            p[k] = probe_op(raw, ops[i], handles[k], NULL);
        }
        CU_ASSERT_EQUAL(p[0].status, MEMSVC_ERR_NOT_FOUND);
        for (k = 1; k < 3; k++) {
            CU_ASSERT_EQUAL(p[k].status, p[0].status);
            CU_ASSERT_STRING_EQUAL(p[k].msg, p[0].msg);
        }
        if (p[1].status != p[0].status || strcmp(p[1].msg, p[0].msg) != 0) {
            fprintf(stderr, "%s: '%s' vs '%s'\n", msp_op_name(ops[i]), p[0].msg, p[1].msg);
        }
    }
    /* lookup by key: another job's key and a key nobody used */
    p[0] = probe_op(raw, MSP_OP_LOOKUP, 0, "probe.t");
    p[1] = probe_op(raw, MSP_OP_LOOKUP, 0, "never.t");
    CU_ASSERT_EQUAL(p[0].status, MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(p[1].status, p[0].status);
    CU_ASSERT_STRING_EQUAL(p[1].msg, p[0].msg);
    integ_raw_close(raw);

    /* none of it touched the owner's tensor */
    TEST_ASSERT_OK(memsvc_lookup(owner, "probe.t", &info));
    CU_ASSERT_EQUAL(info.handle, h);
    CU_ASSERT_EQUAL(info.pins, 0);
    TEST_ASSERT_OK(memsvc_read(owner, h, 0, got, sizeof(got)));
    CU_ASSERT_EQUAL(memcmp(got, want, sizeof(want)), 0);
    memsvc_close(owner);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* ---- secrets ------------------------------------------------------------------------------ */

static char secret_dir[64];

static const char *secret_file(const char *name, const char *text, mode_t mode)
{
    static char paths[8][128];
    static int  next;
    char       *path = paths[next++ % 8];
    FILE       *f;

    snprintf(path, 128, "%s/%s", secret_dir, name);
    f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
    CU_ASSERT(chmod(path, mode) == 0);
    return path;
}

/* Start memsvcd with args; its stderr in log. */
static pid_t spawn_memsvcd(const char *const *args, const char *log)
{
    const char *argv[24];
    char        path[512];
    pid_t       pid;
    int         argc = 0;

    snprintf(path, sizeof(path), "%s/memsvcd", test_bin_dir());
    argv[argc++] = path;
    while ((*args != NULL) && (argc < 23)) {
        argv[argc++] = *args++;
    }
    argv[argc] = NULL;
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        dup2(fd, 2);
        dup2(fd, 1);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    if (pid > 0) {
        integ_track(pid);
    }
    return pid;
}

/* Wait (bounded) for pid's exit status; -1 if it had to be killed. */
static int wait_memsvcd(pid_t pid, uint64_t timeout_ns)
{
    uint64_t deadline = msp_now_ns() + timeout_ns;
    int      status;

    while (msp_now_ns() < deadline) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Run memsvcd with args to its end (bounded); its stderr in log. Returns its exit status. */
static int run_memsvcd(const char *const *args, const char *log)
{
    pid_t pid = spawn_memsvcd(args, log);

    return (pid > 0) ? wait_memsvcd(pid, 10000000000ull) : -1;
}

static bool file_contains(const char *path, const char *text)
{
    integ_daemon_t d = {0};

    snprintf(d.log, sizeof(d.log), "%s", path);
    return integ_log_contains(&d, text);
}

static memsvc_status_t tcp_connect(const integ_daemon_t *d, const char *secret, uint32_t job,
                                   memsvc_conn_h *conn_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS |
                                            MEMSVC_CONN_FIELD_SECRET_FILE,
                              .address     = d->addr,
                              .job         = job,
                              .flags       = MEMSVC_CONN_TCP,
                              .timeout_ms  = 10000,
                              .secret_file = secret};

    return memsvc_connect(&p, conn_p);
}

/* A daemon with --secret-file: the right secret is served, a wrong or missing one refused, in
 * both directions; unsafe secret files are refused by both sides. */
static void test_secret(void)
{
    const char     *good, *bad, *group, *world;
    const char     *log = "/tmp/memsvcd-test-auth-secret.log";
    uint8_t         hello[256], hdr[256], want[8192], got[8192];
    integ_daemon_t  d, plain;
    integ_raw_t    *raw;
    memsvc_conn_h   conn;
    memsvc_handle_t h;
    memsvc_status_t st;
    msp_req_t       req = {.op = MSP_OP_HELLO, .id = 1};
    msp_buf_t       b   = {hdr, sizeof(hdr), 0, false};
    char            msg[MSP_MSG_MAX + 1];
    size_t          len;

    snprintf(secret_dir, sizeof(secret_dir), "/tmp/memsvc-auth-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(secret_dir) != NULL);
    good  = secret_file("good", "correct horse battery staple 7f3a\n", 0600);
    bad   = secret_file("bad", "incorrect horse battery staple 7f3a\n", 0600);
    group = secret_file("group", "correct horse battery staple 7f3a\n", 0640);
    world = secret_file("world", "correct horse battery staple 7f3a\n", 0604);

    /* the daemon refuses unsafe secret files and remote listening without a secret */
    {
        const char *const a1[] = {"--node", "tiny", "--secret-file", group, NULL};
        const char *const a2[] = {"--node", "tiny", "--secret-file", world, NULL};
        const char *const a3[] = {"--node",      "tiny",           "--listen",
                                  "127.0.0.1:1", "--allow-remote", NULL};

        CU_ASSERT_EQUAL(run_memsvcd(a1, log), 2);
        CU_ASSERT(file_contains(log, "accessible by group or others (mode 0640)"));
        CU_ASSERT_EQUAL(run_memsvcd(a2, log), 2);
        CU_ASSERT(file_contains(log, "(mode 0604): chmod 600 it"));
        CU_ASSERT_EQUAL(run_memsvcd(a3, log), 2);
        CU_ASSERT(file_contains(log, "--allow-remote without --secret-file"));
    }

    {
        const char *const args[] = {"--node",           "tiny",          "--memory",
                                    "backed",           "--secret-file", good,
                                    "--require-secret", "--no-unix",     NULL};

        setenv("MEMSVC_SECRET_FILE", good, 1); /* for the start-up probe of integ */
        START(&d, args);
        unsetenv("MEMSVC_SECRET_FILE");
    }
    /* the right secret: served, both ways proven */
    TEST_ASSERT_OK(tcp_connect(&d, good, 5, &conn));
    CU_ASSERT_NSTRING_EQUAL(memsvc_conn_transport(conn), "tcp", 3);
    test_fill(want, sizeof(want), 9);
    TEST_ASSERT_OK(memsvc_alloc(conn, "s.t", sizeof(want), NULL, &h));
    TEST_ASSERT_OK(memsvc_write(conn, h, 0, want, sizeof(want)));
    TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, sizeof(got)));
    CU_ASSERT_EQUAL(memcmp(got, want, sizeof(want)), 0);
    memsvc_close(conn);
    CU_ASSERT(integ_log_contains(&d, "secret proven"));
    /* a wrong secret, none, an unsafe one (refused by the client before anything is sent) */
    CU_ASSERT_EQUAL(tcp_connect(&d, bad, 5, &conn), MEMSVC_ERR_AUTH);
    CU_ASSERT(integ_log_contains(&d, "the client's proof of the secret is wrong"));
    CU_ASSERT_EQUAL(tcp_connect(&d, NULL, 5, &conn), MEMSVC_ERR_AUTH);
    CU_ASSERT(integ_log_contains(&d, "without a secret refused"));
    CU_ASSERT_EQUAL(tcp_connect(&d, group, 5, &conn), MEMSVC_ERR_AUTH);
    CU_ASSERT_EQUAL(tcp_connect(&d, world, 5, &conn), MEMSVC_ERR_AUTH);
    setenv("MEMSVC_SECRET_FILE", good, 1); /* the environment serves as well */
    TEST_ASSERT_OK(tcp_connect(&d, NULL, 5, &conn));
    unsetenv("MEMSVC_SECRET_FILE");
    memsvc_close(conn);

    /* raw: a made-up proof is refused, and the connection stays refused */
    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    req.u.hello.version   = MSP_VERSION;
    req.u.hello.job       = 5;
    req.u.hello.has_nonce = true;
    TEST_ASSERT_OK(msp_encode_requests(&req, 1, &b));
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, b.len, NULL, 0, &st, NULL, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(st, MEMSVC_OK); /* the challenge */
    len = integ_hello(hello, sizeof(hello), MSP_VERSION, 5, 0);
    TEST_ASSERT_OK(integ_raw_call(raw, hello, len, NULL, 0, &st, NULL, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(st, MEMSVC_ERR_PROTOCOL); /* only AUTH may follow the challenge */
    memset(&req, 0, sizeof(req));
    req.op = MSP_OP_AUTH;
    req.id = 2;
    memset(req.u.auth.proof, 0x42, sizeof(req.u.auth.proof));
    b.len = 0;
    TEST_ASSERT_OK(msp_encode_requests(&req, 1, &b));
    TEST_ASSERT_OK(integ_raw_call(raw, hdr, b.len, NULL, 0, &st, NULL, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(st, MEMSVC_ERR_AUTH);
    CU_ASSERT(strstr(msg, "wrong secret") != NULL);
    TEST_ASSERT_OK(integ_raw_call(raw, hello, len, NULL, 0, &st, NULL, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(st, MEMSVC_ERR_AUTH);
    integ_raw_close(raw);
    /* an older client (no nonce) cannot prove anything: refused */
    TEST_ASSERT_OK(integ_raw_connect(&d, &raw));
    len = integ_hello(hello, sizeof(hello), 2, 5, 0);
    TEST_ASSERT_OK(integ_raw_call(raw, hello, len, NULL, 0, &st, NULL, msg, sizeof(msg)));
    CU_ASSERT_EQUAL(st, MEMSVC_ERR_AUTH);
    integ_raw_close(raw);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);

    /* a daemon without the secret (or an impostor) cannot prove it: the client refuses it */
    {
        const char *const args[] = {"--node", "tiny", "--no-unix", NULL};

        START(&plain, args);
    }
    CU_ASSERT_EQUAL(tcp_connect(&plain, good, 5, &conn), MEMSVC_ERR_AUTH);
    CU_ASSERT_EQUAL(integ_daemon_stop(&plain), 0);

    unlink(good);
    unlink(bad);
    unlink(group);
    unlink(world);
    rmdir(secret_dir);
}

/* --job-secrets: a job's own secret file admits its clients, and no other job's. */
static void test_job_secrets(void)
{
    const char    *log = "/tmp/memsvcd-test-auth-jobs.log";
    char           jobs[128];
    const char    *five, *other, *seven, *mine;
    integ_daemon_t d;
    memsvc_conn_h  conn;

    snprintf(secret_dir, sizeof(secret_dir), "/tmp/memsvc-auth-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(secret_dir) != NULL);
    snprintf(jobs, sizeof(jobs), "%s", secret_dir);
    five  = secret_file("5", "job five's own secret, 0123456789\n", 0600);
    seven = secret_file("7", "job seven's own secret, 0123456789\n", 0640); /* unsafe */
    other = secret_file("other", "not job five's secret, 0123456789\n", 0600);
    mine  = secret_file("7.client", "job seven's own secret, 0123456789\n", 0600);
    {
        const char *const bad[] = {"--node", "tiny", "--job-secrets", "/nonexistent/dir", NULL};

        CU_ASSERT_EQUAL(run_memsvcd(bad, log), 2);
        CU_ASSERT(file_contains(log, "/nonexistent/dir is not a directory"));
    }
    {
        const char *const args[] = {"--node", "tiny", "--no-unix", "--job-secrets", jobs, NULL};

        START(&d, args);
    }
    TEST_ASSERT_OK(tcp_connect(&d, five, 5, &conn));
    memsvc_close(conn);
    CU_ASSERT(integ_log_contains(&d, "secret proven"));
    CU_ASSERT_EQUAL(tcp_connect(&d, five, 6, &conn), MEMSVC_ERR_AUTH);  /* another job's */
    CU_ASSERT_EQUAL(tcp_connect(&d, other, 5, &conn), MEMSVC_ERR_AUTH); /* a wrong one */
    /* the client's copy is safe, the daemon's is not: nobody can authenticate for job 7 */
    CU_ASSERT_EQUAL(tcp_connect(&d, mine, 7, &conn), MEMSVC_ERR_AUTH);
    CU_ASSERT(integ_log_contains(&d, "its clients cannot authenticate"));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    unlink(five);
    unlink(seven);
    unlink(other);
    unlink(mine);
    rmdir(secret_dir);
}

/* ---- loopback ----------------------------------------------------------------------------- */

static int free_port(void)
{
    struct sockaddr_in sa  = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sa);
    int                fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((fd >= 0) && (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) &&
        (getsockname(fd, (struct sockaddr *)&sa, &len) == 0)) {
        port = ntohs(sa.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

/* The listen address is resolved: a name that is not loopback is refused, localhost is not. */
static void test_loopback_listen(void)
{
    const char    *log = "/tmp/memsvcd-test-auth-listen.log";
    char           evil[64], wild[64], local[64];
    integ_daemon_t d    = {0};
    memsvc_conn_h  conn = NULL;
    uint64_t       deadline;
    pid_t          pid;
    int            port = free_port();

    CU_ASSERT_FATAL(port > 0);
    snprintf(evil, sizeof(evil), "127.evil.example:%d", port);
    snprintf(wild, sizeof(wild), "0.0.0.0:%d", port);
    snprintf(local, sizeof(local), "localhost:%d", port);
    {
        const char *const a1[] = {"--node", "tiny", "--listen", evil, NULL};
        const char *const a2[] = {"--node", "tiny", "--listen", wild, NULL};

        CU_ASSERT_EQUAL(run_memsvcd(a1, log), 2);
        CU_ASSERT(file_contains(log, "refusing to listen on 127.evil.example"));
        CU_ASSERT_EQUAL(run_memsvcd(a2, log), 2);
        CU_ASSERT(file_contains(log, "not a loopback address"));
    }
    {
        const char *const a3[] = {"--node", "tiny", "--no-unix", "--listen", local, NULL};

        pid = spawn_memsvcd(a3, log);
        CU_ASSERT_FATAL(pid > 0);
    }
    snprintf(d.addr, sizeof(d.addr), "%s", local);
    deadline = msp_now_ns() + 15000000000ull;
    while ((tcp_connect(&d, NULL, 1, &conn) != MEMSVC_OK) && (msp_now_ns() < deadline)) {
        usleep(50000);
    }
    CU_ASSERT(conn != NULL);
    if (conn != NULL) {
        TEST_ASSERT_OK(memsvc_ping(conn, NULL));
        memsvc_close(conn);
    }
    kill(pid, SIGTERM);
    CU_ASSERT_EQUAL(wait_memsvcd(pid, 5000000000ull), 0);
    CU_ASSERT(file_contains(log, "listening on localhost:"));
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_auth", NULL, NULL);

    CU_add_test(s, "job takeover by another uid refused; root administers", test_takeover_refused);
    CU_add_test(s, "a job's owner survives a restart with its durable tensors",
                test_owner_survives_restart);
    CU_add_test(s, "an operator group administers", test_operator_group);
    CU_add_test(s, "probes of another job's handles and keys indistinguishable",
                test_probes_indistinguishable);
    CU_add_test(s, "a cluster secret, proven both ways", test_secret);
    CU_add_test(s, "per-job secrets", test_job_secrets);
    CU_add_test(s, "the listen address resolves to loopback", test_loopback_listen);
}

TEST_REGISTER(service_auth, add_suite)
