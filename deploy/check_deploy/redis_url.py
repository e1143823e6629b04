"""hostie's `--redis-url` (HOSTIE_REDIS_URL) as the deployment files use it: the scheme selects the
topology, the rest names the servers. The forms (`hostie --help`, helm/hostie/values.yaml):

  redis://[user:pass@]host:port[/db]                     one Redis (rediss://: TLS)
  redis+sentinel://[user:pass@]host:port[,host:port...]/<primary-name>
      [?db=N&sentinel_user=U&sentinel_password=P]        Sentinel (rediss+sentinel://: TLS)
  redis+cluster://[user:pass@]host:port[,host:port...]   Cluster seeds (rediss+cluster://: TLS)

plus Centrifugo's `addr=host:port` (more sentinels or seeds) and `sentinel_master_name=`. Default
ports: 26379 for sentinels, 6379 otherwise. hostie itself also takes redis+unix:// and unix://
(a socket path, no server address); no deployment file uses them.

This reads what a check needs (topology, servers, the primary's name); hostie's own parser is
what refuses a bad value at start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

REDIS_PORT, SENTINEL_PORT = 6379, 26379

TOPOLOGIES = {
    "redis": ("standalone", False), "rediss": ("standalone", True),
    "redis+sentinel": ("sentinel", False), "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False), "rediss+cluster": ("cluster", True),
    "redis+unix": ("standalone", False), "unix": ("standalone", False),
}
# The schemes a Kubernetes or Compose deployment uses (the chart accepts exactly these).
NETWORK_SCHEMES = [s for s in TOPOLOGIES if "unix" not in s]


@dataclass
class RedisUrl:
    scheme: str
    topology: str  # standalone, sentinel, cluster
    tls: bool
    # (host, port): the server (standalone), the sentinels, or the cluster seeds.
    servers: list[tuple[str, int]] = field(default_factory=list)
    master: str | None = None  # Sentinel: the name the sentinels monitor the primary under
    username: str | None = None
    password: str | None = None


def parse(url: str) -> RedisUrl:
    """Raises ValueError with one line saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("no scheme (redis://, redis+sentinel://, redis+cluster://, rediss…)")
    if scheme not in TOPOLOGIES:
        raise ValueError(f"unknown scheme {scheme!r}")
    topology, tls = TOPOLOGIES[scheme]
    r = RedisUrl(scheme, topology, tls)
    if "unix" in scheme:
        return r
    before_query, _, query = rest.partition("?")
    authority, slash, path = before_query.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    if at:
        user, _, password = userinfo.partition(":")
        r.username, r.password = unquote(user) or None, unquote(password) or None
    hosts = [h for h in hostlist.split(",") if h] if hostlist else []
    master = unquote(path.strip("/")) if slash else None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "addr" and topology != "standalone":
            hosts.append(value)
        elif key == "sentinel_master_name" and topology == "sentinel":
            master = value
        elif topology == "standalone" or (topology == "sentinel" and key in (
                "db", "sentinel_user", "sentinel_password")):
            continue
        else:
            raise ValueError(f"unknown parameter {key!r} for {scheme}://")
    default_port = SENTINEL_PORT if topology == "sentinel" else REDIS_PORT
    for h in hosts:
        host, colon, port = h.rpartition(":") if not h.endswith("]") else (h, "", "")
        if not colon:
            host, port = h, str(default_port)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad address {h!r}")
        r.servers.append((host.strip("[]"), int(port)))
    if not r.servers:
        raise ValueError("no server address")
    if topology == "sentinel":
        if not master:
            raise ValueError("no primary name (redis+sentinel://host:26379/<primary-name>)")
        r.master = master
    elif topology == "cluster" and master:
        raise ValueError("a cluster URL has no path (a cluster has no databases)")
    return r
