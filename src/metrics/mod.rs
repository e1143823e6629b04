//! Prometheus metrics, one registry per node (several nodes can share a test process).
//!
//! Every label value comes from a fixed enum of the domain ([`crate::model::outcome`]), mapped
//! to a string by [`Label`]: never a token, a client id or any other client-supplied string.

mod labels;

pub use labels::Label;

use crate::model::{
    CloseReason, DiscoveryOutcome, Limit, LookupSource, PortAnswer, PortError, RedisOp,
    RegistrationResult, RpcOutcome, TlsReload,
};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct Metrics {
    registry: Registry,
    pub sessions: IntGauge,
    pub max_sessions: IntGauge,
    pub registrations: IntCounterVec,
    pub closes: IntCounterVec,
    pub discoveries: IntCounterVec,
    pub discovery_seconds: HistogramVec,
    pub lookups: IntCounterVec,
    pub rpc_seconds: HistogramVec,
    pub frames: IntCounterVec,
    pub frames_dropped: IntCounterVec,
    pub unknown_rpc_replies: IntCounter,
    pub limits: IntCounterVec,
    pub drain_seconds: Histogram,
    pub peers_alive: IntGauge,
    pub peers_unsettled: IntGauge,
    pub bus_requests: IntCounterVec,
    pub bus_seconds: Histogram,
    pub bus_replies: IntCounter,
    pub bus_no_subscriber: IntCounter,
    pub redis_errors: IntCounterVec,
    pub reassertions: IntCounter,
    pub reasserted_sessions: IntCounter,
    pub swept_records: IntCounter,
    pub redis_topology_changes: IntCounter,
    pub registration_notices: IntCounter,
    pub discovery_overruns: IntCounter,
    pub rejected_hosts: IntCounter,
    pub tls_reloads: IntCounterVec,
    pub reach_probes: IntCounterVec,
    pub ready: IntGauge,
    pub forwarding_headers_ignored: IntCounter,
    pub untrusted_proxies: IntGauge,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once, with a unique name, into a fresh registry");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])
        .expect("metric names and labels are static and valid");
    register(registry, c)
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, label: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let h =
        HistogramVec::new(opts, &[label]).expect("metric names and labels are static and valid");
    register(registry, h)
}

