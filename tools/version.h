/* version.h - the version every memsvc program prints for --version: one source, the library's
 * MEMSVC_VERSION_STRING (client/memsvc.h), which the Makefile also reads for the soname */
#ifndef TOOLS_VERSION_H
#define TOOLS_VERSION_H

#include "client/memsvc.h"

#include <stdio.h>
#include <string.h>

/* "memsvcd (memsvc) 0.2.0" on stdout. */
static inline void tool_print_version(const char *prog)
{
    printf("%s (memsvc) %s\n", prog, MEMSVC_VERSION_STRING);
}

/* For programs without getopt: is argv[1] "--version" (then it is printed)? */
static inline int tool_version_asked(int argc, char **argv, const char *prog)
{
    if ((argc == 2) && (strcmp(argv[1], "--version") == 0)) {
        tool_print_version(prog);
        return 1;
    }
    return 0;
}

#endif /* TOOLS_VERSION_H */
