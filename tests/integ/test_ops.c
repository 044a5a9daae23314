/* test_ops.c - operating memsvcd: config file, SIGHUP, log levels, listen errors, the metrics
 * endpoint (every line parsed), memsvc-ctl's usage errors, watch and jobs, --version and --help
 * of every program, the example run twice, an interrupted bench_replay */
#include "client/memsvc.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define OPS_OUT 65536

static char ops_out[OPS_OUT], ops_err[OPS_OUT];

static const char *bin(const char *name)
{
    static char     paths[8][512];
    static unsigned next;
    char           *p = paths[next++ % 8];

    snprintf(p, 512, "%s/%s", test_bin_dir(), name);
    return p;
}

/* Run a program of the build with up to 10 arguments (NULL-terminated); output in ops_out/err. */
static int run(const char *name, ...)
{
    const char *argv[12];
    va_list     ap;
    int         argc = 0;

    argv[argc++] = bin(name);
    va_start(ap, name);
    while ((argc < 11) && ((argv[argc] = va_arg(ap, const char *)) != NULL)) {
        argc++;
    }
    va_end(ap);
    argv[argc] = NULL;
    return integ_run(argv, NULL, ops_out, sizeof(ops_out), ops_err, sizeof(ops_err));
}

/* A file in the log directory with the given text; its path in path. */
static void write_file(char *path, size_t len, const char *name, const char *text)
{
    FILE *f;

    snprintf(path, len, "%s/%s-%d", integ_log_dir(), name, (int)getpid());
    f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* Wait (bounded, 10 s) until the daemon's log holds text. */
static bool log_wait(const integ_daemon_t *d, const char *text)
{
    int i;

    for (i = 0; i < 1000; i++) {
        if (integ_log_contains(d, text)) {
            return true;
        }
        usleep(10000);
    }
    return false;
}

/* ---- config file and SIGHUP ---------------------------------------------------------------- */

static void test_config_errors(void)
{
    char path[512], want[600];

    write_file(path, sizeof(path), "bad-key.conf", "# a comment\nnode = tiny\nfrob = 3\n");
    CU_ASSERT_EQUAL(run("memsvcd", "--config", path, NULL), 2);
    snprintf(want, sizeof(want), "%s:3: unknown key 'frob'", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, want));
    unlink(path);

    write_file(path, sizeof(path), "bad-value.conf", "loops = many\n");
    CU_ASSERT_EQUAL(run("memsvcd", "--config", path, NULL), 2);
    snprintf(want, sizeof(want), "%s:1: loops: 'many' is not a count", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, want));
    unlink(path);

    write_file(path, sizeof(path), "bad-flag.conf", "\n  poll = maybe # no\n");
    CU_ASSERT_EQUAL(run("memsvcd", "--config", path, NULL), 2);
    snprintf(want, sizeof(want), "%s:2: poll: 'maybe' is not true or false", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, want));
    unlink(path);

    write_file(path, sizeof(path), "no-eq.conf", "node tiny\n");
    CU_ASSERT_EQUAL(run("memsvcd", "--config", path, NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "expected 'key = value'"));
    unlink(path);

    CU_ASSERT_EQUAL(run("memsvcd", "--config", "/nonexistent/memsvcd.conf", NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "cannot read config file /nonexistent/memsvcd.conf"));
    CU_ASSERT_EQUAL(run("memsvcd", "--no-config", "--log-level", "loud", NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "--log-level: 'loud' is not a log level"));
    CU_ASSERT_EQUAL(run("memsvcd", "--no-config", "--log-target", "syslog", NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "--log-target: 'syslog' is not a log target"));
}

/* The file's keys apply, flags override them, SIGHUP reloads what it can and says so; a bad
 * file at reload changes nothing. */
