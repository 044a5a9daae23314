"""client.py - Connection, Tensor and Pin: libmemsvc (client/memsvc.h) for Python, over ctypes.

A Connection is a session with memsvcd (memsvc_connect); a Tensor is one allocation of it; a
Pin is an acquire (the tensor resident and pinned on its device) that ends with its release,
as a context manager. The bytes of a pinned tensor are a memoryview: in place over the
daemon's memory when the connection maps it (memsvc_acquire_map: the local path of a daemon in
backed memory mode), else a copy read with memsvc_read and, for a writable pin, written back
with memsvc_write at the release.
"""

import collections
import ctypes
import itertools
import os
import threading

from . import _lib
from ._status import Error, check, error

KINDS = ("param", "grad", "optim", "activation", "workspace")
PHASES = ("none", "forward", "backward", "optimizer")
STATES = ("on_device", "moving_out", "on_host", "moving_in", "dropped", "on_disk", "freed",
          "on_peer")

_OK, _RECOMPUTE = 0, 2
_HINT_STEP_BEGIN, _HINT_STEP_END, _HINT_LAYER_BEGIN, _HINT_LAYER_END = 0, 1, 2, 3
_HINT_PHASE, _HINT_UPCOMING = 4, 5
_HINT_HANDLES_MAX = 64


def version():
    """(library version "MAJOR.MINOR.PATCH", wire protocol version) of the loaded libmemsvc."""
    proto = ctypes.c_uint32()
    v = _lib.lib().memsvc_version(ctypes.byref(proto))
    return v.decode(), proto.value


def _tag(v):
    return _lib.TAG_NONE if v is None else int(v)


def _kind(kind):
    if isinstance(kind, int):
        return kind
    try:
        return KINDS.index(kind)
    except ValueError:
        raise ValueError("unknown tensor kind %r (one of %s)" % (kind, ", ".join(KINDS))) from None


def _buffer_pointer(data):
    """(pointer, nbytes, keepalive) for the bytes of data: a bytes-like object, or a torch tensor
    (contiguous, on the CPU). Read-only buffers other than bytes are copied."""
    if hasattr(data, "data_ptr") and hasattr(data, "is_contiguous"):
        if not data.is_contiguous():
            raise ValueError("tensor is not contiguous: pass tensor.contiguous()")
        return data.data_ptr(), data.numel() * data.element_size(), data
    if isinstance(data, bytes):
        return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value, len(data), data
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise ValueError("buffer is not C-contiguous")
    mv = mv.cast("B")
    if mv.readonly:
        b = bytes(mv)
        return ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value, len(b), b
    arr = (ctypes.c_char * mv.nbytes).from_buffer(mv)
    return ctypes.addressof(arr), mv.nbytes, (arr, mv)


