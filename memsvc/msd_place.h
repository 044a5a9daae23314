/* msd_place.h - where a node's replicas go: Gemini's group placement, shared by memsvcd's
 * replication and memtrace cluster's model of it */
#ifndef MSD_PLACE_H
#define MSD_PLACE_H

#include <stdint.h>

/*
 * Nodes in groups of replicas + 1 consecutive nodes (the last group takes the remainder), each
 * node's copies on the next `replicas` nodes of its group, round the group (Wang et al.,
 * "GEMINI", SOSP 2023, section 4). out gets min(replicas, group size - 1) nodes; returns that
 * count. nodes >= 1.
 */
static inline uint32_t msd_place_group(uint32_t nodes, uint32_t replicas, uint32_t node,
                                       uint32_t *out)
{
    uint32_t g      = replicas + 1;
    uint32_t groups = (nodes / g > 0) ? nodes / g : 1;
    uint32_t gi     = (node / g < groups) ? node / g : groups - 1;
    uint32_t start  = gi * g;
    uint32_t size   = (gi == groups - 1) ? nodes - start : g;
    uint32_t k, n = 0;

    for (k = 1; (k < size) && (k <= replicas); k++) {
        out[n++] = start + (node - start + k) % size;
    }
    return n;
}

#endif /* MSD_PLACE_H */
