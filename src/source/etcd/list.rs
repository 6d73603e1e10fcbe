//! Paged, revision-pinned range reads of a prefix.

use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{GetOptions, GetResponse, KeyValue};

use super::EtcdSource;
use super::error::{Operation, describe, is_too_large};
use crate::metrics::Metrics;
use crate::source::{ContinueToken, Incarnation, ListRequest, Object, Page, Revision, SourceError};

/// The key range `[start, end)` of a prefix, computed once.
///
/// etcd-client's `with_prefix` derives the range end from the key of each request, which is
/// wrong for every page after the first, whose key is the continue token. Every request of
/// this source passes `end` explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeyRange {
    pub(super) start: Vec<u8>,
    pub(super) end: Vec<u8>,
}

impl KeyRange {
    /// Returns the range of every key that starts with `prefix`. The empty prefix yields
    /// `["\0", "\0")`, which etcd reads as every key.
    pub(super) fn for_prefix(prefix: &str) -> KeyRange {
        let start = prefix.as_bytes().to_vec();
        if start.is_empty() {
            return KeyRange {
                start: vec![0],
                end: vec![0],
            };
        }
        KeyRange {
            end: prefix_end(&start),
            start,
        }
    }

    /// Returns whether `key` is inside the range.
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        let below_end = self.end == [0] || key < self.end.as_slice();
        key >= self.start.as_slice() && below_end
    }
}

/// Returns the smallest key greater than every key that starts with `prefix`: the prefix with
/// its last byte below 0xFF incremented and the bytes after it dropped, or `"\0"` (no end) when
/// every byte is 0xFF.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|byte| *byte < 0xFF) {
        Some(last) => {
            let mut end = prefix[..=last].to_vec();
            end[last] += 1;
            end
        }
        None => vec![0],
    }
}

/// Returns the first key after `key` in etcd's byte order: `key` followed by a zero byte.
fn key_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Converts one key-value pair, or returns its raw key when the key is not UTF-8.
pub(super) fn object_from_kv(kv: KeyValue) -> Result<Object<Bytes>, Vec<u8>> {
    let revision = kv.mod_revision();
    let incarnation = Incarnation::CreateRevision(kv.create_revision());
    let (key, value) = kv.into_key_value();
    let key = String::from_utf8(key).map_err(|e| e.into_bytes())?;
    Ok(Object {
        key: Arc::from(key),
        revision,
        incarnation,
        value: Bytes::from(value),
    })
}

/// Counts keys that are not UTF-8 and logs them once per page or watch response, naming the
/// first, so a prefix full of binary keys does not log a line per key.
#[derive(Default)]
pub(super) struct SkippedKeys {
    count: u64,
    first: Option<Vec<u8>>,
}

impl SkippedKeys {
    pub(super) fn add(&mut self, key: Vec<u8>) {
        self.count += 1;
        self.first.get_or_insert(key);
    }

    pub(super) fn report(self, source_name: &str, metrics: &Metrics, revision: i64) {
        let Some(first) = self.first else {
            return;
        };
        for _ in 0..self.count {
            metrics.decode_error(source_name);
        }
        tracing::warn!(
            source = source_name,
            revision,
            skipped = self.count,
            first_key = %first.escape_ascii(),
            "skipped keys that are not valid UTF-8; cache keys must be UTF-8"
        );
    }
}

/// The failure of a range read.
enum ReadFailure {
    /// The response exceeded `max_response_bytes`; a smaller page may fit.
    TooLarge(etcd_client::Error),
    /// Any other failure, already classified.
    Failed(SourceError),
}

impl EtcdSource {
    /// Reads one page. See [`Source::list_page`](crate::source::Source::list_page).
    ///
    /// A page whose response exceeds `max_response_bytes` is read again with half the limit,
    /// pinned at one revision, until it fits. When a single key's value alone exceeds it, the
    /// key is skipped: see [`EtcdSource::skip_oversized`].
    pub(super) async fn read_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        let start = match request.continue_from {
            Some(ContinueToken(key)) => {
                self.check_continue(&key, request.revision)?;
                key
            }
            None => self.range.start.clone(),
        };
        let mut limit = match request.limit {
            0 => self.config.page_size,
            limit => limit.min(self.config.page_size),
        };
        let mut revision = request.revision;

