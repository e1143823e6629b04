"""docker-compose.yml against hostie's defaults and the files it references: Redis with a
healthcheck, three nodes (Redis, ports, node ids, stop grace, read-only root, non-root user,
trusted proxies), bind-mounted files, deploy/compose/nginx.conf (one published port, upstreams,
forwarding headers, WebSocket upgrade and timeouts), and deploy/compose/prometheus.yml (every
node's admin port, the rules); and those two configurations made testable by a local `nginx -t`
and `promtool check config`.

The Redis topology overlays (docker-compose.sentinel.yml, docker-compose.cluster.yml, used as
`-f docker-compose.yml -f OVERLAY`) are merged onto docker-compose.yml the way Compose merges
files, and the merged model gets the same checks plus its topology's: the nodes' URL scheme,
servers and primary name match the Redis services, the servers' settings fit hostie's heartbeat
TTL, and the nodes start only once the topology is formed.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import shlex
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
from . import redis_url

COMPOSE = "docker-compose.yml"
# Overlay file -> the topology its nodes' HOSTIE_REDIS_URL must select.
OVERLAYS = {"docker-compose.sentinel.yml": "sentinel", "docker-compose.cluster.yml": "cluster"}
DEFAULT_HEARTBEAT_TTL_S = 5.0
# Sequences an overlay replaces instead of extending (Compose's merge rules).
REPLACED = {"command", "entrypoint", "test"}


def merge(base, over, key: str | None = None):
    """`over` merged onto `base` as Compose merges files: mappings key by key, sequences extended
    (command, entrypoint and healthcheck test replaced), anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in REPLACED:
        return base + [x for x in over if x not in base]
    return over


def load_model(files: list[str]) -> dict:
    model: dict = {}
    for f in files:
        model = merge(model, yaml.safe_load((ROOT / f).read_text()) or {})
    return model


def compose_merge(args: argparse.Namespace) -> int:
    """docker-compose.yml with OVERLAY merged onto it, for the Compose schema check."""
    Path(args.out).write_text(yaml.safe_dump(load_model([COMPOSE, args.overlay]), sort_keys=False))
    return 0


def words(command) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command or []]


class RedisService:
    """What a Redis service of a Compose file runs: a server (its --options) or a sentinel (the
    configuration its command writes, then starts)."""

    def __init__(self, svc: dict) -> None:
        cmd = words(svc.get("command"))
        self.script = None
        self.conf_path = None
        self.conf: list[list[str]] = []
        self.entrypoint = False  # started through the image's docker-entrypoint.sh
        if len(cmd) >= 3 and cmd[0] in ("sh", "/bin/sh") and "c" in cmd[1]:
            self.script = cmd[2].replace("$$", "$")  # Compose's escape of a literal $
            m = re.search(r"cat\s*>\s*(\S+)\s*<<-?\s*'?(\w+)'?\n(.*?)\n\2$",
                          self.script, re.S | re.M)
            if m:
                self.conf_path = m.group(1)
                self.conf = [ln.split() for ln in m.group(3).splitlines()
                             if ln.strip() and not ln.lstrip().startswith("#")]
            ex = re.search(r"^\s*exec\s+(.+)$", self.script, re.M)
            cmd = shlex.split(ex.group(1)) if ex else []
        if cmd[:1] == ["docker-entrypoint.sh"]:
            self.entrypoint = True
            cmd = cmd[1:]
        if not svc.get("command") and str(svc.get("image", "")).startswith(("redis:", "valkey/")):
            cmd = ["redis-server"]  # the image's default command
        self.args: dict[str, list[str]] = {}
        opt = None
        for w in cmd[1:]:
            if w.startswith("--"):
                opt = w[2:]
                self.args[opt] = []
            elif opt is not None:
                self.args[opt].append(w)
        sentinel = cmd[:1] == ["redis-server"] and "sentinel" in self.args
        if cmd[:1] == ["redis-sentinel"] or sentinel:
            self.kind = "sentinel"
            if len(cmd) > 1 and not cmd[1].startswith("--") and cmd[1] != self.conf_path:
                self.conf_path = None  # it starts another file than the one written
            port = self.conf_value("port") or self.args.get("port", [None])[0]
            self.port = int(port or redis_url.SENTINEL_PORT)
        elif cmd[:1] == ["redis-server"]:
            self.kind = "server"
            self.port = int(self.args.get("port", [redis_url.REDIS_PORT])[0])
        else:
            self.kind = None
            self.port = None

    def conf_value(self, *key: str) -> str | None:
        """The value after KEY... in the sentinel configuration (e.g. "sentinel",
        "down-after-milliseconds", "hostie")."""
        for ln in self.conf:
            if tuple(ln[:len(key)]) == key and len(ln) > len(key):
                return ln[len(key)]
        return None

    def arg(self, name: str, default: str | None = None) -> str | None:
        v = self.args.get(name)
        return v[0] if v else default


