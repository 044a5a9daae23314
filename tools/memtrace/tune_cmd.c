/* tune_cmd.c - `memtrace tune`: options, policy-spec expansion, budgets, the output files */
#include "policy/policy.h"
#include "sim_npu/sim_desc.h"
#include "tools/memtrace/cmd.h"
#include "tools/memtrace/tune.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MT_TUNE_MAX_SPECS 256
#define MT_TUNE_MAX_BUDGETS 4096
#define MT_TUNE_MAX_PARAMS 64
#define MT_TUNE_DEFAULT_AUTO 16

typedef struct mt_tune_param {
    const char *policy; /* --param POLICY:key=v1|v2 */
    char       *key;
    char       *values[32];
    size_t      num_values;
} mt_tune_param_t;

typedef struct mt_tune_args {
    char           *specs[MT_TUNE_MAX_SPECS];
    size_t          num_specs;
    uint64_t        budgets[MT_TUNE_MAX_BUDGETS];
    size_t          num_budgets;
    mt_tune_param_t params[MT_TUNE_MAX_PARAMS];
    size_t          num_params;
    char           *buf[MT_TUNE_MAX_PARAMS]; /* --param copies, owned */
} mt_tune_args_t;

static void mt_tune_usage(FILE *out)
{
    const pol_ops_t *const *p;

    fprintf(out,
            "usage: memtrace tune TRACE... [--policies SPEC,SPEC,...]\n"
            "                     [--budgets SIZE,SIZE,... | --budget-range FROM:TO:STEP |\n"
            "                      --budget-auto N] [--param POLICY:key=v1|v2|... ...]\n"
            "                     [--node PRESET] [key=value ...] [-j JOBS] [--quiet] --out DIR\n"
            "  Replay each TRACE under every policy spec at every HBM budget (per NPU), in\n"
            "  parallel worker processes, and write DIR/results.csv, DIR/results.json and one\n"
            "  SVG plot per trace; print a table of overhead %% (rows: budgets) to stdout.\n"
            "  --policies LIST    policy specs NAME[:k=v,...], comma-separated (default: all)\n"
            "  --budgets LIST     HBM sizes, e.g. 64GiB,56GiB,48GiB\n"
            "  --budget-range F:T:S  from F to T by S, e.g. 64GiB:16GiB:8GiB\n"
            "  --budget-auto N    about N budgets from the unconstrained peak down, stopping at\n"
            "                     the first budget where every spec runs out of memory (default,\n"
            "                     N = %d)\n"
            "  --param P:k=a|b    sweep parameter k of policy P over the values a, b (repeatable;\n"
            "                     several keys of one policy give their cross product)\n"
            "  --node PRESET      node preset (default: each trace header's); key=value\n"
            "                     overrides it as in `memtrace replay` (hbm= is the budget)\n"
            "  -j JOBS            replays at once (default: the number of cores)\n"
            "  --quiet            no table, no progress\n"
            "  policies:\n",
            MT_TUNE_DEFAULT_AUTO);
    for (p = pol_all(); *p != NULL; p++) {
        fprintf(out, "    %-10s %s%s%s\n", (*p)->name, (*p)->summary, (*p)->params[0] ? "; " : "",
                (*p)->params);
    }
}

static void mt_tune_args_free(mt_tune_args_t *a)
{
    size_t i;

    for (i = 0; i < a->num_specs; i++) {
        free(a->specs[i]);
    }
    for (i = 0; i < a->num_params; i++) {
        free(a->buf[i]);
    }
    free(a);
}

/* Add a copy of spec. false (message printed) when there are too many or no memory. */
static bool mt_tune_add_spec(mt_tune_args_t *a, const char *spec, size_t len)
{
    if (a->num_specs == MT_TUNE_MAX_SPECS) {
        fprintf(stderr, "memtrace tune: more than %d policy specs\n", MT_TUNE_MAX_SPECS);
        return false;
    }
    a->specs[a->num_specs] = strndup(spec, len);
    if (a->specs[a->num_specs] == NULL) {
        fprintf(stderr, "memtrace tune: out of memory\n");
        return false;
    }
    a->num_specs++;
    return true;
}

