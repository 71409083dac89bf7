//! spark-submit command lines as `ferry submit` reads them (NUL-separated
//! arguments): parsing never panics, an accepted command prints back to the
//! same arguments, and finding and rewriting its dependencies never panics
//! and yields a command that parses again.
#![no_main]
use std::collections::BTreeMap;

use ferry_client::spark::{self, SparkSubmit};
use ferry_client::submission::Dependency;
use ferry_core::uri::local_uri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let argv: Vec<String> = text.split('\0').map(str::to_owned).collect();
    let Ok(submit) = SparkSubmit::parse(&argv) else {
        return;
    };
    assert_eq!(submit.to_argv(), argv);
    let deps = spark::dependencies(&submit, &BTreeMap::new());
    for dep in &deps {
        let _ = dep.origin();
    }
    let replace = |dep: &Dependency| {
        let name = dep.location.rsplit('/').next().unwrap_or_default();
        Some(local_uri(&format!("/var/ferry/x/{name}")))
    };
    let rewritten = spark::rewrite(
        &submit,
        &BTreeMap::new(),
        &replace,
        &[("spark.kubernetes.namespace".to_owned(), "ns".to_owned())],
    );
    let again = SparkSubmit::parse(&rewritten.to_argv()).expect("a rewritten command parses");
    assert_eq!(again.conf("spark.kubernetes.namespace"), Some("ns"));
});
