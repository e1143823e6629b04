//! The command line and environment interface (the flag table: README.md, "Configuration").
//! Every flag also reads a `HOSTIE_…` environment variable; bad values stop the process at start
//! with one line naming the flag.

pub mod redis_url;

use crate::model::SessionOrder;
use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// hostie: a registry for Wechaty Puppet Services.
#[derive(Debug, Clone, Parser)]
#[command(name = "hostie", version, about, max_term_width = 100)]
pub struct Config {
    /// HTTP listener: discovery and WebSocket registration.
    #[arg(long, env = "HOSTIE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// HTTPS/WSS listener, served only when a certificate and key are given.
    #[arg(long, env = "HOSTIE_TLS_LISTEN", default_value = "0.0.0.0:8443")]
    pub tls_listen: SocketAddr,

    /// PEM certificate chain for the TLS listener.
    #[arg(long, env = "HOSTIE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for the TLS listener.
    #[arg(long, env = "HOSTIE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are read for a new pair (0 = only at start).
    /// New handshakes get a new pair; established connections keep theirs. A changed pair that
    /// is not valid is refused, logged and counted, and the previous one kept.
    #[arg(long, env = "HOSTIE_TLS_RELOAD_INTERVAL", default_value = "10s",
          value_parser = duration_or_zero)]
    pub tls_reload_interval: Duration,

    /// Admin listener: /metrics, /livez, /readyz.
    #[arg(long, env = "HOSTIE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Redis for cluster mode; without it hostie runs as one self-contained node. The scheme
    /// selects the topology: redis://host:port/db (rediss:// for TLS), Sentinel as
    /// redis+sentinel://host:26379[,host:port…]/primary-name, Cluster as
    /// redis+cluster://host:port[,host:port…] (docs/redis.md).
    #[arg(long, env = "HOSTIE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel.
    #[arg(long, env = "HOSTIE_REDIS_PREFIX", default_value = "hostie", value_parser = key_prefix)]
    pub redis_prefix: String,

    /// This node's name in the cluster [default: hostname + random suffix].
    #[arg(long, env = "HOSTIE_NODE_ID", value_parser = non_empty)]
    pub node_id: Option<String>,

    /// The whole discovery deadline (e.g. 500ms, 3s, 1m).
    // Named for what it bounds; the flag keeps the name operators already use.
    #[arg(long = "rpc-timeout", value_name = "RPC_TIMEOUT", env = "HOSTIE_RPC_TIMEOUT",
          default_value = "3s", value_parser = duration)]
    pub discovery_deadline: Duration,

    /// How long a session's answered gRPC port is answered again without asking its gateway
    /// (0 = ask every time; concurrent discoveries share one request anyway). Bounds what a hot
    /// token costs its gateway: at most one request per this long.
    #[arg(long, env = "HOSTIE_PORT_REUSE", default_value = "100ms", value_parser = duration_or_zero)]
    pub port_reuse: Duration,

    /// Check by TCP connect whether each gateway's advertised host:port accepts connections,
    /// after it registers and every --probe-interval; the answer gains a `reachability` field
    /// and the token's page shows it. Off by default (the answer stays the three fields).
    #[arg(long, env = "HOSTIE_PROBE_REACHABILITY", default_value_t = false)]
    pub probe_reachability: bool,

    /// How often each session's advertised address is probed again.
    #[arg(long, env = "HOSTIE_PROBE_INTERVAL", default_value = "5m", value_parser = duration)]
    pub probe_interval: Duration,

    /// How long one probe may take (name lookup and connect each).
    #[arg(long, env = "HOSTIE_PROBE_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub probe_timeout: Duration,

    /// At most this many probes per second per node.
    #[arg(long, env = "HOSTIE_PROBE_RATE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub probe_rate: u32,

    /// Comma-separated CIDRs never probed (an address a gateway names, or its name resolves to,
    /// in one of them is reported `denied`), so that the probe cannot be used to scan the
    /// operator's network. The default: loopback, link-local, private, shared (CGNAT),
    /// benchmarking, multicast, reserved and unspecified ranges. NAT64 (`64:ff9b::/96`) and
    /// 6to4 (`2002::/16`) addresses are checked as the IPv4 address they lead to.
    #[arg(long, env = "HOSTIE_PROBE_DENY", value_parser = cidrs,
          default_value = "0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,192.168.0.0/16,198.18.0.0/15,224.0.0.0/4,240.0.0.0/4,::/96,fc00::/7,fe80::/10,fec0::/10,ff00::/8")]
    pub probe_deny: Cidrs,

    /// Port answered when a session cannot say its own.
    #[arg(long, env = "HOSTIE_FALLBACK_PORT", default_value_t = 8788,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub fallback_port: u16,

    /// Comma-separated CIDRs whose forwarding headers (X-Forwarded-For, X-Real-IP, Forwarded)
    /// are trusted.
    /// An empty value trusts nobody.
    #[arg(long, env = "HOSTIE_TRUSTED_PROXIES", default_value = "", value_parser = cidrs)]
    pub trusted_proxies: Cidrs,

    /// Log format [default: pretty on a TTY, else json]. Level via RUST_LOG.
    #[arg(long, env = "HOSTIE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// A session with no frame of any kind (ping included) for this long is closed.
    #[arg(long, env = "HOSTIE_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Time a client has to send its upgrade request headers.
    #[arg(long, env = "HOSTIE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// Largest inbound WebSocket message, in bytes; larger ones close the session with 1009.
    #[arg(long, env = "HOSTIE_MAX_FRAME_BYTES", default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(1024..=(64 << 20)))]
    pub max_frame_bytes: u64,

    /// Live sessions this node accepts; more are refused with 503.
    #[arg(long, env = "HOSTIE_MAX_SESSIONS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions: u64,

    /// Live sessions one token may have across the cluster; more are refused with 429.
    #[arg(long, env = "HOSTIE_MAX_SESSIONS_PER_TOKEN", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_sessions_per_token: u64,

    /// Deepest JSON nesting accepted in an inbound frame; deeper frames are dropped.
    #[arg(long, env = "HOSTIE_MAX_JSON_DEPTH", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(2..=128))]
    pub max_json_depth: u64,

    /// Discovery queries per second per client address (0 = unlimited); more get 429.
    #[arg(long, env = "HOSTIE_DISCOVERY_RATE", default_value_t = 100)]
    pub discovery_rate: u32,

    /// Burst allowance of the discovery rate limit.
    #[arg(long, env = "HOSTIE_DISCOVERY_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub discovery_burst: u32,

    /// On drain, sessions are closed evenly over this long (avoids a reconnect storm).
    #[arg(long, env = "HOSTIE_DRAIN_SPREAD", default_value = "5s", value_parser = duration_or_zero)]
    pub drain_spread: Duration,

    /// On drain, sessions get at most this long to close before the listeners stop (the
    /// process then exits within 2 s more).
    #[arg(long, env = "HOSTIE_DRAIN_GRACE", default_value = "20s", value_parser = duration)]
    pub drain_grace: Duration,

    /// Cluster mode: how often this node renews its heartbeat and sweeps dead peers.
    #[arg(long, env = "HOSTIE_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// Cluster mode: a node whose heartbeat is this old is dead; its sessions stop being
    /// offered and are swept. Also how long other nodes' records read for a discovery are
    /// remembered.
    #[arg(long, env = "HOSTIE_HEARTBEAT_TTL", default_value = "5s", value_parser = duration)]
    pub heartbeat_ttl: Duration,

    /// Cluster mode: the most one Redis operation may take, from waiting for a connection to
    /// its reply (connects included). Shorter than --rpc-timeout, so that a discovery facing a
    /// hung Redis still answers in time, and than --handshake-timeout, which bounds a
    /// registration [default: 500ms, or half the shorter of those two when that is less].
    #[arg(long, env = "HOSTIE_REDIS_TIMEOUT", value_parser = duration)]
    pub redis_timeout: Option<Duration>,

    /// In which order a token's live sessions are offered: `source` (newest first among the
    /// sessions of one client address; a session from another address only after every older
    /// address's sessions, so a leaked token cannot take over a live gateway) or `newest`.
    #[arg(long, env = "HOSTIE_SESSION_ORDER", value_enum, default_value_t = SessionOrder::Source)]
    pub session_order: SessionOrder,

    /// Sessions one client address (an IPv4 address, an IPv6 /64) may hold on this node; 0
    /// for no cap. Behind a load balancer, set --trusted-proxies, or every gateway shares the
    /// balancer's address.
    #[arg(long, env = "HOSTIE_MAX_SESSIONS_PER_SOURCE", default_value_t = 2000)]
    pub max_sessions_per_source: u32,

    /// Cluster mode: how often every session record is re-written anyway (anti-entropy).
    #[arg(long, env = "HOSTIE_ANTI_ENTROPY_INTERVAL", default_value = "60s", value_parser = duration)]
    pub anti_entropy_interval: Duration,

    /// HTTP worker threads [default: one per CPU].
    #[arg(long, env = "HOSTIE_WORKERS",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
}

