/* eng_declog.c - the decision log: each move a policy asks for, with its reason, ring + counters */
#include "memsvc/eng_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const eng_dl_action_names[POL_ACTION_COUNT] = {
    [POL_ACTION_SWAP_OUT] = "swap_out",
    [POL_ACTION_DROP]     = "drop",
    [POL_ACTION_PREFETCH] = "prefetch",
    [POL_ACTION_SPILL]    = "spill",
};

/* Reason 0 is "unspecified"; the last slot collects classes beyond the table. */
#define ENG_DL_UNSPECIFIED "unspecified"
#define ENG_DL_OTHER "other"

const char *pol_action_name(pol_action_t action)
{
    return ((unsigned)action < POL_ACTION_COUNT) ? eng_dl_action_names[action] : "unknown";
}

static const char *eng_dl_reason_name(const eng_dl_t *dl, unsigned r)
{
    if (r == 0 || r >= dl->num_reasons + 1) {
        return (r == ENG_DL_REASONS - 1) ? ENG_DL_OTHER : ENG_DL_UNSPECIFIED;
    }
    return dl->reasons[r];
}

/* Index of a reason class, adding it on first use (1..ENG_DL_REASONS-2; the last is "other"). */
static unsigned eng_dl_reason(eng_dl_t *dl, const char *reason)
{
    unsigned r;

    if (reason == NULL || reason[0] == '\0') {
        return 0;
    }
    for (r = 1; r <= dl->num_reasons; r++) {
        if (dl->reasons[r] == reason || strcmp(dl->reasons[r], reason) == 0) {
            return r;
        }
    }
    if (dl->num_reasons + 1 >= ENG_DL_REASONS - 1) {
        return ENG_DL_REASONS - 1;
    }
    dl->reasons[r] = strdup(reason);
    if (dl->reasons[r] == NULL) {
        return ENG_DL_REASONS - 1;
    }
    dl->num_reasons++;
    return r;
}

void pol_set_reason(pol_ctx_t *ctx, const char *reason, const char *fmt, ...)
{
    eng_dl_t *dl = &ctx->eng->dl;
    va_list   ap;

    dl->cur_reason    = eng_dl_reason(dl, reason);
    dl->cur_detail[0] = '\0';
    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(dl->cur_detail, sizeof(dl->cur_detail), fmt, ap);
        va_end(ap);
    }
}

void eng_dl_enter(eng_t *eng, eng_dl_saved_t *saved)
{
    eng_dl_t *dl = &eng->dl;

    saved->reason = dl->cur_reason;
    memcpy(saved->detail, dl->cur_detail, strlen(dl->cur_detail) + 1);
    dl->cur_reason    = 0;
    dl->cur_detail[0] = '\0';
}

void eng_dl_leave(eng_t *eng, const eng_dl_saved_t *saved)
{
    eng_dl_t *dl = &eng->dl;

    dl->cur_reason = saved->reason;
    memcpy(dl->cur_detail, saved->detail, strlen(saved->detail) + 1);
}

memsvc_status_t eng_decision_log_size(eng_t *eng, size_t entries)
{
    eng_dl_t     *dl   = &eng->dl;
    eng_dl_rec_t *ring = NULL;

    if (entries > 0) {
        ring = calloc(entries, sizeof(*ring));
        if (ring == NULL) {
            return MEMSVC_ERR_NO_RESOURCE;
        }
    }
    free(dl->ring);
    dl->ring  = ring;
    dl->cap   = entries;
    dl->head  = 0;
    dl->n     = 0;
    dl->sized = true;
    return MEMSVC_OK;
}

void eng_dl_record(eng_t *eng, pol_action_t action, const eng_tensor_t *t, memsvc_status_t status)
{
    eng_dl_t     *dl = &eng->dl;
    bool          ok = (status == MEMSVC_OK || status == MEMSVC_INPROGRESS);
    eng_dl_rec_t *rec;

    dl->total++;
    if (ok) {
        dl->count[dl->cur_reason][action]++;
        dl->bytes[dl->cur_reason][action] += t->pub.size;
    } else {
        dl->refused[dl->cur_reason][action]++;
    }
    if (!dl->sized) {
        eng_decision_log_size(eng, ENG_DL_DEFAULT_CAP); /* on failure: counters only */
        dl->sized = true;
    }
    if (dl->cap == 0) {
        return;
    }
    rec         = &dl->ring[dl->head];
    dl->head    = (dl->head + 1) % dl->cap;
    dl->n       = (dl->n < dl->cap) ? dl->n + 1 : dl->cap;
    rec->time   = sim_clock_now(eng->clock);
    rec->handle = t->pub.handle;
    rec->bytes  = t->pub.size;
    rec->job    = t->pub.job;
    rec->device = t->pub.device;
    rec->action = (uint8_t)action;
    rec->reason = (uint8_t)dl->cur_reason;
    rec->status = status;
    memcpy(rec->detail, dl->cur_detail, strlen(dl->cur_detail) + 1);
    memcpy(rec->key, t->key, strlen(t->key) + 1);
}

void eng_dl_cleanup(eng_t *eng)
{
    eng_dl_t *dl = &eng->dl;
    unsigned  r;

    for (r = 1; r <= dl->num_reasons; r++) {
        free(dl->reasons[r]);
    }
    free(dl->ring);
    memset(dl, 0, sizeof(*dl));
}

