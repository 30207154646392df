//! The example service and producer (`examples/people_service.rs`,
//! `examples/people_producer.rs`) on a Kafka cluster, as the fault and rebalance tests
//! run them: topics and a group of their own, positions committed to the group, and the
//! `people` table in a directory of their own.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{program, unique, wait_until_blocking};

/// Processes of the example on one cluster, sharing topics, group and table.
pub(crate) struct KafkaPeople {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl KafkaPeople {
    /// The example on `brokers`, its topics and group named after `name`, with topics of
    /// `partitions` partitions, and the variables of `extra` on top.
    pub(crate) fn new(brokers: &str, name: &str, partitions: u32, extra: &[(&str, &str)]) -> Self {
        let prefix = format!("{}-", unique(name));
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("people.db");
        let mut vars: Vec<(String, String)> = [
            ("LOGPIPE_BACKEND", format!("kafka://{brokers}")),
            ("LOGPIPE_KAFKA__TOPIC_PREFIX", prefix.clone()),
            ("LOGPIPE_KAFKA__CREATE_TOPICS", "true".to_owned()),
            ("LOGPIPE_KAFKA__TOPIC_PARTITIONS", partitions.to_string()),
            ("LOGPIPE_GROUP_PREFIX", prefix),
            ("LOGPIPE_OFFSET_STORE", "kafka://".to_owned()),
            ("PEOPLE_DB", db.display().to_string()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Self { dir, vars }
    }

    /// The directory the processes run in.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite file of the `people` table.
    pub(crate) fn db(&self) -> PathBuf {
        self.dir().join("people.db")
    }

    /// The consumer group of the service's `people_table` consumer.
    pub(crate) fn group(&self) -> String {
        let prefix = self.var("LOGPIPE_GROUP_PREFIX");
        format!("{prefix}people_table")
    }

    fn var(&self, key: &str) -> &str {
        let found = self.vars.iter().find(|(k, _)| k == key);
        &found.expect("a variable of the example").1
    }

    /// A command running `name` (a program of the example) in [`dir`](Self::dir), with
    /// the example's variables and `extra` on top.
    pub(crate) fn command(&self, name: &str, extra: &[(&str, &str)]) -> Command {
        let mut command = Command::new(program(name));
        command
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .env_remove("LOGPIPE_CONFIG")
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    /// Sends `count` people, the first numbered `first`.
    pub(crate) fn send(&self, first: usize, count: usize) {
        self.send_with(&[], first, count);
    }

    /// The same, through the brokers at `brokers` rather than those of the example.
    pub(crate) fn send_through(&self, brokers: &str, first: usize, count: usize) {
        self.send_with(
            &[("LOGPIPE_BACKEND", &format!("kafka://{brokers}"))],
            first,
            count,
        );
    }

    fn send_with(&self, extra: &[(&str, &str)], first: usize, count: usize) {
        let sent = self
            .command("people_producer", extra)
            .args([count.to_string(), first.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "people_producer {count} {first}");
    }

    /// Starts the service with `extra` variables, logging to the file `log` of
    /// [`dir`](Self::dir).
    pub(crate) fn service(&self, extra: &[(&str, &str)], log: &str) -> Child {
        let log = std::fs::File::create(self.dir().join(log)).unwrap();
        self.command("people_service", extra)
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// The log file `log` of [`dir`](Self::dir) so far.
    pub(crate) fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir().join(log)).unwrap_or_default()
    }

    /// [`wait_until_blocking`], whose panic also shows the last lines (debug lines left
    /// out) of the log files `logs`.
    pub(crate) fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        logs: &[&str],
        condition: impl FnMut() -> bool,
    ) {
        let waited = panic::catch_unwind(AssertUnwindSafe(|| {
            wait_until_blocking(what, timeout, condition);
        }));
        if let Err(timed_out) = waited {
            let mut shown = String::new();
            for log in logs {
                let text = self.log(log);
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("DEBUG")).collect();
                let last = &lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..];
                shown.push_str(&format!("\n== {log}\n{}", last.join("\n")));
            }
            let reason = timed_out
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            panic!("{reason}; the logs end:{shown}");
        }
    }
}

/// The lines of each log a timed-out wait shows.
const LOG_LINES_SHOWN: usize = 40;
