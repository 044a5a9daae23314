/* gen.h - synthetic per-rank traces of transformer training steps (interleaved 1F1B, MoE) */
#ifndef MT_GEN_H
#define MT_GEN_H

#include "client/memsvc_status.h"
#include "sim_npu/sim_desc.h"
#include "tools/memtrace/model.h"
#include "tools/memtrace/trace.h"

#include <stdint.h>

/* Receives each event in trace order; a non-OK return stops generation with that status. */
typedef memsvc_status_t (*mt_sink_fn_t)(void *arg, const mt_event_t *ev);

typedef struct mt_gen_params {
    const mt_model_t *model;
    mt_layout_t       layout; /* tp, pp, vpp, ep, dp, cp >= 1; microbatches per step; seq_len
                                 and micro_batch_size 0: take the model's */
    const sim_desc_t *node;   /* flops, mfu, hbm_bw, d2d (TP) and nic (EP, PP, DP) bandwidth */
    uint32_t          steps;  /* training steps to emit, >= 1 */
    uint32_t          rank;   /* global rank; tp fastest, then cp, dp, pp (Megatron order) */
    double            skew;   /* router skew: Zipf exponent over experts (0: uniform) */
    uint64_t          seed;   /* router seed */
    bool              tp_extend_ep; /* experts spread over tp*ep ranks, unsharded (MindSpeed
                                       --moe-tp-extend-ep); default: experts over ep ranks,
                                       each TP-sharded (Megatron expert TP = tp) */
    bool overlap_tp;                /* TP collectives fused with their matmuls (MC2): an
                                       operator takes the longer of compute and communication */
    bool overlap_ep;                /* shared experts run while the expert all-to-alls are in
                                       flight (Megatron --moe-shared-expert-overlap) */
    bool pipeline_waits;            /* derive the stage's waits for the other stages from the
                                       schedule (pp.wait operators: the pipeline bubbles) */
} mt_gen_params_t;

/* Fill with a 1-rank layout (all 1s, one micro-batch), one step, rank 0, no skew, seed 1,
 * pipeline waits on, and the communication overlap the model's recipe uses (model->overlap). */
void mt_gen_params_init(mt_gen_params_t *params, const mt_model_t *model, const sim_desc_t *node);

/*
 * Set the layout (and tp_extend_ep) to the one the model is published as trained with
 * (model->layout, model->tp_extend_ep); a model without one keeps the 1-rank layout.
 * MEMSVC_ERR_PARSE if the preset's layout string is malformed (message in err).
 */
memsvc_status_t mt_gen_params_default_layout(mt_gen_params_t *params, char *err, size_t errlen);

/*
 * Check the model and the layout against each other (divisibility of heads, experts, layers,
 * sequence; rank in range; vpp > 1 needs microbatches a multiple of pp).
 * MEMSVC_ERR_INVALID_PARAM with a message in err.
 */
memsvc_status_t mt_gen_validate(const mt_gen_params_t *params, char *err, size_t errlen);

/*
 * Emit the events of params->steps training steps of params->rank through sink, streaming:
 * memory used is bounded by the live tensors of one step, not by the trace length.
 * Errors: MEMSVC_ERR_INVALID_PARAM (see mt_gen_validate), MEMSVC_ERR_NO_RESOURCE, or what the
 * sink returned.
 */
memsvc_status_t mt_gen_run(const mt_gen_params_t *params, mt_sink_fn_t sink, void *arg, char *err,
                           size_t errlen);

/* Device memory of one rank over one generated step, by kind, with nothing moved. */
typedef struct mt_gen_memory {
    uint64_t params;          /* parameters held by the rank (bf16) */
    uint64_t grads;           /* fp32 main gradients at their peak (end of backward) */
    uint64_t optim;           /* ZeRO-sharded fp32 master + Adam m, v */
    uint64_t activation_peak; /* peak of live activations */
    uint64_t peak;            /* peak of all live bytes */
    uint64_t events;          /* events in the step */
    uint64_t ops;             /* COMPUTE events */
    uint64_t compute_ns;      /* sum of stream-0 operator durations */
} mt_gen_memory_t;

/* Run one step through a counting sink. Errors as mt_gen_run(). */
memsvc_status_t mt_gen_memory(const mt_gen_params_t *params, mt_gen_memory_t *mem_p, char *err,
                              size_t errlen);

/* Peak of live device bytes over all params->steps steps (what the trace header records).
 * Errors as mt_gen_run(). */
memsvc_status_t mt_gen_peak(const mt_gen_params_t *params, uint64_t *peak_p, char *err,
                            size_t errlen);

/* Parse a comma-separated overlap list ("tp", "ep", "tp,ep", "none" or "") into
 * overlap_tp / overlap_ep. MEMSVC_ERR_PARSE with a message. */
memsvc_status_t mt_gen_overlap_parse(const char *s, mt_gen_params_t *params, char *err,
                                     size_t errlen);

/*
 * Model FLOPs of one training step per rank, as MFU counts them (mt_model_flops_per_token() of
 * the whole model times the tokens of a step, dp x microbatches x micro-batch x seq, over the
 * tp x cp x dp x pp ranks): what the job does on average, not what this rank's stage does.
 */
double mt_gen_model_flops(const mt_gen_params_t *params);

/* Pipeline stage of a rank under a layout. */
uint32_t mt_gen_stage_of_rank(const mt_layout_t *layout, uint32_t rank);

/* Transformer layers [*first_p, *first_p + *count_p) of virtual stage v (chunk * pp + stage). */
void mt_gen_chunk_layers(const mt_model_t *model, const mt_layout_t *layout, uint32_t v,
                         uint32_t *first_p, uint32_t *count_p);

/* Parse "tp=8,pp=16,vpp=2,ep=4,dp=48,cp=1" into layout (other fields untouched).
 * MEMSVC_ERR_UNKNOWN_KEY or MEMSVC_ERR_PARSE with a message. */
memsvc_status_t mt_layout_parse(const char *s, mt_layout_t *layout, char *err, size_t errlen);

/*
 * CLI entry points, in gen_cmd.c, referenced only from main.c's command table (tests do not
 * link them). argv[0] is the subcommand name. Return 0 on success, 1 on a runtime error, 2 on
 * a usage error.
 *   memtrace gen --model NAME [key=value ...] [--layout ...] ... (-o OUT | --describe)
 *   memtrace models [--keys]
 */
int mt_cmd_gen(int argc, char **argv);
int mt_cmd_models(int argc, char **argv);

#endif /* MT_GEN_H */
