//! JSON log lines, one object a line, to stdout and to a rotating file.
//!
//! Every line has `timestamp` (RFC 3339, UTC), `level`, `target`, `message`,
//! the event's own fields (`event`, `cause`, …), the fields of the spans it
//! was written in, flattened (`session_id`, `peer_id`, `room`, …; the
//! innermost span wins), and `trace_id` / `span_id` of the innermost span
//! when the line was written inside one.
//!
//! Both writers are tracing-appender's non-blocking writers: a line is handed
//! to a bounded queue and a worker thread writes it, so the signaling tasks
//! never wait for a disk or a pipe. A full queue drops the line, and
//! `chatsubo_log_lines_dropped_total` counts it. The worker writes what it
//! drained from its queue through a buffer it flushes once the queue is
//! empty: a burst of lines is one `write`, not one a line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::marker::PhantomData;
use std::sync::OnceLock;

use time::OffsetDateTime;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::span_ids::SpanIds;
use crate::config::{Config, LogRotation};
use crate::telemetry::metrics::pipeline;

/// Lines each writer may hold before it drops new ones.
pub const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Where the lines go.
pub struct LogWriters {
    pub stdout: Option<NonBlocking>,
    pub file: Option<NonBlocking>,
    /// Flush the writers when dropped: keep until the end of `main`.
    pub guards: Vec<WorkerGuard>,
}

impl LogWriters {
    /// Stdout and a rotating file in `--log-dir` (created if missing).
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&config.log_dir)
            .with_context(|| format!("cannot create log dir {}", config.log_dir.display()))?;
        let rotation = match config.log_rotation {
            LogRotation::Hourly => Rotation::HOURLY,
            LogRotation::Daily => Rotation::DAILY,
        };
        let appender = RollingFileAppender::builder()
            .rotation(rotation)
            .filename_prefix("chatsubo")
            .filename_suffix("log")
            .max_log_files(config.log_max_files as usize)
            .build(&config.log_dir)
            .with_context(|| format!("cannot open a log file in {}", config.log_dir.display()))?;
        let (file, file_guard) = writer(appender, "chatsubo-log-file");
        let (stdout, stdout_guard) = writer(std::io::stdout(), "chatsubo-log-stdout");
        pipeline().watch_log_writer("stdout", stdout.error_counter());
        pipeline().watch_log_writer("file", file.error_counter());
        Ok(LogWriters {
            stdout: Some(stdout),
            file: Some(file),
            guards: vec![stdout_guard, file_guard],
        })
    }
}

/// Bytes of lines a writer gathers before it writes, without waiting for
/// its queue to run dry (about 200 lines).
const LOG_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// A non-blocking writer over `inner`. tracing-appender's worker flushes
/// its writer each time it has drained the queue, so the lines of one
/// wake-up go out together.
fn writer<W: std::io::Write + Send + 'static>(
    inner: W,
    thread: &str,
) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name(thread)
        .finish(std::io::BufWriter::with_capacity(
            LOG_WRITE_BUFFER_BYTES,
            inner,
        ))
}

/// The log filter: `--log-level`, else `RUST_LOG`, else `info`.
pub fn log_filter(config: &Config) -> anyhow::Result<EnvFilter> {
    let directives = match &config.log_level {
        Some(level) => level.clone(),
        None => std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "info".into()),
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|e| anyhow::anyhow!("invalid log level '{directives}': {e}"))
}

/// The layer that writes JSON lines; see the module documentation.
pub struct JsonLines<S> {
    writers: Vec<NonBlocking>,
    _subscriber: PhantomData<fn(S)>,
}

impl<S> JsonLines<S> {
    pub fn new(writers: &LogWriters) -> Self {
        JsonLines {
            writers: writers
                .stdout
                .iter()
                .chain(writers.file.iter())
                .cloned()
                .collect(),
            _subscriber: PhantomData,
        }
    }
}

/// The fields of one span as JSON members (`"name":value`, comma-separated)
/// in one string, with where each one starts: one allocation per span.
#[derive(Default)]
struct SpanFields {
    text: String,
    names: Vec<(&'static str, usize)>,
}

impl SpanFields {
    /// For an event's own fields: a line's `event`, `session_id`,
    /// `peer_id`, `room`, `message` and what else it names fit without
    /// growing (a span's take the smaller default).
    fn for_event() -> Self {
        SpanFields {
            text: String::with_capacity(256),
            names: Vec::with_capacity(8),
        }
    }

