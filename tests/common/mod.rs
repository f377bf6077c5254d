//! Test harness: an in-process relay on 127.0.0.1:0 (serving wss:// with a self-signed
//! certificate that the profiles pin, unless a test asks for plain ws://), registered profiles
//! with their managers, and a raw WebSocket client for speaking the protocol by hand.
//!
//! Waits are bounded by `PATIENCE` so a broken build fails instead of hanging; every wait is
//! for a concrete event, never a sleep standing in for synchronisation.
#![allow(dead_code)]

pub mod backend;
pub mod blobs;
pub mod cli;
pub mod files;
pub mod pg;
pub mod tui;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use sotto::client::account;
use sotto::client::manager::{self, Command, ConnState, Event, ManagerHandle};
use sotto::client::store::{Message, MessageState, Store};
use sotto::relay::{self, RelayConfig};
use sotto::wire::{self, ClientFrame, RelayFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The longest any single expected event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestRelay {
    pub url: String,
    pub dir: PathBuf,
    /// SHA-256 of the certificate the relay serves; None for plain ws://.
    pub fingerprint: Option<sotto::tls::Fingerprint>,
    /// Every frame payload the relay received, in order.
    pub frames: Arc<Mutex<Vec<Vec<u8>>>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestRelay {
    pub async fn start(dir: &Path) -> TestRelay {
        Self::start_with(dir, RelayConfig::default()).await
    }

    pub async fn start_with(dir: &Path, config: RelayConfig) -> TestRelay {
        Self::start_at(dir, "127.0.0.1:0", config).await
    }

    /// Starts a relay on a given address, e.g. the one a stopped relay had. It serves wss://
    /// with the certificate kept in `dir` (created on first start), as `sotto relay` does.
    pub async fn start_at(dir: &Path, addr: &str, config: RelayConfig) -> TestRelay {
        Self::launch(dir, addr, config, true).await
    }

    /// Starts a relay serving plain ws://, for a test that must see the bytes on the wire.
    pub async fn start_plain_at(dir: &Path, addr: &str, config: RelayConfig) -> TestRelay {
        Self::launch(dir, addr, config, false).await
    }

    async fn launch(dir: &Path, addr: &str, mut config: RelayConfig, tls: bool) -> TestRelay {
        let frames: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = frames.clone();
        config.tap = Some(Arc::new(move |f: &[u8]| {
            sink.lock().unwrap().push(f.to_vec())
        }));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let local = listener.local_addr().unwrap();
        let mut fingerprint = None;
        if tls && config.tls.is_none() {
            let cert = sotto::tls::RelayCert::load_or_create(dir, &local.to_string()).unwrap();
            config.tls = Some(cert.server_config().unwrap());
            fingerprint = Some(cert.fingerprint);
        }
        let scheme = if config.tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{local}");
        let cancel = CancellationToken::new();
        let token = cancel.clone();
        let d = dir.to_path_buf();
        let task = tokio::spawn(async move {
            relay::run(listener, &d, config, token)
                .await
                .expect("relay failed");
        });
        TestRelay {
            url,
            dir: dir.to_path_buf(),
            fingerprint,
            frames,
            cancel,
            task,
        }
    }

    /// The `host:port` the relay listens on, to start another one there.
    pub fn addr(&self) -> String {
        self.url.split_once("://").unwrap().1.to_string()
    }

    /// Stops the relay the hard way: its task is aborted mid-flight, as a killed process.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops the relay cleanly and waits until it has closed every connection.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }

    /// Whether `needle` is in any received frame, as raw bytes or inside a decoded
    /// (base64) payload field: a grep of the JSON alone would miss what base64 hides.
    pub fn received_any(&self, needle: &[u8]) -> bool {
        self.frames.lock().unwrap().iter().any(|f| {
            let decoded = match ClientFrame::decode(f) {
                Ok(ClientFrame::Send { body, .. }) => body.0,
                Ok(ClientFrame::SendSealed { envelope, .. })
                | Ok(ClientFrame::SendMulti { envelope, .. }) => envelope.0,
                Ok(ClientFrame::SendGroup { body, .. }) => body.0,
                _ => Vec::new(),
            };
            contains(f, needle) || contains(&decoded, needle)
        })
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether any file directly in `dir` contains `needle` in its raw bytes.
pub fn any_file_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && contains(&std::fs::read(&path).unwrap(), needle) {
            hits.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    hits
}

/// Creates and registers a profile in `dir`.
pub async fn register(dir: &Path, handle: &str, url: &str) {
    let store = Store::open(dir).unwrap();
    account::init(&store, handle, url, SystemTime::now(), &mut rand::rng())
        .await
        .unwrap();
}

/// Replaces the identity key of the (stopped) profile in `dir` at the relay, signed by the
/// old key, as `sotto rekey` does.
pub async fn rekey(dir: &Path, url: &str) {
    let store = Store::open(dir).unwrap();
    account::rekey(&store, url, SystemTime::now(), &mut rand::rng())
        .await
        .unwrap();
}

/// A running client of a registered profile.
pub struct Client {
    pub dir: PathBuf,
    pub handle: ManagerHandle,
}

impl Client {
    /// Starts the manager and waits until it is connected.
    pub async fn start(dir: &Path, url: &str) -> Client {
        Self::start_with(dir, url, manager::Settings::default()).await
    }

    /// As `start`, with these read receipt and typing settings.
    pub async fn start_with(dir: &Path, url: &str, settings: manager::Settings) -> Client {
        let handle =
            manager::spawn_configured(dir, Some(url.to_string()), false, settings).unwrap();
        let mut c = Client {
            dir: dir.to_path_buf(),
            handle,
        };
        c.expect(|e| matches!(e, Event::Connection(ConnState::Online)))
            .await;
        c
    }

    /// As `start_with`, with files travelling through `blobs` instead of the relay.
    pub async fn start_with_blobs(
        dir: &Path,
        url: &str,
        settings: manager::Settings,
        blobs: Arc<dyn sotto::client::attachment::BlobTransport>,
    ) -> Client {
        let handle =
            manager::spawn_with_blobs(dir, Some(url.to_string()), false, settings, Some(blobs))
                .unwrap();
        let mut c = Client {
            dir: dir.to_path_buf(),
            handle,
        };
        c.expect(|e| matches!(e, Event::Connection(ConnState::Online)))
            .await;
        c
    }

    /// Waits for the first event matching `pred`, failing the test after `PATIENCE`.
    pub async fn expect(&mut self, mut pred: impl FnMut(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        // The last events passed over, for the failure message: what came instead.
        let mut passed = std::collections::VecDeque::new();
        loop {
            match tokio::time::timeout_at(deadline, self.handle.events.recv()).await {
                Err(_) => panic!(
                    "no matching event within {PATIENCE:?}; the last ones instead: {passed:#?}"
                ),
                Ok(None) => panic!("the manager stopped"),
                Ok(Some(e)) if pred(&e) => return e,
                Ok(Some(e)) => {
                    if passed.len() == 8 {
                        passed.pop_front();
                    }
                    passed.push_back(e);
                }
            }
        }
    }

    /// Sends a message and waits until the relay has accepted it.
    pub async fn send(&mut self, to: &str, secret: bool, text: &str) -> String {
        match self.try_send(to, secret, text).await {
            Ok(id) => id,
            Err(error) => panic!("send failed: {error}"),
        }
    }

    /// Sends and returns how it ended: Ok(id) once the relay has it, or the failure's text.
    pub async fn try_send(&mut self, to: &str, secret: bool, text: &str) -> Result<String, String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.handle
            .commands
            .send(Command::Send {
                id: id.clone(),
                to: to.into(),
                secret,
                text: text.into(),
                reply_to: None,
            })
            .await
            .unwrap();
        let want = id.clone();
        match self
            .expect(|e| {
                matches!(e, Event::MessageState { id, .. } | Event::MessageFailed { id, .. } if *id == want)
            })
            .await
        {
            // The recipient's receipt can overtake the relay's `ok`: the relay hands an
            // envelope to an online recipient before its commit (docs/architecture.md).
            Event::MessageState {
                state: MessageState::Sent | MessageState::Delivered,
                ..
            } => Ok(id),
            Event::MessageFailed { error, .. } => Err(error),
            other => panic!("unexpected state: {other:?}"),
        }
    }

    /// Waits for an arriving message.
    pub async fn receive(&mut self) -> Message {
        match self
            .expect(|e| matches!(e, Event::Message(m) if !m.outgoing))
            .await
        {
            Event::Message(m) => m,
            _ => unreachable!(),
        }
    }

    /// Drains a freshly started client's backlog; returns the texts that arrived as new.
    pub async fn drain(&mut self) -> Vec<String> {
        let mut texts = Vec::new();
        loop {
            match self
                .expect(|e| matches!(e, Event::Message(_) | Event::Drained))
                .await
            {
                Event::Message(m) => texts.push(m.text),
                _ => return texts,
            }
        }
    }

    /// Returns once the relay has processed everything this client sent before: a directory
    /// lookup travels the same ordered connection as the acks, so its answer comes after them.
    pub async fn barrier(&mut self) {
        let tag = rand::random::<u64>();
        self.handle
            .commands
            .send(Command::AddContact {
                tag,
                handle: "no-such-handle-barrier".into(),
            })
            .await
            .unwrap();
        self.expect(|e| matches!(e, Event::Failed { tag: t, .. } if *t == tag))
            .await;
    }

    /// Stops the manager; everything it stored is committed.
    pub fn stop(self) {
        self.handle.shutdown();
    }

    /// The thread with `peer` as the store holds it.
    pub fn history(&self, peer: &str, secret: bool) -> Vec<Message> {
        history(&self.dir, peer, secret)
    }
}

/// The account id of the registered profile in `dir`.
pub fn account_id(dir: &Path) -> String {
    Store::open(dir).unwrap().registration().unwrap().account_id
}

pub fn history(dir: &Path, peer: &str, secret: bool) -> Vec<Message> {
    let store = Store::open(dir).unwrap();
    let Some(c) = store.contact_by_handle(peer).unwrap() else {
        return Vec::new();
    };
    store.history(&c.account_id, secret, 10_000).unwrap()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `url` with tungstenite's default limits, accepting whatever
/// certificate a wss:// relay presents: the tests that use it probe the protocol, not the
/// transport.
pub async fn dial(url: &str) -> Ws {
    let (endpoint, _) = sotto::tls::Endpoint::first_contact(url, false).unwrap();
    sotto::client::conn::dial(&endpoint, None).await.unwrap()
}

/// A hand-driven protocol client.
pub struct Raw {
    pub ws: Ws,
    pub nonce: Vec<u8>,
}

impl Raw {
    /// Connects (see `dial`) and reads the challenge.
    pub async fn connect(url: &str) -> Raw {
        let ws = dial(url).await;
        let mut raw = Raw {
            ws,
            nonce: Vec::new(),
        };
        match raw.recv().await {
            Some(RelayFrame::Challenge { nonce, .. }) => raw.nonce = nonce.0,
            other => panic!("expected a challenge, got {other:?}"),
        }
        raw
    }

    /// Connects and signs in as the profile in `dir`.
    pub async fn auth(url: &str, dir: &Path) -> Raw {
        let mut raw = Raw::connect(url).await;
        raw.sign_in(dir).await;
        raw
    }

    /// Signs this connection (challenge read) in as the profile in `dir`.
    pub async fn sign_in(&mut self, dir: &Path) {
        let store = Store::open(dir).unwrap();
        let reg = store.registration().unwrap();
        let (identity, _) = account::identity(&store).unwrap();
        let signature = identity
            .private_key()
            .calculate_signature(&wire::auth_message(&self.nonce), &mut rand::rng())
            .unwrap();
        self.send(&ClientFrame::Auth {
            account_id: reg.account_id,
            signature: signature.to_vec().into(),
        })
        .await;
        self.expect(|f| matches!(f, RelayFrame::Authenticated { .. }))
            .await;
    }

    /// Connects as an anonymous (sealed-sending) connection.
    pub async fn anonymous(url: &str) -> Raw {
        let mut raw = Raw::connect(url).await;
        raw.send(&ClientFrame::Anonymous).await;
        raw.expect(|f| matches!(f, RelayFrame::AnonymousOk)).await;
        raw
    }

    pub async fn send(&mut self, f: &ClientFrame) {
        self.send_text(f.encode()).await;
    }

    pub async fn send_text(&mut self, s: String) {
        self.ws.send(WsMessage::text(s)).await.unwrap();
    }

    /// The next frame, or None once the relay has closed the connection.
    pub async fn recv(&mut self) -> Option<RelayFrame> {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the relay said nothing in time");
            match next {
                Some(Ok(WsMessage::Text(t))) => {
                    return Some(RelayFrame::decode(t.as_bytes()).unwrap());
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn expect(&mut self, mut pred: impl FnMut(&RelayFrame) -> bool) -> RelayFrame {
        loop {
            match self.recv().await {
                Some(f) if pred(&f) => return f,
                Some(_) => {}
                None => panic!("connection closed while waiting"),
            }
        }
    }

    /// Reads until the relay closes the connection; returns the frames seen.
    pub async fn until_closed(&mut self) -> Vec<RelayFrame> {
        let mut seen = Vec::new();
        while let Some(f) = self.recv().await {
            seen.push(f);
        }
        seen
    }
}

/// Sets the timer of alice's thread with bob and waits until the relay has the change.
pub async fn set_timer(alice: &mut Client, secret: bool, timer: Option<u32>) {
    set_timer_of(alice, "bob", secret, timer).await
}

/// Sets the timer of `contact`'s (a person's or a group's) thread and waits until the
/// relay has the change.
pub async fn set_timer_of(alice: &mut Client, contact: &str, secret: bool, timer: Option<u32>) {
    let id = uuid::Uuid::new_v4().to_string();
    alice
        .handle
        .commands
        .send(Command::SetTimer {
            id: id.clone(),
            contact: contact.into(),
            secret,
            timer,
        })
        .await
        .unwrap();
    alice
        .expect(
            |e| matches!(e, Event::MessageState { id: i, state: MessageState::Sent } if *i == id),
        )
        .await;
}

/// Waits for the sweeper to report `id` gone; returns when.
pub async fn expired(c: &mut Client, id: &str) -> std::time::Instant {
    c.expect(|e| matches!(e, Event::Expired(gone) if gone.iter().any(|g| g.id == id)))
        .await;
    std::time::Instant::now()
}

/// Searches `c`'s messages for `query` (every thread, or one) and waits for the results.
pub async fn search(
    c: &mut Client,
    query: &str,
    thread: Option<(&str, bool)>,
) -> Result<Vec<sotto::client::store::SearchHit>, String> {
    let tag = rand::random::<u64>();
    c.handle
        .commands
        .send(Command::Search {
            tag,
            query: query.into(),
            thread: thread.map(|(h, s)| (h.to_string(), s)),
        })
        .await
        .unwrap();
    match c
        .expect(|e| {
            matches!(e, Event::SearchResults { tag: t, .. } | Event::Failed { tag: t, .. } if *t == tag)
        })
        .await
    {
        Event::SearchResults { results, .. } => Ok(results),
        Event::Failed { error, .. } => Err(error),
        _ => unreachable!(),
    }
}

/// Runs `f` on the directory of the relay whose state is in `dir` and `db` (either backend),
/// on a blocking thread: for a test to look at what the relay holds.
pub async fn relay_directory<T: Send + 'static>(
    dir: &Path,
    db: &sotto::relay::store::Database,
    f: impl FnOnce(&mut dyn sotto::relay::store::Directory) -> T + Send + 'static,
) -> T {
    let (dir, db) = (dir.to_path_buf(), db.clone());
    tokio::task::spawn_blocking(move || {
        let limits = RelayConfig::default().queue;
        let mut stores = sotto::relay::store::open(&db, &dir, limits).unwrap();
        f(&mut *stores.directory)
    })
    .await
    .unwrap()
}

/// The usual scene: a relay and two registered profiles, alice and bob, in a temp dir.
/// When destructuring, bind `tmp` (as `tmp: _tmp`): `tmp: _` or `..` would drop the temp dir
/// at the end of the `let`, deleting the profiles under the test.
pub struct Scene {
    pub tmp: tempfile::TempDir,
    pub relay_dir: PathBuf,
    pub alice: PathBuf,
    pub bob: PathBuf,
    pub relay: TestRelay,
}

impl Scene {
    pub async fn new() -> Scene {
        Self::with(RelayConfig::default()).await
    }

    pub async fn with(config: RelayConfig) -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let relay_dir = tmp.path().join("relay");
        let (alice, bob) = (tmp.path().join("a"), tmp.path().join("b"));
        let relay = TestRelay::start_with(&relay_dir, config).await;
        register(&alice, "alice", &relay.url).await;
        register(&bob, "bob", &relay.url).await;
        Scene {
            tmp,
            relay_dir,
            alice,
            bob,
            relay,
        }
    }

    /// alice and bob, both started and online.
    pub async fn online(&self) -> (Client, Client) {
        let alice = Client::start(&self.alice, &self.relay.url).await;
        let bob = Client::start(&self.bob, &self.relay.url).await;
        (alice, bob)
    }

    /// A path for another profile or snapshot in the scene's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// The URL and the certificate fingerprint in the line `sotto relay` prints when it is ready:
/// "listening on wss://ADDR (TLS certificate SHA-256 AB:CD:…)" (no fingerprint over ws://).
pub fn listening(line: &str) -> (String, Option<String>) {
    let rest = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (url, note) = rest.split_once(' ').unwrap_or((rest, ""));
    let fingerprint = note
        .strip_prefix("(TLS certificate SHA-256 ")
        .and_then(|f| f.strip_suffix(')'))
        .map(str::to_string);
    (url.to_string(), fingerprint)
}
