/* fuzz_proto.c - libFuzzer target for the wire decoder (requests, replies, STATS/LIST/PEERS
 * bodies) */
#include "client/msp_proto.h"

#include <stdlib.h>
#include <string.h>

static msp_req_t      reqs[MSP_BATCH_MAX], again[MSP_BATCH_MAX];
static msp_rep_t      reps[MSP_BATCH_MAX];
static msp_tensor_t   tensors[MSP_LIST_MAX];
static memsvc_stats_t stats;
static memsvc_peer_info_t    peers[MSP_PEERS_MAX];
static memsvc_cluster_info_t cluster;
static uint8_t        wire[MSP_HEADER_MAX];

/* A request that decoded must survive an encode/decode round trip unchanged. */
static void check_round_trip(size_t n)
{
    msp_buf_t buf = {wire, sizeof(wire), 0, false};
    size_t    i, m, k = 0;
    msp_req_t good[MSP_BATCH_MAX];

    for (i = 0; i < n; i++) {
        if (reqs[i].status == MEMSVC_OK) {
            good[k++] = reqs[i];
        }
    }
    if ((k == 0) || (msp_encode_requests(good, k, &buf) != MEMSVC_OK)) {
        return;
    }
    if (msp_decode_requests(wire, buf.len, again, MSP_BATCH_MAX, &m) != MEMSVC_OK) {
        abort();
    }
    if (m != k) {
        abort();
    }
    for (i = 0; i < k; i++) {
        /* Alone, a payload op was fine; batched again it may not be: only compare ids/ops. */
        if ((again[i].id != good[i].id) || (again[i].op != good[i].op)) {
            abort();
        }
        if ((again[i].status == MEMSVC_OK) && (good[i].op == MSP_OP_ALLOC) &&
            (strcmp(again[i].u.alloc.key, good[i].u.alloc.key) != 0 ||
             again[i].u.alloc.size != good[i].u.alloc.size)) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t   n;
    uint32_t count;

    if (msp_decode_requests(data, size, reqs, MSP_BATCH_MAX, &n) == MEMSVC_OK) {
        if ((n == 0) || (n > MSP_BATCH_MAX)) {
            abort();
        }
        check_round_trip(n);
    }
    (void)msp_decode_replies(data, size, reps, MSP_BATCH_MAX, &n);
    (void)msp_decode_stats(data, size, &stats);
    if ((msp_decode_list(data, size, tensors, MSP_LIST_MAX, &count) == MEMSVC_OK) &&
        (count > MSP_LIST_MAX)) {
        abort();
    }
    if ((msp_decode_peers(data, size, &cluster, peers, MSP_PEERS_MAX, &count) == MEMSVC_OK) &&
        (count > MSP_PEERS_MAX)) {
        abort();
    }
    return 0;
}
