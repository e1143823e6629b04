//! The bus contract, run on both transports (in memory, and Redis pub/sub on a real
//! `redis-server`): the same cases, the same expectations. Two bus ends, `a` asking and `b`
//! owning, with a scripted owner in place of a node so that every way a request can end is
//! reached on purpose.

use crate::helpers::{eventually, init, prefix};
use async_trait::async_trait;
use hostie::bus::redis::SubscriberSettings;
use hostie::bus::{Bus, MemoryTransport, PortResponder, RedisTransport, Transport};
use hostie::memory_broker::MemoryBroker;
use hostie::metrics::Metrics;
use hostie::model::{NodeId, PortAnswer, PortError, PortSource, SessionId, SessionRecord};
use hostie::protocol::{PeerHint, TokenHash};
use hostie::redis_common::{Keys, RedisConns, RedisTopology};
use hostie::registry::{MemoryRegistry, RedisRegistry, Registry};
use hostie_testkit::redis_server::RedisServer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How the scripted owner answers for one of its sessions.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Port(u16),
    /// After a delay, longer than some askers wait.
    PortAfter(u16, Duration),
}

/// A bus end's owner side that answers from a script and records the notices it hears.
#[derive(Default)]
struct Owner {
    sessions: Mutex<HashMap<SessionId, Answer>>,
    registrations: Mutex<Vec<TokenHash>>,
    leaving: Mutex<Vec<NodeId>>,
}

impl Owner {
    fn holds(&self, answer: Answer) -> SessionId {
        let session = SessionId::new();
        self.sessions.lock().unwrap().insert(session, answer);
        session
    }
}

#[async_trait]
impl PortResponder for Owner {
    async fn ask_local(&self, session: SessionId, wait: Duration) -> Result<PortAnswer, PortError> {
        let answer = self.sessions.lock().unwrap().get(&session).copied();
        let port = match answer.ok_or(PortError::SessionGone)? {
            Answer::Port(port) => port,
            Answer::PortAfter(port, delay) => {
                assert!(wait > Duration::ZERO, "the owner is given a wait");
                tokio::time::sleep(delay).await;
                port
            }
        };
        Ok(PortAnswer {
            port,
            source: PortSource::Rpc,
            reach: None,
        })
    }

    fn foreign_registration(&self, token: &TokenHash) {
        self.registrations.lock().unwrap().push(*token);
    }

    fn peer_leaving(&self, node: &NodeId) {
        self.leaving.lock().unwrap().push(node.clone());
    }

    fn home(&self, _session: SessionId) -> Option<tokio::runtime::Handle> {
        None
    }
}

/// One bus end with its owner and metrics.
struct End {
    bus: Arc<Bus>,
    owner: Arc<Owner>,
    metrics: Arc<Metrics>,
}

fn end(node: &str, transport: impl FnOnce(&NodeId, Arc<Metrics>) -> Arc<dyn Transport>) -> End {
    let id = NodeId(node.into());
    let metrics = Arc::new(Metrics::new("test"));
    let bus = Bus::start(id.clone(), transport(&id, metrics.clone()), metrics.clone());
    let owner = Arc::new(Owner::default());
    let responder: Weak<dyn PortResponder> = Arc::downgrade(&owner) as _;
    bus.serve(responder);
    End {
        bus,
        owner,
        metrics,
    }
}

/// Two ends and the registry whose registrations they are told about.
struct Backend {
    a: End,
    b: End,
    registry: Arc<dyn Registry>,
    _redis: Option<RedisServer>,
}

fn memory() -> Backend {
    let broker = MemoryBroker::new();
    let transport = |node: &NodeId, _| -> Arc<dyn Transport> {
        Arc::new(MemoryTransport::new(broker.clone(), node.clone()))
    };
    Backend {
        a: end("a", transport),
        b: end("b", transport),
        registry: Arc::new(MemoryRegistry::new(broker.clone(), Duration::from_secs(10))),
        _redis: None,
    }
}

