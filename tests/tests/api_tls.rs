//! `cairn serve --listen --tls-cert --tls-key`: HTTPS through rustls, end to end with the real
//! binary and a certificate made for the test (rcgen, self-signed for 127.0.0.1).
//!
//! What it proves: the API answers over HTTPS to a client that trusts the certificate (and
//! still asks for a token); a client that does not trust it is refused by the handshake; plain
//! HTTP to the same port gets no API answer; the dashboard's session cookie is marked `Secure`
//! (and `HttpOnly`) behind TLS; a certificate file that is missing or not PEM is named with a
//! non-zero exit instead of a server that never answers.

mod common_api;

use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::redirect::Policy;

use cairn_tests::Sandbox;
use common_api::{serve, token};

fn flows(sandbox: &Sandbox) -> String {
    std::fs::create_dir_all(sandbox.path("flows")).expect("create flows/");
    std::fs::create_dir_all(sandbox.path("tls")).expect("create tls/");
    sandbox.write(
        "flows/hello.yaml",
        "name: hello\nsteps:\n  - id: greet\n    run: echo hi\n",
    );
    sandbox.path("flows").display().to_string()
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("a self-signed certificate");
    (made.cert.pem(), made.key_pair.serialize_pem())
}

#[test]
fn https_serves_the_api_to_clients_that_trust_the_certificate() {
    let sandbox = Sandbox::new();
    let flows = flows(&sandbox);
    let (cert, key) = certificate();
    let cert_path = sandbox.write("tls/cert.pem", &cert);
    let key_path = sandbox.write("tls/key.pem", &key);
    let read = token(&sandbox, "read");
    let service = serve(
        &sandbox,
        &[
            &flows,
            "-q",
            "--tls-cert",
            &cert_path.display().to_string(),
            "--tls-key",
            &key_path.display().to_string(),
        ],
        &[],
    );
    assert!(
        service.base.starts_with("https://127.0.0.1:"),
        "{}",
        service.base
    );
    let trusting = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).expect("PEM"))
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    let answer = trusting
        .get(service.url("/api/v1/runs"))
        .bearer_auth(&read)
        .send()
        .expect("GET over HTTPS");
    assert_eq!(answer.status(), 200);
    let body: serde_json::Value = answer.json().expect("JSON");
    assert!(body["runs"].is_array(), "{body}");
    let anonymous = trusting
        .get(service.url("/api/v1/runs"))
        .send()
        .expect("GET over HTTPS");
    assert_eq!(anonymous.status(), 401, "TLS does not replace the token");

    // A client that does not trust the certificate fails the handshake.
    let stranger = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let refused = stranger
        .get(service.url("/api/v1/runs"))
        .bearer_auth(&read)
        .send();
    assert!(
        refused.is_err(),
        "an untrusted certificate was accepted: {refused:?}"
    );

    // Plain HTTP to the HTTPS port gets no API answer.
    let plain = service.base.replacen("https://", "http://", 1);
    let answered = stranger
        .get(format!("{plain}/api/v1/runs"))
        .bearer_auth(&read)
        .send()
        .is_ok_and(|r| r.status().is_success());
    assert!(!answered, "plain HTTP was served on the HTTPS port");

    // Signing in to the dashboard over HTTPS sets a Secure, HttpOnly session cookie.
    let login = trusting
        .post(service.url("/login"))
        .form(&[("token", read.as_str())])
        .send()
        .expect("POST /login");
    assert!(login.status().is_redirection(), "{}", login.status());
    let cookie = login
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "session cookie behind TLS: {cookie}"
    );
}

#[test]
fn a_missing_or_broken_certificate_is_named_at_start() {
    let sandbox = Sandbox::new();
    let flows = flows(&sandbox);
    let (_, key) = certificate();
    let key_path = sandbox.write("tls/key.pem", &key).display().to_string();
    let broken = sandbox
        .write("tls/broken.pem", "not a certificate\n")
        .display()
        .to_string();
    let missing = sandbox.path("tls/missing.pem").display().to_string();
    for cert in [&missing, &broken] {
        let out = sandbox.cairn_within(
            &[
                "serve",
                &flows,
                "-q",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                &key_path,
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains(cert.as_str()), "names the file: {out}");
    }
}
