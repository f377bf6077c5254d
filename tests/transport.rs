//! The encrypted transport: the relay serves wss:// with a self-signed certificate, profiles
//! pin it at init and refuse any other, a network observer between client and relay reads
//! nothing, and plain ws:// is refused off this machine before anything is sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{Client, PATIENCE, Scene, TestRelay, contains, register};
use sotto::client::account::{self, AccountError};
use sotto::client::conn::{self, LinkError};
use sotto::client::manager::{self, ClientError, ConnState, Event};
use sotto::client::store::Store;
use sotto::relay::RelayConfig;
use sotto::tls::{self, Endpoint, Pin, Scheme, TlsError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_pinned_self_signed_certificate_carries_normal_and_secret_messages() {
    let scene = Scene::new().await;
    assert!(scene.relay.url.starts_with("wss://127.0.0.1:"));
    let served = scene.relay.fingerprint.expect("the test relay serves TLS");
    for dir in [&scene.alice, &scene.bob] {
        let pin = account::tls_pin(&Store::open(dir).unwrap()).unwrap();
        assert_eq!(pin, Some(Pin::Certificate(served)));
    }
    let (mut alice, mut bob) = scene.online().await;
    alice.send("bob", false, "normal over tls").await;
    alice.send("bob", true, "secret over tls").await;
    let mut got = [bob.receive().await, bob.receive().await];
    got.sort_by_key(|m| m.secret);
    assert_eq!(
        got.iter()
            .map(|m| (m.text.as_str(), m.secret))
            .collect::<Vec<_>>(),
        [("normal over tls", false), ("secret over tls", true)]
    );
    // The relay still sees what it must (the tap is above TLS): the normal text.
    assert!(scene.relay.received_any(b"normal over tls"));
    assert!(!scene.relay.received_any(b"secret over tls"));
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_certificate_at_the_pinned_address_is_refused_before_any_frame() {
    let Scene {
        relay,
        relay_dir,
        alice: ad,
        tmp,
        ..
    } = Scene::new().await;
    let addr = relay.addr();
    let pinned = relay.fingerprint.unwrap();
    relay.stop().await;

    // An impostor on the same address, with a certificate of its own.
    let impostor =
        TestRelay::start_at(&tmp.path().join("impostor"), &addr, RelayConfig::default()).await;
    let offered = impostor.fingerprint.unwrap();
    assert_ne!(pinned, offered);

    // The link reports the change, and keeps refusing on every retry.
    let mut alice = Client {
        dir: ad.clone(),
        handle: manager::spawn(&ad, None).unwrap(),
    };
    for _ in 0..2 {
        let Event::Connection(ConnState::Offline { reason, .. }) = alice
            .expect(|e| matches!(e, Event::Connection(ConnState::Offline { .. })))
            .await
        else {
            unreachable!()
        };
        assert!(
            reason.contains("the relay's TLS certificate changed")
                && reason.contains(&tls::show(&pinned))
                && reason.contains(&tls::show(&offered))
                && reason.contains("sotto pin-cert"),
            "{reason}"
        );
    }
    alice.stop();

    // The same from a connection made by hand, and from `rekey`'s connection of its own.
    let store = Store::open(&ad).unwrap();
    let endpoint = account::endpoint(&store, None, false).unwrap();
    match conn::dial(&endpoint, None).await {
        Err(LinkError::CertificateChanged(c)) => {
            assert_eq!((c.pinned, c.offered), (pinned, offered));
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("connected to the impostor"),
    }
    let rekey = account::rekey(&store, &impostor.url, SystemTime::now(), &mut rand::rng()).await;
    assert!(
        matches!(
            rekey,
            Err(AccountError::Link(LinkError::CertificateChanged(_)))
        ),
        "{:?}",
        rekey.err()
    );
    // Not one frame reached the impostor.
    assert!(impostor.frames.lock().unwrap().is_empty());
    // What the error tells a user to do when the operator replaced the certificate on
    // purpose (`sotto pin-cert`) makes the TLS connection work; the impostor's trust root
    // would still be refused at its challenge.
    account::set_tls_pin(&store, offered).unwrap();
    let endpoint = account::endpoint(&store, None, false).unwrap();
    assert!(conn::dial(&endpoint, None).await.is_ok());
    account::set_tls_pin(&store, pinned).unwrap();
    drop(store);
    impostor.stop().await;

    // The real relay back on its address, with its certificate from its data directory: the
    // profile connects again.
    let relay = TestRelay::start_at(&relay_dir, &addr, RelayConfig::default()).await;
    assert_eq!(relay.fingerprint, Some(pinned));
    let alice = Client::start(&ad, &relay.url).await;
    alice.stop();
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ws_off_this_machine_is_refused_before_any_connection() {
    // 192.0.2.1 is TEST-NET-1: nothing answers there, so a connection attempt would hang
    // until its timeout instead of failing at once.
    let remote = "ws://192.0.2.1:7878";
    let refused = tls::check_url(remote, false).unwrap_err();
    assert!(matches!(refused, TlsError::Insecure { ref host } if host == "192.0.2.1"));
    let text = refused.to_string();
    assert!(
        text.contains("wss://") && text.contains("--insecure-transport"),
        "{text}"
    );
    // With the opt-in the URL is accepted (and not connected to here).
    assert_eq!(tls::check_url(remote, true).unwrap(), Scheme::Ws);
    assert!(Endpoint::new(remote, None, true).is_ok());
    // Loopback is fine without it.
    for local in [
        "ws://127.0.0.1:7878",
        "ws://localhost:7878",
        "ws://[::1]:7878",
    ] {
        assert_eq!(tls::check_url(local, false).unwrap(), Scheme::Ws);
    }

    // init refuses it before generating keys or opening a socket.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("z")).unwrap();
    let init = tokio::time::timeout(
        Duration::from_secs(5),
        account::init(&store, "zed", remote, SystemTime::now(), &mut rand::rng()),
    )
    .await
    .expect("refused at once, without a connection attempt");
    assert!(
        matches!(
            init,
            Err(AccountError::Transport(TlsError::Insecure { .. }))
        ),
        "{:?}",
        init.err()
    );
    assert!(store.registration().is_err());

    // A registered profile pointed at it: the manager does not start.
    let scene = Scene::new().await;
    match manager::spawn(&scene.alice, Some(remote.to_string())) {
        Err(ClientError::Account(AccountError::Transport(TlsError::Insecure { .. }))) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a manager started on plain ws:// to another machine"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_from_before_tls_keeps_working_over_plain_ws_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_plain_at(
        &tmp.path().join("relay"),
        "127.0.0.1:0",
        RelayConfig::default(),
    )
    .await;
    assert!(relay.url.starts_with("ws://127.0.0.1:"));
    let (ad, bd) = (tmp.path().join("a"), tmp.path().join("b"));
    register(&ad, "alice", &relay.url).await;
    register(&bd, "bob", &relay.url).await;
    assert_eq!(account::tls_pin(&Store::open(&ad).unwrap()).unwrap(), None);
    let mut alice = Client::start(&ad, &relay.url).await;
    let mut bob = Client::start(&bd, &relay.url).await;
    alice.send("bob", false, "plain, on this machine").await;
    assert_eq!(bob.receive().await.text, "plain, on this machine");
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_that_trusts_certificate_authorities_refuses_a_self_signed_relay() {
    let scene = Scene::new().await;
    scene.relay.frames.lock().unwrap().clear();
    let endpoint = Endpoint::new(&scene.relay.url, Some(Pin::Ca), false).unwrap();
    match conn::dial(&endpoint, None).await {
        Err(LinkError::Unreachable { reason, .. }) => {
            assert!(reason.contains("invalid peer certificate"), "{reason}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a self-signed certificate passed as CA-verified"),
    }
    assert!(scene.relay.frames.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_in_its_handshake_does_not_hold_up_the_next() {
    let scene = Scene::new().await;
    // Opens TCP and says nothing: its TLS handshake waits in its own task.
    let _stalled = TcpStream::connect(scene.relay.addr()).await.unwrap();
    let alice = tokio::time::timeout(PATIENCE, Client::start(&scene.alice, &scene.relay.url))
        .await
        .expect("the relay kept accepting");
    alice.stop();
}

/// A TCP forwarder between client and relay that keeps every byte it passes, both ways: what
/// a network observer sees.
async fn observer(to: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(relay) = TcpStream::connect(&to).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (rr, rw) = relay.into_split();
            tokio::spawn(pump(cr, rw, log.clone()));
            tokio::spawn(pump(rr, cw, log.clone()));
        }
    });
    (addr, seen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Whether `text` is in `bytes` as they are or inside a base64 field (frames carry message
/// bodies in base64; an observer decodes them as easily as the relay does).
fn readable(bytes: &[u8], text: &str) -> bool {
    use base64::Engine as _;
    if contains(bytes, text.as_bytes()) {
        return true;
    }
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    bytes
        .split(|b| !b64(b))
        .filter(|run| run.len() >= 16)
        .filter_map(|run| base64::engine::general_purpose::STANDARD.decode(run).ok())
        .any(|decoded| contains(&decoded, text.as_bytes()))
}

/// alice sends bob a normal message through the observer; returns what the observer saw.
/// (Frames from a client are masked, as WebSocket requires; frames from the relay are not.)
async fn observed_normal_message(tls: bool, text: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay");
    let relay = if tls {
        TestRelay::start_at(&dir, "127.0.0.1:0", RelayConfig::default()).await
    } else {
        TestRelay::start_plain_at(&dir, "127.0.0.1:0", RelayConfig::default()).await
    };
    let (via, seen) = observer(relay.addr()).await;
    let url = format!("{}://{via}", if tls { "wss" } else { "ws" });
    let (ad, bd) = (tmp.path().join("a"), tmp.path().join("b"));
    register(&ad, "alice", &url).await;
    register(&bd, "bob", &url).await;
    let mut alice = Client::start(&ad, &url).await;
    let mut bob = Client::start(&bd, &url).await;
    alice.send("bob", false, text).await;
    assert_eq!(bob.receive().await.text, text);
    alice.stop();
    bob.stop();
    relay.stop().await;
    let bytes = seen.lock().unwrap().clone();
    assert!(!bytes.is_empty());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_observer_reads_normal_messages_and_handles_over_ws_but_not_over_wss() {
    let text = "the observer should not read this";
    // The observer works: over plain ws:// it reads the text and the handles.
    let plain = observed_normal_message(false, text).await;
    assert!(readable(&plain, text));
    assert!(readable(&plain, "\"alice\""));
    // Over wss:// it reads neither.
    let encrypted = observed_normal_message(true, text).await;
    assert!(!readable(&encrypted, text));
    assert!(!readable(&encrypted, "\"alice\""));
    assert!(!readable(&encrypted, "\"bob\""));
}
