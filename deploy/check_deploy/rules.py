"""Alert rules: one source, a generated copy for kustomize. Writes
deploy/monitoring/prometheusrule.yaml (the Prometheus Operator's PrometheusRule) from
deploy/prometheus/hostie-rules.yaml, or checks that the copy is exactly what it would write and
has the same groups.
"""

from __future__ import annotations

import argparse

import yaml

from .common import KUSTOMIZE_RULE, ROOT, RULES


def rendered_kustomize_rule() -> str:
    text = RULES.read_text()
    body = text[text.index("\ngroups:") + 1:]
    indented = "".join(("  " + line) if line.strip() else line
                       for line in body.splitlines(keepends=True))
    return (
        "# GENERATED from deploy/prometheus/hostie-rules.yaml by `deploy/check --sync-rules`;\n"
        "# edit that file, not this one (deploy/check fails while the two differ).\n"
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
            print(f"  - {rel} is out of date: run deploy/check --sync-rules")
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
