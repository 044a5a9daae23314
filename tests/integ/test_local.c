/* test_local.c - the co-located path: shm workers per client, mapped tensors, deaths on both sides */
#include "client/memsvc.h"
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Kills in the kill -9 loop. About 0.6 s each on 2 busy cores, so `make test` runs 20;
 * MEMSVC_TEST_KILLS=100 (make test KILLS=100) is the full run. */
#define KILLS_DEFAULT 20
/* Mappings the daemon may gain without leaking: allocator arenas and heap segments grow once
 * (a leak per killed client would show as at least one per kill). */
#define MAPS_SLACK 4
#define TRAFFIC_BIG (64ull << 20)

/* ---- children ------------------------------------------------------------------------------- */

static void ready(int fd)
{
    char c = 'y';

    if (write(fd, &c, 1) != 1) {
        _exit(3);
    }
}

/* job 4 rank 2: durable "r" (4 KiB, seed 5) written, then pinned for reading only
 * (memsvc_acquire_map_ro) until killed. */
static void child_reader(integ_daemon_t *d, int fd)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_PARAM};
    uint8_t               buf[4096];
    memsvc_handle_t       h;
    memsvc_conn_h         conn;
    const void           *p;

    test_fill(buf, sizeof(buf), 5);
    if ((integ_connect_flags(d, 4, 2, 0, &conn) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "r", sizeof(buf), &ap, &h) != MEMSVC_OK) ||
        (memsvc_write(conn, h, 0, buf, sizeof(buf)) != MEMSVC_OK) ||
        (memsvc_acquire_map_ro(conn, h, &p) != MEMSVC_OK) || (p == NULL) ||
        (memcmp(p, buf, sizeof(buf)) != 0)) {
        _exit(1);
    }
    ready(fd);
    for (;;) {
        pause();
    }
}

/* job 4 rank 1: durable "w" (1 MiB, seed 1 committed), then half of it rewritten (seed 2)
 * through the mapping; "local-writer-dies" keeps the pin, "local-writer-done" releases it. */
static void child_writer(integ_daemon_t *d, bool release, int fd)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_PARAM};
    uint64_t              size = 1u << 20;
    uint8_t              *buf  = malloc(size);
    memsvc_handle_t       h;
    memsvc_conn_h         conn;
    void                 *p;

    if ((buf == NULL) || (integ_connect_flags(d, 4, 1, 0, &conn) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "w", size, &ap, &h) != MEMSVC_OK)) {
        _exit(1);
    }
    test_fill(buf, size, 1);
    if ((memsvc_write(conn, h, 0, buf, size) != MEMSVC_OK) ||
        (memsvc_acquire_map(conn, h, &p) != MEMSVC_OK) || (p == NULL)) {
        _exit(1);
    }
    test_fill(buf, size, 2);
    memcpy(p, buf, size / 2);
    /* the release is one-way: committed once the daemon has handled it (memsvc_flush) */
    if (release && ((memsvc_release(conn, h) != MEMSVC_OK) || (memsvc_flush(conn) != MEMSVC_OK))) {
        _exit(1);
    }
    ready(fd);
    for (;;) {
        pause();
    }
}

/* job 5: pings, 8 KiB and 64 MiB writes and reads, acquires held, until killed. */
static void child_traffic(integ_daemon_t *d, int fd)
{
    uint8_t        *big = malloc(TRAFFIC_BIG), small[8192];
    memsvc_handle_t hs, hb, hh;
    memsvc_conn_h   conn;
    unsigned        i;
    void           *p;

    if ((big == NULL) || (integ_connect_flags(d, 5, (uint32_t)getpid(), 0, &conn) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "small", sizeof(small), NULL, &hs) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "big", TRAFFIC_BIG, NULL, &hb) != MEMSVC_OK) ||
        (memsvc_alloc(conn, "held", 4096, NULL, &hh) != MEMSVC_OK) ||
        (memsvc_acquire_map(conn, hh, &p) != MEMSVC_OK)) {
        _exit(1);
    }
    memset(big, 0x5a, TRAFFIC_BIG);
    memset(small, 0xa5, sizeof(small));
    ready(fd);
    for (i = 0;; i++) {
        memsvc_ping(conn, NULL);
        memsvc_write(conn, hs, 0, small, sizeof(small));
        memsvc_read(conn, hs, 0, small, sizeof(small));
        if ((i % 4) == 0) {
            memsvc_write(conn, hb, 0, big, TRAFFIC_BIG);
        } else if ((i % 4) == 2) {
            memsvc_read(conn, hb, 0, big, TRAFFIC_BIG);
        }
        memsvc_acquire(conn, hs);
        memsvc_release(conn, hs);
    }
}

