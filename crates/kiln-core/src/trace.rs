//! W3C trace context on a job: the `traceparent` (and `tracestate`) a client sends with it,
//! checked here, carried with the job, and put on the job's tracing span, so that its logs say
//! which trace they belong to. Whoever exports spans (the binary's OTLP exporter) registers
//! [`set_parent_hook`] to make the client's span the job span's parent; the core knows no
//! exporter.

use std::sync::OnceLock;

/// A checked `traceparent` (`00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`), with the
/// `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

/// The longest `tracestate` kept (W3C's 32 members of at most 256 bytes, and then some).
const MAX_TRACESTATE: usize = 8192;

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceContext {
    /// Parses a `traceparent` header's value (version 00, or a later version's first four
    /// fields, as W3C asks); an all-zero trace or parent id is invalid. `tracestate` is kept as
    /// given when it is printable ASCII of at most 8 KiB, else dropped.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, &'static str> {
        let value = traceparent.trim();
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("must be 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>");
        };
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some())
        {
            return Err("has an unknown version or extra fields");
        }
        if !lower_hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
            return Err("must have a trace id of 32 lowercase hex digits, not all zero");
        }
        if !lower_hex(parent, 16) || parent.bytes().all(|b| b == b'0') {
            return Err("must have a parent id of 16 lowercase hex digits, not all zero");
        }
        if !lower_hex(flags, 2) {
            return Err("must end with 2 lowercase hex digits of flags");
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_TRACESTATE
                    && s.bytes().all(|b| (0x20..0x7f).contains(&b))
            })
            .map(str::to_string);
        Ok(Self {
            traceparent: format!("00-{trace}-{parent}-{flags}"),
            tracestate,
        })
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` value, if one came.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id (32 hex digits).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The client's span id (16 hex digits).
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }
}

type ParentHook = fn(&tracing::Span, &TraceContext);

static PARENT_HOOK: OnceLock<ParentHook> = OnceLock::new();

/// Registers what makes a client's trace the parent of a span (once per process).
pub fn set_parent_hook(hook: ParentHook) {
    let _ = PARENT_HOOK.set(hook);
}

/// Makes `cx` the parent of `span`, if an exporter registered how.
pub fn attach(span: &tracing::Span, cx: &TraceContext) {
    if let Some(hook) = PARENT_HOOK.get() {
        hook(span, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::TraceContext;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_parses_only_in_its_form() {
        let cx = TraceContext::parse(GOOD, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(cx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.parent_id(), "00f067aa0ba902b7");
        assert_eq!(cx.tracestate(), Some("congo=t61rcWkgMzE"));
        // A later version may add fields; they are not carried.
        let later = TraceContext::parse(&format!("01{}-extra", &GOOD[2..]), None).unwrap();
        assert_eq!(later.traceparent(), GOOD);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad, None).is_err(), "{bad:?}");
        }
        assert_eq!(
            TraceContext::parse(GOOD, Some("bad\u{1}state"))
                .unwrap()
                .tracestate(),
            None
        );
    }
}
