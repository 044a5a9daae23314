/* test_cluster.c - memsvcd daemons as one cluster: membership, refusal, memsvc-ctl --cluster,
 * partitions between network namespaces */
#include "memsvc/msd_peer.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HB_MS "100"
#define TIMEOUT_S "1.5"
#define WAIT_MS 15000 /* every wait is bounded by this (generous: a loaded 2-core machine) */
#define NODES 3

static const char *const names[NODES] = {"a", "b", "c"};

typedef struct fixture {
    char           dir[64];
    char           file[96], file2[96], secret[96], secret2[96];
    char           addr[NODES][64];
    integ_daemon_t d[NODES];
    unsigned       failures; /* CUnit's count at the start: logs are kept if it grew */
} fixture_t;

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool write_file(const char *path, const char *text, mode_t mode)
{
    int  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    bool ok;

    if (fd < 0) {
        return false;
    }
    ok = (write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
    return ok;
}

/* A directory with a cluster file of NODES loopback nodes (file2: the same plus a line), and
 * two different secrets. */
static bool fixture_init(fixture_t *f, const char *host)
{
    char     text[512], extra[64];
    size_t   n = 0;
    unsigned i;

    memset(f, 0, sizeof(*f));
    f->failures = CU_get_number_of_failures();
    snprintf(f->dir, sizeof(f->dir), "/tmp/memsvc-cluster-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        return false;
    }
    snprintf(f->file, sizeof(f->file), "%s/cluster", f->dir);
    snprintf(f->file2, sizeof(f->file2), "%s/cluster2", f->dir);
    snprintf(f->secret, sizeof(f->secret), "%s/secret", f->dir);
    snprintf(f->secret2, sizeof(f->secret2), "%s/secret2", f->dir);
    n += (size_t)snprintf(text + n, sizeof(text) - n, "# test cluster\n");
    for (i = 0; i < NODES; i++) {
        if (host == NULL) {
            snprintf(f->addr[i], sizeof(f->addr[i]), "127.0.0.1:%d", integ_free_port());
        } else {
            snprintf(f->addr[i], sizeof(f->addr[i]), "%s.%u:%d", host, i + 1, 24000 + i);
        }
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s   %s  # node %u\n", names[i],
                              f->addr[i], i);
    }
    if (!write_file(f->file, text, 0644)) {
        return false;
    }
    snprintf(extra, sizeof(extra), "d 127.0.0.1:%d\n", integ_free_port());
    strncat(text, extra, sizeof(text) - strlen(text) - 1);
    return write_file(f->file2, text, 0644) &&
           write_file(f->secret, "a cluster secret of the test, 0600\n", 0600) &&
           write_file(f->secret2, "another secret, not the cluster's\n", 0600);
}

/* A daemon's log: free of sanitizer reports; removed unless a test of this fixture failed. */
static void log_done(fixture_t *f, integ_daemon_t *d)
{
    if (d->log[0] == '\0') {
        return;
    }
    CU_ASSERT(!integ_log_contains(d, "Sanitizer") && !integ_log_contains(d, "runtime error:"));
    if (CU_get_number_of_failures() == f->failures) {
        unlink(d->log);
    } else {
        fprintf(stderr, "log kept: %s\n", d->log);
    }
    d->log[0] = '\0';
}

static void fixture_fini(fixture_t *f)
{
    char     cmd[128];
    unsigned i;

    for (i = 0; i < NODES; i++) {
        if (f->d[i].pid > 0) {
            CU_ASSERT_EQUAL(integ_daemon_stop(&f->d[i]), 0); /* SIGTERM: a clean exit */
        }
        log_done(f, &f->d[i]);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", f->dir);
    }
}

/* Start node i with a cluster file and secret (in a network namespace if netns), and more
 * arguments (NULL-terminated; may be NULL). */
static bool node_start_ex(fixture_t *f, unsigned i, const char *file, const char *secret,
                          const char *netns, const char *const *more)
{
    const char *args[] = {"--node",
                          "tiny",
                          "--cluster",
                          file,
                          "--node-name",
                          names[i],
                          "--cluster-secret",
                          secret,
                          "--heartbeat-ms",
                          HB_MS,
                          "--peer-timeout",
                          TIMEOUT_S,
                          netns ? "--allow-remote" : NULL, /* (in a namespace: tcp only) */
                          "--no-unix",
                          NULL};
    const char *argv[40];
    unsigned    n = 0, k;

    for (k = 0; args[k] != NULL; k++) {
        argv[n++] = args[k];
    }
    for (k = 0; (more != NULL) && (more[k] != NULL) && (n < 39); k++) {
        argv[n++] = more[k];
    }
    argv[n] = NULL;
    log_done(f, &f->d[i]); /* of its previous life, if any */
    return integ_daemon_spawn(&f->d[i], f->addr[i], netns, argv);
}

static bool node_start(fixture_t *f, unsigned i, const char *file, const char *secret,
                       const char *netns)
{
    return node_start_ex(f, i, file, secret, netns, NULL);
}

typedef struct seen {
    const char        *want;
    memsvc_peer_info_t info;
    bool               found;
} seen_t;

static bool seen_cb(void *arg, const memsvc_peer_info_t *p)
{
    seen_t *s = arg;

    if (strcmp(p->name, s->want) == 0) {
        s->info  = *p;
        s->found = true;
        return false;
    }
    return true;
}

/* How node `obs` sees peer `name` now (over a control connection); false if not answered. */
static bool peer_view(const integ_daemon_t *obs, const char *name, memsvc_peer_info_t *info_p)
{
    memsvc_conn_params_t  p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                             MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                               .address    = obs->addr,
                               .flags      = MEMSVC_CONN_CONTROL | MEMSVC_CONN_TCP,
                               .timeout_ms = 2000};
    memsvc_cluster_info_t ci;
    memsvc_conn_h         conn;
    seen_t                s = {.want = name};
    memsvc_status_t       status;

    if (memsvc_connect(&p, &conn) != MEMSVC_OK) {
        return false;
    }
    status = memsvc_peers(conn, &ci, seen_cb, &s);
    memsvc_close(conn);
    if ((status == MEMSVC_OK) && s.found) {
        *info_p = s.info;
    }
    return (status == MEMSVC_OK) && s.found;
}

/* Wait (bounded) until obs sees name in state; *saw_suspect_p (may be NULL) tells whether
 * the suspect state was seen on the way. */
static bool wait_state(const integ_daemon_t *obs, const char *name, memsvc_peer_state_t state,
                       memsvc_peer_info_t *info_p, bool *saw_suspect_p)
{
    uint64_t           deadline = now_ms() + WAIT_MS;
    memsvc_peer_info_t info;

    while (now_ms() < deadline) {
        if (peer_view(obs, name, &info)) {
            if ((saw_suspect_p != NULL) && (info.state == MEMSVC_PEER_SUSPECT)) {
                *saw_suspect_p = true;
            }
            if (info.state == state) {
                if (info_p != NULL) {
                    *info_p = info;
                }
                return true;
            }
        }
        usleep(30000);
    }
    fprintf(stderr, "%s: %s never became %s (log %s)\n", obs->addr, name,
            memsvc_peer_state_name(state), obs->log);
    return false;
}

/* Watch two observers at once until both see name down; whether each saw it suspect first. */
static bool wait_down_both(const integ_daemon_t *o1, const integ_daemon_t *o2, const char *name,
                           bool *suspect1_p, bool *suspect2_p)
{
    uint64_t              deadline   = now_ms() + WAIT_MS;
    const integ_daemon_t *obs[2]     = {o1, o2};
    bool                 *suspect[2] = {suspect1_p, suspect2_p}, down[2] = {false, false};
    memsvc_peer_info_t    info;
    unsigned              k;

    while (!(down[0] && down[1]) && (now_ms() < deadline)) {
        for (k = 0; k < 2; k++) {
            if (!down[k] && peer_view(obs[k], name, &info)) {
                *suspect[k] |= (info.state == MEMSVC_PEER_SUSPECT);
                down[k] = (info.state == MEMSVC_PEER_DOWN);
            }
        }
        usleep(20000);
    }
    return down[0] && down[1];
}

static bool all_up(fixture_t *f)
{
    unsigned i, j;
    bool     ok = true;

    for (i = 0; i < NODES; i++) {
        for (j = 0; j < NODES; j++) {
            if ((i != j) && !wait_state(&f->d[i], names[j], MEMSVC_PEER_UP, NULL, NULL)) {
                ok = false;
            }
        }
    }
    return ok;
}

/* ---- membership on loopback ------------------------------------------------------------------ */