static void test_config_and_reload(void)
{
    char            path[512];
    const char     *args[] = {"--config", path, "--keep-durable", "7", NULL};
    integ_daemon_t  d;
    memsvc_stats_t *st = calloc(1, sizeof(*st));

    CU_ASSERT_FATAL(st != NULL);
    write_file(path, sizeof(path), "reload.conf",
               "# memsvcd test config\nnode = tiny\nnode-param = hbm=32MiB\n"
               "keep-durable = 5   # the command line says 7\nlog-level = info\n");
    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    CU_ASSERT(integ_log_contains(&d, "kept 7 s for re-attach"));
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT_STRING_EQUAL(st->node, "tiny");
    CU_ASSERT_EQUAL(st->dev[0].capacity, 32ull << 20);

    write_file(path, sizeof(path), "reload.conf",
               "node = tiny\nnode-param = hbm=32MiB\nkeep-durable = 9\nlog-level = debug\n"
               "spin-us = 10\npolicy = lru:drop=on\nmetrics = 1\njob-quota = tensors=2\n"
               "session-queue = 64\n");
    kill(d.pid, SIGHUP);
    CU_ASSERT(log_wait(&d, "log level: info -> debug"));
    CU_ASSERT(log_wait(&d, "spin-us: 50 -> 10"));
    CU_ASSERT(log_wait(&d, "job-quota: changed"));
    CU_ASSERT(log_wait(&d, "session-queue: 256 -> 64"));
    CU_ASSERT(log_wait(&d, "configuration reloaded: 4 setting(s) changed"));
    {
        /* the reloaded quota holds for the next allocations */
        memsvc_conn_h   conn;
        memsvc_handle_t h[3];

        TEST_ASSERT_OK(integ_connect(&d, 5, 0, &conn));
        TEST_ASSERT_OK(memsvc_alloc(conn, "q.a", 4096, NULL, &h[0]));
        TEST_ASSERT_OK(memsvc_alloc(conn, "q.b", 4096, NULL, &h[1]));
        CU_ASSERT_EQUAL(memsvc_alloc(conn, "q.c", 4096, NULL, &h[2]), MEMSVC_ERR_QUOTA);
        memsvc_close(conn);
    }
    CU_ASSERT(!integ_log_contains(&d, "keep-durable: 7 s")); /* the flag still wins */
    CU_ASSERT(integ_log_contains(&d, "the policy or the memory mode changed"));
    CU_ASSERT(integ_log_contains(&d, "--listen, --unix or --metrics changed"));

    write_file(path, sizeof(path), "reload.conf", "log-level = err\nbogus = 1\n");
    kill(d.pid, SIGHUP);
    CU_ASSERT(log_wait(&d, "reload failed"));
    CU_ASSERT(integ_log_contains(&d, ":2: unknown key 'bogus'"));
    TEST_ASSERT_OK(integ_stats(&d, st)); /* still serving, unchanged */
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    unlink(path);
    free(st);
}

static void test_log_level(void)
{
    char                 addr[64];
    const char          *args[] = {"--listen",    addr,   "--node", "tiny", "--no-config",
                                   "--log-level", "warn", NULL};
    integ_daemon_t       d;
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = addr,
                              .flags      = MEMSVC_CONN_CONTROL,
                              .timeout_ms = 1000};
    memsvc_conn_h        conn;
    bool                 up = false;
    int                  i;

    /* integ_daemon_start waits for "listening on", which this level leaves out: start it
     * directly and wait until it answers. */
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", integ_free_port());
    CU_ASSERT_FATAL(integ_daemon_spawn(&d, addr, NULL, args));
    for (i = 0; (i < 200) && !up; i++) {
        up = (memsvc_connect(&p, &conn) == MEMSVC_OK);
        if (up) {
            memsvc_close(conn);
        } else {
            usleep(50000);
        }
    }
    CU_ASSERT(up);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    CU_ASSERT(!integ_log_contains(&d, " info "));
    CU_ASSERT(!integ_log_contains(&d, "listening on"));
}

/* UCX's own messages come through the logger (component ucx, mapped level), never on stdout. */
static void test_ucx_messages_logged(void)
{
    const char *argv[] = {bin("memsvcd"), "--no-config", "--node",      "tiny",
                          "--no-unix",    "--listen",    "127.0.0.1:0", NULL};
    const char *env[]  = {"UCX_TLS=nosuchtl", NULL};

    CU_ASSERT_EQUAL(integ_run(argv, env, ops_out, sizeof(ops_out), ops_err, sizeof(ops_err)), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "Z warn  ucx: transport 'nosuchtl' is not available"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "Z err   server: ucp_init: "));
    CU_ASSERT_EQUAL(ops_out[0], '\0');
}

/* stderr that is the journal's stream (JOURNAL_STREAM names its device and inode): a <N>
 * priority prefix, no timestamp. */
