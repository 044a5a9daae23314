/* tune_out.c - memtrace tune outputs: results.csv, results.json, the text table, the SVG plot */
#include "tools/memtrace/replay.h"
#include "tools/memtrace/tune.h"

#include "sim_npu/sim_desc.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- shared ---------------------------------------------------------------------------------- */

/* Unit for a set of budgets: GiB from 2 GiB up, else MiB. */
static void mt_tune_unit(uint64_t max_budget, const char **name_p, double *div_p)
{
    if (max_budget >= (2ull << 30)) {
        *name_p = "GiB";
        *div_p  = (double)(1ull << 30);
    } else {
        *name_p = "MiB";
        *div_p  = (double)(1ull << 20);
    }
}

static uint64_t mt_tune_max_budget(const mt_tune_trace_t *tr)
{
    uint64_t m = 0;
    size_t   b;

    for (b = 0; b < tr->num_budgets; b++) {
        m = (tr->budgets[b] > m) ? tr->budgets[b] : m;
    }
    return m;
}

/* Lowest overhead (%) among the cells of a row that fit; false if none fits. */
static bool mt_tune_row_best(const mt_tune_t *t, size_t tr, size_t b, double *best_p)
{
    bool   any = false;
    size_t s;

    for (s = 0; s < t->params->num_specs; s++) {
        const mt_tune_cell_t *c = mt_tune_cell(t, tr, b, s);
        double                ov;

        if (c == NULL || !c->res.fits) {
            continue;
        }
        ov = mt_tune_overhead_pct(t, c);
        if (!any || ov < *best_p) {
            *best_p = ov;
            any     = true;
        }
    }
    return any;
}

static double mt_s(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void mt_csv_str(const char *s, FILE *out)
{
    if (strpbrk(s, ",\"\n") == NULL) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s != '\0'; s++) {
        if (*s == '"') {
            fputc('"', out);
        }
        fputc(*s, out);
    }
    fputc('"', out);
}

static const char *mt_basename(const char *path)
{
    const char *s = strrchr(path, '/');

    return (s != NULL) ? s + 1 : path;
}

/* ---- CSV and JSON ---------------------------------------------------------------------------- */

memsvc_status_t mt_tune_write_csv(const mt_tune_t *t, FILE *out)
{
    size_t tr, b, s;

    fprintf(out, "%s\n", MT_TUNE_CSV_HEADER);
    for (tr = 0; tr < t->params->num_traces; tr++) {
        const mt_tune_result_t *base = &t->traces[tr].base;

        for (b = 0; b < t->traces[tr].num_budgets; b++) {
            for (s = 0; s < t->params->num_specs; s++) {
                const mt_tune_cell_t   *c = mt_tune_cell(t, tr, b, s);
                const mt_tune_result_t *r;

                if (c == NULL) {
                    continue;
                }
                r = &c->res;
                mt_csv_str(t->traces[tr].path, out);
                fputc(',', out);
                mt_csv_str(base->model, out);
                fputc(',', out);
                mt_csv_str(t->params->specs[s], out);
                fprintf(out,
                        ",%" PRIu64 ",%s,%" PRIu64 ",%.6f,%.6f,%.3f,%.6f,%.6f,%" PRIu64 ",%" PRIu64
                        ",%" PRIu64 ",%" PRIu64 ",%.3f\n",
                        t->traces[tr].budgets[b],
                        (r->status != MEMSVC_OK) ? "error"
                        : r->fits                ? "yes"
                                                 : "no",
                        r->ooms, mt_s(r->step_ns), mt_s(base->step_ns), mt_tune_overhead_pct(t, c),
                        mt_s(r->stall_ns), mt_s(r->recompute_ns), r->swap_out_bytes,
                        r->swap_in_bytes, r->peak_allocated, r->host_peak, r->wall_s);
            }
        }
    }
    return ferror(out) ? MEMSVC_ERR_IO : MEMSVC_OK;
}

