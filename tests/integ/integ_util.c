/* integ_util.c - integration test helpers: memsvcd processes on free ports, a raw UCX peer */
#include "client/msp_proto.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define INTEG_START_TIMEOUT_NS 15000000000ull

/* Every process a test started, so that none outlives the run when a fatal assertion
 * leaves a test early. */
#define INTEG_MAX_PROCS 256
static pid_t integ_procs[INTEG_MAX_PROCS];

static void integ_kill_leftovers(void)
{
    unsigned i;
    int      status;

    for (i = 0; i < INTEG_MAX_PROCS; i++) {
        if ((integ_procs[i] > 0) && (waitpid(integ_procs[i], &status, WNOHANG) == 0)) {
            kill(integ_procs[i], SIGKILL);
            waitpid(integ_procs[i], &status, 0);
        }
        integ_procs[i] = 0;
    }
}

void integ_track(pid_t pid)
{
    static bool registered;
    unsigned    i;

    if (!registered) {
        atexit(integ_kill_leftovers);
        registered = true;
    }
    for (i = 0; i < INTEG_MAX_PROCS; i++) {
        if (integ_procs[i] <= 0) {
            integ_procs[i] = pid;
            return;
        }
    }
}

static void integ_untrack(pid_t pid)
{
    unsigned i;

    for (i = 0; i < INTEG_MAX_PROCS; i++) {
        if (integ_procs[i] == pid) {
            integ_procs[i] = 0;
        }
    }
}

/* The daemons' local sockets go to a directory of this run (MEMSVC_RUN_DIR), removed at exit. */
static char integ_run_dir[64];

static void integ_run_dir_remove(void)
{
    char cmd[128];

    if (integ_run_dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", integ_run_dir);
        if (system(cmd) != 0) {
            integ_run_dir[0] = '\0';
        }
    }
}

static void integ_run_dir_setup(void)
{
    if ((getenv("MEMSVC_RUN_DIR") != NULL) || (integ_run_dir[0] != '\0')) {
        return;
    }
    snprintf(integ_run_dir, sizeof(integ_run_dir), "/tmp/memsvc-test-XXXXXX");
    if (mkdtemp(integ_run_dir) == NULL) {
        integ_run_dir[0] = '\0';
        return;
    }
    setenv("MEMSVC_RUN_DIR", integ_run_dir, 1);
    atexit(integ_run_dir_remove);
}

/* Can port be bound on loopback now? */
static bool port_bindable(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int                fd = socket(AF_INET, SOCK_STREAM, 0);
    bool               ok;

    if (fd < 0) {
        return false;
    }
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port        = htons((uint16_t)port);
    ok                 = (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    close(fd);
    return ok;
}

/*
 * A port below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up by
 * default): a port the kernel handed out for bind(0) may be handed out again, before the
 * daemon binds it, as the local port of some outgoing connection (daemons of a cluster dial
 * each other as they start), and the daemon then finds it in use.
 */
int integ_free_port(void)
{
    static unsigned    seed, ngiven;
    static int         given[64];
    struct sockaddr_in sa  = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sa);
    int                fd, port = -1, k;

    if (seed == 0) {
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)msp_now_ns();
    }
    for (k = 0; k < 200; k++) {
        bool recent = false;
        int  j;

        seed = seed * 1103515245u + 12345u;
        port = 20000 + (int)((seed >> 8) % 12000); /* 20000..31999 */
        for (j = 0; j < 64; j++) {
            recent = recent || (given[j] == port); /* (given, not yet bound by its daemon) */
        }
        if (!recent && port_bindable(port)) {
            given[ngiven++ % 64] = port;
            return port;
        }
    }
    fd = socket(AF_INET, SOCK_STREAM, 0); /* (all taken: any free one) */
    if (fd < 0) {
        return -1;
    }
    port               = -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) &&
        (getsockname(fd, (struct sockaddr *)&sa, &len) == 0)) {
        port = ntohs(sa.sin_port);
    }
    close(fd);
    return port;
}

static bool integ_args_have(const char *const *args, const char *opt)
{
    while ((args != NULL) && (*args != NULL)) {
        if (strcmp(*args++, opt) == 0) {
            return true;
        }
    }
    return false;
}

