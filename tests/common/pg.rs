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
    /// Ends every relay's listening connection to this database (`LISTEN sotto_mail`) and
    /// keeps them from connecting again until `let_connect`: the relays hear nothing
    /// meanwhile, as when PostgreSQL restarts or a network drops. Returns how many were ended,
    /// once they are gone.
    pub fn deafen_relays(&self) -> usize {
        on_server(
            &self.server,
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.name),
        )
        .unwrap();
        let mut admin = postgres::Client::connect(&self.server, postgres::NoTls).unwrap();
        let listening = "SELECT pid FROM pg_stat_activity
                         WHERE datname = $1 AND query = 'LISTEN sotto_mail'";
        let pids: Vec<i32> = admin
            .query(listening, &[&self.name])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for pid in &pids {
            admin
                .execute("SELECT pg_terminate_backend($1)", &[pid])
                .unwrap();
        }
        // Terminating only signals the backends: wait until they are gone, so that no word
        // sent from now on can still reach them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !admin.query(listening, &[&self.name]).unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the listening connections did not end"
            );
            std::thread::yield_now();
        }
        pids.len()
    }

    /// Lets the relays connect to this database again (see `deafen_relays`).
    pub fn let_connect(&self) {
        on_server(
            &self.server,
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name),
        )
        .unwrap();
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

impl TestDb {
    /// A copy of this database as it is now, itself dropped on drop: the relay's state at a
    /// moment, to go back to with `restore`. No relay may be connected to it meanwhile.
    pub fn snapshot(&self) -> TestDb {
        let name = format!("sotto_test_{}", uuid::Uuid::new_v4().simple());
        let sql = format!("CREATE DATABASE {name} TEMPLATE {}", self.name);
        on_server(&self.server, &sql)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e:?}", self.name));
        TestDb {
            url: with_dbname(&self.server, &name),
            server: self.server.clone(),
            name,
        }
    }

    /// Puts this database back as `snapshot` holds it.
    pub fn restore(&self, snapshot: &TestDb) {
        // Two statements sent apart: in one string they would form a transaction, which
        // neither may run in.
        for sql in [
            format!("DROP DATABASE {} WITH (FORCE)", self.name),
            format!("CREATE DATABASE {} TEMPLATE {}", self.name, snapshot.name),
        ] {
            on_server(&self.server, &sql)
                .unwrap_or_else(|e| panic!("cannot restore {}: {e:?}", self.name));
        }
    }

    /// How many live rows of the relay's queue have `needle` in their payload.
    pub fn queue_rows_containing(&self, needle: &[u8]) -> i64 {
        self.count(
            "SELECT count(*) FROM queue WHERE position($1::bytea IN payload) > 0",
            needle.to_vec(),
        )
    }

    /// How many rows of the relay's queue are for the account `recipient`. A plain read:
    /// unlike opening the relay's stores (which prepares the queue's writes), it goes on
    /// while `hold_queue` holds the table.
    pub fn queue_rows_for(&self, recipient: &str) -> i64 {
        self.count(
            "SELECT count(*) FROM queue WHERE recipient = $1",
            recipient.to_string(),
        )
    }

    /// Runs the counting query `sql` with the one parameter `param` on this database.
    fn count<P: postgres::types::ToSql + Sync + Send + 'static>(&self, sql: &str, param: P) -> i64 {
        let (url, sql) = (self.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
            let row = client.query_one(&sql, &[&param])?;
            Ok::<i64, postgres::Error>(row.get(0))
        })
        .join()
        .expect("the PostgreSQL helper thread panicked")
        .unwrap_or_else(|e| panic!("cannot query the test database: {e}"))
    }

    /// Holds a lock on the relay's queue table that lets readers through but makes every
    /// writer (insert, delete) wait, until the returned guard is dropped: it stands in for a
    /// queue writer that is behind, as `BEGIN IMMEDIATE` does on SQLite. Returns once the lock
    /// is held.
    pub fn hold_queue(&self) -> QueueHold {
        let url = self.url.clone();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = client.transaction().unwrap();
            // EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every INSERT and DELETE takes,
            // not with the ACCESS SHARE of a SELECT.
            tx.batch_execute("LOCK TABLE queue IN EXCLUSIVE MODE")
                .unwrap();
            held_tx.send(()).unwrap();
            // Released (rolled back) when the guard is dropped.
            let _ = release_rx.recv();
        });
        held_rx
            .recv()
            .expect("the thread taking the queue's lock failed");
        QueueHold {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

/// The lock `TestDb::hold_queue` took; dropping it lets the writers go on.
pub struct QueueHold {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for QueueHold {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
