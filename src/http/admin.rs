//! `/metrics`, `/livez`, `/readyz` on the admin listener.

use crate::node::Node;
use crate::telemetry::ErrorChain;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde_json::json;
use std::sync::Arc;

pub async fn metrics(node: web::Data<Arc<Node>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(node.metrics().render())
}

pub async fn livez() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok\n")
}

/// 200 only when the registry takes writes, the bus works and the node is not draining; the
/// body names each check. `trusted` (informative, not a condition) is false while misses are
/// answered 503 because a write failed or Redis lost data within the last heartbeat TTL.
pub async fn readyz(node: web::Data<Arc<Node>>) -> HttpResponse {
    let registry = node.registry().check().await;
    let bus = node.bus().check();
    let draining = node.is_draining();
    let ready = registry.is_ok() && bus.is_ok() && !draining;
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    let body = json!({
        "ready": ready,
        "node": node.id().0,
        "checks": {
            "registry": show(registry.map_err(|e| ErrorChain(&e).to_string())),
            "bus": show(bus.map_err(|e| ErrorChain(&e).to_string())),
            "draining": draining,
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
