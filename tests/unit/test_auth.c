/* test_auth.c - identities: loopback resolution, the owner of a tcp socket, secret files, proofs */
#include "memsvc/msd.h"
#include "tests/test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_loopback_resolution(void)
{
    struct sockaddr_in6 m  = {.sin6_family = AF_INET6};
    struct sockaddr_in  v4 = {.sin_family = AF_INET};
    char                why[256];

    CU_ASSERT(msd_auth_addr_loopback("127.0.0.1:13337", why, sizeof(why)));
    CU_ASSERT(msd_auth_addr_loopback("127.3.2.1:1", why, sizeof(why)));
    CU_ASSERT(msd_auth_addr_loopback("localhost:1", why, sizeof(why)));
    CU_ASSERT(msd_auth_addr_loopback("[::1]:1", why, sizeof(why)));
    /* a name that looks like loopback is resolved, not read */
    why[0] = '\0';
    CU_ASSERT(!msd_auth_addr_loopback("127.evil.example:1", why, sizeof(why)));
    CU_ASSERT(strstr(why, "127.evil.example") != NULL);
    CU_ASSERT(!msd_auth_addr_loopback("0.0.0.0:1", why, sizeof(why)));
    CU_ASSERT(strstr(why, "not a loopback address") != NULL);
    CU_ASSERT(!msd_auth_addr_loopback("10.1.2.3:1", why, sizeof(why)));
    CU_ASSERT(!msd_auth_addr_loopback("[::]:1", why, sizeof(why)));
    CU_ASSERT(!msd_auth_addr_loopback("[::1:1", why, sizeof(why)));
    CU_ASSERT(!msd_auth_addr_loopback(":1", why, sizeof(why)));
    CU_ASSERT(!msd_auth_addr_loopback("", why, sizeof(why)));

    inet_pton(AF_INET, "127.255.0.1", &v4.sin_addr);
    CU_ASSERT(msd_auth_sockaddr_loopback((struct sockaddr *)&v4));
    inet_pton(AF_INET, "128.0.0.1", &v4.sin_addr);
    CU_ASSERT(!msd_auth_sockaddr_loopback((struct sockaddr *)&v4));
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &m.sin6_addr);
    CU_ASSERT(msd_auth_sockaddr_loopback((struct sockaddr *)&m));
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &m.sin6_addr);
    CU_ASSERT(!msd_auth_sockaddr_loopback((struct sockaddr *)&m));
}

/* A connection of this process on loopback: the kernel names us as its owner, asked by
 * four-tuple (sock_diag) or, for a wildcard listener, found in /proc/net/tcp. */
static void test_tcp_peer_uid(void)
{
    struct sockaddr_in srv = {.sin_family = AF_INET}, cli, other;
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t          len = sizeof(srv);
    uid_t              uid = (uid_t)-1;
    int                lfd, cfd, afd;

    srv.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd                 = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&srv, sizeof(srv)) == 0);
    CU_ASSERT_FATAL(listen(lfd, 4) == 0);
    CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&srv, &len) == 0);
    cfd = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(connect(cfd, (struct sockaddr *)&srv, sizeof(srv)) == 0);
    afd = accept(lfd, NULL, NULL);
    CU_ASSERT(afd >= 0);
    len = sizeof(cli);
    CU_ASSERT_FATAL(getsockname(cfd, (struct sockaddr *)&cli, &len) == 0);

    CU_ASSERT(msd_auth_tcp_peer_uid((struct sockaddr *)&cli, (struct sockaddr *)&srv, &uid));
    CU_ASSERT_EQUAL(uid, geteuid());
    /* a wildcard listener: found by its port in /proc/net/tcp */
    any.sin_port = srv.sin_port;
    uid          = (uid_t)-1;
    CU_ASSERT(msd_auth_tcp_peer_uid((struct sockaddr *)&cli, (struct sockaddr *)&any, &uid));
    CU_ASSERT_EQUAL(uid, geteuid());
    /* the same client toward another port, or another client port: nobody (both ways) */
    other          = srv;
    other.sin_port = htons((uint16_t)(ntohs(srv.sin_port) + 1));
    CU_ASSERT(!msd_auth_tcp_peer_uid((struct sockaddr *)&cli, (struct sockaddr *)&other, &uid));
    any.sin_port = other.sin_port;
    CU_ASSERT(!msd_auth_tcp_peer_uid((struct sockaddr *)&cli, (struct sockaddr *)&any, &uid));
    cli.sin_port = htons((uint16_t)(ntohs(cli.sin_port) ^ 0x4000));
    CU_ASSERT(!msd_auth_tcp_peer_uid((struct sockaddr *)&cli, (struct sockaddr *)&srv, &uid));
    any.sin_port = srv.sin_port;
    CU_ASSERT(!msd_auth_tcp_peer_uid((struct sockaddr *)&cli, (struct sockaddr *)&any, &uid));
    close(afd);
    close(cfd);
    close(lfd);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
    CU_ASSERT_FATAL(chmod(path, mode) == 0);
}

