/* msd_log.c - memsvcd's logger (see msd_log.h) */
#include "memsvc/msd_log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION /* CODE_FILE/CODE_LINE would name this file, not the caller */
#include <systemd/sd-journal.h>
#include <ucs/debug/log_def.h>

static _Atomic int     log_level = MSD_LOG_INFO;
static pthread_mutex_t log_lock  = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int     log_target = MSD_LOG_TO_STDERR;
static pthread_once_t  log_stream_once = PTHREAD_ONCE_INIT;
static bool            log_stderr_is_journal; /* set once (log_stream_check) */

/* syslog(3) priority of each level (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG), for journald;
 * <syslog.h> is not included: its LOG_ERR would clash with the macro of msd_log.h. */
static const int level_prio[] = {3, 4, 6, 7};

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

/* Is stderr the journal's stream? systemd sets JOURNAL_STREAM to its "device:inode". */
static void log_stream_check(void)
{
    const char        *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat        st;

    log_stderr_is_journal = (env != NULL) && (sscanf(env, "%llu:%llu", &dev, &ino) == 2) &&
                            (fstat(STDERR_FILENO, &st) == 0) &&
                            ((unsigned long long)st.st_dev == dev) &&
                            ((unsigned long long)st.st_ino == ino);
}

void msd_vlog(msd_log_level_t level, const char *comp, const char *fmt, va_list ap)
{
    struct timespec ts;
    struct tm       tm;
    char            stamp[32], text[1024];
    int             prio;

    if ((int)level > atomic_load(&log_level)) {
        return;
    }
    vsnprintf(text, sizeof(text), fmt, ap); /* longer lines are cut: one line stays one line */
    prio = level_prio[((unsigned)level <= MSD_LOG_DEBUG) ? level : MSD_LOG_DEBUG];
    if ((atomic_load(&log_target) == MSD_LOG_TO_JOURNAL) &&
        (sd_journal_send("MESSAGE=%s: %s", comp, text, "PRIORITY=%d", prio,
                         "SYSLOG_IDENTIFIER=memsvcd", "MEMSVC_COMPONENT=%s", comp, NULL) >= 0)) {
        return; /* journald did not take it: the line goes to stderr instead */
    }
    pthread_once(&log_stream_once, log_stream_check);
    if (log_stderr_is_journal) {
        pthread_mutex_lock(&log_lock);
        fprintf(stderr, "<%d>%s: %s\n", prio, comp, text);
        pthread_mutex_unlock(&log_lock);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", stamp, ts.tv_nsec / 1000000L,
            msd_log_level_name(level), comp, text);
    pthread_mutex_unlock(&log_lock);
}

void msd_log(msd_log_level_t level, const char *comp, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    msd_vlog(level, comp, fmt, ap);
    va_end(ap);
}

static const char *const target_names[] = {"stderr", "journal"};

bool msd_log_set_target(msd_log_target_t target)
{
    struct stat st;

    /* sd_journal_send says nothing when no journald listens: check for its socket. */
    if ((target == MSD_LOG_TO_JOURNAL) && (stat("/run/systemd/journal/socket", &st) != 0)) {
        atomic_store(&log_target, (int)MSD_LOG_TO_STDERR);
        return false;
    }
    atomic_store(&log_target, (int)target);
    return true;
}

bool msd_log_parse_target(const char *name, msd_log_target_t *target)
{
    unsigned i;

    for (i = 0; i < sizeof(target_names) / sizeof(target_names[0]); i++) {
        if (strcmp(name, target_names[i]) == 0) {
            *target = (msd_log_target_t)i;
            return true;
        }
    }
    return false;
}

const char *msd_log_target_name(msd_log_target_t target)
{
    return ((unsigned)target < sizeof(target_names) / sizeof(target_names[0]))
               ? target_names[target]
               : "?";
}

static _Thread_local bool ucx_expected; /* msd_log_ucx_expected */

void msd_log_ucx_expected(bool on)
{
    ucx_expected = on;
}

/* A UCX log line: UCX has already filtered it by its own UCX_LOG_LEVEL (default warn). */
static ucs_log_func_rc_t log_ucx_handler(const char *file, unsigned line, const char *function,
                                         ucs_log_level_t level,
                                         const ucs_log_component_config_t *comp_conf,
                                         const char *message, va_list ap)
{
    msd_log_level_t mine;
    char            text[896];

    if (level <= UCS_LOG_LEVEL_ERROR) {
        mine = MSD_LOG_ERR;
    } else if (level == UCS_LOG_LEVEL_WARN) {
        mine = MSD_LOG_WARN;
    } else if (level <= UCS_LOG_LEVEL_INFO) {
        mine = MSD_LOG_INFO;
    } else {
        mine = MSD_LOG_DEBUG;
    }
    if (ucx_expected) {
        mine = MSD_LOG_DEBUG;
    }
    vsnprintf(text, sizeof(text), message, ap);
    msd_log(mine, "ucx", "%s (%s:%u)", text, file, line);
    return UCS_LOG_FUNC_RC_STOP; /* not printed by UCX itself */
}

void msd_log_take_ucx(void)
{
    ucs_log_push_handler(log_ucx_handler);
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
