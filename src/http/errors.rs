//! JSON errors: `{"error":{"code":"…","message":"…"}}` with a fitting status.

use std::convert::Infallible;

use serde::Serialize;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut res = json_error(self.status, self.code, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                // Bearer for API clients; Basic lets a browser opening
                // /dashboard prompt for the token as its password.
                warp::http::HeaderValue::from_static(
                    r#"Bearer realm="chatsubo", Basic realm="chatsubo""#,
                ),
            );
        }
        res
    }
}

impl warp::reject::Reject for ApiError {}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

/// A JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    warp::reply::with_status(
        warp::reply::json(&Body {
            error: Inner { code, message },
        }),
        status,
    )
    .into_response()
}

/// Turns warp's rejections into JSON errors.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    if let Some(err) = rejection.find::<ApiError>() {
        return Ok(err.clone().into_response());
    }
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such path".to_string(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "method not allowed on this path".to_string(),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string())
    } else {
        tracing::warn!(event = "unhandled_rejection", cause = ?rejection, "unhandled rejection");
        (
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the request could not be handled".to_string(),
        )
    };
    Ok(json_error(status, code, &message))
}
