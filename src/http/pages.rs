//! Pages for people, rendered on the server (maud escapes every interpolation): the token page,
//! which a browser gets when it opens a discovery URL, and the cluster status page at `/`.
//! Plain HTML with a little inline CSS: no script, usable on a phone.
//!
//! API clients never send `Accept: text/html`, so they keep getting the JSON answer byte for
//! byte; browsers always do. A page shows the token only masked, never another token's data,
//! and is kept out of caches, referrers and search engines.

use crate::http::error::ApiError;
use crate::model::{DiscoveryOutcome, HostFrom, SessionRecord};
use crate::node::{Discovered, TokenSessions};
use crate::protocol::ErrorStatus;
use actix_web::HttpResponse;
use actix_web::http::header::{self, ContentType, HeaderMap};
use actix_web::http::{Method, StatusCode};
use maud::{DOCTYPE, Markup, html};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether the request asks for HTML by name: `text/html` with a quality above 0 and above
/// JSON's (`application/json` or `application/*`). `*/*` and no `Accept` at all get JSON, as
/// does the JDK's `HttpURLConnection` default (`text/html, image/gif, image/jpeg, *; q=.2,
/// */*; q=.2`), recognised by its bare `*`: a Java script that sets no `Accept` is no browser.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let (mut html, mut json) = (0.0_f32, 0.0_f32);
    for item in headers
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
        match media.as_str() {
            "*" => return false,
            "text/html" => html = html.max(q),
            "application/json" | "application/*" => json = json.max(q),
            _ => {}
        }
    }
    html > 0.0 && html > json
}

/// A page response: no caching, no referrer, no framing, no indexing, nothing loaded.
pub fn page(status: StatusCode, method: &Method, body: Markup) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::VARY, "Accept"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ))
        .insert_header(("x-robots-tag", "noindex"));
    if method == Method::HEAD {
        return res.finish();
    }
    res.body(body.into_string())
}

/// The token as the page may show it: never in full. Long tokens keep a few characters at
/// each end, so that their owner recognises them; short ones keep almost nothing.
pub fn masked(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    let keep = match chars.len() {
        n if n >= 20 => 6,
        n if n >= 10 => 2,
        _ => 0,
    };
    let tail = keep.min(4);
    let head: String = chars[..keep].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    format!("{head}…{end}")
}

