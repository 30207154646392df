//! Kinesis consumer groups over leases in PostgreSQL (`LOGPIPE_TEST_POSTGRES`) on
//! kinesis-mock (`LOGPIPE_TEST_KINESIS`): real `people_service` processes of one group
//! share the shards of a stream, and are stopped, killed, joined and paused.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::leases::signal;
use crate::postgres::Schema;
use crate::processes::{terminate, wait_for_exit};
use crate::support::{program, wait_until_blocking};

const WAIT: Duration = Duration::from_secs(120);
const LEASE_MS: u64 = 6000;
const RENEWAL_MS: u64 = 1000;

/// A stream on kinesis-mock, a schema of the PostgreSQL server holding positions and
/// leases, and the programs' environment.
struct Group {
    schema: Schema,
    client: logpipe_kinesis::sdk::Client,
    stream: String,
    shards: usize,
    env: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
    /// The service's table consumer group, as its leases and positions name it.
    group: String,
}

/// The environment of the service and the producer on `stream` of kinesis-mock at
/// `endpoint`, with short leases.
fn programs_env(endpoint: &str, stream: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "LOGPIPE_BACKEND",
            format!(
                "kinesis://?region={}&endpoint={endpoint}",
                crate::kinesis::REGION
            ),
        ),
        ("LOGPIPE_KINESIS__POLL_INTERVAL_MS", "200".to_owned()),
        ("LOGPIPE_KINESIS__LEASE_DURATION_MS", LEASE_MS.to_string()),
        ("LOGPIPE_KINESIS__LEASE_RENEWAL_MS", RENEWAL_MS.to_string()),
        ("LOGPIPE_CONSUMER__COMMIT_INTERVAL_MS", "200".to_owned()),
        ("PEOPLE_STREAM", stream.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("RUST_LOG", "logpipe=info".to_owned()),
    ]
}

impl Group {
    /// `None` (the test is skipped) when a server is not running outside CI.
    fn new(shards: i32) -> Option<Self> {
        let schema = Schema::new()?;
        let (endpoint, client, stream) = schema
            .runtime
            .block_on(crate::kinesis::fixture("leased", shards))?;
        let mut env = programs_env(&endpoint, &stream);
        env.extend([
            ("LOGPIPE_OFFSET_STORE", schema.url.clone()),
            (
                "LOGPIPE_KINESIS__SHARD_DISCOVERY_INTERVAL_MS",
                "2000".to_owned(),
            ),
            ("LOGPIPE_CONSUMER__CONCURRENCY", "8".to_owned()),
        ]);
        Some(Self {
            schema,
            client,
            stream,
            shards: usize::try_from(shards).unwrap(),
            env,
            dir: tempfile::tempdir().unwrap(),
            group: format!("people_table@{}", crate::kinesis::REGION),
        })
    }

    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(program(name));
        command
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("LOGPIPE_CONFIG")
            .env_remove("AWS_PROFILE")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command
    }

    fn log_of(&self, worker: &str) -> PathBuf {
        self.dir.path().join(format!("{worker}.log"))
    }

    /// A worker named `worker`, logging to its own file.
    fn worker(&self, worker: &str) -> Worker {
        Worker(
            self.command("people_service")
                .env("LOGPIPE_KINESIS__WORKER_ID", worker)
                .stderr(File::create(self.log_of(worker)).unwrap())
                .spawn()
                .unwrap(),
        )
    }

    /// Starts sending people `first..first + count`.
    fn producer(&self, count: i64, first: i64) -> Child {
        self.command("people_producer")
            .args([count.to_string(), first.to_string()])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    fn produce(&self, count: i64, first: i64) {
        let mut producer = self.producer(count, first);
        assert!(
            wait_for_exit(&mut producer).success(),
            "the producer failed"
        );
    }

    /// How many unfinished shards each worker holds a live lease of.
    fn owners(&self) -> BTreeMap<String, usize> {
        let rows: Vec<(String, i64)> = self
            .schema
            .query(format!(
                "SELECT owner, COUNT(*) FROM {}.logpipe_leases
                 WHERE consumer_group = '{}' AND stream = '{}' AND owner IS NOT NULL
                   AND expires_at > now() AND NOT finished
                 GROUP BY owner",
                self.schema.name, self.group, self.stream
            ))
            .unwrap_or_default();
        rows.into_iter()
            .map(|(owner, count)| (owner, usize::try_from(count).unwrap()))
            .collect()
    }

    /// The owner of each lease (`None` when given up), expired or not.
    fn lease_owners(&self) -> BTreeMap<String, Option<String>> {
        let rows: Vec<(String, Option<String>)> = self
            .schema
            .query(format!(
                "SELECT partition, owner FROM {}.logpipe_leases
                 WHERE consumer_group = '{}' AND stream = '{}'",
                self.schema.name, self.group, self.stream
            ))
            .unwrap_or_default();
        rows.into_iter().collect()
    }

    /// Waits until the workers named hold `shares` of the live leases (and nobody else
    /// any), and says how long it took.
    fn wait_for_split(
        &self,
        what: &str,
        shares: &[(&str, std::ops::RangeInclusive<usize>)],
    ) -> Duration {
        let started = Instant::now();
        wait_until_blocking(what, WAIT, || {
            let owners = self.owners();
            owners.values().sum::<usize>() == self.shards
                && owners.len() == shares.len()
                && shares.iter().all(|(worker, share)| {
                    owners.get(*worker).is_some_and(|held| share.contains(held))
                })
        });
        started.elapsed()
    }

    /// Waits until `count` people are stored, and checks that each was applied once.
    fn wait_for_people(&self, count: i64, when: &str) {
        wait_until_blocking(&format!("{count} people stored {when}"), WAIT, || {
            self.schema.people().count == count
        });
        let people = self.schema.people();
        assert_eq!(
            (people.count, people.applied, people.most_applied),
            (count, count, 1),
            "every person applied exactly once {when}"
        );
    }

    /// How many records the worker's handlers found handled already (by another worker):
    /// records handed to two workers.
    fn handled_twice(&self, worker: &str) -> usize {
        log(&self.log_of(worker))
            .lines()
            .filter(|line| line.contains("handled already"))
            .count()
    }
}

