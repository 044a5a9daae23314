/* bench_repl.c - durable tensors written for replication, the owner's drain and a recovery
 * timed through memsvc_peers, and the io_uring read of a local file they are compared with */
#include "client/memsvc.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * usage: bench_repl write ADDR N SIZE
 *            job 7 allocates durable tensors "bench-r0".."bench-r<N-1>" of SIZE bytes and
 *            writes each whole; then prints owed_bytes, the bytes the daemon owes its holders
 *        bench_repl drain ADDR BYTES READY_FILE TIMEOUT_S
 *            takes the daemon's sent_bytes, creates READY_FILE (the holder is started then),
 *            and polls memsvc_peers every millisecond until the daemon has owed BYTES and owes
 *            nothing again; prints setup_s (READY_FILE to the first replica byte sent),
 *            xfer_s (the first byte sent to the last acknowledgement), xfer_gbps
 *            (BYTES / xfer_s), total_s (from READY_FILE) and rate_limit (--repl-rate)
 *        bench_repl recover ADDR N BYTES T0_NS TIMEOUT_S
 *            (the daemon started with an empty state dir at T0_NS) connects as soon as the
 *            daemon answers and polls until it has restored N tensors; fails if any restore
 *            failed or BYTES were not restored; prints serving_s (T0 to the daemon's first
 *            answer), xfer_s (the first copy asked for to the last restored), xfer_gbps,
 *            total_s (T0 to the last restored) and total_gbps
 *        bench_repl uring FILE BYTES REPS
 *            writes FILE (BYTES, fsync'd), then reads it REPS times with io_uring (8 reads of
 *            4 MiB in flight) into a buffer touched beforehand: O_DIRECT, or, where the file
 *            system refuses it, buffered after posix_fadvise(POSIX_FADV_DONTNEED); prints
 *            mode and read_s / read_gbps per repetition, and fresh_s / fresh_gbps, the same
 *            read into anonymous memory never touched (its page faults paid, as a restore into
 *            a new arena's pages pays them). FILE is removed.
 * Exits non-zero with a message on any error or timeout.
 */

#define JOB 7
#define POLL_US 1000
#define REPLY_MS 30000 /* a loop busy with replication may answer late: measured, not failed */
#define URING_BLOCK (4u << 20)
#define URING_DEPTH 8u

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "bench_repl: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t real_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char              *end;
    unsigned long long v;

    errno = 0;
    v     = strtoull(s, &end, 10);
    if ((errno != 0) || (end == s) || (*end != '\0')) {
        die("bad %s", what);
    }
    return v;
}

static memsvc_status_t connect_to(const char *addr, bool control, uint32_t timeout_ms,
                                  memsvc_conn_h *conn_p)
{
    memsvc_conn_params_t p = {.field_mask = MEMSVC_CONN_FIELD_ADDRESS | MEMSVC_CONN_FIELD_FLAGS |
                                            MEMSVC_CONN_FIELD_TIMEOUT_MS | MEMSVC_CONN_FIELD_NAME,
                              .address    = addr,
                              .flags      = MEMSVC_CONN_TCP | (control ? MEMSVC_CONN_CONTROL : 0),
                              .timeout_ms = timeout_ms,
                              .name       = "bench_repl"};

    p.field_mask |= MEMSVC_CONN_FIELD_JOB;
    p.job = control ? 0 : JOB; /* job 0: a control session */
    return memsvc_connect(&p, conn_p);
}

/* The daemon's replication figures into *ci; the worst round trip so far into *worst_ns. */
static void cluster_info(memsvc_conn_h conn, memsvc_cluster_info_t *ci, uint64_t *worst_ns)
{
    uint64_t        t  = real_ns();
    memsvc_status_t st = memsvc_peers(conn, ci, NULL, NULL);

    t = real_ns() - t;
    if (t > *worst_ns) {
        *worst_ns = t;
    }

    if (st != MEMSVC_OK) {
        die("memsvc_peers: %s", memsvc_strerror(st));
    }
    if (ci->node[0] == '\0') {
        die("%s", "the daemon is not in a cluster");
    }
}

