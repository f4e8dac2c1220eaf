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
    pub fn is_alive(&self) -> bool {
        !self
            .0
            .lock()
            .expect("not poisoned")
            .values()
            .any(|r| matches!(r.state, RoleState::Failed { .. }))
    }

    /// The roles that are not running (restarting after a failure, or failed), each with
    /// its error.
    pub fn not_running(&self) -> Vec<(&'static str, String)> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|(role, report)| match &report.state {
                RoleState::Running | RoleState::Stopped => None,
                RoleState::Restarting { error } => Some((*role, format!("restarting: {error}"))),
                RoleState::Failed { error } => Some((*role, format!("failed: {error}"))),
            })
            .collect()
    }

    /// The `/healthz` answer: 200 with each role's state, 503 when one has failed for good.
    pub fn response(&self) -> axum::response::Response {
        let alive = self.is_alive();
        let status = if alive {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": if alive { "ok" } else { "failing" },
            "roles": self.reports(),
        });
        (status, Json(body)).into_response()
    }
}
