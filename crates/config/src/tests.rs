#![expect(
    clippy::result_large_err,
    reason = "figment's Jail closures must return figment::Error"
)]

use figment::Jail;

use super::*;

fn load_in(jail: &Jail) -> Result<Config, ConfigError> {
    let _ = jail;
    Config::load(None)
}

#[test]
fn defaults_work_for_serve() {
    Jail::expect_with(|jail| {
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server.balancer_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(config.server.data_dir, PathBuf::from("./data"));
        assert_eq!(config.database.kind, DatabaseKind::Sqlite);
        assert_eq!(config.database.url, "sqlite://./data/ezapi.db?mode=rwc");
        assert!(config.redis.url.is_none());
        assert!(config.auth.admin_token.is_none());
        assert_eq!(config.auth.jwt_ttl, Duration::from_secs(12 * 3600));
        assert!(!config.internal.allow_anonymous);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Console);
        assert_eq!(config.sync_outbox.interval, Duration::from_secs(5));
        assert_eq!(config.sync_outbox.batch_size, 100);
        assert_eq!(config.sync_outbox.max_retries, 10);
        assert_eq!(config.sync_outbox.bus_check_interval, Duration::from_secs(10));
        assert_eq!(config.model_registry.refresh_every, Duration::from_secs(600));
        assert_eq!(config.balancer.ban_threshold, 3);
        assert_eq!(config.balancer.ban_window, Duration::from_secs(60));
        assert_eq!(config.log_writer.batch_size, 16);
        Ok(())
    });
}

#[test]
fn environment_overrides_file_with_the_fixed_names() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "ezapi.toml",
            r#"
            [server]
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/ezapi"
            [log]
            level = "debug"
            "#,
        )?;
        jail.set_env("EZ_SERVER__LISTEN", "127.0.0.1:9100");
        jail.set_env("EZ_DATABASE__URL", "postgres://u@db/ezapi");
        jail.set_env("EZ_REDIS__URL", "redis://127.0.0.1:6379");
        jail.set_env("EZ_AUTH__ADMIN_TOKEN", "a-very-long-admin-token");
        jail.set_env("EZ_AUTH__JWT_TTL", "30m");
        jail.set_env("EZ_INTERNAL__STATS_TOKEN", "12345678901234567890");
        jail.set_env("EZ_INTERNAL__ALLOW_ANONYMOUS", "true");
        jail.set_env("EZ_INTERNAL__CONTROL_PLANE_URL", "http://cp:8080/");
        jail.set_env("EZ_LOG__FORMAT", "json");
        jail.set_env("EZ_SERVER__BALANCER_LISTEN", "127.0.0.1:9101");
        // Not configuration: must be ignored rather than rejected as unknown.
        jail.set_env("EZ_TEST_DATABASE_URL", "postgres://elsewhere");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.server.balancer_listen.to_string(), "127.0.0.1:9101");
        assert_eq!(config.server.data_dir, PathBuf::from("/var/lib/ezapi"));
        assert_eq!(config.database.kind, DatabaseKind::Postgres);
        assert_eq!(config.redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(
            config.auth.admin_token.as_ref().map(|t| t.expose()),
            Some("a-very-long-admin-token")
        );
        assert_eq!(config.auth.jwt_ttl, Duration::from_secs(1800));
        assert_eq!(
            config.internal.stats_token.as_ref().map(|t| t.expose()),
            Some("12345678901234567890")
        );
        assert!(config.internal.allow_anonymous);
        assert_eq!(
            config.internal.control_plane_url.as_deref(),
            Some("http://cp:8080")
        );
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn short_log_level_form_is_accepted_and_long_form_wins() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_LOG_LEVEL", "warn");
        assert_eq!(load_in(jail).map_err(|e| e.to_string())?.log.level, "warn");
        jail.set_env("EZ_LOG__LEVEL", "error");
        assert_eq!(load_in(jail).map_err(|e| e.to_string())?.log.level, "error");
        Ok(())
    });
}

