/* memsvc_soak.c - soak test: mixed clients against a real memsvcd, with random kill -9 of clients
 * and of the daemon (restarted at once on the same port); every byte read is checked, and every
 * durable tensor must come back with the last version its client was told was written.
 *
 *   memsvc_soak --bin DIR [--secs N] [--clients N] [--seed S]     (make soak: SOAK_SECS=120)
 *
 * Prints a line every few seconds (ops, kills, mismatches, lost durable tensors, daemon RSS) and
 * a summary; exits 1 if any byte mismatched, any durable tensor was lost, or a restart failed.
 */
#include "client/memsvc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SOAK_MAX_CLIENTS 16
#define SOAK_DURABLE 4           /* durable tensors per client slot */
#define SOAK_REPORT_NS 5000000000ull

/* Counters shared by the clients (a file mapped by every process) and the parent. */
typedef struct soak_slot {
    _Atomic uint64_t ops, mismatches, lost, verified;
    /* durable tensor j of this slot: the version last acknowledged by the daemon, and the one
     * being written (0: none). Bytes of a version: fill(slot, j, version). */
    _Atomic uint64_t committed[SOAK_DURABLE], pending[SOAK_DURABLE];
} soak_slot_t;

typedef struct soak_shared {
    soak_slot_t slot[SOAK_MAX_CLIENTS];
} soak_shared_t;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fill(uint8_t *p, uint64_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1, i;

    for (i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static uint64_t dur_seed(unsigned slot, unsigned j, uint64_t version)
{
    return ((uint64_t)slot << 48) ^ ((uint64_t)j << 40) ^ version;
}

static uint64_t dur_size(unsigned j)
{
    return (16384ull << j) + 77 * j;
}

static bool daemon_gone(memsvc_status_t st)
{
    return (st == MEMSVC_ERR_SHUTDOWN) || (st == MEMSVC_ERR_TRANSPORT) ||
           (st == MEMSVC_ERR_TIMEOUT) || (st == MEMSVC_ERR_CANCELED);
}

/* ---- a client (a process of its own: exec'ed, never forked with UCX state) ---------------------- */

static memsvc_conn_h client_connect(const char *addr, unsigned slot)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                            MEMSVC_CONN_FIELD_RANK | MEMSVC_CONN_FIELD_FLAGS |
                                            MEMSVC_CONN_FIELD_TIMEOUT_MS,
                              .address    = addr,
                              .job        = 1,
                              .rank       = slot,
                              .flags      = (slot % 3 == 2) ? MEMSVC_CONN_TCP : 0,
                              .timeout_ms = 5000};
    memsvc_conn_h        conn;

    return (memsvc_connect(&p, &conn) == MEMSVC_OK) ? conn : NULL;
}

/* Re-attach the slot's durable tensors and check them against what was acknowledged. A tensor
 * acknowledged (committed > 0) but missing is lost; other bytes than committed or pending are
 * a mismatch. Returns false if the daemon went away meanwhile. */