void integ_local_child(integ_daemon_t *d, const char *role, int ready_fd)
{
    if (strcmp(role, "local-writer-dies") == 0) {
        child_writer(d, false, ready_fd);
    } else if (strcmp(role, "local-writer-done") == 0) {
        child_writer(d, true, ready_fd);
    } else if (strcmp(role, "local-reader-dies") == 0) {
        child_reader(d, ready_fd);
    } else if (strcmp(role, "local-traffic") == 0) {
        child_traffic(d, ready_fd);
    }
    _exit(2);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static unsigned count_fds(pid_t pid)
{
    char           path[64];
    DIR           *dir;
    struct dirent *e;
    unsigned       n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (dir == NULL) {
        return 0;
    }
    while ((e = readdir(dir)) != NULL) {
        n += (e->d_name[0] != '.') ? 1 : 0;
    }
    closedir(dir);
    return n;
}

static unsigned count_maps(pid_t pid)
{
    char     path[64], line[512];
    FILE    *f;
    unsigned n = 0;

    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        n++;
    }
    fclose(f);
    return n;
}

/* The daemon's fd and mapping counts once they stop changing (a session that just ended is
 * torn down asynchronously). Bounded. */
static void settled_counts(pid_t pid, unsigned *fds_p, unsigned *maps_p)
{
    uint64_t deadline = msp_now_ns() + 5000000000ull;
    unsigned fds = count_fds(pid), maps = count_maps(pid), f, m;

    while (msp_now_ns() < deadline) {
        usleep(100000);
        f = count_fds(pid);
        m = count_maps(pid);
        if ((f == fds) && (m == maps)) {
            break;
        }
        fds  = f;
        maps = m;
    }
    *fds_p  = fds;
    *maps_p = maps;
}

/* ---- tests -------------------------------------------------------------------------------------- */

