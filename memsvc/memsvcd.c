/* memsvcd.c - the memsvc daemon: command line, node and engine set-up, then the server loop */
#include "memsvc/msd.h"
#include "memsvc/msd_durable.h"
#include "memsvc/msd_repl.h"
#include "memsvc/msd_tier.h"
#include "sim_npu/sim_desc.h"

#include "client/msp_ucx.h"
#include "tools/version.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#define MSD_LOG_COMP "memsvcd"
#include "memsvc/msd_log.h"

#ifndef MEMSVCD_CONFIG_DEFAULT
#define MEMSVCD_CONFIG_DEFAULT "/etc/memsvc/memsvcd.conf"
#endif
#define MEMSVCD_MAX_PARAMS 64

/* A value read from the config file, kept as long as the options that point into it. */
typedef struct opt_str {
    struct opt_str *next;
    char            text[];
} opt_str_t;

/* What the command line and the config file set, before it becomes the server's
 * configuration and the engine's parameters. */
typedef struct daemon_opts {
    msd_config_t cfg;
    const char  *preset, *policy, *memory;
    const char  *params[MEMSVCD_MAX_PARAMS]; /* node key=value overrides, in order */
    unsigned     nparams;
    const char  *config;    /* the config file; NULL: the default one, if it exists */
    bool         no_config; /* --no-config */
    bool         listen_set; /* --listen given (a cluster member listens on its line's address
                                otherwise) */
    opt_str_t   *strings;   /* values copied from the config file */
} daemon_opts_t;

/*
 * The options: one table for the command line (getopt_long) and the config file (each long
 * name is a key; a flag's value is true or false). An option added here and to opt_apply()
 * has its config key at once.
 */
