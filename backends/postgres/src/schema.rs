//! The store's three tables (positions, marks of handled records, leases), and every
//! statement it runs on the first two, written once for its schema.
//!
//! A position is an offset (`position_offset`) or a Kinesis sequence position
//! (`position_sequence`, text, compared as `logpipe_core::SequenceRank` orders them; a
//! starting point such as `TRIM_HORIZON` is below every sequence number).

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

/// A sequence position (or starting point) `column` as a number to compare, in the order
/// of `SequenceRank`: sequence number `S` is `S * 10^21`, and user record `N` of the
/// aggregated record `S` (`S:N`, `N` below 2^64) is `(S - 1) * 10^21 + N + 1`, between
/// `S - 1` and `S`; a starting point is below every one.
fn rank(column: &str) -> String {
    format!(
        "(CASE WHEN {column} ~ '^[0-9]+$' THEN {column}::numeric * 1e21
               WHEN {column} ~ '^[0-9]+:[0-9]+$'
                   THEN (split_part({column}, ':', 1)::numeric - 1) * 1e21
                       + split_part({column}, ':', 2)::numeric + 1
               ELSE -1e22 END)"
    )
}

/// The statements of a store whose tables are in one schema.
#[derive(Clone)]
pub(crate) struct Statements {
    /// Creates the tables that are missing; takes no parameters.
    pub(crate) create: SqlStr,
    /// Whether the tables of positions and marks exist: one row, one boolean.
    pub(crate) exists: SqlStr,
    /// Whether the table of leases exists (created only when leases are used, so that
    /// a store whose tables predate it needs no CREATE privilege): one row, one boolean.
    pub(crate) leases_exist: SqlStr,
    /// `$1` group, `$2..$3` arrays of stream, partition: the rows `(stream, partition,
    /// owner, counter)` of those leases that exist, locked against a take until the
    /// transaction ends (in key order, as every multi-row statement here goes).
    pub(crate) lease_fences: SqlStr,
    /// `$1` group, `$2` stream, `$3` partition: the row `(position_offset, position_sequence)`.
    pub(crate) load: SqlStr,
    /// `$1` group, `$2..$5` arrays of stream, partition, offset, sequence, `$6` whether
    /// to move positions back and forget every mark (an operator's reset): stores the
    /// positions not behind a stored one and forgets the marks up to them; returns the
    /// number of positions stored.
    pub(crate) store: SqlStr,
    /// `$1..$5` arrays of group, stream, partition, mark offset, mark sequence: marks
    /// the records handled unless a record is marked already or at or below its
    /// partition's stored position; returns the number of marks written.
    pub(crate) mark: SqlStr,
    /// `$1..$5` as for `mark`: how many of those records are at or below their
    /// partition's stored position. Run after `mark`, in a snapshot of its own, it sees
    /// a position stored while the mark waited for another transaction's row.
    pub(crate) covered: SqlStr,
    /// `$1` group, `$2` stream, `$3` partition: the marks, in position order.
    pub(crate) marks: SqlStr,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let positions = format!("\"{schema}\".logpipe_positions");
        let handled = format!("\"{schema}\".logpipe_handled");
        let leases = format!("\"{schema}\".logpipe_leases");
        let sql = |text: String| AssertSqlSafe(text).into_sql_str();
        let stored_rank = rank("stored.position_sequence");
        let new_rank = rank("excluded.position_sequence");
        let input_rank = rank("input.position_sequence");
        let mark_rank = rank("mark.position_sequence");
        // The stored position of an `input` record's partition, when it is at or past
        // the record.
        let covering = format!(
            "SELECT 1 FROM {positions} AS stored
             WHERE stored.consumer_group = input.consumer_group
                 AND stored.stream = input.stream
                 AND stored.partition = input.partition
                 AND ((input.position_sequence = ''
                       AND stored.position_offset >= input.position_offset)
                      OR (input.position_sequence <> ''
                          AND stored.position_sequence IS NOT NULL
                          AND {stored_rank} >= {input_rank}))"
        );
        Self {
            create: sql(format!(
                "CREATE TABLE IF NOT EXISTS {positions} (
                     consumer_group text NOT NULL,
                     stream text NOT NULL,
                     partition text NOT NULL,
                     position_offset bigint,
                     position_sequence text,
                     updated_at timestamptz NOT NULL DEFAULT now(),
                     CHECK ((position_offset IS NULL) <> (position_sequence IS NULL)),
                     PRIMARY KEY (consumer_group, stream, partition)
                 );
                 CREATE TABLE IF NOT EXISTS {handled} (
                     consumer_group text NOT NULL,
                     stream text NOT NULL,
                     partition text NOT NULL,
                     position_offset bigint NOT NULL,
                     position_sequence text NOT NULL,
                     handled_at timestamptz NOT NULL DEFAULT now(),
                     PRIMARY KEY (consumer_group, stream, partition, position_offset, position_sequence)
                 );
                 CREATE TABLE IF NOT EXISTS {leases} (
                     consumer_group text NOT NULL,
                     stream text NOT NULL,
                     partition text NOT NULL,
                     owner text,
                     counter bigint NOT NULL DEFAULT 0,
                     expires_at timestamptz,
                     parents text[] NOT NULL DEFAULT '{{}}',
                     finished boolean NOT NULL DEFAULT false,
                     owner_switches bigint NOT NULL DEFAULT 0,
                     PRIMARY KEY (consumer_group, stream, partition)
                 );"
            )),
            exists: sql(format!(
                "SELECT to_regclass('{positions}') IS NOT NULL AND to_regclass('{handled}') IS NOT NULL"
            )),
            leases_exist: sql(format!("SELECT to_regclass('{leases}') IS NOT NULL")),
            lease_fences: sql(format!(
                "SELECT stream, partition, owner, counter FROM {leases}
                 WHERE consumer_group = $1 AND (stream, partition) IN (
                     SELECT * FROM UNNEST($2::text[], $3::text[]))
                 ORDER BY stream, partition
                 FOR SHARE"
            )),
            load: sql(format!(
                "SELECT position_offset, position_sequence FROM {positions}
                 WHERE consumer_group = $1 AND stream = $2 AND partition = $3"
            )),
            store: sql(format!(
                "WITH input AS (
                     SELECT * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[])
                         AS input (stream, partition, position_offset, position_sequence)
                 ), stored AS (
                     INSERT INTO {positions} AS stored
                         (consumer_group, stream, partition, position_offset, position_sequence)
                     SELECT $1, stream, partition, position_offset, position_sequence FROM input
                     ON CONFLICT (consumer_group, stream, partition) DO UPDATE SET
                         position_offset = excluded.position_offset,
                         position_sequence = excluded.position_sequence,
                         updated_at = now()
                     WHERE $6 OR NOT CASE
                         WHEN stored.position_offset IS NOT NULL
                             AND excluded.position_offset IS NOT NULL
                             THEN stored.position_offset > excluded.position_offset
                         WHEN stored.position_sequence IS NOT NULL
                             AND excluded.position_sequence IS NOT NULL
                             THEN {stored_rank} > {new_rank}
                         ELSE false
                     END
                     RETURNING 1
                 ), forgotten AS (
                     DELETE FROM {handled} AS mark USING input
                     WHERE mark.consumer_group = $1 AND mark.stream = input.stream
                         AND mark.partition = input.partition
                         AND ($6
                             OR (mark.position_sequence = '' AND input.position_offset IS NOT NULL
                                 AND mark.position_offset <= input.position_offset)
                             OR (input.position_sequence IS NOT NULL
                                 AND (input.position_sequence !~ '^[0-9]+(:[0-9]+)?$'
                                      OR (mark.position_sequence <> ''
                                          AND {mark_rank} <= {input_rank}))))
                 )
                 SELECT count(*) FROM stored"
            )),
            mark: sql(format!(
                "WITH input AS (
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                         AS input (consumer_group, stream, partition, position_offset, position_sequence)
                 ), marked AS (
                     INSERT INTO {handled}
                         (consumer_group, stream, partition, position_offset, position_sequence)
                     SELECT * FROM input WHERE NOT EXISTS ({covering})
                     ON CONFLICT DO NOTHING
                     RETURNING 1
                 )
                 SELECT count(*) FROM marked"
            )),
            covered: sql(format!(
                "SELECT count(*) FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                     AS input (consumer_group, stream, partition, position_offset, position_sequence)
                 WHERE EXISTS ({covering})"
            )),
            marks: sql(format!(
                "SELECT position_offset, position_sequence FROM {handled}
                 WHERE consumer_group = $1 AND stream = $2 AND partition = $3
                 ORDER BY {}, position_offset",
                rank("position_sequence")
            )),
        }
    }
}