static void test_journal_stream_prefix(void)
{
    char        path[512], env[128], text[4096] = "";
    const char *path_bin = bin("memsvcd");
    struct stat st;
    pid_t       pid;
    int         fd, status;
    FILE       *f;

    snprintf(path, sizeof(path), "%s/journal-stream-%d", integ_log_dir(), (int)getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CU_ASSERT_FATAL((fd >= 0) && (fstat(fd, &st) == 0));
    snprintf(env, sizeof(env), "JOURNAL_STREAM=%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    fflush(NULL);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        putenv(env);
        execl(path_bin, path_bin, "--no-config", "--listen", "127.0.0.1:99999", (char *)NULL);
        _exit(127);
    }
    close(fd);
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && (WEXITSTATUS(status) == 2));
    f = fopen(path, "r");
    CU_ASSERT_FATAL(f != NULL);
    text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
    fclose(f);
    CU_ASSERT_PTR_EQUAL(strstr(text, "<3>memsvcd: --listen: '127.0.0.1:99999' is not HOST:PORT"),
                        text);
    unlink(path);
}

/* --log-target journal where no journald listens (this machine, a container): lines are not
 * lost, they go to stderr. */
static void test_journal_fallback(void)
{
    const char *argv[] = {bin("memsvcd"),    "--no-config", "--log-target", "journal", "--listen",
                          "127.0.0.1:99999", NULL};
    struct stat st;

    if (stat("/run/systemd/journal/socket", &st) == 0) {
        return; /* a journald is there: the line went to it */
    }
    CU_ASSERT_EQUAL(integ_run(argv, NULL, ops_out, sizeof(ops_out), ops_err, sizeof(ops_err)), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "warn  memsvcd: --log-target journal: no journald"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "err   memsvcd: --listen: '127.0.0.1:99999'"));
}

/* Read notification datagrams (bounded wait) until one holds want; false if none did. */
static bool notify_wait(int fd, const char *want)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char          msg[512];
    ssize_t       n;

    while (poll(&pfd, 1, 10000) == 1) {
        n = recv(fd, msg, sizeof(msg) - 1, 0);
        if (n <= 0) {
            return false;
        }
        msg[n] = '\0';
        if (strstr(msg, want) != NULL) {
            return true;
        }
    }
    return false;
}

/* Type=notify: READY=1 once serving, STATUS= with the sessions, STOPPING=1 at SIGTERM; the
 * daemon talks to $NOTIFY_SOCKET as systemd gives it. */
