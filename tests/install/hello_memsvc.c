/* hello_memsvc.c - a program built against an installed libmemsvc (pkg-config memsvc): prints
 * the library's version; with a daemon address, runs one operator's batch through it */
#include <memsvc/memsvc.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS, .flags = MEMSVC_ALLOC_PIN};
    memsvc_conn_params_t  p;
    memsvc_conn_h         conn;
    memsvc_batch_h        b;
    memsvc_handle_t       out = 0;
    memsvc_status_t       s;
    uint32_t              proto = 0;
    const char           *v     = memsvc_version(&proto);

    printf("libmemsvc %s, protocol %u (header %s)\n", v, proto, MEMSVC_VERSION_STRING);
    if (strcmp(v, MEMSVC_VERSION_STRING) != 0) {
        return 1;
    }
    if (argc < 2) {
        return 0;
    }
    memset(&p, 0, sizeof(p));
    p.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_TIMEOUT_MS;
    p.address    = argv[1];
    p.timeout_ms = 10000;
    s            = memsvc_connect(&p, &conn);
    if (s != MEMSVC_OK) {
        fprintf(stderr, "connect %s: %s\n", argv[1], memsvc_strerror(s));
        return 1;
    }
    if ((memsvc_batch_create(conn, &b) != MEMSVC_OK) ||
        (memsvc_batch_alloc(b, "hello.out", 4096, &ap, NULL) != MEMSVC_OK) ||
        (memsvc_batch_submit(b, NULL) != MEMSVC_OK) ||
        (memsvc_batch_result(b, 0, &out) != MEMSVC_OK) ||
        (memsvc_release(conn, out) != MEMSVC_OK) || (memsvc_free(conn, out) != MEMSVC_OK) ||
        (memsvc_flush(conn) != MEMSVC_OK)) {
        fprintf(stderr, "an operator's batch failed\n");
        return 1;
    }
    printf("one batch through memsvcd over %s: ok\n", memsvc_conn_transport(conn));
    memsvc_batch_destroy(b);
    memsvc_close(conn);
    return 0;
}
