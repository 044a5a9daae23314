/* msp_ucx.h - UCX helpers shared by libmemsvc and memsvcd: addresses, transport names, time */
#ifndef MSP_UCX_H
#define MSP_UCX_H

#include "client/memsvc_status.h"

#include <ucp/api/ucp.h>

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Parse "HOST:PORT" (HOST may be a name, an IPv4 address or [IPv6]). MEMSVC_ERR_PARSE. */
memsvc_status_t msp_parse_addr(const char *addr, struct sockaddr_storage *ss_p, socklen_t *len_p);

/*
 * Name the transports an endpoint's lanes use, e.g. "tcp/lo" or "posix/memory,cma/memory",
 * from ucp_ep_print_info (UCX 1.13 has no structured query for it). Writes "unknown" if the
 * output cannot be parsed.
 */
void msp_ep_transport(ucp_ep_h ep, char *buf, size_t len);

/* Receive active messages of id on worker with cb(arg, ...), whole messages only
 * (UCP_AM_FLAG_WHOLE_MSG), as every worker of the client and the daemon does. */
ucs_status_t msp_ucx_am_handler(ucp_worker_h worker, unsigned id, ucp_am_recv_callback_t cb,
                                void *arg);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t msp_now_ns(void);

/* Map a UCX status to ours (peer gone, timeouts, resources). */
memsvc_status_t msp_from_ucs(ucs_status_t status);

#endif /* MSP_UCX_H */
