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

    /// Checks the server is a Redis ez-api supports ([`MIN_REDIS_VERSION`]); returns its
    /// version, or `None` when it does not answer now (a bus that is down at start is
    /// degraded, not fatal). An older Redis is a [`BusError::Config`].
    pub async fn check_server(&self) -> Result<Option<String>, BusError> {
        let mut conn = self.conn.clone();
        let info = match timed(redis::cmd("INFO").arg("server").query_async::<String>(&mut conn)).await {
            Ok(info) => info,
            Err(_) => return Ok(None),
        };
        let version = server_version(&info)
            .ok_or_else(|| BusError::Config("the Redis server did not report its version".into()))?;
        check_version(&version)?;
        Ok(Some(version))
    }
}

/// The oldest Redis ez-api supports: every command the bus sends exists there with the
/// options used (multi-field `HSET` needs 4.0; 6.0 is the oldest release still
/// maintained when this was written).
pub const MIN_REDIS_VERSION: (u32, u32) = (6, 0);

/// `redis_version` of an `INFO server` answer.
fn server_version(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_owned())
}

fn check_version(version: &str) -> Result<(), BusError> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return Err(BusError::Config(format!(
            "cannot read the Redis version {version:?}"
        )));
    };
    if (major, minor) < MIN_REDIS_VERSION {
        let (min_major, min_minor) = MIN_REDIS_VERSION;
        return Err(BusError::Config(format!(
            "Redis {version} is older than {min_major}.{min_minor}, the oldest version ez-api supports"
        )));
    }
    Ok(())
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
            // The window's lifetime starts with its first count: a new counter is
            // created with it (`SET … PX … NX`, which every Redis has; `PEXPIRE … NX` is
            // Redis 7 only and would abort the whole transaction on Redis 6), and `INCR`
            // keeps it.
            pipe.cmd("SET")
                .arg(&key)
                .arg(0)
                .arg("PX")
                .arg(ttl_ms)
                .arg("NX")
                .ignore();
            pipe.incr(&key, 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_older_than_the_minimum_are_refused() {
        let info = "# Server\r\nredis_version:6.2.14\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(server_version(info).as_deref(), Some("6.2.14"));
        assert!(check_version("6.2.14").is_ok());
        assert!(check_version("7.0.15").is_ok());
        assert!(check_version("10.0.0").is_ok());
        let old = check_version("5.0.14").unwrap_err().to_string();
        assert!(old.contains("5.0.14") && old.contains("6.0"), "{old}");
        assert!(check_version("garbage").is_err());
        assert_eq!(server_version("# Server\r\n"), None);
    }
}