async fn redis() -> Backend {
    init();
    let redis = RedisServer::start();
    let keys = Keys::new(&prefix());
    let op_timeout = Duration::from_secs(1);
    let conns = || {
        let topology = RedisTopology::parse(&redis.url()).unwrap();
        Arc::new(RedisConns::new(topology, op_timeout).unwrap())
    };
    let transport = |node: &NodeId, metrics| -> Arc<dyn Transport> {
        let subscriber = SubscriberSettings {
            op_timeout,
            probe_every: Duration::from_millis(200),
        };
        Arc::new(RedisTransport::new(
            subscriber,
            conns(),
            keys.clone(),
            node.clone(),
            metrics,
        ))
    };
    let (a, b) = (end("a", transport), end("b", transport));
    let registry = Arc::new(RedisRegistry::new(
        conns(),
        keys.clone(),
        NodeId("b".into()),
        Duration::from_secs(10),
        Arc::new(Metrics::new("test")),
    ));
    // The heartbeat makes b a live node, whose records the registration script keeps.
    registry.heartbeat(&NodeId("b".into())).await.unwrap();
    let subscribed = eventually(Duration::from_secs(5), || async {
        a.bus.check().is_ok() && b.bus.check().is_ok()
    });
    assert!(subscribed.await, "both ends subscribed");
    Backend {
        a,
        b,
        registry,
        _redis: Some(redis),
    }
}

fn bus_requests(end: &End, result: &str) -> u64 {
    end.metrics.bus_requests.with_label_values(&[result]).get()
}

/// How long a notice or a reply may take to travel (asynchronously, on Redis).
const SOON: Duration = Duration::from_secs(2);

