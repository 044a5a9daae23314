/* fuzz_trace.c - libFuzzer target for the trace reader: open, then read events to the end */
#include "tests/fuzz/fuzz_util.h"
#include "tools/memtrace/trace.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE   *devnull;
    mt_reader_t   *r;
    mt_event_t     e;
    char           err[256];
    bool           end = false;
    uint64_t       n   = 0;

    if (devnull == NULL) {
        devnull = fopen("/dev/null", "w");
    }
    if (mt_reader_open(fuzz_input_path(data, size), &r, err, sizeof(err)) != MEMSVC_OK) {
        return 0;
    }
    mt_header_print_json(mt_reader_header(r), devnull);
    while ((mt_reader_next(r, &e, &end, err, sizeof(err)) == MEMSVC_OK) && !end) {
        /* Whatever the reader hands out must be printable (strings terminated, arrays sized). */
        mt_event_print_json(&e, devnull);
        if (mt_reader_offset(r) > size) {
            abort();
        }
        n++;
    }
    mt_reader_close(r);
    return 0;
}
