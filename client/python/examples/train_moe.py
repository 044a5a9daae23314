#!/usr/bin/python3
"""train_moe.py - a small MoE transformer trained on the CPU, with and without memsvcd keeping
its activations (and, with --offload-optimizer, Adam's state).

    PYTHONPATH=client/python MEMSVC_LIB=build/lib /usr/bin/python3 \\
        client/python/examples/train_moe.py --steps 5 --policy dtr --recompute

Without --memsvc ADDRESS it starts a memsvcd of its own (build/bin, or MEMSVC_BIN) on the
`tiny` node in backed memory mode with a small HBM (--hbm), so that the activations do not fit
and the daemon swaps them to host or drops them. It trains the same model twice from the same
seed, first with autograd keeping everything in the process, then with memsvc, and prints the
loss of each step of both, whether they are equal bit for bit, the peak of the activation bytes
kept alive in the process for backward in each run, and the daemon's swap, drop and recompute
counts.

The model: token embedding, --layers blocks of (pre-norm multi-head attention with dropout;
pre-norm feed-forward), every second block's feed-forward a mixture of --experts experts with
top-k routing; a tied output head; next-token loss on a fixed random corpus.
"""

import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import memsvc                    # noqa: E402
import memsvc.daemon             # noqa: E402
import memsvc.torch as mtorch    # noqa: E402


class Attention(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        mask = torch.ones(s, s, dtype=torch.bool).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        att = F.dropout(att, self.dropout, self.training)
        return self.proj((att @ v).transpose(1, 2).reshape(b, s, d))


class FeedForward(nn.Module):
    def __init__(self, d, hidden, dropout):
        super().__init__()
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.dropout = dropout

    def forward(self, x):
        return F.dropout(self.down(F.gelu(self.up(x))), self.dropout, self.training)


class MoE(nn.Module):
    """Top-k routing over experts: each token goes to its k best experts, weighted by the
    softmax of their router logits; expert outputs are summed back with index_add_."""

    def __init__(self, d, hidden, experts, top_k, dropout):
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d, hidden, dropout) for _ in range(experts))

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits, chosen = self.router(x).topk(self.top_k, dim=-1)
        weights = logits.softmax(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            y = expert(x[token]) * weights[token, slot].unsqueeze(-1)
            out = out.index_add(0, token, y)
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, d, heads, hidden, moe, experts, top_k, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = MoE(d, hidden, experts, top_k, dropout) if moe else \
            FeedForward(d, hidden, dropout)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Model(nn.Module):
    def __init__(self, vocab, d, heads, layers, experts, top_k, seq, dropout):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d, i % 2 == 1, experts, top_k, dropout)
                                    for i in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[:tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embed.weight.t()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=16, help="sequences per micro-batch")
    ap.add_argument("--microbatches", type=int, default=1, help="micro-batches per step")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: the same kernels in both runs)")
    ap.add_argument("--mode", choices=("both", "baseline", "memsvc"), default="both")
    ap.add_argument("--memsvc", metavar="ADDRESS",
                    help="use this memsvcd instead of starting one")
    ap.add_argument("--hbm", default="8MiB", help="HBM of the daemon started here (tiny node)")
    ap.add_argument("--policy", default="lru", help="policy of the daemon started here "
                    "(lru swaps; dtr drops recomputable tensors)")
    ap.add_argument("--no-map", action="store_true", help="daemon started here with --no-map")
    ap.add_argument("--recompute", action="store_true",
                    help="blocks are recompute modules: their activations may be dropped")
    ap.add_argument("--offload-optimizer", action="store_true",
                    help="Adam's state held by memsvcd between steps")
    ap.add_argument("--min-bytes", type=int, default=64 << 10,
                    help="saved tensors smaller than this stay in the process")
    ap.add_argument("--job", type=int, default=1)
    return ap.parse_args(argv)


