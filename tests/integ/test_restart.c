/* test_restart.c - integration: ordered shutdown under load, restart on the same port, connect to
 * an unresponsive daemon, durable tensors across a daemon restart, spilled tensors served */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HAMMER_SIZE (64u << 10)

/* ---- children ---------------------------------------------------------------------------- */

/* Is this how a call ends when the daemon goes away under it? */
static bool daemon_gone(memsvc_status_t st)
{
    return (st == MEMSVC_ERR_SHUTDOWN) || (st == MEMSVC_ERR_TRANSPORT) ||
           (st == MEMSVC_ERR_TIMEOUT) || (st == MEMSVC_ERR_CANCELED);
}

/*
 * restart-hammer-{local,tcp}: allocate, write a pattern, read it back, acquire/release and free,
 * in a loop, until the daemon goes away. Exit 0 when a call ends with a status that says so
 * (the library never aborts its process), 4 on a content mismatch, 5 on another error.
 */
static void child_hammer(integ_daemon_t *d, bool tcp, int fd)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_RANK | MEMSVC_CONN_FIELD_FLAGS |
                                            MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = d->addr,
                              .job        = 7,
                              .rank       = (uint32_t)getpid(),
                              .flags      = tcp ? MEMSVC_CONN_TCP : 0,
                              .timeout_ms = 5000};
    memsvc_conn_h        conn;
    memsvc_handle_t      h;
    memsvc_status_t      st = MEMSVC_OK;
    uint8_t             *want = malloc(HAMMER_SIZE), *got = malloc(HAMMER_SIZE);
    char                 key[64];
    uint64_t             i;

    if ((want == NULL) || (got == NULL) || (memsvc_connect(&p, &conn) != MEMSVC_OK)) {
        _exit(1);
    }
    for (i = 0;; i++) {
        snprintf(key, sizeof(key), "h%d.%llu", (int)getpid(), (unsigned long long)(i % 8));
        test_fill(want, HAMMER_SIZE, i);
        st = memsvc_alloc(conn, key, HAMMER_SIZE, NULL, &h);
        if (st == MEMSVC_OK) {
            st = memsvc_write(conn, h, 0, want, HAMMER_SIZE);
            if (st == MEMSVC_OK) {
                st = memsvc_read(conn, h, 0, got, HAMMER_SIZE);
                if ((st == MEMSVC_OK) && (memcmp(want, got, HAMMER_SIZE) != 0)) {
                    _exit(4);
                }
            }
            if ((st == MEMSVC_OK) && ((st = memsvc_acquire(conn, h)) == MEMSVC_OK)) {
                st = memsvc_release(conn, h);
            }
            if (st == MEMSVC_OK) {
                st = memsvc_free(conn, h);
            }
        }
        if (i == 0) {
            integ_child_ready(fd);
        }
        if (st != MEMSVC_OK) {
            break;
        }
    }
    memsvc_close(conn);
    _exit(daemon_gone(st) ? 0 : 5);
}

/* restart-connect: connect with a 1 s timeout; exit 0 if it answered MEMSVC_ERR_TIMEOUT (or,
 * for the local path, any status but OK), 6 if it connected. */
static void child_connect(integ_daemon_t *d, bool tcp, int fd)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_FLAGS |
                                            MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = d->addr,
                              .flags      = tcp ? MEMSVC_CONN_TCP : 0,
                              .timeout_ms = 1000};
    memsvc_conn_h        conn;
    memsvc_status_t      st;
    uint64_t             t0 = msp_now_ns();

    integ_child_ready(fd);
    st = memsvc_connect(&p, &conn);
    fprintf(stderr, "connect to a stopped daemon (%s): %s after %.2f s\n", tcp ? "tcp" : "local",
            memsvc_status_name(st), (double)(msp_now_ns() - t0) / 1e9);
    if (st == MEMSVC_OK) {
        memsvc_close(conn);
        _exit(6);
    }
    _exit((st == MEMSVC_ERR_TIMEOUT) ? 0 : 7);
}