#[test]
fn invalid_values_name_the_option() {
    let cases: &[(&str, &str, &str)] = &[
        ("EZ_SERVER__LISTEN", "not-an-address", "server.listen"),
        ("EZ_DATABASE__URL", "mysql://x", "database.url"),
        ("EZ_REDIS__URL", "http://x", "redis.url"),
        ("EZ_AUTH__JWT_TTL", "soon", "auth.jwt_ttl"),
        ("EZ_AUTH__ADMIN_TOKEN", "short", "auth.admin_token"),
        ("EZ_LOG__FORMAT", "xml", "log.format"),
        ("EZ_LOG__LEVEL", "info,[", "log.level"),
        (
            "EZ_INTERNAL__CONTROL_PLANE_URL",
            "cp:8080",
            "internal.control_plane_url",
        ),
        (
            "EZ_SERVER__TRUSTED_PROXIES",
            "[\"10.0.0.0/33\"]",
            "server.trusted_proxies",
        ),
        ("EZ_SYNC_OUTBOX__INTERVAL", "0s", "sync_outbox.interval"),
        (
            "EZ_MODEL_REGISTRY__REFRESH_EVERY",
            "often",
            "model_registry.refresh_every",
        ),
        ("EZ_SYNC_OUTBOX__MAX_RETRIES", "-1", "sync_outbox.max_retries"),
        ("EZ_SYNC_OUTBOX__BATCH_SIZE", "0", "sync_outbox.batch_size"),
        (
            "EZ_BALANCER__REPORT_BUFFER_BYTES",
            "1000",
            "balancer.report_buffer_bytes",
        ),
        ("EZ_BALANCER__BAN_THRESHOLD", "0", "balancer.ban_threshold"),
        ("EZ_BALANCER__BAN_WINDOW", "0s", "balancer.ban_window"),
        ("EZ_BALANCER__BAN_WINDOW", "2d", "balancer.ban_window"),
        ("EZ_LOG_WRITER__BATCH_SIZE", "0", "log_writer.batch_size"),
        ("EZ_LOG_WRITER__BATCH_SIZE", "1001", "log_writer.batch_size"),
    ];
    for (var, value, option) in cases {
        Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let err = load_in(jail).expect_err("must be rejected").to_string();
            assert!(err.contains(option), "{var}={value}: {err}");
            Ok(())
        });
    }
}

#[test]
fn unknown_options_are_rejected() {
    Jail::expect_with(|jail| {
        jail.create_file("ezapi.toml", "[server]\nlisten_addr = \"127.0.0.1:1\"\n")?;
        let err = load_in(jail).expect_err("unknown field").to_string();
        assert!(
            err.starts_with("server.listen_addr in ") && err.contains("ezapi.toml"),
            "{err}"
        );
        assert!(
            err.ends_with(" is not an option; did you mean server.listen?"),
            "{err}"
        );
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.create_file("ezapi.toml", "[sever]\nlisten = \"127.0.0.1:1\"\n")?;
        let err = load_in(jail).expect_err("misspelt section").to_string();
        assert!(
            err.starts_with("[sever] in ") && err.ends_with(" is not a section; did you mean [server]?"),
            "{err}"
        );
        Ok(())
    });
}

/// A misspelt variable is reported as typed, with the option meant; figment's own
/// words (`default.server.listn`, provider names in backticks) never reach the operator.
#[test]
fn misspelt_variables_are_named_as_typed_with_the_nearest_option() {
    let cases = [
        (
            "EZ_SERVER__LISTN",
            "EZ_SERVER__LISTN is not an option; did you mean EZ_SERVER__LISTEN?",
        ),
        (
            "EZ_SEVRER__LISTEN",
            "EZ_SEVRER__LISTEN is not an option; did you mean EZ_SERVER__LISTEN?",
        ),
        ("EZ_DATABASE__URI", "EZ_DATABASE__URL"),
        ("EZ_AUTH__ADMINTOKEN", "did you mean EZ_AUTH__ADMIN_TOKEN?"),
        (
            "EZ_NOTHING__LIKE_IT",
            "EZ_NOTHING__LIKE_IT is not an option (options are EZ_<SECTION>__<OPTION>, listed in the README under Configuration)",
        ),
    ];
    for (var, expected) in cases {
        Jail::expect_with(|jail| {
            jail.set_env(var, "127.0.0.1:1");
            let err = load_in(jail).expect_err("unknown variable").to_string();
            assert!(err.contains(expected), "{var}: {err}");
            assert!(!err.contains("default.") && !err.contains('`'), "{var}: {err}");
            Ok(())
        });
    }
}

