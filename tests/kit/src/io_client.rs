//! The wire of the real wechaty `Io` client (protocol.md §2.1), the core of both simulated
//! gateways ([`crate::gateway`] for the tests, [`crate::fleet`] for the benchmark): the
//! captured upgrade request, the `IoEvent` framing `{"name":…,"payload":…}`, the JSON-RPC
//! answers to `getHostieGrpcPort`, and pings. Allocation-light: the fleet holds thousands of
//! connections in one process.

use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::{Response, generate_key};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, http};

/// The wechaty version every simulated gateway claims (its `sys` frame).
pub const WECHATY_VERSION: &str = "1.20.2";

/// The JSON-RPC method the registry asks every gateway.
pub const GET_PORT: &str = "getHostieGrpcPort";

/// What a gateway's upgrade request carries.
#[derive(Debug, Clone)]
pub struct Hello {
    /// `Authorization: Token …`; `None` sends no `Authorization` header.
    pub token: Option<String>,
    /// `Sec-WebSocket-Protocol`; `None` sends none.
    pub subprotocol: Option<String>,
    /// The request path.
    pub path: String,
    /// Headers added after the captured ones.
    pub extra_headers: Vec<(String, String)>,
    /// Whether to offer `permessage-deflate` as the captured client does (hostie declines it).
    /// The benchmark's fleet leaves it out, so that its upgrade requests stay what every
    /// earlier benchmark run measured.
    pub offer_deflate: bool,
}

impl Hello {
    /// A current wechaty `Io` client: token `token`, wechaty id `id`, service port `port`.
    pub fn new(token: &str, id: &str, port: u16) -> Self {
        Self {
            token: Some(token.to_owned()),
            subprotocol: Some(subprotocol(id, port)),
            path: "/v0/websocket".to_owned(),
            extra_headers: Vec::new(),
            offer_deflate: true,
        }
    }
}

/// The subprotocol the real client offers: `io|<version>|<wechaty id>|<ip>|<port>`.
pub fn subprotocol(id: &str, port: u16) -> String {
    format!("io|0.0.1|{id}||{port}")
}

/// The captured upgrade request of wechaty@1.20.2, header for header, to `addr`.
pub fn request(addr: SocketAddr, hello: &Hello) -> http::Request<()> {
    let mut req = http::Request::builder()
        .method("GET")
        .uri(format!("ws://{addr}{}", hello.path));
    if let Some(token) = &hello.token {
        req = req.header("Authorization", format!("Token {token}"));
    }
    req = req
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key())
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket");
    if hello.offer_deflate {
        req = req.header(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        );
    }
    if let Some(sub) = &hello.subprotocol {
        req = req.header("Sec-WebSocket-Protocol", sub);
    }
    for (k, v) in &hello.extra_headers {
        req = req.header(k, v);
    }
    req.header("Host", addr.to_string())
        .body(())
        .expect("a valid upgrade request")
}

/// A refused upgrade: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Why a handshake did not give a WebSocket.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server answered the upgrade with an HTTP error.
    Refused(Refused),
    /// Anything else (I/O, protocol).
    Failed(tungstenite::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(r) => write!(f, "refused with {}: {}", r.status, r.body),
            Self::Failed(e) => write!(f, "websocket handshake failed: {e}"),
        }
    }
}

/// Registers over `stream` (already connected to `addr`) like the real client; the
/// WebSocket and the server's upgrade response. `config`: tungstenite's buffers (`None`:
/// its defaults).
pub async fn handshake<S>(
    stream: S,
    addr: SocketAddr,
    hello: &Hello,
    config: Option<WebSocketConfig>,
) -> Result<(WebSocketStream<S>, Response), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = request(addr, hello);
    match tokio_tungstenite::client_async_with_config(req, stream, config).await {
        Ok(ok) => Ok(ok),
        Err(tungstenite::Error::Http(res)) => Err(HandshakeError::Refused(Refused {
            status: res.status().as_u16(),
            body: String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
        })),
        Err(e) => Err(HandshakeError::Failed(e)),
    }
}

/// The subprotocol the server echoed in `response`.
pub fn echoed(response: &Response) -> Option<String> {
    response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().expect("an ASCII subprotocol").to_owned())
}

