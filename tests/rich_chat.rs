//! Replies, reactions, edits and deletions end to end over a real relay, in both threads:
//! each arrives and shows, a peer cannot change what it did not write, nothing crosses from
//! one thread to the other, and what is deleted or expires leaves no text behind on disk.

mod common;

use common::{Client, Raw, Scene, any_file_contains};
use sotto::client::content::{Body, Content, Quote};
use sotto::client::manager::{Command, Event};
use sotto::client::store::{Message, MessageKind, MessageState, Store};
use sotto::wire::{ClientFrame, RelayFrame};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Hands `cmd` (which names the change `id`) to the client and waits until the relay has it;
/// Err with the failure's text otherwise.
async fn change(c: &mut Client, id: &str, cmd: Command) -> Result<(), String> {
    c.handle.commands.send(cmd).await.unwrap();
    match c
        .expect(|e| {
            matches!(e, Event::MessageState { id: i, .. } | Event::MessageFailed { id: i, .. } if i == id)
        })
        .await
    {
        Event::MessageState {
            state: MessageState::Sent,
            ..
        } => Ok(()),
        Event::MessageFailed { error, .. } => Err(error),
        other => panic!("unexpected: {other:?}"),
    }
}

async fn react(c: &mut Client, to: &str, secret: bool, target: &str, emoji: &str) {
    let id = new_id();
    let cmd = Command::React {
        id: id.clone(),
        contact: to.into(),
        secret,
        target: target.into(),
        emoji: Some(emoji.into()),
    };
    change(c, &id, cmd).await.unwrap();
}

async fn reply(c: &mut Client, to: &str, secret: bool, target: &str, text: &str) -> String {
    let id = new_id();
    let cmd = Command::Send {
        id: id.clone(),
        to: to.into(),
        secret,
        text: text.into(),
        reply_to: Some(target.into()),
    };
    change(c, &id, cmd).await.unwrap();
    id
}

/// The next change the peer made to one of the client's messages.
async fn changed(c: &mut Client) -> (Message, MessageKind) {
    match c
        .expect(|e| matches!(e, Event::MessageChanged { change, .. } if !change.outgoing))
        .await
    {
        Event::MessageChanged { message, change } => (message, change.kind),
        _ => unreachable!(),
    }
}

/// The next text that arrives (timer lines skipped).
async fn next_text(c: &mut Client) -> Message {
    loop {
        let m = c.receive().await;
        if m.kind == MessageKind::Text {
            return m;
        }
    }
}

