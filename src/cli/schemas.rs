//! `logpipe schemas check`: whether the schemas in one folder keep the readers and
//! writers of those in another working.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::EXIT_DATA;
use crate::schema::{Compatibility, Mode, Schemas};

#[derive(Debug, Subcommand)]
pub(super) enum SchemasCommand {
    /// Check the schemas in --new against those in --old (folders that
    /// `logpipe::schema::Schemas::export` wrote) and against each other. Prints each
    /// breaking change with its path; exits 0 when compatible, 1 when not, 65 when a
    /// folder cannot be read.
    Check {
        /// The schemas checked against, such as the committed snapshot.
        #[arg(long, value_name = "DIR")]
        old: PathBuf,
        /// The schemas checked, such as those the code exports now.
        #[arg(long, value_name = "DIR")]
        new: PathBuf,
        /// backward, forward, full, or one of them with -transitive.
        #[arg(long, default_value_t = Mode::Backward)]
        mode: Mode,
        /// Take an object without additionalProperties as open to any other property,
        /// as Confluent Schema Registry does.
        #[arg(long)]
        strict: bool,
    },
}

pub(super) fn schemas_command(command: SchemasCommand) -> ExitCode {
    let SchemasCommand::Check {
        old,
        new,
        mode,
        strict,
    } = command;
    let read = |dir: &PathBuf| {
        Schemas::read_dir(dir).map_err(|err| {
            eprintln!(
                "logpipe: cannot read the schemas in {}: {err}",
                dir.display()
            );
            ExitCode::from(EXIT_DATA)
        })
    };
    let (old, new) = match (read(&old), read(&new)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(status), _) | (_, Err(status)) => return status,
    };
    let report = Compatibility::new(mode).strict(strict).check(&old, &new);
    println!("{report}");
    if report.is_compatible() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
