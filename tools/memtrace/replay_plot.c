/* replay_plot.c - memtrace replay --plot: bounded memory samples and a hand-written SVG of them */
#include "tools/memtrace/replay.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * Each device keeps at most MT_REPLAY_PLOT_MAX samples. A sample stands for a bucket of
 * simulated time and holds the largest total seen in it (peaks survive downsampling). When
 * the buffer fills, neighbouring buckets merge and the bucket width doubles, so memory stays
 * bounded whatever the trace length. Stalls are kept the same way (merged ones add up).
 */

typedef struct mt_sample {
    sim_time_t t;
    uint64_t   bytes[MEMSVC_KIND_COUNT];
} mt_sample_t;

typedef struct mt_stall {
    sim_time_t t, len;
} mt_stall_t;

typedef struct mt_series {
    mt_sample_t s[MT_REPLAY_PLOT_MAX];
    size_t      n;
    sim_time_t  width; /* bucket width, ns */
    mt_stall_t  st[MT_REPLAY_PLOT_MAX];
    size_t      nst;
    sim_time_t  st_width;
} mt_series_t;

struct mt_replay_timeline {
    mt_series_t *dev[SIM_MAX_NPUS]; /* created on first sample */
};

mt_replay_timeline_t *mt_timeline_create(void)
{
    return calloc(1, sizeof(mt_replay_timeline_t));
}

void mt_timeline_destroy(mt_replay_timeline_t *tl)
{
    unsigned d;

    if (tl == NULL) {
        return;
    }
    for (d = 0; d < SIM_MAX_NPUS; d++) {
        free(tl->dev[d]);
    }
    free(tl);
}

static mt_series_t *mt_series(mt_replay_timeline_t *tl, unsigned dev)
{
    if (dev >= SIM_MAX_NPUS) {
        return NULL;
    }
    if (tl->dev[dev] == NULL) {
        tl->dev[dev] = calloc(1, sizeof(mt_series_t));
        if (tl->dev[dev] != NULL) {
            tl->dev[dev]->width    = 1;
            tl->dev[dev]->st_width = 1;
        }
    }
    return tl->dev[dev];
}

static uint64_t mt_total(const mt_sample_t *s)
{
    uint64_t sum = 0;
    int      k;

    for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
        sum += s->bytes[k];
    }
    return sum;
}

void mt_timeline_sample(mt_replay_timeline_t *tl, unsigned dev, sim_time_t t,
                        const uint64_t bytes_by_kind[MEMSVC_KIND_COUNT])
{
    mt_series_t *s = mt_series(tl, dev);
    mt_sample_t  x;
    size_t       i;

    if (s == NULL) {
        return;
    }
    x.t = t;
    memcpy(x.bytes, bytes_by_kind, sizeof(x.bytes));
    if (s->n > 0 && t < s->s[s->n - 1].t + s->width) {
        if (mt_total(&x) >= mt_total(&s->s[s->n - 1])) {
            memcpy(s->s[s->n - 1].bytes, x.bytes, sizeof(x.bytes)); /* same bucket: keep the max */
        }
        return;
    }
    if (s->n == MT_REPLAY_PLOT_MAX) {
        for (i = 0; i < MT_REPLAY_PLOT_MAX / 2; i++) {
            const mt_sample_t *a = &s->s[2 * i], *b = &s->s[2 * i + 1];

            mt_sample_t m = (mt_total(b) > mt_total(a)) ? *b : *a;

            m.t     = a->t; /* the merged bucket starts where the first did */
            s->s[i] = m;
        }
        s->n     = MT_REPLAY_PLOT_MAX / 2;
        s->width = 2 * ((t - s->s[0].t) / MT_REPLAY_PLOT_MAX + 1);
    }
    s->s[s->n++] = x;
}

