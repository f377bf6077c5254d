//! The relay's storage backend an end-to-end test runs on, and `on_each_backend!`, which runs
//! one test body once per backend: SQLite (the default, in the relay's data directory) and
//! PostgreSQL (a fresh database on the server `SOTTO_TEST_POSTGRES_URL` names, the test
//! skipped, saying why, without one). Here is everything a test does to the relay's state
//! that differs between the two; the test bodies do not look at `Backend`'s variants.

use std::path::{Path, PathBuf};

use sotto::relay::RelayConfig;
use sotto::relay::store::Database;

use super::pg::{QueueHold, TestDb};
use super::{Scene, any_file_contains};

/// Defines each listed test twice, as `sqlite::NAME` and `postgres::NAME`, each calling the
/// async function `NAME(backend: Backend)` of the invoking module.
#[macro_export]
macro_rules! on_each_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::backend::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let test = concat!(module_path!(), "::", stringify!($test));
                    let Some(backend) = $crate::common::backend::Backend::postgres(test) else {
                        return;
                    };
                    super::$test(backend).await
                }
            )+
        }
    };
}

/// Where the relay of a test keeps its state.
pub enum Backend {
    /// `relay.db` in the relay's data directory.
    Sqlite,
    /// A database of the test's own, dropped with it.
    Postgres(TestDb),
}

impl Backend {
    /// PostgreSQL for the test `test`, or None, having said why, when there is no server.
    pub fn postgres(test: &str) -> Option<Backend> {
        TestDb::create(test).map(Backend::Postgres)
    }

    pub fn database(&self) -> Database {
        match self {
            Backend::Sqlite => Database::Sqlite,
            Backend::Postgres(db) => Database::Postgres(db.url.clone()),
        }
    }

    /// `base` with its state on this backend.
    pub fn config(&self, base: RelayConfig) -> RelayConfig {
        RelayConfig {
            database: self.database(),
            ..base
        }
    }

    /// The default configuration on this backend.
    pub fn relay_config(&self) -> RelayConfig {
        self.config(RelayConfig::default())
    }

    /// The usual scene (a relay, alice and bob registered) with the relay on this backend.
    pub async fn scene(&self) -> Scene {
        Scene::with(self.relay_config()).await
    }

    /// Whether the relay keeps its state in `relay.db` in its data directory.
    pub fn keeps_relay_db(&self) -> bool {
        matches!(self, Backend::Sqlite)
    }

    /// The arguments that put a `sotto relay` process on this backend.
    pub fn relay_args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite => Vec::new(),
            Backend::Postgres(db) => vec!["--database".into(), db.url.clone()],
        }
    }

    /// Envelopes waiting at the relay (data directory `relay_dir`) for the profile `profile`.
    pub async fn queued_for(&self, relay_dir: &Path, profile: &Path) -> u64 {
        let id = super::account_id(profile);
        match self {
            Backend::Sqlite => {
                super::relay_directory(relay_dir, &self.database(), move |d| {
                    d.queued_for(&id).unwrap()
                })
                .await
            }
            // Read straight from the table: opening the relay's stores would wait for
            // `hold_writer`, which tests hold while they count.
            Backend::Postgres(db) => db.queue_rows_for(&id) as u64,
        }
    }

    /// The one-time (EC, Kyber) prekeys the relay has left for the profile `profile`.
    pub async fn prekeys_left(&self, relay_dir: &Path, profile: &Path) -> (u32, u32) {
        let id = super::account_id(profile);
        super::relay_directory(relay_dir, &self.database(), move |d| {
            d.prekey_count(&id).unwrap()
        })
        .await
    }

    /// Makes the relay's queue writer wait (it stands in for a writer that is behind, a
    /// slow sync under load) until the returned guard is dropped; readers go on. Tests hold
    /// it for milliseconds, far inside the writer's patience.
    pub fn hold_writer(&self, relay_dir: &Path) -> WriterHold {
        match self {
            Backend::Sqlite => {
                let lock = rusqlite::Connection::open(relay_dir.join("relay.db")).unwrap();
                lock.busy_timeout(super::PATIENCE).unwrap();
                lock.execute_batch("BEGIN IMMEDIATE").unwrap();
                WriterHold::Sqlite(lock)
            }
            Backend::Postgres(db) => WriterHold::Postgres(db.hold_queue()),
        }
    }

    /// Where the relay's storage holds `needle`: the files of its data directory that contain
    /// it (on SQLite its database and WAL among them), and on PostgreSQL "queue" if a live
    /// row of the queue does. PostgreSQL promises nothing about the bytes of a deleted row
    /// (docs/protocol.md, "Deleted envelopes on PostgreSQL"), so what can be checked there is
    /// that the row is gone, not that its bytes are.
    pub fn relay_holds(&self, relay_dir: &Path, needle: &[u8]) -> Vec<String> {
        let mut hits = any_file_contains(relay_dir, needle);
        if let Backend::Postgres(db) = self
            && db.queue_rows_containing(needle) > 0
        {
            hits.push("queue".into());
        }
        hits
    }

    /// The relay's state as it is now (relay stopped): its data directory copied to `to`
    /// and, on PostgreSQL, its database copied.
    pub fn snapshot(&self, relay_dir: &Path, to: &Path) -> Snapshot {
        copy_dir(relay_dir, to);
        Snapshot {
            files: to.to_path_buf(),
            db: match self {
                Backend::Sqlite => None,
                Backend::Postgres(db) => Some(db.snapshot()),
            },
        }
    }

    /// Puts the (stopped) relay's state back as `snapshot` holds it.
    pub fn restore(&self, snapshot: &Snapshot, relay_dir: &Path) {
        std::fs::remove_dir_all(relay_dir).unwrap();
        copy_dir(&snapshot.files, relay_dir);
        if let (Backend::Postgres(db), Some(copy)) = (self, &snapshot.db) {
            db.restore(copy);
        }
    }
}

/// The wait `Backend::hold_writer` imposes, lifted on drop.
pub enum WriterHold {
    /// An open `BEGIN IMMEDIATE` transaction on the relay's database.
    Sqlite(rusqlite::Connection),
    Postgres(QueueHold),
}

/// A relay's state at a moment (`Backend::snapshot`).
pub struct Snapshot {
    files: PathBuf,
    db: Option<TestDb>,
}

/// Copies `from` into `to`, subdirectories (the relay's `blobs/`) included.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let into = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &into);
        } else {
            std::fs::copy(&p, into).unwrap();
        }
    }
}
