/* msd_tier.c - the peer tier's owner side: the engine's far operations (write, read, release) as
 * objects kept in peer daemons' rooms, over the replication messages (msd_repl.c) */
#include "memsvc/msd_tier.h"
#include "client/msp_ucx.h"
#include "memsvc/msd.h"
#include "sim_npu/sim_node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSD_LOG_COMP "tier"
#include "memsvc/msd_log.h"

/*
 * An object is a tensor of this node's engine (by handle) kept on one peer, named "#HANDLE" in
 * the messages (job UINT32_MAX, flag RF_TIER). A write picks the first peer up in ring order
 * from this node, sends the bytes (copied at once) and ends when the peer acknowledges them; a
 * read asks them back from that peer; a release deletes them there. Ends the engine is owed
 * from inside one of its own calls (no peer up, a send refused) are delivered by the next tick,
 * as the engine wants (never from inside the call).
 */
#define TIER_BUCKETS 4096u

typedef enum { T_IDLE, T_WRITE, T_READ } tier_op_t;

typedef struct tobj {
    struct tobj    *next;
    eng_handle_t    h;
    int             node; /* the peer that has (or is being sent) its bytes; -1: none */
    uint64_t        len;
    uint32_t        move_id; /* the engine's move for the op under way */
    tier_op_t       op;
    bool            sent;     /* the op's message went (a GET waits for the link otherwise) */
    bool            kept;     /* the peer acknowledged the bytes */
    bool            released; /* the engine let go: a DELETE is owed to the peer */
    bool            end_due;  /* the op ends at the next tick with `end` */
    memsvc_status_t end;
} tobj_t;

struct msd_tier {
    msd_server_t *srv;
    tobj_t       *objs[TIER_BUCKETS];
    uint64_t      out, out_bytes; /* kept on peers now */
    bool          due;            /* something for the tick (at the latest, the next heartbeat) */
    bool          now;            /* ... that can be done at once: an end owed, a link back */
};

static unsigned tier_hash(eng_handle_t h)
{
    return (unsigned)((h * 0x9e3779b97f4a7c15ull) >> 52) % TIER_BUCKETS;
}

static tobj_t **tier_slot(struct msd_tier *t, eng_handle_t h)
{
    tobj_t **pp = &t->objs[tier_hash(h)];

    while ((*pp != NULL) && ((*pp)->h != h)) {
        pp = &(*pp)->next;
    }
    return pp;
}

static void tier_key(eng_handle_t h, char *key, size_t len)
{
    snprintf(key, len, "#%016llx", (unsigned long long)h);
}

/* The object named key, or NULL (a key this node never made). */
static tobj_t **tier_by_key(struct msd_tier *t, const char *key)
{
    unsigned long long h;
    char               end;

    if ((key[0] != '#') || (sscanf(key + 1, "%16llx%c", &h, &end) != 1)) {
        return NULL;
    }
    return tier_slot(t, (eng_handle_t)h);
}

static void tier_unkeep(struct msd_tier *t, tobj_t *o)
{
    if (o->kept) {
        o->kept = false;
        t->out--;
        t->out_bytes -= o->len;
    }
}

static void tier_free(struct msd_tier *t, tobj_t **pp)
{
    tobj_t *o = *pp;

    tier_unkeep(t, o);
    *pp = o->next;
    free(o);
}

/* End the op under way at the next tick with status. */
static void tier_end_later(struct msd_tier *t, tobj_t *o, memsvc_status_t status)
{
    o->end_due = true;
    o->end     = status;
    t->due     = true;
    t->now     = true;
    msd_after_batch(t->srv);
}

/* The first peer whose link is up, in ring order from this node. */
static int tier_pick(struct msd_tier *t)
{
    msd_peers_t *ps = t->srv->peers;
    unsigned     n = msd_peers_count(ps), self = msd_peers_self(ps), k;

    for (k = 1; k < n; k++) {
        unsigned i = (self + k) % n;

        if (msd_peers_ep(ps, i) != NULL) {
            return (int)i;
        }
    }
    return -1;
}