bool integ_daemon_start(integ_daemon_t *d, const char *const *args)
{
    unsigned attempt;

    for (attempt = 0; attempt < 3; attempt++) {
        if (integ_daemon_start_at(d, NULL, args)) {
            return true;
        }
        if (!integ_log_contains(d, "cannot listen")) {
            return false;
        }
        /* another process took the free port before the daemon bound it: another port */
    }
    return false;
}

bool integ_daemon_start_at(integ_daemon_t *d, const char *addr, const char *const *args)
{
    const char   *argv[48];
    char          own[64];
    memsvc_conn_h conn;
    uint64_t      deadline;
    int           argc = 0, port, status;

    integ_run_dir_setup(); /* sets MEMSVC_RUN_DIR, read below */
    if (addr == NULL) {
        port = integ_free_port();
        if (port < 0) {
            return false;
        }
        snprintf(own, sizeof(own), "127.0.0.1:%d", port);
        addr = own;
    }
    argv[argc++] = "--listen";
    argv[argc++] = addr;
    if ((getenv("MEMSVC_RUN_DIR") != NULL) && !integ_args_have(args, "--state-dir")) {
        /* Durable state of test daemons goes with the run's directory, not to /dev/shm. */
        argv[argc++] = "--state-dir";
        argv[argc++] = getenv("MEMSVC_RUN_DIR");
    }
    while ((args != NULL) && (*args != NULL) && (argc < 46)) {
        argv[argc++] = *args++;
    }
    argv[argc] = NULL;
    if (!integ_daemon_spawn(d, addr, NULL, argv)) {
        return false;
    }
    deadline = msp_now_ns() + INTEG_START_TIMEOUT_NS;
    while (msp_now_ns() < deadline) {
        memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                                MEMSVC_CONN_FIELD_FLAGS |
                                                MEMSVC_CONN_FIELD_TIMEOUT_MS,
                                  .address    = d->addr,
                                  .job        = 0,
                                  .flags      = MEMSVC_CONN_CONTROL,
                                  .timeout_ms = 1000};

        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "memsvcd exited early; see %s\n", d->log);
            integ_untrack(d->pid);
            d->pid = 0;
            return false;
        }
        if (memsvc_connect(&p, &conn) == MEMSVC_OK) {
            memsvc_close(conn);
            /* Ours, not another process that holds the port (free_port races): it bound. */
            if (integ_log_contains(d, "listening on")) {
                return true;
            }
        }
        usleep(50000);
    }
    integ_daemon_stop(d);
    return false;
}

bool integ_daemon_spawn(integ_daemon_t *d, const char *addr, const char *netns,
                        const char *const *args)
{
    static unsigned seq;
    const char     *argv[48];
    char            path[512];
    int             argc = 0, fd;

    memset(d, 0, sizeof(*d));
    integ_run_dir_setup();
    snprintf(d->addr, sizeof(d->addr), "%s", addr);
    snprintf(d->log, sizeof(d->log), "%s/memsvcd-test-%d-s%u.log", integ_log_dir(), (int)getpid(),
             seq++);
    snprintf(path, sizeof(path), "%s/memsvcd", test_bin_dir());
    if (netns != NULL) {
        argv[argc++] = "ip";
        argv[argc++] = "netns";
        argv[argc++] = "exec";
        argv[argc++] = netns;
    }
    argv[argc++] = path;
    while ((args != NULL) && (*args != NULL) && (argc < 46)) {
        argv[argc++] = *args++;
    }
    argv[argc] = NULL;
    fflush(NULL);
    d->pid = fork();
    if (d->pid < 0) {
        return false;
    }
    if (d->pid == 0) {
        fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execvp(argv[0], (char *const *)argv); /* "ip netns exec" execs memsvcd in place */
        fprintf(stderr, "exec %s failed\n", argv[0]);
        _exit(127);
    }
    integ_track(d->pid);
    return true;
}

int integ_daemon_stop(integ_daemon_t *d)
{
    uint64_t deadline;
    int      status;

    if (d->pid <= 0) {
        return -1;
    }
    integ_untrack(d->pid);
    kill(d->pid, SIGTERM);
    deadline = msp_now_ns() + 5000000000ull;
    while (msp_now_ns() < deadline) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        usleep(10000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &status, 0);
    d->pid = 0;
    return -1;
}