static void test_sd_notify(void)
{
    struct sockaddr_un sa     = {.sun_family = AF_UNIX};
    const char        *args[] = {"--node", "tiny", "--no-config", NULL};
    integ_daemon_t     d;
    memsvc_conn_h      conn;
    int                fd;

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify-%d", integ_log_dir(), (int)getpid());
    if (strlen(sa.sun_path) + 1 >= sizeof(sa.sun_path)) {
        snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/memsvc-notify-%d", (int)getpid());
    }
    unlink(sa.sun_path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    setenv("NOTIFY_SOCKET", sa.sun_path, 1);
    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    unsetenv("NOTIFY_SOCKET");
    CU_ASSERT(notify_wait(fd, "READY=1"));
    TEST_ASSERT_OK(integ_connect(&d, 4, 0, &conn));
    CU_ASSERT(notify_wait(fd, "sessions"));
    memsvc_close(conn);
    kill(d.pid, SIGHUP);
    CU_ASSERT(notify_wait(fd, "RELOADING=1"));
    CU_ASSERT(notify_wait(fd, "READY=1"));
    kill(d.pid, SIGTERM);
    CU_ASSERT(notify_wait(fd, "STOPPING=1"));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    close(fd);
    unlink(sa.sun_path);
}

/* ---- listen errors: before any startup line ------------------------------------------------ */

static void test_listen_errors(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char               addr[64];
    int                fd, port;

    CU_ASSERT_EQUAL(run("memsvcd", "--no-config", "--listen", "127.0.0.1:99999", NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "'127.0.0.1:99999' is not HOST:PORT"));
    CU_ASSERT_PTR_NULL(strstr(ops_err, "node '"));

    port = integ_free_port();
    CU_ASSERT_FATAL(port > 0);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port        = htons((uint16_t)port);
    CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CU_ASSERT_FATAL(listen(fd, 4) == 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    CU_ASSERT_EQUAL(run("memsvcd", "--no-config", "--no-unix", "--listen", addr, NULL), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "address in use"));
    CU_ASSERT_PTR_NULL(strstr(ops_err, "Device is busy"));
    CU_ASSERT_PTR_NULL(strstr(ops_err, "node '"));
    close(fd);
}

/* ---- metrics --------------------------------------------------------------------------------- */

/* GET path from 127.0.0.1:port; the body into buf. Returns the HTTP status code, or -1. */
static int http_get(int port, const char *path, char *buf, size_t cap, char *ctype, size_t ctlen)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct pollfd      pfd;
    char               req[256], *body, *h;
    size_t             len = 0;
    ssize_t            n;
    int                fd, code = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port        = htons((uint16_t)port);
    fd                 = socket(AF_INET, SOCK_STREAM, 0);
    if ((fd < 0) || (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return -1;
    }
    pfd = (struct pollfd){.fd = fd, .events = POLLIN};
    while ((len < cap - 1) && (poll(&pfd, 1, 10000) == 1)) {
        n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0) {
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1) {
        return -1;
    }
    h = strcasestr(buf, "\r\nContent-Type: ");
    if ((h != NULL) && (ctype != NULL)) {
        snprintf(ctype, ctlen, "%.*s", (int)strcspn(h + 16, "\r"), h + 16);
    }
    body = strstr(buf, "\r\n\r\n");
    if (body == NULL) {
        return -1;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return code;
}

/* ---- a parser of the text exposition format 0.0.4 ---- */

#define MAX_FAMILIES 256

typedef struct expo {
    char     names[MAX_FAMILIES][128];
    char     types[MAX_FAMILIES][16];
    bool     sampled[MAX_FAMILIES];
    unsigned n;
    unsigned samples;
} expo_t;

static size_t metric_name_len(const char *p)
{
    size_t n = 0;

    if (!(isalpha((unsigned char)p[0]) || (p[0] == '_') || (p[0] == ':'))) {
        return 0;
    }
    while (isalnum((unsigned char)p[n]) || (p[n] == '_') || (p[n] == ':')) {
        n++;
    }
    return n;
}

static size_t label_name_len(const char *p)
{
    size_t n = 0;

    if (!(isalpha((unsigned char)p[0]) || (p[0] == '_'))) {
        return 0;
    }
    while (isalnum((unsigned char)p[n]) || (p[n] == '_')) {
        n++;
    }
    return n;
}

static int expo_family(expo_t *e, const char *name, size_t len)
{
    unsigned i;

    for (i = 0; i < e->n; i++) {
        if ((strlen(e->names[i]) == len) && (strncmp(e->names[i], name, len) == 0)) {
            return (int)i;
        }
    }
    return -1;
}

/* The family a sample belongs to: its name, or a histogram's name without _bucket/_sum/_count. */
static int expo_sample_family(expo_t *e, const char *name, size_t len, bool *is_bucket)
{
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    unsigned                 i;
    int                      f = expo_family(e, name, len);

    *is_bucket = false;
    if (f >= 0) {
        return f;
    }
    for (i = 0; i < 3; i++) {
        size_t sl = strlen(sfx[i]);

        if ((len > sl) && (strncmp(name + len - sl, sfx[i], sl) == 0)) {
            f = expo_family(e, name, len - sl);
            if ((f >= 0) && (strcmp(e->types[f], "histogram") == 0)) {
                *is_bucket = (i == 0);
                return f;
            }
        }
    }
    return -1;
}

/* One line; NULL if it is valid, else what is wrong with it. */
static const char *expo_line(expo_t *e, const char *line)
{
    const char *p = line;
    char       *end;
    size_t      n;
    bool        is_bucket, has_le = false;
    int         f;

    if (*p == '\0') {
        return NULL;
    }
    if (*p == '#') {
        if ((strncmp(p, "# HELP ", 7) == 0) || (strncmp(p, "# TYPE ", 7) == 0)) {
            bool type = (p[2] == 'T');

            p += 7;
            n = metric_name_len(p);
            if ((n == 0) || ((p[n] != ' ') && (p[n] != '\0'))) {
                return "bad metric name in HELP/TYPE";
            }
            if (type) {
                const char *t = p + n + 1;

                if ((strcmp(t, "counter") != 0) && (strcmp(t, "gauge") != 0) &&
                    (strcmp(t, "histogram") != 0) && (strcmp(t, "summary") != 0) &&
                    (strcmp(t, "untyped") != 0)) {
                    return "unknown TYPE";
                }
                if (expo_family(e, p, n) >= 0) {
                    return "a second TYPE line for a family";
                }
                if (e->n == MAX_FAMILIES) {
                    return "too many families for the test";
                }
                snprintf(e->names[e->n], sizeof(e->names[0]), "%.*s", (int)n, p);
                snprintf(e->types[e->n], sizeof(e->types[0]), "%s", t);
                e->n++;
            }
        }
        return NULL; /* other comments are allowed */
    }
    n = metric_name_len(p);
    if (n == 0) {
        return "bad metric name";
    }
    f = expo_sample_family(e, p, n, &is_bucket);
    if (f < 0) {
        return "sample of a family without a TYPE line before it";
    }
    if ((strcmp(e->types[f], "counter") == 0) && (strncmp(p + n - 6, "_total", 6) != 0)) {
        return "a counter's name does not end in _total";
    }
    e->sampled[f] = true;
    p += n;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            n = label_name_len(p);
            if (n == 0) {
                return "bad label name";
            }
            has_le |= (n == 2) && (strncmp(p, "le", 2) == 0);
            p += n;
            if ((p[0] != '=') || (p[1] != '"')) {
                return "label without =\"";
            }
            p += 2;
            while (*p != '"') {
                if (*p == '\0') {
                    return "unterminated label value";
                }
                if (*p == '\\') {
                    if ((p[1] != '\\') && (p[1] != '"') && (p[1] != 'n')) {
                        return "bad escape in a label value";
                    }
                    p++;
                }
                p++;
            }
            p++;
            if (*p == ',') {
                p++;
            } else if (*p != '}') {
                return "labels not separated by ','";
            }
        }
        p++;
    }
    if (is_bucket && !has_le) {
        return "histogram bucket without le";
    }
    if (*p++ != ' ') {
        return "no space before the value";
    }
    if ((strncmp(p, "+Inf", 4) == 0) || (strncmp(p, "-Inf", 4) == 0) ||
        (strncmp(p, "NaN", 3) == 0)) {
        p += (p[0] == 'N') ? 3 : 4;
    } else {
        strtod(p, &end);
        if (end == p) {
            return "value is not a number";
        }
        p = end;
    }
    if (*p == ' ') { /* an optional timestamp: an integer */
        p++;
        strtoll(p, &end, 10);
        if (end == p) {
            return "bad timestamp";
        }
        p = end;
    }
    if (*p != '\0') {
        return "junk after the value";
    }
    e->samples++;
    return NULL;
}

