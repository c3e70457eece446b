//! The page in a real browser: headless Chromium (Debian's `chromium`) driven by `playwright-core`
//! through `browser.mjs`, against the real binary serving `--tls-self-signed`. The test fails,
//! never skips, when chromium or node is missing (the README's test command installs both).

use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::support::process::ServerProcess;
use crate::support::{within, TEST_PATIENCE};
use crate::tools::npm_tool;

#[tokio::test]
async fn two_pages_and_a_terminal_chat_in_one_room() {
    within(TEST_PATIENCE, "the browser test", async {
        let chromium = Path::new("/usr/bin/chromium");
        assert!(
            chromium.is_file(),
            "/usr/bin/chromium is missing: apt-get install -y chromium (the README's test command does)"
        );
        let _ = npm_tool("playwright-core");
        let server = ServerProcess::start(&["--tls-self-signed"]).await;
        // The server writes its certificate into a directory of its own, which it leaves
        // behind (it is killed, not stopped, if the test fails): removed with this guard.
        let made = crate::support::TempDir(
            std::env::temp_dir().join(format!("h2chat-self-signed-{}", server.pid())),
        );
        let ca = made.0.join("cert.pem");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let artifacts = root.join("target/web-test");
        std::fs::create_dir_all(&artifacts).expect("artifact directory");
        let screenshot = artifacts.join("screenshot.png");
        let _ = std::fs::remove_file(&screenshot);
        // Chromium's profile, removed with this guard on every path out of the test.
        let profile = crate::support::TempDir::new("chromium-profile");
        let mut node = Command::new("node");
        node.arg(root.join("tests/web/browser.mjs"))
            .env("H2CHAT_URL", format!("https://{}", server.addr))
            .env("H2CHAT_ADDR", server.addr.to_string())
            .env("H2CHAT_BIN", env!("CARGO_BIN_EXE_h2chat"))
            .env("H2CHAT_CA", &ca)
            .env("H2CHAT_TOOLS", root.join("tests/tools"))
            .env("H2CHAT_SCREENSHOT", &screenshot)
            .env("H2CHAT_PROFILE", &profile.0)
            .kill_on_drop(true);
        let out = node.output().await.expect("node runs (apt-get install -y nodejs)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.contains("browser test passed"), "{stdout}");
        assert!(screenshot.is_file(), "no screenshot at {}", screenshot.display());
        server.terminate().await;
    })
    .await
}