static const struct option daemon_options[] = {{"listen", required_argument, NULL, 'l'},
                                               {"node", required_argument, NULL, 'n'},
                                               {"node-param", required_argument, NULL, 'N'},
                                               {"memory", required_argument, NULL, 'm'},
                                               {"policy", required_argument, NULL, 'p'},
                                               {"keep-durable", required_argument, NULL, 'k'},
                                               {"allow-remote", no_argument, NULL, 'r'},
                                               {"spin-us", required_argument, NULL, 's'},
                                               {"unix", required_argument, NULL, 'u'},
                                               {"no-unix", no_argument, NULL, 'U'},
                                               {"no-map", no_argument, NULL, 'M'},
                                               {"no-fast-pin", no_argument, NULL, 'F'},
                                               {"loops", required_argument, NULL, 'L'},
                                               {"poll", no_argument, NULL, 'P'},
                                               {"log-level", required_argument, NULL, 'g'},
                                               {"log-target", required_argument, NULL, 'T'},
                                               {"metrics", required_argument, NULL, 'x'},
                                               {"secret-file", required_argument, NULL, 'S'},
                                               {"operator-group", required_argument, NULL, 'G'},
                                               {"require-secret", no_argument, NULL, 'R'},
                                               {"job-secrets", required_argument, NULL, 'J'},
                                               {"cluster", required_argument, NULL, 'c'},
                                               {"node-name", required_argument, NULL, 'a'},
                                               {"cluster-secret", required_argument, NULL, 'Z'},
                                               {"heartbeat-ms", required_argument, NULL, 'B'},
                                               {"peer-timeout", required_argument, NULL, 't'},
                                               {"replicas", required_argument, NULL, 'y'},
                                               {"repl-rate", required_argument, NULL, 'e'},
                                               {"replica-bytes", required_argument, NULL, 'b'},
                                               {"peer-lost", required_argument, NULL, 'o'},
                                               {"peer-tier", required_argument, NULL, 'O'},
                                               {"state-dir", required_argument, NULL, 'd'},
                                               {"durable-bytes", required_argument, NULL, 'D'},
                                               {"job-quota", required_argument, NULL, 'Q'},
                                               {"session-inflight", required_argument, NULL, 'I'},
                                               {"session-queue", required_argument, NULL, 'q'},
                                               {"max-sessions", required_argument, NULL, 'W'},
                                               {"handshake-timeout", required_argument, NULL, 'H'},
                                               {"config", required_argument, NULL, 'C'},
                                               {"no-config", no_argument, NULL, 'X'},
                                               {"version", no_argument, NULL, 'V'},
                                               {"help", no_argument, NULL, 'h'},
                                               {NULL, 0, NULL, 0}};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: memsvcd [--config FILE | --no-config] [--listen HOST:PORT] [--node PRESET]\n"
            "               [key=value ...] [--memory backed|phantom] [--policy NAME[:k=v,...]]\n"
            "               [--keep-durable SECONDS] [--allow-remote] [--spin-us US]\n"
            "               [--unix PATH | --no-unix] [--no-map] [--no-fast-pin] [--loops N]\n"
            "               [--poll]\n"
            "               [--log-level LEVEL] [--log-target stderr|journal] [--metrics ADDR]\n"
            "               [--secret-file FILE] [--job-secrets DIR] [--require-secret]\n"
            "               [--operator-group GROUP]\n"
            "               [--cluster FILE --node-name NAME --cluster-secret FILE\n"
            "                [--heartbeat-ms MS] [--peer-timeout SECONDS] [--replicas R]\n"
            "                [--repl-rate RATE] [--replica-bytes SIZE] [--peer-lost SECONDS]\n"
            "                [--peer-tier SIZE]]\n"
            "               [--state-dir DIR|none] [--durable-bytes SIZE]\n"
            "\n"
            "  --config FILE          read options from FILE (default " MEMSVCD_CONFIG_DEFAULT ",\n"
            "                         if it exists): 'key = value' lines, a key per long option;\n"
            "                         options given here override the file\n"
            "  --no-config            do not read the default config file\n"
            "  --listen HOST:PORT     address to serve on (default 127.0.0.1:13337; every\n"
            "                         address HOST resolves to must be loopback unless\n"
            "                         --allow-remote)\n"
            "  --node PRESET          hardware preset (default ascend-910b; 'tiny' for tests)\n"
            "  key=value              override a preset parameter, e.g. hbm=48GiB npus=2\n"
            "  --node-param key=value the same, as an option (config key: node-param)\n"
            "  --memory MODE          backed (real bytes) or phantom (sizes only; default)\n"
            "  --policy SPEC          eviction policy (default lru)\n"
            "  --keep-durable SECS    keep a dead client's durable tensors this long for\n"
            "                         re-attach by key (default 300; 0: free at once)\n"
            "  --allow-remote         permit a non-loopback listen or metrics address (needs\n"
            "                         --secret-file, --job-secrets or --cluster-secret)\n"
            "  --secret-file FILE     cluster secret: tcp clients the kernel cannot name\n"
            "                         (other hosts) must prove it; mode 0600, owned by the\n"
            "                         daemon's user (docs/security.md)\n"
            "  --job-secrets DIR      per-job secrets: DIR/JOB (mode 0600) is the secret of\n"
            "                         job JOB for tcp clients, in place of --secret-file\n"
            "  --require-secret       every tcp client proves the secret, even one on this\n"
            "                         host the kernel names (its uid stays its identity)\n"
            "  --operator-group GROUP members (and root) administer every job: bind it,\n"
            "                         list it, see its figures\n"
            "  --spin-us US           busy-poll this long after each request before sleeping\n"
            "                         (lower latency, more CPU; default 50)\n"
            "  --unix PATH            local clients' socket (default: derived from the port,\n"
            "                         /run/memsvc/memsvcd-PORT.sock; see docs/daemon.md)\n"
            "  --no-unix              no local socket: every client comes over tcp\n"
            "  --no-map               do not map HBM into local clients (isolation between\n"
            "                         jobs sharing a device; bytes are copied instead)\n"
            "  --no-fast-pin          no pin tables: every acquire and release of a local\n"
            "                         client is a message to the daemon\n"
            "  --loops N              threads serving local clients (default: cores/4, 1..8)\n"
            "  --poll                 loops serving sessions never sleep: lowest latency,\n"
            "                         a core per such loop\n"
            "  --log-level LEVEL      err, warn, info (default) or debug\n"
            "  --log-target TARGET    stderr (default; '<N>' priority prefixes when it is the\n"
            "                         journal's stream) or journal (native journald fields)\n"
            "  --metrics ADDR         serve Prometheus metrics over http on [HOST:]PORT\n"
            "                         (default host 127.0.0.1; off unless given)\n"
            "  --cluster FILE         the daemons of a cluster, one 'NAME HOST:PORT' a line, the\n"
            "                         same file on every node (docs/cluster.md); this daemon\n"
            "                         listens on its own line's address unless --listen says\n"
            "  --node-name NAME       this daemon's line in the cluster file\n"
            "  --cluster-secret FILE  shared secret that authenticates peers (mode 0600, owned\n"
            "                         by the daemon's user; required with --cluster)\n"
            "  --heartbeat-ms MS      heartbeat to each peer this often (default 500)\n"
            "  --peer-timeout SECS    a peer silent this long is down (default 5)\n"
            "  --replicas R           copies of each durable tensor kept on peers, 0..7\n"
            "                         (default 1; docs/cluster.md, \"Replication\")\n"
            "  --repl-rate RATE       bytes/s replication may use, e.g. 2GB/s (default 10%%\n"
            "                         of the node's links, from its description; 0: unlimited)\n"
            "  --replica-bytes SIZE   room for other nodes' copies, taken from the host pool\n"
            "                         (default a quarter of it)\n"
            "  --peer-lost SECS       a peer down this long is lost: the copies it held are\n"
            "                         made again on another node (default 60)\n"
            "  --peer-tier SIZE       swap up to SIZE of tensors to peers' rooms when the host\n"
            "                         pool is full, before the disk if the nic is faster\n"
            "                         (default 0: no peer tier; docs/cluster.md)\n"
            "  --state-dir DIR        where durable tensors outlive the daemon (backed memory):\n"
            "                         DIR/memsvc-PORT.durable (their bytes) and .journal\n"
            "                         (default /dev/shm: survives a crash or an upgrade, not a\n"
            "                         reboot; a disk directory survives both; 'none': off)\n"
            "  --durable-bytes SIZE   capacity of the durable arena (default 1GiB, sparse)\n"
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
            "                         (default 5)\n"
            "  --version              print the version and exit\n"
            "\n"
            "SIGHUP re-reads the config file and reloads --log-level, --keep-durable,\n"
            "--spin-us and the limits (--job-quota, --session-inflight, --session-queue,\n"
            "--max-sessions, --handshake-timeout); other changes need a restart. See\n"
            "docs/operations.md.\n");
}

