/* cmd.h - memtrace subcommands: each takes the arguments after its name, returns an exit code */
#ifndef MT_CMD_H
#define MT_CMD_H

#include "tools/memtrace/trace.h"

/*
 * A subcommand gets argv[0] = its own name and the arguments that follow it; it prints its
 * own errors and usage, and returns 0 on success, 1 on failure, 2 on a usage error.
 * To add one: write mt_cmd_NAME in its own file under tools/memtrace/, declare it here and add
 * a row to the table in main.c.
 */
int mt_cmd_dump(int argc, char **argv);
int mt_cmd_import(int argc, char **argv);
int mt_cmd_gen(int argc, char **argv);    /* gen_cmd.c */
int mt_cmd_models(int argc, char **argv); /* gen_cmd.c */
int mt_cmd_replay(int argc, char **argv); /* replay_cmd.c */
int mt_cmd_tune(int argc, char **argv);   /* tune_cmd.c */
int mt_cmd_cluster(int argc, char **argv); /* cluster_cmd.c */

/* memtrace dump as a function: header and at most limit events of path as JSON lines to out.
 * Errors (printed to stderr): those of mt_reader_open / mt_reader_next. */
memsvc_status_t mt_dump(const char *path, bool header_only, uint64_t limit, FILE *out);

#endif /* MT_CMD_H */