const char *integ_log_dir(void)
{
    const char *dir = getenv("MEMSVC_TEST_LOG_DIR");

    return ((dir != NULL) && (*dir != '\0')) ? dir : "/tmp";
}

/* The whole of a file (at most cap - 1 bytes) into buf; "" when it cannot be read. */
static void integ_slurp(const char *path, char *buf, size_t cap)
{
    FILE  *f = fopen(path, "r");
    size_t n = 0;

    if (f != NULL) {
        n = fread(buf, 1, cap - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

int integ_run(const char *const *argv, const char *const *env, char *out, size_t outlen, char *err,
              size_t errlen)
{
    static unsigned seq;
    char            opath[320], epath[320];
    uint64_t        deadline;
    pid_t           pid;
    int             status, fd, rc = -1;

    snprintf(opath, sizeof(opath), "%s/run-%d-%u.out", integ_log_dir(), (int)getpid(), seq);
    snprintf(epath, sizeof(epath), "%s/run-%d-%u.err", integ_log_dir(), (int)getpid(), seq++);
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        fd = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 0);
            close(fd);
        }
        fd = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            close(fd);
        }
        fd = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        while ((env != NULL) && (*env != NULL)) {
            putenv((char *)*env++);
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s failed\n", argv[0]);
        _exit(127);
    }
    integ_track(pid);
    deadline = msp_now_ns() + 60000000000ull;
    while (msp_now_ns() < deadline) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            break;
        }
        usleep(10000);
    }
    if (rc == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    integ_untrack(pid);
    if (out != NULL) {
        integ_slurp(opath, out, outlen);
    }
    if (err != NULL) {
        integ_slurp(epath, err, errlen);
    }
    unlink(opath);
    unlink(epath);
    return rc;
}

int integ_daemon_signal(integ_daemon_t *d, int sig)
{
    uint64_t deadline = msp_now_ns() + 30000000000ull;
    int      status;

    if (d->pid <= 0) {
        return -1;
    }
    kill(d->pid, sig);
    while (msp_now_ns() < deadline) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            integ_untrack(d->pid);
            d->pid = 0;
            return status;
        }
        usleep(5000);
    }
    return -1; /* still running: stays tracked (killed at exit) */
}

bool integ_log_contains(const integ_daemon_t *d, const char *text)
{
    char  *line  = NULL;
    size_t cap   = 0;
    bool   found = false;
    FILE  *f     = fopen(d->log, "r");

    if (f == NULL) {
        return false;
    }
    while (!found && (getline(&line, &cap, f) > 0)) {
        found = (strstr(line, text) != NULL);
    }
    free(line);
    fclose(f);
    return found;
}

memsvc_status_t integ_connect_flags(const integ_daemon_t *d, uint32_t job, uint32_t rank,
                                    uint32_t flags, memsvc_conn_h *conn_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_RANK | MEMSVC_CONN_FIELD_TIMEOUT_MS |
                                            MEMSVC_CONN_FIELD_FLAGS,
                              .address    = d->addr,
                              .job        = job,
                              .rank       = rank,
                              .flags      = flags,
                              .timeout_ms = 10000};

    return memsvc_connect(&p, conn_p);
}

memsvc_status_t integ_connect(const integ_daemon_t *d, uint32_t job, uint32_t rank,
                              memsvc_conn_h *conn_p)
{
    return integ_connect_flags(d, job, rank, 0, conn_p);
}

bool integ_wait_sessions(const integ_daemon_t *d, uint64_t want, memsvc_stats_t *st)
{
    uint64_t deadline = msp_now_ns() + 10000000000ull;

    while (msp_now_ns() < deadline) {
        if ((integ_stats(d, st) == MEMSVC_OK) && (st->sessions == want)) {
            return true;
        }
        usleep(20000);
    }
    return false;
}