class Connection:
    """A session with memsvcd: Connection(address=None, *, job, rank=0, device=0, ...).

    address: "HOST:PORT" (default: the library's, 127.0.0.1:13337). job (>= 1), rank, device:
    who this process is. name: shown in the daemon's log. timeout: seconds, bound on connect and
    on each blocking call (default: the library's, 30 s). unix_path: the daemon's local socket
    when it is not the default (memsvcd --unix). tcp=True: never the local path. sync=True:
    free, release and hints wait for the daemon's answer and raise its error (else they are
    one-way and their errors come from flush()). cork_us: see memsvc_conn_params_t.
    secret_file: the cluster or job secret proven to a daemon reached over tcp (default: the
    library's, $MEMSVC_SECRET_FILE; docs/security.md).

    One thread at a time uses a connection (calls are serialized by a lock). A context manager:
    `with Connection(...) as conn:` closes it at the end.
    """

    def __init__(self, address=None, *, job=1, rank=0, device=0, name=None, timeout=None,
                 unix_path=None, tcp=False, sync=False, cork_us=None, control=False,
                 secret_file=None):
        self._h = None
        lib = _lib.lib()
        self._lib = lib
        self._lock = threading.RLock()
        self._pending = collections.deque()   # (function name, handle): see free_later
        self._keys = itertools.count()
        p = _lib.ConnParams()
        p.field_mask = _lib.CONN_FIELD_JOB | _lib.CONN_FIELD_RANK | _lib.CONN_FIELD_DEVICE
        p.job, p.rank, p.device = job, rank, device
        if address is not None:
            p.field_mask |= _lib.CONN_FIELD_ADDRESS
            p.address = address.encode()
        if name is not None:
            p.field_mask |= _lib.CONN_FIELD_NAME
            p.name = name.encode()
        if timeout is not None:
            p.field_mask |= _lib.CONN_FIELD_TIMEOUT_MS
            p.timeout_ms = max(1, int(timeout * 1000))
        if unix_path is not None:
            p.field_mask |= _lib.CONN_FIELD_UNIX_PATH
            p.unix_path = os.fsencode(unix_path)
        if secret_file is not None:
            p.field_mask |= _lib.CONN_FIELD_SECRET_FILE
            p.secret_file = os.fsencode(secret_file)
        if cork_us is not None:
            p.field_mask |= _lib.CONN_FIELD_CORK_US
            p.cork_us = cork_us
        flags = ((_lib.CONN_TCP if tcp else 0) | (_lib.CONN_SYNC if sync else 0) |
                 (_lib.CONN_CONTROL if control else 0))
        if flags:
            p.field_mask |= _lib.CONN_FIELD_FLAGS
            p.flags = flags
        h = ctypes.c_void_p()
        check(lib.memsvc_connect(ctypes.byref(p), ctypes.byref(h)),
              "connect to %s" % (address or "the default address"))
        self._h = h
        self.address = address
        self.job, self.rank, self.device = job, rank, device

    # ---- life ----------------------------------------------------------------------------
    def close(self):
        """Close the session: the daemon releases its pins and frees its non-durable tensors."""
        with self._lock:
            if self._h is None:
                return
            self._drain()
            self._lib.memsvc_close(self._h)
            self._h = None

    @property
    def closed(self):
        return self._h is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_h", None) is not None:
            try:
                self.close()
            except Exception:   # interpreter shutdown: the daemon ends the session anyway
                pass

    def __repr__(self):
        state = "closed" if self._h is None else self.transport
        return "<memsvc.Connection job=%d rank=%d device=%d %s>" % (self.job, self.rank,
                                                                     self.device, state)

    def _conn(self):
        if self._h is None:
            raise Error("the connection is closed")
        return self._h

    def _drain(self):
        """Send the one-way operations queued by free_later and release_later (caller holds
        the lock). Their errors are the daemon's deferred errors, as for free()."""
        while self._pending:
            fn, handle = self._pending.popleft()
            getattr(self._lib, fn)(self._h, handle)

    def _call(self, fn, *args, what=""):
        """Call the library function `fn` on this connection; raise its error (status < 0)."""
        with self._lock:
            h = self._conn()
            if self._pending:
                self._drain()
            st = getattr(self._lib, fn)(h, *args)
        if st < 0:
            raise error(st, what or fn)
        return st

    def free_later(self, handle):
        """Queue memsvc_free(handle) for this connection's next call. Safe from __del__ and any
        thread: nothing is sent from here."""
        self._pending.append(("memsvc_free", handle))

    def release_later(self, handle):
        """Queue memsvc_release(handle) like free_later."""
        self._pending.append(("memsvc_release", handle))

    # ---- information ---------------------------------------------------------------------
    @property
    def transport(self):
        """The path and UCX lanes this connection uses (memsvc_conn_transport)."""
        with self._lock:
            return self._lib.memsvc_conn_transport(self._conn()).decode()

    @property
    def mapped(self):
        """True when tensors of this connection's device are mapped into this process (the
        local path to a daemon in backed mode without --no-map)."""
        return ", mapped," in self.transport

    def ping(self):
        """Round trip to the daemon; returns its duration in seconds."""
        rtt = ctypes.c_uint64()
        self._call("memsvc_ping", ctypes.byref(rtt))
        return rtt.value / 1e9

    def stats(self):
        """The daemon's figures (memsvc_stats) as a dict; "devices" lists each device's."""
        s = _lib.Stats()
        self._call("memsvc_stats", ctypes.byref(s))
        out = {}
        for name, _ in _lib.Stats._fields_:
            if name == "dev":
                continue
            v = getattr(s, name)
            out[name] = v.decode(errors="replace") if isinstance(v, bytes) else v
        out["devices"] = [_dev_stats(s.dev[i]) for i in range(s.num_devices)]
        return out

    def query(self):
        """The connection's own counters (memsvc_conn_query): one-way operations, deferred
        errors, session id and protocol."""
        a = _lib.ConnAttr()
        a.field_mask = (_lib.CONN_ATTR_FIELD_ONEWAY | _lib.CONN_ATTR_FIELD_ERRORS |
                        _lib.CONN_ATTR_FIELD_SESSION)
        self._call("memsvc_conn_query", ctypes.byref(a))
        return {name: getattr(a, name) for name, _ in _lib.ConnAttr._fields_[1:]}

    # ---- tensors -------------------------------------------------------------------------
    def alloc(self, size, *, key=None, durable=False, recomputable=False, kind="activation",
              layer=None, microbatch=None, expert=None, stage=None, step=None, recompute_ns=0,
              pin=False):
        """Allocate `size` bytes on the session's device; returns a Tensor.

        key: unique among the job's live tensors (default: one made from the pid and a
        counter). kind: "param", "grad", "optim", "activation" (default) or "workspace".
        durable: never dropped, kept for re-attach after a crash. recomputable: the daemon may
        drop it; the owner recomputes it when an acquire answers RECOMPUTE (recompute_ns: the
        device time that costs). layer, microbatch, expert, stage, step: tags for policies.
        pin=True: allocated and acquired in one (release it with release()).
        Errors: memsvc.Exists, memsvc.TooLarge, memsvc.NoMemory, memsvc.Fragmented, ...
        """
        if key is None:
            key = "py%d.%d" % (os.getpid(), next(self._keys))
        p = _lib.AllocParams()
        p.field_mask = (_lib.ALLOC_FIELD_KIND | _lib.ALLOC_FIELD_TAGS |
                        _lib.ALLOC_FIELD_RECOMPUTE_NS | _lib.ALLOC_FIELD_FLAGS)
        p.kind = _kind(kind)
        p.tags = _lib.Tags(_tag(layer), _tag(microbatch), _tag(expert), _tag(stage), _tag(step))
        p.recompute_ns = int(recompute_ns)
        p.flags = ((_lib.ALLOC_DURABLE if durable else 0) |
                   (_lib.ALLOC_RECOMPUTABLE if recomputable else 0) |
                   (_lib.ALLOC_PIN if pin else 0))
        h = _lib.c_handle()
        self._call("memsvc_alloc", key.encode(), size, ctypes.byref(p), ctypes.byref(h),
                   what="alloc %r, %d bytes" % (key, size))
        return Tensor(self, h.value, key, size, kind=KINDS[p.kind] if p.kind < len(KINDS) else kind,
                      durable=durable, recomputable=recomputable)

    def lookup(self, key):
        """The live tensor of this job called `key` (memsvc.NotFound if none); this session
        owns it from now on (re-attach to a durable tensor after a crash)."""
        info = _lib.TensorInfo()
        self._call("memsvc_lookup", key.encode(), ctypes.byref(info), what="lookup %r" % key)
        t = Tensor(self, info.handle, info.key.decode(), info.size,
                   kind=KINDS[info.kind] if info.kind < len(KINDS) else info.kind,
                   durable=info.durable, recomputable=info.recomputable)
        t.info = _info_dict(info)
        return t

    # ---- hints, flush --------------------------------------------------------------------
    def _hint(self, type_, step=None, layer=None, microbatch=None, phase="none", handles=()):
        hint = _lib.Hint()
        hint.type = type_
        hint.step, hint.layer, hint.microbatch = _tag(step), _tag(layer), _tag(microbatch)
        hint.phase = PHASES.index(phase) if isinstance(phase, str) else int(phase)
        arr = None
        if handles:
            arr = (_lib.c_handle * len(handles))(*handles)
            hint.handles = arr
            hint.num_handles = len(handles)
        self._call("memsvc_hint", ctypes.byref(hint), what="hint")

    def step_begin(self, step):
        self._hint(_HINT_STEP_BEGIN, step=step)

    def step_end(self, step):
        self._hint(_HINT_STEP_END, step=step)

    def layer_begin(self, layer, microbatch=None, phase="none"):
        """Hint that a layer's forward or backward (phase) begins (vdnn swaps a layer's
        activations out at its forward's end and prefetches them at its backward's begin)."""
        self._hint(_HINT_LAYER_BEGIN, layer=layer, microbatch=microbatch, phase=phase)

    def layer_end(self, layer, microbatch=None, phase="none"):
        self._hint(_HINT_LAYER_END, layer=layer, microbatch=microbatch, phase=phase)

    def phase(self, phase):
        """Hint the training phase: "forward", "backward", "optimizer" or "none"."""
        self._hint(_HINT_PHASE, phase=phase)

    def upcoming(self, tensors):
        """Hint that these tensors (Tensor objects or handles) are about to be used."""
        handles = [t.handle if isinstance(t, Tensor) else int(t) for t in tensors]
        for i in range(0, len(handles), _HINT_HANDLES_MAX):
            self._hint(_HINT_UPCOMING, handles=handles[i:i + _HINT_HANDLES_MAX])

    def flush(self):
        """Send the queued one-way operations and wait until the daemon has handled them.
        Raises memsvc.Deferred (with .errors, a list of dicts) when some of them failed."""
        with self._lock:
            h = self._conn()
            self._drain()
            st = self._lib.memsvc_flush(h)
        if st == 0:
            return
        exc = error(st, "flush")
        exc.errors = self.errors() if exc.status == "MEMSVC_ERR_DEFERRED" else []
        if exc.errors:
            exc.args = (exc.message + ": " + "; ".join(
                "%s of handle %d: %s" % (e["op"], e["handle"], e["message"])
                for e in exc.errors[:4]),)
        raise exc

    def errors(self, max_errors=256):
        """Take the deferred errors of failed one-way operations, oldest first."""
        buf = (_lib.DeferredError * max_errors)()
        with self._lock:
            n = self._lib.memsvc_errors(self._conn(), buf, max_errors)
        ops = {2: "alloc", 3: "free", 4: "acquire", 5: "release", 9: "hint"}
        return [{"status": self._lib.memsvc_status_name(e.status).decode(),
                 "op": ops.get(e.op, str(e.op)), "handle": e.handle, "seq": e.seq,
                 "message": e.message.decode(errors="replace")} for e in buf[:n]]


