//! The control plane as the report sink of a balancer in the same process (`ezapi
//! serve`): the same checks and storage as the `/internal/*` endpoints, without the
//! network, and the same answer — retry later, or drop.

use async_trait::async_trait;
use ez_contract::report::{
    CredentialBan, CredentialUsageBatch, KeyUsageBatch, LogBatch, RefreshOutcome, RefreshRequest,
    ReportError, ReportSink,
};

use super::ingest::{self, IngestError};
use crate::state::AppState;

pub struct InProcessReports {
    pub state: AppState,
}

impl From<IngestError> for ReportError {
    fn from(e: IngestError) -> ReportError {
        if e.is_retryable() {
            ReportError::Unavailable(e.to_string())
        } else {
            ReportError::Rejected(e.to_string())
        }
    }
}

#[async_trait]
impl ReportSink for InProcessReports {
    async fn logs(&self, batch: &LogBatch) -> Result<(), ReportError> {
        ingest::ingest_logs(&self.state, batch.clone()).await?;
        Ok(())
    }

    async fn key_usage(&self, batch: &KeyUsageBatch) -> Result<(), ReportError> {
        ingest::ingest_key_usage(&self.state, batch.clone()).await?;
        Ok(())
    }

    async fn credential_usage(&self, batch: &CredentialUsageBatch) -> Result<(), ReportError> {
        ingest::ingest_credential_usage(&self.state, batch.clone()).await?;
        Ok(())
    }

    async fn ban(&self, ban: &CredentialBan) -> Result<(), ReportError> {
        Ok(ingest::ban_credential(&self.state, ban.clone()).await?)
    }

    async fn refresh(&self, id: i64, request: &RefreshRequest) -> Result<RefreshOutcome, ReportError> {
        use crate::token_refresh::{RefreshError, on_request};
        on_request(&self.state, id, request).await.map_err(|e| match e {
            RefreshError::Unavailable(_) => ReportError::Unavailable(e.to_string()),
            _ => ReportError::Rejected(e.to_string()),
        })
    }
}
