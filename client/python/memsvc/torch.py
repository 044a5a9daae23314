"""torch.py - PyTorch's saved activations and optimizer state kept by memsvcd.

ActivationOffload is a context manager around torch.autograd.graph.saved_tensors_hooks: every
tensor autograd saves for backward in its block (pack) goes to memsvcd as a non-durable
activation tensor tagged with its module's layer and the micro-batch, and comes back when
backward needs it (unpack). Small tensors and parameters stay in the process. With
recompute_modules, the tensors saved inside those modules are recomputable: the daemon may
drop them under pressure, and when an acquire answers RECOMPUTE the module's forward is run
again from its kept inputs with the RNG state it had (as torch.utils.checkpoint does), which
gives back the very same bytes.

OptimizerStateOffload moves an optimizer's state tensors (Adam's exp_avg, exp_avg_sq) to
durable memsvcd tensors between steps and back before step().

SavedTensorMeter keeps saved tensors in the process, as autograd does, and counts them the
same way: the baseline that ActivationOffload's figures compare with.
"""

import ctypes
import contextlib
import itertools
import re
import time
import warnings
import weakref
import zlib

import torch

from . import _status

_RECOMPUTE = 2
_KEY_MAX = 255
# what alloc answers when the daemon has no room for a tensor at all: it stays in the process
_NO_ROOM = ("MEMSVC_ERR_NO_MEMORY", "MEMSVC_ERR_FRAGMENTED", "MEMSVC_ERR_HOST_MEMORY",
            "MEMSVC_ERR_TOO_LARGE")


def _storage_key(t):
    """(address, bytes) of the storage under t: what keeping t alive keeps alive."""
    s = t.storage()
    return s.data_ptr(), s.nbytes()


def _span(t):
    """Elements of t's storage that t covers, from its storage offset (strides are >= 0)."""
    if t.numel() == 0:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))


def _view_key(t):
    return (t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()))


def _default_layer_of(name):
    """The layer of a module from its qualified name: the first number in it ("blocks.3.attn"
    -> 3), or None."""
    for part in name.split("."):
        if part.isdigit():
            return int(part)
    return None


def _default_expert_of(name):
    """The expert of a module from its qualified name: the number after "experts"."""
    m = re.search(r"(?:^|\.)experts\.(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


class _Live:
    """Bytes of tensors kept alive in the process for backward, by storage (a storage shared
    by several saved tensors counts once), with the peak."""

    def __init__(self):
        self.refs = {}
        self.bytes = 0
        self.peak = 0

    def add(self, t):
        try:
            key = _storage_key(t)
        except (RuntimeError, NotImplementedError):   # no storage (sparse, ...): by itself
            key = (id(t), t.numel() * t.element_size())
        n = self.refs.get(key, 0)
        self.refs[key] = n + 1
        if n == 0:
            self.bytes += key[1]
            self.peak = max(self.peak, self.bytes)
        return key

    def remove(self, key):
        n = self.refs.get(key, 0)
        if n <= 1:
            if n == 1:
                del self.refs[key]
                self.bytes -= key[1]
        else:
            self.refs[key] = n - 1

    def reset_peak(self):
        self.peak = self.bytes


class _Kept:
    """A saved tensor kept in the process; counted in the live bytes while it lives."""

    __slots__ = ("tensor", "_live", "_key", "__weakref__")

    def __init__(self, tensor, live):
        self.tensor = tensor
        self._live = live
        self._key = live.add(tensor) if live is not None else None

    def __del__(self):
        if self._key is not None:
            self._live.remove(self._key)


class _Hooks:
    """What ActivationOffload and SavedTensorMeter share: parameter detection, the live-bytes
    count, and entering saved_tensors_hooks."""

    def __init__(self, model, min_bytes):
        self.model = model
        self.min_bytes = min_bytes
        self.live = _Live()
        self._param_storages = set()
        self._ctx = None
        self.refresh_parameters()

    def refresh_parameters(self):
        """Note the storages of the model's parameters (after replacing any)."""
        self._param_storages = set()
        if self.model is not None:
            for p in self.model.parameters():
                self._param_storages.add(p.storage().data_ptr())

    def is_parameter(self, t):
        if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter):
            return True
        try:
            return t.storage().data_ptr() in self._param_storages
        except (RuntimeError, NotImplementedError):   # no storage (sparse, ...)
            return False

    def keep(self, t):
        """The packed form of a tensor that stays here (parameters are not counted)."""
        return _Kept(t, None if self.is_parameter(t) else self.live)

    def _pack(self, t):
        return self.keep(t)

    def _unpack(self, obj):
        return obj.tensor

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(*exc)
        return False

    @property
    def peak_bytes(self):
        """Peak of the bytes kept alive in this process for backward (saved tensors other
        than parameters, by storage), since the start or reset_peak()."""
        return self.live.peak

    def reset_peak(self):
        self.live.reset_peak()


