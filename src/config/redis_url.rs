//! Which Redis deployment hostie talks to, read from the one setting `--redis-url`.
//!
//! The scheme names the topology; the forms follow the ones operators already know from
//! redis-rs (`redis://`, `rediss://`) and Centrifugo (`redis+sentinel://`, `redis+cluster://`,
//! repeated `addr=` parameters):
//!
//! | form | topology |
//! |---|---|
//! | `redis://[user:pass@]host:port[/db]` | one Redis (`rediss://`: TLS) |
//! | `redis+sentinel://[user:pass@]host:port[,host:port…]/master[?db=N&sentinel_user=U&sentinel_password=P]` | a primary found through Sentinel |
//! | `redis+cluster://[user:pass@]host:port[,host:port…]` | a Redis Cluster, given seed nodes |
//!
//! `user:pass` are the data nodes' credentials (for Sentinel, `sentinel_user` and
//! `sentinel_password` are the sentinels'). `rediss+sentinel` and `rediss+cluster` use TLS to
//! every server. Centrifugo's `sentinel_master_name=` and `addr=host:port` are accepted as well.
//! redis-rs itself has no URL for a Sentinel or a Cluster (it takes lists of addresses), hence
//! this parser; each address is then handed to redis-rs as a plain `redis://` URL.

use std::fmt;

/// The default ports when an address names none.
const REDIS_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;

#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One Redis: the URL as redis-rs reads it.
    Standalone { url: String },
    /// A primary (and its replicas) watched by Sentinel.
    Sentinel {
        /// The sentinels, each as a `redis[s]://host:port` URL with the sentinels' credentials.
        sentinels: Vec<String>,
        /// The name the sentinels monitor the primary under.
        master: String,
        tls: bool,
        username: Option<String>,
        password: Option<String>,
        db: i64,
    },
    /// A Redis Cluster: seed nodes, each a `redis[s]://[user:pass@]host:port` URL.
    Cluster { seeds: Vec<String> },
}

impl RedisTopology {
    /// Reads `--redis-url`; the error is one line saying what is wrong and what was expected.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("no scheme; {EXPECTED}"))?;
        let (tls, kind) = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                redis::Client::open(url).map_err(|e| format!("{e}; {EXPECTED}"))?;
                return Ok(Self::Standalone { url: url.into() });
            }
            "redis+sentinel" => (false, Kind::Sentinel),
            "rediss+sentinel" => (true, Kind::Sentinel),
            "redis+cluster" => (false, Kind::Cluster),
            "rediss+cluster" => (true, Kind::Cluster),
            other => return Err(format!("unknown scheme '{other}'; {EXPECTED}")),
        };
        // An `@` after the first `/`, `?` or `#` means a credential holds one of them unencoded:
        // the URL would split inside it, and an error would print part of it.
        let end_of_authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[end_of_authority..].contains('@') {
            return Err(format!(
                "a credential contains '/', '?' or '#': percent-encode it; {EXPECTED}"
            ));
        }
        let parts = Parts::split(rest)?;
        let default_port = match kind {
            Kind::Sentinel => SENTINEL_PORT,
            Kind::Cluster => REDIS_PORT,
        };
        let data_scheme = if tls { "rediss" } else { "redis" };
        let mut hosts = parts.hosts.clone();
        let mut master = parts.path.clone();
        let (mut db, mut sentinel_user, mut sentinel_password) = (0, None, None);
        for (key, value) in parts.query {
            match key.as_str() {
                "addr" => hosts.push(value),
                "sentinel_master_name" if kind == Kind::Sentinel => master = Some(value),
                "db" if kind == Kind::Sentinel => {
                    db = value
                        .parse::<u16>()
                        .map_err(|_| format!("db '{value}' is not a database number"))?
                        .into();
                }
                "sentinel_user" if kind == Kind::Sentinel => sentinel_user = Some(value),
                "sentinel_password" if kind == Kind::Sentinel => sentinel_password = Some(value),
                other => return Err(format!("unknown parameter '{other}'; {EXPECTED}")),
            }
        }
        if hosts.is_empty() {
            return Err(format!("no address; {EXPECTED}"));
        }
        let addresses = hosts
            .iter()
            .map(|h| address(h, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        match kind {
            Kind::Cluster => {
                if master.is_some() {
                    return Err(format!(
                        "a cluster URL has no path (a cluster has no databases); {EXPECTED}"
                    ));
                }
                let auth = userinfo(parts.username.as_deref(), parts.password.as_deref());
                let seeds = addresses
                    .iter()
                    .map(|a| format!("{data_scheme}://{auth}{a}"))
                    .collect();
                Ok(Self::Cluster { seeds })
            }
            Kind::Sentinel => {
                let master = master
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| format!("no primary name; {EXPECTED}"))?;
                if master.contains('/') {
                    return Err(format!(
                        "the path is the primary's name alone (a database is ?db=N); {EXPECTED}"
                    ));
                }
                let auth = userinfo(sentinel_user.as_deref(), sentinel_password.as_deref());
                let sentinels = addresses
                    .iter()
                    .map(|a| format!("{data_scheme}://{auth}{a}"))
                    .collect();
                Ok(Self::Sentinel {
                    sentinels,
                    master,
                    tls,
                    username: parts.username,
                    password: parts.password,
                    db,
                })
            }
        }
    }

    /// Whether any server is reached over TLS.
    pub fn uses_tls(&self) -> bool {
        match self {
            Self::Standalone { url } => url.starts_with("rediss://"),
            Self::Sentinel { tls, .. } => *tls,
            Self::Cluster { seeds } => seeds.iter().any(|s| s.starts_with("rediss://")),
        }
    }

    /// The topology's name, for logs and metrics: `standalone`, `sentinel` or `cluster`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standalone { .. } => "standalone",
            Self::Sentinel { .. } => "sentinel",
            Self::Cluster { .. } => "cluster",
        }
    }
}