/* restart-idle-tcp: connect over tcp and wait to be killed (the daemon closes first). */
static void child_idle(integ_daemon_t *d, int fd)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_FLAGS |
                                            MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = d->addr,
                              .job        = 8,
                              .flags      = MEMSVC_CONN_TCP,
                              .timeout_ms = 5000};
    memsvc_conn_h        conn;

    if (memsvc_connect(&p, &conn) != MEMSVC_OK) {
        _exit(1);
    }
    integ_child_ready(fd);
    for (;;) {
        pause();
    }
}

void integ_restart_child(integ_daemon_t *d, const char *role, int ready_fd)
{
    if (strcmp(role, "restart-idle-tcp") == 0) {
        child_idle(d, ready_fd);
    }
    if (strcmp(role, "restart-hammer-local") == 0) {
        child_hammer(d, false, ready_fd);
    } else if (strcmp(role, "restart-hammer-tcp") == 0) {
        child_hammer(d, true, ready_fd);
    } else if (strcmp(role, "restart-connect-tcp") == 0) {
        child_connect(d, true, ready_fd);
    } else if (strcmp(role, "restart-connect-local") == 0) {
        child_connect(d, false, ready_fd);
    }
    _exit(2);
}

/* Wait (bounded) for a child; its wait status, or -1 (then it is killed). */
static int child_wait(pid_t pid, uint64_t timeout_ns)
{
    uint64_t deadline = msp_now_ns() + timeout_ns;
    int      status;

    while (msp_now_ns() < deadline) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            return status;
        }
        usleep(5000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* A sanitizer's report in the daemon's log (the sanitizer build's job is to find them). */
static bool log_has_sanitizer_report(const integ_daemon_t *d)
{
    return integ_log_contains(d, "ERROR: AddressSanitizer") ||
           integ_log_contains(d, "ERROR: LeakSanitizer") ||
           integ_log_contains(d, "runtime error:");
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
    const char *v = getenv(name);

    return ((v != NULL) && (atoi(v) > 0)) ? (unsigned)atoi(v) : dflt;
}

/* ---- shutdown -------------------------------------------------------------------------------- */

/* Rounds of start, clients hammering (one local, one tcp), SIGTERM: the daemon exits 0 with no
 * sanitizer report, and every client ends normally (told, not aborted). */
static void test_sigterm_under_load(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    unsigned                 rounds = env_unsigned("MEMSVC_TEST_SIGTERM_ROUNDS", 50), r;
    uint64_t                 t0 = msp_now_ns(), budget = 120000000000ull;
    unsigned                 clean = 0;

    for (r = 0; (r < rounds) && (msp_now_ns() - t0 < budget); r++) {
        integ_daemon_t d;
        pid_t          c1, c2;
        int            st, s1, s2;

        CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
        c1 = integ_spawn(&d, "restart-hammer-local");
        c2 = integ_spawn(&d, "restart-hammer-tcp");
        CU_ASSERT_TRUE(c1 > 0);
        CU_ASSERT_TRUE(c2 > 0);
        usleep(20000 + (r % 5) * 20000); /* stop at different points of the traffic */
        st = integ_daemon_signal(&d, SIGTERM);
        s1 = (c1 > 0) ? child_wait(c1, 20000000000ull) : -1;
        s2 = (c2 > 0) ? child_wait(c2, 20000000000ull) : -1;
        CU_ASSERT_TRUE(WIFEXITED(st) && (WEXITSTATUS(st) == 0));
        CU_ASSERT_FALSE(log_has_sanitizer_report(&d));
        CU_ASSERT_TRUE(WIFEXITED(s1) && (WEXITSTATUS(s1) == 0));
        CU_ASSERT_TRUE(WIFEXITED(s2) && (WEXITSTATUS(s2) == 0));
        if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0) || log_has_sanitizer_report(&d) ||
            !WIFEXITED(s1) || (WEXITSTATUS(s1) != 0) || !WIFEXITED(s2) ||
            (WEXITSTATUS(s2) != 0)) {
            fprintf(stderr, "\n  round %u: daemon status 0x%x, clients 0x%x 0x%x; see %s\n", r,
                    st, s1, s2, d.log);
            break; /* keep the log of the first failure */
        }
        clean++;
        unlink(d.log);
    }
    fprintf(stderr, "\n  SIGTERM under load: %u of %u rounds ran (%.0f s), all clean: %s\n", r,
            rounds, (double)(msp_now_ns() - t0) / 1e9, (clean == r) ? "yes" : "no");
    CU_ASSERT_TRUE(r > 0);
}

