/* eng_fixture.c - helpers the engine and policy suites share */
#include "tests/eng_fixture.h"
#include "tests/test_util.h"

#include <string.h>

void run_idle(eng_t *eng)
{
    int guard = 0;

    while (eng_step(eng) && ++guard < 1000000) {
    }
    CU_ASSERT(guard < 1000000);
}

memsvc_state_t state_of(eng_t *eng, eng_handle_t h)
{
    eng_tensor_info_t info;

    CU_ASSERT_EQUAL_FATAL(eng_info(eng, h, &info), MEMSVC_OK);
    return info.state;
}

void hint(eng_t *eng, memsvc_hint_type_t type, int32_t step, int32_t layer, int32_t mb,
          memsvc_phase_t phase)
{
    eng_hint_t h;

    memset(&h, 0, sizeof(h));
    h.type       = type;
    h.job        = 1;
    h.step       = step;
    h.layer      = layer;
    h.microbatch = mb;
    h.phase      = phase;
    TEST_ASSERT_OK(eng_hint(eng, &h));
}