static void test_secret_files(void)
{
    char            dir[] = "/tmp/memsvc-secret-XXXXXX", path[128], err[256];
    uint8_t         k1[MSP_KEY_BYTES], k2[MSP_KEY_BYTES];
    memsvc_status_t st;

    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/s", dir);

    write_file(path, "0123456789abcdef-secret\n", 0600);
    TEST_ASSERT_OK(msp_secret_load(path, k1, err, sizeof(err)));
    write_file(path, "0123456789abcdef-secret", 0400); /* the trailing newline is not part */
    TEST_ASSERT_OK(msp_secret_load(path, k2, err, sizeof(err)));
    CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof(k1)), 0);
    write_file(path, "0123456789abcdef-secreT", 0600);
    TEST_ASSERT_OK(msp_secret_load(path, k2, err, sizeof(err)));
    CU_ASSERT_NOT_EQUAL(memcmp(k1, k2, sizeof(k1)), 0);

    /* group- or world-accessible: refused, with the mode and the remedy */
    CU_ASSERT_FATAL(chmod(path, 0640) == 0);
    st = msp_secret_load(path, k2, err, sizeof(err));
    CU_ASSERT_EQUAL(st, MEMSVC_ERR_AUTH);
    CU_ASSERT(strstr(err, "0640") != NULL);
    CU_ASSERT(strstr(err, "chmod 600") != NULL);
    CU_ASSERT_FATAL(chmod(path, 0604) == 0);
    CU_ASSERT_EQUAL(msp_secret_load(path, k2, err, sizeof(err)), MEMSVC_ERR_AUTH);
    CU_ASSERT_FATAL(chmod(path, 0620) == 0);
    CU_ASSERT_EQUAL(msp_secret_load(path, k2, err, sizeof(err)), MEMSVC_ERR_AUTH);
    /* owned by another user */
    CU_ASSERT_FATAL(chmod(path, 0600) == 0);
    if (geteuid() == 0) {
        CU_ASSERT_FATAL(chown(path, 65534, 65534) == 0);
        CU_ASSERT_EQUAL(msp_secret_load(path, k2, err, sizeof(err)), MEMSVC_ERR_AUTH);
        CU_ASSERT(strstr(err, "owned by uid 65534") != NULL);
        CU_ASSERT_FATAL(chown(path, 0, 0) == 0);
    }
    /* too short, missing, not a regular file */
    write_file(path, "short\n", 0600);
    CU_ASSERT_EQUAL(msp_secret_load(path, k2, err, sizeof(err)), MEMSVC_ERR_AUTH);
    CU_ASSERT(strstr(err, "bytes") != NULL);
    unlink(path);
    CU_ASSERT_EQUAL(msp_secret_load(path, k2, err, sizeof(err)), MEMSVC_ERR_IO);
    CU_ASSERT_EQUAL(msp_secret_load(dir, k2, err, sizeof(err)), MEMSVC_ERR_AUTH);
    rmdir(dir);
}

/* A proof holds only for its key, role, nonces and binding. */
static void test_proofs(void)
{
    uint8_t key[MSP_KEY_BYTES], other[MSP_KEY_BYTES], cn[MSP_NONCE_BYTES], dn[MSP_NONCE_BYTES],
        proof[MSP_PROOF_BYTES];
    msp_auth_bind_t bind = {.job = 7, .rank = 1, .device = 0, .flags = 0, .session = 42}, b2;

    CU_ASSERT_FATAL(msp_auth_init());
    test_fill(key, sizeof(key), 1);
    test_fill(other, sizeof(other), 2);
    msp_auth_nonce(cn);
    msp_auth_nonce(dn);
    CU_ASSERT_NOT_EQUAL(memcmp(cn, dn, sizeof(cn)), 0);
    msp_auth_proof(key, MSP_ROLE_CLIENT, cn, dn, &bind, proof);
    CU_ASSERT(msp_auth_check(key, MSP_ROLE_CLIENT, cn, dn, &bind, proof));
    CU_ASSERT(!msp_auth_check(other, MSP_ROLE_CLIENT, cn, dn, &bind, proof));
    CU_ASSERT(!msp_auth_check(key, MSP_ROLE_DAEMON, cn, dn, &bind, proof)); /* no reflection */
    CU_ASSERT(!msp_auth_check(key, MSP_ROLE_CLIENT, dn, cn, &bind, proof));
    b2     = bind;
    b2.job = 8;
    CU_ASSERT(!msp_auth_check(key, MSP_ROLE_CLIENT, cn, dn, &b2, proof));
    b2         = bind;
    b2.session = 43;
    CU_ASSERT(!msp_auth_check(key, MSP_ROLE_CLIENT, cn, dn, &b2, proof));
    proof[0] ^= 1;
    CU_ASSERT(!msp_auth_check(key, MSP_ROLE_CLIENT, cn, dn, &bind, proof));
}

/* Root always administers; others only through --operator-group. */
static void test_operators(void)
{
    msd_auth_t a = {0};

    CU_ASSERT(msd_auth_is_operator(&a, 0, 0, 0));
    CU_ASSERT(!msd_auth_is_operator(&a, 65534, 0, 0)); /* the root group is not enough */
    a.has_operators = true;
    a.operator_gid  = 65534;
    CU_ASSERT(msd_auth_is_operator(&a, 65533, 65534, getpid())); /* primary group */
    /* nobody's passwd entry has group nogroup (65534) */
    CU_ASSERT(msd_auth_is_operator(&a, 65534, 0, 0));
    CU_ASSERT(!msd_auth_is_operator(&a, 65533, 0, 0)); /* no passwd entry, no groups */
    /* a pid whose status names another uid (reused) is not believed */
    CU_ASSERT(!msd_auth_is_operator(&a, 65533, 0, getpid()));
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("auth", NULL, NULL);

    CU_add_test(s, "the listen address is resolved, every address loopback",
                test_loopback_resolution);
    CU_add_test(s, "the owner of a loopback tcp socket (sock_diag, /proc/net/tcp)",
                test_tcp_peer_uid);
    CU_add_test(s, "secret files: owner-only, sized, trailing newline ignored", test_secret_files);
    CU_add_test(s, "proofs hold for one key, role, nonce pair and binding", test_proofs);
    CU_add_test(s, "operators: root, the operator group", test_operators);
}

TEST_REGISTER(auth, add_suite)
