//! The part of Envoy's dynamic-module ABI this module uses, written by hand from
//! Envoy's `source/extensions/dynamic_modules/abi/abi.h` (the 1.40 header): the
//! few types and the callbacks Envoy exports. No bindgen: a dozen declarations,
//! and the header is not shipped with the PyPI Envoy build.
//!
//! Every `envoy_dynamic_module_type_*_buffer` struct is `{ptr, length}`, passed by
//! value: on x86-64 and aarch64 that is the same as passing the two words
//! separately, which is how older revisions of the header spelled the same calls.
//!
//! Envoy resolves the hooks the module exports (`envoy_dynamic_module_on_*`, in
//! `lib.rs`) with `dlsym` when it loads the filter config; these callbacks are
//! resolved by the dynamic linker against the `envoy` executable itself.

use std::ffi::c_void;

/// A view of bytes owned by the module, valid for the duration of the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }

    /// No bytes. Envoy treats any value of length 0 alike: `set_header` with it
    /// removes the header, `add_header` does nothing (an empty header value
    /// cannot be sent upstream from a module, docs/in-proxy.md).
    pub const NONE: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// A view of bytes owned by Envoy: header bytes are valid until the hook returns
/// or a header of the same map is set, added or removed, whichever comes first.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl EnvoyBuffer {
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes; empty for a null pointer.
    ///
    /// # Safety
    /// Envoy filled this buffer during the current hook, and the returned slice
    /// is not used after that hook returns or after anything that invalidates
    /// the buffer (a header setter, for header bytes): the caller ties `'a` to
    /// a borrow that ends before either.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: Envoy points at `length` readable bytes it keeps valid for
            // `'a` (the caller's contract).
            unsafe { std::slice::from_raw_parts(self.ptr, self.length) }
        }
    }
}

/// One header of a local reply, owned by the module.
#[repr(C)]
pub struct ModuleHttpHeader {
    pub key: ModuleBuffer,
    pub value: ModuleBuffer,
}

/// One header of a header map, owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key: EnvoyBuffer,
    pub value: EnvoyBuffer,
}

/// `envoy_dynamic_module_type_http_header_type`.
pub type HeaderType = u32;
pub const REQUEST_HEADER: HeaderType = 0;
pub const RESPONSE_HEADER: HeaderType = 2;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (and the
/// other `*_status` enums, whose first two values are the same).
pub type FilterStatus = u32;
pub const CONTINUE: FilterStatus = 0;
pub const STOP_ITERATION: FilterStatus = 1;

/// `envoy_dynamic_module_type_attribute_id` values used here.
pub type AttributeId = u32;
/// `source.address`: the downstream peer, `ip:port`.
pub const ATTRIBUTE_SOURCE_ADDRESS: AttributeId = 24;
/// `connection.tls_version`: set only on a TLS connection.
pub const ATTRIBUTE_CONNECTION_TLS_VERSION: AttributeId = 31;

/// `envoy_dynamic_module_type_log_level` (spdlog's levels).
pub type LogLevel = u32;
pub const LOG_TRACE: LogLevel = 0;
pub const LOG_DEBUG: LogLevel = 1;
pub const LOG_INFO: LogLevel = 2;
pub const LOG_WARN: LogLevel = 3;
pub const LOG_ERROR: LogLevel = 4;

/// `envoy_dynamic_module_type_metadata_source`: where metadata is read.
pub type MetadataSource = u32;
/// The stream's dynamic metadata (what filters set).
pub const METADATA_DYNAMIC: MetadataSource = 0;

/// `envoy_dynamic_module_type_http_callout_result`.
pub type CalloutResult = u32;
/// `envoy_dynamic_module_type_http_stream_reset_reason`.
pub type StreamResetReason = u32;

/// `envoy_dynamic_module_type_http_filter_envoy_ptr`: Envoy's filter object.
pub type FilterEnvoyPtr = *mut c_void;

extern "C" {
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
    ) -> usize;

    /// Fills `result` (room for `get_headers_size` headers).
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        result: *mut EnvoyHttpHeader,
    ) -> bool;

    /// Replaces every value of `key` with `value`; a `value` of length 0 removes
    /// `key`. Invalidates every header buffer Envoy handed out before.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Appends `key: value`, leaving any value `key` already has; a `value` of
    /// length 0 adds nothing. Invalidates every header buffer handed out before.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// A local reply; the filter chain stops (the hook then returns StopIteration).
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *const ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoyPtr,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );

    /// A string value of the stream's metadata; `result` points into Envoy's
    /// metadata, valid until the metadata is changed or the hook returns.
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: FilterEnvoyPtr,
        source: MetadataSource,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute: AttributeId,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Whether Envoy's `dynamic_modules` logger writes `level` now (it can be
    /// changed at run time through the admin `/logging` endpoint).
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);
}