def _dev_stats(d):
    out = {}
    for name, _ in _lib.DevStats._fields_:
        v = getattr(d, name)
        if name.endswith("_by_state"):
            v = dict(zip(STATES, list(v)))
        elif name.endswith("_by_kind"):
            v = dict(zip(KINDS, list(v)))
        out[name] = v
    return out


def _info_dict(info):
    return {"handle": info.handle, "key": info.key.decode(errors="replace"), "size": info.size,
            "kind": KINDS[info.kind] if info.kind < len(KINDS) else info.kind,
            "state": STATES[info.state] if info.state < len(STATES) else info.state,
            "device": info.device, "job": info.job, "rank": info.rank, "pins": info.pins,
            "durable": info.durable, "recomputable": info.recomputable,
            "tags": {n: getattr(info.tags, n) for n, _ in _lib.Tags._fields_}}


class Tensor:
    """One allocation in memsvcd: handle, key, size (bytes), kind, durable, recomputable."""

    def __init__(self, conn, handle, key, size, *, kind="activation", durable=False,
                 recomputable=False):
        self.conn = conn
        self.handle = handle
        self.key = key
        self.size = size
        self.kind = kind
        self.durable = durable
        self.recomputable = recomputable
        self.freed = False

    def __repr__(self):
        return "<memsvc.Tensor %r handle=%d size=%d %s%s>" % (
            self.key, self.handle, self.size, self.kind, " freed" if self.freed else "")

    def write(self, data, offset=0):
        """Copy data (a bytes-like object, a numpy array or a contiguous CPU torch tensor) into
        the tensor at `offset` (memsvc_write)."""
        ptr, n, keep = _buffer_pointer(data)
        self.write_from(ptr, n, offset)
        del keep

    def write_from(self, address, nbytes, offset=0):
        """Copy nbytes from the process address `address` into the tensor at `offset`."""
        self.conn._call("memsvc_write", self.handle, offset, ctypes.c_void_p(address), nbytes,
                        what="write %r" % self.key)

    def read(self, nbytes=None, offset=0):
        """The tensor's bytes from `offset` (all of them by default) as bytes (memsvc_read)."""
        if nbytes is None:
            nbytes = self.size - offset
        buf = ctypes.create_string_buffer(nbytes)
        self.read_into_address(ctypes.addressof(buf), nbytes, offset)
        return buf.raw

    def read_into(self, out, offset=0):
        """Fill `out` (a writable bytes-like object, numpy array or contiguous CPU torch
        tensor) with the tensor's bytes from `offset`."""
        ptr, n, keep = _buffer_pointer(out)
        if isinstance(keep, bytes):
            raise ValueError("read_into needs a writable buffer")
        self.read_into_address(ptr, n, offset)
        del keep

    def read_into_address(self, address, nbytes, offset=0):
        self.conn._call("memsvc_read", self.handle, offset, ctypes.c_void_p(address), nbytes,
                        what="read %r" % self.key)

    def acquire(self, write=False, allow_recompute=False):
        """Make the tensor resident and pinned on its device; returns a Pin, a context manager
        that releases it on exit (exception or not) and whose `with` gives the memoryview of
        the tensor's bytes (pin.view): `with t.acquire() as buf: numpy.frombuffer(buf, ...)`.

        write=False pins for reading: the view is read-only. A dropped tensor raises
        memsvc.Recompute (released again) unless allow_recompute=True: then pin.recompute is
        True, the view is writable and the caller fills it with the recomputed bytes before
        the release.
        """
        return Pin(self, write, allow_recompute)

    def free(self):
        """End the tensor (memsvc_free, one-way: errors come from Connection.flush)."""
        if not self.freed:
            self.freed = True
            self.conn._call("memsvc_free", self.handle, what="free %r" % self.key)

    def release(self):
        """Unpin after alloc(pin=True); a Pin's own release is Pin.release()."""
        self.conn._call("memsvc_release", self.handle, what="release %r" % self.key)