/* The cluster, once its file is read (file scope: reachable until exit on every path). */
static msd_peers_t *peers;

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

/* Defaults of every option. */
static void opts_init(daemon_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->cfg.listen          = "127.0.0.1:13337";
    o->cfg.keep_durable_ns = 300000000000ull;
    o->cfg.spin_ns         = 50000;
    o->cfg.heartbeat_ns    = 500000000ull;
    o->cfg.peer_timeout_ns = 5000000000ull;
    o->cfg.replicas        = 1;
    o->cfg.repl_rate       = -1;            /* 10% of the node's links */
    o->cfg.replica_bytes   = UINT64_MAX;    /* a quarter of the host pool */
    o->cfg.peer_lost_ns    = 60000000000ull;
    o->cfg.durable_bytes   = MSD_DURABLE_BYTES;
    o->cfg.session_inflight     = 256ull << 20;
    o->cfg.session_queue        = 256;
    o->cfg.max_sessions         = 1024;
    o->cfg.handshake_timeout_ns = 5000000000ull;
    o->cfg.log_level       = MSD_LOG_INFO;
    o->cfg.log_target      = MSD_LOG_TO_STDERR;
    o->preset              = "ascend-910b";
    o->policy              = "lru";
    o->memory              = "phantom";
}

static void opts_fini(daemon_opts_t *o)
{
    opt_str_t *str, *next;

    for (str = o->strings; str != NULL; str = next) {
        next = str->next;
        free(str);
    }
    o->strings = NULL;
}

/* A number in [lo, hi]; false if arg is not one. */
static bool opt_number(const char *arg, double lo, double hi, double *v_p)
{
    char *end;

    *v_p = strtod(arg, &end);
    return (end != arg) && (*end == '\0') && (*v_p >= lo) && (*v_p <= hi);
}

/*
 * Apply option c (its value arg; NULL for a flag) to o. where names it in messages: "--loops"
 * on the command line, "FILE:LINE: loops" from the config file. false (logged) on a bad value.
 */