static int do_write(const char *addr, uint64_t n, uint64_t size)
{
    memsvc_alloc_params_t ap = {.field_mask = MEMSVC_ALLOC_FIELD_FLAGS | MEMSVC_ALLOC_FIELD_KIND,
                                .flags      = MEMSVC_ALLOC_DURABLE,
                                .kind       = MEMSVC_KIND_OPTIM};
    memsvc_cluster_info_t ci;
    memsvc_conn_h         conn;
    memsvc_handle_t       h;
    memsvc_status_t       st;
    uint8_t              *buf = malloc(size);
    char                  key[32];
    uint64_t              i, j, worst = 0;

    if (buf == NULL) {
        die("%s", "out of memory");
    }
    st = connect_to(addr, false, 10000, &conn);
    if (st != MEMSVC_OK) {
        die("connect: %s", memsvc_strerror(st));
    }
    for (i = 0; i < n; i++) {
        for (j = 0; j + 8 <= size; j += 8) { /* distinct bytes per tensor */
            uint64_t v = (i + 1) * 0x9e3779b97f4a7c15ull ^ j;

            memcpy(buf + j, &v, 8);
        }
        snprintf(key, sizeof(key), "bench-r%llu", (unsigned long long)i);
        st = memsvc_alloc(conn, key, size, &ap, &h);
        if (st == MEMSVC_OK) {
            st = memsvc_write(conn, h, 0, buf, size);
        }
        if (st != MEMSVC_OK) {
            die("tensor %s: %s", key, memsvc_strerror(st));
        }
    }
    cluster_info(conn, &ci, &worst);
    printf("owed_bytes %llu\n", (unsigned long long)ci.owed_bytes);
    memsvc_close(conn);
    free(buf);
    return 0;
}

static int do_drain(const char *addr, uint64_t bytes, const char *ready, uint64_t timeout_s)
{
    memsvc_cluster_info_t ci;
    memsvc_conn_h         conn;
    memsvc_status_t       st;
    uint64_t              t0, deadline, now, base, t_sent = 0, worst = 0;
    bool                  full = false;
    int                   fd;

    st = connect_to(addr, true, REPLY_MS, &conn);
    if (st != MEMSVC_OK) {
        die("connect: %s", memsvc_strerror(st));
    }
    cluster_info(conn, &ci, &worst);
    base     = ci.sent_bytes;
    t0       = real_ns();
    deadline = t0 + timeout_s * 1000000000ull;
    fd       = open(ready, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        die("cannot create %s: %s", ready, strerror(errno));
    }
    close(fd);
    for (;;) {
        cluster_info(conn, &ci, &worst);
        now = real_ns();
        if ((t_sent == 0) && (ci.sent_bytes > base)) {
            t_sent = now; /* the first PUT was posted within the last poll */
        }
        if (ci.owed_bytes >= bytes) {
            full = true; /* owed everything (again: a restarted holder lost its copies) */
        }
        if (full && (ci.owed_bytes == 0) && (t_sent != 0)) {
            break;
        }
        if (now > deadline) {
            fprintf(stderr,
                    "bench_repl: drain: still owed %llu bytes (%llu tensors) after %llu s, %llu "
                    "sent\n",
                    (unsigned long long)ci.owed_bytes, (unsigned long long)ci.owed_tensors,
                    (unsigned long long)timeout_s, (unsigned long long)(ci.sent_bytes - base));
            exit(1);
        }
        usleep(POLL_US);
    }
    if (ci.sent_bytes - base < bytes) {
        fprintf(stderr, "bench_repl: drain: only %llu of %llu bytes sent\n",
                (unsigned long long)(ci.sent_bytes - base), (unsigned long long)bytes);
        exit(1);
    }
    printf("setup_s %.4f\n", (double)(t_sent - t0) / 1e9);
    printf("xfer_s %.4f\n", (double)(now - t_sent) / 1e9);
    printf("xfer_gbps %.4f\n", (double)bytes / (double)(now - t_sent));
    printf("total_s %.4f\n", (double)(now - t0) / 1e9);
    printf("rate_limit %llu\n", (unsigned long long)ci.repl_rate);
    printf("answer_max_s %.4f\n", (double)worst / 1e9);
    memsvc_close(conn);
    return 0;
}

