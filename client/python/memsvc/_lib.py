"""_lib.py - loading libmemsvc.so with ctypes, and the C structs and prototypes of client/memsvc.h.

The library is loaded on first use (memsvc.lib()), not at import, so that the pure-Python
parts of the package work on a machine without it. Where it is looked for, in order:

1. the directory named by the environment variable MEMSVC_LIB (a build tree's build/lib);
2. next to the package: an installed package lives in $PREFIX/lib/python3/dist-packages/memsvc,
   the library in $PREFIX/lib; a source tree's client/python/memsvc finds ../../../build/lib;
3. the dynamic loader's path: libmemsvc.so.0 (the soname), then ctypes.util.find_library.
"""

import ctypes
import ctypes.util
import os
import threading

SONAME = "libmemsvc.so.0"

# Sizes and counts fixed by the header (memsvc.h, memsvc_types.h); the layout test in
# tests/python/test_binding.py compares these structs with what the C compiler says.
KEY_MAX = 255
MESSAGE_MAX = 127
MAX_DEVICES = 64
STATE_COUNT = 8  # memsvc_state_t, on_peer included
KIND_COUNT = 5
TAG_NONE = -1

c_status = ctypes.c_int  # memsvc_status_t (an enum: int)
c_handle = ctypes.c_uint64


class Tags(ctypes.Structure):
    _fields_ = [("layer", ctypes.c_int32), ("microbatch", ctypes.c_int32),
                ("expert", ctypes.c_int32), ("stage", ctypes.c_int32), ("step", ctypes.c_int32)]


