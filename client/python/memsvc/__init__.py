"""memsvc - the Python client of memsvcd (libmemsvc over ctypes) and PyTorch integration.

    import memsvc
    with memsvc.Connection("127.0.0.1:13337", job=1) as conn:
        t = conn.alloc(1 << 20, key="L0.mb0.x")
        t.write(b"...")
        with t.acquire() as buf:          # a memoryview: in place when mapped, else a copy
            ...
        t.free()

Statuses are exceptions: memsvc.Error (with .status, the name such as "MEMSVC_ERR_NOT_FOUND",
and .code) and one subclass per status (memsvc.NotFound, memsvc.NoMemory, memsvc.Recompute,
...), made from the library's status table. libmemsvc.so is loaded at the first Connection,
so that importing this package (and its pure-Python modules) works without it. memsvc.torch
hands PyTorch's saved activations and optimizer state to memsvcd (docs/python.md).
"""

from ._lib import LibraryNotFound
from ._status import Error, status_classes
from .client import KINDS, PHASES, STATES, Connection, Pin, Tensor, version

__version__ = "0.2.0"

__all__ = ["Connection", "Tensor", "Pin", "Error", "LibraryNotFound", "KINDS", "PHASES",
           "STATES", "version", "status_classes"]


def __getattr__(name):
    """memsvc.NotFound and the other status classes, made on first use."""
    from . import _status
    if name[:1].isupper():
        cls = _status.lookup(name)
        if cls is not None:
            return cls
    raise AttributeError("module 'memsvc' has no attribute %r" % name)


def __dir__():
    return sorted(list(globals()) + list(status_classes()))
