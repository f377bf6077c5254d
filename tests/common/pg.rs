//! PostgreSQL for the tests: a database of its own for each test, created on the server that
//! `SOTTO_TEST_POSTGRES_URL` names (`scripts/pg-test-cluster` starts a throwaway one) and
//! dropped when the test is done with it.
//!
//! Without the variable a PostgreSQL test cannot run: `TestDb::create` then writes one line
//! saying that the test is skipped and why, straight to stderr (past the test harness's
//! capture, so that it shows in a plain `cargo test`), and the test returns.

use std::io::Write as _;

/// The variable naming the server the tests create their databases on.
pub const URL_VAR: &str = "SOTTO_TEST_POSTGRES_URL";

/// A fresh, empty database, dropped (with any connection still open to it) on drop.
pub struct TestDb {
    /// Connects to this database; what a relay is given as `--database`.
    pub url: String,
    server: String,
    name: String,
}

impl TestDb {
    /// A fresh database for the test `test`, or None, having said so, when no server is
    /// configured.
    pub fn create(test: &str) -> Option<TestDb> {
        let Ok(server) = std::env::var(URL_VAR) else {
            let line = format!(
                "skipped {test}: {URL_VAR} is not set, so there is no PostgreSQL to test against \
                 (run it under scripts/pg-test-cluster)\n"
            );
            // One write, so that tests running in parallel do not interleave their lines.
            let _ = std::io::stderr().write_all(line.as_bytes());
            return None;
        };
        let name = format!("sotto_test_{}", uuid::Uuid::new_v4().simple());
        let url = with_dbname(&server, &name);
        let sql = format!("CREATE DATABASE {name}");
        on_server(&server, &sql)
            .unwrap_or_else(|e| panic!("cannot create a test database on {URL_VAR}: {e}"));
        Some(TestDb { url, server, name })
    }
}

impl TestDb {
    /// A relay's default configuration with its state in this database.
    pub fn relay_config(&self) -> sotto::relay::RelayConfig {
        sotto::relay::RelayConfig {
            database: sotto::relay::store::Database::Postgres(self.url.clone()),
            ..sotto::relay::RelayConfig::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // FORCE: a relay the test killed may not have closed its connections yet.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = on_server(&self.server, &sql) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// `server`'s connection string naming the database `name` instead: a URL gets it as a query
/// parameter (which overrides the path), a `key=value` string as one more pair.
fn with_dbname(server: &str, name: &str) -> String {
    if server.starts_with("postgres://") || server.starts_with("postgresql://") {
        let sep = if server.contains('?') { '&' } else { '?' };
        format!("{server}{sep}dbname={name}")
    } else {
        format!("{server} dbname={name}")
    }
}

/// Runs `sql` on `server`. On a thread of its own: the `postgres` client blocks on a runtime
/// of its own, which must not be started from inside a test's async runtime.
fn on_server(server: &str, sql: &str) -> Result<(), postgres::Error> {
    let (server, sql) = (server.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&server, postgres::NoTls)?;
        client.batch_execute(&sql)
    })
    .join()
    .expect("the PostgreSQL helper thread panicked")
}
