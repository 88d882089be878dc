//! TLS end to end: the sidecar with `tls_cert`/`tls_key` (a CA and a server certificate for
//! 127.0.0.1 made by `rcgen` at test time; no key is committed) serves the agent WebSocket and
//! the HTTP API over TLS only. Agents on the lab's minions dial `wss://` and trust the CA through
//! `SP_CA_FILE` (`tls_ca_file`), in both dispatch modes, and their results and output are
//! recorded; the API answers over https to a client trusting the CA and refuses plain http; a
//! missing or wrong file stops the daemon at start with an error naming it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use saltpeter_tests::{Lab, Sidecar};

const LIMIT: Duration = Duration::from_secs(120);

/// PEM files of a test CA and a server certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::Builder::new().prefix("sp-tls-").tempdir().expect("a temp dir").keep();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Saltpeter e2e CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key"))
        .expect("the CA");
    let key = KeyPair::generate().expect("a server key");
    let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("server params");
    let cert = params.signed_by(&key, &ca).expect("the server certificate");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs_err::write(&path, text).expect("write a PEM file");
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
    }
}

/// A job every 5 seconds.
fn job(name: &str, body: &str) -> String {
    saltpeter_tests::job_every(name, 5, body)
}

/// A ureq agent trusting only `ca`.
fn https_client(ca: &Path) -> ureq::Agent {
    let pem = fs_err::read(ca).expect("read the CA");
    let ca = ureq::tls::Certificate::from_pem(&pem).expect("the CA as PEM");
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent()
}

/// A TLS connection to `port` trusting only `ca`: the length of the server's certificate chain,
/// and the head of its answer to `request` (up to the blank line), if one is sent.
fn handshake(port: u16, ca: &Path, request: &[u8]) -> Result<(usize, String), String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots.add(cert.expect("a CA certificate")).expect("a usable CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("a server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let chain = conn.peer_certificates().map_or(0, <[_]>::len);
    let mut head = Vec::new();
    if !request.is_empty() {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(request).map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).map_err(|e| e.to_string())? == 1 {
            head.push(byte[0]);
        }
    }
    Ok((chain, String::from_utf8_lossy(&head).into_owned()))
}

