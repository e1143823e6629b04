//! A simulated gateway that speaks exactly like the real wechaty `Io` client (the captured
//! handshake of protocol.md §2.1), with a configurable answer to `getHostieGrpcPort`.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// How a simulated gateway answers `getHostieGrpcPort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Like the real `Io` with a service port.
    Port(u16),
    /// Answers after a delay.
    PortAfter(u16, Duration),
    /// Echoes the id as a string.
    PortStringId(u16),
    /// `result: null` (what a real client answers to an unknown method).
    Null,
    /// A JSON-RPC error object.
    ErrorObject,
    /// Never answers (wechaty started with `ioToken`, or an old client).
    Silent,
    /// First a reply with an id the registry never sent, then the right one.
    UnknownIdThen(u16),
}

pub struct GatewayOptions {
    pub token: Option<String>,
    pub subprotocol: Option<String>,
    pub path: String,
    pub behavior: Behavior,
    pub ping_every: Option<Duration>,
    pub extra_headers: Vec<(String, String)>,
}

impl GatewayOptions {
    /// A current wechaty `Io` client with service port `port`.
    pub fn new(token: &str, port: u16) -> Self {
        Self {
            token: Some(token.to_owned()),
            subprotocol: Some(format!("io|0.0.1|fake-wechaty-id||{port}")),
            path: "/v0/websocket".into(),
            behavior: Behavior::Port(port),
            ping_every: None,
            extra_headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.extra_headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn subprotocol(mut self, s: &str) -> Self {
        self.subprotocol = Some(s.to_owned());
        self
    }

    pub fn behavior(mut self, b: Behavior) -> Self {
        self.behavior = b;
        self
    }

    pub fn path(mut self, p: &str) -> Self {
        self.path = p.to_owned();
        self
    }

    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn ping_every(mut self, d: Duration) -> Self {
        self.ping_every = Some(d);
        self
    }
}

/// A refused upgrade: status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

pub struct Gateway {
    /// `getHostieGrpcPort` requests received.
    pub requests: Arc<AtomicUsize>,
    /// The `name` of every text frame the registry sent.
    pub names: Arc<Mutex<Vec<String>>>,
    /// The subprotocol the registry echoed.
    pub echoed: Option<String>,
    /// `Some(code)` once the connection ended (`None` code: no close frame).
    closed: watch::Receiver<Option<Option<u16>>>,
    out: mpsc::UnboundedSender<Message>,
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    pub async fn connect(addr: SocketAddr, opts: GatewayOptions) -> Result<Gateway, Refused> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect to node");
        Self::connect_over(tcp, addr, opts).await
    }

    pub async fn connect_over<S>(
        stream: S,
        addr: SocketAddr,
        opts: GatewayOptions,
    ) -> Result<Gateway, Refused>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The captured upgrade request of wechaty@1.20.2, header for header.
        let mut req = tungstenite::http::Request::builder()
            .method("GET")
            .uri(format!("ws://{addr}{}", opts.path));
        if let Some(token) = &opts.token {
            req = req.header("Authorization", format!("Token {token}"));
        }
        req = req
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", generate_key())
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            );
        if let Some(sub) = &opts.subprotocol {
            req = req.header("Sec-WebSocket-Protocol", sub);
        }
        for (k, v) in &opts.extra_headers {
            req = req.header(k, v);
        }
        let req = req
            .header("Host", addr.to_string())
            .body(())
            .expect("a valid request");
        let (ws, response) = match tokio_tungstenite::client_async(req, stream).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(res)) => {
                let status = res.status().as_u16();
                let body =
                    String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned();
                return Err(Refused { status, body });
            }
            Err(e) => panic!("websocket handshake failed: {e}"),
        };
        let echoed = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (closed_tx, closed) = watch::channel(None);
        let requests = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));

        // Like the real client: a `sys` frame first on every connect.
        let _ = out.send(Message::text(
            json!({"name":"sys","payload":"Wechaty version 1.20.2 with CUID: test"}).to_string(),
        ));
        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let reply_out = out.clone();
        let (req_count, seen) = (requests.clone(), names.clone());
        let behavior = opts.behavior;
        let reader = tokio::spawn(async move {
            let mut code = None;
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Text(text) => {
                        let v: Value = serde_json::from_str(&text).expect("registry sends JSON");
                        let name = v["name"].as_str().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(name.clone());
                        if name == "jsonrpc" && v["payload"]["method"] == "getHostieGrpcPort" {
                            req_count.fetch_add(1, Ordering::SeqCst);
                            answer(&reply_out, behavior, v["payload"]["id"].clone());
                        }
                    }
                    Message::Binary(_) => panic!("the registry must never send binary frames"),
                    Message::Close(frame) => {
                        code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                        break;
                    }
                    _ => {}
                }
            }
            let _ = closed_tx.send(Some(code));
        });
        let mut tasks = vec![writer, reader];
        if let Some(every) = opts.ping_every {
            let ping_out = out.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if ping_out.send(Message::Ping(Vec::new().into())).is_err() {
                        break;
                    }
                }
            }));
        }
        Ok(Gateway {
            requests,
            names,
            echoed,
            closed,
            out,
            tasks,
        })
    }

    pub fn send_text(&self, text: impl Into<String>) {
        let _ = self.out.send(Message::text(text.into()));
    }

    pub fn send(&self, msg: Message) {
        let _ = self.out.send(msg);
    }

    /// Closes like `Io.stop()`: a close frame without a code.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }

    /// Closes with a normal close frame.
    pub fn close_normal(&self) {
        let _ = self.out.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })));
    }

    /// Waits until the registry ends the connection; `Some(code)` of its close frame.
    pub async fn closed_within(&self, within: Duration) -> Option<Option<u16>> {
        let mut rx = self.closed.clone();
        tokio::time::timeout(within, rx.wait_for(|c| c.is_some()))
            .await
            .ok()
            .and_then(|r| r.ok().map(|c| c.expect("waited for Some")))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn answer(out: &mpsc::UnboundedSender<Message>, behavior: Behavior, id: Value) {
    let reply =
        |payload: Value| Message::text(json!({"name":"jsonrpc","payload":payload}).to_string());
    match behavior {
        Behavior::Port(p) => {
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
        }
        Behavior::PortAfter(p, delay) => {
            let out = out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
            });
        }
        Behavior::PortStringId(p) => {
            let id = id.as_i64().expect("registry ids are integers").to_string();
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
        }
        Behavior::Null => {
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":null})));
        }
        Behavior::ErrorObject => {
            let _ = out.send(reply(json!({
                "error":{"code":-32601,"message":"Method not found"},"id":id,"jsonrpc":"2.0"
            })));
        }
        Behavior::Silent => {}
        Behavior::UnknownIdThen(p) => {
            let _ = out.send(reply(json!({"id":424242,"jsonrpc":"2.0","result":1})));
            let _ = out.send(reply(json!({"id":id,"jsonrpc":"2.0","result":p})));
        }
    }
}