static void test_membership(void)
{
    memsvc_peer_info_t before, after, other;
    fixture_t          f;
    bool               suspect_a = false, suspect_c = false;
    unsigned           i;
    int                status;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    for (i = 0; i < NODES; i++) {
        CU_ASSERT(node_start(&f, i, f.file, f.secret, NULL));
    }
    CU_ASSERT(all_up(&f));
    CU_ASSERT(peer_view(&f.d[0], "b", &before));
    CU_ASSERT(before.boot_id != 0);
    CU_ASSERT(before.hbm_total > 0); /* figures came with its heartbeats */
    CU_ASSERT(before.host_total > 0);
    CU_ASSERT(before.heard_ago_ns < 5000000000ull);

    /* kill -9 b: a (which dials b) and c (which b dials) see it suspect, then down */
    kill(f.d[1].pid, SIGKILL);
    waitpid(f.d[1].pid, &status, 0);
    f.d[1].pid = 0;
    CU_ASSERT(wait_down_both(&f.d[0], &f.d[2], "b", &suspect_a, &suspect_c));
    CU_ASSERT(suspect_a);
    CU_ASSERT(suspect_c);
    CU_ASSERT(peer_view(&f.d[0], "b", &other));
    CU_ASSERT(strstr(other.reason, "no heartbeat") != NULL);
    CU_ASSERT(integ_log_contains(&f.d[0], "peer b (") && integ_log_contains(&f.d[0], "-> down"));
    /* the others still see each other up */
    CU_ASSERT(peer_view(&f.d[0], "c", &other) && (other.state == MEMSVC_PEER_UP));

    /* b again, on the same address: up on both, a new boot id, the restart logged */
    CU_ASSERT(node_start(&f, 1, f.file, f.secret, NULL));
    CU_ASSERT(wait_state(&f.d[0], "b", MEMSVC_PEER_UP, &after, NULL));
    CU_ASSERT(wait_state(&f.d[2], "b", MEMSVC_PEER_UP, NULL, NULL));
    CU_ASSERT(wait_state(&f.d[1], "a", MEMSVC_PEER_UP, NULL, NULL));
    CU_ASSERT(wait_state(&f.d[1], "c", MEMSVC_PEER_UP, NULL, NULL));
    CU_ASSERT(after.boot_id != before.boot_id);
    CU_ASSERT(after.restarts == 1);
    CU_ASSERT(integ_log_contains(&f.d[0], "peer b restarted: boot id"));
    CU_ASSERT(integ_log_contains(&f.d[2], "peer b restarted: boot id"));
    fixture_fini(&f);
}

/* ---- refusal: another cluster file, another secret --------------------------------------------
 */

static void test_refused(void)
{
    memsvc_peer_info_t info;
    fixture_t          f;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    CU_ASSERT(node_start(&f, 0, f.file, f.secret, NULL));
    CU_ASSERT(node_start(&f, 1, f.file, f.secret, NULL));
    CU_ASSERT(node_start(&f, 2, f.file2, f.secret, NULL)); /* one line more */
    CU_ASSERT(wait_state(&f.d[0], "b", MEMSVC_PEER_UP, NULL, NULL));
    CU_ASSERT(wait_state(&f.d[0], "c", MEMSVC_PEER_REFUSED, &info, NULL));
    CU_ASSERT(strstr(info.reason, "cluster file differs") != NULL);
    CU_ASSERT(wait_state(&f.d[1], "c", MEMSVC_PEER_REFUSED, NULL, NULL));
    CU_ASSERT(wait_state(&f.d[2], "a", MEMSVC_PEER_REFUSED, &info, NULL));
    CU_ASSERT(strstr(info.reason, "cluster file differs") != NULL);
    CU_ASSERT(integ_log_contains(&f.d[0], "peer c (") &&
              integ_log_contains(&f.d[0], "-> refused: cluster file differs"));
    CU_ASSERT(integ_log_contains(&f.d[2], "peer a (") &&
              integ_log_contains(&f.d[2], "-> refused: cluster file differs"));
    CU_ASSERT_EQUAL(integ_daemon_stop(&f.d[2]), 0);

    /* the right file, the wrong secret: refused both ways, named */
    CU_ASSERT(node_start(&f, 2, f.file, f.secret2, NULL));
    CU_ASSERT(wait_state(&f.d[2], "a", MEMSVC_PEER_REFUSED, &info, NULL));
    CU_ASSERT(strstr(info.reason, "wrong cluster secret") != NULL);
    CU_ASSERT(wait_state(&f.d[2], "b", MEMSVC_PEER_REFUSED, NULL, NULL));
    CU_ASSERT(integ_log_contains(&f.d[2], "-> refused: wrong cluster secret"));
    CU_ASSERT(wait_state(&f.d[0], "c", MEMSVC_PEER_REFUSED, &info, NULL));
    CU_ASSERT(strstr(info.reason, "wrong cluster secret") != NULL);
    CU_ASSERT(integ_log_contains(&f.d[0], "refused: wrong cluster secret"));
    /* and never up on the way */
    CU_ASSERT(!integ_log_contains(&f.d[2], "-> up"));
    fixture_fini(&f);
}

/* ---- memsvc-ctl --cluster -----------------------------------------------------------------------
 */

/* Run a command; its stdout into out (NUL-terminated); returns its exit status (-1: no exit). */
static int run(const char *cmd, char *out, size_t len)
{
    FILE  *p = popen(cmd, "r");
    size_t n = 0;
    int    status;

    if (p == NULL) {
        return -1;
    }
    while ((n + 1 < len) && !feof(p) && !ferror(p)) {
        n += fread(out + n, 1, len - n - 1, p);
    }
    out[n] = '\0';
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* `memsvc-ctl --cluster FILE --json stats` (in netns if set) parsed; NULL if not JSON. */
static json_t *ctl_json(const char *netns, const char *file, int *rc_p)
{
    char         cmd[512], *out = malloc(1 << 16);
    json_error_t jerr;
    json_t      *j;

    if (out == NULL) {
        return NULL;
    }
    if (netns != NULL) {
        snprintf(cmd, sizeof(cmd),
                 "ip netns exec %s %s/memsvc-ctl --cluster %s --timeout 1000 "
                 "--json stats",
                 netns, test_bin_dir(), file);
    } else {
        snprintf(cmd, sizeof(cmd), "%s/memsvc-ctl --cluster %s --timeout 2000 --json stats",
                 test_bin_dir(), file);
    }
    *rc_p = run(cmd, out, 1 << 16);
    j     = json_loads(out, 0, &jerr);
    if (j == NULL) {
        fprintf(stderr, "not JSON (%s): %s\n", jerr.text, out);
    }
    free(out);
    return j;
}

/* The state node `obs` reports for peer `name` in a --cluster --json document ("" if none). */
static const char *json_view(json_t *j, const char *obs, const char *name)
{
    json_t *nodes = json_object_get(j, "nodes"), *n, *peers, *p;
    size_t  i, k;

    json_array_foreach(nodes, i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "name")), obs) != 0) {
            continue;
        }
        peers = json_object_get(n, "peers");
        json_array_foreach(peers, k, p)
        {
            if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0) {
                return json_string_value(json_object_get(p, "state"));
            }
        }
    }
    return "";
}

