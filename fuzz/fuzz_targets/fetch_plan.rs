//! Fetch plans as ferry-init reads them: never panics; an accepted plan has
//! only absolute destinations, and printing it (as `ferry submit` writes it
//! into pod templates) gives back the same plan.
#![no_main]
use ferry_core::plan::FetchPlan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(plan) = FetchPlan::from_json(text) {
        for item in &plan.items {
            assert!(item.dest.starts_with('/'));
            assert!(item.groups.values().all(|d| d.starts_with('/')));
        }
        assert_eq!(FetchPlan::from_json(&plan.to_json()).as_ref(), Ok(&plan));
    }
});
