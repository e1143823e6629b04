//! One registered WebSocket: one task, one `select!` loop.
//!
//! The loop's value is the close reason; cleanup (hub, registry, metrics, close frame) runs once,
//! after the loop, whatever ended it. [`rpc_table`] single-flights its `getHostieGrpcPort`
//! requests. A session sits above the node: it reports its end to the node, and the node reaches
//! it only through the hub's command queue.

pub mod rpc_table;

use crate::hub::SessionCmd;
use crate::metrics::Label;
use crate::model::{CloseReason, Limit, RpcOutcome, SessionRecord};
use crate::node::Node;
use crate::protocol::event::parse_client_frame;
use crate::protocol::jsonrpc::PortRequest;
use crate::protocol::{ClientEvent, PortResult, ServerEvent};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, ProtocolError};
use rpc_table::RpcTable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

/// How long one outbound frame may wait for the connection before the client counts as a slow
/// consumer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Timers and limits a session runs with.
#[derive(Debug, Clone, Copy)]
pub struct SessionSettings {
    /// No frame of any kind (ping included) for this long closes the session.
    pub idle_timeout: Duration,
    /// How long one `getHostieGrpcPort` request to the client stays joinable and awaited
    /// (set to the discovery deadline: no discovery waits longer for it).
    pub rpc_timeout: Duration,
    /// How long an answered port is answered again without asking ([`RpcTable`]).
    pub port_reuse: Duration,
    pub max_json_depth: usize,
}

pub struct Session {
    node: Arc<Node>,
    settings: SessionSettings,
    record: Arc<SessionRecord>,
    ws: actix_ws::Session,
    rpc: RpcTable,
}

impl Session {
    pub fn new(
        node: Arc<Node>,
        settings: SessionSettings,
        record: Arc<SessionRecord>,
        ws: actix_ws::Session,
    ) -> Self {
        Self {
            node,
            settings,
            record,
            ws,
            rpc: RpcTable::new(settings.rpc_timeout, settings.port_reuse),
        }
    }

    /// Spawns the session's task: [`Session::run`] inside a `session` span that carries the node
    /// id and the short token hash. The span is at debug level, and the task is wrapped in it
    /// only when it is enabled: a node holds ≈19k idle sessions, and a span per session (or
    /// `#[instrument]`, whose future keeps room for the wrapped and the bare body both: +265 B
    /// per session in the benchmark) would cost memory on each.
    pub fn spawn(self, frames: AggregatedMessageStream, cmds: mpsc::Receiver<SessionCmd>) {
        let span = tracing::debug_span!(
            "session",
            node = %self.node.id(),
            token = %self.record.token,
            session = %self.record.session,
        );
        if span.is_disabled() {
            actix_web::rt::spawn(self.run(frames, cmds));
        } else {
            actix_web::rt::spawn(self.run(frames, cmds).instrument(span));
        }
    }

    /// Runs the session until it ends, then cleans up exactly once.
    pub async fn run(
        mut self,
        mut frames: AggregatedMessageStream,
        mut cmds: mpsc::Receiver<SessionCmd>,
    ) {
        // Read from `self` where needed rather than copied: a copy would be kept in every idle
        // session's future.
        let idle = tokio::time::sleep(self.settings.idle_timeout);
        let sweep = tokio::time::sleep(self.settings.rpc_timeout);
        tokio::pin!(idle, sweep);

        let reason = loop {
            tokio::select! {
                frame = frames.recv() => {
                    // Moving a registered deadline later is one atomic store in tokio's timer
                    // wheel; the wheel re-files the entry when the old deadline comes, without
                    // waking this task. So a live session is woken by its frames only, never
                    // by its idle timer (≈19k sessions × one wake per timeout otherwise).
                    // A timeout too long to add to now never ends: the timer stays as it was.
                    if let Some(due) = tokio::time::Instant::now().checked_add(self.settings.idle_timeout) {
                        idle.as_mut().reset(due);
                    }
                    // Boxed, like every await below that holds a timer: the session future
                    // stays small, and ≈19k of them sit idle in one node.
                    if let Some(reason) = Box::pin(self.on_frame(frame)).await {
                        break reason;
                    }
                }
                cmd = cmds.recv() => match cmd {
                    Some(SessionCmd::AskPort(waiter)) => {
                        if let Some(id) = self.rpc.ask(waiter, Instant::now()) {
                            let text = ServerEvent::PortRequest(PortRequest::new(id)).to_text();
                            if let Some(reason) = Box::pin(self.send(text)).await {
                                break reason;
                            }
                        }
                        if let Some(at) = self.rpc.next_expiry() {
                            sweep.as_mut().reset(at.into());
                        }
                    }
                    Some(SessionCmd::Drain) | None => break CloseReason::Drain,
                },
                () = &mut idle => break CloseReason::Idle,
                () = &mut sweep, if self.rpc.next_expiry().is_some() => {
                    let expired = self.rpc.expire(Instant::now());
                    for _ in 0..expired {
                        self.node.metrics().rpc(RpcOutcome::TimedOut, self.settings.rpc_timeout.as_secs_f64());
                    }
                    if let Some(at) = self.rpc.next_expiry() {
                        sweep.as_mut().reset(at.into());
                    }
                }
            }
        };
        Box::pin(self.finish(reason)).await;
    }

