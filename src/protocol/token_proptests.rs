//! Properties of the token parsers: the `Authorization` header, the legacy path suffix and the
//! percent-decoded discovery segment, and the hash that stands in for a token everywhere else.

use super::*;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;

/// What a client can put in a path segment or header: ASCII, percent-escapes (valid, truncated,
/// non-hex, encoding invalid UTF-8), multi-byte characters, spaces and slashes.
fn client_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,24}",
        "(%[0-9a-fA-F]{2}|%[0-9a-fA-F]?|%[g-zG-Z]{2}|[a-z/ ]|é|☃|\u{1F600}){0,16}",
        "(%[89a-fA-F][0-9a-fA-F]){1,6}",
    ]
}

/// The naive decoder: `%` and two hex digits is that byte, anything else is itself; the result
/// must be UTF-8 and non-empty.
fn reference_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().filter(|t| !t.is_empty())
}

/// Escapes `%` too (so the result decodes to the input), and little else.
const PERCENT_AND_CONTROLS: &AsciiSet = &CONTROLS.add(b'%').add(b' ').add(b'/');

proptest! {
    #[test]
    fn percent_decoding_agrees_with_the_reference(s in client_text()) {
        let got = Token::from_percent_encoded(&s).map(|t| t.as_str().to_owned());
        prop_assert_eq!(got, reference_decode(&s));
    }

    #[test]
    fn percent_encoding_round_trips(t in any::<String>().prop_filter("non-empty", |t| !t.is_empty())) {
        for set in [NON_ALPHANUMERIC, PERCENT_AND_CONTROLS] {
            let encoded = utf8_percent_encode(&t, set).to_string();
            let back = Token::from_percent_encoded(&encoded);
            prop_assert_eq!(back.as_ref().map(Token::as_str), Some(t.as_str()));
        }
    }

    #[test]
    fn text_without_percent_is_taken_verbatim(s in "[^%]{0,24}") {
        let got = Token::from_percent_encoded(&s);
        prop_assert_eq!(got.as_ref().map(Token::as_str), (!s.is_empty()).then_some(s.as_str()));
    }

    #[test]
    fn path_suffix_round_trips(
        // The first `token/` starts the token, so the prefix has none (a prefix cannot end in
        // part of one: "token/" has no border).
        prefix in "(/|[a-z0-9]|tok|token|%2F){0,12}".prop_map(|p| p.replace("token/", "token%2F")),
        t in any::<String>().prop_filter("non-empty", |t| !t.is_empty()),
    ) {
        let path = format!("{prefix}token/{}", utf8_percent_encode(&t, NON_ALPHANUMERIC));
        let back = Token::from_path(&path);
        prop_assert_eq!(back.as_ref().map(Token::as_str), Some(t.as_str()));
    }

    #[test]
    fn path_is_split_at_the_first_token_slash(path in "(/|[a-z]|token/|%[0-9a-f]{2}|é){0,16}") {
        let expected = path.find("token/").and_then(|i| reference_decode(&path[i + 6..]));
        let got = Token::from_path(&path).map(|t| t.as_str().to_owned());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn authorization_round_trips(
        scheme in "[tT][oO][kK][eE][nN]",
        t in "[^ ]{1,40}",
    ) {
        let back = Token::from_authorization(&format!("{scheme} {t}"));
        prop_assert_eq!(back.as_ref().map(Token::as_str), Some(t.as_str()));
    }

    #[test]
    fn authorization_agrees_with_the_reference(
        v in prop_oneof![
            any::<String>(),
            "(?i:token|bearer|tok)( |  )?[a-zé\u{1F600}]{0,6}( [a-z]{0,3})?",
            "[^ ]{0,5}[ ][^ ]{0,12}",
        ],
    ) {
        // Exactly "token" in any ASCII case, one space, then a non-empty token with no space.
        let expected = v
            .get(..6)
            .filter(|head| head.eq_ignore_ascii_case("token "))
            .map(|_| &v[6..])
            .filter(|t| !t.is_empty() && !t.contains(' '));
        let got = Token::from_authorization(&v);
        prop_assert_eq!(got.as_ref().map(Token::as_str), expected);
    }

    #[test]
    fn hash_is_sha256_and_debug_hides_the_token(t in "[^%]{16,64}") {
        let token = Token::new(t.clone()).unwrap();
        let hash = token.hash();
        prop_assert_eq!(hash.0, <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
        prop_assert!(hash.to_hex().starts_with(&hash.short()));
        // 16+ characters cannot hide inside the 15 of `Token(xxxxxxxx)`.
        let shown = format!("{token:?} {hash:?} {hash}");
        prop_assert!(!shown.contains(&t), "{shown}");
    }

    #[test]
    fn hash_hex_round_trips(bytes in any::<[u8; 32]>()) {
        let h = TokenHash(bytes);
        prop_assert_eq!(TokenHash::try_from(h.to_hex()), Ok(h));
        let json = serde_json::to_string(&h).unwrap();
        prop_assert_eq!(serde_json::from_str::<TokenHash>(&json).unwrap(), h);
    }

    #[test]
    fn hash_from_text_agrees_with_the_reference(
        s in prop_oneof!["[0-9a-fA-F]{62,66}", "[0-9a-gA-G]{64}", any::<String>()],
    ) {
        let valid = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let parsed = TokenHash::try_from(s.clone());
        prop_assert_eq!(parsed.is_ok(), valid, "{:?}", s);
        if let Ok(h) = parsed {
            prop_assert_eq!(h.to_hex(), s.to_ascii_lowercase());
        }
    }

    #[test]
    fn diagnosis_agrees_with_the_decoder_and_never_fails(s in client_text()) {
        // Whatever the client sends: a segment the decoder refuses is an encoding problem, and
        // only such a segment (or one with a `%` not starting an escape) is.
        let problem = diagnose_segment(&s);
        let undecodable = Token::from_percent_encoded(&s).is_none() && !s.is_empty();
        if undecodable {
            prop_assert_eq!(problem, Some(TokenProblem::Encoding));
        }
        let stray = s.bytes().enumerate().any(|(i, c)| {
            c == b'%' && !(s.as_bytes().get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.as_bytes().get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        });
        prop_assert_eq!(problem == Some(TokenProblem::Encoding), undecodable || stray);
    }

    #[test]
    fn a_clean_token_encoded_once_has_no_problem_and_each_mistake_is_named(
        // What real tokens look like: letters, digits, `_`, `-`, `.`, `:`, `=` and the like.
        t in "[A-Za-z0-9][A-Za-z0-9_.:=+-]{0,40}[A-Za-z0-9]",
        blank in prop::sample::select(vec![" ", "\n", "\r\n", "\t", "\u{a0}", "\u{feff}"]),
        quote in prop::sample::select(vec![("\"", "\""), ("'", "'"), ("\u{201c}", "\u{201d}"), ("<", ">"), ("{", "}")]),
    ) {
        let once = |t: &str| utf8_percent_encode(t, NON_ALPHANUMERIC).to_string();
        prop_assert_eq!(diagnose_segment(&once(&t)), None);
        prop_assert_eq!(diagnose_segment(&t), None, "sent unencoded");
        for mistaken in [format!("{t}{blank}"), format!("{blank}{t}")] {
            prop_assert_eq!(diagnose_segment(&once(&mistaken)), Some(TokenProblem::Whitespace));
        }
        let quoted = format!("{}{t}{}", quote.0, quote.1);
        prop_assert_eq!(diagnose_segment(&once(&quoted)), Some(TokenProblem::Quoted));
        if !t.bytes().all(|b| b.is_ascii_alphanumeric()) {
            prop_assert_eq!(diagnose_segment(&once(&once(&t))), Some(TokenProblem::EncodedTwice));
        }
    }
}
