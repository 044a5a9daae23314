/* test_policy_timeline.c - the engine's access timeline and the policies' decision log */
#include "memsvc/eng.h"
#include "tests/eng_fixture.h"
#include "tests/test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ull * 1024ull)

static eng_t *make_engine(const char *policy)
{
    sim_desc_t   desc;
    eng_params_t p;
    eng_t       *eng = NULL;
    char         err[256];

    CU_ASSERT_EQUAL_FATAL(sim_desc_preset("tiny", &desc), MEMSVC_OK);
    p.desc   = &desc;
    p.mode   = SIM_MEM_PHANTOM;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = policy;
    CU_ASSERT_EQUAL_FATAL(eng_create(&p, &eng, err, sizeof(err)), MEMSVC_OK);
    return eng;
}

static eng_tensor_desc_t tdesc(const char *key, uint64_t size, int32_t layer, int32_t mb)
{
    eng_tensor_desc_t d;

    memset(&d, 0, sizeof(d));
    d.key             = key;
    d.size            = size;
    d.kind            = MEMSVC_KIND_ACTIVATION;
    d.tags            = MEMSVC_TAGS_NONE;
    d.tags.layer      = layer;
    d.tags.microbatch = mb;
    d.recomputable    = true;
    d.recompute_ns    = 777;
    d.job             = 1;
    return d;
}

/* ---- timeline ----------------------------------------------------------------------------------
 */

static void test_timeline_two_steps(void)
{
    eng_t                *eng = make_engine("lru");
    const pol_tl_entry_t *e;
    size_t                n;
    eng_tensor_desc_t     d;
    eng_handle_t          ha, hb;

    /* off unless asked: nothing is recorded */
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 0, -1, -1, MEMSVC_PHASE_FORWARD);
    d = tdesc("L3.mb1.x", MiB, 3, 1);
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &ha));
    eng_timeline(eng, false, &e, &n);
    CU_ASSERT_EQUAL(n, 0);
    TEST_ASSERT_OK(eng_free(eng, ha));

    eng_timeline_enable(eng, true);
    hint(eng, MEMSVC_HINT_LAYER_BEGIN, 0, 3, 1, MEMSVC_PHASE_FORWARD);
    d = tdesc("L3.mb1.a", 2 * MiB, 3, 1);
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &ha));
    TEST_ASSERT_OK(eng_acquire(eng, ha, NULL, NULL));
    TEST_ASSERT_OK(eng_release(eng, ha));
    hint(eng, MEMSVC_HINT_LAYER_END, 0, 3, 1, MEMSVC_PHASE_FORWARD);
    eng_timeline(eng, false, &e, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(e[0].access, POL_ACCESS_ALLOC);
    CU_ASSERT_EQUAL(e[1].access, POL_ACCESS_ACQUIRE);
    CU_ASSERT_EQUAL(e[2].access, POL_ACCESS_RELEASE);
    CU_ASSERT_EQUAL(e[0].key_id, e[2].key_id);
    CU_ASSERT_STRING_EQUAL(eng_timeline_key(eng, e[0].key_id), "L3.mb1.a");
    CU_ASSERT_EQUAL(e[0].step, 0);
    CU_ASSERT_EQUAL(e[0].layer, 3);
    CU_ASSERT_EQUAL(e[0].microbatch, 1);
    CU_ASSERT_EQUAL(e[0].phase, MEMSVC_PHASE_FORWARD);
    CU_ASSERT_EQUAL(e[0].size, 2 * MiB);
    CU_ASSERT_EQUAL(e[0].recompute_ns, 777);
    CU_ASSERT_EQUAL(e[0].kind, MEMSVC_KIND_ACTIVATION);
    eng_timeline(eng, true, &e, &n);
    CU_ASSERT_EQUAL(n, 0);

    /* step 1: step 0's entries are the previous step's; the same step again does not rotate */
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 1, -1, -1, MEMSVC_PHASE_FORWARD);
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 1, -1, -1, MEMSVC_PHASE_FORWARD);
    eng_timeline(eng, true, &e, &n);
    CU_ASSERT_EQUAL(n, 3);
    eng_timeline(eng, false, &e, &n);
    CU_ASSERT_EQUAL(n, 0);
    TEST_ASSERT_OK(eng_free(eng, ha));
    d = tdesc("L3.mb1.b", MiB, 3, 1);
    TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &hb));
    eng_timeline(eng, false, &e, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(e[0].access, POL_ACCESS_FREE);
    CU_ASSERT_EQUAL(e[0].step, 1);
    CU_ASSERT_EQUAL(e[0].layer, -1);
    CU_ASSERT_EQUAL(eng_timeline_keys(eng), 2);

    /* step 2: step 0 is gone; only the keys step 1 used are still interned */
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 2, -1, -1, MEMSVC_PHASE_FORWARD);
    eng_timeline(eng, true, &e, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(e[0].step, 1);
    CU_ASSERT_STRING_EQUAL(eng_timeline_key(eng, e[0].key_id), "L3.mb1.a");
    CU_ASSERT_STRING_EQUAL(eng_timeline_key(eng, e[1].key_id), "L3.mb1.b");
    hint(eng, MEMSVC_HINT_STEP_BEGIN, 3, -1, -1, MEMSVC_PHASE_FORWARD);
    eng_timeline(eng, true, &e, &n);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(eng_timeline_keys(eng), 0);
    eng_destroy(eng);
}

