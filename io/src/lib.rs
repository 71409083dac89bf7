//! `ferry-io`: the I/O ideas ferry's binaries share, written once.
//!
//! `ferry-core` holds types and no I/O; this crate holds the I/O that the
//! client, ferry-init and the server each used to write for themselves:
//!
//! - [`retry`]: one [`RetryPolicy`] (exponential backoff with jitter) and
//!   one rule for which HTTP statuses are worth another attempt;
//! - [`durable`]: fsync, rename and fsync the directory, creating missing
//!   directories durably, so a file appears whole under its name or not at all;
//! - [`writeback`]: starting a large file's disk writes while it is written;
//! - [`sink`]: the hash-while-write pipeline (a writer and a hasher thread
//!   behind bounded queues) with checkpoints and restarts for resume;
//! - [`hash`]: hashing a file, a reader or a stream;
//! - [`identity`]: which file a path is (device, inode, size, times), to
//!   trust what was read from it earlier;
//! - [`http`]: the HTTP client (user agent, timeouts, redirects, an extra
//!   CA file, bundled roots where the system has none);
//! - [`token`]: reading a token file without ever printing the token;
//! - [`chain`]: an error and its causes as one line for a person.
//!
//! Errors are `thiserror` enums or `std::io::Error`; each binary maps them
//! onto its own error type.

pub mod chain;
pub mod durable;
pub mod hash;
pub mod http;
pub mod identity;
pub mod retry;
pub mod sink;
pub mod token;
pub mod writeback;

pub use chain::render_chain;
pub use hash::{hash_file, hash_reader};
pub use http::{HttpError, HttpOptions, http_client};
pub use identity::FileIdentity;
pub use retry::{Backoff, RetryPolicy, Transient, is_transient_status};
pub use sink::{Sink, SinkError};
pub use token::{TokenError, read_token_file};
