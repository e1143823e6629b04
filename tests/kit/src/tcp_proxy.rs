//! A TCP proxy on a free loopback port that a test steers at runtime, to put a network fault
//! between two real processes (a hostie node and its Redis): [`Mode::Pass`],
//! [`Mode::Blackhole`] (a partition as both ends see it: connections stay open, bytes vanish),
//! [`Mode::Delay`] and [`Mode::Reset`].
//!
//! A connection that lost bytes to a black hole stays dead (open, discarding both ways) after
//! the proxy is set back to [`Mode::Pass`]: forwarding again after a gap would hand each end a
//! corrupt stream, and a connection silently dead after a partition (its state lost in a
//! middlebox) is what real clients meet too. New connections after `Pass` work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the proxy does with connections and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward every byte both ways.
    Pass,
    /// Keep every connection open and drop its bytes both ways (a network partition); new
    /// connections are accepted and never forwarded.
    Blackhole,
    /// Forward each chunk this much later (in order).
    Delay(Duration),
    /// Reset every current connection (RST to both ends) and every new one at once.
    Reset,
}

/// A running proxy; it stops, closing every connection, when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target` ([`Mode::Pass`]). Must be
    /// called within a tokio runtime, which runs the proxy.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy binds a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (mode, _) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            target,
            mode.clone(),
            accepted.clone(),
            stop.clone(),
        ));
        Self {
            addr,
            target,
            mode,
            accepted,
            stop,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches every current and future connection to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far (forwarded or not).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            accept = listener.accept() => match accept {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let (mode, stop) = (mode.subscribe(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = connection(client, target, mode) => {}
            }
        });
    }
}

/// Resets a socket: closing it after this sends RST instead of FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// One accepted connection, until either end closes or the proxy resets it.
async fn connection(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let _ = client.set_nodelay(true);
    let at_accept = *mode.borrow_and_update();
    match at_accept {
        Mode::Reset => return reset(&client),
        Mode::Blackhole => {
            tokio::select! {
                () = discard(&mut client) => {}
                () = wait_reset(&mut mode) => reset(&client),
            }
            return;
        }
        Mode::Pass | Mode::Delay(_) => {}
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return reset(&client);
    };
    let _ = upstream.set_nodelay(true);
    // Once a black hole ate bytes of either direction, the connection never forwards again.
    let dead = AtomicBool::new(false);
    let (mut mode_up, mut mode_down) = (mode.clone(), mode.clone());
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let both = async {
            tokio::join!(
                pump(client_read, upstream_write, &mut mode_up, &dead),
                pump(upstream_read, client_write, &mut mode_down, &dead),
            )
        };
        tokio::select! {
            _ = both => false,
            () = wait_reset(&mut mode) => true,
        }
    };
    if was_reset {
        reset(&client);
        reset(&upstream);
    }
}

async fn wait_reset(mode: &mut watch::Receiver<Mode>) {
    if mode.wait_for(|m| *m == Mode::Reset).await.is_err() {
        // The proxy is gone; it cancels this task anyway.
        std::future::pending::<()>().await;
    }
}

/// Reads and drops everything until the peer closes (a black hole also swallows the close).
async fn discard(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    std::future::pending::<()>().await;
}

