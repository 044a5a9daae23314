/* test_live_replay.c - `memtrace replay --daemon`: trainer processes against a real memsvcd */
#include "client/msp_ucx.h"
#include "tests/integ/integ.h"
#include "tests/test_util.h"

#include <jansson.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Run a shell command, collect its stdout; returns its exit status. */
static int run(const char *cmd, char *out, size_t len)
{
    FILE  *p = popen(cmd, "r");
    size_t n = 0;

    if (p == NULL) {
        return -1;
    }
    while (n + 1 < len && !feof(p)) {
        n += fread(out + n, 1, len - n - 1, p);
    }
    out[n] = '\0';
    return pclose(p);
}

static void test_live_replay_two_trainers(void)
{
    static const char *const args[] = {"--node", "tiny", "hbm=24MiB", "--policy", "lru", NULL};
    integ_daemon_t d;
    char           cmd[1024], *out = malloc(1 << 16);
    char           t0[] = "/tmp/memsvc-live0-XXXXXX", t1[] = "/tmp/memsvc-live1-XXXXXX";
    json_t                  *j, *trainers, *j1, *trainers1;
    json_error_t   jerr;
    memsvc_stats_t st;
    size_t         i;
    int            fd;

    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_FATAL((fd = mkstemp(t0)) >= 0);
    close(fd);
    CU_ASSERT_FATAL((fd = mkstemp(t1)) >= 0);
    close(fd);
    /* two ranks of the first pipeline stage's neighbours: their own traces */
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --model tiny-moe --layout tp=1,pp=2 --microbatches 4 --steps 1 "
             "--node tiny -o %s 2>/dev/null && %s/memtrace gen --model tiny-moe --layout tp=1,pp=2 "
             "--microbatches 4 --steps 1 --node tiny --rank 1 -o %s 2>/dev/null",
             test_bin_dir(), t0, test_bin_dir(), t1);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);

    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay --daemon %s --job 77 --json %s %s",
             test_bin_dir(), d.addr, t0, t1);
    CU_ASSERT_EQUAL(run(cmd, out, 1 << 16), 0);
    j = json_loads(out, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    trainers = json_object_get(j, "trainers");
    CU_ASSERT_EQUAL(json_array_size(trainers), 2);
    for (i = 0; i < json_array_size(trainers); i++) {
        json_t *t = json_array_get(trainers, i);

        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(t, "status")), "MEMSVC_OK");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(t, "rank")), (json_int_t)i);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(t, "device")), (json_int_t)i);
        CU_ASSERT(json_integer_value(json_object_get(t, "ops")) > 100);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(t, "refused_for_memory")), 0);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(t, "errors")), 0);
    }
    /* the steps did not fit in 24 MiB: the daemon swapped for them, and all is freed again */
    CU_ASSERT(json_integer_value(json_object_get(
                  json_array_get(json_object_get(json_object_get(j, "daemon"), "devices"), 0),
                  "swap_out_bytes")) > 0);

    /* the same step one answered request per event: the same per-step result, in more
     * request messages (one batch per operator against one request per event) */
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay --daemon %s --job 78 --per-request --json %s %s",
             test_bin_dir(), d.addr, t0, t1);
    CU_ASSERT_EQUAL(run(cmd, out, 1 << 16), 0);
    j1 = json_loads(out, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j1);
    trainers1 = json_object_get(j1, "trainers");
    CU_ASSERT_EQUAL_FATAL(json_array_size(trainers1), 2);
    for (i = 0; i < 2; i++) {
        json_t *a = json_array_get(trainers, i), *b = json_array_get(trainers1, i);

        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "status")), "MEMSVC_OK");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(a, "events")),
                        json_integer_value(json_object_get(b, "events")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(a, "ops")),
                        json_integer_value(json_object_get(b, "ops")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(a, "compute_ns")),
                        json_integer_value(json_object_get(b, "compute_ns")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "refused_for_memory")), 0);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "errors")), 0);
        CU_ASSERT(json_integer_value(json_object_get(a, "batches")) > 0);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "batches")), 0);
    }
    CU_ASSERT(json_integer_value(json_object_get(j, "requests")) > 0);
    CU_ASSERT(json_integer_value(json_object_get(j, "requests")) <
              json_integer_value(json_object_get(j1, "requests")));
    CU_ASSERT_EQUAL(json_object_get(j1, "per_request"), json_true());
    json_decref(j1);

    /* one operator ahead instead of eight (no pins held across operators): the same again */
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay --daemon %s --job 79 --prefetch 1 --json %s %s",
             test_bin_dir(), d.addr, t0, t1);
    CU_ASSERT_EQUAL(run(cmd, out, 1 << 16), 0);
    j1 = json_loads(out, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j1);
    trainers1 = json_object_get(j1, "trainers");
    CU_ASSERT_EQUAL_FATAL(json_array_size(trainers1), 2);
    for (i = 0; i < 2; i++) {
        json_t *a = json_array_get(trainers, i), *b = json_array_get(trainers1, i);

        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "status")), "MEMSVC_OK");
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(a, "events")),
                        json_integer_value(json_object_get(b, "events")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(a, "ops")),
                        json_integer_value(json_object_get(b, "ops")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(a, "compute_ns")),
                        json_integer_value(json_object_get(b, "compute_ns")));
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "refused_for_memory")), 0);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "errors")), 0);
    }
    json_decref(j1);
    json_decref(j);
    CU_ASSERT_EQUAL(integ_stats(&d, &st), MEMSVC_OK);
    CU_ASSERT_EQUAL(st.dev[0].pinned_tensors, 0);
    CU_ASSERT_EQUAL(st.dev[1].pinned_tensors, 0);

    /* a daemon that is not there is a clear error */
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay --daemon 127.0.0.1:1 %s 2>&1", test_bin_dir(),
             t0);
    CU_ASSERT_NOT_EQUAL(run(cmd, out, 1 << 16), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "cannot reach memsvcd"));

    integ_daemon_stop(&d);
    unlink(t0);
    unlink(t1);
    free(out);
}