async fn contract(backend: Backend) {
    let Backend { a, b, registry, .. } = backend;
    let b_id = NodeId("b".into());
    let wait = Duration::from_secs(2);

    // Answered: the owner's port comes back, and is counted once.
    let s = b.owner.holds(Answer::Port(18789));
    let answer = a.bus.ask_port(&b_id, s, wait).await.expect("answered");
    assert_eq!(answer.port, 18789);
    assert_eq!(bus_requests(&a, "ok"), 1);
    assert!(eventually(SOON, || async { b.metrics.bus_replies.get() == 1 }).await);

    // Session gone: the owner does not hold it.
    let gone = a.bus.ask_port(&b_id, SessionId::new(), wait).await;
    assert!(matches!(gone, Err(PortError::SessionGone)), "{gone:?}");

    // Node gone: nobody listens on that node's channel; failed at once, not after the wait.
    let started = Instant::now();
    let nobody = a
        .bus
        .ask_port(&NodeId("nobody".into()), SessionId::new(), wait)
        .await;
    assert!(matches!(nobody, Err(PortError::NodeGone(_))), "{nobody:?}");
    assert!(started.elapsed() < wait / 2, "{:?}", started.elapsed());
    assert_eq!(a.metrics.bus_no_subscriber.get(), 1);

    // Timeout, then the late reply: dropped silently, its slot long gone.
    let slow = b
        .owner
        .holds(Answer::PortAfter(2, Duration::from_millis(300)));
    let short = Duration::from_millis(100);
    let started = Instant::now();
    let timed_out = a.bus.ask_port(&b_id, slow, short).await;
    assert!(
        matches!(timed_out, Err(PortError::Timeout)),
        "{timed_out:?}"
    );
    assert!(started.elapsed() < short * 3, "{:?}", started.elapsed());
    assert_eq!(
        a.bus.in_flight(),
        0,
        "the slot is removed when the wait ends"
    );
    assert!(
        eventually(SOON, || async { b.metrics.bus_replies.get() == 3 }).await,
        "the owner answered late"
    );
    assert_eq!(a.bus.in_flight(), 0);
    assert_eq!(bus_requests(&a, "timeout"), 1);

    // The local short-cut: a request to this node's own session never crosses the transport.
    let local = a.owner.holds(Answer::Port(4444));
    let before = a.metrics.bus_requests.with_label_values(&["ok"]).get();
    assert_eq!(
        a.bus
            .ask_port(&NodeId("a".into()), local, wait)
            .await
            .unwrap()
            .port,
        4444
    );
    assert_eq!(
        bus_requests(&a, "ok"),
        before,
        "not counted as a bus request"
    );

    // A registration notice reaches the nodes that track the token or hold a record of it,
    // never the registering one nor a bystander.
    let token = TokenHash([0x5a; 32]);
    let record = SessionRecord {
        session: SessionId::new(),
        node: b_id.clone(),
        token,
        registered_at_us: 1,
        host: "127.0.0.1".into(),
        port_hint: None,
        peer: PeerHint::Ask,
        source: None,
        host_from: None,
        rejected_host: false,
        version: None,
    };
    registry.register(&record, 10, &[]).await.expect("admitted");
    registry
        .track(&token, &NodeId("a".into()))
        .await
        .expect("tracked");
    let again = SessionRecord {
        session: SessionId::new(),
        ..record.clone()
    };
    registry.register(&again, 10, &[]).await.expect("admitted");
    assert!(
        eventually(SOON, || async {
            a.owner.registrations.lock().unwrap().contains(&token)
        })
        .await,
        "the tracking node is told"
    );
    // Then one of a's, of a token b holds: once b has heard it, b would have heard its own
    // notices too (one channel, in order) had they been sent to it.
    let record_of_a = SessionRecord {
        session: SessionId::new(),
        node: NodeId("a".into()),
        ..record
    };
    registry
        .register(&record_of_a, 10, &[])
        .await
        .expect("admitted");
    assert!(
        eventually(SOON, || async {
            !b.owner.registrations.lock().unwrap().is_empty()
        })
        .await,
        "the holding node is told"
    );
    assert_eq!(*b.owner.registrations.lock().unwrap(), [token]);
    // The first registration, before a tracked the token, told nobody.
    assert_eq!(*a.owner.registrations.lock().unwrap(), [token]);
    // A holder the registering node holds dead is told all the same (it may only have been
    // paused, and would otherwise answer the token alone from its hub), though its record goes.
    let held_dead = TokenHash([0x77; 32]);
    let of_b = SessionRecord {
        session: SessionId::new(),
        node: b_id.clone(),
        token: held_dead,
        ..record_of_a.clone()
    };
    registry.register(&of_b, 10, &[]).await.expect("admitted");
    let of_a = SessionRecord {
        session: SessionId::new(),
        node: NodeId("a".into()),
        ..of_b
    };
    registry
        .register(&of_a, 10, std::slice::from_ref(&b_id))
        .await
        .expect("admitted");
    assert!(
        eventually(SOON, || async {
            b.owner.registrations.lock().unwrap().contains(&held_dead)
        })
        .await,
        "the holder held dead is told"
    );
    // So is a reader held dead: it may only have been paused, and would serve its cache.
    let read_by_dead = TokenHash([0x78; 32]);
    registry
        .track(&read_by_dead, &NodeId("a".into()))
        .await
        .expect("tracked");
    let a_told = a.owner.registrations.lock().unwrap().len();
    let of_b = SessionRecord {
        session: SessionId::new(),
        node: b_id.clone(),
        token: read_by_dead,
        ..of_a
    };
    registry
        .register(&of_b, 10, &[NodeId("a".into())])
        .await
        .expect("admitted");
    assert!(
        eventually(SOON, || async {
            a.owner.registrations.lock().unwrap().len() > a_told
        })
        .await,
        "the reader held dead is told"
    );
    assert_eq!(
        a.owner.registrations.lock().unwrap().last(),
        Some(&read_by_dead)
    );

    // Leave fails the requests in flight to the leaving node at once, and tells the owner side.
    let stuck = b.owner.holds(Answer::PortAfter(3, Duration::from_secs(5)));
    let in_flight = {
        let bus = a.bus.clone();
        let b_id = b_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (
                bus.ask_port(&b_id, stuck, Duration::from_secs(4)).await,
                started.elapsed(),
            )
        })
    };
    assert!(eventually(SOON, || async { a.bus.in_flight() == 1 }).await);
    b.bus.leave().await.expect("the notice is published");
    let (left, took) = in_flight.await.unwrap();
    assert!(matches!(left, Err(PortError::NodeGone(_))), "{left:?}");
    assert!(
        took < Duration::from_secs(2),
        "failed at the notice, took {took:?}"
    );
    assert!(
        eventually(SOON, || async {
            a.owner.leaving.lock().unwrap().contains(&b_id)
        })
        .await
    );
    // Then a leaves: once b has heard that, b has heard its own Leave too, and ignored it.
    a.bus.leave().await.expect("the notice is published");
    assert!(
        eventually(SOON, || async {
            !b.owner.leaving.lock().unwrap().is_empty()
        })
        .await
    );
    assert_eq!(*b.owner.leaving.lock().unwrap(), [NodeId("a".into())]);
    assert_eq!(*a.owner.leaving.lock().unwrap(), [b_id]);
}

#[tokio::test]
async fn memory_bus_keeps_the_contract() {
    contract(memory()).await;
}

#[tokio::test]
async fn redis_bus_keeps_the_contract() {
    contract(redis().await).await;
}
