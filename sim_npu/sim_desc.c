/* sim_desc.c - node presets, key=value overrides, and the size/rate/duration parsers */
#include "sim_npu/sim_desc.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_KIB 1024ull
#define SIM_MIB (1024ull * SIM_KIB)
#define SIM_GIB (1024ull * SIM_MIB)
#define SIM_TIB (1024ull * SIM_GIB)

/* 2^64 as a double: the first value that no longer fits a uint64_t. */
#define SIM_U64_LIMIT 18446744073709551616.0

/*
 * ascend-910b. Confirmed by the Pangu Ultra papers: 8 NPUs per node, 64 GB HBM each, HCCS
 * mesh, 200 Gbps RoCE between nodes. The usable HBM is what torch_npu reports as the total
 * capacity of a 64 GB device, 60.96 GiB (62423 MiB; from users' out-of-memory messages, not a
 * primary source). NOT confirmed by a primary source (see docs/node.md): that capacity, HBM
 * bandwidth, HCCS per-direction bandwidth, the PCIe host link, BF16 peak, all latencies, host
 * memory, disk and the default MFU.
 */
static const sim_desc_t sim_preset_ascend_910b = {
    .name       = "ascend-910b",
    .num_npus   = 8,
    .hbm_bytes  = 62423 * SIM_MIB, /* usable part of a 64 GB device: 60.96 GiB */
    .hbm_bw     = 1.6e12,
    .host_bytes = 1536 * SIM_GIB,
    .disk_bytes = 4 * SIM_TIB,
    .h2d        = { .bw = 25e9, .lat_ns = 2000 },
    .d2h        = { .bw = 25e9, .lat_ns = 2000 },
    .d2d        = { .bw = 56e9, .lat_ns = 2000 },
    .disk       = { .bw = 3e9, .lat_ns = 10000 },
    .nic        = { .bw = 200e9 / 8, .lat_ns = 3000 },
    .flops      = 300e12,
    .mfu        = 0.5,
};

/* tiny: small capacities and slow links, so that tests see pressure and queueing. */
static const sim_desc_t sim_preset_tiny = {
    .name       = "tiny",
    .num_npus   = 2,
    .hbm_bytes  = 64 * SIM_MIB,
    .hbm_bw     = 10e9,
    .host_bytes = 256 * SIM_MIB,
    .disk_bytes = 256 * SIM_MIB,
    .h2d        = { .bw = 1e9, .lat_ns = 10000 },
    .d2h        = { .bw = 1e9, .lat_ns = 10000 },
    .d2d        = { .bw = 2e9, .lat_ns = 5000 },
    .disk       = { .bw = 0.5e9, .lat_ns = 50000 },
    .nic        = { .bw = 1e9, .lat_ns = 20000 },
    .flops      = 1e12,
    .mfu        = 0.5,
};

static const struct {
    const char       *name;
    const sim_desc_t *desc;
} sim_presets[] = {
    { "ascend-910b", &sim_preset_ascend_910b },
    { "tiny", &sim_preset_tiny },
};

static const char *const sim_preset_name_list[] = { "ascend-910b", "tiny", NULL };

#define SIM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

