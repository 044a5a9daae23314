/* msd_auth.h - memsvcd's identities: who a session is, who owns a job, who may administer */
#ifndef MSD_AUTH_H
#define MSD_AUTH_H

#include "client/msp_auth.h"
#include "client/msp_proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

struct msd_server;
struct msd_session;
struct msd_config;

/*
 * A principal is who a session acts for: a uid the kernel vouches for (SO_PEERCRED on the
 * Unix socket, the owner of the peer's socket for tcp on this host), or the holders of the
 * cluster secret (a tcp peer the kernel cannot name that proved the secret). A job belongs to
 * the principal that first bound it, for as long as it has a live session or a tensor
 * (durable tensors kept for re-attach included). docs/security.md.
 */
#define MSD_PRINCIPAL_SECRET (1ull << 32) /* holders of --secret-file (not a uid) */
#define MSD_PRINCIPAL_JOB (2ull << 32)    /* | job: holders of that job's --job-secrets file */
#define MSD_PRINCIPAL_NONE UINT64_MAX     /* nobody yet (a tcp peer not identified) */

typedef struct msd_job_owner {
    uint32_t job;
    uint64_t principal;
    uint32_t sessions; /* bound trainer sessions of the job */
    uint64_t tensors;  /* live tensors of the job (the ownership table's owner entries) */
} msd_job_owner_t;

typedef struct msd_auth {
    msd_job_owner_t *jobs; /* a handful per node: searched linearly */
    size_t           njobs, cap;
    bool             has_secret;
    uint8_t          key[MSP_KEY_BYTES]; /* from --secret-file */
    bool             has_operators;
    gid_t            operator_gid; /* --operator-group */
    char             operator_group[64];
} msd_auth_t;

/* Load --secret-file, resolve --operator-group. Errors (logged): MEMSVC_ERR_AUTH (unsafe or
 * bad secret file), MEMSVC_ERR_IO, MEMSVC_ERR_UNKNOWN_KEY (no such group). */
memsvc_status_t msd_auth_init(msd_auth_t *a, const struct msd_config *cfg);
void            msd_auth_fini(msd_auth_t *a);
/* The same checks at start-up, before anything is built (the key is not kept). */
memsvc_status_t msd_auth_check_config(const struct msd_config *cfg);

/*
 * Is every address HOST resolves to (getaddrinfo) a loopback address (127.0.0.0/8, ::1)?
 * hostport is "HOST:PORT" or "[V6]:PORT". false, with the reason in why, when it is not, or
 * when HOST does not resolve.
 */
bool msd_auth_addr_loopback(const char *hostport, char *why, size_t whylen);
bool msd_auth_sockaddr_loopback(const struct sockaddr *sa);

/*
 * The uid owning the tcp socket on this host whose local end is `client` and whose remote end
 * is `server` (the listener's address): the kernel's word on who opened the connection. Asked
 * of the kernel by four-tuple (NETLINK_SOCK_DIAG); where that is not available, or the
 * listener is a wildcard, found by scanning /proc/net/tcp and /proc/net/tcp6 for the client's
 * address and the server's port. false when no such socket is found (another host, another
 * network namespace).
 */
bool msd_auth_tcp_peer_uid(const struct sockaddr *client, const struct sockaddr *server,
                           uid_t *uid_p);

/* Does uid (gid, and for a local peer its pid's supplementary groups) administer? Root, the
 * daemon's own user, or a member of --operator-group. pid <= 0: groups from the uid's passwd entry
 * (getgrouplist). */
bool msd_auth_is_operator(const msd_auth_t *a, uid_t uid, gid_t gid, pid_t pid);

/*
 * A session binds (HELLO, or AUTH after it): decide its principal and whether it may use
 * `job` (control sessions: no job). MEMSVC_OK, or MEMSVC_ERR_PERMISSION (another principal
 * owns the job) / MEMSVC_ERR_AUTH (nobody vouches for the peer), with the reason in msg and
 * a log line. Engine lock held.
 */
memsvc_status_t msd_auth_bind(struct msd_server *srv, struct msd_session *s, uint32_t job,
                              bool control, char *msg, size_t msglen);

/*
 * The key a tcp session that sent a nonce must prove for job: the job's file in --job-secrets
 * (*job_secret_p true), else the cluster secret. Without either (or with an unsafe job file,
 * logged), a random key nobody holds, so that the challenge looks the same either way and AUTH
 * fails. Caller wipes key.
 */
void msd_auth_session_key(const struct msd_server *srv, uint32_t job, uint8_t key[MSP_KEY_BYTES],
                          bool *job_secret_p);

/* A bound session ended: its job may lose its owner. Engine lock held. */
void msd_auth_session_gone(struct msd_server *srv, struct msd_session *s);

/* A tensor of job was created / forgotten (engine lock held). */
void msd_auth_tensor_add(struct msd_server *srv, uint32_t job);
void msd_auth_tensor_del(struct msd_server *srv, uint32_t job);
/* The owner of job (MSD_PRINCIPAL_NONE if it has none): what the durable journal keeps. */
uint64_t msd_auth_job_owner(const struct msd_server *srv, uint32_t job);
/* A durable tensor of job came back at start: the job is owned again by principal (as it was
 * when the tensor was written) and counts the tensor. MSD_PRINCIPAL_NONE: only counted if the
 * job has an owner. Engine lock held. */
void msd_auth_tensor_restore(struct msd_server *srv, uint32_t job, uint64_t principal);

/* May control session s see job's tensors and figures? Its own jobs, or all for operators. */
bool msd_auth_sees_job(const struct msd_server *srv, const struct msd_session *s, uint32_t job);

/* "uid 1000", "secret holder", "unidentified": for logs. */
const char *msd_auth_principal_name(uint64_t principal, char *buf, size_t len);

#endif /* MSD_AUTH_H */