/* A local client gets shared memory and says so; a tcp client on the same daemon at once. */
static void test_local_and_tcp(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    uint8_t                  a[8192], b[8192];
    integ_daemon_t           d;
    memsvc_conn_h            loc, tcp;
    memsvc_handle_t          hl, ht;
    void                    *p;

    START(&d, args);
    TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, 0, &loc));
    TEST_ASSERT_OK(integ_connect_flags(&d, 2, 0, MEMSVC_CONN_TCP, &tcp));
    CU_ASSERT(strncmp(memsvc_conn_transport(loc), "shm: ", 5) == 0);
    CU_ASSERT(strstr(memsvc_conn_transport(loc), "sysv") != NULL);
    CU_ASSERT(strstr(memsvc_conn_transport(loc), "mapped") != NULL);
    CU_ASSERT(strncmp(memsvc_conn_transport(tcp), "tcp: ", 5) == 0);
    CU_ASSERT(strstr(memsvc_conn_transport(tcp), "tcp/") != NULL);

    TEST_ASSERT_OK(memsvc_alloc(loc, "l", sizeof(a), NULL, &hl));
    TEST_ASSERT_OK(memsvc_alloc(tcp, "t", sizeof(a), NULL, &ht));
    test_fill(a, sizeof(a), 7);
    TEST_ASSERT_OK(memsvc_write(loc, hl, 0, a, sizeof(a)));
    TEST_ASSERT_OK(memsvc_write(tcp, ht, 0, a, sizeof(a)));
    TEST_ASSERT_OK(memsvc_read(tcp, ht, 0, b, sizeof(b)));
    CU_ASSERT(memcmp(a, b, sizeof(a)) == 0);
    memset(b, 0, sizeof(b));
    TEST_ASSERT_OK(memsvc_read(loc, hl, 0, b, sizeof(b)));
    CU_ASSERT(memcmp(a, b, sizeof(a)) == 0);

    /* mapped locally, not over tcp: the pin holds either way */
    TEST_ASSERT_OK(memsvc_acquire_map(loc, hl, &p));
    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT(memcmp(p, a, sizeof(a)) == 0);
    TEST_ASSERT_OK(memsvc_release(loc, hl));
    TEST_ASSERT_OK(memsvc_acquire_map(tcp, ht, &p));
    CU_ASSERT(p == NULL);
    TEST_ASSERT_OK(memsvc_release(tcp, ht));
    TEST_ASSERT_OK(memsvc_release(tcp, ht)); /* one-way: its error is deferred */
    CU_ASSERT_EQUAL(memsvc_flush(tcp), MEMSVC_ERR_DEFERRED);
    {
        memsvc_deferred_error_t e;

        CU_ASSERT_EQUAL_FATAL(memsvc_errors(tcp, &e, 1), 1);
        CU_ASSERT_EQUAL(e.status, MEMSVC_ERR_NOT_PINNED);
        CU_ASSERT_EQUAL(e.handle, ht);
    }

    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(strstr(st->transport, "shm: ") != NULL);
    CU_ASSERT(strstr(st->transport, "tcp: ") != NULL);
    memsvc_close(loc);
    memsvc_close(tcp);
    CU_ASSERT(integ_log_contains(&d, "uid 0") || integ_log_contains(&d, " uid "));
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

/* A client that connects to the socket and says nothing holds up no other client. */
static void test_silent_client(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    struct sockaddr_un       sa     = {.sun_family = AF_UNIX};
    const char              *port;
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    uint64_t                 t0;
    int                      fd;

    START(&d, args);
    port = strrchr(d.addr, ':') + 1;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/memsvcd-%s.sock", getenv("MEMSVC_RUN_DIR"),
             port);
    fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    t0 = msp_now_ns();
    TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, 0, &conn));
    CU_ASSERT(msp_now_ns() - t0 < 4000000000ull); /* the silent one is dropped after 5 s */
    CU_ASSERT(strncmp(memsvc_conn_transport(conn), "shm: ", 5) == 0);
    memsvc_close(conn);
    close(fd);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* Without a socket the client falls back to tcp and says so; phantom memory maps nothing. */
static void test_fallback_and_phantom(void)
{
    static const char *const nounix[]  = {"--node", "tiny", "--no-unix", NULL};
    static const char *const phantom[] = {"--node", "tiny", NULL};
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h;
    void                    *p = &p;

    START(&d, nounix);
    TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, 0, &conn));
    CU_ASSERT(strncmp(memsvc_conn_transport(conn), "tcp: ", 5) == 0);
    CU_ASSERT(strstr(memsvc_conn_transport(conn), "fallback") != NULL);
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);

    START(&d, phantom);
    TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, 0, &conn));
    CU_ASSERT(strncmp(memsvc_conn_transport(conn), "shm: ", 5) == 0);
    CU_ASSERT(strstr(memsvc_conn_transport(conn), "not mapped") != NULL);
    TEST_ASSERT_OK(memsvc_alloc(conn, "x", 4096, NULL, &h));
    TEST_ASSERT_OK(memsvc_acquire_map(conn, h, &p));
    CU_ASSERT(p == NULL);
    TEST_ASSERT_OK(memsvc_release(conn, h));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
}