void integ_kill_wait(pid_t pid)
{
    int status;

    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

memsvc_status_t integ_deferred(memsvc_conn_h conn, memsvc_op_t op, memsvc_handle_t handle)
{
    memsvc_deferred_error_t e;
    memsvc_status_t         status = memsvc_flush(conn);

    if (status == MEMSVC_OK) {
        return (memsvc_errors(conn, &e, 1) == 0) ? MEMSVC_OK : MEMSVC_ERR_PROTOCOL;
    }
    if (status != MEMSVC_ERR_DEFERRED) {
        return status;
    }
    if ((memsvc_errors(conn, &e, 1) != 1) || (e.op != op) || (e.handle != handle) || (e.seq == 0) ||
        (e.message[0] == '\0') || (e.status >= 0)) {
        return MEMSVC_ERR_PROTOCOL;
    }
    return e.status;
}

memsvc_status_t integ_stats(const integ_daemon_t *d, memsvc_stats_t *stats_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = d->addr,
                              .job        = 0,
                              .flags      = MEMSVC_CONN_CONTROL,
                              .timeout_ms = 10000};
    memsvc_status_t      status;
    memsvc_conn_h        conn;

    status = memsvc_connect(&p, &conn);
    if (status != MEMSVC_OK) {
        return status;
    }
    status = memsvc_stats(conn, stats_p);
    memsvc_close(conn);
    return status;
}

/* ---- raw peer ------------------------------------------------------------------------------- */

#define RAW_POSTED_MAX 512

struct integ_raw {
    ucp_context_h ctx;
    ucp_worker_h  worker;
    ucp_ep_h      ep;
    bool          got, failed;
    msp_rep_t     rep;
    size_t        nrep;
    uint8_t       am[1024]; /* integ_raw_am: the last message back */
    size_t        am_len;
    unsigned      replies;                 /* reply messages received */
    uint64_t      want_id;                 /* integ_raw_wait_id: the reply looked for */
    bool          got_wanted;
    msp_rep_t     wanted;
    void         *posted[RAW_POSTED_MAX]; /* integ_raw_post requests not freed yet */
    void         *posted_hdr[RAW_POSTED_MAX]; /* their headers */
    unsigned      nposted;
};

static ucs_status_t raw_reply_cb(void *arg, const void *header, size_t header_length, void *data,
                                 size_t length, const ucp_am_recv_param_t *param)
{
    integ_raw_t *raw = arg;
    msp_rep_t    reps[MSP_BATCH_MAX];

    size_t       i;

    if (msp_decode_replies(header, header_length, reps, MSP_BATCH_MAX, &raw->nrep) == MEMSVC_OK) {
        raw->rep = reps[0];
        for (i = 0; i < raw->nrep; i++) {
            if ((raw->want_id != 0) && (reps[i].id == raw->want_id)) {
                raw->wanted    = reps[i];
                raw->got_wanted = true;
            }
        }
    } else {
        raw->rep.status = MEMSVC_ERR_PROTOCOL;
        raw->nrep       = 0;
    }
    raw->got = true;
    raw->replies++;
    return UCS_OK;
}

static void raw_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    ((integ_raw_t *)arg)->failed = true;
}

memsvc_status_t integ_raw_connect(const integ_daemon_t *d, integ_raw_t **raw_p)
{
    ucp_params_t        cp = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_AM};
    ucp_worker_params_t wp = {.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};
    ucp_ep_params_t         ep = {0};
    struct sockaddr_storage ss;
    socklen_t               sslen;
    integ_raw_t            *raw = calloc(1, sizeof(*raw));

    if ((raw == NULL) || (msp_parse_addr(d->addr, &ss, &sslen) != MEMSVC_OK)) {
        free(raw);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (ucp_init(&cp, NULL, &raw->ctx) != UCS_OK) {
        free(raw);
        return MEMSVC_ERR_TRANSPORT;
    }
    if (ucp_worker_create(raw->ctx, &wp, &raw->worker) != UCS_OK) {
        ucp_cleanup(raw->ctx);
        free(raw);
        return MEMSVC_ERR_TRANSPORT;
    }
    msp_ucx_am_handler(raw->worker, MSP_AM_REPLY, raw_reply_cb, raw);
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr    = (struct sockaddr *)&ss;
    ep.sockaddr.addrlen = sslen;
    ep.err_mode         = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb   = raw_err_cb;
    ep.err_handler.arg  = raw;
    if (ucp_ep_create(raw->worker, &ep, &raw->ep) != UCS_OK) {
        ucp_worker_destroy(raw->worker);
        ucp_cleanup(raw->ctx);
        free(raw);
        return MEMSVC_ERR_TRANSPORT;
    }
    *raw_p = raw;
    return MEMSVC_OK;
}

