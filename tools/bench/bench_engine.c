/* bench_engine.c - engine costs: alloc+free, resident acquire, backed swap vs memcpy, metadata */
#include "memsvc/eng.h"
#include "tools/version.h"

#include <jemalloc/jemalloc.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUNDS 15

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return (n % 2) ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static eng_t *bench_engine(const char *preset, const char *const *ov, sim_mem_mode_t mode,
                           const char *policy)
{
    sim_desc_t   desc;
    eng_params_t p;
    eng_t       *eng;
    char         err[256];

    if (sim_desc_preset(preset, &desc) != MEMSVC_OK) {
        exit(2);
    }
    while (ov != NULL && *ov != NULL) {
        if (sim_desc_set(&desc, *ov++, err, sizeof(err)) != MEMSVC_OK) {
            fprintf(stderr, "%s\n", err);
            exit(2);
        }
    }
    p.desc   = &desc;
    p.mode   = mode;
    p.clock  = SIM_CLOCK_VIRTUAL;
    p.policy = policy;
    if (eng_create(&p, &eng, err, sizeof(err)) != MEMSVC_OK) {
        fprintf(stderr, "engine: %s\n", err);
        exit(2);
    }
    return eng;
}

static eng_tensor_desc_t bench_desc(const char *key, uint64_t size)
{
    eng_tensor_desc_t d;

    memset(&d, 0, sizeof(d));
    d.key  = key;
    d.size = size;
    d.kind = MEMSVC_KIND_ACTIVATION;
    d.tags = MEMSVC_TAGS_NONE;
    d.job  = 1;
    return d;
}

static uint64_t je_allocated(void)
{
    uint64_t epoch = 1;
    size_t   v = 0, sz = sizeof(v);

    mallctl("epoch", NULL, NULL, &epoch, sizeof(epoch));
    if (mallctl("stats.allocated", &v, &sz, NULL, 0) != 0) {
        return 0;
    }
    return v;
}

