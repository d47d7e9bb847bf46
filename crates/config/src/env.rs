//! The `EZ_` environment, checked before it is read, so that every mistake is reported
//! as the variable the operator typed, with what to set instead.
//!
//! Configuration variables are `EZ_<SECTION>__<OPTION>`. A `__` name that is no option
//! is an error with the nearest option as a suggestion. A single-underscore name is not
//! configuration (tests use `EZ_TEST_DATABASE_URL`), except the names below that mean an
//! option: those of the Go ez-api (`EZ_REDIS_ADDR`, `EZ_PG_DSN`, …) and near misses
//! (`EZ_SERVER_LISTEN`, `EZ_ADMIN_TOKEN`). Left unread they would let the process start
//! on its defaults — the SQLite file and the in-memory bus — so they stop start-up.

use std::fmt;

use crate::raw::RawConfig;

/// The short form of `EZ_LOG__LEVEL`, read as such.
pub(crate) const SHORT_LOG_LEVEL: &str = "EZ_LOG_LEVEL";

/// One variable that is not read as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvProblem {
    /// An `EZ_<SECTION>__<OPTION>` name that is no option.
    Unknown {
        name: String,
        suggestion: Option<String>,
    },
    /// A name ezapi does not read that stands for an option; `set` says what to set.
    Renamed {
        name: String,
        set: String,
        why: RenameReason,
        /// How to write the value, when it differs from the old variable's.
        note: Option<&'static str>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameReason {
    /// The Go ez-api's variable.
    GoName,
    /// `EZ_SERVER_LISTEN`: one underscore where two separate section and option.
    OneUnderscore,
    /// `EZ_DATA_DIR`: the option without its section.
    NoSection,
}