impl Drop for Group {
    /// On a failure, shows the leases and the end of each worker's log.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("leases: {:?}", self.lease_owners());
        eprintln!("live: {:?}", self.owners());
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let text = log(&entry.path());
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {}", entry.path().display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Waits until every steal in the logs of `dir` was noticed by the worker it was taken
/// from (at its next renewal): until then both may hand records of the shard on.
fn wait_until_steals_noticed(dir: &Path) {
    let count = |matches: &dyn Fn(&str) -> bool| -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| log(&entry.path()).lines().filter(|l| matches(l)).count())
            .sum()
    };
    wait_until_blocking("every steal is noticed by its victim", WAIT, || {
        let stolen = count(&|line| {
            line.contains("lease taken")
                && !line.contains("by another worker")
                && line.trim_end().ends_with("true")
        });
        stolen == count(&|line| line.contains("lease taken by another worker"))
    });
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A worker process, killed if the test ends first.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(worker: &mut Worker) {
    terminate(&worker.0);
    assert_eq!(wait_for_exit(&mut worker.0).code(), Some(0), "a clean stop");
}

#[test]
fn kinesis_workers_share_twelve_shards_and_hand_them_over_on_stop_kill_join_and_pause() {
    let Some(group) = Group::new(12) else {
        return;
    };
    // Three workers: 4 shards each.
    let mut w1 = group.worker("w1");
    let mut w2 = group.worker("w2");
    let mut w3 = group.worker("w3");
    let split = group.wait_for_split(
        "three workers split the shards",
        &[("w1", 4..=4), ("w2", 4..=4), ("w3", 4..=4)],
    );
    eprintln!("3 workers held 4/4/4 after {split:?}");
    wait_until_steals_noticed(group.dir.path());
    group.produce(6000, 0);
    group.wait_for_people(6000, "by three workers");
    for worker in ["w1", "w2", "w3"] {
        assert_eq!(
            group.handled_twice(worker),
            0,
            "no record handled twice in a steady state ({worker})"
        );
    }

    // SIGTERM: w3 stores its positions and gives its leases up on the way out.
    let stopped = Instant::now();
    stop(&mut w3);
    let given_up = group.lease_owners();
    assert!(
        given_up
            .values()
            .all(|owner| owner.as_deref() != Some("w3")),
        "w3 gave every lease up before it exited: {given_up:?}"
    );
    let handed_over = group.wait_for_split(
        "two workers take w3's shards",
        &[("w1", 6..=6), ("w2", 6..=6)],
    ) + stopped.elapsed();
    eprintln!("w3's shards taken over {handed_over:?} after SIGTERM");
    group.produce(2000, 6000);
    group.wait_for_people(8000, "after w3 stopped");
    for worker in ["w1", "w2"] {
        assert_eq!(
            group.handled_twice(worker),
            0,
            "a hand-off repeats nothing ({worker})"
        );
    }

    // SIGKILL: w2's leases expire and w1 takes them.
    let killed = Instant::now();
    w2.0.kill().unwrap();
    w2.0.wait().unwrap();
    group.wait_for_split("w1 takes w2's shards", &[("w1", 12..=12)]);
    eprintln!(
        "w2's shards taken over {:?} after SIGKILL (leases of {LEASE_MS} ms, renewed every {RENEWAL_MS} ms)",
        killed.elapsed()
    );
    group.produce(2000, 8000);
    group.wait_for_people(10_000, "after w2 was killed");

    // A fourth worker joins while records arrive: it steals half the shards.
    let mut producer = group.producer(2000, 10_000);
    let mut w4 = group.worker("w4");
    let stolen = group.wait_for_split("w4 steals its share", &[("w1", 6..=6), ("w4", 6..=6)]);
    eprintln!("w4 stole 6 shards in {stolen:?}");
    assert!(wait_for_exit(&mut producer).success());
    group.wait_for_people(12_000, "after w4 joined");

    // A zombie: w4 paused past its leases, then let go on.
    signal(&w4.0, "-STOP");
    group.wait_for_split("w1 takes the paused w4's shards", &[("w1", 12..=12)]);
    group.produce(1000, 12_000);
    group.wait_for_people(13_000, "while w4 is paused");
    signal(&w4.0, "-CONT");
    wait_until_blocking("w4 finds it lost its leases", WAIT, || {
        log(&group.log_of("w4")).contains("no longer reading the partition")
    });
    group.wait_for_split("w4 takes its share again", &[("w1", 6..=6), ("w4", 6..=6)]);
    group.produce(1000, 13_000);
    group.wait_for_people(14_000, "after w4 went on");
    stop(&mut w4);
    stop(&mut w1);
    let (positions, last_records) = group.schema.positions_and_last_records(&group.group);
    assert_eq!(positions.len(), 12);
    assert_eq!(
        positions, last_records,
        "the stored positions are the last records' (none moved back by the zombie)"
    );
}