class Pin:
    """An acquire of a Tensor, released by release() or at the end of a `with` block.

    view: memoryview of the tensor's bytes (format "B", size bytes). mapped: True when the view
    is the daemon's memory itself (no copy), False when it is a copy in this process (written
    back at the release when the pin is writable and the block did not raise). recompute: True
    when the daemon had dropped the tensor (acquire(allow_recompute=True)): its bytes are
    undefined until the caller writes them. address: the mapped address, or None.

    The view (and numpy arrays or torch tensors made from it) must not be used after the
    release: the daemon may move other bytes there. Copy out what must outlive the pin.
    """

    def __init__(self, tensor, write, allow_recompute):
        self.tensor = tensor
        self.write = bool(write)
        self.recompute = False
        self.address = None
        self.view = None
        self._buf = None
        self._released = True     # until the acquire succeeds
        conn = tensor.conn
        addr = ctypes.c_void_p()
        fn = "memsvc_acquire_map" if self.write else "memsvc_acquire_map_ro"
        st = conn._call(fn, tensor.handle, ctypes.byref(addr), what="acquire %r" % tensor.key)
        self._released = False
        self.recompute = (st == _RECOMPUTE)
        if self.recompute and not allow_recompute:
            self._released = True
            conn._call("memsvc_release", tensor.handle, what="release %r" % tensor.key)
            raise error(_RECOMPUTE, "acquire %r: acquire(allow_recompute=True) and write it"
                        % tensor.key)
        # A read pin of a dropped tensor must be written: it gets a copy, written at release.
        if addr.value and (self.write or not self.recompute):
            self.address = addr.value
            arr = (ctypes.c_char * tensor.size).from_address(addr.value)
            self.view = memoryview(arr).cast("B")
            if not self.write:
                self.view = self.view.toreadonly()
        else:
            self._buf = bytearray(tensor.size)
            if not self.recompute:
                try:
                    tensor.read_into(self._buf)
                except BaseException:
                    self.release(commit=False)
                    raise
            self.view = memoryview(self._buf)
            if not (self.write or self.recompute):
                self.view = self.view.toreadonly()

    @property
    def mapped(self):
        return self.address is not None

    @property
    def writable(self):
        return not self.view.readonly

    def numpy(self, dtype="uint8", shape=None):
        """The bytes as a numpy array of dtype (and shape), without a copy of the view."""
        import numpy
        a = numpy.frombuffer(self.view, dtype=dtype)
        return a if shape is None else a.reshape(shape)

    def torch(self, dtype=None, shape=None):
        """The bytes as a torch tensor of dtype (and shape) over the view (torch.frombuffer).
        A read-only pin gives a tensor that must not be written."""
        import torch
        import warnings
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            t = torch.frombuffer(self.view, dtype=dtype or torch.uint8)
        return t if shape is None else t.view(shape)

    def release(self, commit=True):
        """Write a copied, writable view back (unless commit=False) and unpin. Idempotent."""
        if self._released:
            return
        self._released = True
        t = self.tensor
        try:
            if commit and self._buf is not None and (self.write or self.recompute):
                t.write(self._buf)
        finally:
            t.conn._call("memsvc_release", t.handle, what="release %r" % t.key)
            try:
                self.view.release()   # fails while numpy/torch still export it: harmless
            except (BufferError, AttributeError):
                pass

    def __del__(self):
        # a Pin dropped without its release: unpin with the connection's next call
        if not getattr(self, "_released", True):
            self._released = True
            try:
                self.tensor.conn.release_later(self.tensor.handle)
            except Exception:
                pass

    def __enter__(self):
        return self.view

    def __exit__(self, exc_type, exc, tb):
        self.release(commit=exc_type is None)
        return False

    def __repr__(self):
        return "<memsvc.Pin %r %s%s%s>" % (self.tensor.key, "mapped" if self.mapped else "copied",
                                            " write" if self.write else "",
                                            " recompute" if self.recompute else "")
