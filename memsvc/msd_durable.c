/* msd_durable.c - durable tensors across daemon restarts: their bytes in an arena file in shared
 * memory (or a state directory), their metadata in a checksummed write-ahead journal (io_uring),
 * replayed and verified at start */
#include "client/msp_ucx.h"
#include "memsvc/mem_hint.h"
#include "memsvc/msd_durable.h"
#include "memsvc/msd_repl.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MSD_LOG_COMP "durable"
#include "memsvc/msd_log.h"

/*
 * Layout. The arena file holds the committed bytes of durable tensors, each in an extent of
 * its own (page-aligned, so that msync covers exactly it). The journal is a sequence of
 * fixed-size records, so that a damaged record is skipped and the next one still found:
 *   PUT  (job, key) has `size` bytes at `offset`, crc32 `data_crc`: version `seq`
 *   DEL  (job, key) is gone, as of `seq`
 * The record of the highest seq of a key tells its state. A new version goes to a new extent;
 * the old extent is freed only once the new record is written and synced, so a crash at any
 * point leaves the previous version or the new one, whole. Checksums: zlib's crc32 (Debian's
 * zlib1g; a keyed cryptographic hash buys nothing against torn writes and bit rot, and costs
 * more per byte).
 */
#define DUR_MAGIC 0x4a44534du /* "MSDJ" */
#define DUR_VERSION 1u
#define DUR_REC_SIZE 512u
#define DUR_ALIGN 4096ull

enum { DUR_PUT = 1, DUR_DEL = 2 };

typedef struct dur_rec {
    uint32_t magic;
    uint16_t version;
    uint16_t type;     /* DUR_PUT, DUR_DEL */
    uint64_t seq;      /* the highest of a key wins */
    uint32_t job, rank;
    uint32_t kind, device;
    uint64_t size;     /* tensor bytes (PUT) */
    uint64_t offset;   /* in the arena (PUT) */
    uint32_t data_crc; /* crc32 of the tensor bytes (PUT) */
    uint16_t key_len;
    uint16_t reserved;
    char     key[MEMSVC_KEY_MAX + 1];
    uint8_t  owner[8]; /* the job's owner when written (msd_auth principal, little endian) */
    uint8_t  pad[DUR_REC_SIZE - 56 - (MEMSVC_KEY_MAX + 1) - 8 - 4];
    uint32_t rec_crc;  /* crc32 of every byte before it */
} dur_rec_t;

_Static_assert(sizeof(dur_rec_t) == DUR_REC_SIZE, "journal record size");

static void rec_set_owner(dur_rec_t *r, uint64_t principal)
{
    unsigned i;

    for (i = 0; i < 8; i++) {
        r->owner[i] = (uint8_t)(principal >> (8 * i));
    }
}

static uint64_t rec_owner(const dur_rec_t *r)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < 8; i++) {
        v |= (uint64_t)r->owner[i] << (8 * i);
    }
    return v;
}

/* A free range of the arena (sorted by offset, coalesced). */
typedef struct dur_ext {
    struct dur_ext *next;
    uint64_t        off, len;
} dur_ext_t;

/* ---- arena extents ------------------------------------------------------------------------ */

static uint64_t dur_round(uint64_t size)
{
    return (size + DUR_ALIGN - 1) & ~(DUR_ALIGN - 1);
}

/* First fit. false when no free range is large enough. */
static bool ext_alloc(msd_durable_t *d, uint64_t len, uint64_t *off_p)
{
    dur_ext_t **pp, *e;

    for (pp = &d->free; (e = *pp) != NULL; pp = &e->next) {
        if (e->len < len) {
            continue;
        }
        *off_p = e->off;
        e->off += len;
        e->len -= len;
        if (e->len == 0) {
            *pp = e->next;
            free(e);
        }
        return true;
    }
    return false;
}

static void ext_free(msd_durable_t *d, uint64_t off, uint64_t len)
{
    dur_ext_t **pp, *e, *prev = NULL;

    for (pp = &d->free; (*pp != NULL) && ((*pp)->off < off); pp = &(*pp)->next) {
        prev = *pp;
    }
    if ((prev != NULL) && (prev->off + prev->len == off)) {
        prev->len += len; /* merge with the range before */
        e = prev;
    } else {
        e = malloc(sizeof(*e));
        if (e == NULL) {
            LOG_ERR("out of memory: %llu bytes of the arena stay unused", (unsigned long long)len);
            return;
        }
        e->off  = off;
        e->len  = len;
        e->next = *pp;
        *pp     = e;
    }
    if ((e->next != NULL) && (e->off + e->len == e->next->off)) {
        dur_ext_t *n = e->next; /* and with the range after */

        e->len += n->len;
        e->next = n->next;
        free(n);
    }
}

