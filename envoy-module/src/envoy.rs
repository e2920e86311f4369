//! Safe wrappers around the Envoy callbacks of [`crate::abi`]: one HTTP stream, as
//! seen from inside one hook, and Envoy's log. Every call into Envoy is here;
//! `lib.rs` holds the only other `unsafe` code, turning the hooks' raw pointers
//! into the module's own objects.

use crate::abi::{self, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, ModuleBuffer};

/// Envoy's side of one HTTP stream, valid while the hook that received it runs.
///
/// Bytes it hands out (headers, attributes, metadata) borrow it shared; every
/// call that changes the stream takes it `&mut`. Envoy's header buffers are valid
/// only until a header is set, added or removed, so the borrow checker refuses
/// to read a header after a change: whatever a change depends on is copied out
/// first.
pub struct Stream {
    envoy: FilterEnvoyPtr,
    /// A local reply was sent: the stream is answered, nothing more may be sent.
    replied: bool,
}

impl Stream {
    /// # Safety
    /// `envoy` is the filter pointer Envoy passed to the hook now running, and the
    /// `Stream` does not outlive that hook.
    pub unsafe fn new(envoy: FilterEnvoyPtr) -> Self {
        Self {
            envoy,
            replied: false,
        }
    }

    /// Every request header, pseudo-headers (`:method`, `:path`, `:authority`)
    /// included, names lower-case as Envoy keeps them, a repeated name once per
    /// value.
    pub fn request_headers(&self) -> Vec<(&[u8], &[u8])> {
        // SAFETY: `self.envoy` is live (constructor contract); Envoy writes at most
        // `get_headers_size` entries. Their bytes stay valid until the hook returns
        // or a header changes; the slices borrow `self` shared, and every change
        // takes `&mut self`, so neither can happen while they are in use.
        unsafe {
            let count = abi::envoy_dynamic_module_callback_http_get_headers_size(
                self.envoy,
                abi::REQUEST_HEADER,
            );
            let mut headers = vec![
                EnvoyHttpHeader {
                    key: EnvoyBuffer::EMPTY,
                    value: EnvoyBuffer::EMPTY,
                };
                count
            ];
            if count == 0
                || !abi::envoy_dynamic_module_callback_http_get_headers(
                    self.envoy,
                    abi::REQUEST_HEADER,
                    headers.as_mut_ptr(),
                )
            {
                return Vec::new();
            }
            headers
                .into_iter()
                .map(|h| (h.key.bytes(), h.value.bytes()))
                .collect()
        }
    }

    /// A string attribute of the stream (Envoy's attribute vocabulary).
    pub fn attribute(&self, attribute: abi::AttributeId) -> Option<&[u8]> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: as in `request_headers`.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.envoy, attribute, &mut value,
            )
            .then(|| value.bytes())
        }
    }

    /// A string of the stream's dynamic metadata, set by a filter before this one.
    pub fn metadata(&self, namespace: &str, key: &str) -> Option<&[u8]> {
        let mut value = EnvoyBuffer::EMPTY;
        // SAFETY: `self.envoy` is live; the value lives in the stream's metadata,
        // which only `set_metadata` (`&mut self`) changes, until the hook returns.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_metadata_string(
                self.envoy,
                abi::METADATA_DYNAMIC,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                &mut value,
            )
            .then(|| value.bytes())
        }
    }

    /// Replaces every value of request header `name` with `value` (an empty
    /// `value` removes it: Envoy's rule).
    pub fn set_request_header(&mut self, name: &str, value: &str) {
        self.set(
            abi::REQUEST_HEADER,
            name,
            ModuleBuffer::of(value.as_bytes()),
        );
    }

    /// Adds request header `name: value`, for a name the request does not have:
    /// cheaper than [`Stream::set_request_header`], which first looks for (and
    /// removes) every value of `name`. An empty `value` adds nothing.
    pub fn add_request_header(&mut self, name: &str, value: &str) {
        // SAFETY: `self.envoy` is live; Envoy copies both buffers before returning.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.envoy,
                abi::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    pub fn remove_request_header(&mut self, name: &str) {
        self.set(abi::REQUEST_HEADER, name, ModuleBuffer::NONE);
    }

    /// Replaces every value of response header `name` (in the response hook).
    pub fn set_response_header(&mut self, name: &str, value: &str) {
        self.set(
            abi::RESPONSE_HEADER,
            name,
            ModuleBuffer::of(value.as_bytes()),
        );
    }

    fn set(&mut self, header_type: abi::HeaderType, name: &str, value: ModuleBuffer) {
        // SAFETY: `self.envoy` is live; Envoy copies both buffers before returning.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                header_type,
                ModuleBuffer::of(name.as_bytes()),
                value,
            );
        }
    }

    /// Answers the client directly; the hook must then return `StopIteration`.
    /// At most once per stream: a second call (after a panic, say) does nothing.
    pub fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
        if std::mem::replace(&mut self.replied, true) {
            return;
        }
        let headers: Vec<abi::ModuleHttpHeader> = headers
            .iter()
            .map(|(name, value)| abi::ModuleHttpHeader {
                key: ModuleBuffer::of(name.as_bytes()),
                value: ModuleBuffer::of(value.as_bytes()),
            })
            .collect();
        // SAFETY: `self.envoy` is live; Envoy copies the headers and body before
        // returning, while `headers` and `body` are still borrowed here.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.envoy,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(b"portcullis"),
            );
        }
    }

    /// Sets string dynamic metadata `namespace.key = value` on the stream, for the
    /// filters after this one (the ext_authz fallback's `filter_enabled_metadata`,
    /// the guard).
    pub fn set_metadata(&mut self, namespace: &str, key: &str, value: &str) {
        // SAFETY: `self.envoy` is live; Envoy copies the three buffers.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.envoy,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }
}

/// Whether Envoy's `dynamic_modules` logger writes `level` now.
pub fn log_enabled(level: abi::LogLevel) -> bool {
    // SAFETY: reads Envoy's logger level; callable from any thread.
    unsafe { abi::envoy_dynamic_module_callback_log_enabled(level) }
}

/// Writes `message` to Envoy's log (its `dynamic_modules` logger).
pub fn log(level: abi::LogLevel, message: &str) {
    // SAFETY: Envoy copies the message before returning; callable from any thread.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}
