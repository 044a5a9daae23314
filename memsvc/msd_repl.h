/* msd_repl.h - durable tensors replicated to peer daemons' host memory, and brought back from
 * them when a node starts empty (docs/cluster.md, "Replication") */
#ifndef MSD_REPL_H
#define MSD_REPL_H

#include "client/memsvc.h"

#include <stdbool.h>
#include <stdint.h>

struct msd_server;
struct dur_meta;

typedef struct msd_repl msd_repl_t;

/*
 * Start replication on a server that is in a cluster (srv->peers): register its messages on
 * the tcp worker. Does nothing when cfg.replicas is 0 and no peer may hold replicas here
 * (cfg.replica_bytes 0). Server set-up, before serving.
 */
memsvc_status_t msd_repl_attach(struct msd_server *srv);
/* Free what is left (after the worker is destroyed: no callback runs any more). */
void msd_repl_destroy(struct msd_server *srv);

/* The hooks below take the engine lock's holder's word and do nothing when replication is off. */

/* A durable tensor was committed or came back: there is something to send. */
void msd_repl_changed(struct msd_server *srv);
/* A durable tensor was freed (its journal DEL has sequence seq): its replicas go too. */
void msd_repl_deleted(struct msd_server *srv, const char *key, const struct dur_meta *m,
                      uint64_t seq);
/* Node i's authenticated link came up (new_boot: it started since we last saw it) or went. */
void msd_repl_link(struct msd_server *srv, unsigned i, bool up, bool new_boot);
/* Place replicas, send what is owed, within the rate (loop 0). */
void msd_repl_tick(struct msd_server *srv);
/* When msd_repl_tick next has something to do (msp_now_ns time; UINT64_MAX: nothing). */
uint64_t msd_repl_next(struct msd_server *srv);

/* This node's replication figures, and those about node i (for the PEERS request). */
void msd_repl_self_info(struct msd_server *srv, memsvc_cluster_info_t *info);
void msd_repl_peer_info(struct msd_server *srv, unsigned i, memsvc_peer_info_t *info);

#endif /* MSD_REPL_H */
