//! Entry-path validation: an accepted path can never name a place outside
//! its destination, and it prints back identically.
#![no_main]
use ferry_core::EntryPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(path) = EntryPath::parse(text) {
        assert_eq!(path.as_str(), text);
        assert!(!text.starts_with('/') && !text.contains('\\') && !text.contains('\0'));
        for segment in path.segments() {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
        }
    }
});