/* Parse every line of text; false (and the line printed) at the first bad one. */
static bool expo_parse(expo_t *e, char *text)
{
    char       *save = NULL, *line, *copy = strdup(text);
    const char *why;
    bool        ok = true;

    memset(e, 0, sizeof(*e));
    if (copy == NULL) {
        return false;
    }
    if ((strlen(text) == 0) || (text[strlen(text) - 1] != '\n')) {
        printf("\n  exposition does not end with a newline\n");
        ok = false;
    }
    for (line = strtok_r(copy, "\n", &save); ok && (line != NULL);
         line = strtok_r(NULL, "\n", &save)) {
        why = expo_line(e, line);
        if (why != NULL) {
            printf("\n  bad exposition line (%s): %s\n", why, line);
            ok = false;
        }
    }
    free(copy);
    return ok;
}

/* The value of one series (name with its labels exactly as written), or -1 if absent. */
static double series(const char *text, const char *s)
{
    size_t      len = strlen(s);
    const char *p   = text;

    while ((p = strstr(p, s)) != NULL) {
        if (((p == text) || (p[-1] == '\n')) && (p[len] == ' ')) {
            return strtod(p + len + 1, NULL);
        }
        p += len;
    }
    return -1;
}

static void test_metrics(void)
{
    static char          body[1 << 20];
    char                 port_s[16], ctype[128] = "";
    const char          *args[] = {"--node", "tiny", "--no-config", "--metrics", port_s, NULL};
    integ_daemon_t       d;
    memsvc_conn_h        conn;
    memsvc_handle_t      h;
    memsvc_tensor_info_t info;
    expo_t              *e    = calloc(1, sizeof(*e));
    int                  port = integ_free_port();
    double               alloc0;

    CU_ASSERT_FATAL((e != NULL) && (port > 0));
    snprintf(port_s, sizeof(port_s), "%d", port); /* a bare port: loopback */
    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    CU_ASSERT_EQUAL(http_get(port, "/metrics", body, sizeof(body), ctype, sizeof(ctype)), 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(ctype, "text/plain; version=0.0.4"));
    CU_ASSERT(expo_parse(e, body));
    CU_ASSERT(e->samples > 50);
    CU_ASSERT_EQUAL(series(body, "memsvc_device_hbm_capacity_bytes{device=\"0\"}"),
                    (double)(64ull << 20));
    CU_ASSERT_EQUAL(series(body, "memsvc_job_tensors{job=\"7\"}"), -1);
    alloc0 = series(body, "memsvc_device_hbm_allocated_bytes{device=\"0\"}");
    CU_ASSERT(alloc0 >= 0);

    /* Known operations: a 1 MiB tensor for job 7 rank 2, a lookup that fails. */
    TEST_ASSERT_OK(integ_connect(&d, 7, 2, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "m.t", 1 << 20, NULL, &h));
    CU_ASSERT_EQUAL(memsvc_lookup(conn, "m.missing", &info), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(http_get(port, "/metrics", body, sizeof(body), NULL, 0), 200);
    CU_ASSERT(expo_parse(e, body));
    CU_ASSERT_EQUAL(series(body, "memsvc_job_tensors{job=\"7\"}"), 1);
    CU_ASSERT_EQUAL(series(body, "memsvc_job_sessions{job=\"7\"}"), 1);
    CU_ASSERT_EQUAL(series(body, "memsvc_job_tensor_bytes{job=\"7\",state=\"on_device\"}"),
                    (double)(1 << 20));
    CU_ASSERT(series(body, "memsvc_device_hbm_allocated_bytes{device=\"0\"}") >=
              alloc0 + (double)(1 << 20));
    CU_ASSERT_EQUAL(series(body, "memsvc_request_duration_seconds_count{op=\"alloc\"}"), 1);
    CU_ASSERT_EQUAL(
        series(body, "memsvc_request_duration_seconds_bucket{op=\"alloc\",le=\"+Inf\"}"), 1);
    CU_ASSERT_EQUAL(series(body, "memsvc_errors_total{status=\"MEMSVC_ERR_NOT_FOUND\"}"), 1);
    CU_ASSERT_EQUAL(series(body, "memsvc_live_tensors"), 1);
    CU_ASSERT(series(body, "memsvc_sessions{transport=\"local\"}") +
                  series(body, "memsvc_sessions{transport=\"tcp\"}") >=
              1);
    memsvc_free(conn, h);
    memsvc_close(conn);

    CU_ASSERT_EQUAL(http_get(port, "/elsewhere", body, sizeof(body), NULL, 0), 404);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(e);
}

static void test_metrics_refuses_remote(void)
{
    CU_ASSERT_EQUAL(run("memsvcd", "--no-config", "--node", "tiny", "--listen", "127.0.0.1:0",
                        "--metrics", "0.0.0.0:9", NULL),
                    2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "not a loopback address (add --allow-remote)"));
    CU_ASSERT_PTR_NULL(strstr(ops_err, "node '")); /* refused before starting */
    CU_ASSERT_EQUAL(run("memsvcd", "--no-config", "--node", "tiny", "--listen", "127.0.0.1:0",
                        "--metrics", "localhost:99999", NULL),
                    2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "--metrics: 'localhost:99999' is not [HOST:]PORT"));
}

