/* msd_repl.c - durable tensors copied to R peer daemons after each commit (versioned,
 * acknowledged, rate-capped), held for peers in this daemon's replica room, offered back to a
 * node that starts empty, and re-placed when a peer is lost for good */
#include "memsvc/msd_repl.h"
#include "client/msp_ucx.h"
#include "memsvc/mem_hint.h"
#include "memsvc/msd_durable.h"
#include "memsvc/msd_place.h"
#include "memsvc/msd_tier.h"
#include "memsvc/msd_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <zlib.h>

#define MSD_LOG_COMP "repl"
#include "memsvc/msd_log.h"

/*
 * Messages are UCX active messages of id MSP_AM_REPL on the peer links (msd_peer.c), accepted
 * only from the node whose authenticated link they arrive on. Each has a fixed header
 * (REPL_HDR_LEN bytes, little-endian; docs/protocol.md, "Replication messages"); a PUT carries
 * the tensor's bytes as the message's data (rendezvous above UCX's threshold):
 *   owner  -> holder  PUT       a durable tensor's current version (RESTORE flag: the other way)
 *   holder -> owner   ACK       it holds that version now (or a status why not)
 *   owner  -> holder  DEL       the tensor is gone as of a version      (ACKed, DEL flag)
 *   owner  -> holder  DROP_ALL  it holds nothing of the owner's any more (placement moved)
 *   holder -> owner   OFFER     it holds a version of one of the owner's tensors  \ when a link
 *   holder -> owner   OFFER_END that was all                                     / to a new boot
 *   owner  -> holder  WANT      send that version back (the owner started empty)    comes up
 */
#define MSP_AM_REPL 20u
#define REPL_MAGIC 0x5052534du /* "MSRP" */
#define REPL_VERSION 1u
#define REPL_HDR_LEN                                                                               \
    (4 + 2 + 2 + 32 + 32 + 8 + 4 * 4 + 8 + 8 + 4 + 4 + 8 + 4 + 2 + MEMSVC_KEY_MAX + 1)
#define REPL_WINDOW 4u     /* PUTs in flight to one target */
#define REPL_BUCKETS 4096u /* replicas held, by (owner node, job, key) */
#define REPL_BURST_MIN (4u << 20)

typedef enum {
    RM_PUT       = 1,
    RM_ACK       = 2,
    RM_DEL       = 3,
    RM_DROP_ALL  = 4,
    RM_OFFER     = 5,
    RM_OFFER_END = 6,
    RM_WANT      = 7,
} rm_type_t;

enum { RF_RESTORE = 1, RF_DEL = 2, RF_TIER = 4 }; /* RF_TIER: the peer tier's (msd_tier.c) */

/* ACK statuses */
typedef enum {
    RA_OK      = 0, /* held: version */
    RA_NO_ROOM = 1, /* --replica-bytes full */
    RA_BAD     = 2, /* bytes do not match their checksum, or not the size announced */
    RA_GONE    = 3, /* WANT: that version is not held here (any more) */
} ra_status_t;

typedef struct repl_msg {
    uint32_t   type;
    char       from[32], to[32];
    uint64_t   boot; /* the sender's boot id */
    dur_meta_t m;    /* job, rank, kind, device, version, size, crc, owner */
    uint32_t   status, flags;
    char       key[MEMSVC_KEY_MAX + 1];
} repl_msg_t;

/* A replica of another node's durable tensor, kept here. Its bytes are shared with sends of
 * it (a RESTORE in flight) by reference. */
typedef struct rbuf {
    uint32_t refs;
    uint64_t maplen; /* 0: bytes follow the header; else their own mapping of maplen bytes */
    uint8_t *bytes;
} rbuf_t;

static void rbuf_free(rbuf_t *b);

typedef struct replica {
    struct replica *next;
    unsigned        node; /* whose */
    bool            tier; /* a peer-tier object (key "#HANDLE"), not a durable tensor's copy */
    char           *key;
    dur_meta_t      m;
    rbuf_t         *buf;
} replica_t;

/* A send in flight: its header, and a reference to the bytes it carries. */
typedef struct repl_send {
    struct repl_send *next, *prev;
    struct msd_repl  *r;
    uint8_t           hdr[REPL_HDR_LEN];
    dur_xt_t         *xt;   /* an arena version (owner side) */
    rbuf_t           *buf;  /* a replica (holder side, RESTORE) */
    int               slot; /* a PUT to target slot (window), or -1 */
    uint64_t          size;
} repl_send_t;

/* A PUT being received (rendezvous). */
typedef struct repl_recv {
    struct repl_recv *next, *prev;
    struct msd_repl  *r;
    unsigned          node;
    repl_msg_t        msg;
    rbuf_t           *buf;
} repl_recv_t;

/* A freed durable tensor whose DEL the targets have yet to acknowledge. */
typedef struct tomb {
    struct tomb *next;
    uint32_t     job;
    char        *key;
    uint64_t     version;
    uint32_t     pending, sent; /* target slots, bits */
} tomb_t;

/* What this node asked a holder to send back. */
typedef struct want {
    struct want *next;
    uint32_t     job;
    char        *key;
    uint64_t     version;
    unsigned     node;
} want_t;

#define REPL_RETRY_NS 1000000000ull /* a refused copy is offered again after this */

typedef struct slot {
    int      node;     /* -1: none */
    uint64_t retry_at; /* refused copies are sent again from then (0: none refused) */
    unsigned inflight;
    bool     clean; /* a full scan found nothing owed since the last change */
    unsigned cursor;
} slot_t;

typedef struct node_sync {
    bool     synced;  /* its OFFER_END came since its link to its current boot came up */
    uint64_t link_at; /* when the link came up */
    uint64_t held, held_bytes;
} node_sync_t;

struct msd_repl {
    msd_server_t *srv;
    unsigned      nslots; /* min(--replicas, nodes - 1) */
    slot_t        slot[MSD_REPL_MAX];
    node_sync_t  *node; /* per cluster node */
    double        rate, tokens, burst;
    uint64_t      refill_at;
    uint64_t      capacity, held, held_bytes, reserved; /* held_bytes: copies and tier objects */
    uint64_t      tier_held, tier_held_bytes;           /* peer-tier objects of other nodes */
    replica_t    *reps[REPL_BUCKETS];
    repl_send_t  *sends;
    repl_recv_t  *recvs;
    tomb_t       *tombs;
    want_t       *wants;
    bool          wake, off_logged;
    uint64_t      sent_bytes, wanted, restored, restored_bytes, failed;
    uint64_t      noroom_logged;
    uint64_t      noted; /* r->wanted when recovery_note last spoke */
};

/* ---- messages ---------------------------------------------------------------------------- */