/* A pinned tensor's pointer stays valid and exact while the daemon swaps others around it. */
static void test_mapped_pointer_survives_swaps(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    uint64_t                 size = 1u << 20, osize = 16u << 20;
    uint8_t                 *want = malloc(size), *got = malloc(size), *other = malloc(osize);
    memsvc_handle_t          h, o[8];
    memsvc_tensor_info_t     info;
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    char                     key[16];
    unsigned                 i, round;
    void                    *p;

    CU_ASSERT_FATAL((want != NULL) && (got != NULL) && (other != NULL));
    START(&d, args);
    TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, 0, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "pinned", size, NULL, &h));
    TEST_ASSERT_OK(memsvc_acquire_map(conn, h, &p));
    CU_ASSERT_FATAL(p != NULL);
    test_fill(want, size, 11);
    memcpy(p, want, size);
    /* 8 x 16 MiB on a 64 MiB device: the others are swapped out and in, twice over */
    for (i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "o%u", i);
        TEST_ASSERT_OK(memsvc_alloc(conn, key, osize, NULL, &o[i]));
    }
    for (round = 0; round < 2; round++) {
        for (i = 0; i < 8; i++) {
            test_fill(other, osize, 100 + i);
            TEST_ASSERT_OK(memsvc_write(conn, o[i], 0, other, osize));
            CU_ASSERT(memcmp(p, want, size) == 0);
        }
    }
    for (i = 0; i < 8; i++) {
        TEST_ASSERT_OK(memsvc_read(conn, o[i], 0, other, osize));
        CU_ASSERT(memcmp(other, (test_fill(got, 4096, 100 + i), got), 4096) == 0);
    }
    TEST_ASSERT_OK(integ_stats(&d, st));
    CU_ASSERT(st->dev[0].swap_outs > 0);
    CU_ASSERT(memcmp(p, want, size) == 0);
    TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, size));
    CU_ASSERT(memcmp(got, want, size) == 0);

    /* written through the pointer, committed at release, moved out, read back */
    test_fill(want, size, 12);
    memcpy(p, want, size);
    TEST_ASSERT_OK(memsvc_release(conn, h));
    for (i = 0; i < 8; i++) {
        TEST_ASSERT_OK(memsvc_acquire(conn, o[i]));
        TEST_ASSERT_OK(memsvc_release(conn, o[i]));
    }
    TEST_ASSERT_OK(memsvc_lookup(conn, "pinned", &info));
    CU_ASSERT(info.state != MEMSVC_STATE_ON_DEVICE);
    TEST_ASSERT_OK(memsvc_read(conn, h, 0, got, size));
    CU_ASSERT(memcmp(got, want, size) == 0);
    CU_ASSERT_EQUAL(memsvc_acquire(conn, h), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_release(conn, h));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
    free(want);
    free(got);
    free(other);
}

/* A writer that dies holding a mapped pin leaves the tensor uncommitted; one that released
 * first leaves it committed; so does a reader that dies holding a read-only pin. */
