//! The embedded store is shared by several function processes under `cargo lambda watch`:
//! processes appending to one conversation at once must still give every turn exactly once.

use std::collections::BTreeSet;
use std::process::Command;

use salesloop::{ConversationId, EmbeddedStore, Store, TenantId};

#[tokio::test]
async fn four_processes_appending_to_one_conversation_take_every_turn_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("salesloop.sqlite3");
    // Create the file first so that the writers race on appends, not on the schema.
    drop(EmbeddedStore::open(&path).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|w| {
            Command::new(env!("CARGO_BIN_EXE_embedded_writer"))
                .arg(&path)
                .arg("shared")
                .arg(format!("w{w}"))
                .arg("40")
                .spawn()
                .expect("start a writer process")
        })
        .collect();
    for mut writer in writers {
        assert!(writer.wait().unwrap().success(), "a writer process failed");
    }
    let store = EmbeddedStore::open(&path).unwrap();
    let exchanges = store
        .exchanges(
            &TenantId::parse("local").unwrap(),
            &ConversationId::parse("shared").unwrap(),
        )
        .await
        .unwrap();
    let turns: Vec<u32> = exchanges.iter().map(|e| e.turn).collect();
    assert_eq!(turns, (1..=160).collect::<Vec<_>>());
    let ids: BTreeSet<String> = exchanges
        .iter()
        .map(|e| e.draft.message_id.to_string())
        .collect();
    assert_eq!(ids.len(), 160);
}
