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

/// What is likely wrong with a discovery path segment that named no live session: the mistakes
/// people make when they paste a token into a URL or a configuration file. Looks at the segment
/// alone, never at other tokens, so a diagnosis reveals nothing the caller did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not valid percent-encoding: a `%` without two hex digits after it, or escapes of bytes
    /// that are not UTF-8.
    Encoding,
    /// Still holds percent-escapes once decoded: it was encoded twice.
    EncodedTwice,
    /// Starts or ends with whitespace: a line break read from a file, a space from a copy.
    Whitespace,
    /// Starts or ends with a quote, or is wrapped in the `<…>`/`{…}` of a placeholder.
    Quoted,
}

/// Invisible characters that are not Unicode whitespace but end up around pasted tokens: a
/// byte order mark from a file, a zero-width space from a web page.
const INVISIBLE: [char; 3] = ['\u{feff}', '\u{200b}', '\u{2060}'];
const QUOTES: [char; 7] = [
    '"', '\'', '`', '\u{201c}', '\u{201d}', '\u{2018}', '\u{2019}',
];

/// The first problem of [`TokenProblem`]'s list that the raw (still percent-encoded) discovery
/// segment has, if any.
pub fn diagnose_segment(raw: &str) -> Option<TokenProblem> {
    if has_escape(raw, false) {
        return Some(TokenProblem::Encoding);
    }
    let Ok(token) = percent_decode_str(raw).decode_utf8() else {
        return Some(TokenProblem::Encoding);
    };
    if has_escape(&token, true) {
        return Some(TokenProblem::EncodedTwice);
    }
    let blank = |c: char| c.is_whitespace() || INVISIBLE.contains(&c);
    let (first, last) = (token.chars().next()?, token.chars().next_back()?);
    if blank(first) || blank(last) {
        return Some(TokenProblem::Whitespace);
    }
    let wrapped = token.chars().count() >= 2 && matches!((first, last), ('<', '>') | ('{', '}'));
    if QUOTES.contains(&first) || QUOTES.contains(&last) || wrapped {
        return Some(TokenProblem::Quoted);
    }
    None
}

/// Whether `s` holds a `%` followed by two hex digits (`valid`), or a `%` that is not (`!valid`).
fn has_escape(s: &str, valid: bool) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && (b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                == valid
    })
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
    fn segments_are_diagnosed_by_what_they_hold() {
        use TokenProblem::*;
        for (raw, want) in [
            ("puppet_padlocal_0123abcd", None),
            ("insecure_11111111-2222-3333-4444-555555555555", None),
            ("a%20b", None),
            ("caf%C3%A9", None),
            ("%", Some(Encoding)),
            ("abc%2", Some(Encoding)),
            ("abc%zz", Some(Encoding)),
            ("abc%FF", Some(Encoding)),
            ("abc%2520", Some(EncodedTwice)),
            ("%2522abc%2522", Some(EncodedTwice)),
            ("abc%0A", Some(Whitespace)),
            ("%20abc", Some(Whitespace)),
            ("abc%09", Some(Whitespace)),
            ("%EF%BB%BFabc", Some(Whitespace)),
            ("abc%E2%80%8B", Some(Whitespace)),
            ("%22abc%22", Some(Quoted)),
            ("%27abc", Some(Quoted)),
            ("abc%E2%80%9D", Some(Quoted)),
            ("%3Cabc%3E", Some(Quoted)),
            ("%7Babc%7D", Some(Quoted)),
            ("a%3Cb%3Ec", None),
            ("%3C", None),
        ] {
            assert_eq!(diagnose_segment(raw), want, "{raw}");
        }
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
