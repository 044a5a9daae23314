/* test_sim_desc.c - node presets, overrides, size/rate/duration parsers and formatting */
#include "sim_npu/sim_desc.h"
#include "tests/test_util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define GIB (1024ull * 1024 * 1024)
#define MIB (1024ull * 1024)

static void test_presets_load_and_validate(void)
{
    const char *const *names = sim_desc_preset_names();
    sim_desc_t         d;
    char               err[256];
    int                n = 0;

    for (; *names != NULL; names++, n++) {
        memset(&d, 0, sizeof(d));
        TEST_ASSERT_OK(sim_desc_preset(*names, &d));
        CU_ASSERT_STRING_EQUAL(d.name, *names);
        CU_ASSERT_EQUAL(sim_desc_validate(&d, err, sizeof(err)), MEMSVC_OK);
    }
    CU_ASSERT_EQUAL(n, 2);

    TEST_ASSERT_OK(sim_desc_preset("ascend-910b", &d));
    CU_ASSERT_EQUAL(d.num_npus, 8);
    CU_ASSERT_EQUAL(d.hbm_bytes, 62423 * MIB); /* 60.96 GiB usable of a 64 GB device */
    CU_ASSERT_DOUBLE_EQUAL(d.nic.bw, 25e9, 1.0); /* 200 Gbps */
    CU_ASSERT_DOUBLE_EQUAL(d.h2d.bw, 25e9, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(d.hbm_bw, 1.6e12, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(d.flops, 300e12, 1.0);
    CU_ASSERT_TRUE(d.disk_bytes > 0);

    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    CU_ASSERT_EQUAL(d.num_npus, 2);
    CU_ASSERT_EQUAL(d.hbm_bytes, 64 * MIB);
    CU_ASSERT_EQUAL(d.host_bytes, 256 * MIB);
    CU_ASSERT_EQUAL(d.disk_bytes, 256 * MIB);

    CU_ASSERT_EQUAL(sim_desc_preset("ascend-910c", &d), MEMSVC_ERR_UNKNOWN_KEY);
    CU_ASSERT_EQUAL(sim_desc_preset("", &d), MEMSVC_ERR_UNKNOWN_KEY);
}

static void test_validate_rejects(void)
{
    sim_desc_t d;
    char       err[256];

    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    d.num_npus = 0;
    CU_ASSERT_EQUAL(sim_desc_validate(&d, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "npus"));
    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    d.d2h.bw = 0;
    CU_ASSERT_EQUAL(sim_desc_validate(&d, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "d2h"));
    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    d.mfu = 1.5;
    CU_ASSERT_EQUAL(sim_desc_validate(&d, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    d.host_bytes = 0;
    CU_ASSERT_EQUAL(sim_desc_validate(&d, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
    CU_ASSERT_EQUAL(sim_desc_validate(NULL, err, sizeof(err)), MEMSVC_ERR_INVALID_PARAM);
}

/* Every key, and what it must change. */
static void test_every_override_key(void)
{
    sim_desc_t d;
    char       err[256];

    TEST_ASSERT_OK(sim_desc_preset("ascend-910b", &d));
#define SET(a) CU_ASSERT_EQUAL(sim_desc_set(&d, (a), err, sizeof(err)), MEMSVC_OK)
    SET("npus=4");
    CU_ASSERT_EQUAL(d.num_npus, 4);
    SET("hbm=48GiB");
    CU_ASSERT_EQUAL(d.hbm_bytes, 48 * GIB);
    SET("hbm_bw=2TB/s");
    CU_ASSERT_DOUBLE_EQUAL(d.hbm_bw, 2e12, 1.0);
    SET("host=512GiB");
    CU_ASSERT_EQUAL(d.host_bytes, 512 * GIB);
    SET("disk=0");
    CU_ASSERT_EQUAL(d.disk_bytes, 0);
    SET("disk=1TB");
    CU_ASSERT_EQUAL(d.disk_bytes, 1000000000000ull);
    SET("h2d_bw=20GB/s");
    CU_ASSERT_DOUBLE_EQUAL(d.h2d.bw, 20e9, 1.0);
    SET("h2d_lat=3us");
    CU_ASSERT_EQUAL(d.h2d.lat_ns, 3000);
    SET("d2h_bw=10GB/s");
    CU_ASSERT_DOUBLE_EQUAL(d.d2h.bw, 10e9, 1.0);
    SET("d2h_lat=4us");
    CU_ASSERT_EQUAL(d.d2h.lat_ns, 4000);
    SET("d2d_bw=100Gbps");
    CU_ASSERT_DOUBLE_EQUAL(d.d2d.bw, 12.5e9, 1.0);
    SET("d2d_lat=500ns");
    CU_ASSERT_EQUAL(d.d2d.lat_ns, 500);
    SET("disk_bw=7GB/s");
    CU_ASSERT_DOUBLE_EQUAL(d.disk.bw, 7e9, 1.0);
    SET("disk_lat=0.1ms");
    CU_ASSERT_EQUAL(d.disk.lat_ns, 100000);
    SET("nic_bw=400Gbps");
    CU_ASSERT_DOUBLE_EQUAL(d.nic.bw, 50e9, 1.0);
    SET("nic_lat=1.5us");
    CU_ASSERT_EQUAL(d.nic.lat_ns, 1500);
    SET("flops=350TFLOPS");
    CU_ASSERT_DOUBLE_EQUAL(d.flops, 350e12, 1.0);
    SET("mfu=0.3");
    CU_ASSERT_DOUBLE_EQUAL(d.mfu, 0.3, 1e-12);
    SET("link_bw=32GB/s");
    CU_ASSERT_DOUBLE_EQUAL(d.h2d.bw, 32e9, 1.0);
    CU_ASSERT_DOUBLE_EQUAL(d.d2h.bw, 32e9, 1.0);
    SET("link_lat=7us");
    CU_ASSERT_EQUAL(d.h2d.lat_ns, 7000);
    CU_ASSERT_EQUAL(d.d2h.lat_ns, 7000);
    SET(" hbm = 1GiB ");
    CU_ASSERT_EQUAL(d.hbm_bytes, GIB);
#undef SET
    CU_ASSERT_EQUAL(sim_desc_validate(&d, err, sizeof(err)), MEMSVC_OK);
}

/* Rejected assignments leave the description byte-for-byte unchanged. */
static void test_bad_overrides_rejected(void)
{
    static const struct {
        const char     *a;
        memsvc_status_t want;
    } cases[] = {
        { "hbmm=1GiB", MEMSVC_ERR_UNKNOWN_KEY },  { "=1", MEMSVC_ERR_UNKNOWN_KEY },
        { "HBM=1GiB", MEMSVC_ERR_UNKNOWN_KEY },   { "hbm", MEMSVC_ERR_PARSE },
        { "hbm=", MEMSVC_ERR_PARSE },             { "hbm=64GiBx", MEMSVC_ERR_PARSE },
        { "hbm=-1", MEMSVC_ERR_PARSE },           { "hbm=GB", MEMSVC_ERR_PARSE },
        { "hbm=1e400", MEMSVC_ERR_PARSE },        { "hbm=100", MEMSVC_ERR_PARSE },
        { "hbm=99999999999PiB", MEMSVC_ERR_PARSE }, { "host=0", MEMSVC_ERR_PARSE },
        { "npus=0", MEMSVC_ERR_PARSE },           { "npus=65", MEMSVC_ERR_PARSE },
        { "npus=2.5", MEMSVC_ERR_PARSE },         { "npus=8GiB", MEMSVC_ERR_PARSE },
        { "h2d_bw=0", MEMSVC_ERR_PARSE },         { "h2d_bw=25GB", MEMSVC_ERR_PARSE },
        { "h2d_bw=fast", MEMSVC_ERR_PARSE },      { "h2d_lat=2 parsecs", MEMSVC_ERR_PARSE },
        { "h2d_lat=-2us", MEMSVC_ERR_PARSE },     { "mfu=0", MEMSVC_ERR_PARSE },
        { "mfu=1.01", MEMSVC_ERR_PARSE },         { "flops=nan", MEMSVC_ERR_PARSE },
        { "flops=inf", MEMSVC_ERR_PARSE },        { "link_bw=0x10", MEMSVC_ERR_PARSE },
        { "a_key_that_is_much_longer_than_any_valid_key_could_ever_be_at_all=1",
          MEMSVC_ERR_UNKNOWN_KEY },
        { "hbm=11111111111111111111111111111111111111111111111111111111111111111111111111111111111"
          "1111111111111111111111111111111111111111111111111111111111111111111111111111111111",
          MEMSVC_ERR_PARSE },
    };
    sim_desc_t d, before;
    char       err[512];
    size_t     i;

    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    before = d;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(sim_desc_set(&d, cases[i].a, err, sizeof(err)), cases[i].want);
        CU_ASSERT_EQUAL(memcmp(&d, &before, sizeof(d)), 0);
        CU_ASSERT_TRUE(err[0] != '\0');
        if (cases[i].want == MEMSVC_ERR_UNKNOWN_KEY) {
            /* The message lists the valid keys. */
            CU_ASSERT_PTR_NOT_NULL(strstr(err, "hbm_bw"));
            CU_ASSERT_PTR_NOT_NULL(strstr(err, "mfu"));
        }
    }
    /* No buffer for the message is fine too. */
    CU_ASSERT_EQUAL(sim_desc_set(&d, "nope=1", NULL, 0), MEMSVC_ERR_UNKNOWN_KEY);
}

static void test_parse_size_table(void)
{
    static const struct {
        const char *s;
        uint64_t    v;
    } ok[] = {
        { "4096", 4096 },
        { "0", 0 },
        { "8B", 8 },
        { "512KiB", 512 * 1024 },
        { "2MB", 2000000 },
        { "64GiB", 64 * GIB },
        { "1.5GB", 1500000000ull },
        { "1.5GiB", 3 * GIB / 2 },
        { "64 GiB", 64 * GIB },
        { "1TiB", 1024 * GIB },
        { "4gib", 4 * GIB },
        { "18446744073709551615", UINT64_MAX },
        { "1e3", 1000 },
    };
    static const char *const bad[] = {
        "", "GB", "-1", "+1", " 1", "64GiBx", "1e400", "18446744073709551616", "16EiB",
        "20000PiB", "1..5GB", ".", "0x10", "nan", "inf", "1GiB/s", "1 2",
    };
    uint64_t v;
    size_t   i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = 12345;
        CU_ASSERT_EQUAL(sim_parse_size(ok[i].s, &v), MEMSVC_OK);
        CU_ASSERT_EQUAL(v, ok[i].v);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 12345;
        CU_ASSERT_EQUAL(sim_parse_size(bad[i], &v), MEMSVC_ERR_PARSE);
        CU_ASSERT_EQUAL(v, 12345);
    }
    CU_ASSERT_EQUAL(sim_parse_size(NULL, &v), MEMSVC_ERR_PARSE);
}

static void test_parse_rate_table(void)
{
    static const struct {
        const char *s;
        double      v;
    } ok[] = {
        { "25GB/s", 25e9 },     { "200Gbps", 25e9 },   { "200Gb/s", 25e9 },
        { "1.6TB/s", 1.6e12 },  { "300TFLOPS", 3e14 }, { "1000", 1000.0 },
        { "1GiB/s", 0x1p30 },   { "8bps", 1.0 },       { "2.5e9", 2.5e9 },
    };
    static const char *const bad[] = { "", "GB/s", "-25GB/s", "25GB", "25gbps", "1e400",
                                       "25GB/sx", "inf", "nan", "25 GB / s" };
    double v;
    size_t i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = -1;
        CU_ASSERT_EQUAL(sim_parse_rate(ok[i].s, &v), MEMSVC_OK);
        CU_ASSERT_DOUBLE_EQUAL(v, ok[i].v, ok[i].v * 1e-12);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = -1;
        CU_ASSERT_EQUAL(sim_parse_rate(bad[i], &v), MEMSVC_ERR_PARSE);
        CU_ASSERT_EQUAL(v, -1);
    }
}

static void test_parse_duration_table(void)
{
    static const struct {
        const char *s;
        uint64_t    v;
    } ok[] = {
        { "2us", 2000 },  { "1.5ms", 1500000 }, { "100ns", 100 }, { "3s", 3000000000ull },
        { "250", 250 },   { "0", 0 },           { "0.5us", 500 }, { "2 us", 2000 },
    };
    static const char *const bad[] = { "", "us", "-2us", "2uss", "2 parsecs", "1e400s",
                                       "99999999999s", "2h" };
    uint64_t v;
    size_t   i;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        v = 7;
        CU_ASSERT_EQUAL(sim_parse_duration(ok[i].s, &v), MEMSVC_OK);
        CU_ASSERT_EQUAL(v, ok[i].v);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = 7;
        CU_ASSERT_EQUAL(sim_parse_duration(bad[i], &v), MEMSVC_ERR_PARSE);
        CU_ASSERT_EQUAL(v, 7);
    }
}

static void test_link_time_and_format(void)
{
    sim_link_desc_t l = { .bw = 1e9, .lat_ns = 10000 };
    char            buf[64];

    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 0), 10000);
    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 1000), 11000);
    l.bw = 3e9; /* 1 byte = 0.333 ns: rounded up */
    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 1), 10001);
    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 3), 10001);
    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 4), 10002);
    l.bw     = 25e9;
    l.lat_ns = 0;
    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 64 * GIB), 2748779070ull); /* 64 GiB / 25 GB/s */
    l.bw = 1e-300;
    CU_ASSERT_EQUAL(sim_link_time_ns(&l, 1), UINT64_MAX);

    CU_ASSERT_STRING_EQUAL(sim_format_size(64 * GIB, buf, sizeof(buf)), "64.0 GiB");
    CU_ASSERT_STRING_EQUAL(sim_format_size(512, buf, sizeof(buf)), "512 B");
    CU_ASSERT_STRING_EQUAL(sim_format_size(1536 * 1024, buf, sizeof(buf)), "1.5 MiB");
    CU_ASSERT_STRING_EQUAL(sim_format_time(1234000, buf, sizeof(buf)), "1.234 ms");
    CU_ASSERT_STRING_EQUAL(sim_format_time(999, buf, sizeof(buf)), "999 ns");
    CU_ASSERT_STRING_EQUAL(sim_format_time(2500, buf, sizeof(buf)), "2.500 us");
    CU_ASSERT_STRING_EQUAL(sim_format_time(3000000000ull, buf, sizeof(buf)), "3.000 s");
}