static int do_recover(const char *addr, uint64_t n, uint64_t bytes, uint64_t t0, uint64_t timeout_s)
{
    memsvc_cluster_info_t ci;
    memsvc_conn_h         conn;
    memsvc_status_t       st;
    uint64_t deadline = t0 + timeout_s * 1000000000ull, now, t_serving, t_want = 0, worst = 0;

    for (;;) { /* the daemon replays its (empty) journal, then answers */
        st  = connect_to(addr, true, REPLY_MS, &conn);
        now = real_ns();
        if (st == MEMSVC_OK) {
            break;
        }
        if (now > deadline) {
            die("the recovering daemon did not answer: %s", memsvc_strerror(st));
        }
        usleep(10000);
    }
    t_serving = now;
    for (;;) {
        cluster_info(conn, &ci, &worst);
        now = real_ns();
        if ((t_want == 0) && (ci.recovery_wanted > 0)) {
            t_want = now; /* WANTs sent within the last poll */
        }
        if (ci.recovery_failed != 0) {
            fprintf(stderr, "bench_repl: recover: %llu copies failed (%llu of %llu restored)\n",
                    (unsigned long long)ci.recovery_failed,
                    (unsigned long long)ci.recovery_restored,
                    (unsigned long long)ci.recovery_wanted);
            exit(1);
        }
        if (ci.recovery_restored >= n) {
            break;
        }
        if (now > deadline) {
            fprintf(stderr,
                    "bench_repl: recover: %llu of %llu tensors restored (%llu asked) after %llu "
                    "s\n",
                    (unsigned long long)ci.recovery_restored, (unsigned long long)n,
                    (unsigned long long)ci.recovery_wanted, (unsigned long long)timeout_s);
            exit(1);
        }
        usleep(POLL_US);
    }
    if ((ci.recovery_restored != n) || (ci.recovery_wanted != n) || (ci.recovery_bytes != bytes)) {
        fprintf(stderr,
                "bench_repl: recover: %llu restored of %llu asked, %llu bytes; expected %llu "
                "tensors of %llu bytes in all\n",
                (unsigned long long)ci.recovery_restored, (unsigned long long)ci.recovery_wanted,
                (unsigned long long)ci.recovery_bytes, (unsigned long long)n,
                (unsigned long long)bytes);
        exit(1);
    }
    if (t_want == 0) {
        t_want = t_serving;
    }
    printf("serving_s %.4f\n", (double)(t_serving - t0) / 1e9);
    printf("xfer_s %.4f\n", (double)(now - t_want) / 1e9);
    printf("xfer_gbps %.4f\n", (double)bytes / (double)(now - t_want));
    printf("total_s %.4f\n", (double)(now - t0) / 1e9);
    printf("total_gbps %.4f\n", (double)bytes / (double)(now - t0));
    printf("answer_max_s %.4f\n", (double)worst / 1e9);
    memsvc_close(conn);
    return 0;
}

/* Write FILE of `bytes` (a pattern), fsync'd. */
static void uring_prepare(const char *file, uint64_t bytes, uint8_t *buf)
{
    uint64_t off = 0;
    int      fd  = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd < 0) {
        die("cannot create %s", file);
    }
    memset(buf, 0x5a, URING_BLOCK);
    while (off < bytes) {
        size_t  len = (bytes - off < URING_BLOCK) ? (size_t)(bytes - off) : URING_BLOCK;
        ssize_t w   = pwrite(fd, buf, len, (off_t)off);

        if (w <= 0) {
            die("cannot write %s", file);
        }
        off += (uint64_t)w;
    }
    if (fsync(fd) != 0) {
        die("cannot fsync %s", file);
    }
    close(fd);
}

/* One read of the whole file into buf with io_uring; seconds, or -1 with errno. */
static double uring_read(struct io_uring *ring, int fd, uint64_t bytes, uint8_t *buf)
{
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    uint64_t             next = 0, done = 0, t = real_ns();
    unsigned             inflight = 0;

    while (done < bytes) {
        while ((inflight < URING_DEPTH) && (next < bytes)) {
            size_t len = (bytes - next < URING_BLOCK) ? (size_t)(bytes - next) : URING_BLOCK;

            sqe = io_uring_get_sqe(ring);
            io_uring_prep_read(sqe, fd, buf + next, (unsigned)len, next);
            io_uring_sqe_set_data64(sqe, len);
            next += len;
            inflight++;
        }
        if (io_uring_submit_and_wait(ring, 1) < 0) {
            return -1;
        }
        while (io_uring_peek_cqe(ring, &cqe) == 0) {
            if (cqe->res < 0) {
                errno = -cqe->res;
                return -1;
            }
            if ((uint64_t)cqe->res != io_uring_cqe_get_data64(cqe)) {
                errno = EIO; /* a short read: not expected of a regular file */
                return -1;
            }
            done += (uint64_t)cqe->res;
            inflight--;
            io_uring_cqe_seen(ring, cqe);
        }
    }
    return (double)(real_ns() - t) / 1e9;
}

