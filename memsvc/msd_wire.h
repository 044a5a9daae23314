/* msd_wire.h - fixed little-endian records between daemons (peer and replication messages):
 * integers of n bytes and NUL-padded printable strings */
#ifndef MSD_WIRE_H
#define MSD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint8_t *msd_put_le(uint8_t *p, uint64_t v, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + n;
}

static inline const uint8_t *msd_get_le(const uint8_t *p, uint64_t *v, unsigned n)
{
    unsigned i;

    *v = 0;
    for (i = 0; i < n; i++) {
        *v |= (uint64_t)p[i] << (8 * i);
    }
    return p + n;
}

/* A NUL-padded string field of cap bytes (the last always NUL). */
static inline uint8_t *msd_put_str(uint8_t *p, const char *s, size_t cap)
{
    memset(p, 0, cap);
    memcpy(p, s, strnlen(s, cap - 1));
    return p + cap;
}

/* A string field: NUL-terminated within cap, printable ASCII; false otherwise. */
static inline bool msd_get_str(const uint8_t *p, char *dst, size_t cap)
{
    size_t n = strnlen((const char *)p, cap), i;

    if (n == cap) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if ((p[i] < 0x20) || (p[i] > 0x7e)) {
            return false;
        }
    }
    memcpy(dst, p, n + 1);
    return true;
}

#endif /* MSD_WIRE_H */
