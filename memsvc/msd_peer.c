/* msd_peer.c - links between the memsvcd daemons of a cluster: handshake, heartbeats, states */
#include "client/msp_proto.h"
#include "client/msp_ucx.h"
#include "memsvc/msd.h"
#include "memsvc/msd_wire.h"
#include "memsvc/msd_repl.h"
#include "memsvc/msd_tier.h"
#include "sim_npu/sim_desc.h"

#include <sodium.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSD_LOG_COMP "peer"
#include "memsvc/msd_log.h"

/*
 * Peer messages are UCX active messages of id MSP_AM_PEER on the tcp worker, sent with
 * UCP_AM_SEND_FLAG_REPLY so that the receiver knows the endpoint they came on. Each is one
 * fixed-size record (PEER_MSG_LEN bytes, little-endian; docs/protocol.md, "Peer messages").
 * The node whose name sorts lower dials; the handshake is
 *   dialer   -> HELLO     (its name, the name it wants, cluster hash, boot id, nonce_d)
 *   acceptor -> CHALLENGE (nonce_a, mac_a = MAC(key, 'A', hash, names, nonces, boot ids))
 *   dialer   -> RESPONSE  (mac_d, the same with 'D')      after checking mac_a
 *   acceptor -> WELCOME                                   after checking mac_d
 * and either side may answer REFUSE (a reason code and text) instead. Then both send a
 * HEARTBEAT every --heartbeat-ms with their figures.
 */
#define MSP_AM_PEER 19u
#define PEER_MAGIC 0x5250534du /* "MSPR" */
#define PEER_VERSION 1u
#define PEER_NONCE_LEN 32u
#define PEER_MAC_LEN crypto_auth_BYTES
#define PEER_TEXT_MAX 95u
#define PEER_MSG_LEN 332u
#define PEER_BACKOFF_MIN_NS 100000000ull  /* first redial after 0.1 s */
#define PEER_BACKOFF_MAX_NS 2000000000ull /* then doubling up to 2 s */
#define PEER_SUSPECT_BEATS 2u             /* heartbeats missed before suspect */

typedef enum {
    PM_HELLO     = 1,
    PM_CHALLENGE = 2,
    PM_RESPONSE  = 3,
    PM_WELCOME   = 4,
    PM_HEARTBEAT = 5,
    PM_REFUSE    = 6,
    PM_BYE       = 7, /* the sender is stopping: down at once, not after the timeout */
} pm_type_t;

typedef enum {
    PR_CLUSTER = 1, /* cluster file differs */
    PR_SECRET  = 2, /* the MAC does not verify */
    PR_NAME    = 3, /* unknown node, wrong node, wrong direction */
} pm_reason_t;

typedef struct peer_msg {
    uint32_t type;
    char     from[MSD_NODE_NAME_MAX + 1], to[MSD_NODE_NAME_MAX + 1];
    uint8_t  hash[MSD_CLUSTER_HASH_LEN];
    uint64_t boot_id;
    uint8_t  nonce[PEER_NONCE_LEN];
    uint8_t  mac[PEER_MAC_LEN];
    uint32_t reason;
    char     text[PEER_TEXT_MAX + 1];
    uint64_t seq, uptime_ns, hbm_used, hbm_total, host_used, host_total, sessions;
} peer_msg_t;

typedef enum {
    LINK_NONE,          /* no endpoint */
    LINK_HELLO_SENT,    /* dialer: waits for CHALLENGE */
    LINK_RESPONSE_SENT, /* dialer: waits for WELCOME */
    LINK_UP,            /* authenticated both ways */
    LINK_CLOSING,       /* dialer: REFUSE sent; closed a heartbeat later */
} link_t;

typedef struct peer {
    struct msd_peers         *ps;
    const msd_cluster_node_t *node;
    struct sockaddr_storage   ss;
    socklen_t                 sslen;
    bool                      dialer; /* this daemon dials it (its name is the lower) */
    memsvc_peer_state_t       state;
    char                      reason[PEER_TEXT_MAX + 1];
    uint64_t                  state_at, heard_at; /* heard_at 0: never */
    uint64_t                  boot_id, restarts;
    peer_msg_t                figures; /* its last heartbeat */
    /* the link */
    link_t         link;
    ucp_ep_h       ep;      /* dialer: ours (closed here); acceptor: the session's */
    msd_session_t *sess;    /* acceptor: the session owning ep */
    uint64_t       link_at; /* when the handshake started */
    bool           ep_failed;
    ucs_status_t   ep_status;
    uint64_t       next_dial, backoff_ns;
    /* acceptor: a handshake in progress (a link that is up is kept until it completes) */
    ucp_ep_h       hs_ep;
    msd_session_t *hs_sess;
    uint8_t        nonce_mine[PEER_NONCE_LEN], nonce_peer[PEER_NONCE_LEN];
    uint64_t       hs_boot;
} peer_t;

struct msd_peers {
    msd_server_t *srv;
    msd_cluster_t cluster;
    unsigned      self;
    uint8_t       key[MSD_PEER_KEY_LEN];
    uint64_t      boot_id;
    uint64_t      hb_ns, timeout_ns;
    uint64_t      start_ns, next_hb, seq;
    bool          wake;     /* a link failed: tick at once */
    unsigned      inflight; /* sends not yet completed (loop 0 only) */
    bool          stopped;  /* msd_peers_stop ran (at the start of a shutdown, again at fini) */
    peer_t       *peers;    /* cluster.n of them; [self] unused */
};

