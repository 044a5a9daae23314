/* msp_ucx.c - UCX helpers shared by libmemsvc and memsvcd: addresses, transport names, time */
#include "client/msp_ucx.h"

#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

memsvc_status_t msp_parse_addr(const char *addr, struct sockaddr_storage *ss_p, socklen_t *len_p)
{
    struct addrinfo hints = {0}, *res = NULL;
    char            host[256];
    const char     *colon, *port;
    size_t          hlen;

    if ((addr == NULL) || (*addr == '\0')) {
        return MEMSVC_ERR_PARSE;
    }
    if (addr[0] == '[') { /* [v6]:port */
        const char *close = strchr(addr, ']');

        if ((close == NULL) || (close[1] != ':')) {
            return MEMSVC_ERR_PARSE;
        }
        hlen = (size_t)(close - addr - 1);
        if (hlen >= sizeof(host)) {
            return MEMSVC_ERR_PARSE;
        }
        memcpy(host, addr + 1, hlen);
        port = close + 2;
    } else {
        colon = strrchr(addr, ':');
        if (colon == NULL) {
            return MEMSVC_ERR_PARSE;
        }
        hlen = (size_t)(colon - addr);
        if ((hlen == 0) || (hlen >= sizeof(host))) {
            return MEMSVC_ERR_PARSE;
        }
        memcpy(host, addr, hlen);
        port = colon + 1;
    }
    host[hlen] = '\0';
    if ((*port == '\0') || (strspn(port, "0123456789") != strlen(port)) || (atol(port) > 65535)) {
        return MEMSVC_ERR_PARSE;
    }
    hints.ai_family   = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if ((getaddrinfo(host, port, &hints, &res) != 0) || (res == NULL)) {
        return MEMSVC_ERR_PARSE;
    }
    memset(ss_p, 0, sizeof(*ss_p));
    memcpy(ss_p, res->ai_addr, res->ai_addrlen);
    *len_p = res->ai_addrlen;
    freeaddrinfo(res);
    return MEMSVC_OK;
}

void msp_ep_transport(ucp_ep_h ep, char *buf, size_t len)
{
    char  *text = NULL, *line, *save = NULL;
    size_t tlen = 0, used = 0;
    FILE  *f;

    snprintf(buf, len, "unknown");
    f = open_memstream(&text, &tlen);
    if (f == NULL) {
        return;
    }
    ucp_ep_print_info(ep, f);
    fclose(f);
    buf[0] = '\0';
    /* Lines look like "lane[1]:  1:tcp/lo.0 md[1]  -> md[1]/tcp/sysdev[255] rma_bw#0 am ..." */
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char *lane = strstr(line, "lane[");
        char *tl, *end;
        bool  am;

        if ((lane == NULL) || (strstr(line, "->") == NULL)) {
            continue;
        }
        tl = strchr(lane + 5, ':');
        if (tl == NULL) {
            continue;
        }
        tl = strchr(tl + 1, ':');
        if (tl == NULL) {
            continue;
        }
        tl++;
        end = tl + strcspn(tl, " \t");
        am  = (strstr(end, " am") != NULL);
        if (used + (size_t)(end - tl) + 8 >= len) {
            break;
        }
        used += (size_t)snprintf(buf + used, len - used, "%s%.*s%s", (used > 0) ? "," : "",
                                 (int)(end - tl), tl, am ? "(am)" : "");
    }
    if (used == 0) {
        snprintf(buf, len, "unknown");
    }
    free(text);
}

uint64_t msp_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

memsvc_status_t msp_from_ucs(ucs_status_t status)
{
    switch (status) {
    case UCS_OK:
        return MEMSVC_OK;
    case UCS_INPROGRESS:
        return MEMSVC_INPROGRESS;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
        return MEMSVC_ERR_NO_RESOURCE;
    case UCS_ERR_TIMED_OUT:
        return MEMSVC_ERR_TIMEOUT;
    case UCS_ERR_CANCELED:
        return MEMSVC_ERR_CANCELED;
    case UCS_ERR_UNSUPPORTED:
        return MEMSVC_ERR_UNSUPPORTED;
    case UCS_ERR_INVALID_PARAM:
        return MEMSVC_ERR_INVALID_PARAM;
    default:
        return MEMSVC_ERR_TRANSPORT;
    }
}

ucs_status_t msp_ucx_am_handler(ucp_worker_h worker, unsigned id, ucp_am_recv_callback_t cb,
                                void *arg)
{
    ucp_am_handler_param_t am = {
        .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
        .id    = id,
        .cb    = cb,
        .arg   = arg,
        .flags = UCP_AM_FLAG_WHOLE_MSG};

    return ucp_worker_set_am_recv_handler(worker, &am);
}
