//! Groups end to end over the in-process relay, with three and four members: every member
//! gets each message once in both threads; a removed member reads nothing sent after the
//! removal (even when the relay is made to hand it to them) and a new member nothing sent
//! before they joined; a change from a member who is not an admin is ignored; a message from
//! a removed member is refused; the relay's files hold neither a secret group text nor the
//! group id; disappearing group messages leave no trace in any member's profile.

mod common;

use std::path::Path;

use common::{Client, Raw, Scene, any_file_contains, expired, register};
use libsignal_protocol::{SealedSenderV2SentMessage, group_decrypt, sealed_sender_decrypt_to_usmc};
use sotto::client::account;
use sotto::client::content::{Body, Content};
use sotto::client::crypto;
use sotto::client::manager::{Command, Event, GroupAction, GroupMember};
use sotto::client::signal_store::Stores;
use sotto::client::store::{Message, MessageKind, Store};
use sotto::wire::{ClientFrame, RelayFrame};

/// alice, bob and carol (and dave, registered but not started), with alice's group "team"
/// of the three made and known to bob and carol.
struct Team {
    scene: Scene,
    alice: Client,
    bob: Client,
    carol: Client,
    dave: std::path::PathBuf,
}

async fn team() -> Team {
    let scene = Scene::new().await;
    let (carol, dave) = (scene.path("c"), scene.path("d"));
    register(&carol, "carol", &scene.relay.url).await;
    register(&dave, "dave", &scene.relay.url).await;
    let (mut alice, mut bob) = scene.online().await;
    let mut carol = Client::start(&carol, &scene.relay.url).await;
    let made = group(
        &mut alice,
        GroupAction::Create {
            name: "team".into(),
            members: vec!["bob".into(), "carol".into()],
        },
    )
    .await
    .unwrap();
    assert_eq!(made, "#team");
    changed(&mut bob).await;
    changed(&mut carol).await;
    Team {
        scene,
        alice,
        bob,
        carol,
        dave,
    }
}

/// Runs a group command; Ok(the group's handle) once it is done, or the failure's text.
async fn group(c: &mut Client, action: GroupAction) -> Result<String, String> {
    let tag = rand::random::<u64>();
    c.handle
        .commands
        .send(Command::Group { tag, action })
        .await
        .unwrap();
    match c
        .expect(|e| match e {
            Event::GroupChanged { tag: t, .. } => *t == Some(tag),
            Event::Failed { tag: t, .. } => *t == tag,
            _ => false,
        })
        .await
    {
        Event::GroupChanged { group, .. } => Ok(group),
        Event::Failed { error, .. } => Err(error),
        _ => unreachable!(),
    }
}

/// alice removes carol from "#team"; bob and carol both hear of it.
async fn remove_carol(alice: &mut Client, bob: &mut Client, carol: &mut Client) {
    group(
        alice,
        GroupAction::Remove {
            group: "#team".into(),
            handle: "carol".into(),
        },
    )
    .await
    .unwrap();
    for c in [bob, carol] {
        assert_eq!(
            changed(c).await,
            ("#team".into(), "alice removed carol".into())
        );
    }
}

/// The id of the group "#team" as the profile in `dir` holds it.
fn team_id(dir: &Path) -> String {
    Store::open(dir)
        .unwrap()
        .group_by_handle("#team")
        .unwrap()
        .unwrap()
        .id
}

/// Waits for a change someone else made; returns (group, change).
async fn changed(c: &mut Client) -> (String, String) {
    match c
        .expect(|e| matches!(e, Event::GroupChanged { tag: None, .. }))
        .await
    {
        Event::GroupChanged { group, change, .. } => (group, change),
        _ => unreachable!(),
    }
}

async fn members(c: &mut Client, group: &str) -> Vec<GroupMember> {
    let tag = rand::random::<u64>();
    c.handle
        .commands
        .send(Command::Group {
            tag,
            action: GroupAction::Members {
                group: group.into(),
            },
        })
        .await
        .unwrap();
    match c
        .expect(|e| matches!(e, Event::GroupMembers { tag: t, .. } if *t == tag))
        .await
    {
        Event::GroupMembers { members, .. } => members,
        _ => unreachable!(),
    }
}

/// Waits for an arriving text (membership lines are skipped).
async fn text(c: &mut Client) -> Message {
    match c
        .expect(|e| matches!(e, Event::Message(m) if !m.outgoing && m.kind == MessageKind::Text))
        .await
    {
        Event::Message(m) => m,
        _ => unreachable!(),
    }
}

