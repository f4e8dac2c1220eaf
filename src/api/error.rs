//! One error shape for every answer that is not a success: RFC 9457 problem details,
//! `application/problem+json`, `{"type","title","status","detail"}`.
//!
//! Each variant's doc says its status. A client's mistake is a 4xx that says what was wrong;
//! an internal cause is logged and answered with an opaque 500.

use axum::{
    Json,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad id, bad epoch, unknown step...).
    #[error("{detail}")]
    BadRequest { title: &'static str, detail: String },
    /// 401: the endpoint wants an API key and the request has none that is right.
    #[error("{0}")]
    Unauthorized(String),
    /// 404: no such influencer, or no such route.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with what exists (a watchlist of that name).
    #[error("{0}")]
    Conflict(String),
    /// 503: a dependency (the database) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: anything else; the cause is logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The 404 of an id that is not in the registry.
    pub(crate) fn never_tracked(id: i64) -> Self {
        Self::NotFound(format!("influencer {id} was never tracked"))
    }

    pub(crate) fn bad_request(title: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            title,
            detail: detail.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            // query_canceled: the API's statement_timeout cut the statement short.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                tracing::warn!(error = %db, "statement cancelled");
                Self::Unavailable(
                    "the database took longer than API_STATEMENT_TIMEOUT to answer; try a shorter range or a coarser step"
                        .into(),
                )
            }
            e => Self::Internal(e.into()),
        }
    }
}

impl From<crate::series::ranks::RanksError> for ApiError {
    fn from(e: crate::series::ranks::RanksError) -> Self {
        match e {
            crate::series::ranks::RanksError::Database(e) => e.into(),
            e => Self::Internal(e.into()),
        }
    }
}

impl From<crate::series::read::ReadError> for ApiError {
    fn from(e: crate::series::read::ReadError) -> Self {
        match e {
            crate::series::read::ReadError::Database(e) => e.into(),
            e => Self::Internal(e.into()),
        }
    }
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match &self {
            ApiError::BadRequest { title, detail } => {
                (StatusCode::BAD_REQUEST, *title, detail.clone())
            }
            ApiError::Unauthorized(detail) => {
                (StatusCode::UNAUTHORIZED, "Unauthorized", detail.clone())
            }
            ApiError::NotFound(detail) => (StatusCode::NOT_FOUND, "Not found", detail.clone()),
            ApiError::Conflict(detail) => (StatusCode::CONFLICT, "Conflict", detail.clone()),
            ApiError::Unavailable(detail) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
                detail.clone(),
            ),
            ApiError::Internal(cause) => {
                tracing::error!(
                    error = format!("{cause:#}"),
                    "internal error answering a request"
                );
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "the server failed to answer; the cause is in its log".to_string(),
                )
            }
        };
        let body = Problem {
            kind: "about:blank".into(),
            title: title.into(),
            status: status.as_u16(),
            detail,
        };
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/problem+json"),
        );
        // A 401 says how to authenticate (RFC 9110 §11.6.1).
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
