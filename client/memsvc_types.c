/* memsvc_types.c - names of the public enumerations */
#include "client/memsvc.h"
#include "client/memsvc_types.h"

#include <string.h>

static const char *const kind_names[MEMSVC_KIND_COUNT] = {"param", "grad", "optim", "activation",
                                                          "workspace"};
static const char *const state_names[MEMSVC_STATE_COUNT] = {
    "on_device", "moving_out", "on_host", "moving_in", "dropped", "on_disk", "freed", "on_peer"};
static const char *const phase_names[MEMSVC_PHASE_COUNT] = {"none", "forward", "backward",
                                                            "optimizer"};

const char *memsvc_kind_name(memsvc_kind_t kind)
{
    return ((unsigned)kind < MEMSVC_KIND_COUNT) ? kind_names[kind] : "unknown";
}

const char *memsvc_state_name(memsvc_state_t state)
{
    return ((unsigned)state < MEMSVC_STATE_COUNT) ? state_names[state] : "unknown";
}

const char *memsvc_phase_name(memsvc_phase_t phase)
{
    return ((unsigned)phase < MEMSVC_PHASE_COUNT) ? phase_names[phase] : "unknown";
}

memsvc_status_t memsvc_kind_parse(const char *s, memsvc_kind_t *kind_p)
{
    unsigned i;

    for (i = 0; i < MEMSVC_KIND_COUNT; i++) {
        if (strcmp(s, kind_names[i]) == 0) {
            *kind_p = (memsvc_kind_t)i;
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_UNKNOWN_KEY;
}

const char *memsvc_peer_state_name(memsvc_peer_state_t state)
{
    static const char *const names[MEMSVC_PEER_STATE_COUNT] = {"connecting", "up", "suspect",
                                                               "down", "refused"};

    return ((unsigned)state < MEMSVC_PEER_STATE_COUNT) ? names[state] : "unknown";
}
