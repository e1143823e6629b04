//! The body of a discovery answer.

use serde::Serialize;

/// `{"host","ip","port"}` — every field is always present: wechaty-token and new Go clients read
/// `host`, Python, Java, .NET, old Go and old TypeScript read only `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostieAnswer {
    pub host: String,
    pub ip: String,
    pub port: u16,
}

impl HostieAnswer {
    pub fn found(host: &str, port: u16) -> Self {
        Self {
            host: host.to_owned(),
            ip: host.to_owned(),
            port,
        }
    }

    /// The body of a 404. Never sent with a 200: wechaty-token would accept `0.0.0.0` as an
    /// address.
    pub fn not_found() -> Self {
        Self::found("0.0.0.0", 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
