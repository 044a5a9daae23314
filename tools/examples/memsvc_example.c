/* memsvc_example.c - a small libmemsvc client: allocate, write, force swaps, read back, print */
#include "client/memsvc.h"
#include "tools/version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXAMPLE_TENSORS 6

/* Fill buf with a pattern that depends on the tensor's index. */
static void fill(uint8_t *buf, uint64_t len, unsigned idx)
{
    uint64_t i;

    for (i = 0; i < len; i++) {
        buf[i] = (uint8_t)(i * 31u + idx * 7u + (i >> 12));
    }
}

static int fail(const char *what, memsvc_status_t status)
{
    fprintf(stderr, "memsvc_example: %s: %s (%s)\n", what, memsvc_strerror(status),
            memsvc_status_name(status));
    return 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: memsvc_example [HOST:PORT]\n"
                 "\n"
                 "Connects to memsvcd (HOST:PORT, else $MEMSVC_ADDR, else 127.0.0.1:13337) as job 1\n"
                 "rank 0, writes six tensors that together need 1.5x a device's HBM (the daemon\n"
                 "swaps), reads them back and compares. The durable weight outlives the run; run\n"
                 "it again and it is re-attached by its key (memsvc_lookup).\n");
}

/* Tensor i: the durable weight (0) is re-attached when an earlier run left it behind (the
 * daemon keeps it --keep-durable seconds); the activations are allocated anew. */
static memsvc_status_t example_tensor(memsvc_conn_h conn, unsigned i, const char *key,
                                      uint64_t size, memsvc_handle_t *h_p)
{
    memsvc_alloc_params_t ap = {0};
    memsvc_tensor_info_t  info;

    if ((i == 0) && (memsvc_lookup(conn, key, &info) == MEMSVC_OK) && (info.size == size)) {
        printf("  re-attached %-16s (durable, left by an earlier run)\n", key);
        *h_p = info.handle;
        return MEMSVC_OK;
    }
    ap.field_mask = MEMSVC_ALLOC_FIELD_KIND | MEMSVC_ALLOC_FIELD_TAGS | MEMSVC_ALLOC_FIELD_FLAGS;
    ap.kind       = (i == 0) ? MEMSVC_KIND_PARAM : MEMSVC_KIND_ACTIVATION;
    ap.tags       = MEMSVC_TAGS_NONE;
    ap.tags.layer = (int32_t)i;
    ap.flags      = (i == 0) ? MEMSVC_ALLOC_DURABLE : 0;
    return memsvc_alloc(conn, key, size, &ap, h_p);
}