/* ---- messages ------------------------------------------------------------------------------ */

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n)
{
    memcpy(p, src, n);
    return p + n;
}

static void msg_pack(const peer_msg_t *m, uint8_t out[PEER_MSG_LEN])
{
    uint8_t *p = out;

    p = msd_put_head(p, PEER_MAGIC, PEER_VERSION, m->type, m->from, m->to, sizeof(m->from));
    p = put_bytes(p, m->hash, sizeof(m->hash));
    p = msd_put_le(p, m->boot_id, 8);
    p = put_bytes(p, m->nonce, sizeof(m->nonce));
    p = put_bytes(p, m->mac, sizeof(m->mac));
    p = msd_put_le(p, m->reason, 4);
    p = msd_put_str(p, m->text, sizeof(m->text));
    p = msd_put_le(p, m->seq, 8);
    p = msd_put_le(p, m->uptime_ns, 8);
    p = msd_put_le(p, m->hbm_used, 8);
    p = msd_put_le(p, m->hbm_total, 8);
    p = msd_put_le(p, m->host_used, 8);
    p = msd_put_le(p, m->host_total, 8);
    msd_put_le(p, m->sessions, 8);
}

/* Decode a peer message; false if it is not one (size, magic, version, type, strings). */
static bool msg_unpack(const void *data, size_t len, peer_msg_t *m)
{
    const uint8_t *p = data;
    uint64_t       v;

    memset(m, 0, sizeof(*m));
    if (len != PEER_MSG_LEN) {
        return false;
    }
    p = msd_get_head(p, len, PEER_MAGIC, PEER_VERSION, PM_HELLO, PM_BYE, &m->type, m->from, m->to,
                     sizeof(m->from));
    if (p == NULL) {
        return false;
    }
    memcpy(m->hash, p, sizeof(m->hash));
    p += sizeof(m->hash);
    p = msd_get_le(p, &m->boot_id, 8);
    memcpy(m->nonce, p, sizeof(m->nonce));
    p += sizeof(m->nonce);
    memcpy(m->mac, p, sizeof(m->mac));
    p += sizeof(m->mac);
    p         = msd_get_le(p, &v, 4);
    m->reason = (uint32_t)v;
    if (!msd_get_str(p, m->text, sizeof(m->text))) {
        return false;
    }
    p += sizeof(m->text);
    p = msd_get_le(p, &m->seq, 8);
    p = msd_get_le(p, &m->uptime_ns, 8);
    p = msd_get_le(p, &m->hbm_used, 8);
    p = msd_get_le(p, &m->hbm_total, 8);
    p = msd_get_le(p, &m->host_used, 8);
    p = msd_get_le(p, &m->host_total, 8);
    msd_get_le(p, &m->sessions, 8);
    return true;
}

/*
 * The proof of one side: role 'A' (acceptor) or 'D' (dialer), over everything the handshake
 * agreed on, so that a proof cannot be replayed in another handshake or in the other role.
 */
static void peer_mac(const msd_peers_t *ps, char role, const char *dialer, const char *acceptor,
                     const uint8_t *nonce_d, const uint8_t *nonce_a, uint64_t boot_d,
                     uint64_t boot_a, uint8_t out[PEER_MAC_LEN])
{
    uint8_t
        buf[16 + 1 + MSD_CLUSTER_HASH_LEN + 2 * (MSD_NODE_NAME_MAX + 1) + 2 * PEER_NONCE_LEN + 16];
    uint8_t *p = buf;

    p    = put_bytes(p, "memsvc-peer-v1\0", 16);
    *p++ = (uint8_t)role;
    p    = put_bytes(p, ps->cluster.hash, MSD_CLUSTER_HASH_LEN);
    p    = msd_put_str(p, dialer, MSD_NODE_NAME_MAX + 1);
    p    = msd_put_str(p, acceptor, MSD_NODE_NAME_MAX + 1);
    p    = put_bytes(p, nonce_d, PEER_NONCE_LEN);
    p    = put_bytes(p, nonce_a, PEER_NONCE_LEN);
    p    = msd_put_le(p, boot_d, 8);
    p    = msd_put_le(p, boot_a, 8);
    crypto_auth(out, buf, (size_t)(p - buf), ps->key);
}

/* A message in flight: its bytes must live until the send completes. */
typedef struct pm_send {
    msd_peers_t *ps;
    uint8_t      data[PEER_MSG_LEN];
} pm_send_t;

static void send_cb(void *request, ucs_status_t status, void *user_data)
{
    pm_send_t *send = user_data;

    send->ps->inflight--;
    free(send);
    ucp_request_free(request);
}

/* Send m (from this node, hash filled in here) on ep. Failures show up as an ep error. */
static void msg_send(msd_peers_t *ps, ucp_ep_h ep, peer_msg_t *m)
{
    ucp_request_param_t param = {0};
    ucs_status_ptr_t    sp;
    pm_send_t          *send;

    if (ep == NULL) {
        return;
    }
    send = malloc(sizeof(*send));
    if (send == NULL) {
        LOG_ERR("out of memory for a peer message");
        return;
    }
    send->ps = ps;
    snprintf(m->from, sizeof(m->from), "%s", ps->cluster.nodes[ps->self].name);
    memcpy(m->hash, ps->cluster.hash, sizeof(m->hash));
    m->boot_id = ps->boot_id;
    msg_pack(m, send->data);
    param.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    param.cb.send   = send_cb;
    param.user_data = send;
    param.flags     = UCP_AM_SEND_FLAG_REPLY;
    sp              = ucp_am_send_nbx(ep, MSP_AM_PEER, send->data, PEER_MSG_LEN, NULL, 0, &param);
    if (UCS_PTR_IS_PTR(sp)) {
        ps->inflight++; /* send_cb frees it */
        return;
    }
    if (UCS_PTR_IS_ERR(sp)) {
        LOG_DEBUG("peer message not sent: %s", ucs_status_string(UCS_PTR_STATUS(sp)));
    }
    free(send);
}

