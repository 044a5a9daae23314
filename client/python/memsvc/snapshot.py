"""memsvc.snapshot - convert torch.cuda.memory._dump_snapshot pickles for memtrace import.

    python3 -m memsvc.snapshot snapshot.pickle snapshot.json    # then: memtrace import
    python3 -m memsvc.snapshot snapshot.pickle step.trace       # runs memtrace import itself

`torch.cuda.memory._dump_snapshot(path)` pickles the dictionary `_snapshot()` returns
(`segments`, `device_traces`, ...: dicts, lists, strings, numbers). memtrace reads that
dictionary as JSON (`memtrace import --from pytorch-snapshot`, docs/trace-format.md); this
module writes it so. A pickle can run code when it is loaded, so the file is loaded by an
unpickler that builds plain containers only and refuses every other global by name.
"""

import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile

__all__ = ["SnapshotError", "load", "loads", "to_json", "convert", "main"]

# The globals a snapshot may name: none is needed (dicts, lists, strings, numbers, booleans and
# None have opcodes of their own); these containers are harmless and appear in hand-made ones.
_ALLOWED = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("collections", "OrderedDict"): dict,
}


class SnapshotError(Exception):
    """A file that is not a memory snapshot, or one that is refused."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise SnapshotError(
                "refusing global %s.%s: a memory snapshot holds only dicts, lists, strings "
                "and numbers, so this pickle is not one (or was made to run code)"
                % (module, name))
        return obj

    def persistent_load(self, pid):
        raise SnapshotError("refusing a persistent id: not a memory snapshot")


def loads(data):
    """The snapshot dictionary of a pickle's bytes. Raises SnapshotError."""
    try:
        snap = _Unpickler(io.BytesIO(data)).load()
    except SnapshotError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, RecursionError, MemoryError, OverflowError) as e:
        raise SnapshotError("not a pickle, or a damaged one: %s" % e) from None
    if not isinstance(snap, dict):
        raise SnapshotError("the pickle holds a %s, not a snapshot dictionary"
                            % type(snap).__name__)
    traces = snap.get("device_traces")
    if traces is None:
        raise SnapshotError("no device_traces: record the allocator's history with "
                            "torch.cuda.memory._record_memory_history() before the snapshot")
    if not isinstance(traces, list) or not all(isinstance(t, list) for t in traces):
        raise SnapshotError("device_traces is not a list of lists (one per device)")
    return snap


def load(path):
    with open(path, "rb") as f:
        return loads(f.read())


def _plain(obj, where):
    """obj with sets as lists; anything JSON cannot hold is an error naming where it is."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise SnapshotError("%s: a key of type %s" % (where, type(k).__name__))
            out[str(k)] = _plain(v, "%s.%s" % (where, k))
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v, "%s[%d]" % (where, i)) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise SnapshotError("%s: a non-finite number" % where)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise SnapshotError("%s: a value of type %s" % (where, type(obj).__name__))


def to_json(snap):
    """The snapshot as the JSON text memtrace import --from pytorch-snapshot reads."""
    return json.dumps(_plain(snap, "snapshot"), separators=(",", ":"))


def _memtrace():
    found = os.path.join(os.environ.get("MEMSVC_BIN", ""), "memtrace")
    if os.environ.get("MEMSVC_BIN") and os.access(found, os.X_OK):
        return found
    return shutil.which("memtrace")


def convert(src, dst, memtrace=None, model=None):
    """src (a pickle) to dst: JSON, or a memtrace trace when dst ends in .trace (then
    memtrace import runs; its output goes to stderr). Raises SnapshotError or OSError."""
    text = to_json(load(src))
    if not dst.endswith(".trace"):
        with open(dst, "w") as f:
            f.write(text)
        return
    memtrace = memtrace or _memtrace()
    if memtrace is None:
        raise SnapshotError("memtrace not found (set MEMSVC_BIN or --memtrace, or write .json)")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as tmp:
        tmp.write(text)
    try:
        cmd = [memtrace, "import", "--from", "pytorch-snapshot"]
        if model:
            cmd += ["--model", model]
        res = subprocess.run(cmd + [tmp.name, dst], stdout=sys.stderr)
        if res.returncode != 0:
            raise SnapshotError("memtrace import failed (exit %d)" % res.returncode)
    finally:
        os.unlink(tmp.name)


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(
        prog="python3 -m memsvc.snapshot",
        description="Convert a torch.cuda.memory._dump_snapshot pickle to the JSON that "
                    "`memtrace import --from pytorch-snapshot` reads, or to a trace (OUT "
                    "ending in .trace). The pickle is untrusted: only plain containers load.")
    ap.add_argument("src", metavar="IN.pickle")
    ap.add_argument("dst", metavar="OUT.json|OUT.trace")
    ap.add_argument("--memtrace", help="the memtrace binary (default: $MEMSVC_BIN/memtrace, "
                                       "then PATH)")
    ap.add_argument("--model", help="model name for the trace header")
    args = ap.parse_args(argv)
    try:
        convert(args.src, args.dst, memtrace=args.memtrace, model=args.model)
    except (SnapshotError, OSError) as e:
        print("memsvc.snapshot: %s: %s" % (args.src, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