static void test_ctl_cluster(void)
{
    memsvc_peer_info_t info;
    char               cmd[512], *out = malloc(1 << 16);
    fixture_t          f;
    json_t            *j, *n;
    size_t             i;
    int                rc;

    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    for (i = 0; i < NODES; i++) {
        CU_ASSERT(node_start(&f, (unsigned)i, f.file, f.secret, NULL));
    }
    CU_ASSERT(all_up(&f));
    snprintf(cmd, sizeof(cmd), "%s/memsvc-ctl --cluster %s health", test_bin_dir(), f.file);
    CU_ASSERT_EQUAL(run(cmd, out, 1 << 16), 0);
    CU_ASSERT(strstr(out, "healthy: every node answers") != NULL);
    j = ctl_json(NULL, f.file, &rc);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(json_is_true(json_object_get(j, "healthy")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "nodes")), NODES);
    json_array_foreach(json_object_get(j, "nodes"), i, n)
    {
        CU_ASSERT(json_is_true(json_object_get(n, "reachable")));
        CU_ASSERT_EQUAL(json_array_size(json_object_get(n, "peers")), NODES - 1);
        CU_ASSERT(json_integer_value(json_object_get(n, "hbm_total")) > 0);
    }
    CU_ASSERT_STRING_EQUAL(json_view(j, "a", "c"), "up");
    CU_ASSERT_STRING_EQUAL(json_view(j, "c", "b"), "up");
    json_decref(j);

    /* list: every node's tensors under its name (one on b) */
    {
        memsvc_handle_t h;
        memsvc_conn_h   conn;
        json_error_t    jerr;
        char            lcmd[512];

        TEST_ASSERT_OK(integ_connect(&f.d[1], 5, 0, &conn));
        TEST_ASSERT_OK(memsvc_alloc(conn, "on.b", 4096, NULL, &h));
        snprintf(lcmd, sizeof(lcmd), "%s/memsvc-ctl --cluster %s --json list", test_bin_dir(),
                 f.file);
        CU_ASSERT_EQUAL(run(lcmd, out, 1 << 16), 0);
        j = json_loads(out, 0, &jerr);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "nodes")), NODES);
        n = json_array_get(json_object_get(j, "nodes"), 1);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(n, "name")), "b");
        CU_ASSERT_EQUAL(json_array_size(json_object_get(n, "tensors")), 1);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
                                   json_array_get(json_object_get(n, "tensors"), 0), "key")),
                               "on.b");
        CU_ASSERT_EQUAL(json_array_size(json_object_get(
                            json_array_get(json_object_get(j, "nodes"), 0), "tensors")),
                        0);
        json_decref(j);
        memsvc_close(conn);
    }

    /* one node gone: health fails and names it; the others report it down */
    CU_ASSERT_EQUAL(integ_daemon_stop(&f.d[2]), 0);
    CU_ASSERT(wait_state(&f.d[0], "c", MEMSVC_PEER_DOWN, &info, NULL));
    CU_ASSERT(strstr(info.reason, "stopped") != NULL); /* it said goodbye: no timeout */
    CU_ASSERT(wait_state(&f.d[1], "c", MEMSVC_PEER_DOWN, NULL, NULL));
    CU_ASSERT_NOT_EQUAL(run(cmd, out, 1 << 16), 0);
    CU_ASSERT(strstr(out, "NOT healthy") != NULL);
    CU_ASSERT(strstr(out, "a sees c down") != NULL);
    CU_ASSERT(strstr(out, "c (") != NULL && strstr(out, "unreachable") != NULL);
    j = ctl_json(NULL, f.file, &rc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(json_is_false(json_object_get(j, "healthy")));
    CU_ASSERT(json_is_false(
        json_object_get(json_array_get(json_object_get(j, "nodes"), 2), "reachable")));
    CU_ASSERT_STRING_EQUAL(json_view(j, "b", "c"), "down");
    CU_ASSERT(json_array_size(json_object_get(j, "problems")) >= 3);
    json_decref(j);

    /* health needs --cluster; a bad cluster file is a usage error */
    snprintf(cmd, sizeof(cmd), "%s/memsvc-ctl health 2>/dev/null", test_bin_dir());
    CU_ASSERT_EQUAL(run(cmd, out, 1 << 16), 2);
    snprintf(cmd, sizeof(cmd), "%s/memsvc-ctl --cluster %s/none stats 2>&1", test_bin_dir(), f.dir);
    CU_ASSERT_EQUAL(run(cmd, out, 1 << 16), 2);
    CU_ASSERT(strstr(out, "/none") != NULL);
    fixture_fini(&f);
    free(out);
}

/* ---- bad cluster files and secrets: named, exit 2 -----------------------------------------------
 */

/* memsvcd with these arguments must exit 2 (bounded) and log `want`. */
static void expect_refusal(const char *const *args, const char *want)
{
    integ_daemon_t d;
    uint64_t       deadline = now_ms() + WAIT_MS;
    int            status   = -1;

    CU_ASSERT_FATAL(integ_daemon_spawn(&d, "127.0.0.1:1", NULL, args));
    while (now_ms() < deadline) {
        if (waitpid(d.pid, &status, WNOHANG) == d.pid) {
            break;
        }
        usleep(20000);
    }
    if (now_ms() >= deadline) {
        integ_daemon_stop(&d);
    }
    CU_ASSERT(WIFEXITED(status) && (WEXITSTATUS(status) == 2));
    if (!integ_log_contains(&d, want)) {
        fprintf(stderr, "expected '%s' in %s\n", want, d.log);
        CU_FAIL("the error is not named");
    } else {
        unlink(d.log);
    }
    d.pid = 0;
}

static void bad_file(fixture_t *f, const char *text, const char *want)
{
    char        path[128];
    const char *args[] = {"--cluster",        path,      "--node-name", "a",
                          "--cluster-secret", f->secret, NULL};

    snprintf(path, sizeof(path), "%s/bad", f->dir);
    CU_ASSERT_FATAL(write_file(path, text, 0644));
    expect_refusal(args, want);
}

static void test_bad_files(void)
{
    fixture_t   f;
    char        loose[128];
    const char *no_secret[]   = {"--cluster", f.file, "--node-name", "a", NULL};
    const char *not_in[]      = {"--cluster",        f.file,   "--node-name", "zz",
                                 "--cluster-secret", f.secret, NULL};
    const char *open_secret[] = {"--cluster",        f.file, "--node-name", "a",
                                 "--cluster-secret", loose,  NULL};
    const char *bad_timeout[] = {"--cluster",
                                 f.file,
                                 "--node-name",
                                 "a",
                                 "--cluster-secret",
                                 f.secret,
                                 "--heartbeat-ms",
                                 "500",
                                 "--peer-timeout",
                                 "1",
                                 NULL};

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    bad_file(&f, "a 127.0.0.1:4001\nb 127.0.0.1:4002\na 127.0.0.1:4003\n",
             "bad:3: node name 'a' already on line 1");
    bad_file(&f, "a 127.0.0.1:4001\n# b\nb localhost:4001\n",
             "bad:3: address 'localhost:4001' of 'b' is that of 'a' (line 1)");
    bad_file(&f, "a 127.0.0.1:4001\nb\n", "bad:2: want 'NAME HOST:PORT', got one field");
    bad_file(&f, "a 127.0.0.1:4001 extra\n", "bad:1: want 'NAME HOST:PORT', got more than two");
    bad_file(&f, "a 127.0.0.1\n", "bad:1: address '127.0.0.1' of 'a' is not HOST:PORT");
    bad_file(&f, "a/x 127.0.0.1:4001\n", "bad:1: node name 'a/x' is not");
    bad_file(&f, "# nothing\n\n", "no nodes");
    expect_refusal(no_secret, "--cluster needs --cluster-secret FILE");
    expect_refusal(not_in, "--node-name: 'zz' is not a node of");
    snprintf(loose, sizeof(loose), "%s/loose", f.dir);
    CU_ASSERT_FATAL(write_file(loose, "a secret anyone on the machine can read\n", 0644));
    expect_refusal(open_secret, "mode 0644 lets others read it");
    CU_ASSERT_FATAL(write_file(loose, "short\n", 0600));
    expect_refusal(open_secret, "bytes; want 16 to 4096");
    expect_refusal(bad_timeout, "--peer-timeout must be at least 3 heartbeats");
    fixture_fini(&f);
}

/* ---- peer messages by hand: garbage and impostors
 * ------------------------------------------------ */

#define PEER_AM 19u
#define PEER_LEN 332u

/* A peer message (docs/protocol.md, "Peer messages"): type, names, hash; the rest zero. */
#define REPL_AM 20u
#define REPL_LEN 390u /* a replication message's header (docs/protocol.md) */

static void peer_msg(uint8_t *b, unsigned type, const char *from, const char *to,
                     const uint8_t *hash)
{
    static const uint8_t magic[4] = {0x4d, 0x53, 0x50, 0x52};

    memset(b, 0, PEER_LEN);
    memcpy(b, magic, 4);
    b[4] = 1;
    b[6] = (uint8_t)type;
    memcpy(b + 8, from, strlen(from));
    memcpy(b + 40, to, strlen(to));
    if (hash != NULL) {
        memcpy(b + 72, hash, MSD_CLUSTER_HASH_LEN);
    }
    b[104] = 7; /* boot id */
}

/* Send b (len bytes) to the daemon; the type of what came back (0: nothing), its text. */
static unsigned raw_peer(integ_raw_t *raw, const uint8_t *b, size_t len, char *text)
{
    uint8_t rep[PEER_LEN];
    size_t  n = 0;

    CU_ASSERT_EQUAL(integ_raw_am(raw, PEER_AM, b, len, 500, rep, sizeof(rep), &n), MEMSVC_OK);
    text[0] = '\0';
    if (n != PEER_LEN) {
        return 0;
    }
    memcpy(text, rep + 180, 96);
    text[95] = '\0';
    return rep[6] | ((unsigned)rep[176] << 8); /* type, and the reason of a REFUSE */
}

static bool log_wait(const integ_daemon_t *d, const char *text);