static void test_writer_dies_mid_write(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    uint64_t                 size   = 1u << 20;
    uint8_t                 *want = malloc(size), *got = malloc(size);
    memsvc_tensor_info_t     info;
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    pid_t                    pid;

    CU_ASSERT_FATAL((want != NULL) && (got != NULL));
    START(&d, args);

    pid = integ_spawn(&d, "local-writer-dies");
    CU_ASSERT_FATAL(pid > 0);
    integ_kill_wait(pid);
    TEST_ASSERT_OK(integ_connect_flags(&d, 4, 1, 0, &conn));
    {
        uint64_t deadline = msp_now_ns() + 10000000000ull;
        memsvc_status_t s;

        /* the kept tensor appears once the daemon saw the death */
        while (((s = memsvc_lookup(conn, "w", &info)) == MEMSVC_OK) && (info.pins > 0) &&
               (msp_now_ns() < deadline)) {
            usleep(10000);
        }
        TEST_ASSERT_OK(s);
    }
    CU_ASSERT_EQUAL(memsvc_read(conn, info.handle, 0, got, size), MEMSVC_ERR_ILLEGAL_STATE);
    CU_ASSERT_EQUAL(memsvc_read(conn, info.handle, 0, got, 4096), MEMSVC_ERR_ILLEGAL_STATE);
    CU_ASSERT_EQUAL(memsvc_acquire(conn, info.handle), MEMSVC_RECOMPUTE);
    test_fill(want, size, 3);
    TEST_ASSERT_OK(memsvc_write(conn, info.handle, 0, want, size)); /* rewritten: committed */
    TEST_ASSERT_OK(memsvc_release(conn, info.handle));
    TEST_ASSERT_OK(memsvc_read(conn, info.handle, 0, got, size));
    CU_ASSERT(memcmp(got, want, size) == 0);
    CU_ASSERT_EQUAL(memsvc_acquire(conn, info.handle), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_release(conn, info.handle));
    TEST_ASSERT_OK(memsvc_free(conn, info.handle));
    memsvc_close(conn);
    CU_ASSERT(integ_log_contains(&d, "1 left uncommitted"));

    pid = integ_spawn(&d, "local-writer-done");
    CU_ASSERT_FATAL(pid > 0);
    integ_kill_wait(pid);
    TEST_ASSERT_OK(integ_connect_flags(&d, 4, 1, 0, &conn));
    TEST_ASSERT_OK(memsvc_lookup(conn, "w", &info));
    /* committed at its release: half seed 2, half seed 1 */
    TEST_ASSERT_OK(memsvc_read(conn, info.handle, 0, got, size));
    test_fill(want, size, 2);
    CU_ASSERT(memcmp(got, want, size / 2) == 0);
    test_fill(want, size, 1);
    CU_ASSERT(memcmp(got + size / 2, want + size / 2, size / 2) == 0);
    memsvc_close(conn);

    /* a reader (memsvc_acquire_map_ro) that dies holding its pin leaves the tensor valid */
    pid = integ_spawn(&d, "local-reader-dies");
    CU_ASSERT_FATAL(pid > 0);
    integ_kill_wait(pid);
    TEST_ASSERT_OK(integ_connect_flags(&d, 4, 2, 0, &conn));
    {
        uint64_t        deadline = msp_now_ns() + 10000000000ull;
        memsvc_status_t s;

        while (((s = memsvc_lookup(conn, "r", &info)) == MEMSVC_OK) && (info.pins > 0) &&
               (msp_now_ns() < deadline)) {
            usleep(10000);
        }
        TEST_ASSERT_OK(s);
    }
    TEST_ASSERT_OK(memsvc_read(conn, info.handle, 0, got, 4096));
    test_fill(want, 4096, 5);
    CU_ASSERT(memcmp(got, want, 4096) == 0);
    CU_ASSERT_EQUAL(memsvc_acquire(conn, info.handle), MEMSVC_OK);
    TEST_ASSERT_OK(memsvc_release(conn, info.handle));
    memsvc_close(conn);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(want);
    free(got);
}

/* The daemon dies: a local client learns it from the socket, promptly, not by a timeout. */
static void test_daemon_death_seen_locally(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", NULL};
    integ_daemon_t           d;
    memsvc_conn_h            conn;
    memsvc_handle_t          h;
    uint64_t                 t0;
    int                      status;
    void                    *p;

    START(&d, args);
    TEST_ASSERT_OK(integ_connect_flags(&d, 1, 0, 0, &conn));
    TEST_ASSERT_OK(memsvc_alloc(conn, "t", 4096, NULL, &h));
    TEST_ASSERT_OK(memsvc_acquire_map(conn, h, &p));
    CU_ASSERT_FATAL(p != NULL);
    kill(d.pid, SIGKILL);
    waitpid(d.pid, &status, 0);
    d.pid = 0;
    t0    = msp_now_ns();
    CU_ASSERT_EQUAL(memsvc_ping(conn, NULL), MEMSVC_ERR_TRANSPORT); /* timeout is 10 s */
    CU_ASSERT(msp_now_ns() - t0 < 9000000000ull);
    memset(p, 1, 4096); /* the mapping outlives the daemon until close */
    CU_ASSERT_EQUAL(memsvc_release(conn, h), MEMSVC_ERR_TRANSPORT);
    memsvc_close(conn);
}

