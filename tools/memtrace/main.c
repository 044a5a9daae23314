/* main.c - memtrace: dispatch to the subcommands (dump, import, ...) listed in one table */
#include "tools/version.h"
#include "tools/memtrace/cmd.h"

#include <stdio.h>
#include <string.h>

typedef struct mt_cmd {
    const char *name;                 /* subcommand, as typed */
    int (*fn)(int argc, char **argv); /* NULL: not available yet */
    const char *summary;              /* one line for the usage text */
} mt_cmd_t;

static const mt_cmd_t mt_cmds[] = {
    {"gen", mt_cmd_gen, "generate a synthetic training-step trace"},
    {"import", mt_cmd_import, "convert a PyTorch snapshot, Chrome trace or DTR log to a trace"},
    {"dump", mt_cmd_dump, "print a trace's header and events as JSON lines"},
    {"replay", mt_cmd_replay, "replay a trace on a simulated node under a policy"},
    {"models", mt_cmd_models, "list the built-in model configurations"},
    {"tune", mt_cmd_tune, "sweep policies, HBM budgets and policy parameters over traces"},
    {"cluster", mt_cmd_cluster, "a job's durable state per node, its replication and recovery"},
};

#define MT_NUM_CMDS (sizeof(mt_cmds) / sizeof(mt_cmds[0]))

static void usage(FILE *out)
{
    size_t i;

    fprintf(out,
            "usage: memtrace COMMAND [ARGS...]   (memtrace COMMAND --help for its options)\n\n");
    for (i = 0; i < MT_NUM_CMDS; i++) {
        fprintf(out, "  %-8s %s%s\n", mt_cmds[i].name, mt_cmds[i].summary,
                (mt_cmds[i].fn == NULL) ? " (not available yet)" : "");
    }
}

int main(int argc, char **argv)
{
    size_t i;

    if ((argc < 2) || (strcmp(argv[1], "--help") == 0) || (strcmp(argv[1], "-h") == 0) ||
        (strcmp(argv[1], "help") == 0)) {
        usage((argc < 2) ? stderr : stdout);
        return (argc < 2) ? 2 : 0;
    }
    if (tool_version_asked(argc, argv, "memtrace")) {
        return 0;
    }
    for (i = 0; i < MT_NUM_CMDS; i++) {
        if (strcmp(argv[1], mt_cmds[i].name) == 0) {
            if (mt_cmds[i].fn == NULL) {
                fprintf(stderr, "memtrace: '%s' is not available yet\n", argv[1]);
                return 1;
            }
            return mt_cmds[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "memtrace: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