/* Take [off, off + len) out of the free ranges; false if any of it is not free. */
static bool ext_reserve(msd_durable_t *d, uint64_t off, uint64_t len)
{
    dur_ext_t *e;

    for (e = d->free; e != NULL; e = e->next) {
        if ((off >= e->off) && (off + len <= e->off + e->len)) {
            uint64_t tail = e->off + e->len - (off + len);

            e->len = off - e->off;
            if (tail > 0) {
                ext_free(d, off + len, tail);
            }
            if (e->len == 0) {
                dur_ext_t **pp;

                for (pp = &d->free; *pp != e; pp = &(*pp)->next) {
                }
                *pp = e->next;
                free(e);
            }
            return true;
        }
    }
    return false;
}

/* A version no record names any more: its blocks go back to the filesystem (on /dev/shm, to
 * memory), its range to the free ranges. */
static void ext_release(msd_durable_t *d, uint64_t off, uint64_t len)
{
    (void)fallocate(d->afd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    ext_free(d, off, len);
}

/* ---- entries -------------------------------------------------------------------------------- */

static dur_ent_t **ent_slot(msd_durable_t *d, eng_handle_t h)
{
    dur_ent_t **pp = &d->ents[(h * 0x9e3779b97f4a7c15ull) >> 52];

    while ((*pp != NULL) && ((*pp)->h != h)) {
        pp = &(*pp)->next;
    }
    return pp;
}

static dur_ent_t *ent_add(msd_durable_t *d, eng_handle_t h, const char *key)
{
    dur_ent_t *e = calloc(1, sizeof(*e));

    if (e == NULL) {
        return NULL;
    }
    e->key = strdup(key);
    if (e->key == NULL) {
        free(e);
        return NULL;
    }
    e->h    = h;
    e->next = d->ents[(h * 0x9e3779b97f4a7c15ull) >> 52];
    d->ents[(h * 0x9e3779b97f4a7c15ull) >> 52] = e;
    return e;
}

static void ent_free(dur_ent_t *e)
{
    free(e->key);
    free(e);
}

static dur_xt_t *xt_new(uint64_t off, uint64_t len)
{
    dur_xt_t *xt = calloc(1, sizeof(*xt));

    if (xt != NULL) {
        xt->off  = off;
        xt->len  = len;
        xt->refs = 1;
    }
    return xt;
}

/* The entry lets go of its version without releasing the range: a record still names it (the
 * daemon stops, or a restore failed and the journal keeps it for a later start). */
static void xt_keep(dur_xt_t *xt)
{
    if (xt != NULL) {
        xt->keep = true; /* a send that still reads it must not release it either */
        if (--xt->refs == 0) {
            free(xt);
        }
    }
}

void msd_durable_xt_put(msd_durable_t *d, dur_xt_t *xt)
{
    if (--xt->refs == 0) {
        if ((d != NULL) && !xt->keep) {
            ext_release(d, xt->off, xt->len);
        }
        free(xt);
    }
}

const uint8_t *msd_durable_xt_bytes(const msd_durable_t *d, const dur_xt_t *xt)
{
    return d->arena + xt->off;
}

dur_ent_t *msd_durable_find(msd_server_t *srv, uint32_t job, const char *key)
{
    eng_handle_t h;

    if ((srv->dur == NULL) || (eng_lookup(srv->eng, job, key, &h) != MEMSVC_OK)) {
        return NULL;
    }
    return *ent_slot(srv->dur, h);
}

/* ---- the journal ----------------------------------------------------------------------------- */

static void rec_seal(dur_rec_t *r)
{
    r->magic   = DUR_MAGIC;
    r->version = DUR_VERSION;
    r->rec_crc = (uint32_t)crc32_z(0, (const Bytef *)r, offsetof(dur_rec_t, rec_crc));
}

/* Why a record is not to be trusted, or NULL. */
static const char *rec_check(dur_rec_t *r)
{
    if (r->rec_crc != (uint32_t)crc32_z(0, (const Bytef *)r, offsetof(dur_rec_t, rec_crc))) {
        return "checksum mismatch";
    }
    if ((r->magic != DUR_MAGIC) || (r->version != DUR_VERSION)) {
        return "unknown magic or version";
    }
    if (((r->type != DUR_PUT) && (r->type != DUR_DEL)) || (r->key_len == 0) ||
        (r->key_len > MEMSVC_KEY_MAX) || (r->key[r->key_len] != '\0')) {
        return "malformed";
    }
    return NULL;
}

/* Write one record at the journal's end and sync it (fdatasync) before returning: what the
 * record says holds from then on. io_uring: the write and the sync linked in one submission. */
static memsvc_status_t journal_append(msd_durable_t *d, const dur_rec_t *r)
{
    struct io_uring_cqe *cqe;
    struct io_uring_sqe *sqe;
    int                  res[2] = {0, 0}, rc, i;

    if (!d->has_ring) {
        if ((pwrite(d->jfd, r, sizeof(*r), (off_t)d->jend) != (ssize_t)sizeof(*r)) ||
            (fdatasync(d->jfd) != 0)) {
            LOG_ERR("journal %s: write at byte %llu: %s", d->jpath,
                    (unsigned long long)d->jend, strerror(errno));
            return MEMSVC_ERR_IO;
        }
        d->jend += sizeof(*r);
        return MEMSVC_OK;
    }
    sqe = io_uring_get_sqe(&d->ring);
    io_uring_prep_write(sqe, d->jfd, r, sizeof(*r), d->jend);
    sqe->flags |= IOSQE_IO_LINK;
    sqe = io_uring_get_sqe(&d->ring);
    io_uring_prep_fsync(sqe, d->jfd, IORING_FSYNC_DATASYNC);
    rc = io_uring_submit_and_wait(&d->ring, 2);
    for (i = 0; (i < 2) && (rc >= 0); i++) {
        rc = io_uring_wait_cqe(&d->ring, &cqe);
        if (rc == 0) {
            res[i] = cqe->res;
            io_uring_cqe_seen(&d->ring, cqe);
        }
    }
    if ((rc < 0) || (res[0] != (int)sizeof(*r)) || (res[1] < 0)) {
        LOG_ERR("journal %s: write at byte %llu failed: %s", d->jpath,
                (unsigned long long)d->jend,
                strerror((rc < 0) ? -rc : (res[0] < 0) ? -res[0] : (res[1] < 0) ? -res[1] : EIO));
        return MEMSVC_ERR_IO;
    }
    d->jend += sizeof(*r);
    return MEMSVC_OK;
}

static int rec_cmp(const void *a, const void *b)
{
    const dur_rec_t *x = a, *y = b;
    int              c;

    if (x->job != y->job) {
        return (x->job < y->job) ? -1 : 1;
    }
    c = strcmp(x->key, y->key);
    if (c != 0) {
        return c;
    }
    return (x->seq < y->seq) ? -1 : (x->seq > y->seq) ? 1 : 0;
}

/*
 * Read the journal: the valid records of it, sorted by (job, key, seq) into *recs_p. Torn and
 * corrupt records are reported (log, counter) and left out.
 */
static memsvc_status_t journal_read(msd_durable_t *d, dur_rec_t **recs_p, size_t *n_p)
{
    struct stat st;
    dur_rec_t  *recs;
    size_t      nslots, n = 0, i;
    uint64_t    tail;
    const char *why;

    *recs_p = NULL;
    *n_p    = 0;
    if (fstat(d->jfd, &st) != 0) {
        LOG_ERR("journal %s: %s", d->jpath, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    nslots = (size_t)st.st_size / DUR_REC_SIZE;
    tail   = (uint64_t)st.st_size % DUR_REC_SIZE;
    if (tail != 0) {
        LOG_WARN("journal %s: torn record at byte %llu (%llu of %u bytes: the daemon stopped "
                 "while writing it): ignored",
                 d->jpath, (unsigned long long)nslots * DUR_REC_SIZE, (unsigned long long)tail,
                 DUR_REC_SIZE);
        d->corrupt++;
    }
    if (nslots == 0) {
        return MEMSVC_OK;
    }
    recs = malloc(nslots * sizeof(*recs));
    if (recs == NULL) {
        LOG_ERR("journal %s: out of memory reading %zu records", d->jpath, nslots);
        return MEMSVC_ERR_NO_RESOURCE;
    }
    for (i = 0; i < nslots; i++) {
        if (pread(d->jfd, &recs[n], DUR_REC_SIZE, (off_t)(i * DUR_REC_SIZE)) != DUR_REC_SIZE) {
            LOG_ERR("journal %s: read at byte %zu: %s", d->jpath, i * DUR_REC_SIZE,
                    strerror(errno));
            free(recs);
            return MEMSVC_ERR_IO;
        }
        why = rec_check(&recs[n]);
        if (why != NULL) {
            LOG_WARN("journal %s: record %zu (byte %zu) is corrupt (%s): skipped, its tensor "
                     "is not served",
                     d->jpath, i, i * DUR_REC_SIZE, why);
            d->corrupt++;
            continue;
        }
        if (recs[n].seq >= d->next_seq) {
            d->next_seq = recs[n].seq + 1;
        }
        n++;
    }
    qsort(recs, n, sizeof(*recs), rec_cmp);
    *recs_p = recs;
    *n_p    = n;
    return MEMSVC_OK;
}

/* Replace the journal by `n` records (the live ones): a new file, synced, renamed over it. */
static memsvc_status_t journal_rewrite(msd_durable_t *d, const dur_rec_t *recs, size_t n)
{
    char   tmp[sizeof(d->jpath) + 8], dir[sizeof(d->jpath)];
    char  *slash;
    size_t i;
    int    fd, dfd;

    snprintf(tmp, sizeof(tmp), "%s.new", d->jpath);
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        LOG_ERR("journal %s: %s", tmp, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    for (i = 0; i < n; i++) {
        if (pwrite(fd, &recs[i], DUR_REC_SIZE, (off_t)(i * DUR_REC_SIZE)) != DUR_REC_SIZE) {
            break;
        }
    }
    if ((i < n) || (fdatasync(fd) != 0) || (rename(tmp, d->jpath) != 0)) {
        LOG_ERR("journal %s: cannot write its compacted copy: %s", d->jpath, strerror(errno));
        close(fd);
        unlink(tmp);
        return MEMSVC_ERR_IO;
    }
    snprintf(dir, sizeof(dir), "%s", d->jpath);
    slash = strrchr(dir, '/');
    if (slash != NULL) {
        *slash = '\0';
        dfd    = open((dir[0] != '\0') ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd); /* the rename itself */
            close(dfd);
        }
    }
    close(d->jfd);
    d->jfd  = fd;
    d->jend = (uint64_t)n * DUR_REC_SIZE;
    return MEMSVC_OK;
}

/* ---- recovery --------------------------------------------------------------------------------- */

typedef struct dur_restore {
    msd_server_t *srv;
    eng_handle_t  h;
    uint64_t      off, size;
} dur_restore_t;

/* The tensor got room on its device: its bytes come from the arena. */
static void dur_placed_cb(void *arg, eng_handle_t h, memsvc_status_t status)
{
    dur_restore_t *rs  = arg;
    msd_server_t  *srv = rs->srv;
    msd_durable_t *d   = srv->dur;

    if (status == MEMSVC_OK) {
        status = eng_write(srv->eng, h, 0, d->arena + rs->off, rs->size);
    }
    if (status != MEMSVC_OK) {
        dur_ent_t **pp = ent_slot(d, h), *e = *pp;

        LOG_ERR("durable tensor '%s': cannot restore it: %s (kept in the journal for a later "
                "start)",
                (e != NULL) ? e->key : "?", memsvc_strerror(status));
        if (e != NULL) { /* its extent stays reserved: the journal still names it */
            *pp = e->next;
            d->tensors--;
            d->bytes -= e->m.size;
            xt_keep(e->xt);
            ent_free(e);
        }
        if (msd_map_get(&srv->own, h, 0) != NULL) {
            msd_map_del(&srv->own, h, 0);
            srv->orphans--;
        }
        if (status != MEMSVC_ERR_CANCELED) {
            eng_free(srv->eng, h); /* (CANCELED: it is being freed, this runs inside) */
        }
    }
    free(rs);
}

/* Bring one verified tensor back into the engine, as an orphan of its job and rank. Its entry,
 * or NULL (logged; the journal keeps it for a later start). */
static dur_ent_t *dur_restore(msd_server_t *srv, const dur_rec_t *r)
{
    msd_durable_t    *d    = srv->dur;
    eng_tensor_desc_t desc = {0};
    eng_handle_t      h    = ENG_HANDLE_NULL;
    memsvc_status_t   status;
    dur_restore_t    *rs = calloc(1, sizeof(*rs));
    dur_ent_t        *e;
    msd_own_t        *own;

    desc.key     = r->key;
    desc.size    = r->size;
    desc.kind    = (memsvc_kind_t)r->kind;
    desc.device  = (r->device < sim_node_num_devices(eng_node(srv->eng))) ? r->device : 0;
    desc.durable = true;
    desc.job     = r->job;
    desc.rank    = r->rank;
    status       = (rs == NULL) ? MEMSVC_ERR_NO_RESOURCE
                                : eng_alloc(srv->eng, &desc, 0, dur_placed_cb, rs, &h);
    if ((status == MEMSVC_OK) || (status == MEMSVC_INPROGRESS)) {
        own = msd_map_put(&srv->own, h, 0);
        e   = (own != NULL) ? ent_add(d, h, r->key) : NULL;
        if (e == NULL) {
            if (own != NULL) {
                msd_map_del(&srv->own, h, 0);
            }
            if (status == MEMSVC_INPROGRESS) {
                rs = NULL; /* a waiter: its callback (CANCELED) frees it */
            }
            eng_free(srv->eng, h);
            status = MEMSVC_ERR_NO_RESOURCE;
        }
    }
    if ((status != MEMSVC_OK) && (status != MEMSVC_INPROGRESS)) {
        LOG_ERR("durable tensor '%s' (job %u): cannot restore it: %s (kept in the journal for "
                "a later start)",
                r->key, r->job, memsvc_strerror(status));
        free(rs);
        return NULL;
    }
    e->xt = xt_new(r->offset, dur_round(r->size));
    if (e->xt == NULL) {
        LOG_ERR("out of memory tracking durable tensor '%s'", r->key); /* kept, not reused */
    }
    e->m.job          = r->job;
    e->m.rank         = r->rank;
    e->m.kind         = r->kind;
    e->m.device       = r->device;
    e->m.version      = r->seq;
    e->m.size         = r->size;
    e->m.crc          = r->data_crc;
    e->m.owner        = rec_owner(r);
    e->committed_ns   = msp_now_ns();
    d->tensors++;
    d->bytes += r->size;
    d->recovered++;
    own->sid      = 0;
    own->rank     = r->rank;
    own->job      = r->job;
    own->deadline = msp_now_ns() + srv->cfg.keep_durable_ns;
    /* Its job is owned again by whom it was: not by the first uid to bind the job now. */
    msd_auth_tensor_restore(srv, r->job, rec_owner(r));
    srv->orphans++;
    if (own->deadline < srv->orphan_next) {
        srv->orphan_next = own->deadline;
    }
    rs->srv  = srv;
    rs->h    = h;
    rs->off  = r->offset;
    rs->size = r->size;
    if (status == MEMSVC_OK) {
        dur_placed_cb(rs, h, MEMSVC_OK); /* may drop e (logged) */
        return *ent_slot(d, h);
    }
    return e;
}

/* The last record of each key, if a PUT whose bytes are whole, is live: restored and kept. */
static memsvc_status_t dur_recover(msd_server_t *srv)
{
    msd_durable_t  *d = srv->dur;
    dur_rec_t      *recs;
    size_t          n, i, nlive = 0;
    memsvc_status_t status;

    status = journal_read(d, &recs, &n);
    if (status != MEMSVC_OK) {
        return status;
    }
    for (i = 0; i < n; i++) {
        dur_rec_t *r = &recs[i];

        if ((i + 1 < n) && (recs[i + 1].job == r->job) && (strcmp(recs[i + 1].key, r->key) == 0)) {
            continue; /* a later record of the same key decides */
        }
        if (r->type != DUR_PUT) {
            continue;
        }
        if ((r->offset % DUR_ALIGN != 0) || (r->size == 0) || (r->offset > d->arena_size) ||
            (dur_round(r->size) > d->arena_size - r->offset) ||
            !ext_reserve(d, r->offset, dur_round(r->size))) {
            LOG_WARN("durable tensor '%s' (job %u): its record names bytes outside the arena or "
                     "bytes of another tensor: not served",
                     r->key, r->job);
            d->corrupt++;
            continue;
        }
        if ((uint32_t)crc32_z(0, d->arena + r->offset, r->size) != r->data_crc) {
            LOG_WARN("durable tensor '%s' (job %u): its %llu bytes at arena offset %llu do not "
                     "match their checksum: not served",
                     r->key, r->job, (unsigned long long)r->size,
                     (unsigned long long)r->offset);
            d->corrupt++;
            ext_free(d, r->offset, dur_round(r->size));
            continue;
        }
        dur_restore(srv, r);
        recs[nlive++] = *r; /* compacted in place: nlive <= i */
    }
    status = journal_rewrite(d, recs, nlive);
    free(recs);
    d->started_empty = (nlive == 0);
    return status;
}

/* ---- set-up ----------------------------------------------------------------------------------- */

/* The port part of HOST:PORT (names the files of one daemon of a node). */
static const char *listen_port(const char *listen)
{
    const char *colon = strrchr(listen, ':');

    return (colon != NULL) ? colon + 1 : listen;
}

static memsvc_status_t dur_open_files(msd_durable_t *d, const msd_config_t *cfg)
{
    struct stat st;
    uint64_t    want = cfg->durable_bytes & ~(DUR_ALIGN - 1);

    d->afd = open(d->arena_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->afd < 0) {
        LOG_ERR("cannot open %s: %s", d->arena_path, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    if (flock(d->afd, LOCK_EX | LOCK_NB) != 0) {
        LOG_ERR("%s is in use by another memsvcd: refusing to start (another --state-dir or "
                "port)",
                d->arena_path);
        return MEMSVC_ERR_EXISTS;
    }
    if (fstat(d->afd, &st) != 0) {
        LOG_ERR("%s: %s", d->arena_path, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    /* Never shrunk: bytes of a larger arena of an earlier run may still be named. */
    d->arena_size = ((uint64_t)st.st_size > want) ? ((uint64_t)st.st_size & ~(DUR_ALIGN - 1))
                                                  : want;
    if (((uint64_t)st.st_size < d->arena_size) &&
        (ftruncate(d->afd, (off_t)d->arena_size) != 0)) {
        LOG_ERR("%s: cannot size it to %llu bytes: %s", d->arena_path,
                (unsigned long long)d->arena_size, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    d->arena = mmap(NULL, d->arena_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                    d->afd, 0);
    if (d->arena == MAP_FAILED) {
        d->arena = NULL;
        LOG_ERR("%s: mmap of %llu bytes: %s", d->arena_path, (unsigned long long)d->arena_size,
                strerror(errno));
        return MEMSVC_ERR_NO_RESOURCE;
    }
    d->jfd = open(d->jpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (d->jfd < 0) {
        LOG_ERR("cannot open %s: %s", d->jpath, strerror(errno));
        return MEMSVC_ERR_IO;
    }
    return MEMSVC_OK;
}

memsvc_status_t msd_durable_open(msd_server_t *srv)
{
    const msd_config_t *cfg = &srv->cfg;
    const char         *dir = (cfg->state_dir != NULL) ? cfg->state_dir : MSD_STATE_DIR;
    msd_durable_t      *d;
    memsvc_status_t     status;
    int                 rc;

    if (strcmp(dir, "none") == 0) {
        LOG("durable state off (--state-dir none): durable tensors do not outlive the daemon");
        return MEMSVC_OK;
    }
    if (sim_node_mode(eng_node(srv->eng)) != SIM_MEM_BACKED) {
        LOG("durable state off: phantom memory has no bytes to keep (use --memory backed)");
        return MEMSVC_OK;
    }
    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    d->afd = d->jfd = -1;
    d->next_seq     = 1;
    snprintf(d->arena_path, sizeof(d->arena_path), "%s/memsvc-%s.durable", dir,
             listen_port(cfg->listen));
    snprintf(d->jpath, sizeof(d->jpath), "%s/memsvc-%s.journal", dir, listen_port(cfg->listen));
    srv->dur = d;
    status   = dur_open_files(d, cfg);
    if (status != MEMSVC_OK) {
        goto err;
    }
    ext_free(d, 0, d->arena_size);
    /* Where io_uring is refused (seccomp in containers, old kernels), say so and fall back. */
    rc          = io_uring_queue_init(4, &d->ring, 0);
    d->has_ring = (rc == 0);
    if (!d->has_ring) {
        LOG_WARN("io_uring unavailable (%s): the journal uses pwrite and fdatasync",
                 strerror(-rc));
    }
    msd_lock(srv); /* the acceptor's threads may already add sessions */
    status = dur_recover(srv);
    if (status == MEMSVC_OK) {
        msd_after_batch(srv); /* restores that wait for room: loop 0 wakes for them */
    }
    msd_unlock(srv);
    if (status != MEMSVC_OK) {
        goto err;
    }
    LOG("durable state: arena %s (%llu MiB), journal %s (%s, fdatasync per record): %llu "
        "tensors recovered, %llu corrupt records or tensors not served",
        d->arena_path, (unsigned long long)(d->arena_size >> 20), d->jpath,
        d->has_ring ? "io_uring" : "pwrite", (unsigned long long)d->recovered,
        (unsigned long long)d->corrupt);
    return MEMSVC_OK;

err:
    msd_durable_close(srv);
    return status;
}

void msd_durable_close(msd_server_t *srv)
{
    msd_durable_t *d = srv->dur;
    dur_ext_t     *e;
    unsigned       i;

    if (d == NULL) {
        return;
    }
    for (i = 0; i < DUR_BUCKETS; i++) {
        while (d->ents[i] != NULL) {
            dur_ent_t *n = d->ents[i]->next;

            xt_keep(d->ents[i]->xt);
            ent_free(d->ents[i]);
            d->ents[i] = n;
        }
    }
    while ((e = d->free) != NULL) {
        d->free = e->next;
        free(e);
    }
    if (d->has_ring) {
        io_uring_queue_exit(&d->ring);
    }
    if (d->arena != NULL) {
        munmap(d->arena, d->arena_size);
    }
    if (d->jfd >= 0) {
        close(d->jfd);
    }
    if ((d->tensors == 0) && (d->corrupt == 0) && (d->afd >= 0)) {
        /* Nothing to bring back and nothing to look at: leave no files behind (still under
         * the lock, so a new daemon on the port cannot have opened them). */
        unlink(d->jpath);
        unlink(d->arena_path);
    }
    if (d->afd >= 0) {
        close(d->afd); /* drops the lock */
    }
    free(d);
    srv->dur = NULL;
}

/* ---- commit and forget ------------------------------------------------------------------------- */

memsvc_status_t msd_durable_commit(msd_server_t *srv, eng_handle_t h, char *msg, size_t msglen)
{
    msd_durable_t    *d = srv->dur;
    eng_tensor_info_t info;
    dur_rec_t         r;
    dur_ent_t       **pp, *e;
    uint64_t          off, len;
    memsvc_status_t   status;

    if ((d == NULL) || (eng_info(srv->eng, h, &info) != MEMSVC_OK) || !info.durable ||
        !info.valid) {
        return MEMSVC_OK;
    }
    len = dur_round(info.size);
    if (!ext_alloc(d, len, &off)) {
        snprintf(msg, msglen, "written, but the durable arena has no room for its %llu bytes "
                 "(--durable-bytes): it would not survive a restart",
                 (unsigned long long)info.size);
        if ((d->full_logged++ % 1000) == 0) {
            LOG_WARN("durable tensor '%s' (job %u): %s", info.key, info.job, msg);
        }
        return MEMSVC_ERR_HOST_MEMORY;
    }
    /* Blocks first: a sparse file on a full tmpfs (a container's small /dev/shm) would
     * answer the copy below with SIGBUS; fallocate answers ENOSPC. */
    if (fallocate(d->afd, 0, (off_t)off, (off_t)len) != 0) {
        ext_free(d, off, len);
        snprintf(msg, msglen, "written, but %s has no room for its %llu bytes (%s): it would "
                 "not survive a restart", d->arena_path, (unsigned long long)info.size,
                 strerror(errno));
        if ((d->full_logged++ % 1000) == 0) {
            LOG_WARN("durable tensor '%s' (job %u): %s", info.key, info.job, msg);
        }
        return MEMSVC_ERR_HOST_MEMORY;
    }
    mem_hint_populate(d->arena + off, len); /* its pages are new */
    status = eng_read(srv->eng, h, 0, d->arena + off, info.size);
    if (status != MEMSVC_OK) {
        ext_free(d, off, len);
        snprintf(msg, msglen, "written, but its bytes could not be kept: %s",
                 memsvc_strerror(status));
        return status;
    }
    memset(&r, 0, sizeof(r));
    r.type     = DUR_PUT;
    r.seq      = d->next_seq++;
    r.job      = info.job;
    r.rank     = info.rank;
    r.kind     = (uint32_t)info.kind;
    r.device   = info.device;
    r.size     = info.size;
    r.offset   = off;
    r.data_crc = (uint32_t)crc32_z(0, d->arena + off, info.size);
    r.key_len  = (uint16_t)strnlen(info.key, MEMSVC_KEY_MAX);
    memcpy(r.key, info.key, r.key_len);
    rec_set_owner(&r, msd_auth_job_owner(srv, info.job));
    rec_seal(&r);
    /* The bytes reach the file before the record that names them. */
    if ((msync(d->arena + off, len, MS_SYNC) != 0) ||
        ((status = journal_append(d, &r)) != MEMSVC_OK)) {
        ext_free(d, off, len);
        snprintf(msg, msglen, "written, but the journal could not record it: it would not "
                 "survive a restart");
        return MEMSVC_ERR_IO;
    }
    pp = ent_slot(d, h);
    e  = *pp;
    if (e != NULL) {
        d->bytes -= e->m.size;
    } else {
        e = ent_add(d, h, info.key);
        if (e == NULL) {
            LOG_ERR("out of memory tracking durable tensor '%s': kept, but its arena extent "
                    "is not reused after a free",
                    info.key);
            return MEMSVC_OK;
        }
        d->tensors++;
    }
    if (e->xt != NULL) {
        msd_durable_xt_put(d, e->xt); /* the previous version */
    }
    e->xt = xt_new(off, len);
    if (e->xt == NULL) {
        LOG_ERR("out of memory tracking durable tensor '%s': kept, but its arena extent is not "
                "reused after a free",
                info.key);
    }
    e->m.job        = r.job;
    e->m.rank       = r.rank;
    e->m.kind       = r.kind;
    e->m.device     = r.device;
    e->m.version    = r.seq;
    e->m.size       = r.size;
    e->m.crc        = r.data_crc;
    e->m.owner      = rec_owner(&r);
    e->committed_ns = msp_now_ns();
    e->restored     = false;
    d->bytes += info.size;
    msd_repl_changed(srv);
    return MEMSVC_OK;
}

memsvc_status_t msd_durable_adopt(msd_server_t *srv, const char *key, const dur_meta_t *m,
                                  const void *bytes)
{
    msd_durable_t *d   = srv->dur;
    uint64_t       len = dur_round(m->size), off;
    dur_rec_t      r;
    dur_ent_t     *e;

    if ((d == NULL) || (m->size == 0) || (strnlen(key, MEMSVC_KEY_MAX + 1) > MEMSVC_KEY_MAX)) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    if (!ext_alloc(d, len, &off)) {
        return MEMSVC_ERR_HOST_MEMORY;
    }
    if (fallocate(d->afd, 0, (off_t)off, (off_t)len) != 0) {
        ext_free(d, off, len);
        return MEMSVC_ERR_HOST_MEMORY;
    }
    mem_hint_populate(d->arena + off, len); /* its pages are new */
    memcpy(d->arena + off, bytes, m->size);
    memset(&r, 0, sizeof(r));
    r.type     = DUR_PUT;
    r.seq      = m->version;
    r.job      = m->job;
    r.rank     = m->rank;
    r.kind     = m->kind;
    r.device   = m->device;
    r.size     = m->size;
    r.offset   = off;
    r.data_crc = m->crc;
    r.key_len  = (uint16_t)strlen(key);
    memcpy(r.key, key, r.key_len);
    rec_set_owner(&r, m->owner);
    rec_seal(&r);
    if ((msync(d->arena + off, len, MS_SYNC) != 0) || (journal_append(d, &r) != MEMSVC_OK)) {
        ext_release(d, off, len);
        return MEMSVC_ERR_IO;
    }
    if (m->version >= d->next_seq) {
        d->next_seq = m->version + 1; /* what is committed later is newer */
    }
    e = dur_restore(srv, &r);
    if (e == NULL) {
        return MEMSVC_ERR_NO_RESOURCE; /* logged; the journal brings it back at the next start */
    }
    d->recovered--; /* dur_restore counts the node's own recoveries */
    e->restored = true;
    msd_repl_changed(srv);
    return MEMSVC_OK;
}

void msd_durable_forget(msd_server_t *srv, eng_handle_t h)
{
    msd_durable_t *d = srv->dur;
    dur_ent_t    **pp, *e;
    dur_rec_t      r;

    if (d == NULL) {
        return;
    }
    pp = ent_slot(d, h);
    e  = *pp;
    if (e == NULL) {
        return;
    }
    *pp = e->next;
    if (atomic_load(&srv->draining)) {
        xt_keep(e->xt);
        ent_free(e); /* the daemon is stopping: the tensor stays for the next start (and counts
                      * in d->tensors, so that close keeps the files) */
        return;
    }
    d->tensors--;
    d->bytes -= e->m.size;
    memset(&r, 0, sizeof(r));
    r.type    = DUR_DEL;
    r.seq     = d->next_seq++;
    r.job     = e->m.job;
    r.rank    = e->m.rank;
    r.key_len = (uint16_t)strnlen(e->key, MEMSVC_KEY_MAX);
    memcpy(r.key, e->key, r.key_len);
    rec_seal(&r);
    if (journal_append(d, &r) == MEMSVC_OK) {
        msd_repl_deleted(srv, e->key, &e->m, r.seq);
        if (e->xt != NULL) {
            msd_durable_xt_put(d, e->xt);
        }
    } else {
        /* Its PUT still stands: it would come back at the next start; the extent stays. */
        LOG_ERR("durable tensor '%s' (job %u) freed, but the journal could not record it",
                e->key, e->m.job);
        xt_keep(e->xt);
    }
    ent_free(e);
}

void msd_durable_stats(msd_server_t *srv, memsvc_stats_t *st)
{
    const msd_durable_t *d = srv->dur;

    if (d != NULL) {
        st->durable_tensors   = d->tensors;
        st->durable_bytes     = d->bytes;
        st->durable_recovered = d->recovered;
        st->durable_corrupt   = d->corrupt;
    }
}