class SavedTensorMeter(_Hooks):
    """saved_tensors_hooks that keep every saved tensor in the process, as autograd does
    without hooks, and count them as ActivationOffload counts what it keeps: the baseline.

        meter = SavedTensorMeter(model)
        with meter:
            loss = model(x); loss.backward()
        meter.peak_bytes
    """

    def __init__(self, model=None):
        super().__init__(model, 0)


class _Invocation:
    """One call of a recompute module: what it needs to run again, and what it saved."""

    def __init__(self, owner, module, name, args):
        self.owner = owner
        self.module = module
        self.name = name
        self.args = tuple(a.detach().requires_grad_(a.requires_grad)
                          if torch.is_tensor(a) else a for a in args)
        self.rng_state = torch.get_rng_state()
        self.packs = 0            # tensors saved so far (all of them, kept or not)
        self.pending = {}         # index -> weakref to the _Saved still held by autograd
        self.cache = {}           # index -> (tensor, live key): recomputed, not yet unpacked
        self.start_ns = time.perf_counter_ns()
        self._keys = [owner.live.add(a) for a in self.args if torch.is_tensor(a)]
        self.open = True          # its forward is running
        self.depth = 0

    def done_forward(self):
        self.open = False
        self.owner._unit_ns[self.name] = time.perf_counter_ns() - self.start_ns
        self._maybe_end()

    def forget(self, index):
        self.pending.pop(index, None)
        self._maybe_end()

    def _maybe_end(self):
        """Let go of the inputs once nothing saved in this call can need them."""
        if self.open or self.pending or self._keys is None:
            return
        for k in self._keys:
            self.owner.live.remove(k)
        for _, k in self.cache.values():
            self.owner.live.remove(k)
        self._keys = None
        self.args = ()
        self.cache = {}


class _Saved:
    """A saved tensor held by memsvcd: the handle autograd keeps until backward."""

    __slots__ = ("owner", "tensor", "dtype", "shape", "stride", "span", "inv", "index", "crc",
                 "unpacked", "layer", "microbatch", "__weakref__")

    def __del__(self):
        # Called when autograd lets go of the saved tensor: queue the free (sent with the
        # connection's next call; nothing may be sent from here).
        try:
            if self.tensor is not None:
                self.owner.conn.free_later(self.tensor.handle)
            if self.inv is not None:
                self.inv.forget(self.index)
        except Exception:   # interpreter shutdown: the daemon frees them with the session
            pass


