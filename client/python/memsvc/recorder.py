"""memsvc.recorder - record a real PyTorch run as a memtrace trace (docs/recording.md).

    import memsvc.recorder
    with memsvc.recorder.record("step.trace", model=model, optimizer=opt) as rec:
        loss = model(x).sum()
        loss.backward()
        opt.step()
    print(rec.peak, rec.op_ns, rec.wall_ns, rec.overhead_ns)

A TorchDispatchMode sees every ATen operator below autograd, forward and backward. For each
one it writes a COMPUTE event (reads, writes, aliases, wall-clock duration of the kernel alone)
and an ALLOC for each storage the operator creates; a storage's FREE is written when its
StorageImpl dies (a weak reference to it expires). Storages, not tensors, are the unit: views
share their base's storage, so a view costs nothing and is listed in the operator's aliases.
The trace is memtrace's format, version 2 (docs/trace-format.md), written with msgpack.

Pure Python: torch and msgpack only; it does not need libmemsvc or a daemon.
"""

import contextlib
import re
import time

import msgpack
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Recorder", "record", "TRACE_VERSION"]

TRACE_VERSION = 2
MAGIC = b"MEMTRACE"
KEY_MAX = 255  # MEMSVC_KEY_MAX
NAME_MAX = 255  # MT_NAME_MAX
META_MAX = 16

# event types, kinds, hints and phases as docs/trace-format.md numbers them
EV_ALLOC, EV_ACCESS, EV_FREE, EV_COMPUTE, EV_HINT = range(5)
KIND_PARAM, KIND_GRAD, KIND_OPTIM, KIND_ACTIVATION, KIND_WORKSPACE = range(5)
HINT_STEP_BEGIN, HINT_STEP_END, HINT_LAYER_BEGIN, HINT_LAYER_END, HINT_PHASE = range(5)
PHASE_NONE, PHASE_FORWARD, PHASE_BACKWARD, PHASE_OPTIMIZER = range(4)

_MIB = 1 << 20
_INT_PART = re.compile(r"^\d+$")

_now = time.perf_counter_ns


def _storage_of(t):
    """The UntypedStorage of a dense tensor, or None (sparse, meta, no storage)."""
    try:
        if hasattr(t, "untyped_storage"):  # torch >= 2.0
            return t.untyped_storage()
        return t._storage()  # torch 1.13
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def _expired(wref):
    return torch.UntypedStorage._expired(wref)


def _free_weak_ref(wref):
    torch.UntypedStorage._free_weak_ref(wref)


class _Probe:
    """Tells whether the autograd engine is running a backward pass on this thread.

    torch._C._will_engine_execute_node(node) refuses to run outside a backward pass with an
    error that says so; inside one it answers (or refuses a node that is not in the graph, a
    different error). A node of a tiny graph made here serves as the question."""

    def __init__(self):
        self._fn = getattr(torch._C, "_will_engine_execute_node", None)
        with torch.enable_grad():  # a graph node even when recording under no_grad()
            leaf = torch.zeros(1, requires_grad=True)
            self._node = leaf.clone().grad_fn if self._fn is not None else None
        if self._node is None:
            self._fn = None

    def in_backward(self):
        if self._fn is None:
            return not torch.is_grad_enabled()  # fallback, see docs/recording.md
        try:
            self._fn(self._node)
            return True
        except RuntimeError as e:
            return "only be called during the backward" not in str(e)


class _Passthrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def dispatch_cost_ns(calls=300):
    """What a Python dispatch mode adds to one operator call, ns: the C++ -> Python -> C++
    round trip that happens outside __torch_dispatch__'s body, so the recorder cannot time it
    there. Measured on a one-element add, plain and under a mode that only passes it on; the
    smaller of two tries, as the other work on the machine only adds to it."""
    x = torch.zeros(1)
    add = torch.ops.aten.add.Tensor
    best = None
    for _ in range(2):
        t = _now()
        for _ in range(calls):
            add(x, x)
        plain = _now() - t
        with _Passthrough():
            t = _now()
            for _ in range(calls):
                add(x, x)
            moded = _now() - t
        cost = max(0, moded - plain) // calls
        best = cost if best is None else min(best, cost)
    return best


class _Storage:
    __slots__ = ("addr", "id", "nbytes", "wref", "device", "event")

    def __init__(self, addr, sid, nbytes, wref, device, event):
        self.addr = addr  # StorageImpl address: the key in Recorder.live
        self.id = sid
        self.nbytes = nbytes
        self.wref = wref  # StorageImpl weak reference (an int handle)
        self.device = device
        self.event = event  # its ALLOC event (a list, patched at the end)


