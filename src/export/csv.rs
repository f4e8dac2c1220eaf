//! An export as CSV: a header row, then a row a point, `time` in epoch seconds (the second the
//! point belongs to, as the API's CSV answers).

use std::io::Write;

use super::{COLUMNS, PointWriter};
use crate::series::SeriesPoint;

pub struct CsvPoints {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
}

impl CsvPoints {
    pub fn new(mut out: Box<dyn Write + Send>) -> anyhow::Result<Self> {
        writeln!(out, "{}", COLUMNS.join(","))?;
        Ok(Self {
            out,
            line: Vec::with_capacity(64),
        })
    }
}

impl PointWriter for CsvPoints {
    fn write(&mut self, influencer_id: i64, points: &[SeriesPoint]) -> anyhow::Result<()> {
        let mut id = itoa::Buffer::new();
        let id = id.format(influencer_id).as_bytes();
        let mut number = itoa::Buffer::new();
        for p in points {
            let line = &mut self.line;
            line.clear();
            line.extend_from_slice(id);
            line.push(b',');
            line.extend_from_slice(number.format(p.slot_ms.div_euclid(1000)).as_bytes());
            line.push(b',');
            line.extend_from_slice(number.format(p.follower_count).as_bytes());
            line.push(b',');
            line.extend_from_slice(number.format(p.following_count).as_bytes());
            line.push(b'\n');
            self.out.write_all(line)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