impl fmt::Display for EnvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvProblem::Unknown {
                name,
                suggestion: Some(suggestion),
            } => write!(f, "{name} is not an option; did you mean {suggestion}?"),
            EnvProblem::Unknown {
                name,
                suggestion: None,
            } => write!(
                f,
                "{name} is not an option (options are EZ_<SECTION>__<OPTION>, listed in the README under Configuration)"
            ),
            EnvProblem::Renamed { name, set, why, note } => {
                let why = match why {
                    RenameReason::GoName => "is the Go ez-api name",
                    RenameReason::OneUnderscore => {
                        "is not read (two underscores separate section and option)"
                    }
                    RenameReason::NoSection => "is not read (options are EZ_<SECTION>__<OPTION>)",
                };
                write!(f, "{name} {why}; set {set} instead")?;
                match note {
                    Some(note) => write!(f, " ({note})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The options as `(section, option)`, from the raw configuration's own fields.
pub(crate) fn known_options() -> Vec<(String, String)> {
    use figment::value::Value;
    let Ok(Value::Dict(_, sections)) = Value::serialize(RawConfig::default()) else {
        unreachable!("the raw configuration serializes to a table of sections")
    };
    let mut options = Vec::new();
    for (section, value) in sections {
        if let Value::Dict(_, fields) = value {
            options.extend(fields.into_keys().map(|option| (section.clone(), option)));
        }
    }
    options
}

/// `server.listen` → `EZ_SERVER__LISTEN`.
pub fn env_name(option: &str) -> String {
    format!("EZ_{}", option.replace('.', "__").to_ascii_uppercase())
}

/// What is wrong with the `EZ_` variables among `vars`, in the order given.
pub(crate) fn check<I>(vars: I) -> Vec<EnvProblem>
where
    I: IntoIterator<Item = (String, String)>,
{
    let options = known_options();
    let names: Vec<String> = options
        .iter()
        .map(|(section, option)| env_name(&format!("{section}.{option}")))
        .collect();
    let mut problems = Vec::new();
    for (name, value) in vars {
        let upper = name.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix("EZ_") else {
            continue;
        };
        if upper == SHORT_LOG_LEVEL {
            continue;
        }
        if rest.contains("__") {
            if !names.contains(&upper) {
                let suggestion = closest(&upper, &names).map(str::to_owned);
                problems.push(EnvProblem::Unknown { name, suggestion });
            }
            continue;
        }
        if let Some((set, note)) = go_replacement(rest, &value) {
            problems.push(EnvProblem::Renamed {
                name,
                set,
                why: RenameReason::GoName,
                note,
            });
        } else if let Some(set) = one_underscore_too_few(rest, &names) {
            problems.push(EnvProblem::Renamed {
                name,
                set,
                why: RenameReason::OneUnderscore,
                note: None,
            });
        } else if let Some(set) = option_without_section(rest, &options) {
            problems.push(EnvProblem::Renamed {
                name,
                set,
                why: RenameReason::NoSection,
                note: None,
            });
        }
    }
    problems
}

/// `SERVER_LISTEN` → `EZ_SERVER__LISTEN`, when that is an option.
fn one_underscore_too_few(rest: &str, names: &[String]) -> Option<String> {
    rest.match_indices('_').find_map(|(at, _)| {
        let candidate = format!("EZ_{}__{}", &rest[..at], &rest[at + 1..]);
        names.contains(&candidate).then_some(candidate)
    })
}

/// `DATA_DIR` → `EZ_SERVER__DATA_DIR`, when exactly one section has that option.
fn option_without_section(rest: &str, options: &[(String, String)]) -> Option<String> {
    let wanted = rest.to_ascii_lowercase();
    let mut found = options.iter().filter(|(_, option)| *option == wanted);
    match (found.next(), found.next()) {
        (Some((section, option)), None) => Some(env_name(&format!("{section}.{option}"))),
        _ => None,
    }
}

/// The Go ez-api's variables (without `EZ_`) and what replaces each. Values are shown
/// back only when they cannot be secret (an address, a port, a database number).
fn go_replacement(rest: &str, value: &str) -> Option<(String, Option<&'static str>)> {
    let value = value.trim();
    let address_like = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    let in_the_url = Some("it goes in the URL");
    Some(match rest {
        "REDIS_ADDR" | "REDIS_HOST" => match address_like {
            true => (format!("EZ_REDIS__URL=redis://{value}"), None),
            false => ("EZ_REDIS__URL=redis://HOST:PORT".to_owned(), None),
        },
        "REDIS_PASSWORD" => ("EZ_REDIS__URL=redis://:PASSWORD@HOST:PORT".to_owned(), in_the_url),
        "REDIS_DB" => match !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
            true => (format!("EZ_REDIS__URL=redis://HOST:PORT/{value}"), in_the_url),
            false => ("EZ_REDIS__URL=redis://HOST:PORT/DB".to_owned(), in_the_url),
        },
        "PG_DSN" | "POSTGRES_DSN" | "DATABASE_DSN" | "DB_DSN" | "DSN" | "DB_URL" => {
            if value.starts_with("postgres://") || value.starts_with("postgresql://") {
                ("EZ_DATABASE__URL to the same URL".to_owned(), None)
            } else {
                (
                    "EZ_DATABASE__URL=postgres://USER:PASSWORD@HOST:5432/DBNAME".to_owned(),
                    Some("a URL, not key=value pairs"),
                )
            }
        }
        "LISTEN_ADDR" | "ADDR" | "HTTP_ADDR" | "PORT" | "HTTP_PORT" | "SERVER_PORT" => {
            let port_only = value.trim_start_matches(':');
            if !port_only.is_empty() && port_only.chars().all(|c| c.is_ascii_digit()) {
                // Go's `:8080` listens on every interface; say so rather than narrow it.
                (
                    format!("EZ_SERVER__LISTEN=0.0.0.0:{port_only}"),
                    Some("every interface, as before; 127.0.0.1:PORT is this machine only"),
                )
            } else if address_like && value.contains(':') {
                (format!("EZ_SERVER__LISTEN={value}"), None)
            } else {
                ("EZ_SERVER__LISTEN=HOST:PORT".to_owned(), None)
            }
        }
        "ADMIN_TOKEN" => ("EZ_AUTH__ADMIN_TOKEN".to_owned(), None),
        "JWT_SECRET" => ("EZ_AUTH__JWT_SECRET".to_owned(), None),
        "INTERNAL_STATS_TOKEN" | "STATS_TOKEN" => ("EZ_INTERNAL__STATS_TOKEN".to_owned(), None),
        _ => return None,
    })
}

/// The candidate nearest to `typed`, if near enough to be what was meant: a few edits
/// away, or the longest candidate `typed` begins with (`server.listen_addr`).
pub(crate) fn closest<'a>(typed: &str, candidates: &'a [String]) -> Option<&'a str> {
    let typed = typed.to_ascii_uppercase();
    let near = candidates
        .iter()
        .map(|c| (edit_distance(&typed, &c.to_ascii_uppercase()), c))
        .filter(|(d, c)| *d <= 3 && *d * 3 <= c.len().max(typed.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str());
    near.or_else(|| {
        candidates
            .iter()
            .filter(|c| typed.starts_with(&c.to_ascii_uppercase()))
            .max_by_key(|c| c.len())
            .map(String::as_str)
    })
}

/// Edits (insert, delete, substitute, swap two neighbours) turning `a` into `b`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows of the optimal-string-alignment table: i-2, i-1, i.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            current[j] = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                current[j] = current[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}