/// The `sys` frame the real client sends first on every connect.
pub fn sys(cuid: &str) -> Message {
    Message::text(
        json!({"name":"sys","payload":format!("Wechaty version {WECHATY_VERSION} with CUID: {cuid}")})
            .to_string(),
    )
}

/// The real client's keep-alive.
pub fn ping() -> Message {
    Message::Ping(Vec::new().into())
}

/// One `IoEvent` the registry sent: `{"name":…,"payload":…}`.
#[derive(Debug)]
pub struct IoEvent(Value);

impl IoEvent {
    /// Parses a text frame.
    pub fn parse(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text).map(Self)
    }

    /// The event's `name` (`""` when it has none).
    pub fn name(&self) -> &str {
        self.0["name"].as_str().unwrap_or_default()
    }

    /// The JSON-RPC id when the event is a `getHostieGrpcPort` request.
    pub fn port_request(&self) -> Option<&Value> {
        let payload = &self.0["payload"];
        (self.0["name"] == "jsonrpc" && payload["method"] == GET_PORT).then(|| &payload["id"])
    }
}

/// A JSON-RPC message inside an `IoEvent`: `{"name":"jsonrpc","payload":payload}`.
pub fn jsonrpc(payload: Value) -> Message {
    Message::text(json!({"name":"jsonrpc","payload":payload}).to_string())
}

/// The answer of request `id`: `result` (a port, `null`, …).
pub fn result(id: &Value, result: Value) -> Message {
    jsonrpc(json!({"id":id,"jsonrpc":"2.0","result":result}))
}

/// The real client's answer to `getHostieGrpcPort` `id`: its service port.
pub fn port(id: &Value, port: u16) -> Message {
    result(id, port.into())
}

/// A JSON-RPC error answer to request `id`.
pub fn error(id: &Value, code: i64, message: &str) -> Message {
    jsonrpc(json!({"error":{"code":code,"message":message},"id":id,"jsonrpc":"2.0"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(msg: Message) -> String {
        msg.into_text().expect("a text frame").as_str().to_owned()
    }

    #[test]
    fn a_port_request_is_answered_with_the_real_clients_bytes() {
        let event = IoEvent::parse(
            r#"{"name":"jsonrpc","payload":{"id":7,"jsonrpc":"2.0","method":"getHostieGrpcPort"}}"#,
        )
        .unwrap();
        assert_eq!(event.name(), "jsonrpc");
        let id = event.port_request().expect("a port request");
        assert_eq!(
            text(port(id, 18789)),
            r#"{"name":"jsonrpc","payload":{"id":7,"jsonrpc":"2.0","result":18789}}"#
        );
        assert_eq!(
            text(error(id, -32601, "Method not found")),
            r#"{"name":"jsonrpc","payload":{"error":{"code":-32601,"message":"Method not found"},"id":7,"jsonrpc":"2.0"}}"#
        );
        assert_eq!(
            text(sys("bench")),
            r#"{"name":"sys","payload":"Wechaty version 1.20.2 with CUID: bench"}"#
        );
    }

    #[test]
    fn other_events_are_not_port_requests() {
        for frame in [
            r#"{"name":"jsonrpc","payload":{"id":1,"jsonrpc":"2.0","method":"other"}}"#,
            r#"{"name":"event","payload":{"method":"getHostieGrpcPort","id":1}}"#,
            r#"{"payload":{}}"#,
        ] {
            assert!(
                IoEvent::parse(frame).unwrap().port_request().is_none(),
                "{frame}"
            );
        }
        assert!(IoEvent::parse("not json").is_err());
    }

    #[test]
    fn the_upgrade_request_is_the_captured_one() {
        let addr: SocketAddr = "127.0.0.1:8788".parse().unwrap();
        let req = request(addr, &Hello::new("insecure_t", "id", 18789));
        assert_eq!(req.uri(), "ws://127.0.0.1:8788/v0/websocket");
        let h = req.headers();
        assert_eq!(h["authorization"], "Token insecure_t");
        assert_eq!(h["sec-websocket-protocol"], "io|0.0.1|id||18789");
        assert_eq!(
            h["sec-websocket-extensions"],
            "permessage-deflate; client_max_window_bits"
        );
        assert_eq!(h["host"], "127.0.0.1:8788");
    }
}
