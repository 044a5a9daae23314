/* msd_peer.h - memsvcd across nodes: the cluster file, the cluster secret, links to peer daemons */
#ifndef MSD_PEER_H
#define MSD_PEER_H

#include "client/memsvc.h"

#include <ucp/api/ucp.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSD_CLUSTER_MAX 1024u    /* nodes in a cluster file */
#define MSD_NODE_NAME_MAX 31u    /* characters of a node name: [A-Za-z0-9._-] */
#define MSD_NODE_ADDR_MAX 63u    /* characters of HOST:PORT */
#define MSD_CLUSTER_HASH_LEN 32u /* crypto_generichash of the canonical form */
#define MSD_PEER_KEY_LEN 32u     /* crypto_auth_KEYBYTES */
#define MSD_SECRET_MIN 16u       /* bytes a cluster secret must have at least */
#define MSD_SECRET_MAX 4096u

/* ---- msd_cluster.c: the cluster file (also read by memsvc-ctl --cluster) ------------------- */

typedef struct msd_cluster_node {
    char     name[MSD_NODE_NAME_MAX + 1];
    char     addr[MSD_NODE_ADDR_MAX + 1]; /* as written: HOST:PORT */
    unsigned line;                        /* where it is in the file */
} msd_cluster_node_t;

typedef struct msd_cluster {
    unsigned            n; /* nodes, in file order */
    msd_cluster_node_t *nodes;
    uint8_t             hash[MSD_CLUSTER_HASH_LEN];
    char                hash_hex[2 * MSD_CLUSTER_HASH_LEN + 1];
} msd_cluster_t;

/*
 * Read a cluster file: one node a line, "NAME HOST:PORT"; '#' starts a comment; blank lines
 * are skipped. Each node's name and address must be unique (addresses compared after
 * parsing). On error: MEMSVC_ERR_FORMAT (err: "FILE:LINE: what"), MEMSVC_ERR_NOT_FOUND (no
 * file), MEMSVC_ERR_NO_RESOURCE; *c is left empty. The hash covers the canonical form
 * ("memsvc-cluster 1\n" then "NAME ADDRESS\n" per node in file order): comments, blank lines
 * and spacing do not change it, order does.
 */
memsvc_status_t msd_cluster_load(const char *path, msd_cluster_t *c, char *err, size_t errlen);
void            msd_cluster_free(msd_cluster_t *c);
/* Same endpoint: family, address and port. */
bool            msd_same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* Index of the node named name, or -1. */
int msd_cluster_find(const msd_cluster_t *c, const char *name);

/*
 * Read the cluster secret into a MAC key. The file must be a regular file owned by this
 * process's effective uid and readable by no one else (mode 0600 or 0400), holding
 * MSD_SECRET_MIN..MSD_SECRET_MAX bytes (trailing white space ignored). The key is
 * crypto_generichash of those bytes. MEMSVC_ERR_ACCESS (ownership, mode), MEMSVC_ERR_NOT_FOUND,
 * MEMSVC_ERR_PARSE (size); err says which.
 */
memsvc_status_t msd_cluster_secret_load(const char *path, uint8_t key[MSD_PEER_KEY_LEN], char *err,
                                        size_t errlen);

/* ---- msd_peer.c: links to the other daemons of the cluster ---------------------------------- */

struct msd_server;
struct msd_session;
struct msd_config;
struct msp_req;
struct msp_rep;

typedef struct msd_peers msd_peers_t;

/*
 * Load the cluster file and secret named by cfg (cluster_file, node_name, cluster_secret) and
 * check them; errors are logged, naming the file and line. MEMSVC_ERR_FORMAT, MEMSVC_ERR_PARSE,
 * MEMSVC_ERR_ACCESS, MEMSVC_ERR_NOT_FOUND, MEMSVC_ERR_INVALID_PARAM (node not in the file).
 */
memsvc_status_t msd_peers_create(const struct msd_config *cfg, msd_peers_t **peers_p);
void            msd_peers_destroy(msd_peers_t *peers);
/* This node's address in the cluster file. */
const char *msd_peers_self_addr(const msd_peers_t *peers);

/* Register the peer message handler on the tcp worker (server set-up, before serving). */
memsvc_status_t msd_peers_attach(struct msd_server *srv);
/* Dial, heartbeat, time out (loop 0, engine lock held). */
void msd_peers_tick(struct msd_server *srv);
/* When msd_peers_tick next has something to do (msp_now_ns() time; engine lock held). */
uint64_t msd_peers_next(struct msd_server *srv);
/* An accepted endpoint died: if it carried a peer link, the link is lost (engine lock held). */
void msd_peers_session_gone(struct msd_server *srv, struct msd_session *s);
/* Close the links this daemon dialed (loop 0, before the worker is destroyed). */
void msd_peers_stop(struct msd_server *srv);
/* The PEERS request: this node and a page of its peer table as a reply body (engine lock). */
memsvc_status_t msd_peers_op(struct msd_server *srv, const struct msp_req *req, struct msp_rep *rep,
                             void **payload_p);

/* For replication (msd_repl.c), engine lock held: the cluster's size and this node's index. */
unsigned    msd_peers_count(const msd_peers_t *peers);
unsigned    msd_peers_self(const msd_peers_t *peers);
const char *msd_peers_name(const msd_peers_t *peers, unsigned i);
/* Node i's endpoint while its authenticated link is up, else NULL. */
ucp_ep_h msd_peers_ep(const msd_peers_t *peers, unsigned i);
/* Node i has been down (or never reached, or refused) for at least lost_ns. */
bool msd_peers_lost(const msd_peers_t *peers, unsigned i, uint64_t lost_ns, uint64_t now);
/* The node that sent a message named `from` on ep over its authenticated link, or -1. */
int msd_peers_sender(const msd_peers_t *peers, const char *from, ucp_ep_h ep);
/* This daemon is stopping: nothing more is sent to peers. */
bool msd_peers_stopped(const msd_peers_t *peers);

#endif /* MSD_PEER_H */
