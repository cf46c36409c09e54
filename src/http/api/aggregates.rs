//! `GET /api/churn` and `GET /api/stats`: aggregates over a time range.

use std::sync::Arc;

use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

use super::params::{Query, aggregate_range, at, bad, params, room_param};
use super::{blocking, store};
use crate::analytics;
use crate::http::ApiError;
use crate::signaling::Hub;

/// Widest churn bucket, in seconds (one week).
pub const MAX_BUCKET_SECS: u64 = 7 * 86_400;

#[derive(Serialize)]
struct ChurnBucket {
    start: String,
    joins: u64,
    leaves: u64,
    rejections: u64,
    resumes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChurnBody {
    bucket_seconds: u64,
    buckets: Vec<ChurnBucket>,
}

pub async fn churn(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(&q, &["room", "since", "until", "bucket"]).map_err(bad)?;
    let room = room_param(&p).map_err(bad)?;
    let (since, until) = aggregate_range(&p).map_err(bad)?;
    let bucket = match p.get("bucket") {
        None => 60,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|b| *b >= 60 && b % 60 == 0 && *b <= MAX_BUCKET_SECS)
            .ok_or_else(|| {
                bad(ApiError::bad_request(format!(
                    "bucket must be a multiple of 60 seconds from 60 to {MAX_BUCKET_SECS}"
                )))
            })?,
    };
    let store = store(&hub)?;
    let rows = blocking(move || {
        analytics::churn_by_bucket(&*store, room.as_deref(), since, until, bucket)
    })
    .await?;
    Ok(warp::reply::json(&ChurnBody {
        bucket_seconds: bucket,
        buckets: rows
            .into_iter()
            .map(|(start, c)| ChurnBucket {
                start: at(start * 1000),
                joins: c.joins,
                leaves: c.leaves,
                rejections: c.rejections,
                resumes: c.resumes,
            })
            .collect(),
    })
    .into_response())
}

pub async fn stats(hub: Arc<Hub>, q: Query) -> Result<Response, warp::Rejection> {
    let p = params(&q, &["since", "until"]).map_err(bad)?;
    let (since, until) = aggregate_range(&p).map_err(bad)?;
    let store = store(&hub)?;
    let stats = blocking(move || analytics::session_stats(&*store, since, until)).await?;
    Ok(warp::reply::json(&stats).into_response())
}
