//! Fault injection: forbidden verbs, failing requests, expired and hanging watches.

use std::fmt;

/// An API verb, as RBAC and the apiserver's request info name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// Returns the lower-case name, as in `cannot watch resource`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A filter on requests that a fault applies to. A field left unset matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestMatch {
    /// The verb.
    pub verb: Option<Verb>,
    /// The API group, empty for the core group.
    pub group: Option<String>,
    /// The resource (plural), without subresource.
    pub resource: Option<String>,
    /// The namespace; requests without one (cluster scope, all namespaces) never match a set
    /// namespace.
    pub namespace: Option<String>,
    /// The authenticated user name.
    pub user: Option<String>,
}

impl RequestMatch {
    /// Matches every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Restricts the match to one verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// Restricts the match to one resource (plural), in any group.
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_owned());
        self
    }

    /// Restricts the match to one API group.
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// Restricts the match to one namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Restricts the match to one user.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    pub(crate) fn matches(&self, request: &RequestAttributes<'_>) -> bool {
        self.verb.is_none_or(|verb| verb == request.verb)
            && self
                .group
                .as_deref()
                .is_none_or(|group| group == request.group)
            && self
                .resource
                .as_deref()
                .is_none_or(|resource| resource == request.resource)
            && self
                .namespace
                .as_deref()
                .is_none_or(|namespace| Some(namespace) == request.namespace)
            && self.user.as_deref().is_none_or(|user| user == request.user)
    }
}

/// The kind of an injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Respond with this HTTP status and the `Status` body the apiserver sends for it (`500`
    /// InternalError, `503` ServiceUnavailable, `429` TooManyRequests, ...).
    Status(u16),
    /// Close the connection without sending a response.
    CloseConnection,
}

/// The form in which a watch from a resourceVersion older than the history window is
/// rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpiredWatchForm {
    /// HTTP 200, then one `ERROR` event with a `410 Expired` Status, then the end of the
    /// stream: what kube-apiserver's watch cache sends.
    #[default]
    ErrorEvent,
    /// An HTTP `410` response with the `Status` body, before any stream starts.
    HttpStatus,
}

/// Whether the watch history survives [`TestServer::restart`](super::TestServer::restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartHistory {
    /// Watches may resume where they were.
    Keep,
    /// The history is gone and the revision moves on, so a watch that resumes from the last
    /// revision it saw gets `410 Expired`, as after a real apiserver restart.
    Lose,
}

/// The attributes of one request that faults match on.
pub(crate) struct RequestAttributes<'a> {
    pub(crate) verb: Verb,
    pub(crate) group: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) user: &'a str,
}

struct PendingFailure {
    matcher: RequestMatch,
    remaining: usize,
    failure: Failure,
}

/// The decision of the fault rules for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultDecision {
    Proceed,
    Fail(Failure),
    Forbid,
}

/// The fault rules in force.
pub(crate) struct Faults {
    forbidden: Vec<RequestMatch>,
    failures: Vec<PendingFailure>,
    expire_watches: usize,
    pub(crate) streaming_lists: bool,
    pub(crate) expired_watch_form: ExpiredWatchForm,
}

impl Faults {
    pub(crate) fn new(streaming_lists: bool, expired_watch_form: ExpiredWatchForm) -> Self {
        Self {
            forbidden: Vec::new(),
            failures: Vec::new(),
            expire_watches: 0,
            streaming_lists,
            expired_watch_form,
        }
    }

    pub(crate) fn forbid(&mut self, matcher: RequestMatch) {
        self.forbidden.push(matcher);
    }

    pub(crate) fn clear_forbidden(&mut self) {
        self.forbidden.clear();
    }

    pub(crate) fn fail_next(&mut self, count: usize, matcher: RequestMatch, failure: Failure) {
        if count > 0 {
            self.failures.push(PendingFailure {
                matcher,
                remaining: count,
                failure,
            });
        }
    }

    pub(crate) fn expire_next_watches(&mut self, count: usize) {
        self.expire_watches += count;
    }

    /// Takes one pending watch expiry, if any.
    pub(crate) fn take_watch_expiry(&mut self) -> bool {
        if self.expire_watches == 0 {
            return false;
        }
        self.expire_watches -= 1;
        true
    }

    /// Decides the fate of a request, using up one injected failure if one matches.
    pub(crate) fn decide(&mut self, request: &RequestAttributes<'_>) -> FaultDecision {
        if let Some(index) = self
            .failures
            .iter()
            .position(|pending| pending.matcher.matches(request))
        {
            let pending = &mut self.failures[index];
            let failure = pending.failure;
            pending.remaining -= 1;
            if pending.remaining == 0 {
                self.failures.remove(index);
            }
            return FaultDecision::Fail(failure);
        }
        if self.forbidden.iter().any(|rule| rule.matches(request)) {
            return FaultDecision::Forbid;
        }
        FaultDecision::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_request(namespace: Option<&str>) -> RequestAttributes<'_> {
        RequestAttributes {
            verb: Verb::Watch,
            group: "",
            resource: "configmaps",
            namespace,
            user: "alice",
        }
    }

    #[test]
    fn failures_run_out() {
        let mut faults = Faults::new(true, ExpiredWatchForm::ErrorEvent);
        faults.fail_next(
            2,
            RequestMatch::any().verb(Verb::Watch),
            Failure::Status(503),
        );
        let request = watch_request(Some("a"));
        assert_eq!(
            faults.decide(&request),
            FaultDecision::Fail(Failure::Status(503))
        );
        assert_eq!(
            faults.decide(&request),
            FaultDecision::Fail(Failure::Status(503))
        );
        assert_eq!(faults.decide(&request), FaultDecision::Proceed);
    }

    #[test]
    fn forbid_by_namespace() {
        let mut faults = Faults::new(true, ExpiredWatchForm::ErrorEvent);
        faults.forbid(RequestMatch::any().resource("configmaps").namespace("a"));
        assert_eq!(
            faults.decide(&watch_request(Some("a"))),
            FaultDecision::Forbid
        );
        assert_eq!(
            faults.decide(&watch_request(Some("b"))),
            FaultDecision::Proceed
        );
        assert_eq!(faults.decide(&watch_request(None)), FaultDecision::Proceed);
    }
}