/*
 * Split --policies: specs separated by commas, where a piece with '=' but no ':' continues the
 * parameters of the previous spec ("dtr:a=1,b=2,lru" is two specs). Appends to base[].
 */
static bool mt_tune_split_policies(const char *list, char **base, size_t *num_p, size_t max)
{
    const char *p = list;

    while (*p != '\0') {
        const char *e   = strchr(p, ',');
        size_t      len = (e != NULL) ? (size_t)(e - p) : strlen(p);
        char       *piece;

        piece = strndup(p, len);
        if (piece == NULL) {
            return false;
        }
        if (*num_p > 0 && strchr(piece, '=') != NULL && strchr(piece, ':') == NULL) {
            char  *prev   = base[*num_p - 1];
            size_t pl     = strlen(prev);
            char  *joined = realloc(prev, pl + len + 2);

            if (joined == NULL) {
                free(piece);
                return false;
            }
            joined[pl] = ',';
            memcpy(joined + pl + 1, piece, len + 1);
            base[*num_p - 1] = joined;
            free(piece);
        } else if (len > 0) {
            if (*num_p == max) {
                free(piece);
                return false;
            }
            base[(*num_p)++] = piece;
        } else {
            free(piece);
        }
        p += len + (e != NULL);
    }
    return true;
}

/* Parse "POLICY:key=v1|v2|v3" into a->params. false with a message on a malformed one. */
static bool mt_tune_add_param(mt_tune_args_t *a, const char *arg)
{
    mt_tune_param_t *pp;
    char            *copy, *colon, *eq, *v, *save = NULL;

    if (a->num_params == MT_TUNE_MAX_PARAMS) {
        fprintf(stderr, "memtrace tune: more than %d --param options\n", MT_TUNE_MAX_PARAMS);
        return false;
    }
    copy = strdup(arg);
    if (copy == NULL) {
        fprintf(stderr, "memtrace tune: out of memory\n");
        return false;
    }
    a->buf[a->num_params] = copy;
    pp                    = &a->params[a->num_params++];
    colon                 = strchr(copy, ':');
    eq                    = (colon != NULL) ? strchr(colon, '=') : NULL;
    if (colon == NULL || eq == NULL || colon == copy || eq == colon + 1 || eq[1] == '\0') {
        fprintf(stderr, "memtrace tune: --param '%s': expected POLICY:key=v1|v2|...\n", arg);
        return false;
    }
    *colon     = '\0';
    *eq        = '\0';
    pp->policy = copy;
    pp->key    = colon + 1;
    for (v = strtok_r(eq + 1, "|", &save); v != NULL; v = strtok_r(NULL, "|", &save)) {
        if (pp->num_values == sizeof(pp->values) / sizeof(pp->values[0])) {
            fprintf(stderr, "memtrace tune: --param '%s': too many values\n", arg);
            return false;
        }
        pp->values[pp->num_values++] = v;
    }
    if (pp->num_values == 0) {
        fprintf(stderr, "memtrace tune: --param '%s': no values\n", arg);
        return false;
    }
    return true;
}

/*
 * Expand each base spec with the cross product of its policy's --param values, in the order the
 * options came (the last --param varies fastest). Then check that every spec names a policy
 * and that the policy accepts its parameters. false with a message otherwise.
 */
