//! The catalogue's TLS: the certificate, key and client CA are read from files and read again
//! when they change (a renewed cert-manager Secret, mounted as a volume), so a renewal needs no
//! restart. Each new connection gets the newest configuration; open connections keep theirs.
//! Files caught half-written, or a key that does not fit its certificate, leave the last good
//! configuration in place and are tried again at the next look.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Where the TLS material lies.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// The files' contents, to notice a change.
type Contents = Vec<Vec<u8>>;

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }

    fn read(&self) -> anyhow::Result<Contents> {
        self.paths()
            .into_iter()
            .map(|p| {
                std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
            })
            .collect()
    }

    /// The server configuration the contents describe (HTTP/2 only, as gRPC needs).
    fn config(&self, contents: &Contents) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_slice_iter(&contents[0])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!("{}: no certificate in it", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_slice(&contents[1])
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.key.display()))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match (&self.client_ca, contents.get(2)) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(pem) {
                    roots
                        .add(ca.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            anyhow::anyhow!("{} with {}: {e}", self.cert.display(), self.key.display())
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The current TLS configuration, swapped when the files change.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    current: RwLock<(Contents, Arc<ServerConfig>)>,
}

impl Reloading {
    /// Reads the files; fails (naming the file) when they do not make a configuration, so a
    /// wrong path stops the operator at start rather than at the first client.
    pub fn new(files: TlsFiles) -> anyhow::Result<Self> {
        let contents = files.read()?;
        let config = files.config(&contents)?;
        Ok(Self {
            files,
            current: RwLock::new((contents, config)),
        })
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(current.1.clone())
    }

    /// Looks at the files once: true when a new configuration was taken up.
    pub fn reload(&self) -> bool {
        let contents = match self.files.read() {
            Ok(contents) => contents,
            Err(e) => {
                warn!("catalogue TLS: {e}; keeping the current certificate");
                return false;
            }
        };
        if self
            .current
            .read()
            .map(|c| c.0 == contents)
            .unwrap_or(false)
        {
            return false;
        }
        match self.files.config(&contents) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (contents, config);
                info!(cert = %self.files.cert.display(), "catalogue TLS: new certificate files taken up");
                true
            }
            Err(e) => {
                warn!("catalogue TLS: {e}; keeping the current certificate");
                false
            }
        }
    }

    /// Looks at the files every [`RELOAD_EVERY`] until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_EVERY) => { self.reload(); }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// The TLS connections on `listener`: each handshake runs on its own task (a slow client
/// holds up no one) with the configuration current when it connected.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Reloading>,
    shutdown: CancellationToken,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!("catalogue: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, "catalogue: TLS handshake failed: {e}"),
                    Err(_) => debug!(%peer, "catalogue: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh self-signed certificate and key for localhost, as PEM.
    fn pair() -> (String, String) {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn renewed_files_are_taken_up_and_broken_ones_keep_the_last_good_configuration() {
        let dir = tempfile::tempdir().expect("dir");
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: None,
        };
        let write = |(cert, key): &(String, String)| {
            std::fs::write(&files.cert, cert).expect("cert");
            std::fs::write(&files.key, key).expect("key");
        };
        let first = pair();
        write(&first);
        let tls = Reloading::new(files.clone()).expect("a valid pair");
        assert!(!tls.reload(), "unchanged files: nothing to take up");

        // A key that does not fit the certificate, then a half-written one: both refused.
        let other = pair();
        std::fs::write(&files.key, &other.1).expect("key");
        assert!(!tls.reload(), "a key of another certificate");
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nMIIE").expect("key");
        assert!(!tls.reload(), "half a key");
        assert_eq!(
            tls.current.read().expect("lock").0[1],
            first.1.as_bytes(),
            "the last good configuration stays"
        );

        write(&other);
        assert!(tls.reload(), "a renewed pair is taken up");
        assert_eq!(tls.current.read().expect("lock").0[0], other.0.as_bytes());
    }

    #[test]
    fn a_missing_file_is_named_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        let files = TlsFiles {
            cert: dir.path().join("fehlt.crt"),
            key: dir.path().join("fehlt.key"),
            client_ca: None,
        };
        let error = Reloading::new(files).expect_err("no files");
        assert!(error.to_string().contains("fehlt.crt"), "{error}");
    }
}
