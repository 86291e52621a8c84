//! The workspace's release `missive` binary, which benchmarks run as real
//! processes (a node, a gateway) so that their CPU and memory are their own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Builds the workspace's `missive` binary (release) and returns its path,
/// from cargo's own report of the artifact, so a custom target directory is
/// found too.
pub fn build_missive() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the benches crate has a parent directory")?;
    eprintln!("building the missive binary (cargo build --release --bin missive)");
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "missive",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build --release --bin missive failed: {}", out.status);
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "missive"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo build did not report the missive executable")
}