    fn set(&mut self, name: &'static str, value: impl FnOnce(&mut String)) {
        if let Some(i) = self.names.iter().position(|(n, _)| *n == name) {
            // A field recorded again (rare): rebuild without its old value.
            let start = self.names[i].1;
            let end = self.names.get(i + 1).map_or(self.text.len(), |n| n.1);
            let tail = self.text[end..].to_string();
            self.text.truncate(start);
            self.names.remove(i);
            for n in &mut self.names[i..] {
                n.1 -= end - start;
            }
            self.text.push_str(&tail);
        }
        if self.names.is_empty() {
            self.names.reserve(4);
            self.text.reserve(128);
        }
        self.names.push((name, self.text.len()));
        self.text.push(',');
        push_json_str(&mut self.text, name);
        self.text.push(':');
        value(&mut self.text);
    }

    /// Each member with its name, as `(name, ",\"name\":value")`.
    fn members(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.names.iter().enumerate().map(|(i, (name, start))| {
            let end = self.names.get(i + 1).map_or(self.text.len(), |n| n.1);
            (*name, &self.text[*start..end])
        })
    }
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), |t| push_json_str(t, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), |t| {
            let _ = write!(t, "{value}");
        });
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), |t| {
            let _ = write!(t, "{value}");
        });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), |t| t.push_str(&json_f64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), |t| {
            let _ = write!(t, "{value}");
        });
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), |t| push_json_str(t, &error_chain(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.set(field.name(), |t| push_json_str(t, &format!("{value:?}")));
    }
}

/// Appends `value` as a JSON string; plain text (ids, names) is copied as is.
fn push_json_str(out: &mut String, value: &str) {
    // Every byte is tested, without stopping at the first that needs
    // escaping: a loop with no early exit is one the compiler vectorizes.
    let plain = value.bytes().fold(true, |plain, b| {
        plain & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&json_string(value));
    }
}

/// An error and every cause under it: `outer: middle: root`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string serializes")
}

fn json_f64(value: f64) -> String {
    if value.is_finite() {
        value.to_string()
    } else {
        json_string(&value.to_string())
    }
}

/// The process's subscriber, where a log line's spans find their
/// OpenTelemetry ids. Set by [`super::init`] once the subscriber is installed
/// (`Layer::on_register_dispatch` does not reach a layer inside an `Option`).
static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Tells the log layer which subscriber it is part of.
pub fn installed_in(dispatch: &Dispatch) {
    let _ = DISPATCH.set(dispatch.downgrade());
}

impl<S> JsonLines<S> {
    /// The ids of the innermost of `spans` that has an OpenTelemetry span.
    /// Read from the span itself: the layer that makes them does not make
    /// each entered span the thread's current OpenTelemetry context (that
    /// cost every handled frame an attach and a detach).
    fn trace_ids(&self, spans: &[Id]) -> Option<SpanIds> {
        let dispatch = DISPATCH.get()?.upgrade()?;
        spans.iter().find_map(|id| {
            let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
            let ids = super::traces::ids_of(&cx)?;
            Some(SpanIds {
                trace_id: ids.trace_id,
                span_id: ids.span_id,
            })
        })
    }
}

impl<S> Layer<S> for JsonLines<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = SpanFields::for_event();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = String::with_capacity(384);
        line.push_str("{\"timestamp\":\"");
        crate::timefmt::push_rfc3339_millis(&mut line, OffsetDateTime::now_utc());
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"target\":");
        push_json_str(&mut line, meta.target());
        let mut written: Vec<&'static str> = Vec::with_capacity(16);
        written.extend(["timestamp", "level", "target", "trace_id", "span_id"]);
        if !fields.names.iter().any(|(n, _)| *n == "message") {
            line.push_str(",\"message\":\"\"");
            written.push("message");
        }
        let mut push = |line: &mut String, name: &'static str, member: &str| {
            if !written.contains(&name) {
                written.push(name);
                line.push_str(member);
            }
        };
        for (name, member) in fields.members() {
            push(&mut line, name, member);
        }
        // The line's spans, innermost first.
        let mut spans: Vec<Id> = Vec::new();
        // The innermost span's ids: from `span_ids` when traces are not
        // exported, else from its OpenTelemetry span.
        let mut ids = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                spans.push(span.id());
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<SpanFields>() {
                    for (name, member) in fields.members() {
                        push(&mut line, name, member);
                    }
                }
                if ids.is_none() {
                    ids = extensions.get::<SpanIds>().copied();
                }
            }
        }
        if let Some(ids) = ids.or_else(|| self.trace_ids(&spans)) {
            let mut trace_id = [0u8; 32];
            let mut span_id = [0u8; 16];
            hex::encode_to_slice(ids.trace_id, &mut trace_id).expect("32 hex digits");
            hex::encode_to_slice(ids.span_id, &mut span_id).expect("16 hex digits");
            line.push_str(",\"trace_id\":\"");
            line.push_str(std::str::from_utf8(&trace_id).expect("hex is ASCII"));
            line.push_str("\",\"span_id\":\"");
            line.push_str(std::str::from_utf8(&span_id).expect("hex is ASCII"));
            line.push('"');
        }
        line.push_str("}\n");
        for writer in &self.writers {
            let _ = writer.clone().write_all(line.as_bytes());
        }
    }
}

