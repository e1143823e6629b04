//! The floor of the idle-sessions scenario: the cheapest WebSocket server we can write, holding
//! the same gateways and answering the same pings, so that the node's idle CPU can be read
//! against what merely waking up for each ping costs on this machine.
//!
//! One thread (tokio's current-thread runtime), tokio-tungstenite with small buffers; each
//! connection echoes the subprotocol (the gateways require it) and then only reads: tungstenite
//! answers every ping with a pong on the next read. No registry, no JSON, no timers.
//!
//! [`serve_actix`] is the same server on hostie's own stack (actix-web, actix-ws, the vendored
//! actix-http, the same worker count and TCP_NODELAY): the part of a node's idle CPU that the
//! stack costs before hostie does anything.

use futures_util::StreamExt;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

/// The subprotocol value to echo for an offered header, chosen by hostie's own rule.
fn echoed(offered: Option<&str>) -> Option<String> {
    offered
        .and_then(hostie::protocol::Subprotocol::from_header)
        .map(|s| s.raw)
}

/// Echoes the first offered subprotocol, as hostie does.
#[allow(clippy::result_large_err)] // the error type is tungstenite's callback signature
fn echo_subprotocol(req: &Request, mut res: Response) -> Result<Response, ErrorResponse> {
    let offered = req.headers().get("sec-websocket-protocol");
    let echo =
        echoed(offered.and_then(|v| v.to_str().ok())).and_then(|v| HeaderValue::from_str(&v).ok());
    if let Some(sub) = echo {
        res.headers_mut().insert("sec-websocket-protocol", sub);
    }
    Ok(res)
}

/// Accepts and serves connections until the task is dropped.
pub(crate) async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async_with_config(
                tcp,
                echo_subprotocol,
                Some(config()),
            )
            .await
            else {
                return;
            };
            while let Some(Ok(_)) = ws.next().await {}
        });
    }
}

/// Binds a loopback port for [`serve`].
pub(crate) async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the floor server");
    let addr = listener.local_addr().expect("a bound address");
    (listener, addr)
}

/// The pong-only server on hostie's stack, until the returned server is stopped.
pub(crate) fn serve_actix() -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

    async fn ws(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
        let (mut res, mut session, stream) = actix_ws::handle(&req, body)?;
        use actix_web::http::header::{self, HeaderValue};
        let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
        let echo = echoed(offered.and_then(|v| v.to_str().ok()))
            .and_then(|v| HeaderValue::from_str(&v).ok());
        if let Some(sub) = echo {
            res.headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, sub);
        }
        let mut stream = stream.aggregate_continuations();
        actix_web::rt::spawn(async move {
            while let Some(Ok(msg)) = stream.recv().await {
                if let actix_ws::AggregatedMessage::Ping(bytes) = msg
                    && session.pong(&bytes).await.is_err()
                {
                    break;
                }
            }
        });
        Ok(res)
    }

    let server = HttpServer::new(|| App::new().default_service(web::to(ws)))
        .tcp_nodelay(true)
        .backlog(4096)
        .disable_signals()
        .bind("127.0.0.1:0")?;
    let addr = server.addrs()[0];
    Ok((server.run(), addr))
}
