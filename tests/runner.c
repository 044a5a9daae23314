/* runner.c - the one CUnit runner: every suite registered by a tests/ file, in name order */
#include "tests/test_util.h"

#include <CUnit/Basic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Usage: memsvc_tests [SUITE-NAME-PREFIX ...]: run all suites, or those whose name matches. */
int main(int argc, char **argv)
{
    unsigned failures;
    int      i, j;

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
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return (failures == 0) ? 0 : 1;
}