/// The log layer's filter: events as `--log-level` says; spans of chatsubo
/// always, so that a warning still carries its session's fields.
pub struct LogFilter<S> {
    events: EnvFilter,
    _subscriber: PhantomData<fn(S)>,
}

impl<S> LogFilter<S> {
    pub fn new(events: EnvFilter) -> Self {
        LogFilter {
            events,
            _subscriber: PhantomData,
        }
    }
}

fn is_our_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("chatsubo") && *meta.level() <= tracing::Level::INFO
}

impl<S> Filter<S> for LogFilter<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        is_our_span(meta) || Filter::<S>::enabled(&self.events, meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if is_our_span(meta) {
            tracing::subscriber::Interest::always()
        } else {
            Filter::<S>::callsite_enabled(&self.events, meta)
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let events = Filter::<S>::max_level_hint(&self.events)?;
        Some(events.max(tracing::level_filters::LevelFilter::INFO))
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        Filter::<S>::on_new_span(&self.events, attrs, id, ctx)
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        Filter::<S>::on_record(&self.events, id, values, ctx)
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.events, id, ctx)
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.events, id, ctx)
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        Filter::<S>::on_close(&self.events, id, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_names_every_cause() {
        let err = Outer(std::io::Error::other("root cause"));
        assert_eq!(error_chain(&err), "outer: root cause");
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut texts: Vec<String> = (0u8..=0x7f).map(|b| format!("ab{}cd", b as char)).collect();
        texts.extend(
            ["", "p_01JD", "é", "\u{2028}", "a\"b\\c\n", &"x".repeat(100)].map(String::from),
        );
        texts.push(format!("{}\u{1}", "y".repeat(40)));
        for text in texts {
            let mut out = String::new();
            push_json_str(&mut out, &text);
            assert_eq!(out, serde_json::to_string(&text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn span_fields_recorded_again_replace_the_old_value() {
        let mut f = SpanFields::default();
        f.set("a", |t| t.push('1'));
        f.set("b", |t| push_json_str(t, "x\"y"));
        f.set("c", |t| t.push('3'));
        f.set("a", |t| t.push_str("10"));
        let members: Vec<_> = f.members().collect();
        assert_eq!(
            members,
            vec![
                ("b", r#","b":"x\"y""#),
                ("c", r#","c":3"#),
                ("a", r#","a":10"#)
            ]
        );
        let line = format!("{{\"z\":0{}}}", f.text);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["a"], 10);
        assert_eq!(v["b"], "x\"y");
    }

    #[test]
    fn log_level_flag_wins_over_rust_log() {
        use clap::Parser;
        // SAFETY: no other test reads or writes RUST_LOG.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
        let from_env = Config::try_parse_from(["chatsubo"]).unwrap();
        let from_flag = Config::try_parse_from(["chatsubo", "--log-level", "debug"]).unwrap();
        let env_hint = log_filter(&from_env).unwrap().max_level_hint();
        let flag_hint = log_filter(&from_flag).unwrap().max_level_hint();
        unsafe { std::env::remove_var("RUST_LOG") };
        let default_hint = log_filter(&from_env).unwrap().max_level_hint();
        use tracing::level_filters::LevelFilter;
        assert_eq!(env_hint, Some(LevelFilter::WARN));
        assert_eq!(flag_hint, Some(LevelFilter::DEBUG));
        assert_eq!(default_hint, Some(LevelFilter::INFO));
        assert!(Config::try_parse_from(["chatsubo", "--log-rotation", "weekly"]).is_err());
    }

    #[test]
    fn fragments_are_json() {
        assert_eq!(json_string("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(json_f64(f64::NAN), r#""NaN""#);
    }
}