/* ---- memsvc-ctl --------------------------------------------------------------------------------
 */

static void test_ctl_usage_errors(void)
{
    static const struct {
        const char *args[3];
        const char *msg;
    } cases[] = {
        {{"--timeout", "abc", "ping"}, "--timeout: 'abc' is not a number of milliseconds"},
        {{"--timeout", "-5", "ping"}, "--timeout: '-5' is not a number of milliseconds"},
        {{"--address", "127.0.0.1", "ping"}, "--address: '127.0.0.1' is not HOST:PORT"},
        {{"list", "99999999999", NULL}, "list: '99999999999' is not a job number"},
        {{"stats", "extra", NULL}, "stats: unexpected argument 'extra'"},
        {{"ping", "--job", "3"}, "--job goes with stats or watch"},
        {{"watch", "--count", "0"}, "--count: '0' is not a count"},
        {{"frobnicate", NULL, NULL}, "unknown command 'frobnicate'"},
    };
    unsigned i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CU_ASSERT_EQUAL(
            run("memsvc-ctl", cases[i].args[0], cases[i].args[1], cases[i].args[2], NULL), 2);
        if (strstr(ops_err, cases[i].msg) == NULL) {
            printf("\n  memsvc-ctl %s: stderr '%s', wanted '%s'\n", cases[i].args[0], ops_err,
                   cases[i].msg);
            CU_FAIL("memsvc-ctl usage error message");
        }
    }
}

