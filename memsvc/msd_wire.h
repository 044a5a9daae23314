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

/* Every record starts with magic (4 bytes), version (2), type (2), from and to (strings of
 * name_cap bytes each). */
static inline uint8_t *msd_put_head(uint8_t *p, uint32_t magic, uint32_t version, uint32_t type,
                                    const char *from, const char *to, size_t name_cap)
{
    p = msd_put_le(p, magic, 4);
    p = msd_put_le(p, version, 2);
    p = msd_put_le(p, type, 2);
    p = msd_put_str(p, from, name_cap);
    return msd_put_str(p, to, name_cap);
}

/* The head of a record of len bytes (at least its head's): its type, in [type_min, type_max],
 * and names into from and to (name_cap bytes each). NULL when it is not such a record. */
static inline const uint8_t *msd_get_head(const uint8_t *p, size_t len, uint32_t magic,
                                          uint32_t version, uint32_t type_min, uint32_t type_max,
                                          uint32_t *type_p, char *from, char *to, size_t name_cap)
{
    uint64_t v;

    if (len < 8 + 2 * name_cap) {
        return NULL;
    }
    p = msd_get_le(p, &v, 4);
    if (v != magic) {
        return NULL;
    }
    p = msd_get_le(p, &v, 2);
    if (v != version) {
        return NULL;
    }
    p = msd_get_le(p, &v, 2);
    if ((v < type_min) || (v > type_max) || !msd_get_str(p, from, name_cap) ||
        !msd_get_str(p + name_cap, to, name_cap)) {
        return NULL;
    }
    *type_p = (uint32_t)v;
    return p + 2 * name_cap;
}

#endif /* MSD_WIRE_H */
