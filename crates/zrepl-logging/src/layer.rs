//! The `tracing` side: fields of enclosing spans are kept per span and merged into every event,
//! which becomes a [`Record`] for each outlet whose level it reaches.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;
use zrepl_config::LogLevel;

use crate::outlet::Outlet;
use crate::record::{set_field, Record, Value, FIELD_SPAN};

/// The layer that feeds the outlets.
pub struct ZreplLayer {
    pub(crate) outlets: Vec<Outlet>,
}

/// The fields recorded on a span.
struct SpanFields(Vec<(String, Value)>);

struct Collect<'a> {
    fields: &'a mut Vec<(String, Value)>,
    message: Option<&'a mut String>,
}

impl Collect<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        let name = field.name();
        if name == "message" {
            if let Some(m) = self.message.as_deref_mut() {
                *m = v.to_text();
                return;
            }
        }
        // tracing-log's metadata fields are not zrepl fields.
        if name.starts_with("log.") {
            return;
        }
        set_field(self.fields, name, v);
    }
}

impl Visit for Collect<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain, like Go's wrapped errors print.
        let mut s = value.to_string();
        let mut cur = value.source();
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        self.put(field, Value::Str(s));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Str(format!("{value:?}")));
    }
}

pub(crate) fn level_of(l: &tracing::Level) -> LogLevel {
    match *l {
        tracing::Level::ERROR => LogLevel::Error,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

impl<S> Layer<S> for ZreplLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Collect {
            fields: &mut fields,
            message: None,
        });
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(f) = ext.get_mut::<SpanFields>() {
                values.record(&mut Collect {
                    fields: &mut f.0,
                    message: None,
                });
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = level_of(event.metadata().level());
        if !self.outlets.iter().any(|o| level >= o.min) {
            return;
        }
        let mut fields = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                names.push(span.name());
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &f.0 {
                        set_field(&mut fields, k, v.clone());
                    }
                }
            }
        }
        let mut message = String::new();
        event.record(&mut Collect {
            fields: &mut fields,
            message: Some(&mut message),
        });
        if !fields.iter().any(|(k, _)| k == FIELD_SPAN) {
            let span = if names.is_empty() {
                "NOSPAN".to_string()
            } else {
                names.join("$")
            };
            fields.push((FIELD_SPAN.to_string(), Value::Str(span)));
        }
        let rec = Record {
            time: crate::now(),
            level,
            message,
            fields,
        };
        for o in &self.outlets {
            if level >= o.min {
                o.write(&rec);
            }
        }
    }
}

/// Which events reach the outlets: every span is enabled (their fields must be on the events
/// inside them whatever the span's level), events by level or by `ZREPL_LOG`.
pub enum EventFilter {
    Level(tracing::level_filters::LevelFilter),
    Env(Box<EnvFilter>),
}

impl<S> Filter<S> for EventFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if meta.is_span() {
            return true;
        }
        match self {
            EventFilter::Level(l) => meta.level() <= l,
            EventFilter::Env(e) => Filter::<S>::enabled(&**e, meta, cx),
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        use tracing::subscriber::Interest;
        if meta.is_span() {
            return Interest::always();
        }
        match self {
            EventFilter::Level(l) => {
                if meta.level() <= l {
                    Interest::always()
                } else {
                    Interest::never()
                }
            }
            EventFilter::Env(e) => Filter::<S>::callsite_enabled(&**e, meta),
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let EventFilter::Env(e) = self {
            Filter::<S>::on_new_span(&**e, attrs, id, ctx)
        }
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        if let EventFilter::Env(e) = self {
            Filter::<S>::on_record(&**e, id, values, ctx)
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let EventFilter::Env(e) = self {
            Filter::<S>::on_enter(&**e, id, ctx)
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let EventFilter::Env(e) = self {
            Filter::<S>::on_exit(&**e, id, ctx)
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let EventFilter::Env(e) = self {
            Filter::<S>::on_close(&**e, id, ctx)
        }
    }
}
