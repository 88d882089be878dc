//! Loading certificates made at test time by `rcgen` (a CA and a server certificate for
//! 127.0.0.1/localhost; no key is committed), a real handshake through [`Acceptor`], and the
//! errors for missing, garbled and mismatched files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// A CA and a server certificate it signed, as PEM files in a temporary directory.
struct TestPki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

fn pki() -> TestPki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Saltpeter test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    TestPki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        other_key: write("other.pem", KeyPair::generate().unwrap().serialize_pem()),
        _dir: dir,
    }
}

fn client(ca: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config).into()
}

#[tokio::test]
async fn serves_tls_with_a_generated_certificate() {
    let pki = pki();
    let acceptor = acceptor(Some(&pki.cert), Some(&pki.key)).unwrap();
    assert!(acceptor.is_tls());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = Listener::new(tcp, acceptor);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.tcp.accept().await.unwrap();
        let mut stream = listener.acceptor.accept(tcp).await.unwrap();
        assert!(matches!(stream, Stream::Tls(_)));
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = client(&pki.ca).connect(name, tcp).await.unwrap();
    tls.write_all(b"hello").await.unwrap();
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello");
    server.await.unwrap();
}

#[tokio::test]
async fn a_plain_client_gets_no_answer_from_a_tls_listener() {
    let pki = pki();
    let acceptor = acceptor(Some(&pki.cert), Some(&pki.key)).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = tcp.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(server.await.unwrap().is_err(), "a plain request is not a TLS handshake");
}

#[test]
fn neither_file_is_plain() {
    assert!(!acceptor(None, None).unwrap().is_tls());
}

#[test]
fn errors_name_the_file() {
    let pki = pki();
    let missing = pki.cert.with_file_name("missing.pem");
    let e = acceptor(Some(&missing), Some(&pki.key)).unwrap_err().to_string();
    assert!(e.contains("missing.pem") && e.contains("certificate"), "{e}");
    let e = acceptor(Some(&pki.cert), Some(&missing)).unwrap_err().to_string();
    assert!(e.contains("missing.pem") && e.contains("key"), "{e}");

    // A key where the certificate should be, and the other way round.
    let e = acceptor(Some(&pki.key), Some(&pki.key)).unwrap_err().to_string();
    assert!(e.contains("key.pem") && e.contains("no usable PEM certificate"), "{e}");
    let e = acceptor(Some(&pki.cert), Some(&pki.cert)).unwrap_err().to_string();
    assert!(e.contains("cert.pem") && e.contains("no usable PEM private key"), "{e}");

    let e = acceptor(Some(&pki.cert), Some(&pki.other_key)).unwrap_err().to_string();
    assert!(e.contains("cert.pem") && e.contains("other.pem"), "{e}");

    let e = acceptor(Some(&pki.cert), None).unwrap_err().to_string();
    assert!(e.contains("tls_key is not"), "{e}");
    let e = acceptor(None, Some(&pki.key)).unwrap_err().to_string();
    assert!(e.contains("tls_cert is not"), "{e}");
}

#[test]
fn a_read_error_names_the_file_once() {
    let e =
        acceptor(Some(Path::new("/no/such/cert.pem")), Some(Path::new("/no/key.pem"))).unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(
        text,
        "cannot read the TLS certificate /no/such/cert.pem: No such file or directory (os error 2)"
    );
}

#[test]
fn agents_dial_wss_when_tls_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let when = "sec: '0'\n  min: '*'\n  hour: '*'\n  dom: '*'\n  mon: '*'\n  dow: '*'";
    let yaml = format!(
        "a:\n  {when}\n  command: x\n  targets: y\nb:\n  {when}\n  command: x\n  targets: y\n  saltpeter_server_host: sp.example\n"
    );
    std::fs::write(dir.path().join("jobs.yaml"), yaml).unwrap();
    let loaded = crate::config::load_dir(dir.path(), chrono::Utc::now()).unwrap();
    assert!(loaded.report.errors.is_empty(), "{:?}", loaded.report.errors);
    let jobs: Vec<_> = loaded.jobs.values().collect();
    let mut settings = crate::runs::EngineSettings {
        agent_port: 8889,
        default_server_host: "master".into(),
        ..Default::default()
    };
    assert_eq!(settings.agent_url(jobs[0]), "ws://master:8889/");
    settings.agent_tls = true;
    assert_eq!(settings.agent_url(jobs[0]), "wss://master:8889/");
    assert_eq!(settings.agent_url(jobs[1]), "wss://sp.example:8889/");
}
