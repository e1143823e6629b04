"""docker-compose.yml against hostie's defaults and the files it references: Redis with a
healthcheck, three nodes (Redis, ports, node ids, stop grace, read-only root, non-root user,
trusted proxies), bind-mounted files, deploy/compose/nginx.conf (one published port, upstreams,
forwarding headers, WebSocket upgrade and timeouts), and deploy/compose/prometheus.yml (every
node's admin port, the rules); and those two configurations made testable by a local `nginx -t`
and `promtool check config`.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from pathlib import Path

import yaml

from .common import (
    ADMIN_PORT,
    DEFAULT_DRAIN_GRACE_S,
    HTTP_PORT,
    LISTENER_STOP_S,
    ROOT,
    RULES,
    RULES_JOB,
    Problems,
    duration_s,
)


def check_compose(_: argparse.Namespace) -> int:
    p = Problems()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose.get("services") or {}
    where = "docker-compose.yml"

    redis = services.get("redis")
    if p.check(redis is not None, where, "no redis service"):
        p.check(bool((redis.get("healthcheck") or {}).get("test")), "redis", "no healthcheck")

    nodes = {n: s for n, s in services.items()
             if "HOSTIE_REDIS_URL" in (s.get("environment") or {})}
    p.check(len(nodes) >= 3, where, f"{len(nodes)} hostie nodes, expected 3")
    lb_ip = None
    lb = services.get("lb") or {}
    for net in (lb.get("networks") or {}).values() if isinstance(lb.get("networks"), dict) else []:
        lb_ip = (net or {}).get("ipv4_address") or lb_ip
    for name, s in nodes.items():
        env = s["environment"]
        dep = (s.get("depends_on") or {}).get("redis") or {}
        p.check(dep.get("condition") == "service_healthy", name, "does not wait for a healthy redis")
        p.check(env["HOSTIE_REDIS_URL"].startswith("redis://redis:"), name,
                f"HOSTIE_REDIS_URL {env['HOSTIE_REDIS_URL']} is not the redis service")
        for var, port in (("HOSTIE_LISTEN", HTTP_PORT), ("HOSTIE_ADMIN_LISTEN", ADMIN_PORT)):
            if var in env:
                p.check(str(env[var]).endswith(f":{port}"), name, f"{var} moved off {port}")
        p.check("HOSTIE_NODE_ID" not in env or len({n2["environment"].get("HOSTIE_NODE_ID")
                                                     for n2 in nodes.values()}) == len(nodes),
                name, "nodes share a HOSTIE_NODE_ID")
        p.check(not s.get("ports"), name, "publishes ports: the load balancer is the one way in")
        grace = duration_s(env.get("HOSTIE_DRAIN_GRACE", f"{DEFAULT_DRAIN_GRACE_S}s"))
        stop = duration_s(s.get("stop_grace_period", "10s"))
        p.check(stop >= grace + LISTENER_STOP_S, name,
                f"stop_grace_period {stop:g}s < drain grace {grace:g}s + {LISTENER_STOP_S}s")
        p.check(s.get("read_only") is True, name, "root filesystem is not read-only")
        p.check(str(s.get("user", "0")).split(":")[0] not in ("0", "root"), name, "runs as root")
        build = s.get("build") or {}
        if build:
            df = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            p.check(df.is_file(), name, f"Dockerfile {df.relative_to(ROOT)} missing")
        trusted = env.get("HOSTIE_TRUSTED_PROXIES", "")
        if lb_ip:
            p.check(any(ipaddress.ip_address(lb_ip) in ipaddress.ip_network(c, strict=False)
                        for c in trusted.split(",") if c), name,
                    f"HOSTIE_TRUSTED_PROXIES {trusted!r} does not cover the load balancer {lb_ip}")

    # Every bind-mounted file exists.
    for name, s in services.items():
        for v in s.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                p.check((ROOT / src).exists(), name, f"mounted file {src} missing")

    # The load balancer: one published port, to nginx's listen port, upstreams = the nodes.
    nginx = re.sub(r"#[^\n]*", "", (ROOT / "deploy/compose/nginx.conf").read_text())
    published = [str(x) for x in lb.get("ports") or []]
    p.check(len(published) == 1, "lb", f"publishes {published}, expected one port")
    listen = re.findall(r"^\s*listen\s+(\d+)\s*;", nginx, re.M)
    if published and listen:
        p.check(published[0].rsplit(":", 1)[-1] == listen[0], "lb",
                f"publishes {published[0]} but nginx listens on {listen[0]}")
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx, re.M))
    p.check(upstream == {(n, str(HTTP_PORT)) for n in nodes}, "nginx.conf",
            f"upstream servers {sorted(upstream)} are not the nodes' :{HTTP_PORT}")
    # Each proxying location sets its own forwarding headers: nginx does not inherit
    # proxy_set_header into a location that sets any of its own.
    locations = {m.group(1).strip(): re.sub(r"\s+", " ", m.group(2)) for m in
                 re.finditer(r"location\s+([^{]+)\{([^}]*)\}", nginx)}
    proxying = {k: v for k, v in locations.items() if "proxy_pass" in v}
    p.check(bool(proxying), "nginx.conf", "no location proxies to hostie")
    for loc, body in proxying.items():
        for needle in ("proxy_set_header X-Forwarded-For $remote_addr;",
                       "proxy_set_header X-Real-IP $remote_addr;",
                       'proxy_set_header Forwarded "";', "proxy_set_header Host "):
            p.check(needle in body, f"nginx.conf location {loc}",
                    f"lacks '{needle.strip()}' (client-supplied forwarding headers would pass)")
    ws = next((body for loc, body in proxying.items() if "/v0/websocket" in loc), "")
    for needle, why in (("proxy_set_header Upgrade $http_upgrade;", "WebSocket upgrade not passed"),
                        ("proxy_set_header Connection $connection_upgrade;", "Connection not upgraded")):
        p.check(needle in ws, "nginx.conf location /v0/websocket", why)
    p.check("proxy_http_version 1.1;" in re.sub(r"\s+", " ", nginx), "nginx.conf",
            "HTTP/1.1 not used upstream (no WebSocket, no keep-alive)")
    timeouts = [duration_s(t) for t in re.findall(r"proxy_read_timeout\s+(\S+?);", ws)]
    p.check(bool(timeouts) and max(timeouts) >= 600, "nginx.conf location /v0/websocket",
            "no long proxy_read_timeout for WebSocket tunnels")
    p.check(nginx.count("{") == nginx.count("}"), "nginx.conf", "unbalanced braces")

    # Prometheus scrapes every node's admin port, as job "hostie", and loads the rules.
    prom_svc = services.get("prometheus") or {}
    prom = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs") or []}
    if p.check(RULES_JOB in jobs, "prometheus.yml", f"no job {RULES_JOB!r}"):
        targets = {t for sc in jobs[RULES_JOB].get("static_configs") or [] for t in sc["targets"]}
        p.check(targets == {f"{n}:{ADMIN_PORT}" for n in nodes}, "prometheus.yml",
                f"targets {sorted(targets)} are not every node's :{ADMIN_PORT}")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom_svc.get("volumes") or []}
    for rf in prom.get("rule_files") or []:
        p.check(mounts.get(rf) == "./deploy/prometheus/hostie-rules.yaml", "prometheus",
                f"rule file {rf} is not deploy/prometheus/hostie-rules.yaml")
    p.check(bool(prom.get("rule_files")), "prometheus.yml", "loads no rule files")
    return p.finish(f"docker-compose.yml ok: {len(nodes)} nodes, redis, lb, prometheus")


def nginx_test_conf(args: argparse.Namespace) -> int:
    """nginx.conf for a local `nginx -t`: the Compose host names resolve to loopback, `resolve`
    (nginx >= 1.27.3) is dropped for an older local nginx, files go to a scratch prefix."""
    text = (ROOT / "deploy/compose/nginx.conf").read_text()
    text = re.sub(r"server\s+hostie\d+:(\d+)\s+resolve", r"server 127.0.0.1:\1", text)
    text = text.replace("pid /tmp/nginx.pid;", f"pid {Path(args.out).parent}/nginx.pid;")
    Path(args.out).write_text(text)
    return 0


def prometheus_test_conf(args: argparse.Namespace) -> int:
    conf = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    conf["rule_files"] = [str(RULES)]
    Path(args.out).write_text(yaml.safe_dump(conf))
    return 0
