//! Bundle manifests as the server receives them: never panics; an accepted
//! manifest re-serialises to one that parses to the same value.
#![no_main]
use ferry_core::api::CreateBundleRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<CreateBundleRequest>(bytes) {
        let again: CreateBundleRequest =
            serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(again, request);
    }
});
