//! The body of a discovery answer.

use serde::Serialize;

/// `{"host","ip","port"}` — every field is always present: wechaty-token and new Go clients read
/// `host`, Python, Java, .NET, old Go and old TypeScript read only `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostieAnswer {
    pub host: String,
    pub ip: String,
    pub port: u16,
    /// Whether `host:port` accepted a TCP connection when last probed (`reachable`,
    /// `unreachable`, `denied`: not probed, in a `--probe-deny` range; `unchecked`: not yet).
    /// Only with `--probe-reachability`: without it the answer is the three fields, byte for
    /// byte. A string, a scalar: java-wechaty reads the body into a map of strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reachability: Option<&'static str>,
}

impl HostieAnswer {
    pub fn found(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            ip: host.to_owned(),
            port,
            reachability: None,
        }
    }

    /// The body of a 404. Never sent with a 200: wechaty-token would accept `0.0.0.0` as an
    /// address.
    pub fn not_found() -> Self {
        Self::found("0.0.0.0", 0)
    }
}

/// Why an answer is not a 200: a stable machine-readable `status` and a human `hint` in the
/// body of every other answer of the public listeners (docs/protocol.md, "Error bodies").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 404: no live session of the token anywhere in the cluster.
    NoSession,
    /// 404: the token has registrations, but every one's session is gone (closed, or on a node
    /// that stopped).
    SessionsGone,
    /// 404, no live session: the path segment is not valid percent-encoding.
    TokenEncoding,
    /// 404, no live session: the token still holds percent-escapes once decoded.
    TokenEncodedTwice,
    /// 404, no live session: the token starts or ends with whitespace.
    TokenWhitespace,
    /// 404, no live session: the token starts or ends with a quote, or is a `<…>` placeholder.
    TokenQuoted,
    /// 404: `/v0/hosties/` with no token, or a path with a further `/`.
    NotAToken,
    /// 404: a path that is neither discovery, registration nor the status page.
    UnknownPath,
    /// 405: a method the path does not take.
    MethodNotAllowed,
    /// 429: the client address's discovery rate.
    RateLimited,
    /// 503: the registry could not be read within the deadline.
    RegistryUnavailable,
    /// 503: no live session found, but the registry refused a write or lost data recently.
    RegistryUnsure,
    /// 503: no session of the token could be asked within the deadline.
    OwnerUnreachable,
    /// 401: a registration without `Authorization: Token …`.
    NoToken,
    /// 400: a registration that is not a valid WebSocket handshake.
    BadHandshake,
    /// 429: the token holds `--max-sessions-per-token` sessions.
    TokenFull,
    /// 429: the client address holds `--max-sessions-per-source` sessions on this node.
    SourceFull,
    /// 503: this node is draining.
    Draining,
    /// 503: this node holds `--max-sessions` sessions.
    NodeFull,
}

