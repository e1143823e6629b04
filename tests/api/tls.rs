//! HTTPS discovery and WSS registration on the TLS listener.

use crate::helpers::*;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

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

    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let res = https
        .get(format!("https://{tls_addr}/v0/hosties/{t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"host":"127.0.0.1","ip":"127.0.0.1","port":18789}"#
    );
    // Plain HTTP keeps working beside TLS.
    assert_eq!(node.discover(&t).await.1["port"], 18789);
}