/// One direction: a reader queues each chunk with the instant it may go out, a writer sends
/// it then, unless the connection died meanwhile. A clean end of input is passed on.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mode: &mut watch::Receiver<Mode>,
    dead: &AtomicBool,
) {
    let (queue, mut queued) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(n) if n > 0 => n,
                // An end (FIN or RST) that a black hole swallows kills the connection.
                _ => {
                    if matches!(*mode.borrow(), Mode::Blackhole | Mode::Reset) {
                        dead.store(true, Ordering::SeqCst);
                    }
                    break;
                }
            };
            let at = match *mode.borrow_and_update() {
                Mode::Pass => Instant::now(),
                Mode::Delay(d) => Instant::now() + d,
                Mode::Blackhole | Mode::Reset => {
                    dead.store(true, Ordering::SeqCst);
                    continue;
                }
            };
            if !dead.load(Ordering::SeqCst) {
                // The writer outlives the reader: sending cannot fail.
                let _ = queue.send((at, buf[..n].to_vec()));
            }
        }
        // Dropping `queue` lets the writer pass the end on once the queue is drained.
    };
    let write = async move {
        while let Some((at, chunk)) = queued.recv().await {
            tokio::time::sleep_until(at).await;
            if dead.load(Ordering::SeqCst) {
                continue;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        if !dead.load(Ordering::SeqCst) {
            let _ = to.shutdown().await;
        }
    };
    tokio::join!(read, write);
    if dead.load(Ordering::SeqCst) {
        // A dead connection stays open until the proxy resets it or is dropped.
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    /// An echo server; counts its connections.
    async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, count)
    }

    /// Sends `msg` and reads the echo; `None` when nothing came back within `within`.
    async fn round_trip(s: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(within, s.read_exact(&mut got))
            .await
            .ok()?
            .ok()?;
        Some(got)
    }

    /// Whether the peer ended the connection (EOF or reset) within `within`.
    async fn ended_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(0)) => true,
            Ok(Err(e)) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
            Ok(Ok(_)) | Err(_) => false,
        }
    }

    const WAIT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn bytes_pass_both_ways_and_the_close_is_passed_on() {
        let (echo, _) = echo_server().await;
        let proxy = TcpProxy::start(echo).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let big = vec![7u8; 200_000];
        assert_eq!(
            round_trip(&mut s, &big, Duration::from_secs(5)).await,
            Some(big)
        );
        assert_eq!(
            round_trip(&mut s, b"hello", WAIT).await.as_deref(),
            Some(&b"hello"[..])
        );
        s.shutdown().await.unwrap();
        assert!(ended_within(&mut s, Duration::from_secs(2)).await);
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn a_black_hole_delivers_nothing_and_its_connections_stay_dead() {
        let (echo, upstreams) = echo_server().await;
        let proxy = TcpProxy::start(echo).await;
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut old, b"before", WAIT).await.is_some());

        proxy.set(Mode::Blackhole);
        assert_eq!(round_trip(&mut old, b"lost", WAIT).await, None);
        assert!(!ended_within(&mut old, WAIT).await, "kept open");
        // A new connection is accepted, never forwarded, never answered, never closed.
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut new, b"new", WAIT).await, None);
        assert!(!ended_within(&mut new, WAIT).await);
        assert_eq!(upstreams.load(Ordering::SeqCst), 1, "never forwarded");

        proxy.set(Mode::Pass);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut fresh, b"healed", WAIT).await.as_deref(),
            Some(&b"healed"[..])
        );
        assert_eq!(round_trip(&mut old, b"still", WAIT).await, None);
        assert_eq!(proxy.accepted(), 3);
    }

    #[tokio::test]
    async fn a_delay_holds_each_chunk_back_in_order() {
        let (echo, _) = echo_server().await;
        let proxy = TcpProxy::start(echo).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = Instant::now();
        assert!(round_trip(&mut s, b"quick", WAIT).await.is_some());
        let undelayed = started.elapsed();

        proxy.set(Mode::Delay(Duration::from_millis(150)));
        let started = Instant::now();
        s.write_all(b"one").await.unwrap();
        s.write_all(b"two").await.unwrap();
        let mut got = [0u8; 6];
        s.read_exact(&mut got).await.unwrap();
        let took = started.elapsed();
        assert_eq!(&got, b"onetwo");
        // Both ways delayed: at least 2 × 150 ms, and not each chunk after the other's delay.
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(300) + WAIT, "{took:?}");
        assert!(undelayed < Duration::from_millis(100), "{undelayed:?}");

        proxy.set(Mode::Pass);
        let started = Instant::now();
        assert!(round_trip(&mut s, b"again", WAIT).await.is_some());
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_reset_closes_every_connection_and_refuses_new_ones() {
        let (echo, _) = echo_server().await;
        let proxy = TcpProxy::start(echo).await;
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut a, b"a", WAIT).await.is_some());
        assert!(round_trip(&mut b, b"b", WAIT).await.is_some());

        proxy.set(Mode::Reset);
        assert!(ended_within(&mut a, Duration::from_secs(1)).await);
        assert!(ended_within(&mut b, Duration::from_secs(1)).await);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(ended_within(&mut refused, Duration::from_secs(1)).await);

        proxy.set(Mode::Pass);
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut c, b"c", WAIT).await.is_some());
    }

    #[tokio::test]
    async fn a_black_holed_connection_is_reset_too() {
        let (echo, _) = echo_server().await;
        let proxy = TcpProxy::start(echo).await;
        proxy.set(Mode::Blackhole);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"x", WAIT).await, None);
        proxy.set(Mode::Reset);
        assert!(ended_within(&mut s, Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_its_connections() {
        let (echo, _) = echo_server().await;
        let proxy = TcpProxy::start(echo).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut s, b"x", WAIT).await.is_some());
        drop(proxy);
        assert!(ended_within(&mut s, Duration::from_secs(1)).await);
    }
}
