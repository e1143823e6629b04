//! The TLS listener's configuration (rustls with the ring provider), and its certificate pair,
//! taken again from the files when they change.
//!
//! cert-manager renews a certificate before it expires and Kubernetes updates the Secret's
//! mounted files in place: a pair read only at start would be served until it expired. rustls
//! asks [`CertReloader`] for the pair at each handshake, so new handshakes get a new pair as soon
//! as [`CertReloader::run`] has read it; connections already established keep theirs.

use crate::model::TlsReload;
use anyhow::Context;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// A server configuration offering HTTP/1.1, whose handshakes take `pair`'s current pair.
pub fn server_config(pair: &Arc<CertReloader>) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(pair.provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS: no usable protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(pair.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate chain and private key of two PEM files (`--tls-cert`, `--tls-key`): the pair
/// they held when last read as a valid pair.
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    // A lock, not a lock-free swap: it is held for an Arc clone once per handshake and written
    // once per rotation, too little contention to be worth a dependency.
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last acted on (loaded, or refused and reported): one change, one report.
    seen: Mutex<Fingerprint>,
}

/// What two reads of the files must share to be the same: the contents, or the read errors.
type Fingerprint = [u8; 32];

/// One read of both files.
struct Read {
    cert: std::io::Result<Vec<u8>>,
    key: std::io::Result<Vec<u8>>,
}

impl Read {
    fn now(cert: &Path, key: &Path) -> Self {
        Self {
            cert: std::fs::read(cert),
            key: std::fs::read(key),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut hash = Sha256::new();
        for file in [&self.cert, &self.key] {
            let error;
            let (tag, bytes): (u8, &[u8]) = match file {
                Ok(bytes) => (0, bytes),
                Err(e) => {
                    error = e.to_string();
                    (1, error.as_bytes())
                }
            };
            // Tagged and length-prefixed: no two different reads hash the same bytes.
            hash.update([tag]);
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        hash.finalize().into()
    }
}

impl CertReloader {
    /// Reads the pair; an error names the flag whose file is at fault.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let read = Read::now(cert, key);
        let pair = parse(&read, cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(read.fingerprint()),
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files and, if they changed since last acted on, takes the new pair when it is
    /// one. Returns how a change was taken; `None` when there was none (or it was still being
    /// written). Blocking file reads.
    pub fn poll(&self) -> Option<TlsReload> {
        let read = Read::now(&self.cert, &self.key);
        let fingerprint = read.fingerprint();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == fingerprint {
            return None;
        }
        match parse(&read, &self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                let leaf = hex::encode(Sha256::digest(pair.cert[0].as_ref()));
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
                *seen = fingerprint;
                tracing::info!(cert_sha256 = %leaf, "TLS certificate reloaded; new handshakes use it");
                Some(TlsReload::Ok)
            }
            Err(e) => {
                // Caught mid-update (one file written, the other not yet, or the two read on
                // either side of Kubernetes' swap of the Secret's directory): the next poll
                // reads the finished pair. Only files that read the same twice are refused.
                if Read::now(&self.cert, &self.key).fingerprint() != fingerprint {
                    return None;
                }
                *seen = fingerprint;
                tracing::warn!(
                    error = %format_args!("{e:#}"),
                    "TLS certificate files changed but are not a valid pair; still serving the previous certificate"
                );
                Some(TlsReload::Error)
            }
        }
    }

    /// Polls the files every `every` (never returns; abort the task to stop), reporting how
    /// each change was taken.
    // Polling, not file notifications (inotify): Kubernetes updates a mounted Secret by
    // swapping a `..data` symlink to a new directory, which a watch on the files' paths does not
    // see and a watch on the directory sees as several events in an order of its own; reading
    // two small files every few seconds sees every kind of update (a rename, a rewrite in
    // place, the symlink swap, filesystems with coarse or no mtimes) and costs nothing.
    pub async fn run(self: Arc<Self>, every: Duration, report: impl Fn(TlsReload)) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and the files were just read.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let this = self.clone();
            // Off the runtime's threads: a hung filesystem stalls this loop, nothing else.
            if let Ok(Some(outcome)) = tokio::task::spawn_blocking(move || this.poll()).await {
                report(outcome);
            }
        }
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The pair in `read`: a certificate chain and the private key of its first certificate.
fn parse(
    read: &Read,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let cannot_read_cert = || {
        format!(
            "--tls-cert: cannot read certificates from {}",
            cert.display()
        )
    };
    let cannot_read_key = || {
        format!(
            "--tls-key: cannot read a private key from {}",
            key.display()
        )
    };
    let cert_pem = read
        .cert
        .as_ref()
        .map_err(clone_io)
        .with_context(cannot_read_cert)?;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(cannot_read_cert)?;
    anyhow::ensure!(
        !chain.is_empty(),
        "--tls-cert: no certificate in {}",
        cert.display()
    );
    let key_pem = read
        .key
        .as_ref()
        .map_err(clone_io)
        .with_context(cannot_read_key)?;
    let private = PrivateKeyDer::from_pem_slice(key_pem).with_context(cannot_read_key)?;
    CertifiedKey::from_der(chain, private, provider)
        .context("--tls-key: the key does not match the certificate")
}

fn clone_io(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair's PEM texts and certificate DER.
    struct Pair {
        cert: String,
        key: String,
        der: Vec<u8>,
    }

    fn pair() -> Pair {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        Pair {
            cert: made.cert.pem(),
            key: made.signing_key.serialize_pem(),
            der: made.cert.der().to_vec(),
        }
    }

    /// Writes `text` to `path` as Kubernetes and most tools do: a new file renamed over it.
    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn with(p: &Pair) -> Self {
            let files = Self {
                dir: tempfile::tempdir().unwrap(),
            };
            files.write(p);
            files
        }

        fn cert(&self) -> PathBuf {
            self.dir.path().join("cert.pem")
        }

        fn key(&self) -> PathBuf {
            self.dir.path().join("key.pem")
        }

        fn write(&self, p: &Pair) {
            replace(&self.cert(), &p.cert);
            replace(&self.key(), &p.key);
        }

        fn load(&self) -> CertReloader {
            CertReloader::load(&self.cert(), &self.key()).unwrap()
        }
    }

    fn served(r: &CertReloader) -> Vec<u8> {
        r.current().cert[0].to_vec()
    }

    #[test]
    fn a_new_pair_is_taken_once() {
        let (a, b) = (pair(), pair());
        let files = Files::with(&a);
        let r = files.load();
        assert_eq!(served(&r), a.der);
        assert_eq!(r.poll(), None, "unchanged files");
        files.write(&b);
        assert_eq!(r.poll(), Some(TlsReload::Ok));
        assert_eq!(served(&r), b.der);
        assert_eq!(r.poll(), None, "the change is taken once");
        // The same bytes written again are no change.
        files.write(&b);
        assert_eq!(r.poll(), None);
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_once_until_the_key_follows() {
        let (a, b) = (pair(), pair());
        let files = Files::with(&a);
        let r = files.load();
        replace(&files.cert(), &b.cert);
        assert_eq!(r.poll(), Some(TlsReload::Error), "b's cert with a's key");
        assert_eq!(served(&r), a.der, "the previous pair still serves");
        assert_eq!(r.poll(), None, "one report per change");
        replace(&files.key(), &b.key);
        assert_eq!(r.poll(), Some(TlsReload::Ok));
        assert_eq!(served(&r), b.der);
    }

    #[test]
    fn unreadable_or_unparsable_files_keep_the_previous_pair() {
        let a = pair();
        let files = Files::with(&a);
        let r = files.load();
        for (cert, key) in [
            ("not PEM", a.key.as_str()),
            ("", a.key.as_str()),
            (
                a.cert.as_str(),
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            (a.cert.as_str(), a.cert.as_str()),
        ] {
            replace(&files.cert(), cert);
            replace(&files.key(), key);
            assert_eq!(r.poll(), Some(TlsReload::Error), "{cert:?} / {key:?}");
            assert_eq!(r.poll(), None);
            assert_eq!(served(&r), a.der);
        }
        std::fs::remove_file(files.key()).unwrap();
        assert_eq!(r.poll(), Some(TlsReload::Error), "a missing key");
        assert_eq!(r.poll(), None);
        assert_eq!(served(&r), a.der);
        files.write(&a);
        assert_eq!(r.poll(), Some(TlsReload::Ok), "readable again");
    }

    /// A mounted Secret: `tls.crt -> ..data/tls.crt`, and an update points `..data` at a new
    /// directory (one rename of a symlink).
    #[cfg(unix)]
    #[test]
    fn a_kubernetes_secret_update_is_seen() {
        use std::os::unix::fs::symlink;
        let (a, b) = (pair(), pair());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let version = |name: &str, p: &Pair| {
            std::fs::create_dir(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("tls.crt"), &p.cert).unwrap();
            std::fs::write(root.join(name).join("tls.key"), &p.key).unwrap();
            symlink(name, root.join("..data_tmp")).unwrap();
            std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        };
        version("..2026_01_01", &a);
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        symlink("..data/tls.key", root.join("tls.key")).unwrap();
        let r = CertReloader::load(&root.join("tls.crt"), &root.join("tls.key")).unwrap();
        assert_eq!(served(&r), a.der);
        version("..2026_02_01", &b);
        assert_eq!(r.poll(), Some(TlsReload::Ok));
        assert_eq!(served(&r), b.der);
    }

    #[test]
    fn a_bad_pair_at_start_names_the_flag() {
        let (a, b) = (pair(), pair());
        let files = Files::with(&a);
        let load = || {
            CertReloader::load(&files.cert(), &files.key())
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(load(), Ok(()));
        replace(&files.key(), &b.key);
        let err = load().unwrap_err();
        assert!(
            err.starts_with("--tls-key: the key does not match the certificate"),
            "{err}"
        );
        replace(&files.cert(), "");
        let err = load().unwrap_err();
        assert!(err.starts_with("--tls-cert: no certificate in"), "{err}");
        replace(&files.key(), "nothing");
        std::fs::remove_file(files.cert()).unwrap();
        let err = load().unwrap_err();
        assert!(
            err.starts_with("--tls-cert: cannot read certificates from"),
            "{err}"
        );
        files.write(&a);
        replace(&files.key(), "nothing");
        let err = load().unwrap_err();
        assert!(
            err.starts_with("--tls-key: cannot read a private key from"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn run_reports_each_change() {
        let (a, b) = (pair(), pair());
        let files = Files::with(&a);
        let r = Arc::new(files.load());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(r.clone().run(Duration::from_millis(10), move |o| {
            let _ = tx.send(o);
        }));
        replace(&files.cert(), &b.cert);
        assert_eq!(rx.recv().await, Some(TlsReload::Error));
        replace(&files.key(), &b.key);
        assert_eq!(rx.recv().await, Some(TlsReload::Ok));
        assert_eq!(served(&r), b.der);
        task.abort();
    }
}
