//! A usage error (a missing or malformed setting) told in one line that names the setting.

use std::process::ExitCode;

use clap::{
    CommandFactory,
    error::{ContextKind, ContextValue, ErrorKind},
};

use super::Cli;

/// Prints a clap error. A bad value becomes one line naming the setting (flag and variable)
/// and what was expected; other errors (help, unknown flags) are clap's own.
pub fn report_usage_error(error: clap::Error) -> ExitCode {
    match one_line_usage_error(&error) {
        Some(line) => {
            eprintln!("{line}");
            ExitCode::from(2)
        }
        None => {
            let _ = error.print();
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

/// `error: POLL_INTERVAL (--poll-interval) is "abc": expected a duration such as 60s, ...`
pub(crate) fn one_line_usage_error(error: &clap::Error) -> Option<String> {
    if error.kind() == ErrorKind::MissingRequiredArgument {
        return missing_settings(error);
    }
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let flag = arg.split_whitespace().next()?.to_string();
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.clone(),
        _ => String::new(),
    };
    let expected = match (
        std::error::Error::source(error),
        error.get(ContextKind::ValidValue),
    ) {
        (Some(source), _) => source.to_string(),
        (None, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => "see --help".to_string(),
    };
    let setting = match env_of_flag(&Cli::command(), flag.trim_start_matches('-')) {
        Some(env) => format!("{env} ({flag})"),
        None => flag,
    };
    // A secret is named, never shown.
    if setting.starts_with("API_KEYS") {
        return Some(format!(
            "error: {setting} has a key that is not valid: {expected}"
        ));
    }
    Some(format!("error: {setting} is {value:?}: {expected}"))
}

/// `error: SIMULATOR_TLS_KEY_FILE (--tls-key-file) must be set too: ...`, for a setting
/// another one needs (a certificate without its key).
fn missing_settings(error: &clap::Error) -> Option<String> {
    let ContextValue::Strings(args) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let settings = args
        .iter()
        .filter_map(|arg| arg.split_whitespace().next())
        .map(
            |flag| match env_of_flag(&Cli::command(), flag.trim_start_matches('-')) {
                Some(env) => format!("{env} ({flag})"),
                None => flag.to_string(),
            },
        )
        .collect::<Vec<_>>();
    (!settings.is_empty()).then(|| {
        format!(
            "error: {} must be set too: a setting given needs it (see --help)",
            settings.join(" and ")
        )
    })
}

/// The environment variable behind a long flag, searching every subcommand.
fn env_of_flag(command: &clap::Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .or_else(|| {
            command
                .get_subcommands()
                .find_map(|sub| env_of_flag(sub, long))
        })
}
