//! Groups in the chat screen, through the key map and the pure app: `/group` commands become
//! `Command::Group` about the open group, answers show on the status line, a group we made
//! opens, and a group's thread names who wrote each message (TestBackend).

mod common;

use common::tui::{contact, key, msg, press, rows, screen, typing};
use crossterm::event::KeyCode;
use sotto::client::manager::{Command, ConnState, Event, GroupAction, GroupMember};
use sotto::client::store::{ContactSummary, MessageKind};
use sotto::tui::app::App;

fn group(handle: &str) -> ContactSummary {
    ContactSummary {
        group: true,
        ..contact(handle)
    }
}

/// Types `line` in the composer and presses Enter.
fn enter(app: &mut App, line: &str) -> Vec<Command> {
    let mut keys = typing(line);
    keys.push(key(KeyCode::Enter));
    press(app, keys)
}

/// alice online with the group #friends (first in the list) and bob; #friends open.
fn in_friends() -> App {
    let mut app = App::new("alice");
    app.on_event(Event::Connection(ConnState::Online));
    app.on_event(Event::Contacts(vec![group("#friends"), contact("bob")]));
    let cmds = press(&mut app, [key(KeyCode::Tab), key(KeyCode::Enter)]);
    assert!(
        matches!(&cmds[..], [Command::LoadPage { contact, .. }] if contact == "#friends"),
        "{cmds:?}"
    );
    let mut from_bob = msg(1, "#friends", false, false, "who brings the cake?");
    from_bob.author = Some("bob".into());
    let mut from_carol = msg(2, "#friends", false, false, "I do");
    from_carol.author = Some("carol".into());
    let mut joined = msg(3, "#friends", false, false, "bob added dave");
    joined.kind = MessageKind::Group;
    app.on_event(Event::Page {
        contact: "#friends".into(),
        secret: false,
        before: None,
        messages: vec![from_bob, from_carol, joined],
        complete: true,
    });
    app
}

#[test]
fn a_groups_thread_names_each_writer_and_shows_membership_lines() {
    let app = in_friends();
    let shown = rows(&screen(&app, 100, 20)).join("\n");
    assert!(shown.contains("#friends"), "{shown}");
    assert!(shown.contains("bob: who brings the cake?"), "{shown}");
    assert!(shown.contains("carol: I do"), "{shown}");
    assert!(shown.contains("— bob added dave —"), "{shown}");
    assert!(
        !shown.contains("#friends: I do"),
        "the group named as the writer: {shown}"
    );
}

#[test]
fn group_commands_are_about_the_open_group() {
    let mut app = in_friends();
    let cmds = enter(&mut app, "/group add dave");
    assert!(
        matches!(&cmds[..], [Command::Group { action: GroupAction::Add { group, handle }, .. }]
            if group == "#friends" && handle == "dave"),
        "{cmds:?}"
    );
    let cmds = enter(&mut app, "/group members");
    let [
        Command::Group {
            tag,
            action: GroupAction::Members { group },
        },
    ] = &cmds[..]
    else {
        panic!("{cmds:?}");
    };
    assert_eq!(group, "#friends");
    app.on_event(Event::GroupMembers {
        tag: *tag,
        group: "#friends".into(),
        members: vec![
            GroupMember {
                handle: "alice".into(),
                admin: true,
            },
            GroupMember {
                handle: "bob".into(),
                admin: false,
            },
        ],
    });
    let shown = rows(&screen(&app, 100, 20)).join("\n");
    assert!(shown.contains("#friends: alice (admin), bob"), "{shown}");
}

#[test]
fn a_group_command_outside_a_group_says_what_to_do() {
    let mut app = in_friends();
    // Open bob (second in the list): not a group.
    press(
        &mut app,
        [key(KeyCode::Tab), key(KeyCode::Down), key(KeyCode::Enter)],
    );
    let cmds = enter(&mut app, "/group leave");
    assert!(
        cmds.iter().all(|c| !matches!(c, Command::Group { .. })),
        "{cmds:?}"
    );
    let shown = rows(&screen(&app, 100, 20)).join("\n");
    assert!(
        shown.contains("open a group's conversation first"),
        "{shown}"
    );
    let cmds = enter(&mut app, "/group new Bad! bob");
    assert!(cmds.is_empty(), "{cmds:?}");
    let shown = rows(&screen(&app, 100, 20)).join("\n");
    assert!(shown.contains("cannot name a group"), "{shown}");
}

#[test]
fn a_group_we_create_opens_once_made() {
    let mut app = in_friends();
    let cmds = enter(&mut app, "/group new climbing bob carol");
    let [
        Command::Group {
            tag,
            action: GroupAction::Create { name, members },
        },
    ] = &cmds[..]
    else {
        panic!("{cmds:?}");
    };
    assert_eq!((name.as_str(), members.len()), ("climbing", 2));
    let cmds = app.on_event(Event::GroupChanged {
        tag: Some(*tag),
        group: "#climbing".into(),
        change: "created with bob and carol".into(),
    });
    assert!(
        cmds.iter().any(|c| matches!(c, Command::ListContacts)),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::LoadPage { contact, .. } if contact == "#climbing")),
        "{cmds:?}"
    );
    assert_eq!(
        app.open.as_ref().map(|o| o.handle.as_str()),
        Some("#climbing")
    );
    // A change someone else made only refreshes the list.
    let cmds = app.on_event(Event::GroupChanged {
        tag: None,
        group: "#friends".into(),
        change: "bob renamed it".into(),
    });
    assert!(
        cmds.iter().all(|c| !matches!(c, Command::LoadPage { .. })),
        "{cmds:?}"
    );
}
