//! `influencer-analytics export`: every point of the chosen influencers over a range, from
//! every tier (compacted days and hours, raw minutes, late points), as CSV and as Parquet read
//! back by DuckDB (PyPI's `duckdb`, which `scripts/test` installs).

use std::{path::Path, process::Command};

use chrono::Utc;
use influencer_analytics::jobs::compaction::{self, Budget};

use crate::{api::TestApi, cli::binary};

const DAY: i64 = 86_400;

/// Runs `export` with `args` on the test's database; its status, stdout and stderr.
fn export(api: &TestApi, args: &[&str]) -> (bool, String, String) {
    let output = binary()
        .arg("export")
        .args(args)
        .env("DATABASE_URL", &api.db.url)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The rows DuckDB reads from a Parquet file, as CSV lines (`time` in epoch seconds), and the
/// type it gives `time`.
fn duckdb_rows(path: &Path) -> (Vec<String>, String) {
    let script = format!(
        "import duckdb\n\
         con = duckdb.connect()\n\
         f = '{}'\n\
         print(con.execute(f\"select typeof(time) from read_parquet('{{f}}') limit 1\").fetchall()[0][0])\n\
         for r in con.execute(f\"select influencer_id, epoch(time)::bigint, follower_count, following_count from read_parquet('{{f}}') order by all\").fetchall():\n\
         \x20   print(','.join(str(v) for v in r))\n",
        path.display()
    );
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "duckdb (python3 -m pip install duckdb): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines().map(str::to_string);
    let time_type = lines.next().unwrap();
    (lines.collect(), time_type)
}

#[tokio::test]
async fn every_point_of_every_tier_is_exported_once_as_csv_and_as_parquet() {
    let api = TestApi::start().await;
    for id in [41, 42, 43, 44] {
        api.register(id).await;
    }
    let now = Utc::now().timestamp();
    let today = now - now.rem_euclid(DAY);
    let start = today - 3 * DAY;
    // (id, slot ms, followers, following): days ago (compacted into day segments), the hour
    // before this one (an hour block, or a day segment after midnight), the last minutes (raw).
    let mut points: Vec<(i64, i64, i32, i32)> = Vec::new();
    for d in 1..=3_i64 {
        for k in 0..4_i64 {
            let slot_ms = (today - d * DAY + k * 6 * 3_600 + 17) * 1000 + 250;
            points.push((41, slot_ms, 1_000 + (d * 10 + k) as i32, 50 + d as i32));
        }
    }
    let last_minute = now - now.rem_euclid(60) - 60;
    for (n, at) in [last_minute - 4 * 3_600, last_minute - 120, last_minute]
        .into_iter()
        .enumerate()
    {
        points.push((41, at * 1000 + 999, 2_000 + n as i32, 60));
        points.push((42, at * 1000 + 1, 70 + n as i32, 7));
    }
    // The first second of the range is in; the day before it is not.
    points.push((43, start * 1000, 5, 5));
    for &(id, slot_ms, followers, following) in &points {
        api.point_at_ms(id, slot_ms, followers, following).await;
    }
    api.point_at_ms(43, (start - 1) * 1000 + 999, 4, 4).await;
    compaction::run(&api.db.pool, Budget::FULL, &mut |_| {})
        .await
        .unwrap();
    // Late points: a second answer for a compacted slot (the first stored answer stays) and a
    // slot of its own.
    let compacted = points[1].1;
    let late_own = (today - 2 * DAY + 60) * 1000 + 5;
    for (slot_ms, followers) in [(compacted, 1), (late_own, 1_234)] {
        sqlx::query(
            "insert into late_points (influencer_id, slot, fetched_at, follower_count, following_count)
             values (41, to_timestamp($1 / 1000.0), now(), $2, 99)",
        )
        .bind(slot_ms)
        .bind(followers)
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    points.push((41, late_own, 1_234, 99));
    points.sort();
    let expected: Vec<String> = points
        .iter()
        .map(|(id, ms, followers, following)| {
            format!("{id},{},{followers},{following}", ms.div_euclid(1000))
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let start_date = chrono::DateTime::from_timestamp(start, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let csv = dir.path().join("points.csv");
    let (ok, stdout, stderr) = export(
        &api,
        &["--start", &start_date, "--out", csv.to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("influencer_id,time,follower_count,following_count")
    );
    assert_eq!(lines.map(str::to_string).collect::<Vec<_>>(), expected);
    assert!(
        stdout.contains(&format!(
            "exported {} points of 3 influencers (1 without points in the range)",
            expected.len()
        )),
        "{stdout}"
    );

    // To standard output: the same file, the summary on standard error.
    let (ok, stdout, stderr) = export(&api, &["--start", &start_date, "--out", "-"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, text);
    assert!(stderr.contains("exported"), "{stderr}");

    let parquet = dir.path().join("points.parquet");
    let (ok, _, stderr) = export(
        &api,
        &[
            "--start",
            &start_date,
            "--end",
            &now.to_string(),
            "--format",
            "parquet",
            "--out",
            parquet.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(!dir.path().join("points.parquet.partial").exists());
    let (rows, time_type) = duckdb_rows(&parquet);
    assert_eq!(time_type, "TIMESTAMP WITH TIME ZONE");
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn an_ids_file_chooses_the_influencers_and_bad_input_is_named() {
    let api = TestApi::start().await;
    let now = Utc::now().timestamp();
    for id in [51, 52] {
        api.register(id).await;
        api.point(id, now - 120, id as i32, 1).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, "# the campaign\n52\n53 # not registered\n").unwrap();
    let out = dir.path().join("chosen.csv");
    let start = (now - 3_600).to_string();
    let (ok, _, stderr) = export(
        &api,
        &[
            "--start",
            &start,
            "--ids",
            ids.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("1 of the 2 ids"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.lines().skip(1).collect::<Vec<_>>(),
        [format!("52,{},52,1", now - 120)]
    );

    // A line that is not an id stops the export and leaves no file.
    std::fs::write(&ids, "52\nfifty\n").unwrap();
    let bad = dir.path().join("bad.csv");
    let (ok, _, stderr) = export(
        &api,
        &[
            "--start",
            &start,
            "--ids",
            ids.to_str().unwrap(),
            "--out",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("--ids") && stderr.contains("1 not a number"),
        "{stderr}"
    );
    assert!(!bad.exists());
    // A moment that is not one, and an end before the start, are named.
    let (ok, _, stderr) = export(&api, &["--start", "last week", "--out", "x.csv"]);
    assert!(!ok && stderr.contains("--start"), "{stderr}");
    let (ok, _, stderr) = export(
        &api,
        &[
            "--start",
            "2026-12-02",
            "--end",
            "2026-12-01",
            "--out",
            bad.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("--end"), "{stderr}");
    assert!(!bad.exists());
}
