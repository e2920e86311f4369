//! The pipeline's `tracing` events (decision lines, reload and Redis messages)
//! written to Envoy's log, through its `dynamic_modules` logger: at the event's
//! level, and only when that logger writes the level now (it can be changed at
//! run time, `POST /logging?dynamic_modules=debug` on Envoy's admin).

use crate::abi;
use crate::envoy;
use std::io::Write;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Installs the forwarding subscriber for this library's `tracing` (its own copy,
/// apart from any other module's). A second call does nothing.
pub fn forward_to_envoy() {
    // Asked per event, not cached per call site: Envoy's level can change.
    let enabled =
        DynFilterFn::new(|metadata: &Metadata<'_>, _| envoy::log_enabled(level(metadata.level())))
            .with_callsite_filter(|_| Interest::sometimes());
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(EnvoyLog)
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_filter(enabled),
    );
    let _ = tracing::subscriber::set_global_default(subscriber);
}

use tracing_subscriber::Layer as _;

fn level(level: &Level) -> abi::LogLevel {
    match *level {
        Level::TRACE => abi::LOG_TRACE,
        Level::DEBUG => abi::LOG_DEBUG,
        Level::INFO => abi::LOG_INFO,
        Level::WARN => abi::LOG_WARN,
        Level::ERROR => abi::LOG_ERROR,
    }
}

/// Where the formatter writes: one [`Line`] per event.
struct EnvoyLog;

impl<'a> MakeWriter<'a> for EnvoyLog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            level: abi::LOG_INFO,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, metadata: &Metadata<'_>) -> Line {
        Line {
            level: level(metadata.level()),
            text: Vec::new(),
        }
    }
}

/// One formatted event, handed to Envoy whole when the formatter is done.
struct Line {
    level: abi::LogLevel,
    text: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        let text = text.trim_end();
        if !text.is_empty() {
            envoy::log(self.level, &format!("portcullis: {text}"));
        }
    }
}