memsvc_status_t sim_desc_preset(const char *name, sim_desc_t *desc_p)
{
    size_t i;

    if ((name == NULL) || (desc_p == NULL)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    for (i = 0; i < SIM_ARRAY_LEN(sim_presets); i++) {
        if (strcmp(name, sim_presets[i].name) == 0) {
            *desc_p = *sim_presets[i].desc;
            return MEMSVC_OK;
        }
    }
    return MEMSVC_ERR_UNKNOWN_KEY;
}

const char *const *sim_desc_preset_names(void)
{
    return sim_preset_name_list;
}

/* ---- parsers ------------------------------------------------------------------------------ */

typedef struct sim_unit {
    const char *suffix;
    double      scale;
} sim_unit_t;

/*
 * Split "<number><spaces><unit>" with a strict number: digits, an optional fraction and an
 * optional exponent; no sign, no leading space, no hex, no inf/nan. On success *value_p is
 * finite and >= 0, *unit_p points at the unit (possibly ""), and *integral_p says the number
 * was plain digits (so that callers can parse it exactly). MEMSVC_ERR_PARSE otherwise.
 */
static memsvc_status_t sim_parse_number(const char *s, double *value_p, const char **unit_p,
                                        int *integral_p)
{
    const char *p = s;
    char       *end;
    double      v;
    int         digits = 0;

    if (s == NULL) {
        return MEMSVC_ERR_PARSE;
    }
    *integral_p = 1;
    while (isdigit((unsigned char)*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        *integral_p = 0;
        p++;
        while (isdigit((unsigned char)*p)) {
            p++;
            digits++;
        }
    }
    if (digits == 0) {
        return MEMSVC_ERR_PARSE;
    }
    if ((*p == 'e') || (*p == 'E')) {
        const char *q = p + 1;

        if ((*q == '+') || (*q == '-')) {
            q++;
        }
        if (isdigit((unsigned char)*q)) {
            *integral_p = 0;
            while (isdigit((unsigned char)*q)) {
                q++;
            }
            p = q;
        }
    }
    errno = 0;
    v     = strtod(s, &end);
    if ((end != p) || (errno == ERANGE && v != 0.0) || !isfinite(v) || (v < 0.0)) {
        return MEMSVC_ERR_PARSE;
    }
    while ((*p == ' ') || (*p == '\t')) {
        p++;
    }
    *value_p = v;
    *unit_p  = p;
    return MEMSVC_OK;
}

static const sim_unit_t *sim_find_unit(const sim_unit_t *units, size_t n, const char *unit,
                                       int nocase)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if ((nocase ? strcasecmp(unit, units[i].suffix) : strcmp(unit, units[i].suffix)) == 0) {
            return &units[i];
        }
    }
    return NULL;
}

static const sim_unit_t sim_size_units[] = {
    { "", 1.0 },          { "B", 1.0 },
    { "K", 0x1p10 },      { "M", 0x1p20 },      { "G", 0x1p30 },      { "T", 0x1p40 },
    { "P", 0x1p50 },
    { "KiB", 0x1p10 },    { "MiB", 0x1p20 },    { "GiB", 0x1p30 },    { "TiB", 0x1p40 },
    { "PiB", 0x1p50 },
    { "KB", 1e3 },        { "MB", 1e6 },        { "GB", 1e9 },        { "TB", 1e12 },
    { "PB", 1e15 },
};

memsvc_status_t sim_parse_size(const char *s, uint64_t *bytes_p)
{
    const sim_unit_t *u;
    const char       *unit;
    double            v, bytes;
    int               integral;

    if ((bytes_p == NULL) || (sim_parse_number(s, &v, &unit, &integral) != MEMSVC_OK)) {
        return MEMSVC_ERR_PARSE;
    }
    u = sim_find_unit(sim_size_units, SIM_ARRAY_LEN(sim_size_units), unit, 1);
    if (u == NULL) {
        return MEMSVC_ERR_PARSE;
    }
    if (integral) {
        /* Exact for every 64-bit value: digits times an integral scale, overflow-checked. */
        unsigned long long n, scale = (unsigned long long)u->scale;
        char              *end;

        errno = 0;
        n     = strtoull(s, &end, 10);
        if ((errno == ERANGE) || __builtin_mul_overflow(n, scale, &n)) {
            return MEMSVC_ERR_PARSE;
        }
        *bytes_p = n;
        return MEMSVC_OK;
    }
    bytes = round(v * u->scale);
    if (bytes >= SIM_U64_LIMIT) {
        return MEMSVC_ERR_PARSE;
    }
    *bytes_p = (uint64_t)bytes;
    return MEMSVC_OK;
}

