//! `missive`: the one binary.
//!
//! Today it carries the operators' offline log tools; the node, gateway and
//! cluster subcommands join it as those parts land.

mod log_cmd;
mod time_fmt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// missive: a chat backend built as an event-sourced, log-structured store.
#[derive(Debug, Parser)]
#[command(name = "missive", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Offline tools for a log directory (one partition's segments).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Log(cmd) => log_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
