/* tune.h - memtrace tune: sweep policies x HBM budgets x parameter values over traces, in parallel
 */
#ifndef MT_TUNE_H
#define MT_TUNE_H

#include "client/memsvc_status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * A sweep is a grid of cells (trace x budget x policy spec). Each cell is one replay
 * (mt_replay_file without baseline, HBM overridden to the budget); each trace is also replayed
 * once unconstrained (policy none, HBM unlimited) for the baseline step time and peak. The
 * replays run in forked worker processes, at most `jobs` at a time, and send their figures back
 * through a pipe as one fixed-size binary record. Figures and their meaning: docs/tuning.md.
 */

#define MT_TUNE_ERR_MAX 256

/* The columns of results.csv, in order. */
#define MT_TUNE_CSV_HEADER                                                                         \
    "trace,model,policy,budget_bytes,fits,oom_events,step_time_s,unconstrained_step_time_s,"       \
    "overhead_pct,stall_s,recompute_s,swap_out_bytes,swap_in_bytes,peak_allocated_bytes,"          \
    "host_peak_bytes,wall_s"

/* What one replay sends back (plain data: it crosses a pipe between processes of one binary). */
typedef struct mt_tune_result {
    int32_t  status;               /* memsvc_status_t of the replay */
    char     err[MT_TUNE_ERR_MAX]; /* its message when status != MEMSVC_OK */
    char     model[64];            /* from the trace header */
    char     node[32];
    uint8_t  fits;      /* no request failed for lack of memory */
    uint32_t num_steps; /* STEP_BEGIN/END pairs seen */
    uint64_t ooms;      /* requests that failed for lack of memory */
    uint64_t total_ns;  /* simulated time of the whole trace */
    uint64_t step_ns;   /* mean step time (total_ns without step hints) */
    uint64_t stall_ns, recompute_ns;
    uint64_t swap_out_bytes, swap_in_bytes;
    uint64_t peak_allocated, host_peak; /* bytes, max over devices */
    double   wall_s;                    /* host time of the replay (not deterministic) */
} mt_tune_result_t;

typedef enum mt_tune_cell_state {
    MT_TUNE_PENDING,
    MT_TUNE_RUNNING,
    MT_TUNE_DONE,
    MT_TUNE_SKIPPED /* below a budget where every spec ran out of memory (--budget-auto) */
} mt_tune_cell_state_t;

typedef struct mt_tune_cell {
    size_t               trace, budget, spec; /* indexes */
    mt_tune_cell_state_t state;
    mt_tune_result_t     res;
} mt_tune_cell_t;

typedef struct mt_tune_trace {
    const char      *path;
    char             plot_name[96]; /* file name of its plot in the output directory */
    mt_tune_result_t base;          /* the unconstrained replay */
    uint64_t        *budgets;       /* bytes, in sweep order */
    size_t           num_budgets;
    size_t           cutoff; /* budgets at indexes > cutoff were not swept (auto) */
} mt_tune_trace_t;

typedef struct mt_tune_params {
    const char *const *traces;
    size_t             num_traces;
    const char *const *specs; /* full policy specs "NAME[:k=v,...]", already expanded */
    size_t             num_specs;
    const uint64_t    *budgets; /* explicit budgets (same for every trace); NULL: auto */
    size_t             num_budgets;
    unsigned           auto_n;    /* auto: about this many budgets from the peak down */
    const char        *node;      /* preset; NULL: the trace header's */
    const char *const *overrides; /* node "key=value" overrides (an hbm= one is replaced) */
    size_t             num_overrides;
    unsigned           jobs;     /* worker processes at once, >= 1 */
    bool               progress; /* count on stderr (only if stderr is a terminal) */
} mt_tune_params_t;

typedef struct mt_tune {
    const mt_tune_params_t *params;
    mt_tune_trace_t        *traces; /* num_traces of them */
    mt_tune_cell_t         *cells;  /* trace-major, then budget, then spec */
    size_t                  num_cells;
    size_t                  num_errors; /* cells whose replay failed (not for lack of memory) */
} mt_tune_t;

/*
 * Run the sweep: baselines first, then (auto budgets chosen from each baseline peak) every
 * cell. With auto budgets, a trace's sweep stops at the first budget where every spec ran out
 * of memory (cells below it are MT_TUNE_SKIPPED). A cell whose replay fails (a policy that
 * leaves a request unfinished, a worker killed) is kept with its status and message and counted
 * in num_errors; the sweep goes on. On success *tune_p holds the results; free it with
 * mt_tune_free. Errors: MEMSVC_ERR_NO_RESOURCE (fork, pipe, memory), or the status of a failed
 * baseline (a trace that cannot be read, an unknown preset or override), message in err.
 */
memsvc_status_t mt_tune_run(const mt_tune_params_t *params, mt_tune_t *tune_p, char *err,
                            size_t errlen);
void            mt_tune_free(mt_tune_t *tune);

/*
 * The budgets of --budget-auto N for an unconstrained peak: the step is peak / N rounded up to
 * a power of two bytes (at least 1 MiB), the first budget the smallest multiple of the step at
 * or above the peak, then down by the step to one step. Returns the count written (<= max).
 */
size_t mt_tune_auto_budgets(uint64_t peak, unsigned n, uint64_t *budgets, size_t max);

/* Overhead of a cell in percent against its trace's baseline (total simulated time). */
double mt_tune_overhead_pct(const mt_tune_t *tune, const mt_tune_cell_t *cell);

/* A cell, or NULL when out of range or not run. */
const mt_tune_cell_t *mt_tune_cell(const mt_tune_t *tune, size_t trace, size_t budget, size_t spec);

/* ---- outputs (tune_out.c) ------------------------------------------------------------------ */

/* Every run cell as one CSV row (header MT_TUNE_CSV_HEADER; fits is yes, no, or error for a
 * failed replay). MEMSVC_ERR_IO on a write error. */
memsvc_status_t mt_tune_write_csv(const mt_tune_t *tune, FILE *out);
/* The same rows, plus each trace's baseline, as one JSON object. */
memsvc_status_t mt_tune_write_json(const mt_tune_t *tune, FILE *out);
/* Per trace: rows = budgets, columns = specs, overhead % or OOM (ERR: the replay failed), '*' on
 * each row's best. */
void mt_tune_print_table(const mt_tune_t *tune, FILE *out);
/*
 * SVG of one trace: overhead % against budget, one polyline per spec over the budgets where it
 * fits (cells that do not fit are omitted), the lowest overhead per budget ringed, and the
 * budget-overhead Pareto front as a dashed step line. MEMSVC_ERR_IO on a write error.
 */
memsvc_status_t mt_tune_plot_svg(const mt_tune_t *tune, size_t trace, FILE *out);

#endif /* MT_TUNE_H */
