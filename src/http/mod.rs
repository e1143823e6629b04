//! HTTP surface: discovery, WebSocket registration and the status page on the public
//! listeners; metrics and probes on the admin listener.

pub mod admin;
pub mod client_addr;
pub mod discovery;
pub mod error;
pub mod pages;
pub mod status;
pub mod untrusted_proxy;
pub mod ws;

use crate::node::Node;
use crate::session::SessionSettings;
use actix_web::{HttpRequest, guard, web};
use client_addr::TrustedProxies;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use untrusted_proxy::{Request, UntrustedProxyWatch, Verdict};

/// Shared by every worker of the public listeners.
pub struct AppState {
    pub node: Arc<Node>,
    pub proxies: TrustedProxies,
    /// Peers that send forwarding headers `proxies` ignores.
    pub untrusted: UntrustedProxyWatch,
    /// Per-client-address discovery limiter; `None` when `--discovery-rate 0`.
    pub limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    pub max_frame_bytes: usize,
    /// Timers and limits every session of this node runs with.
    pub session: SessionSettings,
}

impl AppState {
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.client(req).map(|c| c.ip)
    }

    /// The client address, and whether a trusted proxy's header named it.
    pub fn client(&self, req: &HttpRequest) -> Option<client_addr::ClientAddr> {
        self.proxies
            .client(req.peer_addr().map(|a| a.ip()), req.headers())
    }

    /// Counts a request whose forwarding headers are ignored, and warns once of a peer that
    /// keeps sending them: most likely a proxy missing from `--trusted-proxies`.
    pub fn watch_forwarding(&self, req: &HttpRequest, request: Request) {
        let Some(peer) = req.peer_addr().map(|a| a.ip().to_canonical()) else {
            return;
        };
        if !self.proxies.ignores_forwarding(peer, req.headers()) {
            return;
        }
        let metrics = self.node.metrics();
        metrics.forwarding_headers_ignored.inc();
        match self.untrusted.note(peer, request) {
            Verdict::Counted => {}
            Verdict::NewSuspect => {
                metrics.untrusted_proxies.inc();
                tracing::warn!(
                    %peer,
                    "a proxy seems to be in front of this node, but its address is not in \
                     --trusted-proxies: the forwarding headers it sends are ignored, so gateways \
                     behind it that name no host are advertised at its address and its clients \
                     share one rate limit. If it is yours, add its address range to \
                     --trusted-proxies (HOSTIE_TRUSTED_PROXIES; Helm: config.trustedProxies)"
                );
            }
            Verdict::TooMany => tracing::warn!(
                suspects = untrusted_proxy::MAX_SUSPECTS,
                "more peers send forwarding headers that are ignored; they are not named"
            ),
        }
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
    let get_or_head = guard::Any(guard::Get()).or(guard::Head());
    cfg.route(
        "/",
        web::route()
            .guard(get_or_head)
            .guard(not_upgrade)
            .to(status::page),
    )
    .route(
        "/v0/status",
        web::route()
            .guard(guard::Any(guard::Get()).or(guard::Head()))
            .guard(guard::fn_guard(|ctx| !ws::is_upgrade(ctx.head().headers())))
            .to(status::json),
    )
    // Discovery and registration are matched by plain prefix in `dispatch`, not by a
    // `{token}` pattern: actix-router matches dynamic segments with a regex, which the
    // profile showed on the hot path.
    .default_service(web::to(dispatch));
}

/// `GET|HEAD /v0/hosties/{token}` (one path segment) is a discovery; a WebSocket upgrade on
/// any path is a registration (the original upgraded any path; the token may also be a
/// `token/…` path suffix). Anything else gets a JSON error body: under `/v0/hosties` a 404
/// (no token in the path) or a 405 (another method) with the all-zero answer fields, on `/` a
/// 405, on `/v0/websocket` a 400, elsewhere a 404.
async fn dispatch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::HttpResponse {
    use actix_web::Responder;
    use actix_web::http::Method;
    let method = req.method();
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if !ws::is_upgrade(req.headers()) {
        let path = req.path();
        let error = if path == "/v0/hosties" || path.starts_with("/v0/hosties/") {
            if !get_or_head {
                error::ApiError::MethodNotAllowed
            } else if discovery::token_segment(path).is_some() {
                return discovery::discover(req, state).await;
            } else {
                error::ApiError::NotAToken
            }
        } else if path == "/" {
            error::ApiError::MethodNotAllowed
        } else if path.starts_with("/v0/websocket") {
            // A browser or curl on the registration path: say what it takes.
            error::ApiError::BadHandshake("no Upgrade: websocket".into())
        } else {
            error::ApiError::UnknownPath
        };
        return actix_web::ResponseError::error_response(&error);
    }
    ws::upgrade_or_not_found(req.clone(), body, state)
        .await
        .respond_to(&req)
        .map_into_boxed_body()
}

/// Routes of the admin listener.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(admin::metrics))
        .route("/livez", web::get().to(admin::livez))
        .route("/readyz", web::get().to(admin::readyz));
}