static void msg_pack(const repl_msg_t *m, uint8_t *out)
{
    uint8_t *p = out;

    p = msd_put_head(p, REPL_MAGIC, REPL_VERSION, m->type, m->from, m->to, sizeof(m->from));
    p = msd_put_le(p, m->boot, 8);
    p = msd_put_le(p, m->m.job, 4);
    p = msd_put_le(p, m->m.rank, 4);
    p = msd_put_le(p, m->m.kind, 4);
    p = msd_put_le(p, m->m.device, 4);
    p = msd_put_le(p, m->m.version, 8);
    p = msd_put_le(p, m->m.size, 8);
    p = msd_put_le(p, m->m.crc, 4);
    p = msd_put_le(p, m->status, 4);
    p = msd_put_le(p, m->m.owner, 8);
    p = msd_put_le(p, m->flags, 4);
    p = msd_put_le(p, strnlen(m->key, MEMSVC_KEY_MAX), 2);
    msd_put_str(p, m->key, sizeof(m->key));
}

/* false: not a replication message (size, magic, version, type, strings, key). */
static bool msg_unpack(const void *data, size_t len, repl_msg_t *m)
{
    const uint8_t *p = data;
    uint64_t       v, klen;

    memset(m, 0, sizeof(*m));
    if (len != REPL_HDR_LEN) {
        return false;
    }
    p = msd_get_head(p, len, REPL_MAGIC, REPL_VERSION, RM_PUT, RM_WANT, &m->type, m->from, m->to,
                     sizeof(m->from));
    if (p == NULL) {
        return false;
    }
    p           = msd_get_le(p, &m->boot, 8);
    p           = msd_get_le(p, &v, 4);
    m->m.job    = (uint32_t)v;
    p           = msd_get_le(p, &v, 4);
    m->m.rank   = (uint32_t)v;
    p           = msd_get_le(p, &v, 4);
    m->m.kind   = (uint32_t)v;
    p           = msd_get_le(p, &v, 4);
    m->m.device = (uint32_t)v;
    p           = msd_get_le(p, &m->m.version, 8);
    p           = msd_get_le(p, &m->m.size, 8);
    p           = msd_get_le(p, &v, 4);
    m->m.crc    = (uint32_t)v;
    p           = msd_get_le(p, &v, 4);
    m->status   = (uint32_t)v;
    p           = msd_get_le(p, &m->m.owner, 8);
    p           = msd_get_le(p, &v, 4);
    m->flags    = (uint32_t)v;
    p           = msd_get_le(p, &klen, 2);
    if (!msd_get_str(p, m->key, sizeof(m->key)) || (strlen(m->key) != klen)) {
        return false;
    }
    /* every message names a tensor but OFFER_END and DROP_ALL */
    return (m->key[0] != '\0') || (m->type == RM_OFFER_END) || (m->type == RM_DROP_ALL);
}

static void send_done(repl_send_t *sd)
{
    struct msd_repl *r = sd->r;

    if (sd->next != NULL) {
        sd->next->prev = sd->prev;
    }
    if (sd->prev != NULL) {
        sd->prev->next = sd->next;
    } else {
        r->sends = sd->next;
    }
    if (sd->xt != NULL) {
        msd_durable_xt_put(r->srv->dur, sd->xt);
    }
    if ((sd->buf != NULL) && (--sd->buf->refs == 0)) {
        rbuf_free(sd->buf);
    }
    if ((sd->slot >= 0) && (r->slot[sd->slot].inflight > 0)) {
        r->slot[sd->slot].inflight--;
        r->wake = true;
    }
    free(sd);
}

static void send_cb(void *request, ucs_status_t status, void *user_data)
{
    repl_send_t  *sd  = user_data;
    msd_server_t *srv = sd->r->srv;

    (void)status; /* a failed PUT is never acknowledged: the link's drop makes it owed again */
    msd_lock(srv);
    send_done(sd);
    msd_after_batch(srv);
    msd_unlock(srv);
    ucp_request_free(request);
}

/*
 * Send m to node i (its link must be up), with len bytes of data from xt or buf (a reference is
 * taken). slot >= 0: a PUT counted in that slot's window. false if it could not go.
 */
static bool msg_send(struct msd_repl *r, unsigned i, repl_msg_t *m, const void *data, uint64_t len,
                     dur_xt_t *xt, rbuf_t *buf, int slot)
{
    msd_peers_t        *ps    = r->srv->peers;
    ucp_ep_h            ep    = msd_peers_ep(ps, i);
    ucp_request_param_t param = {0};
    ucs_status_ptr_t    sp;
    repl_send_t        *sd;

    if (ep == NULL) {
        return false;
    }
    sd = calloc(1, sizeof(*sd));
    if (sd == NULL) {
        LOG_RL(1000, "out of memory for a replication message");
        return false;
    }
    snprintf(m->from, sizeof(m->from), "%s", msd_peers_name(ps, msd_peers_self(ps)));
    snprintf(m->to, sizeof(m->to), "%s", msd_peers_name(ps, i));
    msg_pack(m, sd->hdr);
    sd->r    = r;
    sd->slot = slot;
    sd->size = len;
    if (xt != NULL) {
        sd->xt = xt;
        xt->refs++;
    }
    if (buf != NULL) {
        sd->buf = buf;
        buf->refs++;
    }
    sd->next = r->sends;
    if (r->sends != NULL) {
        r->sends->prev = sd;
    }
    r->sends = sd;
    if (slot >= 0) {
        r->slot[slot].inflight++;
    }
    param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    param.cb.send   = send_cb;
    param.user_data = sd;
    param.flags     = UCP_AM_SEND_FLAG_REPLY;
    sp = ucp_am_send_nbx(ep, MSP_AM_REPL, sd->hdr, REPL_HDR_LEN, (len > 0) ? data : NULL,
                         (size_t)len, &param);
    if (UCS_PTR_IS_PTR(sp)) {
        return true; /* send_cb finishes it */
    }
    send_done(sd);
    if (UCS_PTR_IS_ERR(sp)) {
        LOG_DEBUG("replication message to %s not sent: %s", msd_peers_name(ps, i),
                  ucs_status_string(UCS_PTR_STATUS(sp)));
        return false;
    }
    return true;
}

static void send_ack(struct msd_repl *r, unsigned i, const repl_msg_t *of, ra_status_t status,
                     uint64_t version, uint32_t flags)
{
    repl_msg_t a = {.type = RM_ACK, .status = status, .flags = flags};

    a.m         = of->m;
    a.m.version = version;
    snprintf(a.key, sizeof(a.key), "%s", of->key);
    (void)msg_send(r, i, &a, NULL, 0, NULL, NULL, -1);
}

/* ---- placement --------------------------------------------------------------------------- */

/*
 * The nodes that hold node's replicas first (Gemini's group placement, as memtrace cluster
 * computes it: groups of R + 1 consecutive nodes, the last takes the remainder, each node's
 * copies on the next R nodes of its group), then every other node in ring order from it: the
 * order substitutes are taken in when a target is lost.
 */
static unsigned candidates(uint32_t n, uint32_t replicas, uint32_t self, uint32_t *out)
{
    unsigned c = msd_place_group(n, replicas, self, out), k, j;

    for (k = 1; k < n; k++) {
        bool dup = false;

        j = (self + k) % n;
        for (unsigned x = 0; x < c; x++) {
            dup = dup || (out[x] == j);
        }
        if (!dup) {
            out[c++] = j;
        }
    }
    return c;
}

