//! An export as Apache Parquet, through the `parquet` crate's own column writers: one row a
//! point, sorted by influencer then time; `time` a UTC timestamp in milliseconds (the second the
//! point belongs to, as the API answers). Every column is delta-encoded (ids repeat, times step
//! by the interval, counts move little from a minute to the next) then zstd-compressed, which
//! leaves a few bytes a point; row groups of [`ROWS_PER_GROUP`] points.

use std::{io::Write, sync::Arc};

use parquet::{
    basic::{Compression, Encoding, ZstdLevel},
    data_type::{Int32Type, Int64Type},
    file::{
        metadata::{KeyValue, SortingColumn},
        properties::WriterProperties,
        writer::SerializedFileWriter,
    },
    schema::parser::parse_message_type,
};

use super::{PointWriter, Window};
use crate::series::SeriesPoint;

/// Points a row group holds (about 10 MB of columns before they are written).
pub const ROWS_PER_GROUP: usize = 1 << 20;

/// The file's schema: [`super::COLUMNS`].
const SCHEMA: &str = "message influencer_points {
    required int64 influencer_id;
    required int64 time (TIMESTAMP(MILLIS,true));
    required int32 follower_count;
    required int32 following_count;
}";

pub struct ParquetPoints {
    file: SerializedFileWriter<Box<dyn Write + Send>>,
    ids: Vec<i64>,
    times: Vec<i64>,
    followers: Vec<i32>,
    following: Vec<i32>,
}

impl ParquetPoints {
    pub fn new(out: Box<dyn Write + Send>, window: Window) -> anyhow::Result<Self> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let sorted = |column_idx| SortingColumn {
            column_idx,
            descending: false,
            nulls_first: false,
        };
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_dictionary_enabled(false)
            .set_encoding(Encoding::DELTA_BINARY_PACKED)
            .set_sorting_columns(Some(vec![sorted(0), sorted(1)]))
            .set_created_by(format!(
                "influencer-analytics {}",
                env!("CARGO_PKG_VERSION")
            ))
            .set_key_value_metadata(Some(vec![
                KeyValue::new("export.start_ms".into(), window.start_ms.to_string()),
                KeyValue::new("export.end_ms".into(), window.end_ms.to_string()),
            ]))
            .build();
        Ok(Self {
            file: SerializedFileWriter::new(out, schema, Arc::new(properties))?,
            ids: Vec::with_capacity(ROWS_PER_GROUP),
            times: Vec::with_capacity(ROWS_PER_GROUP),
            followers: Vec::with_capacity(ROWS_PER_GROUP),
            following: Vec::with_capacity(ROWS_PER_GROUP),
        })
    }

    /// Writes the buffered rows as a row group.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let mut group = self.file.next_row_group()?;
        let mut column = 0;
        while let Some(mut writer) = group.next_column()? {
            match column {
                0 => writer
                    .typed::<Int64Type>()
                    .write_batch(&self.ids, None, None)?,
                1 => writer
                    .typed::<Int64Type>()
                    .write_batch(&self.times, None, None)?,
                2 => writer
                    .typed::<Int32Type>()
                    .write_batch(&self.followers, None, None)?,
                _ => writer
                    .typed::<Int32Type>()
                    .write_batch(&self.following, None, None)?,
            };
            writer.close()?;
            column += 1;
        }
        group.close()?;
        self.ids.clear();
        self.times.clear();
        self.followers.clear();
        self.following.clear();
        Ok(())
    }
}

impl PointWriter for ParquetPoints {
    fn write(&mut self, influencer_id: i64, points: &[SeriesPoint]) -> anyhow::Result<()> {
        for p in points {
            self.ids.push(influencer_id);
            self.times.push(p.slot_ms.div_euclid(1000) * 1000);
            self.followers.push(p.follower_count);
            self.following.push(p.following_count);
            if self.ids.len() == ROWS_PER_GROUP {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.flush()?;
        self.file.into_inner()?.flush()?;
        Ok(())
    }
}
