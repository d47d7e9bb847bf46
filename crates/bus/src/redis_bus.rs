//! The Redis bus: production, shared by every CP and balancer.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::{BusError, BusWrite, ConfigBus, Subscription};

/// Upper bound for one bus operation, so a dead Redis never hangs a request.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
const SCAN_BATCH: usize = 1000;
/// Commands per pipelined round trip of bulk reads.
const PIPELINE_BATCH: usize = 1000;

pub struct RedisBus {
    client: redis::Client,
    conn: ConnectionManager,
    /// Prepended to every key and channel; lets tests (and several deployments) share
    /// one Redis. Empty in production.
    prefix: String,
}

impl RedisBus {
    /// Prepares a connection to `url` (`redis://` or `rediss://`); it is established on
    /// first use and re-established after Redis restarts.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<RedisBus, BusError> {
        let client = redis::Client::open(url).map_err(|e| BusError::Config(e.to_string()))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(2);
        // Lazy: a Redis that is down at start is a degraded bus (writes go to the outbox),
        // not a process that cannot start.
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(RedisBus {
            client,
            conn,
            prefix: prefix.into(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

async fn timed<T>(fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T, BusError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(BusError::Unavailable(e.to_string())),
        Err(_) => Err(BusError::Timeout(OP_TIMEOUT.as_millis() as u64)),
    }
}

fn escape_glob(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl ConfigBus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        timed(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn apply(&self, writes: Vec<BusWrite>) -> Result<(), BusError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for write in &writes {
            match write {
                BusWrite::ReplaceHash { key, fields } => {
                    let key = self.key(key);
                    pipe.del(&key).ignore();
                    if !fields.is_empty() {
                        pipe.cmd("HSET").arg(&key).arg(fields.as_slice()).ignore();
                    }
                }
                BusWrite::SetFields { key, fields } => {
                    if !fields.is_empty() {
                        pipe.cmd("HSET")
                            .arg(self.key(key))
                            .arg(fields.as_slice())
                            .ignore();
                    }
                }
                BusWrite::DeleteFields { key, fields } => {
                    if !fields.is_empty() {
                        pipe.cmd("HDEL")
                            .arg(self.key(key))
                            .arg(fields.as_slice())
                            .ignore();
                    }
                }
                BusWrite::Delete { key } => {
                    pipe.del(self.key(key)).ignore();
                }
                BusWrite::IncrBy { key, by } => {
                    pipe.cmd("INCRBY").arg(self.key(key)).arg(*by).ignore();
                }
                BusWrite::SetValue { key, value } => {
                    pipe.set(self.key(key), value).ignore();
                }
                BusWrite::IncrField { key, field, by } => {
                    pipe.cmd("HINCRBY")
                        .arg(self.key(key))
                        .arg(field)
                        .arg(*by)
                        .ignore();
                }
            }
        }
        let mut conn = self.conn.clone();
        timed(pipe.query_async::<()>(&mut conn)).await
    }

    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>, BusError> {
        let mut conn = self.conn.clone();
        timed(conn.hgetall(self.key(key))).await
    }

    async fn hash_get_all_many(&self, keys: &[String]) -> Result<Vec<HashMap<String, String>>, BusError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(PIPELINE_BATCH) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.hgetall(self.key(key));
            }
            out.extend(timed(pipe.query_async::<Vec<HashMap<String, String>>>(&mut conn)).await?);
        }
        Ok(out)
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, BusError> {
        let mut conn = self.conn.clone();
        timed(conn.hget(self.key(key), field)).await
    }

    async fn get_values(&self, keys: &[String]) -> Result<Vec<Option<String>>, BusError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let mut conn = self.conn.clone();
        timed(redis::cmd("MGET").arg(keys).query_async(&mut conn)).await
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BusError> {
        let pattern = format!("{}*", escape_glob(&self.key(prefix)));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = timed(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(&mut conn),
            )
            .await?;
            keys.extend(
                batch
                    .into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(keys)
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BusError> {
        let mut conn = self.conn.clone();
        timed(conn.publish::<_, _, i64>(self.key(channel), payload))
            .await
            .map(|_| ())
    }

    async fn count(&self, keys: &[String], ttl_ms: u64) -> Result<Vec<i64>, BusError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            let key = self.key(key);
            pipe.incr(&key, 1);
            // NX: only a new counter gets its lifetime (Redis 7).
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).arg("NX").ignore();
        }
        let mut conn = self.conn.clone();
        timed(pipe.query_async::<Vec<i64>>(&mut conn)).await
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError> {
        let mut pubsub = timed(self.client.get_async_pubsub()).await?;
        timed(pubsub.subscribe(self.key(channel))).await?;
        let stream = pubsub.into_on_message().filter_map(|msg| async move {
            match msg.get_payload::<String>() {
                Ok(payload) => Some(payload),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a non-text bus message");
                    None
                }
            }
        });
        Ok(stream.boxed())
    }
}
