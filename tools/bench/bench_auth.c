/* bench_auth.c - who owns a tcp peer: the kernel's four-tuple lookup against the /proc scan
 *
 *   bench_auth [SOCKETS ...]      (default 0 500 2000)
 *
 * For each count, opens that many loopback connection pairs in this process, then times
 * msd_auth_tcp_peer_uid for one more connection: asked by four-tuple (sock_diag, the daemon's
 * way for a listener on a specific address) and, as the reference in the same run, found by
 * scanning /proc/net/tcp (the fallback, taken for a wildcard listener). Prints both per lookup
 * and their ratio. Exits non-zero if a lookup fails to find the connection.
 */
#include "client/msp_ucx.h"
#include "memsvc/msd.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define LOOKUPS 200

/* A connection to the listener; its client end's address in *cli. -1 on failure. */
static int bench_pair(int lfd, const struct sockaddr_in *srv, struct sockaddr_in *cli)
{
    socklen_t len = sizeof(*cli);
    int       c   = socket(AF_INET, SOCK_STREAM, 0);

    if ((c < 0) || (connect(c, (const struct sockaddr *)srv, sizeof(*srv)) != 0) ||
        (accept(lfd, NULL, NULL) < 0) || (getsockname(c, (struct sockaddr *)cli, &len) != 0)) {
        return -1;
    }
    return c;
}

/* ns per lookup of cli toward server, or 0 if one failed. */
static double bench_lookups(const struct sockaddr_in *cli, const struct sockaddr_in *server)
{
    uint64_t t0 = msp_now_ns();
    uid_t    uid;
    unsigned i;

    for (i = 0; i < LOOKUPS; i++) {
        if (!msd_auth_tcp_peer_uid((const struct sockaddr *)cli, (const struct sockaddr *)server,
                                   &uid) ||
            (uid != geteuid())) {
            return 0;
        }
    }
    return (double)(msp_now_ns() - t0) / LOOKUPS;
}

static int bench_one(int extra)
{
    struct sockaddr_in srv = {.sin_family = AF_INET}, any, cli;
    socklen_t          len = sizeof(srv);
    double             diag, scan;
    int                lfd, i, lines = 0;
    char               buf[512];
    FILE              *f;

    srv.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd                 = socket(AF_INET, SOCK_STREAM, 0);
    if ((lfd < 0) || (bind(lfd, (struct sockaddr *)&srv, sizeof(srv)) != 0) ||
        (listen(lfd, 4096) != 0) || (getsockname(lfd, (struct sockaddr *)&srv, &len) != 0)) {
        fprintf(stderr, "bench_auth: cannot listen on loopback\n");
        return 1;
    }
    for (i = 0; i <= extra; i++) {
        if (bench_pair(lfd, &srv, &cli) < 0) {
            fprintf(stderr, "bench_auth: cannot open connection %d (raise ulimit -n)\n", i);
            return 1;
        }
    }
    any                 = srv;
    any.sin_addr.s_addr = htonl(INADDR_ANY); /* a wildcard listener: the /proc scan */
    diag                = bench_lookups(&cli, &srv);
    scan                = bench_lookups(&cli, &any);
    f                   = fopen("/proc/net/tcp", "r");
    while ((f != NULL) && (fgets(buf, sizeof(buf), f) != NULL)) {
        lines++;
    }
    if (f != NULL) {
        fclose(f);
    }
    if ((diag == 0) || (scan == 0)) {
        fprintf(stderr, "bench_auth: a lookup did not find its connection\n");
        return 1;
    }
    printf("+%5d connections, %6d lines in /proc/net/tcp: sock_diag %8.1f us, "
           "/proc scan %9.1f us per lookup (%.0fx)\n",
           extra + 1, lines - 1, diag / 1e3, scan / 1e3, scan / diag);
    return 0;
}

int main(int argc, char **argv)
{
    static const int defaults[] = {0, 500, 2000};
    struct rlimit    rl;
    int              i, n = (argc > 1) ? argc - 1 : 3;

    if ((argc > 1) && (strcmp(argv[1], "--help") == 0)) {
        printf("usage: bench_auth [SOCKETS ...]   (default 0 500 2000)\n");
        return 0;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    printf("# who owns a loopback tcp peer: sock_diag four-tuple lookup vs /proc/net/tcp scan "
           "(%d lookups each)\n",
           LOOKUPS);
    for (i = 0; i < n; i++) {
        int extra = (argc > 1) ? atoi(argv[i + 1]) : defaults[i];

        if (bench_one(extra) != 0) {
            return 1;
        }
    }
    return 0;
}
