//! django-logpipe 1.6 on the other end of a stream: the peer script
//! `tests/django_logpipe/peer.py`, run in the test virtualenv (`LOGPIPE_TEST_PYTHON`,
//! made by `tests/services/python`) with a Django settings module written for each test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::support::service;

/// The longest a run of the peer may take; past it the peer is killed and the test fails.
const PEER_TIMEOUT: Duration = Duration::from_secs(150);

/// The peer script with its settings, ready to run.
pub struct Peer {
    python: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    packages: Option<PathBuf>,
}

/// One message django-logpipe handed to its registered model, as the peer prints it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Received {
    #[serde(rename = "type")]
    pub message_type: String,
    pub version: u64,
    pub producer: Option<String>,
    pub key: Option<String>,
    pub partition: String,
    pub message: serde_json::Value,
}

impl Peer {
    /// A peer whose Django settings hold `logpipe`, the body of the `LOGPIPE` dict (such as
    /// `"PRODUCER_ID": "django",`), or `None` (skip) when the virtualenv is missing.
    pub fn new(logpipe: &str) -> Option<Self> {
        let python = service("LOGPIPE_TEST_PYTHON")?;
        let dir = tempfile::tempdir().unwrap();
        let settings = format!(
            r#"SECRET_KEY = "interop"
INSTALLED_APPS = ["logpipe"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
LOGPIPE = {{
{logpipe}
}}
"#
        );
        std::fs::write(dir.path().join("interop_settings.py"), settings).unwrap();
        Some(Self {
            python,
            dir,
            env: Vec::new(),
            packages: None,
        })
    }

    /// Sets an environment variable of the peer's process.
    #[must_use]
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Puts the Python packages in `dir` on the peer's module path, beside the
    /// virtualenv's own.
    #[must_use]
    pub fn with_packages(mut self, dir: &Path) -> Self {
        self.packages = Some(dir.to_owned());
        self
    }

    fn python_path(&self) -> String {
        let settings = self.dir.path().display();
        match &self.packages {
            Some(packages) => format!("{settings}:{}", packages.display()),
            None => settings.to_string(),
        }
    }

    /// Runs `peer.py ARGS` with `stdin` as its input and returns what it printed; fails
    /// the test when it exits with an error or runs too long.
    pub fn run(&self, args: &[&str], stdin: &str) -> String {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/django_logpipe/peer.py");
        let mut command = Command::new(&self.python);
        command
            .arg(script)
            .args(args)
            .env("PYTHONPATH", self.python_path())
            .env("DJANGO_SETTINGS_MODULE", "interop_settings")
            .env_remove("AWS_PROFILE")
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_owned();
        let writer =
            std::thread::spawn(move || std::io::Write::write_all(&mut input, stdin.as_bytes()));
        let pid = child.id();
        let (done, exited) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(child.wait_with_output()));
        let Ok(output) = exited.recv_timeout(PEER_TIMEOUT) else {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("peer.py {args:?} was killed after {PEER_TIMEOUT:?}");
        };
        let output = output.unwrap();
        let tail = |text: &[u8]| {
            let text = String::from_utf8_lossy(text);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        assert!(
            output.status.success(),
            "peer.py {args:?} failed ({}):\n{}\n{}",
            output.status,
            tail(&output.stderr),
            tail(&output.stdout)
        );
        writer.join().unwrap().unwrap();
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs `peer.py consume STREAM --count N` and returns the messages it received, in
    /// the order it received them.
    pub fn consume(&self, stream: &str, count: usize) -> Vec<Received> {
        let count = count.to_string();
        let timeout = (PEER_TIMEOUT.as_secs() - 30).to_string();
        let out = self.run(
            &["consume", stream, "--count", &count, "--timeout", &timeout],
            "",
        );
        // Every line but the last (the count and the time) is a message.
        let lines: Vec<&str> = out.lines().collect();
        lines[..lines.len().saturating_sub(1)]
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}
