/* memsvcd.c - the memsvc daemon: command line, node and engine set-up, then the server loop */
#include "memsvc/msd.h"
#include "sim_npu/sim_desc.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MSD_LOG_COMP "memsvcd"
#include "memsvc/msd_log.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: memsvcd [--listen HOST:PORT] [--node PRESET] [key=value ...]\n"
            "               [--memory backed|phantom] [--policy NAME[:k=v,...]]\n"
            "               [--keep-durable SECONDS] [--allow-remote] [--spin-us US]\n"
            "               [--unix PATH | --no-unix] [--no-map] [--loops N] [--poll]\n"
            "\n"
            "  --listen HOST:PORT     address to serve on (default 127.0.0.1:13337; a\n"
            "                         non-loopback address needs --allow-remote)\n"
            "  --node PRESET          hardware preset (default ascend-910b; 'tiny' for tests)\n"
            "  key=value              override a preset parameter, e.g. hbm=48GiB npus=2\n"
            "  --memory MODE          backed (real bytes) or phantom (sizes only; default)\n"
            "  --policy SPEC          eviction policy (default lru)\n"
            "  --keep-durable SECS    keep a dead client's durable tensors this long for\n"
            "                         re-attach by key (default 300; 0: free at once)\n"
            "  --allow-remote         permit a non-loopback listen address\n"
            "  --spin-us US           busy-poll this long after each request before sleeping\n"
            "                         (lower latency, more CPU; default 50)\n"
            "  --unix PATH            local clients' socket (default: derived from the port,\n"
            "                         /run/memsvc/memsvcd-PORT.sock; see docs/daemon.md)\n"
            "  --no-unix              no local socket: every client comes over tcp\n"
            "  --no-map               do not map HBM into local clients (isolation between\n"
            "                         jobs sharing a device; bytes are copied instead)\n"
            "  --loops N              threads serving local clients (default: cores/4, 1..8)\n"
            "  --poll                 loops never sleep: lowest latency, a core per loop\n"
            "\n"
            "limits (docs/daemon.md, \"Limits\"):\n"
            "  --job-quota SPEC       every job's quota, any of hbm=SIZE,host=SIZE,disk=SIZE,\n"
            "                         tensors=N,inflight=SIZE (0 or none: unlimited; default\n"
            "                         none); past one a request answers MEMSVC_ERR_QUOTA\n"
            "  --session-inflight SIZE  bulk bytes in flight per session (READ replies not\n"
            "                         taken yet, WRITEs being received); more wait (default\n"
            "                         256MiB; 0: unbounded)\n"
            "  --session-queue N      messages a session may have waiting; more are answered\n"
            "                         MEMSVC_ERR_OVERLOAD (default 256)\n"
            "  --max-sessions N       live sessions per door (tcp, unix socket), with or\n"
            "                         without HELLO; past it a new connection closes the\n"
            "                         oldest one without HELLO, or is refused (default 1024)\n"
            "  --handshake-timeout SECS  close a session that sent no HELLO this long\n"
            "                         (default 5)\n");
}

/* Is the host part of HOST:PORT a loopback address? */
static bool addr_is_loopback(const char *addr)
{
    return (strncmp(addr, "127.", 4) == 0) || (strncmp(addr, "localhost:", 10) == 0) ||
           (strncmp(addr, "[::1]:", 6) == 0);
}

/* Raise the soft limit of open files to the hard one: sessions cost descriptors (a tcp
 * connection one or two, a local one its socket, worker event fd and shared-memory segments),
 * and UCX logs every failed accept() once they run out. Warn when --max-sessions is likely to
 * need more than that. */
static void raise_nofile(unsigned max_sessions)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    if ((rl.rlim_cur != RLIM_INFINITY) && ((uint64_t)max_sessions * 4 + 64 > rl.rlim_cur)) {
        LOG_WARN("--max-sessions %u may need about %u file descriptors; the limit is %llu: "
                 "lower --max-sessions or raise the limit (LimitNOFILE=, ulimit -n)",
                 max_sessions, max_sessions * 4 + 64, (unsigned long long)rl.rlim_cur);
    }
}