class ActivationOffload(_Hooks):
    """Saved activations of autograd kept by memsvcd (a context manager).

        conn = memsvc.Connection(address, job=1)
        off = memsvc.torch.ActivationOffload(conn, model, recompute_modules=model.blocks)
        for step in range(n):
            with off.step(step):
                for mb, x in enumerate(micro_batches):
                    off.microbatch = mb
                    loss = model(x); loss.backward()

    conn: a memsvc.Connection. model: the nn.Module whose modules name and tag the tensors
    (a forward pre-hook on each; the key of a tensor is PREFIX.RANK.MODULE.mbN.I, its layer
    tag the first number in the module's name, its expert tag the number after "experts").
    min_bytes: smaller tensors stay in the process (default 64 KiB). recompute_modules:
    modules (or an nn.ModuleList) whose saved tensors may be dropped by the daemon and are
    recomputed by running the module's forward again from its inputs (kept in the process)
    under its saved RNG state; their forward must be deterministic and free of side effects
    (no running statistics, no state changed), and take positional arguments only.
    verify_recompute: check that recomputed bytes equal what was saved (a CRC taken at pack
    time; costs a pass over every saved tensor), raising RuntimeError otherwise.
    """

    def __init__(self, conn, model=None, *, min_bytes=64 << 10, recompute_modules=(),
                 microbatch=0, key_prefix="act", verify_recompute=False, layer_of=None,
                 expert_of=None):
        super().__init__(model, min_bytes)
        self.conn = conn
        self.microbatch = microbatch
        self.key_prefix = key_prefix
        self.verify_recompute = verify_recompute
        self.layer_of = layer_of or _default_layer_of
        self.expert_of = expert_of or _default_expert_of
        if isinstance(recompute_modules, torch.nn.Module) and \
                not isinstance(recompute_modules, torch.nn.ModuleList):
            recompute_modules = [recompute_modules]
        self._units = {id(m) for m in recompute_modules}
        self._names = {}          # id(module) -> qualified name
        self._layers = {}         # id(module) -> layer, for the outermost module of each layer
        self._bw_layer = None     # (layer, micro-batch) whose backward runs (hinted)
        self._handles = []        # module hook handles
        self._stack = []          # names of the modules whose forward is running
        self._unit = None         # the running _Invocation
        self._unit_ns = {}        # last forward time of each recompute module, ns
        self._recomputing = 0
        self._counters = {}
        self._same = {}           # _view_key -> (tensor ref, version, _Saved ref): last saves
        self._phase = None
        self._step = None
        self._gen = itertools.count()
        self._warned = False
        self.counts = dict(saved=0, saved_bytes=0, shared=0, kept=0, kept_bytes=0, parameters=0,
                           unpacked=0, read_unpinned=0, recomputed=0, recompute_runs=0,
                           recompute_cached=0, fallbacks=0)
        if model is not None:
            self.attach(model)

    # ---- module hooks: names, tags, recompute units --------------------------------------
    def attach(self, model):
        """Register the forward hooks on model's modules (done by the constructor)."""
        for name, m in model.named_modules():
            self._names[id(m)] = name or type(m).__name__
            layer = self.layer_of(name) if name else None
            parent = name.rpartition(".")[0]
            if layer is not None and (not parent or self.layer_of(parent) is None):
                self._layers[id(m)] = layer
            self._handles.append(m.register_forward_pre_hook(self._pre_hook))
            self._handles.append(m.register_forward_hook(self._post_hook))

    def detach(self):
        """Remove the module hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre_hook(self, module, args):
        if self._ctx is None or self._recomputing:
            return
        name = self._names.get(id(module), type(module).__name__)
        self._stack.append(name)
        layer = self._layers.get(id(module))
        if layer is not None and torch.is_grad_enabled():
            self._set_phase("forward")
            self.conn.layer_begin(layer, self.microbatch, phase="forward")
        if self._unit is None and id(module) in self._units and torch.is_grad_enabled():
            self._unit = _Invocation(self, module, name, args)
            self._unit.depth = len(self._stack) - 1   # the stack's depth outside it

    def _post_hook(self, module, args, output):
        if self._ctx is None or self._recomputing or not self._stack:
            return
        self._stack.pop()
        layer = self._layers.get(id(module))
        if layer is not None and torch.is_grad_enabled():
            self.conn.layer_end(layer, self.microbatch, phase="forward")
        unit = self._unit
        if unit is not None and unit.module is module and len(self._stack) == unit.depth:
            self._unit = None
            unit.done_forward()

    # ---- steps and phases ----------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, step):
        """Hooks on for one training step; hints the daemon at its beginning and end."""
        self._counters.clear()
        self._stack.clear()
        self._same.clear()
        self._unit = None
        self._step = step
        self.conn.step_begin(step)
        try:
            with self:
                yield self
        finally:
            if self._bw_layer is not None:
                self.conn.layer_end(self._bw_layer[0], self._bw_layer[1], phase="backward")
                self._bw_layer = None
            self.conn.step_end(step)
            self.conn.flush()

    def _set_phase(self, phase):
        if self._phase != phase:
            if phase == "forward" and self._bw_layer is not None:
                self.conn.layer_end(self._bw_layer[0], self._bw_layer[1], phase="backward")
                self._bw_layer = None
            self._phase = phase
            self.conn.phase(phase)

    def __enter__(self):
        self._stack.clear()
        self._same.clear()
        self._unit = None
        return super().__enter__()

    # ---- pack / unpack -------------------------------------------------------------------
    def _key(self, name):
        n = self._counters.get((name, self.microbatch), 0)
        self._counters[(name, self.microbatch)] = n + 1
        key = "%s.%d.%s.mb%d.%d" % (self.key_prefix, self.conn.rank, name, self.microbatch, n)
        if len(key) > _KEY_MAX:
            key = "%s.%d.%08x.mb%d.%d" % (self.key_prefix, self.conn.rank,
                                          zlib.crc32(name.encode()), self.microbatch, n)
        return key

    def _pack(self, t):
        if self._recomputing:
            return _Kept(t, None)
        inv = self._unit
        index = -1
        if inv is not None:
            index = inv.packs
            inv.packs += 1
        if t.layout != torch.strided or t.device.type != "cpu" or t.is_quantized or \
                t.is_conj() or t.is_neg():
            return self._keep_small(t)      # not plain bytes in this process: as autograd does
        if self.is_parameter(t):
            self.counts["parameters"] += 1
            return _Kept(t, None)
        nbytes = _span(t) * t.element_size()
        if nbytes < self.min_bytes:
            return self._keep_small(t)
        self._set_phase("forward")
        again = self._same.get(_view_key(t))
        if again is not None:
            tref, version, sref = again
            prev = sref()
            if tref() is t and t._version == version and prev is not None and not prev.unpacked:
                # the same tensor saved again (by the next operator): one copy serves both
                self.counts["shared"] += 1
                return prev
        name = self._stack[-1] if self._stack else "root"
        base = t.as_strided((_span(t),), (1,), t.storage_offset())
        s = _Saved()
        s.owner, s.dtype, s.shape, s.stride = self, t.dtype, tuple(t.shape), tuple(t.stride())
        s.span, s.inv, s.index, s.crc, s.unpacked = base.numel(), inv, index, None, False
        s.layer, s.microbatch = self.layer_of(name), self.microbatch
        s.tensor = None
        try:
            s.tensor = self._alloc(name, nbytes, recomputable=inv is not None)
            s.tensor.write_from(base.data_ptr(), nbytes)
        except _status.Error as e:
            if s.tensor is not None:
                s.tensor.free()
            s.inv = None
            s.tensor = None
            if e.status not in _NO_ROOM:
                raise
            return self._fallback(t, e)
        if self.verify_recompute and inv is not None:
            s.crc = _crc(base)
        if inv is not None:
            inv.pending[index] = weakref.ref(s)
        self._same[_view_key(t)] = (weakref.ref(t), t._version, weakref.ref(s))
        self.counts["saved"] += 1
        self.counts["saved_bytes"] += nbytes
        return s

    def _keep_small(self, t):
        self.counts["kept"] += 1
        n = _span(t) if t.layout == torch.strided else t.numel()
        self.counts["kept_bytes"] += n * t.element_size()
        return _Kept(t, self.live)

    def _fallback(self, t, err):
        """The daemon could not take it (no memory at all): keep it here, say so once."""
        self.counts["fallbacks"] += 1
        if not self._warned:
            self._warned = True
            warnings.warn("memsvc: a saved tensor stays in the process: %s" % err)
        return _Kept(t, self.live)

    def _alloc(self, name, nbytes, recomputable):
        layer = self.layer_of(name)
        key = self._key(name)
        kw = dict(kind="activation", recomputable=recomputable, layer=layer,
                  microbatch=self.microbatch, expert=self.expert_of(name), step=self._step,
                  recompute_ns=self._unit_ns.get(self._unit.name, 0) if recomputable else 0)
        try:
            return self.conn.alloc(nbytes, key=key, **kw)
        except _status.lookup("Exists"):
            # a key of an earlier forward whose graph is still alive: make this one unique
            return self.conn.alloc(nbytes, key="%s~%d" % (key[:_KEY_MAX - 12], next(self._gen)),
                                   **kw)

    def _unpack(self, s):
        if isinstance(s, _Kept):
            return s.tensor
        self._set_phase("backward")
        self._backward_layer(s.layer, s.microbatch)
        self.counts["unpacked"] += 1
        s.unpacked = True
        inv = s.inv
        if inv is not None and s.index in inv.cache:
            value, key = inv.cache.pop(s.index)
            self.live.remove(key)
            self.counts["recompute_cached"] += 1
            return value
        out = torch.empty((s.span,), dtype=s.dtype)
        nbytes = s.span * out.element_size()
        conn = self.conn
        addr = ctypes.c_void_p()
        try:
            st = conn._call("memsvc_acquire_map_ro", s.tensor.handle, ctypes.byref(addr),
                            what="acquire %r" % s.tensor.key)
        except _status.Error as e:
            if e.status not in _NO_ROOM:
                raise
            return self._unpack_unpinned(s, out, nbytes)
        try:
            if st != _RECOMPUTE:
                if addr.value:
                    ctypes.memmove(out.data_ptr(), addr.value, nbytes)
                else:
                    s.tensor.read_into_address(out.data_ptr(), nbytes)
        finally:
            conn._call("memsvc_release", s.tensor.handle, what="release %r" % s.tensor.key)
        if st == _RECOMPUTE:
            # Dropped by the daemon: run the module again. The bytes are not written back:
            # the tensor is freed once autograd is done with it.
            self.counts["recomputed"] += 1
            return self._recompute(s)
        return out.as_strided(s.shape, s.stride, 0)

    def _unpack_unpinned(self, s, out, nbytes):
        """The device has no room to make the tensor resident now (its HBM taken by tensors
        that cannot move yet): read its bytes from where they are (host), which memsvc_read
        allows, or recompute it if it was dropped (the read says so)."""
        self.counts["read_unpinned"] += 1
        try:
            s.tensor.read_into_address(out.data_ptr(), nbytes)
        except _status.Error as e:
            if e.status != "MEMSVC_ERR_ILLEGAL_STATE":
                raise
            self.counts["recomputed"] += 1
            return self._recompute(s)
        return out.as_strided(s.shape, s.stride, 0)

    def _backward_layer(self, layer, microbatch):
        """Hint LAYER_END / LAYER_BEGIN in phase backward when backward reaches another layer
        (from the tags of the tensors it asks for)."""
        if layer is None or self._bw_layer == (layer, microbatch):
            return
        if self._bw_layer is not None:
            self.conn.layer_end(self._bw_layer[0], self._bw_layer[1], phase="backward")
        self._bw_layer = (layer, microbatch)
        self.conn.layer_begin(layer, microbatch, phase="backward")

    # ---- recompute -----------------------------------------------------------------------
    def _recompute(self, s):
        inv = s.inv
        if inv is None or inv._keys is None:
            raise RuntimeError("memsvc: tensor %r was dropped and cannot be recomputed"
                               % s.tensor.key)
        captured = []

        def pack(t):
            captured.append(t)
            return t

        self._recomputing += 1
        self.counts["recompute_runs"] += 1
        try:
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(inv.rng_state)
                with torch.enable_grad(), \
                        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    inv.module(*inv.args)
        finally:
            self._recomputing -= 1
        if len(captured) != inv.packs:
            raise RuntimeError("memsvc: recomputing %s saved %d tensors, its forward saved %d: "
                               "its forward is not deterministic" % (inv.name, len(captured),
                                                                      inv.packs))
        value = self._check(s, captured[s.index].detach())
        # The other tensors of this call that the daemon dropped too come from this run
        # (kept here until backward asks for them) rather than from one run each.
        for index, ref in list(inv.pending.items()):
            other = ref()
            if other is None or other.unpacked or index in inv.cache or other.tensor is None:
                continue
            try:
                state = self.conn.lookup(other.tensor.key).info["state"]
            except _status.Error:
                continue
            if state == "dropped":
                v = self._check(other, captured[index].detach())
                inv.cache[index] = (v, self.live.add(v))
        return value

    def _check(self, s, t):
        if t.dtype != s.dtype or tuple(t.shape) != s.shape or tuple(t.stride()) != s.stride:
            raise RuntimeError("memsvc: recomputed %r is %s%s/%s, saved was %s%s/%s" % (
                s.tensor.key, t.dtype, tuple(t.shape), t.stride(), s.dtype, s.shape, s.stride))
        if s.crc is not None:
            base = t.as_strided((s.span,), (1,), t.storage_offset())
            if _crc(base) != s.crc:
                raise RuntimeError("memsvc: recomputed %r differs from what was saved "
                                   "(the forward of %s is not deterministic)"
                                   % (s.tensor.key, s.inv.name))
        return t

    def close(self):
        """Remove the module hooks and send what is queued."""
        self.detach()
        if not self.conn.closed:
            self.conn.flush()


def _crc(t):
    """CRC-32 of a 1-D contiguous tensor's bytes."""
    n = t.numel() * t.element_size()
    return zlib.crc32((ctypes.c_char * n).from_address(t.data_ptr()))