/* Forget what slot k's node acknowledged or was sent (its node changes, or its link went). */
static void slot_reset(struct msd_repl *r, unsigned k, bool acked_too)
{
    msd_durable_t *d = r->srv->dur;
    tomb_t        *t;
    unsigned       b;

    if (d != NULL) {
        for (b = 0; b < DUR_BUCKETS; b++) {
            for (dur_ent_t *e = d->ents[b]; e != NULL; e = e->next) {
                e->sending[k] = 0;
                e->refused[k] = 0;
                if (acked_too) {
                    e->acked[k] = 0;
                }
            }
        }
    }
    for (t = r->tombs; t != NULL; t = t->next) {
        t->sent &= ~(1u << k);
        if (acked_too) {
            t->pending &= ~(1u << k);
        }
    }
    r->slot[k].clean    = false;
    r->slot[k].cursor   = 0;
    r->slot[k].retry_at = 0;
}

/* Keep each slot's node while it is not lost; fill empty slots in candidate order. */
static void place(struct msd_repl *r, uint64_t now)
{
    msd_peers_t *ps = r->srv->peers;
    unsigned     n = msd_peers_count(ps), self = msd_peers_self(ps), k, c, i;
    uint32_t    *cand;
    uint64_t     lost = r->srv->cfg.peer_lost_ns;

    cand = calloc(n, sizeof(*cand));
    if (cand == NULL) {
        return;
    }
    c = candidates(n, r->srv->cfg.replicas, self, cand);
    for (k = 0; k < r->nslots; k++) {
        slot_t *s = &r->slot[k];

        if ((s->node >= 0) && msd_peers_lost(ps, (unsigned)s->node, lost, now)) {
            LOG_WARN("peer %s is lost (down for %.0f s, --peer-lost): the copies it held go to "
                     "another node",
                     msd_peers_name(ps, (unsigned)s->node), (double)lost / 1e9);
            s->node = -1;
            slot_reset(r, k, true);
        }
    }
    for (k = 0; k < r->nslots; k++) {
        slot_t *s = &r->slot[k];

        if (s->node >= 0) {
            continue;
        }
        for (i = 0; i < c; i++) {
            bool used = msd_peers_lost(ps, cand[i], lost, now);

            for (unsigned x = 0; (x < r->nslots) && !used; x++) {
                used = (r->slot[x].node == (int)cand[i]);
            }
            if (!used) {
                break;
            }
        }
        if (i < c) {
            s->node = (int)cand[i];
            slot_reset(r, k, true);
            LOG("copies of this node's durable tensors: slot %u on %s", k,
                msd_peers_name(ps, cand[i]));
        }
    }
    free(cand);
}

static int slot_of(const struct msd_repl *r, unsigned node)
{
    unsigned k;

    for (k = 0; k < r->nslots; k++) {
        if (r->slot[k].node == (int)node) {
            return (int)k;
        }
    }
    return -1;
}

/* ---- replicas held here -------------------------------------------------------------------- */

static unsigned rep_hash(unsigned node, uint32_t job, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ ((uint64_t)node << 32) ^ job;

    for (; *key != '\0'; key++) {
        h = (h ^ (uint8_t)*key) * 1099511628211ull;
    }
    return (unsigned)(h % REPL_BUCKETS);
}

static replica_t **rep_slot_t(struct msd_repl *r, unsigned node, uint32_t job, const char *key,
                              bool tier)
{
    replica_t **pp = &r->reps[rep_hash(node, job, key)];

    while ((*pp != NULL) && (((*pp)->node != node) || ((*pp)->m.job != job) ||
                             ((*pp)->tier != tier) || (strcmp((*pp)->key, key) != 0))) {
        pp = &(*pp)->next;
    }
    return pp;
}

static replica_t **rep_slot(struct msd_repl *r, unsigned node, uint32_t job, const char *key)
{
    return rep_slot_t(r, node, job, key, false);
}

static void rep_free(struct msd_repl *r, replica_t **pp)
{
    replica_t *x = *pp;

    *pp = x->next;
    r->held_bytes -= x->m.size; /* the room: copies and peer-tier objects */
    if (x->tier) {
        r->tier_held--;
        r->tier_held_bytes -= x->m.size;
    } else {
        r->held--;
        r->node[x->node].held--;
        r->node[x->node].held_bytes -= x->m.size;
    }
    if (--x->buf->refs == 0) {
        rbuf_free(x->buf);
    }
    free(x->key);
    free(x);
}

/* Keep buf as node's replica of m (replacing an older one). false: out of memory. */
static bool rep_install(struct msd_repl *r, unsigned node, const repl_msg_t *msg, rbuf_t *buf)
{
    bool        tier = (msg->flags & RF_TIER) != 0;
    replica_t **pp   = rep_slot_t(r, node, msg->m.job, msg->key, tier), *x;

    if (*pp != NULL) {
        rep_free(r, pp);
    }
    x = calloc(1, sizeof(*x));
    if ((x == NULL) || ((x->key = strdup(msg->key)) == NULL)) {
        free(x);
        return false;
    }
    x->node = node;
    x->tier = tier;
    x->m    = msg->m;
    x->buf  = buf;
    buf->refs++;
    x->next = *pp;
    *pp     = x;
    r->held_bytes += x->m.size;
    if (tier) {
        r->tier_held++;
        r->tier_held_bytes += x->m.size;
    } else {
        r->held++;
        r->node[node].held++;
        r->node[node].held_bytes += x->m.size;
    }
    return true;
}

/* ---- the owner's side: what is owed, and sending it ---------------------------------------- */

static bool owed(const dur_ent_t *e, unsigned k)
{
    return (e->acked[k] < e->m.version) && (e->xt != NULL);
}

/* Refill the token bucket. */
static void refill(struct msd_repl *r, uint64_t now)
{
    if (r->rate <= 0) {
        r->tokens = r->burst;
        return;
    }
    r->tokens += r->rate * (double)(now - r->refill_at) / 1e9;
    if (r->tokens > r->burst) {
        r->tokens = r->burst;
    }
    r->refill_at = now;
}

/* Send slot k what it is owed, within its window and the rate. */
static void send_slot(struct msd_repl *r, unsigned k)
{
    msd_durable_t *d = r->srv->dur;
    slot_t        *s = &r->slot[k];
    unsigned       b, scanned = 0;
    bool           stopped = false;

    if ((s->node < 0) || s->clean || !r->node[s->node].synced ||
        (msd_peers_ep(r->srv->peers, (unsigned)s->node) == NULL)) {
        return;
    }
    for (b = s->cursor; scanned < DUR_BUCKETS; b = (b + 1) % DUR_BUCKETS, scanned++) {
        for (dur_ent_t *e = d->ents[b]; e != NULL; e = e->next) {
            repl_msg_t m = {.type = RM_PUT};

            if (!owed(e, k) || (e->sending[k] != 0) || (e->refused[k] == e->m.version)) {
                continue;
            }
            if ((s->inflight >= REPL_WINDOW) || (r->tokens < 0)) {
                stopped = true;
                break;
            }
            m.m = e->m;
            snprintf(m.key, sizeof(m.key), "%s", e->key);
            if (!msg_send(r, (unsigned)s->node, &m, msd_durable_xt_bytes(d, e->xt), e->m.size,
                          e->xt, NULL, (int)k)) {
                stopped = true;
                break;
            }
            e->sending[k] = e->m.version;
            r->tokens -= (double)e->m.size;
            r->sent_bytes += e->m.size;
        }
        if (stopped) {
            s->cursor = b;
            return;
        }
    }
    /* Nothing more to send until a commit, a refused copy or a lost link says otherwise. */
    s->clean  = true;
    s->cursor = 0;
}

