//! Decoders turn a source's raw values into the typed values the cache stores.
//!
//! A decoder runs once per changed value, on the reflector's task. A value that fails to decode
//! yields a [`DecodeError`] naming the key. The cache logs and counts it, keeps the key's last
//! good value (if any), and goes on with every other key.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A failure to decode the value of one key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot decode the value of key {key:?} ({size} bytes): {reason}")]
pub struct DecodeError {
    /// The key whose value failed to decode.
    pub key: Arc<str>,
    /// The size of the raw value in bytes.
    pub size: usize,
    /// The reason decoding failed.
    pub reason: DecodeErrorKind,
}

/// The reason a value failed to decode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The value is larger than the decoder's limit.
    #[error("the value exceeds the decoder's limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The text decoder found bytes that are not UTF-8.
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// The length of the valid prefix.
        valid_up_to: usize,
    },
    /// The JSON decoder rejected the value.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
}

/// Turns a raw value of type `V` into a typed value.
pub trait Decoder<V>: Send + Sync + 'static {
    /// The decoded type the cache stores.
    type Output: Send + Sync + 'static;

    /// Decodes the value of `key`.
    ///
    /// # Errors
    /// A [`DecodeError`] naming `key` when the value is invalid or too large.
    fn decode(&self, key: &Arc<str>, value: &V) -> Result<Self::Output, DecodeError>;
}

/// The default maximum size of one value, in bytes: 16 MiB, above etcd's default request limit
/// of 1.5 MiB and Kubernetes' 3 MiB object limit, so it only stops values that were stored by mistake.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

fn check_size(key: &Arc<str>, size: usize, limit: usize) -> Result<(), DecodeError> {
    if size > limit {
        return Err(DecodeError {
            key: key.clone(),
            size,
            reason: DecodeErrorKind::TooLarge { limit },
        });
    }
    Ok(())
}

/// Keeps values as raw bytes.
#[derive(Clone, Debug)]
pub struct RawBytes {
    /// The maximum accepted value size in bytes.
    pub max_bytes: usize,
}