# ---- optimizer state ---------------------------------------------------------------------
class _Offloaded:
    """Stands in an optimizer's state for a tensor held by memsvcd until restore()."""

    __slots__ = ("tensor", "dtype", "shape")

    def __repr__(self):
        return "<offloaded to memsvcd: %r %s%s>" % (self.tensor.key, self.dtype, self.shape)


class OptimizerStateOffload:
    """An optimizer's state tensors held by memsvcd between steps.

        off = memsvc.torch.offload_optimizer_state(optimizer, conn)
        for ...:
            loss.backward()
            with off.restored():      # brings the state back, steps, offloads it again
                optimizer.step()

    offload() writes each state tensor of at least min_bytes (Adam's exp_avg and exp_avg_sq;
    not the scalar step count) to a durable memsvcd tensor of kind "optim" (allocated once,
    key PREFIX.RANK.PARAM_INDEX.NAME, rewritten at each offload) and lets go of it in the
    process; restore() reads them back into new tensors. Between the two, the optimizer's state
    holds placeholders: call restore() before state_dict(). close() restores and frees them.
    """

    def __init__(self, optimizer, conn, *, min_bytes=4096, key_prefix="optim"):
        self.optimizer = optimizer
        self.conn = conn
        self.min_bytes = min_bytes
        self.key_prefix = key_prefix
        self._tensors = {}        # (param index, state name) -> memsvc Tensor
        self.offloaded = False
        self.bytes = 0

    def _entries(self):
        index = 0
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                yield index, p, self.optimizer.state.get(p)
                index += 1

    def offload(self):
        """Move the state tensors to memsvcd."""
        if self.offloaded:
            return
        total = 0
        for index, p, state in self._entries():
            if not state:
                continue
            for name, v in list(state.items()):
                if not torch.is_tensor(v) or v.device.type != "cpu" or \
                        v.numel() * v.element_size() < self.min_bytes:
                    continue
                v = v.contiguous()
                n = v.numel() * v.element_size()
                t = self._tensors.get((index, name))
                if t is None or t.size != n:
                    if t is not None:
                        t.free()
                    t = self.conn.alloc(n, key="%s.%d.%d.%s" % (self.key_prefix, self.conn.rank,
                                                                  index, name),
                                        kind="optim", durable=True)
                    self._tensors[(index, name)] = t
                t.write(v)
                ph = _Offloaded()
                ph.tensor, ph.dtype, ph.shape = t, v.dtype, tuple(v.shape)
                state[name] = ph
                total += n
        self.bytes = total
        self.offloaded = True

    def restore(self):
        """Bring the state tensors back into the optimizer."""
        if not self.offloaded:
            return
        for _, p, state in self._entries():
            if not state:
                continue
            for name, v in list(state.items()):
                if isinstance(v, _Offloaded):
                    out = torch.empty(v.shape, dtype=v.dtype)
                    v.tensor.read_into(out)
                    state[name] = out
        self.offloaded = False

    @contextlib.contextmanager
    def restored(self):
        """The state back for the block (an optimizer step), offloaded again after it."""
        self.restore()
        yield self
        self.offload()

    def close(self):
        """Restore the state and free the memsvcd tensors."""
        self.restore()
        for t in self._tensors.values():
            t.free()
        self._tensors = {}


def offload_optimizer_state(optimizer, conn, **kw):
    """An OptimizerStateOffload for optimizer over conn, its state offloaded now."""
    off = OptimizerStateOffload(optimizer, conn, **kw)
    off.offload()
    return off
