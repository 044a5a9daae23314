/* test_msd_cluster.c - the cluster file (parse, canonical hash) and the cluster secret */
#include "memsvc/msd_peer.h"
#include "tests/test_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static const char *put(const char *name, const char *text, mode_t mode)
{
    static char path[128];
    int         fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
    return path;
}

/* Load text as a cluster file; its hash into hash_hex (65 bytes) on success. */
static memsvc_status_t load(const char *text, char *hash_hex, char *err, size_t errlen)
{
    msd_cluster_t   c;
    memsvc_status_t status = msd_cluster_load(put("cluster", text, 0644), &c, err, errlen);

    if (status == MEMSVC_OK) {
        memcpy(hash_hex, c.hash_hex, sizeof(c.hash_hex));
        msd_cluster_free(&c);
    }
    return status;
}

static void test_file_and_hash(void)
{
    char          h1[65], h2[65], err[256];
    msd_cluster_t c;

    TEST_ASSERT_OK(
        msd_cluster_load(put("c", "# nodes\nn0 127.0.0.1:7001\n\n  n1\t127.0.0.1:7002 # x\n", 0644),
                         &c, err, sizeof(err)));
    CU_ASSERT_EQUAL(c.n, 2);
    CU_ASSERT_STRING_EQUAL(c.nodes[1].name, "n1");
    CU_ASSERT_STRING_EQUAL(c.nodes[1].addr, "127.0.0.1:7002");
    CU_ASSERT_EQUAL(c.nodes[1].line, 4);
    CU_ASSERT_EQUAL(msd_cluster_find(&c, "n1"), 1);
    CU_ASSERT_EQUAL(msd_cluster_find(&c, "n2"), -1);
    CU_ASSERT_EQUAL(strlen(c.hash_hex), 64);
    memcpy(h1, c.hash_hex, sizeof(h1));
    msd_cluster_free(&c);

    /* comments, blank lines and spacing do not change the hash ... */
    TEST_ASSERT_OK(load("n0   127.0.0.1:7001\nn1 127.0.0.1:7002\n", h2, err, sizeof(err)));
    CU_ASSERT_STRING_EQUAL(h1, h2);
    /* ... the order of the nodes, a changed address or an added line do */
    TEST_ASSERT_OK(load("n1 127.0.0.1:7002\nn0 127.0.0.1:7001\n", h2, err, sizeof(err)));
    CU_ASSERT_STRING_NOT_EQUAL(h1, h2);
    TEST_ASSERT_OK(load("n0 127.0.0.1:7001\nn1 127.0.0.1:7003\n", h2, err, sizeof(err)));
    CU_ASSERT_STRING_NOT_EQUAL(h1, h2);
    TEST_ASSERT_OK(
        load("n0 127.0.0.1:7001\nn1 127.0.0.1:7002\nn2 127.0.0.1:7003\n", h2, err, sizeof(err)));
    CU_ASSERT_STRING_NOT_EQUAL(h1, h2);

    /* errors name the line */
    CU_ASSERT_EQUAL(load("n0 127.0.0.1:7001\nn0 127.0.0.1:7002\n", h2, err, sizeof(err)),
                    MEMSVC_ERR_FORMAT);
    CU_ASSERT(strstr(err, "cluster:2: node name 'n0' already on line 1") != NULL);
    CU_ASSERT_EQUAL(load("n0 [::1]:7001\nn1 [::1]:7001\n", h2, err, sizeof(err)),
                    MEMSVC_ERR_FORMAT);
    CU_ASSERT(strstr(err, "cluster:2: address '[::1]:7001' of 'n1' is that of 'n0'") != NULL);
    CU_ASSERT_EQUAL(load("n0 127.0.0.1:7001\n\nn1 127.0.0.1:notaport\n", h2, err, sizeof(err)),
                    MEMSVC_ERR_FORMAT);
    CU_ASSERT(strstr(err, "cluster:3:") != NULL);
    CU_ASSERT_EQUAL(load("", h2, err, sizeof(err)), MEMSVC_ERR_FORMAT);
    CU_ASSERT(strstr(err, "no nodes") != NULL);
    CU_ASSERT_EQUAL(load("a-name-longer-than-thirty-one-chars 127.0.0.1:1\n", h2, err, sizeof(err)),
                    MEMSVC_ERR_FORMAT);
    CU_ASSERT_EQUAL(msd_cluster_load("/nonexistent/cluster", &c, err, sizeof(err)),
                    MEMSVC_ERR_NOT_FOUND);
}

static void test_secret(void)
{
    uint8_t k1[MSD_PEER_KEY_LEN], k2[MSD_PEER_KEY_LEN];
    char    err[256];

    TEST_ASSERT_OK(
        msd_cluster_secret_load(put("s", "sixteen bytes ok\n", 0600), k1, err, sizeof(err)));
    /* trailing white space is not part of the secret */
    TEST_ASSERT_OK(
        msd_cluster_secret_load(put("s", "sixteen bytes ok  \n\n", 0400), k2, err, sizeof(err)));
    CU_ASSERT_EQUAL(memcmp(k1, k2, sizeof(k1)), 0);
    TEST_ASSERT_OK(
        msd_cluster_secret_load(put("s", "sixteen bytes oK\n", 0600), k2, err, sizeof(err)));
    CU_ASSERT_NOT_EQUAL(memcmp(k1, k2, sizeof(k1)), 0);
    CU_ASSERT_EQUAL(
        msd_cluster_secret_load(put("s", "sixteen bytes ok\n", 0640), k2, err, sizeof(err)),
        MEMSVC_ERR_ACCESS);
    CU_ASSERT(strstr(err, "mode 0640 lets others read it") != NULL);
    CU_ASSERT_EQUAL(msd_cluster_secret_load(put("s", "too short\n", 0600), k2, err, sizeof(err)),
                    MEMSVC_ERR_PARSE);
    CU_ASSERT(strstr(err, "9 bytes; want 16 to 4096") != NULL);
    CU_ASSERT_EQUAL(msd_cluster_secret_load(dir, k2, err, sizeof(err)), MEMSVC_ERR_ACCESS);
    CU_ASSERT(strstr(err, "not a regular file") != NULL);
    CU_ASSERT_EQUAL(msd_cluster_secret_load("/nonexistent/secret", k2, err, sizeof(err)),
                    MEMSVC_ERR_NOT_FOUND);
}

static int suite_init(void)
{
    snprintf(dir, sizeof(dir), "/tmp/memsvc-msdc-XXXXXX");
    return (mkdtemp(dir) == NULL) ? -1 : 0;
}

static int suite_clean(void)
{
    char cmd[96];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return (system(cmd) == 0) ? 0 : -1;
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("msd_cluster", suite_init, suite_clean);

    CU_add_test(s, "cluster file: parsed, hashed canonically, errors name the line",
                test_file_and_hash);
    CU_add_test(s, "cluster secret: owner-only, sized, white space trimmed", test_secret);
}

TEST_REGISTER(msd_cluster, add_suite)
