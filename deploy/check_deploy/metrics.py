"""Dashboard and metric names: deploy/grafana/hostie-dashboard.json (keys, variables, unique panel
ids, a grid without overlaps, ${datasource} and job="hostie" in every query, balanced queries);
the hostie_* metric names files use; and that every one of them is exposed by a live node's
/metrics (a family, a sample, or a histogram series of a family).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

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
