"""test_torch.py - memsvc.torch with real training: the example MoE transformer trained with
memsvcd keeping its activations (swapped, or dropped and recomputed) and its optimizer state
gives the losses, gradients and parameters of training without it, bit for bit."""

import pytest
import torch
import torch.nn as nn

import memsvc
import memsvc.torch as mtorch
import train_moe

# Small enough to be quick, large enough that saved tensors pass the 64 KiB threshold
# (a [8, 64, 64] float tensor is 128 KiB) and that a step saves ~19 MiB, far over 4 MiB of HBM.
ARGS = ["--steps", "2", "--batch", "8", "--seq", "64", "--dim", "64", "--layers", "4"]
HBM = "hbm=4MiB"

_baselines = {}


def baseline(argv):
    key = tuple(argv)
    if key not in _baselines:
        _baselines[key] = train_moe.train(train_moe.parse_args(argv))
    return _baselines[key]


def assert_same_training(base, mem):
    """Bit for bit: the same kernels run on the same bytes (one intra-op thread in both)."""
    assert mem["losses"] == base["losses"]
    assert len(mem["grads"]) == len(base["grads"])
    for a, b in zip(base["grads"] + base["params"], mem["grads"] + mem["params"]):
        assert train_moe.same_tensor(a, b)


def run(memsvcd_factory, argv, policy, hbm=HBM, **kw):
    d = memsvcd_factory(policy=policy, extra=[hbm] + kw.pop("extra", []))
    with d.connect(job=1) as conn:
        before = conn.stats()["devices"][0]
        out = train_moe.train(train_moe.parse_args(argv), conn)
        after = conn.stats()["devices"][0]
        out["daemon"] = {k: after[k] - before[k] for k in ("swap_outs", "swap_ins", "drops",
                                                           "recomputes")}
        assert conn.stats()["live_tensors"] == 0   # every activation freed after backward
    return out


def test_training_with_swapped_activations(memsvcd_factory):
    base = baseline(ARGS)
    mem = run(memsvcd_factory, ARGS, "lru")
    assert mem["daemon"]["swap_outs"] > 0 and mem["daemon"]["swap_ins"] > 0, mem["daemon"]
    assert mem["counts"]["saved"] > 0 and mem["counts"]["fallbacks"] == 0
    assert_same_training(base, mem)
    assert mem["peak_bytes"] < base["peak_bytes"] / 4, (mem["peak_bytes"], base["peak_bytes"])


def test_training_with_dropped_and_recomputed_activations(memsvcd_factory, monkeypatch):
    # check every recomputed tensor against a CRC of the one saved (dropout included)
    init = mtorch.ActivationOffload.__init__
    monkeypatch.setattr(mtorch.ActivationOffload, "__init__",
                        lambda self, *a, **kw: init(self, *a, verify_recompute=True, **kw))
    base = baseline(ARGS)
    mem = run(memsvcd_factory, ARGS + ["--recompute"], "dtr")
    assert mem["daemon"]["drops"] > 0 and mem["daemon"]["recomputes"] > 0, mem["daemon"]
    assert mem["counts"]["recomputed"] == mem["daemon"]["recomputes"]
    assert mem["counts"]["recompute_runs"] > 0
    assert_same_training(base, mem)
    assert mem["peak_bytes"] < base["peak_bytes"] / 2, (mem["peak_bytes"], base["peak_bytes"])


def test_training_with_offloaded_optimizer_state_and_no_map(memsvcd_factory):
    argv = ARGS + ["--microbatches", "2", "--batch", "4"]
    base = baseline(argv)
    mem = run(memsvcd_factory, argv + ["--offload-optimizer"], "lru", extra=["--no-map"])
    assert mem["optimizer_bytes"] > 0
    assert_same_training(base, mem)


def test_layer_hints_drive_vdnn(memsvcd_factory):
    """With room for everything (64 MiB), vdnn still swaps each layer's activations out at the
    LAYER_END hint of its forward and back at the LAYER_BEGIN of its backward; lru does not."""
    base = baseline(ARGS)
    mem = run(memsvcd_factory, ARGS, "vdnn", hbm="hbm=64MiB")
    assert mem["daemon"]["swap_outs"] > 0 and mem["daemon"]["swap_ins"] > 0, mem["daemon"]
    assert_same_training(base, mem)
    lru = run(memsvcd_factory, ARGS, "lru", hbm="hbm=64MiB")
    assert lru["daemon"]["swap_outs"] == 0, lru["daemon"]


def test_optimizer_state_round_trip(conn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 3))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 64)).sum().backward()
    opt.step()
    before = {(i, k): v.clone() for i, p in enumerate(model.parameters())
              for k, v in opt.state[p].items()}
    off = mtorch.offload_optimizer_state(opt, conn, min_bytes=1024)
    # the 64x64 weight's exp_avg and exp_avg_sq moved (16 KiB each); smaller ones stayed
    w = opt.state[model[0].weight]
    assert isinstance(w["exp_avg"], mtorch._Offloaded) and torch.is_tensor(w["step"])
    assert torch.is_tensor(opt.state[model[1].bias]["exp_avg"])
    assert torch.is_tensor(opt.state[model[1].weight]["exp_avg"])    # 768 bytes
    assert off.bytes == 2 * 64 * 64 * 4
    key = w["exp_avg_sq"].tensor.key
    info = conn.lookup(key).info
    assert info["kind"] == "optim" and info["durable"]
    off.restore()
    after = {(i, k): v for i, p in enumerate(model.parameters()) for k, v in opt.state[p].items()}
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    off.close()
    conn.flush()
    with pytest.raises(memsvc.NotFound):
        conn.lookup(key)


