/* none.c - the `none` policy: never moves anything; a request that does not fit is out of memory */
#include "policy/policy.h"

static memsvc_status_t none_create(const char *params, void **state_p, char *err, size_t errlen)
{
    memsvc_status_t status = pol_parse_params(params, pol_no_params, NULL, err, errlen);

    if (status == MEMSVC_OK) {
        *state_p = NULL;
    }
    return status;
}

static void none_destroy(void *state)
{
}

const pol_ops_t pol_none_ops = {
    .name      = "none",
    .summary   = "never evict: shows the unconstrained peak; out-of-memory is reported",
    .params    = "",
    .create    = none_create,
    .destroy   = none_destroy,
    .make_room = NULL,
    .on_hint   = NULL,
    .on_access = NULL,
};