        loop {
            let options = GetOptions::new()
                .with_range(self.range.end.clone())
                .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
            let response = match self.get(&start, options, revision).await {
                Ok(response) => response,
                Err(ReadFailure::Failed(error)) => return Err(error),
                Err(ReadFailure::TooLarge(error)) => {
                    // Every smaller read must see the same snapshot as the failed one would.
                    let pinned = match revision {
                        Some(pinned) => pinned,
                        None => self.current_revision(&start).await?,
                    };
                    revision = Some(pinned);
                    if limit > 1 {
                        limit /= 2;
                        tracing::debug!(
                            source = %self.name,
                            revision = pinned,
                            limit,
                            "a list page exceeded max_response_bytes; reading a smaller page"
                        );
                        continue;
                    }
                    return self.skip_oversized(&start, pinned, &error).await;
                }
            };
            return self.page_from(response, revision);
        }
    }

    /// Sends one range read from `start` to the end of the prefix, at `revision` if given.
    async fn get(
        &self,
        start: &[u8],
        options: GetOptions,
        revision: Option<Revision>,
    ) -> Result<GetResponse, ReadFailure> {
        let operation = Operation::List { revision };
        let options = match revision {
            Some(revision) => options.with_revision(revision),
            None => options,
        };
        let mut kv = self
            .clients()
            .await
            .map_err(ReadFailure::Failed)?
            .kv
            .clone();
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, kv.get(start.to_vec(), Some(options))).await {
            Err(_) => Err(ReadFailure::Failed(
                self.errors.timed_out(operation, timeout),
            )),
            Ok(Err(error)) if is_too_large(&error) => Err(ReadFailure::TooLarge(error)),
            Ok(Err(error)) => {
                let error = self.errors.classify(operation, error);
                Err(ReadFailure::Failed(self.diagnose(error).await))
            }
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Returns the current revision, read with a one-key, keys-only request.
    async fn current_revision(&self, start: &[u8]) -> Result<Revision, SourceError> {
        let response = self.keys_only_first(start, None).await?;
        match response.header().map(|header| header.revision()) {
            Some(revision) if revision > 0 => Ok(revision),
            _ => Err(self.missing_revision(Operation::List { revision: None })),
        }
    }

    /// Reads the first key from `start` without its value.
    async fn keys_only_first(
        &self,
        start: &[u8],
        revision: Option<Revision>,
    ) -> Result<GetResponse, SourceError> {
        let options = GetOptions::new()
            .with_range(self.range.end.clone())
            .with_limit(1)
            .with_keys_only();
        match self.get(start, options, revision).await {
            Ok(response) => Ok(response),
            Err(ReadFailure::Failed(error)) => Err(error),
            // A keys-only response of one key is far below any sensible limit.
            Err(ReadFailure::TooLarge(error)) => {
                Err(self.errors.classify(Operation::List { revision }, error))
            }
        }
    }

    /// Skips the first key from `start`, whose value alone exceeds `max_response_bytes` at
    /// `revision`, and returns an empty page that continues after it.
    ///
    /// The key is logged at warn level and counted in the `decode_errors` metric. It is absent
    /// from the list, so a relist removes it from the cache.
    async fn skip_oversized(
        &self,
        start: &[u8],
        revision: Revision,
        error: &etcd_client::Error,
    ) -> Result<Page<Bytes>, SourceError> {
        let mut response = self.keys_only_first(start, Some(revision)).await?;
        let more = response.more();
        let Some(kv) = response.take_kvs().into_iter().next() else {
            return Err(SourceError::Transient {
                source_name: self.name.clone(),
                detail: format!(
                    "list a page at revision {revision}: a read failed as too large ({error}), \
                     but the keys-only read of the same range found no key"
                ),
                cause: None,
            });
        };

        self.metrics.decode_error(&self.name);
        tracing::warn!(
            source = %self.name,
            key = %kv.key().escape_ascii(),
            revision,
            version = kv.version(),
            max_response_bytes = self.config.max_response_bytes,
            error = %describe(error),
            "skipped a key whose value alone exceeds max_response_bytes; raise \
             max_response_bytes to read it"
        );
        Ok(Page {
            revision,
            objects: Vec::new(),
            next: more.then(|| ContinueToken(key_after(kv.key()))),
        })
    }

    /// Converts a range response into a page. `revision` is the pinned list revision, if any.
    fn page_from(
        &self,
        mut response: GetResponse,
        revision: Option<Revision>,
    ) -> Result<Page<Bytes>, SourceError> {
        // A read pinned at a revision still reports the current store revision in its header,
        // so only an unpinned first page takes its revision from the header.
        let revision = match revision {
            Some(revision) => revision,
            None => response.header().map_or(0, |header| header.revision()),
        };
        if revision <= 0 {
            return Err(self.missing_revision(Operation::List { revision: None }));
        }

        let more = response.more();
        let kvs = response.take_kvs();
        let next = match kvs.last() {
            Some(last) if more => Some(ContinueToken(key_after(last.key()))),
            _ => None,
        };

        let mut objects = Vec::with_capacity(kvs.len());
        let mut skipped = SkippedKeys::default();
        for kv in kvs {
            match object_from_kv(kv) {
                Ok(object) => objects.push(object),
                Err(key) => skipped.add(key),
            }
        }
        skipped.report(&self.name, &self.metrics, revision);

        tracing::debug!(
            source = %self.name,
            revision,
            objects = objects.len(),
            more = next.is_some(),
            "listed a page"
        );
        Ok(Page {
            revision,
            objects,
            next,
        })
    }

    fn missing_revision(&self, operation: Operation) -> SourceError {
        SourceError::Transient {
            source_name: self.name.clone(),
            detail: format!("{operation}: the response has no header revision"),
            cause: None,
        }
    }

    /// Rejects a later-page request that would break the snapshot: a token from another
    /// prefix, or a token without the list revision.
    fn check_continue(&self, key: &[u8], revision: Option<i64>) -> Result<(), SourceError> {
        let detail = if !self.range.contains(key) {
            format!(
                "invalid list request: the continue token {} is outside the prefix",
                key.escape_ascii()
            )
        } else if revision.is_none() {
            "invalid list request: a continue token without the list revision".to_owned()
        } else {
            return Ok(());
        };
        Err(SourceError::Permanent {
            source_name: self.name.clone(),
            detail,
            action: "Pass the revision of the first page and the `next` token of the previous \
                     page of this source"
                .to_owned(),
            cause: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ErrorClass;
    use crate::source::etcd::EtcdConfig;

    /// Returns a source for a port without a listener. Creating a source does not contact the
    /// server, so only requests that reach the network fail.
    async fn unreachable_source() -> EtcdSource {
        EtcdSource::connect(EtcdConfig::new(["http://127.0.0.1:1"], "/app/"))
            .await
            .expect("a lazy connection")
    }

    #[tokio::test]
    async fn foreign_token_rejected() {
        let source = unreachable_source().await;
        let request = ListRequest {
            revision: Some(5),
            continue_from: Some(ContinueToken(b"/apple".to_vec())),
            limit: 10,
        };
        let error = source
            .read_page(request)
            .await
            .expect_err("a foreign token");
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(error.to_string().contains("outside the prefix"), "{error}");
    }

    #[tokio::test]
    async fn token_without_revision_rejected() {
        let source = unreachable_source().await;
        let request = ListRequest {
            revision: None,
            continue_from: Some(ContinueToken(b"/app/a\0".to_vec())),
            limit: 10,
        };
        let error = source
            .read_page(request)
            .await
            .expect_err("no list revision");
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(
            error.to_string().contains("without the list revision"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn unreachable_server_transient() {
        let source = unreachable_source().await;
        let error = source
            .read_page(ListRequest {
                revision: None,
                continue_from: None,
                limit: 10,
            })
            .await
            .expect_err("no listener on port 1");
        assert_eq!(error.class(), ErrorClass::Transient, "{error}");
        assert!(error.to_string().contains("list the first page"), "{error}");
    }

    #[test]
    fn range_of_directory() {
        let range = KeyRange::for_prefix("/app/");
        assert_eq!(range.start, b"/app/");
        assert_eq!(range.end, b"/app0");
    }

    #[test]
    fn range_of_empty_prefix() {
        let range = KeyRange::for_prefix("");
        assert_eq!(range.start, b"\0");
        assert_eq!(range.end, b"\0");
        assert!(range.contains(b"anything"));
    }

    #[test]
    fn prefix_end_skips_ff() {
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn range_contains_boundaries() {
        let range = KeyRange::for_prefix("/app");
        assert!(range.contains(b"/app"));
        assert!(range.contains(b"/apple"));
        assert!(!range.contains(b"/apq"));
        assert!(!range.contains(b"/ap"));

        let range = KeyRange::for_prefix("/app/");
        assert!(range.contains(b"/app/x"));
        assert!(!range.contains(b"/apple"));
    }

    #[test]
    fn continue_token_follows_key() {
        assert_eq!(key_after(b"/app/a"), b"/app/a\0");
        assert!(key_after(b"/app/a").as_slice() < b"/app/a0".as_slice());
    }
}