def depends(services: dict, who: str) -> dict:
    deps = (services.get(who) or {}).get("depends_on") or {}
    return deps if isinstance(deps, dict) else {d: {"condition": "service_started"} for d in deps}


def waits_for(services: dict, who: str, target: str) -> bool:
    """Whether `who` starts only once `target` is healthy: directly, or through a one-shot
    service it waits to complete that waits for it."""
    for name, dep in depends(services, who).items():
        cond = (dep or {}).get("condition")
        if name == target and cond == "service_healthy":
            return True
        if (cond == "service_completed_successfully" and name != who
                and waits_for(services, name, target)):
            return True
    return False


def image_version(image: str) -> tuple[int, int] | None:
    m = re.match(r"^(?:.*/)?(redis|valkey):(\d+)\.(\d+)", image or "")
    return (int(m.group(2)), int(m.group(3))) if m else None


def check_compose(args: argparse.Namespace) -> int:
    p = Problems()
    overlay = getattr(args, "overlay", None)
    # Known by its file name (a copy elsewhere is checked as the original).
    if overlay and Path(overlay).name not in OVERLAYS:
        p.add(overlay, f"not a known overlay ({', '.join(OVERLAYS)})")
        return p.finish("")
    files = [COMPOSE] + ([overlay] if overlay else [])
    topology = OVERLAYS[Path(overlay).name] if overlay else "standalone"
    compose = load_model(files)
    services = compose.get("services") or {}
    where = " + ".join(files)

    redis = services.get("redis")
    if p.check(redis is not None, where, "no redis service"):
        p.check(bool((redis.get("healthcheck") or {}).get("test")), "redis", "no healthcheck")
    # A condition needs what it waits for: a healthcheck, or a one-shot that ends.
    for name, s in services.items():
        for dep, d in depends(services, name).items():
            cond = (d or {}).get("condition")
            target = services.get(dep)
            if not p.check(target is not None, name, f"depends on {dep}, not a service"):
                continue
            if cond == "service_healthy":
                p.check(bool((target.get("healthcheck") or {}).get("test")), name,
                        f"waits for {dep} to be healthy, but {dep} has no healthcheck")
            if cond == "service_completed_successfully":
                p.check(str(target.get("restart", "no")) in ("no", "on-failure"), name,
                        f"waits for {dep} to complete, but {dep} restarts when it does")

    nodes = {n: s for n, s in services.items()
             if "HOSTIE_REDIS_URL" in (s.get("environment") or {})}
    p.check(len(nodes) >= 3, where, f"{len(nodes)} hostie nodes, expected 3")
    lb_ip = None
    lb = services.get("lb") or {}
    for net in (lb.get("networks") or {}).values() if isinstance(lb.get("networks"), dict) else []:
        lb_ip = (net or {}).get("ipv4_address") or lb_ip
    redis_services = {n: RedisService(s) for n, s in services.items()}
    redis_services = {n: r for n, r in redis_services.items() if r.kind}
    urls: dict[str, redis_url.RedisUrl] = {}
    p.check(len({str(s["environment"]["HOSTIE_REDIS_URL"]) for s in nodes.values()}) <= 1, where,
            "the nodes do not share one HOSTIE_REDIS_URL")
    for name, s in nodes.items():
        env = s["environment"]
        try:
            url = urls[name] = redis_url.parse(str(env["HOSTIE_REDIS_URL"]))
        except ValueError as e:
            p.add(name, f"HOSTIE_REDIS_URL: {e}")
            url = None
        if url:
            p.check(url.topology == topology, name,
                    f"HOSTIE_REDIS_URL is {url.scheme}://, a {url.topology} URL; {where} runs "
                    f"{topology}")
            for host, port in url.servers:
                r = redis_services.get(host)
                if p.check(r is not None, name, f"HOSTIE_REDIS_URL names {host}, not a Redis "
                           "service"):
                    p.check(r.port == port, name,
                            f"HOSTIE_REDIS_URL names {host}:{port}, {host} listens on {r.port}")
                    p.check(waits_for(services, name, host), name,
                            f"does not wait for a healthy {host}")
        prefix = str(env.get("HOSTIE_REDIS_PREFIX", "hostie"))
        p.check("{" not in prefix and "}" not in prefix, name,
                f"HOSTIE_REDIS_PREFIX {prefix!r} has braces (a Redis Cluster hash tag)")
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

    # The Redis topology the nodes' URL selects, as the Redis services run it.
    ttl = min((duration_s(s["environment"].get("HOSTIE_HEARTBEAT_TTL",
                                               f"{DEFAULT_HEARTBEAT_TTL_S}s"))
               for s in nodes.values()), default=DEFAULT_HEARTBEAT_TTL_S)
    url = next(iter(urls.values()), None)
    images = {str(services[n].get("image")) for n in redis_services}
    p.check(len(images) == 1, where, f"the Redis services run different images {sorted(images)}")
    summary = "redis"
    if url and url.topology == topology == "sentinel":
        summary = check_sentinel(p, services, redis_services, nodes, url, ttl)
    elif url and url.topology == topology == "cluster":
        summary = check_cluster(p, services, redis_services, nodes, url, ttl)

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
    return p.finish(f"{where} ok: {len(nodes)} nodes, {summary}, lb, prometheus")


