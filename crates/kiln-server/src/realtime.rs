//! The job events of the embedded Pusher endpoint: a socket that subscribes to
//! `private-run-<jobId>` follows that job's event log from that moment, projected to the
//! contract's channel events. (The subscription itself was authorised by the channel's
//! signature, which only the job's owner can get.)

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use kiln_core::{JobId, JobService};
use kiln_pusher::{AppEvent, ChannelFeed, EventSource};

use crate::coderunner::project;
use crate::links::Links;

/// The jobs' events, by channel.
#[derive(Debug)]
pub struct JobEvents {
    service: Arc<JobService>,
    links: Links,
}

impl JobEvents {
    /// Events of the jobs of `service`, their artifact URLs signed by `links`.
    pub fn new(service: Arc<JobService>, links: Links) -> Self {
        Self { service, links }
    }
}

/// A job's events from position `from` on, as channel events (artifact URLs signed by `links`
/// under its default base: a channel has no request to take a host from).
pub fn channel_feed(
    service: &JobService,
    links: &Links,
    id: &JobId,
    from: Option<u64>,
) -> Option<ChannelFeed> {
    let events = match from {
        Some(from) => service.events(id, from),
        None => service.follow(id)?,
    };
    let encoding = service
        .live_encoding(id)
        .unwrap_or(kiln_core::OutputEncoding::Utf8);
    let channel = project::channel_of(id.as_str());
    let links = links.clone();
    let base = links.base(None);
    let job = id.clone();
    let ttl = service.config().result_ttl;
    Some(
        events
            .flat_map(move |record| {
                let channel = channel.clone();
                let urls = project::UrlContext {
                    links: &links,
                    base: &base,
                    job: &job,
                    expires: project::UrlContext::expiry_of(None, ttl),
                };
                stream::iter(
                    project::events(&record, encoding, &urls)
                        .into_iter()
                        .map(move |(name, data)| AppEvent {
                            channel: channel.clone(),
                            name: name.to_string(),
                            data: serde_json::Value::String(data),
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .boxed(),
    )
}

impl EventSource for JobEvents {
    fn subscribe(&self, channel: &str) -> Option<ChannelFeed> {
        let id = JobId(project::job_of_channel(channel)?.to_string());
        channel_feed(&self.service, &self.links, &id, None)
    }
}
