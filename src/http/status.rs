//! The cluster status page at `/` and its JSON twin at `/v0/status` (or `/` with
//! `Accept: application/json`): like the original's "Online: N", for the whole cluster. No
//! token and no client address ever appears on either. `/?token=…` (the page's form) sends the
//! browser to the token's page.

use super::AppState;
use super::pages::{self, layout};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use maud::html;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

/// The JSON twin: the same figures the page shows.
#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub version: &'static str,
    /// The node that answered.
    pub node: String,
    /// Live nodes (their heartbeat has not run out), this one included.
    pub nodes: usize,
    /// Live sessions across those nodes.
    pub sessions: u64,
    /// Discoveries per second across those nodes, over their last few seconds.
    pub discovery_rate: f64,
    /// The other nodes' figures could be read from the registry.
    pub registry_ok: bool,
    /// Peers this node judged to be proxies outside `--trusted-proxies` (their forwarding
    /// headers are ignored); 0 when all is well. Never their addresses: the log names them.
    pub untrusted_proxies: usize,
    pub per_node: Vec<NodeStatus>,
}

#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub id: String,
    pub version: String,
    pub sessions: u64,
    pub discovery_rate: f64,
    pub draining: bool,
}

pub async fn status(state: &AppState) -> ClusterStatus {
    let view = state.node.cluster_view().await;
    let per_node: Vec<NodeStatus> = view
        .nodes
        .into_iter()
        .map(|(id, s)| NodeStatus {
            id: id.0,
            version: s.version,
            sessions: s.sessions,
            discovery_rate: tenths(s.discovery_rate),
            draining: s.draining,
        })
        .collect();
    ClusterStatus {
        version: env!("CARGO_PKG_VERSION"),
        node: state.node.id().0.clone(),
        nodes: per_node.len(),
        sessions: per_node.iter().map(|n| n.sessions).sum(),
        discovery_rate: tenths(per_node.iter().map(|n| n.discovery_rate).sum()),
        registry_ok: view.registry_ok,
        untrusted_proxies: state.untrusted.status().suspects,
        per_node,
    }
}

/// A rate as shown: to a tenth.
fn tenths(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

/// Whether the request asks for JSON by name and not for HTML.
fn wants_json(headers: &HeaderMap) -> bool {
    !pages::wants_html(headers)
        && headers
            .get_all(header::ACCEPT)
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("application/json"))
}

/// `GET /v0/status`.
pub async fn json(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let body = status(&state).await;
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
    if req.method() == Method::HEAD {
        return res.content_type("application/json").finish();
    }
    res.json(body)
}

#[derive(serde::Deserialize)]
pub struct Query {
    token: Option<String>,
}

/// `GET /`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: Option<web::Query<Query>>,
) -> HttpResponse {
    if let Some(token) = query.and_then(|q| q.into_inner().token) {
        let token = token.trim();
        if !token.is_empty() {
            // See Other: the token's page lives at its discovery URL.
            let to = format!(
                "/v0/hosties/{}",
                utf8_percent_encode(token, NON_ALPHANUMERIC)
            );
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, to))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::REFERRER_POLICY, "no-referrer"))
                .finish();
        }
    }
    if wants_json(req.headers()) {
        return json(req, state).await;
    }
    let s = status(&state).await;
    let body = html! {
        h1 { "hostie " (s.version) }
        p { "A registry for Wechaty Puppet Services." }
        div.state.(if s.registry_ok { "online" } else { "unsure" }) #cluster {
            strong { "Online: " span #sessions { (s.sessions) } }
            " session(s) on " span #nodes { (s.nodes) } " node(s), "
            span #rate { (s.discovery_rate) } " discoveries/s."
            @if !s.registry_ok {
                br; "The other nodes' figures cannot be read right now: only this node is counted."
            }
        }
        @let untrusted = state.untrusted.status();
        @if let Some(since) = untrusted.since.filter(|_| untrusted.suspects > 0) {
            div.warn #untrusted-proxies data-count=(untrusted.suspects) {
                strong { "Warning: " }
                (untrusted.suspects) " proxy(ies) not trusted (since "
                (humantime::format_rfc3339_seconds(since)) "): their forwarding headers are "
                "ignored, so gateways behind them that name no host are advertised at a "
                "proxy's address, and all their clients share one rate limit. Set "
                code { "--trusted-proxies" } " (Helm: " code { "config.trustedProxies" }
                ") to the load balancer's addresses; this node's log names them."
            }
        }
        h2 { "Is my token online?" }
        form method="get" action="/" {
            label for="token" { "Token" }
            input #token type="text" name="token" autocomplete="off" spellcheck="false"
                placeholder="puppet_…";
            button type="submit" { "Check" }
        }
        p {
            "Scripts and SDKs: " code { "GET /v0/hosties/{token}" }
            " (200 online, 404 not, with a " code { "status" } " saying why). Gateways register with a WebSocket to "
            code { "/v0/websocket" } ". This page as JSON: " a href="/v0/status" { code { "/v0/status" } } "."
        }
        h2 { "Nodes" }
        table #per-node {
            thead { tr { th { "Node" } th { "Version" } th { "Sessions" } th { "Discoveries/s" } th { "State" } } }
            tbody {
                @for n in &s.per_node {
                    tr.node {
                        td { code { (n.id) } @if n.id == s.node { " (this node)" } }
                        td { (n.version) }
                        td { (n.sessions) }
                        td { (n.discovery_rate) }
                        td { (if n.draining { "draining" } else { "serving" }) }
                    }
                }
            }
        }
    };
    pages::page(StatusCode::OK, req.method(), layout("hostie", body))
}