impl Default for RawBytes {
    fn default() -> Self {
        RawBytes {
            max_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl Decoder<Bytes> for RawBytes {
    type Output = Bytes;

    fn decode(&self, key: &Arc<str>, value: &Bytes) -> Result<Bytes, DecodeError> {
        check_size(key, value.len(), self.max_bytes)?;
        Ok(value.clone())
    }
}

/// Decodes values as UTF-8 text.
#[derive(Clone, Debug)]
pub struct Text {
    /// The maximum accepted value size in bytes.
    pub max_bytes: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            max_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl Decoder<Bytes> for Text {
    type Output = String;

    fn decode(&self, key: &Arc<str>, value: &Bytes) -> Result<String, DecodeError> {
        check_size(key, value.len(), self.max_bytes)?;
        match std::str::from_utf8(value) {
            Ok(text) => Ok(text.to_owned()),
            Err(error) => Err(DecodeError {
                key: key.clone(),
                size: value.len(),
                reason: DecodeErrorKind::InvalidUtf8 {
                    valid_up_to: error.valid_up_to(),
                },
            }),
        }
    }
}

/// Decodes values as JSON into `T` with serde.
///
/// It decodes both raw bytes (etcd) and already parsed JSON values (Kubernetes objects).
pub struct Json<T> {
    /// The maximum accepted value size in bytes. For `serde_json::Value` input the size is not
    /// known without serializing, so the limit applies to byte input only.
    pub max_bytes: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Json<T> {
    /// Creates a JSON decoder with the default size limit.
    pub fn new() -> Self {
        Json {
            max_bytes: DEFAULT_MAX_VALUE_BYTES,
            _type: PhantomData,
        }
    }

    /// Sets the maximum accepted value size in bytes.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Json {
            max_bytes: self.max_bytes,
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Json")
            .field("type", &std::any::type_name::<T>())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl<T> Decoder<Bytes> for Json<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Output = T;

    fn decode(&self, key: &Arc<str>, value: &Bytes) -> Result<T, DecodeError> {
        check_size(key, value.len(), self.max_bytes)?;
        serde_json::from_slice(value).map_err(|error| DecodeError {
            key: key.clone(),
            size: value.len(),
            reason: DecodeErrorKind::InvalidJson(error.to_string()),
        })
    }
}

impl<T> Decoder<serde_json::Value> for Json<T>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    type Output = T;

    fn decode(&self, key: &Arc<str>, value: &serde_json::Value) -> Result<T, DecodeError> {
        T::deserialize(value).map_err(|error| DecodeError {
            key: key.clone(),
            size: 0,
            reason: DecodeErrorKind::InvalidJson(error.to_string()),
        })
    }
}

/// Applies a function to every value another decoder returns, before the cache stores it.
///
/// Use it to drop what the controller never reads, as client-go's `TransformFunc` and
/// kube-runtime's `modify` do. The cache keeps one copy of every object, so a field dropped
/// here saves its size once per cached key. [`drop_managed_fields`] is the common case for
/// Kubernetes objects, whose `metadata.managedFields` is often larger than the rest of the
/// object.
///
/// # Example
///
/// ```
/// use informer::decode::{Json, Transform, drop_managed_fields};
/// use k8s_openapi::api::core::v1::ConfigMap;
///
/// let decoder = Transform::new(Json::<ConfigMap>::new(), drop_managed_fields::<ConfigMap>);
/// # let _ = decoder;
/// ```
#[derive(Clone, Debug)]
pub struct Transform<D, F> {
    decoder: D,
    transform: F,
}

impl<D, F> Transform<D, F> {
    /// Creates a decoder that runs `decoder`, then `transform` on each value it returns.
    pub fn new(decoder: D, transform: F) -> Self {
        Transform { decoder, transform }
    }
}

impl<V, D, F> Decoder<V> for Transform<D, F>
where
    D: Decoder<V>,
    F: Fn(D::Output) -> D::Output + Send + Sync + 'static,
{
    type Output = D::Output;

    fn decode(&self, key: &Arc<str>, value: &V) -> Result<D::Output, DecodeError> {
        self.decoder.decode(key, value).map(&self.transform)
    }
}

/// Returns `object` without `metadata.managedFields`, the server-side apply bookkeeping that
/// controllers rarely read. Pass it to [`Transform::new`].
pub fn drop_managed_fields<K: kube::Resource>(mut object: K) -> K {
    object.meta_mut().managed_fields = None;
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<str> {
        Arc::from("/app/a")
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        let error = Text::default()
            .decode(&key(), &Bytes::from_static(b"ok\xff"))
            .unwrap_err();
        assert!(matches!(
            error.reason,
            DecodeErrorKind::InvalidUtf8 { valid_up_to: 2 }
        ));
        assert_eq!(&*error.key, "/app/a");
    }

    #[test]
    fn json_rejects_invalid_json() {
        let decoder = Json::<serde_json::Value>::new();
        let error = decoder
            .decode(&key(), &Bytes::from_static(b"{not json"))
            .unwrap_err();
        assert!(matches!(error.reason, DecodeErrorKind::InvalidJson(_)));
    }

    #[test]
    fn limit_rejects_large_values() {
        let decoder = RawBytes { max_bytes: 3 };
        let error = decoder
            .decode(&key(), &Bytes::from_static(b"abcd"))
            .unwrap_err();
        assert!(matches!(
            error.reason,
            DecodeErrorKind::TooLarge { limit: 3 }
        ));
        assert_eq!(error.size, 4);
    }

    #[test]
    fn transform_drops_managed_fields() {
        use k8s_openapi::api::core::v1::ConfigMap;

        let decoder = Transform::new(Json::<ConfigMap>::new(), drop_managed_fields::<ConfigMap>);
        let value = serde_json::json!({
            "metadata": {
                "name": "a",
                "managedFields": [{ "manager": "helm", "operation": "Update" }],
            },
            "data": { "k": "v" },
        });
        let object = decoder.decode(&key(), &value).unwrap();
        assert_eq!(object.metadata.name.as_deref(), Some("a"));
        assert!(object.metadata.managed_fields.is_none());
        assert_eq!(object.data.unwrap()["k"], "v");
    }

    #[test]
    fn transform_keeps_decode_errors() {
        let decoder = Transform::new(Json::<u32>::new(), |value: u32| value + 1);
        let error = decoder
            .decode(&key(), &Bytes::from_static(b"\"x\""))
            .unwrap_err();
        assert!(matches!(error.reason, DecodeErrorKind::InvalidJson(_)));
        let value = decoder.decode(&key(), &Bytes::from_static(b"41")).unwrap();
        assert_eq!(value, 42);
    }
}