memsvc_status_t integ_raw_post(integ_raw_t *raw, const void *hdr, size_t hlen, const void *payload,
                               size_t plen)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags        = UCP_AM_SEND_FLAG_REPLY};
    ucs_status_ptr_t    sp;
    void               *copy;

    if (raw->nposted == RAW_POSTED_MAX) {
        return MEMSVC_ERR_TOO_LARGE;
    }
    /* UCX reads the header until the send completes (1.13 has no flag to copy it) */
    copy = malloc(hlen);
    if (copy == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    memcpy(copy, hdr, hlen);
    sp = ucp_am_send_nbx(raw->ep, MSP_AM_REQUEST, copy, hlen, payload, plen, &param);
    if (UCS_PTR_IS_ERR(sp)) {
        free(copy);
        return MEMSVC_ERR_TRANSPORT;
    }
    if (UCS_PTR_IS_PTR(sp)) {
        raw->posted_hdr[raw->nposted] = copy;
        raw->posted[raw->nposted++]   = sp;
    } else {
        free(copy);
    }
    return MEMSVC_OK;
}

void integ_raw_progress(integ_raw_t *raw, uint64_t ns)
{
    uint64_t deadline = msp_now_ns() + ns;

    do {
        ucp_worker_progress(raw->worker);
    } while (msp_now_ns() < deadline);
}

memsvc_status_t integ_raw_wait_id(integ_raw_t *raw, uint64_t id, uint64_t ns,
                                  memsvc_status_t *status_p, char *msg, size_t msglen)
{
    uint64_t deadline = msp_now_ns() + ns;

    raw->want_id    = id;
    raw->got_wanted = false;
    while (!raw->got_wanted && !raw->failed && (msp_now_ns() < deadline)) {
        ucp_worker_progress(raw->worker);
    }
    raw->want_id = 0;
    if (!raw->got_wanted) {
        return raw->failed ? MEMSVC_ERR_TRANSPORT : MEMSVC_ERR_TIMEOUT;
    }
    *status_p = raw->wanted.status;
    if (msg != NULL) {
        snprintf(msg, msglen, "%s", raw->wanted.msg);
    }
    return MEMSVC_OK;
}

unsigned integ_raw_replies(const integ_raw_t *raw)
{
    return raw->replies;
}

void integ_raw_close(integ_raw_t *raw)
{
    ucp_request_param_t p        = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                    .flags        = UCP_EP_CLOSE_FLAG_FORCE};
    ucs_status_ptr_t    sp       = ucp_ep_close_nbx(raw->ep, &p);
    uint64_t            deadline = msp_now_ns() + 2000000000ull;
    unsigned            i;

    if (UCS_PTR_IS_PTR(sp)) {
        while ((ucp_request_check_status(sp) == UCS_INPROGRESS) && (msp_now_ns() < deadline)) {
            ucp_worker_progress(raw->worker);
        }
        ucp_request_free(sp);
    }
    for (i = 0; i < raw->nposted; i++) {
        /* closed by force: they complete (canceled) as the worker progresses */
        while ((ucp_request_check_status(raw->posted[i]) == UCS_INPROGRESS) &&
               (msp_now_ns() < deadline)) {
            ucp_worker_progress(raw->worker);
        }
        ucp_request_free(raw->posted[i]);
    }
    ucp_worker_destroy(raw->worker);
    for (i = 0; i < raw->nposted; i++) {
        free(raw->posted_hdr[i]); /* nothing reads them once the worker is gone */
    }
    ucp_cleanup(raw->ctx);
    free(raw);
}

static ucs_status_t raw_am_cb(void *arg, const void *header, size_t header_length, void *data,
                              size_t length, const ucp_am_recv_param_t *param)
{
    integ_raw_t *raw = arg;

    raw->am_len = (header_length < sizeof(raw->am)) ? header_length : sizeof(raw->am);
    memcpy(raw->am, header, raw->am_len);
    return UCS_OK;
}