static bool opt_apply(daemon_opts_t *o, int c, const char *arg, const char *where)
{
    msd_log_level_t  level;
    msd_log_target_t target;
    double           v;

    switch (c) {
    case 'l':
        o->cfg.listen = arg;
        o->listen_set = true;
        break;
    case 'n':
        o->preset = arg;
        break;
    case 'N':
        if ((strchr(arg, '=') == NULL) || (o->nparams == MEMSVCD_MAX_PARAMS)) {
            LOG_ERR("%s: '%s' is not a key=value node parameter (at most %d)", where, arg,
                    MEMSVCD_MAX_PARAMS);
            return false;
        }
        o->params[o->nparams++] = arg;
        break;
    case 'm':
        o->memory = arg;
        break;
    case 'p':
        o->policy = arg;
        break;
    case 'r':
        o->cfg.allow_remote = true;
        break;
    case 'u':
        o->cfg.unix_path = arg;
        break;
    case 'U':
        o->cfg.no_unix = true;
        break;
    case 'M':
        o->cfg.no_map = true;
        break;
    case 'F':
        o->cfg.no_fast_pin = true;
        break;
    case 'P':
        o->cfg.poll = true;
        break;
    case 'L':
        if (!opt_number(arg, 1, 64, &v) || (v != (unsigned)v)) {
            LOG_ERR("%s: '%s' is not a count of 1..64", where, arg);
            return false;
        }
        o->cfg.local_loops = (unsigned)v;
        break;
    case 's':
        if (!opt_number(arg, 0, 1e6, &v)) {
            LOG_ERR("%s: '%s' is not a number of microseconds (0..1000000)", where, arg);
            return false;
        }
        o->cfg.spin_ns = (uint64_t)(v * 1e3);
        break;
    case 'k':
        if (!opt_number(arg, 0, 1e7, &v)) {
            LOG_ERR("%s: '%s' is not a number of seconds (0..10000000)", where, arg);
            return false;
        }
        o->cfg.keep_durable_ns = (uint64_t)(v * 1e9);
        break;
    case 'g':
        if (!msd_log_parse_level(arg, &level)) {
            LOG_ERR("%s: '%s' is not a log level (err, warn, info, debug)", where, arg);
            return false;
        }
        o->cfg.log_level = (int)level;
        break;
    case 'T':
        if (!msd_log_parse_target(arg, &target)) {
            LOG_ERR("%s: '%s' is not a log target (stderr, journal)", where, arg);
            return false;
        }
        o->cfg.log_target = (int)target;
        break;
    case 'x':
        o->cfg.metrics = arg;
        break;
    case 'S':
        o->cfg.secret_file = arg;
        break;
    case 'G':
        o->cfg.operator_group = arg;
        break;
    case 'R':
        o->cfg.require_secret = true;
        break;
    case 'J':
        o->cfg.job_secrets = arg;
        break;
    case 'c':
        o->cfg.cluster_file = arg;
        break;
    case 'a':
        o->cfg.node_name = arg;
        break;
    case 'Z':
        o->cfg.cluster_secret = arg;
        break;
    case 'B':
        if (!opt_number(arg, 10, 60000, &v)) {
            LOG_ERR("%s: '%s' is not a number of milliseconds in 10..60000", where, arg);
            return false;
        }
        o->cfg.heartbeat_ns = (uint64_t)(v * 1e6);
        break;
    case 't':
        if (!opt_number(arg, 0, 3600, &v) || !(v > 0)) {
            LOG_ERR("%s: '%s' is not a number of seconds in (0, 3600]", where, arg);
            return false;
        }
        o->cfg.peer_timeout_ns = (uint64_t)(v * 1e9);
        break;
    case 'y':
        if (!opt_number(arg, 0, MSD_REPL_MAX, &v) || (v != (unsigned)v)) {
            LOG_ERR("%s: '%s' is not a count of copies in 0..%u", where, arg, MSD_REPL_MAX);
            return false;
        }
        o->cfg.replicas = (unsigned)v;
        break;
    case 'e': {
        uint64_t rate;
        char     sz[64];
        size_t   n = strlen(arg);

        /* a size per second: "2GB/s", "500MiB/s", or plain bytes/s */
        snprintf(sz, sizeof(sz), "%.*s", (int)((n > 2 && strcmp(arg + n - 2, "/s") == 0) ? n - 2
                                                                                       : n),
                 arg);
        if ((n >= sizeof(sz)) || (sim_parse_size(sz, &rate) != MEMSVC_OK)) {
            LOG_ERR("%s: '%s' is not a rate (e.g. 2GB/s, 500MiB/s; 0: unlimited)", where, arg);
            return false;
        }
        o->cfg.repl_rate = (double)rate;
        break;
    }
    case 'b':
        if (sim_parse_size(arg, &o->cfg.replica_bytes) != MEMSVC_OK) {
            LOG_ERR("%s: '%s' is not a size (e.g. 16GiB)", where, arg);
            return false;
        }
        break;
    case 'O':
        if (sim_parse_size(arg, &o->cfg.peer_tier_bytes) != MEMSVC_OK) {
            LOG_ERR("%s: '%s' is not a size (e.g. 8GiB; 0: none)", where, arg);
            return false;
        }
        break;
    case 'o':
        if (!opt_number(arg, 0, 86400 * 7, &v) || !(v > 0)) {
            LOG_ERR("%s: '%s' is not a number of seconds in (0, 604800]", where, arg);
            return false;
        }
        o->cfg.peer_lost_ns = (uint64_t)(v * 1e9);
        break;
    case 'd':
        if (arg[0] == '\0') {
            LOG_ERR("%s: empty path (a directory, or 'none')", where);
            return false;
        }
        o->cfg.state_dir = arg;
        break;
    case 'Q': {
        char why[256] = "";

        if (msd_jobs_parse_quota(arg, &o->cfg.quota, why, sizeof(why)) != MEMSVC_OK) {
            LOG_ERR("%s: %s", where, why);
            return false;
        }
        break;
    }
    case 'I':
        if (sim_parse_size(arg, &o->cfg.session_inflight) != MEMSVC_OK) {
            LOG_ERR("%s: '%s' is not a size (e.g. 256MiB)", where, arg);
            return false;
        }
        break;
    case 'q':
    case 'W':
        if (!opt_number(arg, 1, 1e6, &v) || (v != (unsigned)v)) {
            LOG_ERR("%s: '%s' is not a count of 1..1000000", where, arg);
            return false;
        }
        *((c == 'q') ? &o->cfg.session_queue : &o->cfg.max_sessions) = (unsigned)v;
        break;
    case 'H':
        if (!opt_number(arg, 0, 1e6, &v) || !(v > 0)) {
            LOG_ERR("%s: '%s' is not a positive number of seconds", where, arg);
            return false;
        }
        o->cfg.handshake_timeout_ns = (uint64_t)(v * 1e9);
        break;
    case 'D':
        if ((sim_parse_size(arg, &o->cfg.durable_bytes) != MEMSVC_OK) ||
            (o->cfg.durable_bytes < (1u << 20))) {
            LOG_ERR("%s: '%s' is not a size of at least 1MiB (e.g. 4GiB)", where, arg);
            return false;
        }
        break;
    default: /* the command line only: config, no-config, version, help */
        break;
    }
    return true;
}

