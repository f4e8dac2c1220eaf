use std::sync::{Arc, Mutex};

use ::parquet::{
    file::reader::{FileReader, SerializedFileReader},
    record::RowAccessor,
};

use super::{plan::*, *};

/// A `Write` whose bytes the test keeps.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn point(slot_ms: i64, follower_count: i32, following_count: i32) -> SeriesPoint {
    SeriesPoint {
        slot_ms,
        follower_count,
        following_count,
    }
}

const DAY_START_MS: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

#[test]
fn moments_are_rfc_3339_epoch_seconds_or_whole_utc_days() {
    assert_eq!(parse_start("2025-12-01"), Ok(DAY_START_MS));
    assert_eq!(parse_end("2025-12-01"), Ok(DAY_START_MS + 86_400_000 - 1));
    assert_eq!(
        parse_start("2025-12-01T00:00:10Z"),
        Ok(DAY_START_MS + 10_000)
    );
    // An inclusive end covers the whole second it names, as the range API's.
    assert_eq!(
        parse_end("2025-12-01T01:00:10+01:00"),
        Ok(DAY_START_MS + 10_999)
    );
    assert_eq!(parse_start("1764547200"), Ok(DAY_START_MS));
    assert!(parse_start("yesterday").is_err());
    assert!(parse_start("-5").is_err());
    assert!(Window::new(DAY_START_MS, Some(DAY_START_MS - 1)).is_err());
    let day = Window::new(DAY_START_MS, Some(DAY_START_MS + 86_400_000 - 1)).unwrap();
    assert_eq!(day.points_per_influencer(), 1_440);
}

#[test]
fn ids_are_grouped_by_points_held_and_by_how_far_apart_they_are() {
    let ids: Vec<i64> = (1..=2_500).collect();
    let day = group_ids(&ids, 1_440);
    assert_eq!(
        day.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [1_000, 1_000, 500]
    );
    // A year of minutes: a few influencers a group.
    let year = group_ids(&ids[..10], 525_600);
    assert_eq!(
        year.iter().map(|g| g.len()).collect::<Vec<_>>(),
        [2, 2, 2, 2, 2]
    );
    // Far-apart ids are not read with everyone between them.
    let sparse = [1, 2, 3, 1_000_000, 1_000_001, 9_000_000];
    let groups = group_ids(&sparse, 1_440);
    assert_eq!(groups, [&sparse[..3], &sparse[3..5], &sparse[5..]]);
    assert!(group_ids(&[], 1_440).is_empty());
}

#[test]
fn csv_has_a_header_then_a_row_a_point_in_epoch_seconds() {
    let out = Shared::default();
    let mut csv = writer(
        ExportFormat::Csv,
        Box::new(out.clone()),
        Window::new(0, Some(1)).unwrap(),
    )
    .unwrap();
    csv.write(7, &[point(60_250, 100, 5), point(120_999, 101, -1)])
        .unwrap();
    csv.write(9, &[point(60_000, 3, 4)]).unwrap();
    csv.finish().unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text,
        "influencer_id,time,follower_count,following_count\n7,60,100,5\n7,120,101,-1\n9,60,3,4\n"
    );
}

#[test]
fn parquet_holds_every_point_typed_and_sorted_across_row_groups() {
    let out = Shared::default();
    let window = Window::new(0, Some(10_000_000_000)).unwrap();
    let mut file = writer(ExportFormat::Parquet, Box::new(out.clone()), window).unwrap();
    // More points than a row group holds, over two influencers.
    let n = super::parquet::ROWS_PER_GROUP as i64 / 2 + 1_000;
    let series = |id: i64| -> Vec<SeriesPoint> {
        (0..n)
            .map(|k| point(k * 60_000 + 250, (id * 1_000 + k) as i32, (k % 7) as i32))
            .collect()
    };
    for id in [11, 12] {
        file.write(id, &series(id)).unwrap();
    }
    file.finish().unwrap();
    let bytes = bytes::Bytes::from(out.0.lock().unwrap().clone());
    let reader = SerializedFileReader::new(bytes).unwrap();
    let metadata = reader.metadata();
    assert_eq!(metadata.num_row_groups(), 2);
    assert_eq!(metadata.file_metadata().num_rows(), 2 * n);
    let names: Vec<&str> = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    assert_eq!(names, COLUMNS);
    let rows: Vec<(i64, i64, i32, i32)> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let time = row.get_timestamp_millis(1).unwrap();
            (
                row.get_long(0).unwrap(),
                time,
                row.get_int(2).unwrap(),
                row.get_int(3).unwrap(),
            )
        })
        .collect();
    let expected: Vec<(i64, i64, i32, i32)> = [11, 12]
        .into_iter()
        .flat_map(|id| {
            series(id).into_iter().map(move |p| {
                (
                    id,
                    p.slot_ms / 1000 * 1000,
                    p.follower_count,
                    p.following_count,
                )
            })
        })
        .collect();
    assert_eq!(rows.len(), expected.len());
    assert!(rows == expected, "the rows read back differ");
    // Delta encoding leaves little of a regular series.
    assert!(
        bytes_len(&out) < 2 * n as usize,
        "{} bytes",
        bytes_len(&out)
    );
}

fn bytes_len(out: &Shared) -> usize {
    out.0.lock().unwrap().len()
}
