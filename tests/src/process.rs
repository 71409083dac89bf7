//! A child process that is killed (and reaped) when its handle drops.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A running child process with its output captured to a log file.
pub struct Child {
    pub name: String,
    inner: Option<std::process::Child>,
    pub log: PathBuf,
}

impl Child {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let inner = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        Self {
            name: name.to_owned(),
            inner: Some(inner),
            log,
        }
    }

    pub fn id(&self) -> u32 {
        self.inner.as_ref().map_or(0, std::process::Child::id)
    }

    /// The log so far, for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited, and with what status.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.inner
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` (e.g. `libc::SIGTERM` = 15) without waiting.
    pub fn signal(&self, signal: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.inner.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for exit, up to `timeout`; kills it after that.
    pub fn wait_timeout(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                self.inner = None;
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
        None
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}