#[test]
fn children_of_a_shard_split_while_three_workers_read_are_read_after_their_parent_finished() {
    let Some(group) = Group::new(3) else {
        return;
    };
    let mut workers: Vec<Worker> = ["a", "b", "c"].iter().map(|w| group.worker(w)).collect();
    group.produce(1000, 0);
    group.wait_for_people(1000, "before the split");
    let parent = "shardId-000000000001";
    let client = &group.client;
    group.schema.runtime.block_on(async {
        crate::kinesis::split(client, &group.stream, parent).await;
    });
    let children: Vec<String> = group.schema.runtime.block_on(async {
        crate::kinesis::shards(client, &group.stream)
            .await
            .iter()
            .filter(|s| s.parent_shard_id() == Some(parent))
            .map(|s| s.shard_id().to_owned())
            .collect()
    });
    assert_eq!(children.len(), 2, "a split makes two children");
    group.produce(1000, 1000);
    group.wait_for_people(2000, "after the split");
    wait_until_blocking("the children are leased", WAIT, || {
        let owners = group.lease_owners();
        children
            .iter()
            .all(|child| owners.get(child).is_some_and(Option::is_some))
    });
    // Whichever worker held which, a child was taken only after its parent finished.
    let logs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|w| log(&group.log_of(w)))
        .collect();
    let first_time = |needle: &dyn Fn(&str) -> bool| -> Option<String> {
        logs.iter()
            .flat_map(|log| log.lines())
            .filter(|line| needle(line))
            .map(|line| {
                line.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .min()
    };
    let finished = first_time(&|line| line.contains("lease finished") && line.contains(parent))
        .expect("the parent's lease was finished");
    for child in &children {
        let taken =
            first_time(&|line| line.contains("lease taken") && line.contains(child.as_str()))
                .expect("the child's lease was taken");
        assert!(
            taken > finished,
            "{child} taken at {taken}, parent finished at {finished}"
        );
    }
    let finished_rows: Vec<(bool, Option<String>)> = group
        .schema
        .query(format!(
            "SELECT finished, owner FROM {}.logpipe_leases
             WHERE consumer_group = '{}' AND partition = '{parent}'",
            group.schema.name, group.group
        ))
        .unwrap();
    assert_eq!(
        finished_rows,
        [(true, None)],
        "the parent's lease is finished"
    );
    for worker in &mut workers {
        stop(worker);
    }
}

/// Each live lease's owner, as `logpipe leases --json` shows the group's leases.
fn owners_shown(env: &[(&str, String)], dir: &Path, stream: &str) -> BTreeMap<String, usize> {
    let output = Command::new(program("logpipe"))
        .args(["leases", "--group", "people_table", stream, "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("LOGPIPE_CONFIG")
        .env_remove("AWS_PROFILE")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut owners = BTreeMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let lease: serde_json::Value = serde_json::from_str(line).unwrap();
        if let (false, Some(owner)) = (lease["free"] == true, lease["owner"].as_str()) {
            *owners.entry(owner.to_owned()).or_default() += 1;
        }
    }
    owners
}

#[test]
fn by_default_kinesis_workers_lease_shards_in_the_sqlite_offset_store() {
    let runtime = crate::support::runtime();
    let Some((endpoint, _, stream)) = runtime.block_on(crate::kinesis::fixture("sqlite-leased", 4))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // No offset store named: positions and leases go to ./logpipe.db.
    let env = programs_env(&endpoint, &stream);
    let start = |worker: &str| {
        Worker(
            Command::new(program("people_service"))
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("LOGPIPE_KINESIS__WORKER_ID", worker)
                .env_remove("LOGPIPE_CONFIG")
                .env_remove("AWS_PROFILE")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(dir.path().join(format!("{worker}.log"))).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let produce = |count: i64, first: i64| {
        let status = Command::new(program("people_producer"))
            .args([count.to_string(), first.to_string()])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("LOGPIPE_CONFIG")
            .env_remove("AWS_PROFILE")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the producer failed");
    };
    let db = dir.path().join("logpipe.db");
    let wait_for_people = |count: i64| {
        wait_until_blocking(&format!("{count} people stored"), WAIT, || {
            crate::killed::people(&db).count == count
        });
        let people = crate::killed::people(&db);
        assert_eq!(
            (people.applied, people.most_applied),
            (count, 1),
            "every person applied once"
        );
    };
    let mut a = start("a");
    let mut b = start("b");
    wait_until_blocking("two workers hold 2 shards each", WAIT, || {
        owners_shown(&env, dir.path(), &stream)
            == BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    });
    wait_until_steals_noticed(dir.path());
    produce(2000, 0);
    wait_for_people(2000);
    stop(&mut b);
    wait_until_blocking("a takes b's shards", WAIT, || {
        owners_shown(&env, dir.path(), &stream) == BTreeMap::from([("a".into(), 4)])
    });
    produce(1000, 2000);
    wait_for_people(3000);
    let a_log = log(&dir.path().join("a.log"));
    let handled_twice: Vec<&str> = a_log
        .lines()
        .filter(|line| line.contains("handled already"))
        .collect();
    assert!(
        handled_twice.is_empty(),
        "the hand-off repeats nothing: {handled_twice:#?}\n{}",
        log(&dir.path().join("b.log"))
    );
    assert!(
        !a_log.contains(SEPARATE_LEASES),
        "leases and positions share the file: {a_log}"
    );
    stop(&mut a);
}

/// The start-up warning of a worker whose leases are not in the offset store's database.
const SEPARATE_LEASES: &str = "kinesis.leases is not the offset store's database";

#[test]
fn leases_kept_apart_from_the_positions_are_warned_of_at_start_up() {
    let runtime = crate::support::runtime();
    let Some((endpoint, _, stream)) = runtime.block_on(crate::kinesis::fixture("apart", 1)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("a.log");
    let mut worker = Worker(
        Command::new(program("people_service"))
            .envs(
                programs_env(&endpoint, &stream)
                    .iter()
                    .map(|(k, v)| (*k, v.as_str())),
            )
            .env("LOGPIPE_KINESIS__LEASES", "sqlite://leases.db")
            .env_remove("LOGPIPE_CONFIG")
            .env_remove("AWS_PROFILE")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until_blocking(
        "the worker warns that its positions are not fenced by counter",
        WAIT,
        || log(&log_path).contains(SEPARATE_LEASES),
    );
    stop(&mut worker);
}

#[test]
fn a_lease_store_that_refuses_or_cannot_be_reached_fails_at_start_up_naming_kinesis_leases() {
    let Some(server) = logpipe_core::conformance::service("LOGPIPE_TEST_POSTGRES") else {
        return;
    };
    let wrong_password = server.replacen(":logpipe-test-password@", ":not-the-password@", 1);
    assert_ne!(wrong_password, server);
    for (url, reason, secret) in [
        (
            "postgres://app:s3cret@127.0.0.1:1/x?connect_timeout_ms=1000".to_owned(),
            "the server cannot be reached",
            "s3cret",
        ),
        (
            wrong_password,
            "password authentication failed",
            "not-the-password",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(program("people_service"))
            .env(
                "LOGPIPE_BACKEND",
                "kinesis://?region=us-east-1&endpoint=http://127.0.0.1:1",
            )
            .env("LOGPIPE_OFFSET_STORE", "memory://")
            .env("LOGPIPE_KINESIS__LEASES", &url)
            .env_remove("LOGPIPE_CONFIG")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{stderr}");
        assert!(
            stderr.contains("kinesis.leases") && stderr.contains(reason),
            "{stderr}"
        );
        assert!(!stderr.contains(secret), "the password is shown: {stderr}");
        assert!(stderr.contains(":***@"), "{stderr}");
    }
}
