"""daemon.py - start a memsvcd of one's own (for examples and tests): a free loopback port, a
private socket directory, stopped with stop() or at the end of a `with` block.

    with memsvc.daemon.Daemon(node="tiny", memory="backed", extra=["hbm=8MiB"]) as d:
        conn = d.connect(job=1)
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from . import _status
from .client import Connection


def find_memsvcd(bin_dir=None):
    """Path of memsvcd: in bin_dir, else $MEMSVC_BIN, else the source tree's build/bin, else
    on PATH. Raises FileNotFoundError."""
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [bin_dir, os.environ.get("MEMSVC_BIN"),
            os.path.normpath(os.path.join(here, "..", "..", "..", "build", "bin"))]
    for d in dirs:
        if d and os.access(os.path.join(d, "memsvcd"), os.X_OK):
            return os.path.join(d, "memsvcd")
    path = shutil.which("memsvcd")
    if path:
        return path
    raise FileNotFoundError("memsvcd not found (tried %s and PATH; set MEMSVC_BIN)"
                            % ", ".join(d for d in dirs if d))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A memsvcd process on a free loopback port.

    node: hardware preset ("tiny" is small enough to feel pressure). memory: "backed" (real
    bytes) or "phantom". policy: --policy SPEC. extra: more arguments, e.g. ["hbm=8MiB",
    "--no-map"]. Its log goes to `log` (a file in its private directory, removed by stop()).
    """

    def __init__(self, *, node="tiny", memory="backed", policy=None, extra=(), bin_dir=None,
                 start_timeout=20.0):
        self.path = find_memsvcd(bin_dir)
        self.args = ["--node", node, "--memory", memory]
        if policy:
            self.args += ["--policy", policy]
        self.args += list(extra)
        self.dir = tempfile.mkdtemp(prefix="memsvcd-")
        self.log = os.path.join(self.dir, "memsvcd.log")
        self.proc = None
        self.address = None
        self.unix_path = os.path.join(self.dir, "memsvcd.sock")
        self._start(start_timeout)

    def _start(self, timeout):
        err = None
        for _ in range(5):   # another process may take the port between the probe and bind
            self.address = "127.0.0.1:%d" % _free_port()
            with open(self.log, "wb") as log:
                # its durable state (if any) in its own directory, removed with it
                self.proc = subprocess.Popen([self.path, "--listen", self.address, "--unix",
                                              self.unix_path, "--state-dir", self.dir,
                                              "--no-config"] + self.args,
                                             stdout=log, stderr=subprocess.STDOUT)
            err = self._wait_ready(timeout)
            if err is None:
                return
        self.stop()
        raise RuntimeError("memsvcd did not start: %s" % err)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                with open(self.log, errors="replace") as f:
                    return "exited with %d: %s" % (self.proc.returncode, f.read()[-2000:])
            try:
                Connection(self.address, job=0, control=True, timeout=1.0,
                           unix_path=self.unix_path).close()
                return None
            except _status.Error:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        return "no answer in %.0f s" % timeout

    def connect(self, **kw):
        """A Connection to this daemon (keyword arguments as Connection's)."""
        kw.setdefault("unix_path", self.unix_path)
        return Connection(self.address, **kw)

    def stop(self):
        """SIGTERM (SIGKILL after 10 s); returns its exit status (None if it was not running)."""
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc is not None:
            rc = self.proc.returncode
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