/* ---- the engine's far operations (engine lock held) ---------------------------------------- */

static void far_write(void *arg, eng_handle_t h, uint32_t move_id, const void *src, uint64_t len)
{
    msd_server_t    *srv = arg;
    struct msd_tier *t   = srv->tier;
    tobj_t         **pp = tier_slot(t, h), *o = *pp;
    char             key[32];

    if (o == NULL) {
        o = calloc(1, sizeof(*o));
        if (o == NULL) {
            LOG_RL(1000, "out of memory for a peer-tier object");
            return; /* the move stays under way until the tensor is freed or acquired */
        }
        o->h                  = h;
        o->next               = t->objs[tier_hash(h)];
        t->objs[tier_hash(h)] = o;
    }
    tier_unkeep(t, o); /* (a new version of an object whose old one was not deleted yet) */
    o->released = false;
    o->op       = T_WRITE;
    o->move_id  = move_id;
    o->len      = len;
    o->node     = tier_pick(t);
    o->sent     = false;
    tier_key(h, key, sizeof(key));
    if (o->node < 0) {
        tier_end_later(t, o, MEMSVC_ERR_HOST_MEMORY); /* no peer up: it stays where it is */
        return;
    }
    o->sent = msd_repl_tier_send(srv, (unsigned)o->node, MSD_TIER_PUT, key, src, len);
    if (!o->sent) {
        tier_end_later(t, o, MEMSVC_ERR_TRANSPORT);
    }
}

static void far_read(void *arg, eng_handle_t h, uint32_t move_id, uint64_t len)
{
    msd_server_t    *srv = arg;
    struct msd_tier *t   = srv->tier;
    tobj_t          *o   = *tier_slot(t, h);
    char             key[32];

    if ((o == NULL) || !o->kept || (o->node < 0) || (o->len != len)) {
        if (o == NULL) {
            o = calloc(1, sizeof(*o));
            if (o == NULL) {
                return;
            }
            o->h                  = h;
            o->node               = -1;
            o->next               = t->objs[tier_hash(h)];
            t->objs[tier_hash(h)] = o;
        }
        o->op      = T_READ;
        o->move_id = move_id;
        tier_end_later(t, o, MEMSVC_ERR_IO);
        return;
    }
    o->op      = T_READ;
    o->move_id = move_id;
    tier_key(h, key, sizeof(key));
    o->sent = msd_repl_tier_send(srv, (unsigned)o->node, MSD_TIER_GET, key, NULL, len);
    if (!o->sent) {
        t->due = true; /* the link is down: the tick asks again when it is back, or fails the
                        * read when the peer is lost (--peer-lost) */
    }
}

static void far_release(void *arg, eng_handle_t h)
{
    msd_server_t    *srv = arg;
    struct msd_tier *t   = srv->tier;
    tobj_t         **pp = tier_slot(t, h), *o = *pp;
    char             key[32];

    if (o == NULL) {
        return;
    }
    o->op      = T_IDLE; /* an op under way is the engine's no more */
    o->end_due = false;
    if ((o->node < 0) || (!o->kept && !o->sent)) {
        tier_free(t, pp);
        return;
    }
    tier_key(h, key, sizeof(key));
    if (msd_repl_tier_send(srv, (unsigned)o->node, MSD_TIER_DEL, key, NULL, 0)) {
        tier_free(t, pp);
        return;
    }
    o->released = true; /* sent when its link is back, forgotten when the peer is lost */
    tier_unkeep(t, o);
    t->due = true;
}

/* ---- answers from peers (msd_repl.c, engine lock held) ------------------------------------- */

