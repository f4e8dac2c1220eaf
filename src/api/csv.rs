//! CSV answers: every list and series answer also as CSV, asked for with `format=csv` or an
//! `Accept` header that names `text/csv` (and not `application/json` before it). A header row,
//! then a row a point or item (RFC 4180: fields with a comma, a quote or a line break quoted),
//! streamed in parts of [`ROWS_PER_PART`] rows; the same bounds as the JSON answer.

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Rows a streamed part holds.
const ROWS_PER_PART: usize = 1_000;

/// The `format` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

impl Format {
    /// The format asked for: `format` if given, else CSV when `Accept` prefers `text/csv`.
    pub fn of(param: Option<Format>, headers: &HeaderMap) -> Self {
        if let Some(format) = param {
            return format;
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let position = |media: &str| accept.find(media);
        match (position("text/csv"), position("application/json")) {
            (Some(csv), Some(json)) if json < csv => Format::Json,
            (Some(_), _) => Format::Csv,
            _ => Format::Json,
        }
    }
}

/// A CSV answer: its column names and rows, and the file name it is offered as.
pub struct Table {
    pub filename: String,
    pub header: &'static [&'static str],
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(filename: impl Into<String>, header: &'static [&'static str]) -> Self {
        Self {
            filename: filename.into(),
            header,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }
}

/// An answer that can also be given as CSV.
pub trait ToCsv {
    fn table(&self) -> Table;
}

/// `answer` as the format asks: its JSON, or its table.
pub fn respond<T: ToCsv>(format: Format, answer: T, json: impl FnOnce(T) -> Response) -> Response {
    match format {
        Format::Json => json(answer),
        Format::Csv => answer.table().into_response(),
    }
}

/// A field of an optional value: empty when absent.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn write_row<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let field = field.as_ref();
        if field.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(field);
        }
    }
    out.push_str("\r\n");
}

impl IntoResponse for Table {
    fn into_response(self) -> Response {
        let mut head = String::new();
        write_row(&mut head, self.header);
        let parts = std::iter::once(head).chain(self.rows.chunks(ROWS_PER_PART).map(|rows| {
            let mut part = String::new();
            for row in rows {
                write_row(&mut part, row);
            }
            part
        }));
        let parts: Vec<Result<String, std::convert::Infallible>> = parts.map(Ok).collect();
        let disposition = format!("attachment; filename=\"{}.csv\"", self.filename);
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    HeaderValue::from_str(&disposition)
                        .unwrap_or(HeaderValue::from_static("attachment")),
                ),
            ],
            Body::from_stream(futures_util::stream::iter(parts)),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_need_it_are_quoted() {
        let mut out = String::new();
        write_row(&mut out, &["a", "b,c", "say \"hi\"", "", "x\ny"]);
        assert_eq!(out, "a,\"b,c\",\"say \"\"hi\"\"\",,\"x\ny\"\r\n");
    }

    #[test]
    fn the_format_is_the_parameter_or_what_accept_prefers() {
        let headers = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            h
        };
        assert_eq!(Format::of(None, &HeaderMap::new()), Format::Json);
        assert_eq!(Format::of(None, &headers("text/csv")), Format::Csv);
        assert_eq!(
            Format::of(None, &headers("application/json, text/csv;q=0.5")),
            Format::Json
        );
        assert_eq!(Format::of(None, &headers("text/csv, */*")), Format::Csv);
        assert_eq!(
            Format::of(Some(Format::Json), &headers("text/csv")),
            Format::Json
        );
        assert_eq!(
            Format::of(Some(Format::Csv), &HeaderMap::new()),
            Format::Csv
        );
        assert_eq!(Format::of(None, &headers("*/*")), Format::Json);
    }
}