int main(int argc, char **argv)
{
    static const char *const big[] = {"hbm=2GiB", "host=2GiB", NULL};
    const int                n     = 200000;
    double                   v[ROUNDS], mc[ROUNDS], sw[ROUNDS];
    double                   alloc_ns, alloc_full_ns, acq_ns, swap_gbs, memcpy_gbs, meta_je, meta_est;
    eng_handle_t            *hs;
    eng_tensor_desc_t        d;
    eng_t                   *eng;
    char                   (*keys)[32];
    int                      r, i;

    if ((argc == 2) && ((strcmp(argv[1], "--help") == 0) || (strcmp(argv[1], "-h") == 0))) {
        printf("usage: bench_engine\n"
               "\n"
               "Engine micro-benchmarks in-process (no daemon): alloc/free and acquire/release\n"
               "costs, swap bandwidth against memcpy measured in the same run, metadata per\n"
               "tensor. Takes no arguments; prints its figures (docs/benchmarks.md).\n");
        return 0;
    }
    if (tool_version_asked(argc, argv, "bench_engine")) {
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "bench_engine: takes no arguments (bench_engine --help)\n");
        return 2;
    }

    /* alloc + free of a 64 KiB tensor, 8 live neighbours around it */
    keys = malloc(sizeof(*keys) * (size_t)n);
    hs   = malloc(sizeof(*hs) * (size_t)n);
    if (keys == NULL || hs == NULL) {
        return 2;
    }
    for (i = 0; i < n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "L%d.mb%d.attn.qkv", i % 61, i % 16);
        snprintf(keys[i] + strlen(keys[i]), sizeof(keys[i]) - strlen(keys[i]), ".%d", i);
    }
    eng = bench_engine("ascend-910b", NULL, SIM_MEM_PHANTOM, "none");
    for (r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();

        for (i = 0; i < n; i++) {
            eng_handle_t h;

            d = bench_desc(keys[i], 65536);
            eng_alloc(eng, &d, 0, NULL, NULL, &h);
            eng_free(eng, h);
        }
        v[r] = (now_ns() - t0) / n;
    }
    alloc_ns = median(v, ROUNDS);

    /* acquire + release of a resident tensor */
    {
        eng_handle_t h;

        d = bench_desc("resident", 1 << 20);
        eng_alloc(eng, &d, 0, NULL, NULL, &h);
        for (r = 0; r < ROUNDS; r++) {
            double t0 = now_ns();

            for (i = 0; i < n; i++) {
                eng_acquire(eng, h, NULL, NULL);
                eng_release(eng, h);
            }
            v[r] = (now_ns() - t0) / n;
        }
        acq_ns = median(v, ROUNDS);
    }
    eng_destroy(eng);

    /* metadata per live tensor: a million tensors in phantom mode */
    {
        uint64_t before;

        free(keys);
        free(hs);
        eng    = bench_engine("ascend-910b", NULL, SIM_MEM_PHANTOM, "none");
        before = je_allocated();
        for (i = 0; i < 1000000; i++) {
            char         key[48];
            eng_handle_t h;

            snprintf(key, sizeof(key), "L%d.mb%d.e%d.fc1", i % 61, (i / 61) % 16, i / 976);
            d        = bench_desc(key, 4096 + (uint64_t)(i % 100) * 512);
            d.device = (unsigned)(i % 8);
            if (eng_alloc(eng, &d, 0, NULL, NULL, &h) != MEMSVC_OK) {
                fprintf(stderr, "alloc %d failed\n", i);
                return 2;
            }
        }
        meta_je  = (double)(je_allocated() - before) / 1e6;
        meta_est = eng_metadata_per_tensor(eng);
        /* alloc + free while a million others are live (hash and allocator are full) */
        for (r = 0; r < ROUNDS; r++) {
            double t0 = now_ns();

            for (i = 0; i < 100000; i++) {
                char         key[48];
                eng_handle_t h;

                snprintf(key, sizeof(key), "X%d.mb%d.fc1", i, r);
                d        = bench_desc(key, 4096 + (uint64_t)(i % 100) * 512);
                d.device = (unsigned)(i % 8);
                eng_alloc(eng, &d, 0, NULL, NULL, &h);
                eng_free(eng, h);
            }
            v[r] = (now_ns() - t0) / 100000;
        }
        alloc_full_ns = median(v, ROUNDS);
        eng_destroy(eng);
    }

    /* backed swap round trip of 64 MiB vs two memcpy of 64 MiB */
    {
        const uint64_t size = 64ull << 20;
        uint8_t       *a = malloc(size), *b = malloc(size);
        eng_handle_t   h;

        if (a == NULL || b == NULL) {
            return 2;
        }
        memset(a, 1, size);
        memset(b, 2, size);
        eng = bench_engine("tiny", big, SIM_MEM_BACKED, "none");
        d   = bench_desc("swap", size);
        eng_alloc(eng, &d, 0, NULL, NULL, &h);
        eng_write(eng, h, 0, a, size);
        for (r = -2; r < ROUNDS; r++) { /* two warm-up rounds touch every page */
            double t0 = now_ns();

            memcpy(b, a, size);
            memcpy(a, b, size);
            if (r >= 0) {
                mc[r] = 2.0 * (double)size / (now_ns() - t0);
            }
            t0 = now_ns();
            eng_swap_out(eng, h);
            while (eng_step(eng)) {
            }
            eng_acquire(eng, h, NULL, NULL);
            while (eng_step(eng)) {
            }
            eng_release(eng, h);
            if (r >= 0) {
                sw[r] = 2.0 * (double)size / (now_ns() - t0);
            }
        }
        eng_destroy(eng);
        free(a);
        free(b);
        swap_gbs   = median(sw, ROUNDS);
        memcpy_gbs = median(mc, ROUNDS);
    }

    printf("engine (medians of %d rounds)\n", ROUNDS);
    printf("  %-42s %10.1f ns   (target < 200 ns)\n", "alloc+free, 64 KiB tensor", alloc_ns);
    printf("  %-42s %10.1f ns   (includes formatting the key)\n",
           "alloc+free, 1M other tensors live", alloc_full_ns);
    printf("  %-42s %10.1f ns   (target < 200 ns)\n", "acquire+release, resident tensor", acq_ns);
    printf("  %-42s %10.2f GB/s\n", "backed swap round trip, 64 MiB", swap_gbs);
    printf("  %-42s %10.2f GB/s\n", "memcpy, 64 MiB (reference, same run)", memcpy_gbs);
    printf("  %-42s %10.0f %%    (target >= 80 %%)\n", "swap / memcpy", 100.0 * swap_gbs / memcpy_gbs);
    printf("  %-42s %10.0f B    (measured by jemalloc; target < 256 B)\n",
           "metadata per live tensor, 1M tensors", meta_je);
    printf("  %-42s %10.0f B    (engine's own estimate)\n", "metadata per live tensor, estimate",
           meta_est);
    return 0;
}