def data(args):
    """A fixed corpus: each sequence repeats a random 8-token motif (learnable), seeded."""
    g = torch.Generator().manual_seed(args.seed + 1)
    n = args.batch * args.microbatches
    motif = torch.randint(0, args.vocab, (n, 8), generator=g)
    seqs = motif.repeat(1, (args.seq + 1 + 7) // 8)[:, :args.seq + 1]
    return seqs[:, :-1].contiguous(), seqs[:, 1:].contiguous()


def train(args, conn=None):
    """Train args.steps steps; with conn, memsvcd keeps the activations. Returns the losses,
    the last step's gradients, the final parameters and the figures."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    model = Model(args.vocab, args.dim, args.heads, args.layers, args.experts, args.top_k,
                  args.seq, args.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    inputs, targets = data(args)
    if conn is None:
        hooks = mtorch.SavedTensorMeter(model)
    else:
        hooks = mtorch.ActivationOffload(conn, model, min_bytes=args.min_bytes,
                                         recompute_modules=model.blocks if args.recompute else ())
    opt_off = mtorch.OptimizerStateOffload(opt, conn) if conn and args.offload_optimizer \
        else None
    losses, t0 = [], time.perf_counter()
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        with (hooks.step(step) if conn is not None else hooks):
            for mb in range(args.microbatches):
                if conn is not None:
                    hooks.microbatch = mb
                sl = slice(mb * args.batch, (mb + 1) * args.batch)
                logits = model(inputs[sl])
                loss = F.cross_entropy(logits.reshape(-1, args.vocab), targets[sl].reshape(-1))
                (loss / args.microbatches).backward()
                total += loss.item() / args.microbatches
        # (an expert that no token chose has no gradient)
        grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        if opt_off is not None:
            with opt_off.restored():
                opt.step()
        else:
            opt.step()
        losses.append(total)
    out = {"losses": losses, "grads": grads, "params": [p.detach().clone()
                                                         for p in model.parameters()],
           "peak_bytes": hooks.peak_bytes, "seconds": time.perf_counter() - t0}
    if conn is not None:
        out["counts"] = dict(hooks.counts)
        out["optimizer_bytes"] = opt_off.bytes if opt_off else 0
        if opt_off is not None:
            opt_off.close()
        hooks.close()
    return out


def same_tensor(a, b):
    """Equal bit for bit (or both None: no gradient)."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and \
        torch.equal(a.view(torch.uint8) if a.dim() else a, b.view(torch.uint8) if b.dim() else b)


def daemon_figures(conn):
    dev = conn.stats()["devices"][conn.device]
    return {k: dev[k] for k in ("swap_outs", "swap_ins", "drops", "recomputes",
                                "swap_out_bytes", "peak_reserved", "capacity")}


def mib(n):
    return "%.2f MiB" % (n / 2 ** 20)


def main(argv=None):
    args = parse_args(argv)
    base = mem = None
    if args.mode in ("both", "baseline"):
        base = train(args)
    if args.mode in ("both", "memsvc"):
        daemon = None
        if args.memsvc:
            conn = memsvc.Connection(args.memsvc, job=args.job, name="train_moe")
        else:
            extra = ["hbm=" + args.hbm] + (["--no-map"] if args.no_map else [])
            daemon = memsvc.daemon.Daemon(node="tiny", memory="backed", policy=args.policy,
                                          extra=extra)
            conn = daemon.connect(job=args.job, name="train_moe")
        try:
            before = daemon_figures(conn)
            mem = train(args, conn)
            after = daemon_figures(conn)
            mem["daemon"] = {k: after[k] - before[k] if k in ("swap_outs", "swap_ins", "drops",
                                                              "recomputes", "swap_out_bytes")
                             else after[k] for k in after}
            mem["transport"] = conn.transport
        finally:
            conn.close()
            if daemon is not None:
                daemon.stop()
    print("step  loss (in process)      loss (memsvc)")
    for i in range(args.steps):
        b = "%.10f" % base["losses"][i] if base else "-"
        m = "%.10f" % mem["losses"][i] if mem else "-"
        print("%4d  %-21s  %s" % (i, b, m))
    if base:
        print("in process: peak of saved activation bytes kept in the process %s, %.2f s"
              % (mib(base["peak_bytes"]), base["seconds"]))
    if mem:
        c, d = mem["counts"], mem["daemon"]
        print("memsvc:     peak of saved activation bytes kept in the process %s, %.2f s (%s)"
              % (mib(mem["peak_bytes"]), mem["seconds"], mem["transport"]))
        print("            to memsvcd: %d tensors, %s; kept (small): %d; recomputed %d "
              "(%d forward runs), %d more from those runs; %d read from host (no room)" % (
                  c["saved"], mib(c["saved_bytes"]), c["kept"], c["recomputed"],
                  c["recompute_runs"], c["recompute_cached"], c["read_unpinned"]))
        print("            daemon: %d swap-outs (%s), %d swap-ins, %d drops, %d recomputes; "
              "HBM %s, peak reserved %s" % (d["swap_outs"], mib(d["swap_out_bytes"]),
                                            d["swap_ins"], d["drops"], d["recomputes"],
                                            mib(d["capacity"]), mib(d["peak_reserved"])))
    if base and mem:
        same = base["losses"] == mem["losses"] and all(
            same_tensor(a, b) for a, b in zip(base["grads"] + base["params"],
                                              mem["grads"] + mem["params"]))
        print("losses, gradients and parameters equal bit for bit: %s" % ("yes" if same else "NO"))
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
