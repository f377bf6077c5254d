//! Desktop notifications through a real D-Bus daemon: a private session bus started by the
//! test, with a stand-in for the desktop's notification service that records what it is asked
//! to show. One test in this file, because it points this process's session bus at its own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sotto::client::store::{Message, MessageKind, MessageState};
use sotto::tui::notifier::{Notifier, Surroundings, Via};
use sotto::tui::notify::{self, Mode};

const WAIT: Duration = Duration::from_secs(20);

/// What the service was asked to show: (app name, summary, body).
type Shown = (String, String, String);

struct FakeService {
    shown: tokio::sync::mpsc::UnboundedSender<Shown>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl FakeService {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        let _ = self.shown.send((app_name, summary, body));
        1
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into(), "body-markup".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "fake".into(),
            "sotto-tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

/// A `dbus-daemon` on a private socket, stopped when dropped.
struct Bus {
    child: Child,
    address: String,
}

impl Bus {
    fn start(dir: &std::path::Path) -> Bus {
        let config = dir.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>"#,
                dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs (Debian package dbus-daemon; .ci/run installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "bus address: {address:?}");
        Bus { child, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn arriving(secret: bool, text: &str) -> Message {
    Message {
        seq: 1,
        id: "m1".into(),
        contact: "bob".into(),
        secret,
        outgoing: false,
        text: text.into(),
        sent_at: 1,
        state: MessageState::Received,
        kind: MessageKind::Text,
        timer: None,
        expires_at: None,
        reply: None,
        reactions: Vec::new(),
        edited: false,
        deleted: false,
        attachment: None,
        author: None,
    }
}

#[test]
fn notifications_reach_the_desktop_service_without_markup_or_secret_text_and_fall_back_to_the_terminal()
 {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    // SAFETY: set before this test starts any thread; it is the only test in this binary.
    unsafe { std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &bus.address) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (shown_tx, mut shown) = tokio::sync::mpsc::unbounded_channel();
        let service = zbus::connection::Builder::address(bus.address.as_str())
            .name("org.freedesktop.Notifications")
            .serve_at(
                "/org/freedesktop/Notifications",
                FakeService { shown: shown_tx },
            )
            .build()
            .await
            .expect("the stand-in service takes its name on the private bus");
        let mut next_shown = async || {
            tokio::time::timeout(WAIT, shown.recv())
                .await
                .expect("the service was asked to show a notification")
                .unwrap()
        };

        let around = Surroundings {
            session_bus: true,
            ..Surroundings::default()
        };
        let mut notifier = Notifier::new(Via::Auto, &around);
        assert!(notifier.to_desktop());

        // A normal message: sender and preview, its markup shown as text.
        let normal = arriving(
            false,
            "look <img src=\"http://tracker.example/p.png\"> & see",
        );
        let n = notify::for_message(Mode::All, &normal).unwrap();
        assert_eq!(
            notifier.deliver(n),
            None,
            "the desktop takes it, not the terminal"
        );
        let (app, summary, body) = next_shown().await;
        assert_eq!((app.as_str(), summary.as_str()), ("sotto", "sotto"));
        assert_eq!(
            body,
            "bob: look &lt;img src=\"http://tracker.example/p.png\"&gt; &amp; see"
        );

        // A secret message: only its sender reaches the desktop.
        let secret = arriving(true, "SECRET-MARKER-7f3a");
        let n = notify::for_message(Mode::All, &secret).unwrap();
        assert_eq!(notifier.deliver(n), None);
        let (_, _, body) = next_shown().await;
        assert_eq!(body, "new secret message from bob");
        assert!(!body.contains("SECRET-MARKER"));

        // The service goes away: the notification comes back for the terminal, and the
        // ones after it go to the terminal at once.
        drop(service);
        let n = notify::for_message(Mode::All, &arriving(false, "are you there")).unwrap();
        if let Some(seq) = notifier.deliver(n) {
            panic!("the desktop thread should have taken it first, got {seq:?}");
        }
        let seq = tokio::time::timeout(WAIT, notifier.refused())
            .await
            .expect("a refused notification comes back for the terminal");
        assert_eq!(seq, "\x1b]9;sotto · bob: are you there\x1b\\");
        assert!(!notifier.to_desktop());
        let n = notify::for_message(Mode::All, &arriving(false, "hello?")).unwrap();
        assert_eq!(
            notifier.deliver(n).as_deref(),
            Some("\x1b]9;sotto · bob: hello?\x1b\\")
        );
    });
}