static void test_impostors(void)
{
    memsvc_peer_info_t info;
    msd_cluster_t      c;
    integ_raw_t       *raw;
    fixture_t          f;
    uint8_t            b[PEER_LEN], zero[MSD_CLUSTER_HASH_LEN] = {0};
    char               err[256], text[96];
    unsigned           i;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    TEST_ASSERT_OK(msd_cluster_load(f.file, &c, err, sizeof(err)));
    for (i = 0; i < NODES; i++) {
        CU_ASSERT(node_start(&f, i, f.file, f.secret, NULL));
    }
    CU_ASSERT(all_up(&f));
    TEST_ASSERT_OK(integ_raw_connect(&f.d[2], &raw));

    /* not peer messages: dropped without an answer */
    memset(b, 0xa5, sizeof(b));
    CU_ASSERT_EQUAL(raw_peer(raw, b, 10, text), 0);
    memset(b, 0, sizeof(b));
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 0);
    peer_msg(b, 1, "a", "c", c.hash);
    b[4] = 9; /* version */
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 0);
    peer_msg(b, 1, "a", "c", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN - 1, text), 0);
    peer_msg(b, 1, "a\x01", "c", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 0);

    /* HELLOs that are refused, named */
    peer_msg(b, 1, "zz", "c", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 6 | (3 << 8));
    CU_ASSERT(strstr(text, "'zz' is not in the cluster file of 'c'") != NULL);
    peer_msg(b, 1, "a", "b", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 6 | (3 << 8));
    CU_ASSERT(strstr(text, "this address is node 'c', not 'b'") != NULL);
    peer_msg(b, 1, "a", "c", zero);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 6 | (1 << 8));
    CU_ASSERT(strstr(text, "cluster file differs") != NULL);

    /* posing as a with the right hash: challenged, then refused for its proof */
    peer_msg(b, 1, "a", "c", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 2);
    peer_msg(b, 3, "a", "c", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 6 | (2 << 8));
    CU_ASSERT(strstr(text, "wrong cluster secret") != NULL);
    /* and a heartbeat on its endpoint is not taken for a's */
    peer_msg(b, 5, "a", "c", c.hash);
    CU_ASSERT_EQUAL(raw_peer(raw, b, PEER_LEN, text), 0);

    /* replication messages (id 20) from an endpoint that is no peer's link: garbage is
     * dropped; a well-formed DROP_ALL "from a" (it would drop what c keeps of a's) is refused */
    {
        uint8_t  rb[REPL_LEN], rep[REPL_LEN];
        size_t   n = 0;
        unsigned k;

        for (k = 0; k < sizeof(rb); k++) {
            rb[k] = (uint8_t)(k * 37 + 11);
        }
        CU_ASSERT_EQUAL(integ_raw_am(raw, REPL_AM, rb, sizeof(rb), 200, rep, sizeof(rep), &n),
                        MEMSVC_OK);
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT_EQUAL(integ_raw_am(raw, REPL_AM, rb, 17, 200, rep, sizeof(rep), &n), MEMSVC_OK);
        CU_ASSERT_EQUAL(n, 0);
        memset(rb, 0, sizeof(rb));
        memcpy(rb, "MSRP", 4);
        rb[4] = 1; /* version */
        rb[6] = 4; /* DROP_ALL */
        memcpy(rb + 8, "a", 1);
        memcpy(rb + 40, "c", 1);
        CU_ASSERT_EQUAL(integ_raw_am(raw, REPL_AM, rb, sizeof(rb), 200, rep, sizeof(rep), &n),
                        MEMSVC_OK);
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT(log_wait(&f.d[2], "a replication message claiming to come from 'a' not on "
                                    "its link: dropped"));
    }

    /* none of it touched the real link */
    CU_ASSERT(peer_view(&f.d[2], "a", &info) && (info.state == MEMSVC_PEER_UP));
    CU_ASSERT_EQUAL(info.restarts, 0);
    CU_ASSERT(peer_view(&f.d[0], "c", &info) && (info.state == MEMSVC_PEER_UP));
    CU_ASSERT(integ_log_contains(&f.d[2], "a link claiming to be peer a failed: wrong cluster "
                                          "secret"));
    CU_ASSERT(integ_log_contains(&f.d[2], "a link claiming to be peer a failed: cluster file"));
    CU_ASSERT(!integ_log_contains(&f.d[2], "-> refused"));
    integ_raw_close(raw);
    msd_cluster_free(&c);
    fixture_fini(&f);
}

/* ---- network namespaces: a partition heals
 * ------------------------------------------------------- */

static char ns_prefix[32];

