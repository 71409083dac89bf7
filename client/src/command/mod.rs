//! One module per subcommand, and the flag types several of them share.

pub mod apply;
pub mod bundles;
pub mod packages;
pub mod pods;
pub mod stage;
pub mod submit;

/// What a subcommand prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A `--label K=V` flag.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not K=V"))?;
    if k.is_empty() {
        return Err(format!("label {text:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}