fn texts(dir: &Path, thread: &str, secret: bool) -> Vec<String> {
    common::history(dir, thread, secret)
        .into_iter()
        .filter(|m| m.kind == MessageKind::Text)
        .map(|m| m.text)
        .collect()
}

/// The last secret group envelope the relay was handed.
fn last_multi(scene: &Scene) -> Vec<u8> {
    scene
        .relay
        .frames
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|f| match ClientFrame::decode(f) {
            Ok(ClientFrame::SendMulti { envelope, .. }) => Some(envelope.0),
            _ => None,
        })
        .expect("a send_multi frame")
}

/// `recipient`'s copy of a multi-recipient envelope, as the relay delivers it.
fn copy_for(envelope: &[u8], recipient: &str) -> Vec<u8> {
    let sent = SealedSenderV2SentMessage::parse(envelope).unwrap();
    let (_, r) = sent
        .recipients
        .iter()
        .find(|(id, _)| id.service_id_string() == recipient)
        .expect("the recipient is in the envelope");
    sent.received_message_parts_for_recipient(r)
        .as_ref()
        .concat()
}

/// Whether the profile in `dir` can open the sender-key message inside `opened_by`'s copy
/// of `envelope` (the outer layer opened with `opened_by`'s key, as if it had been theirs).
async fn can_read(dir: &Path, opened_by: &Path, envelope: &[u8], from: &str) -> bool {
    let opener = Store::open(opened_by).unwrap();
    let (id, reg) = account::identity(&opener).unwrap();
    let stores = Stores::new(opener.conn(), &id, reg);
    let copy = copy_for(envelope, &common::account_id(opened_by));
    let usmc = sealed_sender_decrypt_to_usmc(&copy, &stores.identity)
        .await
        .unwrap();
    let store = Store::open(dir).unwrap();
    let (id, reg) = account::identity(&store).unwrap();
    let mut stores = Stores::new(store.conn(), &id, reg);
    // Undone whatever happens: this is a probe, not a delivery.
    store.conn().execute_batch("BEGIN").unwrap();
    let read = group_decrypt(
        usmc.contents().unwrap(),
        &mut stores.sender_keys,
        &crypto::address(from),
    )
    .await;
    store.conn().execute_batch("ROLLBACK").unwrap();
    read.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_gets_each_message_once_in_both_threads() {
    let Team {
        scene,
        mut alice,
        mut bob,
        mut carol,
        ..
    } = team().await;
    for secret in [false, true] {
        alice
            .send("#team", secret, &format!("hello {secret}"))
            .await;
        for c in [&mut bob, &mut carol] {
            let m = text(c).await;
            assert_eq!(
                (
                    m.contact.as_str(),
                    m.secret,
                    m.author.as_deref(),
                    m.text.as_str()
                ),
                (
                    "#team",
                    secret,
                    Some("alice"),
                    format!("hello {secret}").as_str()
                )
            );
        }
        bob.send("#team", secret, &format!("bob {secret}")).await;
        for c in [&mut alice, &mut carol] {
            let m = text(c).await;
            assert_eq!((m.author.as_deref(), m.secret), (Some("bob"), secret));
        }
    }
    // A second secret message from bob: his key went to each member once, the first time.
    bob.send("#team", true, "bob again").await;
    for c in [&mut alice, &mut carol] {
        assert_eq!(text(c).await.text, "bob again");
    }
    for c in [&mut alice, &mut bob, &mut carol] {
        c.barrier().await;
    }
    for (dir, me) in [
        (&scene.alice, "alice"),
        (&scene.bob, "bob"),
        (&scene.path("c"), "carol"),
    ] {
        for secret in [false, true] {
            let mut got = texts(dir, "#team", secret);
            got.sort();
            let mut want = vec![format!("hello {secret}"), format!("bob {secret}")];
            if secret {
                want.push("bob again".into());
            }
            want.sort();
            assert_eq!(got, want, "{me}'s {secret} thread");
        }
        // The membership line is in both threads.
        let lines = common::history(dir, "#team", true);
        assert!(lines.iter().any(|m| m.kind == MessageKind::Group), "{me}");
    }
    let listed = members(&mut carol, "#team").await;
    let mut names: Vec<_> = listed
        .iter()
        .map(|m| (m.handle.as_str(), m.admin))
        .collect();
    names.sort();
    assert_eq!(names, [("alice", true), ("bob", false), ("carol", false)]);
    // The relay saw no secret text in any frame or file (the normal thread is readable to
    // it, as a normal 1:1 thread is).
    for needle in ["hello true", "bob true", "bob again"] {
        assert!(!scene.relay.received_any(needle.as_bytes()), "{needle}");
        assert!(any_file_contains(&scene.relay_dir, needle.as_bytes()).is_empty());
    }
}

/// The sender keys a profile holds now, to put back later: a client that keeps what it
/// should have forgotten.
fn sender_keys(dir: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let store = Store::open(dir).unwrap();
    let mut st = store
        .conn()
        .prepare("SELECT address, distribution_id, record FROM sender_keys")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn restore_sender_keys(dir: &Path, keys: &[(String, Vec<u8>, Vec<u8>)]) {
    let store = Store::open(dir).unwrap();
    for (address, dist, record) in keys {
        store
            .conn()
            .execute(
                "INSERT OR REPLACE INTO sender_keys (address, distribution_id, record)
                 VALUES (?1, ?2, ?3)",
                rusqlite::params![address, dist, record],
            )
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_reads_nothing_after_and_a_new_member_nothing_before() {
    let Team {
        scene,
        mut alice,
        mut bob,
        mut carol,
        dave,
    } = team().await;
    alice.send("#team", true, "before the removal").await;
    let before = last_multi(&scene);
    assert_eq!(text(&mut bob).await.text, "before the removal");
    assert_eq!(text(&mut carol).await.text, "before the removal");
    carol.barrier().await;
    let carols_keys = sender_keys(&scene.path("c"));
    assert!(!carols_keys.is_empty());

    remove_carol(&mut alice, &mut bob, &mut carol).await;
    // carol knows she is out: she cannot send to the group any more.
    let refused = carol
        .try_send("#team", true, "still here?")
        .await
        .unwrap_err();
    assert!(refused.contains("no longer in #team"), "{refused}");

    alice.send("#team", true, "after the removal").await;
    let after = last_multi(&scene);
    assert_eq!(text(&mut bob).await.text, "after the removal");
    // The envelope was not for carol, and the key inside is a new one she never got.
    let carol_id = common::account_id(&scene.path("c"));
    assert!(
        SealedSenderV2SentMessage::parse(&after)
            .unwrap()
            .recipients
            .keys()
            .all(|r| r.service_id_string() != carol_id)
    );
    let alice_id = common::account_id(&scene.alice);
    // Even a carol who kept every key she was given cannot read it.
    restore_sender_keys(&scene.path("c"), &carols_keys);
    assert!(!can_read(&scene.path("c"), &scene.bob, &after, &alice_id).await);
    assert!(
        can_read(&scene.path("c"), &scene.bob, &before, &alice_id).await || {
            // She read it already: a second opening is refused as a duplicate.
            texts(&scene.path("c"), "#team", true).contains(&"before the removal".to_string())
        }
    );
    assert!(texts(&scene.bob, "#team", true).contains(&"before the removal".to_string()));

    // The relay is made to hand bob's copy to carol anyway: she cannot open it.
    let copy = copy_for(&after, &common::account_id(&scene.bob));
    let token = Store::open(&scene.alice)
        .unwrap()
        .contact_by_id(&carol_id)
        .unwrap()
        .unwrap();
    let mut raw = Raw::anonymous(&scene.relay.url).await;
    raw.send(&ClientFrame::SendSealed {
        req: 1,
        to: carol_id.clone(),
        access_token: token.access_token.clone().into(),
        envelope: copy.into(),
        expires_at: None,
        recipient_key: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| matches!(f, RelayFrame::Ok { req: 1 })).await;
    carol
        .expect(|e| matches!(e, Event::Warning(w) if w.text.contains("could not be opened")))
        .await;
    assert!(!texts(&scene.path("c"), "#team", true).contains(&"after the removal".to_string()));

    // dave joins: he reads what is sent from now on, and nothing from before.
    let mut dave = Client::start(&dave, &scene.relay.url).await;
    group(
        &mut alice,
        GroupAction::Add {
            group: "#team".into(),
            handle: "dave".into(),
        },
    )
    .await
    .unwrap();
    changed(&mut dave).await;
    changed(&mut bob).await;
    alice.send("#team", true, "welcome dave").await;
    assert_eq!(text(&mut dave).await.text, "welcome dave");
    assert_eq!(text(&mut bob).await.text, "welcome dave");
    let dave_dir = scene.path("d");
    assert!(!can_read(&dave_dir, &scene.bob, &after, &alice_id).await);
    assert!(!can_read(&dave_dir, &scene.bob, &before, &alice_id).await);
    assert_eq!(texts(&dave_dir, "#team", true), ["welcome dave"]);
    bob.send("#team", true, "hi dave").await;
    assert_eq!(text(&mut dave).await.text, "hi dave");
    assert_eq!(text(&mut alice).await.text, "hi dave");

    // Only secret traffic went through this relay: no text and no group id in its frames
    // or files.
    let id = team_id(&scene.alice);
    for needle in [
        "before the removal",
        "after the removal",
        "welcome dave",
        "hi dave",
        id.as_str(),
    ] {
        assert!(!scene.relay.received_any(needle.as_bytes()), "{needle}");
        assert!(
            any_file_contains(&scene.relay_dir, needle.as_bytes()).is_empty(),
            "{needle}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_from_a_member_who_is_not_an_admin_is_ignored() {
    let Team {
        scene,
        mut alice,
        bob,
        mut carol,
        ..
    } = team().await;
    let mut bob = bob;
    let refused = group(
        &mut bob,
        GroupAction::Remove {
            group: "#team".into(),
            handle: "carol".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(refused.contains("only an admin"), "{refused}");

    // bob's own profile is made to believe he is an admin; his change goes out, and the
    // others, who know he is not, ignore it.
    bob.stop();
    Store::open(&scene.bob)
        .unwrap()
        .conn()
        .execute("UPDATE group_members SET admin = 1", [])
        .unwrap();
    let mut bob = Client::start(&scene.bob, &scene.relay.url).await;
    group(
        &mut bob,
        GroupAction::Remove {
            group: "#team".into(),
            handle: "carol".into(),
        },
    )
    .await
    .unwrap();
    // A 1:1 secret message from bob, sent after the change on the same link, arrives after it.
    bob.send("alice", true, "after my change").await;
    assert_eq!(text(&mut alice).await.text, "after my change");
    bob.send("carol", true, "after my change").await;
    assert_eq!(text(&mut carol).await.text, "after my change");
    for c in [&mut alice, &mut carol] {
        let listed = members(c, "#team").await;
        assert_eq!(listed.len(), 3, "{listed:?}");
    }
    // carol is still in: alice's next message reaches her.
    alice.send("#team", true, "still three").await;
    assert_eq!(text(&mut carol).await.text, "still three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_a_removed_member_is_refused() {
    let Team {
        scene,
        mut alice,
        mut bob,
        mut carol,
        ..
    } = team().await;
    carol.send("#team", true, "carol speaks").await;
    assert_eq!(text(&mut alice).await.text, "carol speaks");
    assert_eq!(text(&mut bob).await.text, "carol speaks");
    carol.barrier().await;
    let carols_keys = sender_keys(&scene.path("c"));
    remove_carol(&mut alice, &mut bob, &mut carol).await;

    // carol's client is made to forget that she was removed and to keep her old chain, as
    // shared with both: her next message goes out on it, to alice and bob.
    let carol_id = common::account_id(&scene.path("c"));
    restore_sender_keys(&scene.path("c"), &carols_keys);
    {
        let store = Store::open(&scene.path("c")).unwrap();
        let conn = store.conn();
        conn.execute(r#"UPDATE groups SET "left" = 0"#, []).unwrap();
        for who in [
            &carol_id,
            &common::account_id(&scene.alice),
            &common::account_id(&scene.bob),
        ] {
            conn.execute(
                "INSERT OR IGNORE INTO group_members (group_id, account_id, admin)
                 SELECT id, ?1, 0 FROM groups",
                [who],
            )
            .unwrap();
            conn.execute(
                "INSERT OR IGNORE INTO sender_key_shared (group_id, account_id)
                 SELECT id, ?1 FROM groups",
                [who],
            )
            .unwrap();
        }
    }
    carol.send("#team", true, "forged after removal").await;
    for c in [&mut alice, &mut bob] {
        c.expect(|e| matches!(e, Event::Warning(w) if w.text.contains("could not be decrypted")))
            .await;
    }
    for dir in [&scene.alice, &scene.bob] {
        assert!(!texts(dir, "#team", true).contains(&"forged after removal".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disappearing_group_messages_leave_no_trace_in_any_member() {
    let Team {
        scene,
        mut alice,
        mut bob,
        mut carol,
        ..
    } = team().await;
    common::set_timer_of(&mut alice, "#team", true, Some(5)).await;
    for c in [&mut bob, &mut carol] {
        match c.expect(|e| matches!(e, Event::TimerSet { .. })).await {
            Event::TimerSet {
                contact,
                secret,
                timer,
            } => assert_eq!((contact.as_str(), secret, timer), ("#team", true, Some(5))),
            _ => unreachable!(),
        }
    }
    let secret_text = "vanishing group words";
    let id = alice.send("#team", true, secret_text).await;
    for c in [&mut bob, &mut carol] {
        let m = text(c).await;
        assert_eq!((m.text.as_str(), m.timer), (secret_text, Some(5)));
        c.handle
            .commands
            .send(Command::MarkShown {
                ids: vec![id.clone()],
            })
            .await
            .unwrap();
    }
    for c in [&mut alice, &mut bob, &mut carol] {
        expired(c, &id).await;
    }
    for dir in [&scene.alice, &scene.bob, &scene.path("c")] {
        assert!(
            any_file_contains(dir, secret_text.as_bytes()).is_empty(),
            "{}",
            dir.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_takes_nothing_from_the_normal_thread_and_a_group_is_no_person() {
    let Team {
        scene,
        mut alice,
        mut bob,
        mut carol,
        ..
    } = team().await;
    // Safety numbers and blocking are about people.
    let tag = 7;
    alice
        .handle
        .commands
        .send(Command::Block {
            tag,
            handle: "#team".into(),
            blocked: true,
        })
        .await
        .unwrap();
    match alice
        .expect(|e| matches!(e, Event::Failed { tag: 7, .. }))
        .await
    {
        Event::Failed { error, .. } => assert!(error.contains("is a group"), "{error}"),
        _ => unreachable!(),
    }
    let refused = sotto::client::trust::safety_number(&Store::open(&scene.alice).unwrap(), "#team")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("is a group"), "{refused}");

    alice.send("#team", false, "normal before").await;
    assert_eq!(text(&mut bob).await.text, "normal before");
    assert_eq!(text(&mut carol).await.text, "normal before");
    remove_carol(&mut alice, &mut bob, &mut carol).await;

    // A normal group message queued to carol anyway (here by hand, from alice's account):
    // she is out, so she keeps nothing of it. A 1:1 message sent after it on the same
    // connection arrives after it.
    let id = team_id(&scene.alice);
    let body = Content::of(Body::InGroup {
        group: id,
        body: Box::new(Body::Text {
            id: uuid::Uuid::new_v4().to_string(),
            text: "normal after".into(),
            sent_at: 1,
            timer: None,
            reply_to: None,
        }),
    });
    let carol_id = common::account_id(&scene.path("c"));
    // alice's client goes first: a second connection of her account would end it.
    alice.stop();
    let mut raw = Raw::auth(&scene.relay.url, &scene.alice).await;
    raw.send(&ClientFrame::SendGroup {
        req: 1,
        to: vec![carol_id.clone(), common::account_id(&scene.bob)],
        body: body.encode().into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| matches!(f, RelayFrame::Ok { req: 1 })).await;
    raw.send(&ClientFrame::Send {
        req: 2,
        to: carol_id,
        body: Content::text(uuid::Uuid::new_v4().to_string(), "marker".into(), 2, None)
            .encode()
            .into(),
        expires_at: None,
        online_only: false,
    })
    .await;
    raw.expect(|f| matches!(f, RelayFrame::Ok { req: 2 })).await;
    assert_eq!(text(&mut bob).await.text, "normal after");
    let m = text(&mut carol).await;
    assert_eq!((m.contact.as_str(), m.text.as_str()), ("alice", "marker"));
    assert_eq!(texts(&scene.path("c"), "#team", false), ["normal before"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_with_an_old_epoch_is_ignored() {
    let Team {
        scene,
        alice,
        mut bob,
        mut carol,
        ..
    } = team().await;
    let mut alice = alice;
    group(
        &mut alice,
        GroupAction::Rename {
            group: "#team".into(),
            name: "crew".into(),
        },
    )
    .await
    .unwrap();
    for c in [&mut bob, &mut carol] {
        assert_eq!(changed(c).await.0, "#crew");
    }
    // alice's profile goes back to the first epoch (a replay of an old state, or a restored
    // backup): her next change carries an epoch the others have seen, and they ignore it.
    alice.stop();
    Store::open(&scene.alice)
        .unwrap()
        .conn()
        .execute("UPDATE groups SET epoch = 1", [])
        .unwrap();
    let mut alice = Client::start(&scene.alice, &scene.relay.url).await;
    let renamed = group(
        &mut alice,
        GroupAction::Rename {
            group: "#crew".into(),
            name: "stale".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(renamed, "#stale");
    // 1:1 secret messages from alice, sent after the change on the same link, arrive after it.
    for (c, who) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        alice.send(who, true, "after the stale change").await;
        assert_eq!(text(c).await.text, "after the stale change");
        assert_eq!(members(c, "#crew").await.len(), 3);
        assert!(texts(&c.dir, "#stale", false).is_empty());
    }
}
