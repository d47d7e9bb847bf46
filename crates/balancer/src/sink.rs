//! Reports over HTTP to the control plane's `/internal/*` endpoints (`ezapi balancer`).

use std::time::Duration;

use async_trait::async_trait;
use ez_contract::report::{
    CredentialBan, CredentialUsageBatch, KeyUsageBatch, LogBatch, RefreshAnswer, RefreshOutcome,
    RefreshRequest, ReportError, ReportSink,
};
use reqwest::StatusCode;
use serde::Serialize;

/// The longest wait for the control plane to take a report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct HttpSink {
    client: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl HttpSink {
    /// `base_url` is `internal.control_plane_url`; `token` the `internal.stats_token`.
    pub fn new(base_url: &str, token: Option<String>) -> Result<HttpSink, reqwest::Error> {
        Ok(HttpSink {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                // A redirect would carry `X-Internal-Token` to wherever it points.
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<(), ReportError> {
        self.send(path, body, REPORT_TIMEOUT).await.map(drop)
    }

    /// Posts `body`, waiting at most `timeout`; the successful response, or why not.
    async fn send(
        &self,
        path: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<reqwest::Response, ReportError> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .timeout(timeout)
            .json(body);
        if let Some(token) = &self.token {
            request = request.header("x-internal-token", token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ReportError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let detail = format!("{path}: {status} {}", text.chars().take(300).collect::<String>());
        match status {
            // A wrong token is a configuration error that an operator fixes: keep the
            // reports meanwhile. Throttling and server trouble pass too.
            StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS => Err(ReportError::Unavailable(detail)),
            // A redirect (not followed) is a wrong `internal.control_plane_url`, fixed
            // by an operator: keep the reports meanwhile too.
            s if s.is_redirection() => Err(ReportError::Unavailable(detail)),
            s if s.is_server_error() => Err(ReportError::Unavailable(detail)),
            _ => Err(ReportError::Rejected(detail)),
        }
    }
}

#[async_trait]
impl ReportSink for HttpSink {
    async fn logs(&self, batch: &LogBatch) -> Result<(), ReportError> {
        self.post("/internal/logs", batch).await
    }

    async fn key_usage(&self, batch: &KeyUsageBatch) -> Result<(), ReportError> {
        self.post("/internal/stats/flush", batch).await
    }

    async fn credential_usage(&self, batch: &CredentialUsageBatch) -> Result<(), ReportError> {
        self.post("/internal/apikey-stats/flush", batch).await
    }

    async fn ban(&self, ban: &CredentialBan) -> Result<(), ReportError> {
        self.post("/internal/apikey-bans", ban).await
    }

    async fn refresh(&self, id: i64, request: &RefreshRequest) -> Result<RefreshOutcome, ReportError> {
        // A refresh may wait for another one, then for the token endpoint.
        let path = format!("/internal/apikeys/{id}/refresh");
        let response = self.send(&path, request, crate::renewal::ASK_TIMEOUT).await?;
        let answer: RefreshAnswer = response
            .json()
            .await
            .map_err(|e| ReportError::Unavailable(e.without_url().to_string()))?;
        Ok(answer.outcome)
    }
}
