"""test_recorder.py - memsvc.recorder: a real training step recorded, read back and replayed."""
import json
import os
import subprocess
import time

import msgpack
import pytest
import torch

from memsvc import recorder

MEMTRACE = os.path.join(os.environ.get("MEMSVC_BIN", "build/bin"), "memtrace")
VOCAB = 512


def read_trace(path):
    """(header, events) of a memtrace trace, checking the magic and the version."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"MEMTRACE"
    assert int.from_bytes(data[8:12], "big") == 2
    unp = msgpack.Unpacker(raw=False, strict_map_key=False)
    unp.feed(data[12:])
    objs = list(unp)
    assert objs[0]["version"] == 2
    return objs[0], objs[1:]


class MoE(torch.nn.Module):
    """A toy mixture of experts: softmax router, top-k, weighted sum of the chosen experts."""

    def __init__(self, d, experts, k):
        super().__init__()
        self.k = k
        self.router = torch.nn.Linear(d, experts, bias=False)
        self.experts = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.GELU(),
                                torch.nn.Linear(2 * d, d)) for _ in range(experts))

    def forward(self, x):
        weight, idx = torch.topk(self.router(x).softmax(-1), self.k, dim=-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            chosen = idx == e
            rows = chosen.any(-1).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            gate = (weight * chosen).sum(-1)[rows].unsqueeze(-1)
            out = out.index_add(0, rows, expert(x[rows]) * gate)
        return out


class Block(torch.nn.Module):
    def __init__(self, d, heads, experts, k):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(d)
        self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = torch.nn.LayerNorm(d)
        self.moe = MoE(d, experts, k)

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        b, t, d = x.shape
        return x + self.moe(self.ln2(x).reshape(b * t, d)).reshape(b, t, d)


class Net(torch.nn.Module):
    def __init__(self, d=256, heads=4, experts=4, k=2, layers=2):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, d)
        self.layers = torch.nn.ModuleList(Block(d, heads, experts, k) for _ in range(layers))
        self.head = torch.nn.Linear(d, VOCAB)

    def forward(self, ids):
        x = self.emb(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def train_step(net, opt, ids, target):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(ids).reshape(-1, VOCAB), target.reshape(-1))
    loss.backward()
    opt.step()
    return loss


def replay_json(trace):
    out = subprocess.run([MEMTRACE, "replay", trace, "--policy", "none", "--json", "--quiet",
                          "--no-baseline"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_training_step_replays_to_the_recorded_peak(tmp_path):
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (4, 128))
    target = torch.randint(0, VOCAB, (4, 128))
    train_step(net, opt, ids, target)  # optimizer state exists before the recorded step
    path = str(tmp_path / "step.trace")

    with recorder.record(path, model=net, optimizer=opt) as rec:
        t0 = time.perf_counter_ns()
        train_step(net, opt, ids, target)
        step_ns = time.perf_counter_ns() - t0

    header, events = read_trace(path)
    assert header["recorded_peak"] == rec.peak > 0
    rep = replay_json(path)
    assert rep["oom_count"] == 0 and rep["ignored_refs"] == 0
    assert rep["peak_allocated"] == rec.peak
    assert rep["peak_reproduced"] is True

    # parameters, gradients and Adam's two moments: named and their kinds set. The previous
    # step's gradients are live at the start and freed by zero_grad(set_to_none=True); the new
    # ones are live at the end, with the parameters and the optimizer state.
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    allocs = [e for e in events if e[0] == recorder.EV_ALLOC]
    freed = {e[4] for e in events if e[0] == recorder.EV_FREE}
    by_kind, live_by_kind = {}, {}
    for e in allocs:
        by_kind[e[7]] = by_kind.get(e[7], 0) + e[6]
        if e[4] not in freed:
            live_by_kind[e[7]] = live_by_kind.get(e[7], 0) + e[6]
    assert by_kind[recorder.KIND_PARAM] == live_by_kind[recorder.KIND_PARAM] == param_bytes
    assert by_kind[recorder.KIND_GRAD] == 2 * param_bytes
    assert live_by_kind[recorder.KIND_GRAD] == param_bytes
    assert live_by_kind[recorder.KIND_OPTIM] >= 2 * param_bytes
    assert rec.peak > 4 * param_bytes
    keys = {e[5] for e in allocs}
    assert "layers.1.moe.experts.3.0.weight" in keys
    assert "layers.1.moe.experts.3.0.weight.grad" in keys
    assert "layers.1.moe.experts.3.0.weight.exp_avg" in keys
    # forward activations carry their module and layer; expert ones their expert
    tagged = [e for e in allocs if e[5].startswith("layers.1.moe.experts.2.")]
    assert tagged and all(e[8][0] == 1 and e[8][2] == 2 for e in tagged)
    acts = [e for e in tagged if e[7] == recorder.KIND_ACTIVATION]
    assert acts and all(e[9] and e[12] > 0 for e in acts)  # recomputable, with a producer

    phases = [e[8] for e in events if e[0] == recorder.EV_HINT and e[4] == recorder.HINT_PHASE]
    assert phases == [recorder.PHASE_FORWARD, recorder.PHASE_BACKWARD, recorder.PHASE_OPTIMIZER]
    computes = [e for e in events if e[0] == recorder.EV_COMPUTE]
    assert len(computes) == rec.ops
    assert any(c[5].startswith("backward.") for c in computes)
    times = [e[1] for e in events]
    assert times == sorted(times)

    # the operators' time is the step's, less what the recorder itself costs (measured inside
    # its __torch_dispatch__ and hooks, and the dispatch round trips it causes)
    durations = sum(c[6] for c in computes)
    assert durations == rec.op_ns
    assert rec.wall_ns >= step_ns
    own = rec.overhead_ns + rec.dispatch_ns
    assert own < step_ns
    assert abs(durations - (step_ns - own)) <= 0.10 * (step_ns - own), \
        (durations, step_ns, rec.overhead_ns, rec.dispatch_ns)


def test_views_free_with_their_storage(tmp_path):
    path = str(tmp_path / "views.trace")
    base = torch.ones(1000)
    with recorder.record(path) as rec:
        y = base * 2                  # a new storage of 4000 bytes
        v = y[10:]                    # a view: no storage of its own
        w = v.view(10, 99)            # a view of the view
        del y, v
        z = w + 1                     # y's storage must still be live here
        del w
        s = z.sum()                   # y's storage is gone by now
        del z
    header, events = read_trace(path)
    allocs = {e[4]: e for e in events if e[0] == recorder.EV_ALLOC}
    frees = [e[4] for e in events if e[0] == recorder.EV_FREE]
    computes = [e for e in events if e[0] == recorder.EV_COMPUTE]
    names = [c[5] for c in computes]
    assert names == ["mul", "slice", "view", "add", "sum"]
    mul, sl, view, add, total = computes
    (y_id,) = mul[9]
    assert allocs[y_id][6] == 4000
    assert sl[9] == [] and sl[10] == [y_id] and view[10] == [y_id]
    assert add[8] == [y_id]
    # y's storage is freed after the add (when w went) and before the sum
    order = [(e[0], e[4]) for e in events]
    assert order.index((recorder.EV_FREE, y_id)) > order.index((recorder.EV_COMPUTE, add[4]))
    assert order.index((recorder.EV_FREE, y_id)) < order.index((recorder.EV_COMPUTE, total[4]))
    (z_id,) = add[9]
    assert z_id in frees
    # base existed before: in the prologue, at time 0, live all along
    base_id = mul[8][0]
    assert allocs[base_id][1] == 0 and base_id not in frees
    # peak: base + y (4000 bytes each) + z (990 floats); s (4 bytes) comes after y has gone
    assert rec.peak == 11960 and header["recorded_peak"] == 11960
    assert s.item() == 3 * 990
    assert replay_json(path)["peak_allocated"] == 11960


def test_steps_have_the_same_keys(tmp_path):
    """Two steps recorded with next_step(): the second step's activations and gradients have
    the first's keys and kinds (what a policy learning from the previous step matches on), and
    the peak replays."""
    torch.manual_seed(1)
    net = Net(d=64, heads=2, experts=2, k=2, layers=2)  # every expert used: the same ops
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ids = torch.randint(0, VOCAB, (2, 16))
    target = torch.randint(0, VOCAB, (2, 16))
    path = str(tmp_path / "steps.trace")
    with recorder.record(path, model=net, optimizer=opt) as rec:
        train_step(net, opt, ids, target)
        rec.next_step()
        train_step(net, opt, ids, target)
    header, events = read_trace(path)
    assert header["steps"] == 2
    keys = {0: [], 1: []}
    for e in events:
        if e[0] == recorder.EV_ALLOC and e[1] > 0:  # made in a step, not before
            keys[e[8][4]].append((e[5], e[7]))
    assert sorted(keys[0]) == sorted(keys[1])
    kinds = {k for _, k in keys[0]}
    assert kinds == {recorder.KIND_ACTIVATION, recorder.KIND_GRAD}  # SGD: no state
    assert ("layers.1.moe.experts.1.0.weight.grad", recorder.KIND_GRAD) in keys[0]
    hints = [(e[4], e[5]) for e in events if e[0] == recorder.EV_HINT and e[4] in
             (recorder.HINT_STEP_BEGIN, recorder.HINT_STEP_END)]
    assert hints == [(recorder.HINT_STEP_BEGIN, 0), (recorder.HINT_STEP_END, 0),
                     (recorder.HINT_STEP_BEGIN, 1), (recorder.HINT_STEP_END, 1)]
    rep = replay_json(path)
    assert rep["peak_allocated"] == rec.peak and len(rep["steps"]) == 2


def test_command_line_records_a_script(tmp_path):
    """python3 -m memsvc.recorder -o OUT SCRIPT ARGS: the script runs with its arguments, the
    summary names the peak, and the trace replays to it."""
    import re
    import sys

    script = tmp_path / "train.py"
    script.write_text("import sys, torch\n"
                      "lin = torch.nn.Linear(64, 32)\n"
                      "opt = torch.optim.SGD(lin.parameters(), lr=0.1)\n"
                      "for _ in range(int(sys.argv[1])):\n"
                      "    opt.zero_grad()\n"
                      "    lin(torch.randn(16, 64)).square().mean().backward()\n"
                      "    opt.step()\n")
    path = str(tmp_path / "script.trace")
    res = subprocess.run([sys.executable, "-m", "memsvc.recorder", "-o", path, str(script), "3"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    m = re.search(r"(\d+) operators, \d+ frees, peak (\d+) bytes", res.stderr)
    assert m, res.stderr
    header, events = read_trace(path)
    assert header["recorded_peak"] == int(m.group(2)) > 0
    assert sum(1 for e in events if e[0] == recorder.EV_COMPUTE) == int(m.group(1))
    # one backward matrix product per step (the weight's; the input needs no gradient): the
    # script's loop ran its 3 times
    assert sum(1 for e in events if e[0] == recorder.EV_COMPUTE and e[5] == "backward.mm") == 3
    assert replay_json(path)["peak_allocated"] == int(m.group(2))
    bad = subprocess.run([sys.executable, "-m", "memsvc.recorder", str(script)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "-o/--output" in bad.stderr


def test_inference_under_no_grad_is_forward(tmp_path):
    """Under no_grad() nothing is backward: the phase probe is made with grad enabled."""
    path = str(tmp_path / "infer.trace")
    lin = torch.nn.Linear(8, 8)
    with torch.no_grad():
        with recorder.record(path, model=lin):
            lin(torch.randn(4, 8)).relu()
    _, events = read_trace(path)
    phases = [e[8] for e in events if e[0] == recorder.EV_HINT and e[4] == recorder.HINT_PHASE]
    assert phases == [recorder.PHASE_FORWARD]
    assert [e[5] for e in events if e[0] == recorder.EV_COMPUTE] == ["randn", "t", "addmm", "relu"]