def check_sentinel(p: Problems, services: dict, redis: dict, nodes: dict,
                   url: redis_url.RedisUrl, ttl: float) -> str:
    """Sentinel: the URL names every sentinel and the primary they all monitor; the sentinels
    write their own configuration, agree by a majority and notice a dead primary within half the
    heartbeat TTL; the data nodes refuse writes without a replica and announce their names."""
    where = "sentinel"
    sentinels = {n: r for n, r in redis.items() if r.kind == "sentinel"}
    servers = {n: r for n, r in redis.items() if r.kind == "server"}
    count = len(sentinels)
    p.check(count >= 3 and count % 2 == 1, where,
            f"{count} sentinels: need an odd number, at least 3 (a majority elects a failover)")
    named = set(url.servers)
    running = {(n, r.port) for n, r in sentinels.items()}
    p.check(named == running, "HOSTIE_REDIS_URL",
            f"names the sentinels {sorted(named)}, the sentinel services are {sorted(running)}")
    primaries = set()
    for n, r in sentinels.items():
        svc = services[n]
        p.check(r.conf_path is not None, n,
                "does not write the configuration it starts (a sentinel rewrites its file: a "
                "mounted one is read-only or shared)")
        p.check(str(r.conf_path or "").startswith("/data/") and r.entrypoint, n,
                "the configuration must be written under /data and the sentinel started through "
                "docker-entrypoint.sh, which gives the file to the redis user that runs it")
        p.check(svc.get("read_only") is not True, n,
                "read-only root: the sentinel cannot rewrite its configuration")
        monitors = [ln[2:] for ln in r.conf if ln[:2] == ["sentinel", "monitor"]]
        if not p.check(len(monitors) == 1 and len(monitors[0]) == 4, n,
                       f"monitors {len(monitors)} primaries, expected 1 (name host port quorum)"):
            continue
        name, host, port, quorum = monitors[0]
        p.check(name == url.master, n,
                f"monitors {name!r}, HOSTIE_REDIS_URL names the primary {url.master!r}")
        p.check(host in servers and str(servers[host].port) == port, n,
                f"monitors {host}:{port}, not a Redis server service")
        primaries.add((host, port))
        p.check(quorum.isdigit() and count // 2 < int(quorum) <= count, n,
                f"quorum {quorum} of {count} sentinels: make it a majority")
        down = r.conf_value("sentinel", "down-after-milliseconds", name) or "30000"
        p.check(int(down) <= ttl * 1000 / 2, n,
                f"down-after-milliseconds {down} exceeds half of hostie's heartbeat TTL "
                f"({ttl:g}s): nodes' heartbeats would expire during a failover")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            p.check(r.conf_value("sentinel", "resolve-hostnames") == "yes", n,
                    f"monitors the host name {host} without 'sentinel resolve-hostnames yes'")
        p.check(r.conf_value("sentinel", "announce-hostnames") == "yes", n,
                "without 'sentinel announce-hostnames yes' the sentinels hand hostie container "
                "addresses, which change when a container restarts")
        p.check(waits_for(services, n, host), n,
                f"does not wait for a healthy {host} (the sentinel resolves it at start)")
    p.check(len(primaries) <= 1, where, f"the sentinels monitor different primaries {primaries}")
    if len(primaries) != 1:
        return f"{count} sentinels"
    primary, port = next(iter(primaries))
    replicas = [n for n, r in servers.items() if r.args.get("replicaof") == [primary, port]]
    data = [primary] + replicas
    for n, r in servers.items():
        p.check(n in data, n, f"neither the primary {primary} nor its replica")
    for n in data:
        r = servers[n]
        min_write = int(r.arg("min-replicas-to-write", "0"))
        p.check(min_write >= 1, n,
                "min-replicas-to-write is not set: a primary cut off from its replicas keeps "
                "taking writes that the failover then discards")
        p.check(len(data) - 2 >= min_write, n,
                f"min-replicas-to-write {min_write} with {len(replicas)} replicas: the promoted "
                "replica would refuse writes")
        lag = int(r.arg("min-replicas-max-lag", "10"))
        p.check(lag <= ttl, n, f"min-replicas-max-lag {lag} exceeds hostie's heartbeat TTL "
                f"({ttl:g}s)")
        p.check(r.arg("replica-announce-ip") == services[n].get("hostname", n), n,
                "does not announce its service name (--replica-announce-ip): the sentinels "
                "would hand hostie a container address")
        for node in nodes:
            p.check(waits_for(services, node, n), node, f"does not wait for a healthy {n} (with "
                    "min-replicas-to-write the primary refuses writes until replicas follow)")
    for n in replicas:
        test = " ".join(words((services[n].get("healthcheck") or {}).get("test")))
        p.check("master_link_status:up" in test, n,
                "the healthcheck does not check the link to the primary")
    p.check(bool(replicas), where, f"no replica of {primary}: nothing to fail over to")
    return (f"Sentinel ({count} sentinels monitoring {url.master!r}: {primary} and "
            f"{len(replicas)} replicas)")