/* "true"/"false" (and yes/no, on/off, 1/0) of a flag in the config file. */
static bool opt_bool(const char *v, bool *b_p)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    unsigned i;

    for (i = 0; i < 4; i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *b_p = (strcmp(v, yes[i]) == 0);
            return true;
        }
    }
    return false;
}

/* Strip leading and trailing blanks in place. */
static char *trim(char *p)
{
    char *e;

    p += strspn(p, " \t");
    e = p + strlen(p);
    while ((e > p) && ((e[-1] == ' ') || (e[-1] == '\t') || (e[-1] == '\n') || (e[-1] == '\r'))) {
        *--e = '\0';
    }
    return p;
}

/* One "key = value" line of the config file. false (logged) when it is bad. */
static bool config_line(daemon_opts_t *o, char *line, const char *where)
{
    const struct option *opt;
    char                *eq = strchr(line, '='), *key, *val, at[1200];
    opt_str_t           *str;
    bool                 on;
    size_t               len;

    if (eq == NULL) {
        LOG_ERR("%s: expected 'key = value'", where);
        return false;
    }
    *eq = '\0';
    key = trim(line);
    val = trim(eq + 1);
    len = strlen(val);
    if ((len >= 2) && (val[0] == '"') && (val[len - 1] == '"')) {
        val[len - 1] = '\0';
        val++;
    }
    for (opt = daemon_options; opt->name != NULL; opt++) {
        if (strcmp(opt->name, key) == 0) {
            break;
        }
    }
    if ((opt->name == NULL) || (opt->val == 'C') || (opt->val == 'X') || (opt->val == 'V') ||
        (opt->val == 'h')) {
        LOG_ERR("%s: unknown key '%s' (keys are memsvcd's long options; memsvcd --help)", where,
                key);
        return false;
    }
    if (opt->has_arg == no_argument) {
        if (!opt_bool(val, &on)) {
            LOG_ERR("%s: %s: '%s' is not true or false", where, key, val);
            return false;
        }
        return on ? opt_apply(o, opt->val, NULL, where) : true;
    }
    str = malloc(sizeof(*str) + strlen(val) + 1);
    if (str == NULL) {
        LOG_ERR("%s: out of memory", where);
        return false;
    }
    strcpy(str->text, val);
    str->next  = o->strings;
    o->strings = str;
    snprintf(at, sizeof(at), "%s: %s", where, key); /* "FILE:LINE: key: 'value' is not ..." */
    return opt_apply(o, opt->val, str->text, at);
}

/* Read the config file: o->config, else the default one if it exists. false (logged) when it
 * cannot be read or a line is bad. */
static bool config_load(daemon_opts_t *o)
{
    const char *path = (o->config != NULL) ? o->config : MEMSVCD_CONFIG_DEFAULT;
    char        line[1024], where[1100];
    unsigned    lineno = 0;
    bool        ok     = true;
    FILE       *f;

    if (o->no_config && (o->config == NULL)) {
        return true;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        if ((o->config == NULL) && (errno == ENOENT)) {
            return true; /* no default file: fine */
        }
        LOG_ERR("cannot read config file %s: %s", path, strerror(errno));
        return false;
    }
    while (ok && (fgets(line, sizeof(line), f) != NULL)) {
        char *p, *hash;

        lineno++;
        snprintf(where, sizeof(where), "%s:%u", path, lineno);
        if ((strchr(line, '\n') == NULL) && !feof(f)) {
            LOG_ERR("%s: line longer than %zu bytes", where, sizeof(line) - 2);
            ok = false;
            break;
        }
        hash = strchr(line, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        p = trim(line);
        if (*p != '\0') {
            ok = config_line(o, p, where);
        }
    }
    fclose(f);
    return ok;
}

/*
 * The whole configuration from the config file and then the command line (which overrides
 * it). Returns 0, or the exit code: 2 for a bad option, -1 when --help or --version was
 * answered.
 */
static int opts_parse(daemon_opts_t *o, int argc, char **argv, bool quiet)
{
    char where[64];
    int  c, i;

    opts_init(o);
    /* First the options that say which file to read (and --help, --version). */
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", daemon_options, NULL)) != -1) {
        if (c == 'C') {
            o->config = optarg;
        } else if (c == 'X') {
            o->no_config = true;
        } else if ((c == 'h') && !quiet) {
            usage(stdout);
            return -1;
        } else if ((c == 'V') && !quiet) {
            tool_print_version("memsvcd");
            return -1;
        }
    }
    if (!config_load(o)) {
        return 2;
    }
    optind = 0;
    opterr = !quiet;
    while ((c = getopt_long(argc, argv, "h", daemon_options, &i)) != -1) {
        if (c == '?') {
            fprintf(stderr, "(memsvcd --help for the options)\n");
            return 2;
        }
        snprintf(where, sizeof(where), "--%s", (c == 'h') ? "help" : daemon_options[i].name);
        if (!opt_apply(o, c, optarg, where)) {
            return 2;
        }
    }
    for (i = optind; i < argc; i++) {
        if (!opt_apply(o, 'N', argv[i], argv[i])) {
            return 2;
        }
    }
    return 0;
}

