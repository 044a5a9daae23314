"""conftest.py - fixtures of the Python suites: memsvcd processes on free loopback ports.

All opt-in (no autouse): a test that names none of them needs neither memsvcd nor libmemsvc.
`make test` sets MEMSVC_BIN (memsvcd's directory), MEMSVC_LIB (libmemsvc.so's) and PYTHONPATH
(client/python); run by hand, the source tree's build/ is found as well.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
for p in (os.path.join(ROOT, "client", "python"),
          os.path.join(ROOT, "client", "python", "examples")):
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture
def memsvcd_factory():
    """start(**kw) -> a memsvc.daemon.Daemon (arguments as Daemon's: node, memory, policy,
    extra); every daemon started is stopped after the test, and must exit cleanly."""
    import memsvc.daemon
    started = []

    def start(**kw):
        d = memsvc.daemon.Daemon(**kw)
        started.append(d)
        return d

    yield start
    bad = []
    for d in started:
        log = d.log_text()
        rc = d.stop()
        if rc not in (0, None):
            bad.append("memsvcd %s exited with %s:\n%s" % (d.address, rc, log[-2000:]))
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def backed_daemon():
    """A memsvcd on the tiny node in backed memory mode (local clients get mapped memory)."""
    import memsvc.daemon
    d = memsvc.daemon.Daemon(node="tiny", memory="backed")
    yield d
    d.stop()


@pytest.fixture
def conn(backed_daemon):
    """A Connection (job 1) to backed_daemon, closed after the test."""
    c = backed_daemon.connect(job=1, name="pytest")
    yield c
    c.close()
