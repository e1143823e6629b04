"""Rendered Kubernetes objects (helm template / kubectl kustomize): names, labels, selectors, ports,
probes, the drain budget, the security context, settings hostie would refuse, the Redis URL a
rendered Secret holds (its topology; the NetworkPolicy lets its servers' ports out), and the
references between objects (ConfigMaps, Secrets, Services, PodDisruptionBudget, HPA, Ingress,
NetworkPolicy, ServiceMonitor, PrometheusRule); and the environment a rendered Deployment gives
hostie.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import re
from pathlib import Path

import yaml

from .common import (
    ADMIN_PORT,
    DEFAULT_DRAIN_GRACE_S,
    DEFAULT_DRAIN_SPREAD_S,
    HTTP_PORT,
    LISTENER_STOP_S,
    RULES,
    RULES_JOB,
    TLS_PORT,
    Problems,
    duration_s,
    label_selector_matches,
    load_docs,
    subset,
)
from . import redis_url

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


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


def secret_value(secret: dict, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return str(secret["stringData"][key])
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def redis_url_of(render: Render, container: dict, env: dict) -> str | None:
    """HOSTIE_REDIS_URL as the container gets it: a literal, or a rendered Secret's value."""
    if "HOSTIE_REDIS_URL" in env:
        return env["HOSTIE_REDIS_URL"]
    for e in container.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if e["name"] == "HOSTIE_REDIS_URL" and ref:
            sec = render.named("Secret", ref["name"])
            return secret_value(sec, ref["key"]) if sec else None
    return None


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
    prefix = env.get("HOSTIE_REDIS_PREFIX", "hostie")
    p.check("{" not in prefix and "}" not in prefix, dname,
            f"HOSTIE_REDIS_PREFIX {prefix!r} has braces (a Redis Cluster hash tag)")
    # The Redis URL, when the render holds it (not in an external Secret): a topology hostie
    # knows, reached over the network (no socket is mounted).
    url = None
    raw = redis_url_of(render, c, env)
    if raw is not None:
        try:
            url = redis_url.parse(raw)
            p.check(url.scheme in redis_url.NETWORK_SCHEMES, dname,
                    f"HOSTIE_REDIS_URL is a {url.scheme}:// socket, and no socket is mounted")
        except ValueError as e:
            p.add(dname, f"HOSTIE_REDIS_URL: {e}")
    if args.redis_topology:
        got = url.topology if url else "unknown"
        p.check(got == args.redis_topology, "render",
                f"Redis topology {got}, expected {args.redis_topology}")

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
        egress = np["spec"].get("egress") or []
        allowed_out = {pt.get("port") for r in egress for pt in r.get("ports") or []}
        any_port = any(not r.get("ports") for r in egress)
        p.check(53 in allowed_out or any_port, where, "egress does not allow DNS")
        if redis:
            p.check(bool(allowed_out - {53}) or any_port, where, "egress does not allow Redis")
        if url and not any_port:
            # The URL's servers (the sentinels, the cluster seeds); through Sentinel hostie then
            # reaches the primary, on a port the URL does not name.
            shut = sorted({port for _, port in url.servers} - allowed_out)
            p.check(not shut, where, f"egress does not allow port(s) {shut} of the "
                    f"{url.topology} servers HOSTIE_REDIS_URL names")
            if url.topology == "sentinel":
                p.check(bool(allowed_out - {53} - {port for _, port in url.servers}), where,
                        "egress allows the sentinels but no port for the primary they name")

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
