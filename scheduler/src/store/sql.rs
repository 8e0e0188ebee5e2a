//! SQL text shared by the store's modules: bulk VALUES placeholders per dialect. A leaf: it
//! imports no other store module.

use super::Dialect;

/// Rows per statement: well under both databases' limits on bound parameters.
pub const ROWS_PER_STATEMENT: usize = 512;

/// The VALUES rows of a bulk statement: `($first, $first+1, …), (…)` on Postgres, and anonymous
/// `?`s on SQLite. sqlx binds a numbered SQLite parameter by looking its name up in a list, which
/// makes binding P numbered parameters cost O(P²); anonymous ones are bound by position. Parameters
/// must therefore be bound in the order they appear in the statement text.
pub fn placeholders(dialect: Dialect, rows: usize, columns: usize, first: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (0..columns)
                .map(|column| placeholder(dialect, first + row * columns + column))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn placeholder(dialect: Dialect, number: usize) -> String {
    match dialect {
        Dialect::Sqlite => "?".into(),
        Dialect::Postgres => format!("${number}"),
    }
}

/// `INDEXED BY index` on SQLite (after the table name), nothing on Postgres. SQLite plans without
/// statistics, so it cannot tell that a partial index (RUNNABLE jobs of one queue) holds a few rows
/// where a full one (every job of a status, every job of a queue) holds a million: with a backlog
/// in one queue, or a long history, it walked those and dispatch fell from 250 to 25 jobs/s.
/// Naming the index makes the plan the one the query was written for; SQLite refuses the
/// statement if that index cannot serve it, so a wrong name fails every test, not silently.
pub fn indexed_by(dialect: Dialect, index: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!(" INDEXED BY {index}"),
        Dialect::Postgres => String::new(),
    }
}
