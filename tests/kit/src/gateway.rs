//! One simulated gateway for the tests: the real wechaty `Io` client's handshake and framing
//! ([`crate::io_client`]), a configurable answer to `getHostieGrpcPort` ([`Behavior`]),
//! optional pings, frames sent by hand, closes with or without a code, and a record of what
//! the registry sent and how it ended the connection.

use crate::io_client::{self, HandshakeError, Hello, IoEvent};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub use crate::io_client::Refused;

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

/// What one simulated gateway sends and how it behaves.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub hello: Hello,
    pub behavior: Behavior,
    pub ping_every: Option<Duration>,
}

impl GatewayOptions {
    /// A current wechaty `Io` client with service port `port`.
    pub fn new(token: &str, port: u16) -> Self {
        Self {
            hello: Hello::new(token, "fake-wechaty-id", port),
            behavior: Behavior::Port(port),
            ping_every: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.hello
            .extra_headers
            .push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn subprotocol(mut self, s: &str) -> Self {
        self.hello.subprotocol = Some(s.to_owned());
        self
    }

    pub fn behavior(mut self, b: Behavior) -> Self {
        self.behavior = b;
        self
    }

    pub fn path(mut self, p: &str) -> Self {
        p.clone_into(&mut self.hello.path);
        self
    }

    pub fn no_token(mut self) -> Self {
        self.hello.token = None;
        self
    }

    pub fn ping_every(mut self, d: Duration) -> Self {
        self.ping_every = Some(d);
        self
    }
}

/// A connected simulated gateway; its tasks end when it is dropped.
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
    /// Connects over TCP to `addr` and registers; `Err` when the upgrade is refused.
    pub async fn connect(addr: SocketAddr, opts: GatewayOptions) -> Result<Gateway, Refused> {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect to node");
        Self::connect_over(tcp, addr, opts).await
    }

    /// Registers over an already connected `stream` (TLS, for one) to `addr`.
    pub async fn connect_over<S>(
        stream: S,
        addr: SocketAddr,
        opts: GatewayOptions,
    ) -> Result<Gateway, Refused>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (ws, response) = match io_client::handshake(stream, addr, &opts.hello, None).await {
            Ok(ok) => ok,
            Err(HandshakeError::Refused(refused)) => return Err(refused),
            Err(e) => panic!("{e}"),
        };
        let echoed = io_client::echoed(&response);
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (closed_tx, closed) = watch::channel(None);
        let requests = Arc::new(AtomicUsize::new(0));
        let names = Arc::new(Mutex::new(Vec::new()));

        // Like the real client: a `sys` frame first on every connect.
        let _ = out.send(io_client::sys("test"));
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
                        let event = IoEvent::parse(&text).expect("registry sends JSON");
                        seen.lock().unwrap().push(event.name().to_owned());
                        if let Some(id) = event.port_request() {
                            req_count.fetch_add(1, Ordering::SeqCst);
                            answer(&reply_out, behavior, id.clone());
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
                    if ping_out.send(io_client::ping()).is_err() {
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
    match behavior {
        Behavior::Port(p) => {
            let _ = out.send(io_client::port(&id, p));
        }
        Behavior::PortAfter(p, delay) => {
            let out = out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = out.send(io_client::port(&id, p));
            });
        }
        Behavior::PortStringId(p) => {
            let id = id.as_i64().expect("registry ids are integers").to_string();
            let _ = out.send(io_client::port(&id.into(), p));
        }
        Behavior::Null => {
            let _ = out.send(io_client::result(&id, Value::Null));
        }
        Behavior::ErrorObject => {
            let _ = out.send(io_client::error(&id, -32601, "Method not found"));
        }
        Behavior::Silent => {}
        Behavior::UnknownIdThen(p) => {
            let _ = out.send(io_client::result(&424_242.into(), 1.into()));
            let _ = out.send(io_client::port(&id, p));
        }
    }
}
