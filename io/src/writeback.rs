//! Starting a large file's disk writes while it is still being written, so
//! that the fsync before publishing it finds little left to do instead of
//! writing the whole file at the end.
//!
//! After each finished step of written bytes, `posix_fadvise(DONTNEED)` on
//! that range starts its writeback without waiting for it (and lets the
//! kernel drop the pages once they are clean: a file published this way is
//! read again rarely, and not soon). This is one syscall per step on the
//! writing thread, with no thread of its own; it is advice, so an error
//! only leaves more for the final fsync.

use std::num::NonZeroU64;

/// Written bytes handed to the disk at a time.
pub const STEP: u64 = 8 << 20;

/// Where a file's written bytes stand against the disk.
#[derive(Debug, Clone)]
pub struct Writeback {
    /// Bytes up to here have had their writeback started.
    started: u64,
    written: u64,
    step: u64,
}

impl Writeback {
    /// For a file whose writes continue at `offset`, starting the disk
    /// writes of every [`STEP`] bytes.
    pub fn at(offset: u64) -> Self {
        Self::with_step(offset, STEP)
    }

    /// As [`Writeback::at`], every `step` bytes.
    pub fn with_step(offset: u64, step: u64) -> Self {
        Self {
            started: offset,
            written: offset,
            step: step.max(1),
        }
    }

    /// Counts `n` more bytes written to `file`; starts the disk writes of
    /// what is pending once a full step is.
    pub fn wrote(&mut self, file: &std::fs::File, n: u64) {
        self.written += n;
        let pending = self.written - self.started;
        if pending >= self.step {
            start(file, self.started, pending);
            self.started = self.written;
        }
    }

    /// Bytes whose writeback has been started (from the first offset).
    pub fn started(&self) -> u64 {
        self.started
    }
}

/// Starts the writeback of `len` bytes of `file` from `offset` (to its
/// end when `len` is 0) without waiting for it. Pages being written stay
/// cached; only clean ones are dropped.
pub fn start(file: &std::fs::File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_starts_once_per_step() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut writeback = Writeback::at(5);
        writeback.wrote(&file, STEP - 1);
        assert_eq!(writeback.started(), 5);
        writeback.wrote(&file, 1);
        assert_eq!(writeback.started(), STEP + 5);
        let mut small = Writeback::with_step(0, 10);
        small.wrote(&file, 25);
        assert_eq!(small.started(), 25, "a long write starts all of itself");
    }
}
