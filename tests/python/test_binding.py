"""test_binding.py - the memsvc package over libmemsvc: round trips, mapped and copied bytes,
buffers for numpy and torch, statuses as exceptions, pins released on exceptions."""

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap

import numpy
import pytest
import torch

import memsvc
from memsvc import _lib

from conftest import ROOT


def pattern(n, seed):
    return numpy.random.default_rng(seed).integers(0, 256, n, dtype=numpy.uint8).tobytes()


def test_struct_layout_matches_the_header(tmp_path):
    """The ctypes structs have the C compiler's sizes and offsets."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler")
    checks = {
        "memsvc_conn_params_t": (_lib.ConnParams,
                                 ["unix_path", "cork_us", "name", "secret_file"]),
        "memsvc_alloc_params_t": (_lib.AllocParams, ["tags", "recompute_ns", "flags"]),
        "memsvc_tensor_info_t": (_lib.TensorInfo, ["size", "pins", "durable", "tags"]),
        "memsvc_hint_t": (_lib.Hint, ["phase", "handles", "num_handles"]),
        "memsvc_deferred_error_t": (_lib.DeferredError, ["seq", "message"]),
        "memsvc_conn_attr_t": (_lib.ConnAttr, ["queued", "errors_lost", "protocol"]),
        "memsvc_dev_stats_t": (_lib.DevStats, ["fragmentation", "resident_by_kind", "drops",
                                               "fragmented_events"]),
        "memsvc_stats_t": (_lib.Stats, ["uptime_ns", "num_devices", "dev", "durable_corrupt",
                                         "num_sessions", "job", "session"]),
        "memsvc_job_stats_t": (_lib.JobStats, ["job", "tensors", "quota_refused"]),
        "memsvc_session_stats_t": (_lib.SessionStats, ["id", "flags", "pins", "errors"]),
    }
    lines = []
    for ctype, (_, fields) in checks.items():
        lines.append('printf("%%s %%zu\\n", "%s", sizeof(%s));' % (ctype, ctype))
        for f in fields:
            lines.append('printf("%%s.%%s %%zu\\n", "%s", "%s", offsetof(%s, %s));'
                         % (ctype, f, ctype, f))
    src = tmp_path / "layout.c"
    src.write_text('#include "client/memsvc.h"\n#include <stddef.h>\n#include <stdio.h>\n'
                   "int main(void) {\n%s\nreturn 0;\n}\n" % "\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", ROOT, "-o", str(exe), str(src)], check=True)
    got = dict(line.rsplit(" ", 1) for line in
               subprocess.run([str(exe)], check=True, capture_output=True, text=True)
               .stdout.splitlines())
    for ctype, (cls, fields) in checks.items():
        assert int(got[ctype]) == ctypes.sizeof(cls), ctype
        for f in fields:
            assert int(got["%s.%s" % (ctype, f)]) == getattr(cls, f).offset, (ctype, f)


def test_import_without_the_library(tmp_path):
    """import memsvc and its status classes work without libmemsvc; a Connection says why
    it cannot be made."""
    shutil.copytree(os.path.join(ROOT, "client", "python", "memsvc"), tmp_path / "memsvc",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent("""
        import memsvc
        assert memsvc.NotFound.status == "MEMSVC_ERR_NOT_FOUND"
        assert issubclass(memsvc.Recompute, memsvc.Error)
        try:
            memsvc.Connection("127.0.0.1:1", job=1)
        except memsvc.LibraryNotFound as e:
            assert "MEMSVC_LIB" in str(e), e
            print("ok")
        """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), MEMSVC_LIB=str(tmp_path / "none"),
               LD_LIBRARY_PATH="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_status_classes_come_from_the_library():
    lib = _lib.lib()
    classes = memsvc.status_classes()
    n = 0
    for code in range(-64, 8):
        name = lib.memsvc_status_name(code).decode()
        if code == 0 or name == "MEMSVC_ERR_UNKNOWN":
            continue
        cls = classes[memsvc._status.class_name(name)]
        assert cls.status == name and cls.code == code and issubclass(cls, memsvc.Error)
        n += 1
    assert n >= 27
    assert memsvc.NoMemory.code == -2 and memsvc.Recompute.status == "MEMSVC_RECOMPUTE"
    with pytest.raises(AttributeError):
        memsvc.NoSuchStatus


def test_errors_carry_the_status_name(conn):
    with pytest.raises(memsvc.NotFound) as e:
        conn.lookup("no-such-key")
    assert e.value.status == "MEMSVC_ERR_NOT_FOUND" and e.value.code == -6
    assert "no-such-key" in str(e.value) and "no such tensor" in str(e.value)
    t = conn.alloc(4096, key="dup")
    with pytest.raises(memsvc.Exists):
        conn.alloc(4096, key="dup")
    with pytest.raises(memsvc.OutOfRange):
        t.write(b"x" * 10, offset=4090)
    with pytest.raises(memsvc.TooLarge):
        conn.alloc(1 << 40)
    t.free()


def test_deferred_errors_of_oneway_operations(conn):
    t = conn.alloc(4096)
    t.free()
    conn.free_later(t.handle)       # a second free: the daemon answers NOT_FOUND, later
    with pytest.raises(memsvc.Deferred) as e:
        conn.flush()
    assert [(x["op"], x["handle"], x["status"]) for x in e.value.errors] == \
        [("free", t.handle, "MEMSVC_ERR_NOT_FOUND")]
    conn.flush()                    # read: nothing left


def round_trip(conn, mapped):
    """alloc, write, read, acquire (read and write pins), free: every byte as written."""
    size = 256 << 10
    data = pattern(size, 1)
    t = conn.alloc(size, key="rt", layer=3, microbatch=1)
    t.write(data)
    assert t.read() == data
    assert t.read(100, offset=1000) == data[1000:1100]
    with t.acquire() as buf:
        assert buf.readonly and len(buf) == size and bytes(buf) == data
    pin = t.acquire()
    assert pin.mapped == mapped and (pin.address is not None) == mapped
    pin.release()
    # writing through the buffer: numpy over a write pin
    with t.acquire(write=True) as buf:
        a = numpy.frombuffer(buf, dtype=numpy.uint32)
        a[:] = numpy.arange(size // 4, dtype=numpy.uint32)
        del a
    assert t.read() == numpy.arange(size // 4, dtype=numpy.uint32).tobytes()
    # torch.frombuffer over a write pin, then over a read pin
    with t.acquire(write=True) as buf:
        x = torch.frombuffer(buf, dtype=torch.float32)
        x.copy_(torch.linspace(0, 1, size // 4))
        del x
    pin = t.acquire()
    with pin:
        y = pin.torch(torch.float32).clone()
    assert torch.equal(y, torch.linspace(0, 1, size // 4))
    # from and into torch tensors directly
    src = torch.randn(size // 4)
    t.write(src)
    dst = torch.empty(size // 4)
    t.read_into(dst)
    assert torch.equal(src, dst)
    info = conn.lookup("rt").info
    assert (info["size"], info["pins"], info["tags"]["layer"], info["tags"]["microbatch"]) == \
        (size, 0, 3, 1)
    t.free()
    conn.flush()
    with pytest.raises(memsvc.NotFound):
        conn.lookup("rt")


def test_round_trip_mapped(conn):
    assert conn.mapped, conn.transport
    round_trip(conn, mapped=True)


def test_round_trip_copied(memsvcd_factory):
    d = memsvcd_factory(extra=["--no-map"])
    with d.connect(job=1) as c:
        assert not c.mapped and "not mapped" in c.transport
        round_trip(c, mapped=False)


def test_round_trip_tcp(memsvcd_factory):
    d = memsvcd_factory()
    with d.connect(job=1, tcp=True) as c:
        assert c.transport.startswith("tcp"), c.transport
        round_trip(c, mapped=False)


@pytest.mark.parametrize("no_map", [False, True])
def test_pin_released_on_exception(memsvcd_factory, no_map):
    d = memsvcd_factory(extra=["--no-map"] if no_map else [])
    with d.connect(job=1) as c:
        t = c.alloc(64 << 10, key="ex")
        t.write(b"\1" * (64 << 10))
        with pytest.raises(KeyError):
            with t.acquire(write=True) as buf:
                assert c.lookup("ex").info["pins"] == 1
                buf[0] = 7
                raise KeyError("boom")
        c.flush()
        assert c.lookup("ex").info["pins"] == 0
        # mapped: the byte was written in place; copied: the copy is not written back
        assert t.read(1) == (b"\1" if no_map else b"\7")


def test_pin_dropped_without_release_is_released(conn):
    t = conn.alloc(4096, key="gc")
    pin = t.acquire()
    assert conn.lookup("gc").info["pins"] == 1
    del pin                         # queued, sent with the next call
    conn.flush()
    assert conn.lookup("gc").info["pins"] == 0
    t.free()


def test_recompute_answer(memsvcd_factory):
    """A dropped tensor's acquire raises memsvc.Recompute, or with allow_recompute=True gives
    a writable pin to fill; what is written is read back."""
    d = memsvcd_factory(policy="dtr", extra=["hbm=1MiB"])
    with d.connect(job=1) as c:
        size = 384 << 10
        ts = []
        for i in range(4):   # the fourth does not fit: the daemon drops one of the others
            t = c.alloc(size, key="r%d" % i, recomputable=True, recompute_ns=1000)
            t.write(pattern(size, i))
            ts.append(t)
        states = {t.key: c.lookup(t.key).info["state"] for t in ts}
        dropped = [t for t in ts if states[t.key] == "dropped"]
        assert dropped, states
        t = dropped[0]
        with pytest.raises(memsvc.Recompute) as e:
            t.acquire()
        assert e.value.status == "MEMSVC_RECOMPUTE"
        assert c.lookup(t.key).info["pins"] == 0      # released again
        pin = t.acquire(allow_recompute=True)
        with pin as buf:
            assert pin.recompute and not buf.readonly
            buf[:] = pattern(size, 99)
        assert t.read() == pattern(size, 99)
        dev = c.stats()["devices"][0]
        assert dev["drops"] >= 1 and dev["recomputes"] >= 1


def test_stats_and_ping(conn):
    assert 0 < conn.ping() < 10
    s = conn.stats()
    assert s["mode"] == "backed" and s["node"] == "tiny" and s["num_devices"] == len(s["devices"])
    dev = s["devices"][0]
    assert dev["capacity"] == 64 << 20
    assert set(dev["tensors_by_state"]) == set(memsvc.STATES)
    assert conn.query()["session"] > 0
    v, proto = memsvc.version()
    assert v == memsvc.__version__ and proto >= 1
