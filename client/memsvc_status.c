/* memsvc_status.c - names and messages of memsvc_status_t */
#include "client/memsvc_status.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

struct status_entry {
    memsvc_status_t status;
    const char     *name;
    const char     *message;
};

static const struct status_entry status_table[] = {
    {MEMSVC_OK, "MEMSVC_OK", "success"},
    {MEMSVC_INPROGRESS, "MEMSVC_INPROGRESS", "operation in progress"},
    {MEMSVC_RECOMPUTE, "MEMSVC_RECOMPUTE", "tensor was dropped and must be recomputed by its owner"},
    {MEMSVC_ERR_INVALID_PARAM, "MEMSVC_ERR_INVALID_PARAM", "invalid parameter"},
    {MEMSVC_ERR_NO_MEMORY, "MEMSVC_ERR_NO_MEMORY", "out of device memory and nothing can be evicted"},
    {MEMSVC_ERR_FRAGMENTED, "MEMSVC_ERR_FRAGMENTED",
     "device memory fragmented: enough free bytes but no free block large enough"},
    {MEMSVC_ERR_HOST_MEMORY, "MEMSVC_ERR_HOST_MEMORY", "out of host memory (and disk)"},
    {MEMSVC_ERR_NO_RESOURCE, "MEMSVC_ERR_NO_RESOURCE", "out of process resources"},
    {MEMSVC_ERR_NOT_FOUND, "MEMSVC_ERR_NOT_FOUND", "no such tensor"},
    {MEMSVC_ERR_EXISTS, "MEMSVC_ERR_EXISTS", "a live tensor already has this key"},
    {MEMSVC_ERR_ILLEGAL_STATE, "MEMSVC_ERR_ILLEGAL_STATE", "operation not legal in the tensor's state"},
    {MEMSVC_ERR_PINNED, "MEMSVC_ERR_PINNED", "tensor is pinned"},
    {MEMSVC_ERR_NOT_PINNED, "MEMSVC_ERR_NOT_PINNED", "release without a matching acquire"},
    {MEMSVC_ERR_OUT_OF_RANGE, "MEMSVC_ERR_OUT_OF_RANGE", "offset or length beyond the tensor's end"},
    {MEMSVC_ERR_UNKNOWN_KEY, "MEMSVC_ERR_UNKNOWN_KEY", "unknown key or name"},
    {MEMSVC_ERR_PARSE, "MEMSVC_ERR_PARSE", "malformed value"},
    {MEMSVC_ERR_IO, "MEMSVC_ERR_IO", "input/output error"},
    {MEMSVC_ERR_PROTOCOL, "MEMSVC_ERR_PROTOCOL", "malformed or unknown message"},
    {MEMSVC_ERR_VERSION, "MEMSVC_ERR_VERSION", "incompatible version"},
    {MEMSVC_ERR_ACCESS, "MEMSVC_ERR_ACCESS", "object belongs to another job"},
    {MEMSVC_ERR_TOO_LARGE, "MEMSVC_ERR_TOO_LARGE", "size exceeds a limit"},
    {MEMSVC_ERR_TRANSPORT, "MEMSVC_ERR_TRANSPORT", "transport error or peer gone"},
    {MEMSVC_ERR_TIMEOUT, "MEMSVC_ERR_TIMEOUT", "timed out"},
    {MEMSVC_ERR_UNSUPPORTED, "MEMSVC_ERR_UNSUPPORTED", "not supported"},
    {MEMSVC_ERR_BUSY, "MEMSVC_ERR_BUSY", "object is busy"},
    {MEMSVC_ERR_CANCELED, "MEMSVC_ERR_CANCELED", "operation canceled"},
    {MEMSVC_ERR_FORMAT, "MEMSVC_ERR_FORMAT", "malformed input file"},
};

static const struct status_entry *status_find(memsvc_status_t status)
{
    size_t i;

    for (i = 0; i < sizeof(status_table) / sizeof(status_table[0]); i++) {
        if (status_table[i].status == status) {
            return &status_table[i];
        }
    }
    return NULL;
}

const char *memsvc_strerror(memsvc_status_t status)
{
    const struct status_entry *e = status_find(status);

    return (e != NULL) ? e->message : "unknown status";
}

const char *memsvc_status_name(memsvc_status_t status)
{
    const struct status_entry *e = status_find(status);

    return (e != NULL) ? e->name : "MEMSVC_ERR_UNKNOWN";
}

void memsvc_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}
