"""The Compose topology, emulated on loopback without Docker: Redis on a unix socket, the hostie
nodes of docker-compose.yml with their Compose settings, and deploy/compose/nginx.conf in a local
nginx in front of them; a gateway registers through the load balancer, discovery works through it
and on every node, client-supplied forwarding headers cannot spoof the gateway's address, and
draining the node that holds the session closes it with 1001 and forgets the token everywhere.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import yaml

from .common import ROOT, Problems


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_emulation(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import signal
    import subprocess
    import tempfile
    import time
    import urllib.error
    import urllib.request

    import websockets

    token = "insecure_11111111-2222-3333-4444-555555555555"
    grpc_port = 18789
    spoofed = "6.6.6.6"
    p = Problems()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nodes = {n: s for n, s in compose["services"].items()
             if "HOSTIE_REDIS_URL" in (s.get("environment") or {})}
    work = Path(tempfile.mkdtemp(prefix="hostie-compose-"))
    procs: list[subprocess.Popen] = []

    def start(cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=open(work / log, "w"), stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        procs.append(proc)
        return proc

    def get(url: str, headers: dict | None = None) -> tuple[int, str]:
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_for(what: str, cond, timeout: float = 10) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if cond():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(what)

    try:
        # Redis on a unix socket of its own: no port another test's Redis could take.
        sock = work / "redis.sock"
        redis = start(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
                       "--appendonly", "no"], "redis.log")
        wait_for("redis", lambda: sock.exists() and redis.poll() is None)
        addrs: dict[str, tuple[str, str]] = {}
        node_procs: dict[str, subprocess.Popen] = {}
        for name, svc in nodes.items():
            env = {k: str(v) for k, v in svc["environment"].items()}
            p.check(env["HOSTIE_REDIS_URL"].startswith("redis://redis:"), name,
                    "HOSTIE_REDIS_URL is not the Compose redis service")
            env["HOSTIE_REDIS_URL"] = f"redis+unix://{sock}"
            env["HOSTIE_TRUSTED_PROXIES"] = "127.0.0.1/32"  # the load balancer, here
            env["PATH"] = os.environ["PATH"]
            node_procs[name] = start([args.hostie, "--listen", "127.0.0.1:0", "--admin-listen",
                                      "127.0.0.1:0", "--tls-listen", "127.0.0.1:0",
                                      "--node-id", name], f"{name}.log", env)
        for name in nodes:
            def listening(name=name) -> bool:
                text = (work / f"{name}.log").read_text()
                m = re.search(r'"http":"([^"]+)".*"admin":"([^"]+)"', text)
                if m:
                    addrs[name] = (m.group(1), m.group(2))
                return bool(m)
            wait_for(f"{name} listening", listening)
            wait_for(f"{name} ready", lambda name=name:
                     get(f"http://{addrs[name][1]}/readyz")[0] == 200)

        conf = (ROOT / "deploy/compose/nginx.conf").read_text()
        for name, (http, _) in addrs.items():
            conf = re.sub(rf"server\s+{name}:\d+\s+resolve", f"server {http}", conf)
        lb_port = free_port()
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{lb_port};")
        conf = conf.replace("pid /tmp/nginx.pid;", f"pid {work}/nginx.pid;")
        conf = conf.replace("worker_processes auto;", "worker_processes 1;")
        p.check("resolve" not in re.findall(r"server\s+\S+\s+(\w+)", conf), "nginx.conf",
                "an upstream server was not mapped to a node")
        (work / "nginx.conf").write_text(conf)
        (work / "logs").mkdir()
        nginx = start(["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-e",
                       str(work / "logs/error.log"), "-g", "daemon off;"], "nginx.log")
        lb = f"127.0.0.1:{lb_port}"
        wait_for("the load balancer", lambda: get(f"http://{lb}/healthz")[0] == 200)
        p.check(nginx.poll() is None, "nginx", "exited (its port was taken?)")

        async def gateway(registered: asyncio.Event, closed: asyncio.Future) -> None:
            async with websockets.connect(
                f"ws://{lb}/v0/websocket",
                additional_headers={"Authorization": f"Token {token}",
                                    "X-Forwarded-For": spoofed, "X-Real-IP": spoofed,
                                    "Forwarded": f"for={spoofed}"},
                subprotocols=[f"io|0.0.1|emulated-gateway||{grpc_port}"],
            ) as ws:
                registered.set()
                try:
                    async for msg in ws:
                        m = json.loads(msg)
                        if m.get("name") == "jsonrpc" and m["payload"].get("method"):
                            await ws.send(json.dumps({"name": "jsonrpc", "payload": {
                                "jsonrpc": "2.0", "id": m["payload"]["id"], "result": grpc_port}}))
                except websockets.ConnectionClosed:
                    pass
                closed.set_result(ws.close_code)

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            registered, closed = asyncio.Event(), loop.create_future()
            gw = asyncio.create_task(gateway(registered, closed))
            await asyncio.wait_for(registered.wait(), 10)
            await asyncio.sleep(0.3)  # the registration reaches Redis

            def discover(base: str) -> tuple[int, dict]:
                status, body = get(f"http://{base}/v0/hosties/{token}",
                                   {"X-Forwarded-For": spoofed})
                return status, json.loads(body or "null")

            answers = [await loop.run_in_executor(None, discover, lb) for _ in range(6)]
            answers += [await loop.run_in_executor(None, discover, http)
                        for http, _ in addrs.values()]
            for status, body in answers:
                p.check(status == 200 and body.get("port") == grpc_port, "discovery",
                        f"answered {status} {body}, expected 200 with port {grpc_port}")
                p.check(body.get("host") == "127.0.0.1", "forwarding headers",
                        f"gateway advertised at {body.get('host')}: the client's own "
                        "X-Forwarded-For/X-Real-IP/Forwarded got through the load balancer")
            status, _ = await loop.run_in_executor(
                None, get, f"http://{lb}/v0/hosties/insecure_00000000-0000-0000-0000-000000000000")
            p.check(status == 404, "discovery", f"unknown token answered {status}, expected 404")

            # Drain the node holding the session: 1001 to the gateway, a clean exit, and the
            # token is gone from every node at once.
            owner = next(n for n, (_, admin) in addrs.items()
                         if re.search(r"^hostie_sessions 1$",
                                      get(f"http://{admin}/metrics")[1], re.M))
            node_procs[owner].send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(closed, 15)
            p.check(code == 1001, "drain", f"gateway closed with {code}, expected 1001")
            rc = await loop.run_in_executor(None, node_procs[owner].wait, 25)
            p.check(rc == 0, "drain", f"{owner} exited with {rc}")
            for _ in range(3):
                status, _ = await loop.run_in_executor(None, discover, lb)
                p.check(status == 404, "drain", f"drained token answered {status}, expected 404")
            await gw

        asyncio.run(scenario())
    except Exception as e:  # noqa: BLE001 - every failure is one problem line plus the logs
        p.add("emulation", f"{type(e).__name__}: {e}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(25)
            except subprocess.TimeoutExpired:
                proc.kill()
        if p.items:
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-8:]))
        shutil.rmtree(work, ignore_errors=True)
    return p.finish(f"{len(nodes)} nodes behind deploy/compose/nginx.conf: registration, "
                    "discovery on every node, no header spoofing, drain with 1001")
