//! The Pusher HTTP API's trigger routes, so the Pusher server SDKs (node `pusher`, python
//! `pusher`, …) can publish through Kiln: `POST /apps/{appId}/events` and
//! `POST /apps/{appId}/batch_events`. Requests are signed (auth_version 1.0); accepted events go to
//! every socket subscribed to their channels.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{verify_request, RequestAuthError};
use super::hub::Hub;
use super::protocol::{encode_data, valid_channel_name, MAX_NAME_LEN};
use crate::AppEvent as Event;

/// Channels one trigger may name (Pusher's and soketi's limit).
const MAX_CHANNELS_PER_TRIGGER: usize = 100;
/// Events one batch may hold (Pusher's and soketi's limit).
const MAX_BATCH: usize = 10;

/// Why a trigger was refused; the body is `{"error"}`, the shape of every error body of Kiln.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path's app id is not this server's.
    #[error("Unknown app {0:?}")]
    UnknownApp(String),
    /// The signature check failed.
    #[error("The secret authentication failed: {0}")]
    Auth(#[from] RequestAuthError),
    /// The body is not a valid trigger.
    #[error("The received data is incorrect: {0}")]
    BadRequest(String),
    /// An event's data is over `max_message_bytes`.
    #[error("Event data of {size} bytes exceeds {max} bytes")]
    TooLarge {
        /// The encoded data size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownApp(_) => StatusCode::NOT_FOUND,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({"error": self.to_string()});
        (status, Json(body)).into_response()
    }
}

/// One trigger: `channel` or `channels`, `name`, `data` (a string in every SDK; other JSON is
/// accepted and encoded). `socket_id` and `info` are ignored (see [`publish`]).
#[derive(Debug, Deserialize)]
struct Trigger {
    name: String,
    data: Value,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Batch {
    batch: Vec<Trigger>,
}

/// Checks the app id and the signature of a request.
fn authorize(hub: &Hub, app_id: &str, uri: &Uri, body: &[u8]) -> Result<(), ApiError> {
    if app_id != hub.config.app_id {
        return Err(ApiError::UnknownApp(app_id.to_owned()));
    }
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::BadRequest(format!("query string: {e}")))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    verify_request(&hub.config, "POST", uri.path(), &params, body, now)?;
    Ok(())
}

/// Validates a trigger and returns the events it makes, without publishing anything yet, so a
/// batch with one bad entry publishes nothing.
fn events_of(hub: &Hub, trigger: Trigger) -> Result<Vec<Event>, ApiError> {
    if trigger.name.is_empty() || trigger.name.len() > MAX_NAME_LEN {
        return Err(ApiError::BadRequest(format!(
            "event name must have 1 to {MAX_NAME_LEN} characters"
        )));
    }
    let channels = match (trigger.channel, trigger.channels) {
        (Some(one), None) => vec![one],
        (None, Some(many)) if !many.is_empty() && many.len() <= MAX_CHANNELS_PER_TRIGGER => many,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "give either channel or 1 to {MAX_CHANNELS_PER_TRIGGER} channels"
            )))
        }
    };
    if let Some(bad) = channels.iter().find(|c| !valid_channel_name(c)) {
        return Err(ApiError::BadRequest(format!(
            "invalid channel name {bad:?}"
        )));
    }
    let size = encode_data(&trigger.data).len();
    let max = hub.config.max_message_bytes;
    if size > max {
        return Err(ApiError::TooLarge { size, max });
    }
    Ok(channels
        .into_iter()
        .map(|channel| Event {
            channel,
            name: trigger.name.clone(),
            // Kept as received: a string goes to subscribers verbatim (see `encode_data`).
            data: trigger.data.clone(),
        })
        .collect())
}

/// Publishes to the channels' sockets. `socket_id` exclusion is not honoured: published events
/// carry no sender, so the triggering socket (if any) receives its own event too.
fn publish(hub: &Hub, events: Vec<Event>) -> Response {
    for event in events {
        hub.publish(event);
    }
    (StatusCode::OK, Json(json!({}))).into_response()
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// `POST /apps/{appId}/events`.
pub(crate) async fn post_events(
    State(hub): State<Arc<Hub>>,
    Path(app_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&hub, &app_id, &uri, &body)?;
    let events = events_of(&hub, parse(&body)?)?;
    Ok(publish(&hub, events))
}

/// `POST /apps/{appId}/batch_events`: every entry names one `channel`.
pub(crate) async fn post_batch_events(
    State(hub): State<Arc<Hub>>,
    Path(app_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&hub, &app_id, &uri, &body)?;
    let batch: Batch = parse(&body)?;
    if batch.batch.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "a batch holds at most {MAX_BATCH} events"
        )));
    }
    let mut events = Vec::new();
    for trigger in batch.batch {
        if trigger.channel.is_none() {
            return Err(ApiError::BadRequest(
                "each batch event needs a channel".into(),
            ));
        }
        events.extend(events_of(&hub, trigger)?);
    }
    Ok(publish(&hub, events))
}
