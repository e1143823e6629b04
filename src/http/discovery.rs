//! `GET|HEAD /v0/hosties/{token}`.

use super::error::ApiError;
use super::untrusted_proxy::Request;
use super::{AppState, pages};
use crate::model::{DiscoveryOutcome, Limit};
use crate::node::{Discovered, DiscoveryError, TokenSessions};
use crate::protocol::{Token, diagnose_segment};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use std::time::Instant;

/// The token segment of a discovery path: `/v0/hosties/{segment}`, one non-empty segment.
pub fn token_segment(path: &str) -> Option<&str> {
    path.strip_prefix("/v0/hosties/")
        .filter(|seg| !seg.is_empty() && !seg.contains('/'))
}

pub async fn discover(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    state.watch_forwarding(&req, Request::Discovery);
    let started = Instant::now();
    let (outcome, response) = match answer(&req, &state).await {
        Ok((outcome, res)) => (outcome, res),
        Err(e) => {
            let outcome = match &e {
                ApiError::Discovery(d) => d.outcome(),
                ApiError::RateLimited { .. } => DiscoveryOutcome::RateLimited,
                ApiError::Mistyped(_) => DiscoveryOutcome::Miss,
                _ => DiscoveryOutcome::Error,
            };
            (outcome, actix_web::ResponseError::error_response(&e))
        }
    };
    let took = started.elapsed();
    let metrics = state.node.metrics();
    metrics.discovery(outcome, took.as_secs_f64());
    if took > state.node.discovery_deadline() {
        metrics.discovery_overruns.inc();
    }
    response
}

async fn answer(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(DiscoveryOutcome, HttpResponse), ApiError> {
    // The client address is worked out only when a limit is configured.
    if let Some(limiter) = &state.limiter
        && let Some(ip) = state.client_ip(req)
        && let Err(not_until) = limiter.check_key(&ip)
    {
        state.node.metrics().limit(Limit::DiscoveryRate);
        let retry_after = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(ApiError::RateLimited { retry_after });
    }
    // The raw (still percent-encoded) segment: the token is free-form and decoded exactly once.
    let raw = req.path().strip_prefix("/v0/hosties/").unwrap_or_default();
    if pages::wants_html(req.headers()) {
        return Ok(token_page(req, state, raw).await);
    }
    let found = resolve(state, raw).await?;
    let res = HttpResponse::Ok()
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(found.answer);
    Ok((found.outcome, res))
}

/// The discovery of the raw segment `raw`, as an API client gets it.
async fn resolve(state: &AppState, raw: &str) -> Result<Discovered, ApiError> {
    // A mistyped token is said so only when it names no live session: a gateway may have
    // registered it mistyped just the same.
    let mistyped = || {
        diagnose_segment(raw).map_or(ApiError::from(DiscoveryError::NotFound), ApiError::Mistyped)
    };
    let token = Token::from_percent_encoded(raw).ok_or_else(mistyped)?;
    match state.node.discover(&token.hash()).await {
        Err(DiscoveryError::NotFound) => Err(mistyped()),
        found => Ok(found?),
    }
}

/// A browser on a discovery URL: the same discovery, explained (see [`pages`]), with the same
/// status code.
async fn token_page(
    req: &HttpRequest,
    state: &AppState,
    raw: &str,
) -> (DiscoveryOutcome, HttpResponse) {
    let token = Token::from_percent_encoded(raw);
    let started = Instant::now();
    let sessions = async {
        match &token {
            Some(t) => state.node.token_sessions(&t.hash()).await,
            None => TokenSessions::default(),
        }
    };
    let answer = async {
        let answer = resolve(state, raw).await;
        (answer, started.elapsed())
    };
    let ((answer, took), sessions) = tokio::join!(answer, sessions);
    let outcome = match &answer {
        Ok(found) => found.outcome,
        Err(ApiError::Discovery(e)) => e.outcome(),
        Err(_) => DiscoveryOutcome::Miss,
    };
    let this_node = &state.node.id().0;
    let view = pages::TokenView {
        segment: raw,
        token: token.as_ref().map(Token::as_str),
        answer: &answer,
        took,
        sessions: &sessions,
        this_node,
    };
    let (status, body) = pages::token_page(&view);
    (outcome, pages::page(status, req.method(), body))
}
