//! Where the server URL, upload token and CA come from: flags, then
//! `FERRY_*` environment variables (clap fills both), then the config file
//! `$XDG_CONFIG_HOME/ferry/config.toml` (or `~/.config/ferry/config.toml`),
//! then defaults for a server on this machine.
//!
//! ```toml
//! server = "https://ferry.example.com:7070"
//! token_file = "/home/me/.config/ferry/upload-token"
//! ca_file = "/etc/ssl/my-ca.pem"
//! ```

use std::path::{Path, PathBuf};

use ferry_io::{HttpError, TokenError, read_token_file};
use secrecy::SecretString;
use serde::Deserialize;

use crate::api::ApiClient;

/// The server used when nothing names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub server: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("--kube-token: {0}")]
    Kube(String),
}

/// What the global flags said.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFlags {
    pub server: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub kube_token: bool,
    pub retries: u32,
}

/// The resolved connection: which server, with which credentials.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub token: Option<SecretString>,
    /// Extra CA certificates, read when the client is built.
    pub ca_file: Option<PathBuf>,
    pub retries: u32,
}

impl Connection {
    pub fn resolve(flags: &ConnectionFlags) -> Result<Self, ConfigError> {
        let file = load_file(flags.config.as_deref())?;
        let server = flags
            .server
            .clone()
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = match (&flags.token, &flags.token_file, &file.token_file) {
            _ if flags.kube_token => Some(kubeconfig_token()?),
            (Some(token), _, _) => Some(SecretString::from(token.trim())),
            (None, Some(path), _) | (None, None, Some(path)) => Some(read_token_file(path)?),
            (None, None, None) => local_server_token(&server),
        };
        Ok(Self {
            server,
            token,
            ca_file: flags.ca_file.clone().or(file.ca_file),
            retries: flags.retries,
        })
    }

    /// The API client; reads the CA file.
    pub fn client(&self) -> Result<ApiClient, ConfigError> {
        Ok(ApiClient::new(
            &self.server,
            self.token.clone(),
            self.ca_file.clone(),
            self.retries,
        )?)
    }
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferry").join("config.toml"))
}

fn load_file(explicit: Option<&Path>) -> Result<ConfigFile, ConfigError> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => match default_config_path() {
            Some(path) => (path, false),
            None => return Ok(ConfigFile::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(ConfigFile::default());
        }
        Err(e) => {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The bearer token of the current kubeconfig context's user, for a server
/// started with `--kubernetes-auth` (it checks the token with TokenReview).
fn kubeconfig_token() -> Result<SecretString, ConfigError> {
    use secrecy::ExposeSecret as _;
    let config = kube::config::Kubeconfig::read()
        .map_err(|e| ConfigError::Kube(format!("cannot read the kubeconfig: {e}")))?;
    let context_name = config
        .current_context
        .as_deref()
        .ok_or_else(|| ConfigError::Kube("the kubeconfig has no current context".into()))?;
    let user = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.user.clone().unwrap_or_default())
        .ok_or_else(|| {
            ConfigError::Kube(format!("context {context_name} is not in the kubeconfig"))
        })?;
    let auth = config
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
        .ok_or_else(|| {
            ConfigError::Kube(format!(
                "user {user:?} of context {context_name} is not in the kubeconfig"
            ))
        })?;
    if let Some(token) = &auth.token {
        return Ok(SecretString::from(token.expose_secret().trim()));
    }
    if let Some(path) = &auth.token_file {
        return Ok(read_token_file(Path::new(path))?);
    }
    Err(ConfigError::Kube(format!(
        "user {user:?} of context {context_name} has no bearer token (token or tokenFile); \
         exec and client-certificate users cannot hand a token to ferry-server"
    )))
}

/// For a server on this machine started in the current folder with its
/// defaults, its generated token: `ferry-server` then `ferry stage` just work.
fn local_server_token(server: &str) -> Option<SecretString> {
    let local = server.starts_with("http://127.0.0.1:") || server.starts_with("http://localhost:");
    // Absent or empty: no token, as if there were no local server.
    local
        .then(|| read_token_file(Path::new("ferry-data/upload-token")).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let token = dir.path().join("token");
        std::fs::write(&token, "from-file\n").unwrap();
        std::fs::write(
            &config,
            format!(
                "server = \"http://filehost:1\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
        )
        .unwrap();
        let from_file = Connection::resolve(&ConnectionFlags {
            config: Some(config.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(from_file.server, "http://filehost:1");
        assert_eq!(exposed(&from_file), Some("from-file"));
        let flagged = Connection::resolve(&ConnectionFlags {
            config: Some(config),
            server: Some("http://flag:2".into()),
            token: Some("from-flag".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(flagged.server, "http://flag:2");
        assert_eq!(exposed(&flagged), Some("from-flag"));
    }

    fn exposed(connection: &Connection) -> Option<&str> {
        use secrecy::ExposeSecret as _;
        connection.token.as_ref().map(|t| t.expose_secret())
    }

    #[test]
    fn unknown_config_keys_and_missing_explicit_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "servr = \"x\"\n").unwrap();
        let flags = ConnectionFlags {
            config: Some(config),
            ..Default::default()
        };
        assert!(matches!(
            Connection::resolve(&flags),
            Err(ConfigError::File { .. })
        ));
        let flags = ConnectionFlags {
            config: Some(dir.path().join("absent.toml")),
            ..Default::default()
        };
        assert!(Connection::resolve(&flags).is_err());
    }
}
