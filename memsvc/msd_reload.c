/* msd_reload.c - SIGHUP: re-read the configuration and apply what can change while running */
#include "memsvc/msd.h"

#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#define MSD_LOG_COMP "reload"
#include "memsvc/msd_log.h"

void msd_reload(msd_server_t *srv, const msd_config_t *cfg)
{
    const msd_config_t *cur     = &srv->cfg;
    unsigned            changed = 0;

    if (cfg->log_level != (int)msd_log_get_level()) {
        LOG("log level: %s -> %s", msd_log_level_name(msd_log_get_level()),
            msd_log_level_name((msd_log_level_t)cfg->log_level));
        msd_log_set_level((msd_log_level_t)cfg->log_level);
        changed++;
    }
    msd_lock(srv); /* both are read under the engine lock */
    if (cfg->keep_durable_ns != cur->keep_durable_ns) {
        LOG("keep-durable: %.0f s -> %.0f s (for sessions that end from now on)",
            (double)cur->keep_durable_ns / 1e9, (double)cfg->keep_durable_ns / 1e9);
        srv->cfg.keep_durable_ns = cfg->keep_durable_ns;
        changed++;
    }
    if (cfg->spin_ns != cur->spin_ns) {
        LOG("spin-us: %.0f -> %.0f", (double)cur->spin_ns / 1e3, (double)cfg->spin_ns / 1e3);
        srv->cfg.spin_ns = cfg->spin_ns;
        srv->spin_ns     = cfg->spin_ns;
        changed++;
    }
    /* The limits (docs/daemon.md, "Limits"): for what is asked from now on; a session already
     * over a lowered bound drains to it, nothing is taken back. */
    if (memcmp(&cfg->quota, &srv->jobs.quota, sizeof(cfg->quota)) != 0) {
        LOG("job-quota: changed (hbm %llu, host %llu, disk %llu, tensors %llu, in flight %llu; "
            "0: unlimited)",
            (unsigned long long)cfg->quota.hbm, (unsigned long long)cfg->quota.host,
            (unsigned long long)cfg->quota.disk, (unsigned long long)cfg->quota.tensors,
            (unsigned long long)cfg->quota.inflight);
        srv->jobs.quota = cfg->quota;
        srv->cfg.quota  = cfg->quota;
        changed++;
    }
#define RELOAD_LIMIT(field, name)                                                                  \
    if (cfg->field != cur->field) {                                                                \
        LOG("%s: %llu -> %llu", name, (unsigned long long)cur->field,                              \
            (unsigned long long)cfg->field);                                                       \
        srv->cfg.field = cfg->field;                                                               \
        changed++;                                                                                 \
    }
    RELOAD_LIMIT(session_inflight, "session-inflight (bytes)")
    RELOAD_LIMIT(session_queue, "session-queue")
    RELOAD_LIMIT(max_sessions, "max-sessions")
    RELOAD_LIMIT(handshake_timeout_ns, "handshake-timeout (ns)")
#undef RELOAD_LIMIT
    srv->metrics.reloads++;
    msd_unlock(srv);
    if ((cfg->no_unix != cur->no_unix) || (cfg->no_map != cur->no_map) ||
        (cfg->poll != cur->poll) || (cfg->allow_remote != cur->allow_remote) ||
        (cfg->local_loops != 0 && cfg->local_loops != cur->local_loops) ||
        (cfg->log_target != cur->log_target)) {
        LOG_WARN("reload: --no-unix, --no-map, --poll, --allow-remote, --loops and --log-target "
                 "take effect at the next start, not now");
    }
    LOG("configuration reloaded: %u setting(s) changed", changed);
    sd_notifyf(0, "STATUS=serving on %s; configuration reloaded", cur->listen);
}

void msd_reload_signal(msd_server_t *srv)
{
    msd_config_t cfg;

    LOG("SIGHUP: reloading the configuration");
    if (srv->cfg.reread == NULL) {
        LOG_WARN("nothing to reload from (no configuration source)");
        return;
    }
    memset(&cfg, 0, sizeof(cfg));
    sd_notify(0, "RELOADING=1");
    if (!srv->cfg.reread(srv->cfg.reread_arg, &cfg)) {
        LOG_ERR("reload failed (see above): the configuration in use is unchanged");
        sd_notify(0, "READY=1");
        return;
    }
    msd_reload(srv, &cfg);
    sd_notify(0, "READY=1");
}
