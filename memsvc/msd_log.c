/* msd_log.c - memsvcd's logger (see msd_log.h) */
#include "memsvc/msd_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int     log_level = MSD_LOG_INFO;
static pthread_mutex_t log_lock  = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"err", "warn", "info", "debug"};

void msd_log_set_level(msd_log_level_t level)
{
    atomic_store(&log_level, (int)level);
}

msd_log_level_t msd_log_get_level(void)
{
    return (msd_log_level_t)atomic_load(&log_level);
}

bool msd_log_parse_level(const char *name, msd_log_level_t *level)
{
    unsigned i;

    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (msd_log_level_t)i;
            return true;
        }
    }
    return false;
}

const char *msd_log_level_name(msd_log_level_t level)
{
    return ((unsigned)level < sizeof(level_names) / sizeof(level_names[0])) ? level_names[level]
                                                                            : "?";
}

void msd_vlog(msd_log_level_t level, const char *comp, const char *fmt, va_list ap)
{
    struct timespec ts;
    struct tm       tm;
    char            stamp[32];

    if ((int)level > atomic_load(&log_level)) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ldZ %-5s %s: ", stamp, ts.tv_nsec / 1000000L, msd_log_level_name(level),
            comp);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&log_lock);
}

void msd_log(msd_log_level_t level, const char *comp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    msd_vlog(level, comp, fmt, ap);
    va_end(ap);
}

void msd_log_rl(msd_log_rl_t *rl, unsigned interval_ms, msd_log_level_t level, const char *comp,
                const char *fmt, ...)
{
    struct timespec    ts;
    unsigned long long now, next, dropped;
    char               text[512];
    va_list            ap;

    if ((int)level > atomic_load(&log_level)) {
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now  = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
    next = atomic_load(&rl->next_ns);
    /* One thread wins the slot of this interval; the others count themselves out. */
    if ((now < next) ||
        !atomic_compare_exchange_strong(&rl->next_ns, &next,
                                        now + (unsigned long long)interval_ms * 1000000ull)) {
        atomic_fetch_add(&rl->suppressed, 1);
        return;
    }
    dropped = atomic_exchange(&rl->suppressed, 0);
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (dropped > 0) {
        msd_log(level, comp, "%s (%llu similar lines suppressed)", text, dropped);
    } else {
        msd_log(level, comp, "%s", text);
    }
}