const WS_UPGRADE: &str = "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn agents_connect_over_wss_and_the_api_answers_https_only() {
    let lab = Lab::shared();
    let pki = pki();
    let jobs = [
        job("tls_coalesced", "targets: minion-1\ncommand: 'echo \"over tls $SP_MACHINE_ID\"'"),
        job(
            "tls_single",
            "targets: minion-2\ndispatch: single\ncommand: 'echo \"single over tls $SP_MACHINE_ID\"; echo err >&2'",
        ),
    ]
    .concat();
    let extra = format!(
        "saltpeter_config:\n  tls_cert: {}\n  tls_key: {}\n  tls_ca_file: {}\n",
        pki.cert.display(),
        pki.key.display(),
        pki.ca.display()
    );
    let sidecar = Sidecar::start_with_config(lab, &jobs, &extra, &[]);
    assert!(sidecar.log().contains("tls=true"), "{}", sidecar.log());

    // The agents dialled wss:// (the only thing the agent port serves) and trusted the CA.
    for (name, minion, expected) in [
        ("tls_coalesced", "minion-1", "over tls minion-1\n"),
        ("tls_single", "minion-2", "single over tls minion-2\n"),
    ] {
        let run = sidecar.wait_for_run(name, LIMIT, |r| r.status != "skipped");
        assert_eq!(run.status, "succeeded", "{run:#?}\n{}", sidecar.log());
        assert_eq!(run.results.len(), 1, "{run:#?}");
        let result = &run.results[0];
        assert_eq!((result.minion.as_str(), result.retcode), (minion, Some(0)), "{run:#?}");
        assert!(result.output.contains(expected), "{run:#?}");
    }

    // The agent port: a TLS handshake with the CA succeeds; a plain HTTP request gets no HTTP.
    let (chain, _) = handshake(sidecar.port(), &pki.ca, b"").unwrap();
    assert_eq!(chain, 1);
    let mut plain = TcpStream::connect(("127.0.0.1", sidecar.port())).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    plain.write_all(format!("GET / HTTP/1.1\r\n{WS_UPGRADE}").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plain ws:// answered: {answer:?}");

    // The API over https, trusting the test CA; the run is there.
    let base = format!("https://127.0.0.1:{}", sidecar.api_port());
    let client = https_client(&pki.ca);
    let mut version = client.get(format!("{base}/api/v1/version")).call().unwrap();
    assert_eq!(version.status(), 200);
    assert!(version.body_mut().read_to_string().unwrap().contains("version"));
    let runs = client
        .get(format!("{base}/api/v1/runs?job=tls_single"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(runs.contains("succeeded"), "{runs}");

    // The UI's WebSocket upgrades over TLS too (wss:// from a page served over https).
    let request = format!("GET /ws HTTP/1.1\r\n{WS_UPGRADE}");
    let (_, head) = handshake(sidecar.api_port(), &pki.ca, request.as_bytes()).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // Plain http on the API port, and https without trusting the CA, are refused.
    let plain = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .new_agent()
        .get(format!("http://127.0.0.1:{}/api/v1/version", sidecar.api_port()))
        .call();
    assert!(plain.is_err(), "plain http answered: {plain:?}");
    let untrusted = ureq::get(format!("{base}/api/v1/version")).call();
    assert!(untrusted.is_err(), "an untrusted certificate was accepted: {untrusted:?}");

    // The command line reaches it over https with SALTPETER_CA_FILE, and not without.
    let cli = |ca: Option<&Path>| {
        let mut cmd = std::process::Command::new(saltpeter_tests::bin("saltpeter"));
        cmd.args(["run", "tls_single", "--now", "--api", &base]).env_remove("SALTPETER_CA_FILE");
        if let Some(ca) = ca {
            cmd.env("SALTPETER_CA_FILE", ca);
        }
        cmd.output().unwrap()
    };
    let refused = cli(None);
    assert!(!refused.status.success(), "{refused:?}");
    let ran = cli(Some(&pki.ca));
    assert!(ran.status.success(), "{ran:?}");
    let manual = sidecar.wait_for_run("tls_single", LIMIT, |r| r.trigger == "manual");
    assert_eq!(manual.status, "succeeded", "{manual:#?}");
}

#[test]
fn a_missing_or_wrong_certificate_stops_the_daemon_naming_the_file() {
    let lab = Lab::shared();
    let pki = pki();
    let missing = pki.cert.with_file_name("no-such-cert.pem");
    let limit = Duration::from_secs(60);

    // From the flags: a certificate file that does not exist.
    let (status, log) = Sidecar::start_expecting_exit(
        lab,
        "",
        &["--tls-cert", missing.to_str().unwrap(), "--tls-key", pki.key.to_str().unwrap()],
        limit,
    );
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(log.contains("cannot read the TLS certificate"), "{log}");
    assert!(log.contains(&missing.display().to_string()), "{log}");
    assert!(!log.contains("Saltpeter is running"), "{log}");

    // From the settings: a certificate where the key should be.
    let extra = format!(
        "saltpeter_config:\n  tls_cert: {}\n  tls_key: {}\n",
        pki.cert.display(),
        pki.cert.display()
    );
    let (status, log) = Sidecar::start_expecting_exit(lab, &extra, &[], limit);
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(
        log.contains(&format!(
            "the TLS key file {} holds no usable PEM private key",
            pki.cert.display()
        )),
        "{log}"
    );

    // Only one of the two.
    let extra = format!("saltpeter_config:\n  tls_cert: {}\n", pki.cert.display());
    let (status, log) = Sidecar::start_expecting_exit(lab, &extra, &[], limit);
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(log.contains("tls_key is not"), "{log}");
}

#[test]
fn a_ca_file_missing_on_the_minion_fails_the_run_with_the_agents_error() {
    let lab = Lab::shared();
    let pki = pki();
    let missing = pki.ca.with_file_name("not-on-the-minion.pem");
    let jobs = [
        job("tls_noca_coalesced", "targets: minion-3\ncommand: 'echo never'"),
        job("tls_noca_single", "targets: minion-3\ndispatch: single\ncommand: 'echo never'"),
    ]
    .concat();
    let extra = format!(
        "saltpeter_config:\n  tls_cert: {}\n  tls_key: {}\n  tls_ca_file: {}\n",
        pki.cert.display(),
        pki.key.display(),
        missing.display()
    );
    let sidecar = Sidecar::start_with_config(lab, &jobs, &extra, &[]);
    for name in ["tls_noca_coalesced", "tls_noca_single"] {
        let run = sidecar.wait_for_run(name, LIMIT, |r| r.status != "skipped");
        assert_eq!(run.status, "failed", "{run:#?}");
        let result = &run.results[0];
        // The agent refuses before detaching: a failed launch, its error as the reason.
        assert_eq!(result.retcode, Some(254), "{run:#?}");
        assert!(!result.output.contains("never"), "{run:#?}");
        let said = format!("{} {}", result.reason, result.output);
        assert!(
            said.contains("SP_CA_FILE") && said.contains("not-on-the-minion.pem"),
            "the agent's error is in the result: {run:#?}"
        );
    }
}