/* A client connected when the daemon stops is told: its next call answers SHUTDOWN (or
 * TRANSPORT if it missed the notice), never hangs. */
static void test_clients_told_of_shutdown(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_status_t          st;
    int                      status;

    CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
    TEST_ASSERT_OK(integ_connect(&d, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_ping(conn, NULL));
    status = integ_daemon_signal(&d, SIGTERM);
    CU_ASSERT_TRUE(WIFEXITED(status) && (WEXITSTATUS(status) == 0));
    st = memsvc_ping(conn, NULL);
    CU_ASSERT_TRUE((st == MEMSVC_ERR_SHUTDOWN) || (st == MEMSVC_ERR_TRANSPORT));
    CU_ASSERT_TRUE(integ_log_contains(&d, "shutdown: 1 sessions told"));
    memsvc_close(conn);
}

/* After a shutdown with clients connected (tcp: their connections linger in TIME_WAIT), a new
 * daemon binds the same port at once. */
static void test_restart_same_port(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    integ_daemon_t           d, d2;
    char                     addr[64];
    pid_t                    c1, c2;
    int                      status;

    CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
    snprintf(addr, sizeof(addr), "%s", d.addr);
    c1 = integ_spawn(&d, "restart-hammer-tcp");
    c2 = integ_spawn(&d, "restart-idle-tcp"); /* the daemon closes its connection first */
    CU_ASSERT_TRUE(c1 > 0);
    CU_ASSERT_TRUE(c2 > 0);
    usleep(50000);
    status = integ_daemon_signal(&d, SIGTERM);
    CU_ASSERT_TRUE(WIFEXITED(status) && (WEXITSTATUS(status) == 0));
    child_wait(c1, 20000000000ull);
    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d2, addr, args));
    CU_ASSERT_FALSE(integ_log_contains(&d2, "cannot listen"));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d2), 0);
    if (c2 > 0) {
        kill(c2, SIGKILL);
        child_wait(c2, 5000000000ull);
    }
}

/* memsvc_connect to a daemon that accepts but never answers (SIGSTOPped) answers
 * MEMSVC_ERR_TIMEOUT within its timeout, over tcp and over the local socket, and the
 * process lives on. */
static void test_connect_unresponsive(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    static const char *const roles[] = {"restart-connect-tcp", "restart-connect-local"};
    integ_daemon_t           d;
    unsigned                 i;

    CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
    kill(d.pid, SIGSTOP);
    for (i = 0; i < 2; i++) {
        uint64_t t0  = msp_now_ns();
        pid_t    pid = integ_spawn(&d, roles[i]);
        int      st;

        CU_ASSERT_TRUE_FATAL(pid > 0);
        st = child_wait(pid, 30000000000ull);
        CU_ASSERT_TRUE(WIFEXITED(st));
        CU_ASSERT_EQUAL(WIFEXITED(st) ? WEXITSTATUS(st) : -1, 0);
        if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0)) {
            fprintf(stderr, "\n  %s: wait status 0x%x after %.1f s\n", roles[i], st,
                    (double)(msp_now_ns() - t0) / 1e9);
        }
    }
    kill(d.pid, SIGCONT);
    {
        /* The two connections made while it was stopped are still queued in its listener:
         * let it take them (it answers a control session after them) before it is told to
         * stop. A connection request that UCX 1.13 is still dispatching on its async thread
         * while the listener is destroyed can crash inside UCX (docs/daemon.md, "Shutdown"). */
        memsvc_stats_t *st = calloc(1, sizeof(*st));

        CU_ASSERT_TRUE_FATAL(st != NULL);
        TEST_ASSERT_OK(integ_stats(&d, st));
        usleep(200000);
        free(st);
    }
    i = (unsigned)integ_daemon_stop(&d);
    CU_ASSERT_EQUAL(i, 0);
    if (i != 0) {
        fprintf(stderr, "\n  the daemon did not stop cleanly after SIGCONT; see %s\n", d.log);
    }
}