void msd_tier_acked(msd_server_t *srv, unsigned node, const char *key, memsvc_status_t status)
{
    struct msd_tier *t = srv->tier;
    tobj_t         **pp, *o;
    uint32_t         move_id;

    if ((t == NULL) || ((pp = tier_by_key(t, key)) == NULL) || ((o = *pp) == NULL) ||
        (o->node != (int)node) || (o->op != T_WRITE) || o->end_due) {
        if ((t != NULL) && (pp != NULL) && (*pp != NULL) && (*pp)->released &&
            ((*pp)->node == (int)node)) {
            /* let go while on its way: now that it is there, delete it */
            if (msd_repl_tier_send(srv, node, MSD_TIER_DEL, key, NULL, 0)) {
                tier_free(t, pp);
            }
        }
        return;
    }
    move_id = o->move_id;
    o->op   = T_IDLE;
    if (status == MEMSVC_OK) {
        o->kept = true;
        t->out++;
        t->out_bytes += o->len;
    } else {
        LOG_RL(1000, "peer %s did not keep a tensor of the peer tier (%s): it stays here",
               msd_peers_name(srv->peers, node), memsvc_strerror(status));
    }
    eng_far_done(srv->eng, o->h, move_id, status, NULL, 0); /* may release it */
}

bool msd_tier_expects(msd_server_t *srv, unsigned node, const char *key, uint64_t len)
{
    struct msd_tier *t = srv->tier;
    tobj_t         **pp;

    return (t != NULL) && ((pp = tier_by_key(t, key)) != NULL) && (*pp != NULL) &&
           ((*pp)->op == T_READ) && ((*pp)->node == (int)node) && ((*pp)->len == len) &&
           !(*pp)->end_due;
}

void msd_tier_data(msd_server_t *srv, unsigned node, const char *key, const void *bytes,
                   uint64_t len)
{
    struct msd_tier *t = srv->tier;
    tobj_t         **pp, *o;
    uint32_t         move_id;

    if (!msd_tier_expects(srv, node, key, len)) {
        return;
    }
    pp      = tier_by_key(t, key);
    o       = *pp;
    move_id = o->move_id;
    o->op   = T_IDLE;
    if (bytes == NULL) {
        LOG_WARN("a tensor of the peer tier could not be fetched from %s: lost",
                 msd_peers_name(srv->peers, node));
    }
    eng_far_done(srv->eng, o->h, move_id, (bytes != NULL) ? MEMSVC_OK : MEMSVC_ERR_IO, bytes,
                 len); /* then the engine releases it */
}

void msd_tier_link(msd_server_t *srv, unsigned i, bool up)
{
    struct msd_tier *t = srv->tier;
    unsigned         b;

    if (t == NULL) {
        return;
    }
    for (b = 0; b < TIER_BUCKETS; b++) {
        for (tobj_t *o = t->objs[b]; o != NULL; o = o->next) {
            if (o->node != (int)i) {
                continue;
            }
            if (!up && (o->op == T_WRITE) && !o->end_due) {
                tier_end_later(t, o, MEMSVC_ERR_TRANSPORT); /* it stays where it was */
            } else if (!up && (o->op == T_READ)) {
                o->sent = false; /* asked again when the link is back */
            }
        }
    }
    t->due = true;
    t->now = t->now || up; /* what waited for this link goes at once */
}

