//! Seeding: ids from a range, a count or a file into the registry and the schedule.
//!
//! Idempotent: only influencers that are new (or were untracked and are asked for again) are
//! scheduled, so seeding the same ids twice schedules nobody twice ([`registry::track`]).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

use crate::{model::MAX_PK, queue::Broker, registry};

/// Where the ids come from.
#[derive(clap::Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct SeedSource {
    /// Inclusive range of pks, e.g. 1000000..1999999.
    #[arg(long, value_parser = parse_range)]
    pub range: Option<(i64, i64)>,
    /// The first N pks of Mockstagram's population (1000000 upwards).
    #[arg(long, value_parser = crate::config::positive)]
    pub count: Option<u64>,
    /// A file with one pk a line ('#' starts a comment), e.g. seeds/demo-1000.txt.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

fn parse_range(raw: &str) -> Result<(i64, i64), String> {
    let expected = || "expected an inclusive range of pks such as 1000000..1999999".to_string();
    let (a, b) = raw.split_once("..").ok_or_else(expected)?;
    let b = b.strip_prefix('=').unwrap_or(b);
    let (a, b) = (a.trim().parse::<i64>(), b.trim().parse::<i64>());
    match (a, b) {
        (Ok(a), Ok(b)) if 1 <= a && a <= b && b <= MAX_PK => Ok((a, b)),
        _ => Err(expected()),
    }
}

/// Ids read from a source, with what was refused and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ParsedIds {
    pub ids: Vec<i64>,
    /// reason -> how many lines, e.g. "not a number" -> 2
    pub rejected: BTreeMap<&'static str, u64>,
    pub repeated: u64,
}

impl SeedSource {
    pub fn read(&self) -> anyhow::Result<ParsedIds> {
        if let Some((a, b)) = self.range {
            return Ok(ParsedIds {
                ids: (a..=b).collect(),
                ..ParsedIds::default()
            });
        }
        if let Some(n) = self.count {
            let first = crate::mockstagram::FIRST_PK;
            return Ok(ParsedIds {
                ids: (first..first + n as i64).collect(),
                ..ParsedIds::default()
            });
        }
        let path = self.file.as_ref().expect("clap requires one source");
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the seed file {}", path.display()))?;
        Ok(parse_ids(&text))
    }
}

/// Parses one pk (1 to 2^53-1), as the command line takes it.
pub(crate) fn parse_pk(raw: &str) -> Result<i64, String> {
    match raw.trim().parse::<i64>() {
        Ok(pk) if (1..=MAX_PK).contains(&pk) => Ok(pk),
        _ => Err(format!("expected an influencer id from 1 to {MAX_PK}")),
    }
}

/// Parses one pk a line; blank lines and `#` comments are skipped.
pub(crate) fn parse_ids(text: &str) -> ParsedIds {
    let mut parsed = ParsedIds::default();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<i64>() {
            Ok(pk) if (1..=MAX_PK).contains(&pk) => {
                if seen.insert(pk) {
                    parsed.ids.push(pk);
                } else {
                    parsed.repeated += 1;
                }
            }
            Ok(_) => {
                *parsed
                    .rejected
                    .entry("out of range (1 to 2^53-1)")
                    .or_default() += 1
            }
            Err(_)
                if line
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') =>
            {
                *parsed
                    .rejected
                    .entry("out of range (1 to 2^53-1)")
                    .or_default() += 1
            }
            Err(_) => *parsed.rejected.entry("not a number").or_default() += 1,
        }
    }
    parsed
}

/// What a seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub new: u64,
    pub already_tracked: u64,
    /// Had left the schedule (e.g. the upstream did not know them) and were asked for again.
    pub retracked: u64,
    pub schedule_messages: u64,
}

/// Registers `ids` and schedules the ones that were not tracked ([`registry::track`]), with a
/// progress bar.
pub async fn seed(
    pool: &PgPool,
    broker: &Broker,
    interval: Duration,
    ids: &[i64],
) -> anyhow::Result<SeedReport> {
    let progress = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({per_sec}, {eta})")
            .expect("static template"),
    );
    progress.set_message("registering");
    let tracked = registry::track(pool, broker, interval, ids, &|n| progress.inc(n)).await;
    progress.finish_and_clear();
    let tracked = tracked?;
    Ok(SeedReport {
        new: tracked.new.len() as u64,
        already_tracked: tracked.already_tracked.len() as u64,
        retracked: tracked.retracked.len() as u64,
        schedule_messages: tracked.schedule_messages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_parsed_with_reasons_for_what_is_refused() {
        let parsed = parse_ids(
            "# demo\n1000000\n1000001 # second\n\nabc\n-5\n0\n1000000\n99999999999999999999\n",
        );
        assert_eq!(parsed.ids, vec![1_000_000, 1_000_001]);
        assert_eq!(parsed.repeated, 1);
        assert_eq!(parsed.rejected["not a number"], 1);
        assert_eq!(parsed.rejected["out of range (1 to 2^53-1)"], 3);
    }

    #[test]
    fn ranges_are_inclusive_and_checked() {
        assert_eq!(parse_range("1000000..1999999"), Ok((1_000_000, 1_999_999)));
        assert_eq!(parse_range("5..=5"), Ok((5, 5)));
        assert!(parse_range("9..5").is_err());
        assert!(parse_range("0..5").is_err());
        assert!(parse_range("1000000").is_err());
    }
}
