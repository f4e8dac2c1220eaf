//! Each role's state, as `/healthz` reports it: running, restarting after a failure (with the
//! error), stopped, or failed for good. [`crate::roles`] keeps it; the HTTP servers read it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{Json, http::StatusCode, response::IntoResponse};
use serde::Serialize;

/// Where a role is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RoleState {
    Running,
    /// It failed and waits to be started again.
    Restarting {
        error: String,
    },
    /// It ended at shutdown.
    Stopped,
    /// It cannot go on; the process is stopping.
    Failed {
        error: String,
    },
}

/// A role's state and how often it was started again since the process started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleReport {
    #[serde(flatten)]
    pub state: RoleState,
    pub restarts: u64,
}

/// Every role's state, shared with the `/healthz` handlers.
#[derive(Debug, Clone, Default)]
pub struct RoleHealth(Arc<Mutex<BTreeMap<&'static str, RoleReport>>>);

impl RoleHealth {
    pub(crate) fn set(&self, role: &'static str, state: RoleState) {
        let mut roles = self.0.lock().expect("not poisoned");
        let restarts = roles.get(role).map_or(0, |r| r.restarts)
            + u64::from(matches!(state, RoleState::Restarting { .. }));
        roles.insert(role, RoleReport { state, restarts });
    }

    pub fn reports(&self) -> BTreeMap<&'static str, RoleReport> {
        self.0.lock().expect("not poisoned").clone()
    }

    /// `role`'s state (`Stopped` for a role never started).
    pub fn state(&self, role: &str) -> RoleState {
        self.0
            .lock()
            .expect("not poisoned")
            .get(role)
            .map_or(RoleState::Stopped, |r| r.state.clone())
    }

    /// How often `role` was started again after an error or a panic.
    pub fn restarts(&self, role: &str) -> u64 {
        self.0
            .lock()
            .expect("not poisoned")
            .get(role)
            .map_or(0, |r| r.restarts)
    }

    /// False once a role has failed for good.
    pub(crate) fn is_alive(&self) -> bool {
        !self
            .0
            .lock()
            .expect("not poisoned")
            .values()
            .any(|r| matches!(r.state, RoleState::Failed { .. }))
    }

    /// The roles that are not running (restarting after a failure, or failed), each with its
    /// state's name (`restarting`, `failed`): what an open probe may say. The errors are in the
    /// log, and in [`Detail::Full`] answers.
    pub(crate) fn not_running(&self) -> Vec<(&'static str, &'static str)> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|(role, report)| match &report.state {
                RoleState::Running | RoleState::Stopped => None,
                RoleState::Restarting { .. } => Some((*role, "restarting")),
                RoleState::Failed { .. } => Some((*role, "failed")),
            })
            .collect()
    }

    /// The `/healthz` answer: 200 with each role's state, 503 when one has failed for good.
    /// An open probe ([`Detail::States`]) gets role names, states and restart counts only: a
    /// role's error can name the database's host, user and database, which is for the log and
    /// for key holders ([`Detail::Full`]).
    pub fn response(&self, detail: Detail) -> axum::response::Response {
        let alive = self.is_alive();
        let status = if alive {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let reports = self.reports();
        let roles = match detail {
            Detail::Full => serde_json::to_value(&reports),
            Detail::States => serde_json::to_value(
                reports
                    .iter()
                    .map(|(role, report)| (*role, OpenReport::from(report)))
                    .collect::<BTreeMap<_, _>>(),
            ),
        }
        .expect("role reports serialize");
        let body = serde_json::json!({
            "status": if alive { "ok" } else { "failing" },
            "roles": roles,
        });
        (status, Json(body)).into_response()
    }
}

/// How much a `/healthz` answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Role names, states and restart counts: for open probes.
    States,
    /// With each failing role's error: for API key holders.
    Full,
}

/// A role's report without its error.
#[derive(Serialize)]
struct OpenReport {
    state: &'static str,
    restarts: u64,
}

impl From<&RoleReport> for OpenReport {
    fn from(report: &RoleReport) -> Self {
        let state = match report.state {
            RoleState::Running => "running",
            RoleState::Restarting { .. } => "restarting",
            RoleState::Stopped => "stopped",
            RoleState::Failed { .. } => "failed",
        };
        Self {
            state,
            restarts: report.restarts,
        }
    }
}