/* Many steps with fresh keys each: memory stays bounded to two steps. */
static void test_timeline_bounded(void)
{
    eng_t                *eng = make_engine("none");
    const pol_tl_entry_t *e;
    size_t                n;
    char                  key[32];
    int                   step, i;

    eng_timeline_enable(eng, true);
    for (step = 0; step < 50; step++) {
        hint(eng, MEMSVC_HINT_STEP_BEGIN, step, -1, -1, MEMSVC_PHASE_FORWARD);
        for (i = 0; i < 20; i++) {
            eng_tensor_desc_t d;
            eng_handle_t      h;

            snprintf(key, sizeof(key), "s%d.t%d", step, i);
            d = tdesc(key, MiB, 0, 0);
            TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &h));
            TEST_ASSERT_OK(eng_free(eng, h));
        }
        CU_ASSERT(eng_timeline_keys(eng) <= 40);
    }
    eng_timeline(eng, true, &e, &n);
    CU_ASSERT_EQUAL(n, 40);
    CU_ASSERT_EQUAL(e[0].step, 48);
    eng_timeline(eng, false, &e, &n);
    CU_ASSERT_EQUAL(n, 40);
    CU_ASSERT_EQUAL(e[0].step, 49);
    eng_destroy(eng);
}

/* ---- decision log -------------------------------------------------------------------------------
 */

typedef struct count_find {
    const char  *reason;
    pol_action_t action;
    uint64_t     count, refused;
} count_find_t;

static bool find_count(void *arg, const eng_decision_count_t *c)
{
    count_find_t *f = arg;

    if (strcmp(c->reason, f->reason) == 0 && c->action == f->action) {
        f->count   = c->count;
        f->refused = c->refused;
    }
    return true;
}

static bool collect_keys(void *arg, const eng_decision_t *d)
{
    char *out = arg;

    strcat(out, d->key);
    strcat(out, "|");
    return true;
}

static void test_decision_log(void)
{
    eng_t            *eng = make_engine("lru");
    eng_handle_t      h[16], hx;
    eng_tensor_desc_t d;
    count_find_t      f = {.reason = "lru oldest", .action = POL_ACTION_SWAP_OUT};
    char              key[32], keys[512] = "";
    uint64_t          over;
    char             *json = NULL;
    size_t            len  = 0;
    FILE             *mem;
    int               i;

    for (i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "t%d", i);
        d = tdesc(key, 4 * MiB, 0, 0);
        TEST_ASSERT_OK(eng_alloc(eng, &d, 0, NULL, NULL, &h[i]));
    }
    CU_ASSERT_EQUAL(eng_decision_total(eng, NULL), 0);
    d = tdesc("new", 12 * MiB, 0, 0);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hx), MEMSVC_INPROGRESS);
    eng_decision_counts(eng, find_count, &f);
    CU_ASSERT_EQUAL(f.count, 3);
    eng_decisions(eng, collect_keys, keys);
    CU_ASSERT_STRING_EQUAL(keys, "t0|t1|t2|");

    /* the JSON form names policy, reason, action and keys */
    mem = open_memstream(&json, &len);
    CU_ASSERT_FATAL(mem != NULL);
    TEST_ASSERT_OK(eng_decision_log_json(eng, mem, 10));
    fclose(mem);
    CU_ASSERT(strstr(json, "\"policy\":\"lru\"") != NULL);
    CU_ASSERT(strstr(json, "\"reason\":\"lru oldest\",\"action\":\"swap_out\",\"count\":3") !=
              NULL);
    CU_ASSERT(strstr(json, "\"key\":\"t2\"") != NULL);
    CU_ASSERT(strstr(json, "\"by_action\":{\"swap_out\":3,") != NULL);
    free(json);

    /* a smaller ring keeps the newest; the counters keep counting */
    run_idle(eng);
    TEST_ASSERT_OK(eng_decision_log_size(eng, 2));
    d = tdesc("new2", 16 * MiB, 0, 0);
    CU_ASSERT_EQUAL(eng_alloc(eng, &d, 0, NULL, NULL, &hx), MEMSVC_INPROGRESS);
    keys[0] = '\0';
    eng_decisions(eng, collect_keys, keys);
    CU_ASSERT_STRING_EQUAL(keys, "t5|t6|");
    CU_ASSERT_EQUAL(eng_decision_total(eng, &over), 7);
    CU_ASSERT_EQUAL(over, 5);
    f.count = 0;
    eng_decision_counts(eng, find_count, &f);
    CU_ASSERT_EQUAL(f.count, 7);
    eng_destroy(eng);
}

static void add_suite(void)
{
    CU_pSuite s = CU_add_suite("policy_timeline", NULL, NULL);

    CU_add_test(s, "timeline: step N visible in step N+1, two steps kept", test_timeline_two_steps);
    CU_add_test(s, "timeline: fresh keys every step stay bounded", test_timeline_bounded);
    CU_add_test(s, "decision log: reasons recorded, counted, ring bounded, JSON",
                test_decision_log);
}

TEST_REGISTER(policy_timeline, add_suite)