#[test]
fn a_value_of_the_wrong_type_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_SERVER__MAX_CONNECTIONS", "many");
        let err = load_in(jail).expect_err("not a number").to_string();
        assert!(
            err.starts_with(
                "invalid value for EZ_SERVER__MAX_CONNECTIONS (server.max_connections): found string \"many\", expected a whole number"
            ),
            "{err}"
        );
        assert!(!err.contains("default."), "{err}");
        Ok(())
    });
}

/// Variables of the Go ez-api (and near misses of ours) would be ignored while ezapi
/// starts on SQLite and the in-memory bus: each is named with what to set instead.
#[test]
fn go_style_variables_are_named_with_their_replacement() {
    let cases = [
        (
            "EZ_REDIS_ADDR",
            "10.0.0.5:6379",
            "EZ_REDIS_ADDR is the Go ez-api name; set EZ_REDIS__URL=redis://10.0.0.5:6379 instead",
        ),
        (
            "EZ_REDIS_PASSWORD",
            "hunter2-redis",
            "EZ_REDIS_PASSWORD is the Go ez-api name; set EZ_REDIS__URL=redis://:PASSWORD@HOST:PORT instead (it goes in the URL)",
        ),
        ("EZ_REDIS_DB", "3", "set EZ_REDIS__URL=redis://HOST:PORT/3"),
        (
            "EZ_PG_DSN",
            "host=db user=ez password=pg-secret-1",
            "EZ_PG_DSN is the Go ez-api name; set EZ_DATABASE__URL=postgres://USER:PASSWORD@HOST:5432/DBNAME instead (a URL, not key=value pairs)",
        ),
        (
            "EZ_DATABASE_DSN",
            "postgres://ez:pg-secret-2@db/ez",
            "set EZ_DATABASE__URL to the same URL instead",
        ),
        (
            "EZ_LISTEN_ADDR",
            ":8080",
            "EZ_LISTEN_ADDR is the Go ez-api name; set EZ_SERVER__LISTEN=0.0.0.0:8080",
        ),
        ("EZ_PORT", "9000", "set EZ_SERVER__LISTEN=0.0.0.0:9000"),
        (
            "EZ_ADMIN_TOKEN",
            "admin-secret-000000",
            "EZ_ADMIN_TOKEN is the Go ez-api name; set EZ_AUTH__ADMIN_TOKEN instead",
        ),
        (
            "EZ_JWT_SECRET",
            "jwt-secret-0000",
            "set EZ_AUTH__JWT_SECRET instead",
        ),
        (
            "EZ_INTERNAL_STATS_TOKEN",
            "stats-secret-000",
            "set EZ_INTERNAL__STATS_TOKEN instead",
        ),
        (
            "EZ_SERVER_LISTEN",
            "127.0.0.1:1",
            "EZ_SERVER_LISTEN is not read (two underscores separate section and option); set EZ_SERVER__LISTEN instead",
        ),
        (
            "EZ_SYNC_OUTBOX_INTERVAL",
            "5s",
            "set EZ_SYNC_OUTBOX__INTERVAL instead",
        ),
        (
            "EZ_DATA_DIR",
            "/srv",
            "EZ_DATA_DIR is not read (options are EZ_<SECTION>__<OPTION>); set EZ_SERVER__DATA_DIR instead",
        ),
    ];
    for (var, value, expected) in cases {
        Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let err = load_in(jail).expect_err("must stop start-up").to_string();
            assert!(err.contains(expected), "{var}: {err}");
            assert!(!err.contains("secret"), "a value is shown back: {err}");
            Ok(())
        });
    }
    Jail::expect_with(|jail| {
        jail.set_env("EZ_REDIS_ADDR", "redis:6379");
        jail.set_env("EZ_PG_DSN", "postgres://db/ez");
        let err = load_in(jail).expect_err("two at once").to_string();
        assert_eq!(err.lines().count(), 3, "{err}");
        assert!(
            err.contains("EZ_REDIS_ADDR") && err.contains("EZ_PG_DSN"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn variables_that_are_not_configuration_are_left_alone() {
    Jail::expect_with(|jail| {
        for var in [
            "EZ_TEST_DATABASE_URL",
            "EZ_TEST_REDIS_URL",
            "EZ_TEST_PYTHON",
            "EZ_UPDATE_GOLDEN",
            "EZ_SOMETHING_ELSE",
        ] {
            jail.set_env(var, "postgres://elsewhere");
        }
        jail.set_env("EZ_LOG_LEVEL", "debug");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.database.kind, DatabaseKind::Sqlite);
        assert_eq!(config.log.level, "debug");
        Ok(())
    });
}

#[test]
fn listen_addresses_may_name_a_host() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_SERVER__LISTEN", "localhost:9000");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:9000");
        jail.set_env("EZ_SERVER__LISTEN", "[::1]:9000");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.listen.to_string(), "[::1]:9000");
        jail.set_env("EZ_SERVER__LISTEN", ":8080");
        let err = load_in(jail).expect_err("no host").to_string();
        assert!(
            err.contains("write 0.0.0.0:8080 for every interface, or 127.0.0.1:8080"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn flags_override_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_SERVER__LISTEN", "not-an-address");
        let config =
            Config::load_with(None, &[("server.listen", "localhost:0")]).map_err(|e| e.to_string())?;
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:0");
        Ok(())
    });
}