/* Bytes this process may use: physical memory, capped by a cgroup v2/v1 limit. */
static uint64_t machine_memory(void)
{
    uint64_t    mem     = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    const char *files[] = {"/sys/fs/cgroup/memory.max",
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    unsigned    i;

    for (i = 0; i < 2; i++) {
        FILE              *f = fopen(files[i], "r");
        unsigned long long lim;

        if (f == NULL) {
            continue;
        }
        if ((fscanf(f, "%llu", &lim) == 1) && (lim > 0) && (lim < mem)) {
            mem = lim;
        }
        fclose(f);
    }
    return mem;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"node", required_argument, NULL, 'n'},
                                         {"memory", required_argument, NULL, 'm'},
                                         {"policy", required_argument, NULL, 'p'},
                                         {"keep-durable", required_argument, NULL, 'k'},
                                         {"allow-remote", no_argument, NULL, 'r'},
                                         {"spin-us", required_argument, NULL, 's'},
                                         {"unix", required_argument, NULL, 'u'},
                                         {"no-unix", no_argument, NULL, 'U'},
                                         {"no-map", no_argument, NULL, 'M'},
                                         {"loops", required_argument, NULL, 'L'},
                                         {"poll", no_argument, NULL, 'P'},
                                         {"job-quota", required_argument, NULL, 'Q'},
                                         {"session-inflight", required_argument, NULL, 'I'},
                                         {"session-queue", required_argument, NULL, 'q'},
                                         {"max-sessions", required_argument, NULL, 'S'},
                                         {"handshake-timeout", required_argument, NULL, 'H'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    msd_config_t               cfg    = {.listen               = "127.0.0.1:13337",
                                             .keep_durable_ns      = 300000000000ull,
                                             .spin_ns              = 50000,
                                             .session_inflight     = 256ull << 20,
                                             .session_queue        = 256,
                                             .max_sessions         = 1024,
                                             .handshake_timeout_ns = 5000000000ull};
    uint64_t                   size;
    const char     *preset = "ascend-910b", *policy = "lru", *memory = "phantom";
    eng_params_t    params = {0};
    sim_mem_mode_t  mode;
    memsvc_status_t status;
    msd_server_t   *srv;
    sim_desc_t      desc;
    eng_t          *eng      = NULL;
    char            err[256] = "", sz1[32], sz2[32];
    char           *end;
    double          secs;
    sigset_t        sigs;
    int             c, i;

    /* Before any thread exists (UCX's async thread, the engine's helpers): SIGTERM/SIGINT
     * are taken only through the loop's signalfd. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            cfg.listen = optarg;
            break;
        case 'n':
            preset = optarg;
            break;
        case 'm':
            memory = optarg;
            break;
        case 'p':
            policy = optarg;
            break;
        case 'r':
            cfg.allow_remote = true;
            break;
        case 'u':
            cfg.unix_path = optarg;
            break;
        case 'U':
            cfg.no_unix = true;
            break;
        case 'M':
            cfg.no_map = true;
            break;
        case 'P':
            cfg.poll = true;
            break;
        case 'L':
            secs = strtod(optarg, &end);
            if ((*end != '\0') || (secs < 1) || (secs > 64)) {
                LOG("--loops: '%s' is not a count of 1..64", optarg);
                return 2;
            }
            cfg.local_loops = (unsigned)secs;
            break;
        case 's':
            secs = strtod(optarg, &end);
            if ((*end != '\0') || (secs < 0) || (secs > 1e6)) {
                LOG("--spin-us: '%s' is not a number of microseconds", optarg);
                return 2;
            }
            cfg.spin_ns = (uint64_t)(secs * 1e3);
            break;
        case 'k':
            secs = strtod(optarg, &end);
            if ((*end != '\0') || (secs < 0) || (secs > 1e7)) {
                LOG("--keep-durable: '%s' is not a number of seconds", optarg);
                return 2;
            }
            cfg.keep_durable_ns = (uint64_t)(secs * 1e9);
            break;
        case 'Q':
            err[0] = '\0';
            if (msd_jobs_parse_quota(optarg, &cfg.quota, err, sizeof(err)) != MEMSVC_OK) {
                LOG("--job-quota: %s", err);
                return 2;
            }
            break;
        case 'I':
            if (sim_parse_size(optarg, &size) != MEMSVC_OK) {
                LOG("--session-inflight: '%s' is not a size (e.g. 256MiB)", optarg);
                return 2;
            }
            cfg.session_inflight = size;
            break;
        case 'q':
        case 'S':
            secs = strtod(optarg, &end);
            if ((*end != '\0') || (secs < 1) || (secs > 1e6) || (secs != (double)(unsigned)secs)) {
                LOG("--%s: '%s' is not a count of 1..1000000",
                    (c == 'q') ? "session-queue" : "max-sessions", optarg);
                return 2;
            }
            *((c == 'q') ? &cfg.session_queue : &cfg.max_sessions) = (unsigned)secs;
            break;
        case 'H':
            secs = strtod(optarg, &end);
            if ((*end != '\0') || !(secs > 0) || (secs > 1e6)) {
                LOG("--handshake-timeout: '%s' is not a positive number of seconds", optarg);
                return 2;
            }
            cfg.handshake_timeout_ns = (uint64_t)(secs * 1e9);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default: /* getopt has named the option */
            fprintf(stderr, "(memsvcd --help for the options)\n");
            return 2;
        }
    }
    if (cfg.local_loops == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        cfg.local_loops = (ncpu >= 8) ? (unsigned)(ncpu / 4) : 1;
        cfg.local_loops = (cfg.local_loops > 8) ? 8 : cfg.local_loops;
    }
    if (!cfg.allow_remote && !addr_is_loopback(cfg.listen)) {
        LOG("refusing to listen on %s: not a loopback address (add --allow-remote)", cfg.listen);
        return 2;
    }
    if (!cfg.allow_remote && (getenv("UCX_NET_DEVICES") == NULL)) {
        /* Loopback only: keep UCX off the other NICs too (it would add lanes on them). */
        setenv("UCX_NET_DEVICES", "lo", 1);
    }
    status = sim_desc_preset(preset, &desc);
    if (status != MEMSVC_OK) {
        LOG("unknown node preset '%s'", preset);
        return 2;
    }
    for (i = optind; i < argc; i++) {
        status = sim_desc_set(&desc, argv[i], err, sizeof(err));
        if (status != MEMSVC_OK) {
            LOG("%s: %s", argv[i], (err[0] != '\0') ? err : memsvc_strerror(status));
            return 2;
        }
    }
    status = sim_desc_validate(&desc, err, sizeof(err));
    if (status != MEMSVC_OK) {
        LOG("node description: %s", (err[0] != '\0') ? err : memsvc_strerror(status));
        return 2;
    }
    status = sim_mem_mode_parse(memory, &mode);
    if (status != MEMSVC_OK) {
        LOG("--memory: '%s' is neither 'backed' nor 'phantom'", memory);
        return 2;
    }
    if (mode == SIM_MEM_BACKED) {
        uint64_t want = (uint64_t)desc.num_npus * desc.hbm_bytes + desc.host_bytes;
        uint64_t have = machine_memory();

        if (want > have) {
            LOG("backed memory needs %s (%u x %s HBM + host pool) but this machine holds %s: "
                "use --memory phantom, a smaller preset (--node tiny) or hbm=/host= overrides",
                sim_format_size(want, sz1, sizeof(sz1)), desc.num_npus,
                sim_format_size(desc.hbm_bytes, sz2, sizeof(sz2)),
                sim_format_size(have, err, sizeof(err)));
            return 2;
        }
    }
    params.desc   = &desc;
    params.mode   = mode;
    params.clock  = SIM_CLOCK_REAL;
    params.policy = policy;
    err[0]        = '\0';
    status        = eng_create(&params, &eng, err, sizeof(err));
    if (status != MEMSVC_OK) {
        LOG("cannot create the engine: %s", (err[0] != '\0') ? err : memsvc_strerror(status));
        return 2;
    }
    LOG("node '%s', %s memory, policy %s, %u devices x %s HBM, host pool %s, disk %s", desc.name,
        sim_mem_mode_name(mode), eng_policy_name(eng), desc.num_npus,
        sim_format_size(desc.hbm_bytes, sz1, sizeof(sz1)),
        sim_format_size(desc.host_bytes, sz2, sizeof(sz2)),
        sim_format_size(desc.disk_bytes, err, sizeof(err)));
    LOG("durable tensors of a dead client are kept %.0f s for re-attach",
        (double)cfg.keep_durable_ns / 1e9);

    raise_nofile(cfg.max_sessions);
    if (getenv("UCX_LISTENER_BACKLOG") == NULL) {
        /* Connections the kernel queues for the listener: past --max-sessions they would be
         * refused anyway; a burst then costs no more than this many descriptors at once. */
        snprintf(sz1, sizeof(sz1), "%u", (cfg.max_sessions < 4096) ? cfg.max_sessions : 4096);
        setenv("UCX_LISTENER_BACKLOG", sz1, 1);
    }
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        LOG("out of memory");
        eng_destroy(eng);
        return 1;
    }
    status = msd_server_init(srv, eng, &cfg);
    if (status != MEMSVC_OK) {
        free(srv);
        eng_destroy(eng);
        return 1;
    }
    status = msd_server_run(srv);
    eng_destroy(eng);
    msd_server_fini(srv);
    free(srv);
    return (status == MEMSVC_OK) ? 0 : 1;
}