/* Arguments kept for SIGHUP, which parses them again after the config file. */
typedef struct daemon_reread {
    int            argc;
    char         **argv;
    daemon_opts_t *current;
} daemon_reread_t;

/* Two optional strings equal? */
static bool str_same(const char *a, const char *b)
{
    return ((a == NULL) || (b == NULL)) ? (a == b) : (strcmp(a, b) == 0);
}

/* msd_config_t.reread: the config file and command line again. What the server cannot change
 * while running (the node, policy, memory mode) is named when it differs. */
static bool daemon_reread(void *arg, msd_config_t *cfg)
{
    daemon_reread_t *rr  = arg;
    daemon_opts_t   *cur = rr->current, o;
    unsigned         i;
    bool             same;

    if (opts_parse(&o, rr->argc, rr->argv, true) != 0) {
        opts_fini(&o);
        return false;
    }
    same = (o.nparams == cur->nparams);
    for (i = 0; same && (i < o.nparams); i++) {
        same = (strcmp(o.params[i], cur->params[i]) == 0);
    }
    if (!same || (strcmp(o.preset, cur->preset) != 0) || (strcmp(o.policy, cur->policy) != 0) ||
        (strcmp(o.memory, cur->memory) != 0)) {
        LOG_WARN("reload: the node, its parameters, the policy or the memory mode changed: "
                 "they take effect at the next start, not now");
    }
    if (!str_same(o.cfg.listen, cur->cfg.listen) ||
        !str_same(o.cfg.unix_path, cur->cfg.unix_path) ||
        !str_same(o.cfg.metrics, cur->cfg.metrics)) {
        LOG_WARN("reload: --listen, --unix or --metrics changed: they take effect at the next "
                 "start, not now");
    }
    *cfg = o.cfg;
    /* Only numbers and flags are taken from cfg (msd_reload); its strings are not kept. */
    cfg->listen = cfg->unix_path = cfg->metrics = NULL;
    cfg->secret_file = cfg->operator_group = cfg->job_secrets = NULL;
    cfg->cluster_file = cfg->node_name = cfg->cluster_secret = cfg->state_dir = NULL;
    opts_fini(&o);
    return true;
}