/* Run a shell command quietly; true when it succeeded. */
static bool sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static bool sh(const char *fmt, ...)
{
    char    cmd[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    strncat(cmd, " >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    return system(cmd) == 0;
}

/* Remove the namespaces of this run (their veth ends go with them); also at exit. */
static void ns_teardown(void)
{
    unsigned i;

    if (ns_prefix[0] == '\0') {
        return;
    }
    for (i = 0; i < NODES; i++) {
        sh("ip netns del %s-%s", ns_prefix, names[i]);
    }
    sh("ip netns del %s-br", ns_prefix);
}

/* A bridge namespace and one namespace per node, each joined to the bridge by a veth pair
 * with 10.77.0.(i+1)/24 on the node's end. */
static bool ns_setup(void)
{
    static bool registered;
    unsigned    i;
    pid_t       pid = getpid();

    snprintf(ns_prefix, sizeof(ns_prefix), "memsvc-t%d", (int)pid);
    if (!registered) {
        atexit(ns_teardown);
        registered = true;
    }
    if (!sh("ip netns add %s-br", ns_prefix) ||
        !sh("ip -n %s-br link add br0 type bridge", ns_prefix) ||
        !sh("ip -n %s-br link set br0 up", ns_prefix)) {
        return false;
    }
    for (i = 0; i < NODES; i++) {
        /* veth names: at most 15 characters */
        if (!sh("ip netns add %s-%s", ns_prefix, names[i]) ||
            !sh("ip link add m%dn%s netns %s-%s type veth peer name m%db%s netns %s-br", (int)pid,
                names[i], ns_prefix, names[i], (int)pid, names[i], ns_prefix) ||
            !sh("ip -n %s-%s addr add 10.77.0.%u/24 dev m%dn%s", ns_prefix, names[i], i + 1,
                (int)pid, names[i]) ||
            !sh("ip -n %s-%s link set m%dn%s up", ns_prefix, names[i], (int)pid, names[i]) ||
            !sh("ip -n %s-%s link set lo up", ns_prefix, names[i]) ||
            !sh("ip -n %s-br link set m%db%s master br0", ns_prefix, (int)pid, names[i]) ||
            !sh("ip -n %s-br link set m%db%s up", ns_prefix, (int)pid, names[i])) {
            return false;
        }
    }
    return true;
}

/* Wait (bounded) until, in the cluster view from namespace of node 0, obs sees name as state. */
static bool ns_wait(fixture_t *f, const char *obs, const char *name, const char *state)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    char     ns[48];
    json_t  *j;
    int      rc;
    bool     ok = false;

    snprintf(ns, sizeof(ns), "%s-%s", ns_prefix, obs);
    while (!ok && (now_ms() < deadline)) {
        j = ctl_json(ns, f->file, &rc);
        if (j != NULL) {
            ok = (strcmp(json_view(j, obs, name), state) == 0);
            json_decref(j);
        }
        if (!ok) {
            usleep(100000);
        }
    }
    if (!ok) {
        fprintf(stderr, "netns: %s never saw %s %s\n", obs, name, state);
    }
    return ok;
}

/* Wait (bounded) until a daemon's log holds text. */
static bool log_wait(const integ_daemon_t *d, const char *text)
{
    uint64_t deadline = now_ms() + WAIT_MS;

    while (now_ms() < deadline) {
        if (integ_log_contains(d, text)) {
            return true;
        }
        usleep(50000);
    }
    fprintf(stderr, "'%s' never in %s\n", text, d->log);
    return false;
}

/*
 * Three daemons, each in its namespace (start(f, i, netns) starts node i), all seeing each other
 * up. false when namespaces cannot be had here (the test is then skipped, said so) or could not
 * be made (a failure, asserted); *made_p: the fixture and namespaces exist (to be removed).
 */
static bool ns_cluster(fixture_t *f, bool (*start)(fixture_t *, unsigned, const char *),
                       bool *made_p)
{
    char     ns[48];
    unsigned i, j;

    *made_p = false;
    if ((geteuid() != 0) || !sh("ip netns list")) {
        fprintf(stderr, "\n  skipped: network namespaces need root and 'ip netns'\n");
        CU_PASS("skipped: network namespaces need root and 'ip netns'");
        return false;
    }
    CU_ASSERT_FATAL(fixture_init(f, "10.77.0"));
    *made_p = true;
    if (!ns_setup()) {
        CU_FAIL("cannot create the namespaces and veth pairs");
        return false;
    }
    for (i = 0; i < NODES; i++) {
        snprintf(ns, sizeof(ns), "%s-%s", ns_prefix, names[i]);
        CU_ASSERT(start(f, i, ns));
    }
    for (i = 0; i < NODES; i++) {
        for (j = 0; j < NODES; j++) {
            if (i != j) {
                CU_ASSERT(ns_wait(f, names[i], names[j], "up"));
            }
        }
    }
    return true;
}

static bool ns_start_plain(fixture_t *f, unsigned i, const char *netns)
{
    return node_start(f, i, f->file, f->secret, netns);
}

static void test_netns_partition(void)
{
    fixture_t f;
    char      ns[48];
    bool      made;
    int       rc;

    if (!ns_cluster(&f, ns_start_plain, &made)) {
        goto out;
    }
    /* c's link to the bridge down: c and the others see each other down */
    CU_ASSERT(sh("ip -n %s-br link set m%dbc down", ns_prefix, (int)getpid()));
    CU_ASSERT(ns_wait(&f, "a", "c", "down"));
    CU_ASSERT(ns_wait(&f, "b", "c", "down"));
    /* c's own view from its log: inside the cut-off namespace UCX puts even a connection to
     * the local daemon on the dead veth, so memsvc-ctl there reaches no one */
    CU_ASSERT(log_wait(&f.d[2], "peer a (10.77.0.1:24000): suspect -> down"));
    CU_ASSERT(log_wait(&f.d[2], "peer b (10.77.0.2:24001): suspect -> down"));
    CU_ASSERT(ns_wait(&f, "a", "b", "up")); /* the rest still sees itself whole */
    snprintf(ns, sizeof(ns), "%s-a", ns_prefix);
    {
        json_t *jj = ctl_json(ns, f.file, &rc);

        CU_ASSERT_PTR_NOT_NULL(jj);
        if (jj != NULL) {
            CU_ASSERT(json_is_false(json_object_get(jj, "healthy")));
            json_decref(jj);
        }
    }
    /* link up: healed without a restart */
    CU_ASSERT(sh("ip -n %s-br link set m%dbc up", ns_prefix, (int)getpid()));
    CU_ASSERT(ns_wait(&f, "a", "c", "up"));
    CU_ASSERT(ns_wait(&f, "c", "a", "up"));
    CU_ASSERT(ns_wait(&f, "c", "b", "up"));
    CU_ASSERT(ns_wait(&f, "b", "c", "up"));
out:
    if (made) {
        fixture_fini(&f);
        ns_teardown();
    }
}


/* ---- replication of durable tensors ---------------------------------------------------------- */

#define REP_N 6
#define REP_JOB 5

/* 4 KiB .. 64 KiB, not page multiples; the last 8 MiB (a rendezvous transfer) */
static uint64_t rep_size(unsigned i)
{
    return (i == REP_N - 1) ? (8ull << 20) + 17 : (4096ull << i) + 7 * i;
}

/* Start node i backed, with its durable state in f->dir/state-NAME-GEN and replication on. */
static bool repl_start_ex(fixture_t *f, unsigned i, unsigned gen, const char *netns,
                          const char *lost, const char *room)
{
    char        dir[160];
    const char *more[] = {"--memory",    "backed", "--replicas",     "1",   "--peer-lost",
                          lost,          "--state-dir", dir,        "--keep-durable", "600",
                          "--replica-bytes", room, NULL};

    snprintf(dir, sizeof(dir), "%s/state-%s-%u", f->dir, names[i], gen);
    if ((mkdir(dir, 0700) != 0) && (errno != EEXIST)) {
        return false;
    }
    return node_start_ex(f, i, f->file, f->secret, netns, more);
}

static bool repl_start_lost(fixture_t *f, unsigned i, unsigned gen, const char *netns,
                            const char *lost)
{
    return repl_start_ex(f, i, gen, netns, lost, "32MiB");
}

static bool repl_start(fixture_t *f, unsigned i, unsigned gen, const char *netns)
{
    return repl_start_lost(f, i, gen, netns, "2");
}

static memsvc_status_t repl_connect(const integ_daemon_t *d, memsvc_conn_h *conn_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = d->addr,
                              .job        = REP_JOB,
                              .flags      = MEMSVC_CONN_TCP,
                              .timeout_ms = 20000}; /* (a read waits for a lost peer) */

    return memsvc_connect(&p, conn_p);
}

/* Write durable "r<i>" (contents test_fill(seed + i)), allocating it first if alloc. */
static memsvc_status_t repl_write(memsvc_conn_h conn, unsigned i, uint64_t seed, bool alloc)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_OPTIM};
    memsvc_tensor_info_t  info;
    memsvc_handle_t       h;
    memsvc_status_t       st;
    uint8_t              *buf = malloc(rep_size(i));
    char                  key[16];

    if (buf == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    snprintf(key, sizeof(key), "r%u", i);
    test_fill(buf, rep_size(i), seed + i);
    st = alloc ? memsvc_alloc(conn, key, rep_size(i), &ap, &h) : memsvc_lookup(conn, key, &info);
    if (!alloc) {
        h = info.handle;
    }
    if (st == MEMSVC_OK) {
        st = memsvc_write(conn, h, 0, buf, rep_size(i));
    }
    free(buf);
    return st;
}

/* Is "r<i>" there with the contents of seed + i? MEMSVC_ERR_PROTOCOL for other bytes. */
static memsvc_status_t repl_check(memsvc_conn_h conn, unsigned i, uint64_t seed)
{
    memsvc_tensor_info_t info;
    memsvc_status_t      st;
    uint8_t             *want = malloc(rep_size(i)), *got = malloc(rep_size(i));
    char                 key[16];

    snprintf(key, sizeof(key), "r%u", i);
    st = ((want == NULL) || (got == NULL)) ? MEMSVC_ERR_NO_RESOURCE
                                           : memsvc_lookup(conn, key, &info);
    if (st == MEMSVC_OK) {
        st = (info.size == rep_size(i)) ? memsvc_read(conn, info.handle, 0, got, rep_size(i))
                                        : MEMSVC_ERR_PROTOCOL;
    }
    if (st == MEMSVC_OK) {
        test_fill(want, rep_size(i), seed + i);
        st = (memcmp(want, got, rep_size(i)) == 0) ? MEMSVC_OK : MEMSVC_ERR_PROTOCOL;
    }
    free(want);
    free(got);
    return st;
}

/* A node's cluster figures, and how it sees peer `name` (NULL: not wanted). */
static bool repl_view(const integ_daemon_t *obs, memsvc_cluster_info_t *ci, const char *name,
                      memsvc_peer_info_t *pi)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_FLAGS | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = obs->addr,
                              .flags      = MEMSVC_CONN_CONTROL | MEMSVC_CONN_TCP,
                              .timeout_ms = 2000};
    memsvc_conn_h        conn;
    seen_t               s = {.want = (name != NULL) ? name : ""};
    memsvc_status_t      status;

    if (memsvc_connect(&p, &conn) != MEMSVC_OK) {
        return false;
    }
    status = memsvc_peers(conn, ci, seen_cb, &s);
    memsvc_close(conn);
    if ((name != NULL) && s.found) {
        *pi = s.info;
    }
    return (status == MEMSVC_OK) && ((name == NULL) || s.found);
}

/* Wait (bounded) until obs owes nothing and peer holder holds `held` tensors of obs's. */
static bool repl_wait_synced(const integ_daemon_t *obs, const integ_daemon_t *holder,
                             const char *obs_name, uint64_t held)
{
    uint64_t              deadline = now_ms() + WAIT_MS;
    memsvc_cluster_info_t ci, hi;
    memsvc_peer_info_t    pi;

    while (now_ms() < deadline) {
        if (repl_view(obs, &ci, NULL, NULL) && (ci.owed_tensors == 0) && (ci.targets == 1) &&
            repl_view(holder, &hi, obs_name, &pi) && (pi.held_tensors == held)) {
            return true;
        }
        usleep(50000);
    }
    fprintf(stderr, "replication: %s never owed nothing with %llu tensors held at %s (owed %llu, "
            "targets %u)\n",
            obs_name, (unsigned long long)held, holder->addr,
            (unsigned long long)ci.owed_tensors, ci.targets);
    return false;
}

