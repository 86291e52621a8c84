//! The parent's side of the child processes: each measurement of an engine
//! runs in a fresh process (this program re-executed with the hidden
//! `child` subcommand), so one engine's memory, threads and page cache
//! state in the process never leak into the other's figures, and a kill -9
//! is a real one.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Engine;

/// The longest a child may run before it is killed and its measurement
/// fails: far above a full run's few minutes, so it only catches a hang.
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);
/// How often a waiting parent looks at its child.
const POLL: Duration = Duration::from_millis(20);
/// The stderr kept from a child for an error message.
const STDERR_TAIL: usize = 2_000;

/// `child OP --engine E --dir D --seed S --events N [--progress]`.
fn command(op: &str, engine: Engine, dir: &Path, seed: u64, events: u64) -> Result<Command> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let mut command = Command::new(exe);
    command
        .arg("child")
        .arg(op)
        .arg("--engine")
        .arg(engine.name())
        .arg("--dir")
        .arg(dir)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--events")
        .arg(events.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(command)
}

/// Runs a child to its end and returns the JSON object on its last line.
pub(crate) fn run(op: &str, engine: Engine, dir: &Path, seed: u64, events: u64) -> Result<Value> {
    let mut child = command(op, engine, dir, seed, events)?
        .spawn()
        .context("starting a child")?;
    let stdout = drain(child.stdout.take().context("the child's stdout")?);
    let stderr = drain(child.stderr.take().context("the child's stderr")?);
    let status = wait_bounded(&mut child)?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "child {op} ({}) exited with {status}: {}",
            engine.name(),
            tail(&stderr)
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("child {op} printed {last:?}"))
}

/// Where a killed load stood.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Killed {
    /// The last index the child reported applied before the kill: every
    /// entry up to it had been committed (not necessarily durably).
    pub(crate) reported_index: u64,
}

/// Starts a load that reports its progress and kills it with SIGKILL once
/// it reports an applied index of at least `kill_at`.
pub(crate) fn load_and_kill(
    engine: Engine,
    dir: &Path,
    seed: u64,
    events: u64,
    kill_at: u64,
) -> Result<Killed> {
    let mut child = command("load", engine, dir, seed, events)?
        .arg("--progress")
        .spawn()
        .context("starting a child")?;
    let stderr = drain(child.stderr.take().context("the child's stderr")?);
    let stdout = BufReader::new(child.stdout.take().context("the child's stdout")?);
    let started = Instant::now();
    let mut reported_index = 0;
    for line in stdout.lines() {
        let line = line.context("reading the child's progress")?;
        if let Some(index) = line.strip_prefix("applied ") {
            reported_index = index.parse().context("a progress line")?;
        }
        if reported_index >= kill_at || started.elapsed() > CHILD_TIMEOUT {
            break;
        }
    }
    // `Child::kill` sends SIGKILL on Unix: no destructor, no flush runs.
    let killed = child.kill();
    let status = child.wait().context("waiting for the killed child")?;
    let stderr = stderr.join().unwrap_or_default();
    if reported_index < kill_at {
        bail!(
            "the load ({}) ended at index {reported_index} before the kill point {kill_at} \
             ({status}): {}",
            engine.name(),
            tail(&stderr)
        );
    }
    killed.context("killing the child")?;
    Ok(Killed { reported_index })
}

fn drain(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        // A child that prints invalid UTF-8 loses its output, not the run.
        let _ = from.read_to_string(&mut text);
        text
    })
}

fn wait_bounded(child: &mut Child) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("a child ran past {CHILD_TIMEOUT:?} and was killed");
        }
        thread::sleep(POLL);
    }
}

fn tail(text: &str) -> String {
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].trim().to_owned()
}
