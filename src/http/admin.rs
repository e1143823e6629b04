//! `/metrics`, `/livez`, `/readyz` on the admin listener.

use crate::bus::TransportError;
use crate::node::Node;
use crate::registry::RegistryError;
use crate::telemetry::ErrorChain;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde_json::json;
use std::sync::Arc;

/// The exposition, with `hostie_ready` worked out now: a value kept from the last `/readyz`
/// would lag where nothing probes (Compose) and say nothing of a Redis lost since.
pub async fn metrics(node: web::Data<Arc<Node>>) -> HttpResponse {
    Readiness::check(&node).await;
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(node.metrics().render())
}

pub async fn livez() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// The checks behind `/readyz` and `hostie_ready`, run once.
struct Readiness {
    registry: Result<(), RegistryError>,
    bus: Result<(), TransportError>,
    draining: bool,
}

impl Readiness {
    /// Runs the checks (the registry's is a write, bounded by `--redis-timeout`) and sets
    /// `hostie_ready` to their verdict.
    async fn check(node: &Node) -> Self {
        let readiness = Self {
            registry: node.registry().check().await,
            bus: node.bus().check(),
            draining: node.is_draining(),
        };
        node.metrics().ready.set(i64::from(readiness.ready()));
        readiness
    }

    fn ready(&self) -> bool {
        self.registry.is_ok() && self.bus.is_ok() && !self.draining
    }
}

/// 200 only when the registry takes writes, the bus works and the node is not draining; the
/// body names each check. `trusted` (informative, not a condition) is false while misses are
/// answered 503 because a write failed or Redis lost data within the last heartbeat TTL.
pub async fn readyz(node: web::Data<Arc<Node>>) -> HttpResponse {
    let readiness = Readiness::check(&node).await;
    let ready = readiness.ready();
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    let body = json!({
        "ready": ready,
        "node": node.id().0,
        "checks": {
            "registry": show(readiness.registry.map_err(|e| ErrorChain(&e).to_string())),
            "bus": show(readiness.bus.map_err(|e| ErrorChain(&e).to_string())),
            "draining": readiness.draining,
            "trusted": node.registry_trusted(),
        }
    });
    let mut res = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    res.json(body)
}
