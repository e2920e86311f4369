//! portcullis inside Envoy (docs/in-proxy.md): the hooks Envoy 1.40's
//! `envoy.filters.http.dynamic_modules` filter calls, exported under the names its
//! ABI resolves with `dlsym`.
//!
//! ```text
//! Envoy worker ─ request headers ─► on_http_filter_request_headers
//!                                     └─ filter::InProxy::on_request_headers
//!                                          (portcullis' Authorizer, polled once)
//!                                     ◄─ allow: headers set/removed, Continue
//!                                     ◄─ deny: local reply, StopIteration
//!                                     ◄─ needs I/O: Continue to the ext_authz
//!                                        fallback (or 503 without one)
//!              (after ext_authz)   ─► the guard: Continue only if the module or
//!                                     the server allowed, else 503
//! ```
//!
//! The hooks only convert pointers and catch panics: a panic never crosses into
//! Envoy (that would abort it); the request it happened in is refused with 503
//! unless it was already answered.

mod abi;
mod envoy;
mod filter;
mod log;

use envoy::Stream;
use filter::{FilterConfig, Verdict};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What `envoy_dynamic_module_on_program_init` returns: the ABI version this module
/// was written against (Envoy 1.40's `ENVOY_DYNAMIC_MODULES_ABI_VERSION`). Envoy
/// logs "matched", or a warning when it differs.
static ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Called once, when Envoy loads the library. A null return refuses the load.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    // The pipeline's decision logs go to Envoy's log from here on.
    if catch_unwind(log::forward_to_envoy).is_err() {
        return std::ptr::null();
    }
    ABI_VERSION.as_ptr().cast()
}

/// Runs `hook`; a panic in it is logged and answered with `otherwise`.
fn guarded<T>(what: &str, otherwise: T, hook: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(hook)).unwrap_or_else(|_| {
        envoy::log(abi::LOG_ERROR, &format!("portcullis: {what} panicked"));
        otherwise
    })
}

/// One HTTP stream's filter: its config, and what an allow adds to the response.
struct Filter {
    config: *const FilterConfig,
    response: Vec<(String, String)>,
}

/// A filter config: `filter_config` is YAML naming the `portcullis.yaml`, or the
/// guard (see [`FilterConfig::load`]). A null return makes Envoy reject the
/// config, so a broken config or policy stops Envoy from starting (or the update
/// from applying).
///
/// # Safety
/// `config` points at `config_length` bytes, as Envoy passes them.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    _name: *const u8,
    _name_length: usize,
    config: *const u8,
    config_length: usize,
) -> *const c_void {
    let bytes: &[u8] = if config.is_null() {
        &[]
    } else {
        // SAFETY: Envoy's buffer, valid during this call (the caller's contract).
        unsafe { std::slice::from_raw_parts(config, config_length) }
    };
    guarded(
        "loading the config",
        std::ptr::null(),
        || match FilterConfig::load(bytes) {
            Ok(config) => Box::into_raw(Box::new(config)).cast_const().cast(),
            Err(error) => {
                envoy::log(abi::LOG_ERROR, &format!("portcullis: {error}"));
                std::ptr::null()
            }
        },
    )
}

/// # Safety
/// `config` came from `envoy_dynamic_module_on_http_filter_config_new`, and no
/// filter made from it is alive (Envoy's filters hold their config).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *mut c_void) {
    // SAFETY: the caller's contract; this is the pointer's only owner.
    let config = unsafe { Box::from_raw(config.cast::<FilterConfig>()) };
    guarded("dropping the config", (), || drop(config));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: abi::FilterEnvoyPtr,
) -> *mut c_void {
    guarded("creating a filter", std::ptr::null_mut(), || {
        Box::into_raw(Box::new(Filter {
            config: config.cast(),
            response: Vec::new(),
        }))
        .cast()
    })
}

/// # Safety
/// `filter` came from `envoy_dynamic_module_on_http_filter_new`.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *mut c_void) {
    if filter.is_null() {
        return;
    }
    // SAFETY: the caller's contract; this is the pointer's only owner.
    let filter = unsafe { Box::from_raw(filter.cast::<Filter>()) };
    guarded("dropping a filter", (), || drop(filter));
}

/// # Safety
/// `envoy` is Envoy's live filter object and `filter` this stream's [`Filter`].
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: abi::FilterEnvoyPtr,
    filter: *mut c_void,
    end_of_stream: bool,
) -> abi::FilterStatus {
    // SAFETY: the caller's contract; Envoy calls one hook of a stream at a time,
    // and a filter's config outlives it (Envoy's filter holds the config).
    let mut stream = unsafe { Stream::new(envoy) };
    let Some(filter) = (unsafe { filter.cast::<Filter>().as_mut() }) else {
        // The filter could not be created: refuse rather than let it through.
        stream.send_response(503, &[], "");
        return abi::STOP_ITERATION;
    };
    // SAFETY: as above.
    let config = unsafe { &*filter.config };
    let verdict = catch_unwind(AssertUnwindSafe(|| match config {
        FilterConfig::InProxy(in_proxy) => in_proxy.on_request_headers(&mut stream, end_of_stream),
        FilterConfig::Guard => filter::guard(&mut stream),
    }));
    match verdict {
        Ok(Verdict::Allow { response }) => {
            filter.response = response;
            abi::CONTINUE
        }
        Ok(Verdict::Fallback) => abi::CONTINUE,
        Ok(Verdict::Denied) => abi::STOP_ITERATION,
        Err(_) => {
            envoy::log(abi::LOG_ERROR, "portcullis: a check panicked; answered 503");
            // Nothing if the panic came after the stream was answered.
            stream.send_response(503, &[], "");
            abi::STOP_ITERATION
        }
    }
}

/// Adds what the allow put in `response` (e.g. `RateLimit` headers).
///
/// # Safety
/// As for the request-headers hook.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: abi::FilterEnvoyPtr,
    filter: *mut c_void,
    _end_of_stream: bool,
) -> abi::FilterStatus {
    // SAFETY: the caller's contract.
    let (mut stream, filter) = unsafe { (Stream::new(envoy), filter.cast::<Filter>().as_mut()) };
    if let Some(filter) = filter {
        guarded("adding response headers", (), || {
            for (name, value) in filter.response.drain(..) {
                stream.set_response_header(&name, &value);
            }
        });
    }
    abi::CONTINUE
}

// The hooks Envoy requires but this filter has nothing to do in: each lets the
// stream go on (status 0 is `Continue` in every `*_status` enum). Their
// signatures are the ABI's, though no argument is read.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _end_of_stream: bool,
) -> abi::FilterStatus {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
) -> abi::FilterStatus {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _end_of_stream: bool,
) -> abi::FilterStatus {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
) -> abi::FilterStatus {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
) {
}

// Callouts, streams and scheduled events: this module starts none, so Envoy
// never calls these; it still requires them when it loads the filter config.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _callout_id: u64,
    _result: abi::CalloutResult,
    _headers: *const abi::EnvoyHttpHeader,
    _headers_size: usize,
    _body_chunks: *const abi::EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _headers: *const abi::EnvoyHttpHeader,
    _headers_size: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _data: *const abi::EnvoyBuffer,
    _data_count: usize,
    _end_of_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _trailers: *const abi::EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _stream_id: u64,
    _reason: abi::StreamResetReason,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: abi::FilterEnvoyPtr,
    _filter: *mut c_void,
) {
}
