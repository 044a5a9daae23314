/* integ.h - helpers of the integration tests: start and stop real memsvcd processes, raw UCX peers
 */
#ifndef INTEG_H
#define INTEG_H

#include "client/memsvc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct integ_daemon {
    pid_t pid;
    char  addr[64]; /* "127.0.0.1:PORT" */
    char  log[256]; /* its stderr */
} integ_daemon_t;

/*
 * Start memsvcd on a free loopback port with extra arguments (NULL-terminated list after
 * `args`), and wait (bounded) until it answers a ping. false if it did not come up.
 */
bool integ_daemon_start(integ_daemon_t *d, const char *const *args);

/*
 * Start memsvcd with exactly these arguments (NULL-terminated; no --listen is added) and
 * return at once: d->addr is set to addr (what the daemon listens on, for the helpers), its
 * stderr goes to d->log. With netns, it runs in that network namespace ("ip netns exec").
 */
bool integ_daemon_spawn(integ_daemon_t *d, const char *addr, const char *netns,
                        const char *const *args);

/* A port free on the loopback address now. */
int integ_free_port(void);
/* The same on a given address (a restart on the port of a daemon that stopped). */
bool integ_daemon_start_at(integ_daemon_t *d, const char *addr, const char *const *args);

/* Send sig and wait (up to 30 s) for the daemon to end: its wait status, or -1 if it did not
 * end (it is then killed when the test binary exits). */
int integ_daemon_signal(integ_daemon_t *d, int sig);

/* SIGTERM, wait up to 5 s, then SIGKILL. Returns the exit status (or -1 if it was killed). */
int integ_daemon_stop(integ_daemon_t *d);

/* Where daemons' and children's output goes: $MEMSVC_TEST_LOG_DIR (make test: under the build
 * directory), else /tmp. */
const char *integ_log_dir(void);

/* A free loopback TCP port (bound and released: free at that moment), or -1. */
int integ_free_port(void);

/*
 * Run argv[0] (a path) with argv, stdin from /dev/null, extra environment entries env
 * ("NAME=value", NULL-terminated; may be NULL); wait (bounded: 60 s, then SIGKILL). Its stdout
 * and stderr go to out and err (NUL-terminated, cut to fit; either may be NULL). Returns the
 * exit code, or -1 if it was killed by a signal or did not end in time.
 */
int integ_run(const char *const *argv, const char *const *env, char *out, size_t outlen, char *err,
              size_t errlen);

/* Does the daemon's log contain `text`? */
bool integ_log_contains(const integ_daemon_t *d, const char *text);

/* Start a daemon (integ_daemon_start) or fail the test at once. */
#define START(d, args)                                                                             \
    do {                                                                                           \
        if (!integ_daemon_start((d), (args))) {                                                    \
            CU_FAIL_FATAL("memsvcd did not start");                                                \
        }                                                                                          \
    } while (0)

/* Wait (bounded, 10 s) until the daemon counts `want` live sessions (the stats session
 * included); *st holds the last STATS. */
bool integ_wait_sessions(const integ_daemon_t *d, uint64_t want, memsvc_stats_t *st);

/* SIGKILL a child and reap it. */
void integ_kill_wait(pid_t pid);

/* Connect as (job, rank, device) with a bounded timeout; _flags: with MEMSVC_CONN_* flags. */
memsvc_status_t integ_connect(const integ_daemon_t *d, uint32_t job, uint32_t rank,
                              memsvc_conn_h *conn_p);
memsvc_status_t integ_connect_flags(const integ_daemon_t *d, uint32_t job, uint32_t rank,
                                    uint32_t flags, memsvc_conn_h *conn_p);

/*
 * After one-way calls: memsvc_flush, then the oldest deferred error, checked to name op and
 * handle. Returns its status, MEMSVC_OK when there was none (and flush said so), or
 * MEMSVC_ERR_PROTOCOL when flush and the error queue disagree or the error names another
 * operation.
 */
memsvc_status_t integ_deferred(memsvc_conn_h conn, memsvc_op_t op, memsvc_handle_t handle);

/* Control-session stats. */
memsvc_status_t integ_stats(const integ_daemon_t *d, memsvc_stats_t *stats_p);

/*
 * Run a client in another process: this test binary re-executed (UCX state does not survive
 * fork), acting a role, and wait (bounded) until it reports ready. Roles:
 *   "hold"     job 3 rank 5: durable "w.param" (4096 bytes, test_fill seed 99) written, and
 *              "x.act" (8192 bytes); both acquired; then it waits to be killed.
 *   "bigwrite" job 1 rank 1: allocates "big" (256 KiB) and writes it in a loop.
 * Returns the pid, or -1.
 */