static unsigned count_of(const char *text, const char *s)
{
    unsigned n = 0;

    while ((text = strstr(text, s)) != NULL) {
        n++;
        text += strlen(s);
    }
    return n;
}

static void test_ctl_watch_and_jobs(void)
{
    const char     *args[] = {"--node", "tiny", "--no-config", NULL};
    integ_daemon_t  d;
    memsvc_conn_h   conn;
    memsvc_handle_t h[3];

    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    TEST_ASSERT_OK(integ_connect(&d, 7, 2, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "w.a", 1 << 20, NULL, &h[0]));
    TEST_ASSERT_OK(memsvc_alloc(conn, "w.b", 1 << 20, NULL, &h[1]));
    TEST_ASSERT_OK(memsvc_alloc(conn, "w.c", 2 << 20, NULL, &h[2]));

    CU_ASSERT_EQUAL(run("memsvc-ctl", "--address", d.addr, "watch", "--interval", "0.1", "--count",
                        "3", "--job", "7", NULL),
                    0);
    CU_ASSERT_EQUAL(count_of(ops_out, "--- memsvcd at "), 3);
    CU_ASSERT_EQUAL(count_of(ops_out, "rates over "), 2);
    CU_ASSERT_EQUAL(count_of(ops_out, "\033["), 0); /* not a terminal: no redrawing */
    CU_ASSERT_EQUAL(count_of(ops_out, "job 7:\n"), 3); /* the --job section, once a refresh */

    CU_ASSERT_EQUAL(run("memsvc-ctl", "--address", d.addr, "jobs", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_out, "\n7      2            3    4.0 MiB"));
    CU_ASSERT_EQUAL(run("memsvc-ctl", "--address", d.addr, "stats", "--job", "7", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_out, "job 7:\nJOB"));
    CU_ASSERT_EQUAL(run("memsvc-ctl", "--address", d.addr, "--json", "stats", "--job", "7", NULL),
                    0);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(ops_out, "\"ranks\": [\n  {\"job\": 7, \"rank\": 2, \"tensors\": 3"));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* ---- every program: --version, --help ---------------------------------------------------------
 */

static void test_version_and_help(void)
{
    static const char *const progs[] = {"memsvcd",        "memsvc-ctl",   "memtrace",
                                        "memsvc_example", "engine_demo",  "bench_engine",
                                        "bench_replay",   "bench_service"};
    static const char *const helps[] = {"memsvc_example", "engine_demo", "bench_engine",
                                        "bench_replay"};
    char                     want[64];
    unsigned                 i;

    snprintf(want, sizeof(want), " (memsvc) %s\n", MEMSVC_VERSION_STRING);
    for (i = 0; i < sizeof(progs) / sizeof(progs[0]); i++) {
        CU_ASSERT_EQUAL(run(progs[i], "--version", NULL), 0);
        if ((strncmp(ops_out, progs[i], strlen(progs[i])) != 0) ||
            (strstr(ops_out, want) == NULL)) {
            printf("\n  %s --version: '%s'\n", progs[i], ops_out);
            CU_FAIL("--version line");
        }
    }
    /* Usage on stdout, exit 0, and nothing run (no benchmark figures, no connection). */
    for (i = 0; i < sizeof(helps) / sizeof(helps[0]); i++) {
        CU_ASSERT_EQUAL(run(helps[i], "--help", NULL), 0);
        CU_ASSERT_EQUAL(strncmp(ops_out, "usage: ", 7), 0);
        CU_ASSERT(strlen(ops_out) < 1024);
        CU_ASSERT_EQUAL(ops_err[0], '\0');
    }
    CU_ASSERT_EQUAL(run("engine_demo", "--bogus", NULL), 2);
    CU_ASSERT_EQUAL(run("bench_engine", "extra", NULL), 2);
}

/* ---- the example, twice against one daemon -----------------------------------------------------
 */