static void send_refuse(msd_peers_t *ps, ucp_ep_h ep, const char *to, pm_reason_t reason,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void send_refuse(msd_peers_t *ps, ucp_ep_h ep, const char *to, pm_reason_t reason,
                        const char *fmt, ...)
{
    peer_msg_t m = {.type = PM_REFUSE, .reason = reason};
    va_list    ap;

    snprintf(m.to, sizeof(m.to), "%s", to);
    va_start(ap, fmt);
    vsnprintf(m.text, sizeof(m.text), fmt, ap);
    va_end(ap);
    msg_send(ps, ep, &m);
}

/* ---- states -------------------------------------------------------------------------------- */

static void peer_state(msd_peers_t *ps, peer_t *p, memsvc_peer_state_t state, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Enter a state (logged when it changes) with its reason. */
static void peer_state(msd_peers_t *ps, peer_t *p, memsvc_peer_state_t state, const char *fmt, ...)
{
    char    why[PEER_TEXT_MAX + 1];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if ((state != p->state) || ((state == MEMSVC_PEER_REFUSED) && (strcmp(why, p->reason) != 0))) {
        if (state == MEMSVC_PEER_UP) {
            LOG("peer %s (%s): %s -> up%s%s", p->node->name, p->node->addr,
                memsvc_peer_state_name(p->state), (why[0] != '\0') ? ": " : "", why);
        } else {
            LOG_WARN("peer %s (%s): %s -> %s: %s", p->node->name, p->node->addr,
                     memsvc_peer_state_name(p->state), memsvc_peer_state_name(state), why);
        }
        p->state    = state;
        p->state_at = msp_now_ns();
    }
    snprintf(p->reason, sizeof(p->reason), "%s", why);
}

static void ep_close(ucp_ep_h ep)
{
    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                               .flags        = UCP_EP_CLOSE_FLAG_FORCE};
    ucs_status_ptr_t    sp  = ucp_ep_close_nbx(ep, &prm);

    if (UCS_PTR_IS_PTR(sp)) {
        ucp_request_free(sp); /* completes on its own during progress */
    }
}

/* An accepted endpoint is the session's: end the session (loop 0 reaps it and closes ep). */
static void sess_end(msd_server_t *srv, msd_session_t *s)
{
    if ((s != NULL) && !s->dead) {
        s->dead = true;
        atomic_store(&srv->reap_tcp, true);
    }
}

/* Forget the link (and a handshake in progress); a peer that was up becomes suspect. */
static void link_drop(msd_peers_t *ps, peer_t *p, const char *why)
{
    uint64_t now = msp_now_ns();

    if (p->dialer) {
        if (p->ep != NULL) {
            ep_close(p->ep);
        }
        p->next_dial = now + p->backoff_ns;
        p->backoff_ns =
            (2 * p->backoff_ns > PEER_BACKOFF_MAX_NS) ? PEER_BACKOFF_MAX_NS : 2 * p->backoff_ns;
    } else {
        sess_end(ps->srv, p->sess);
    }
    if ((p->link == LINK_UP) && (p->state == MEMSVC_PEER_UP)) {
        peer_state(ps, p, MEMSVC_PEER_SUSPECT, "%s", why);
    }
    if (p->link == LINK_UP) {
        msd_repl_link(ps->srv, (unsigned)(p - ps->peers), false, false);
    }
    p->ep        = NULL;
    p->sess      = NULL;
    p->link      = LINK_NONE;
    p->ep_failed = false;
}

static void link_up(msd_peers_t *ps, peer_t *p, uint64_t boot)
{
    char was[24] = "";

    if ((p->boot_id != 0) && (p->boot_id != boot)) {
        p->restarts++;
        LOG("peer %s restarted: boot id %016llx -> %016llx", p->node->name,
            (unsigned long long)p->boot_id, (unsigned long long)boot);
        snprintf(was, sizeof(was), "restarted");
    }
    bool new_boot = (p->boot_id != boot);

    p->boot_id    = boot;
    p->heard_at   = msp_now_ns();
    p->link       = LINK_UP;
    p->backoff_ns = PEER_BACKOFF_MIN_NS;
    peer_state(ps, p, MEMSVC_PEER_UP, "%s%sboot id %016llx, link %s", was,
               (was[0] != '\0') ? ", " : "", (unsigned long long)boot,
               p->dialer ? "this node dialed" : "it dialed");
    msd_repl_link(ps->srv, (unsigned)(p - ps->peers), true, new_boot);
}

/* ---- handshake ------------------------------------------------------------------------------- */

/* A dialed endpoint failed (UCX progress on loop 0): the tick drops the link at once. */
static void dial_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    peer_t       *p   = arg;
    msd_server_t *srv = p->ps->srv;

    msd_lock(srv);
    if (p->ep == ep) {
        p->ep_failed = true;
        p->ep_status = status;
        p->ps->wake  = true;
        msd_after_batch(srv);
    }
    msd_unlock(srv);
}