def check_cluster(p: Problems, services: dict, redis: dict, nodes: dict,
                  url: redis_url.RedisUrl, ttl: float) -> str:
    """Cluster: the URL's seeds are the cluster's servers; every server announces its service
    name and notices a dead peer within half the heartbeat TTL; a one-shot service creates the
    cluster once, and the nodes start when every server says cluster_state:ok."""
    where = "cluster"
    servers = {n: r for n, r in redis.items()
               if r.kind == "server" and r.arg("cluster-enabled") == "yes"}
    p.check(len(servers) >= 3, where,
            f"{len(servers)} cluster servers: a cluster needs 3 primaries")
    named = set(url.servers)
    running = {(n, r.port) for n, r in servers.items()}
    p.check(named == running, "HOSTIE_REDIS_URL",
            f"names the seeds {sorted(named)}, the cluster servers are {sorted(running)}")
    for n, r in redis.items():
        if r.kind == "server":
            p.check(n in servers, n, "not a cluster server (--cluster-enabled yes)")
    for n, r in servers.items():
        version = image_version(str(services[n].get("image")))
        minimum = (7, 2) if "valkey" in str(services[n].get("image")) else (7, 0)
        p.check(version is not None and version >= minimum, n,
                f"image {services[n].get('image')}: Cluster needs Redis >= 7.0 or Valkey >= 7.2 "
                "(sharded pub/sub)")
        p.check(r.arg("cluster-announce-hostname") == services[n].get("hostname", n), n,
                "does not announce its service name (--cluster-announce-hostname)")
        p.check(r.arg("cluster-preferred-endpoint-type") == "hostname", n,
                "redirects would name container addresses, not --cluster-announce-hostname "
                "(--cluster-preferred-endpoint-type hostname)")
        timeout = r.arg("cluster-node-timeout", "15000")
        p.check(int(timeout) <= ttl * 1000 / 2, n,
                f"cluster-node-timeout {timeout} exceeds half of hostie's heartbeat TTL "
                f"({ttl:g}s)")
    creators = {n: r for n, r in ((n, RedisService(s)) for n, s in services.items())
                if r.script and "--cluster create" in r.script}
    if not p.check(len(creators) == 1, where,
                   f"{len(creators)} services run redis-cli --cluster create, expected 1"):
        return f"Cluster ({len(servers)} servers)"
    init, r = next(iter(creators.items()))
    create = re.search(r"--cluster\s+create\s+([^\n;&|]*)", r.script)
    argv = shlex.split(create.group(1)) if create else []
    addrs = {a for i, a in enumerate(argv) if not a.startswith("--")
             and (i == 0 or argv[i - 1] != "--cluster-replicas")}
    p.check(addrs == {f"{n}:{srv.port}" for n, srv in servers.items()}, init,
            f"creates the cluster of {sorted(addrs)}, the servers are "
            f"{sorted(f'{n}:{srv.port}' for n, srv in servers.items())}")
    per = argv[argv.index("--cluster-replicas") + 1] if "--cluster-replicas" in argv else "0"
    p.check(len(servers) >= 3 * (int(per) + 1), init,
            f"{len(servers)} servers cannot be 3 primaries with {per} replicas each")
    p.check("--cluster-yes" in argv, init, "redis-cli would wait for a typed 'yes'")
    before = r.script[:create.start()] if create else ""
    p.check("cluster_slots_assigned:0" in before or "cluster_known_nodes:1" in before, init,
            "creates the cluster on every `up`; the second one fails (servers keep their slots)")
    p.check("cluster_state:ok" in r.script[create.end() if create else 0:], init,
            "does not wait for cluster_state:ok: the nodes would start on CLUSTERDOWN")
    for n in servers:
        p.check(waits_for(services, init, n), init, f"does not wait for a healthy {n}")
    for node in nodes:
        dep = depends(services, node).get(init) or {}
        p.check(dep.get("condition") == "service_completed_successfully", node,
                f"does not wait for {init} to complete")
    return f"Cluster ({len(servers)} primaries x {per} replicas, created by {init})"


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