    /// Handles one inbound item; `Some` ends the session.
    async fn on_frame(
        &mut self,
        frame: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Option<CloseReason> {
        let metrics = self.node.metrics();
        match frame {
            Some(Ok(AggregatedMessage::Text(text))) => {
                let depth = self.settings.max_json_depth;
                match parse_client_frame(&text, depth) {
                    Ok(ClientEvent::RpcReply(reply)) => {
                        metrics.frames.with_label_values(&["jsonrpc"]).inc();
                        self.on_rpc_reply(reply);
                    }
                    Ok(ClientEvent::Other(kind)) => {
                        metrics.frames.with_label_values(&[kind.as_str()]).inc();
                    }
                    Err(e) => {
                        if e == crate::protocol::FrameError::TooDeep {
                            metrics.limit(Limit::JsonDepth);
                        }
                        metrics
                            .frames_dropped
                            .with_label_values(&[e.as_str()])
                            .inc();
                        tracing::debug!(session = %self.record.session, error = %e, "inbound frame dropped");
                    }
                }
                None
            }
            Some(Ok(AggregatedMessage::Ping(bytes))) => self.pong(&bytes).await,
            Some(Ok(AggregatedMessage::Pong(_))) => None,
            Some(Ok(AggregatedMessage::Binary(_))) => {
                metrics.frames_dropped.with_label_values(&["binary"]).inc();
                None
            }
            Some(Ok(AggregatedMessage::Close(_))) => Some(CloseReason::ClientClose),
            Some(Err(ProtocolError::Overflow)) => {
                metrics.limit(Limit::FrameSize);
                Some(CloseReason::FrameTooLarge)
            }
            Some(Err(e)) => {
                tracing::debug!(session = %self.record.session, error = %e, "websocket protocol error");
                Some(CloseReason::ProtocolError)
            }
            None => Some(CloseReason::Disconnect),
        }
    }

    fn on_rpc_reply(&mut self, reply: crate::protocol::PortReply) {
        let metrics = self.node.metrics();
        let outcome = match reply.result {
            PortResult::Port(p) => RpcOutcome::Port(p),
            PortResult::NotAPort | PortResult::Error { .. } => RpcOutcome::Failed,
        };
        let settled = reply
            .id
            .as_i64()
            .and_then(|id| self.rpc.complete(id, outcome, Instant::now()));
        match settled {
            Some(took) => {
                metrics.rpc(outcome, took.as_secs_f64());
                if let PortResult::Error { code, message } = &reply.result {
                    tracing::debug!(session = %self.record.session, code, message, "getHostieGrpcPort error reply");
                }
            }
            None => metrics.unknown_rpc_replies.inc(),
        }
    }

    async fn pong(&mut self, bytes: &[u8]) -> Option<CloseReason> {
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.pong(bytes)).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(CloseReason::Disconnect),
            Err(_) => Some(CloseReason::SlowConsumer),
        }
    }

    async fn send(&mut self, text: String) -> Option<CloseReason> {
        match tokio::time::timeout(SEND_TIMEOUT, self.ws.text(text)).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(CloseReason::Disconnect),
            Err(_) => Some(CloseReason::SlowConsumer),
        }
    }

    async fn finish(self, reason: CloseReason) {
        let Session {
            node,
            record,
            ws,
            rpc,
            ..
        } = self;
        // Waiters of unanswered requests see their channel close: the session is gone.
        drop(rpc);
        if reason == CloseReason::Idle {
            node.metrics().limit(Limit::IdleTime);
        }
        node.metrics().close(reason);
        node.release(&record).await;
        let code = match reason {
            CloseReason::Disconnect => None,
            CloseReason::ClientClose | CloseReason::Idle => Some(CloseCode::Normal),
            CloseReason::FrameTooLarge => Some(CloseCode::Size),
            CloseReason::ProtocolError => Some(CloseCode::Protocol),
            CloseReason::Drain => Some(CloseCode::Away),
            CloseReason::SlowConsumer => Some(CloseCode::Policy),
        };
        if let Some(code) = code {
            let _ = tokio::time::timeout(SEND_TIMEOUT, ws.close(Some(code.into()))).await;
        }
        tracing::info!(
            session = %record.session,
            token = %record.token,
            reason = reason.label(),
            "session closed"
        );
    }
}
