//! The Kafka backend over the broker's `SASL_SSL` listener (`tests/services/kafka`: TLS
//! with a CA made for the tests, SCRAM-SHA-512 user and password in
//! `LOGPIPE_TEST_KAFKA_USER` and `LOGPIPE_TEST_KAFKA_PASSWORD`). The commands and the
//! example service work with the credentials in the backend URL; a wrong password, an
//! unknown CA and a plaintext client each fail at the first call with one clear line; and
//! the password appears in no output.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use tokio::sync::RwLockReadGuard;

use crate::ops::Setup;
use crate::processes::{terminate, wait_for_exit};
use crate::serve;
use crate::support::{service, unique, wait_until_blocking};

/// The longest the example service may take to handle what it was sent.
const WAIT: Duration = Duration::from_secs(90);

/// The secured listener and what a client needs to use it.
struct Secured {
    address: String,
    ca: String,
    other_ca: String,
    user: String,
    password: String,
    _broker: RwLockReadGuard<'static, ()>,
}

impl Secured {
    /// The listener, or `None` (skip) outside CI when the broker is not running.
    fn get() -> Option<Self> {
        let address = service("LOGPIPE_TEST_KAFKA_SASL_SSL")?;
        let (_, broker) = crate::kafka::broker_blocking()?;
        let var = |name: &str| service(name).unwrap_or_else(|| panic!("{name} is not set"));
        Some(Self {
            address,
            ca: var("LOGPIPE_TEST_KAFKA_CA"),
            other_ca: var("LOGPIPE_TEST_KAFKA_OTHER_CA"),
            user: var("LOGPIPE_TEST_KAFKA_USER"),
            password: var("LOGPIPE_TEST_KAFKA_PASSWORD"),
            _broker: broker,
        })
    }

    /// The variables of a client logging in with `password` and trusting `ca`.
    fn env(&self, password: &str, ca: &str) -> Vec<(String, String)> {
        vec![
            (
                "LOGPIPE_BACKEND".into(),
                format!("kafka://{}:{password}@{}", self.user, self.address),
            ),
            (
                "LOGPIPE_KAFKA__GLOBAL__SASL__MECHANISM".into(),
                "SCRAM-SHA-512".into(),
            ),
            ("LOGPIPE_KAFKA__GLOBAL__SSL__CA__LOCATION".into(), ca.into()),
        ]
    }

    /// The variables of a client with the right credentials.
    fn good_env(&self) -> Vec<(String, String)> {
        self.env(&self.password, &self.ca)
    }

    /// Fails the test if `text` (an output of `what`) shows the password.
    fn assert_hidden(&self, what: &str, text: &str) {
        assert!(
            !text.contains(&self.password),
            "{what} shows the password: {text}"
        );
    }
}

/// Runs `logpipe ARGS` with `env`, `stdin` and `RUST_LOG`, waiting at most
/// the limit of [`Setup::run`].
fn logpipe(env: &[(String, String)], rust_log: &str, args: &[&str], stdin: &str) -> Output {
    let mut vars = env.to_vec();
    vars.push(("RUST_LOG".into(), rust_log.into()));
    Setup::with_vars(vars).run(args, stdin)
}

/// Stdout and stderr of `output`, as one text.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fails the test if a line of `stderr` (less its time stamp) comes twice.
fn assert_no_line_twice(stderr: &str) {
    let mut seen = BTreeMap::new();
    for line in stderr.lines() {
        let without_time = line.split_once(' ').map_or(line, |(first, rest)| {
            if first.contains(':') && first.contains('T') {
                rest
            } else {
                line
            }
        });
        *seen.entry(without_time).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "lines logged more than once: {twice:?}\n{stderr}"
    );
}