def _layer_expert(path):
    """Layer: the first integer part of a module path (layers.3.mlp -> 3); expert: the integer
    after a part naming experts (layers.3.experts.5 -> 5); -1 when absent."""
    layer = expert = -1
    parts = path.split(".") if path else []
    for i, part in enumerate(parts):
        if _INT_PART.match(part):
            if layer < 0:
                layer = int(part)
            elif i > 0 and "expert" in parts[i - 1]:
                expert = int(part)
    return layer, expert


def _is_layer_module(path):
    """A module that is one layer: its last part is its path's first integer part."""
    parts = path.split(".")
    return bool(_INT_PART.match(parts[-1])) and not any(_INT_PART.match(p) for p in parts[:-1])


def _clip(s, limit):
    b = s.encode("utf-8")
    if len(b) <= limit:
        return s
    return b[len(b) - limit:].decode("utf-8", "ignore")  # keep the specific end of a path


class Recorder(TorchDispatchMode):
    """Records operators, storages, frees, phases and modules; see record()."""

    def __init__(self, path, model=None, optimizer=None, model_name="", hbm_bytes=0,
                 rank=0):
        super().__init__()
        self.path = path
        self.model = model
        self.optimizer = optimizer
        self.model_name = model_name or (type(model).__name__ if model is not None else "")
        self.hbm_bytes = hbm_bytes
        self.rank = rank
        self.prologue = []  # ALLOCs of storages that existed before the recording
        self.events = []
        self.live = {}  # StorageImpl address -> _Storage
        self.next_id = 1
        self.next_op = 1
        self.cur = 0  # live bytes now
        self.peak = 0  # peak of live bytes (storages that existed before included)
        self.op_ns = 0  # sum of operator durations
        self.overhead_ns = 0  # time spent in the recorder itself while recording
        self.wall_ns = 0  # from entering to leaving the recording
        self.dispatch_ns = 0  # estimated dispatch round trips (ops x dispatch_cost_ns())
        self.ops = 0
        self.frees = 0
        self.step = 0
        self.phase = PHASE_NONE
        self.seen_backward = False
        self.modules = []  # stack of module paths (forward hooks)
        self.counters = {}  # key prefix -> occurrences this step
        self.devices = 1
        self.names = {}  # storage address -> (key, kind) for parameters, grads, optimizer state
        self._hooks = []
        self._probe = None
        self._t0 = 0
        self._last = 0  # latest recorded time: events stay in time order

    # ---- clock --------------------------------------------------------------------------
    def _clock(self):
        """Recorded time: wall time since the start minus the recorder's own time."""
        t = max(self._last, _now() - self._t0 - self.overhead_ns)
        self._last = t
        return t

    # ---- storages -----------------------------------------------------------------------
    def _device(self, t):
        dev = t.device
        idx = dev.index if dev.type != "cpu" and dev.index is not None else 0
        if idx + 1 > self.devices:
            self.devices = idx + 1
        return idx

    def _lookup(self, st):
        """The live entry of storage st, if any (an expired one at that address is freed)."""
        ent = self.live.get(st._cdata)
        if ent is not None and _expired(ent.wref):
            self._free(ent, self._clock())
            ent = None
        return ent

    def _new(self, st, t, key, kind, when, pre):
        nbytes = st.nbytes()
        ent = _Storage(st._cdata, self.next_id, nbytes, st._weak_ref(), self._device(t), None)
        self.next_id += 1
        self.live[st._cdata] = ent
        # tags: a parameter's or state's from its name, an activation's from its module
        layer, expert = _layer_expert(key if pre else (self.modules[-1] if self.modules else ""))
        durable = kind in (KIND_PARAM, KIND_OPTIM)
        ev = [EV_ALLOC, 0 if pre else when, self.rank, ent.device, ent.id, _clip(key, KEY_MAX),
              nbytes, kind, [layer, -1, expert, -1, self.step], False, 0, durable, 0, []]
        ent.event = ev
        self.cur += nbytes
        if pre:
            # it was live all along: every point so far had it too
            self.prologue.append(ev)
            self.peak += nbytes
        else:
            self.events.append(ev)
        self.peak = max(self.peak, self.cur)
        return ent

    def _free(self, ent, when):
        del self.live[ent.addr]
        self.events.append([EV_FREE, when, self.rank, ent.device, ent.id])
        self.cur -= ent.nbytes
        self.frees += 1
        _free_weak_ref(ent.wref)

    def _poll_frees(self):
        dead = [e for e in self.live.values() if _expired(e.wref)]
        if dead:
            when = self._clock()
            for ent in dead:
                self._free(ent, when)

    def _existing(self, t):
        """The entry of a storage seen as an operator's input: one that existed before the
        recording (or came from outside any operator) joins the prologue."""
        st = _storage_of(t)
        if st is None or st.nbytes() == 0:
            return None
        ent = self._lookup(st)
        if ent is None:
            named = self.names.get(st._cdata)
            key, kind = named if named else (self._key("input"), KIND_ACTIVATION)
            ent = self._new(st, t, key, kind, 0, pre=True)
        return ent

    def _key(self, prefix):
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        return "%s#%d" % (prefix, n)

    # ---- phases and modules -------------------------------------------------------------
    def _hint(self, hint, layer=-1, phase=PHASE_NONE):
        self.events.append([EV_HINT, self._clock(), self.rank, 0, hint, self.step, layer, -1,
                            phase])

    def _set_phase(self, phase):
        if phase != self.phase:
            self.phase = phase
            self._hint(HINT_PHASE, phase=phase)

    def _pre_hook(self, path):
        def hook(module, inputs):
            t = _now()
            self.modules.append(path)
            if not self._probe.in_backward():
                # a forward after a backward: the next micro-batch (or step)
                self.seen_backward = False
                self._set_phase(PHASE_FORWARD)
                if _is_layer_module(path):
                    self._hint(HINT_LAYER_BEGIN, layer=int(path.split(".")[-1]))
            self.overhead_ns += _now() - t
        return hook

    def _post_hook(self, path):
        def hook(module, inputs, output):
            t = _now()
            if self.modules and self.modules[-1] == path:
                self.modules.pop()
            if _is_layer_module(path) and not self._probe.in_backward():
                self._hint(HINT_LAYER_END, layer=int(path.split(".")[-1]))
            self.overhead_ns += _now() - t
        return hook

    def _name_state(self):
        """Keys and kinds of parameters, buffers, gradients and optimizer state, by storage."""
        names = {}

        def put(t, key, kind):
            st = _storage_of(t) if isinstance(t, torch.Tensor) else None
            if st is not None and st.nbytes() > 0 and st._cdata not in names:
                names[st._cdata] = (key, kind)

        pname = {}
        if self.model is not None:
            for name, p in self.model.named_parameters():
                pname[id(p)] = name
                put(p, name, KIND_PARAM)
                if p.grad is not None:
                    put(p.grad, name + ".grad", KIND_GRAD)
            for name, b in self.model.named_buffers():
                put(b, name, KIND_PARAM)
        if self.optimizer is not None:
            for gi, group in enumerate(self.optimizer.param_groups):
                for pi, p in enumerate(group["params"]):
                    base = pname.get(id(p), "group%d.param%d" % (gi, pi))
                    put(p, base, KIND_PARAM)
                    if p.grad is not None:
                        put(p.grad, base + ".grad", KIND_GRAD)
                    for k, v in self.optimizer.state.get(p, {}).items():
                        put(v, "%s.%s" % (base, k), KIND_OPTIM)
        return names

    # ---- the dispatch mode ----------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t_in = _now()
        self._poll_frees()
        backward = self._probe.in_backward()
        if backward:
            self.seen_backward = True
            self._set_phase(PHASE_BACKWARD)
        elif self.seen_backward:
            self._set_phase(PHASE_OPTIMIZER)
        else:
            self._set_phase(PHASE_FORWARD)
        opname = func.overloadpacket.__name__
        module = "backward" if backward else (self.modules[-1] if self.modules else "")
        prefix = "%s.%s" % (module, opname) if module else opname

        flat_in, _ = tree_flatten((args, kwargs))
        reads = []
        for t in flat_in:
            if isinstance(t, torch.Tensor):
                ent = self._existing(t)
                if ent is not None and ent.id not in reads:
                    reads.append(ent.id)
        writes = self._mutated(func, args, kwargs)
        before = set(self.live)
        t_op = _now()
        self.overhead_ns += t_op - t_in
        out = func(*args, **kwargs)
        t_done = _now()
        duration = t_done - t_op

        op = self.next_op
        self.next_op += 1
        when = max(self._last, t_op - self._t0 - self.overhead_ns)
        self._last = when
        aliases = []
        flat_out, _ = tree_flatten(out)
        for t in flat_out:
            if not isinstance(t, torch.Tensor):
                continue
            st = _storage_of(t)
            if st is None or st.nbytes() == 0:
                continue
            ent = self.live.get(st._cdata) if st._cdata in before else None
            if ent is not None and ent.nbytes != st.nbytes():
                self._free(ent, when)  # resized in place: the old size ends here
                ent = None
            if ent is None:
                ent = self._lookup(st)
            if ent is None:
                ent = self._new(st, t, self._key(prefix), KIND_ACTIVATION, when, pre=False)
                ev = ent.event
                ev[9], ev[10], ev[12], ev[13] = True, duration, op, list(reads)
                writes.append(ent.id)
            elif ent.id not in writes and ent.id not in aliases:
                aliases.append(ent.id)  # a view of an existing storage
        self.events.append([EV_COMPUTE, when, self.rank, 0, op, _clip(prefix, NAME_MAX),
                            duration, 0, reads, writes, aliases])
        self.op_ns += duration
        self.ops += 1
        self.overhead_ns += _now() - t_done
        return out

    def _mutated(self, func, args, kwargs):
        """Storages of the arguments an operator writes in place (schema alias_info.is_write)."""
        writes = []
        schema = getattr(func, "_schema", None)
        if schema is None:
            return writes
        for i, a in enumerate(schema.arguments):
            info = a.alias_info
            if info is None or not info.is_write:
                continue
            val = args[i] if i < len(args) else kwargs.get(a.name)
            flat, _ = tree_flatten(val)
            for t in flat:
                if isinstance(t, torch.Tensor):
                    ent = self._existing(t)
                    if ent is not None and ent.id not in writes:
                        writes.append(ent.id)
        return writes

    # ---- start and end ------------------------------------------------------------------
    def start(self):
        self._probe = _Probe()
        self._dispatch_cost = dispatch_cost_ns()
        self.names = self._name_state()
        if self.model is not None:
            for path, m in self.model.named_modules():
                if path:
                    self._hooks.append(m.register_forward_pre_hook(self._pre_hook(path)))
                    self._hooks.append(m.register_forward_hook(self._post_hook(path)))
        self._t0 = _now()
        # parameters, buffers, gradients and optimizer state are live from the start
        self._hint(HINT_STEP_BEGIN)
        self._register_state()
        self.overhead_ns += _now() - self._t0
        self.__enter__()

    def next_step(self):
        """Marks the end of a training step and the start of the next (keys restart)."""
        t = _now()
        self._poll_frees()
        self._relabel()  # this step's gradients and optimizer state, before a zero_grad frees them
        self._hint(HINT_STEP_END)
        self.step += 1
        self.counters.clear()
        self.seen_backward = False
        self._hint(HINT_STEP_BEGIN)
        self.overhead_ns += _now() - t

    def _register_state(self):
        objs = []
        if self.model is not None:
            objs += [p for p in self.model.parameters()]
            objs += [p.grad for p in self.model.parameters() if p.grad is not None]
            objs += list(self.model.buffers())
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    objs.append(p)
                    if p.grad is not None:
                        objs.append(p.grad)
                    objs += [v for v in self.optimizer.state.get(p, {}).values()
                             if isinstance(v, torch.Tensor)]
        for t in objs:
            self._existing(t)

    def stop(self):
        self.__exit__(None, None, None)
        t = _now()
        self._poll_frees()
        self._hint(HINT_STEP_END)
        self.wall_ns = _now() - self._t0
        self.overhead_ns += _now() - t
        self.dispatch_ns = self.ops * self._dispatch_cost
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._relabel()

    def _relabel(self):
        """Gradients and optimizer state made while recording get their names and kinds."""
        final = self._name_state()
        for addr, ent in self.live.items():
            named = final.get(addr)
            if named is None:
                continue
            key, kind = named
            ev = ent.event
            ev[5], ev[7] = _clip(key, KEY_MAX), kind
            ev[8][0], ev[8][2] = _layer_expert(key)
            ev[9], ev[10], ev[11] = False, 0, kind in (KIND_PARAM, KIND_OPTIM)

    def close(self):
        """Forgets the storages still live (their weak references)."""
        for ent in self.live.values():
            _free_weak_ref(ent.wref)
        self.live = {}

    # ---- writing ------------------------------------------------------------------------
    def header(self):
        hbm = self.hbm_bytes
        if hbm <= 0:
            # room for the peak with margin: the replay's allocator rounds and fragments
            hbm = max(64 * _MIB, ((4 * self.peak + _MIB - 1) // _MIB) * _MIB)
        zero_link = [0.0, 0]
        meta = {
            "source": "torch-recorder",
            "torch": torch.__version__,
            "ops": str(self.ops),
            "op_ns": str(self.op_ns),
            "wall_ns": str(self.wall_ns),
            "overhead_ns": str(self.overhead_ns),
            "dispatch_ns": str(self.dispatch_ns),
            "live_at_end": str(self.cur),
        }
        return {
            "version": TRACE_VERSION,
            "node": {"name": "tiny", "num_npus": self.devices, "hbm_bytes": hbm,
                     "hbm_bw": 0.0, "host_bytes": 4 * hbm, "disk_bytes": 0,
                     "h2d": zero_link, "d2h": zero_link, "d2d": zero_link,
                     "disk": zero_link, "nic": zero_link, "flops": 0.0, "mfu": 0.0},
            "model": _clip(self.model_name, 63),
            "layout": {k: 0 for k in ("tp", "pp", "vpp", "ep", "dp", "cp", "microbatches",
                                      "micro_batch_size", "seq_len")},
            "ranks": 1,
            "steps": self.step + 1,
            "recorded_peak": self.peak,
            "meta": meta,
        }

    def write(self, path=None):
        path = path or self.path
        packer = msgpack.Packer(use_bin_type=True)
        with open(path, "wb") as f:
            f.write(MAGIC)
            f.write(TRACE_VERSION.to_bytes(4, "big"))
            f.write(packer.pack(self.header()))
            for ev in self.prologue:
                f.write(packer.pack(ev))
            for ev in self.events:
                f.write(packer.pack(ev))


@contextlib.contextmanager
def record(path, model=None, optimizer=None, model_name="", hbm_bytes=0):
    """Records what runs inside the block and writes the trace to path when it ends.

    model: its parameters, buffers and gradients are named and live from the start (kind
    param / grad); its modules name the operators and tag them with their layer.
    optimizer: its state is kind optim. hbm_bytes: the node's HBM in the header (default:
    four times the peak, at least 64 MiB). Yields the Recorder: after the block, .peak is the
    peak of live storage bytes, .op_ns the operators' time, .wall_ns the block's,
    .overhead_ns the recorder's own share of it (measured) and .dispatch_ns the dispatch
    round trips it caused (estimated), so that the run without the recorder would have taken
    about wall_ns - overhead_ns - dispatch_ns. If the block raises, nothing is written."""
    rec = Recorder(path, model=model, optimizer=optimizer, model_name=model_name,
                   hbm_bytes=hbm_bytes)
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()
        rec.close()
    rec.write()


def main(argv=None):
    """python3 -m memsvc.recorder -o OUT.trace SCRIPT.py [ARGS...]: record a whole script."""
    import argparse
    import runpy
    import sys

    ap = argparse.ArgumentParser(
        prog="python3 -m memsvc.recorder",
        description="Run a PyTorch script with every operator recorded, and write the memtrace "
                    "trace (docs/recording.md). The script runs as __main__ with its own "
                    "arguments. Without a model to name them, parameters are keyed input#N and "
                    "operators by their names only: for named keys, kinds and layers, use "
                    "memsvc.recorder.record(path, model=..., optimizer=...) in the script.")
    ap.add_argument("-o", "--output", required=True, metavar="OUT.trace")
    ap.add_argument("--model-name", default="", help="model name for the trace header")
    ap.add_argument("--hbm-bytes", type=int, default=0,
                    help="the header node's HBM (default: 4 x the peak, at least 64 MiB)")
    ap.add_argument("script", metavar="SCRIPT.py")
    ap.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    opts = ap.parse_args(argv)
    sys.argv = [opts.script] + opts.args
    with record(opts.output, model_name=opts.model_name, hbm_bytes=opts.hbm_bytes) as rec:
        runpy.run_path(opts.script, run_name="__main__")
    print("memsvc.recorder: %s: %d operators, %d frees, peak %d bytes of live tensors; "
          "operators %.3f s of %.3f s (recorder %.3f s, dispatch %.3f s)"
          % (opts.output, rec.ops, rec.frees, rec.peak, rec.op_ns / 1e9, rec.wall_ns / 1e9,
             rec.overhead_ns / 1e9, rec.dispatch_ns / 1e9), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