/// Never prints a password: the URL is a secret, the topology is logged.
impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts = |urls: &[String]| {
            urls.iter()
                .map(|u| u.rsplit('@').next().unwrap_or(u).to_owned())
                .collect::<Vec<_>>()
        };
        match self {
            Self::Standalone { .. } => f.write_str("Standalone"),
            Self::Sentinel {
                sentinels, master, ..
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", &hosts(sentinels))
                .field("master", master)
                .finish(),
            Self::Cluster { seeds } => f
                .debug_struct("Cluster")
                .field("seeds", &hosts(seeds))
                .finish(),
        }
    }
}

const EXPECTED: &str = "expected redis://host:port/db, rediss://…, \
    redis+sentinel://host:26379[,host:port…]/master-name or redis+cluster://host:port[,host:port…]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sentinel,
    Cluster,
}

/// A multi-host URL taken apart: `[user[:pass]@]host[,host…][/path][?query]`.
struct Parts {
    username: Option<String>,
    password: Option<String>,
    hosts: Vec<String>,
    path: Option<String>,
    query: Vec<(String, String)>,
}

impl Parts {
    fn split(rest: &str) -> Result<Self, String> {
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, Some(p.trim_end_matches('/'))),
            None => (before_query, None),
        };
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "a credential is not UTF-8 once percent-decoded".to_owned())
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    Some(decode(user)?).filter(|u| !u.is_empty()),
                    Some(decode(pass)?),
                ),
                None => (Some(decode(u)?).filter(|u| !u.is_empty()), None),
            },
        };
        let hosts = hostlist
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        let query = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            username,
            password,
            hosts,
            path: path.filter(|p| !p.is_empty()).map(str::to_owned),
            query,
        })
    }
}

/// `host[:port]` checked and given its default port: `host:port` or `[v6]:port`.
fn address(host: &str, default_port: u16) -> Result<String, String> {
    let parsed = url::Url::parse(&format!("redis://{host}"))
        .ok()
        .filter(|u| u.path().is_empty() || u.path() == "/")
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .and_then(|u| Some((u.host_str()?.to_owned(), u.port())))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("'{host}' is not host:port; {EXPECTED}"))?;
    let (host, port) = parsed;
    match port.unwrap_or(default_port) {
        0 => Err(format!("'{host}' has port 0; {EXPECTED}")),
        port => Ok(format!("{host}:{port}")),
    }
}

