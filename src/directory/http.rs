//! The HTTP users service backend: `GET {template with {sub}}` → a JSON object
//! (the user's fields), 404 → unknown; anything else is an error.

use super::{DirectoryError, Row};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use std::time::Duration;

/// A users-service response larger than this is refused.
const MAX_BODY: usize = 1024 * 1024;

pub struct HttpBackend {
    client: reqwest::Client,
    template: String,
}

impl HttpBackend {
    pub fn new(template: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            // Mozilla's roots, built in: the same in every image (Cargo.toml).
            .tls_certs_only(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .filter_map(|c| reqwest::Certificate::from_der(c).ok()),
            )
            .build()
            .unwrap_or_default();
        Self {
            client,
            template: template.to_owned(),
        }
    }

    pub async fn query(&self, subject: &str) -> Result<Row, DirectoryError> {
        // The subject is encoded whole: a `sub` of "../admin" stays one segment.
        let url = self.template.replace(
            "{sub}",
            &utf8_percent_encode(subject, NON_ALPHANUMERIC).to_string(),
        );
        let failed =
            |e: reqwest::Error| DirectoryError(format!("users service: {}", e.without_url()));
        let mut response = self
            .client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(failed)?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            status => return Err(DirectoryError(format!("users service answered {status}"))),
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(DirectoryError("users service response too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(fields)) => Ok(Some(
                fields.into_iter().filter(|(_, v)| !v.is_null()).collect(),
            )),
            _ => Err(DirectoryError(
                "users service did not answer a JSON object".into(),
            )),
        }
    }
}
