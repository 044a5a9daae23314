/* eng_state.c - the tensor state machine: which operation is legal in which state */
#include "memsvc/eng.h"

#define S(x) MEMSVC_STATE_##x
#define NONE ((memsvc_state_t)-1)

/* next[from][op]; NONE where the operation is illegal. */
static const memsvc_state_t next_state[MEMSVC_STATE_COUNT][ENG_OP_COUNT] = {
    [S(ON_DEVICE)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = S(MOVING_OUT), [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = NONE, [ENG_OP_ABORT_TO_HOST] = NONE, [ENG_OP_ABORT_TO_DISK] = NONE,
            [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = S(DROPPED), [ENG_OP_RECOMPUTE] = NONE,
            [ENG_OP_RECOMPUTE_WAIT] = NONE, [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = NONE,
        },
    [S(MOVING_OUT)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = S(ON_HOST), [ENG_OP_SPILL_DONE] = S(ON_DISK),
            [ENG_OP_CANCEL_OUT] = S(ON_DEVICE), [ENG_OP_SWAP_IN] = NONE,
            [ENG_OP_ABORT_TO_HOST] = NONE, [ENG_OP_ABORT_TO_DISK] = NONE,
            [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = NONE, [ENG_OP_RECOMPUTE] = NONE,
            [ENG_OP_RECOMPUTE_WAIT] = NONE, [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = S(ON_PEER), [ENG_OP_ABORT_TO_PEER] = NONE,
        },
    [S(ON_HOST)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = S(MOVING_OUT),
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = S(MOVING_IN), [ENG_OP_ABORT_TO_HOST] = NONE,
            [ENG_OP_ABORT_TO_DISK] = NONE, [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = NONE,
            [ENG_OP_RECOMPUTE] = NONE, [ENG_OP_RECOMPUTE_WAIT] = NONE, [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = NONE,
        },
    [S(MOVING_IN)] =
        {
            [ENG_OP_PLACED] = S(ON_DEVICE), [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = NONE, [ENG_OP_ABORT_TO_HOST] = S(ON_HOST),
            [ENG_OP_ABORT_TO_DISK] = S(ON_DISK), [ENG_OP_ABORT_TO_DROPPED] = S(DROPPED),
            [ENG_OP_DROP] = NONE, [ENG_OP_RECOMPUTE] = NONE, [ENG_OP_RECOMPUTE_WAIT] = NONE,
            [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = S(ON_PEER),
        },
    [S(DROPPED)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = NONE, [ENG_OP_ABORT_TO_HOST] = NONE, [ENG_OP_ABORT_TO_DISK] = NONE,
            [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = NONE,
            [ENG_OP_RECOMPUTE] = S(ON_DEVICE), [ENG_OP_RECOMPUTE_WAIT] = S(MOVING_IN),
            [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = NONE,
        },
    [S(ON_DISK)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = S(MOVING_IN), [ENG_OP_ABORT_TO_HOST] = NONE,
            [ENG_OP_ABORT_TO_DISK] = NONE, [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = NONE,
            [ENG_OP_RECOMPUTE] = NONE, [ENG_OP_RECOMPUTE_WAIT] = NONE, [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = NONE,
        },
    [S(FREED)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = NONE, [ENG_OP_ABORT_TO_HOST] = NONE, [ENG_OP_ABORT_TO_DISK] = NONE,
            [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = NONE, [ENG_OP_RECOMPUTE] = NONE,
            [ENG_OP_RECOMPUTE_WAIT] = NONE, [ENG_OP_FREE] = NONE,
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = NONE,
        },
    [S(ON_PEER)] =
        {
            [ENG_OP_PLACED] = NONE, [ENG_OP_SWAP_OUT] = NONE, [ENG_OP_SPILL] = NONE,
            [ENG_OP_OUT_DONE] = NONE, [ENG_OP_SPILL_DONE] = NONE, [ENG_OP_CANCEL_OUT] = NONE,
            [ENG_OP_SWAP_IN] = S(MOVING_IN), [ENG_OP_ABORT_TO_HOST] = NONE,
            [ENG_OP_ABORT_TO_DISK] = NONE, [ENG_OP_ABORT_TO_DROPPED] = NONE, [ENG_OP_DROP] = NONE,
            [ENG_OP_RECOMPUTE] = NONE, [ENG_OP_RECOMPUTE_WAIT] = NONE, [ENG_OP_FREE] = S(FREED),
            [ENG_OP_PEER_DONE] = NONE, [ENG_OP_ABORT_TO_PEER] = NONE,
        },
};

static const char *const op_names[ENG_OP_COUNT] = {
    [ENG_OP_PLACED] = "placed",
    [ENG_OP_SWAP_OUT] = "swap_out",
    [ENG_OP_SPILL] = "spill",
    [ENG_OP_OUT_DONE] = "out_done",
    [ENG_OP_SPILL_DONE] = "spill_done",
    [ENG_OP_CANCEL_OUT] = "cancel_out",
    [ENG_OP_SWAP_IN] = "swap_in",
    [ENG_OP_ABORT_TO_HOST] = "abort_to_host",
    [ENG_OP_ABORT_TO_DISK] = "abort_to_disk",
    [ENG_OP_ABORT_TO_DROPPED] = "abort_to_dropped",
    [ENG_OP_DROP] = "drop",
    [ENG_OP_RECOMPUTE] = "recompute",
    [ENG_OP_RECOMPUTE_WAIT] = "recompute_wait",
    [ENG_OP_FREE] = "free",
    [ENG_OP_PEER_DONE] = "peer_done",
    [ENG_OP_ABORT_TO_PEER] = "abort_to_peer",
};

memsvc_status_t eng_transition(memsvc_state_t from, eng_op_t op, memsvc_state_t *next_p)
{
    memsvc_state_t next;

    if ((unsigned)from >= MEMSVC_STATE_COUNT || (unsigned)op >= ENG_OP_COUNT) {
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    next = next_state[from][op];
    if (next == NONE) {
        return MEMSVC_ERR_ILLEGAL_STATE;
    }
    *next_p = next;
    return MEMSVC_OK;
}

const char *eng_op_name(eng_op_t op)
{
    return ((unsigned)op < ENG_OP_COUNT) ? op_names[op] : "unknown";
}
