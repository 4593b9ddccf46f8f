//! `wss://`: the engine through a TLS-terminating proxy, as a production deployment has.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use roomstate::{ConnectOptions, RoomError};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::harness::{fast_options, Client, Heard, Recorder, TestServer, Token};

/// A private CA and a certificate it issued for localhost.
fn private_ca() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (ca.pem(), leaf.der().clone(), key)
}

/// Terminates TLS on a local port and forwards to the server.
async fn tls_front(
    target: std::net::SocketAddr,
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> u16 {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(inbound).await else {
                    return;
                };
                if let Ok(mut upstream) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_speaks_wss_and_checks_the_certificate() {
    let server = TestServer::start();
    let (ca_pem, certificate, key) = private_ca();
    let port = tls_front(server.addr, certificate, key).await;
    let url = format!("wss://localhost:{port}");

    // Not trusted: the public roots do not know this CA.
    let refused = roomstate::Room::connect(
        &url,
        &Token::new("r", "alice").sign(),
        Recorder::new(),
        fast_options(),
    )
    .await;
    match refused {
        Err(RoomError::Connect { message }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("expected a certificate error, got {:?}", other.map(|_| ())),
    }

    let options = ConnectOptions {
        trusted_certificates_pem: vec![ca_pem],
        ..fast_options()
    };
    let alice = roomstate::Room::connect(
        &url,
        &Token::new("r", "alice").sign(),
        Recorder::new(),
        options,
    )
    .await
    .unwrap();
    let bob = Client::join(&server.url(), &Token::new("r", "bob")).await;
    let seen = bob.observe(&["k"]);
    seen.wait_for(Heard::Key("k".into(), None)).await;
    alice
        .session_store()
        .set("k", json!("over tls"))
        .await
        .unwrap();
    seen.wait_for(Heard::Key("k".into(), Some(json!("over tls"))))
        .await;
}
