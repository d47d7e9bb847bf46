//! On a real `ezapi serve`: an upstream that refuses connections is named in the log line
//! (cause, `host:port`, the error's source chain) and counted in `/metrics` under its
//! provider group — and neither shows the credential or the secrets of the URL.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{ADMIN, Proc, UPSTREAM_KEY, chat, configure, temp_dir};

const UNREACHABLE: &str = "upstream unreachable; failing over";

/// The fields of the first JSON log line of `server` whose message is `message`.
fn log_fields(server: &Proc, message: &str) -> Option<Value> {
    server.tail().lines().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        (entry["fields"]["message"] == message).then(|| entry["fields"].clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_logged_and_counted_without_secrets() {
    let dir = temp_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let upstream = format!("http://proxy-user:url-secret-0001@127.0.0.1:{port}/v1?sig=url-secret-0002");
    let env = vec![
        ("EZ_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("EZ_SERVER__DATA_DIR", dir.join("data").display().to_string()),
        ("EZ_AUTH__ADMIN_TOKEN", ADMIN.to_owned()),
    ];
    let server = Proc::start("ezapi serve", "serve", &dir, &env).await;
    let client = reqwest::Client::new();
    let key = configure(&client, &server, &upstream).await;

    // The route exists once the balancer's snapshot has it (404 until then).
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body, _) = chat(&client, &server.url(""), &key, "unreachable-1", false).await;
        if status == 502 {
            break body;
        }
        assert_eq!(status, 404, "{body}");
        assert!(Instant::now() < deadline, "the route never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("connection refused"), "{body}");
    assert!(
        !body.contains(&port.to_string()),
        "the client is not told where: {body}"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let fields = loop {
        if let Some(fields) = log_fields(&server, UNREACHABLE) {
            break fields;
        }
        assert!(
            Instant::now() < deadline,
            "no {UNREACHABLE:?} line:\n{}",
            server.tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(fields["upstream"], format!("127.0.0.1:{port}"), "{fields}");
    assert_eq!(fields["cause"], "connection_refused", "{fields}");
    assert_eq!(fields["group"], "mock-openai", "{fields}");
    assert_eq!(fields["request_id"], "unreachable-1", "{fields}");
    let chain = fields["error"].as_str().unwrap_or_default();
    assert!(
        chain.starts_with("error sending request: ") && chain.contains("onnection refused"),
        "the whole source chain: {chain}"
    );
    let log = server.tail();
    for secret in ["url-secret", "proxy-user", UPSTREAM_KEY] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "# TYPE ezapi_upstream_errors_total counter",
        r#"ezapi_upstream_errors_total{group="mock-openai",cause="connection_refused"} 1"#,
        r#"ezapi_upstream_requests_total{group="mock-openai",status_class="error"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
    assert!(
        metrics.contains("# HELP ezapi_upstream_errors_total "),
        "{metrics}"
    );
}
