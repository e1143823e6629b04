#!/usr/bin/env python3
"""Structural checks of hostie's deployment files, run by scripts/check-deploy.

Each subcommand checks one thing, prints what it found wrong (one line each) and exits non-zero
when anything is. Needs PyYAML (scripts/check-deploy runs it in its own virtualenv).

  manifests FILE [--require KIND]... [--external-secret NAME]... [--rules-out FILE]
      rendered Kubernetes objects (helm template / kubectl kustomize): names, selectors, ports,
      probes, drain budget, security context, and the references between objects
  env FILE            the environment a rendered Deployment gives hostie, as NAME=VALUE lines
  sync-rules [--check]
      writes (or, with --check, compares) deploy/monitoring/prometheusrule.yaml from
      deploy/prometheus/hostie-rules.yaml
  compose             docker-compose.yml against hostie's defaults and the files it references
  nginx-test-conf OUT deploy/compose/nginx.conf made testable by a local `nginx -t`
  prometheus-test-conf OUT
                      deploy/compose/prometheus.yml with the rule file at its repository path
  compose-emulation HOSTIE_BIN
                      the Compose topology on loopback, without Docker: Redis, three hostie
                      nodes with the Compose settings, and deploy/compose/nginx.conf in a local
                      nginx; a gateway registers through it, discovery works through it and on
                      every node, forwarding headers cannot be spoofed, a drain closes with 1001
  dockerfile          deploy/Dockerfile and .dockerignore
  dashboard           deploy/grafana/hostie-dashboard.json
  metric-names FILE...
                      the hostie_* metric names the files use (histogram series by base name)
  live-metrics METRICS_TEXT FILE...
                      every name used in FILEs is exposed in METRICS_TEXT (a /metrics body)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/hostie-rules.yaml"
KUSTOMIZE_RULE = ROOT / "deploy/monitoring/prometheusrule.yaml"

# hostie's defaults (README "Configuration"): what every deployment file must agree with.
HTTP_PORT, TLS_PORT, ADMIN_PORT = 8080, 8443, 9090
DEFAULT_DRAIN_GRACE_S, DEFAULT_DRAIN_SPREAD_S = 20.0, 5.0
# After the drain grace, hostie stops its listeners within 2 s more.
LISTENER_STOP_S = 2
RULES_JOB = "hostie"

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")

    def check(self, cond: bool, where: str, what: str) -> bool:
        if not cond:
            self.add(where, what)
        return cond

    def finish(self, ok_line: str) -> int:
        for p in self.items:
            print(f"  - {p}")
        if self.items:
            print(f"{len(self.items)} problem(s)")
            return 1
        print(ok_line)
        return 0


def duration_s(text: str) -> float:
    """A hostie duration (500ms, 3s, 1m, 1h) in seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def load_docs(path: str) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def subset(selector: dict | None, labels: dict | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def label_selector_matches(sel: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels only; matchExpressions are not used here) matches labels."""
    if not sel:
        return False
    if sel.get("matchExpressions"):
        return False
    return subset(sel.get("matchLabels"), labels)


# ---------------------------------------------------------------------------------------------
# Rendered Kubernetes objects


class Render:
    def __init__(self, docs: list[dict]) -> None:
        self.docs = docs

    def of(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def named(self, kind: str, name: str) -> dict | None:
        return next((d for d in self.of(kind) if d["metadata"].get("name") == name), None)


def container_env(render: Render, container: dict) -> tuple[dict, list[str]]:
    """The literal environment of a container (ConfigMaps through envFrom, then env values) and
    the names set from elsewhere (secretKeyRef, fieldRef, ...)."""
    env: dict[str, str] = {}
    indirect: list[str] = []
    for src in container.get("envFrom") or []:
        ref = src.get("configMapRef")
        if ref:
            cm = render.named("ConfigMap", ref["name"])
            if cm:
                env.update({k: str(v) for k, v in (cm.get("data") or {}).items()})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            indirect.append(e["name"])
            env.pop(e["name"], None)
    return env, indirect


def check_manifests(args: argparse.Namespace) -> int:
    render = Render(load_docs(args.file))
    p = Problems()
    seen = set()
    for d in render.docs:
        kind, meta = d.get("kind"), d.get("metadata") or {}
        where = f"{kind}/{meta.get('name')}"
        p.check(bool(d.get("apiVersion")), where, "no apiVersion")
        p.check(bool(kind), where, "no kind")
        name = meta.get("name") or ""
        p.check(bool(DNS1123.match(name)) and len(name) <= 253, where, "invalid metadata.name")
        key = (kind, meta.get("namespace"), name)
        p.check(key not in seen, where, "defined twice")
        seen.add(key)
        p.check((meta.get("labels") or {}).get("app.kubernetes.io/name") == "hostie", where,
                "no label app.kubernetes.io/name=hostie")

    for kind in args.require:
        p.check(bool(render.of(kind)), "render", f"no {kind} rendered")

    deployments = render.of("Deployment")
    if not p.check(len(deployments) == 1, "render", f"{len(deployments)} Deployments, expected 1"):
        return p.finish("")
    dep = deployments[0]
    dname = f"Deployment/{dep['metadata']['name']}"
    spec = dep["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"].get("labels") or {}
    pspec = pod["spec"]
    p.check(subset(spec["selector"].get("matchLabels"), pod_labels), dname,
            "selector.matchLabels not among the pod labels")

    containers = {c["name"]: c for c in pspec.get("containers") or []}
    c = containers.get("hostie")
    if not p.check(c is not None, dname, "no container named hostie"):
        return p.finish("")
    env, indirect = container_env(render, c)

    # Ports: hostie's listeners, named as the Services and probes expect them.
    ports = {pt.get("name"): pt.get("containerPort") for pt in c.get("ports") or []}
    tls = "HOSTIE_TLS_CERT" in env or "HOSTIE_TLS_CERT" in indirect
    expected = {"http": HTTP_PORT, "admin": ADMIN_PORT}
    if tls:
        expected["https"] = TLS_PORT
    p.check(ports == expected, dname, f"container ports {ports}, expected {expected}")
    for var, port in (("HOSTIE_LISTEN", HTTP_PORT), ("HOSTIE_TLS_LISTEN", TLS_PORT),
                      ("HOSTIE_ADMIN_LISTEN", ADMIN_PORT)):
        if var in env:
            p.check(env[var].rsplit(":", 1)[-1] == str(port), dname,
                    f"{var}={env[var]} does not listen on containerPort {port}")
    if tls:
        mounts = [m["mountPath"] for m in c.get("volumeMounts") or []]
        for var in ("HOSTIE_TLS_CERT", "HOSTIE_TLS_KEY"):
            p.check(any(env.get(var, "").startswith(m.rstrip("/") + "/") for m in mounts), dname,
                    f"{var} is not under a mounted volume")

    # Probes on the admin listener.
    def port_ok(port) -> bool:
        return port in ("admin", ADMIN_PORT)

    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        p.check(get.get("path") == path and port_ok(get.get("port")), dname,
                f"{probe} must be GET {path} on the admin port, is {get or 'missing'}")

    # Drain budget: preStop sleep + drain grace + 2 s <= terminationGracePeriodSeconds.
    sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    pre_stop = sleep.get("seconds")
    p.check(isinstance(pre_stop, int) and pre_stop >= 1, dname,
            "preStop must be a native sleep of at least 1 s (the image has no shell)")
    try:
        grace = duration_s(env.get("HOSTIE_DRAIN_GRACE", f"{DEFAULT_DRAIN_GRACE_S}s"))
        spread = duration_s(env.get("HOSTIE_DRAIN_SPREAD", f"{DEFAULT_DRAIN_SPREAD_S}s"))
        p.check(spread <= grace, dname, f"drain spread {spread}s exceeds drain grace {grace}s")
        tgps = pspec.get("terminationGracePeriodSeconds", 30)
        need = (pre_stop or 0) + grace + LISTENER_STOP_S
        p.check(tgps >= need, dname,
                f"terminationGracePeriodSeconds {tgps} < preStop {pre_stop} + drain grace "
                f"{grace:g} + {LISTENER_STOP_S} = {need:g}")
    except ValueError as e:
        p.add(dname, str(e))

    # Settings hostie would refuse at start.
    if "HOSTIE_TRUSTED_PROXIES" in env:
        for cidr in env["HOSTIE_TRUSTED_PROXIES"].split(","):
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                p.add(dname, f"HOSTIE_TRUSTED_PROXIES has {cidr!r}, not a CIDR (empty is refused)")
    p.check("HOSTIE_NODE_ID" not in env, dname,
            "HOSTIE_NODE_ID is a literal: every pod would share one node id")

    # Security: non-root, read-only root, no privilege escalation, no capabilities.
    psc, csc = pspec.get("securityContext") or {}, c.get("securityContext") or {}
    p.check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, dname,
            "runAsNonRoot is not true")
    p.check(csc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), dname,
            "runAsUser must be a non-zero uid")
    p.check(csc.get("readOnlyRootFilesystem") is True, dname, "readOnlyRootFilesystem is not true")
    p.check(csc.get("allowPrivilegeEscalation") is False, dname,
            "allowPrivilegeEscalation is not false")
    p.check("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), dname,
            "capabilities.drop lacks ALL")
    p.check(bool((csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")),
            dname, "no seccompProfile")
    p.check(pspec.get("automountServiceAccountToken") is False, dname,
            "automountServiceAccountToken is not false (hostie never calls the API)")

    requests = (c.get("resources") or {}).get("requests") or {}
    p.check("cpu" in requests and "memory" in requests, dname, "no cpu and memory requests")
    tsc = pspec.get("topologySpreadConstraints") or []
    p.check(bool(tsc), dname, "no topologySpreadConstraints")
    for t in tsc:
        p.check(label_selector_matches(t.get("labelSelector"), pod_labels), dname,
                f"topology spread on {t.get('topologyKey')} does not select the pods")

    # References to ConfigMaps and Secrets.
    external = set(args.external_secret)
    for src in c.get("envFrom") or []:
        if "configMapRef" in src:
            p.check(render.named("ConfigMap", src["configMapRef"]["name"]) is not None, dname,
                    f"envFrom ConfigMap {src['configMapRef']['name']} not rendered")
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue
        sec = render.named("Secret", ref["name"])
        if ref["name"] in external:
            p.check(sec is None, dname, f"Secret {ref['name']} is external but was rendered")
        elif p.check(sec is not None, dname, f"Secret {ref['name']} ({e['name']}) not rendered"):
            keys = set((sec.get("data") or {})) | set((sec.get("stringData") or {}))
            p.check(ref["key"] in keys, dname, f"Secret {ref['name']} has no key {ref['key']}")
    for v in pspec.get("volumes") or []:
        if "secret" in v:
            p.check(v["secret"]["secretName"] in external
                    or render.named("Secret", v["secret"]["secretName"]) is not None,
                    dname, f"volume Secret {v['secret']['secretName']} neither rendered nor external")
    sa = pspec.get("serviceAccountName")
    if sa and sa != "default":
        p.check(render.named("ServiceAccount", sa) is not None, dname,
                f"ServiceAccount {sa} not rendered")

    # Several nodes need Redis; an HPA owns the replica count.
    hpas = render.of("HorizontalPodAutoscaler")
    multi = bool(hpas) or spec.get("replicas", 1) > 1
    redis = "HOSTIE_REDIS_URL" in env or "HOSTIE_REDIS_URL" in indirect
    p.check(redis or not multi, dname, "several nodes without HOSTIE_REDIS_URL (embedded nodes)")
    if hpas:
        p.check("replicas" not in spec, dname, "spec.replicas is set although an HPA scales it")

    # Services: select the pods, target existing ports, admin only on ClusterIP.
    services = render.of("Service")
    for s in services:
        sname = f"Service/{s['metadata']['name']}"
        p.check(subset(s["spec"].get("selector"), pod_labels), sname, "selector misses the pods")
        for pt in s["spec"].get("ports") or []:
            tp = pt.get("targetPort", pt.get("port"))
            p.check(tp in ports or tp in ports.values(), sname,
                    f"targetPort {tp} is not a container port")
            if tp in ("admin", ADMIN_PORT):
                p.check(s["spec"].get("type", "ClusterIP") == "ClusterIP", sname,
                        "exposes the admin port outside the cluster")
    p.check(any(pt.get("targetPort") in ("http", HTTP_PORT)
                for s in services for pt in s["spec"].get("ports") or []),
            "render", "no Service for the http port")

    for pdb in render.of("PodDisruptionBudget"):
        where = f"PodDisruptionBudget/{pdb['metadata']['name']}"
        p.check(label_selector_matches(pdb["spec"].get("selector"), pod_labels), where,
                "selector misses the pods")
        p.check(("maxUnavailable" in pdb["spec"]) != ("minAvailable" in pdb["spec"]), where,
                "needs exactly one of maxUnavailable / minAvailable")
        p.check(multi, where, "a budget for a single node blocks nothing useful")

    for h in hpas:
        where = f"HorizontalPodAutoscaler/{h['metadata']['name']}"
        ref = h["spec"]["scaleTargetRef"]
        p.check(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"],
                where, f"scaleTargetRef {ref} is not the Deployment")
        lo, hi = h["spec"].get("minReplicas", 1), h["spec"]["maxReplicas"]
        p.check(2 <= lo <= hi, where, f"replicas {lo}..{hi}: need 2 <= min <= max")
        p.check(bool(h["spec"].get("metrics")), where, "no metrics")

    for ing in render.of("Ingress"):
        where = f"Ingress/{ing['metadata']['name']}"
        for rule in ing["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                be = path["backend"]["service"]
                svc = render.named("Service", be["name"])
                if p.check(svc is not None, where, f"backend Service {be['name']} not rendered"):
                    port = be["port"].get("name", be["port"].get("number"))
                    p.check(any(port in (pt.get("name"), pt.get("port"))
                                for pt in svc["spec"]["ports"]), where,
                            f"backend port {port} not on Service {be['name']}")
                    p.check(any(pt.get("targetPort") in ("http", HTTP_PORT)
                                for pt in svc["spec"]["ports"]
                                if port in (pt.get("name"), pt.get("port"))),
                            where, "backend is not hostie's http port")
        p.check(bool(ing["spec"].get("tls")), where, "no TLS: SDKs only ask https://")
        ann = ing["metadata"].get("annotations") or {}
        if ing["spec"].get("ingressClassName") == "nginx":
            for a in ("proxy-read-timeout", "proxy-send-timeout"):
                v = ann.get(f"nginx.ingress.kubernetes.io/{a}", "60")
                p.check(int(v) >= 600, where, f"{a} {v}s would cut idle WebSocket tunnels")
            p.check(ann.get("nginx.ingress.kubernetes.io/ssl-redirect") == "false", where,
                    "ssl-redirect must be \"false\": gateways connect with ws://")

    for np in render.of("NetworkPolicy"):
        where = f"NetworkPolicy/{np['metadata']['name']}"
        p.check(label_selector_matches(np["spec"].get("podSelector"), pod_labels), where,
                "podSelector misses the pods")
        allowed_in = {pt.get("port") for r in np["spec"].get("ingress") or []
                      for pt in r.get("ports") or []}
        for port in expected:
            p.check(port in allowed_in or expected[port] in allowed_in, where,
                    f"ingress does not allow port {port}")
        allowed_out = {pt.get("port") for r in np["spec"].get("egress") or []
                       for pt in r.get("ports") or []}
        p.check(53 in allowed_out, where, "egress does not allow DNS")
        if redis:
            p.check(bool(allowed_out - {53}), where, "egress does not allow Redis")

    for sm in render.of("ServiceMonitor"):
        where = f"ServiceMonitor/{sm['metadata']['name']}"
        targets = [s for s in services
                   if label_selector_matches(sm["spec"].get("selector"), s["metadata"]["labels"])]
        if p.check(len(targets) == 1, where, f"selects {len(targets)} Services, expected 1"):
            svc = targets[0]
            names = {pt.get("name") for pt in svc["spec"]["ports"]}
            for ep in sm["spec"].get("endpoints") or []:
                p.check(ep.get("port") in names, where, f"endpoint port {ep.get('port')} unknown")
                p.check(ep.get("path", "/metrics") == "/metrics", where, "path is not /metrics")
                p.check(any(pt.get("name") == ep.get("port")
                            and pt.get("targetPort") in ("admin", ADMIN_PORT)
                            for pt in svc["spec"]["ports"]), where,
                        "does not scrape the admin port")
            job = svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), svc["metadata"]["name"])
            p.check(job == RULES_JOB, where, f"job label would be {job!r}; the rules select "
                    f"job={RULES_JOB!r}")

    source = yaml.safe_load(RULES.read_text())
    for pr in render.of("PrometheusRule"):
        where = f"PrometheusRule/{pr['metadata']['name']}"
        p.check(pr["spec"].get("groups") == source["groups"], where,
                "groups differ from deploy/prometheus/hostie-rules.yaml")
        if args.rules_out:
            Path(args.rules_out).write_text(yaml.safe_dump({"groups": pr["spec"]["groups"]}))

    kinds = sorted({d["kind"] for d in render.docs})
    return p.finish(f"{len(render.docs)} objects ok ({', '.join(kinds)})")


def print_env(args: argparse.Namespace) -> int:
    render = Render(load_docs(args.file))
    (dep,) = render.of("Deployment")
    c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "hostie")
    env, _ = container_env(render, c)
    for k, v in sorted(env.items()):
        print(f"{k}={v}")
    return 0


# ---------------------------------------------------------------------------------------------
# Alert rules: one source, a generated copy for kustomize


def rendered_kustomize_rule() -> str:
    text = RULES.read_text()
    body = text[text.index("\ngroups:") + 1:]
    indented = "".join(("  " + line) if line.strip() else line
                       for line in body.splitlines(keepends=True))
    return (
        "# GENERATED from deploy/prometheus/hostie-rules.yaml by `scripts/check-deploy --sync-rules`;\n"
        "# edit that file, not this one (scripts/check-deploy fails while the two differ).\n"
        "# The hostie alerts for the Prometheus Operator. Add the label your Prometheus selects\n"
        "# rules by (e.g. release: ...). What they mean: README.md, \"Operate\".\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: hostie\n"
        "  labels:\n"
        "    app.kubernetes.io/name: hostie\n"
        "spec:\n" + indented
    )


def sync_rules(args: argparse.Namespace) -> int:
    want = rendered_kustomize_rule()
    rel = KUSTOMIZE_RULE.relative_to(ROOT)
    if args.check:
        have = KUSTOMIZE_RULE.read_text() if KUSTOMIZE_RULE.exists() else ""
        if have != want:
            print(f"  - {rel} is out of date: run scripts/check-deploy --sync-rules")
            return 1
        doc = yaml.safe_load(have)
        if doc["spec"]["groups"] != yaml.safe_load(RULES.read_text())["groups"]:
            print(f"  - {rel}: groups differ after parsing")
            return 1
        print(f"{rel} matches deploy/prometheus/hostie-rules.yaml")
        return 0
    KUSTOMIZE_RULE.write_text(want)
    print(f"wrote {rel}")
    return 0


# ---------------------------------------------------------------------------------------------
# Compose


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


# ---------------------------------------------------------------------------------------------
# The Compose topology, emulated on loopback


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


# ---------------------------------------------------------------------------------------------
# Dockerfile


def check_dockerfile(_: argparse.Namespace) -> int:
    p = Problems()
    where = "deploy/Dockerfile"
    raw = (ROOT / where).read_text()
    lines, cur = [], ""
    for line in raw.splitlines():
        if line.lstrip().startswith("#"):
            continue
        cur += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
    instr = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]
    stages = [i for i, (k, _) in enumerate(instr) if k == "FROM"]
    p.check(len(stages) >= 2, where, "not multi-stage")
    final = instr[stages[-1]:] if stages else []
    build = instr[stages[0]:stages[-1]] if len(stages) >= 2 else []
    runs = " ".join(a for k, a in build if k == "RUN")
    p.check("cargo build --release --locked" in runs, where,
            "builder does not run cargo build --release --locked")
    froms = [a for k, a in instr if k == "FROM"]
    p.check("bookworm" in froms[0] and "debian12" in froms[-1], where,
            "builder and runtime must share a Debian release (bookworm = debian12) for glibc")
    p.check("distroless" in froms[-1], where, "runtime is not distroless (a shell would be there)")
    user = [a for k, a in final if k == "USER"]
    p.check(bool(user) and user[-1].split(":")[0] not in ("0", "root"), where,
            "final stage does not switch to a non-root USER")
    p.check(bool(user) and user[-1].split(":")[0].isdigit(), where,
            "USER should be numeric so runAsNonRoot can verify it")
    exposed = {int(x.split("/")[0]) for k, a in final if k == "EXPOSE" for x in a.split()}
    p.check(exposed == {HTTP_PORT, TLS_PORT, ADMIN_PORT}, where,
            f"EXPOSE {sorted(exposed)}, expected {[HTTP_PORT, TLS_PORT, ADMIN_PORT]}")
    p.check(("STOPSIGNAL", "SIGTERM") in final, where, "no STOPSIGNAL SIGTERM")
    labels = " ".join(a for k, a in final if k == "LABEL")
    for key in ("title", "description", "licenses", "version", "revision", "source", "created"):
        p.check(f"org.opencontainers.image.{key}=" in labels, where, f"no OCI label {key}")
    entry = [a for k, a in final if k == "ENTRYPOINT"]
    p.check(bool(entry) and entry[-1].startswith("["), where, "ENTRYPOINT is not exec form")
    copied = [a for k, a in final if k == "COPY"]
    p.check(any("--from=" in a for a in copied), where, "runtime does not copy from the builder")
    p.check(not any(k == "RUN" for k, _ in final), where, "runtime stage runs commands (no shell)")

    ignore = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")]
    for must in ("target", ".git", "tests/e2e/node_modules"):
        p.check(must in ignore, ".dockerignore", f"does not exclude {must}")
    for must in ("Cargo.toml", "Cargo.lock", "src"):
        p.check(must not in ignore and (ROOT / must).exists(), ".dockerignore",
                f"{must} must be in the build context")
    return p.finish("deploy/Dockerfile ok: multi-stage, distroless non-root, EXPOSE 8080 8443 9090")


# ---------------------------------------------------------------------------------------------
# Dashboard and metric names


def check_dashboard(_: argparse.Namespace) -> int:
    p = Problems()
    where = "hostie-dashboard.json"
    dash = json.loads((ROOT / "deploy/grafana/hostie-dashboard.json").read_text())
    for key in ("title", "uid", "panels", "templating", "schemaVersion"):
        p.check(key in dash, where, f"no {key}")
    variables = {v["name"] for v in dash["templating"]["list"]}
    p.check({"datasource", "namespace", "instance"} <= variables, where,
            f"variables {sorted(variables)} lack datasource/namespace/instance")
    ids, cells = set(), {}
    for panel in dash["panels"]:
        pw = f"panel {panel.get('id')} {panel.get('title')!r}"
        p.check(panel.get("id") not in ids, pw, "duplicate id")
        ids.add(panel.get("id"))
        g = panel.get("gridPos") or {}
        if p.check(all(k in g for k in "hwxy"), pw, "no gridPos") and g["x"] + g["w"] <= 24:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    p.check((x, y) not in cells, pw, f"overlaps {cells.get((x, y))}")
                    cells[(x, y)] = panel.get("title")
        else:
            p.check(g.get("x", 0) + g.get("w", 0) <= 24, pw, "wider than the grid")
        if panel.get("type") == "row":
            continue
        p.check((panel.get("datasource") or {}).get("uid") == "${datasource}", pw,
                "datasource is not ${datasource}")
        p.check(bool(panel.get("targets")), pw, "no queries")
        for t in panel.get("targets") or []:
            expr = t.get("expr", "")
            p.check("hostie_" in expr or "up{" in expr, pw, f"query uses no hostie metric: {expr}")
            p.check(f'job="{RULES_JOB}"' in expr, pw, f"query does not select job=\"{RULES_JOB}\"")
            p.check(expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"),
                    pw, f"unbalanced query: {expr}")
    return p.finish(f"dashboard ok: {len(dash['panels'])} panels")


NAME = re.compile(r"(?<![A-Za-z0-9_])hostie_[a-z0-9_]*[a-z0-9]")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(paths: list[str]) -> dict[str, list[str]]:
    """Every hostie_* word of the files (as tests/api/deploy.rs reads them), with its files."""
    names: dict[str, list[str]] = {}
    for path in paths:
        for n in sorted(set(NAME.findall(Path(path).read_text()))):
            names.setdefault(n, []).append(Path(path).name)
    return names


def print_metric_names(args: argparse.Namespace) -> int:
    for n in sorted(metric_names(args.files)):
        print(n)
    return 0


def check_live_metrics(args: argparse.Namespace) -> int:
    """Every name used is a metric family of the exposition, one of its sample names, or a
    histogram series (_bucket/_sum/_count) of a family."""
    p = Problems()
    families, samples = {}, set()
    for line in Path(args.metrics).read_text().splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            families[m.group(1)] = m.group(2)
        elif line and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, maxsplit=1)[0])

    def exposed(name: str) -> bool:
        if name in families or name in samples:
            return True
        return any(name.endswith(s) and families.get(name[: -len(s)]) in ("histogram", "summary")
                   for s in SERIES_SUFFIXES)

    used = metric_names(args.files)
    for n, files in sorted(used.items()):
        p.check(exposed(n), n, f"used in {', '.join(files)}, not exposed by a live node")
    bases = sorted({next((n[: -len(s)] for s in SERIES_SUFFIXES if n.endswith(s)
                          and n[: -len(s)] in families), n) for n in used})
    return p.finish(f"{len(bases)} metrics used, all exposed: {' '.join(bases)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("file")
    m.add_argument("--require", action="append", default=[])
    m.add_argument("--external-secret", action="append", default=[])
    m.add_argument("--rules-out")
    m.set_defaults(fn=check_manifests)
    e = sub.add_parser("env")
    e.add_argument("file")
    e.set_defaults(fn=print_env)
    s = sub.add_parser("sync-rules")
    s.add_argument("--check", action="store_true")
    s.set_defaults(fn=sync_rules)
    sub.add_parser("compose").set_defaults(fn=check_compose)
    n = sub.add_parser("nginx-test-conf")
    n.add_argument("out")
    n.set_defaults(fn=nginx_test_conf)
    pc = sub.add_parser("prometheus-test-conf")
    pc.add_argument("out")
    pc.set_defaults(fn=prometheus_test_conf)
    ce = sub.add_parser("compose-emulation")
    ce.add_argument("hostie")
    ce.set_defaults(fn=compose_emulation)
    sub.add_parser("dockerfile").set_defaults(fn=check_dockerfile)
    sub.add_parser("dashboard").set_defaults(fn=check_dashboard)
    mn = sub.add_parser("metric-names")
    mn.add_argument("files", nargs="+")
    mn.set_defaults(fn=print_metric_names)
    lm = sub.add_parser("live-metrics")
    lm.add_argument("metrics")
    lm.add_argument("files", nargs="+")
    lm.set_defaults(fn=check_live_metrics)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