/* ---- durable tensors across restarts -------------------------------------------------------- */

#define DUR_N 8

static uint64_t dur_size(unsigned i)
{
    return (4096ull << (i % 5)) + 123 * i; /* 4 KiB .. 64 KiB, not page multiples */
}

/* Durable tensors "d<i>" of job 5 rank 0, contents from test_fill(seed_base + i). */
static void dur_write_all(memsvc_conn_h conn, unsigned n, uint64_t seed_base)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_OPTIM};
    memsvc_handle_t       h;
    unsigned              i;
    char                  key[32];

    for (i = 0; i < n; i++) {
        uint8_t *buf = malloc(dur_size(i));

        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        snprintf(key, sizeof(key), "d%u", i);
        test_fill(buf, dur_size(i), seed_base + i);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, dur_size(i), &ap, &h));
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, buf, dur_size(i)));
        free(buf);
    }
}

/* Is durable tensor d<i> there (re-attached) with the contents of seed? MEMSVC_OK, or the
 * status of the lookup, or MEMSVC_ERR_PROTOCOL for other bytes. */
static memsvc_status_t dur_check(memsvc_conn_h conn, unsigned i, uint64_t seed)
{
    memsvc_tensor_info_t info;
    memsvc_status_t      st;
    uint8_t             *want = malloc(dur_size(i)), *got = malloc(dur_size(i));
    char                 key[32];

    snprintf(key, sizeof(key), "d%u", i);
    st = memsvc_lookup(conn, key, &info);
    if (st == MEMSVC_OK) {
        st = (info.size == dur_size(i)) ? memsvc_read(conn, info.handle, 0, got, dur_size(i))
                                        : MEMSVC_ERR_PROTOCOL;
    }
    if (st == MEMSVC_OK) {
        test_fill(want, dur_size(i), seed);
        st = (memcmp(want, got, dur_size(i)) == 0) ? MEMSVC_OK : MEMSVC_ERR_PROTOCOL;
    }
    free(want);
    free(got);
    return st;
}

static void state_path(const integ_daemon_t *d, const char *ext, char *buf, size_t len)
{
    snprintf(buf, len, "%s/memsvc-%s.%s", getenv("MEMSVC_RUN_DIR"), strrchr(d->addr, ':') + 1,
             ext);
}

/* kill -9 of the daemon under load; restarted on the same port, every durable tensor comes back
 * byte-exact (the last version written), re-attached by key; non-durable tensors are gone. */
