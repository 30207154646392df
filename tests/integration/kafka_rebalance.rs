//! Rebalances of a consumer group on the test broker (`LOGPIPE_TEST_KAFKA`): one member
//! of two restarted over and over, killed or stopped, while the other keeps reading the
//! partitions it holds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::kafka::broker_blocking;
use crate::kafka_people::KafkaPeople;
use crate::killed::people;
use crate::processes::{terminate, wait_for_exit};
use crate::serve::{get, served_addr};
use crate::support::{spawn_with_log, wait_until_blocking};

/// People sent in all, over the churn.
const PEOPLE: usize = 30_000;
/// People sent each second of the churn.
const PER_SECOND: usize = 1_500;
/// How long the churning member lives each time, in turn (1-3 s).
const LIVES: [Duration; 5] = [
    Duration::from_millis(1_000),
    Duration::from_millis(2_500),
    Duration::from_millis(1_500),
    Duration::from_millis(3_000),
    Duration::from_millis(2_000),
];
/// How long the churn lasts.
const CHURN: Duration = Duration::from_secs(20);
/// The windows in each of which the steady member must handle records.
const WINDOW: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(180);

static CHURNS: Mutex<()> = Mutex::new(());

/// The records the service at `addr` has handled, from its `/metrics`.
fn handled(addr: SocketAddr) -> f64 {
    let (status, scrape) = get(addr, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    scrape
        .lines()
        .filter(|line| line.starts_with("logpipe_records_handled_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// What a churn came to.
struct Churn {
    /// The records the steady member handled in each [`WINDOW`] of the churn.
    per_window: Vec<f64>,
    /// The steady member's log lines about partitions assigned or revoked during the
    /// churn.
    steady_rebalances: Vec<String>,
}

/// Two members of a group read 30,000 people sent over the churn; one of them is killed
/// or stopped in turn, and started again, for [`CHURN`]. `group` is the group's settings
/// (variables), `churning_member` those of the churning member only. Checks that everyone is
/// handled and that repeats are bounded by the commit batches. `None` when the test
/// broker does not run (outside CI).
fn churn(group: &[(&str, &str)], churning_member: &[(&str, &str)]) -> Option<Churn> {
    let (brokers, _broker) = broker_blocking()?;
    // One churn at a time: each keeps two services and a producer busy.
    let _alone = CHURNS.lock().unwrap_or_else(PoisonError::into_inner);
    let example = KafkaPeople::new(&brokers, "churn", 6, group);
    let db = example.db();
    example.send(0, PER_SECOND);

    let mut steady = example.command("people_service", &[("RUST_LOG", "info")]);
    steady.args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"]);
    let (steady, steady_log) = spawn_with_log(steady);
    let addr = served_addr(&steady_log);
    let steady_lines = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&steady_lines);
    thread::spawn(move || {
        for line in steady_log {
            lines.lock().unwrap().push(line);
        }
    });
    wait_until_blocking("the steady member handles records", WAIT, || {
        handled(addr) > 0.0
    });
    let mut churning = example.service(churning_member, "churning-0.log");
    // The steady member may handle the first people alone, before the second member's
    // join has settled: the churn starts once the steady member has given partitions
    // up and the churning member has taken them, so that the join's own rebalance is
    // not counted as one of the churn's.
    example.wait_until(
        "the churning member joins and the first people are handled",
        WAIT,
        &["churning-0.log"],
        || {
            let gave_up = steady_lines
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains("partition revoked"));
            gave_up
                && example.log("churning-0.log").contains("partition assigned")
                && people(&db).count == i64::try_from(PER_SECOND).unwrap()
        },
    );
    let log_before_churn = steady_lines.lock().unwrap().len();

    // Records keep coming throughout, so that the steady member always has some to
    // handle on the partitions it holds.
    let churning_over = AtomicBool::new(false);
    let (windows, restarts) = thread::scope(|scope| {
        scope.spawn(|| {
            let mut first = PER_SECOND;
            while first < PEOPLE {
                let started = Instant::now();
                example.send(first, PER_SECOND);
                first += PER_SECOND;
                thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
            }
        });
        let sampler = scope.spawn(|| {
            let mut samples = vec![(Instant::now(), handled(addr))];
            while !churning_over.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(100));
                samples.push((Instant::now(), handled(addr)));
            }
            samples
        });
        let start = Instant::now();
        let mut restarts = 0;
        while start.elapsed() < CHURN {
            thread::sleep(LIVES[restarts % LIVES.len()]);
            if restarts % 2 == 0 {
                churning.kill().unwrap();
                churning.wait().unwrap();
            } else {
                terminate(&churning);
                assert_eq!(wait_for_exit(&mut churning).code(), Some(0));
            }
            restarts += 1;
            churning = example.service(churning_member, &format!("churning-{restarts}.log"));
        }
        churning_over.store(true, Ordering::SeqCst);
        (sampler.join().unwrap(), restarts)
    });
    let steady_rebalances: Vec<String> = steady_lines.lock().unwrap()[log_before_churn..]
        .iter()
        .filter(|line| line.contains("partition assigned") || line.contains("partition revoked"))
        .cloned()
        .collect();

    // Handled by the steady member in each window of the churn.
    let begin = windows[0].0;
    let at = |time: Duration| {
        windows
            .iter()
            .take_while(|(when, _)| when.duration_since(begin) <= time)
            .last()
            .map_or(0.0, |(_, handled)| *handled)
    };
    let mut per_window = Vec::new();
    let mut time = Duration::ZERO;
    while time + WINDOW <= CHURN {
        per_window.push(at(time + WINDOW) - at(time));
        time += WINDOW;
    }

    wait_until_blocking("the group handles everyone", WAIT, || {
        people(&db).count == i64::try_from(PEOPLE).unwrap()
    });
    for mut member in [steady, churning] {
        terminate(&member);
        assert_eq!(wait_for_exit(&mut member).code(), Some(0));
    }
    let stored = people(&db);
    eprintln!(
        "{restarts} restarts in {CHURN:?}: the steady member handled {per_window:?} in each {WINDOW:?} ({} rebalance lines); {} repeated applications",
        steady_rebalances.len(),
        stored.duplicates()
    );
    assert_eq!(stored.count, i64::try_from(PEOPLE).unwrap(), "{stored:?}");
    // A member killed repeats at most what it handled since its last answered commit:
    // fewer than commit_every (100) records not stored yet, and the commit on its way. A
    // member stopped commits before it goes.
    let kills = i64::try_from(restarts.div_ceil(2)).unwrap();
    assert!(
        stored.duplicates() <= kills * 2 * 100,
        "repeats bounded by the commit batches: {stored:?}"
    );
    Some(Churn {
        per_window,
        steady_rebalances,
    })
}

