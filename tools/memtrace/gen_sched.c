/* gen_sched.c - the generator's schedule: one step of (interleaved) 1F1B for a stage */
#include "tools/memtrace/gen_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- schedule ------------------------------------------------------------------------ */

/* Virtual micro-batch k of the interleaved schedule -> (chunk, micro-batch) (Megatron). */
static void vmb(const gen_t *g, uint32_t k, bool forward, uint32_t *chunk_p, uint32_t *mb_p)
{
    uint32_t group = g->pp * g->vpp, c = (k % group) / g->pp;

    *chunk_p = forward ? c : g->vpp - 1 - c;
    *mb_p    = (k / group) * g->pp + k % g->pp;
    if (g->vpp == 1) {
        *chunk_p = 0;
        *mb_p    = k;
    }
}

static void one_f(gen_t *g, uint32_t k)
{
    uint32_t c, mb;

    vmb(g, k, true, &c, &mb);
    gen_chunk_fwd(g, c, mb);
}

static void one_b(gen_t *g, uint32_t k)
{
    uint32_t c, mb;

    vmb(g, k, false, &c, &mb);
    gen_chunk_bwd(g, c, mb);
}

/* One step of interleaved 1F1B for this rank's stage: warm-up forwards, steady 1F1B,
 * cool-down backwards, then the optimizer. */
void gen_step(gen_t *g)
{
    uint32_t total = g->p->layout.microbatches * g->vpp, warm, k;

    if (g->vpp == 1) {
        warm = g->pp - g->stage - 1;
    } else {
        warm = (g->pp - g->stage - 1) * 2 + (g->vpp - 1) * g->pp;
    }
    warm = (warm > total) ? total : warm;
    gen_hint(g, MEMSVC_HINT_STEP_BEGIN, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_NONE);
    if (g->step == 0) {
        gen_alloc_params(g);
    }
    for (k = 0; k < warm && g->status == MEMSVC_OK; k++) {
        one_f(g, k);
    }
    for (k = 0; k < total - warm && g->status == MEMSVC_OK; k++) {
        one_f(g, warm + k);
        one_b(g, k);
    }
    for (k = total - warm; k < total && g->status == MEMSVC_OK; k++) {
        one_b(g, k);
    }
    gen_optimizer(g);
    gen_hint(g, MEMSVC_HINT_STEP_END, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_PHASE_NONE);
}