static void test_durable_survive_kill9(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    integ_daemon_t           d, d2;
    memsvc_conn_h            conn;
    memsvc_handle_t          hn;
    memsvc_tensor_info_t     info;
    memsvc_stats_t           st;
    uint8_t                  buf[8192];
    char                     addr[64];
    pid_t                    load;
    unsigned                 i;
    int                      status;

    CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
    snprintf(addr, sizeof(addr), "%s", d.addr);
    TEST_ASSERT_OK(integ_connect(&d, 5, 0, &conn));
    dur_write_all(conn, DUR_N, 10);
    /* a second version of d0 and d3 */
    for (i = 0; i < DUR_N; i += 3) {
        uint8_t *v2 = malloc(dur_size(i));

        test_fill(v2, dur_size(i), 100 + i);
        TEST_ASSERT_OK(memsvc_lookup(conn, (i == 0) ? "d0" : (i == 3) ? "d3" : "d6", &info));
        TEST_ASSERT_OK(memsvc_write(conn, info.handle, 0, v2, dur_size(i)));
        free(v2);
    }
    test_fill(buf, sizeof(buf), 7);
    TEST_ASSERT_OK(memsvc_alloc(conn, "scratch", sizeof(buf), NULL, &hn));
    TEST_ASSERT_OK(memsvc_write(conn, hn, 0, buf, sizeof(buf)));
    TEST_ASSERT_OK(integ_stats(&d, &st));
    CU_ASSERT_EQUAL(st.durable_tensors, DUR_N);
    load = integ_spawn(&d, "restart-hammer-local");
    CU_ASSERT_TRUE(load > 0);
    usleep(100000);
    {
        /* d4 is 64 KiB and more: written through the mapping (local, backed); the daemon is
         * killed the moment memsvc_write returns, which it does only once the write is kept */
        uint8_t *v = malloc(dur_size(4));

        CU_ASSERT_TRUE(dur_size(4) >= (64u << 10));
        test_fill(v, dur_size(4), 204);
        TEST_ASSERT_OK(memsvc_lookup(conn, "d4", &info));
        TEST_ASSERT_OK(memsvc_write(conn, info.handle, 0, v, dur_size(4)));
        free(v);
    }
    status = integ_daemon_signal(&d, SIGKILL);
    CU_ASSERT_TRUE(WIFSIGNALED(status));
    CU_ASSERT_TRUE(WIFEXITED(child_wait(load, 20000000000ull)));
    memsvc_close(conn);

    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d2, addr, args));
    TEST_ASSERT_OK(integ_connect(&d2, 5, 0, &conn));
    for (i = 0; i < DUR_N; i++) {
        CU_ASSERT_EQUAL(dur_check(conn, i, (i == 4) ? 204 : (i % 3 == 0) ? 100 + i : 10 + i),
                        MEMSVC_OK);
    }
    CU_ASSERT_EQUAL(memsvc_lookup(conn, "scratch", &info), MEMSVC_ERR_NOT_FOUND);
    TEST_ASSERT_OK(integ_stats(&d2, &st));
    CU_ASSERT_EQUAL(st.durable_recovered, DUR_N);
    CU_ASSERT_EQUAL(st.durable_corrupt, 0);
    CU_ASSERT_EQUAL(st.orphans, 0); /* all re-attached by the lookups */
    /* A freed durable tensor stays freed across the next restart. */
    TEST_ASSERT_OK(memsvc_lookup(conn, "d1", &info));
    TEST_ASSERT_OK(memsvc_free(conn, info.handle));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d2), 0);
    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d2, addr, args));
    TEST_ASSERT_OK(integ_connect(&d2, 5, 0, &conn));
    CU_ASSERT_EQUAL(dur_check(conn, 1, 11), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(dur_check(conn, 2, 12), MEMSVC_OK);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d2), 0);
}

