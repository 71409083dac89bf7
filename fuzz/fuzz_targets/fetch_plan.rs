//! Fetch plans as ferry-init reads them: never panics; an accepted plan has
//! only absolute destinations.
#![no_main]
use ferry_core::plan::FetchPlan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(plan) = FetchPlan::from_json(text) {
        for item in &plan.items {
            assert!(item.dest.starts_with('/'));
            assert!(item.groups.values().all(|d| d.starts_with('/')));
        }
    }
});