static bool client_check_durable(memsvc_conn_h conn, soak_slot_t *sl, unsigned slot,
                                 memsvc_handle_t *h)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_PARAM};
    uint8_t              *got = malloc(dur_size(SOAK_DURABLE - 1));
    uint8_t              *want = malloc(dur_size(SOAK_DURABLE - 1));
    memsvc_tensor_info_t  info;
    memsvc_status_t       st;
    unsigned              j;
    char                  key[32];

    for (j = 0; j < SOAK_DURABLE; j++) {
        uint64_t c = atomic_load(&sl->committed[j]), pv = atomic_load(&sl->pending[j]);

        snprintf(key, sizeof(key), "dur.%u.%u", slot, j);
        st = memsvc_lookup(conn, key, &info);
        if (st == MEMSVC_ERR_NOT_FOUND) {
            if (c > 0) {
                fprintf(stderr, "soak: slot %u: durable '%s' (version %llu) lost\n", slot, key,
                        (unsigned long long)c);
                atomic_fetch_add(&sl->lost, 1);
                atomic_store(&sl->committed[j], 0); /* counted once */
            }
            st = memsvc_alloc(conn, key, dur_size(j), &ap, &h[j]);
            if (st != MEMSVC_OK) {
                goto out;
            }
            continue;
        }
        if (st != MEMSVC_OK) {
            goto out;
        }
        h[j] = info.handle;
        st   = memsvc_read(conn, h[j], 0, got, dur_size(j));
        if (st == MEMSVC_ERR_ILLEGAL_STATE) {
            continue; /* allocated, never written (nothing acknowledged) */
        }
        if (st != MEMSVC_OK) {
            goto out;
        }
        fill(want, dur_size(j), dur_seed(slot, j, c));
        if ((c > 0) && (memcmp(want, got, dur_size(j)) == 0)) {
            atomic_fetch_add(&sl->verified, 1);
            continue;
        }
        fill(want, dur_size(j), dur_seed(slot, j, pv));
        if ((pv > 0) && (memcmp(want, got, dur_size(j)) == 0)) {
            atomic_store(&sl->committed[j], pv); /* written, its answer lost with a kill */
            atomic_fetch_add(&sl->verified, 1);
            continue;
        }
        if (c > 0) {
            fprintf(stderr, "soak: slot %u: durable '%s': bytes of neither version %llu nor "
                    "%llu\n", slot, key, (unsigned long long)c, (unsigned long long)pv);
            atomic_fetch_add(&sl->mismatches, 1);
        }
    }
    st = MEMSVC_OK;
out:
    free(got);
    free(want);
    return st == MEMSVC_OK;
}

static int client_main(const char *addr, const char *shared_path, unsigned slot, bool verify_only)
{
    int              fd = open(shared_path, O_RDWR);
    soak_shared_t   *sh;
    soak_slot_t     *sl;
    memsvc_conn_h    conn;
    memsvc_handle_t  dh[SOAK_DURABLE], h;
    memsvc_status_t  st = MEMSVC_OK;
    uint8_t         *want = malloc(1 << 20), *got = malloc(1 << 20);
    uint64_t         i, seed = ((uint64_t)getpid() << 20);
    char             key[48];

    if ((fd < 0) || (want == NULL) || (got == NULL)) {
        return 2;
    }
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (sh == MAP_FAILED) {
        return 2;
    }
    sl   = &sh->slot[slot];
    conn = client_connect(addr, slot);
    if (conn == NULL) {
        return 3; /* the daemon is (re)starting: the parent tries again */
    }
    if (!client_check_durable(conn, sl, slot, dh)) {
        memsvc_close(conn);
        return 3;
    }
    if (verify_only) {
        memsvc_close(conn);
        return 0;
    }
    for (i = 0;; i++) {
        uint64_t size = 4096ull << (i % 9); /* 4 KiB .. 1 MiB */

        snprintf(key, sizeof(key), "tmp.%d.%llu", (int)getpid(), (unsigned long long)(i % 6));
        fill(want, size, seed + i);
        st = memsvc_alloc(conn, key, size, NULL, &h);
        if (st == MEMSVC_OK) {
            st = memsvc_write(conn, h, 0, want, size);
            if (st == MEMSVC_OK) {
                st = memsvc_read(conn, h, 0, got, size);
                if ((st == MEMSVC_OK) && (memcmp(want, got, size) != 0)) {
                    atomic_fetch_add(&sl->mismatches, 1);
                    fprintf(stderr, "soak: slot %u: '%s' read back other bytes\n", slot, key);
                }
            }
            if ((st == MEMSVC_OK) && ((st = memsvc_acquire(conn, h)) == MEMSVC_OK)) {
                st = memsvc_release(conn, h);
            }
            if (st == MEMSVC_OK) {
                st = memsvc_free(conn, h);
            }
        }
        if (st == MEMSVC_OK && (i % 8 == 7)) { /* a new version of a durable tensor */
            unsigned j = (unsigned)((i / 8) % SOAK_DURABLE);
            uint64_t v = atomic_load(&sl->committed[j]) + 1;

            fill(want, dur_size(j), dur_seed(slot, j, v));
            atomic_store(&sl->pending[j], v);
            st = memsvc_write(conn, dh[j], 0, want, dur_size(j));
            if (st == MEMSVC_OK) {
                atomic_store(&sl->committed[j], v);
            }
        }
        if (st != MEMSVC_OK) {
            break;
        }
        atomic_fetch_add(&sl->ops, 1);
    }
    memsvc_close(conn);
    return daemon_gone(st) ? 0 : 4;
}

