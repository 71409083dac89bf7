//! Reading a token file: an upload token, a bundle's read token, a mounted
//! Kubernetes Secret's key.
//!
//! The token comes back as a [`SecretString`], which prints as `[REDACTED]`
//! in `Debug` and is wiped from memory when dropped; nothing here ever puts
//! the token into an error message, only the file's path. Surrounding
//! whitespace (the newline `echo` and editors add) is trimmed; a file with
//! nothing else is an error, since sending an empty token would only earn
//! a 401 that names no file.

use std::path::{Path, PathBuf};

use secrecy::SecretString;

/// Why a token file gave no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} is empty")]
    Empty { path: PathBuf },
}

impl TokenError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Empty { path } => path,
        }
    }
}

/// The token in the file at `path`, trimmed.
pub fn read_token_file(path: &Path) -> Result<SecretString, TokenError> {
    let text =
        SecretString::from(
            std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: path.to_path_buf(),
                source,
            })?,
        );
    let token = secrecy::ExposeSecret::expose_secret(&text).trim();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(SecretString::from(token))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;

    use super::*;

    #[test]
    fn a_token_is_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cr3t-token\n").unwrap();
        let token = read_token_file(&path).unwrap();
        assert_eq!(token.expose_secret(), "s3cr3t-token");
        assert!(!format!("{token:?}").contains("s3cr3t"));
    }

    #[test]
    fn an_empty_or_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " \n\t").unwrap();
        let error = read_token_file(&path).unwrap_err();
        assert!(matches!(error, TokenError::Empty { .. }));
        assert_eq!(error.path(), path);
        assert!(error.to_string().contains(&path.display().to_string()));
        let missing = dir.path().join("absent");
        let error = read_token_file(&missing).unwrap_err();
        assert!(matches!(error, TokenError::Read { .. }));
        assert!(error.to_string().contains(&missing.display().to_string()));
    }
}
