//! The README's "running it for real" commands, with the real binary: a TLS server checking
//! tokens, `h2chat token`, and `h2chat chat --ca --token-file`.

use std::ffi::OsStr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::harness::{run_h2chat, within, Pki, ServerProcess};
use crate::reload::path;
use crate::tokens::SECRET;

/// `h2chat chat` scripted with `args`, `input` on stdin; returns (exit code, stdout, stderr).
pub async fn chat(args: &[&OsStr], input: &str) -> (Option<i32>, String, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_h2chat"))
        .arg("chat")
        .args(args)
        .env_remove("H2CHAT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run h2chat chat");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write");
    drop(stdin);
    let out = within("h2chat chat", child.wait_with_output())
        .await
        .expect("h2chat chat");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_minted_token_chats_over_tls_in_the_rooms_it_allows() {
    let pki = Pki::new("cli");
    // The README's way to make a secret.
    let secret = pki.dir.path("jwt.secret");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg("head -c 32 /dev/urandom | base64 > jwt.secret")
        .current_dir(&pki.dir.0)
        .status()
        .expect("sh");
    assert!(made.success() && secret.exists());
    let server = ServerProcess::start(&[
        "--tls-cert",
        path(&pki.files.cert),
        "--tls-key",
        path(&pki.files.key),
        "--auth-hs256-secret-file",
        path(&secret),
    ])
    .await;
    let (ok, token, err) = run_h2chat(&[
        OsStr::new("token"),
        OsStr::new("--secret-file"),
        secret.as_os_str(),
        OsStr::new("--sub"),
        OsStr::new("alice"),
        OsStr::new("--name"),
        OsStr::new("Alice"),
        OsStr::new("--rooms"),
        OsStr::new("team-*"),
        OsStr::new("--ttl"),
        OsStr::new("1h"),
    ]);
    assert!(ok, "h2chat token failed: {err}");
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    let token_file = pki.dir.write("alice.jwt", &token);
    let addr = server.addr.to_string();
    let common = |room: &'static str| {
        vec![
            OsStr::new("--addr").to_owned(),
            OsStr::new(&addr).to_owned(),
            OsStr::new("--room").to_owned(),
            OsStr::new(room).to_owned(),
            OsStr::new("--ca").to_owned(),
            pki.files.ca.as_os_str().to_owned(),
            OsStr::new("--token-file").to_owned(),
            token_file.as_os_str().to_owned(),
        ]
    };
    // No --name: the token's name is the member's.
    let args = common("team-red");
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, out, err) = chat(&args, "hello with a token\n").await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Alice: hello with a token"), "{out}");
    // grpcurl with the token in a header; without it, the chat service is closed.
    let header = format!("authorization: Bearer {}", token.trim());
    let members = [
        "-cacert",
        path(&pki.files.ca),
        "-d",
        r#"{"room_id":"team-red"}"#,
        &addr,
        "chat.v1.ChatService/Members",
    ];
    let with_token: Vec<&str> = ["-H", header.as_str()].into_iter().chain(members).collect();
    let out = crate::support::grpcurl::run(&with_token).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::support::grpcurl::run(&members).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing token"));
    // A room the token does not allow.
    let args = common("ops");
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, out, err) = chat(&args, "hi\n").await;
    assert_eq!(code, Some(6), "{out}{err}");
    assert!(err.contains("does not allow room"), "{err}");
    // No token at all.
    let (code, _, err) = chat(
        &[
            OsStr::new("--addr"),
            OsStr::new(&addr),
            OsStr::new("--room"),
            OsStr::new("team-red"),
            OsStr::new("--name"),
            OsStr::new("Alice"),
            OsStr::new("--ca"),
            pki.files.ca.as_os_str(),
        ],
        "hi\n",
    )
    .await;
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("missing token"), "{err}");
}

#[tokio::test]
async fn token_auth_without_tls_refuses_to_start_unless_allowed() {
    let pki = Pki::new("insecure");
    let secret = pki.dir.write("jwt.secret", SECRET);
    let (ok, _, err) = run_h2chat(&[
        OsStr::new("serve"),
        OsStr::new("--addr"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--auth-hs256-secret-file"),
        secret.as_os_str(),
    ]);
    assert!(!ok, "must not start");
    assert!(err.contains("--allow-insecure-auth"), "{err}");
    // TLS with a plaintext address beside it is just as insecure.
    let (ok, _, err) = run_h2chat(&[
        OsStr::new("serve"),
        OsStr::new("--addr"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--tls-cert"),
        pki.files.cert.as_os_str(),
        OsStr::new("--tls-key"),
        pki.files.key.as_os_str(),
        OsStr::new("--plaintext-addr"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--auth-hs256-secret-file"),
        secret.as_os_str(),
    ]);
    assert!(!ok && err.contains("--allow-insecure-auth"), "{err}");
    let _server = ServerProcess::start(&[
        "--auth-hs256-secret-file",
        path(&secret),
        "--allow-insecure-auth",
    ])
    .await;
    let short = pki.dir.write("short.secret", "too short");
    let (ok, _, err) = run_h2chat(&[
        OsStr::new("token"),
        OsStr::new("--secret-file"),
        short.as_os_str(),
        OsStr::new("--sub"),
        OsStr::new("a"),
    ]);
    assert!(!ok && err.contains("at least 32"), "{err}");
}

#[test]
fn a_server_with_a_key_that_is_not_its_certificates_refuses_to_start() {
    let pki = Pki::new("mismatch");
    let other = pki.ca.server();
    let key = pki.dir.write("other.key", &other.key_pem);
    let (ok, _, err) = run_h2chat(&[
        OsStr::new("serve"),
        OsStr::new("--addr"),
        OsStr::new("127.0.0.1:0"),
        OsStr::new("--tls-cert"),
        pki.files.cert.as_os_str(),
        OsStr::new("--tls-key"),
        key.as_os_str(),
    ]);
    assert!(!ok, "must not start");
    assert!(err.contains("certificate") && err.contains("key"), "{err}");
}

#[tokio::test]
async fn the_binary_requires_client_certificates_when_told() {
    let pki = Pki::new("cli-mtls");
    let server = ServerProcess::start(&[
        "--tls-cert",
        path(&pki.files.cert),
        "--tls-key",
        path(&pki.files.key),
        "--tls-client-ca",
        path(&pki.files.ca),
        "--tls-client-auth",
        "required",
    ])
    .await;
    let addr = server.addr.to_string();
    let carol = pki.ca.client("carol", None);
    let (cert, key) = crate::pki::write_client(&pki.dir, "carol", &carol);
    let list = |with_cert: bool| {
        let mut args = vec!["-cacert", path(&pki.files.ca)];
        if with_cert {
            args.extend(["-cert", path(&cert), "-key", path(&key)]);
        }
        args.extend([addr.as_str(), "list"]);
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let args = list(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::support::grpcurl::run(&args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let args = list(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::support::grpcurl::run(&args).await;
    assert!(!out.status.success(), "no certificate, no service");
    let (code, out, err) = chat(
        &[
            OsStr::new("--addr"),
            OsStr::new(&addr),
            OsStr::new("--room"),
            OsStr::new("rust"),
            OsStr::new("--name"),
            OsStr::new("carol"),
            OsStr::new("--ca"),
            pki.files.ca.as_os_str(),
            OsStr::new("--cert"),
            cert.as_os_str(),
            OsStr::new("--key"),
            key.as_os_str(),
        ],
        "hello with a certificate\n",
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("carol: hello with a certificate"), "{out}");
}