static const sim_unit_t sim_rate_units[] = {
    { "", 1.0 },
    { "B/s", 1.0 },       { "KB/s", 1e3 },      { "MB/s", 1e6 },      { "GB/s", 1e9 },
    { "TB/s", 1e12 },     { "KiB/s", 0x1p10 },  { "MiB/s", 0x1p20 },  { "GiB/s", 0x1p30 },
    { "TiB/s", 0x1p40 },
    { "bps", 1.0 / 8 },   { "Kbps", 1e3 / 8 },  { "Mbps", 1e6 / 8 },  { "Gbps", 1e9 / 8 },
    { "Tbps", 1e12 / 8 }, { "b/s", 1.0 / 8 },   { "Kb/s", 1e3 / 8 },  { "Mb/s", 1e6 / 8 },
    { "Gb/s", 1e9 / 8 },  { "Tb/s", 1e12 / 8 },
    { "FLOPS", 1.0 },     { "KFLOPS", 1e3 },    { "MFLOPS", 1e6 },    { "GFLOPS", 1e9 },
    { "TFLOPS", 1e12 },   { "PFLOPS", 1e15 },
    { "/s", 1.0 },        { "K/s", 1e3 },       { "M/s", 1e6 },       { "G/s", 1e9 },
    { "T/s", 1e12 },
};

memsvc_status_t sim_parse_rate(const char *s, double *per_second_p)
{
    const sim_unit_t *u;
    const char       *unit;
    double            v, r;
    int               integral;

    if ((per_second_p == NULL) || (sim_parse_number(s, &v, &unit, &integral) != MEMSVC_OK)) {
        return MEMSVC_ERR_PARSE;
    }
    /* Case matters: "Gbps" is bits, "GB/s" bytes. */
    u = sim_find_unit(sim_rate_units, SIM_ARRAY_LEN(sim_rate_units), unit, 0);
    if (u == NULL) {
        return MEMSVC_ERR_PARSE;
    }
    r = v * u->scale;
    if (!isfinite(r)) {
        return MEMSVC_ERR_PARSE;
    }
    *per_second_p = r;
    return MEMSVC_OK;
}

static const sim_unit_t sim_time_units[] = {
    { "", 1.0 },   { "ns", 1.0 }, { "us", 1e3 }, { "\xc2\xb5s", 1e3 }, { "ms", 1e6 },
    { "s", 1e9 },  { "min", 60e9 },
};

memsvc_status_t sim_parse_duration(const char *s, uint64_t *ns_p)
{
    const sim_unit_t *u;
    const char       *unit;
    double            v, ns;
    int               integral;

    if ((ns_p == NULL) || (sim_parse_number(s, &v, &unit, &integral) != MEMSVC_OK)) {
        return MEMSVC_ERR_PARSE;
    }
    u = sim_find_unit(sim_time_units, SIM_ARRAY_LEN(sim_time_units), unit, 0);
    if (u == NULL) {
        return MEMSVC_ERR_PARSE;
    }
    ns = round(v * u->scale);
    if (ns >= SIM_U64_LIMIT) {
        return MEMSVC_ERR_PARSE;
    }
    *ns_p = (uint64_t)ns;
    return MEMSVC_OK;
}

/* ---- overrides ----------------------------------------------------------------------------- */

typedef enum sim_key_kind {
    SIM_KEY_COUNT,    /* integer 1..SIM_MAX_NPUS */
    SIM_KEY_SIZE,     /* bytes, > 0 unless zero_ok */
    SIM_KEY_RATE,     /* per second, > 0 */
    SIM_KEY_DURATION, /* ns, >= 0 */
    SIM_KEY_FRACTION, /* (0, 1] */
    SIM_KEY_ALLOC     /* "tlsf" or "bytes" */
} sim_key_kind_t;

typedef struct sim_key {
    const char    *key;
    sim_key_kind_t kind;
    size_t         off;  /* field offset in sim_desc_t */
    size_t         off2; /* second field set by the same key, or 0 */
    uint64_t       min;  /* smallest accepted size */
    const char    *help;
} sim_key_t;

#define SIM_OFF(f) offsetof(sim_desc_t, f)