/* Wait (bounded) until obs has restored `n` tensors from peers and asks for nothing more. */
static bool repl_wait_recovered(const integ_daemon_t *obs, uint64_t n,
                                memsvc_cluster_info_t *ci)
{
    uint64_t deadline = now_ms() + WAIT_MS;

    while (now_ms() < deadline) {
        if (repl_view(obs, ci, NULL, NULL) && (ci->recovery_restored >= n) &&
            (ci->recovery_wanted == ci->recovery_restored + ci->recovery_failed)) {
            return true;
        }
        usleep(50000);
    }
    fprintf(stderr, "recovery at %s: %llu of %llu wanted restored, %llu failed (want %llu)\n",
            obs->addr, (unsigned long long)ci->recovery_restored,
            (unsigned long long)ci->recovery_wanted, (unsigned long long)ci->recovery_failed,
            (unsigned long long)n);
    return false;
}

/*
 * Role "cluster-ns": (run in network namespace $MEMSVC_INTEG_NETNS) for each i in $MEMSVC_INTEG_ONLY
 * (a list of digits, e.g. "012345"), write "r<i>" with seed $MEMSVC_INTEG_SEED ($MEMSVC_INTEG_DO
 * "alloc" or "write") or check it ("check"); says "ok\n" or "bad\n" on its pipe.
 */
static void __attribute__((noreturn)) ns_child(integ_daemon_t *d, int fd)
{
    const char   *ns = getenv("MEMSVC_INTEG_NETNS"), *only = getenv("MEMSVC_INTEG_ONLY");
    const char   *todo = getenv("MEMSVC_INTEG_DO"), *seed = getenv("MEMSVC_INTEG_SEED");
    memsvc_conn_h conn;
    bool          ok = true;

    if ((ns == NULL) || (only == NULL) || (todo == NULL) || (seed == NULL)) {
        _exit(2);
    }
    if (repl_connect(d, &conn) != MEMSVC_OK) {
        fprintf(stderr, "cluster-ns: cannot connect to %s from %s\n", d->addr, ns);
        _exit(3);
    }
    for (; *only != '\0'; only++) {
        unsigned i = (unsigned)(*only - '0');

        if (strcmp(todo, "check") == 0) {
            ok = ok && (repl_check(conn, i, strtoull(seed, NULL, 10)) == MEMSVC_OK);
        } else {
            memsvc_status_t st = repl_write(conn, i, strtoull(seed, NULL, 10),
                                            strcmp(todo, "alloc") == 0);

            if (st != MEMSVC_OK) {
                fprintf(stderr, "cluster-ns: %s r%u: %s\n", todo, i, memsvc_strerror(st));
                ok = false;
            }
        }
    }
    memsvc_close(conn);
    if (write(fd, ok ? "ok\n" : "bad\n", ok ? 3 : 4) < 0) {
        _exit(4);
    }
    _exit(0);
}

/* Role "cluster-writer": writes durable "r0" of REP_JOB over and over (seed 1000 + k), and
 * says "k\n" on its pipe after each write returned OK. Killed by the test. */
void integ_cluster_child(integ_daemon_t *d, const char *role, int fd)
{
    memsvc_conn_h conn;
    char          line[32];
    uint64_t      k;

    if (strcmp(role, "cluster-ns") == 0) {
        ns_child(d, fd);
    }
    if ((strcmp(role, "cluster-writer") != 0) || (repl_connect(d, &conn) != MEMSVC_OK)) {
        _exit(2);
    }
    for (k = 1; k < 1000000; k++) {
        if (repl_write(conn, 0, 1000 + k, false) != MEMSVC_OK) {
            _exit(3);
        }
        snprintf(line, sizeof(line), "%llu\n", (unsigned long long)k);
        if (write(fd, line, strlen(line)) < 0) {
            _exit(0);
        }
    }
    _exit(0);
}

/* The last k a cluster-writer reported (0: none yet); reads what is there without blocking. */
static uint64_t writer_last(int fd, uint64_t last)
{
    char    buf[4096], *p;
    ssize_t n;
    int     fl = fcntl(fd, F_GETFL);

    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    while ((n = read(fd, buf, sizeof(buf) - 1)) > 0) {
        buf[n] = '\0';
        for (p = buf; (p = strchr(p, '\n')) != NULL; p++) {
            char *s = p;

            while ((s > buf) && (s[-1] != '\n')) {
                s--;
            }
            last = strtoull(s, NULL, 10) > last ? strtoull(s, NULL, 10) : last;
        }
    }
    return last;
}

/*
 * kill -9 of node a while a client writes a durable tensor over and over; a started again empty
 * (a replaced node: a new state directory) gets every durable tensor back from b, byte-exact: the
 * quiet ones at their last version, the hot one at a version the client wrote; a client
 * re-attaches by key. Then a free on a frees the copy on b.
 */
static void test_repl_recover(void)
{
    fixture_t             f;
    memsvc_cluster_info_t ci;
    memsvc_peer_info_t    pi;
    memsvc_conn_h         conn;
    memsvc_tensor_info_t  info;
    pid_t                 w;
    int                   fd = -1, status;
    uint64_t              last = 0, k, deadline;
    unsigned              i;
    bool                  found = false;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    for (i = 0; i < NODES; i++) {
        CU_ASSERT(repl_start(&f, i, 0, NULL));
    }
    CU_ASSERT_FATAL(all_up(&f));
    TEST_ASSERT_OK(repl_connect(&f.d[0], &conn));
    for (i = 0; i < REP_N; i++) {
        TEST_ASSERT_OK(repl_write(conn, i, 10, true));
    }
    TEST_ASSERT_OK(repl_write(conn, 2, 20, false)); /* a second version of r2 */
    /* With three nodes and R = 1, a's copies go to b (the next node of its group). */
    CU_ASSERT(repl_wait_synced(&f.d[0], &f.d[1], "a", REP_N));
    CU_ASSERT(repl_view(&f.d[0], &ci, "b", &pi));
    CU_ASSERT(pi.target);
    CU_ASSERT_EQUAL(pi.acked_tensors, REP_N);
    CU_ASSERT_EQUAL(ci.replicas, 1);
    CU_ASSERT_TRUE(ci.sent_bytes >= rep_size(REP_N - 1));
    CU_ASSERT(repl_view(&f.d[2], &ci, "a", &pi));
    CU_ASSERT_EQUAL(pi.held_tensors, 0); /* c holds nothing of a's */
    memsvc_close(conn);

    /* A writer hammers r0; kill -9 of a in the middle of it. */
    w = integ_spawn_child(&f.d[0], "cluster-writer", NULL, &fd);
    CU_ASSERT_FATAL(w > 0);
    deadline = now_ms() + WAIT_MS;
    while ((last < 20) && (now_ms() < deadline)) {
        usleep(20000);
        last = writer_last(fd, last);
    }
    CU_ASSERT_TRUE(last >= 20);
    status = integ_daemon_signal(&f.d[0], SIGKILL);
    CU_ASSERT_TRUE(WIFSIGNALED(status));
    usleep(100000);
    last = writer_last(fd, last);
    kill(w, SIGKILL);
    waitpid(w, &status, 0);
    close(fd);

    /* a comes back empty (a new node in its place): everything from b */
    CU_ASSERT_FATAL(repl_start(&f, 0, 1, NULL));
    CU_ASSERT(wait_state(&f.d[1], "a", MEMSVC_PEER_UP, NULL, NULL));
    CU_ASSERT(repl_wait_recovered(&f.d[0], REP_N, &ci));
    CU_ASSERT_EQUAL(ci.recovery_restored, REP_N);
    CU_ASSERT_EQUAL(ci.recovery_failed, 0);
    TEST_ASSERT_OK(repl_connect(&f.d[0], &conn));
    for (i = 1; i < REP_N; i++) {
        CU_ASSERT_EQUAL(repl_check(conn, i, (i == 2) ? 20 : 10), MEMSVC_OK);
    }
    /* r0: the last acknowledged version: one the writer wrote (or the first) */
    if (repl_check(conn, 0, 10) == MEMSVC_OK) {
        found = true;
    }
    for (k = last + 1; (k > 0) && !found; k--) {
        found = (repl_check(conn, 0, 1000 + k) == MEMSVC_OK);
    }
    CU_ASSERT_TRUE(found);
    {
        memsvc_stats_t st;

        TEST_ASSERT_OK(integ_stats(&f.d[0], &st));
        CU_ASSERT_EQUAL(st.durable_tensors, REP_N);
    }
    /* Its copies stay on b, acknowledged; a free reaches b. */
    CU_ASSERT(repl_wait_synced(&f.d[0], &f.d[1], "a", REP_N));
    TEST_ASSERT_OK(memsvc_lookup(conn, "r3", &info));
    TEST_ASSERT_OK(memsvc_free(conn, info.handle));
    TEST_ASSERT_OK(integ_deferred(conn, MEMSVC_OP_FREE, info.handle));
    CU_ASSERT(repl_wait_synced(&f.d[0], &f.d[1], "a", REP_N - 1));
    memsvc_close(conn);
    fixture_fini(&f);
}