/// `user:pass@` for a URL, percent-encoded; empty without credentials.
fn userinfo(user: Option<&str>, password: Option<&str>) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    match (user, password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}{}@",
            user.map(enc).unwrap_or_default(),
            password.map(|p| format!(":{}", enc(p))).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> RedisTopology {
        RedisTopology::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn standalone_urls_are_redis_rs_urls() {
        for url in [
            "redis://127.0.0.1:6379/0",
            "rediss://:secret@redis.example:6380",
        ] {
            assert_eq!(ok(url), RedisTopology::Standalone { url: url.into() });
        }
    }

    #[test]
    fn sentinel_lists_and_centrifugo_form_agree() {
        let expected = RedisTopology::Sentinel {
            sentinels: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://s2.example:26380".into(),
            ],
            master: "mymaster".into(),
            tls: false,
            username: None,
            password: None,
            db: 0,
        };
        assert_eq!(
            ok("redis+sentinel://10.0.0.1,s2.example:26380/mymaster"),
            expected
        );
        assert_eq!(
            ok(
                "redis+sentinel://10.0.0.1:26379?sentinel_master_name=mymaster&addr=s2.example:26380"
            ),
            expected
        );
    }

    #[test]
    fn sentinel_credentials_tls_and_db() {
        let t = ok(
            "rediss+sentinel://app:p%40ss@[::1]:26379/main?db=3&sentinel_user=sen&sentinel_password=x%26y",
        );
        assert_eq!(
            t,
            RedisTopology::Sentinel {
                sentinels: vec!["rediss://sen:x%26y@[::1]:26379".into()],
                master: "main".into(),
                tls: true,
                username: Some("app".into()),
                password: Some("p@ss".into()),
                db: 3,
            }
        );
        let debug = format!("{t:?}");
        assert!(
            !debug.contains("p@ss") && !debug.contains("x%26y"),
            "{debug}"
        );
    }

    #[test]
    fn cluster_seeds_carry_the_credentials() {
        assert_eq!(
            ok("redis+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001?addr=127.0.0.1:7002"),
            RedisTopology::Cluster {
                seeds: vec![
                    "redis://:pw@127.0.0.1:7000".into(),
                    "redis://:pw@127.0.0.1:7001".into(),
                    "redis://:pw@127.0.0.1:7002".into(),
                ]
            }
        );
        assert_eq!(
            ok("rediss+cluster://cache.example"),
            RedisTopology::Cluster {
                seeds: vec!["rediss://cache.example:6379".into()]
            }
        );
    }

    #[test]
    fn every_bad_value_says_what_is_wrong() {
        for (url, says) in [
            ("http://x", "unknown scheme 'http'"),
            ("127.0.0.1:6379", "no scheme"),
            ("redis+sentinel://10.0.0.1:26379", "no primary name"),
            ("redis+sentinel:///main", "no address"),
            ("redis+cluster://", "no address"),
            ("redis+cluster://a:7000/0", "no path"),
            ("redis+cluster://a:notaport", "is not host:port"),
            ("redis+cluster://a:7000,b/c:1", "no path"),
            ("redis+cluster://a:7000?db=1", "unknown parameter 'db'"),
            (
                "redis+sentinel://a/m?db=x",
                "db 'x' is not a database number",
            ),
            (
                "redis+sentinel://a/m?db=-1",
                "db '-1' is not a database number",
            ),
            (
                "redis+sentinel://a/m/0",
                "the path is the primary's name alone",
            ),
            ("redis+cluster://a:0", "has port 0"),
            ("redis+cluster://u:pa/ss@h:7000", "percent-encode it"),
            ("redis+cluster://u:p?ss@h:7000", "percent-encode it"),
            ("redis+sentinel://a/m?tls=1", "unknown parameter 'tls'"),
        ] {
            let e = RedisTopology::parse(url).expect_err(url);
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("ss@"), "{url}: no credential in the error: {e}");
            assert!(!e.contains('\n'), "{url}: one line: {e}");
        }
    }
}