impl Metrics {
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        let build = IntGauge::with_opts(
            Opts::new(
                "hostie_build_info",
                "Always 1; labelled with the build version.",
            )
            .const_label("version", version),
        )
        .expect("static metric definition");
        register(&registry, build).set(1);
        let m = Self {
            sessions: register(
                &registry,
                IntGauge::new(
                    "hostie_sessions",
                    "Live registered WebSocket sessions on this node.",
                )
                .expect("static metric definition"),
            ),
            max_sessions: register(
                &registry,
                IntGauge::new(
                    "hostie_max_sessions",
                    "This node's --max-sessions limit (for 'near the limit' alerts).",
                )
                .expect("static metric definition"),
            ),
            registrations: counter_vec(
                &registry,
                "hostie_registrations_total",
                "WebSocket registration attempts, by result.",
                "result",
            ),
            closes: counter_vec(
                &registry,
                "hostie_session_closes_total",
                "Sessions ended, by reason.",
                "reason",
            ),
            discoveries: counter_vec(
                &registry,
                "hostie_discoveries_total",
                "Discovery queries answered, by outcome.",
                "outcome",
            ),
            lookups: counter_vec(
                &registry,
                "hostie_discovery_lookups_total",
                "Where discoveries found the token's candidates.",
                "source",
            ),
            discovery_seconds: histogram_vec(
                &registry,
                "hostie_discovery_duration_seconds",
                "Time to answer a discovery query, by outcome.",
                "outcome",
            ),
            rpc_seconds: histogram_vec(
                &registry,
                "hostie_rpc_duration_seconds",
                "getHostieGrpcPort round trips to a puppet server, by result.",
                "result",
            ),
            frames: counter_vec(
                &registry,
                "hostie_frames_received_total",
                "Inbound IoEvent text frames, by event name (fixed set; others are 'unknown').",
                "event",
            ),
            frames_dropped: counter_vec(
                &registry,
                "hostie_frames_dropped_total",
                "Inbound frames ignored as unusable, by reason.",
                "reason",
            ),
            unknown_rpc_replies: register(
                &registry,
                IntCounter::new(
                    "hostie_rpc_unmatched_replies_total",
                    "JSON-RPC replies whose id matched no request in flight (late or foreign).",
                )
                .expect("static metric definition"),
            ),
            limits: counter_vec(
                &registry,
                "hostie_limit_hits_total",
                "Requests, frames or sessions refused or closed by a configured limit.",
                "limit",
            ),
            drain_seconds: register(
                &registry,
                Histogram::with_opts(HistogramOpts::new(
                    "hostie_drain_duration_seconds",
                    "Time from the drain signal until every session was closed.",
                ))
                .expect("static metric definition"),
            ),
            peers_alive: register(
                &registry,
                IntGauge::new(
                    "hostie_peers_alive",
                    "Nodes whose heartbeat is current, this one included (cluster mode).",
                )
                .expect("static metric definition"),
            ),
            peers_unsettled: register(
                &registry,
                IntGauge::new(
                    "hostie_peers_unsettled",
                    "Other live nodes whose records may be missing from Redis (re-asserting \
                     after Redis lost data, or failing to): while above 0, a token with no \
                     session found is answered 503, not 404 (cluster mode).",
                )
                .expect("static metric definition"),
            ),
            bus_requests: counter_vec(
                &registry,
                "hostie_bus_requests_total",
                "Port requests sent to other nodes, by result.",
                "result",
            ),
            bus_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "hostie_bus_duration_seconds",
                        "Round trip of a port request to another node, reply included.",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("static metric definition"),
            ),
            bus_replies: register(
                &registry,
                IntCounter::new(
                    "hostie_bus_replies_total",
                    "Port requests from other nodes answered by this node.",
                )
                .expect("static metric definition"),
            ),
            bus_no_subscriber: register(
                &registry,
                IntCounter::new(
                    "hostie_bus_no_subscriber_total",
                    "Requests whose PUBLISH reached no subscriber (the target node is gone).",
                )
                .expect("static metric definition"),
            ),
            redis_errors: counter_vec(
                &registry,
                "hostie_redis_errors_total",
                "Failed Redis operations, by operation.",
                "op",
            ),
            reassertions: register(
                &registry,
                IntCounter::new(
                    "hostie_reassertions_total",
                    "Times this node re-wrote all of its sessions into Redis.",
                )
                .expect("static metric definition"),
            ),
            reasserted_sessions: register(
                &registry,
                IntCounter::new(
                    "hostie_reasserted_sessions_total",
                    "Session records re-written into Redis by re-assertions.",
                )
                .expect("static metric definition"),
            ),
            swept_records: register(
                &registry,
                IntCounter::new(
                    "hostie_swept_records_total",
                    "Records of dead nodes removed by this node.",
                )
                .expect("static metric definition"),
            ),
            redis_topology_changes: register(
                &registry,
                IntCounter::new(
                    "hostie_redis_topology_changes_total",
                    "Redis failovers and slot moves this node noticed (a new primary named by Sentinel, Cluster primaries changed or restarted).",
                )
                .expect("static metric definition"),
            ),
            registration_notices: register(
                &registry,
                IntCounter::new(
                    "hostie_registration_notices_total",
                    "Notices of another node's new session of a token this node holds or caches (sent only to such nodes).",
                )
                .expect("static metric definition"),
            ),
            discovery_overruns: register(
                &registry,
                IntCounter::new(
                    "hostie_discovery_overruns_total",
                    "Discoveries whose handler took longer than the discovery deadline (--rpc-timeout); should stay 0. Time queued before the handler (an overloaded machine) is not included.",
                )
                .expect("static metric definition"),
            ),
            rejected_hosts: register(
                &registry,
                IntCounter::new(
                    "hostie_rejected_hosts_total",
                    "Registrations whose gateway offered a custom host that is neither an IP address nor a DNS name; the client address was advertised instead.",
                )
                .expect("static metric definition"),
            ),
            tls_reloads: counter_vec(
                &registry,
                "hostie_tls_reloads_total",
                "Changes of the TLS certificate or key files taken (ok) or refused, the previous pair still serving (error).",
                "result",
            ),
            reach_probes: counter_vec(
                &registry,
                "hostie_reachability_probes_total",
                "Reachability probes of this node's gateways' advertised host:port (--probe-reachability): reachable, unreachable, or denied (in a --probe-deny range, not connected to).",
                "result",
            ),
            ready: register(
                &registry,
                IntGauge::new(
                    "hostie_ready",
                    "1 while this node is ready (its /readyz would answer 200: Redis takes a write, the bus is subscribed, not draining), else 0; checked at each scrape.",
                )
                .expect("static metric definition"),
            ),
            forwarding_headers_ignored: register(
                &registry,
                IntCounter::new(
                    "hostie_forwarding_headers_ignored_total",
                    "Registrations and discoveries whose X-Forwarded-For, X-Real-IP or Forwarded was ignored: the peer is not in --trusted-proxies.",
                )
                .expect("static metric definition"),
            ),
            untrusted_proxies: register(
                &registry,
                IntGauge::new(
                    "hostie_untrusted_proxies",
                    "Peers outside --trusted-proxies judged to be proxies in front of this node: they keep sending forwarding headers, which are ignored. 0 when --trusted-proxies covers every proxy.",
                )
                .expect("static metric definition"),
            ),
            registry,
        };
        m.touch_label_sets();
        m
    }

    /// Creates every labelled series at zero, so dashboards and alerts see them before the first
    /// event (rate() over a missing series is empty, not zero).
    fn touch_label_sets(&self) {
        use crate::protocol::{EventKind, FrameError};
        fn touch<L: Label>(vec: &IntCounterVec) {
            for l in L::ALL {
                vec.with_label_values(&[l.label()]);
            }
        }
        touch::<DiscoveryOutcome>(&self.discoveries);
        for o in DiscoveryOutcome::ALL {
            self.discovery_seconds.with_label_values(&[o.label()]);
        }
        touch::<LookupSource>(&self.lookups);
        for r in labels::RPC_ALL {
            self.rpc_seconds.with_label_values(&[r]);
        }
        touch::<Limit>(&self.limits);
        for r in [
            FrameError::Malformed.as_str(),
            FrameError::TooDeep.as_str(),
            "binary",
        ] {
            self.frames_dropped.with_label_values(&[r]);
        }
        touch::<RedisOp>(&self.redis_errors);
        for r in labels::BUS_ALL {
            self.bus_requests.with_label_values(&[r]);
        }
        for k in EventKind::ALL {
            self.frames.with_label_values(&[k.as_str()]);
        }
        touch::<RegistrationResult>(&self.registrations);
        touch::<CloseReason>(&self.closes);
        touch::<TlsReload>(&self.tls_reloads);
        for r in crate::model::Reach::PROBED {
            self.reach_probes.with_label_values(&[r.label()]);
        }
    }

    pub fn registration(&self, r: RegistrationResult) {
        self.registrations.with_label_values(&[r.label()]).inc();
    }

    pub fn close(&self, r: CloseReason) {
        self.closes.with_label_values(&[r.label()]).inc();
    }

    pub fn reach_probe(&self, r: crate::model::Reach) {
        self.reach_probes.with_label_values(&[r.label()]).inc();
    }

    pub fn tls_reload(&self, r: TlsReload) {
        self.tls_reloads.with_label_values(&[r.label()]).inc();
    }

    pub fn redis_error(&self, op: RedisOp) {
        self.redis_errors.with_label_values(&[op.label()]).inc();
    }

    /// Counts one port request to another node, and its round trip when it was answered.
    pub fn bus_request(&self, result: &Result<PortAnswer, PortError>, seconds: f64) {
        self.bus_requests
            .with_label_values(&[labels::bus(result)])
            .inc();
        if result.is_ok() {
            self.bus_seconds.observe(seconds);
        }
    }

    pub fn limit(&self, l: Limit) {
        self.limits.with_label_values(&[l.label()]).inc();
    }

    pub fn discovery(&self, o: DiscoveryOutcome, seconds: f64) {
        self.discoveries.with_label_values(&[o.label()]).inc();
        self.discovery_seconds
            .with_label_values(&[o.label()])
            .observe(seconds);
    }

    /// Discoveries answered since start, whatever the outcome.
    pub fn discoveries_answered(&self) -> u64 {
        DiscoveryOutcome::ALL
            .iter()
            .map(|o| self.discoveries.with_label_values(&[o.label()]).get())
            .sum()
    }

    pub fn lookup(&self, s: LookupSource) {
        self.lookups.with_label_values(&[s.label()]).inc();
    }

    pub fn rpc(&self, outcome: RpcOutcome, seconds: f64) {
        self.rpc_seconds
            .with_label_values(&[labels::rpc(outcome)])
            .observe(seconds);
    }

    /// The Prometheus text exposition of this node's registry.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding gathered metrics into a Vec cannot fail");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }
}