/*
 * b, which holds a's copies, is killed for good: after --peer-lost a places them on c and
 * sends them all there; c holds them, acknowledged.
 */
static void test_repl_lost_peer(void)
{
    fixture_t             f;
    memsvc_cluster_info_t ci;
    memsvc_peer_info_t    pi;
    memsvc_conn_h         conn;
    unsigned              i;
    int                   status;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    for (i = 0; i < NODES; i++) {
        CU_ASSERT(repl_start(&f, i, 0, NULL));
    }
    CU_ASSERT_FATAL(all_up(&f));
    TEST_ASSERT_OK(repl_connect(&f.d[0], &conn));
    for (i = 0; i < REP_N; i++) {
        TEST_ASSERT_OK(repl_write(conn, i, 30, true));
    }
    CU_ASSERT(repl_wait_synced(&f.d[0], &f.d[1], "a", REP_N));
    status = integ_daemon_signal(&f.d[1], SIGKILL);
    CU_ASSERT_TRUE(WIFSIGNALED(status));
    log_done(&f, &f.d[1]);
    /* written while b is down: owed until a placement holds it */
    TEST_ASSERT_OK(repl_write(conn, 1, 40, false));
    CU_ASSERT(repl_wait_synced(&f.d[0], &f.d[2], "a", REP_N));
    CU_ASSERT(repl_view(&f.d[0], &ci, "c", &pi));
    CU_ASSERT(pi.target);
    CU_ASSERT_EQUAL(ci.targets, 1);
    CU_ASSERT(integ_log_contains(&f.d[0], "peer b is lost"));
    memsvc_close(conn);
    fixture_fini(&f);
}

/* Run a "cluster-ns" child against node i of the namespaces: true if it said ok. */
static bool ns_client(fixture_t *f, unsigned i, const char *todo, const char *only,
                      const char *seed)
{
    char        ns[48], buf[8] = "";
    const char *env[] = {"MEMSVC_INTEG_NETNS", ns,   "MEMSVC_INTEG_DO",   todo,
                         "MEMSVC_INTEG_ONLY",  only, "MEMSVC_INTEG_SEED", seed,
                         NULL};
    int         fd, status;
    pid_t       pid;
    ssize_t     n;

    snprintf(ns, sizeof(ns), "%s-%s", ns_prefix, names[i]);
    pid = integ_spawn_child(&f->d[i], "cluster-ns", env, &fd);
    if (pid < 0) {
        return false;
    }
    n = read(fd, buf, sizeof(buf) - 1); /* the child ends within its connect timeouts */
    close(fd);
    waitpid(pid, &status, 0);
    return (n > 0) && (strncmp(buf, "ok", 2) == 0);
}

/* A node's replication figure (e.g. "owed_tensors") in the cluster view from namespace obs. */
static long long ns_repl(fixture_t *f, const char *obs, const char *node, const char *key)
{
    char      ns[48];
    json_t   *j, *nodes, *n;
    size_t    i;
    int       rc;
    long long v = -1;

    snprintf(ns, sizeof(ns), "%s-%s", ns_prefix, obs);
    j = ctl_json(ns, f->file, &rc);
    if (j == NULL) {
        return -1;
    }
    nodes = json_object_get(j, "nodes");
    json_array_foreach(nodes, i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "name")), node) == 0) {
            v = json_integer_value(json_object_get(json_object_get(n, "replication"), key));
        }
    }
    json_decref(j);
    return v;
}

static bool ns_repl_wait(fixture_t *f, const char *node, const char *key, long long want)
{
    uint64_t  deadline = now_ms() + WAIT_MS;
    long long v        = -1;

    while (now_ms() < deadline) {
        v = ns_repl(f, node, node, key);
        if (v == want) {
            return true;
        }
        usleep(100000);
    }
    fprintf(stderr, "netns: %s's %s stayed %lld, not %lld\n", node, key, v, want);
    return false;
}

/*
 * Replication across a real network stack: a's copies go to b; b is cut off (its veth down)
 * while a client rewrites a tensor on a: it stays owed; the link heals: it arrives. Then a is
 * killed and started empty: it recovers the latest versions from b.
 */
static bool ns_start_repl(fixture_t *f, unsigned i, const char *netns)
{
    return repl_start_lost(f, i, 0, netns, "60");
}

static void test_netns_repl_partition(void)
{
    fixture_t f;
    char      ns[48];
    bool      made;

    if (!ns_cluster(&f, ns_start_repl, &made)) {
        goto out;
    }
    CU_ASSERT(ns_client(&f, 0, "alloc", "012345", "10"));
    CU_ASSERT(ns_repl_wait(&f, "a", "owed_tensors", 0));
    CU_ASSERT(ns_repl_wait(&f, "b", "held_tensors", REP_N));
    /* cut b off; rewrite r1 on a: owed while b is away */
    CU_ASSERT(sh("ip -n %s-br link set m%dbb down", ns_prefix, (int)getpid()));
    CU_ASSERT(ns_wait(&f, "a", "b", "down"));
    CU_ASSERT(ns_client(&f, 0, "write", "1", "50"));
    usleep(300000);
    CU_ASSERT_EQUAL(ns_repl(&f, "a", "a", "owed_tensors"), 1);
    CU_ASSERT_EQUAL(ns_repl(&f, "a", "a", "targets"), 1); /* still b: not lost yet */
    /* heal: the new version reaches b */
    CU_ASSERT(sh("ip -n %s-br link set m%dbb up", ns_prefix, (int)getpid()));
    CU_ASSERT(ns_wait(&f, "a", "b", "up"));
    CU_ASSERT(ns_repl_wait(&f, "a", "owed_tensors", 0));
    /* a replaced by an empty node: the latest versions come back from b */
    CU_ASSERT(integ_daemon_signal(&f.d[0], SIGKILL) != 0);
    snprintf(ns, sizeof(ns), "%s-a", ns_prefix);
    CU_ASSERT_FATAL(repl_start_lost(&f, 0, 1, ns, "60"));
    CU_ASSERT(ns_repl_wait(&f, "a", "recovery_restored", REP_N));
    CU_ASSERT(ns_client(&f, 0, "check", "02345", "10"));
    CU_ASSERT(ns_client(&f, 0, "check", "1", "50"));
out:
    if (made) {
        fixture_fini(&f);
        ns_teardown();
    }
}

/*
 * A holder without room for a copy refuses it: the owner counts it owed, sends the others, and
 * tries the refused one again about once a second rather than at once (no flood).
 */
static void test_repl_no_room(void)
{
    fixture_t             f;
    memsvc_cluster_info_t ci;
    memsvc_conn_h         conn;
    uint64_t              sent0, deadline;
    unsigned              i;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    CU_ASSERT(repl_start(&f, 0, 0, NULL));
    CU_ASSERT(repl_start_ex(&f, 1, 0, NULL, "2", "1MiB")); /* b: room for 1 MiB of copies */
    CU_ASSERT(repl_start(&f, 2, 0, NULL));
    CU_ASSERT_FATAL(all_up(&f));
    TEST_ASSERT_OK(repl_connect(&f.d[0], &conn));
    for (i = 0; i < REP_N; i++) {
        TEST_ASSERT_OK(repl_write(conn, i, 60, true)); /* r5 (8 MiB) cannot fit at b */
    }
    memsvc_close(conn);
    CU_ASSERT(log_wait(&f.d[1], "no room for a copy of 'r5'"));
    CU_ASSERT(log_wait(&f.d[0], "did not keep a copy of 'r5' (job 5): no room"));
    /* the five that fit are held; r5 stays owed */
    deadline = now_ms() + WAIT_MS;
    while ((now_ms() < deadline) &&
           !(repl_view(&f.d[0], &ci, NULL, NULL) && (ci.owed_tensors == 1))) {
        usleep(50000);
    }
    CU_ASSERT_EQUAL(ci.owed_tensors, 1);
    CU_ASSERT_EQUAL(ci.owed_bytes, rep_size(REP_N - 1));
    sent0 = ci.sent_bytes;
    usleep(2500000);
    CU_ASSERT(repl_view(&f.d[0], &ci, NULL, NULL));
    CU_ASSERT_EQUAL(ci.owed_tensors, 1);
    /* 2.5 s: a few more tries, not thousands */
    CU_ASSERT_TRUE(ci.sent_bytes - sent0 <= 5 * rep_size(REP_N - 1));
    CU_ASSERT_TRUE(ci.sent_bytes - sent0 >= rep_size(REP_N - 1));
    fixture_fini(&f);
}


