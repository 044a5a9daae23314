/* test_status.c - status names and messages, enumeration names */
#include "client/memsvc_status.h"
#include "client/memsvc_types.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_every_status_has_name_and_message(void)
{
    int s;

    for (s = MEMSVC_ERR_LAST + 1; s <= MEMSVC_RECOMPUTE; s++) {
        CU_ASSERT_STRING_NOT_EQUAL(memsvc_strerror((memsvc_status_t)s), "unknown status");
        CU_ASSERT_EQUAL(strncmp(memsvc_status_name((memsvc_status_t)s), "MEMSVC_", 7), 0);
        CU_ASSERT_STRING_NOT_EQUAL(memsvc_status_name((memsvc_status_t)s), "MEMSVC_ERR_UNKNOWN");
    }
    CU_ASSERT_STRING_EQUAL(memsvc_strerror((memsvc_status_t)-1000), "unknown status");
    CU_ASSERT_STRING_EQUAL(memsvc_status_name(MEMSVC_ERR_FRAGMENTED), "MEMSVC_ERR_FRAGMENTED");
}

static void test_enum_names_round_trip(void)
{
    memsvc_kind_t k;
    int           i;

    for (i = 0; i < MEMSVC_KIND_COUNT; i++) {
        CU_ASSERT_EQUAL(memsvc_kind_parse(memsvc_kind_name((memsvc_kind_t)i), &k), MEMSVC_OK);
        CU_ASSERT_EQUAL(k, i);
    }
    CU_ASSERT_EQUAL(memsvc_kind_parse("weights", &k), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_STRING_EQUAL(memsvc_state_name(MEMSVC_STATE_MOVING_OUT), "moving_out");
    CU_ASSERT_STRING_EQUAL(memsvc_state_name((memsvc_state_t)99), "unknown");
}

/* The one JSON string writer: escapes, control bytes, invalid UTF-8 from hostile keys. */
static void test_json_string(void)
{
    char  *buf = NULL;
    size_t len = 0;
    FILE  *f   = open_memstream(&buf, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    memsvc_json_string("a\"b\\c\n\xff\xc3\xa9", f);
    memsvc_json_string(NULL, f);
    fclose(f);
    CU_ASSERT_STRING_EQUAL(buf, "\"a\\\"b\\\\c\\u000a\\ufffd\xc3\xa9\"\"\"");
    free(buf);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("status", NULL, NULL);

    CU_add_test(s, "every status has a name and a message", test_every_status_has_name_and_message);
    CU_add_test(s, "enumeration names round-trip", test_enum_names_round_trip);
    CU_add_test(s, "JSON strings are escaped and valid UTF-8", test_json_string);
}

TEST_REGISTER(status, add_suite)