static void dial(msd_peers_t *ps, peer_t *p)
{
    ucp_ep_params_t ep = {0};
    peer_msg_t      m  = {.type = PM_HELLO};
    ucs_status_t    st;

    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.flags            = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr    = (struct sockaddr *)&p->ss;
    ep.sockaddr.addrlen = p->sslen;
    ep.err_mode         = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb   = dial_err_cb;
    ep.err_handler.arg  = p;
    st                  = ucp_ep_create(ps->srv->worker, &ep, &p->ep);
    if (st != UCS_OK) {
        LOG_DEBUG("peer %s: cannot dial %s: %s", p->node->name, p->node->addr,
                  ucs_status_string(st));
        p->ep = NULL;
        link_drop(ps, p, "cannot dial");
        return;
    }
    p->link    = LINK_HELLO_SENT;
    p->link_at = msp_now_ns();
    randombytes_buf(p->nonce_mine, sizeof(p->nonce_mine));
    snprintf(m.to, sizeof(m.to), "%s", p->node->name);
    memcpy(m.nonce, p->nonce_mine, sizeof(m.nonce));
    msg_send(ps, p->ep, &m);
}

static msd_session_t *session_of(msd_server_t *srv, ucp_ep_h ep)
{
    msd_session_t *s;

    for (s = srv->sessions; s != NULL; s = s->next) {
        if ((s->ep == ep) && !s->dead && !s->local) {
            return s;
        }
    }
    return NULL;
}

static const char *self_name(const msd_peers_t *ps)
{
    return ps->cluster.nodes[ps->self].name;
}

/*
 * Acceptor: a handshake claiming to come from p failed. While an authenticated link to p is
 * up, that was not p (anyone may connect and send a HELLO): logged, p's state kept.
 */