static void send_tombs(struct msd_repl *r)
{
    tomb_t  *t;
    unsigned k;

    for (t = r->tombs; t != NULL; t = t->next) {
        for (k = 0; k < r->nslots; k++) {
            slot_t    *s = &r->slot[k];
            repl_msg_t m = {.type = RM_DEL};

            if (!(t->pending & (1u << k)) || (t->sent & (1u << k)) || (s->node < 0) ||
                !r->node[s->node].synced) {
                continue;
            }
            m.m.job     = t->job;
            m.m.version = t->version;
            snprintf(m.key, sizeof(m.key), "%s", t->key);
            if (msg_send(r, (unsigned)s->node, &m, NULL, 0, NULL, NULL, -1)) {
                t->sent |= 1u << k;
            }
        }
    }
}

static void tombs_gc(struct msd_repl *r)
{
    tomb_t **pp = &r->tombs, *t;

    while ((t = *pp) != NULL) {
        if (t->pending == 0) {
            *pp = t->next;
            free(t->key);
            free(t);
        } else {
            pp = &t->next;
        }
    }
}

/* ---- receiving ---------------------------------------------------------------------------- */

static void recv_unlink(struct msd_repl *r, repl_recv_t *rv)
{
    if (rv->next != NULL) {
        rv->next->prev = rv->prev;
    }
    if (rv->prev != NULL) {
        rv->prev->next = rv->next;
    } else {
        r->recvs = rv->next;
    }
}

static want_t **want_slot(struct msd_repl *r, uint32_t job, const char *key)
{
    want_t **pp = &r->wants;

    while ((*pp != NULL) && (((*pp)->job != job) || (strcmp((*pp)->key, key) != 0))) {
        pp = &(*pp)->next;
    }
    return pp;
}

static void want_drop(want_t **pp)
{
    want_t *w = *pp;

    *pp = w->next;
    free(w->key);
    free(w);
}

/* The last copy asked for came (or failed): say how the recovery went. */
static void recovery_note(struct msd_repl *r)
{
    if ((r->wants != NULL) || (r->wanted == r->noted)) {
        return;
    }
    r->noted = r->wanted;
    if (r->failed > 0) {
        LOG_WARN("recovery from peers: %llu of %llu durable tensors restored (%llu bytes), %llu "
                 "failed (named above)",
                 (unsigned long long)r->restored, (unsigned long long)r->wanted,
                 (unsigned long long)r->restored_bytes, (unsigned long long)r->failed);
    } else {
        LOG("recovery from peers: %llu durable tensors restored (%llu bytes) in %.3f s since "
            "the daemon started",
            (unsigned long long)r->restored, (unsigned long long)r->restored_bytes,
            (double)(msp_now_ns() - r->srv->start_ns) / 1e9);
    }
}

/* A PUT's bytes are all here (buf, size bytes). */
static void put_arrived(struct msd_repl *r, unsigned node, const repl_msg_t *m, rbuf_t *buf)
{
    msd_peers_t *ps  = r->srv->peers;
    bool         bad = ((uint32_t)crc32_z(0, buf->bytes, m->m.size) != m->m.crc);

    if ((m->flags & (RF_TIER | RF_RESTORE)) == (RF_TIER | RF_RESTORE)) {
        /* a peer-tier object this node asked back */
        msd_tier_data(r->srv, node, m->key, bad ? NULL : buf->bytes, m->m.size);
        return;
    }
    if (m->flags & RF_RESTORE) {
        want_t        **wp = want_slot(r, m->m.job, m->key);
        memsvc_status_t st;

        if ((*wp == NULL) || ((*wp)->version != m->m.version) || ((*wp)->node != node)) {
            return; /* not (or no longer) wanted */
        }
        want_drop(wp);
        if (bad) {
            r->failed++;
            LOG_WARN("copy of durable tensor '%s' (job %u) from %s does not match its checksum: "
                     "not restored",
                     m->key, m->m.job, msd_peers_name(ps, node));
            return;
        }
        if (msd_durable_find(r->srv, m->m.job, m->key) != NULL) {
            return; /* written here meanwhile: that is newer */
        }
        st = msd_durable_adopt(r->srv, m->key, &m->m, buf->bytes);
        if (st != MEMSVC_OK) {
            r->failed++;
            LOG_ERR("durable tensor '%s' (job %u) from %s: cannot restore it: %s", m->key, m->m.job,
                    msd_peers_name(ps, node), memsvc_strerror(st));
            return;
        }
        r->restored++;
        r->restored_bytes += m->m.size;
        {
            dur_ent_t *e = msd_durable_find(r->srv, m->m.job, m->key);
            int        k = slot_of(r, node);

            if ((e != NULL) && (k >= 0)) {
                e->acked[k] = m->m.version; /* it holds what it sent */
            }
        }
        LOG_DEBUG("durable tensor '%s' (job %u) version %llu restored from %s", m->key, m->m.job,
                  (unsigned long long)m->m.version, msd_peers_name(ps, node));
        return;
    }
    if (bad) {
        LOG_RL(1000, "a copy of '%s' (job %u) from %s does not match its checksum: refused", m->key,
               m->m.job, msd_peers_name(ps, node));
        send_ack(r, node, m, RA_BAD, m->m.version, m->flags & RF_TIER);
        return;
    }
    if (!rep_install(r, node, m, buf)) {
        send_ack(r, node, m, RA_NO_ROOM, m->m.version, m->flags & RF_TIER);
        return;
    }
    send_ack(r, node, m, RA_OK, m->m.version, m->flags & RF_TIER);
}

static void recv_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
    repl_recv_t     *rv  = user_data;
    struct msd_repl *r   = rv->r;
    msd_server_t    *srv = r->srv;

    (void)length;
    msd_lock(srv);
    recv_unlink(r, rv);
    if (!(rv->msg.flags & RF_RESTORE)) {
        r->reserved -= rv->msg.m.size;
    }
    if (status == UCS_OK) {
        put_arrived(r, rv->node, &rv->msg, rv->buf);
    } else if ((rv->msg.flags & (RF_TIER | RF_RESTORE)) == (RF_TIER | RF_RESTORE)) {
        msd_tier_data(srv, rv->node, rv->msg.key, NULL, rv->msg.m.size);
    } else if (rv->msg.flags & RF_RESTORE) {
        want_t **wp = want_slot(r, rv->msg.m.job, rv->msg.key);

        /* (a link that went down already failed the want) */
        if ((*wp != NULL) && ((*wp)->node == rv->node) && ((*wp)->version == rv->msg.m.version)) {
            want_drop(wp);
            r->failed++;
        }
    }
    if (--rv->buf->refs == 0) {
        rbuf_free(rv->buf);
    }
    free(rv);
    r->wake = true;
    recovery_note(r);
    msd_after_batch(srv);
    msd_unlock(srv);
    ucp_request_free(request);
}

