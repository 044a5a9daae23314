/* msd_durable.h - the durable arena's entries as replication sees them (msd_durable.c owns them,
 * msd_repl.c ships them to peers and brings them back) */
#ifndef MSD_DURABLE_H
#define MSD_DURABLE_H

#include "memsvc/msd.h"

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define MSD_REPL_MAX 7u /* --replicas at most */

/*
 * One committed version's bytes in the arena: [off, off + len). The entry holds a reference
 * while the version is current, and every replication send of it one more, so that a newer
 * commit or a free does not hand the range to another tensor while UCX still reads it.
 */
typedef struct dur_xt {
    uint64_t off, len;
    uint32_t refs;
    bool     keep; /* a record still names it: the last reference does not release it */
} dur_xt_t;

/* What a durable tensor is, apart from its bytes (a journal PUT says the same). */
typedef struct dur_meta {
    uint32_t job, rank, kind, device;
    uint64_t version; /* the journal's seq of its PUT: rises with every commit */
    uint64_t size;
    uint32_t crc;   /* crc32 of its bytes */
    uint64_t owner; /* the job's owner (msd_auth principal) when committed */
} dur_meta_t;

/* A durable tensor whose committed bytes are in the arena. */
typedef struct dur_ent {
    struct dur_ent *next;
    eng_handle_t    h;
    char           *key;
    dur_meta_t      m;
    dur_xt_t       *xt;
    /* replication (msd_repl.c), per target slot: the highest version the slot's node has
     * acknowledged, and the version being sent to it (0: none) */
    uint64_t acked[MSD_REPL_MAX], sending[MSD_REPL_MAX];
    uint64_t refused[MSD_REPL_MAX]; /* a version the slot's node refused (no room): retried later */
    uint64_t committed_ns;          /* when this version was committed (or recovered) */
    bool     restored;              /* came back from a peer's replica and not written since */
} dur_ent_t;

#define DUR_BUCKETS 4096u

struct msd_durable {
    char            arena_path[512], jpath[512];
    int             afd, jfd;
    uint8_t        *arena;
    uint64_t        arena_size;
    uint64_t        jend; /* journal bytes written */
    uint64_t        next_seq;
    struct io_uring ring;
    bool            has_ring;
    struct dur_ext *free;
    dur_ent_t      *ents[DUR_BUCKETS];
    uint64_t        tensors, bytes, recovered, corrupt;
    uint64_t        full_logged;   /* "arena full" messages (rate-limited) */
    bool            started_empty; /* no durable tensor came back from this node's own files */
};

/* The entry of (job, key), or NULL (engine lock held). */
dur_ent_t *msd_durable_find(msd_server_t *srv, uint32_t job, const char *key);
/* The bytes of xt (valid while a reference is held). */
const uint8_t *msd_durable_xt_bytes(const msd_durable_t *d, const dur_xt_t *xt);
/* Drop a reference to xt; its range is released with the last one. */
void msd_durable_xt_put(msd_durable_t *d, dur_xt_t *xt);

/*
 * A durable tensor came back from a peer's replica: keep its bytes (checked against m->crc by
 * the caller) in the arena under version m->version, journal it, and bring it into the engine as
 * an orphan of its job and rank, owned by m->owner, for re-attach by key. Versions committed
 * later are higher. MEMSVC_ERR_HOST_MEMORY (arena full), MEMSVC_ERR_IO, MEMSVC_ERR_NO_RESOURCE.
 */
memsvc_status_t msd_durable_adopt(msd_server_t *srv, const char *key, const dur_meta_t *m,
                                  const void *bytes);

#endif /* MSD_DURABLE_H */
