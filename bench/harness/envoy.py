"""Envoy processes (and the ext_authz service beside one): configuration
written with fresh ports, start (optionally under valgrind), readiness,
stats, CPU time and RSS."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .common import ENVOY_CPU, cpu_seconds, free_port, log, stop_processes
from .configs import bootstrap


def _stop(proc, logf):
    if proc:
        stop_processes([proc])
    if logf:
        logf.close()


class Sidecar:
    """A process an Envoy configuration calls per request (the ext_authz
    service): started before its Envoy on Envoy's core, stopped with it, its
    CPU time counted with Envoy's. `argv(port)` starts it listening on
    `port`; `cluster(port)` is the Envoy cluster that reaches it."""

    def __init__(self, name, argv, cluster, env=None):
        self.name, self.argv, self.cluster = name, argv, cluster
        self.env = dict(os.environ, **(env or {}))
        self.proc = self.logf = None

    def start(self, port, log_path, wrapper=(), timeout=60):
        self.logf = open(log_path, "w")
        self.proc = subprocess.Popen(["taskset", "-c", ENVOY_CPU, *wrapper, *self.argv(port)], env=self.env,
                                     stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self):
        _stop(self.proc, self.logf)
        self.logf = None

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def rss_bytes(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(m.group(1)) * 1024 if m else 0


class Envoy:
    def __init__(self, name, work, envoy_bin, filters, secrets=(), env=None, bundle=None, sidecar=None, tweak=None):
        self.name = name
        self.dir = work / "envoy" / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.filters, self.secrets = filters, secrets
        self.config = self.dir / "envoy.json"
        self.log_path = self.dir / "envoy.log"
        self.envoy_bin = envoy_bin
        self.env = dict(os.environ, **(env or {}))
        self.bundle = bundle  # bundle info (guard instances)
        self.sidecar = sidecar
        # Changes to the bootstrap before it is written (e.g. more upstream routes).
        self.tweak = tweak
        self.proc = None
        self.startup_rss = self.final_rss = self.vm_count = 0
        self.write_config()

    def write_config(self):
        """Fresh free ports each time: other processes on this machine pick
        ports too, so a port found free may be taken before Envoy binds it."""
        self.ports = {"listen": free_port(), "upstream": free_port(), "admin": free_port()}
        clusters = []
        if self.sidecar:
            self.ports["sidecar"] = free_port()
            clusters.append(self.sidecar.cluster(self.ports["sidecar"]))
        config = bootstrap(self.ports, self.filters, self.secrets, clusters)
        if self.tweak:
            self.tweak(config)
        self.config.write_text(json.dumps(config, indent=1))

    def validate(self):
        r = subprocess.run([self.envoy_bin, "--mode", "validate", "-c", str(self.config), "--log-level", "error"],
                           env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise SystemExit(f"bench: {self.name}: envoy --mode validate failed:\n{r.stdout}\n{r.stderr}")

    def start(self, attempts=5, wrapper=(), ready_timeout=120, sidecar_wrapper=()):
        """Starts Envoy (under `wrapper`, e.g. valgrind, if given) and waits
        until its admin says ready and its listener accepts connections; on a
        port clash, retries with new ports. A sidecar starts first."""
        for attempt in range(attempts):
            if attempt:
                self.write_config()
            if self.sidecar:
                side_log = self.dir / f"{self.sidecar.name}.log"
                if not self.sidecar.start(self.ports["sidecar"], side_log, sidecar_wrapper, ready_timeout):
                    self.sidecar.stop()
                    if "in use" in side_log.read_text():
                        log(f"{self.name}: {self.sidecar.name} port clash, retrying")
                        continue
                    raise SystemExit(f"bench: {self.name}: {self.sidecar.name} did not start; log:\n"
                                     + side_log.read_text()[-3000:])
            cmd = ["taskset", "-c", ENVOY_CPU, *wrapper, self.envoy_bin, "-c", str(self.config), "--concurrency", "1",
                   "--disable-hot-restart", "--log-level", "warn", "--component-log-level",
                   # BENCH_ENVOY_COMPONENT_LOG (e.g. "wasm:debug,config:debug"): where a reload's time goes.
                   os.environ.get("BENCH_ENVOY_COMPONENT_LOG", "wasm:info"),
                   "--log-format", "[%Y-%m-%d %T.%f][%t][%l][%n] %v"]
            self.logf = open(self.log_path, "w")
            self.started_at = time.time()
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            if self.wait_ready(ready_timeout):
                return
            self.stop()
            if "Address already in use" not in self.log_path.read_text():
                break
            log(f"{self.name}: port clash, retrying")
        raise SystemExit(f"bench: {self.name}: Envoy did not start; log:\n" + self.log_path.read_text()[-3000:])

    def wait_bundle_loaded(self, timeout):
        """A guard Envoy: until its VMs logged the ECDS bundle loaded (the
        listener is ready before that: apply_default_config_without_warming)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.log_path.read_text().count("loaded (") < 2:
            time.sleep(0.05)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/ready", timeout=1) as r:
                    if r.status == 200:
                        with socket.create_connection(("127.0.0.1", self.ports["listen"]), timeout=1):
                            pass
                        return self.proc.poll() is None
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self):
        _stop(self.proc, self.logf if self.proc else None)
        if self.sidecar:
            self.sidecar.stop()

    def cpu_seconds(self):
        """utime + stime of the Envoy process (all threads) and its sidecar:
        (total, the sidecar's part)."""
        side = self.sidecar.cpu_seconds() if self.sidecar else 0.0
        return cpu_seconds(self.proc.pid) + side, side

    def rss_bytes(self):
        """Envoy's VmRSS (a sidecar's is reported on its own)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        m = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(m.group(1)) * 1024 if m else 0

    def stats(self, prefix_filter="ingress"):
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports['admin']}/stats?format=json&filter={prefix_filter}", timeout=5) as r:
            data = json.load(r)
        return {s["name"]: s.get("value", 0) for s in data.get("stats", []) if "value" in s}

    def counter(self, name):
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports['admin']}/stats?format=json&filter=^{re.escape(name)}$", timeout=5) as r:
            data = json.load(r)
        for s in data.get("stats", []):
            if s.get("name") == name:
                return s.get("value", 0)
        return 0

    def ingress_requests(self):
        st = self.stats("^http.ingress.downstream_rq_")
        return {k.rsplit(".", 1)[1]: v for k, v in st.items()}