static void file_flip(const char *path, uint64_t off)
{
    int     fd = open(path, O_RDWR);
    uint8_t b  = 0;

    CU_ASSERT_TRUE_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    CU_ASSERT_EQUAL(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

/* A flipped byte in a journal record, bytes in the arena that no longer match their checksum,
 * and a record cut short: each detected and reported, that tensor not served, the others are. */
static void test_durable_corruption_detected(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_stats_t           st;
    char                     addr[64], jpath[512], apath[512];
    uint64_t                 off2 = 0;
    struct stat              sb;
    int                      fd;

    CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
    snprintf(addr, sizeof(addr), "%s", d.addr);
    state_path(&d, "journal", jpath, sizeof(jpath));
    state_path(&d, "durable", apath, sizeof(apath));
    TEST_ASSERT_OK(integ_connect(&d, 5, 0, &conn));
    dur_write_all(conn, 4, 20); /* journal records 0..3: PUT d0..d3 */
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);

    file_flip(jpath, 1 * 512 + 300); /* d1's record: inside its key field */
    fd = open(jpath, O_RDONLY);
    CU_ASSERT_EQUAL(pread(fd, &off2, sizeof(off2), 2 * 512 + 40), (ssize_t)sizeof(off2));
    close(fd);
    file_flip(apath, off2 + 17); /* d2's bytes */

    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d, addr, args));
    TEST_ASSERT_OK(integ_connect(&d, 5, 0, &conn));
    CU_ASSERT_EQUAL(dur_check(conn, 0, 20), MEMSVC_OK);
    CU_ASSERT_EQUAL(dur_check(conn, 1, 21), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(dur_check(conn, 2, 22), MEMSVC_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(dur_check(conn, 3, 23), MEMSVC_OK);
    TEST_ASSERT_OK(integ_stats(&d, &st));
    CU_ASSERT_EQUAL(st.durable_recovered, 2);
    CU_ASSERT_EQUAL(st.durable_corrupt, 2);
    CU_ASSERT_TRUE(integ_log_contains(&d, "record 1 (byte 512) is corrupt (checksum mismatch)"));
    CU_ASSERT_TRUE(integ_log_contains(&d, "durable tensor 'd2' (job 5)"));
    /* d4 written, then the daemon dies and its record is cut short */
    {
        memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS,
                                    .flags      = MEMSVC_ALLOC_DURABLE};
        memsvc_handle_t       h;
        uint8_t               b[1000];

        test_fill(b, sizeof(b), 4);
        TEST_ASSERT_OK(memsvc_alloc(conn, "d4", sizeof(b), &ap, &h));
        TEST_ASSERT_OK(memsvc_write(conn, h, 0, b, sizeof(b)));
    }
    memsvc_close(conn);
    CU_ASSERT_TRUE(WIFSIGNALED(integ_daemon_signal(&d, SIGKILL)));
    CU_ASSERT_EQUAL_FATAL(stat(jpath, &sb), 0);
    CU_ASSERT_EQUAL(truncate(jpath, sb.st_size - 200), 0);

    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d, addr, args));
    TEST_ASSERT_OK(integ_connect(&d, 5, 0, &conn));
    CU_ASSERT_EQUAL(dur_check(conn, 0, 20), MEMSVC_OK);
    CU_ASSERT_EQUAL(dur_check(conn, 3, 23), MEMSVC_OK);
    {
        memsvc_tensor_info_t info;

        CU_ASSERT_EQUAL(memsvc_lookup(conn, "d4", &info), MEMSVC_ERR_NOT_FOUND);
    }
    TEST_ASSERT_OK(integ_stats(&d, &st));
    CU_ASSERT_EQUAL(st.durable_recovered, 2);
    CU_ASSERT_EQUAL(st.durable_corrupt, 1);
    CU_ASSERT_TRUE(integ_log_contains(&d, "torn record"));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* ---- spilled tensors ---------------------------------------------------------------------------- */

/* Tensor s<i> of the spill test: fill(40 + i), then [1000, 6000) rewritten with fill(90 + i). */
static void spill_expect(uint8_t *buf, size_t size, unsigned i, bool rewritten)
{
    test_fill(buf, size, 40 + i);
    if (rewritten) {
        test_fill(buf + 1000, 5000, 90 + i);
    }
}

/* A node so small that tensors go to disk: their reads and writes are served from there. The
 * even ones are durable: after a kill -9 they come back (waiting for room on the device, then
 * moved out again) with the bytes written last, the odd ones are gone. */