const STYLE: &str = "
body{font:16px/1.5 system-ui,sans-serif;margin:0 auto;max-width:46rem;padding:1rem;color:#222}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
.state{border-radius:.4rem;padding:.8rem 1rem;margin:1rem 0}
.online{background:#e3f6e8;border:1px solid #7cc48f}
.offline{background:#fdecea;border:1px solid #e3928a}
.unsure{background:#fff4dc;border:1px solid #e0b95c}
.warn{background:#fff4dc;border-left:4px solid #e0b95c;padding:.4rem .8rem;margin:.5rem 0}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}
th{font-weight:600;background:#f5f5f5}
code{background:#f1f1f1;padding:0 .2rem;border-radius:.2rem;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}
dt{font-weight:600}
dd{margin:0}
input[type=text]{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}
button{font:inherit;padding:.4rem 1rem;margin-top:.5rem}
footer{margin-top:2rem;color:#666;font-size:.9rem}
@media (max-width:30rem){th,td{padding:.2rem}}
";

pub fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                (content)
                footer {
                    "hostie " (env!("CARGO_PKG_VERSION"))
                    " · a registry for Wechaty Puppet Services · "
                    a href="/" { "cluster status" }
                }
            }
        }
    }
}

/// What the token page knows: the discovery SDKs would get now, how long it took, and the
/// token's registrations.
pub struct TokenView<'a> {
    /// The raw (percent-encoded) path segment, as sent.
    pub segment: &'a str,
    /// The decoded token, if the segment decodes.
    pub token: Option<&'a str>,
    pub answer: &'a Result<Discovered, ApiError>,
    pub took: Duration,
    pub sessions: &'a TokenSessions,
    pub this_node: &'a str,
}

/// The token page: the same answer as the JSON twin (status code and `status`), explained.
pub fn token_page(view: &TokenView<'_>) -> (StatusCode, Markup) {
    let shown = view.token.map_or_else(|| masked(view.segment), masked);
    let status = match view.answer {
        Ok(_) => StatusCode::OK,
        Err(e) => actix_web::ResponseError::status_code(e),
    };
    let content = html! {
        h1 { "Token " code { (shown) } }
        @match view.answer {
            Ok(found) => {
                div.state.online #state data-status="online" {
                    strong { "Online." }
                    " SDKs asking for this token now get "
                    code { (found.answer.host) ":" (found.answer.port) }
                    " (in " (millis(view.took)) ")."
                }
                dl {
                    dt { "Host" } dd { code #host { (found.answer.host) } }
                    dt { "Port" } dd { code #port { (found.answer.port) } " — " (port_source(found.outcome)) }
                    dt { "Answered in" } dd #took { (millis(view.took)) }
                    @if let Some(reach) = found.answer.reachability {
                        dt { "Reachable" }
                        dd #reachability data-reach=(reach) { (reach_text(reach)) }
                    }
                }
                @if found.answer.reachability == Some("unreachable") {
                    p.warn {
                        "This registry could not open a TCP connection to the advertised address. "
                        "If the gateway is behind NAT or a firewall, SDKs cannot reach it either: "
                        "open the port, or have the gateway name a reachable host in its settings."
                    }
                }
            }
            Err(e) => {
                @let code = e.error_status();
                @let class = if status.is_server_error() { "unsure" } else { "offline" };
                div.state.(class) #state data-status=(code.code()) {
                    strong { (if status.is_server_error() { "Cannot tell right now." } else { "Offline." }) }
                    " " (sentence(code.hint())) "."
                    br;
                    "Status: " code #status { (code.code()) } " (HTTP " (status.as_u16()) ")."
                }
                (advice(code))
            }
        }
        (sessions_table(view.sessions, view.this_node))
        p {
            "Scripts and SDKs get the same answer as JSON: "
            code { "curl " (format!("/v0/hosties/{}", masked(view.segment))) }
            " (with the whole token)."
        }
    };
    (status, layout(&format!("hostie: token {shown}"), content))
}

/// A hint as a sentence: its first letter capitalised.
fn sentence(hint: &str) -> String {
    let mut chars = hint.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

fn reach_text(reach: &str) -> &'static str {
    match reach {
        "reachable" => "yes: the address accepted a TCP connection when last checked",
        "unreachable" => "no: the address did not accept a TCP connection when last checked",
        "denied" => "not checked: the address is in a range this registry never probes",
        _ => "not checked yet",
    }
}

fn port_source(outcome: DiscoveryOutcome) -> &'static str {
    match outcome {
        DiscoveryOutcome::Hit => "the gateway answered the port request",
        DiscoveryOutcome::Timeout => {
            "the gateway did not answer in time: the port it announced when it connected"
        }
        _ => "the gateway did not tell: the port it announced when it connected, or the default",
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn advice(status: ErrorStatus) -> Markup {
    use ErrorStatus::*;
    html! {
        h2 { "What to do" }
        ul #advice {
            @match status {
                TokenEncoding | TokenEncodedTwice | TokenWhitespace | TokenQuoted => {
                    li { "Check the token for the mistake named above, in the URL and in the SDK's and the gateway's settings." }
                }
                SessionsGone => {
                    li { "The gateway was connected but is no longer: look at its log, it should reconnect by itself." }
                    li { "If it runs behind a firewall or NAT, check that it can reach this registry over WebSocket." }
                }
                NoSession => {
                    li { "Start the puppet service (gateway) with this exact token." }
                    li { "Check that it registers with this registry: " code { "WECHATY_APIHOST" } " must name it." }
                    li { "Look at the gateway's log for a registration error (a refused or closed WebSocket)." }
                }
                _ => {
                    li { "Ask again in a second: the registry could not tell within its deadline." }
                }
            }
        }
    }
}

fn sessions_table(sessions: &TokenSessions, this_node: &str) -> Markup {
    html! {
        h2 { "Sessions" }
        @if sessions.error {
            p.warn { "The registry could not be read within the deadline: only this node's own sessions are listed." }
        }
        @if sessions.records.is_empty() {
            p #sessions data-count="0" { "No registration of this token." }
        } @else {
            p #sessions data-count=(sessions.records.len()) {
                (sessions.records.len()) " registration(s), on "
                (distinct_nodes(&sessions.records)) " node(s), newest first."
            }
            table {
                thead { tr { th { "Node" } th { "Since (UTC)" } th { "Advertised host" } th { "Protocol" } } }
                tbody {
                    @for r in &sessions.records {
                        tr.session {
                            td { code { (r.node.0) } @if r.node.0 == this_node { " (this node)" } }
                            td { (since(r.registered_at_us)) }
                            td {
                                code { (r.host) }
                                br;
                                small { (host_from(r.host_from)) }
                                @if r.rejected_host {
                                    div.warn.rejected-host {
                                        "The gateway offered a host that is neither an IP address nor a DNS name; its connection's address is advertised instead."
                                    }
                                }
                            }
                            td { "io " (r.version.as_deref().unwrap_or("(unknown)")) }
                        }
                    }
                }
            }
        }
    }
}

fn distinct_nodes(records: &[SessionRecord]) -> usize {
    let mut nodes: Vec<&str> = records.iter().map(|r| r.node.0.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.len()
}

fn host_from(from: Option<HostFrom>) -> &'static str {
    match from {
        Some(HostFrom::Gateway) => "named by the gateway",
        Some(HostFrom::Forwarded) => "the gateway's address, from a trusted proxy's header",
        Some(HostFrom::Peer) => "the gateway's connection address",
        None => "(not recorded)",
    }
}

fn since(at_us: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(at_us);
    let ago = SystemTime::now()
        .duration_since(at)
        .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
        .unwrap_or_default();
    format!("{} ({ago} ago)", humantime::format_rfc3339_seconds(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn html_only_when_named() {
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("text/html;q=0")));
        assert!(!wants_html(&accept("text/htmlx")));
        assert!(wants_html(&accept("text/html")));
        assert!(wants_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(wants_html(&accept(
            "application/json;q=0.5, TEXT/HTML ;q=0.9"
        )));
        // JSON preferred, or as much: JSON.
        assert!(!wants_html(&accept("application/json, text/html;q=0.5")));
        assert!(!wants_html(&accept("text/html, application/json")));
        // The JDK's HttpURLConnection default: a script, not a browser.
        assert!(!wants_html(&accept(
            "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"
        )));
    }

    #[test]
    fn a_token_is_never_shown_in_full() {
        assert_eq!(
            masked("insecure_11111111-2222-3333-4444-555555555555"),
            "insecu…5555"
        );
        assert_eq!(masked("puppet_abc"), "pu…bc");
        assert_eq!(masked("abc"), "…");
        assert_eq!(masked(""), "…");
        for t in ["a", "abcdefghij", "☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃☃"]
        {
            assert!(!masked(t).contains(t), "{t}");
        }
    }
}
