/* memsvc_types.h - public enumerations and small structs shared by the API, wire and engine */
#ifndef MEMSVC_TYPES_H
#define MEMSVC_TYPES_H

#include "client/memsvc_status.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a tensor is. Numeric values are part of the wire protocol and trace format. */
typedef enum memsvc_kind {
    MEMSVC_KIND_PARAM      = 0, /* model parameter (durable) */
    MEMSVC_KIND_GRAD       = 1, /* gradient */
    MEMSVC_KIND_OPTIM      = 2, /* optimizer state (durable) */
    MEMSVC_KIND_ACTIVATION = 3, /* activation kept for backward */
    MEMSVC_KIND_WORKSPACE  = 4, /* scratch */
    MEMSVC_KIND_COUNT
} memsvc_kind_t;

/* Where a tensor is. Numeric values are part of the wire protocol. */
typedef enum memsvc_state {
    MEMSVC_STATE_ON_DEVICE  = 0, /* resident in its device's HBM */
    MEMSVC_STATE_MOVING_OUT = 1, /* being copied to host (or from host to disk) */
    MEMSVC_STATE_ON_HOST    = 2, /* in the host pool */
    MEMSVC_STATE_MOVING_IN  = 3, /* becoming resident: swap-in, or waiting for room */
    MEMSVC_STATE_DROPPED    = 4, /* freed on device; its owner recomputes it when needed */
    MEMSVC_STATE_ON_DISK    = 5, /* spilled to the disk tier */
    MEMSVC_STATE_FREED      = 6, /* ended */
    MEMSVC_STATE_ON_PEER    = 7, /* in a peer daemon's host pool (the peer tier, docs/cluster.md) */
    MEMSVC_STATE_COUNT
} memsvc_state_t;

/* Training phase, for hints. */
typedef enum memsvc_phase {
    MEMSVC_PHASE_NONE      = 0,
    MEMSVC_PHASE_FORWARD   = 1,
    MEMSVC_PHASE_BACKWARD  = 2,
    MEMSVC_PHASE_OPTIMIZER = 3,
    MEMSVC_PHASE_COUNT
} memsvc_phase_t;

/* Hints a trainer gives (step, layer, phase, upcoming accesses). */
typedef enum memsvc_hint_type {
    MEMSVC_HINT_STEP_BEGIN  = 0,
    MEMSVC_HINT_STEP_END    = 1,
    MEMSVC_HINT_LAYER_BEGIN = 2,
    MEMSVC_HINT_LAYER_END   = 3,
    MEMSVC_HINT_PHASE       = 4,
    MEMSVC_HINT_UPCOMING    = 5, /* these tensors will be accessed soon */
    MEMSVC_HINT_COUNT
} memsvc_hint_type_t;

#define MEMSVC_TAG_NONE (-1)

/* Tags of a tensor; MEMSVC_TAG_NONE where not applicable. */
typedef struct memsvc_tags {
    int32_t layer;      /* transformer layer */
    int32_t microbatch; /* micro-batch within the step */
    int32_t expert;     /* MoE expert */
    int32_t stage;      /* pipeline stage (or virtual stage) */
    int32_t step;       /* training step */
} memsvc_tags_t;

#define MEMSVC_TAGS_NONE \
    ((memsvc_tags_t){MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE, MEMSVC_TAG_NONE})

#define MEMSVC_KEY_MAX 255 /* longest tensor key, bytes, without the terminating NUL */

const char *memsvc_kind_name(memsvc_kind_t kind);   /* "param", "grad", "optim", "activation", "workspace" */
const char *memsvc_state_name(memsvc_state_t state); /* "on_device", "moving_out", ... */
const char *memsvc_phase_name(memsvc_phase_t phase); /* "none", "forward", "backward", "optimizer" */
/* Parse a kind name; MEMSVC_ERR_UNKNOWN_KEY if unknown. */
memsvc_status_t memsvc_kind_parse(const char *s, memsvc_kind_t *kind_p);

#ifdef __cplusplus
}
#endif

#endif /* MEMSVC_TYPES_H */
