//! Shared vocabulary of ferry's three binaries.
//!
//! Everything that crosses a process boundary (the HTTP API between `ferry`
//! and `ferry-server`, the fetch plan between `ferry submit` and `ferry-init`,
//! the URIs a user writes, the label selector naming the pods that own a
//! bundle) is parsed and printed here, once, so the binaries cannot drift
//! apart. Nothing in this crate does I/O.

pub mod api;
pub mod archive;
pub mod bundle;
pub mod digest;
pub mod midstate;
pub mod path;
pub mod plan;
pub mod range;
pub mod selector;
pub mod ttl;
pub mod uri;

pub use bundle::{BundleId, BundleName, BundleRef};
pub use digest::{Digest, DigestError, Sha256Hasher};
pub use midstate::Midstate;
pub use path::{EntryPath, PathError};
pub use selector::{Selector, SelectorError};
pub use ttl::Ttl;
pub use uri::{SourceUri, UriError};
