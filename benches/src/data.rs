//! Generated inputs (deterministic pseudo-random files, reused across runs
//! while `--keep-data` keeps them) and putting them on both servers: blobs
//! and a bundle on ferry-server, the same bytes under nginx's root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_core::Digest;
use serde_json::{Value, json};

use crate::servers::{Ferry, Nginx};

/// One generated file.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// A file of `size` pseudo-random bytes from `seed` at `path`; reused when a
/// previous run left it (its digest is kept beside it in `<path>.sha256`).
pub fn file(path: &Path, seed: u64, size: u64) -> anyhow::Result<Input> {
    let sidecar = path.with_extension("sha256");
    if let (Ok(meta), Ok(hex)) = (std::fs::metadata(path), std::fs::read_to_string(&sidecar))
        && meta.len() == size
        && let Ok(digest) = Digest::from_hex(hex.trim())
    {
        return Ok(Input {
            path: path.to_path_buf(),
            digest,
            size,
        });
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let digest = ferry_tests::write_pseudo_random_file(path, seed, size);
    std::fs::write(&sidecar, digest.hex())?;
    Ok(Input {
        path: path.to_path_buf(),
        digest,
        size,
    })
}

/// `count` files named `<prefix>-NNNNN.<ext>` in `dir`, sizes spread
/// pseudo-randomly over `min..=max` bytes; all contents differ.
pub fn files(
    dir: &Path,
    prefix: &str,
    ext: &str,
    count: usize,
    (min, max): (u64, u64),
    seed: u64,
) -> anyhow::Result<Vec<Input>> {
    std::fs::create_dir_all(dir)?;
    let sizes = ferry_tests::pseudo_random_bytes(seed ^ 0x5eed, count * 8);
    (0..count)
        .map(|i| {
            let raw = u64::from_le_bytes(sizes[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            let size = min + raw % (max - min + 1);
            file(
                &dir.join(format!("{prefix}-{i:05}.{ext}")),
                seed.wrapping_add(i as u64 * 7919),
                size,
            )
        })
        .collect()
}

fn client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?)
}

/// Uploads `inputs` to ferry-server with the upload token (skipping none:
/// the server answers 200 for a blob it has).
pub fn upload(ferry: &Ferry, inputs: &[&Input]) -> anyhow::Result<()> {
    let http = client()?;
    for input in inputs {
        let file = std::fs::File::open(&input.path)
            .with_context(|| format!("open {}", input.path.display()))?;
        let response = http
            .put(format!("{}/v1/blobs/{}", ferry.url, input.digest))
            .bearer_auth(&ferry.token)
            .header("content-length", input.size)
            .body(reqwest::blocking::Body::sized(file, input.size))
            .send()
            .with_context(|| format!("upload {}", input.path.display()))?;
        if !response.status().is_success() {
            bail!(
                "upload {}: {} {}",
                input.path.display(),
                response.status(),
                response.text().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// A staged bundle: its id and read token.
pub struct Bundle {
    pub id: String,
    pub token: String,
}

/// Creates a bundle of already uploaded `entries` (path in bundle, input).
pub fn bundle(ferry: &Ferry, entries: &[(String, &Input)]) -> anyhow::Result<Bundle> {
    let body = json!({
        "entries": entries.iter().map(|(path, input)| json!({
            "path": path, "digest": input.digest, "size": input.size,
        })).collect::<Vec<_>>(),
        "ttl_seconds": 86_400,
    });
    let response = client()?
        .post(format!("{}/v1/bundles", ferry.url))
        .bearer_auth(&ferry.token)
        .json(&body)
        .send()
        .context("create bundle")?;
    let status = response.status();
    let answer: Value = response.json().context("bundle answer is JSON")?;
    if status != 201 {
        bail!("create bundle: {status} {answer}");
    }
    let text = |key: &str| {
        answer[key]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("bundle answer lacks {key}: {answer}"))
    };
    Ok(Bundle {
        id: text("id")?,
        token: text("token")?,
    })
}

/// Makes `input` available from nginx at `/<name>` (a hard link: same disk,
/// same bytes, no extra space).
pub fn serve_from_nginx(nginx: &Nginx, input: &Input, name: &str) -> anyhow::Result<String> {
    let target = nginx.root.join(name);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    crate::remove(&target)?;
    std::fs::hard_link(&input.path, &target)
        .or_else(|_| std::fs::copy(&input.path, &target).map(|_| ()))
        .with_context(|| format!("place {} under nginx", input.path.display()))?;
    Ok(format!("{}/{name}", nginx.url))
}