static void refused(msd_peers_t *ps, peer_t *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refused(msd_peers_t *ps, peer_t *p, const char *fmt, ...)
{
    char    why[PEER_TEXT_MAX + 1];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (p->link == LINK_UP) {
        LOG_WARN("a link claiming to be peer %s failed: %s; the authenticated link to %s stays "
                 "up",
                 p->node->name, why, p->node->name);
        return;
    }
    peer_state(ps, p, MEMSVC_PEER_REFUSED, "%s", why);
}

/* Acceptor: a HELLO on a new endpoint. */
static void on_hello(msd_peers_t *ps, const peer_msg_t *m, ucp_ep_h ep)
{
    msd_session_t *s = session_of(ps->srv, ep);
    peer_msg_t     c = {.type = PM_CHALLENGE};
    peer_t        *p;
    int            i;

    if (s == NULL) {
        return; /* not an endpoint a client connected: ignored */
    }
    if (strcmp(m->to, self_name(ps)) != 0) {
        LOG_WARN("refused a peer link from '%s': it wants node '%s'; this is '%s' (cluster file "
                 "addresses differ)",
                 m->from, m->to, self_name(ps));
        send_refuse(ps, ep, m->from, PR_NAME, "this address is node '%s', not '%s'", self_name(ps),
                    m->to);
        return;
    }
    i = msd_cluster_find(&ps->cluster, m->from);
    if ((i < 0) || ((unsigned)i == ps->self)) {
        LOG_WARN("refused a peer link from '%s': not a node of this cluster file", m->from);
        send_refuse(ps, ep, m->from, PR_NAME, "'%s' is not in the cluster file of '%s'", m->from,
                    self_name(ps));
        return;
    }
    p = &ps->peers[i];
    if (sodium_memcmp(m->hash, ps->cluster.hash, MSD_CLUSTER_HASH_LEN) != 0) {
        char theirs[17];

        sodium_bin2hex(theirs, sizeof(theirs), m->hash, 8);
        refused(ps, p, "cluster file differs (its hash %s..., ours %.16s...)", theirs,
                ps->cluster.hash_hex);
        send_refuse(ps, ep, m->from, PR_CLUSTER, "cluster file differs (hash at '%s': %.16s...)",
                    self_name(ps), ps->cluster.hash_hex);
        return;
    }
    if (p->dialer) {
        send_refuse(ps, ep, m->from, PR_NAME, "'%s' dials '%s', not the other way", self_name(ps),
                    m->from);
        return;
    }
    s->peer = true;
    snprintf(s->name, sizeof(s->name), "peer link from %s", p->node->name); /* for its logs */
    p->hs_ep   = ep;
    p->hs_sess = s;
    p->hs_boot = m->boot_id;
    memcpy(p->nonce_peer, m->nonce, PEER_NONCE_LEN);
    randombytes_buf(p->nonce_mine, PEER_NONCE_LEN);
    snprintf(c.to, sizeof(c.to), "%s", p->node->name);
    memcpy(c.nonce, p->nonce_mine, PEER_NONCE_LEN);
    peer_mac(ps, 'A', p->node->name, self_name(ps), p->nonce_peer, p->nonce_mine, p->hs_boot,
             ps->boot_id, c.mac);
    msg_send(ps, ep, &c);
}

/* Dialer: the acceptor proved itself (or not). */
static void on_challenge(msd_peers_t *ps, peer_t *p, const peer_msg_t *m)
{
    peer_msg_t r = {.type = PM_RESPONSE};
    uint8_t    want[PEER_MAC_LEN];

    if (p->link != LINK_HELLO_SENT) {
        return;
    }
    peer_mac(ps, 'A', self_name(ps), p->node->name, p->nonce_mine, m->nonce, ps->boot_id,
             m->boot_id, want);
    if (crypto_verify_32(want, m->mac) != 0) {
        peer_state(ps, p, MEMSVC_PEER_REFUSED,
                   "wrong cluster secret (its proof does not verify here)");
        send_refuse(ps, p->ep, p->node->name, PR_SECRET,
                    "wrong cluster secret (proof of '%s' fails at '%s')", p->node->name,
                    self_name(ps));
        p->link    = LINK_CLOSING;
        p->link_at = msp_now_ns();
        return;
    }
    memcpy(p->nonce_peer, m->nonce, PEER_NONCE_LEN);
    p->hs_boot = m->boot_id;
    snprintf(r.to, sizeof(r.to), "%s", p->node->name);
    peer_mac(ps, 'D', self_name(ps), p->node->name, p->nonce_mine, p->nonce_peer, ps->boot_id,
             p->hs_boot, r.mac);
    msg_send(ps, p->ep, &r);
    p->link = LINK_RESPONSE_SENT;
}

/* Acceptor: the dialer proved itself (or not). */
static void on_response(msd_peers_t *ps, peer_t *p, const peer_msg_t *m, ucp_ep_h ep)
{
    peer_msg_t w = {.type = PM_WELCOME};
    uint8_t    want[PEER_MAC_LEN];

    if (p->hs_ep != ep) {
        return;
    }
    p->hs_ep = NULL;
    peer_mac(ps, 'D', p->node->name, self_name(ps), p->nonce_peer, p->nonce_mine, p->hs_boot,
             ps->boot_id, want);
    if (crypto_verify_32(want, m->mac) != 0) {
        refused(ps, p, "wrong cluster secret (its proof does not verify here)");
        send_refuse(ps, ep, p->node->name, PR_SECRET,
                    "wrong cluster secret (proof of '%s' fails at '%s')", p->node->name,
                    self_name(ps));
        return; /* the dialer closes; its session is reaped */
    }
    if ((p->sess != NULL) && (p->sess != p->hs_sess)) {
        sess_end(ps->srv, p->sess); /* an older link (the peer restarted or redialed) */
    }
    p->ep   = ep;
    p->sess = p->hs_sess;
    if (p->sess != NULL) {
        p->sess->peer_up = true; /* kept past the clients' handshake timeout */
    }
    snprintf(w.to, sizeof(w.to), "%s", p->node->name);
    msg_send(ps, ep, &w);
    link_up(ps, p, p->hs_boot);
}

static void on_heartbeat(msd_peers_t *ps, peer_t *p, const peer_msg_t *m)
{
    if (p->link != LINK_UP) {
        return;
    }
    p->figures  = *m;
    p->heard_at = msp_now_ns();
    if (p->state != MEMSVC_PEER_UP) {
        peer_state(ps, p, MEMSVC_PEER_UP, "heartbeats again");
    }
}

static void on_refuse(msd_peers_t *ps, peer_t *p, const peer_msg_t *m)
{
    /* The text names the cause and where it was found (send_refuse). */
    peer_state(ps, p, MEMSVC_PEER_REFUSED, "%s", m->text);
    if (p->dialer) {
        p->link    = LINK_CLOSING;
        p->link_at = msp_now_ns();
    }
}

static ucs_status_t peer_am_cb(void *arg, const void *header, size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param)
{
    msd_server_t *srv = arg;
    msd_peers_t  *ps  = srv->peers;
    ucp_ep_h      ep;
    peer_msg_t    m;
    peer_t       *p;
    int           i;

    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || (param->reply_ep == NULL) ||
        (length != 0) || !msg_unpack(header, header_length, &m)) {
        LOG_DEBUG("a malformed peer message (%zu bytes): dropped", header_length);
        return UCS_OK;
    }
    ep = param->reply_ep;
    msd_lock(srv);
    if (m.type == PM_HELLO) {
        on_hello(ps, &m, ep);
        goto out;
    }
    i = msd_cluster_find(&ps->cluster, m.from);
    if ((i < 0) || ((unsigned)i == ps->self) || (strcmp(m.to, self_name(ps)) != 0)) {
        goto out;
    }
    p = &ps->peers[i];
    if ((ep != p->ep) && (ep != p->hs_ep)) {
        goto out; /* a link that is no longer the peer's */
    }
    switch (m.type) {
    case PM_CHALLENGE:
        on_challenge(ps, p, &m);
        break;
    case PM_RESPONSE:
        on_response(ps, p, &m, ep);
        break;
    case PM_WELCOME:
        if (p->link == LINK_RESPONSE_SENT) {
            link_up(ps, p, p->hs_boot);
        }
        break;
    case PM_HEARTBEAT:
        on_heartbeat(ps, p, &m);
        break;
    case PM_REFUSE:
        on_refuse(ps, p, &m);
        break;
    case PM_BYE:
        if (p->link == LINK_UP) {
            peer_state(ps, p, MEMSVC_PEER_DOWN, "stopped (it said goodbye)");
            link_drop(ps, p, "stopped");
        }
        break;
    default:
        break;
    }
out:
    msd_after_batch(srv);
    msd_unlock(srv);
    return UCS_OK;
}

