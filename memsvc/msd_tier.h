/* msd_tier.h - the peer tier in memsvcd: tensors the engine moves below its host pool kept in
 * peer daemons' rooms (docs/cluster.md, "The peer tier") */
#ifndef MSD_TIER_H
#define MSD_TIER_H

#include "client/memsvc.h"

#include <stdbool.h>
#include <stdint.h>

struct msd_server;

/*
 * Give the engine its far operations when it has a peer tier in backed memory (the node
 * description's peer room > 0, a cluster). Server set-up, after msd_repl_attach.
 */
memsvc_status_t msd_tier_attach(struct msd_server *srv);
/* Free what is left (the worker is gone, the engine is still there). */
void msd_tier_destroy(struct msd_server *srv);

/* ---- from msd_repl.c, engine lock held ---- */

/* The holder's answer to a PUT of object key (MEMSVC_OK: kept). */
void msd_tier_acked(struct msd_server *srv, unsigned node, const char *key, memsvc_status_t status);
/* Is a GET of key from node waiting for len bytes? */
bool msd_tier_expects(struct msd_server *srv, unsigned node, const char *key, uint64_t len);
/* The bytes of key came back (bytes NULL: they could not be had, or did not check out). */
void msd_tier_data(struct msd_server *srv, unsigned node, const char *key, const void *bytes,
                   uint64_t len);
/* Node i's link came up or went. */
void msd_tier_link(struct msd_server *srv, unsigned i, bool up);
/* Ends owed to the engine, retries (loop 0). */
void msd_tier_tick(struct msd_server *srv);
bool msd_tier_pending(struct msd_server *srv);
void msd_tier_info(struct msd_server *srv, memsvc_cluster_info_t *info);

/* ---- in msd_repl.c, for msd_tier.c ---- */

typedef enum { MSD_TIER_PUT, MSD_TIER_GET, MSD_TIER_DEL } msd_tier_msg_t;

/* Send a peer-tier message about object key to node (PUT: len bytes, copied). false: not sent. */
bool msd_repl_tier_send(struct msd_server *srv, unsigned node, msd_tier_msg_t what, const char *key,
                        const void *bytes, uint64_t len);

#endif /* MSD_TIER_H */