void msd_tier_tick(msd_server_t *srv)
{
    struct msd_tier *t = srv->tier;
    uint64_t         now;
    unsigned         b;
    char             key[32];

    if ((t == NULL) || !t->due) {
        return;
    }
    t->due = false;
    t->now = false;
    now    = msp_now_ns();
    for (b = 0; b < TIER_BUCKETS; b++) {
        tobj_t **pp = &t->objs[b];

        while (*pp != NULL) {
            tobj_t *o    = *pp;
            bool    lost = (o->node >= 0) &&
                        msd_peers_lost(srv->peers, (unsigned)o->node, srv->cfg.peer_lost_ns, now);

            tier_key(o->h, key, sizeof(key));
            if (o->end_due) {
                uint32_t        move_id = o->move_id;
                memsvc_status_t end     = o->end;

                o->end_due = false;
                o->op      = T_IDLE;
                eng_far_done(srv->eng, o->h, move_id, end, NULL, 0); /* may release (free) o */
                t->due = true;
                t->now = true; /* o may be gone: the rest of this bucket at once */
                break;
            }
            if (o->released) {
                if (lost || ((o->node >= 0) && msd_repl_tier_send(srv, (unsigned)o->node,
                                                                  MSD_TIER_DEL, key, NULL, 0))) {
                    tier_free(t, pp);
                    continue;
                }
                t->due = true;
            } else if ((o->op == T_READ) && !o->sent) {
                if (lost) {
                    o->op = T_IDLE;
                    LOG_WARN("peer %s is lost: a tensor of the peer tier kept there is lost",
                             msd_peers_name(srv->peers, (unsigned)o->node));
                    eng_far_done(srv->eng, o->h, o->move_id, MEMSVC_ERR_IO, NULL, 0);
                    t->due = true;
                    t->now = true;
                    break;
                }
                o->sent =
                    msd_repl_tier_send(srv, (unsigned)o->node, MSD_TIER_GET, key, NULL, o->len);
                t->due = t->due || !o->sent;
            }
            pp = &o->next;
        }
    }
}

/* (Asked after every batch of client messages: a flag, not a walk of the objects. What waits
 * for a link that is down is looked at by the heartbeat's ticks.) */
bool msd_tier_pending(msd_server_t *srv)
{
    const struct msd_tier *t = srv->tier;

    return (t != NULL) && t->now;
}

void msd_tier_info(msd_server_t *srv, memsvc_cluster_info_t *info)
{
    const struct msd_tier *t = srv->tier;

    if (t != NULL) {
        info->tier_out_tensors = t->out;
        info->tier_out_bytes   = t->out_bytes;
    }
}

/* ---- set-up -------------------------------------------------------------------------------- */

memsvc_status_t msd_tier_attach(msd_server_t *srv)
{
    static const eng_far_ops_t ops_tmpl = {
        .write = far_write, .read = far_read, .release = far_release};
    const sim_node_t *node = eng_node(srv->eng);
    eng_far_ops_t     ops  = ops_tmpl;
    struct msd_tier  *t;

    if ((srv->peers == NULL) || (srv->repl == NULL) || (sim_node_desc(node)->peer_bytes == 0)) {
        return MEMSVC_OK;
    }
    if (sim_node_mode(node) != SIM_MEM_BACKED) {
        LOG("peer tier: %llu MiB in peers' rooms, simulated (phantom memory moves no bytes)",
            (unsigned long long)(sim_node_desc(node)->peer_bytes >> 20));
        return MEMSVC_OK;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    t->srv    = srv;
    srv->tier = t;
    ops.arg   = srv;
    eng_set_far_ops(srv->eng, &ops);
    LOG("peer tier: up to %llu MiB of this node's tensors in peers' rooms, below the host pool "
        "and %s the disk (nic %.1f GB/s, disk %.1f GB/s)",
        (unsigned long long)(sim_node_desc(node)->peer_bytes >> 20),
        (sim_node_desc(node)->nic.bw > sim_node_desc(node)->disk.bw) ? "before" : "after",
        sim_node_desc(node)->nic.bw / 1e9, sim_node_desc(node)->disk.bw / 1e9);
    return MEMSVC_OK;
}

void msd_tier_destroy(msd_server_t *srv)
{
    struct msd_tier *t = srv->tier;
    unsigned         b;

    if (t == NULL) {
        return;
    }
    eng_set_far_ops(srv->eng, NULL); /* the engine calls nothing of ours from now on */
    for (b = 0; b < TIER_BUCKETS; b++) {
        while (t->objs[b] != NULL) {
            tier_free(t, &t->objs[b]);
        }
    }
    free(t);
    srv->tier = NULL;
}