#[test]
fn every_option_is_in_the_readme_table() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
    for (section, option) in env::known_options() {
        let row = format!(
            "| `{section}.{option}` | `{}`",
            env_name(&format!("{section}.{option}"))
        );
        assert!(readme.contains(&row), "README Configuration lacks {row}");
    }
}

#[test]
fn edit_distance_counts_a_swap_as_one_edit() {
    assert_eq!(env::edit_distance("LISTEN", "LISTEN"), 0);
    assert_eq!(env::edit_distance("LISTN", "LISTEN"), 1);
    assert_eq!(env::edit_distance("SEVRER", "SERVER"), 1);
    assert_eq!(env::edit_distance("", "ABC"), 3);
    assert_eq!(env::edit_distance("KITTEN", "SITTING"), 3);
}

#[test]
fn a_file_that_is_not_toml_is_named() {
    Jail::expect_with(|jail| {
        jail.create_file("ezapi.toml", "[server\nlisten = 1\n")?;
        let err = load_in(jail).expect_err("not TOML").to_string();
        assert!(err.contains("ezapi.toml: "), "{err}");
        assert!(!err.starts_with(" in"), "{err}");
        Ok(())
    });
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = Config::load(Some(Path::new("/nonexistent/ezapi.toml"))).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/ezapi.toml"));
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_AUTH__ADMIN_TOKEN", "super-secret-admin-token");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert!(!format!("{config:?}").contains("super-secret-admin-token"));
        Ok(())
    });
}

#[test]
fn durations_accept_seconds_and_text() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_SERVER__SHUTDOWN_GRACE", "5");
        jail.set_env("EZ_AUTH__JWT_TTL", "1h 30m");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.auth.jwt_ttl, Duration::from_secs(5400));
        Ok(())
    });
}

#[test]
fn single_addresses_become_host_networks() {
    assert_eq!(parse_net("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
    assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
    assert!(parse_net("10.0.0.0/33").is_err());
    assert!(parse_net("bogus").is_err());
}

#[test]
fn sqlite_urls_create_the_file_unless_told_otherwise() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_DATABASE__URL", "sqlite:///var/lib/ezapi/ez.db");
        assert_eq!(
            load_in(jail).map_err(|e| e.to_string())?.database.url,
            "sqlite:///var/lib/ezapi/ez.db?mode=rwc"
        );
        jail.set_env("EZ_DATABASE__URL", "sqlite://ez.db?mode=ro");
        assert_eq!(
            load_in(jail).map_err(|e| e.to_string())?.database.url,
            "sqlite://ez.db?mode=ro"
        );
        Ok(())
    });
}

