//! `logpipe leases`: who holds each partition of a consumer group that shares its
//! partitions through leases (the embedded log, Kinesis with a lease store), with each
//! one's checkpoint.

use std::time::SystemTime;

use clap::Args;
use logpipe_core::leases::{AnyLeaseStore, Lease, LeaseStore};
use logpipe_core::time::millis;
use logpipe_sqlite::EmbeddedLog;

use super::failure::Failure;
use super::offsets::{GroupArgs, Target};
use super::table::{print_table, show};
use crate::config::Config;

#[derive(Debug, Args)]
pub(super) struct LeasesArgs {
    #[command(flatten)]
    target: GroupArgs,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

/// When `lease` expires, from now: `in 1.5s`, `expired`, or `-` without owner.
fn expiry(lease: &Lease, now: i64) -> String {
    match lease.expires_at {
        Some(_) if lease.free => "expired".to_owned(),
        #[allow(clippy::cast_precision_loss)]
        Some(at) => format!("in {:.1}s", (millis(at) - now) as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

/// The lease store of the target's backend.
fn lease_store(config: &Config, target: &Target) -> Result<AnyLeaseStore, Failure> {
    if let Some(log) = target.backend.downcast_ref::<EmbeddedLog>() {
        return log
            .leases()
            .map(AnyLeaseStore::new)
            .map_err(|err| Failure::backend("cannot read the leases", &err));
    }
    #[cfg(feature = "kinesis")]
    if let Some(kinesis) = target
        .backend
        .downcast_ref::<crate::kinesis::KinesisBackend>()
    {
        return kinesis.lease_store().cloned().ok_or_else(|| {
            Failure::Config(format!(
                "backend {}: no lease store (offset store {}, no [kinesis] leases): every consumer reads every shard",
                config.backend,
                config.offset_store_url()
            ))
        });
    }
    Err(Failure::Config(format!(
        "backend {}: its consumer groups are not kept in leases (Kafka's brokers assign partitions; see `logpipe offsets`)",
        config.backend
    )))
}

pub(super) async fn leases(config: Config, args: LeasesArgs) -> Result<(), Failure> {
    let target = Target::open(&config, &args.target).await?;
    let store = lease_store(&config, &target)?;
    let leases = store
        .leases(&target.group, std::slice::from_ref(&args.target.stream))
        .await
        .map_err(|err| Failure::store("cannot read the leases", &err))?;
    let checkpoints = target.load().await?;
    let now = millis(SystemTime::now());
    let mut rows = vec![
        [
            "PARTITION",
            "OWNER",
            "EXPIRES",
            "CHECKPOINT",
            "PARENTS",
            "SWITCHES",
        ]
        .map(str::to_owned),
    ];
    for (info, checkpoint) in target.partitions.iter().zip(checkpoints) {
        let lease = leases
            .iter()
            .find(|lease| lease.partition == info.partition);
        let owner = lease.and_then(|lease| lease.owner.clone());
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "group": target.group,
                    "stream": &*info.partition.stream,
                    "partition": &*info.partition.partition,
                    "owner": owner,
                    "free": lease.is_none_or(|lease| lease.free),
                    "expires_at_ms": lease.and_then(|lease| lease.expires_at).map(millis),
                    "checkpoint": checkpoint.as_ref().map(ToString::to_string),
                    "parents": lease.map(|lease| lease.parents.clone()).unwrap_or_default(),
                    "finished": lease.is_some_and(|lease| lease.finished),
                    "owner_switches": lease.map_or(0, |lease| lease.owner_switches),
                })
            );
        } else {
            rows.push([
                info.partition.partition.to_string(),
                owner.unwrap_or_else(|| "-".to_owned()),
                lease.map_or_else(|| "-".to_owned(), |lease| expiry(lease, now)),
                show(checkpoint.as_ref()),
                lease
                    .filter(|lease| !lease.parents.is_empty())
                    .map_or_else(|| "-".to_owned(), |lease| lease.parents.join(",")),
                lease.map_or(0, |lease| lease.owner_switches).to_string(),
            ]);
        }
    }
    if !args.json {
        println!("group {}, stream {}", target.group, args.target.stream);
        print_table(&rows);
    }
    Ok(())
}
