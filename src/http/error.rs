//! The one place where errors become HTTP status codes.

use crate::node::{DiscoveryError, RegisterError};
use crate::protocol::{ErrorAnswer, ErrorBody, ErrorStatus, TokenProblem};
use actix_web::http::StatusCode;
use actix_web::http::header;
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
    #[error("not a token: a discovery is GET /v0/hosties/{{token}}")]
    NotAToken,
    /// No live session, and the token looks mistyped (see [`TokenProblem`]).
    #[error("no live session for the token, which looks mistyped: {0:?}")]
    Mistyped(TokenProblem),
    #[error("no such path")]
    UnknownPath,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// The `status` an answer to this error carries in its body.
    pub fn error_status(&self) -> ErrorStatus {
        match self {
            Self::Discovery(DiscoveryError::NotFound) => ErrorStatus::NoSession,
            Self::Discovery(DiscoveryError::Gone) => ErrorStatus::SessionsGone,
            Self::Mistyped(TokenProblem::Encoding) => ErrorStatus::TokenEncoding,
            Self::Mistyped(TokenProblem::EncodedTwice) => ErrorStatus::TokenEncodedTwice,
            Self::Mistyped(TokenProblem::Whitespace) => ErrorStatus::TokenWhitespace,
            Self::Mistyped(TokenProblem::Quoted) => ErrorStatus::TokenQuoted,
            Self::Discovery(DiscoveryError::Registry(_)) => ErrorStatus::RegistryUnavailable,
            Self::Discovery(DiscoveryError::Untrusted) => ErrorStatus::RegistryUnsure,
            Self::Discovery(DiscoveryError::Unreachable(_)) => ErrorStatus::OwnerUnreachable,
            Self::NotAToken => ErrorStatus::NotAToken,
            Self::UnknownPath => ErrorStatus::UnknownPath,
            Self::MethodNotAllowed => ErrorStatus::MethodNotAllowed,
            Self::RateLimited { .. } => ErrorStatus::RateLimited,
            Self::NoToken => ErrorStatus::NoToken,
            Self::BadHandshake(_) => ErrorStatus::BadHandshake,
            Self::Register(RegisterError::TokenFull) => ErrorStatus::TokenFull,
            Self::Register(RegisterError::SourceFull) => ErrorStatus::SourceFull,
            Self::Register(RegisterError::Draining) => ErrorStatus::Draining,
            Self::Register(RegisterError::NodeFull) => ErrorStatus::NodeFull,
        }
    }

    /// Answers under `/v0/hosties/`: every discovery client reads these bodies.
    fn is_discovery(&self) -> bool {
        matches!(
            self,
            Self::Discovery(_)
                | Self::Mistyped(_)
                | Self::NotAToken
                | Self::MethodNotAllowed
                | Self::RateLimited { .. }
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Discovery(DiscoveryError::NotFound | DiscoveryError::Gone)
            | Self::Mistyped(_)
            | Self::NotAToken
            | Self::UnknownPath => StatusCode::NOT_FOUND,
            Self::Discovery(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Register(RegisterError::TokenFull | RegisterError::SourceFull) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Register(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoToken => StatusCode::UNAUTHORIZED,
            Self::BadHandshake(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Every answer is JSON. Under `/v0/hosties/` it carries the all-zero answer fields and
    /// `Access-Control-Allow-Origin: *` (a browser page may call discovery); a 5xx or a 429
    /// says when to retry (wechaty-token retries non-4xx answers).
    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        let retry_after = match self {
            Self::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ if self.status_code() == StatusCode::SERVICE_UNAVAILABLE => {
                Some(RETRY_AFTER_UNAVAILABLE)
            }
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if matches!(self, Self::MethodNotAllowed) {
            res.insert_header((header::ALLOW, "GET, HEAD"));
        }
        let status = self.error_status();
        if self.is_discovery() {
            res.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
                .json(ErrorAnswer::new(status))
        } else {
            res.json(ErrorBody::new(status))
        }
    }
}