static const sim_key_t sim_keys[] = {
    { "npus", SIM_KEY_COUNT, SIM_OFF(num_npus), 0, 1, "NPUs on the node, 1..64" },
    { "hbm", SIM_KEY_SIZE, SIM_OFF(hbm_bytes), 0, 512, "HBM per NPU, size" },
    { "hbm_bw", SIM_KEY_RATE, SIM_OFF(hbm_bw), 0, 0, "HBM bandwidth, rate" },
    { "host", SIM_KEY_SIZE, SIM_OFF(host_bytes), 0, 1, "host pool, size" },
    { "disk", SIM_KEY_SIZE, SIM_OFF(disk_bytes), 0, 0, "disk tier, size (0: none)" },
    { "peer", SIM_KEY_SIZE, SIM_OFF(peer_bytes), 0, 0,
      "peer tier: room in peers' host pools over the nic, size (0: none)" },
    { "h2d_bw", SIM_KEY_RATE, SIM_OFF(h2d.bw), 0, 0, "host-to-device rate" },
    { "h2d_lat", SIM_KEY_DURATION, SIM_OFF(h2d.lat_ns), 0, 0, "host-to-device latency" },
    { "d2h_bw", SIM_KEY_RATE, SIM_OFF(d2h.bw), 0, 0, "device-to-host rate" },
    { "d2h_lat", SIM_KEY_DURATION, SIM_OFF(d2h.lat_ns), 0, 0, "device-to-host latency" },
    { "link_bw", SIM_KEY_RATE, SIM_OFF(h2d.bw), SIM_OFF(d2h.bw), 0, "h2d_bw and d2h_bw" },
    { "link_lat", SIM_KEY_DURATION, SIM_OFF(h2d.lat_ns), SIM_OFF(d2h.lat_ns), 0,
      "h2d_lat and d2h_lat" },
    { "d2d_bw", SIM_KEY_RATE, SIM_OFF(d2d.bw), 0, 0, "device-to-device rate" },
    { "d2d_lat", SIM_KEY_DURATION, SIM_OFF(d2d.lat_ns), 0, 0, "device-to-device latency" },
    { "disk_bw", SIM_KEY_RATE, SIM_OFF(disk.bw), 0, 0, "disk rate" },
    { "disk_lat", SIM_KEY_DURATION, SIM_OFF(disk.lat_ns), 0, 0, "disk latency" },
    { "nic_bw", SIM_KEY_RATE, SIM_OFF(nic.bw), 0, 0, "NIC rate" },
    { "nic_lat", SIM_KEY_DURATION, SIM_OFF(nic.lat_ns), 0, 0, "NIC latency" },
    { "flops", SIM_KEY_RATE, SIM_OFF(flops), 0, 0, "peak FLOP/s per NPU" },
    { "mfu", SIM_KEY_FRACTION, SIM_OFF(mfu), 0, 0, "fraction of peak, (0, 1]" },
    { "alloc", SIM_KEY_ALLOC, SIM_OFF(alloc), 0, 0,
      "tlsf (512 B blocks, fragmentation) or bytes (a byte count, phantom memory only)" },
};

static void sim_key_list(char *buf, size_t len)
{
    size_t i, used = 0;

    buf[0] = '\0';
    for (i = 0; (i < SIM_ARRAY_LEN(sim_keys)) && (used < len); i++) {
        int n = snprintf(buf + used, len - used, "%s%s", (i == 0) ? "" : ", ", sim_keys[i].key);

        if (n < 0) {
            break;
        }
        used += (size_t)n;
    }
}