/*
 * A buffer for a copy's bytes (a replica, a restore, a peer-tier object). One of 2 MiB or more
 * gets a mapping of its own, 2 MiB aligned, with transparent huge pages asked for
 * (MADV_HUGEPAGE: Debian's default THP mode is "madvise"): a fresh 32 MiB copy then takes 16
 * page faults instead of 8192. Measured on the development VM (a paravirtualized
 * guest, where a fault is expensive), the holder spent over half its time in the faults and
 * zeroing of 4 KiB pages while receiving (docs/benchmarks.md, "Replication and recovery").
 */
#define RBUF_HUGE MEM_HINT_HUGE

static rbuf_t *rbuf_new(uint64_t size)
{
    uint64_t maplen = (size + RBUF_HUGE - 1) & ~(RBUF_HUGE - 1);
    uint8_t *p, *a;
    rbuf_t  *b;

    /* its own mapping when the rounding wastes at most an eighth */
    if ((size >= RBUF_HUGE) && ((maplen - size) * 8 <= size) &&
        ((b = malloc(sizeof(*b))) != NULL)) {
        p = mmap(NULL, maplen + RBUF_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
        if (p != MAP_FAILED) {
            a = (uint8_t *)(((uintptr_t)p + RBUF_HUGE - 1) & ~(uintptr_t)(RBUF_HUGE - 1));
            if (a > p) {
                munmap(p, (size_t)(a - p));
            }
            if (a + maplen < p + maplen + RBUF_HUGE) {
                munmap(a + maplen, (size_t)((p + maplen + RBUF_HUGE) - (a + maplen)));
            }
            mem_hint_huge(a, maplen);
            b->refs   = 1;
            b->maplen = maplen;
            b->bytes  = a;
            return b;
        }
        free(b);
    }
    b = malloc(sizeof(*b) + size);
    if (b != NULL) {
        b->refs   = 1;
        b->maplen = 0;
        b->bytes  = (uint8_t *)(b + 1);
    }
    return b;
}

static void rbuf_free(rbuf_t *b)
{
    if (b->maplen != 0) {
        munmap(b->bytes, b->maplen);
    }
    free(b);
}

/* A PUT from node (either direction). UCS_INPROGRESS when a rendezvous receive was started. */
static ucs_status_t on_put(struct msd_repl *r, unsigned node, repl_msg_t *m, void *data,
                           size_t length, const ucp_am_recv_param_t *param)
{
    msd_server_t       *srv = r->srv;
    ucp_request_param_t rp  = {0};
    ucs_status_ptr_t    sp;
    repl_recv_t        *rv;
    rbuf_t             *buf;

    if ((length != m->m.size) || (m->m.size == 0)) {
        LOG_RL(1000, "a replication PUT from %s says %llu bytes and carries %zu: dropped",
               msd_peers_name(srv->peers, node), (unsigned long long)m->m.size, length);
        return UCS_OK;
    }
    if ((m->flags & (RF_TIER | RF_RESTORE)) == (RF_TIER | RF_RESTORE)) {
        if (!msd_tier_expects(srv, node, m->key, m->m.size)) {
            return UCS_OK; /* not asked for (any more): its data is dropped */
        }
    } else if (m->flags & RF_RESTORE) {
        want_t *w = *want_slot(r, m->m.job, m->key);

        if ((w == NULL) || (w->version != m->m.version) || (w->node != node)) {
            return UCS_OK; /* not asked for: its data is dropped */
        }
    } else {
        bool       tier = (m->flags & RF_TIER) != 0;
        replica_t *x    = *rep_slot_t(r, node, m->m.job, m->key, tier);
        uint64_t   have = (x != NULL) ? x->m.size : 0;

        if (!tier && (x != NULL) && (x->m.version == m->m.version)) {
            send_ack(r, node, m, RA_OK, m->m.version, 0); /* already here (a resend) */
            return UCS_OK;
        }
        if (r->held_bytes - have + r->reserved + m->m.size > r->capacity) {
            if ((r->noroom_logged++ % 1000) == 0) {
                LOG_WARN("no room for a copy of '%s' (job %u, %llu bytes) from %s: %llu of %llu "
                         "bytes of --replica-bytes in use",
                         m->key, m->m.job, (unsigned long long)m->m.size,
                         msd_peers_name(srv->peers, node),
                         (unsigned long long)(r->held_bytes + r->reserved),
                         (unsigned long long)r->capacity);
            }
            send_ack(r, node, m, RA_NO_ROOM, m->m.version, m->flags & RF_TIER);
            return UCS_OK;
        }
    }
    buf = rbuf_new(m->m.size);
    if (buf == NULL) {
        if (!(m->flags & RF_RESTORE)) {
            send_ack(r, node, m, RA_NO_ROOM, m->m.version, m->flags & RF_TIER);
        } else if (m->flags & RF_TIER) {
            msd_tier_data(srv, node, m->key, NULL, m->m.size);
        }
        return UCS_OK;
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        memcpy(buf->bytes, data, length);
        put_arrived(r, node, m, buf);
        if (--buf->refs == 0) {
            rbuf_free(buf);
        }
        return UCS_OK;
    }
    rv = calloc(1, sizeof(*rv));
    if (rv == NULL) {
        rbuf_free(buf);
        return UCS_OK;
    }
    rv->r    = r;
    rv->node = node;
    rv->msg  = *m;
    rv->buf  = buf;
    if (!(m->flags & RF_RESTORE)) {
        r->reserved += m->m.size;
    }
    rv->next = r->recvs;
    if (r->recvs != NULL) {
        r->recvs->prev = rv;
    }
    r->recvs        = rv;
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv_am   = recv_cb;
    rp.user_data    = rv;
    sp              = ucp_am_recv_data_nbx(srv->worker, data, buf->bytes, length, &rp);
    if (UCS_PTR_IS_PTR(sp)) {
        return UCS_INPROGRESS; /* recv_cb finishes it */
    }
    recv_unlink(r, rv);
    if (!(m->flags & RF_RESTORE)) {
        r->reserved -= m->m.size;
    }
    if (!UCS_PTR_IS_ERR(sp)) {
        put_arrived(r, node, m, buf);
    }
    if (--buf->refs == 0) {
        rbuf_free(buf);
    }
    free(rv);
    return UCS_INPROGRESS; /* the descriptor was handed to UCX */
}

static void on_ack(struct msd_repl *r, unsigned node, const repl_msg_t *m)
{
    int        k = slot_of(r, node);
    dur_ent_t *e;

    if (m->flags & RF_TIER) {
        msd_tier_acked(r->srv, node, m->key,
                       (m->status == RA_OK)        ? MEMSVC_OK
                       : (m->status == RA_NO_ROOM) ? MEMSVC_ERR_HOST_MEMORY
                                                   : MEMSVC_ERR_IO);
        return;
    }
    if (m->flags & RF_DEL) {
        for (tomb_t *t = r->tombs; (t != NULL) && (k >= 0); t = t->next) {
            if ((t->job == m->m.job) && (t->version == m->m.version) &&
                (strcmp(t->key, m->key) == 0)) {
                t->pending &= ~(1u << k);
            }
        }
        tombs_gc(r);
        return;
    }
    if (m->status == RA_GONE) { /* a WANT it cannot answer */
        want_t **wp = want_slot(r, m->m.job, m->key);

        if ((*wp != NULL) && ((*wp)->node == node)) {
            want_drop(wp);
            r->failed++;
        }
        return;
    }
    e = msd_durable_find(r->srv, m->m.job, m->key);
    if ((k < 0) || (e == NULL)) {
        return;
    }
    if (e->sending[k] == m->m.version) {
        e->sending[k] = 0;
    }
    if (m->status == RA_OK) {
        if ((m->m.version <= e->m.version) && (m->m.version > e->acked[k])) {
            e->acked[k] = m->m.version;
        }
        if (owed(e, (unsigned)k)) {
            /* committed again while this version travelled: the newer one goes next (the
             * scan that ran meanwhile skipped it as in flight) */
            r->slot[k].clean = false;
        }
    } else {
        LOG_RL(1000, "%s did not keep a copy of '%s' (job %u): %s; tried again in %.0f s",
               msd_peers_name(r->srv->peers, node), m->key, m->m.job,
               (m->status == RA_NO_ROOM) ? "no room (--replica-bytes)" : "checksum mismatch",
               (double)REPL_RETRY_NS / 1e9);
        e->refused[k] = m->m.version; /* owed still; not sent again before the retry */
        if (r->slot[k].retry_at == 0) {
            r->slot[k].retry_at = msp_now_ns() + REPL_RETRY_NS;
        }
    }
    r->wake = true;
}

/* The owner's side of an offer: take the version if this node started empty and lacks it. */
static void on_offer(struct msd_repl *r, unsigned node, const repl_msg_t *m)
{
    dur_ent_t *e = msd_durable_find(r->srv, m->m.job, m->key);
    int        k = slot_of(r, node);
    want_t   **wp, *w;
    repl_msg_t q = {.type = RM_WANT};

    if (e != NULL) {
        if ((k >= 0) && (m->m.version == e->m.version) && (e->acked[k] < e->m.version)) {
            e->acked[k] = e->m.version; /* it already holds the current version */
        }
        return;
    }
    if ((r->srv->dur == NULL) || !r->srv->dur->started_empty) {
        return; /* this node kept its own durable state: what it lacks was freed */
    }
    for (tomb_t *t = r->tombs; t != NULL; t = t->next) {
        if ((t->job == m->m.job) && (strcmp(t->key, m->key) == 0)) {
            return; /* freed since this node started */
        }
    }
    wp = want_slot(r, m->m.job, m->key);
    if ((*wp != NULL) && ((*wp)->version >= m->m.version)) {
        return; /* asked for it, at least as new, elsewhere */
    }
    if (*wp == NULL) {
        w = calloc(1, sizeof(*w));
        if ((w == NULL) || ((w->key = strdup(m->key)) == NULL)) {
            free(w);
            return;
        }
        w->job   = m->m.job;
        w->next  = r->wants;
        r->wants = w;
        r->wanted++;
    } else {
        w = *wp;
    }
    w->version = m->m.version;
    w->node    = node;
    q.m        = m->m;
    snprintf(q.key, sizeof(q.key), "%s", m->key);
    if (!msg_send(r, node, &q, NULL, 0, NULL, NULL, -1)) {
        want_drop(want_slot(r, m->m.job, m->key));
        r->failed++;
    }
}

static void on_want(struct msd_repl *r, unsigned node, const repl_msg_t *m)
{
    bool       tier = (m->flags & RF_TIER) != 0;
    replica_t *x    = *rep_slot_t(r, node, m->m.job, m->key, tier);
    repl_msg_t p    = {.type = RM_PUT, .flags = RF_RESTORE | (tier ? RF_TIER : 0)};

    if ((x == NULL) || (!tier && (x->m.version != m->m.version))) {
        send_ack(r, node, m, RA_GONE, m->m.version, tier ? RF_TIER : 0);
        return;
    }
    p.m = x->m;
    snprintf(p.key, sizeof(p.key), "%s", x->key);
    (void)msg_send(r, node, &p, x->buf->bytes, x->m.size, NULL, x->buf, -1);
}

static void on_del(struct msd_repl *r, unsigned node, const repl_msg_t *m)
{
    replica_t **pp;

    if (m->flags & RF_TIER) { /* not acknowledged */
        pp = rep_slot_t(r, node, m->m.job, m->key, true);
        if (*pp != NULL) {
            rep_free(r, pp);
        }
        return;
    }
    pp = rep_slot(r, node, m->m.job, m->key);

    if ((*pp != NULL) && ((*pp)->m.version < m->m.version)) {
        rep_free(r, pp);
    }
    send_ack(r, node, m, RA_OK, m->m.version, RF_DEL);
}

/* Drop what node has here: its copies, or its peer-tier objects. */
static void drop_all(struct msd_repl *r, unsigned node, bool tier)
{
    unsigned b;

    for (b = 0; b < REPL_BUCKETS; b++) {
        replica_t **pp = &r->reps[b];

        while (*pp != NULL) {
            if (((*pp)->node == node) && ((*pp)->tier == tier)) {
                rep_free(r, pp);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
}

static ucs_status_t repl_am_cb(void *arg, const void *header, size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param)
{
    msd_server_t    *srv = arg;
    struct msd_repl *r   = srv->repl;
    ucs_status_t     ret = UCS_OK;
    repl_msg_t       m;
    int              node;

    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || (param->reply_ep == NULL) ||
        !msg_unpack(header, header_length, &m)) {
        LOG_DEBUG("a malformed replication message (%zu bytes): dropped", header_length);
        return UCS_OK;
    }
    msd_lock(srv);
    node = msd_peers_sender(srv->peers, m.from, param->reply_ep);
    if ((node < 0) || (strcmp(m.to, msd_peers_name(srv->peers, msd_peers_self(srv->peers))) != 0)) {
        LOG_RL(1000, "a replication message claiming to come from '%s' not on its link: dropped",
               m.from);
        goto out;
    }
    if ((m.type != RM_PUT) && (length != 0)) {
        goto out;
    }
    switch (m.type) {
    case RM_PUT:
        ret = on_put(r, (unsigned)node, &m, data, length, param);
        recovery_note(r);
        break;
    case RM_ACK:
        on_ack(r, (unsigned)node, &m);
        recovery_note(r);
        break;
    case RM_DEL:
        on_del(r, (unsigned)node, &m);
        break;
    case RM_DROP_ALL:
        drop_all(r, (unsigned)node, false);
        break;
    case RM_OFFER:
        on_offer(r, (unsigned)node, &m);
        break;
    case RM_OFFER_END:
        if (!r->node[node].synced) {
            r->node[node].synced = true;
            LOG_DEBUG("%s offered what it holds of this node's", m.from);
        }
        for (unsigned k = 0; k < r->nslots; k++) {
            r->slot[k].clean = false;
        }
        r->wake = true;
        break;
    case RM_WANT:
        on_want(r, (unsigned)node, &m);
        break;
    default:
        break;
    }
out:
    msd_after_batch(srv);
    msd_unlock(srv);
    return ret;
}

/* ---- hooks --------------------------------------------------------------------------------- */

void msd_repl_changed(msd_server_t *srv)
{
    struct msd_repl *r = srv->repl;
    unsigned         k;

    if (r == NULL) {
        return;
    }
    for (k = 0; k < r->nslots; k++) {
        r->slot[k].clean = false;
    }
    r->wake = true;
}

void msd_repl_deleted(msd_server_t *srv, const char *key, const dur_meta_t *m, uint64_t seq)
{
    struct msd_repl *r = srv->repl;
    tomb_t          *t;
    unsigned         k;
    uint32_t         pending = 0;

    if (r == NULL) {
        return;
    }
    for (k = 0; k < r->nslots; k++) {
        pending |= (r->slot[k].node >= 0) ? (1u << k) : 0;
    }
    /* A want of it is moot now. */
    if (*want_slot(r, m->job, key) != NULL) {
        want_drop(want_slot(r, m->job, key));
    }
    t = calloc(1, sizeof(*t));
    if ((t == NULL) || ((t->key = strdup(key)) == NULL)) {
        free(t);
        LOG_RL(1000, "out of memory: the copies of '%s' (job %u) stay on the peers", key, m->job);
        return;
    }
    t->job     = m->job;
    t->version = seq;
    t->pending = pending;
    t->next    = r->tombs;
    r->tombs   = t;
    r->wake    = true;
    tombs_gc(r);
}

void msd_repl_link(msd_server_t *srv, unsigned i, bool up, bool new_boot)
{
    struct msd_repl *r = srv->repl;
    int              k;

    if (r == NULL) {
        return;
    }
    msd_tier_link(srv, i, up);
    k = slot_of(r, i);
    if (!up) {
        if (k >= 0) {
            slot_reset(r, (unsigned)k, false); /* what was in flight is owed again */
        }
        /* restores asked of it will not come */
        for (want_t **wp = &r->wants; *wp != NULL;) {
            if ((*wp)->node == i) {
                want_drop(wp);
                r->failed++;
            } else {
                wp = &(*wp)->next;
            }
        }
        recovery_note(r);
        return;
    }
    r->node[i].link_at = msp_now_ns();
    if (new_boot) {
        /* Its peer-tier objects here belonged to its previous life. */
        drop_all(r, i, true);
        /* It may have lost what it held of ours: wait for its offers before sending. */
        r->node[i].synced = false;
        if (k >= 0) {
            slot_reset(r, (unsigned)k, true);
        }
    }
    /* Offer it what we hold of its, at every link (a recovery cut short by a partition goes
     * on when the link is back): if it started empty, it takes them back. */
    {
        repl_msg_t end = {.type = RM_OFFER_END};
        unsigned   b;

        for (b = 0; b < REPL_BUCKETS; b++) {
            for (replica_t *x = r->reps[b]; x != NULL; x = x->next) {
                repl_msg_t o = {.type = RM_OFFER};

                if ((x->node != i) || x->tier) {
                    continue;
                }
                o.m = x->m;
                snprintf(o.key, sizeof(o.key), "%s", x->key);
                (void)msg_send(r, i, &o, NULL, 0, NULL, NULL, -1);
            }
        }
        (void)msg_send(r, i, &end, NULL, 0, NULL, NULL, -1);
    }
    if (k >= 0) {
        r->slot[k].clean = false;
    }
    r->wake = true;
}

void msd_repl_tick(msd_server_t *srv)
{
    struct msd_repl *r = srv->repl;
    uint64_t         now;
    unsigned         k;

    if ((r == NULL) || msd_peers_stopped(srv->peers)) {
        return;
    }
    msd_tier_tick(srv);
    if (srv->dur == NULL) {
        if (!r->off_logged) {
            r->off_logged = true;
            if (r->nslots > 0) {
                LOG_WARN("--replicas %u: no durable state here (--state-dir none or phantom "
                         "memory): nothing to replicate; copies of peers are still kept",
                         srv->cfg.replicas);
            }
        }
    }
    now     = msp_now_ns();
    r->wake = false;
    refill(r, now);
    for (k = 0; k < r->nslots; k++) {
        /* a peer that never sends its offers (an older daemon) is taken as synced after the
         * peer timeout */
        int n = r->slot[k].node;

        if ((n >= 0) && !r->node[n].synced && (msd_peers_ep(srv->peers, (unsigned)n) != NULL) &&
            (now - r->node[n].link_at >= srv->cfg.peer_timeout_ns)) {
            r->node[n].synced = true;
        }
    }
    if (srv->dur == NULL) {
        return;
    }
    place(r, now);
    for (k = 0; k < r->nslots; k++) {
        if ((r->slot[k].retry_at != 0) && (now >= r->slot[k].retry_at)) {
            msd_durable_t *d = srv->dur;

            for (unsigned b = 0; b < DUR_BUCKETS; b++) {
                for (dur_ent_t *e = d->ents[b]; e != NULL; e = e->next) {
                    e->refused[k] = 0;
                }
            }
            r->slot[k].retry_at = 0;
            r->slot[k].clean    = false;
        }
    }
    send_tombs(r);
    for (k = 0; k < r->nslots; k++) {
        send_slot(r, k);
    }
}

uint64_t msd_repl_next(msd_server_t *srv)
{
    struct msd_repl *r    = srv->repl;
    uint64_t         next = UINT64_MAX;
    unsigned         k;

    if (r == NULL) {
        return UINT64_MAX;
    }
    if (r->wake || msd_tier_pending(srv)) {
        return 0;
    }
    if (srv->dur == NULL) {
        return UINT64_MAX;
    }
    for (k = 0; k < r->nslots; k++) {
        const slot_t *s = &r->slot[k];

        if ((s->retry_at != 0) && (s->retry_at < next)) {
            next = s->retry_at;
        }
        if ((s->node >= 0) && !s->clean && (s->inflight < REPL_WINDOW) && r->node[s->node].synced &&
            (msd_peers_ep(srv->peers, (unsigned)s->node) != NULL)) {
            if ((r->tokens >= 0) || (r->rate <= 0)) {
                return 0;
            }
            return r->refill_at + (uint64_t)(-r->tokens / r->rate * 1e9) + 1;
        }
    }
    return next; /* placement changes come with the peers' own tick */
}

/* ---- for the peer tier (msd_tier.c) ---------------------------------------------------------- */

bool msd_repl_tier_send(msd_server_t *srv, unsigned node, msd_tier_msg_t what, const char *key,
                        const void *bytes, uint64_t len)
{
    struct msd_repl *r = srv->repl;
    repl_msg_t       m = {.flags = RF_TIER};
    rbuf_t          *buf;
    bool             ok;

    if (r == NULL) {
        return false;
    }
    m.m.job  = UINT32_MAX;
    m.m.size = len;
    snprintf(m.key, sizeof(m.key), "%s", key);
    switch (what) {
    case MSD_TIER_PUT:
        m.type = RM_PUT;
        buf    = rbuf_new(len);
        if (buf == NULL) {
            return false;
        }
        memcpy(buf->bytes, bytes, len); /* the engine's bytes may move on: ours go */
        m.m.crc = (uint32_t)crc32_z(0, buf->bytes, len);
        ok      = msg_send(r, node, &m, buf->bytes, len, NULL, buf, -1);
        if (--buf->refs == 0) {
            rbuf_free(buf);
        }
        return ok;
    case MSD_TIER_GET:
        m.type = RM_WANT;
        return msg_send(r, node, &m, NULL, 0, NULL, NULL, -1);
    default:
        m.type = RM_DEL;
        return msg_send(r, node, &m, NULL, 0, NULL, NULL, -1);
    }
}

/* ---- figures ------------------------------------------------------------------------------- */

void msd_repl_self_info(msd_server_t *srv, memsvc_cluster_info_t *info)
{
    struct msd_repl *r   = srv->repl;
    msd_durable_t   *d   = srv->dur;
    uint64_t         now = msp_now_ns(), oldest = 0;
    unsigned         k, b;

    if (r == NULL) {
        return;
    }
    info->replicas  = (d != NULL) ? r->nslots : 0; /* without durable state: nothing to copy */
    info->repl_rate = (uint64_t)r->rate;
    for (k = 0; k < r->nslots; k++) {
        info->targets += (r->slot[k].node >= 0) ? 1 : 0;
    }
    for (b = 0; (d != NULL) && (b < DUR_BUCKETS); b++) {
        for (dur_ent_t *e = d->ents[b]; e != NULL; e = e->next) {
            bool any = false;

            for (k = 0; k < r->nslots; k++) {
                if ((r->slot[k].node >= 0) && owed(e, k)) {
                    info->owed_tensors++;
                    info->owed_bytes += e->m.size;
                    any = true;
                }
            }
            if (any && ((oldest == 0) || (e->committed_ns < oldest))) {
                oldest = e->committed_ns;
            }
        }
    }
    info->lag_ns            = (oldest != 0) ? now - oldest : 0;
    info->sent_bytes        = r->sent_bytes;
    info->held_tensors      = r->held;
    info->held_bytes        = r->held_bytes - r->tier_held_bytes;
    info->held_capacity     = r->capacity;
    info->tier_held_tensors = r->tier_held;
    info->tier_held_bytes   = r->tier_held_bytes;
    msd_tier_info(srv, info);
    info->recovery_wanted   = r->wanted;
    info->recovery_restored = r->restored;
    info->recovery_bytes    = r->restored_bytes;
    info->recovery_failed   = r->failed;
}

void msd_repl_peer_info(msd_server_t *srv, unsigned i, memsvc_peer_info_t *info)
{
    struct msd_repl *r = srv->repl;
    msd_durable_t   *d = srv->dur;
    int              k;
    unsigned         b;

    if (r == NULL) {
        return;
    }
    info->held_tensors = r->node[i].held;
    info->held_bytes   = r->node[i].held_bytes;
    k                  = slot_of(r, i);
    info->target       = (k >= 0);
    for (b = 0; (k >= 0) && (d != NULL) && (b < DUR_BUCKETS); b++) {
        for (dur_ent_t *e = d->ents[b]; e != NULL; e = e->next) {
            if (owed(e, (unsigned)k)) {
                info->owed_tensors++;
                info->owed_bytes += e->m.size;
            } else {
                info->acked_tensors++;
            }
        }
    }
}

/* ---- set-up ------------------------------------------------------------------------------- */

memsvc_status_t msd_repl_attach(msd_server_t *srv)
{
    struct msd_repl *r;
    unsigned         n;
    ucs_status_t     st;

    if (srv->peers == NULL) {
        return MEMSVC_OK;
    }
    n = msd_peers_count(srv->peers);
    r = calloc(1, sizeof(*r));
    if ((r == NULL) || ((r->node = calloc(n, sizeof(*r->node))) == NULL)) {
        free(r);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    r->srv       = srv;
    r->nslots    = (srv->cfg.replicas < n - 1) ? srv->cfg.replicas : n - 1;
    r->rate      = srv->cfg.repl_rate;
    r->burst     = (r->rate / 10 > REPL_BURST_MIN) ? r->rate / 10 : REPL_BURST_MIN;
    r->tokens    = r->burst;
    r->capacity  = srv->cfg.replica_bytes;
    r->refill_at = msp_now_ns();
    for (unsigned k = 0; k < MSD_REPL_MAX; k++) {
        r->slot[k].node = -1;
    }
    srv->repl = r;
    st        = msp_ucx_am_handler(srv->worker, MSP_AM_REPL, repl_am_cb, srv);
    if (st != UCS_OK) {
        LOG_ERR("cannot receive replication messages: %s", ucs_status_string(st));
        msd_repl_destroy(srv);
        return MEMSVC_ERR_TRANSPORT;
    }
    if (r->nslots < srv->cfg.replicas) {
        LOG_WARN("--replicas %u: the cluster has %u other nodes: %u copies", srv->cfg.replicas,
                 n - 1, r->nslots);
    }
    LOG("replication: %u copies of each durable tensor on peers, at most %.0f MB/s%s; room for "
        "%llu MiB of other nodes' copies; a peer down %.0f s is lost",
        r->nslots, r->rate / 1e6, (r->rate > 0) ? "" : " (unlimited)",
        (unsigned long long)(r->capacity >> 20), (double)srv->cfg.peer_lost_ns / 1e9);
    return MEMSVC_OK;
}

void msd_repl_destroy(msd_server_t *srv)
{
    struct msd_repl *r = srv->repl;
    unsigned         b;

    if (r == NULL) {
        return;
    }
    while (r->sends != NULL) {
        send_done(r->sends); /* the worker is gone: their callbacks never run */
    }
    while (r->recvs != NULL) {
        repl_recv_t *rv = r->recvs;

        recv_unlink(r, rv);
        if (--rv->buf->refs == 0) {
            rbuf_free(rv->buf);
        }
        free(rv);
    }
    for (b = 0; b < REPL_BUCKETS; b++) {
        while (r->reps[b] != NULL) {
            rep_free(r, &r->reps[b]);
        }
    }
    while (r->tombs != NULL) {
        tomb_t *t = r->tombs;

        r->tombs = t->next;
        free(t->key);
        free(t);
    }
    while (r->wants != NULL) {
        want_drop(&r->wants);
    }
    free(r->node);
    free(r);
    srv->repl = NULL;
}