class ConnParams(ctypes.Structure):
    _fields_ = [("field_mask", ctypes.c_uint64), ("address", ctypes.c_char_p),
                ("job", ctypes.c_uint32), ("rank", ctypes.c_uint32), ("device", ctypes.c_uint32),
                ("timeout_ms", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("name", ctypes.c_char_p), ("cork_us", ctypes.c_uint32),
                ("unix_path", ctypes.c_char_p), ("secret_file", ctypes.c_char_p)]


CONN_FIELD_ADDRESS = 1 << 0
CONN_FIELD_JOB = 1 << 1
CONN_FIELD_RANK = 1 << 2
CONN_FIELD_DEVICE = 1 << 3
CONN_FIELD_TIMEOUT_MS = 1 << 4
CONN_FIELD_FLAGS = 1 << 5
CONN_FIELD_NAME = 1 << 6
CONN_FIELD_CORK_US = 1 << 7
CONN_FIELD_UNIX_PATH = 1 << 8
CONN_FIELD_SECRET_FILE = 1 << 9

CONN_CONTROL = 1 << 0
CONN_SYNC = 1 << 1
CONN_TCP = 1 << 2


class AllocParams(ctypes.Structure):
    _fields_ = [("field_mask", ctypes.c_uint64), ("kind", ctypes.c_int), ("tags", Tags),
                ("recompute_ns", ctypes.c_uint64), ("flags", ctypes.c_uint32)]


ALLOC_FIELD_KIND = 1 << 0
ALLOC_FIELD_TAGS = 1 << 1
ALLOC_FIELD_RECOMPUTE_NS = 1 << 2
ALLOC_FIELD_FLAGS = 1 << 3

ALLOC_DURABLE = 1 << 0
ALLOC_RECOMPUTABLE = 1 << 1
ALLOC_PIN = 1 << 2


class TensorInfo(ctypes.Structure):
    _fields_ = [("handle", c_handle), ("key", ctypes.c_char * (KEY_MAX + 1)),
                ("size", ctypes.c_uint64), ("kind", ctypes.c_int), ("state", ctypes.c_int),
                ("device", ctypes.c_uint32), ("job", ctypes.c_uint32), ("rank", ctypes.c_uint32),
                ("pins", ctypes.c_uint32), ("durable", ctypes.c_bool),
                ("recomputable", ctypes.c_bool), ("tags", Tags)]


class Hint(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("step", ctypes.c_int32), ("layer", ctypes.c_int32),
                ("microbatch", ctypes.c_int32), ("phase", ctypes.c_int),
                ("handles", ctypes.POINTER(c_handle)), ("num_handles", ctypes.c_size_t)]


class DeferredError(ctypes.Structure):
    _fields_ = [("status", c_status), ("op", ctypes.c_int), ("handle", c_handle),
                ("seq", ctypes.c_uint64), ("message", ctypes.c_char * (MESSAGE_MAX + 1))]


class ConnAttr(ctypes.Structure):
    _fields_ = [("field_mask", ctypes.c_uint64), ("oneway_issued", ctypes.c_uint64),
                ("oneway_completed", ctypes.c_uint64), ("oneway_failed", ctypes.c_uint64),
                ("queued", ctypes.c_uint32), ("errors_pending", ctypes.c_uint32),
                ("errors_lost", ctypes.c_uint64), ("session", ctypes.c_uint64),
                ("protocol", ctypes.c_uint32)]


CONN_ATTR_FIELD_ONEWAY = 1 << 0
CONN_ATTR_FIELD_ERRORS = 1 << 1
CONN_ATTR_FIELD_SESSION = 1 << 2

_U64 = ctypes.c_uint64


class DevStats(ctypes.Structure):
    _fields_ = ([(n, _U64) for n in ("capacity", "allocated", "reserved", "free", "largest_free")] +
                [("fragmentation", ctypes.c_double), ("peak_reserved", _U64),
                 ("tensors_by_state", _U64 * STATE_COUNT), ("bytes_by_state", _U64 * STATE_COUNT),
                 ("tensors_by_kind", _U64 * KIND_COUNT), ("resident_by_kind", _U64 * KIND_COUNT)] +
                [(n, _U64) for n in ("pinned_tensors", "pinned_bytes", "swap_out_bytes",
                                     "swap_outs", "swap_in_bytes", "swap_ins", "spill_bytes",
                                     "drops", "recomputes", "stall_ns", "stalls", "oom_events",
                                     "fragmented_events")])


class JobStats(ctypes.Structure):
    _fields_ = ([("job", ctypes.c_uint32)] +
                [(n, _U64) for n in ("tensors", "hbm_bytes", "host_bytes", "disk_bytes",
                                     "inflight_bytes", "quota_refused")])


class SessionStats(ctypes.Structure):
    _fields_ = ([("id", _U64)] + [(n, ctypes.c_uint32) for n in ("job", "rank", "device", "pid",
                                                                  "flags")] +
                [(n, _U64) for n in ("pins", "oldest_pin_ns", "idle_ns", "inflight_bytes",
                                     "queued", "requests", "errors")])


STATS_JOBS_MAX = 32
STATS_SESSIONS_MAX = 64


class Stats(ctypes.Structure):
    _fields_ = ([("node", ctypes.c_char * 32), ("mode", ctypes.c_char * 16),
                 ("policy", ctypes.c_char * 64), ("transport", ctypes.c_char * 128)] +
                [(n, _U64) for n in ("uptime_ns", "host_capacity", "host_used", "host_peak",
                                     "disk_capacity", "disk_used", "live_tensors",
                                     "moves_in_flight", "sessions", "sessions_total", "orphans",
                                     "requests", "errors")] +
                [("num_devices", ctypes.c_uint32), ("dev", DevStats * MAX_DEVICES)] +
                [(n, _U64) for n in ("durable_tensors", "durable_bytes", "durable_recovered",
                                     "durable_corrupt", "sessions_refused", "handshake_timeouts",
                                     "overloads", "deferred", "evictions")] +
                [("num_jobs", ctypes.c_uint32), ("num_sessions", ctypes.c_uint32),
                 ("job", JobStats * STATS_JOBS_MAX),
                 ("session", SessionStats * STATS_SESSIONS_MAX)] +
                [(n, _U64) for n in ("fast_acquires", "fast_published", "fast_revoked",
                                     "fast_held")])


_P = ctypes.POINTER
c_conn = ctypes.c_void_p

# name: (restype, argtypes)
_PROTOTYPES = {
    "memsvc_strerror": (ctypes.c_char_p, [c_status]),
    "memsvc_status_name": (ctypes.c_char_p, [c_status]),
    "memsvc_kind_name": (ctypes.c_char_p, [ctypes.c_int]),
    "memsvc_state_name": (ctypes.c_char_p, [ctypes.c_int]),
    "memsvc_phase_name": (ctypes.c_char_p, [ctypes.c_int]),
    "memsvc_version": (ctypes.c_char_p, [_P(ctypes.c_uint32)]),
    "memsvc_connect": (c_status, [_P(ConnParams), _P(c_conn)]),
    "memsvc_close": (None, [c_conn]),
    "memsvc_conn_transport": (ctypes.c_char_p, [c_conn]),
    "memsvc_ping": (c_status, [c_conn, _P(ctypes.c_uint64)]),
    "memsvc_alloc": (c_status, [c_conn, ctypes.c_char_p, ctypes.c_uint64, _P(AllocParams),
                                _P(c_handle)]),
    "memsvc_free": (c_status, [c_conn, c_handle]),
    "memsvc_write": (c_status, [c_conn, c_handle, ctypes.c_uint64, ctypes.c_void_p,
                                ctypes.c_uint64]),
    "memsvc_read": (c_status, [c_conn, c_handle, ctypes.c_uint64, ctypes.c_void_p,
                               ctypes.c_uint64]),
    "memsvc_acquire": (c_status, [c_conn, c_handle]),
    "memsvc_acquire_map": (c_status, [c_conn, c_handle, _P(ctypes.c_void_p)]),
    "memsvc_acquire_map_ro": (c_status, [c_conn, c_handle, _P(ctypes.c_void_p)]),
    "memsvc_release": (c_status, [c_conn, c_handle]),
    "memsvc_lookup": (c_status, [c_conn, ctypes.c_char_p, _P(TensorInfo)]),
    "memsvc_hint": (c_status, [c_conn, _P(Hint)]),
    "memsvc_flush": (c_status, [c_conn]),
    "memsvc_errors": (ctypes.c_size_t, [c_conn, _P(DeferredError), ctypes.c_size_t]),
    "memsvc_conn_query": (c_status, [c_conn, _P(ConnAttr)]),
    "memsvc_stats": (c_status, [c_conn, _P(Stats)]),
}

_lock = threading.Lock()
_lib = None
_load_error = None


def _candidates():
    """Paths to try, in order (see the module's docstring)."""
    out = []
    env = os.environ.get("MEMSVC_LIB")
    if env:
        out += [os.path.join(env, SONAME), os.path.join(env, "libmemsvc.so")]
    here = os.path.dirname(os.path.abspath(__file__))
    up3 = os.path.normpath(os.path.join(here, "..", "..", ".."))
    out += [os.path.join(up3, SONAME),                      # $PREFIX/lib (installed)
            os.path.join(up3, "build", "lib", SONAME)]      # source tree
    return out


def _declare(lib):
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def lib():
    """The loaded library (loads it on first call); raises LibraryNotFound if it cannot."""
    global _lib, _load_error
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for path in _candidates():
            if os.path.exists(path):
                try:
                    _lib = _declare(ctypes.CDLL(path))
                    return _lib
                except OSError as e:
                    tried.append("%s: %s" % (path, e))
            else:
                tried.append("%s: not there" % path)
        for name in (SONAME, ctypes.util.find_library("memsvc")):
            if not name:
                continue
            try:
                _lib = _declare(ctypes.CDLL(name))
                return _lib
            except OSError as e:
                tried.append("%s: %s" % (name, e))
        _load_error = "; ".join(tried)
        raise LibraryNotFound("libmemsvc could not be loaded (set MEMSVC_LIB to the directory "
                              "of libmemsvc.so.0): " + _load_error)


def loaded():
    """True when the library has been loaded."""
    return _lib is not None


class LibraryNotFound(ImportError):
    """libmemsvc.so could not be found or loaded."""
