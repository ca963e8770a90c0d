//! Calls to identity providers: one HTTP client with a deadline on every call, answers
//! capped in size, and failures sorted into what the person signing in should be told.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use url::form_urlencoded::byte_serialize;

/// Largest answer read from a provider (discovery documents, key sets, tokens, profiles are
/// a few KiB): a hostile or broken provider cannot make Parley hold more.
const MAX_ANSWER: usize = 256 * 1024;

/// Why a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer within the deadline.
    #[error("did not answer in time")]
    Timeout,
    /// No connection (refused, unknown host, TLS failure).
    #[error("could not be reached")]
    Unreachable,
    /// An HTTP error status, with the JSON body when there was one (OAuth errors are JSON).
    #[error("answered HTTP {0}")]
    Status(u16, Option<Value>),
    /// An answer that is not what was asked for.
    #[error("gave an invalid answer ({0})")]
    Invalid(&'static str),
}

/// The HTTP client for providers.
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A client whose every call (connect, send, whole answer) ends within `timeout`.
    pub fn new(timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A provider answers; it does not send Parley elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("parley/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// `GET url` expecting a JSON object; with `bearer`, as `Authorization: Bearer`.
    pub async fn get_json(&self, url: &str, bearer: Option<&str>) -> Result<Value, FetchError> {
        let mut request = self.client.get(url).header("accept", "application/json");
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        answer(request).await
    }

    /// `POST url` with a form body (`application/x-www-form-urlencoded`), authenticating as
    /// the client with HTTP Basic (`basic`: id and secret, form-encoded first as RFC 6749
    /// §2.3.1 says) or, without it, by what the form carries.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Value, FetchError> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        if let Some((id, secret)) = basic {
            let encode = |s: &str| byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = STANDARD.encode(format!("{}:{}", encode(id), encode(secret)));
            request = request.header("authorization", format!("Basic {credentials}"));
        }
        answer(request).await
    }
}

async fn answer(request: reqwest::RequestBuilder) -> Result<Value, FetchError> {
    let mut response = request.send().await.map_err(sort)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(sort)? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(FetchError::Invalid("answer too large"));
        }
        body.extend_from_slice(&chunk);
    }
    let json = serde_json::from_slice::<Value>(&body).ok();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16(), json));
    }
    match json {
        Some(value @ Value::Object(_)) => Ok(value),
        _ => Err(FetchError::Invalid("not a JSON object")),
    }
}

fn sort(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout
    } else if e.is_connect() || e.is_request() {
        FetchError::Unreachable
    } else {
        FetchError::Invalid("broken answer")
    }
}
