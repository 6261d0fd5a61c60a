//! The index of customer search on SQLite: an FTS5 table with the `trigram` tokenizer beside
//! each customers table (live, shadow or retired), named after it with `_fts`, holding the
//! customers row's rowid and its `search_text`.
//!
//! It is contentless (`content=''`), so the searchable values are not stored a second time
//! in plain text, with `contentless_delete=1` so that a row can be replaced, and with FTS5's
//! `secure-delete` option so that replacing a row (an erasure) removes its old trigrams from
//! the index instead of leaving them behind until a merge. The tokenizer is case-sensitive
//! because `search_text` and the needle are lower-cased in Rust already: folding again in
//! SQLite could only add matches the scan would not find.

use rusqlite::{Connection, Transaction, params};

use crate::error::StorageError;

/// The search index of the customers table `table`.
pub(super) fn fts(table: &str) -> String {
    format!("{table}_fts")
}

/// Creates the (empty) search index of `table`.
///
/// FTS5 holds what a transaction writes in memory until it holds `hashsize` bytes, then
/// writes it out as a new segment and merges segments as they pile up. The default, 1 MiB,
/// makes the bulk load of 100,000 customers write dozens of small segments and merge them
/// over and over; 8 MiB halved the load's time in a trial with Python's SQLite. Only a bulk
/// load reaches it: a live write is a few rows, flushed when its transaction commits.
fn create(tx: &Connection, table: &str) -> Result<(), StorageError> {
    let fts = fts(table);
    tx.execute_batch(&format!(
        "CREATE VIRTUAL TABLE {fts} USING fts5(search_text, \
             tokenize = 'trigram case_sensitive 1', content = '', contentless_delete = 1); \
         INSERT INTO {fts} ({fts}, rank) VALUES ('secure-delete', 1); \
         INSERT INTO {fts} ({fts}, rank) VALUES ('hashsize', 8388608);"
    ))?;
    Ok(())
}

/// Creates the index of `table` and fills it from the table's rows, in rowid order. A
/// rebuild's shadow table gets its index this way once its rows are written, like its other
/// indexes: one ordered bulk load instead of a delete and an insert per row, each of which
/// makes FTS5 flush and merge its pending segments (that took most of the 8 s a rebuild spent
/// writing 100,000 customers).
pub(super) fn build(tx: &Connection, table: &str) -> Result<(), StorageError> {
    create(tx, table)?;
    tx.execute_batch(&format!(
        "INSERT INTO {fts} (rowid, search_text) SELECT rowid, search_text FROM {table} \
         ORDER BY rowid",
        fts = fts(table)
    ))?;
    Ok(())
}

/// Creates the live index if it is missing (a store from before it) and fills it from the
/// live table, so that search works at once; the projection's version bump then rebuilds
/// everything anyway.
pub(super) fn ensure_live(tx: &Transaction<'_>, table: &str) -> Result<(), StorageError> {
    let exists = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [fts(table)],
            |r| r.get::<_, i64>(0),
        )?
        .eq(&1);
    if !exists {
        build(tx, table)?;
    }
    Ok(())
}

/// Puts the current `search_text` of the row `rowid` of `table` into its index, replacing
/// what was there.
pub(super) fn sync(
    tx: &Connection,
    table: &str,
    rowid: i64,
    search_text: &str,
) -> Result<(), StorageError> {
    let fts = fts(table);
    tx.prepare_cached(&format!("DELETE FROM {fts} WHERE rowid = ?1"))?
        .execute([rowid])?;
    tx.prepare_cached(&format!(
        "INSERT INTO {fts} (rowid, search_text) VALUES (?1, ?2)"
    ))?
    .execute(params![rowid, search_text])?;
    Ok(())
}

/// The condition on the live customers table that finds `needle` (already normalised by
/// `search_needle`) through the index, with its parameter; `None` for needles of fewer than
/// three characters, which have no trigram and are left to the caller's scan.
pub(super) fn clause(needle: &str) -> Option<(&'static str, String)> {
    if needle.chars().count() < 3 {
        return None;
    }
    // An FTS5 string: double quotes doubled; the whole needle is one phrase, whose trigrams
    // must follow each other, which is exactly "contains this substring".
    let phrase = format!("\"{}\"", needle.replace('"', "\"\""));
    Some((
        "rowid IN (SELECT rowid FROM customers_fts WHERE customers_fts MATCH ?)",
        phrase,
    ))
}