static void test_spilled_served(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", "hbm=2MiB",
                                       "host=2MiB", "disk=64MiB", NULL};
    enum { N = 12, SZ = 512 << 10 };
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS,
                                .flags      = MEMSVC_ALLOC_DURABLE};
    integ_daemon_t        d;
    memsvc_conn_h         conn;
    memsvc_handle_t       h[N];
    memsvc_tensor_info_t  info;
    memsvc_stats_t        st;
    uint8_t              *want = malloc(SZ), *got = malloc(SZ);
    unsigned              i, spilled = 0;
    char                  addr[64], key[16];

    CU_ASSERT_TRUE_FATAL(integ_daemon_start(&d, args));
    snprintf(addr, sizeof(addr), "%s", d.addr);
    TEST_ASSERT_OK(integ_connect(&d, 2, 0, &conn));
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "s%u", i);
        spill_expect(want, SZ, i, false);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, SZ, (i % 2 == 0) ? &ap : NULL, &h[i]));
        TEST_ASSERT_OK(memsvc_write(conn, h[i], 0, want, SZ));
    }
    TEST_ASSERT_OK(integ_stats(&d, &st));
    spilled = (unsigned)st.dev[0].tensors_by_state[MEMSVC_STATE_ON_DISK];
    CU_ASSERT_TRUE(spilled > 0);
    for (i = 0; i < N; i++) {
        spill_expect(want, SZ, i, false);
        CU_ASSERT_EQUAL(memsvc_read(conn, h[i], 0, got, SZ), MEMSVC_OK);
        CU_ASSERT_EQUAL(memcmp(want, got, SZ), 0);
        /* a part of it rewritten where it is, then read back */
        spill_expect(want, SZ, i, true);
        CU_ASSERT_EQUAL(memsvc_write(conn, h[i], 1000, want + 1000, 5000), MEMSVC_OK);
        CU_ASSERT_EQUAL(memsvc_read(conn, h[i], 0, got, SZ), MEMSVC_OK);
        CU_ASSERT_EQUAL(memcmp(want, got, SZ), 0);
    }
    TEST_ASSERT_OK(integ_stats(&d, &st));
    CU_ASSERT_TRUE(st.dev[0].tensors_by_state[MEMSVC_STATE_ON_DISK] > 0); /* served in place */
    fprintf(stderr, "\n  %u of %u tensors were on disk; all read and written there\n", spilled, N);
    memsvc_close(conn);
    CU_ASSERT_TRUE(WIFSIGNALED(integ_daemon_signal(&d, SIGKILL)));

    CU_ASSERT_TRUE_FATAL(integ_daemon_start_at(&d, addr, args));
    TEST_ASSERT_OK(integ_connect(&d, 2, 0, &conn));
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "s%u", i);
        if (i % 2 != 0) {
            CU_ASSERT_EQUAL(memsvc_lookup(conn, key, &info), MEMSVC_ERR_NOT_FOUND);
            continue;
        }
        CU_ASSERT_EQUAL_FATAL(memsvc_lookup(conn, key, &info), MEMSVC_OK);
        spill_expect(want, SZ, i, true);
        CU_ASSERT_EQUAL(memsvc_read(conn, info.handle, 0, got, SZ), MEMSVC_OK);
        CU_ASSERT_EQUAL(memcmp(want, got, SZ), 0);
    }
    TEST_ASSERT_OK(integ_stats(&d, &st));
    CU_ASSERT_EQUAL(st.durable_recovered, N / 2);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(want);
    free(got);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_restart", NULL, NULL);

    CU_add_test(s, "durable tensors survive kill -9 of the daemon", test_durable_survive_kill9);
    CU_add_test(s, "corrupt journal records and bytes are detected",
                test_durable_corruption_detected);
    CU_add_test(s, "spilled tensors served; durable ones restored into a full node",
                test_spilled_served);

    CU_add_test(s, "clients are told of a shutdown", test_clients_told_of_shutdown);
    CU_add_test(s, "restart on the same port at once", test_restart_same_port);
    CU_add_test(s, "connect to an unresponsive daemon times out", test_connect_unresponsive);
    CU_add_test(s, "SIGTERM under load exits 0 (rounds, bounded)", test_sigterm_under_load);
}

TEST_REGISTER(service_restart, add_suite)