static void sim_trim(const char *s, size_t n, char *out, size_t outlen)
{
    while ((n > 0) && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while ((n > 0) && isspace((unsigned char)s[n - 1])) {
        n--;
    }
    if (n >= outlen) {
        n = outlen - 1;
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

/*
 * Parse `value` for key `k` and store it into *desc (both fields for link_bw/link_lat).
 * MEMSVC_ERR_PARSE (with a message) if malformed or out of range; *desc untouched then.
 */
static memsvc_status_t sim_key_apply(const sim_key_t *k, const char *value, sim_desc_t *desc,
                                     char *err, size_t errlen)
{
    char    *base = (char *)desc;
    uint64_t u;
    double   d;

    switch (k->kind) {
    case SIM_KEY_COUNT:
        if ((sim_parse_size(value, &u) != MEMSVC_OK) || (strspn(value, "0123456789") !=
                                                         strlen(value)) ||
            (u < 1) || (u > SIM_MAX_NPUS)) {
            goto err_parse;
        }
        *(unsigned *)(base + k->off) = (unsigned)u;
        break;
    case SIM_KEY_SIZE:
        if ((sim_parse_size(value, &u) != MEMSVC_OK) || (u < k->min)) {
            goto err_parse;
        }
        *(uint64_t *)(base + k->off) = u;
        break;
    case SIM_KEY_RATE:
        if ((sim_parse_rate(value, &d) != MEMSVC_OK) || !(d > 0.0)) {
            goto err_parse;
        }
        *(double *)(base + k->off) = d;
        if (k->off2 != 0) {
            *(double *)(base + k->off2) = d;
        }
        break;
    case SIM_KEY_DURATION:
        if (sim_parse_duration(value, &u) != MEMSVC_OK) {
            goto err_parse;
        }
        *(uint64_t *)(base + k->off) = u;
        if (k->off2 != 0) {
            *(uint64_t *)(base + k->off2) = u;
        }
        break;
    case SIM_KEY_FRACTION:
        if ((sim_parse_rate(value, &d) != MEMSVC_OK) || !(d > 0.0) || (d > 1.0)) {
            goto err_parse;
        }
        *(double *)(base + k->off) = d;
        break;
    case SIM_KEY_ALLOC:
        if (strcmp(value, "tlsf") == 0) {
            *(sim_alloc_mode_t *)(base + k->off) = SIM_ALLOC_TLSF;
        } else if (strcmp(value, "bytes") == 0) {
            *(sim_alloc_mode_t *)(base + k->off) = SIM_ALLOC_BYTES;
        } else {
            goto err_parse;
        }
        break;
    }
    return MEMSVC_OK;

err_parse:
    memsvc_errf(err, errlen, "%s: bad value \"%s\" (expected %s)", k->key, value, k->help);
    return MEMSVC_ERR_PARSE;
}

memsvc_status_t sim_desc_set(sim_desc_t *desc, const char *assignment, char *err, size_t errlen)
{
    const char *eq;
    char        key[64], value[128], keys[512];
    size_t      i;

    if ((desc == NULL) || (assignment == NULL)) {
        memsvc_errf(err, errlen, "no description or assignment");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    eq = strchr(assignment, '=');
    if (eq == NULL) {
        memsvc_errf(err, errlen, "\"%s\": expected key=value", assignment);
        return MEMSVC_ERR_PARSE;
    }
    if ((size_t)(eq - assignment) >= sizeof(key)) {
        sim_key_list(keys, sizeof(keys));
        memsvc_errf(err, errlen, "unknown key \"%.40s...\"; valid keys: %s", assignment, keys);
        return MEMSVC_ERR_UNKNOWN_KEY;
    }
    if (strlen(eq + 1) >= sizeof(value)) {
        memsvc_errf(err, errlen, "\"%.40s...\": value too long", assignment);
        return MEMSVC_ERR_PARSE;
    }
    sim_trim(assignment, (size_t)(eq - assignment), key, sizeof(key));
    sim_trim(eq + 1, strlen(eq + 1), value, sizeof(value));
    for (i = 0; i < SIM_ARRAY_LEN(sim_keys); i++) {
        if (strcmp(key, sim_keys[i].key) == 0) {
            return sim_key_apply(&sim_keys[i], value, desc, err, errlen);
        }
    }
    sim_key_list(keys, sizeof(keys));
    memsvc_errf(err, errlen, "unknown key \"%s\"; valid keys: %s", key, keys);
    return MEMSVC_ERR_UNKNOWN_KEY;
}

static int sim_link_ok(const sim_link_desc_t *l)
{
    return isfinite(l->bw) && (l->bw > 0.0);
}

memsvc_status_t sim_desc_validate(const sim_desc_t *desc, char *err, size_t errlen)
{
    static const char *const link_names[] = { "h2d", "d2h", "d2d", "disk", "nic" };
    const sim_link_desc_t   *links[5];
    size_t                   i;

    if (desc == NULL) {
        memsvc_errf(err, errlen, "no description");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    links[0] = &desc->h2d;
    links[1] = &desc->d2h;
    links[2] = &desc->d2d;
    links[3] = &desc->disk;
    links[4] = &desc->nic;
    if ((desc->num_npus < 1) || (desc->num_npus > SIM_MAX_NPUS)) {
        memsvc_errf(err, errlen, "npus = %u: must be 1..%d", desc->num_npus, SIM_MAX_NPUS);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (desc->hbm_bytes < 512) {
        memsvc_errf(err, errlen, "hbm = %llu B: must be at least 512 B",
                 (unsigned long long)desc->hbm_bytes);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (desc->host_bytes == 0) {
        memsvc_errf(err, errlen, "host = 0: the host pool must not be empty");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if ((desc->disk_bytes != 0) && (desc->disk_bytes < 512)) {
        memsvc_errf(err, errlen, "disk = %llu B: must be 0 (none) or at least 512 B",
                 (unsigned long long)desc->disk_bytes);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    for (i = 0; i < 5; i++) {
        if (!sim_link_ok(links[i])) {
            memsvc_errf(err, errlen, "%s_bw = %g: must be a positive rate", link_names[i],
                     links[i]->bw);
            return MEMSVC_ERR_INVALID_PARAM;
        }
    }
    if (!isfinite(desc->hbm_bw) || !(desc->hbm_bw > 0.0)) {
        memsvc_errf(err, errlen, "hbm_bw = %g: must be a positive rate", desc->hbm_bw);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!isfinite(desc->flops) || !(desc->flops > 0.0)) {
        memsvc_errf(err, errlen, "flops = %g: must be positive", desc->flops);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!(desc->mfu > 0.0) || (desc->mfu > 1.0)) {
        memsvc_errf(err, errlen, "mfu = %g: must be in (0, 1]", desc->mfu);
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (memchr(desc->name, '\0', sizeof(desc->name)) == NULL) {
        memsvc_errf(err, errlen, "name is not terminated");
        return MEMSVC_ERR_INVALID_PARAM;
    }
    return MEMSVC_OK;
}

/* ---- formatting ---------------------------------------------------------------------------- */

uint64_t sim_link_time_ns(const sim_link_desc_t *link, uint64_t bytes)
{
    long double t;
    uint64_t    ns, total;

    if (bytes == 0) {
        return link->lat_ns;
    }
    if (!(link->bw > 0.0)) {
        return UINT64_MAX;
    }
    /* long double keeps bytes * 1e9 exact far beyond any tensor size: no spurious +1 ns. */
    t = ceill((long double)bytes * 1e9L / (long double)link->bw);
    if (t >= (long double)SIM_U64_LIMIT) {
        return UINT64_MAX;
    }
    ns = (uint64_t)t;
    if (__builtin_add_overflow(ns, link->lat_ns, &total)) {
        return UINT64_MAX;
    }
    return total;
}

const char *sim_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double                   v = (double)bytes;
    int                      u = -1;

    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return buf;
    }
    while ((v >= 1024.0) && (u < 5)) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, len, "%.1f %s", v, units[u]);
    return buf;
}

const char *sim_format_time(uint64_t ns, char *buf, size_t len)
{
    if (ns < 1000) {
        snprintf(buf, len, "%llu ns", (unsigned long long)ns);
    } else if (ns < 1000000) {
        snprintf(buf, len, "%.3f us", (double)ns / 1e3);
    } else if (ns < 1000000000) {
        snprintf(buf, len, "%.3f ms", (double)ns / 1e6);
    } else {
        snprintf(buf, len, "%.3f s", (double)ns / 1e9);
    }
    return buf;
}

/* "key = value" with the value in the friendliest unit that parses back exactly. */
static void sim_print_size(FILE *f, const char *key, uint64_t bytes)
{
    char     buf[48];
    uint64_t back;

    sim_format_size(bytes, buf, sizeof(buf));
    if ((sim_parse_size(buf, &back) != MEMSVC_OK) || (back != bytes)) {
        snprintf(buf, sizeof(buf), "%llu B", (unsigned long long)bytes);
    }
    fprintf(f, "%s = %s\n", key, buf);
}

static void sim_print_rate(FILE *f, const char *key, double r, int flops)
{
    static const char *const byte_units[] = { "TB/s", "GB/s", "MB/s", "B/s" };
    static const char *const flop_units[] = { "PFLOPS", "TFLOPS", "GFLOPS", "FLOPS" };
    static const double      scales[]     = { 1e12, 1e9, 1e6, 1.0 };
    const char *const       *units        = flops ? flop_units : byte_units;
    double                   scale0       = flops ? 1e3 : 1.0;
    char                     buf[48];
    double                   back;
    int                      i;

    for (i = 0; i < 4; i++) {
        double scale = (i < 3) ? scales[i] * scale0 : 1.0;

        if ((r >= scale) || (i == 3)) {
            snprintf(buf, sizeof(buf), "%.6g %s", r / scale, units[i]);
            break;
        }
    }
    if ((sim_parse_rate(buf, &back) != MEMSVC_OK) || (back != r)) {
        snprintf(buf, sizeof(buf), "%.17g", r);
    }
    fprintf(f, "%s = %s\n", key, buf);
}

static void sim_print_time(FILE *f, const char *key, uint64_t ns)
{
    char     buf[48];
    uint64_t back;

    sim_format_time(ns, buf, sizeof(buf));
    if ((sim_parse_duration(buf, &back) != MEMSVC_OK) || (back != ns)) {
        snprintf(buf, sizeof(buf), "%llu ns", (unsigned long long)ns);
    }
    fprintf(f, "%s = %s\n", key, buf);
}

void sim_desc_print(const sim_desc_t *desc, void *file)
{
    static const char *const names[] = { "h2d", "d2h", "d2d", "disk", "nic" };
    const sim_link_desc_t   *links[5];
    FILE                    *f = (file != NULL) ? file : stdout;
    char                     key[32];
    int                      i;

    if (desc == NULL) {
        return;
    }
    links[0] = &desc->h2d;
    links[1] = &desc->d2h;
    links[2] = &desc->d2d;
    links[3] = &desc->disk;
    links[4] = &desc->nic;
    fprintf(f, "preset = %s\n", desc->name);
    fprintf(f, "npus = %u\n", desc->num_npus);
    sim_print_size(f, "hbm", desc->hbm_bytes);
    sim_print_rate(f, "hbm_bw", desc->hbm_bw, 0);
    sim_print_size(f, "host", desc->host_bytes);
    sim_print_size(f, "disk", desc->disk_bytes);
    if (desc->peer_bytes != 0) {
        sim_print_size(f, "peer", desc->peer_bytes); /* (absent: none, as before it existed) */
    }
    for (i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "%s_bw", names[i]);
        sim_print_rate(f, key, links[i]->bw, 0);
        snprintf(key, sizeof(key), "%s_lat", names[i]);
        sim_print_time(f, key, links[i]->lat_ns);
    }
    sim_print_rate(f, "flops", desc->flops, 1);
    fprintf(f, "mfu = %.17g\n", desc->mfu);
    if (desc->alloc != SIM_ALLOC_TLSF) {
        fprintf(f, "alloc = %s\n", sim_alloc_mode_name(desc->alloc));
    }
}