memsvc_status_t integ_raw_am(integ_raw_t *raw, unsigned id, const void *hdr, size_t hlen,
                             unsigned wait_ms, void *reply, size_t cap, size_t *rlen_p)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags        = UCP_AM_SEND_FLAG_REPLY};
    uint64_t            deadline;
    ucs_status_ptr_t    sp;

    *rlen_p     = 0;
    raw->am_len = 0;
    if (msp_ucx_am_handler(raw->worker, id, raw_am_cb, raw) != UCS_OK) {
        return MEMSVC_ERR_TRANSPORT;
    }
    sp = ucp_am_send_nbx(raw->ep, id, hdr, hlen, NULL, 0, &param);
    if (UCS_PTR_IS_ERR(sp)) {
        return MEMSVC_ERR_TRANSPORT;
    }
    deadline = msp_now_ns() + 10000000000ull;
    if (UCS_PTR_IS_PTR(sp)) {
        while ((ucp_request_check_status(sp) == UCS_INPROGRESS) && !raw->failed &&
               (msp_now_ns() < deadline)) {
            ucp_worker_progress(raw->worker);
        }
        ucp_request_free(sp);
    }
    deadline = msp_now_ns() + (uint64_t)wait_ms * 1000000ull;
    while ((raw->am_len == 0) && !raw->failed && (msp_now_ns() < deadline)) {
        ucp_worker_progress(raw->worker);
    }
    *rlen_p = (raw->am_len < cap) ? raw->am_len : cap;
    memcpy(reply, raw->am, *rlen_p);
    return raw->failed ? MEMSVC_ERR_TRANSPORT : MEMSVC_OK;
}

memsvc_status_t integ_raw_call(integ_raw_t *raw, const void *hdr, size_t hlen, const void *payload,
                               size_t plen, memsvc_status_t *status_p, uint64_t *id_p, char *msg,
                               size_t msglen)
{
    ucp_request_param_t param = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                 .flags        = UCP_AM_SEND_FLAG_REPLY};
    ucs_status_ptr_t    sp;
    uint64_t            deadline = msp_now_ns() + 10000000000ull;

    raw->got = false;
    sp       = ucp_am_send_nbx(raw->ep, MSP_AM_REQUEST, hdr, hlen, payload, plen, &param);
    if (UCS_PTR_IS_ERR(sp)) {
        return MEMSVC_ERR_TRANSPORT;
    }
    while (!raw->got && !raw->failed && (msp_now_ns() < deadline)) {
        ucp_worker_progress(raw->worker);
    }
    if (UCS_PTR_IS_PTR(sp)) {
        while ((ucp_request_check_status(sp) == UCS_INPROGRESS) && !raw->failed &&
               (msp_now_ns() < deadline)) {
            ucp_worker_progress(raw->worker);
        }
        ucp_request_free(sp);
    }
    if (!raw->got) {
        return raw->failed ? MEMSVC_ERR_TRANSPORT : MEMSVC_ERR_TIMEOUT;
    }
    *status_p = raw->rep.status;
    if (id_p != NULL) {
        *id_p = raw->rep.id;
    }
    if (msg != NULL) {
        snprintf(msg, msglen, "%s", raw->rep.msg);
    }
    return MEMSVC_OK;
}

size_t integ_hello(void *buf, size_t cap, uint32_t version, uint32_t job, uint32_t rank)
{
    msp_req_t req = {.op = MSP_OP_HELLO, .id = 1};
    msp_buf_t b   = {buf, cap, 0, false};

    req.u.hello.version = version;
    req.u.hello.job     = job;
    req.u.hello.rank    = rank;
    snprintf(req.u.hello.name, sizeof(req.u.hello.name), "raw");
    return (msp_encode_requests(&req, 1, &b) == MEMSVC_OK) ? b.len : 0;
}

/* ---- child processes --------------------------------------------------------------------------
 */

void integ_child_ready(int fd)
{
    char c = 'y';

    if (write(fd, &c, 1) != 1) {
        _exit(3);
    }
}

static void child_hold(integ_daemon_t *d, int fd)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_PARAM};
    memsvc_handle_t       hp, ha;
    memsvc_conn_h         conn;
    uint8_t               want[4096];

    test_fill(want, sizeof(want), 99);
    if ((integ_connect(d, 3, 5, &conn) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "w.param", sizeof(want), &ap, &hp) != MEMSVC_OK) ||
        (memsvc_write(conn, hp, 0, want, sizeof(want)) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "x.act", 8192, NULL, &ha) != MEMSVC_OK) ||
        (memsvc_acquire(conn, hp) != MEMSVC_OK) || (memsvc_acquire(conn, ha) != MEMSVC_OK)) {
        _exit(1);
    }
    integ_child_ready(fd);
    for (;;) {
        pause();
    }
}

