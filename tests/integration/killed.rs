//! A consuming service killed with SIGKILL mid-stream and started again: the scenario each
//! backend and offset store runs. The service is `examples/people_service.rs`, fed by
//! `examples/people_producer.rs`; what it stored is read from its `people` table.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::processes::{terminate, wait_for_exit};
use crate::support::{program, wait_until_blocking};

/// The longest any wait of the scenario may take.
const WAIT: Duration = Duration::from_secs(120);

/// What the service's `people` table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct People {
    /// People stored.
    pub count: i64,
    /// Messages applied, repeats included.
    pub applied: i64,
    /// The most times one message was applied.
    pub most_applied: i64,
}

impl People {
    /// Messages applied more than once, counted as often as they were repeated.
    pub fn duplicates(&self) -> i64 {
        self.applied - self.count
    }
}

/// Reads the `people` table of the SQLite file `db` (empty before the service made it).
pub(crate) fn people(db: &Path) -> People {
    let empty = People {
        count: 0,
        applied: 0,
        most_applied: 0,
    };
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return empty;
    };
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(applied), 0), COALESCE(MAX(applied), 0) FROM people",
        [],
        |row| {
            Ok(People {
                count: row.get(0)?,
                applied: row.get(1)?,
                most_applied: row.get(2)?,
            })
        },
    )
    .unwrap_or(empty)
}

/// The most repeated applications a scenario allows.
pub(crate) enum MaxDuplicates<'a> {
    /// This many (0 when the handler stores its position with its row).
    Fixed(i64),
    /// The records handled at the kill (the people stored then) not covered by the
    /// positions that reached the offset store: the function says how many records those
    /// cover, read after the kill and before the restart. A position arriving later only
    /// covers more, so the bound holds without any assumption on timing.
    NotStored(&'a dyn Fn() -> i64),
}

/// One run of the scenario.
pub(crate) struct Scenario<'a> {
    /// People the producer sends.
    pub people: i64,
    /// People stored when the service is killed.
    pub kill_after: i64,
    /// The most repeated applications allowed: the records a kill can leave handled but
    /// not covered by a position that reached the offset store.
    pub max_duplicates: MaxDuplicates<'a>,
    /// The SQLite file of the `people` table.
    pub db: &'a Path,
    /// Where the service writes its log, shown when the scenario fails.
    pub log: &'a Path,
}

/// A process killed when dropped; a panicking test shows the service log first.
pub(crate) struct RunningProgram<'a> {
    pub(crate) child: Child,
    pub(crate) log: &'a Path,
}

impl Drop for RunningProgram<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log).unwrap_or_default();
            eprintln!("service log ({}):\n{log}", self.log.display());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scenario<'_> {
    /// Starts `people_service` and `people_producer` (made by `command` from a program,
    /// with their configuration), kills the service with SIGKILL once
    /// [`kill_after`](Self::kill_after) people are stored, starts it again, waits until
    /// every person is stored and stops it with SIGTERM. Checks that nobody is lost and
    /// that no more than [`max_duplicates`](Self::max_duplicates) messages were applied
    /// again; returns what the table holds. Each person is one record.
    pub fn run(&self, command: impl Fn(PathBuf) -> Command) -> People {
        let start = || {
            let log = File::options()
                .create(true)
                .append(true)
                .open(self.log)
                .unwrap();
            let child = command(program("people_service"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            RunningProgram {
                child,
                log: self.log,
            }
        };
        let mut consumer = start();
        let mut producer = RunningProgram {
            child: command(program("people_producer"))
                .arg(self.people.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
            log: self.log,
        };
        wait_until_blocking(
            &format!("the service has stored {} people", self.kill_after),
            WAIT,
            || people(self.db).count >= self.kill_after,
        );
        consumer.child.kill().unwrap(); // SIGKILL: nothing is stored on the way out
        consumer.child.wait().unwrap();
        let at_kill = people(self.db);
        assert!(
            at_kill.count < self.people,
            "the service was killed before it had everything: {at_kill:?}"
        );
        let max_duplicates = match self.max_duplicates {
            MaxDuplicates::Fixed(max) => max,
            MaxDuplicates::NotStored(covered) => {
                let covered = covered();
                assert!(
                    covered <= at_kill.count,
                    "positions stored only for records handled: {covered} covered, {at_kill:?}"
                );
                at_kill.count - covered
            }
        };

        let mut consumer = start();
        assert!(
            wait_for_exit(&mut producer.child).success(),
            "the producer sent everyone"
        );
        wait_until_blocking("every person is stored", WAIT, || {
            people(self.db).count == self.people
        });
        terminate(&consumer.child);
        assert_eq!(wait_for_exit(&mut consumer.child).code(), Some(0));
        let stored = people(self.db);
        assert_eq!(stored.count, self.people, "nobody lost");
        assert!(
            stored.duplicates() <= max_duplicates,
            "at most {max_duplicates} messages applied again after the kill: {stored:?} ({at_kill:?} at the kill)"
        );
        stored
    }
}