static int do_uring(const char *file, uint64_t bytes, uint64_t reps)
{
    struct io_uring ring;
    uint8_t        *buf = NULL;
    const char     *mode;
    uint64_t        r;
    int             fd;
    bool            direct = true;

    if ((bytes == 0) || (bytes % 4096 != 0) || (posix_memalign((void **)&buf, 4096, bytes) != 0)) {
        die("%s", "BYTES must be a non-zero multiple of 4096 that fits in memory");
    }
    memset(buf, 0, bytes); /* touched: the read, not page faults, is timed */
    uring_prepare(file, bytes, buf);
    if (io_uring_queue_init(URING_DEPTH, &ring, 0) < 0) {
        unlink(file);
        die("%s", "io_uring_queue_init failed (io_uring refused here?)");
    }
    for (r = 0; r < reps; r++) {
        uint8_t *fresh;
        double   s, sf = 0;

        fd = direct ? open(file, O_RDONLY | O_DIRECT) : -1;
        if (fd < 0) {
            direct = false;
            fd     = open(file, O_RDONLY);
            if ((fd < 0) || (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)) {
                unlink(file);
                die("cannot open %s", file);
            }
        }
        s = uring_read(&ring, fd, bytes, buf);
        if ((s < 0) && direct && (errno == EINVAL)) { /* O_DIRECT refused at the first read */
            close(fd);
            direct = false;
            r--;
            continue;
        }
        if (s >= 0) { /* again into memory never touched: its page faults are paid */
            fresh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if ((fresh == MAP_FAILED) ||
                (!direct && (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0))) {
                unlink(file);
                die("%s", "no memory for the fresh buffer");
            }
            sf = uring_read(&ring, fd, bytes, fresh);
            munmap(fresh, bytes);
            s = (sf < 0) ? sf : s;
        }
        close(fd);
        if (s < 0) {
            unlink(file);
            die("io_uring read failed: %s", strerror(errno));
        }
        printf("read_s %.4f\n", s);
        printf("read_gbps %.4f\n", (double)bytes / s / 1e9);
        printf("fresh_s %.4f\n", sf);
        printf("fresh_gbps %.4f\n", (double)bytes / sf / 1e9);
    }
    mode = direct ? "O_DIRECT" : "buffered, after posix_fadvise(DONTNEED)";
    printf("mode %s\n", mode);
    io_uring_queue_exit(&ring);
    unlink(file);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if ((argc == 5) && (strcmp(argv[1], "write") == 0)) {
        return do_write(argv[2], parse_u64(argv[3], "N"), parse_u64(argv[4], "SIZE"));
    }
    if ((argc == 6) && (strcmp(argv[1], "drain") == 0)) {
        return do_drain(argv[2], parse_u64(argv[3], "BYTES"), argv[4],
                        parse_u64(argv[5], "TIMEOUT_S"));
    }
    if ((argc == 7) && (strcmp(argv[1], "recover") == 0)) {
        return do_recover(argv[2], parse_u64(argv[3], "N"), parse_u64(argv[4], "BYTES"),
                          parse_u64(argv[5], "T0_NS"), parse_u64(argv[6], "TIMEOUT_S"));
    }
    if ((argc == 5) && (strcmp(argv[1], "uring") == 0)) {
        return do_uring(argv[2], parse_u64(argv[3], "BYTES"), parse_u64(argv[4], "REPS"));
    }
    fprintf(stderr, "usage: bench_repl write ADDR N SIZE\n"
                    "       bench_repl drain ADDR BYTES READY_FILE TIMEOUT_S\n"
                    "       bench_repl recover ADDR N BYTES T0_NS TIMEOUT_S\n"
                    "       bench_repl uring FILE BYTES REPS\n");
    return 2;
}
