"""test_snapshot.py - memsvc.snapshot: _dump_snapshot pickles to memtrace, and hostile pickles."""
import collections
import json
import os
import pickle
import subprocess
import sys

import pytest

from memsvc import snapshot

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SAMPLE = os.path.join(ROOT, "tests", "data", "snapshot_small.json")
MEMTRACE = os.path.join(os.environ.get("MEMSVC_BIN", "build/bin"), "memtrace")


def memtrace(*args):
    return subprocess.run([MEMTRACE] + list(args), capture_output=True, text=True, timeout=60)


def dump(trace):
    out = memtrace("dump", trace)
    assert out.returncode == 0, out.stderr
    return out.stdout


def sample_pickle(tmp_path, protocol=pickle.HIGHEST_PROTOCOL):
    """A pickle made as torch.cuda.memory._dump_snapshot makes one: pickle.dump of the
    snapshot dictionary (here the content of tests/data/snapshot_small.json)."""
    with open(SAMPLE) as f:
        snap = json.load(f)
    path = tmp_path / "snapshot.pickle"
    with open(path, "wb") as f:
        pickle.dump(snap, f, protocol=protocol)
    return str(path)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_pickle_imports_like_the_json(tmp_path, protocol):
    src = sample_pickle(tmp_path, protocol)
    converted = str(tmp_path / "converted.json")
    snapshot.convert(src, converted)
    with open(converted) as a, open(SAMPLE) as b:
        assert json.load(a) == json.load(b)

    ref, got = str(tmp_path / "ref.trace"), str(tmp_path / "got.trace")
    assert memtrace("import", "--from", "pytorch-snapshot", SAMPLE, ref).returncode == 0
    out = memtrace("import", "--from", "pytorch-snapshot", converted, got)
    assert out.returncode == 0, out.stderr
    assert dump(got) == dump(ref)
    # the figures tests/unit/test_import.c states for this sample
    header = json.loads(dump(got).splitlines()[0])
    assert header["recorded_peak"] == 5376 and header["meta"]["oom_count"] == "1"

    # straight to a trace: the module runs memtrace import itself
    direct = str(tmp_path / "direct.trace")
    res = subprocess.run([sys.executable, "-m", "memsvc.snapshot", "--memtrace", MEMTRACE, src,
                          direct], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert dump(direct) == dump(ref)


def test_harmless_containers_load(tmp_path):
    snap = collections.OrderedDict(device_traces=[[]], segments=[], tags={"a", "b"})
    got = snapshot.loads(pickle.dumps(snap))
    assert got["device_traces"] == [[]] and sorted(snapshot._plain(got, "s")["tags"]) == ["a", "b"]


class _RunsCode:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_hostile_pickles_are_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = {"device_traces": [[{"action": "alloc", "addr": _RunsCode("touch %s" % marker)}]]}
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(evil))
    with pytest.raises(snapshot.SnapshotError, match=r"refusing global (os|posix)\.system"):
        snapshot.load(str(path))
    assert not marker.exists()

    with pytest.raises(snapshot.SnapshotError, match=r"refusing global builtins\.eval"):
        snapshot.loads(pickle.dumps({"device_traces": [[_Evals()]]}))

    # the command line: one line naming the file and the refused global, exit 1, no output
    out = tmp_path / "out.json"
    res = subprocess.run([sys.executable, "-m", "memsvc.snapshot", str(path), str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "evil.pickle: refusing global" in res.stderr and "system" in res.stderr
    assert not out.exists() and not marker.exists()


def test_not_a_snapshot(tmp_path):
    with pytest.raises(snapshot.SnapshotError, match="not a pickle"):
        snapshot.loads(b"MEMTRACE\x00\x00\x00\x02")
    with pytest.raises(snapshot.SnapshotError, match="holds a list"):
        snapshot.loads(pickle.dumps([1, 2]))
    with pytest.raises(snapshot.SnapshotError, match="no device_traces"):
        snapshot.loads(pickle.dumps({"segments": []}))
    with pytest.raises(snapshot.SnapshotError, match="not a list of lists"):
        snapshot.loads(pickle.dumps({"device_traces": {"0": []}}))