static bool mt_tune_expand(mt_tune_args_t *a, char **base, size_t num_base)
{
    size_t b, i, k;

    for (i = 0; i < a->num_params; i++) {
        for (b = 0; b < num_base; b++) {
            size_t nl = strcspn(base[b], ":");

            if (strlen(a->params[i].policy) == nl && !strncmp(base[b], a->params[i].policy, nl)) {
                break;
            }
        }
        if (b == num_base) {
            fprintf(stderr, "memtrace tune: --param for '%s', which is not in --policies\n",
                    a->params[i].policy);
            return false;
        }
    }
    for (b = 0; b < num_base; b++) {
        size_t           nl = strcspn(base[b], ":");
        size_t           idx[MT_TUNE_MAX_PARAMS], which[MT_TUNE_MAX_PARAMS], nw = 0;
        char             spec[1024];
        const pol_ops_t *ops;
        const char      *params;

        for (i = 0; i < a->num_params; i++) {
            if (strlen(a->params[i].policy) == nl && !strncmp(base[b], a->params[i].policy, nl)) {
                which[nw] = i;
                idx[nw++] = 0;
            }
        }
        for (;;) {
            size_t len = (size_t)snprintf(spec, sizeof(spec), "%s", base[b]);
            bool   has = (base[b][nl] == ':' && base[b][nl + 1] != '\0');

            for (k = 0; k < nw && len < sizeof(spec); k++) {
                const mt_tune_param_t *pp = &a->params[which[k]];

                len += (size_t)snprintf(spec + len, sizeof(spec) - len, "%s%s=%s",
                                        has ? "," : (base[b][nl] == ':' ? "" : ":"), pp->key,
                                        pp->values[idx[k]]);
                has = true;
            }
            if (len >= sizeof(spec)) {
                fprintf(stderr, "memtrace tune: policy spec too long: %s...\n", base[b]);
                return false;
            }
            if (pol_lookup_spec(spec, &ops, &params) != MEMSVC_OK) {
                fprintf(stderr,
                        "memtrace tune: unknown policy '%.*s' (memtrace tune --help "
                        "lists them)\n",
                        (int)nl, spec);
                return false;
            } else {
                void           *state = NULL;
                char            err[256];
                memsvc_status_t st = ops->create(params, &state, err, sizeof(err));

                if (st != MEMSVC_OK) {
                    fprintf(stderr, "memtrace tune: policy '%s': %s\n", spec, err);
                    return false;
                }
                ops->destroy(state);
            }
            if (!mt_tune_add_spec(a, spec, strlen(spec))) {
                return false;
            }
            for (k = nw; k-- > 0;) { /* odometer, last fastest */
                if (++idx[k] < a->params[which[k]].num_values) {
                    break;
                }
                idx[k] = 0;
            }
            if (k == (size_t)-1 || nw == 0) {
                break;
            }
        }
    }
    return true;
}

static bool mt_tune_parse_budgets(mt_tune_args_t *a, const char *list)
{
    char *copy = strdup(list), *tok, *save = NULL;
    bool  ok = (copy != NULL);

    for (tok = ok ? strtok_r(copy, ",", &save) : NULL; tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;

        if (sim_parse_size(tok, &v) != MEMSVC_OK || v == 0) {
            fprintf(stderr, "memtrace tune: --budgets: '%s' is not a size (e.g. 48GiB)\n", tok);
            ok = false;
            break;
        }
        if (a->num_budgets == MT_TUNE_MAX_BUDGETS) {
            fprintf(stderr, "memtrace tune: more than %d budgets\n", MT_TUNE_MAX_BUDGETS);
            ok = false;
            break;
        }
        a->budgets[a->num_budgets++] = v;
    }
    if (ok && a->num_budgets == 0) {
        fprintf(stderr, "memtrace tune: --budgets: no sizes in '%s'\n", list);
        ok = false;
    }
    free(copy);
    return ok;
}