/* Local clients killed at random moments mid-traffic: another client keeps going, and the
 * daemon's fds and mappings come back to where they were (and, under the sanitizers, it exits
 * without leaks: nothing a dead client left in flight is lost). */
static void kill_loop(const char *const *args, unsigned kills)
{
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    unsigned                 i;
    unsigned                 fds0, maps0, fds1, maps1, progress = 0;
    uint8_t                  a[8192], b[8192];
    integ_daemon_t           d;
    memsvc_conn_h            obs;
    memsvc_handle_t          h;
    pid_t                    pid;

    START(&d, args);
    TEST_ASSERT_OK(integ_connect_flags(&d, 6, 0, 0, &obs));
    TEST_ASSERT_OK(memsvc_alloc(obs, "obs", sizeof(a), NULL, &h));
    /* warm-up: one client killed, so that what is created once exists in the baseline */
    pid = integ_spawn(&d, "local-traffic");
    CU_ASSERT_FATAL(pid > 0);
    usleep(20000);
    integ_kill_wait(pid);
    CU_ASSERT_FATAL(integ_wait_sessions(&d, 2, st));
    settled_counts(d.pid, &fds0, &maps0);

    srand(1234);
    for (i = 0; i < kills; i++) {
        pid = integ_spawn(&d, "local-traffic");
        CU_ASSERT_FATAL(pid > 0);
        usleep((useconds_t)(rand() % 30000));
        integ_kill_wait(pid);
        /* the other client makes progress throughout */
        test_fill(a, sizeof(a), i);
        if ((memsvc_ping(obs, NULL) == MEMSVC_OK) &&
            (memsvc_write(obs, h, 0, a, sizeof(a)) == MEMSVC_OK) &&
            (memsvc_acquire(obs, h) == MEMSVC_OK) && (memsvc_release(obs, h) == MEMSVC_OK) &&
            (memsvc_read(obs, h, 0, b, sizeof(b)) == MEMSVC_OK) && (memcmp(a, b, sizeof(a)) == 0)) {
            progress++;
        }
    }
    CU_ASSERT_EQUAL(progress, kills);
    CU_ASSERT_FATAL(integ_wait_sessions(&d, 2, st));
    CU_ASSERT_EQUAL(st->live_tensors, 1); /* the observer's; every killed client's are freed */
    CU_ASSERT_EQUAL(st->dev[0].pinned_tensors, 0);
    settled_counts(d.pid, &fds1, &maps1);
    if ((fds1 != fds0) || (maps1 != maps0)) {
        fprintf(stderr, "\n  daemon fds %u -> %u, maps %u -> %u after %u kills\n", fds0, fds1,
                maps0, maps1, kills);
    }
    CU_ASSERT_EQUAL(fds1, fds0);
#if !defined(__SANITIZE_ADDRESS__)
    CU_ASSERT(maps1 <= maps0 + MAPS_SLACK);
#endif /* ASan's quarantine keeps freed large blocks mapped; its leak check runs at exit */
    memsvc_close(obs);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

typedef struct busy_arg {
    const integ_daemon_t *d;
    unsigned              idx;
    unsigned              rounds, errors;
} busy_arg_t;

/* One trainer: its own tensors, written, read back and checked, acquired with mapping. */
static void *busy_client(void *arg)
{
    busy_arg_t     *a = arg;
    uint64_t        size = 256u << 10, end = msp_now_ns() + 1500000000ull;
    uint8_t        *want = malloc(size), *got = malloc(size);
    memsvc_handle_t h[4];
    memsvc_conn_h   conn;
    char            key[16];
    unsigned        i;
    void           *p;

    if ((want == NULL) || (got == NULL) || (integ_connect_flags(a->d, 20 + a->idx, 0, 0, &conn) != MEMSVC_OK)) {
        a->errors++;
        goto out;
    }
    for (i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "b%u", i);
        if (memsvc_alloc(conn, key, size, NULL, &h[i]) != MEMSVC_OK) {
            a->errors++;
        }
    }
    while ((msp_now_ns() < end) && (a->rounds < 100000)) {
        i = a->rounds % 4;
        test_fill(want, size, a->idx * 1000 + a->rounds);
        if ((memsvc_write(conn, h[i], 0, want, size) != MEMSVC_OK) ||
            (memsvc_read(conn, h[i], 0, got, size) != MEMSVC_OK) ||
            (memcmp(want, got, size) != 0) ||
            (memsvc_acquire_map(conn, h[i], &p) != MEMSVC_OK) || (p == NULL) ||
            (memcmp(p, want, 4096) != 0) || (memsvc_release(conn, h[i]) != MEMSVC_OK)) {
            a->errors++;
        }
        a->rounds++;
    }
    memsvc_close(conn);
out:
    free(want);
    free(got);
    return NULL;
}