/* ---- readers ----------------------------------------------------------------------------------
 */

void eng_decisions(const eng_t *eng, bool (*fn)(void *arg, const eng_decision_t *d), void *arg)
{
    const eng_dl_t *dl = &eng->dl;
    eng_decision_t  d;
    size_t          i;

    for (i = 0; i < dl->n; i++) {
        const eng_dl_rec_t *rec = &dl->ring[(dl->head + dl->cap - dl->n + i) % dl->cap];

        d.time   = rec->time;
        d.handle = rec->handle;
        d.bytes  = rec->bytes;
        d.job    = rec->job;
        d.device = rec->device;
        d.action = (pol_action_t)rec->action;
        d.status = (memsvc_status_t)rec->status;
        d.key    = rec->key;
        d.reason = eng_dl_reason_name(dl, rec->reason);
        d.detail = rec->detail;
        if (!fn(arg, &d)) {
            return;
        }
    }
}

void eng_decision_counts(const eng_t *eng, bool (*fn)(void *arg, const eng_decision_count_t *c),
                         void        *arg)
{
    const eng_dl_t      *dl = &eng->dl;
    eng_decision_count_t c;
    unsigned             r, a;

    for (r = 0; r < ENG_DL_REASONS; r++) {
        for (a = 0; a < POL_ACTION_COUNT; a++) {
            if (dl->count[r][a] == 0 && dl->refused[r][a] == 0) {
                continue;
            }
            c.reason  = eng_dl_reason_name(dl, r);
            c.action  = (pol_action_t)a;
            c.count   = dl->count[r][a];
            c.bytes   = dl->bytes[r][a];
            c.refused = dl->refused[r][a];
            if (!fn(arg, &c)) {
                return;
            }
        }
    }
}

uint64_t eng_decision_total(const eng_t *eng, uint64_t *overwritten_p)
{
    if (overwritten_p != NULL) {
        *overwritten_p = eng->dl.total - eng->dl.n;
    }
    return eng->dl.total;
}

/* ---- JSON ---------------------------------------------------------------------------------------
 */

typedef struct eng_json_walk {
    FILE  *out;
    size_t skip, i;
} eng_json_walk_t;

static bool eng_json_count(void *arg, const eng_decision_count_t *c)
{
    eng_json_walk_t *w = arg;

    fprintf(w->out, "%s{\"reason\":", w->i++ ? "," : "");
    memsvc_json_string(c->reason, w->out);
    fprintf(w->out,
            ",\"action\":\"%s\",\"count\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"refused\":%" PRIu64
            "}",
            pol_action_name(c->action), c->count, c->bytes, c->refused);
    return true;
}

static bool eng_json_rec(void *arg, const eng_decision_t *d)
{
    eng_json_walk_t *w = arg;

    if (w->skip > 0) {
        w->skip--;
        return true;
    }
    fprintf(w->out, "%s{\"time_ns\":%" PRIu64 ",\"action\":\"%s\",\"key\":", w->i++ ? "," : "",
            (uint64_t)d->time, pol_action_name(d->action));
    memsvc_json_string(d->key, w->out);
    fprintf(w->out, ",\"job\":%" PRIu32 ",\"device\":%u,\"bytes\":%" PRIu64 ",\"reason\":", d->job,
            d->device, d->bytes);
    memsvc_json_string(d->reason, w->out);
    fprintf(w->out, ",\"detail\":");
    memsvc_json_string(d->detail, w->out);
    fprintf(w->out, ",\"status\":\"%s\"}", memsvc_status_name(d->status));
    return true;
}

memsvc_status_t eng_decision_log_json(const eng_t *eng, FILE *out, size_t max_recent)
{
    const eng_dl_t *dl = &eng->dl;
    eng_json_walk_t w  = {.out = out};
    uint64_t        overwritten;
    uint64_t        per_action[POL_ACTION_COUNT] = {0};
    unsigned        r, a;

    fprintf(out, "{\"policy\":");
    memsvc_json_string(eng->pol_spec, out);
    fprintf(out, ",\"total\":%" PRIu64, eng_decision_total(eng, &overwritten));
    fprintf(out, ",\"overwritten\":%" PRIu64 ",\"by_action\":{", overwritten);
    for (r = 0; r < ENG_DL_REASONS; r++) {
        for (a = 0; a < POL_ACTION_COUNT; a++) {
            per_action[a] += dl->count[r][a];
        }
    }
    for (a = 0; a < POL_ACTION_COUNT; a++) {
        fprintf(out, "%s\"%s\":%" PRIu64, a ? "," : "", pol_action_name((pol_action_t)a),
                per_action[a]);
    }
    fprintf(out, "},\"by_reason\":[");
    eng_decision_counts(eng, eng_json_count, &w);
    fprintf(out, "],\"recent\":[");
    w.i    = 0;
    w.skip = (dl->n > max_recent) ? dl->n - max_recent : 0;
    eng_decisions(eng, eng_json_rec, &w);
    fprintf(out, "]}\n");
    return ferror(out) ? MEMSVC_ERR_IO : MEMSVC_OK;
}