static bool mt_tune_parse_range(mt_tune_args_t *a, const char *range)
{
    char    *copy = strdup(range), *c1, *c2;
    uint64_t from, to, step, v;
    bool     ok = false;

    if (copy == NULL) {
        return false;
    }
    c1 = strchr(copy, ':');
    c2 = (c1 != NULL) ? strchr(c1 + 1, ':') : NULL;
    if (c2 != NULL) {
        *c1 = '\0';
        *c2 = '\0';
        ok = sim_parse_size(copy, &from) == MEMSVC_OK && sim_parse_size(c1 + 1, &to) == MEMSVC_OK &&
             sim_parse_size(c2 + 1, &step) == MEMSVC_OK && step > 0 && from > 0 && to > 0;
    }
    if (!ok) {
        fprintf(stderr,
                "memtrace tune: --budget-range '%s': expected FROM:TO:STEP sizes, e.g. "
                "64GiB:16GiB:8GiB\n",
                range);
        goto out;
    }
    for (v = from;; v = (from >= to) ? v - step : v + step) {
        if (a->num_budgets == MT_TUNE_MAX_BUDGETS) {
            fprintf(stderr, "memtrace tune: --budget-range gives more than %d budgets\n",
                    MT_TUNE_MAX_BUDGETS);
            ok = false;
            goto out;
        }
        a->budgets[a->num_budgets++] = v;
        if ((from >= to) ? (v < to + step || v - step == 0) : (v + step > to)) {
            break;
        }
    }
out:
    free(copy);
    return ok;
}

/* Write one output file with fn; false (message printed) on failure. */
static bool mt_tune_write(const char *dir, const char *name, const mt_tune_t *t, size_t trace,
                          int what)
{
    char            path[4096];
    FILE           *f;
    memsvc_status_t st;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "memtrace tune: cannot write %s: %s\n", path, strerror(errno));
        return false;
    }
    st = (what == 0)   ? mt_tune_write_csv(t, f)
         : (what == 1) ? mt_tune_write_json(t, f)
                       : mt_tune_plot_svg(t, trace, f);
    if (fclose(f) != 0 || st != MEMSVC_OK) {
        fprintf(stderr, "memtrace tune: cannot write %s\n", path);
        return false;
    }
    return true;
}

/*
 * Whether --out DIR can take the results, checked before the sweep rather than after it: an
 * existing writable directory, or a name that can be made in a writable directory (it is made
 * after the sweep, so that a usage error found by the sweep leaves nothing behind). false,
 * said on stderr, otherwise.
 */
static bool mt_tune_check_out(const char *dir)
{
    char        parent[4096], *slash;
    struct stat st;

    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "memtrace tune: --out %s: not a directory\n", dir);
            return false;
        }
        if (access(dir, W_OK | X_OK) != 0) {
            fprintf(stderr, "memtrace tune: --out %s: cannot write there: %s\n", dir,
                    strerror(errno));
            return false;
        }
        return true;
    }
    if (errno != ENOENT) {
        fprintf(stderr, "memtrace tune: --out %s: %s\n", dir, strerror(errno));
        return false;
    }
    snprintf(parent, sizeof(parent), "%s", dir);
    while ((slash = strrchr(parent, '/')) != NULL && slash[1] == '\0' && slash != parent) {
        *slash = '\0'; /* trailing slashes */
    }
    slash = strrchr(parent, '/');
    if (slash == NULL) {
        snprintf(parent, sizeof(parent), ".");
    } else {
        slash[slash == parent ? 1 : 0] = '\0';
    }
    if (stat(parent, &st) != 0 || !S_ISDIR(st.st_mode) || access(parent, W_OK | X_OK) != 0) {
        fprintf(stderr, "memtrace tune: --out %s: cannot create it in %s: %s\n", dir, parent,
                stat(parent, &st) != 0 ? strerror(errno)
                : !S_ISDIR(st.st_mode) ? "not a directory"
                                       : strerror(EACCES));
        return false;
    }
    return true;
}

