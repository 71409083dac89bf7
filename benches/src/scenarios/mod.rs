//! The benchmark scenarios, one file per group. Each returns table rows
//! (or an error saying why it could not run, which the report lists).

use crate::Bench;
use crate::report::Row;

pub mod fetch;
pub mod load;
pub mod packages;
pub mod replicas;
pub mod server_io;
pub mod stage;
pub mod unpack;

/// One selectable scenario.
pub struct Scenario {
    /// Name for `--only`.
    pub id: &'static str,
    pub title: &'static str,
    pub run: fn(&Bench) -> anyhow::Result<Vec<Row>>,
}

/// Every scenario, in the order they run.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            id: "server-io",
            title: "1 GiB PUT and GET with curl: ferry-server vs nginx",
            run: server_io::run,
        },
        Scenario {
            id: "fetch-1g",
            title: "ferry-init fetches a staged 1 GiB file vs curl from nginx",
            run: fetch::large,
        },
        Scenario {
            id: "cache",
            title: "ferry-init: 1 GiB from the node cache vs over the network",
            run: fetch::cached,
        },
        Scenario {
            id: "fetch-jars",
            title: "ferry-init fetches 500 small jars vs aria2c -j16 from nginx",
            run: fetch::jars,
        },
        Scenario {
            id: "fanout",
            title: "200 concurrent clients each GET a 16 MiB blob",
            run: load::fanout,
        },
        Scenario {
            id: "wrk",
            title: "4 KiB blob GETs over 64 connections (wrk)",
            run: load::small_gets,
        },
        Scenario {
            id: "stage",
            title: "ferry stage of a new 1 GiB file vs curl -T to nginx WebDAV",
            run: stage::new_large,
        },
        Scenario {
            id: "restage",
            title: "ferry stage of the unchanged 1 GiB file vs openssl dgst -sha256",
            run: stage::unchanged_large,
        },
        Scenario {
            id: "stage-jars",
            title: "ferry stage of 500 small jars, new then unchanged, vs curl -T to nginx WebDAV",
            run: stage::jars,
        },
        Scenario {
            id: "stage-many",
            title: "ferry stage of many small files: time per file vs 100 files",
            run: stage::many_small,
        },
        Scenario {
            id: "packages",
            title: "ferry submit --packages with 20 packages: locked vs resolved with Spark's Ivy",
            run: packages::run,
        },
        Scenario {
            id: "replicas",
            title: "3 replicas on one bucket: CPU per GiB redirected vs proxied, redirect latency",
            run: replicas::run,
        },
        Scenario {
            id: "unpack",
            title: "ferry-init unpacks a ~300 MiB environment archive vs tar xzf",
            run: unpack::run,
        },
    ]
}

/// The 1 GiB input (generated once, reused by every large-file scenario).
pub fn large_input(bench: &Bench) -> anyhow::Result<crate::data::Input> {
    crate::data::file(&bench.inputs.join("large.bin"), 1, bench.config.large_size)
}

/// Uploads `inputs` to ferry-server unless it already stores them.
pub fn ensure_uploaded(bench: &Bench, inputs: &[&crate::data::Input]) -> anyhow::Result<()> {
    let missing: Vec<&crate::data::Input> = inputs
        .iter()
        .copied()
        .filter(|i| !bench.ferry.blob_file(&i.digest.hex()).is_file())
        .collect();
    crate::data::upload(&bench.ferry, &missing)
}

/// Size in MiB, for throughput figures.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / crate::measure::MIB
}
