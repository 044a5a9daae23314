/* test_util.h - registration of CUnit suites into the one test runner, and small helpers */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <CUnit/CUnit.h>

#include <stdint.h>

typedef void (*test_suite_fn_t)(void);

/* Called from constructors (see TEST_REGISTER); the runner adds the suites in name order. */
void test_register(const char *name, test_suite_fn_t add_suite);

/*
 * In each test file:  static void add_suite(void) { CU_pSuite s = CU_add_suite(...); ... }
 *                     TEST_REGISTER(sim_alloc, add_suite)
 */
#define TEST_REGISTER(name, fn) \
    static void __attribute__((constructor)) test_reg_##name(void) { test_register(#name, fn); }

/* Directory holding the built binaries (memsvcd, memtrace, ...), from $MEMSVC_BIN. */
const char *test_bin_dir(void);

/* Deterministic pseudo-random fill, for content checks. */
void test_fill(void *buf, uint64_t len, uint64_t seed);

#define TEST_ASSERT_OK(expr) CU_ASSERT_EQUAL_FATAL((expr), MEMSVC_OK)

#endif /* TEST_UTIL_H */
