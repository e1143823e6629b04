//! RFC 6455 §7.1.1: once the closing handshake is done, the server closes the TCP connection
//! first, at once. Spoken byte by byte over a raw socket, so that the test sees exactly when
//! the registry's FIN arrives.

use crate::helpers::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A masked client frame (RFC 6455 §5.2) with a payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Upgrades a raw connection; returns it positioned after the 101 response.
async fn upgrade(node: &TestNode, token: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(node.http).await.unwrap();
    let request = format!(
        "GET /v0/websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Token {token}\r\n\r\n",
        node.http
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// Reads until EOF; everything read, and how long the EOF took.
async fn read_to_eof(tcp: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

#[tokio::test]
async fn after_the_client_closes_the_registry_closes_tcp_at_once() {
    let node = spawn_node(test_config()).await;
    for payload in [&[0x03, 0xe8][..], &[][..]] {
        let mut tcp = upgrade(&node, &token("close")).await;
        tcp.write_all(&client_frame(0x8, payload)).await.unwrap();
        let (got, eof) = read_to_eof(&mut tcp, Duration::from_secs(3)).await;
        assert_eq!(
            got.first(),
            Some(&0x88),
            "the registry answers with a close frame: {got:?}"
        );
        let eof = eof.expect("the registry closed the connection");
        assert!(
            eof < Duration::from_millis(200),
            "the TCP connection closed {eof:?} after the close frame"
        );
    }
    assert!(
        eventually(Duration::from_secs(1), || async {
            node.node.live_sessions() == 0
        })
        .await
    );
}

#[tokio::test]
async fn after_the_registry_closes_the_connection_ends_at_once() {
    let mut config = test_config();
    config.idle_timeout = Duration::from_millis(300);
    let node = spawn_node(config).await;
    let mut tcp = upgrade(&node, &token("idle-close")).await;
    // Idle: the registry sends its close frame first, and does not hold the connection open
    // for a second afterwards, whether or not the client answers.
    let mut frame = [0u8; 4];
    tcp.read_exact(&mut frame).await.unwrap();
    assert_eq!(
        frame,
        [0x88, 0x02, 0x03, 0xe8],
        "1000 after the idle timeout"
    );
    let _ = tcp.write_all(&client_frame(0x8, &[0x03, 0xe8])).await;
    let (_, eof) = read_to_eof(&mut tcp, Duration::from_secs(3)).await;
    let eof = eof.expect("the registry closed the connection");
    assert!(
        eof < Duration::from_millis(200),
        "closed {eof:?} after its close frame"
    );
}
