"""_status.py - memsvc statuses as Python exceptions: memsvc.Error and one subclass per status.

The classes are made from the library's own status table (memsvc_status_name and
memsvc_strerror over the codes it knows), so a status added to the C library has its class
here without a change to this package: MEMSVC_ERR_NOT_FOUND becomes memsvc.NotFound,
MEMSVC_ERR_NO_MEMORY memsvc.NoMemory, MEMSVC_RECOMPUTE memsvc.Recompute. Until the library is
loaded (or when it cannot be), the statuses of the header this package was written against
stand in, so that `except memsvc.NotFound:` works whatever happened.
"""

from . import _lib

# The header's statuses (client/memsvc_status.h) at the time of writing: used only when the
# library cannot be asked. The library's table wins where they differ.
_KNOWN = {
    1: "MEMSVC_INPROGRESS", 2: "MEMSVC_RECOMPUTE",
    -1: "MEMSVC_ERR_INVALID_PARAM", -2: "MEMSVC_ERR_NO_MEMORY", -3: "MEMSVC_ERR_FRAGMENTED",
    -4: "MEMSVC_ERR_HOST_MEMORY", -5: "MEMSVC_ERR_NO_RESOURCE", -6: "MEMSVC_ERR_NOT_FOUND",
    -7: "MEMSVC_ERR_EXISTS", -8: "MEMSVC_ERR_ILLEGAL_STATE", -9: "MEMSVC_ERR_PINNED",
    -10: "MEMSVC_ERR_NOT_PINNED", -11: "MEMSVC_ERR_OUT_OF_RANGE", -12: "MEMSVC_ERR_UNKNOWN_KEY",
    -13: "MEMSVC_ERR_PARSE", -14: "MEMSVC_ERR_IO", -15: "MEMSVC_ERR_PROTOCOL",
    -16: "MEMSVC_ERR_VERSION", -17: "MEMSVC_ERR_ACCESS", -18: "MEMSVC_ERR_TOO_LARGE",
    -19: "MEMSVC_ERR_TRANSPORT", -20: "MEMSVC_ERR_TIMEOUT", -21: "MEMSVC_ERR_UNSUPPORTED",
    -22: "MEMSVC_ERR_BUSY", -23: "MEMSVC_ERR_CANCELED", -24: "MEMSVC_ERR_FORMAT",
    -25: "MEMSVC_ERR_DEFERRED", -26: "MEMSVC_ERR_PERMISSION", -27: "MEMSVC_ERR_AUTH",
    -28: "MEMSVC_ERR_SHUTDOWN", -29: "MEMSVC_ERR_QUOTA", -30: "MEMSVC_ERR_OVERLOAD",
}
_UNKNOWN_NAME = "MEMSVC_ERR_UNKNOWN"  # what memsvc_status_name gives for a code it does not know
_SCAN = range(-1024, 64)              # codes asked of the library (the enum is far smaller)


class Error(Exception):
    """A memsvc status other than MEMSVC_OK.

    status: the status's name, e.g. "MEMSVC_ERR_NOT_FOUND"; code: its number (negative for
    errors); message: the library's message for it, plus what the call was about.
    """

    status = None
    code = None

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.message = message


_by_code = {}   # code -> class
_by_name = {}   # "NotFound" -> class
_from_library = False


def class_name(status_name):
    """"MEMSVC_ERR_NOT_FOUND" -> "NotFound", "MEMSVC_RECOMPUTE" -> "Recompute"."""
    base = status_name
    for prefix in ("MEMSVC_ERR_", "MEMSVC_"):
        if base.startswith(prefix):
            base = base[len(prefix):]
            break
    return "".join(part.capitalize() for part in base.split("_"))


def _add(code, name, message):
    cls = _by_code.get(code)
    if cls is not None and cls.status == name:
        return cls
    doc = "%s (%d): %s" % (name, code, message)
    cls = type(class_name(name), (Error,), {"status": name, "code": code, "__doc__": doc,
                                             "__module__": "memsvc"})
    _by_code[code] = cls
    _by_name[cls.__name__] = cls
    return cls


def _ensure():
    """Make the classes: from the library when it can be loaded, else from _KNOWN."""
    global _from_library
    if _from_library:
        return
    try:
        lib = _lib.lib()
    except _lib.LibraryNotFound:
        for code, name in _KNOWN.items():
            if code not in _by_code:
                _add(code, name, "")
        return
    for code in _SCAN:
        if code == 0:
            continue
        name = lib.memsvc_status_name(code).decode()
        if name != _UNKNOWN_NAME:
            _add(code, name, lib.memsvc_strerror(code).decode())
    _from_library = True


def status_classes():
    """Every status class, by name ("NotFound": memsvc.NotFound, ...)."""
    _ensure()
    return dict(_by_name)


def lookup(name):
    """The class called `name` (e.g. "NotFound"), or None."""
    cls = _by_name.get(name)
    if cls is None or not _from_library:
        _ensure()
        cls = _by_name.get(name)
    return cls


def error(code, what=""):
    """The exception for status `code` (an int), with the library's name and message."""
    _ensure()
    cls = _by_code.get(code)
    if _lib.loaded():
        lib = _lib.lib()
        name = lib.memsvc_status_name(code).decode()
        text = lib.memsvc_strerror(code).decode()
    else:
        name, text = _KNOWN.get(code, _UNKNOWN_NAME), "status %d" % code
    if cls is None:
        cls = Error
    msg = "%s: %s" % (name, text) + (" (%s)" % what if what else "")
    return cls(msg, status=name, code=code)


def check(code, what=""):
    """Raise the exception for `code` unless it is MEMSVC_OK; return the code otherwise."""
    if code != 0:
        raise error(code, what)
    return code
