//! What a user does to a contact as a whole, over a real relay: blocking drops what they send
//! unread and unanswered, removing forgets them down to the bytes on disk, one's own handle
//! is no contact, and a secret message refused for a key change goes once the change is
//! accepted.

mod common;

use common::{Client, Scene};
use sotto::client::manager::{Command, ContactChange, Event};
use sotto::client::store::{MessageState, Store};
use sotto::client::trust;
use sotto::relay::store::{Directory as _, RelayStore};

async fn change(client: &mut Client, cmd: Command) -> Result<ContactChange, String> {
    let tag = match &cmd {
        Command::Block { tag, .. } | Command::RemoveContact { tag, .. } => *tag,
        Command::Retry { tag, .. } | Command::AddContact { tag, .. } => *tag,
        _ => unreachable!(),
    };
    client.handle.commands.send(cmd).await.unwrap();
    match client
        .expect(|e| {
            matches!(e, Event::ContactChanged { tag: t, .. } | Event::Failed { tag: t, .. } if *t == tag)
        })
        .await
    {
        Event::ContactChanged { change, .. } => Ok(change),
        Event::Failed { error, .. } => Err(error),
        _ => unreachable!(),
    }
}

fn block(tag: u64, handle: &str, blocked: bool) -> Command {
    Command::Block {
        tag,
        handle: handle.into(),
        blocked,
    }
}

/// Waits until the relay holds nothing for `dir`'s account: everything was acked.
async fn until_acked(scene: &Scene, dir: &std::path::Path) {
    let id = common::account_id(dir);
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while RelayStore::open(&scene.relay_dir)
        .unwrap()
        .queued_for(&id)
        .unwrap()
        > 0
    {
        assert!(tokio::time::Instant::now() < deadline, "nothing acked");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_contact_is_dropped_unread_and_unanswered_until_unblocked() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    bob.send("alice", true, "hello").await;
    alice.receive().await;

    assert_eq!(
        change(&mut alice, block(1, "bob", true)).await,
        Ok(ContactChange::Blocked)
    );
    let list = alice.expect(|e| matches!(e, Event::Contacts(_))).await;
    assert_eq!(list, Event::Contacts(vec![]), "bob is hidden");
    let err = alice.try_send("bob", false, "hi?").await.unwrap_err();
    assert!(
        err.contains("you blocked bob") && err.contains("/unblock bob"),
        "{err}"
    );

    let dropped = [
        bob.send("alice", false, "normal while blocked").await,
        bob.send("alice", true, "secret while blocked").await,
    ];
    until_acked(&scene, &scene.alice).await;
    let texts: Vec<String> = [false, true]
        .into_iter()
        .flat_map(|s| alice.history("bob", s))
        .map(|m| m.text)
        .collect();
    assert!(
        !texts.iter().any(|t| t.contains("while blocked")),
        "{texts:?}"
    );

    // Unblocked, bob reaches alice again; his new message gets its receipt, the dropped
    // ones never do.
    assert_eq!(
        change(&mut alice, block(2, "bob", false)).await,
        Ok(ContactChange::Unblocked)
    );
    let after = bob.send("alice", true, "after").await;
    assert_eq!(alice.receive().await.text, "after");
    bob.expect(
        |e| matches!(e, Event::MessageState { id, state: MessageState::Delivered } if *id == after),
    )
    .await;
    for m in bob
        .history("alice", false)
        .into_iter()
        .chain(bob.history("alice", true))
    {
        if dropped.contains(&m.id) {
            assert_eq!(m.state, MessageState::Sent, "{}", m.text);
        }
    }
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_contact_leaves_no_trace_on_disk_and_can_write_again() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    let marker = "MARKER-removed-7c1e";
    alice.send("bob", true, &format!("{marker} secret")).await;
    bob.receive().await;
    bob.send("alice", false, &format!("{marker} normal")).await;
    alice.receive().await;
    // A key history entry for bob, which goes with him.
    let bob_id = common::account_id(&scene.bob);
    trust::record(
        &Store::open(&scene.alice).unwrap(),
        &bob_id,
        trust::KeyEvent::Accepted,
        None,
        1,
    )
    .unwrap();

    assert_eq!(
        change(
            &mut alice,
            Command::RemoveContact {
                tag: 1,
                handle: "bob".into()
            }
        )
        .await,
        Ok(ContactChange::Removed { messages: 2 })
    );
    assert_eq!(
        change(&mut alice, block(2, "bob", true)).await.unwrap_err(),
        "\"bob\" is not among your contacts; add them with /add bob"
    );
    let store = Store::open(&scene.alice).unwrap();
    assert!(store.contact_by_handle("bob").unwrap().is_none());
    drop(store);
    let found = common::any_file_contains(&scene.alice, marker.as_bytes());
    assert!(found.is_empty(), "the text is still in {found:?}");

    // bob writes again: he comes back as a new contact, and a new secret session is set up.
    bob.send("alice", true, "me again").await;
    let m = alice.receive().await;
    assert_eq!((m.contact.as_str(), m.text.as_str()), ("bob", "me again"));
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_s_own_handle_is_no_contact() {
    let scene = Scene::new().await;
    let (mut alice, bob) = scene.online().await;
    let tag = 7;
    alice
        .handle
        .commands
        .send(Command::AddContact {
            tag,
            handle: "alice".into(),
        })
        .await
        .unwrap();
    let Event::Failed { error, .. } = alice
        .expect(|e| matches!(e, Event::Failed { tag: t, .. } | Event::ContactAdded { tag: t, .. } if *t == tag))
        .await
    else {
        panic!("alice was added as her own contact");
    };
    assert_eq!(
        error,
        "\"alice\" is your own handle; a contact is someone else"
    );
    let err = alice
        .try_send("alice", true, "note to self")
        .await
        .unwrap_err();
    assert!(err.contains("your own handle"), "{err}");
    alice.stop();
    bob.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_message_held_by_a_key_change_goes_once_the_change_is_accepted() {
    let scene = Scene::new().await;
    let (mut alice, mut bob) = scene.online().await;
    alice.send("bob", true, "before").await;
    bob.receive().await;
    bob.stop();
    common::rekey(&scene.bob, &scene.relay.url).await;

    let err = alice.try_send("bob", true, "held").await.unwrap_err();
    assert!(err.contains("safety number has changed"), "{err}");
    let held = alice
        .history("bob", true)
        .into_iter()
        .find(|m| m.text == "held")
        .unwrap();
    assert_eq!(held.state, MessageState::Failed);
    // Retrying by hand before accepting fails the same way.
    alice
        .handle
        .commands
        .send(Command::Retry {
            tag: 3,
            id: held.id.clone(),
        })
        .await
        .unwrap();
    alice
        .expect(|e| matches!(e, Event::MessageFailed { id, .. } if *id == held.id))
        .await;

    alice
        .handle
        .commands
        .send(Command::AcceptChange {
            handle: "bob".into(),
        })
        .await
        .unwrap();
    alice
        .expect(|e| {
            matches!(e, Event::MessageState { id, state: MessageState::Sent | MessageState::Delivered } if *id == held.id)
        })
        .await;
    let mut bob = Client::start(&scene.bob, &scene.relay.url).await;
    assert_eq!(bob.receive().await.text, "held");
    let count = bob
        .history("alice", true)
        .iter()
        .filter(|m| m.text == "held")
        .count();
    assert_eq!(count, 1);
    alice.stop();
    bob.stop();
}
