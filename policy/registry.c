/* registry.c - every policy compiled in, selected by name, and the parameter-string helper */
#include "policy/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const pol_ops_t pol_none_ops;
extern const pol_ops_t pol_lru_ops;
extern const pol_ops_t pol_vdnn_ops;
extern const pol_ops_t pol_dtr_ops;
extern const pol_ops_t pol_selective_ops;
extern const pol_ops_t pol_full_ops;
extern const pol_ops_t pol_offload_ops;
extern const pol_ops_t pol_capuchin_ops;
extern const pol_ops_t pol_foresight_ops;

static const pol_ops_t *const pol_table[] = {
    &pol_none_ops,
    &pol_lru_ops,
    &pol_vdnn_ops,
    &pol_dtr_ops,
    &pol_selective_ops,
    &pol_full_ops,
    &pol_offload_ops,
    &pol_capuchin_ops,
    &pol_foresight_ops,
    NULL,
};

const pol_ops_t *const *pol_all(void)
{
    return pol_table;
}

const pol_ops_t *pol_find(const char *name)
{
    size_t i;

    for (i = 0; pol_table[i] != NULL; i++) {
        if (strcmp(pol_table[i]->name, name) == 0) {
            return pol_table[i];
        }
    }
    return NULL;
}

memsvc_status_t pol_lookup_spec(const char *spec, const pol_ops_t **ops_p, const char **params_p)
{
    const char *colon = strchr(spec, ':');
    size_t      len   = (colon != NULL) ? (size_t)(colon - spec) : strlen(spec);
    size_t      i;

    for (i = 0; pol_table[i] != NULL; i++) {
        if (strlen(pol_table[i]->name) == len && strncmp(pol_table[i]->name, spec, len) == 0) {
            *ops_p    = pol_table[i];
            *params_p = (colon != NULL) ? colon + 1 : "";
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_UNKNOWN_KEY;
}

memsvc_status_t pol_parse_params(const char *params,
                                 memsvc_status_t (*fn)(void *arg, const char *key, const char *value,
                                                       char *err, size_t errlen),
                                 void *arg, char *err, size_t errlen)
{
    char           *copy, *pair, *save = NULL;
    memsvc_status_t status = MEMSVC_OK;

    if (params == NULL || params[0] == '\0') {
        return MEMSVC_OK;
    }
    copy = strdup(params);
    if (copy == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (pair = strtok_r(copy, ",", &save); pair != NULL; pair = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(pair, '=');

        if (eq == NULL || eq == pair) {
            snprintf(err, errlen, "policy parameter '%s' is not key=value", pair);
            status = MEMSVC_ERR_PARSE;
            break;
        }
        *eq    = '\0';
        status = fn(arg, pair, eq + 1, err, errlen);
        if (status != MEMSVC_OK) {
            break;
        }
    }
    free(copy);
    return status;
}

/* Parameters for policies that take none. */
memsvc_status_t pol_no_params(void *arg, const char *key, const char *value, char *err,
                              size_t errlen)
{
    snprintf(err, errlen, "unknown policy parameter '%s'", key);
    return MEMSVC_ERR_UNKNOWN_KEY;
}
