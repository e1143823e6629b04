//! The one place where errors become HTTP status codes.

use crate::node::{DiscoveryError, RegisterError};
use crate::protocol::HostieAnswer;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError};
use std::time::Duration;

/// Seconds a client should wait before asking again after a 503.
const RETRY_AFTER_UNAVAILABLE: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error("missing token: send 'Authorization: Token <token>'")]
    NoToken,
    #[error("not a WebSocket upgrade request: {0}")]
    BadHandshake(String),
    #[error("too many discovery requests from this address")]
    RateLimited { retry_after: Duration },
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Discovery(DiscoveryError::NotFound) => StatusCode::NOT_FOUND,
            Self::Discovery(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Register(RegisterError::TokenFull | RegisterError::SourceFull) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Register(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoToken => StatusCode::UNAUTHORIZED,
            Self::BadHandshake(_) => StatusCode::BAD_REQUEST,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            // Discovery answers are JSON for every client; a 404 carries the all-zero body the
            // original sent, and a 503 tells wechaty-token (which retries non-4xx) when to retry.
            Self::Discovery(e) => {
                res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
                if !matches!(e, DiscoveryError::NotFound) {
                    res.insert_header((header::RETRY_AFTER, RETRY_AFTER_UNAVAILABLE.to_string()));
                }
                match e {
                    DiscoveryError::NotFound => res.json(HostieAnswer::not_found()),
                    _ => res.json(serde_json::json!({ "error": e.to_string() })),
                }
            }
            Self::RateLimited { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                    .insert_header((header::RETRY_AFTER, secs.to_string()))
                    .json(serde_json::json!({ "error": self.to_string() }))
            }
            Self::Register(RegisterError::Draining | RegisterError::NodeFull) => res
                .insert_header((header::RETRY_AFTER, RETRY_AFTER_UNAVAILABLE.to_string()))
                .content_type(ContentType::plaintext())
                .body(self.to_string()),
            _ => res
                .content_type(ContentType::plaintext())
                .body(self.to_string()),
        }
    }
}