/* Printed "key = value" lines, applied as overrides, rebuild the same description. */
static void print_round_trip(const sim_desc_t *d)
{
    sim_desc_t copy;
    char       line[256], assign[256], err[256];
    FILE      *f = tmpfile();
    int        lines = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sim_desc_print(d, f);
    rewind(f);
    memset(&copy, 0, sizeof(copy));
    memcpy(copy.name, d->name, sizeof(copy.name));
    while (fgets(line, sizeof(line), f) != NULL) {
        char *eq = strstr(line, " = ");

        CU_ASSERT_PTR_NOT_NULL_FATAL(eq);
        line[strcspn(line, "\n")] = '\0';
        snprintf(assign, sizeof(assign), "%.*s=%s", (int)(eq - line), line, eq + 3);
        if (strncmp(line, "preset", 6) != 0) {
            err[0] = '\0';
            CU_ASSERT_EQUAL(sim_desc_set(&copy, assign, err, sizeof(err)), MEMSVC_OK);
        }
        lines++;
    }
    fclose(f);
    CU_ASSERT_EQUAL(lines, 18);
    CU_ASSERT_EQUAL(memcmp(&copy, d, sizeof(copy)), 0);
}

static void test_print_round_trip(void)
{
    const char *const *names = sim_desc_preset_names();
    sim_desc_t         d;

    for (; *names != NULL; names++) {
        TEST_ASSERT_OK(sim_desc_preset(*names, &d));
        print_round_trip(&d);
    }
    /* Values that do not format exactly fall back to exact forms. */
    TEST_ASSERT_OK(sim_desc_preset("tiny", &d));
    TEST_ASSERT_OK(sim_desc_set(&d, "hbm=123456789", NULL, 0));
    TEST_ASSERT_OK(sim_desc_set(&d, "h2d_bw=12345.6789012345GB/s", NULL, 0));
    TEST_ASSERT_OK(sim_desc_set(&d, "d2h_lat=1234567ns", NULL, 0));
    TEST_ASSERT_OK(sim_desc_set(&d, "mfu=0.123456789", NULL, 0));
    TEST_ASSERT_OK(sim_desc_set(&d, "flops=123.456789TFLOPS", NULL, 0));
    print_round_trip(&d);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("sim_desc", NULL, NULL);

    CU_add_test(s, "presets load and validate", test_presets_load_and_validate);
    CU_add_test(s, "validate rejects bad descriptions", test_validate_rejects);
    CU_add_test(s, "every override key", test_every_override_key);
    CU_add_test(s, "bad overrides rejected, desc unchanged", test_bad_overrides_rejected);
    CU_add_test(s, "size parser table", test_parse_size_table);
    CU_add_test(s, "rate parser table", test_parse_rate_table);
    CU_add_test(s, "duration parser table", test_parse_duration_table);
    CU_add_test(s, "link time and formatting", test_link_time_and_format);
    CU_add_test(s, "print round-trips through overrides", test_print_round_trip);
}

TEST_REGISTER(sim_desc, add_suite)