/// A comma-separated list of CIDRs; empty parts are skipped, so `""` means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cidrs(pub Vec<IpNet>);

fn cidrs(s: &str) -> Result<Cidrs, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .map_err(|e| format!("{p:?}: {e} (expected e.g. 10.0.0.0/8)"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Cidrs)
}

/// The longest duration any flag takes: far beyond any sensible timer, and short enough that
/// adding it to the clock (or to Redis' milliseconds) can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

fn duration_or_zero(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 3s, 1m)"))?;
    if d > MAX_DURATION {
        return Err("must be at most 30days".into());
    }
    Ok(d)
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = duration_or_zero(s)?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

/// A key prefix: braces would make it the Redis Cluster hash tag of every key.
fn key_prefix(s: &str) -> Result<String, String> {
    if s.contains(['{', '}']) {
        return Err("must not contain '{' or '}' (they are Redis Cluster hash tags)".into());
    }
    non_empty(s)
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(s.to_owned())
}

/// A parse error as the one line the process prints before exiting: clap's first paragraph
/// (which names the flag), folded onto one line.
pub fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let paragraph: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    paragraph.join(" ")
}

impl Config {
    /// Parses the command line and environment. On a bad value returns the one line to print.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let config = Self::try_parse_from(args)?;
        config.validate().map_err(|msg| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
        })?;
        Ok(config)
    }

    /// Rules that span several flags.
    fn validate(&self) -> Result<(), String> {
        if self.drain_spread > self.drain_grace {
            return Err(format!(
                "invalid value for '--drain-spread': {} is longer than --drain-grace {}",
                humantime::format_duration(self.drain_spread),
                humantime::format_duration(self.drain_grace)
            ));
        }
        if self.heartbeat_ttl < self.heartbeat_interval * 2 {
            return Err(format!(
                "invalid value for '--heartbeat-ttl': {} is less than twice --heartbeat-interval {}",
                humantime::format_duration(self.heartbeat_ttl),
                humantime::format_duration(self.heartbeat_interval)
            ));
        }
        for (flag, longer) in [
            ("--rpc-timeout", self.discovery_deadline),
            ("--handshake-timeout", self.handshake_timeout),
        ] {
            if let Some(redis_timeout) = self.redis_timeout
                && redis_timeout >= longer
            {
                return Err(format!(
                    "invalid value for '--redis-timeout': {} is not shorter than {flag} {}",
                    humantime::format_duration(redis_timeout),
                    humantime::format_duration(longer)
                ));
            }
        }
        if let Some(url) = &self.redis_url {
            redis_url::RedisTopology::parse(url)
                .map_err(|e| format!("invalid value for '--redis-url': {e}"))?;
        }
        let listeners = [self.listen, self.admin_listen];
        if listeners[0].port() != 0 && listeners[0] == listeners[1] {
            return Err("invalid value for '--admin-listen': same address as --listen".into());
        }
        Ok(())
    }

    /// The one deadline of every Redis operation (`--redis-timeout`, or its default).
    pub fn redis_timeout(&self) -> Duration {
        self.redis_timeout.unwrap_or_else(|| {
            Duration::from_millis(500)
                .min(self.discovery_deadline / 2)
                .min(self.handshake_timeout / 2)
        })
    }

    /// The configured node id, or hostname plus a random suffix (unique across restarts).
    pub fn node_id(&self) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "hostie".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..6])
    }

    /// A configuration for tests and embedding: every listener on 127.0.0.1 port 0, no TLS.
    pub fn for_tests() -> Self {
        Self::try_parse_from([
            "hostie",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .expect("the test defaults are valid flags")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::from_args(std::iter::once("hostie").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_readme() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.tls_listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.admin_listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.tls_reload_interval, Duration::from_secs(10));
        assert_eq!(c.discovery_deadline, Duration::from_secs(3));
        assert_eq!(c.fallback_port, 8788);
        assert_eq!(c.redis_prefix, "hostie");
        assert!(c.redis_url.is_none() && c.trusted_proxies.0.is_empty());
    }

    #[test]
    fn the_redis_timeout_is_shorter_than_what_it_bounds() {
        assert_eq!(
            parse(&[]).unwrap().redis_timeout(),
            Duration::from_millis(500)
        );
        let short = parse(&["--rpc-timeout", "400ms"]).unwrap();
        assert_eq!(short.redis_timeout(), Duration::from_millis(200));
        for (args, names) in [
            (&["--redis-timeout", "3s"][..], "--rpc-timeout 3s"),
            (
                &["--redis-timeout", "1s", "--rpc-timeout", "800ms"][..],
                "--rpc-timeout 800ms",
            ),
            (
                &["--redis-timeout", "2s", "--handshake-timeout", "2s"][..],
                "--handshake-timeout 2s",
            ),
        ] {
            let line = one_line(&parse(args).expect_err("refused"));
            assert!(
                line.contains("--redis-timeout") && line.contains(names),
                "{line}"
            );
        }
        let c = parse(&["--redis-timeout", "200ms", "--rpc-timeout", "1s"]).unwrap();
        assert_eq!(c.redis_timeout(), Duration::from_millis(200));
    }

    #[test]
    fn durations_beyond_thirty_days_are_refused() {
        for flag in [
            "--rpc-timeout",
            "--idle-timeout",
            "--drain-spread",
            "--drain-grace",
            "--tls-reload-interval",
        ] {
            let err = parse(&[flag, "31days"]).expect_err("refused");
            let line = one_line(&err);
            assert!(
                line.contains(flag) && line.contains("at most 30days"),
                "{line}"
            );
        }
        assert_eq!(
            parse(&["--idle-timeout", "30days"]).unwrap().idle_timeout,
            MAX_DURATION
        );
    }

    #[test]
    fn durations_and_cidrs() {
        let c = parse(&[
            "--rpc-timeout",
            "500ms",
            "--idle-timeout",
            "1m",
            "--trusted-proxies",
            "10.0.0.0/8,127.0.0.1/32",
        ])
        .unwrap();
        assert_eq!(c.discovery_deadline, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.trusted_proxies.0.len(), 2);
        let never = parse(&["--tls-reload-interval", "0"]).unwrap();
        assert_eq!(never.tls_reload_interval, Duration::ZERO);
        assert!(
            parse(&["--trusted-proxies", ""])
                .unwrap()
                .trusted_proxies
                .0
                .is_empty()
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--rpc-timeout", "soon"][..], "--rpc-timeout"),
            (&["--rpc-timeout", "0s"][..], "--rpc-timeout"),
            (&["--fallback-port", "0"][..], "--fallback-port"),
            (&["--fallback-port", "70000"][..], "--fallback-port"),
            (
                &["--trusted-proxies", "10.0.0.0/99"][..],
                "--trusted-proxies",
            ),
            (&["--listen", "nowhere"][..], "--listen"),
            (
                &["--drain-spread", "30s", "--drain-grace", "5s"][..],
                "--drain-spread",
            ),
            (&["--max-frame-bytes", "10"][..], "--max-frame-bytes"),
            (&["--tls-cert", "c.pem"][..], "--tls-key"),
            (
                &["--tls-reload-interval", "often"][..],
                "--tls-reload-interval",
            ),
            (&["--heartbeat-ttl", "1s"][..], "--heartbeat-ttl"),
            (&["--redis-url", "http://x"][..], "--redis-url"),
            (
                &["--redis-url", "redis+sentinel://s1:26379"][..],
                "--redis-url",
            ),
            (
                &["--redis-url", "redis+cluster://a:1,b:x"][..],
                "--redis-url",
            ),
            (&["--redis-prefix", "a{b}"][..], "--redis-prefix"),
        ] {
            let err = one_line(&parse(args).unwrap_err());
            assert!(err.contains(flag), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{args:?}: {err}");
        }
    }
}

#[cfg(test)]
#[path = "config_proptests.rs"]
mod proptests;
