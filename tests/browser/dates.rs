//! Times with their dates: a divider above each day's first message, a "new messages"
//! divider where the unread ones begin, and the full date and time on hover.

use serde_json::{Value, json};

use crate::harness::{Page, Server, browser_test};
use crate::protocol::{connect_scripted, deliver, sent};

/// #messages in order: "date:YYYY-MM-DD" for a date divider, "new" for the unread divider,
/// the text of a message, "notice" for a notice.
const SHOWN: &str = "return [...document.querySelectorAll('#messages li')].map((li) =>
  li.classList.contains('date-divider') ? `date:${li.dataset.date}`
  : li.classList.contains('unread-divider') ? 'new'
  : li.classList.contains('notice') ? 'notice'
  : li.querySelector('.text').textContent);";

fn chat_at(seq: u64, text: &str, timestamp: &str) -> Value {
    json!({"type": "chat", "room_id": "r", "user_id": "bob", "text": text, "seq": seq,
           "message_id": format!("m-{seq}"), "timestamp": timestamp})
}

#[test]
fn history_has_a_divider_per_day_and_times_show_their_full_date_on_hover() {
    browser_test(
        "history_has_a_divider_per_day_and_times_show_their_full_date_on_hover",
        |b| async move {
            // The real server only serves the page; the socket is scripted, so the history
            // can span several days. Midday UTC is the same date in every time zone the
            // browser may run in.
            let server = Server::start();
            let page = b.page("alice", &server.url("/")).await;
            connect_scripted(&page).await;
            page.type_into("#room-input", "r\u{e007}").await;
            sent(&page, "the join", "f.type === 'join'").await;
            deliver(
                &page,
                json!([
                    {"type": "joined", "room_id": "r", "user_id": "alice",
                     "users": ["alice", "bob"], "last_seq": 4, "history": 4},
                    chat_at(1, "new year", "2026-01-01T12:00:00.000Z"),
                    chat_at(2, "still new year", "2026-01-01T12:30:00.000Z"),
                    chat_at(3, "next day", "2026-01-02T12:00:00.000Z"),
                    chat_at(4, "monday", "2026-01-05T12:00:05.000Z"),
                ]),
            )
            .await;
            page.wait_eq(
                "the history with its dividers",
                SHOWN,
                vec![],
                json!([
                    "date:2026-01-01",
                    "new year",
                    "still new year",
                    "date:2026-01-02",
                    "next day",
                    "date:2026-01-05",
                    "monday"
                ]),
            )
            .await;

            // A divider names its day (the browser's locale); a time shows the hour and
            // minute, and all of the date and time as its title.
            let seen = page
                .js(
                    "const day = new Intl.DateTimeFormat(undefined,
                       { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
                     const full = new Intl.DateTimeFormat(undefined,
                       { dateStyle: 'full', timeStyle: 'medium' });
                     const d = new Date('2026-01-05T12:00:05.000Z');
                     const time = document.querySelector('#messages li.msg[data-seq=\"4\"] time');
                     return [document.querySelector('#messages li[data-date=\"2026-01-05\"]')
                               .textContent, day.format(d), time.title, full.format(d)];",
                    vec![],
                )
                .await;
            assert_eq!(seen[0], seen[1], "{seen}");
            assert_eq!(seen[2], seen[3], "{seen}");
            let title = seen[2].as_str().unwrap();
            assert!(
                title.contains("2026") && title.contains(":05"),
                "the year and the seconds: {title}"
            );
            assert_eq!(
                seen[0], "Monday, January 5, 2026",
                "the test browser is en-US"
            );
        },
    );
}

async fn open(page: &Page, room: &str) {
    page.click(&format!(
        "#room-list li[data-room=\"{room}\"] button.room-select"
    ))
    .await;
    page.wait_eq(
        &format!("{room} shown"),
        "return document.getElementById('room-title').textContent;",
        vec![],
        json!(format!("# {room}")),
    )
    .await;
}

#[test]
fn a_new_messages_divider_marks_where_the_unread_ones_begin() {
    browser_test(
        "a_new_messages_divider_marks_where_the_unread_ones_begin",
        |b| async move {
            let server = Server::start();
            let alice = b.page("alice", &server.url("/")).await;
            let bob = b.page("bob", &server.url("/")).await;
            alice.connect_as("alice").await;
            bob.connect_as("bob").await;
            alice.join("news").await;
            bob.join("news").await;
            bob.say("read already").await;
            alice.wait_messages(&[("bob", "read already")]).await;

            // Alice looks elsewhere; two arrive.
            alice.join("other").await;
            bob.say("new one").await;
            bob.say("new two").await;
            bob.wait_messages(&[
                ("bob", "read already"),
                ("bob", "new one"),
                ("bob", "new two"),
            ])
            .await;
            alice
                .wait_eq(
                    "two unread",
                    "return document.querySelector('#room-list li[data-room=\"news\"] .unread')
                       .dataset.unread;",
                    vec![],
                    json!("2"),
                )
                .await;

            open(&alice, "news").await;
            let today = alice
                .js(
                    "const d = new Date(); const p = (n) => String(n).padStart(2, '0');
                     return `date:${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;",
                    vec![],
                )
                .await;
            let with_divider =
                json!([today, "notice", "read already", "new", "new one", "new two"]);
            alice
                .wait_eq("the divider", SHOWN, vec![], with_divider.clone())
                .await;
            assert_eq!(
                alice.text("#messages li.date-divider").await,
                "Today".to_owned()
            );
            // It stays while the room is read, even as more arrive…
            bob.say("newer").await;
            let mut more = with_divider.as_array().unwrap().clone();
            more.push(json!("newer"));
            alice
                .wait_eq("still there", SHOWN, vec![], json!(more))
                .await;

            // …and is gone once the room was left for another and opened again.
            open(&alice, "other").await;
            open(&alice, "news").await;
            alice
                .wait_eq(
                    "no divider",
                    SHOWN,
                    vec![],
                    json!([
                        today,
                        "notice",
                        "read already",
                        "new one",
                        "new two",
                        "newer"
                    ]),
                )
                .await;
        },
    );
}
