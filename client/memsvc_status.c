/* memsvc_status.c - names and messages of memsvc_status_t */
#include "client/memsvc_status.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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
    {MEMSVC_ERR_DEFERRED, "MEMSVC_ERR_DEFERRED",
     "one-way operations failed (memsvc_errors tells which)"},
    {MEMSVC_ERR_PERMISSION, "MEMSVC_ERR_PERMISSION", "not permitted: the job belongs to another user"},
    {MEMSVC_ERR_AUTH, "MEMSVC_ERR_AUTH",
     "authentication failed (secret missing, wrong, unsafe, or not proven by the daemon)"},
    {MEMSVC_ERR_SHUTDOWN, "MEMSVC_ERR_SHUTDOWN",
     "the daemon is shutting down (reconnect once it is back)"},
    {MEMSVC_ERR_QUOTA, "MEMSVC_ERR_QUOTA", "the job's quota is used up"},
    {MEMSVC_ERR_OVERLOAD, "MEMSVC_ERR_OVERLOAD",
     "too many requests queued: the daemon sheds load (retry later)"},
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

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t memsvc_utf8_len(const unsigned char *s, size_t n)
{
    size_t   len, i;
    uint32_t cp;

    if (s[0] < 0x80) {
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp  = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp  = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp  = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (((len == 2) && (cp < 0x80)) || ((len == 3) && (cp < 0x800)) ||
        ((len == 4) && ((cp < 0x10000) || (cp > 0x10ffff))) || ((cp >= 0xd800) && (cp <= 0xdfff))) {
        return 0;
    }
    return len;
}

void memsvc_json_string(const char *s, FILE *out)
{
    const unsigned char *p = (const unsigned char *)((s != NULL) ? s : "");
    size_t               n = strlen((const char *)p);

    fputc('"', out);
    while (n > 0) {
        size_t len;

        if ((*p == '"') || (*p == '\\')) {
            fputc('\\', out);
            fputc(*p, out);
            len = 1;
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\u%04x", *p);
            len = 1;
        } else if ((len = memsvc_utf8_len(p, n)) > 0) {
            fwrite(p, 1, len, out);
        } else {
            fputs("\\ufffd", out); /* invalid UTF-8 byte */
            len = 1;
        }
        p += len;
        n -= len;
    }
    fputc('"', out);
}
