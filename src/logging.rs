//! Log set-up shared by every binary: the level from `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`,
//! else INFO) and, with `AWS_LAMBDA_LOG_FORMAT=JSON`, one flat JSON object per line: time,
//! level, message, the event's fields, and the fields of every enclosing span — so each line
//! carries the invocation's `requestId` (and `xrayTraceId` when tracing is on) and, once known,
//! the `lead_id`, at the top level where CloudWatch Logs Insights can filter on them.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The level Lambda's advanced logging controls ask for; `FATAL` is ERROR here.
pub fn level(aws_lambda_log_level: Option<&str>, rust_log: Option<&str>) -> LevelFilter {
    let text = aws_lambda_log_level.or(rust_log).unwrap_or("INFO").trim();
    match text.to_ascii_uppercase().as_str() {
        "FATAL" => LevelFilter::ERROR,
        "TRACE" => LevelFilter::TRACE,
        "DEBUG" => LevelFilter::DEBUG,
        "WARN" => LevelFilter::WARN,
        "ERROR" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    }
}

/// Installs the subscriber for this process (once; later calls do nothing).
pub fn init() {
    let env = crate::config::process_env();
    let json = env
        .raw("AWS_LAMBDA_LOG_FORMAT")
        .is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let level = level(
        env.raw("AWS_LAMBDA_LOG_LEVEL").as_deref(),
        env.raw("RUST_LOG").as_deref(),
    );
    let blank_endpoint = env
        .raw("AWS_ENDPOINT_URL")
        .is_some_and(|v| v.trim().is_empty());
    init_with(json, &directives(level, blank_endpoint), std::io::stdout);
}

/// The filter for `level`. template.yaml declares `AWS_ENDPOINT_URL` empty (so `sam local
/// --env-vars` can set it); the SDK then uses the real endpoints but warns that "" is not a URL
/// at every cold start. That one warning is silenced when the value is blank, never otherwise.
pub fn directives(level: LevelFilter, blank_endpoint_url: bool) -> String {
    if blank_endpoint_url {
        format!("{level},aws_config::default_provider::endpoint_url=error")
    } else {
        level.to_string()
    }
}

/// `filter` is a level with per-target levels, such as `info` or `info,clayhook=debug`. A
/// [`Targets`] filter rather than an `EnvFilter`: the latter's span and field matching links a
/// regex engine into every function (about 5% of a bootstrap) for nothing we use.
pub fn init_with<W>(json: bool, filter: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(writer);
    let _ = if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish()
            .with(targets(filter))
            .try_init()
    } else {
        builder
            .with_target(false)
            .without_time()
            .finish()
            .with(targets(filter))
            .try_init()
    };
}

/// The filter for `directives`; what cannot be read falls back to INFO.
pub fn targets(directives: &str) -> Targets {
    directives
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

/// How a function's process ends: an error (a bad configuration, the runtime API gone) is
/// logged as one more JSON line rather than printed as text by `main`.
pub fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the function stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The JSON line format.
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), now.into());
        line.insert("level".into(), level_name(*event.metadata().level()).into());
        // Outermost span first, so an inner span's field wins over an outer one of the same name.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&fields.fields)
                {
                    line.extend(map);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::subscriber::with_default;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    /// The template's empty `AWS_ENDPOINT_URL` costs no warning per cold start; any other
    /// warning, and this one for a value that is really wrong, still shows.
    #[test]
    fn a_blank_endpoint_url_is_not_warned_about() {
        for (blank, shown) in [(true, false), (false, true)] {
            let buffer = Buffer::default();
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .finish()
                .with(targets(&directives(LevelFilter::INFO, blank)));
            with_default(subscriber, || {
                tracing::warn!(target: "aws_config::default_provider::endpoint_url", "invalid value for endpoint URL setting");
                tracing::warn!(target: "aws_config::other", "another warning");
            });
            let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text.contains("endpoint URL"), shown, "{text}");
            assert!(text.contains("another warning"));
        }
    }

    #[test]
    fn levels_and_per_target_levels_are_read_and_nonsense_is_info() {
        let t = targets("warn,clayhook=debug");
        let meta = |target, level| t.would_enable(target, &level);
        assert!(meta("clayhook::router", Level::DEBUG));
        assert!(!meta("hyper", Level::INFO));
        assert!(meta("hyper", Level::WARN));
        let fallback = targets("=== not a filter");
        assert!(fallback.would_enable("anything", &Level::INFO));
        assert!(!fallback.would_enable("anything", &Level::DEBUG));
    }

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_one_object_with_the_request_and_lead_ids() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(LevelFilter::INFO)
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(move || sink.clone())
            .finish();
        with_default(subscriber, || {
            let invoke = tracing::info_span!(
                "Lambda runtime invoke",
                requestId = "req-1",
                xrayTraceId = "Root=1-abc"
            );
            let _i = invoke.enter();
            let record = tracing::info_span!(
                "record",
                message_id = "m-1",
                lead_id = tracing::field::Empty
            );
            let _r = record.enter();
            tracing::info!("before the ID is known");
            record.record("lead_id", "7f3a");
            tracing::warn!(
                destination = "crm",
                status = 503u64,
                retry = true,
                "delivery failed: \"quoted\"\nnewline"
            );
            tracing::debug!("below the level: dropped");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in &lines {
            assert_eq!(l["requestId"], "req-1");
            assert_eq!(l["xrayTraceId"], "Root=1-abc");
            assert_eq!(l["message_id"], "m-1");
            assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        }
        assert!(lines[0].get("lead_id").is_none());
        assert_eq!(lines[1]["lead_id"], "7f3a");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["status"], 503);
        assert_eq!(lines[1]["retry"], true);
        assert_eq!(lines[1]["message"], "delivery failed: \"quoted\"\nnewline");
    }

    #[test]
    fn the_level_follows_lambdas_controls() {
        assert_eq!(level(Some("DEBUG"), Some("error")), LevelFilter::DEBUG);
        assert_eq!(level(None, Some("warn")), LevelFilter::WARN);
        assert_eq!(level(Some("FATAL"), None), LevelFilter::ERROR);
        assert_eq!(level(Some("nonsense"), None), LevelFilter::INFO);
        assert_eq!(level(None, None), LevelFilter::INFO);
    }
}