/*
 * The peer tier: a's HBM and host pool are small; tensors pushed out of its HBM with its host
 * pool full go to b's room (the nic of the tiny node is faster than its disk) and come back
 * byte-exact on acquire; b counts what it holds for a; frees delete them there. Then b is
 * killed holding some: those answer MEMSVC_ERR_IO (lost), the others are fine.
 */
static fixture_t f_peer;

static void test_peer_tier(void)
{
    char        dir[3][160];
    const char *const small[] = {"--memory",        "backed", "hbm=6MiB",   "host=6MiB",
                           "--replica-bytes", "1MiB",   "--peer-tier", "48MiB",
                           "--policy",        "lru",    "--peer-lost", "2",
                           "--state-dir",     dir[0],   NULL};
    const char *const plain1[] = {"--memory", "backed", "--state-dir", dir[1], NULL};
    const char *const plain2[] = {"--memory", "backed", "--state-dir", dir[2], NULL};
    enum { N = 12 };
    const uint64_t        size = (1ull << 20) + 333;
    memsvc_cluster_info_t ci, bi;
    memsvc_conn_h         conn;
    memsvc_handle_t       h[N];
    memsvc_stats_t        st;
    uint8_t              *buf = malloc(size), *ref = malloc(size);
    unsigned              i, on_peer, lost = 0, fine = 0;
    int                   status;
    char                  key[16];

    CU_ASSERT_FATAL((buf != NULL) && (ref != NULL));
    CU_ASSERT_FATAL(fixture_init(&f_peer, NULL));
    for (i = 0; i < 3; i++) { /* durable state in the fixture's directory, not /dev/shm */
        snprintf(dir[i], sizeof(dir[i]), "%s/state-%s", f_peer.dir, names[i]);
        CU_ASSERT_FATAL(mkdir(dir[i], 0700) == 0);
    }
    CU_ASSERT(node_start_ex(&f_peer, 0, f_peer.file, f_peer.secret, NULL, small));
    CU_ASSERT(node_start_ex(&f_peer, 1, f_peer.file, f_peer.secret, NULL, plain1));
    CU_ASSERT(node_start_ex(&f_peer, 2, f_peer.file, f_peer.secret, NULL, plain2));
    CU_ASSERT_FATAL(all_up(&f_peer));
    TEST_ASSERT_OK(repl_connect(&f_peer.d[0], &conn));
    for (i = 0; i < N; i++) { /* 12 MiB through 6 MiB of HBM (device 0) and 5 MiB of host */
        snprintf(key, sizeof(key), "t%u", i);
        test_fill(ref, size, 500 + i);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, size, NULL, &h[i]));
        TEST_ASSERT_OK(memsvc_write(conn, h[i], 0, ref, size));
    }
    TEST_ASSERT_OK(integ_stats(&f_peer.d[0], &st));
    on_peer = (unsigned)st.dev[0].tensors_by_state[MEMSVC_STATE_ON_PEER];
    CU_ASSERT_TRUE(on_peer > 0);
    CU_ASSERT(repl_view(&f_peer.d[0], &ci, NULL, NULL));
    CU_ASSERT_EQUAL(ci.tier_out_tensors, on_peer);
    CU_ASSERT(repl_view(&f_peer.d[1], &bi, NULL, NULL));
    CU_ASSERT_EQUAL(bi.tier_held_tensors, on_peer); /* b: first up after a */
    /* every one comes back exact (acquire, read, release), twice round */
    for (unsigned round = 0; round < 2; round++) {
        for (i = 0; i < N; i++) {
            TEST_ASSERT_OK(memsvc_acquire(conn, h[i]));
            TEST_ASSERT_OK(memsvc_read(conn, h[i], 0, buf, size));
            test_fill(ref, size, 500 + i);
            CU_ASSERT_EQUAL(memcmp(buf, ref, size), 0);
            TEST_ASSERT_OK(memsvc_release(conn, h[i]));
        }
    }
    TEST_ASSERT_OK(memsvc_flush(conn));
    /* kill b: what a kept there is lost, the rest is fine */
    TEST_ASSERT_OK(integ_stats(&f_peer.d[0], &st));
    CU_ASSERT_TRUE(st.dev[0].tensors_by_state[MEMSVC_STATE_ON_PEER] > 0);
    status = integ_daemon_signal(&f_peer.d[1], SIGKILL);
    CU_ASSERT_TRUE(WIFSIGNALED(status));
    log_done(&f_peer, &f_peer.d[1]);
    for (i = 0; i < N; i++) {
        memsvc_status_t s = memsvc_acquire(conn, h[i]);

        if (s == MEMSVC_ERR_IO) {
            lost++;
            continue;
        }
        if (s != MEMSVC_OK) {
            fprintf(stderr, "peer tier: acquire of t%u after the kill: %s\n", i,
                    memsvc_strerror(s));
        }
        TEST_ASSERT_OK(s);
        TEST_ASSERT_OK(memsvc_read(conn, h[i], 0, buf, size));
        test_fill(ref, size, 500 + i);
        CU_ASSERT_EQUAL(memcmp(buf, ref, size), 0);
        TEST_ASSERT_OK(memsvc_release(conn, h[i]));
        fine++;
    }
    CU_ASSERT_TRUE(lost > 0);
    CU_ASSERT_EQUAL(lost + fine, N);
    CU_ASSERT(log_wait(&f_peer.d[0], "a tensor of the peer tier kept there is lost"));
    for (i = 0; i < N; i++) {
        TEST_ASSERT_OK(memsvc_free(conn, h[i]));
    }
    TEST_ASSERT_OK(memsvc_flush(conn));
    CU_ASSERT(repl_view(&f_peer.d[0], &ci, NULL, NULL));
    CU_ASSERT_EQUAL(ci.tier_out_tensors, 0);
    memsvc_close(conn);
    free(buf);
    free(ref);
    fixture_fini(&f_peer);
}


/*
 * An accepted peer link is not a client: it owes no HELLO, so the clients' handshake timeout
 * must not close it (it did: every link was cut and redialed each --handshake-timeout).
 */
static void test_links_outlive_handshake_timeout(void)
{
    static const char *const more[] = {"--handshake-timeout", "0.5", NULL};
    fixture_t          f;
    memsvc_peer_info_t info;
    unsigned           i, j;

    CU_ASSERT_FATAL(fixture_init(&f, NULL));
    for (i = 0; i < NODES; i++) {
        CU_ASSERT(node_start_ex(&f, i, f.file, f.secret, NULL, more));
    }
    CU_ASSERT_FATAL(all_up(&f));
    usleep(2000000); /* four handshake timeouts */
    for (i = 0; i < NODES; i++) {
        for (j = 0; j < NODES; j++) {
            if (i == j) {
                continue;
            }
            CU_ASSERT(peer_view(&f.d[i], names[j], &info) && (info.state == MEMSVC_PEER_UP));
        }
        CU_ASSERT(!integ_log_contains(&f.d[i], "no HELLO within"));
        CU_ASSERT(!integ_log_contains(&f.d[i], "its link closed"));
        CU_ASSERT(!integ_log_contains(&f.d[i], "up -> suspect"));
    }
    fixture_fini(&f);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_cluster", NULL, NULL);

    CU_add_test(s, "three daemons up; kill -9: suspect, down; restart: up, new boot id",
                test_membership);
    CU_add_test(s, "another cluster file or secret is refused, named on both sides", test_refused);
    CU_add_test(s, "peer links outlive the clients' handshake timeout",
                test_links_outlive_handshake_timeout);
    CU_add_test(s, "memsvc-ctl --cluster: health exit codes, one JSON object", test_ctl_cluster);
    CU_add_test(s, "bad cluster files and secrets: named, exit 2", test_bad_files);
    CU_add_test(s, "garbage and impostors on the peer messages: dropped or refused, links kept",
                test_impostors);
    CU_add_test(s, "network namespaces: a partition is seen down and heals", test_netns_partition);
    CU_add_test(s, "replication: kill -9 under writes, an empty replacement recovers from a peer",
                test_repl_recover);
    CU_add_test(s, "replication: a peer lost for good: its copies are made again elsewhere",
                test_repl_lost_peer);
    CU_add_test(s, "replication: a holder without room refuses a copy; it is retried, not flooded",
                test_repl_no_room);
    CU_add_test(s, "peer tier: swapped to a peer's room and back byte-exact; lost with the peer",
                test_peer_tier);
    CU_add_test(s, "replication in network namespaces: owed across a partition, delivered when it "
                "heals, recovered",
                test_netns_repl_partition);
}

TEST_REGISTER(service_cluster, add_suite)
