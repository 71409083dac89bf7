//! `http://` and `https://`: a GET with `Range: bytes=<offset>-` to resume.
//!
//! Redirects are followed by the shared client (reqwest drops the
//! `Authorization` header when a redirect leaves the original host). A server
//! that ignores `Range` answers 200 with the whole body; the caller sees
//! `start == 0` and starts the file again.

use async_trait::async_trait;
use futures::TryStreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::{Opened, Source};
use crate::error::FetchError;

/// Longest error body quoted in a message.
const MAX_ERROR_BODY: usize = 300;

/// One object behind a URL.
pub struct HttpSource {
    client: reqwest::Client,
    url: Url,
}

impl HttpSource {
    pub fn new(client: reqwest::Client, url: Url) -> Self {
        Self { client, url }
    }
}

#[async_trait]
impl Source for HttpSource {
    async fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        get_from(&self.client, self.url.clone(), None, offset, true).await
    }

    fn describe(&self) -> String {
        redacted(&self.url)
    }
}

/// GETs `url` from `offset`, with a `Range` header when `use_range_header`
/// (WebHDFS passes the offset in the query instead).
pub(crate) async fn get_from(
    client: &reqwest::Client,
    url: Url,
    bearer: Option<&SecretString>,
    offset: u64,
    use_range_header: bool,
) -> Result<Opened, FetchError> {
    let what = redacted(&url);
    let mut request = client.get(url);
    if offset > 0 && use_range_header {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let response = send(request, bearer).await?;
    opened(response, what, offset, use_range_header).await
}

/// GETs a pre-signed URL (a store's, handed out by ferry-server) from
/// `offset`, with `Range` and without any `Authorization` header: the
/// signature in the query is the credential, and S3 refuses a request that
/// carries both. Errors never quote the URL, whose query is a credential.
pub(crate) async fn get_signed(
    client: &reqwest::Client,
    url: &Url,
    offset: u64,
) -> Result<Opened, FetchError> {
    let mut request = client.get(url.clone());
    if offset > 0 {
        request = request.header(RANGE, format!("bytes={offset}-"));
    }
    let response = request
        .send()
        .await
        .map_err(|e| FetchError::from_reqwest(&e.without_url()))?;
    opened(response, redacted(url), offset, true).await
}

/// The answer to a GET from `offset` as an [`Opened`] (see [`get_from`]).
pub(crate) async fn opened(
    response: reqwest::Response,
    what: String,
    offset: u64,
    use_range_header: bool,
) -> Result<Opened, FetchError> {
    let status = response.status();
    let total_from_range = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once('/'))
        .and_then(|(_, total)| total.trim().parse::<u64>().ok());
    if status == StatusCode::RANGE_NOT_SATISFIABLE && total_from_range == Some(offset) {
        // Everything was already received by an earlier attempt.
        return Ok(Opened {
            body: Box::pin(futures::stream::empty()),
            start: offset,
            size: Some(offset),
        });
    }
    let response = successful(response, what).await?;
    let (start, size) = if status == StatusCode::PARTIAL_CONTENT && use_range_header {
        (offset, total_from_range)
    } else if use_range_header {
        (0, response.content_length())
    } else {
        (offset, response.content_length().map(|len| len + offset))
    };
    // Without the URL: it may be a pre-signed one (the source names itself).
    let body = response
        .bytes_stream()
        .map_err(|e| FetchError::from_reqwest(&e.without_url()));
    Ok(Opened {
        body: Box::pin(body),
        start,
        size,
    })
}

/// Sends `request`, with `Authorization: Bearer <token>` when there is one.
pub(crate) async fn send(
    mut request: reqwest::RequestBuilder,
    bearer: Option<&SecretString>,
) -> Result<reqwest::Response, FetchError> {
    if let Some(token) = bearer {
        request = request.bearer_auth(token.expose_secret());
    }
    request
        .send()
        .await
        .map_err(|e| FetchError::from_reqwest(&e))
}

/// `response` if its status is a success, else the error it stands for,
/// naming `what` and quoting the body's explanation.
pub(crate) async fn successful(
    response: reqwest::Response,
    what: String,
) -> Result<reqwest::Response, FetchError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail = error_detail(response).await;
    Err(FetchError::from_status(status.as_u16(), what, detail))
}

/// The message of a ferry or WebHDFS JSON error body, or the start of any
/// other body, so a 403 says *why*.
async fn error_detail(response: reqwest::Response) -> Option<String> {
    let text = response.text().await.ok()?;
    let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let message = value.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.pointer("/RemoteException/message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    let text = message.unwrap_or(text);
    let text = text.trim();
    (!text.is_empty() && !text.starts_with('<'))
        .then(|| text.chars().take(MAX_ERROR_BODY).collect())
}

/// The URL without user info or query (which may hold credentials such as
/// pre-signed signatures).
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(Some("…"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_hide_credentials_and_queries() {
        let url = Url::parse("https://u:p@h/x.jar?X-Amz-Signature=secret").unwrap();
        let shown = redacted(&url);
        assert!(
            !shown.contains("secret") && !shown.contains("u:p"),
            "{shown}"
        );
        assert!(shown.starts_with("https://h/x.jar"));
    }
}