/* ---- the tick -------------------------------------------------------------------------------- */

/* This node's figures for a heartbeat (engine lock held). */
static void own_figures(msd_server_t *srv, peer_msg_t *m)
{
    eng_stats_t     es;
    eng_dev_stats_t ds;
    msd_session_t  *s;
    unsigned        d;

    eng_stats(srv->eng, &es);
    m->host_used  = es.host.used;
    m->host_total = es.host.capacity;
    for (d = 0; d < es.num_devices; d++) {
        if (eng_dev_stats(srv->eng, d, &ds) == MEMSVC_OK) {
            m->hbm_used += ds.alloc.allocated;
            m->hbm_total += ds.alloc.capacity;
        }
    }
    for (s = srv->sessions; s != NULL; s = s->next) {
        m->sessions += (!s->dead && s->bound) ? 1 : 0;
    }
    m->uptime_ns = msp_now_ns() - srv->start_ns;
}

static void fmt_secs(uint64_t ns, char *buf, size_t len)
{
    snprintf(buf, len, "%.1f s", (double)ns / 1e9);
}

/* One peer's timeouts and redial. */
static void peer_tick(msd_peers_t *ps, peer_t *p, uint64_t now)
{
    uint64_t since = (p->heard_at != 0) ? p->heard_at : ps->start_ns;
    char     t[32];

    if (p->ep_failed) {
        char why[80];

        snprintf(why, sizeof(why), "transport error: %s", ucs_status_string(p->ep_status));
        link_drop(ps, p, why);
    } else if ((p->link == LINK_CLOSING) && (now - p->link_at >= ps->hb_ns)) {
        link_drop(ps, p, "refused"); /* a heartbeat later: the REFUSE has gone out */
    }
    if (p->link == LINK_UP) {
        fmt_secs(now - p->heard_at, t, sizeof(t));
        if (now - p->heard_at >= ps->timeout_ns) {
            link_drop(ps, p, "no heartbeat");
            peer_state(ps, p, MEMSVC_PEER_DOWN, "no heartbeat for %s", t);
        } else if ((now - p->heard_at > PEER_SUSPECT_BEATS * ps->hb_ns) &&
                   (p->state == MEMSVC_PEER_UP)) {
            peer_state(ps, p, MEMSVC_PEER_SUSPECT, "no heartbeat for %s", t);
        }
        return;
    }
    if ((p->link != LINK_NONE) && (now - p->link_at >= ps->timeout_ns)) {
        link_drop(ps, p, "handshake not answered");
    }
    if (((p->state == MEMSVC_PEER_CONNECTING) || (p->state == MEMSVC_PEER_SUSPECT)) &&
        (now - since >= ps->timeout_ns)) {
        fmt_secs(now - since, t, sizeof(t));
        if (p->heard_at == 0) {
            peer_state(ps, p, MEMSVC_PEER_DOWN, "not reached in %s since this daemon started", t);
        } else {
            peer_state(ps, p, MEMSVC_PEER_DOWN, "no heartbeat for %s (%s)", t, p->reason);
        }
    }
    if (p->dialer && (p->link == LINK_NONE) && (now >= p->next_dial)) {
        dial(ps, p);
    }
}

void msd_peers_tick(msd_server_t *srv)
{
    msd_peers_t *ps = srv->peers;
    peer_msg_t   hb = {.type = PM_HEARTBEAT};
    uint64_t     now;
    unsigned     i;

    if ((ps == NULL) || ps->stopped) {
        return; /* shutting down: no more dials or heartbeats */
    }
    now      = msp_now_ns();
    ps->wake = false;
    for (i = 0; i < ps->cluster.n; i++) {
        if (i != ps->self) {
            peer_tick(ps, &ps->peers[i], now);
        }
    }
    msd_repl_tick(srv);
    if (now < ps->next_hb) {
        return;
    }
    ps->next_hb = now + ps->hb_ns;
    own_figures(srv, &hb);
    hb.seq = ++ps->seq;
    for (i = 0; i < ps->cluster.n; i++) {
        peer_t *p = &ps->peers[i];

        if ((i != ps->self) && (p->link == LINK_UP)) {
            snprintf(hb.to, sizeof(hb.to), "%s", p->node->name);
            msg_send(ps, p->ep, &hb);
        }
    }
}

uint64_t msd_peers_next(msd_server_t *srv)
{
    msd_peers_t *ps = srv->peers;
    uint64_t     next;
    unsigned     i;

    if (ps == NULL) {
        return UINT64_MAX;
    }
    if (ps->wake) {
        return 0;
    }
    next = msd_repl_next(srv);
    if (ps->next_hb < next) {
        next = ps->next_hb;
    }
    for (i = 0; i < ps->cluster.n; i++) {
        const peer_t *p = &ps->peers[i];

        if ((i == ps->self) || !p->dialer) {
            continue;
        }
        if (p->ep_failed) {
            return 0;
        }
        if ((p->link == LINK_CLOSING) && (p->link_at + ps->hb_ns < next)) {
            next = p->link_at + ps->hb_ns;
        }
        if ((p->link == LINK_NONE) && (p->next_dial < next)) {
            next = p->next_dial;
        }
    }
    return next;
}

