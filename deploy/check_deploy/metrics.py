"""The dashboard's structure: deploy/grafana/hostie-dashboard.json (keys, variables, unique panel
ids, a grid without overlaps, ${datasource} and job="hostie" in every query, balanced queries).

That every hostie_* metric the dashboard and the alert rules use is exposed by a live node is
checked once, by tests/api/deploy.rs (cargo test), which starts a node in-process.
"""

from __future__ import annotations

import argparse
import json

from .common import ROOT, RULES_JOB, Problems


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