void mt_timeline_stall(mt_replay_timeline_t *tl, unsigned dev, sim_time_t t, sim_time_t len)
{
    mt_series_t *s = mt_series(tl, dev);
    size_t       i;

    if (s == NULL || len == 0) {
        return;
    }
    if (s->nst > 0 && t < s->st[s->nst - 1].t + s->st_width) {
        s->st[s->nst - 1].len += len;
        return;
    }
    if (s->nst == MT_REPLAY_PLOT_MAX) {
        for (i = 0; i < MT_REPLAY_PLOT_MAX / 2; i++) {
            s->st[i].t   = s->st[2 * i].t;
            s->st[i].len = s->st[2 * i].len + s->st[2 * i + 1].len;
        }
        s->nst      = MT_REPLAY_PLOT_MAX / 2;
        s->st_width = 2 * ((t - s->st[0].t) / MT_REPLAY_PLOT_MAX + 1);
    }
    s->st[s->nst++] = (mt_stall_t){t, len};
}

/* ---- SVG --------------------------------------------------------------------------------------
 */

#define W 1000.0
#define H 520.0
#define ML 80.0 /* margins: left, right, top, bottom */
#define MR 30.0
#define MT 50.0
#define MB 70.0

static const char *const mt_kind_color[MEMSVC_KIND_COUNT] = {
    "#4e79a7", /* param */
    "#f28e2b", /* grad */
    "#59a14f", /* optim */
    "#b07aa1", /* activation */
    "#9c9c9c", /* workspace */
};

/* A "nice" tick step (1, 2 or 5 times a power of ten of `unit`) for about `n` ticks over span. */
static double mt_nice_step(double span, int n)
{
    double raw = span / n, p = pow(10.0, floor(log10(raw))), m = raw / p;

    return p * ((m <= 1.0) ? 1.0 : (m <= 2.0) ? 2.0 : (m <= 5.0) ? 5.0 : 10.0);
}

static void mt_time_unit(sim_time_t span, const char **name_p, double *div_p)
{
    if (span >= 10000000000ull) {
        *name_p = "s";
        *div_p  = 1e9;
    } else if (span >= 10000000ull) {
        *name_p = "ms";
        *div_p  = 1e6;
    } else if (span >= 10000ull) {
        *name_p = "us";
        *div_p  = 1e3;
    } else {
        *name_p = "ns";
        *div_p  = 1.0;
    }
}

static void mt_size_unit(uint64_t span, const char **name_p, double *div_p)
{
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int                      i       = 0;
    double                   div     = 1.0;

    while (i < 5 && (double)span >= 2.0 * div * 1024.0) {
        div *= 1024.0;
        i++;
    }
    *name_p = names[i];
    *div_p  = div;
}

void mt_xml_string(const char *s, FILE *out)
{
    for (; *s != '\0'; s++) {
        if (*s == '<') {
            fputs("&lt;", out);
        } else if (*s == '>') {
            fputs("&gt;", out);
        } else if (*s == '&') {
            fputs("&amp;", out);
        } else if (*s == '"') {
            fputs("&quot;", out);
        } else {
            fputc(*s, out);
        }
    }
}

