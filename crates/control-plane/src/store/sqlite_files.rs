//! Who may read the SQLite database: only the user running ezapi. The database holds the
//! JWT secret and upstream credentials, so any local reader of `ezapi.db` could forge a
//! master session. The data directory is created `0700` and the database files `0600`.
//!
//! SQLite creates its `-wal` and `-shm` side files with the mode of the database file,
//! so creating the database `0600` before sqlx opens it covers them; files left looser
//! by an older version are tightened at open (they are ezapi's own). A data directory
//! that already exists is the operator's: it is not changed, only warned about when
//! others can read it.

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Mode of the data directory ezapi creates.
pub const DATA_DIR_MODE: u32 = 0o700;
/// Mode of the database file and its side files.
pub const DB_FILE_MODE: u32 = 0o600;
/// SQLite's side files, next to the database: `{db}-wal`, `{db}-shm`, `{db}-journal`.
const SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The file a SQLite URL names; `None` for an in-memory database.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (!path.as_os_str().is_empty()).then(|| path.to_path_buf())
}

/// Creates `dir` (and missing parents) `0700`; an existing directory is left as it is,
/// with a warning when group or others may read or enter it.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DATA_DIR_MODE)
                .create(dir)?;
        }
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{mode:o}"),
                "the data directory is open to other users; it holds the database with the JWT \
                 secret and upstream credentials: chmod 700 it"
            );
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Before sqlx opens the database of `url` at `path`: creates the file `0600` when the
/// URL lets sqlx create a missing database (`mode=rwc`; SQLite would use the process
/// umask, usually `0644`), and tightens the database and its side files when they exist
/// with a looser mode. Called again once the pool is open, for files created meanwhile.
pub fn secure_database_files(url: &str, path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if url.contains("mode=rwc") {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(DB_FILE_MODE)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        tighten(path)?;
        for suffix in SIDE_SUFFIXES {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            tighten(Path::new(&side))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (url, path);
    Ok(())
}

/// Sets `path` to [`DB_FILE_MODE`] when it exists with more.
#[cfg(unix)]
fn tighten(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if mode & !DB_FILE_MODE != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DB_FILE_MODE))?;
        tracing::info!(file = %path.display(), was = format!("{mode:o}"), "database file made private (0600)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite://./data/ezapi.db?mode=rwc"),
            Some(PathBuf::from("./data/ezapi.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/ezapi/ezapi.db"),
            Some(PathBuf::from("/var/lib/ezapi/ezapi.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://?mode=memory"), None);
    }
}
