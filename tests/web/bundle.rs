//! The page's committed bundle (`web/dist/`, compiled into the binary) is what its sources build
//! to: the test rebuilds it with `web/build.mjs` (buf generate + esbuild, deterministic) into a
//! directory of its own and compares every file.

use std::path::PathBuf;

use tokio::process::Command;

use crate::support::{within, TempDir, PATIENCE};

#[tokio::test]
async fn the_committed_bundle_is_what_the_sources_build() {
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/.bin/esbuild").is_file(),
        "web/node_modules is missing: run `npm ci --prefix web` (the README's test command does)"
    );
    let out = TempDir::new("web-dist");
    let mut build = Command::new("node");
    build
        .arg(web.join("build.mjs"))
        .arg(&out.0)
        .current_dir(&web)
        .kill_on_drop(true);
    let done = within(PATIENCE, "web/build.mjs", build.output())
        .await
        .expect("node runs");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    for file in ["index.html", "app.js", "app.css"] {
        let built = std::fs::read(out.0.join(file)).expect("built file");
        let committed = std::fs::read(web.join("dist").join(file)).expect("committed file");
        assert!(
            built == committed,
            "web/dist/{file} is stale: run `npm run build --prefix web` and commit web/dist"
        );
    }
}
