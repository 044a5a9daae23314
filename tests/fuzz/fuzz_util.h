/* fuzz_util.h - what the file-based fuzz targets share: the input as a path to a memory file */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * Replace the contents of one memory file with data[0..size) and return a path that opens it
 * afresh (offset 0): "/proc/self/fd/N". The file lives for the whole process.
 */
static inline const char *fuzz_input_path(const uint8_t *data, size_t size)
{
    static char path[64];
    static int  fd = -1;

    if (fd < 0) {
        fd = memfd_create("fuzz-input", 0);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    if ((ftruncate(fd, 0) != 0) || ((size > 0) && (pwrite(fd, data, size, 0) != (ssize_t)size))) {
        perror("fuzz input");
        abort();
    }
    return path;
}

#endif /* FUZZ_UTIL_H */
