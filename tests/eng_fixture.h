/* eng_fixture.h - helpers the engine and policy suites share: drive the virtual clock, states, hints */
#ifndef TEST_ENG_FIXTURE_H
#define TEST_ENG_FIXTURE_H

#include "memsvc/eng.h"

/* Run the engine's pending completions until none is left (bounded; asserts it ended). */
void run_idle(eng_t *eng);

/* The state of a live tensor (asserts it is live). */
memsvc_state_t state_of(eng_t *eng, eng_handle_t h);

/* Give the engine a hint of job 1 (asserts it is accepted). */
void hint(eng_t *eng, memsvc_hint_type_t type, int32_t step, int32_t layer, int32_t mb,
          memsvc_phase_t phase);

#endif /* TEST_ENG_FIXTURE_H */
