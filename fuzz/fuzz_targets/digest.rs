//! Digest parsing: never panics; whatever parses prints back identically.
#![no_main]
use ferry_core::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(digest) = text.parse::<Digest>() {
        assert_eq!(digest.to_string(), text);
    }
});