/* Fail early (before any startup line) on a listen address that cannot work. */
static bool listen_check(const char *listen)
{
    struct sockaddr_storage ss;
    socklen_t               len;
    int                     fd, one = 1, err = 0;

    if (msp_parse_addr(listen, &ss, &len) != MEMSVC_OK) {
        LOG_ERR("--listen: '%s' is not HOST:PORT (port 0..65535, a resolvable host)", listen);
        return false;
    }
    /* Bind a socket as UCX's listener will (SO_REUSEADDR): "address in use" said plainly,
     * instead of UCX's "Device is busy". */
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return true; /* let UCX report it */
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        err = errno;
    }
    close(fd);
    if (err == EADDRINUSE) {
        LOG_ERR("cannot listen on %s: address in use (another memsvcd?)", listen);
        return false;
    }
    if (err != 0) {
        LOG_ERR("cannot listen on %s: %s", listen, strerror(err));
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    daemon_opts_t   o;
    daemon_reread_t rr     = {argc, argv, &o};
    eng_params_t    params = {0};
    sim_mem_mode_t  mode;
    memsvc_status_t status;
    msd_server_t   *srv;
    sim_desc_t      desc;
    eng_t          *eng      = NULL;
    char            err[256] = "", sz1[32], sz2[32];
    sigset_t        sigs;
    unsigned        i;
    int             rc;

    /* Before any thread exists (UCX's async thread, the engine's helpers): SIGTERM/SIGINT/SIGHUP
     * are taken only through the loop's signalfd. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    rc = opts_parse(&o, argc, argv, false);
    if (rc != 0) {
        opts_fini(&o);
        return (rc < 0) ? 0 : rc;
    }
    msd_log_set_level((msd_log_level_t)o.cfg.log_level);
    if (!msd_log_set_target((msd_log_target_t)o.cfg.log_target)) {
        LOG_WARN("--log-target journal: no journald listens here "
                 "(/run/systemd/journal/socket): logging to stderr");
    }
    msd_log_take_ucx();
    o.cfg.reread     = daemon_reread;
    o.cfg.reread_arg = &rr;
    if (o.cfg.local_loops == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        o.cfg.local_loops = (ncpu >= 8) ? (unsigned)(ncpu / 4) : 1;
        o.cfg.local_loops = (o.cfg.local_loops > 8) ? 8 : o.cfg.local_loops;
    }
    rc = 2;
    if ((o.cfg.node_name != NULL || o.cfg.cluster_secret != NULL) && (o.cfg.cluster_file == NULL)) {
        LOG_ERR("--node-name and --cluster-secret need --cluster FILE");
        goto out;
    }
    if (o.cfg.cluster_file != NULL) {
        if (o.cfg.peer_timeout_ns < 3 * o.cfg.heartbeat_ns) {
            LOG_ERR("--peer-timeout must be at least 3 heartbeats (%.3f s)",
                    3 * (double)o.cfg.heartbeat_ns / 1e9);
            goto out;
        }
        if (msd_peers_create(&o.cfg, &peers) != MEMSVC_OK) {
            goto out; /* logged, naming the file and line */
        }
        /* A restarted node must listen on its address at once, whatever TIME_WAIT sockets
         * its previous life left there (SO_REUSEADDR on UCX's listening socket). */
        setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
        if (!o.listen_set) {
            o.cfg.listen = msd_peers_self_addr(peers);
        } else if (strcmp(o.cfg.listen, msd_peers_self_addr(peers)) != 0) {
            LOG_WARN("listening on %s while the cluster file gives '%s' the address %s, where "
                     "peers dial it",
                     o.cfg.listen, o.cfg.node_name, msd_peers_self_addr(peers));
        }
    }
    rc = 2;
    if (!o.cfg.allow_remote && !msd_auth_addr_loopback(o.cfg.listen, err, sizeof(err))) {
        LOG_ERR("refusing to listen on %s: %s (add --allow-remote)", o.cfg.listen, err);
        goto out;
    }
    if (o.cfg.allow_remote && (o.cfg.secret_file == NULL) && (o.cfg.job_secrets == NULL) &&
        (o.cfg.cluster_secret == NULL)) {
        /* With only a cluster secret, other hosts' clients are refused (they cannot prove a
         * secret) and peer daemons prove theirs. */
        LOG_ERR("--allow-remote without --secret-file, --job-secrets or --cluster-secret: any "
                "host could use any job; refusing to start (docs/security.md)");
        goto out;
    }
    if (o.cfg.require_secret && (o.cfg.secret_file == NULL) && (o.cfg.job_secrets == NULL)) {
        LOG_ERR("--require-secret needs --secret-file or --job-secrets");
        goto out;
    }
    if (msd_auth_check_config(&o.cfg) != MEMSVC_OK) {
        goto out; /* logged: an unsafe or unreadable secret file, an unknown group */
    }
    if (!listen_check(o.cfg.listen) ||
        ((o.cfg.metrics != NULL) && !msd_metrics_addr_ok(o.cfg.metrics, o.cfg.allow_remote))) {
        goto out;
    }
    if (!o.cfg.allow_remote && (getenv("UCX_NET_DEVICES") == NULL)) {
        /* Loopback only: keep UCX off the other NICs too (it would add lanes on them). */
        setenv("UCX_NET_DEVICES", "lo", 1);
    }
    status = sim_desc_preset(o.preset, &desc);
    if (status != MEMSVC_OK) {
        LOG_ERR("unknown node preset '%s'", o.preset);
        goto out;
    }
    for (i = 0; i < o.nparams; i++) {
        status = sim_desc_set(&desc, o.params[i], err, sizeof(err));
        if (status != MEMSVC_OK) {
            LOG_ERR("%s: %s", o.params[i], (err[0] != '\0') ? err : memsvc_strerror(status));
            goto out;
        }
    }
    status = sim_desc_validate(&desc, err, sizeof(err));
    if (status != MEMSVC_OK) {
        LOG_ERR("node description: %s", (err[0] != '\0') ? err : memsvc_strerror(status));
        goto out;
    }
    if (o.cfg.cluster_file == NULL) {
        if (o.cfg.peer_tier_bytes != 0) {
            LOG_ERR("--peer-tier needs --cluster FILE (its room is on the peers)");
            goto out;
        }
        o.cfg.replicas      = 0;
        o.cfg.replica_bytes = 0;
    } else {
        if (o.cfg.peer_tier_bytes != 0) {
            desc.peer_bytes = o.cfg.peer_tier_bytes;
        }
        /* Replication's share of the node's links, as memtrace cluster assumes (Gemini keeps
         * its traffic out of training's way; docs/cluster.md). */
        if (o.cfg.repl_rate < 0) {
            o.cfg.repl_rate = 0.10 * desc.nic.bw * desc.num_npus;
        }
        /* Other nodes' copies live in host memory this node would otherwise swap to. */
        if (o.cfg.replica_bytes == UINT64_MAX) {
            o.cfg.replica_bytes = desc.host_bytes / 4;
        }
        if (o.cfg.replica_bytes >= desc.host_bytes) {
            LOG_ERR("--replica-bytes %s leaves no host pool (%s in all): make it smaller or "
                    "the host pool larger (host=SIZE)",
                    sim_format_size(o.cfg.replica_bytes, sz1, sizeof(sz1)),
                    sim_format_size(desc.host_bytes, sz2, sizeof(sz2)));
            goto out;
        }
        desc.host_bytes -= o.cfg.replica_bytes;
    }
    status = sim_mem_mode_parse(o.memory, &mode);
    if (status != MEMSVC_OK) {
        LOG_ERR("--memory: '%s' is neither 'backed' nor 'phantom'", o.memory);
        goto out;
    }
    if (mode == SIM_MEM_BACKED) {
        uint64_t want = (uint64_t)desc.num_npus * desc.hbm_bytes + desc.host_bytes;
        uint64_t have = machine_memory();

        if (want > have) {
            LOG_ERR("backed memory needs %s (%u x %s HBM + host pool) but this machine holds %s: "
                    "use --memory phantom, a smaller preset (--node tiny) or hbm=/host= overrides",
                    sim_format_size(want, sz1, sizeof(sz1)), desc.num_npus,
                    sim_format_size(desc.hbm_bytes, sz2, sizeof(sz2)),
                    sim_format_size(have, err, sizeof(err)));
            goto out;
        }
    }
    params.desc   = &desc;
    params.mode   = mode;
    params.clock  = SIM_CLOCK_REAL;
    params.policy = o.policy;
    err[0]        = '\0';
    status        = eng_create(&params, &eng, err, sizeof(err));
    if (status != MEMSVC_OK) {
        LOG_ERR("cannot create the engine: %s", (err[0] != '\0') ? err : memsvc_strerror(status));
        goto out;
    }
    LOG("memsvcd %s: node '%s', %s memory, policy %s, %u devices x %s HBM, host pool %s, disk %s",
        MEMSVC_VERSION_STRING, desc.name, sim_mem_mode_name(mode), eng_policy_name(eng),
        desc.num_npus, sim_format_size(desc.hbm_bytes, sz1, sizeof(sz1)),
        sim_format_size(desc.host_bytes, sz2, sizeof(sz2)),
        sim_format_size(desc.disk_bytes, err, sizeof(err)));
    LOG("durable tensors of a dead client are kept %.0f s for re-attach",
        (double)o.cfg.keep_durable_ns / 1e9);

    raise_nofile(o.cfg.max_sessions);
    if (getenv("UCX_LISTENER_BACKLOG") == NULL) {
        /* Connections the kernel queues for the listener: past --max-sessions they would be
         * refused anyway; a burst then costs no more than this many descriptors at once. */
        snprintf(sz1, sizeof(sz1), "%u", (o.cfg.max_sessions < 4096) ? o.cfg.max_sessions : 4096);
        setenv("UCX_LISTENER_BACKLOG", sz1, 1);
    }
    rc  = 1;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        LOG_ERR("out of memory");
        eng_destroy(eng);
        goto out;
    }
    srv->peers = peers;
    status     = msd_server_init(srv, eng, &o.cfg);
    if (status != MEMSVC_OK) {
        free(srv);
        eng_destroy(eng);
        goto out;
    }
    /* Durable tensors of an earlier run come back before any request is served. */
    status = msd_durable_open(srv);
    if (status == MEMSVC_OK) {
        status = msd_server_run(srv);
    }
    /* The engine goes last: until the server is torn down, callbacks may still reach it. */
    msd_server_fini(srv);
    msd_durable_close(srv);
    msd_tier_destroy(srv); /* the worker is gone; the engine is still there */
    msd_repl_destroy(srv); /* the worker and the arena are gone: what it still held goes */
    free(srv);
    eng_destroy(eng);
    rc = (status == MEMSVC_OK) ? 0 : 1;
out:
    msd_peers_destroy(peers);
    peers = NULL;
    opts_fini(&o);
    return rc;
}
