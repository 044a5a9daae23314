/* msd_log.h - memsvcd's logger: every line carries a timestamp, a level and a component */
#ifndef MSD_LOG_H
#define MSD_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef enum msd_log_level {
    MSD_LOG_ERR   = 0,
    MSD_LOG_WARN  = 1,
    MSD_LOG_INFO  = 2,
    MSD_LOG_DEBUG = 3
} msd_log_level_t;

/* Lines above this level are dropped (default MSD_LOG_INFO). Thread-safe to change. */
void            msd_log_set_level(msd_log_level_t level);
msd_log_level_t msd_log_get_level(void);
/* "err", "warn", "info", "debug" -> level; false when the name is unknown. */
bool        msd_log_parse_level(const char *name, msd_log_level_t *level);
const char *msd_log_level_name(msd_log_level_t level);

/*
 * One line to the log target. stderr: "2026-12-01T20:01:06.123Z info  server: text"; when
 * stderr is the journal's stream (systemd sets JOURNAL_STREAM) the line carries a "<N>" syslog
 * priority prefix instead of the timestamp, which journald records itself. Thread-safe.
 */
void msd_log(msd_log_level_t level, const char *comp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void msd_vlog(msd_log_level_t level, const char *comp, const char *fmt, va_list ap);

/*
 * Each file that logs defines MSD_LOG_COMP (its component: "server", "local", "loop", ...)
 * before including this header, and logs with these.
 */
#ifndef MSD_LOG_COMP
#define MSD_LOG_COMP "memsvcd"
#endif
#define LOG_ERR(...)   msd_log(MSD_LOG_ERR, MSD_LOG_COMP, __VA_ARGS__)
#define LOG_WARN(...)  msd_log(MSD_LOG_WARN, MSD_LOG_COMP, __VA_ARGS__)
#define LOG(...)       msd_log(MSD_LOG_INFO, MSD_LOG_COMP, __VA_ARGS__)
#define LOG_DEBUG(...) msd_log(MSD_LOG_DEBUG, MSD_LOG_COMP, __VA_ARGS__)

/* Where lines go: stderr (default) or the systemd journal (sd_journal_send: MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER=memsvcd and MEMSVC_COMPONENT fields; a line journald refuses goes to
 * stderr). */
typedef enum msd_log_target {
    MSD_LOG_TO_STDERR  = 0,
    MSD_LOG_TO_JOURNAL = 1
} msd_log_target_t;

/* false (and stderr kept) when the journal is asked for but no journald listens. */
bool msd_log_set_target(msd_log_target_t target);
/* "stderr", "journal" -> target; false when the name is unknown. */
bool        msd_log_parse_target(const char *name, msd_log_target_t *target);
const char *msd_log_target_name(msd_log_target_t target);

/* Route UCX's own log messages (ucs_log) through this logger, component "ucx", instead of
 * UCX printing them to stdout/stderr. Call once, before UCX is initialized. */
void msd_log_take_ucx(void);
/* While on, UCX's lines logged by this thread are debug lines: what they report is expected
 * (msd_server.c closes the listener's socket under UCX). */
void msd_log_ucx_expected(bool on);

/*
 * Rate-limited lines, for what a client can cause at will (bad input, refused connections):
 * each call site logs at most one line per interval; the lines it suppressed in between are
 * counted and summed up ("N similar lines suppressed") on the next line it logs. State is
 * per call site (a static msd_log_rl_t), shared by the threads that reach it.
 */
typedef struct msd_log_rl {
    _Atomic unsigned long long next_ns;    /* monotonic time before which lines are dropped */
    _Atomic unsigned long long suppressed; /* dropped since the last line */
} msd_log_rl_t;

void msd_log_rl(msd_log_rl_t *rl, unsigned interval_ms, msd_log_level_t level, const char *comp,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define LOG_RL_LEVEL(level, interval_ms, ...)                                                      \
    do {                                                                                           \
        static msd_log_rl_t rl_site_;                                                              \
        msd_log_rl(&rl_site_, (interval_ms), (level), MSD_LOG_COMP, __VA_ARGS__);                  \
    } while (0)
/* Info level, at most one line per interval_ms from this call site. */
#define LOG_RL(interval_ms, ...) LOG_RL_LEVEL(MSD_LOG_INFO, interval_ms, __VA_ARGS__)
#define LOG_WARN_RL(interval_ms, ...) LOG_RL_LEVEL(MSD_LOG_WARN, interval_ms, __VA_ARGS__)

#endif /* MSD_LOG_H */
