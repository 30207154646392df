//! `logpipe lag`: how far a consumer group is behind, per partition or shard.

use clap::Args;
use logpipe_core::Admin;

use super::failure::Failure;
use super::offsets::{GroupArgs, Target};
use super::table::{print_table, show};
use crate::config::Config;

#[derive(Debug, Args)]
pub(super) struct LagArgs {
    #[command(flatten)]
    target: GroupArgs,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

pub(super) async fn lag(config: Config, args: LagArgs) -> Result<(), Failure> {
    let found = Target::open(&config, &args.target).await?;
    let stored = found.load().await?;
    let mut lags = Vec::with_capacity(found.partitions.len());
    for (info, position) in found.partitions.iter().zip(&stored) {
        let lag = found
            .backend
            .lag(info, position.as_ref())
            .await
            .map_err(|err| Failure::backend(&format!("cannot read {}", info.partition), &err))?;
        lags.push(lag);
    }
    // Records with offsets show where the partition ends; records counted by reading
    // (Kinesis) show how long ago the oldest unread one arrived.
    let by_time = lags.iter().any(|lag| lag.end_offset.is_none());
    let mut rows = vec![[
        "PARTITION".to_owned(),
        "POSITION".to_owned(),
        if by_time { "BEHIND" } else { "END" }.to_owned(),
        "LAG".to_owned(),
    ]];
    let total: u64 = lags.iter().map(|lag| lag.records).sum();
    let exact = lags.iter().all(|lag| lag.exact);
    let more = |exact: bool| if exact { "" } else { "+" };
    for ((info, position), lag) in found.partitions.iter().zip(&stored).zip(&lags) {
        if args.json {
            let mut line = serde_json::json!({
                "group": found.group,
                "stream": &*info.partition.stream,
                "partition": &*info.partition.partition,
                "position": position.as_ref().map(ToString::to_string),
                "lag": lag.records,
            });
            if let Some(line) = line.as_object_mut() {
                if let Some(end) = lag.end_offset {
                    line.insert("end_offset".into(), end.into());
                }
                if let Some(behind) = lag.behind {
                    let ms = u64::try_from(behind.as_millis()).unwrap_or(u64::MAX);
                    line.insert("behind_ms".into(), ms.into());
                    line.insert("exact".into(), lag.exact.into());
                }
            }
            println!("{line}");
        } else {
            let third = match (lag.end_offset, lag.behind) {
                (Some(end), _) => end.to_string(),
                (None, Some(behind)) if !behind.is_zero() => {
                    format!("{:.1}s", behind.as_secs_f64())
                }
                (None, _) => "0s".to_owned(),
            };
            rows.push([
                info.partition.partition.to_string(),
                show(position.as_ref()),
                third,
                format!("{}{}", lag.records, more(lag.exact)),
            ]);
        }
    }
    if !args.json {
        println!(
            "group {}, stream {}: {total}{} records behind",
            found.group,
            args.target.stream,
            more(exact)
        );
        print_table(&rows);
    }
    Ok(())
}