/* ---- the parent -------------------------------------------------------------------------------- */

typedef struct soak {
    const char *bin, *self;
    char        dir[64], addr[64], shared_path[128], log[160];
    pid_t       daemon, client[SOAK_MAX_CLIENTS];
    unsigned    nclients;
    uint64_t    client_kills, daemon_kills, restart_failures, client_errors;
    soak_shared_t *sh;
} soak_t;

static int free_port(void)
{
    struct sockaddr_in sa  = {.sin_family = AF_INET};
    socklen_t          len = sizeof(sa);
    int                fd  = socket(AF_INET, SOCK_STREAM, 0), port = -1;

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

/* Start memsvcd and wait (bounded) until its log says it listens and a ping answers. */
static bool daemon_start(soak_t *sk)
{
    char     path[512];
    uint64_t deadline = now_ns() + 20000000000ull;
    int      fd;

    snprintf(path, sizeof(path), "%s/memsvcd", sk->bin);
    sk->daemon = fork();
    if (sk->daemon == 0) {
        fd = open(sk->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execl(path, "memsvcd", "--listen", sk->addr, "--node", "tiny", "--memory", "backed",
              "--state-dir", sk->dir, "--keep-durable", "3600", (char *)NULL);
        _exit(127);
    }
    while ((sk->daemon > 0) && (now_ns() < deadline)) {
        memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_JOB |
                                                MEMSVC_CONN_FIELD_FLAGS |
                                                MEMSVC_CONN_FIELD_TIMEOUT_MS,
                                  .address    = sk->addr,
                                  .job        = 0,
                                  .flags      = MEMSVC_CONN_CONTROL,
                                  .timeout_ms = 1000};
        memsvc_conn_h        conn;
        int                  status;

        if (waitpid(sk->daemon, &status, WNOHANG) == sk->daemon) {
            break;
        }
        if (memsvc_connect(&p, &conn) == MEMSVC_OK) {
            memsvc_close(conn);
            return true;
        }
        usleep(20000);
    }
    fprintf(stderr, "soak: memsvcd did not come up on %s (see %s)\n", sk->addr, sk->log);
    return false;
}

static int daemon_signal(soak_t *sk, int sig)
{
    int status = -1;

    kill(sk->daemon, sig);
    waitpid(sk->daemon, &status, 0);
    sk->daemon = 0;
    return status;
}

static uint64_t daemon_rss_kib(const soak_t *sk)
{
    char     path[64], line[256];
    uint64_t kib = 0;
    FILE    *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)sk->daemon);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtoull(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kib;
}

