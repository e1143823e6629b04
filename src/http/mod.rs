//! HTTP surface: discovery, WebSocket registration and the status page on the public
//! listeners; metrics and probes on the admin listener.

pub mod admin;
pub mod client_addr;
pub mod discovery;
pub mod error;
pub mod status;
pub mod ws;

use crate::node::Node;
use actix_web::{HttpRequest, guard, web};
use client_addr::TrustedProxies;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

/// Shared by every worker of the public listeners.
pub struct AppState {
    pub node: Arc<Node>,
    pub proxies: TrustedProxies,
    /// Per-client-address discovery limiter; `None` when `--discovery-rate 0`.
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    pub max_frame_bytes: usize,
}

impl AppState {
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.proxies
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers())
    }
}

/// A keyed limiter for `rate` requests per second with `burst`, or `None` for unlimited.
pub fn discovery_limiter(rate: u32, burst: u32) -> Option<Arc<DefaultKeyedRateLimiter<IpAddr>>> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Arc::new(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    )))
}

/// Routes of the public (HTTP and HTTPS) listeners.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    // `GET /` with an upgrade header is a registration (the original upgraded any path).
    let not_upgrade = guard::fn_guard(|ctx| !ws::is_upgrade(ctx.head().headers()));
    cfg.route("/", web::get().guard(not_upgrade).to(status::page))
        .route("/v0/hosties/{token}", web::get().to(discovery::discover))
        .route("/v0/hosties/{token}", web::head().to(discovery::discover))
        // The original upgraded any path; the token may also be a `token/…` path suffix.
        .default_service(web::to(ws::upgrade_or_not_found));
}

/// Routes of the admin listener.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(admin::metrics))
        .route("/livez", web::get().to(admin::livez))
        .route("/readyz", web::get().to(admin::readyz));
}
