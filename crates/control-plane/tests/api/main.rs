//! Integration tests of the control plane through its public HTTP API, each run on
//! SQLite + memory bus and on PostgreSQL + Redis (see `both_backends!`).

mod helpers;

mod bad_input;
mod bad_input_routing;
mod bad_input_usage;
mod bus_outage;
mod config_transfer;
mod credential_health;
mod credential_import;
mod hardening;
mod health_probe;
mod import_atomic;
mod key_limits;
mod lifecycle;
mod log_pipeline;
mod one_rule;
mod platform;
mod probe_support;
mod routing_config;
mod secrets_at_rest;
mod suspension;
mod tenancy;
mod token_refresh;
mod wrong_credential;
