//! The allocator's per-thread cache, sized before a server starts.
//!
//! glibc's malloc keeps a small cache of freed chunks in each thread
//! (`tcache`): 7 per size class by default. A node's threads hand their
//! allocations to each other — the apply thread builds events that tokio's
//! workers free, a worker builds the frames a connection's writer frees — so
//! a thread's cache runs dry or overflows within a burst, and every chunk
//! past it goes through the shared arenas: their locks, their bins and, for
//! the larger requests, `malloc_consolidate`. With 256 chunks per class the
//! bursts stay in the threads' own caches (docs/benchmarks-ws.md, "The
//! allocator's thread cache").
//!
//! glibc reads that size only at start, from `GLIBC_TUNABLES`, so a server
//! command that finds it unset executes itself again, once, with it set —
//! before it has started a thread. An operator's own
//! `glibc.malloc.tcache_count` is kept as it is.

/// The tunable and the count a server runs with.
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count=256";

/// Executes this process again with [`TCACHE_COUNT`] added to
/// `GLIBC_TUNABLES`, unless a count is already set. Returns only if it did
/// not (set already, or the exec failed, which leaves glibc's default).
/// Call it before any thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn size_thread_cache() {
    use std::os::unix::process::CommandExt;

    const VAR: &str = "GLIBC_TUNABLES";
    let current = std::env::var_os(VAR).unwrap_or_default();
    let current = current.to_string_lossy();
    if current.contains("glibc.malloc.tcache_count") {
        return;
    }
    // A set-id process gets its tunables filtered by glibc: it would find
    // the count unset again after every exec.
    if rustix::process::getuid() != rustix::process::geteuid()
        || rustix::process::getgid() != rustix::process::getegid()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let tunables = if current.is_empty() {
        TCACHE_COUNT.to_owned()
    } else {
        format!("{current}:{TCACHE_COUNT}")
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    // `exec` returns only on failure: run on with the default cache then.
    let err = cmd.args(args).env(VAR, tunables).exec();
    eprintln!(
        "missive: could not size the allocator's thread cache ({err}); running with glibc's default"
    );
}

/// Other C libraries have no such tunable.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn size_thread_cache() {}
