//! A TCP proxy in front of the test Redis that reads the commands clients send (RESP
//! arrays of bulk strings), may rewrite them, and can be cut like a dead server. With
//! [`redis6`] it answers like a Redis 6.2 server where our commands would differ.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub type Rewrite = fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>;

pub struct RespProxy {
    /// `redis://…` of the proxy.
    pub url: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Commands unchanged.
pub fn passthrough(command: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    command
}

/// What a Redis 6.2 server does differently with the commands ez-api sends:
/// `EXPIRE`/`PEXPIRE` options (`NX`, `XX`, `GT`, `LT`, Redis 7) are a wrong number of
/// arguments — refused when queued, which aborts the whole `MULTI` (emulated with an
/// unknown command, refused the same way) — and `INFO` reports version 6.2.14 (emulated
/// with `ECHO`, whose bulk-string answer has the same shape).
pub fn redis6(command: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let name = command.first().map(|n| n.to_ascii_uppercase());
    match name.as_deref() {
        Some(b"PEXPIRE" | b"EXPIRE") if command.len() > 3 => {
            let mut refused = command;
            refused[0] = b"EXPIRE-WITH-OPTIONS-UNKNOWN-BEFORE-REDIS-7".to_vec();
            refused
        }
        Some(b"INFO") => vec![
            b"ECHO".to_vec(),
            b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n".to_vec(),
        ],
        _ => command,
    }
}

/// Like [`redis6`], but a Redis 5.0 (older than ez-api supports).
pub fn redis5(command: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    match command.first().map(|n| n.to_ascii_uppercase()).as_deref() {
        Some(b"INFO") => vec![b"ECHO".to_vec(), b"# Server\r\nredis_version:5.0.14\r\n".to_vec()],
        _ => redis6(command),
    }
}

impl RespProxy {
    /// A proxy to the Redis of `EZ_TEST_REDIS_URL` (host and port only).
    pub async fn start(rewrite: Rewrite) -> RespProxy {
        let url = std::env::var("EZ_TEST_REDIS_URL").expect("EZ_TEST_REDIS_URL");
        let target = url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                conns
                    .lock()
                    .unwrap()
                    .push(tokio::spawn(relay(client, server, rewrite)));
            }
        });
        tasks.lock().unwrap().push(accept);
        RespProxy {
            url: format!("redis://{addr}"),
            tasks,
        }
    }

    /// Stops listening and drops every connection: clients see a dead server.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for RespProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn relay(client: TcpStream, server: TcpStream, rewrite: Rewrite) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    let commands = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Some((command, used)) = parse_command(&buf) {
                buf.drain(..used);
                if server_write.write_all(&encode(&rewrite(command))).await.is_err() {
                    return;
                }
            }
            match client_read.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::select! {
        () = answers => {}
        () = commands => {}
    }
}

/// One complete `*N\r\n($len\r\n<bytes>\r\n){N}` at the start of `buf`, and its length.
fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    let (count, mut at) = read_line_number(buf, 0, b'*')?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, start) = read_line_number(buf, at, b'$')?;
        let end = start + len;
        if buf.len() < end + 2 {
            return None;
        }
        parts.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Some((parts, at))
}

fn read_line_number(buf: &[u8], at: usize, marker: u8) -> Option<(usize, usize)> {
    if *buf.get(at)? != marker {
        panic!("the proxy reads arrays of bulk strings only");
    }
    let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
    Some((n, end + 2))
}

fn encode(command: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", command.len()).into_bytes();
    for part in command {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}