static void child_bigwrite(integ_daemon_t *d, int fd)
{
    memsvc_conn_h   conn;
    memsvc_handle_t h;
    uint64_t        size = 256u << 10;
    uint8_t        *big  = calloc(1, size);

    if ((big == NULL) || (integ_connect(d, 1, 1, &conn) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "big", size, NULL, &h) != MEMSVC_OK)) {
        _exit(1);
    }
    integ_child_ready(fd);
    for (;;) {
        memsvc_write(conn, h, 0, big, size);
    }
}

/* In a re-executed child: act the role and never return to the test runner. */
static void __attribute__((constructor)) integ_child_main(void)
{
    const char    *role = getenv("MEMSVC_INTEG_CHILD");
    const char    *addr = getenv("MEMSVC_INTEG_ADDR");
    const char    *fds  = getenv("MEMSVC_INTEG_FD");
    integ_daemon_t d    = {0};

    if ((role == NULL) || (addr == NULL) || (fds == NULL)) {
        return;
    }
    snprintf(d.addr, sizeof(d.addr), "%s", addr);
    if (strcmp(role, "hold") == 0) {
        child_hold(&d, atoi(fds));
    } else if (strcmp(role, "bigwrite") == 0) {
        child_bigwrite(&d, atoi(fds));
    } else if (strncmp(role, "local-", 6) == 0) {
        integ_local_child(&d, role, atoi(fds));
    } else if (strncmp(role, "auth-", 5) == 0) {
        integ_auth_child(&d, role, atoi(fds));
    } else if (strncmp(role, "restart-", 8) == 0) {
        integ_restart_child(&d, role, atoi(fds));
    } else if (strncmp(role, "fastpin-", 8) == 0) {
        integ_fastpin_child(&d, role, atoi(fds));
    } else if (strncmp(role, "limits-", 7) == 0) {
        integ_limits_child(&d, role, atoi(fds));
    } else if (strncmp(role, "service-", 8) == 0) {
        integ_service_child(&d, role, atoi(fds));
    } else if (strncmp(role, "cluster-", 8) == 0) {
        integ_cluster_child(&d, role, atoi(fds));
    }
    _exit(2);
}

pid_t integ_spawn_child(const integ_daemon_t *d, const char *role, const char *const *env,
                        int *fd_p)
{
    char  fdstr[16];
    int   p[2];
    pid_t pid;

    if (pipe(p) != 0) {
        return -1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        snprintf(fdstr, sizeof(fdstr), "%d", p[1]);
        setenv("MEMSVC_INTEG_CHILD", role, 1);
        setenv("MEMSVC_INTEG_ADDR", d->addr, 1);
        setenv("MEMSVC_INTEG_FD", fdstr, 1);
        while ((env != NULL) && (env[0] != NULL) && (env[1] != NULL)) {
            setenv(env[0], env[1], 1);
            env += 2;
        }
        if (getenv("MEMSVC_INTEG_NETNS") != NULL) {
            /* "ip netns exec" also shows the namespace's devices in /sys, where UCX looks */
            char    exe[4096];
            ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

            if (n > 0) {
                exe[n] = '\0';
                execlp("ip", "ip", "netns", "exec", getenv("MEMSVC_INTEG_NETNS"), exe,
                       (char *)NULL);
            }
            _exit(127);
        }
        execl("/proc/self/exe", "memsvc_tests-child", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    integ_track(pid);
    *fd_p = p[0];
    return pid;
}

pid_t integ_spawn(const integ_daemon_t *d, const char *role)
{
    return integ_spawn_env(d, role, NULL);
}

pid_t integ_spawn_env(const integ_daemon_t *d, const char *role, const char *const *env)
{
    struct pollfd pfd;
    char          c = 0;
    int           fd, status;
    pid_t         pid = integ_spawn_child(d, role, env, &fd);

    if (pid < 0) {
        return -1;
    }
    pfd = (struct pollfd){.fd = fd, .events = POLLIN};
    if ((poll(&pfd, 1, 20000) != 1) || (read(fd, &c, 1) != 1) || (c != 'y')) {
        close(fd);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        integ_untrack(pid);
        return -1;
    }
    close(fd);
    return pid;
}