memsvc_status_t mt_tune_write_json(const mt_tune_t *t, FILE *out)
{
    size_t tr, b, s;
    bool   first = true;

    fprintf(out, "{\n  \"traces\": [");
    for (tr = 0; tr < t->params->num_traces; tr++) {
        const mt_tune_trace_t *x = &t->traces[tr];

        fprintf(out, "%s\n    {\"trace\": ", tr ? "," : "");
        memsvc_json_string(x->path, out);
        fprintf(out, ", \"model\": ");
        memsvc_json_string(x->base.model, out);
        fprintf(out, ", \"node\": ");
        memsvc_json_string(x->base.node, out);
        fprintf(out,
                ", \"unconstrained_step_time_s\": %.6f, \"unconstrained_total_s\": %.6f, "
                "\"unconstrained_peak_bytes\": %" PRIu64 ", \"plot\": ",
                mt_s(x->base.step_ns), mt_s(x->base.total_ns), x->base.peak_allocated);
        memsvc_json_string(x->plot_name, out);
        fprintf(out, ", \"budgets_bytes\": [");
        for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
            fprintf(out, "%s%" PRIu64, b ? ", " : "", x->budgets[b]);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "\n  ],\n  \"policies\": [");
    for (s = 0; s < t->params->num_specs; s++) {
        fprintf(out, "%s", s ? ", " : "");
        memsvc_json_string(t->params->specs[s], out);
    }
    fprintf(out, "],\n  \"results\": [");
    for (tr = 0; tr < t->params->num_traces; tr++) {
        for (b = 0; b < t->traces[tr].num_budgets; b++) {
            for (s = 0; s < t->params->num_specs; s++) {
                const mt_tune_cell_t   *c = mt_tune_cell(t, tr, b, s);
                const mt_tune_result_t *r;

                if (c == NULL) {
                    continue;
                }
                r = &c->res;
                fprintf(out, "%s\n    {\"trace\": ", first ? "" : ",");
                first = false;
                memsvc_json_string(t->traces[tr].path, out);
                fprintf(out, ", \"model\": ");
                memsvc_json_string(t->traces[tr].base.model, out);
                fprintf(out, ", \"policy\": ");
                memsvc_json_string(t->params->specs[s], out);
                fprintf(out,
                        ", \"budget_bytes\": %" PRIu64 ", \"fits\": %s, \"oom_events\": %" PRIu64
                        ", \"step_time_s\": %.6f, \"unconstrained_step_time_s\": %.6f, "
                        "\"overhead_pct\": %.3f, \"stall_s\": %.6f, \"recompute_s\": %.6f, "
                        "\"swap_out_bytes\": %" PRIu64 ", \"swap_in_bytes\": %" PRIu64
                        ", \"peak_allocated_bytes\": %" PRIu64 ", \"host_peak_bytes\": %" PRIu64
                        ", \"wall_s\": %.3f",
                        t->traces[tr].budgets[b], r->fits ? "true" : "false", r->ooms,
                        mt_s(r->step_ns), mt_s(t->traces[tr].base.step_ns),
                        mt_tune_overhead_pct(t, c), mt_s(r->stall_ns), mt_s(r->recompute_ns),
                        r->swap_out_bytes, r->swap_in_bytes, r->peak_allocated, r->host_peak,
                        r->wall_s);
                if (r->status != MEMSVC_OK) {
                    fprintf(out, ", \"error\": ");
                    memsvc_json_string(r->err, out);
                }
                fputc('}', out);
            }
        }
    }
    fprintf(out, "\n  ]\n}\n");
    return ferror(out) ? MEMSVC_ERR_IO : MEMSVC_OK;
}

/* ---- text table ------------------------------------------------------------------------------ */

void mt_tune_print_table(const mt_tune_t *t, FILE *out)
{
    size_t tr, b, s;
    int    w = 9;
    char   b1[32], cell[32];

    for (s = 0; s < t->params->num_specs; s++) {
        int len = (int)strlen(t->params->specs[s]) + 2;

        w = (len > w) ? len : w;
    }
    for (tr = 0; tr < t->params->num_traces; tr++) {
        const mt_tune_trace_t *x = &t->traces[tr];
        const char            *unit;
        double                 div;
        char                   head[32];

        mt_tune_unit(mt_tune_max_budget(x), &unit, &div);
        fprintf(out, "%s%s: %s on %s, unconstrained step %.3f s, peak %s\n", tr ? "\n" : "",
                x->path, x->base.model, x->base.node, mt_s(x->base.step_ns),
                sim_format_size(x->base.peak_allocated, b1, sizeof(b1)));
        snprintf(head, sizeof(head), "budget %s", unit);
        fprintf(out, "%-11s", head);
        for (s = 0; s < t->params->num_specs; s++) {
            fprintf(out, "%*s%s", w, t->params->specs[s],
                    (s + 1 < t->params->num_specs) ? " " : "");
        }
        fputc('\n', out);
        for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
            double best = 0.0;
            bool   any  = mt_tune_row_best(t, tr, b, &best);

            fprintf(out, "%11.2f", (double)x->budgets[b] / div);
            for (s = 0; s < t->params->num_specs; s++) {
                const mt_tune_cell_t *c = mt_tune_cell(t, tr, b, s);

                char mark = ' ';

                if (c == NULL) {
                    snprintf(cell, sizeof(cell), "-");
                } else if (c->res.status != MEMSVC_OK) {
                    snprintf(cell, sizeof(cell), "ERR");
                } else if (!c->res.fits) {
                    snprintf(cell, sizeof(cell), "OOM");
                } else {
                    double ov = mt_tune_overhead_pct(t, c);

                    snprintf(cell, sizeof(cell), "%+.1f%%", ov);
                    mark = (any && ov <= best + 1e-9) ? '*' : ' ';
                }
                if (s + 1 < t->params->num_specs || mark != ' ') {
                    fprintf(out, "%*s%c", w, cell, mark);
                } else {
                    fprintf(out, "%*s", w, cell); /* no trailing blank */
                }
            }
            fputc('\n', out);
        }
    }
    fprintf(out,
            "(overhead = simulated time / unconstrained - 1; * = lowest in the row; "
            "OOM = a request did not fit%s)\n",
            t->num_errors ? "; ERR = the replay failed, see the messages" : "");
}

