//! The `ferry-init` binary: parse flags, validate, fetch, exit 0 only when
//! every item is in place (1 when any failed, 2 for a bad command line).
//! On failure it also writes why to the pod's termination message file
//! (`--termination-log`), so `kubectl describe pod` shows it.
//! `--prepare-cache-for UID:GID` is the node cache's root init step
//! instead (see `node_cache`).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use ferry_init::{Cli, Config};

mod node_cache;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let termination_log = cli.termination_log.clone();
    if let (Some(owner), Some(dir)) = (&cli.prepare_cache_for, &cli.cache_dir) {
        return match node_cache::prepare(dir, owner) {
            Ok(done) => {
                eprintln!("{done}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                let message = format!("ferry-init: {error}");
                eprintln!("{message}");
                write_termination_message(&termination_log, &message);
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_cli(cli) {
        Ok(config) => config,
        Err(error) => {
            let message = format!("ferry-init: {error}");
            eprintln!("{message}");
            write_termination_message(&termination_log, &message);
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &config.cache_dir
        && let Err(error) = node_cache::check_writable(dir)
    {
        let message = format!("ferry-init: {error}");
        eprintln!("{message}");
        write_termination_message(&termination_log, &message);
        return ExitCode::FAILURE;
    }
    ferry_init::init_tracing(config.log_format, config.quiet);
    let report = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(ferry_init::run(&config)),
        Err(error) => {
            let message = format!("ferry-init: cannot start the async runtime: {error}");
            eprintln!("{message}");
            write_termination_message(&termination_log, &message);
            return ExitCode::FAILURE;
        }
    };
    report.print(config.log_format, config.quiet);
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        write_termination_message(&termination_log, &report.termination_message());
        ExitCode::FAILURE
    }
}

/// Replaces the contents of `path` with `message` if the file exists: in a
/// pod the kubelet has made it; anywhere else (a shell, a test) there is
/// nothing to write to, and ferry-init must not create files in `/dev`.
fn write_termination_message(path: &Path, message: &str) {
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(message.as_bytes()));
    if let Err(error) = written
        && error.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!(
            "ferry-init: cannot write the termination message to {}: {error}",
            path.display()
        );
    }
}