void msd_peers_session_gone(msd_server_t *srv, msd_session_t *s)
{
    msd_peers_t *ps = srv->peers;
    unsigned     i;

    if ((ps == NULL) || !s->peer) {
        return;
    }
    for (i = 0; i < ps->cluster.n; i++) {
        peer_t *p = &ps->peers[i];

        if (p->hs_sess == s) {
            p->hs_sess = NULL;
            p->hs_ep   = NULL;
        }
        if (p->sess == s) {
            p->sess = NULL; /* the session closes the endpoint */
            p->ep   = NULL;
            link_drop(ps, p, "its link closed");
        }
    }
}

/* ---- set-up ---------------------------------------------------------------------------------- */

memsvc_status_t msd_peers_create(const msd_config_t *cfg, msd_peers_t **peers_p)
{
    msd_peers_t    *ps = calloc(1, sizeof(*ps));
    memsvc_status_t status;
    char            err[512] = "";
    unsigned        i;
    int             self;

    if (ps == NULL) {
        LOG_ERR("out of memory");
        return MEMSVC_ERR_NO_RESOURCE;
    }
    status = msd_cluster_load(cfg->cluster_file, &ps->cluster, err, sizeof(err));
    if (status != MEMSVC_OK) {
        LOG_ERR("--cluster: %s", err);
        goto err_free;
    }
    self = (cfg->node_name != NULL) ? msd_cluster_find(&ps->cluster, cfg->node_name) : -1;
    if (self < 0) {
        LOG_ERR("--node-name: '%s' is not a node of %s", cfg->node_name ? cfg->node_name : "",
                cfg->cluster_file);
        status = MEMSVC_ERR_INVALID_PARAM;
        goto err_cluster;
    }
    if (cfg->cluster_secret == NULL) {
        LOG_ERR("--cluster needs --cluster-secret FILE (peers authenticate with it)");
        status = MEMSVC_ERR_INVALID_PARAM;
        goto err_cluster;
    }
    status = msd_cluster_secret_load(cfg->cluster_secret, ps->key, err, sizeof(err));
    if (status != MEMSVC_OK) {
        LOG_ERR("--cluster-secret: %s", err);
        goto err_cluster;
    }
    ps->peers = calloc(ps->cluster.n, sizeof(*ps->peers));
    if (ps->peers == NULL) {
        LOG_ERR("out of memory");
        status = MEMSVC_ERR_NO_RESOURCE;
        goto err_key;
    }
    ps->self       = (unsigned)self;
    ps->hb_ns      = cfg->heartbeat_ns;
    ps->timeout_ns = cfg->peer_timeout_ns;
    do {
        randombytes_buf(&ps->boot_id, sizeof(ps->boot_id));
    } while (ps->boot_id == 0);
    for (i = 0; i < ps->cluster.n; i++) {
        peer_t *p = &ps->peers[i];

        p->ps         = ps;
        p->node       = &ps->cluster.nodes[i];
        p->dialer     = (strcmp(self_name(ps), p->node->name) < 0);
        p->backoff_ns = PEER_BACKOFF_MIN_NS;
        p->state      = MEMSVC_PEER_CONNECTING;
        (void)msp_parse_addr(p->node->addr, &p->ss, &p->sslen); /* checked by the load */
    }
    *peers_p = ps;
    return MEMSVC_OK;

err_key:
    sodium_memzero(ps->key, sizeof(ps->key));
err_cluster:
    msd_cluster_free(&ps->cluster);
err_free:
    free(ps);
    return status;
}

void msd_peers_destroy(msd_peers_t *ps)
{
    if (ps == NULL) {
        return;
    }
    sodium_memzero(ps->key, sizeof(ps->key));
    free(ps->peers);
    msd_cluster_free(&ps->cluster);
    free(ps);
}

const char *msd_peers_self_addr(const msd_peers_t *ps)
{
    return ps->cluster.nodes[ps->self].addr;
}

memsvc_status_t msd_peers_attach(msd_server_t *srv)
{
    msd_peers_t *ps = srv->peers;
    ucs_status_t st;

    if (ps == NULL) {
        return MEMSVC_OK;
    }
    ps->srv      = srv;
    ps->start_ns = msp_now_ns();
    ps->next_hb  = ps->start_ns;
    st           = msp_ucx_am_handler(srv->worker, MSP_AM_PEER, peer_am_cb, srv);
    if (st != UCS_OK) {
        LOG_ERR("cannot receive peer messages: %s", ucs_status_string(st));
        return MEMSVC_ERR_TRANSPORT;
    }
    if ((msd_repl_attach(srv) != MEMSVC_OK) || (msd_tier_attach(srv) != MEMSVC_OK)) {
        return MEMSVC_ERR_TRANSPORT;
    }
    LOG("cluster %s: node '%s' of %u, hash %.16s..., boot id %016llx; heartbeat every %llu ms, "
        "a peer is down after %.1f s of silence",
        srv->cfg.cluster_file, self_name(ps), ps->cluster.n, ps->cluster.hash_hex,
        (unsigned long long)ps->boot_id, (unsigned long long)(ps->hb_ns / 1000000),
        (double)ps->timeout_ns / 1e9);
    return MEMSVC_OK;
}