fn find(c: &Client, peer: &str, secret: bool, id: &str) -> Message {
    c.history(peer, secret)
        .into_iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("{id} is not in the thread"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reactions_edits_and_deletions_arrive_and_show_in_both_threads() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    for secret in [false, true] {
        let hello = alice.send("bob", secret, "hello there").await;
        assert_eq!(next_text(&mut bob).await.id, hello);

        // bob answers it: alice's copy quotes her own message.
        let answer = reply(&mut bob, "alice", secret, &hello, "hi back").await;
        let got = next_text(&mut alice).await;
        assert_eq!(got.id, answer);
        let q = got.reply.expect("the reply quotes");
        assert_eq!(
            (q.id.as_str(), q.excerpt.as_str(), q.gone),
            (hello.as_str(), "hello there", false)
        );

        // bob reacts; alice sees one 👍, not hers.
        react(&mut bob, "alice", secret, &hello, "👍").await;
        let (m, kind) = changed(&mut alice).await;
        assert_eq!(
            (m.id.as_str(), kind),
            (hello.as_str(), MessageKind::Reaction)
        );
        assert_eq!(m.reactions.len(), 1);
        assert_eq!(
            (
                m.reactions[0].emoji.as_str(),
                m.reactions[0].count,
                m.reactions[0].mine
            ),
            ("👍", 1, false)
        );
        // alice gives the same: two of them, one hers.
        react(&mut alice, "bob", secret, &hello, "👍").await;
        let (m, _) = changed(&mut bob).await;
        assert_eq!((m.reactions[0].count, m.reactions[0].mine), (2, true));
        // The same emoji again takes bob's away.
        react(&mut bob, "alice", secret, &hello, "👍").await;
        let (m, _) = changed(&mut alice).await;
        assert_eq!((m.reactions[0].count, m.reactions[0].mine), (1, true));

        // alice edits her message: bob sees the new text, marked edited.
        let id = new_id();
        let cmd = Command::Edit {
            id: id.clone(),
            contact: "bob".into(),
            secret,
            target: hello.clone(),
            text: "hello everyone".into(),
        };
        change(&mut alice, &id, cmd).await.unwrap();
        let (m, kind) = changed(&mut bob).await;
        assert_eq!(kind, MessageKind::Edit);
        assert_eq!((m.text.as_str(), m.edited), ("hello everyone", true));
        assert_eq!(find(&bob, "alice", secret, &hello).text, "hello everyone");

        // alice deletes it for everyone: bob keeps a tombstone, and his reply's quote is gone.
        let id = new_id();
        let cmd = Command::Delete {
            id: id.clone(),
            contact: "bob".into(),
            secret,
            target: hello.clone(),
            for_everyone: true,
        };
        change(&mut alice, &id, cmd).await.unwrap();
        let (m, kind) = changed(&mut bob).await;
        assert_eq!(kind, MessageKind::Delete);
        assert!(
            m.deleted && m.text.is_empty() && m.reactions.is_empty(),
            "{m:?}"
        );
        for side in [(&alice, "bob"), (&bob, "alice")] {
            let tomb = find(side.0, side.1, secret, &hello);
            assert!(tomb.deleted && tomb.text.is_empty() && tomb.reactions.is_empty());
            let r = find(side.0, side.1, secret, &answer).reply.unwrap();
            assert!(r.gone && r.excerpt.is_empty(), "{r:?}");
        }

        // Delete for me: gone here only.
        let id = new_id();
        alice
            .handle
            .commands
            .send(Command::Delete {
                id,
                contact: "bob".into(),
                secret,
                target: answer.clone(),
                for_everyone: false,
            })
            .await
            .unwrap();
        alice
            .expect(|e| matches!(e, Event::MessageRemoved(g) if g.id == answer))
            .await;
        assert!(alice.history("bob", secret).iter().all(|m| m.id != answer));
        assert!(bob.history("alice", secret).iter().any(|m| m.id == answer));
    }
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_rules_forbid_is_refused_before_anything_is_sent() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    let hers = alice.send("bob", true, "mine").await;
    next_text(&mut bob).await;
    let normal = alice.send("bob", false, "normal one").await;
    next_text(&mut bob).await;
    let attempts = [
        // Not his to edit or delete for everyone.
        Command::Edit {
            id: new_id(),
            contact: "alice".into(),
            secret: true,
            target: hers.clone(),
            text: "forged".into(),
        },
        Command::Delete {
            id: new_id(),
            contact: "alice".into(),
            secret: true,
            target: hers.clone(),
            for_everyone: true,
        },
        // A reaction or a reply from the other thread.
        Command::React {
            id: new_id(),
            contact: "alice".into(),
            secret: false,
            target: hers.clone(),
            emoji: Some("👍".into()),
        },
        Command::Send {
            id: new_id(),
            to: "alice".into(),
            secret: true,
            text: "across".into(),
            reply_to: Some(normal.clone()),
        },
        Command::React {
            id: new_id(),
            contact: "alice".into(),
            secret: true,
            target: hers.clone(),
            emoji: Some("two words".into()),
        },
    ];
    for cmd in attempts {
        let id = match &cmd {
            Command::Edit { id, .. }
            | Command::Delete { id, .. }
            | Command::React { id, .. }
            | Command::Send { id, .. } => id.clone(),
            _ => unreachable!(),
        };
        let error = change(&mut bob, &id, cmd).await.unwrap_err();
        assert!(
            ["only your own", "no message", "one emoji"]
                .iter()
                .any(|w| error.contains(w)),
            "{error}"
        );
    }
    bob.barrier().await;
    let m = find(&bob, "alice", true, &hers);
    assert!(m.reactions.is_empty() && !m.edited && !m.deleted);
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}

/// Sends `body` from the profile in `from` to `to_dir`'s account in the normal thread, as a
/// modified client could (the client itself refuses to).
async fn forge(url: &str, from: &std::path::Path, to_dir: &std::path::Path, bodies: Vec<Body>) {
    let to = common::account_id(to_dir);
    let mut raw = Raw::auth(url, from).await;
    for (req, body) in bodies.into_iter().enumerate() {
        raw.send(&ClientFrame::Send {
            req: req as u64 + 1,
            to: to.clone(),
            body: Content::of(body).encode().into(),
            expires_at: None,
            online_only: false,
        })
        .await;
        raw.expect(|f| matches!(f, RelayFrame::Ok { .. })).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_edit_or_delete_our_message_nor_reach_across_threads() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    let ours = alice.send("bob", false, "alice wrote this").await;
    let secret = alice.send("bob", true, "a secret one").await;
    next_text(&mut bob).await;
    next_text(&mut bob).await;
    bob.stop();
    let now = 1;
    forge(
        &scene.relay.url,
        &scene.bob,
        &scene.alice,
        vec![
            Body::Edit {
                id: new_id(),
                target: ours.clone(),
                text: "bob rewrote it".into(),
                sent_at: now,
            },
            Body::Delete {
                id: new_id(),
                target: ours.clone(),
                sent_at: now,
            },
            // Normal-thread references to a secret-thread message.
            Body::Reaction {
                id: new_id(),
                target: secret.clone(),
                emoji: Some("👎".into()),
                sent_at: now,
            },
            Body::Text {
                id: "cross-reply".into(),
                text: "quoting the secret thread".into(),
                sent_at: now,
                timer: None,
                reply_to: Some(Quote {
                    id: secret.clone(),
                    excerpt: "a secret one".into(),
                }),
            },
            // The control: a reaction that keeps the rules lands, after all of the above.
            Body::Reaction {
                id: new_id(),
                target: ours.clone(),
                emoji: Some("👍".into()),
                sent_at: now,
            },
        ],
    )
    .await;
    let (m, kind) = changed(&mut alice).await;
    assert_eq!(
        (m.id.as_str(), kind),
        (ours.as_str(), MessageKind::Reaction)
    );
    let mine = find(&alice, "bob", false, &ours);
    assert_eq!(mine.text, "alice wrote this");
    assert!(!mine.edited && !mine.deleted);
    assert!(find(&alice, "bob", true, &secret).reactions.is_empty());
    let cross = find(&alice, "bob", false, "cross-reply");
    assert_eq!(cross.text, "quoting the secret thread");
    assert_eq!(cross.reply, None, "a quote of the other thread was kept");
    alice.stop();
    scene.relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_from_a_newer_sotto_is_kept_as_an_unsupported_message() {
    let scene = Scene::new().await;
    let mut alice = Client::start(&scene.alice, &scene.relay.url).await;
    let to = common::account_id(&scene.alice);
    let mut raw = Raw::auth(&scene.relay.url, &scene.bob).await;
    raw.send(&ClientFrame::Send {
        req: 1,
        to,
        body: br#"{"v":2,"kind":"sticker","id":"s1","pack":"cats"}"#
            .to_vec()
            .into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| matches!(f, RelayFrame::Ok { .. })).await;
    let m = alice.receive().await;
    assert_eq!(m.kind, MessageKind::Unsupported);
    assert_eq!(alice.history("bob", false).len(), 1);
    alice.stop();
    scene.relay.stop().await;
}

/// Every file of both profiles that holds `marker`.
fn on_disk(scene: &Scene, marker: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for dir in [&scene.alice, &scene.bob] {
        for f in any_file_contains(dir, marker.as_bytes()) {
            hits.push(format!(
                "{}/{f}",
                dir.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_for_everyone_leaves_the_text_in_no_file_of_either_profile() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    for (secret, marker, control) in [
        (true, "RICH-DELETE-MARKER-4c1a", "RICH-KEEP-CONTROL-77e2"),
        (false, "RICH-DELETE-NORMAL-91b0", "RICH-KEEP-NORMAL-0d3f"),
    ] {
        let gone = alice.send("bob", secret, marker).await;
        next_text(&mut bob).await;
        alice.send("bob", secret, control).await;
        next_text(&mut bob).await;
        // bob quotes it and reacts: the excerpt is a copy of the text too.
        reply(&mut bob, "alice", secret, &gone, "quoting it").await;
        next_text(&mut alice).await;
        react(&mut bob, "alice", secret, &gone, "😮").await;
        changed(&mut alice).await;
        let id = new_id();
        let cmd = Command::Delete {
            id: id.clone(),
            contact: "bob".into(),
            secret,
            target: gone.clone(),
            for_everyone: true,
        };
        change(&mut alice, &id, cmd).await.unwrap();
        changed(&mut bob).await;
        alice.barrier().await;
        bob.barrier().await;
        assert_eq!(
            on_disk(&scene, marker),
            Vec::<String>::new(),
            "while running"
        );
        // The control: the search finds a text that is still there, on both sides.
        let found = on_disk(&scene, control);
        assert!(found.iter().any(|h| h.starts_with("a/")), "{found:?}");
        assert!(found.iter().any(|h| h.starts_with("b/")), "{found:?}");
    }
    alice.stop();
    bob.stop();
    for marker in ["RICH-DELETE-MARKER-4c1a", "RICH-DELETE-NORMAL-91b0"] {
        assert_eq!(
            on_disk(&scene, marker),
            Vec::<String>::new(),
            "after stopping"
        );
    }
    scene.relay.stop().await;
}

async fn set_timer(c: &mut Client, to: &str, secret: bool, secs: u32) {
    let id = new_id();
    let cmd = Command::SetTimer {
        id: id.clone(),
        contact: to.into(),
        secret,
        timer: Some(secs),
    };
    change(c, &id, cmd).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disappearing_message_takes_its_reactions_and_its_quotes_with_it() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    let marker = "RICH-EXPIRING-QUOTED-5e0b";
    set_timer(&mut alice, "bob", true, 5).await;
    let m = alice.send("bob", true, marker).await;
    next_text(&mut bob).await;
    let expires = find(&alice, "bob", true, &m).expires_at.unwrap();

    let answer = reply(&mut bob, "alice", true, &m, "about that").await;
    let got = next_text(&mut alice).await;
    assert!(!got.reply.as_ref().unwrap().gone);
    react(&mut bob, "alice", true, &m, "🔥").await;
    let (reacted, _) = changed(&mut alice).await;
    assert_eq!(reacted.reactions.len(), 1);
    // A reaction extends nothing.
    assert_eq!(find(&alice, "bob", true, &m).expires_at, Some(expires));

    alice
        .expect(|e| matches!(e, Event::Expired(g) if g.iter().any(|g| g.id == m)))
        .await;
    let store = Store::open(&scene.alice).unwrap();
    let left: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM reactions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "the reaction outlived its message");
    let q = find(&alice, "bob", true, &answer).reply.unwrap();
    assert!(q.gone && q.excerpt.is_empty(), "{q:?}");
    alice.barrier().await;
    let hits: Vec<String> = any_file_contains(&scene.alice, marker.as_bytes());
    assert_eq!(
        hits,
        Vec::<String>::new(),
        "the quote kept the expired text"
    );
    alice.stop();
    bob.stop();
    scene.relay.stop().await;
}
