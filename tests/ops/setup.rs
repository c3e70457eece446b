//! The README's test command sets its tools up with the distribution's own python3.
//!
//! `tests/run-all.sh` starts with `tests/setup-tools.sh`, which makes a virtual environment for
//! grpcurl and grpcio. Here that script runs as it would on a stock Debian 12 or Ubuntu 24.04: with
//! `/usr/bin/python3` (which refuses `pip install` outside a venv, PEP 668) rather than pyenv's,
//! into a new, empty directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::TempDir;

/// The distribution's python, never pyenv's shim.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// PATH without pyenv: what a user of the distribution's python has.
fn path_without_pyenv() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !dir.to_string_lossy().contains("pyenv"))
        .collect();
    std::env::join_paths(dirs)
        .expect("PATH joins")
        .to_string_lossy()
        .into_owned()
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn setup_tools_works_with_the_distributions_python3_in_a_clean_venv() {
    assert!(
        Path::new(SYSTEM_PYTHON).is_file(),
        "{SYSTEM_PYTHON} is missing: this test checks the distribution's python"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = TempDir::new("setup-venv");
    let venv = dir.0.join("venv");

    run(
        Command::new("bash")
            .arg(repo.join("tests/setup-tools.sh"))
            .arg(&venv)
            .env("PATH", path_without_pyenv())
            .env("H2CHAT_PYTHON", SYSTEM_PYTHON)
            .env_remove("PYENV_VERSION")
            .env_remove("VIRTUAL_ENV")
            .env_remove("PIP_REQUIRE_VIRTUALENV"),
        "tests/setup-tools.sh with /usr/bin/python3",
    );

    // The venv is the distribution's python's, and holds what the tests import.
    let python = venv.join("bin/python3");
    let facts = run(
        Command::new(&python).args([
            "-c",
            "import sys, grpc, grpc_tools; print(sys.base_prefix); print(grpc.__version__)",
        ]),
        "the venv's python3",
    );
    let mut lines = facts.lines();
    assert_eq!(
        lines.next(),
        Some("/usr"),
        "venv not made from {SYSTEM_PYTHON}: {facts}"
    );
    assert!(
        lines.next().is_some_and(|v| !v.is_empty()),
        "no grpc version: {facts}"
    );

    // grpcurl prints its version on stderr.
    let out = Command::new(venv.join("bin/grpcurl"))
        .arg("-version")
        .output()
        .expect("run the venv's grpcurl");
    let version =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("grpcurl v"),
        "grpcurl -version said {version:?}"
    );

    // Run again on the same directory: nothing to install, and no error.
    run(
        Command::new("bash")
            .arg(repo.join("tests/setup-tools.sh"))
            .arg(&venv)
            .env("PATH", path_without_pyenv())
            .env("H2CHAT_PYTHON", SYSTEM_PYTHON),
        "tests/setup-tools.sh a second time",
    );
}
