"""The dashboard: deploy/grafana/hostie-dashboard.json. Its structure (keys, variables, unique
panel ids, a grid without overlaps, ${datasource} and job="hostie" in every query, balanced
queries), and its queries as PromQL: dashboard-rules writes every query, Grafana's variables
replaced by values they can take, as a recording rule, for `promtool check rules` to parse.

That every hostie_* metric the dashboard and the alert rules use is exposed by a live node is
checked once, by tests/api/deploy.rs (cargo test), which starts a node in-process.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import yaml

from .common import ROOT, RULES_JOB, Problems

DASHBOARD = ROOT / "deploy/grafana/hostie-dashboard.json"
# Grafana's built-in interval variables; any duration parses the same.
BUILTIN_INTERVALS = ("__rate_interval", "__interval", "__range")


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def check_dashboard(_: argparse.Namespace) -> int:
    p = Problems()
    where = "hostie-dashboard.json"
    dash = load_dashboard()
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


def variable_values(dash: dict) -> dict[str, str]:
    """A value each of the dashboard's variables can take, as Grafana substitutes it: a query
    variable's "All" value (a regex), a textbox's or constant's default."""
    values = {name: "5m" for name in BUILTIN_INTERVALS}
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            values[v["name"]] = v.get("allValue") or ".*"
        elif v["type"] in ("textbox", "constant"):
            values[v["name"]] = str(v.get("query", ""))
    return values


def dashboard_rules(args: argparse.Namespace) -> int:
    """Writes every panel query as a recording rule (dashboard:panel_<id>:<refId>), its variables
    substituted, so that promtool parses it; fails on a variable the dashboard does not define."""
    p = Problems()
    dash = load_dashboard()
    values = variable_values(dash)
    # $name or ${name}; the lookahead keeps $name from matching the start of $namespace.
    var = re.compile(r"\$\{(\w+)\}|\$(" + "|".join(map(re.escape, values)) + r")(?!\w)")

    def substitute(m: re.Match) -> str:
        return values.get(m.group(1) or m.group(2), m.group(0))

    rules = []
    for panel in dash["panels"]:
        for t in panel.get("targets") or []:
            expr = var.sub(substitute, t["expr"])
            pw = f"panel {panel.get('id')} {panel.get('title')!r} query {t.get('refId')}"
            if p.check("$" not in expr, pw, f"unknown variable in: {t['expr']}"):
                rules.append({"record": f"dashboard:panel_{panel['id']}:{t['refId']}",
                              "expr": expr})
    Path(args.out).write_text(yaml.safe_dump(
        {"groups": [{"name": "hostie-dashboard", "rules": rules}]}, sort_keys=False))
    return p.finish(f"{len(rules)} dashboard queries written as rules")