/* Plot file names: the trace's base name without extension, .svg; repeated names get -N. */
static void mt_tune_plot_names(mt_tune_t *t)
{
    size_t i, j;

    for (i = 0; i < t->params->num_traces; i++) {
        const char *p    = t->traces[i].path;
        const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
        const char *dot  = strrchr(base, '.');
        int         len  = (dot != NULL && dot != base) ? (int)(dot - base) : (int)strlen(base);
        char        stem[64];

        snprintf(stem, sizeof(stem), "%.*s", len > 60 ? 60 : len, base);
        snprintf(t->traces[i].plot_name, sizeof(t->traces[i].plot_name), "%s.svg", stem);
        for (j = 0; j < i; j++) {
            if (!strcmp(t->traces[j].plot_name, t->traces[i].plot_name)) {
                snprintf(t->traces[i].plot_name, sizeof(t->traces[i].plot_name), "%s-%zu.svg", stem,
                         i + 1);
                break;
            }
        }
    }
}

int mt_cmd_tune(int argc, char **argv)
{
    mt_tune_params_t tp;
    mt_tune_args_t  *a;
    mt_tune_t        tune;
    const char     **traces = NULL, **overrides = NULL, *out_dir = NULL, *policies = NULL;
    const char      *node = NULL;
    char            *base[MT_TUNE_MAX_SPECS];
    size_t           num_base = 0, nt = 0, no = 0, i;
    long             jobs   = sysconf(_SC_NPROCESSORS_ONLN);
    long             auto_n = 0;
    bool             quiet = false, have_budgets = false;
    memsvc_status_t  status;
    int              rc = 2;
    char             err[1024], *end;

    a         = calloc(1, sizeof(*a));
    traces    = calloc((size_t)argc, sizeof(*traces));
    overrides = calloc((size_t)argc, sizeof(*overrides));
    if (a == NULL || traces == NULL || overrides == NULL) {
        fprintf(stderr, "memtrace tune: out of memory\n");
        rc = 1;
        goto out;
    }
    for (i = 1; i < (size_t)argc; i++) {
        const char *s    = argv[i];
        bool        more = (i + 1 < (size_t)argc);

        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            mt_tune_usage(stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(s, "--policies") && more) {
            policies = argv[++i];
        } else if (!strcmp(s, "--budgets") && more) {
            if (have_budgets || !mt_tune_parse_budgets(a, argv[++i])) {
                goto usage_err;
            }
            have_budgets = true;
        } else if (!strcmp(s, "--budget-range") && more) {
            if (have_budgets || !mt_tune_parse_range(a, argv[++i])) {
                goto usage_err;
            }
            have_budgets = true;
        } else if (!strcmp(s, "--budget-auto") && more) {
            auto_n = strtol(argv[++i], &end, 10);
            if (have_budgets || *end != '\0' || auto_n < 1 || auto_n > 1024) {
                fprintf(stderr, "memtrace tune: --budget-auto '%s': expected a count 1..1024%s\n",
                        argv[i], have_budgets ? " (and only one budget option)" : "");
                goto out;
            }
            have_budgets = true;
        } else if (!strcmp(s, "--param") && more) {
            if (!mt_tune_add_param(a, argv[++i])) {
                goto out;
            }
        } else if (!strcmp(s, "--node") && more) {
            node = argv[++i];
        } else if (!strcmp(s, "-j") && more) {
            jobs = strtol(argv[++i], &end, 10);
            if (*end != '\0' || jobs < 1 || jobs > 1024) {
                fprintf(stderr, "memtrace tune: -j '%s': expected a count 1..1024\n", argv[i]);
                goto out;
            }
        } else if (!strcmp(s, "--out") && more) {
            out_dir = argv[++i];
        } else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) {
            quiet = true;
        } else if (s[0] != '-' && strchr(s, '=') != NULL) {
            overrides[no++] = s;
        } else if (s[0] != '-') {
            traces[nt++] = s;
        } else {
            fprintf(stderr, "memtrace tune: unexpected argument '%s'\n", s);
            goto usage_err;
        }
    }
    if (nt == 0 || out_dir == NULL) {
        fprintf(stderr, "memtrace tune: %s\n", nt == 0 ? "no trace given" : "--out DIR is needed");
        goto usage_err;
    }
    for (i = 0; i < nt; i++) {
        if (access(traces[i], R_OK) != 0) {
            fprintf(stderr, "memtrace tune: cannot read trace '%s': %s\n", traces[i],
                    strerror(errno));
            goto out;
        }
    }

    /* policy specs */
    if (policies == NULL) {
        const pol_ops_t *const *p;

        for (p = pol_all(); *p != NULL && num_base < MT_TUNE_MAX_SPECS; p++) {
            base[num_base++] = strdup((*p)->name);
            if (base[num_base - 1] == NULL) {
                num_base--;
                fprintf(stderr, "memtrace tune: out of memory\n");
                rc = 1;
                goto out_base;
            }
        }
    } else if (!mt_tune_split_policies(policies, base, &num_base, MT_TUNE_MAX_SPECS) ||
               num_base == 0) {
        fprintf(stderr, "memtrace tune: --policies '%s': no policy specs (or too many)\n",
                policies);
        goto out_base;
    }
    if (!mt_tune_expand(a, base, num_base)) {
        goto out_base;
    }

    if (!mt_tune_check_out(out_dir)) {
        rc = 1;
        goto out_base;
    }
    memset(&tp, 0, sizeof(tp));
    tp.node          = node;
    tp.traces        = traces;
    tp.num_traces    = nt;
    tp.specs         = (const char *const *)a->specs;
    tp.num_specs     = a->num_specs;
    tp.budgets       = (a->num_budgets > 0) ? a->budgets : NULL;
    tp.num_budgets   = a->num_budgets;
    tp.auto_n        = (unsigned)((auto_n > 0) ? auto_n : MT_TUNE_DEFAULT_AUTO);
    tp.overrides     = overrides;
    tp.num_overrides = no;
    tp.jobs          = (unsigned)((jobs > 0) ? jobs : 1);
    tp.progress      = !quiet;

    status = mt_tune_run(&tp, &tune, err, sizeof(err));
    if (status != MEMSVC_OK) {
        fprintf(stderr, "memtrace tune: %s\n", err);
        /* a bad preset or override is a usage error, as in memtrace replay */
        rc = (status == MEMSVC_ERR_UNKNOWN_KEY || status == MEMSVC_ERR_PARSE ||
              status == MEMSVC_ERR_INVALID_PARAM)
                 ? 2
                 : 1;
        goto out_base;
    }
    mt_tune_plot_names(&tune);
    rc = 0;
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "memtrace tune: cannot create %s: %s\n", out_dir, strerror(errno));
        rc = 1;
    } else if (!mt_tune_write(out_dir, "results.csv", &tune, 0, 0) ||
               !mt_tune_write(out_dir, "results.json", &tune, 0, 1)) {
        rc = 1;
    }
    for (i = 0; i < nt && rc == 0; i++) {
        if (!mt_tune_write(out_dir, tune.traces[i].plot_name, &tune, i, 2)) {
            rc = 1;
        }
    }
    if (!quiet) {
        mt_tune_print_table(&tune, stdout);
    }
    if (tune.num_errors > 0) {
        fprintf(stderr,
                "memtrace tune: %zu replay(s) failed (ERR in the table, error in the CSV)\n",
                tune.num_errors);
        rc = 1;
    }
    mt_tune_free(&tune);
out_base:
    for (i = 0; i < num_base; i++) {
        free(base[i]);
    }
    goto out;
usage_err:
    rc = 2;
    fprintf(stderr, "(memtrace tune --help for the options)\n");
out:
    if (a != NULL) {
        mt_tune_args_free(a);
    }
    free(traces);
    free(overrides);
    return rc;
}