impl ErrorStatus {
    /// The `status` field: stable, documented, never renamed.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoSession => "no_session",
            Self::SessionsGone => "sessions_gone",
            Self::TokenEncoding => "token_encoding",
            Self::TokenEncodedTwice => "token_encoded_twice",
            Self::TokenWhitespace => "token_whitespace",
            Self::TokenQuoted => "token_quoted",
            Self::NotAToken => "not_a_token",
            Self::UnknownPath => "unknown_path",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::RegistryUnavailable => "registry_unavailable",
            Self::RegistryUnsure => "registry_unsure",
            Self::OwnerUnreachable => "owner_unreachable",
            Self::NoToken => "no_token",
            Self::BadHandshake => "bad_handshake",
            Self::TokenFull => "token_full",
            Self::SourceFull => "source_full",
            Self::Draining => "draining",
            Self::NodeFull => "node_full",
        }
    }

    /// The `hint` field: what the reader can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::NoSession => {
                "no puppet service (gateway) is connected with this token right now: start it, \
                 check that it uses this exact token, and look at its log for a registration error"
            }
            Self::SessionsGone => {
                "this token was registered, but none of its sessions is connected any more (the \
                 gateway disconnected, or its registry node stopped): restart the gateway, or \
                 wait for it to reconnect"
            }
            Self::TokenEncoding => {
                "no session has this token, and the path is not valid percent-encoding (a '%' \
                 not followed by two hex digits, or bytes that are not UTF-8): encode the token \
                 once"
            }
            Self::TokenEncodedTwice => {
                "no session has this token, and it still holds %-escapes once decoded: it was \
                 percent-encoded twice; encode it once"
            }
            Self::TokenWhitespace => {
                "no session has this token, and it starts or ends with whitespace (a line break \
                 from a file, a space from a copy): remove it"
            }
            Self::TokenQuoted => {
                "no session has this token, and it starts or ends with a quote, or is wrapped in \
                 <> or {}: send the token alone"
            }
            Self::NotAToken => "a discovery is GET /v0/hosties/{token}, the token one path segment",
            Self::UnknownPath => {
                "discovery is GET /v0/hosties/{token}; gateways register with a WebSocket to \
                 /v0/websocket"
            }
            Self::MethodNotAllowed => "this path takes GET or HEAD only",
            Self::RateLimited => {
                "too many discoveries from this address: retry after Retry-After seconds"
            }
            Self::RegistryUnavailable | Self::RegistryUnsure => {
                "the registry cannot tell right now: retry after Retry-After seconds"
            }
            Self::OwnerUnreachable => {
                "sessions of this token are registered, but none answered in time (its gateway \
                 or registry node is overloaded or paused): retry after Retry-After seconds"
            }
            Self::NoToken => "send the token as 'Authorization: Token <token>'",
            Self::BadHandshake => "connect with a WebSocket client",
            Self::TokenFull => "this token has as many live sessions as allowed: close one first",
            Self::SourceFull => "this address holds as many sessions as allowed on this node",
            Self::Draining | Self::NodeFull => {
                "this node takes no more sessions: reconnect, another node will"
            }
        }
    }
}

/// The body of a discovery answer that is not a 200: the all-zero answer of a 404 (clients that
/// read only `host`/`ip`/`port` behave as on a 404, whatever the status) and the scalar fields
/// `status` and `hint`. Scalars only: java-wechaty reads the body as a map of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorAnswer {
    #[serde(flatten)]
    pub answer: HostieAnswer,
    pub status: &'static str,
    pub hint: &'static str,
}

impl ErrorAnswer {
    pub fn new(status: ErrorStatus) -> Self {
        Self {
            answer: HostieAnswer::not_found(),
            status: status.code(),
            hint: status.hint(),
        }
    }
}

/// The body of any other answer of the public listeners that is not a 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub status: &'static str,
    pub hint: &'static str,
}

impl ErrorBody {
    pub fn new(status: ErrorStatus) -> Self {
        Self {
            status: status.code(),
            hint: status.hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_keep_the_zero_fields_first_and_add_scalars() {
        let body = serde_json::to_string(&ErrorAnswer::new(ErrorStatus::RateLimited)).unwrap();
        assert!(
            body.starts_with(
                r#"{"host":"0.0.0.0","ip":"0.0.0.0","port":0,"status":"rate_limited","hint":""#
            ),
            "{body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v.as_object()
                .unwrap()
                .values()
                .all(|f| !f.is_object() && !f.is_array())
        );
    }

    #[test]
    fn found_carries_host_in_both_fields() {
        let body = serde_json::to_string(&HostieAnswer::found("203.0.113.7", 18789)).unwrap();
        assert_eq!(
            body,
            r#"{"host":"203.0.113.7","ip":"203.0.113.7","port":18789}"#
        );
    }

    #[test]
    fn not_found_shape() {
        let body = serde_json::to_string(&HostieAnswer::not_found()).unwrap();
        assert_eq!(body, r#"{"host":"0.0.0.0","ip":"0.0.0.0","port":0}"#);
    }
}
