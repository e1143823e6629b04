//! HTTPS discovery and WSS registration on the TLS listener, and its certificate rotated under
//! live sessions.

use crate::helpers::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub(crate) struct TestCert {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) cert_pem: String,
}

impl TestCert {
    /// A self-signed certificate for `IP:127.0.0.1` (what wechaty-token connects to in e2e).
    pub(crate) fn new() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("rcgen makes a certificate");
        let dir = tempfile::tempdir().unwrap();
        let cert_pem = cert.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        Self { dir, cert_pem }
    }

    pub(crate) fn cert_path(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub(crate) fn key_path(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }

    pub(crate) fn configure(&self, config: &mut hostie::config::Config) {
        config.tls_cert = Some(self.cert_path());
        config.tls_key = Some(self.key_path());
    }
}

pub(crate) async fn spawn_tls_node(cert: &TestCert) -> TestNode {
    let mut config = test_config();
    cert.configure(&mut config);
    spawn_node(config).await
}

#[tokio::test]
async fn wss_registration_and_https_discovery() {
    let cert = TestCert::new();
    let node = spawn_tls_node(&cert).await;
    let tls_addr = node.tls.expect("TLS listener bound");

    let mut roots = rustls::RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector
        .connect(server_name, tcp)
        .await
        .expect("TLS handshake");
    let t = token("tls");
    let gw = Gateway::connect_over(tls, tls_addr, GatewayOptions::new(&t, 18789))
        .await
        .expect("wss upgrade");
    assert_eq!(
        gw.echoed.as_deref(),
        Some("io|0.0.1|fake-wechaty-id||18789")
    );

    let res = https_discover(tls_addr, &cert.cert_pem, &t).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"host":"127.0.0.1","ip":"127.0.0.1","port":18789}"#
    );
    // Plain HTTP keeps working beside TLS.
    assert_eq!(node.discover(&t).await.1["port"], 18789);
}

/// A self-signed pair for `IP:127.0.0.1`.
struct Pair {
    cert_pem: String,
    key_pem: String,
}

impl Pair {
    fn new() -> Self {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        Self {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
        }
    }

    fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }
}

/// A directory laid out like a mounted Kubernetes Secret: `tls.crt` and `tls.key` are symlinks
/// into `..data`, itself a symlink to the current version's directory; an update writes a new
/// version and renames a new `..data` over the old one (both files change at once).
struct SecretDir {
    dir: tempfile::TempDir,
    versions: usize,
}

impl SecretDir {
    fn new(cert: &str, key: &str) -> Self {
        let mut secret = Self {
            dir: tempfile::tempdir().unwrap(),
            versions: 0,
        };
        secret.update(cert, key);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), secret.root().join(file)).unwrap();
        }
        secret
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn update(&mut self, cert: &str, key: &str) {
        self.versions += 1;
        let version = format!("..version_{}", self.versions);
        let dir = self.root().join(&version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        let tmp = self.root().join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(tmp, self.root().join("..data")).unwrap();
    }

    fn paths(&self) -> (PathBuf, PathBuf) {
        (self.root().join("tls.crt"), self.root().join("tls.key"))
    }
}

/// A node serving TLS from `secret`, reading its files every 50 ms.
async fn spawn_rotating_node(secret: &SecretDir) -> (TestNode, SocketAddr) {
    let mut config = test_config();
    let (cert, key) = secret.paths();
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    config.tls_reload_interval = Duration::from_millis(50);
    let node = spawn_node(config).await;
    let tls = node.tls.expect("TLS listener bound");
    (node, tls)
}

/// A new TLS connection (a full handshake: a new client config, so no session to resume)
/// trusting `trusted`.
async fn tls_connect(
    addr: SocketAddr,
    trusted: &[&Pair],
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for pair in trusted {
        roots.add(pair.der()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
}

/// The certificate a new handshake is presented with.
async fn presented(addr: SocketAddr, candidates: &[&Pair]) -> CertificateDer<'static> {
    let tls = tls_connect(addr, candidates).await.expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

/// `GET /v0/hosties/{token}` over HTTPS from a client that trusts only `cert_pem`.
async fn https_discover(tls_addr: SocketAddr, cert_pem: &str, token: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
        .get(format!("https://{tls_addr}/v0/hosties/{token}"))
        .send()
        .await
        .unwrap()
}

async fn reloads(node: &TestNode, result: &str) -> f64 {
    node.metric(&format!("hostie_tls_reloads_total{{result=\"{result}\"}}"))
        .await
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_and_live_sessions_stay() {
    let (old, new) = (Pair::new(), Pair::new());
    let mut secret = SecretDir::new(&old.cert_pem, &old.key_pem);
    let (node, tls_addr) = spawn_rotating_node(&secret).await;
    assert_eq!(presented(tls_addr, &[&old, &new]).await, old.der());

    // A gateway registered over WSS with the old certificate.
    let t = token("rotate");
    let stream = tls_connect(tls_addr, &[&old]).await.unwrap();
    let gw = Gateway::connect_over(stream, tls_addr, GatewayOptions::new(&t, 18790))
        .await
        .expect("wss upgrade");
    assert_eq!(node.discover(&t).await.1["port"], 18790);
    assert_eq!(gw.request_count(), 1);

    secret.update(&new.cert_pem, &new.key_pem);
    assert!(
        eventually(Duration::from_secs(5), || async {
            presented(tls_addr, &[&old, &new]).await == new.der()
        })
        .await,
        "new handshakes get the new certificate"
    );
    assert_eq!(reloads(&node, "ok").await, 1.0);
    assert_eq!(reloads(&node, "error").await, 0.0);
    // A client trusting only the new certificate discovers over HTTPS.
    let res = https_discover(tls_addr, &new.cert_pem, &t).await;
    assert_eq!(res.status(), 200);

    // The session set up with the old certificate is still open and still answers: the
    // discoveries above reached it over its TLS connection.
    assert!(!gw.is_closed(), "the live session was not closed");
    assert_eq!(node.discover(&t).await.1["port"], 18790);
    assert_eq!(gw.request_count(), 3);
    assert!(gw.closed_within(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_old_certificate_and_is_counted() {
    let (old, new) = (Pair::new(), Pair::new());
    let mut secret = SecretDir::new(&old.cert_pem, &old.key_pem);
    let (node, tls_addr) = spawn_rotating_node(&secret).await;

    // The new certificate with the old key: not a pair.
    secret.update(&new.cert_pem, &old.key_pem);
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(&node, "error").await == 1.0
        })
        .await,
        "the refused pair is counted"
    );
    assert_eq!(presented(tls_addr, &[&old, &new]).await, old.der());
    // Refused once per change, not once per poll.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reloads(&node, "error").await, 1.0);
    assert_eq!(reloads(&node, "ok").await, 0.0);

    // Then the key follows: taken on a later poll.
    secret.update(&new.cert_pem, &new.key_pem);
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(&node, "ok").await == 1.0
        })
        .await,
        "the completed pair is taken"
    );
    assert_eq!(presented(tls_addr, &[&old, &new]).await, new.der());
    assert_eq!(reloads(&node, "error").await, 1.0);
}