impl Churn {
    /// Checks that the steady member handled records in every window of the churn.
    fn assert_handled_throughout(&self) {
        assert!(
            self.per_window.iter().all(|handled| *handled > 0.0),
            "the steady member handled records in every {WINDOW:?} of the churn: {:?}",
            self.per_window
        );
    }
}

/// The session settings that make a classic group notice a killed member quickly.
const QUICK_CLASSIC_SESSION: [(&str, &str); 2] = [
    ("LOGPIPE_KAFKA__CONSUMER__SESSION__TIMEOUT__MS", "6000"),
    ("LOGPIPE_KAFKA__CONSUMER__HEARTBEAT__INTERVAL__MS", "500"),
];

#[test]
fn with_the_default_cooperative_rebalances_a_member_restarted_over_and_over_leaves_the_other_reading()
 {
    let Some(churn) = churn(&QUICK_CLASSIC_SESSION, &[]) else {
        return;
    };
    churn.assert_handled_throughout();
}

#[test]
fn under_the_consumer_group_protocol_a_member_restarted_over_and_over_leaves_the_other_reading() {
    // KIP-848: the broker assigns, and takes the session settings from its own
    // configuration (`tests/services/kafka` sets 6 s, as the classic tests do).
    let Some(churn) = churn(
        &[("LOGPIPE_KAFKA__CONSUMER__GROUP__PROTOCOL", "consumer")],
        &[],
    ) else {
        return;
    };
    churn.assert_handled_throughout();
}

#[test]
fn a_member_with_a_group_instance_id_restarted_over_and_over_takes_its_partitions_back_without_a_rebalance()
 {
    // Static membership: a member restarted with its instance id within the session
    // gets its own partitions back, and the other member's are not touched.
    let Some(churn) = churn(
        &QUICK_CLASSIC_SESSION,
        &[(
            "LOGPIPE_KAFKA__CONSUMER__GROUP__INSTANCE__ID",
            "churning-member",
        )],
    ) else {
        return;
    };
    churn.assert_handled_throughout();
    assert_eq!(
        churn.steady_rebalances,
        Vec::<String>::new(),
        "no rebalance reached the steady member"
    );
}
