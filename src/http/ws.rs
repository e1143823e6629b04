//! WebSocket registration: `/v0/websocket` (and, as the original did, any other path).

use super::AppState;
use super::error::ApiError;
use super::untrusted_proxy::Request;
use crate::hub::SESSION_QUEUE;
use crate::model::{HostFrom, RegistrationResult, SessionId, SessionRecord, source_of};
use crate::node::RegisterError;
use crate::protocol::{Subprotocol, Token};
use crate::session::Session;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Whether a request asks for a WebSocket upgrade.
pub fn is_upgrade(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Upgrades WebSocket requests on any path; anything else that matched no route is a 404.
pub async fn upgrade_or_not_found(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !is_upgrade(req.headers()) {
        return Err(ApiError::UnknownPath);
    }
    let result = upgrade(&req, body, &state).await;
    let metrics = state.node.metrics();
    metrics.registration(match &result {
        Ok(_) => RegistrationResult::Accepted,
        Err(ApiError::NoToken) => RegistrationResult::NoToken,
        Err(ApiError::BadHandshake(_)) => RegistrationResult::BadHandshake,
        Err(ApiError::Register(RegisterError::Draining)) => RegistrationResult::Draining,
        Err(ApiError::Register(RegisterError::NodeFull)) => RegistrationResult::NodeFull,
        Err(ApiError::Register(RegisterError::TokenFull)) => RegistrationResult::TokenFull,
        Err(ApiError::Register(RegisterError::SourceFull)) => RegistrationResult::SourceFull,
        Err(_) => RegistrationResult::Error,
    });
    if let Err(e) = &result {
        tracing::info!(error = %crate::telemetry::ErrorChain(e), path = req.path(), "registration refused");
    }
    result
}

async fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    let node = &state.node;
    if node.is_draining() {
        return Err(RegisterError::Draining.into());
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(Token::from_authorization)
        .or_else(|| Token::from_path(req.path()))
        .ok_or(ApiError::NoToken)?;
    // Several offered values, in one header or several: the first one is echoed.
    let subprotocol = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .find_map(Subprotocol::from_header);

    let (mut response, ws, frames) =
        actix_ws::handle(req, body).map_err(|e| ApiError::BadHandshake(e.to_string()))?;
    if let Some(sub) = &subprotocol {
        let echo = HeaderValue::from_str(&sub.raw)
            .expect("the value was read from a request header, so it is a valid header value");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, echo);
    }

    let client = state.client(req);
    let client_ip = client.map(|c| c.ip);
    state.watch_forwarding(req, Request::Registration);
    let (host, host_from) = match subprotocol.as_ref().and_then(|s| s.host.clone()) {
        Some(custom) => (custom, HostFrom::Gateway),
        None => (
            client_ip.map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string()),
            if client.is_some_and(|c| c.forwarded) {
                HostFrom::Forwarded
            } else {
                HostFrom::Peer
            },
        ),
    };
    let rejected_host = subprotocol.as_ref().is_some_and(|s| s.rejected_host);
    if rejected_host {
        node.metrics().rejected_hosts.inc();
    }
    let record = Arc::new(SessionRecord {
        session: SessionId::new(),
        node: node.id().clone(),
        token: token.hash(),
        registered_at_us: now_us(),
        host,
        port_hint: subprotocol.as_ref().and_then(|s| s.port),
        peer: subprotocol
            .as_ref()
            .map_or(crate::protocol::PeerHint::Ask, |s| s.peer),
        source: client_ip.map(source_of),
        host_from: Some(host_from),
        rejected_host,
        version: subprotocol.as_ref().and_then(|s| s.version.clone()),
    });
    let discoverable = subprotocol
        .as_ref()
        .is_some_and(Subprotocol::is_discoverable);
    let (cmd_tx, cmd_rx) = mpsc::channel(SESSION_QUEUE);
    node.register(record.clone(), discoverable, cmd_tx).await?;

    tracing::info!(
        session = %record.session,
        token = %record.token,
        host = %record.host,
        port_hint = record.port_hint,
        discoverable,
        client_id = subprotocol.as_ref().and_then(|s| s.client_id.as_deref()),
        rejected_host,
        "session registered"
    );
    let frames = frames
        .max_frame_size(state.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(state.max_frame_bytes);
    let session = Session::new(node.clone(), state.session, record, ws);
    session.spawn(frames, cmd_rx);
    Ok(response)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
