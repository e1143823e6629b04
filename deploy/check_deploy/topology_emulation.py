"""The Redis topology of a Compose overlay (docker-compose.sentinel.yml,
docker-compose.cluster.yml), run with the local redis-server, without Docker: each Redis service
of the merged model gets an address of its own (127.0.0.x) and its service name resolves to it,
in a network and mount namespace of this check's own (`unshare`: the machine's ports and
/etc/hosts are untouched). The services run their Compose commands (the image's /data becomes a
scratch directory, the docker-entrypoint.sh step is dropped) and their healthchecks are run
against them.

  Sentinel  the replicas follow the primary, the sentinels reach their quorum and name the
            primary and the replicas by service name; the primary is stopped, a replica is
            promoted and takes writes, and the old primary comes back as a replica.
  Cluster   the one-shot service creates the cluster (and a second run leaves it alone), every
            server says cluster_state:ok, redirects and CLUSTER SLOTS name servers by service name,
            sharded pub/sub answers.

hostie's own nodes are not started here: this checks the Redis side the Compose files give them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Problems
from .compose import COMPOSE, OVERLAYS, RedisService, load_model, words

NAMESPACED = "CHECK_DEPLOY_TOPOLOGY_HOSTS"


def topology_emulation(args: argparse.Namespace) -> int:
    overlay = args.overlay
    topology = OVERLAYS.get(Path(overlay).name)
    if topology is None:
        print(f"{overlay}: not a known overlay ({', '.join(OVERLAYS)})")
        return 1
    services = load_model([COMPOSE, overlay])["services"]
    redis = {n: RedisService(s) for n, s in services.items()}
    # The Redis servers and sentinels, and the one-shot services that run redis-cli.
    runs = {n: r for n, r in redis.items()
            if r.kind or (r.script and "redis-cli" in r.script)}
    addrs = {n: f"127.0.0.{20 + i}" for i, n in enumerate(sorted(runs))}
    if os.environ.get(NAMESPACED) is None:
        return in_namespace(overlay, addrs)
    return Emulation(services, runs, addrs, topology).run()


def in_namespace(overlay: str, addrs: dict[str, str]) -> int:
    """Runs this check again in a network and mount namespace with the service names in its
    /etc/hosts (a user namespace too when not root)."""
    work = Path(tempfile.mkdtemp(prefix="hostie-topology-"))
    try:
        hosts = work / "hosts"
        hosts.write_text("127.0.0.1 localhost\n"
                         + "".join(f"{ip} {name}\n" for name, ip in addrs.items()))
        flags = "-mn" if os.geteuid() == 0 else "-rmn"
        cmd = ["unshare", flags, "sh", "-c",
               'ip link set lo up && mount --bind "$0" /etc/hosts && exec "$@"', str(hosts),
               sys.executable, "-P", "-m", "check_deploy", "topology-emulation", overlay]
        env = dict(os.environ, **{NAMESPACED: str(hosts)})
        return subprocess.run(cmd, env=env).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Emulation:
    def __init__(self, services: dict, runs: dict, addrs: dict, topology: str) -> None:
        self.services, self.runs, self.addrs, self.topology = services, runs, addrs, topology
        self.p = Problems()
        self.work = Path(tempfile.mkdtemp(prefix="hostie-topology-"))
        self.procs: dict[str, subprocess.Popen] = {}

    # ---- processes --------------------------------------------------------------------------

    def data_dir(self, name: str) -> Path:
        d = self.work / name
        d.mkdir(exist_ok=True)
        return d

    def local_options(self, name: str) -> list[str]:
        """What a container gives a server for free: its own address, for listening and for
        connecting out (so peers see it there), and the image's protected-mode off."""
        ip = self.addrs[name]
        return ["--bind", ip, "--bind-source-addr", ip, "--protected-mode", "no"]

    def script(self, name: str) -> str:
        """A service's shell script with the image's /data in a scratch directory and the servers
        it starts given their address."""
        r = self.runs[name]
        text = r.script.replace("/data/", f"{self.data_dir(name)}/")
        text = text.replace("exec docker-entrypoint.sh ", "exec ")
        if r.kind:
            lines = text.splitlines()
            for i, ln in enumerate(lines):
                if ln.lstrip().startswith("exec "):
                    lines[i] = ln + " " + " ".join(self.local_options(name))
            text = "\n".join(lines) + "\n"
        return text

    def start(self, name: str) -> None:
        r = self.runs[name]
        log = open(self.work / f"{name}.log", "w")
        if r.script:
            cmd = ["sh", "-euc", self.script(name)]
        else:
            cmd = words(self.services[name].get("command")) or ["redis-server"]
            if cmd[0] == "docker-entrypoint.sh":
                cmd = cmd[1:]
            cmd = cmd + ["--dir", str(self.data_dir(name))] + self.local_options(name)
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.data_dir(name), start_new_session=True)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)  # what `docker compose stop` sends
        proc.wait(10)

    def cli(self, name: str, *command: str, cluster: bool = False) -> str:
        r = self.runs[name]
        port = str(r.port)
        out = subprocess.run(["redis-cli", *(["-c"] if cluster else []), "-h", name, "-p", port,
                              *command], capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip()

    def wait(self, what: str, cond, timeout: float = 15) -> float:
        """Seconds until cond() holds; a problem (and the timeout) when it never does."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if cond():
                    return time.monotonic() - start
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(what)

    def healthy(self, name: str) -> bool:
        """The service's Compose healthcheck, run against its address."""
        test = words((self.services[name].get("healthcheck") or {}).get("test"))
        if not test:
            return True
        ip_opt = f"redis-cli -h {name}"
        if test[0] == "CMD-SHELL":
            cmd = ["sh", "-c", test[1].replace("redis-cli", ip_opt)]
        else:
            cmd = test[1:]
            if cmd[:1] == ["redis-cli"]:
                cmd = ["redis-cli", "-h", name, *cmd[1:]]
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0

    def start_in_order(self, names: list[str]) -> None:
        """Starts the services, each once the ones it waits for are healthy (or done)."""
        started: set[str] = set()
        while len(started) < len(names):
            ready = [n for n in names if n not in started and all(
                d in started or d not in names
                for d in (self.services[n].get("depends_on") or {}))]
            if not ready:
                raise RuntimeError(f"circular depends_on among {sorted(set(names) - started)}")
            for n in ready:
                for dep, spec in (self.services[n].get("depends_on") or {}).items():
                    if dep in self.procs and (spec or {}).get("condition") == "service_healthy":
                        self.wait(f"{dep} healthy", lambda dep=dep: self.healthy(dep))
                self.start(n)
                started.add(n)

    # ---- the scenarios ----------------------------------------------------------------------

    def run(self) -> int:
        try:
            servers = sorted(n for n, r in self.runs.items() if r.kind)
            scenario = self.sentinel if self.topology == "sentinel" else self.cluster
            summary = scenario(servers)
        except Exception as e:  # noqa: BLE001 - every failure is one problem line plus the logs
            self.p.add("emulation", f"{type(e).__name__}: {e}")
            summary = ""
        finally:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if self.p.items:
                for log in sorted(self.work.glob("*.log")):
                    print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-8:]))
            shutil.rmtree(self.work, ignore_errors=True)
        version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                 text=True).stdout.split()[2].removeprefix("v=")
        return self.p.finish(f"{summary} (redis-server {version}, service names on loopback)")

    def sentinel(self, servers: list[str]) -> str:
        p = self.p
        sentinels = [n for n in servers if self.runs[n].kind == "sentinel"]
        data = [n for n in servers if self.runs[n].kind == "server"]
        self.start_in_order(servers)
        for n in servers:
            self.wait(f"{n} healthy", lambda n=n: self.healthy(n))
        master = next(ln[2] for ln in self.runs[sentinels[0]].conf
                      if ln[:2] == ["sentinel", "monitor"])

        def primary_by(sentinel: str) -> str:
            return self.cli(sentinel, "sentinel", "get-master-addr-by-name", master).split("\n")[0]

        primary = primary_by(sentinels[0])
        p.check(primary in data, "sentinel", f"names the primary {primary!r}, not a service name")
        replicas = [n for n in data if n != primary]
        for s in sentinels:
            self.wait(f"{s} sees the replicas", lambda s=s: set(
                ln for ln in self.cli(s, "sentinel", "replicas", master).split("\n")
                if ln in replicas) == set(replicas))
        # Fail over: the primary stops, a replica takes over and takes writes.
        self.stop(primary)
        took = self.wait("a failover", lambda: primary_by(sentinels[0]) in replicas, timeout=30)
        promoted = primary_by(sentinels[0])
        for s in sentinels:
            self.wait(f"{s} names {promoted}", lambda s=s: primary_by(s) == promoted)
        self.wait(f"{promoted} takes writes",
                  lambda: self.cli(promoted, "set", "hostie:check", "1") == "OK")
        # The old primary comes back as a replica of the new one.
        self.start(primary)
        self.wait(f"{primary} follows {promoted}", lambda: "role:slave" in self.cli(
            primary, "info", "replication") and f"master_host:{promoted}" in self.cli(
            primary, "info", "replication"), timeout=30)
        for n in servers:
            self.wait(f"{n} healthy after the failover", lambda n=n: self.healthy(n))
        return (f"Sentinel: {len(sentinels)} sentinels agree on {master!r}, replicas known by "
                f"name; {primary} stopped, {promoted} promoted in {took:.1f}s and writable, "
                f"{primary} back as its replica")

    def cluster(self, servers: list[str]) -> str:
        p = self.p
        init = next(n for n, r in self.runs.items() if not r.kind)
        self.start_in_order(servers)
        for n in servers:
            self.wait(f"{n} healthy", lambda n=n: self.healthy(n))
        # Twice: a second `docker compose up` runs it again on the formed cluster.
        for attempt in ("first", "second"):
            out = subprocess.run(["sh", "-euc", self.script(init)], capture_output=True,
                                 text=True, timeout=60)
            if not p.check(out.returncode == 0, init, f"{attempt} run exited with "
                           f"{out.returncode}:\n{out.stdout[-800:]}{out.stderr[-800:]}"):
                return "Cluster"
        for n in servers:
            p.check("cluster_state:ok" in self.cli(n, "cluster", "info"), n,
                    "cluster_state is not ok")
        endpoints = set()
        for ln in self.cli(servers[0], "cluster", "slots").split("\n"):
            if ln in servers:
                endpoints.add(ln)
        p.check(endpoints == set(servers), "CLUSTER SLOTS",
                f"names the servers {sorted(endpoints)}, expected {servers}")
        moved = set()
        for i in range(64):
            reply = self.cli(servers[0], "set", f"hostie:check:{i}", "1")
            if reply.startswith("MOVED"):
                moved.add(reply.split()[-1].rsplit(":", 1)[0])
        p.check(moved and moved <= set(servers), "MOVED",
                f"redirects to {sorted(moved)}, not service names")
        p.check(self.cli(servers[0], "spublish", "hostie:check", "x", cluster=True) == "0",
                "SPUBLISH", "sharded pub/sub does not answer")
        return (f"Cluster: {init} creates {len(servers)} primaries once, redirects name "
                f"{', '.join(sorted(moved))}, sharded pub/sub answers")
