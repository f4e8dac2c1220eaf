//! The unit tests of `cli`.

use super::usage::one_line_usage_error;
use super::*;
use clap::CommandFactory;

#[test]
fn the_command_line_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn a_bad_interval_names_the_setting_in_one_line() {
    let error = Cli::try_parse_from(["influencer-analytics", "poll", "--poll-interval", "soon"])
        .unwrap_err();
    let line = one_line_usage_error(&error).unwrap();
    assert_eq!(
        line,
        r#"error: POLL_INTERVAL (--poll-interval) is "soon": expected a duration such as 60s, 2s, 500ms or 1m"#
    );
}

#[test]
fn a_bad_enum_value_lists_the_valid_ones() {
    let error = Cli::try_parse_from(["influencer-analytics", "--log-format", "xml", "migrate"])
        .unwrap_err();
    let line = one_line_usage_error(&error).unwrap();
    assert!(
        line.starts_with("error: LOG_FORMAT (--log-format)"),
        "{line}"
    );
    assert!(line.contains("text") && line.contains("json"), "{line}");
}
