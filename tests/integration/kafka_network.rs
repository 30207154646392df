//! Network faults between a consumer and its broker: the example service reads the test
//! broker through a TCP proxy (`tcp_proxy`) at the address its third listener advertises
//! (`LOGPIPE_TEST_KAFKA_PROXY`), which the test cuts and stalls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::kafka::broker_blocking;
use crate::kafka_people::KafkaPeople;
use crate::killed::people;
use crate::processes::{terminate, wait_for_exit};
use crate::serve::{get, served_addr};
use crate::support::{service, spawn_with_log, wait_until_blocking};
use crate::tcp_proxy::{Link, TcpProxy};

const WAIT: Duration = Duration::from_secs(120);
/// People sent in each phase.
const PEOPLE: usize = 300;

/// Waits until `/readyz` at `addr` answers `status` with a body containing `text`;
/// returns the body.
fn wait_for_readiness(addr: SocketAddr, status: u16, text: &str) -> String {
    let mut body = String::new();
    wait_until_blocking(&format!("/readyz answers {status} ({text})"), WAIT, || {
        let (answered, answer) = get(addr, "/readyz");
        body = answer;
        answered == status && body.contains(text)
    });
    body
}

#[test]
fn a_consumer_cut_off_or_stalled_from_its_broker_reports_stalled_and_recovers() {
    let Some((brokers, _broker)) = broker_blocking() else {
        return;
    };
    let listener: SocketAddr = service("LOGPIPE_TEST_KAFKA_PROXIED")
        .expect("LOGPIPE_TEST_KAFKA_PROXIED")
        .parse()
        .unwrap();
    let proxy_at = service("LOGPIPE_TEST_KAFKA_PROXY").expect("LOGPIPE_TEST_KAFKA_PROXY");
    let proxy = TcpProxy::start(proxy_at.parse().unwrap(), listener);
    // Quick to notice: a request unanswered for 3 s fails (librdkafka's default is 60 s),
    // and reads failing for 2 s make the consumer stalled (60 s by default).
    let example = KafkaPeople::new(
        &proxy_at,
        "network",
        3,
        &[
            ("LOGPIPE_KAFKA__GLOBAL__SOCKET__TIMEOUT__MS", "3000"),
            ("LOGPIPE_CONSUMER__STALLED_AFTER_MS", "2000"),
        ],
    );
    let db = example.db();
    let handled = |count: usize| people(&db).count == i64::try_from(count).unwrap();
    example.send(0, PEOPLE);
    let mut command = example.command("people_service", &[("RUST_LOG", "info")]);
    command.args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"]);
    let (mut service, log) = spawn_with_log(command);
    let addr = served_addr(&log);
    std::thread::spawn(move || for _ in log {});
    wait_until_blocking("the service handles the first people", WAIT, || {
        handled(PEOPLE)
    });
    wait_for_readiness(addr, 200, "");

    let mut sent = PEOPLE;
    for link in [Link::Cut, Link::Stalled] {
        proxy.set(link);
        let since = Instant::now();
        let body = wait_for_readiness(addr, 503, "people_table: stalled: reading has failed for ");
        let noticed = since.elapsed();
        // Sent meanwhile straight to the broker, for the service to read once it can.
        example.send_through(&brokers, sent, PEOPLE);
        sent += PEOPLE;
        proxy.set(Link::Up);
        let back = Instant::now();
        wait_until_blocking("the service handles what was sent meanwhile", WAIT, || {
            handled(sent)
        });
        wait_for_readiness(addr, 200, "");
        eprintln!(
            "link {link:?}: stalled after {noticed:?} ({body:?}); ready and caught up {:?} after the link came back",
            back.elapsed()
        );
    }
    terminate(&service);
    assert_eq!(wait_for_exit(&mut service).code(), Some(0));
    assert!(people(&db).most_applied == 1, "{:?}", people(&db));
}
