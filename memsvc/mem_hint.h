/* mem_hint.h - kernel advice for large buffers: huge pages, and pages mapped ahead of a copy */
#ifndef MEM_HINT_H
#define MEM_HINT_H

#include <stdint.h>
#include <sys/mman.h>

/*
 * Both only advise: a kernel that refuses (older, or THP off) leaves the copies to fault page by
 * page, as they would without. Why they matter: on the development VM (a paravirtualized guest)
 * a 4 KiB page fault costs tens of microseconds, more than copying the page
 * (docs/benchmarks.md, "Replication and recovery" and "Flood").
 */
#define MEM_HINT_HUGE (2ull << 20) /* a transparent huge page */

/* Ask for transparent huge pages over the whole 2 MiB pages inside [p, p + len) (Debian's THP
 * mode is "madvise": without this a fresh 32 MiB buffer takes 8192 faults, with it 16). */
static inline void mem_hint_huge(void *p, uint64_t len)
{
    uintptr_t lo = ((uintptr_t)p + MEM_HINT_HUGE - 1) & ~(uintptr_t)(MEM_HINT_HUGE - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(uintptr_t)(MEM_HINT_HUGE - 1);

    if (hi > lo) {
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    }
}

/* Map the pages of [p, p + len) writable in one system call before they are written
 * (MADV_POPULATE_WRITE, Linux 5.14), instead of one fault per page during the copy. It does
 * not change their contents. */
static inline void mem_hint_populate(void *p, uint64_t len)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t lo = (uintptr_t)p & ~(uintptr_t)4095;
    uintptr_t hi = ((uintptr_t)p + len + 4095) & ~(uintptr_t)4095;

    if (hi > lo) {
        (void)madvise((void *)lo, hi - lo, MADV_POPULATE_WRITE);
    }
#else
    (void)p;
    (void)len;
#endif
}

#endif /* MEM_HINT_H */
