//! A phone-width window, the keyboard alone, and a label on every control.

use serde_json::json;

use crate::harness::{ENTER, Server, browser_test};

/// Every input and button, visible or not, with no accessible name.
const UNLABELLED: &str = r#"
return [...document.querySelectorAll('input, button, select, textarea')].filter((el) => {
  const byAria = (el.getAttribute('aria-label') || '').trim();
  const byLabelledBy = (el.getAttribute('aria-labelledby') || '').split(/\s+/)
    .map((id) => document.getElementById(id)).filter(Boolean).map((e) => e.textContent.trim()).join('');
  const byLabel = [...(el.labels || [])].map((l) => l.textContent.trim()).join('');
  const byText = el.tagName === 'BUTTON' ? el.textContent.trim() : '';
  return !(byAria || byLabelledBy || byLabel || byText);
}).map((el) => el.id || el.outerHTML.slice(0, 80));
"#;

#[test]
fn the_chat_works_at_phone_width_with_the_keyboard_alone() {
    browser_test(
        "the_chat_works_at_phone_width_with_the_keyboard_alone",
        |b| async move {
            let server = Server::start();
            let page = b.page("phone", &server.url("/")).await;
            page.set_window_size(390, 844).await;
            page.wait_for(
                "the phone layout",
                "return window.innerWidth;",
                vec![],
                |w| w.as_u64().is_some_and(|w| w <= 720),
            )
            .await;

            // Name, room and message, reached with Tab and sent with Enter; no clicks.
            page.tab_to("name-input").await;
            page.keys(&format!("carol{ENTER}")).await;
            page.wait_conn("connected").await;
            page.tab_to("room-input").await;
            page.keys(&format!("pocket{ENTER}")).await;
            page.wait_room_joined("pocket").await;
            page.tab_to("message-input").await;
            page.keys(&format!("typed on a phone{ENTER}")).await;
            page.wait_messages(&[("carol", "typed on a phone")]).await;

            // Nothing sticks out sideways, and the message box is on screen.
            let fit = page
            .js(
                "const input = document.getElementById('message-input').getBoundingClientRect();
                 return [document.documentElement.scrollWidth <= window.innerWidth,
                         input.left >= 0 && input.right <= window.innerWidth && input.width > 0];",
                vec![],
            )
            .await;
            assert_eq!(fit, json!([true, true]));

            // Every control has a label (with a room and its message on screen).
            assert_eq!(page.js(UNLABELLED, vec![]).await, json!([]));

            // Leaving by keyboard: Tab to the room's leave button, Enter.
            page.tab_to("leave-btn").await;
            page.keys(ENTER).await;
            page.wait_eq(
                "no rooms",
                "return document.querySelectorAll('#room-list li').length;",
                vec![],
                json!(0),
            )
            .await;
        },
    );
}
