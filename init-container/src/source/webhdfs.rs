//! `webhdfs://` and `swebhdfs://`: HDFS over its REST protocol.
//!
//! `GET http(s)://<namenode>/webhdfs/v1/<path>?op=OPEN&offset=N` answers
//! `307 Temporary Redirect` to a datanode, which streams the bytes from `N`.
//! The shared HTTP client follows that redirect. `HADOOP_USER_NAME` becomes
//! `user.name=` (simple authentication); `FERRY_WEBHDFS_DELEGATION` (a
//! delegation token) becomes `delegation=`.

use async_trait::async_trait;
use url::Url;

use super::http::get_from;
use super::{Opened, Source};
use crate::error::FetchError;

/// One file on a WebHDFS namenode.
pub struct WebHdfsSource {
    client: reqwest::Client,
    url: Url,
    uri: String,
}

impl WebHdfsSource {
    pub fn new(
        client: reqwest::Client,
        authority: &str,
        path: &str,
        tls: bool,
        uri: impl Into<String>,
    ) -> Result<Self, FetchError> {
        let scheme = if tls { "https" } else { "http" };
        let mut url = Url::parse(&format!("{scheme}://{authority}/webhdfs/v1"))
            .map_err(|e| FetchError::Invalid(format!("WebHDFS namenode {authority}: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| FetchError::Invalid(format!("WebHDFS namenode {authority}")))?
            .extend(path.split('/').filter(|s| !s.is_empty()));
        Ok(Self {
            client,
            url,
            uri: uri.into(),
        })
    }

    fn url_at(&self, offset: u64) -> Url {
        let mut url = self.url.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("op", "OPEN");
            query.append_pair("offset", &offset.to_string());
            if let Ok(user) = std::env::var("HADOOP_USER_NAME") {
                query.append_pair("user.name", &user);
            }
            if let Ok(token) = std::env::var("FERRY_WEBHDFS_DELEGATION") {
                query.append_pair("delegation", &token);
            }
        }
        url
    }
}

#[async_trait]
impl Source for WebHdfsSource {
    async fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        get_from(&self.client, self.url_at(offset), None, offset, false)
            .await
            .map_err(|e| match e {
                FetchError::NotFound(_) => FetchError::NotFound(self.uri.clone()),
                other => other,
            })
    }

    fn describe(&self) -> String {
        self.uri.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_urls_carry_the_offset_and_encoded_path() {
        let source = WebHdfsSource::new(
            reqwest::Client::new(),
            "nn:9870",
            "/user/a b/x.jar",
            false,
            "webhdfs://nn:9870/user/a b/x.jar",
        )
        .unwrap();
        let url = source.url_at(42);
        assert_eq!(url.path(), "/webhdfs/v1/user/a%20b/x.jar");
        assert!(url.query().unwrap().contains("op=OPEN&offset=42"));
    }
}