pid_t integ_spawn(const integ_daemon_t *d, const char *role);
/* integ_spawn for any role, with environment entries as for integ_spawn_child. */
pid_t integ_spawn_env(const integ_daemon_t *d, const char *role, const char *const *env);
/* The same without waiting for "ready": the child (this test binary, re-executed) gets role, the
 * daemon's address, its pipe and the NAME, VALUE pairs of env (NULL-terminated; may be NULL);
 * *fd_p reads what it says. With MEMSVC_INTEG_NETNS in env, it runs in that network namespace
 * ("ip netns exec"). Tracked (killed when the test binary exits). */
pid_t integ_spawn_child(const integ_daemon_t *d, const char *role, const char *const *env,
                        int *fd_p);

/* Roles "local-*" of integ_spawn, acted by tests/integ/test_local.c (never returns). */
void integ_local_child(integ_daemon_t *d, const char *role, int ready_fd);
/* Roles "restart-*", acted by tests/integ/test_restart.c (never returns). */
void integ_restart_child(integ_daemon_t *d, const char *role, int ready_fd);

/* Say "ready" on a role's pipe (exits if the test runner is gone). */
void integ_child_ready(int fd);

/* Roles "auth-*", acted by tests/integ/test_auth.c under another uid (never returns). */
void integ_auth_child(integ_daemon_t *d, const char *role, int fd);

/* Kill this process at exit if it is still running (a test left early). */
void integ_track(pid_t pid);

/* Role "cluster-writer", acted by tests/integ/test_cluster.c (never returns). */
void integ_cluster_child(integ_daemon_t *d, const char *role, int fd);

/* Roles "fastpin-*", acted by tests/integ/test_fastpin.c (never returns). */
void integ_fastpin_child(integ_daemon_t *d, const char *role, int ready_fd);

/* Roles "limits-*" of integ_spawn, acted by tests/integ/test_limits.c (never returns). */
void integ_limits_child(integ_daemon_t *d, const char *role, int ready_fd);
/* test_service.c's roles ("service-*"). */
void integ_service_child(integ_daemon_t *d, const char *role, int ready_fd);

/* ---- a raw peer: sends hand-made headers, collects replies -------------------------------- */

typedef struct integ_raw integ_raw_t;

memsvc_status_t integ_raw_connect(const integ_daemon_t *d, integ_raw_t **raw_p);
void            integ_raw_close(integ_raw_t *raw);

/*
 * Send one request message (header bytes, optional payload) and wait (bounded) for one reply
 * message. *status_p gets the first reply's status, *id_p its id, msg its text.
 * MEMSVC_ERR_TIMEOUT if nothing came back.
 */
memsvc_status_t integ_raw_call(integ_raw_t *raw, const void *hdr, size_t hlen, const void *payload,
                               size_t plen, memsvc_status_t *status_p, uint64_t *id_p, char *msg,
                               size_t msglen);

/*
 * Send one active message of id (header only) and wait (bounded) for it to go; then wait up to
 * wait_ms for a message of the same id back: its header into reply (up to cap bytes),
 * *rlen_p its length (0: nothing came).
 */
memsvc_status_t integ_raw_am(integ_raw_t *raw, unsigned id, const void *hdr, size_t hlen,
                             unsigned wait_ms, void *reply, size_t cap, size_t *rlen_p);
/* Send one request message without waiting for anything (no progress): a client that never
 * takes its replies. MEMSVC_ERR_TOO_LARGE past 512 messages in flight. */
memsvc_status_t integ_raw_post(integ_raw_t *raw, const void *hdr, size_t hlen, const void *payload,
                               size_t plen);
/* Progress the raw peer's worker for ns (replies are counted, sends move on). */
void     integ_raw_progress(integ_raw_t *raw, uint64_t ns);
unsigned integ_raw_replies(const integ_raw_t *raw);
/* Progress (bounded by ns) until the reply to request `id` comes; its status and message. */
memsvc_status_t integ_raw_wait_id(integ_raw_t *raw, uint64_t id, uint64_t ns,
                                  memsvc_status_t *status_p, char *msg, size_t msglen);

/* Build a HELLO header (version, job, rank) into buf; returns its length. */
size_t integ_hello(void *buf, size_t cap, uint32_t version, uint32_t job, uint32_t rank);

#endif /* INTEG_H */