static void test_example_twice(void)
{
    const char    *args[] = {"--node", "tiny", "--memory", "backed", "--no-config", NULL};
    integ_daemon_t d;

    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    CU_ASSERT_EQUAL(run("memsvc_example", d.addr, NULL), 0);
    CU_ASSERT_PTR_NULL(strstr(ops_out, "re-attached"));
    CU_ASSERT_EQUAL(run("memsvc_example", d.addr, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_out, "re-attached example.L0.weight"));
    CU_ASSERT_EQUAL(count_of(ops_out, "bytes match"), 6);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* ---- an interrupted bench_replay leaves no temporary file --------------------------------------
 */

static unsigned dir_entries(const char *dir)
{
    DIR           *dp = opendir(dir);
    struct dirent *de;
    unsigned       n = 0;

    while ((dp != NULL) && ((de = readdir(dp)) != NULL)) {
        n += (de->d_name[0] != '.');
    }
    if (dp != NULL) {
        closedir(dp);
    }
    return n;
}

static void test_bench_replay_interrupted(void)
{
    char        dir[512], env[600], *path = (char *)bin("bench_replay");
    char *const argv[] = {path, NULL};
    pid_t       pid;
    int         status, i;

    snprintf(dir, sizeof(dir), "%s/bench-replay-tmp-%d", integ_log_dir(), (int)getpid());
    CU_ASSERT_FATAL(mkdir(dir, 0755) == 0);
    snprintf(env, sizeof(env), "TMPDIR=%s", dir);
    fflush(NULL);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL) {
            _exit(127);
        }
        putenv(env);
        execv(path, argv);
        _exit(127);
    }
    for (i = 0; (i < 2000) && (dir_entries(dir) < 2); i++) {
        usleep(10000); /* until both traces exist (the big one is being written) */
    }
    CU_ASSERT(dir_entries(dir) >= 2);
    kill(pid, SIGINT);
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFSIGNALED(status) && (WTERMSIG(status) == SIGINT));
    CU_ASSERT_EQUAL(dir_entries(dir), 0);
    rmdir(dir);
}

/* docs/trace-format.md: a file shorter than the magic is "not a memtrace file", not truncated. */
static void test_short_magic(void)
{
    char path[512];

    write_file(path, sizeof(path), "short.trace", "MEM");
    CU_ASSERT_EQUAL(run("memtrace", "dump", path, NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(ops_err, "offset 0: not a memtrace file (bad magic)"));
    CU_ASSERT_PTR_NULL(strstr(ops_err, "truncated"));
    unlink(path);
}

/* Under make test ($MEMSVC_TEST_LOG set) the runner's stderr, which child processes inherit, is
 * that file: nothing they write lands between CUnit's lines on stdout. */
static void test_stderr_to_log(void)
{
    const char    *log    = getenv("MEMSVC_TEST_LOG");
    const char    *args[] = {"--node", "tiny", "--no-config", NULL};
    integ_daemon_t d;
    struct stat    a, b;

    if ((log == NULL) || (*log == '\0')) {
        return; /* run by hand: stderr stays the terminal */
    }
    CU_ASSERT_FATAL((stat(log, &a) == 0) && (fstat(STDERR_FILENO, &b) == 0));
    CU_ASSERT((a.st_dev == b.st_dev) && (a.st_ino == b.st_ino));
    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    CU_ASSERT_EQUAL(strncmp(d.log, integ_log_dir(), strlen(integ_log_dir())), 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_ops", NULL, NULL);

    CU_add_test(s, "config file: errors name the file and line", test_config_errors);
    CU_add_test(s, "config file, flags override, SIGHUP reload", test_config_and_reload);
    CU_add_test(s, "--log-level warn drops info lines", test_log_level);
    CU_add_test(s, "listen errors before startup lines; address in use", test_listen_errors);
    CU_add_test(s, "UCX's messages through the logger, not stdout", test_ucx_messages_logged);
    CU_add_test(s, "stderr as the journal's stream: <N> prefixes", test_journal_stream_prefix);
    CU_add_test(s, "--log-target journal without journald: stderr", test_journal_fallback);
    CU_add_test(s, "sd_notify: READY, STATUS, RELOADING, STOPPING", test_sd_notify);
    CU_add_test(s, "metrics: every line parses; values follow operations", test_metrics);
    CU_add_test(s, "metrics on a non-loopback address need --allow-remote",
                test_metrics_refuses_remote);
    CU_add_test(s, "memsvc-ctl usage errors: message and exit 2", test_ctl_usage_errors);
    CU_add_test(s, "memsvc-ctl watch, jobs, stats --job", test_ctl_watch_and_jobs);
    CU_add_test(s, "--version everywhere; --help runs nothing", test_version_and_help);
    CU_add_test(s, "memsvc_example twice against one daemon", test_example_twice);
    CU_add_test(s, "interrupted bench_replay leaves no temporary file",
                test_bench_replay_interrupted);
    CU_add_test(s, "a trace shorter than its magic: as documented", test_short_magic);
    CU_add_test(s, "make test: children's stderr goes to the log file", test_stderr_to_log);
}

TEST_REGISTER(service_ops, add_suite)