def test_small_tensors_and_parameters_stay(conn):
    """Parameters (and views of them) and tensors under min_bytes are not sent; the rest is,
    tagged with layer and micro-batch, and freed once backward is done with it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
    x = torch.randn(128, 256, requires_grad=True)
    off = mtorch.ActivationOffload(conn, model, min_bytes=64 << 10, microbatch=3)
    seen = []
    with off:
        y = model(x)
        for t in conn_tensors(conn):
            seen.append(t)
        y.sum().backward()
    off.close()
    # x (128 KiB) and the ReLU's output (128 KiB, saved by the ReLU and again by the next
    # Linear: one copy) go; the weights (256 KiB) and the small [128, 4] tensors stay
    assert off.counts["saved"] == 2 and off.counts["shared"] == 1
    assert off.counts["parameters"] >= 2
    assert off.counts["kept"] == 0 and off.counts["saved_bytes"] == 2 * 128 * 256 * 4
    assert sorted((t["key"], t["tags"]["layer"], t["tags"]["microbatch"]) for t in seen) == \
        [("act.0.0.mb3.0", 0, 3), ("act.0.1.mb3.0", 1, 3)]
    assert conn.stats()["live_tensors"] == 0
    ref = x.detach().clone().requires_grad_()
    model.zero_grad()
    model(ref).sum().backward()
    assert torch.equal(ref.grad, x.grad)


def conn_tensors(conn):
    out = []
    for key in ("act.0.0.mb3.0", "act.0.1.mb3.0", "act.0.2.mb3.0"):
        try:
            out.append(conn.lookup(key).info)
        except memsvc.NotFound:
            pass
    return out


def test_retain_graph_unpacks_twice(conn):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 1))
    x = torch.randn(128, 256)
    with mtorch.ActivationOffload(conn, model) as off:
        loss = model(x).sum()
    loss.backward(retain_graph=True)
    g1 = [p.grad.clone() for p in model.parameters()]
    loss.backward()
    assert off.counts["unpacked"] == 2 * (off.counts["saved"] + off.counts["shared"]) > 0
    for a, p in zip(g1, model.parameters()):
        assert torch.equal(2 * a, p.grad)
    del loss
    off.close()
    assert conn.stats()["live_tensors"] == 0


def test_tensor_larger_than_the_device_stays_in_the_process(memsvcd_factory):
    """A saved tensor the daemon cannot hold at all (TOO_LARGE) stays here, with a warning;
    backward is unchanged."""
    d = memsvcd_factory(extra=["hbm=1MiB"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 1))
    x = torch.randn(1024, 512)          # 2 MiB: larger than the device
    with d.connect(job=1) as c:
        off = mtorch.ActivationOffload(c, model)
        with pytest.warns(UserWarning, match="stays in the process.*TOO_LARGE"):
            with off:
                loss = model(x).sum()
        loss.backward()
        # x, and the Tanh output saved by the Tanh and by the next Linear
        assert off.counts["fallbacks"] == 3 and off.counts["saved"] == 0
        g = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model(x).sum().backward()
        for a, p in zip(g, model.parameters()):
            assert torch.equal(a, p.grad)
        off.close()


def test_unpack_without_room_on_the_device_reads_from_host(memsvcd_factory):
    """When the device cannot make a saved tensor resident (a pinned tensor holds the room),
    backward reads it from the host instead of failing."""
    d = memsvcd_factory(extra=["hbm=1MiB"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 1))
    x = torch.randn(512, 256)           # x and the Tanh output: 512 KiB each, the whole device
    with d.connect(job=1) as c:
        off = mtorch.ActivationOffload(c, model)
        with off:
            loss = model(x).sum()
        hog = c.alloc(768 << 10, key="hog", pin=True)   # both go to host; it stays pinned
        loss.backward()
        assert off.counts["saved"] == 2
        assert off.counts["read_unpinned"] == off.counts["unpacked"] == 3
        g = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        model(x).sum().backward()
        for a, p in zip(g, model.parameters()):
            assert torch.equal(a, p.grad)
        hog.release()
        off.close()


def test_example_command_line(capsys):
    """The example as a user runs it: its own memsvcd, both runs, the comparison printed."""
    rc = train_moe.main(ARGS + ["--steps", "1", "--layers", "2", "--hbm", "2MiB", "--policy", "dtr",
                                "--recompute"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "losses, gradients and parameters equal bit for bit: yes" in out
    assert "in process: peak of saved activation bytes" in out and "daemon: " in out