/* The daemon dies under a live replay: the trainers stop, the replay exits 1 and says why. */
static void test_live_replay_daemon_dies(void)
{
    static const char *const args[] = {"--node", "tiny", NULL};
    integ_daemon_t           d;
    char                     cmd[1024], *out = malloc(1 << 16);
    char                     trace[] = "/tmp/memsvc-live-dies-XXXXXX";
    FILE                    *p;
    size_t                   n = 0;
    uint64_t                 t0;
    memsvc_stats_t           stats;
    int                      fd, st;

    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    memset(&stats, 0, sizeof(stats));
    CU_ASSERT_FATAL((fd = mkstemp(trace)) >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "%s/memtrace gen --model tiny-moe --microbatches 4 --steps 4 --node tiny -o %s "
             "2>/dev/null",
             test_bin_dir(), trace);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    CU_ASSERT_FATAL(integ_daemon_start(&d, args));
    /* operators slept 2000 x longer: the replay would take minutes */
    snprintf(cmd, sizeof(cmd),
             "timeout 120 %s/memtrace replay --daemon %s --time-scale 2000 %s 2>&1", test_bin_dir(),
             d.addr, trace);
    p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    /* kill it once the trainer is under way: its tensors are in the daemon (bounded wait) */
    t0 = msp_now_ns();
    while (msp_now_ns() - t0 < 60000000000ull &&
           !(integ_stats(&d, &stats) == MEMSVC_OK && stats.live_tensors > 0)) {
        usleep(50 * 1000);
    }
    CU_ASSERT(stats.live_tensors > 0);
    usleep(200 * 1000);
    kill(d.pid, SIGKILL);
    waitpid(d.pid, &st, 0);
    d.pid = 0;
    t0    = msp_now_ns();
    while (n + 1 < (1 << 16) && !feof(p)) {
        n += fread(out + n, 1, (1 << 16) - n - 1, p);
    }
    out[n] = '\0';
    st     = pclose(p);
    CU_ASSERT(msp_now_ns() - t0 < 60000000000ull); /* stopped, not replayed to the end */
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "the daemon went away"));
    if (strstr(out, "the daemon went away") == NULL) {
        fprintf(stderr, "%s\n", out);
    }
    unlink(trace);
    free(out);
}

/* Options of the offline replay given to a live one (and the other way) are named errors. */
static void test_live_replay_options(void)
{
    char cmd[1024], out[4096];

    snprintf(cmd, sizeof(cmd),
             "%s/memtrace replay --daemon 127.0.0.1:1 x.trace --policy dtr hbm=1GiB --plot x.svg "
             "--memory backed 2>&1",
             test_bin_dir());
    CU_ASSERT_EQUAL(WEXITSTATUS(run(cmd, out, sizeof(out))), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--policy, hbm=1GiB, --plot, --memory"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "do not apply to a live replay"));
    CU_ASSERT_PTR_NULL(strchr(out, '\n') == NULL ? NULL : strchr(strchr(out, '\n') + 1, '\n'));
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay x.trace --time-scale 2 --job 5 2>&1",
             test_bin_dir());
    CU_ASSERT_EQUAL(WEXITSTATUS(run(cmd, out, sizeof(out))), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--time-scale, --job apply to a live replay only"));
    /* an unknown option: one line that names it and where --help is */
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay x.trace --bogus 2>&1", test_bin_dir());
    CU_ASSERT_EQUAL(WEXITSTATUS(run(cmd, out, sizeof(out))), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "unknown option '--bogus' (memtrace replay --help"));
    CU_ASSERT_PTR_NOT_NULL(strchr(out, '\n'));
    CU_ASSERT_PTR_NULL(strchr(strchr(out, '\n') + 1, '\n'));
    snprintf(cmd, sizeof(cmd), "%s/memtrace replay x.trace --policy 2>&1", test_bin_dir());
    CU_ASSERT_EQUAL(WEXITSTATUS(run(cmd, out, sizeof(out))), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "'--policy' needs a value"));
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("live_replay", NULL, NULL);

    CU_add_test(s, "two trainer processes replay through memsvcd", test_live_replay_two_trainers);
    CU_add_test(s, "the daemon dies under a live replay: it stops, exit 1",
                test_live_replay_daemon_dies);
    CU_add_test(s, "options that do not apply, unknown options: named, one line",
                test_live_replay_options);
}

TEST_REGISTER(live_replay, add_suite)
