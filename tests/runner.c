/* runner.c - the one CUnit runner: every suite registered by a tests/ file, in name order */
#include "tests/test_util.h"

#include <CUnit/Basic.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEST_MAX_SUITES 128

static struct {
    const char     *name;
    test_suite_fn_t add;
} suites[TEST_MAX_SUITES];
static int num_suites;

void test_register(const char *name, test_suite_fn_t add_suite)
{
    if (num_suites == TEST_MAX_SUITES) {
        fprintf(stderr, "runner: too many suites (raise TEST_MAX_SUITES)\n");
        abort();
    }
    suites[num_suites].name = name;
    suites[num_suites].add  = add_suite;
    num_suites++;
}

const char *test_bin_dir(void)
{
    const char *d = getenv("MEMSVC_BIN");

    return (d != NULL) ? d : "build/bin";
}

void test_fill(void *buf, uint64_t len, uint64_t seed)
{
    uint8_t *p = buf;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    uint64_t i;

    for (i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static int suite_cmp(const void *a, const void *b)
{
    const char *const *na = a;
    const char *const *nb = b;

    return strcmp(*na, *nb);
}

/*
 * With $MEMSVC_TEST_LOG set (make test), what the tests' child processes and the libraries
 * write to stderr goes to that file instead of between CUnit's lines. Returns the path, or
 * NULL (stderr unchanged).
 */
static const char *stderr_to_log(void)
{
    const char *path = getenv("MEMSVC_TEST_LOG");
    int         fd;

    if ((path == NULL) || (*path == '\0')) {
        return NULL;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "runner: cannot write %s (%s): stderr left as it is\n", path,
                strerror(errno));
        return NULL;
    }
    fflush(stderr);
    dup2(fd, STDERR_FILENO); /* not close-on-exec: children inherit it */
    close(fd);
    return path;
}

/* After the run: name the log; on a failure print its last lines too. */
static void stderr_report(const char *path, bool failed)
{
    char   line[1024];
    long   total = 0, skip, n = 0;
    FILE  *f;

    if (!failed) {
        printf("(stderr of the tests and their child processes: %s)\n", path);
        return;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        total++;
    }
    skip = (total > 200) ? total - 200 : 0;
    printf("\n---- a test failed: the last %ld lines of %s ----\n", total - skip, path);
    rewind(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (n++ >= skip) {
            fputs(line, stdout);
        }
    }
    printf("---- end of %s ----\n", path);
    fclose(f);
}

/* Usage: memsvc_tests [SUITE-NAME-PREFIX ...]: run all suites, or those whose name matches. */
int main(int argc, char **argv)
{
    const char *log;
    unsigned    failures;
    int         i, j;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "runner: %s\n", CU_get_error_msg());
        return 2;
    }
    qsort(suites, num_suites, sizeof(suites[0]), suite_cmp);
    for (i = 0; i < num_suites; i++) {
        int selected = (argc < 2);

        for (j = 1; j < argc; j++) {
            if (strncmp(suites[i].name, argv[j], strlen(argv[j])) == 0) {
                selected = 1;
            }
        }
        if (selected) {
            suites[i].add();
        }
    }
    log = stderr_to_log();
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    if (log != NULL) {
        stderr_report(log, failures > 0);
    }
    return (failures == 0) ? 0 : 1;
}
