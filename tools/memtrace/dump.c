/* dump.c - memtrace dump: print a trace's header, then its events, as JSON lines */
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/trace.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void mt_dump_usage(FILE *out)
{
    fprintf(out, "usage: memtrace dump [--header] [--limit N] TRACE\n"
                 "  Print the header as one JSON object, then one JSON object per event.\n"
                 "  TRACE may be '-' for standard input.\n"
                 "  --header    print the header only\n"
                 "  --limit N   print at most N events\n");
}

/* Write the dump of the trace at path to out. Errors are printed to stderr. */
memsvc_status_t mt_dump(const char *path, bool header_only, uint64_t limit, FILE *out)
{
    mt_reader_t    *r;
    mt_event_t      e;
    memsvc_status_t status;
    uint64_t        n = 0;
    char            err[256];
    bool            end = false;

    status = mt_reader_open(path, &r, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace dump: %s: %s\n", path, err);
        return status;
    }
    mt_header_print_json(mt_reader_header(r), out);
    while (!header_only && (n < limit)) {
        status = mt_reader_next(r, &e, &end, err, sizeof(err));
        if (status != MEMSVC_OK) {
            fprintf(stderr, "memtrace dump: %s: %s\n", path, err);
            break;
        }
        if (end) {
            break;
        }
        mt_event_print_json(&e, out);
        n++;
    }
    mt_reader_close(r);
    return status;
}

int mt_cmd_dump(int argc, char **argv)
{
    const char *path        = NULL;
    uint64_t    limit       = UINT64_MAX;
    bool        header_only = false;
    int         i;

    for (i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--help") == 0) || (strcmp(argv[i], "-h") == 0)) {
            mt_dump_usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--header") == 0) {
            header_only = true;
        } else if ((strcmp(argv[i], "--limit") == 0) && (i + 1 < argc)) {
            char *end;

            limit = strtoull(argv[++i], &end, 10);
            if ((*end != '\0') || (argv[i][0] == '-')) {
                fprintf(stderr, "memtrace dump: bad --limit '%s'\n", argv[i]);
                return 2;
            }
        } else if ((path == NULL) && ((argv[i][0] != '-') || (strcmp(argv[i], "-") == 0))) {
            path = argv[i];
        } else {
            mt_dump_usage(stderr);
            return 2;
        }
    }
    if (path == NULL) {
        mt_dump_usage(stderr);
        return 2;
    }
    return (mt_dump(path, header_only, limit, stdout) == MEMSVC_OK) ? 0 : 1;
}