/* Several trainers on several loops at once: every byte where it belongs. */
static void test_clients_on_loops(void)
{
    static const char *const args[] = {"--node", "tiny", "--memory", "backed", "--loops", "2",
                                       NULL};
    memsvc_stats_t          *st     = calloc(1, sizeof(*st));
    busy_arg_t               a[4];
    pthread_t                th[4];
    integ_daemon_t           d;
    unsigned                 i;

    START(&d, args);
    for (i = 0; i < 4; i++) {
        a[i] = (busy_arg_t){.d = &d, .idx = i};
        pthread_create(&th[i], NULL, busy_client, &a[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(a[i].errors, 0);
        CU_ASSERT(a[i].rounds > 0);
    }
    CU_ASSERT(integ_log_contains(&d, "2 for local sessions"));
    CU_ASSERT(integ_wait_sessions(&d, 1, st));
    CU_ASSERT_EQUAL(st->live_tensors, 0);
    CU_ASSERT_EQUAL(integ_daemon_stop(&d), 0);
    free(st);
}

static unsigned kills_wanted(void)
{
    const char *env = getenv("MEMSVC_TEST_KILLS");

    return (env != NULL) ? (unsigned)atoi(env) : KILLS_DEFAULT;
}

/* Bulk bytes through the mapping. */
static void test_kill_loop(void)
{
    static const char *const args[] = {"--node",   "tiny",   "hbm=256MiB",     "host=512MiB",
                                       "--memory", "backed", "--keep-durable", "0",
                                       NULL};

    kill_loop(args, kills_wanted());
}

/* Bulk bytes as rendezvous messages (no mapping): receives and sends in flight at the kill. */
static void test_kill_loop_unmapped(void)
{
    static const char *const args[] = {"--node",         "tiny", "hbm=256MiB", "host=512MiB",
                                       "--memory",       "backed", "--no-map",
                                       "--keep-durable", "0",      NULL};

    kill_loop(args, (kills_wanted() + 1) / 2);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("service_local", NULL, NULL);

    CU_add_test(s, "a local client gets shm, a tcp client at once", test_local_and_tcp);
    CU_add_test(s, "no socket: tcp fallback named; phantom maps nothing", test_fallback_and_phantom);
    CU_add_test(s, "a silent client on the socket holds up nobody", test_silent_client);
    CU_add_test(s, "a mapped pointer stays exact while others swap", test_mapped_pointer_survives_swaps);
    CU_add_test(s, "a writer dying mid-write leaves the tensor uncommitted",
                test_writer_dies_mid_write);
    CU_add_test(s, "a local client sees the daemon die", test_daemon_death_seen_locally);
    CU_add_test(s, "four trainers on two loops at once", test_clients_on_loops);
    CU_add_test(s, "kill -9 loop: progress, no leaked fds or mappings", test_kill_loop);
    CU_add_test(s, "kill -9 loop without mapping (rendezvous in flight)", test_kill_loop_unmapped);
}

TEST_REGISTER(service_local, add_suite)