int main(int argc, char **argv)
{
    memsvc_conn_params_t  params = {0};
    memsvc_handle_t       h[EXAMPLE_TENSORS];
    memsvc_stats_t       *st;
    memsvc_status_t       status;
    memsvc_conn_h         conn;
    memsvc_hint_t         hint = {0};
    const char           *addr = (argc > 1) ? argv[1] : getenv("MEMSVC_ADDR");
    uint64_t              size;
    uint8_t              *want, *got;
    unsigned              i;
    char                  key[64];
    int                   rc = 0;

    if ((argc == 2) && ((strcmp(argv[1], "--help") == 0) || (strcmp(argv[1], "-h") == 0))) {
        usage(stdout);
        return 0;
    }
    if (tool_version_asked(argc, argv, "memsvc_example")) {
        return 0;
    }
    if ((argc > 2) || ((argc == 2) && (argv[1][0] == '-'))) {
        fprintf(stderr, "memsvc_example: unexpected argument '%s'\n", argv[argc - 1]);
        usage(stderr);
        return 2;
    }
    params.field_mask = MEMSVC_CONN_FIELD_JOB | MEMSVC_CONN_FIELD_RANK | MEMSVC_CONN_FIELD_NAME;
    params.job        = 1;
    params.rank       = 0;
    params.name       = "memsvc_example";
    if (addr != NULL) {
        params.field_mask |= MEMSVC_CONN_FIELD_ADDRESS;
        params.address = addr;
    }
    status = memsvc_connect(&params, &conn);
    if (status != MEMSVC_OK) {
        return fail("connect", status);
    }
    printf("connected to memsvcd over %s\n", memsvc_conn_transport(conn));

    /* Size the tensors so that all of them together are 1.5x the device's HBM: the daemon
     * has to swap some out to host memory to make room. */
    st = calloc(1, sizeof(*st));
    if ((st == NULL) || ((status = memsvc_stats(conn, st)) != MEMSVC_OK)) {
        memsvc_close(conn);
        return fail("stats", (st == NULL) ? MEMSVC_ERR_NO_RESOURCE : status);
    }
    if (strcmp(st->mode, "phantom") == 0) {
        fprintf(stderr, "memsvc_example: memsvcd keeps sizes only (phantom memory): this example "
                        "writes and reads bytes; start memsvcd with --memory backed\n");
        free(st);
        memsvc_close(conn);
        return 1;
    }
    size = st->dev[0].capacity / 4;
    if (size > (64ull << 20)) {
        size = 64ull << 20; /* a large preset: keep the example quick (no swap then) */
    }
    printf("device 0 has %llu MiB of HBM (%s memory); %u tensors of %llu MiB each\n",
           (unsigned long long)(st->dev[0].capacity >> 20), st->mode, EXAMPLE_TENSORS,
           (unsigned long long)(size >> 20));
    want = malloc(size);
    got  = malloc(size);
    if ((want == NULL) || (got == NULL)) {
        rc = fail("malloc", MEMSVC_ERR_NO_RESOURCE);
        goto out;
    }

    hint.type = MEMSVC_HINT_STEP_BEGIN;
    hint.step = 0;
    memsvc_hint(conn, &hint);
    for (i = 0; i < EXAMPLE_TENSORS; i++) {
        snprintf(key, sizeof(key), (i == 0) ? "example.L%u.weight" : "example.L%u.act", i);
        status = example_tensor(conn, i, key, size, &h[i]);
        if (status != MEMSVC_OK) {
            rc = fail("alloc", status);
            goto out;
        }
        fill(want, size, i);
        status = memsvc_write(conn, h[i], 0, want, size);
        if (status != MEMSVC_OK) {
            rc = fail("write", status);
            goto out;
        }
        printf("  wrote %-22s handle 0x%llx\n", key, (unsigned long long)h[i]);
    }

    /* Acquire each (the daemon brings swapped tensors back), read, compare, release. */
    for (i = 0; i < EXAMPLE_TENSORS; i++) {
        memsvc_tensor_info_t info;

        snprintf(key, sizeof(key), (i == 0) ? "example.L%u.weight" : "example.L%u.act", i);
        memsvc_lookup(conn, key, &info);
        status = memsvc_acquire(conn, h[i]);
        if (status < 0) {
            rc = fail("acquire", status);
            goto out;
        }
        status = memsvc_read(conn, h[i], 0, got, size);
        memsvc_release(conn, h[i]);
        if (status != MEMSVC_OK) {
            rc = fail("read", status);
            goto out;
        }
        fill(want, size, i);
        printf("  read  %-22s was %-10s -> %s\n", key, memsvc_state_name(info.state),
               (memcmp(want, got, size) == 0) ? "bytes match" : "BYTES DIFFER");
        rc |= (memcmp(want, got, size) != 0);
    }
    hint.type = MEMSVC_HINT_STEP_END;
    memsvc_hint(conn, &hint);

    status = memsvc_stats(conn, st);
    if (status == MEMSVC_OK) {
        printf("device 0: %llu swap-outs (%llu MiB), %llu swap-ins (%llu MiB), stall %.3f ms\n",
               (unsigned long long)st->dev[0].swap_outs,
               (unsigned long long)(st->dev[0].swap_out_bytes >> 20),
               (unsigned long long)st->dev[0].swap_ins,
               (unsigned long long)(st->dev[0].swap_in_bytes >> 20), st->dev[0].stall_ns / 1e6);
    }
    printf("done; now try: memsvc-ctl stats  (and memsvc-ctl list 1)\n");
    /* Free the activations. The durable weight outlives this process: the daemon keeps it
     * for --keep-durable seconds so that a restarted rank re-attaches with memsvc_lookup (the
     * next run of this example does). */
    for (i = 1; i < EXAMPLE_TENSORS; i++) {
        memsvc_free(conn, h[i]);
    }
out:
    free(want);
    free(got);
    free(st);
    memsvc_close(conn);
    return rc;
}