/* ---- SVG ------------------------------------------------------------------------------------- */

#define W 1000.0
#define H 560.0
#define ML 80.0 /* margins: left, right (legend), top, bottom */
#define MR 250.0
#define MT 64.0
#define MB 60.0

static const char *const mt_tune_colors[] = {
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
};
#define MT_TUNE_NCOLORS (sizeof(mt_tune_colors) / sizeof(mt_tune_colors[0]))

static double mt_nice(double span, int n)
{
    double raw = span / n, p, m;

    if (raw <= 0.0) {
        return 1.0;
    }
    p = pow(10.0, floor(log10(raw)));
    m = raw / p;
    return p * ((m <= 1.0) ? 1.0 : (m <= 2.0) ? 2.0 : (m <= 5.0) ? 5.0 : 10.0);
}

typedef struct mt_pt {
    double x, y; /* budget in units, overhead % */
} mt_pt_t;

static int mt_pt_cmp(const void *a, const void *b)
{
    const mt_pt_t *p = a, *q = b;

    return (p->x < q->x) ? -1 : (p->x > q->x) ? 1 : (p->y < q->y) ? -1 : (p->y > q->y) ? 1 : 0;
}

memsvc_status_t mt_tune_plot_svg(const mt_tune_t *t, size_t tr, FILE *out)
{
    const mt_tune_trace_t *x  = &t->traces[tr];
    const size_t           ns = t->params->num_specs;
    const char            *unit;
    double                 div, xlo = 0, xhi = 0, ylo = 0.0, yhi = 0.0, xs, ys, step, v;
    double                 ybest = 0.0;
    mt_pt_t               *best;
    size_t                 b, s, nb = 0, nbest = 0, i;
    bool                   any = false, clipped = false;
    char                   b1[32];

    mt_tune_unit(mt_tune_max_budget(x), &unit, &div);
    for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
        double bx = (double)x->budgets[b] / div;

        xlo = (nb == 0 || bx < xlo) ? bx : xlo;
        xhi = (nb == 0 || bx > xhi) ? bx : xhi;
        nb++;
        for (s = 0; s < ns; s++) {
            const mt_tune_cell_t *c = mt_tune_cell(t, tr, b, s);
            double                ov;

            if (c == NULL || !c->res.fits) {
                continue;
            }
            ov  = mt_tune_overhead_pct(t, c);
            ylo = (ov < ylo) ? ov : ylo;
            yhi = (ov > yhi) ? ov : yhi;
            any = true;
        }
    }
    best = calloc(nb ? nb : 1, sizeof(*best));
    if (best == NULL) {
        return MEMSVC_ERR_NO_RESOURCE;
    }
    /* x axis: the swept range, widened to nice ticks; y axis: from 0 (or below) to the highest */
    step = mt_nice((xhi > xlo) ? xhi - xlo : (xhi > 0 ? xhi : 1.0), 8);
    xlo  = floor(xlo / step - 0.5) * step;
    xhi  = ceil(xhi / step + 0.5) * step;
    xlo  = (xlo < 0.0) ? 0.0 : xlo;
    /* overheads far above the best ones would squash the interesting part: cap the y axis at
     * 1.5 x the highest of the row bests (at least 10%); what is above is drawn at the top */
    for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
        double ov;

        if (mt_tune_row_best(t, tr, b, &ov) && ov > ybest) {
            ybest = ov;
        }
    }
    ybest = (1.5 * ybest > 10.0) ? 1.5 * ybest : 10.0;
    if (yhi > ybest) {
        yhi     = ybest;
        clipped = true;
    }
    yhi = (yhi <= ylo) ? ylo + 1.0 : yhi;
    v   = (yhi - ylo) * 0.06;
    yhi += clipped ? 0.0 : v;
    ylo = (ylo < 0.0) ? ylo - v : 0.0;
    xs  = (W - ML - MR) / (xhi - xlo);
    ys  = (H - MT - MB) / (yhi - ylo);