/* One device's panel, H high, its top at y0: stacked kinds, axes, capacity, stalls, legend. */
static void mt_plot_panel(const mt_replay_report_t *r, unsigned dev, const mt_series_t *s,
                          double y0, FILE *out)
{
    const char        *tu, *su;
    double             tdiv, sdiv, xs, ys, step, v;
    sim_time_t         tmax;
    uint64_t           ymax = 0, cap, peak = 0;
    bool               cap_on_scale;
    size_t             i;
    int                k;
    char               b1[32];

    cap  = r->devs[dev].capacity;
    tmax = (r->total_ns > s->s[s->n - 1].t) ? r->total_ns : s->s[s->n - 1].t;
    if (tmax == 0) {
        tmax = 1;
    }
    for (i = 0; i < s->n; i++) {
        if (mt_total(&s->s[i]) > peak) {
            peak = mt_total(&s->s[i]);
        }
    }
    cap_on_scale = (cap > 0 && cap <= 4 * (peak ? peak : 1));
    ymax         = cap_on_scale ? (peak > cap ? peak : cap) : peak;
    ymax         = ymax + ymax / 20 + 1;
    mt_time_unit(tmax, &tu, &tdiv);
    mt_size_unit(ymax, &su, &sdiv);
    xs = (W - ML - MR) / (double)tmax;
    ys = (H - MT - MB) / (double)ymax;

    fprintf(out, "<g transform=\"translate(0 %.0f)\">\n", y0);
    fprintf(out, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">Device memory of npu%u: ", ML, dev);
    fprintf(out, "policy ");
    mt_xml_string(r->policy, out);
    fprintf(out, ", node ");
    mt_xml_string(r->node, out); /* from the trace header: escaped like everything else */
    fprintf(out, ", HBM %s%s</text>\n", sim_format_size(cap, b1, sizeof(b1)),
            dev == r->busiest ? " (the busiest)" : "");

    /* stacked areas, bottom (param) to top (workspace), as step functions */
    for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
        fprintf(out, "<path fill=\"%s\" stroke=\"none\" d=\"", mt_kind_color[k]);
        for (i = 0; i < s->n; i++) {
            uint64_t top = 0;
            int      j;
            double   x0 = ML + xs * (double)s->s[i].t;
            double   x1 = ML + xs * (double)((i + 1 < s->n) ? s->s[i + 1].t : tmax);

            for (j = 0; j <= k; j++) {
                top += s->s[i].bytes[j];
            }
            fprintf(out, "%s%.2f %.2f L%.2f %.2f ", i ? "L" : "M", x0, H - MB - ys * (double)top,
                    x1, H - MB - ys * (double)top);
        }
        for (i = s->n; i-- > 0;) {
            uint64_t bot = 0;
            int      j;
            double   x0 = ML + xs * (double)s->s[i].t;
            double   x1 = ML + xs * (double)((i + 1 < s->n) ? s->s[i + 1].t : tmax);

            for (j = 0; j < k; j++) {
                bot += s->s[i].bytes[j];
            }
            fprintf(out, "L%.2f %.2f L%.2f %.2f ", x1, H - MB - ys * (double)bot, x0,
                    H - MB - ys * (double)bot);
        }
        fprintf(out, "Z\"/>\n");
    }

    /* axes, ticks, grid */
    fprintf(out, "<g stroke=\"black\" fill=\"none\"><path d=\"M%.0f %.0f V%.0f H%.0f\"/></g>\n", ML,
            MT, H - MB, W - MR);
    step = mt_nice_step((double)tmax / tdiv, 8);
    for (v = 0.0; v <= (double)tmax / tdiv + 1e-9; v += step) {
        double x = ML + xs * v * tdiv;

        fprintf(out,
                "<line x1=\"%.2f\" y1=\"%.0f\" x2=\"%.2f\" y2=\"%.0f\" stroke=\"black\"/>"
                "<text x=\"%.2f\" y=\"%.0f\" text-anchor=\"middle\">%g</text>\n",
                x, H - MB, x, H - MB + 5, x, H - MB + 19, v);
    }
    fprintf(out, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">simulated time (%s)</text>\n",
            ML + (W - ML - MR) / 2, H - MB + 38, tu);
    step = mt_nice_step((double)ymax / sdiv, 6);
    for (v = 0.0; v <= (double)ymax / sdiv + 1e-9; v += step) {
        double y = H - MB - ys * v * sdiv;

        fprintf(out,
                "<line x1=\"%.0f\" y1=\"%.2f\" x2=\"%.0f\" y2=\"%.2f\" stroke=\"#dddddd\"/>"
                "<text x=\"%.0f\" y=\"%.2f\" text-anchor=\"end\">%g</text>\n",
                ML, y, W - MR, y, ML - 6, y + 4, v);
    }
    fprintf(out,
            "<text transform=\"translate(22 %.0f) rotate(-90)\" text-anchor=\"middle\">"
            "device memory (%s)</text>\n",
            MT + (H - MT - MB) / 2, su);

    /* HBM capacity */
    if (cap_on_scale) {
        double y = H - MB - ys * (double)cap;

        fprintf(out,
                "<line x1=\"%.0f\" y1=\"%.2f\" x2=\"%.0f\" y2=\"%.2f\" stroke=\"black\" "
                "stroke-dasharray=\"6 4\" stroke-width=\"1.5\"/>\n",
                ML, y, W - MR, y);
        fprintf(out, "<text x=\"%.0f\" y=\"%.2f\" text-anchor=\"end\">HBM capacity %s</text>\n",
                W - MR - 4, y - 4, sim_format_size(cap, b1, sizeof(b1)));
    }

    /* stalls: red ticks under the axis, as wide as the stall (at least 1 px) */
    for (i = 0; i < s->nst; i++) {
        double x1 = ML + xs * (double)s->st[i].t;
        double w  = xs * (double)s->st[i].len;

        if (w < 1.0) {
            w = 1.0;
        }
        fprintf(out,
                "<rect x=\"%.2f\" y=\"%.0f\" width=\"%.2f\" height=\"10\" fill=\"#d62728\"/>\n",
                x1 - w, H - MB - 10, w);
    }

    /* legend */
    fprintf(out, "<g font-size=\"12\">\n");
    for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
        double x = ML + 10 + 115.0 * k;

        fprintf(out,
                "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/>"
                "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                x, H - 22, mt_kind_color[k], x + 16, H - 12, memsvc_kind_name((memsvc_kind_t)k));
    }
    fprintf(out,
            "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"#d62728\"/>"
            "<text x=\"%.0f\" y=\"%.0f\">stall</text>\n",
            ML + 10 + 115.0 * MEMSVC_KIND_COUNT, H - 22, ML + 26 + 115.0 * MEMSVC_KIND_COUNT,
            H - 12);
    if (!cap_on_scale) {
        fprintf(out, "<text x=\"%.0f\" y=\"%.0f\">HBM capacity %s (off scale)</text>\n",
                ML + 10 + 115.0 * (MEMSVC_KIND_COUNT + 1), H - 12,
                sim_format_size(cap, b1, sizeof(b1)));
    } else {
        fprintf(out,
                "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\" "
                "stroke-dasharray=\"6 4\"/><text x=\"%.0f\" y=\"%.0f\">HBM capacity</text>\n",
                ML + 10 + 115.0 * (MEMSVC_KIND_COUNT + 1), H - 16,
                ML + 34 + 115.0 * (MEMSVC_KIND_COUNT + 1), H - 16,
                ML + 40 + 115.0 * (MEMSVC_KIND_COUNT + 1), H - 12);
    }
    fprintf(out, "</g>\n</g>\n");
}

/*
 * Every device that held memory, one panel each in device order (the busiest is marked in its
 * title), so that an imbalance between devices shows.
 */
memsvc_status_t mt_replay_plot_svg(const mt_replay_report_t *r, FILE *out)
{
    unsigned d, n = 0, i = 0;

    if (r->timeline == NULL) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    for (d = 0; d < SIM_MAX_NPUS; d++) {
        n += (r->timeline->dev[d] != NULL && r->timeline->dev[d]->n > 0);
    }
    if (n == 0) {
        return MEMSVC_ERR_INVALID_PARAM;
    }
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H * n, W, H * n);
    fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    for (d = 0; d < SIM_MAX_NPUS; d++) {
        if (r->timeline->dev[d] != NULL && r->timeline->dev[d]->n > 0) {
            mt_plot_panel(r, d, r->timeline->dev[d], H * i++, out);
        }
    }
    fprintf(out, "</svg>\n");
    return ferror(out) ? MEMSVC_ERR_IO : MEMSVC_OK;
}
