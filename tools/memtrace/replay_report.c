/* replay_report.c - memtrace replay's report: aligned text for people, JSON for programs */
#include "tools/memtrace/replay.h"

#include <inttypes.h>
#include <string.h>

#define RP_LABEL "%-18s"

static const char *rp_size(uint64_t bytes, char *buf, size_t len)
{
    return sim_format_size(bytes, buf, len);
}

static const char *rp_time(sim_time_t ns, char *buf, size_t len)
{
    return sim_format_time(ns, buf, len);
}

static double rp_pct(sim_time_t part, sim_time_t whole)
{
    return (whole > 0) ? 100.0 * (double)part / (double)whole : 0.0;
}

/* The largest live tensors at the device's peak of live bytes, as memory_viz lists them. */
static void rp_print_top(const mt_replay_dev_t *rd, FILE *out)
{
    char     b1[32], b2[32], layer[16];
    uint32_t t;

    if (rd->num_top == 0) {
        return;
    }
    fprintf(out, RP_LABEL "%s live in %" PRIu64 " tensors at event %" PRIu64 "; the largest %u:\n",
            "    at its peak", rp_size(rd->live_peak, b1, sizeof(b1)), rd->live_peak_tensors,
            rd->live_peak_event, rd->num_top);
    for (t = 0; t < rd->num_top; t++) {
        const mt_replay_top_t *tp = &rd->top[t];

        if (tp->layer >= 0) {
            snprintf(layer, sizeof(layer), "L%" PRId32, tp->layer);
        } else {
            snprintf(layer, sizeof(layer), "-");
        }
        fprintf(out, RP_LABEL "%10s %5.1f%%  %-10s %-5s r%" PRIu32 " %s\n", "",
                rp_size(tp->size, b2, sizeof(b2)),
                rd->live_peak ? 100.0 * (double)tp->size / (double)rd->live_peak : 0.0,
                memsvc_kind_name(tp->kind), layer, tp->rank, tp->key);
    }
}