static pid_t client_spawn(soak_t *sk, unsigned slot, bool verify)
{
    char  slotstr[16];
    pid_t pid;

    snprintf(slotstr, sizeof(slotstr), "%u", slot);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        execl(sk->self, "memsvc_soak", "--client", slotstr, "--addr", sk->addr, "--shared",
              sk->shared_path, verify ? "--verify" : "--run", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Reap ended clients (respawned by the caller); count those that ended for no good reason. */
static void clients_reap(soak_t *sk)
{
    unsigned i;
    int      status;

    for (i = 0; i < sk->nclients; i++) {
        if ((sk->client[i] > 0) && (waitpid(sk->client[i], &status, WNOHANG) == sk->client[i])) {
            if (WIFSIGNALED(status) && (WTERMSIG(status) != SIGKILL)) {
                fprintf(stderr, "soak: client %u died of signal %d\n", i, WTERMSIG(status));
                sk->client_errors++;
            } else if (WIFEXITED(status) && (WEXITSTATUS(status) != 0) &&
                       (WEXITSTATUS(status) != 3)) {
                fprintf(stderr, "soak: client %u exited %d\n", i, WEXITSTATUS(status));
                sk->client_errors++;
            }
            sk->client[i] = 0;
        }
    }
}

static void clients_kill_all(soak_t *sk)
{
    unsigned i;
    int      status;

    for (i = 0; i < sk->nclients; i++) {
        if (sk->client[i] > 0) {
            kill(sk->client[i], SIGKILL);
            waitpid(sk->client[i], &status, 0);
            sk->client[i] = 0;
        }
    }
}

static void totals(const soak_t *sk, uint64_t *ops, uint64_t *mism, uint64_t *lost,
                   uint64_t *verified)
{
    unsigned i;

    *ops = *mism = *lost = *verified = 0;
    for (i = 0; i < sk->nclients; i++) {
        *ops += atomic_load(&sk->sh->slot[i].ops);
        *mism += atomic_load(&sk->sh->slot[i].mismatches);
        *lost += atomic_load(&sk->sh->slot[i].lost);
        *verified += atomic_load(&sk->sh->slot[i].verified);
    }
}

/* Kill the daemon (-9) and restart it at once on the same port. */
static bool daemon_kill_restart(soak_t *sk)
{
    daemon_signal(sk, SIGKILL);
    sk->daemon_kills++;
    if (!daemon_start(sk)) {
        sk->restart_failures++;
        return false;
    }
    return true;
}

/* Last round: clients stopped, the daemon killed and restarted, every slot verified. */
static void final_verify(soak_t *sk)
{
    unsigned i, tries;

    clients_kill_all(sk);
    if (!daemon_kill_restart(sk)) {
        return;
    }
    for (i = 0; i < sk->nclients; i++) {
        for (tries = 0; tries < 5; tries++) {
            pid_t pid = client_spawn(sk, i, true);
            int   status;

            waitpid(pid, &status, 0);
            if (WIFEXITED(status) && (WEXITSTATUS(status) == 0)) {
                break;
            }
            usleep(200000);
        }
    }
}

static int parent_main(soak_t *sk, unsigned secs, unsigned seed)
{
    uint64_t t0 = now_ns(), next_report = t0 + SOAK_REPORT_NS, end = t0 + secs * 1000000000ull;
    uint64_t ops, mism, lost, verified, rss_max = 0;
    int      fd, status, port = free_port();
    unsigned i;

    srand(seed);
    snprintf(sk->dir, sizeof(sk->dir), "/tmp/memsvc-soak-XXXXXX");
    if ((port < 0) || (mkdtemp(sk->dir) == NULL)) {
        fprintf(stderr, "soak: cannot set up: %s\n", strerror(errno));
        return 2;
    }
    setenv("MEMSVC_RUN_DIR", sk->dir, 1); /* the daemon's local socket goes there */
    snprintf(sk->addr, sizeof(sk->addr), "127.0.0.1:%d", port);
    snprintf(sk->shared_path, sizeof(sk->shared_path), "%s/counters", sk->dir);
    snprintf(sk->log, sizeof(sk->log), "%s/memsvcd.log", sk->dir);
    fd = open(sk->shared_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if ((fd < 0) || (ftruncate(fd, sizeof(*sk->sh)) != 0)) {
        return 2;
    }
    sk->sh = mmap(NULL, sizeof(*sk->sh), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if ((sk->sh == MAP_FAILED) || !daemon_start(sk)) {
        return 2;
    }
    printf("soak: %u s, %u clients, daemon %s (tiny node, backed, state in %s), seed %u\n", secs,
           sk->nclients, sk->addr, sk->dir, seed);
    printf("%6s %10s %12s %12s %10s %6s %9s %10s\n", "t(s)", "ops", "client-kills",
           "daemon-kills", "mismatches", "lost", "verified", "rss(MiB)");
    fflush(stdout);
    while (now_ns() < end) {
        clients_reap(sk);
        for (i = 0; i < sk->nclients; i++) {
            if (sk->client[i] == 0) {
                sk->client[i] = client_spawn(sk, i, false);
            }
        }
        usleep(100000);
        if ((rand() % 20) == 0) { /* a client every 2 s on average */
            i = (unsigned)rand() % sk->nclients;
            if (sk->client[i] > 0) {
                kill(sk->client[i], SIGKILL);
                sk->client_kills++;
            }
        }
        if ((rand() % 150) == 0) { /* the daemon every 15 s on average */
            if (!daemon_kill_restart(sk)) {
                break;
            }
        }
        if (now_ns() >= next_report) {
            uint64_t rss = daemon_rss_kib(sk);

            rss_max = (rss > rss_max) ? rss : rss_max;
            totals(sk, &ops, &mism, &lost, &verified);
            printf("%6.0f %10llu %12llu %12llu %10llu %6llu %9llu %10.1f\n",
                   (double)(now_ns() - t0) / 1e9, (unsigned long long)ops,
                   (unsigned long long)sk->client_kills, (unsigned long long)sk->daemon_kills,
                   (unsigned long long)mism, (unsigned long long)lost,
                   (unsigned long long)verified, (double)rss / 1024.0);
            fflush(stdout);
            next_report += SOAK_REPORT_NS;
        }
    }
    final_verify(sk);
    totals(sk, &ops, &mism, &lost, &verified);
    status = (sk->daemon > 0) ? daemon_signal(sk, SIGTERM) : -1;
    printf("soak: %.0f s: %llu ops, %llu client kills, %llu daemon kills (%llu restarts failed), "
           "%llu mismatches, %llu durable tensors lost, %llu durable checks passed, %llu clients "
           "ended badly; daemon RSS peak %.1f MiB; last daemon exit on SIGTERM: %s\n",
           (double)(now_ns() - t0) / 1e9, (unsigned long long)ops,
           (unsigned long long)sk->client_kills, (unsigned long long)sk->daemon_kills,
           (unsigned long long)sk->restart_failures, (unsigned long long)mism,
           (unsigned long long)lost, (unsigned long long)verified,
           (unsigned long long)sk->client_errors, (double)rss_max / 1024.0,
           (WIFEXITED(status) && (WEXITSTATUS(status) == 0)) ? "0" : "FAILED");
    if ((mism > 0) || (lost > 0) || (sk->restart_failures > 0) || (sk->client_errors > 0) ||
        !WIFEXITED(status) || (WEXITSTATUS(status) != 0)) {
        printf("soak: FAILED (daemon log: %s)\n", sk->log);
        return 1;
    }
    printf("soak: passed\n");
    {
        char cmd[128]; /* the state directory goes, the log with it */

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sk->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "soak: could not remove %s\n", sk->dir);
        }
    }
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: memsvc_soak --bin DIR [--secs N] [--clients N] [--seed S]\n"
                 "  --bin DIR      where memsvcd is (build/bin)\n"
                 "  --secs N       how long (default 120)\n"
                 "  --clients N    client processes (default 4, at most %d)\n"
                 "  --seed S       random seed of the kills (default: the time)\n",
            SOAK_MAX_CLIENTS);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bin", required_argument, NULL, 'b'},   {"secs", required_argument, NULL, 's'},
        {"clients", required_argument, NULL, 'c'}, {"seed", required_argument, NULL, 'r'},
        {"client", required_argument, NULL, 'C'}, {"addr", required_argument, NULL, 'a'},
        {"shared", required_argument, NULL, 'S'}, {"verify", no_argument, NULL, 'V'},
        {"run", no_argument, NULL, 'R'},          {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    soak_t      sk   = {.nclients = 4};
    unsigned    secs = 120, seed = (unsigned)time(NULL), slot = 0;
    const char *addr = NULL, *shared = NULL;
    bool        client = false, verify = false;
    int         c;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            sk.bin = optarg;
            break;
        case 's':
            secs = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            sk.nclients = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            seed = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'C':
            client = true;
            slot   = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'a':
            addr = optarg;
            break;
        case 'S':
            shared = optarg;
            break;
        case 'V':
            verify = true;
            break;
        case 'R':
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (client) {
        if ((addr == NULL) || (shared == NULL) || (slot >= SOAK_MAX_CLIENTS)) {
            return 2;
        }
        return client_main(addr, shared, slot, verify);
    }
    if ((sk.bin == NULL) || (secs == 0) || (sk.nclients == 0) ||
        (sk.nclients > SOAK_MAX_CLIENTS)) {
        usage(stderr);
        return 2;
    }
    sk.self = "/proc/self/exe";
    {
        static char self[512];
        ssize_t     n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n > 0) {
            self[n] = '\0';
            sk.self = self;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    return parent_main(&sk, secs, seed);
}