#[test]
fn debug_of_the_configuration_shows_no_secret() {
    Jail::expect_with(|jail| {
        jail.set_env("EZ_DATABASE__URL", "postgres://ezapi:db-pass-0001@db/ezapi");
        jail.set_env("EZ_REDIS__URL", "redis://:redis-pass-0002@redis:6379");
        jail.set_env("EZ_AUTH__ADMIN_TOKEN", "admin-token-0003-abcdefgh");
        jail.set_env("EZ_INTERNAL__STATS_TOKEN", "stats-token-0004-abcdefgh");
        jail.set_env(
            "EZ_INTERNAL__CONTROL_PLANE_URL",
            "http://cp-user:cp-pass-0005@cp:8080",
        );
        let config = load_in(jail).map_err(|e| e.to_string())?;
        let shown = format!("{config:?}");
        for secret in [
            "db-pass-0001",
            "redis-pass-0002",
            "admin-token-0003",
            "stats-token-0004",
            "cp-pass-0005",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("@db/ezapi") && shown.contains("@redis:6379"),
            "{shown}"
        );
        Ok(())
    });
}

#[test]
fn listener_limits_have_defaults_and_are_validated() {
    Jail::expect_with(|jail| {
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(config.server.keep_alive_idle, Duration::from_secs(75));
        assert_eq!(config.server.max_connections, 10_000);
        assert_eq!(config.server.internal_listen, None);
        jail.set_env("EZ_SERVER__HEADER_READ_TIMEOUT", "2s");
        jail.set_env("EZ_SERVER__BODY_READ_TIMEOUT", "1500ms");
        jail.set_env("EZ_SERVER__KEEP_ALIVE_IDLE", "5");
        jail.set_env("EZ_SERVER__MAX_CONNECTIONS", "64");
        jail.set_env("EZ_SERVER__INTERNAL_LISTEN", "10.0.0.1:9090");
        let config = load_in(jail).map_err(|e| e.to_string())?;
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(2));
        assert_eq!(config.server.body_read_timeout, Duration::from_millis(1500));
        assert_eq!(config.server.keep_alive_idle, Duration::from_secs(5));
        assert_eq!(config.server.max_connections, 64);
        assert_eq!(
            config.server.internal_listen.map(|a| a.to_string()).as_deref(),
            Some("10.0.0.1:9090")
        );
        // Two listeners asking for a free port each are not the same address.
        jail.set_env("EZ_SERVER__LISTEN", "127.0.0.1:0");
        jail.set_env("EZ_SERVER__INTERNAL_LISTEN", "127.0.0.1:0");
        assert!(load_in(jail).is_ok());
        jail.set_env("EZ_SERVER__INTERNAL_LISTEN", "");
        assert_eq!(
            load_in(jail).map_err(|e| e.to_string())?.server.internal_listen,
            None
        );
        Ok(())
    });
    let cases: &[(&str, &str, &str)] = &[
        (
            "EZ_SERVER__HEADER_READ_TIMEOUT",
            "0s",
            "server.header_read_timeout",
        ),
        ("EZ_SERVER__BODY_READ_TIMEOUT", "slow", "server.body_read_timeout"),
        ("EZ_SERVER__KEEP_ALIVE_IDLE", "1ms", "server.keep_alive_idle"),
        ("EZ_SERVER__MAX_CONNECTIONS", "0", "server.max_connections"),
        ("EZ_SERVER__MAX_CONNECTIONS", "2000000", "server.max_connections"),
        ("EZ_SERVER__INTERNAL_LISTEN", "internal", "server.internal_listen"),
        (
            "EZ_SERVER__INTERNAL_LISTEN",
            "127.0.0.1:8080",
            "server.internal_listen",
        ),
    ];
    for (var, value, option) in cases {
        Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let err = load_in(jail).expect_err("must be rejected").to_string();
            assert!(err.contains(option), "{var}={value}: {err}");
            Ok(())
        });
    }
}