void mt_replay_print_text(const mt_replay_report_t *r, FILE *out)
{
    char     b1[32], b2[32], b3[32], b4[32];
    unsigned d;
    size_t   i;
    int      k;

    fprintf(out, RP_LABEL "%s on %s (%u NPUs, %s HBM each), policy %s, %s memory%s\n", "replay",
            r->trace_model[0] ? r->trace_model : "trace", r->node, r->num_devices,
            rp_size(r->hbm_bytes, b1, sizeof(b1)), r->policy, sim_mem_mode_name(r->mode),
            (r->alloc == SIM_ALLOC_BYTES) ? ", bytes counted (no fragmentation)" : "");
    fprintf(out,
            RP_LABEL "%" PRIu64 " (alloc %" PRIu64 ", free %" PRIu64 ", compute %" PRIu64
                     ", access %" PRIu64 ", hint %" PRIu64 ")\n",
            "events", r->events, r->events_by_type[MT_EV_ALLOC], r->events_by_type[MT_EV_FREE],
            r->events_by_type[MT_EV_COMPUTE], r->events_by_type[MT_EV_ACCESS],
            r->events_by_type[MT_EV_HINT]);
    if (r->ignored_refs > 0 || r->renamed_keys > 0) {
        fprintf(out,
                RP_LABEL "%" PRIu64 " references to skipped or unknown tensors ignored, %" PRIu64
                         " duplicate keys renamed\n",
                "", r->ignored_refs, r->renamed_keys);
    }
    fprintf(out, RP_LABEL "%s", "simulated time", rp_time(r->total_ns, b1, sizeof(b1)));
    if (r->has_baseline) {
        fprintf(out, "  (unconstrained %s, overhead %+.2f%%)",
                rp_time(r->baseline_ns, b2, sizeof(b2)), 100.0 * r->overhead);
    }
    fprintf(out, "\n");
    fprintf(out, RP_LABEL "%-12s %5.1f%% of the time\n", "  compute",
            rp_time(r->compute_ns, b1, sizeof(b1)), rp_pct(r->compute_ns, r->total_ns));
    fprintf(out, RP_LABEL "%-12s %5.1f%%, %" PRIu64 " waits\n", "  stall",
            rp_time(r->stall_ns, b1, sizeof(b1)), rp_pct(r->stall_ns, r->total_ns), r->stalls);
    fprintf(out, RP_LABEL "%-12s %5.1f%%, %" PRIu64 " tensors\n", "  recompute",
            rp_time(r->recompute_ns, b1, sizeof(b1)), rp_pct(r->recompute_ns, r->total_ns),
            r->recomputes);
    if (r->kept_freed > 0) {
        fprintf(out,
                RP_LABEL "%" PRIu64 " freed by the program, kept for recomputation (at most %" PRIu64
                         " at once; %" PRIu64 " dropped at once)\n",
                "  kept inputs", r->kept_freed, r->kept_freed_peak, r->kept_dropped);
    }
    fprintf(out, RP_LABEL "%-12s (other streams), waited for %s\n", "  communication",
            rp_time(r->comm_ns, b1, sizeof(b1)), rp_time(r->comm_wait_ns, b2, sizeof(b2)));
    for (i = 0; i < r->num_steps; i++) {
        const mt_replay_step_t *s = &r->steps[i];
        char                    label[32];

        snprintf(label, sizeof(label), "  step %" PRId32, s->step);
        fprintf(out, RP_LABEL "%-12s compute %s, stall %s, recompute %s", label,
                rp_time(s->end - s->begin, b1, sizeof(b1)), rp_time(s->compute_ns, b2, sizeof(b2)),
                rp_time(s->stall_ns, b3, sizeof(b3)), rp_time(s->recompute_ns, b4, sizeof(b4)));
        if (s->baseline_ns > 0) {
            fprintf(out, "; unconstrained %s (%+.2f%%)", rp_time(s->baseline_ns, b1, sizeof(b1)),
                    100.0 * ((double)(s->end - s->begin) / (double)s->baseline_ns - 1.0));
        }
        fprintf(out, "\n");
    }
    fprintf(out, RP_LABEL "peak allocated %s, reserved %s (max over NPUs; busiest npu%u)\n",
            "device memory", rp_size(r->peak_allocated, b1, sizeof(b1)),
            rp_size(r->peak_reserved, b2, sizeof(b2)), r->busiest);
    for (d = 0; d < r->num_devices; d++) {
        const mt_replay_dev_t *rd = &r->devs[d];
        char                   label[32];

        if (!rd->used) {
            continue;
        }
        snprintf(label, sizeof(label), "  npu%u", d);
        fprintf(out, RP_LABEL "allocated %s, reserved %s of %s; peak by kind:", label,
                rp_size(rd->peak_allocated, b1, sizeof(b1)),
                rp_size(rd->peak_reserved, b2, sizeof(b2)), rp_size(rd->capacity, b3, sizeof(b3)));
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            fprintf(out, " %s %s", memsvc_kind_name((memsvc_kind_t)k),
                    rp_size(rd->peak_by_kind[k], b1, sizeof(b1)));
        }
        fprintf(out, "\n");
        rp_print_top(rd, out);
    }
    if (r->peer_peak > 0) {
        char bp[32];

        fprintf(out, RP_LABEL "peak %s (disk %s, peer tier %s)\n", "host memory",
                rp_size(r->host_peak, b1, sizeof(b1)), rp_size(r->disk_peak, b2, sizeof(b2)),
                rp_size(r->peer_peak, bp, sizeof(bp)));
    } else {
        fprintf(out, RP_LABEL "peak %s (disk %s)\n", "host memory",
                rp_size(r->host_peak, b1, sizeof(b1)), rp_size(r->disk_peak, b2, sizeof(b2)));
    }
    fprintf(out, RP_LABEL "out %s in %" PRIu64 " moves, in %s in %" PRIu64 " moves, spilled %s\n",
            "swapped", rp_size(r->swap_out_bytes, b1, sizeof(b1)), r->swap_outs,
            rp_size(r->swap_in_bytes, b2, sizeof(b2)), r->swap_ins,
            rp_size(r->spill_bytes, b3, sizeof(b3)));
    fprintf(out, RP_LABEL "swaps %" PRIu64 ", drops %" PRIu64 ", prefetches %" PRIu64 "\n",
            "policy decisions", r->swap_outs, r->drops, r->prefetches);
    if (r->thrashed) {
        fprintf(out, RP_LABEL "recomputation exceeded the thrash limit: the replay stopped there\n",
                "thrashing");
    }
    if (r->fits) {
        fprintf(out, RP_LABEL "none: the step fits\n", "out of memory");
    } else {
        fprintf(out, RP_LABEL "%" PRIu64 " requests failed: the step did NOT fit\n",
                "out of memory", r->oom_count);
        for (i = 0; i < r->oom_count && i < MT_REPLAY_OOM_KEEP; i++) {
            const mt_replay_oom_t *o = &r->ooms[i];

            fprintf(out,
                    RP_LABEL "%s (rank %" PRIu32 ", npu%" PRIu32
                             ") at %s: %s asked, %s short (%s)\n",
                    "", o->key, o->rank, o->device, rp_time(o->time, b1, sizeof(b1)),
                    rp_size(o->size, b2, sizeof(b2)), rp_size(o->short_bytes, b3, sizeof(b3)),
                    memsvc_status_name(o->status));
        }
        if (r->oom_count > MT_REPLAY_OOM_KEEP) {
            fprintf(out, RP_LABEL "... and %" PRIu64 " more\n", "",
                    r->oom_count - MT_REPLAY_OOM_KEEP);
        }
    }
    if (r->recorded_peak > 0 || r->unconstrained_peak > 0) {
        const char *mark;

        if (r->recorded_peak == 0) {
            mark = "(no recorded peak)";
        } else if (r->unconstrained_peak == 0) {
            mark = "(no unconstrained replay)";
        } else if (r->recorded_peak == r->unconstrained_peak) {
            mark = "\xe2\x9c\x93 reproduced";
        } else if (r->events_peak == r->unconstrained_peak) {
            mark = "\xe2\x9c\x93 = the recorded events' own peak (the recorded total also "
                   "counts memory allocated before the recording)";
        } else {
            mark = "\xe2\x9c\x97 differs";
        }
        fprintf(out, RP_LABEL "recorded %" PRIu64 " B, unconstrained replay %" PRIu64 " B %s\n",
                "peak check", r->recorded_peak, r->unconstrained_peak, mark);
    }
    if (r->model_flops > 0 && r->peak_flops > 0 && r->num_steps > 0) {
        sim_time_t t = r->has_baseline ? r->baseline_ns : r->total_ns;

        fprintf(out, RP_LABEL "%.3g model FLOPs per step and rank; MFU %.1f%% unconstrained",
                "model FLOPs", r->model_flops,
                t ? 100.0 * r->model_flops * (double)r->num_steps / (t * 1e-9 * r->peak_flops) : 0);
        if (r->has_baseline) {
            fprintf(out, ", %.1f%% here", 100.0 * r->model_flops * (double)r->num_steps /
                                              (r->total_ns * 1e-9 * r->peak_flops));
        }
        fprintf(out, " (peak %.0f TFLOPS)\n", r->peak_flops / 1e12);
    }
    fprintf(out, RP_LABEL "%.3f s wall, %.2f M events/s", "replay", r->wall_s,
            r->events_per_s / 1e6);
    if (r->has_baseline) {
        fprintf(out, " (+ %.3f s for the unconstrained replay)", r->baseline_wall_s);
    }
    fprintf(out, "\n");
}

