//! Range headers: a partial answer always lies inside the blob.
#![no_main]
use ferry_core::range::{RangeRequest, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, &str)| {
    let (size, header) = input;
    if let RangeRequest::Partial(range) = parse_range(Some(header), size) {
        assert!(range.start <= range.end && range.end < size);
    }
});
