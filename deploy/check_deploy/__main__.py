"""Structural checks of hostie's deployment files, run by deploy/check.

Each subcommand checks one thing, prints what it found wrong (one line each) and exits non-zero
when anything is. Needs PyYAML (deploy/check runs it in its own virtualenv).

  manifests FILE [--require KIND]... [--external-secret NAME]... [--rules-out FILE]
            [--redis-topology standalone|sentinel|cluster]
      rendered Kubernetes objects (helm template / kubectl kustomize): names, selectors, ports,
      probes, drain budget, security context, the Redis URL (its topology, the NetworkPolicy's
      ports for its servers), and the references between objects
  env FILE            the environment a rendered Deployment gives hostie, as NAME=VALUE lines
  sync-rules [--check]
      writes (or, with --check, compares) deploy/monitoring/prometheusrule.yaml from
      deploy/prometheus/hostie-rules.yaml
  compose [OVERLAY]   docker-compose.yml against hostie's defaults and the files it references;
                      with OVERLAY (docker-compose.sentinel.yml, docker-compose.cluster.yml)
                      merged onto it, also the Redis topology it runs
  compose-merge OVERLAY OUT
                      docker-compose.yml with OVERLAY merged onto it, as Compose merges files
  nginx-test-conf OUT deploy/compose/nginx.conf made testable by a local `nginx -t`
  prometheus-test-conf OUT
                      deploy/compose/prometheus.yml with the rule file at its repository path
  compose-emulation HOSTIE_BIN
                      the Compose topology on loopback, without Docker: Redis, three hostie
                      nodes with the Compose settings, and deploy/compose/nginx.conf in a local
                      nginx; a gateway registers through it, discovery works through it and on
                      every node, forwarding headers cannot be spoofed, a drain closes with 1001
  topology-emulation OVERLAY
                      the Redis topology of a Compose overlay with the local redis-server, its
                      service names resolving in a namespace of its own: Sentinel elects and
                      fails over, the Cluster is created once and redirects by service name
  dockerfile          deploy/Dockerfile and .dockerignore
  dashboard           deploy/grafana/hostie-dashboard.json (structure; its metric names are
                      checked against a live node by tests/api/deploy.rs)
  dashboard-rules OUT the dashboard's queries, its variables substituted, as a Prometheus rules
                      file, for `promtool check rules` to parse them
"""

from __future__ import annotations

import argparse
import sys

from .compose import check_compose, compose_merge, nginx_test_conf, prometheus_test_conf
from .emulation import compose_emulation
from .image import check_dockerfile
from .manifests import check_manifests, print_env
from .metrics import check_dashboard, dashboard_rules
from .rules import sync_rules
from .topology_emulation import topology_emulation


def main() -> int:
    ap = argparse.ArgumentParser(prog="check_deploy", description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifests")
    m.add_argument("file")
    m.add_argument("--require", action="append", default=[])
    m.add_argument("--external-secret", action="append", default=[])
    m.add_argument("--rules-out")
    m.add_argument("--redis-topology", choices=["standalone", "sentinel", "cluster"])
    m.set_defaults(fn=check_manifests)
    e = sub.add_parser("env")
    e.add_argument("file")
    e.set_defaults(fn=print_env)
    s = sub.add_parser("sync-rules")
    s.add_argument("--check", action="store_true")
    s.set_defaults(fn=sync_rules)
    c = sub.add_parser("compose")
    c.add_argument("overlay", nargs="?")
    c.set_defaults(fn=check_compose)
    cm = sub.add_parser("compose-merge")
    cm.add_argument("overlay")
    cm.add_argument("out")
    cm.set_defaults(fn=compose_merge)
    n = sub.add_parser("nginx-test-conf")
    n.add_argument("out")
    n.set_defaults(fn=nginx_test_conf)
    pc = sub.add_parser("prometheus-test-conf")
    pc.add_argument("out")
    pc.set_defaults(fn=prometheus_test_conf)
    ce = sub.add_parser("compose-emulation")
    ce.add_argument("hostie")
    ce.set_defaults(fn=compose_emulation)
    te = sub.add_parser("topology-emulation")
    te.add_argument("overlay")
    te.set_defaults(fn=topology_emulation)
    sub.add_parser("dockerfile").set_defaults(fn=check_dockerfile)
    sub.add_parser("dashboard").set_defaults(fn=check_dashboard)
    dr = sub.add_parser("dashboard-rules")
    dr.add_argument("out")
    dr.set_defaults(fn=dashboard_rules)
    args = ap.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
