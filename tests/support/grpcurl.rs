//! grpcurl, the independent command-line client: run it, fail the test when it fails or hangs.

use std::process::Output;

use tokio::process::Command;

use super::{require_tool, within, PATIENCE};

/// Runs `grpcurl <args>` from the crate root (so `-import-path proto` works) and returns its
/// output, whatever its exit status. Fails the test if it runs longer than [`PATIENCE`].
pub async fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(require_tool("grpcurl"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .kill_on_drop(true);
    let what = format!("grpcurl {args:?} to exit");
    within(PATIENCE, &what, cmd.output())
        .await
        .expect("run grpcurl")
}

/// Runs `grpcurl <args>`, fails the test unless it exits 0, and returns its stdout.
pub async fn ok(args: &[&str]) -> String {
    let out = run(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
