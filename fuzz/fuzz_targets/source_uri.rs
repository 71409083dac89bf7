//! Source URIs: never panics; an accepted URI prints to text that parses to
//! the same source, and its file name is a safe entry path.
#![no_main]
use ferry_core::SourceUri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(uri) = SourceUri::parse(text) {
        let again = SourceUri::parse(&uri.to_string()).expect("printed URI parses");
        assert_eq!(again.kind(), uri.kind());
        assert_eq!(again.pin(), uri.pin());
        let _ = uri.file_name();
    }
});