#define PX(bx) (ML + xs * ((bx)-xlo))
#define PY(ov) (H - MB - ys * (((ov) > yhi ? yhi : (ov)) - ylo)) /* clipped at the top */

    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(out,
            "<text x=\"%.0f\" y=\"24\" font-size=\"15\">Step-time overhead against HBM "
            "budget: ",
            ML);
    mt_xml_string(mt_basename(x->path), out);
    fprintf(out, " (");
    mt_xml_string(x->base.model, out);
    fprintf(out, " on ");
    mt_xml_string(x->base.node, out);
    fprintf(out, ")</text>\n");
    fprintf(out,
            "<text x=\"%.0f\" y=\"44\" fill=\"#555555\">unconstrained: step %.3f s, peak %s; "
            "one point per replay; none where it runs out of memory%s</text>\n",
            ML, mt_s(x->base.step_ns), sim_format_size(x->base.peak_allocated, b1, sizeof(b1)),
            clipped ? "; triangles: above the scale" : "");

    /* grid, axes, ticks */
    step = mt_nice(yhi - ylo, 6);
    for (v = ceil(ylo / step) * step; v <= yhi + 1e-9; v += step) {
        fprintf(out,
                "<line x1=\"%.0f\" y1=\"%.2f\" x2=\"%.0f\" y2=\"%.2f\" stroke=\"%s\"/>"
                "<text x=\"%.0f\" y=\"%.2f\" text-anchor=\"end\">%g</text>\n",
                ML, PY(v), W - MR, PY(v), (fabs(v) < 1e-9) ? "#888888" : "#dddddd", ML - 6,
                PY(v) + 4, fabs(v) < 1e-9 ? 0.0 : v);
    }
    fprintf(out,
            "<text transform=\"translate(24 %.0f) rotate(-90)\" text-anchor=\"middle\">"
            "overhead (%% of the unconstrained step time)</text>\n",
            MT + (H - MT - MB) / 2);
    step = mt_nice(xhi - xlo, 8);
    for (v = ceil(xlo / step) * step; v <= xhi + 1e-9; v += step) {
        fprintf(out,
                "<line x1=\"%.2f\" y1=\"%.0f\" x2=\"%.2f\" y2=\"%.0f\" stroke=\"black\"/>"
                "<text x=\"%.2f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
                PX(v), H - MB, PX(v), H - MB + 5, PX(v), H - MB + 19, v);
    }
    fprintf(out,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">HBM budget per NPU (%s)"
            "</text>\n",
            ML + (W - ML - MR) / 2, H - MB + 40, unit);
    fprintf(out, "<path d=\"M%.0f %.0f V%.0f H%.0f\" stroke=\"black\" fill=\"none\"/>\n", ML, MT,
            H - MB, W - MR);

    /* one polyline per spec, over the budgets where it fits, with its points */
    for (s = 0; s < ns; s++) {
        const char *color = mt_tune_colors[s % MT_TUNE_NCOLORS];
        const char *dash  = (s >= MT_TUNE_NCOLORS) ? " stroke-dasharray=\"5 3\"" : "";

        fprintf(out, "<polyline class=\"series\" data-policy=\"");
        mt_xml_string(t->params->specs[s], out);
        fprintf(out, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color, dash);
        for (b = 0, i = 0; b < x->num_budgets && b <= x->cutoff; b++) {
            const mt_tune_cell_t *c = mt_tune_cell(t, tr, b, s);

            if (c != NULL && c->res.fits) {
                fprintf(out, "%s%.2f,%.2f", i++ ? " " : "", PX((double)x->budgets[b] / div),
                        PY(mt_tune_overhead_pct(t, c)));
            }
        }
        fprintf(out, "\"/>\n");
        for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
            const mt_tune_cell_t *c = mt_tune_cell(t, tr, b, s);

            if (c == NULL || !c->res.fits) {
                continue;
            }
            v = mt_tune_overhead_pct(t, c);
            if (v > yhi) { /* off the scale: a triangle pointing up at the top edge */
                double px = PX((double)x->budgets[b] / div);

                fprintf(out,
                        "<path d=\"M%.2f %.2f l-4 7 h8 z\" fill=\"%s\"><title>%.1f%%</title>"
                        "</path>\n",
                        px, MT, color, v);
            } else {
                fprintf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n",
                        PX((double)x->budgets[b] / div), PY(v), color);
            }
        }
    }

    /* the best per budget (ringed) and the Pareto front (budget vs overhead, dashed steps) */
    for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
        double ov;

        if (mt_tune_row_best(t, tr, b, &ov)) {
            best[nbest].x = (double)x->budgets[b] / div;
            best[nbest].y = ov;
            fprintf(out,
                    "<circle class=\"best\" cx=\"%.2f\" cy=\"%.2f\" r=\"7\" fill=\"none\" "
                    "stroke=\"black\" stroke-width=\"1.2\"/>\n",
                    PX(best[nbest].x), PY(ov));
            nbest++;
        }
    }
    qsort(best, nbest, sizeof(*best), mt_pt_cmp);
    if (nbest > 0) {
        double lowest = best[0].y;

        fprintf(out,
                "<path class=\"pareto\" fill=\"none\" stroke=\"black\" stroke-width=\"1.5\" "
                "stroke-dasharray=\"6 4\" d=\"M%.2f %.2f",
                PX(best[0].x), PY(best[0].y));
        for (i = 1; i < nbest; i++) {
            if (best[i].y < lowest) { /* non-dominated: less overhead than any smaller budget */
                fprintf(out, " H%.2f V%.2f", PX(best[i].x), PY(best[i].y));
                lowest = best[i].y;
            }
        }
        fprintf(out, " H%.2f\"/>\n", PX(best[nbest - 1].x));
        lowest = best[0].y + 1.0;
        for (i = 0; i < nbest; i++) {
            if (best[i].y < lowest) {
                fprintf(out,
                        "<rect class=\"front\" x=\"%.2f\" y=\"%.2f\" width=\"7\" height=\"7\" "
                        "fill=\"black\" transform=\"rotate(45 %.2f %.2f)\"/>\n",
                        PX(best[i].x) - 3.5, PY(best[i].y) - 3.5, PX(best[i].x), PY(best[i].y));
                lowest = best[i].y;
            }
        }
    }
    if (!any) {
        fprintf(out,
                "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" fill=\"#d62728\">no policy "
                "fits at any budget swept</text>\n",
                ML + (W - ML - MR) / 2, MT + (H - MT - MB) / 2);
    }

    /* legend, right of the plot */
    fprintf(out, "<g font-size=\"12\">\n");
    for (s = 0; s < ns; s++) {
        double y = MT + 8 + 20.0 * (double)s;

        fprintf(out,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/><text x=\"%.0f\" y=\"%.0f\">",
                W - MR + 20, y, W - MR + 44, y, mt_tune_colors[s % MT_TUNE_NCOLORS],
                (s >= MT_TUNE_NCOLORS) ? " stroke-dasharray=\"5 3\"" : "", W - MR + 50, y + 4);
        mt_xml_string(t->params->specs[s], out);
        for (b = 0; b < x->num_budgets && b <= x->cutoff; b++) {
            const mt_tune_cell_t *c = mt_tune_cell(t, tr, b, s);

            if (c != NULL && c->res.fits) {
                break;
            }
        }
        fprintf(out, "%s</text>\n",
                (b < x->num_budgets && b <= x->cutoff) ? "" : " (fits at no budget)");
    }
    v = MT + 8 + 20.0 * (double)ns + 10;
    fprintf(out,
            "<circle cx=\"%.0f\" cy=\"%.0f\" r=\"7\" fill=\"none\" stroke=\"black\"/>"
            "<text x=\"%.0f\" y=\"%.0f\">lowest overhead at a budget</text>\n",
            W - MR + 32, v, W - MR + 50, v + 4);
    v += 20;
    fprintf(out,
            "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\" "
            "stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>"
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"7\" height=\"7\" fill=\"black\" "
            "transform=\"rotate(45 %.0f %.0f)\"/><text x=\"%.0f\" y=\"%.0f\">Pareto front "
            "(budget, overhead)</text>\n",
            W - MR + 20, v, W - MR + 44, v, W - MR + 28.5, v - 3.5, W - MR + 32, v, W - MR + 50,
            v + 4);
    fprintf(out, "</g>\n</svg>\n");
#undef PX
#undef PY
    free(best);
    return ferror(out) ? MEMSVC_ERR_IO : MEMSVC_OK;
}
