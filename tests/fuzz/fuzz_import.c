/* fuzz_import.c - libFuzzer target for the importers: each input goes through all three formats */
#include "tests/fuzz/fuzz_util.h"
#include "tools/memtrace/import.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char       out[64];
    mt_import_opts_t  opts;
    mt_import_stats_t st;
    const char       *in = fuzz_input_path(data, size);
    char              err[512];
    int               f;

    if (out[0] == '\0') {
        /* A real file: mt_import unlinks its output when a conversion fails. */
        snprintf(out, sizeof(out), "/tmp/fuzz_import.%d.trace", (int)getpid());
    }
    for (f = 0; f < MT_IMPORT_COUNT; f++) {
        mt_import_opts_init(&opts);
        opts.format = (mt_import_format_t)f;
        opts.model  = "fuzz";
        (void)mt_import(&opts, in, out, &st, err, sizeof(err));
    }
    unlink(out);
    return 0;
}