void msd_peers_stop(msd_server_t *srv)
{
    msd_peers_t *ps  = srv->peers;
    peer_msg_t   bye = {.type = PM_BYE};
    uint64_t     deadline;
    unsigned     i;

    if ((ps == NULL) || ps->stopped) {
        return;
    }
    ps->stopped = true;
    /* Goodbye to every peer up, so that they see this node down now rather than suspect
     * for the peer timeout; bounded wait for the sends. */
    msd_lock(srv);
    for (i = 0; i < ps->cluster.n; i++) {
        if ((i != ps->self) && (ps->peers[i].link == LINK_UP)) {
            snprintf(bye.to, sizeof(bye.to), "%s", ps->peers[i].node->name);
            msg_send(ps, ps->peers[i].ep, &bye);
        }
    }
    msd_unlock(srv);
    deadline = msp_now_ns() + 300000000ull;
    while ((ps->inflight > 0) && (msp_now_ns() < deadline)) {
        ucp_worker_progress(srv->worker);
    }
    msd_lock(srv);
    for (i = 0; i < ps->cluster.n; i++) {
        peer_t *p = &ps->peers[i];

        if (p->dialer && (p->ep != NULL)) {
            ep_close(p->ep);
            p->ep   = NULL;
            p->link = LINK_NONE;
        }
    }
    msd_unlock(srv);
}

/* ---- for replication ------------------------------------------------------------------------ */

unsigned msd_peers_count(const msd_peers_t *ps)
{
    return ps->cluster.n;
}

unsigned msd_peers_self(const msd_peers_t *ps)
{
    return ps->self;
}

const char *msd_peers_name(const msd_peers_t *ps, unsigned i)
{
    return ps->cluster.nodes[i].name;
}

ucp_ep_h msd_peers_ep(const msd_peers_t *ps, unsigned i)
{
    const peer_t *p = &ps->peers[i];

    return ((i != ps->self) && (p->link == LINK_UP) && !p->ep_failed && !ps->stopped) ? p->ep
                                                                                       : NULL;
}

bool msd_peers_lost(const msd_peers_t *ps, unsigned i, uint64_t lost_ns, uint64_t now)
{
    const peer_t *p     = &ps->peers[i];
    uint64_t      since = (p->state_at != 0) ? p->state_at : ps->start_ns;

    if ((p->state == MEMSVC_PEER_UP) || (p->state == MEMSVC_PEER_SUSPECT)) {
        return false;
    }
    return now - since >= lost_ns;
}

int msd_peers_sender(const msd_peers_t *ps, const char *from, ucp_ep_h ep)
{
    int i = msd_cluster_find(&ps->cluster, from);

    if ((i < 0) || ((unsigned)i == ps->self) || (ps->peers[i].link != LINK_UP) ||
        (ps->peers[i].ep != ep)) {
        return -1;
    }
    return i;
}

bool msd_peers_stopped(const msd_peers_t *ps)
{
    return ps->stopped;
}

/* ---- the PEERS request ----------------------------------------------------------------------- */

memsvc_status_t msd_peers_op(msd_server_t *srv, const msp_req_t *req, msp_rep_t *rep,
                             void **payload_p)
{
    msd_peers_t          *ps   = srv->peers;
    memsvc_cluster_info_t self = {0};
    memsvc_peer_info_t   *out;
    memsvc_status_t       status;
    uint64_t              now = msp_now_ns();
    uint32_t              n = 0, i, k = 0;
    void                 *copy;

    out = calloc(MSP_PEERS_MAX, sizeof(*out));
    if (out == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    if (ps != NULL) {
        snprintf(self.node, sizeof(self.node), "%s", self_name(ps));
        snprintf(self.cluster_hash, sizeof(self.cluster_hash), "%s", ps->cluster.hash_hex);
        self.boot_id   = ps->boot_id;
        self.num_peers = ps->cluster.n - 1;
        msd_repl_self_info(srv, &self);
        for (i = 0; (i < ps->cluster.n) && (n < MSP_PEERS_MAX); i++) {
            const peer_t       *p = &ps->peers[i];
            memsvc_peer_info_t *o = &out[n];

            if ((i == ps->self) || (k++ < req->u.peers.start)) {
                continue;
            }
            snprintf(o->name, sizeof(o->name), "%s", p->node->name);
            snprintf(o->address, sizeof(o->address), "%s", p->node->addr);
            snprintf(o->reason, sizeof(o->reason), "%s", p->reason);
            o->state        = p->state;
            o->heard_ago_ns = (p->heard_at != 0) ? now - p->heard_at : UINT64_MAX;
            o->state_age_ns = now - ((p->state_at != 0) ? p->state_at : ps->start_ns);
            o->boot_id      = p->boot_id;
            o->restarts     = p->restarts;
            o->hbm_used     = p->figures.hbm_used;
            o->hbm_total    = p->figures.hbm_total;
            o->host_used    = p->figures.host_used;
            o->host_total   = p->figures.host_total;
            o->sessions     = p->figures.sessions;
            o->uptime_ns    = p->figures.uptime_ns;
            msd_repl_peer_info(srv, i, o);
            n++;
        }
        rep->u.list.next = (req->u.peers.start + n < self.num_peers) ? req->u.peers.start + n : 0;
    }
    rep->u.list.count = n;
    status            = msp_encode_peers(&self, out, n, &srv->body);
    free(out);
    if (status != MEMSVC_OK) {
        LOG_ERR("cannot encode a peers reply body: %s", memsvc_strerror(status));
        return status;
    }
    copy = malloc(srv->body.len);
    if (copy == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    memcpy(copy, srv->body.data, srv->body.len);
    rep->plen  = srv->body.len;
    *payload_p = copy;
    return MEMSVC_OK;
}
