"""deploy/Dockerfile and .dockerignore: a multi-stage build with cargo build --release --locked,
builder and runtime on the same Debian release, a distroless runtime with a numeric non-root
USER, no RUN, an exec-form ENTRYPOINT, EXPOSE of hostie's three ports, STOPSIGNAL SIGTERM and the
OCI labels; the build context keeps the sources and leaves out target, .git and node_modules.
"""

from __future__ import annotations

import argparse

from .common import ADMIN_PORT, HTTP_PORT, ROOT, TLS_PORT, Problems


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
    # vendor/: Cargo.toml's [patch.crates-io] builds actix-http from there.
    for must in ("Cargo.toml", "Cargo.lock", "src", "vendor/actix-http"):
        p.check(must not in ignore and (ROOT / must).exists(), ".dockerignore",
                f"{must} must be in the build context")
    return p.finish("deploy/Dockerfile ok: multi-stage, distroless non-root, EXPOSE 8080 8443 9090")
