//! Where a registration's token comes from, and how it is kept out of logs and Redis.

use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};
use std::fmt;

/// A puppet service token. A secret: its `Debug` never shows it, only its hash prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Rejects the empty token: it would name nothing.
    pub fn new(raw: impl Into<String>) -> Option<Self> {
        let raw = raw.into();
        (!raw.is_empty()).then_some(Self(raw))
    }

    /// From `Authorization: Token <token>`: split on one space into exactly two parts, the scheme
    /// compared case-insensitively (as the original server did).
    pub fn from_authorization(value: &str) -> Option<Self> {
        let mut parts = value.split(' ');
        let (scheme, token) = (parts.next()?, parts.next()?);
        if parts.next().is_some() || !scheme.eq_ignore_ascii_case("token") {
            return None;
        }
        Self::new(token)
    }

    /// The legacy form: the `token/(.+)$` suffix of the upgrade path, percent-decoded.
    pub fn from_path(path: &str) -> Option<Self> {
        let start = path.find("token/")? + "token/".len();
        Self::from_percent_encoded(&path[start..])
    }

    /// A discovery path segment: percent-decoded, otherwise free-form.
    pub fn from_percent_encoded(segment: &str) -> Option<Self> {
        let decoded = percent_decode_str(segment).decode_utf8().ok()?;
        Self::new(decoded.into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", self.hash().short())
    }
}

/// SHA-256 of a token: the only form in which a token is stored or shared between nodes.
/// Serialized as 64 lowercase hex digits.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct TokenHash(pub [u8; 32]);

impl From<TokenHash> for String {
    fn from(h: TokenHash) -> String {
        h.to_hex()
    }
}

impl TryFrom<String> for TokenHash {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(|e| format!("token hash: {e}"))?;
        Ok(Self(out))
    }
}

impl TokenHash {
    /// The first 8 hex digits: enough to tell tokens apart in logs, useless to an attacker.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({})", self.short())
    }
}

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(t: Option<Token>) -> Option<String> {
        t.map(|t| t.as_str().to_owned())
    }

    #[test]
    fn authorization_header() {
        let v = "Token insecure_11111111-2222-3333-4444-555555555555";
        assert_eq!(
            tok(Token::from_authorization(v)).as_deref(),
            Some("insecure_11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(
            tok(Token::from_authorization("token abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            tok(Token::from_authorization("TOKEN abc")).as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn authorization_header_rejects_other_shapes() {
        for v in [
            "Bearer abc",
            "Token",
            "Token ",
            "Token a b",
            "Tokenabc",
            "",
            " Token abc",
        ] {
            assert!(Token::from_authorization(v).is_none(), "{v:?}");
        }
    }

    #[test]
    fn path_suffix() {
        assert_eq!(
            tok(Token::from_path("/v0/websocket/token/abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(
            tok(Token::from_path("/v0/websocket/token/a%20b")).as_deref(),
            Some("a b")
        );
        assert!(Token::from_path("/v0/websocket").is_none());
        assert!(Token::from_path("/v0/websocket/token/").is_none());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let t = Token::new("supersecret").unwrap();
        let shown = format!("{t:?} {:?} {}", t.hash(), t.hash());
        assert!(!shown.contains("supersecret"));
        assert_eq!(t.hash().short().len(), 8);
    }

    #[test]
    fn hash_round_trips_as_hex() {
        let h = Token::new("abc").unwrap().hash();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json.len(), 66);
        assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<TokenHash>("\"zz\"").is_err());
    }

    #[test]
    fn hash_is_sha256() {
        let t = Token::new("abc").unwrap();
        assert_eq!(
            t.hash().to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

#[cfg(test)]
#[path = "token_proptests.rs"]
mod proptests;
