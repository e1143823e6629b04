"""What every check shares: the list of problems a check reports (one line each, then a summary or
its ok line), hostie durations, YAML documents, label selectors, the repository's paths and
hostie's defaults (ports, drain budget, the Prometheus job) that every deployment file must agree
with.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/hostie-rules.yaml"
KUSTOMIZE_RULE = ROOT / "deploy/monitoring/prometheusrule.yaml"

# hostie's defaults (README "Configuration"): what every deployment file must agree with.
HTTP_PORT, TLS_PORT, ADMIN_PORT = 8080, 8443, 9090
DEFAULT_DRAIN_GRACE_S, DEFAULT_DRAIN_SPREAD_S = 20.0, 5.0
# After the drain grace, hostie stops its listeners within 2 s more.
LISTENER_STOP_S = 2
RULES_JOB = "hostie"


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