#[test]
fn the_commands_work_over_sasl_ssl_with_the_credentials_in_the_url_and_never_show_the_password() {
    let Some(secured) = Secured::get() else {
        return;
    };
    let env = secured.good_env();
    let stream = unique("secured");
    let run = |args: &[&str], stdin: &str| {
        let output = logpipe(&env, "debug", args, stdin);
        let all = text(&output);
        secured.assert_hidden(&format!("logpipe {args:?}"), &all);
        assert!(output.status.success(), "logpipe {args:?}: {all}");
        String::from_utf8(output.stdout).unwrap()
    };
    run(&["streams", "create", &stream, "--partitions", "1"], "");
    assert!(run(&["streams", "list"], "").lines().any(|s| s == stream));
    run(
        &[
            "produce",
            &stream,
            "--type",
            "person",
            "--version",
            "1",
            "--key",
            "k",
        ],
        "{\"uuid\":\"a1\",\"name\":\"Ann\"}\n{\"uuid\":\"b2\",\"name\":\"Bob\"}\n",
    );
    let tailed = run(
        &[
            "tail",
            &stream,
            "--from-beginning",
            "--json",
            "--max",
            "2",
            "--timeout",
            "60",
        ],
        "",
    );
    let names: Vec<String> = tailed
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            record["message"]["name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["Ann", "Bob"]);
    for help in [&["--help"][..], &["produce", "--help"], &["tail", "--help"]] {
        run(help, "");
    }
}

#[test]
fn the_example_service_consumes_over_sasl_ssl_and_its_log_and_endpoints_never_show_the_password() {
    let Some(secured) = Secured::get() else {
        return;
    };
    let env = secured.good_env();
    let prefix = format!("{}-", unique("secured-service"));
    let mut env: Vec<(String, String)> = env;
    env.extend([
        ("LOGPIPE_KAFKA__TOPIC_PREFIX".to_owned(), prefix.clone()),
        ("LOGPIPE_GROUP_PREFIX".to_owned(), prefix.clone()),
    ]);
    let created = logpipe(&env, "warn", &["streams", "create", "people"], "");
    assert!(created.status.success(), "{}", text(&created));
    let sent = logpipe(
        &env,
        "warn",
        &[
            "produce",
            "people",
            "--type",
            "person",
            "--version",
            "1",
            "--key-field",
            "uuid",
        ],
        "{\"uuid\":\"p1\",\"name\":\"Ada\"}\n{\"uuid\":\"p2\",\"name\":\"Grace\"}\n",
    );
    assert!(sent.status.success(), "{}", text(&sent));

    let dir = tempfile::tempdir().unwrap();
    let mut service_env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    service_env.extend([("PEOPLE_STREAM", "people"), ("RUST_LOG", "debug")]);
    let (mut child, addr, log) = serve::start(&dir.path().join("people.db"), &service_env);
    let handled = r#"logpipe_records_handled_total{stream="people",type="person"}"#;
    wait_until_blocking("the 2 people are handled", WAIT, || {
        let (_, scrape) = serve::get(addr, "/metrics");
        serve::sample_value(&scrape, handled) == Some(2.0)
    });
    for path in ["/metrics", "/readyz", "/healthz"] {
        let (_, body) = serve::get(addr, path);
        secured.assert_hidden(path, &body);
    }
    terminate(&child);
    assert_eq!(wait_for_exit(&mut child).code(), Some(0));
    let lines = serve::rest(&log);
    assert!(lines.len() > 1, "a debug log: {lines:?}");
    secured.assert_hidden("the service's log", &lines.join("\n"));
}

/// Runs `logpipe streams list` with `env`: it must fail with status 69, naming `reason`,
/// once, without the password.
fn refused(secured: &Secured, env: &[(String, String)], reason: &str) {
    let output = logpipe(env, "info", &["streams", "list"], "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("logpipe: cannot list the streams: ")
            && last.contains(&format!(
                "cannot reach the Kafka brokers at {}",
                secured.address
            ))
            && last.contains(reason),
        "the last line names the brokers and says {reason:?}: {stderr}"
    );
    assert_no_line_twice(&stderr);
    secured.assert_hidden("a refused command", &stderr);
}

#[test]
fn a_wrong_password_fails_at_the_first_call_saying_the_authentication_failed() {
    let Some(secured) = Secured::get() else {
        return;
    };
    let env = secured.env(&format!("not-{}", secured.password), &secured.ca);
    refused(&secured, &env, "SASL authentication error");
}

#[test]
fn a_broker_certificate_of_an_unknown_ca_fails_at_the_first_call_saying_why() {
    let Some(secured) = Secured::get() else {
        return;
    };
    let env = secured.env(&secured.password, &secured.other_ca);
    refused(&secured, &env, "certificate verify failed");
}

#[test]
fn a_plaintext_client_on_the_tls_port_fails_at_the_first_call() {
    let Some(secured) = Secured::get() else {
        return;
    };
    let env = [(
        "LOGPIPE_BACKEND".to_owned(),
        format!("kafka://{}", secured.address),
    )];
    refused(&secured, &env, "another security.protocol");
}

#[test]
fn credentials_without_a_sasl_mechanism_are_refused_at_start_up_naming_the_key() {
    let Some(secured) = Secured::get() else {
        return;
    };
    let mut env = secured.good_env();
    env.retain(|(name, _)| name != "LOGPIPE_KAFKA__GLOBAL__SASL__MECHANISM");
    let output = logpipe(&env, "info", &["streams", "list"], "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("kafka.global.sasl.mechanism"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    secured.assert_hidden("a configuration error", &stderr);
}