/* ---- JSON ------------------------------------------------------------------------------------ */

void mt_replay_print_json(const mt_replay_report_t *r, FILE *out)
{
    unsigned d;
    size_t   i;
    uint32_t t;
    int      k;

    fprintf(out, "{\n  \"model\": ");
    memsvc_json_string(r->trace_model, out);
    fprintf(out, ",\n  \"node\": ");
    memsvc_json_string(r->node, out);
    fprintf(out, ",\n  \"policy\": ");
    memsvc_json_string(r->policy, out);
    fprintf(out, ",\n  \"memory\": \"%s\",\n", sim_mem_mode_name(r->mode));
    fprintf(out, "  \"alloc\": \"%s\",\n", sim_alloc_mode_name(r->alloc));
    fprintf(out, "  \"npus\": %u,\n  \"hbm_bytes\": %" PRIu64 ",\n", r->num_devices, r->hbm_bytes);
    fprintf(out, "  \"events\": %" PRIu64 ",\n", r->events);
    fprintf(out, "  \"events_by_type\": {");
    for (k = 0; k < MT_EV_COUNT; k++) {
        fprintf(out, "%s\"%s\": %" PRIu64, k ? ", " : "", mt_event_type_name((mt_event_type_t)k),
                r->events_by_type[k]);
    }
    fprintf(out, "},\n");
    fprintf(out, "  \"ignored_refs\": %" PRIu64 ",\n  \"renamed_keys\": %" PRIu64 ",\n",
            r->ignored_refs, r->renamed_keys);
    fprintf(out, "  \"step_time_ns\": %" PRIu64 ",\n", r->total_ns);
    fprintf(out,
            "  \"compute_ns\": %" PRIu64 ",\n  \"stall_ns\": %" PRIu64 ",\n  \"stalls\": %" PRIu64
            ",\n",
            r->compute_ns, r->stall_ns, r->stalls);
    fprintf(out, "  \"recompute_ns\": %" PRIu64 ",\n  \"recomputes\": %" PRIu64 ",\n",
            r->recompute_ns, r->recomputes);
    fprintf(out,
            "  \"kept_freed\": %" PRIu64 ",\n  \"kept_freed_peak\": %" PRIu64
            ",\n  \"kept_dropped\": %" PRIu64 ",\n",
            r->kept_freed, r->kept_freed_peak, r->kept_dropped);
    fprintf(out, "  \"thrashed\": %s,\n", r->thrashed ? "true" : "false");
    fprintf(out, "  \"comm_ns\": %" PRIu64 ",\n  \"comm_wait_ns\": %" PRIu64 ",\n", r->comm_ns,
            r->comm_wait_ns);
    if (r->has_baseline) {
        fprintf(out, "  \"unconstrained_step_time_ns\": %" PRIu64 ",\n  \"overhead\": %.6f,\n",
                r->baseline_ns, r->overhead);
    } else {
        fprintf(out, "  \"unconstrained_step_time_ns\": null,\n  \"overhead\": null,\n");
    }
    fprintf(out, "  \"steps\": [");
    for (i = 0; i < r->num_steps; i++) {
        const mt_replay_step_t *s = &r->steps[i];

        fprintf(out,
                "%s\n    {\"step\": %" PRId32 ", \"begin_ns\": %" PRIu64 ", \"end_ns\": %" PRIu64
                ", \"time_ns\": %" PRIu64 ", \"compute_ns\": %" PRIu64 ", \"stall_ns\": %" PRIu64
                ", \"recompute_ns\": %" PRIu64,
                i ? "," : "", s->step, s->begin, s->end, s->end - s->begin, s->compute_ns,
                s->stall_ns, s->recompute_ns);
        if (s->baseline_ns > 0) {
            fprintf(out, ", \"unconstrained_ns\": %" PRIu64 "}", s->baseline_ns);
        } else {
            fprintf(out, ", \"unconstrained_ns\": null}");
        }
    }
    fprintf(out, "%s],\n", r->num_steps ? "\n  " : "");
    fprintf(out, "  \"peak_allocated\": %" PRIu64 ",\n  \"peak_reserved\": %" PRIu64 ",\n",
            r->peak_allocated, r->peak_reserved);
    fprintf(out, "  \"busiest_npu\": %u,\n", r->busiest);
    fprintf(out, "  \"devices\": [");
    for (d = 0, i = 0; d < r->num_devices; d++) {
        const mt_replay_dev_t *rd = &r->devs[d];

        if (!rd->used) {
            continue;
        }
        fprintf(out,
                "%s\n    {\"npu\": %u, \"capacity\": %" PRIu64 ", \"peak_allocated\": %" PRIu64
                ", \"peak_reserved\": %" PRIu64 ", \"peak_by_kind\": {",
                i++ ? "," : "", d, rd->capacity, rd->peak_allocated, rd->peak_reserved);
        for (k = 0; k < MEMSVC_KIND_COUNT; k++) {
            fprintf(out, "%s\"%s\": %" PRIu64, k ? ", " : "", memsvc_kind_name((memsvc_kind_t)k),
                    rd->peak_by_kind[k]);
        }
        fprintf(out,
                "}, \"compute_ns\": %" PRIu64 ", \"stall_ns\": %" PRIu64
                ", \"recompute_ns\": %" PRIu64 ", \"recomputes\": %" PRIu64
                ", \"swap_out_bytes\": %" PRIu64 ", \"swap_outs\": %" PRIu64
                ", \"swap_in_bytes\": %" PRIu64 ", \"swap_ins\": %" PRIu64
                ", \"spill_bytes\": %" PRIu64 ", \"drops\": %" PRIu64 ", \"prefetches\": %" PRIu64
                ", \"ooms\": %" PRIu64 ", \"live_peak\": %" PRIu64
                ", \"live_peak_tensors\": %" PRIu64 ", \"live_peak_event\": %" PRIu64
                ", \"top\": [",
                rd->compute_ns, rd->stall_ns, rd->recompute_ns, rd->recomputes, rd->swap_out_bytes,
                rd->swap_outs, rd->swap_in_bytes, rd->swap_ins, rd->spill_bytes, rd->drops,
                rd->prefetches, rd->ooms, rd->live_peak, rd->live_peak_tensors,
                rd->live_peak_event);
        for (t = 0; t < rd->num_top; t++) {
            const mt_replay_top_t *tp = &rd->top[t];

            fprintf(out, "%s{\"key\": ", t ? ", " : "");
            memsvc_json_string(tp->key, out);
            fprintf(out,
                    ", \"rank\": %" PRIu32 ", \"kind\": \"%s\", \"layer\": %" PRId32
                    ", \"size\": %" PRIu64 "}",
                    tp->rank, memsvc_kind_name(tp->kind), tp->layer, tp->size);
        }
        fprintf(out, "]}");
    }
    fprintf(out, "%s],\n", i ? "\n  " : "");
    fprintf(out, "  \"host_peak\": %" PRIu64 ",\n  \"disk_peak\": %" PRIu64 ",\n", r->host_peak,
            r->disk_peak);
    fprintf(out, "  \"peer_peak\": %" PRIu64 ",\n", r->peer_peak);
    fprintf(out,
            "  \"swap_out_bytes\": %" PRIu64 ",\n  \"swap_in_bytes\": %" PRIu64
            ",\n  \"spill_bytes\": %" PRIu64 ",\n",
            r->swap_out_bytes, r->swap_in_bytes, r->spill_bytes);
    fprintf(out,
            "  \"policy_decisions\": {\"swaps\": %" PRIu64 ", \"drops\": %" PRIu64
            ", \"prefetches\": %" PRIu64 "},\n",
            r->swap_outs, r->drops, r->prefetches);
    fprintf(out, "  \"decision_log\": %s,\n",
            (r->decisions_json != NULL) ? r->decisions_json : "null");
    fprintf(out, "  \"fits\": %s,\n  \"oom_count\": %" PRIu64 ",\n  \"ooms\": [",
            r->fits ? "true" : "false", r->oom_count);
    for (i = 0; i < r->oom_count && i < MT_REPLAY_OOM_KEEP; i++) {
        const mt_replay_oom_t *o = &r->ooms[i];

        fprintf(out, "%s\n    {\"key\": ", i ? "," : "");
        memsvc_json_string(o->key, out);
        fprintf(out,
                ", \"rank\": %" PRIu32 ", \"npu\": %" PRIu32 ", \"time_ns\": %" PRIu64
                ", \"bytes\": %" PRIu64 ", \"bytes_short\": %" PRIu64 ", \"status\": \"%s\"}",
                o->rank, o->device, o->time, o->size, o->short_bytes,
                memsvc_status_name(o->status));
    }
    fprintf(out, "%s],\n", i ? "\n  " : "");
    fprintf(out, "  \"recorded_events_peak\": %" PRIu64 ",\n", r->events_peak);
    fprintf(out,
            "  \"recorded_peak\": %" PRIu64 ",\n  \"unconstrained_peak\": %" PRIu64
            ",\n  \"peak_reproduced\": %s,\n",
            r->recorded_peak, r->unconstrained_peak,
            (r->recorded_peak == 0 || r->unconstrained_peak == 0)
                ? "null"
                : (r->recorded_peak == r->unconstrained_peak ? "true" : "false"));
    fprintf(out, "  \"model_flops\": %.6e,\n  \"peak_flops\": %.6e,\n", r->model_flops,
            r->peak_flops);
    fprintf(out, "  \"wall_s\": %.6f,\n", r->wall_s);
    fprintf(out, "  \"events_per_s\": %.0f,\n", r->events_per_s);
    fprintf(out, "  \"wall_s_unconstrained\": %.6f\n}\n", r->baseline_wall_s);
}
