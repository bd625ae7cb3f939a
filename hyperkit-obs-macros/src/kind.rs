//! Which macro is being expanded, and what it takes: the one piece the
//! parser, the checker and the expander all need.

/// Which macro is being expanded: a built-in domain's, or `#[track]` with
/// a domain of the user's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Build,
    Model,
    Query,
    Domain,
}

impl Kind {
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Kind::Build => "track_build",
            Kind::Model => "track_model",
            Kind::Query => "track_query",
            Kind::Domain => "track",
        }
    }

    /// The built-in domain's type in the runtime's `__private::domains`.
    pub(crate) fn builtin(self) -> Option<&'static str> {
        match self {
            Kind::Build => Some("Build"),
            Kind::Model => Some("Model"),
            Kind::Query => Some("Query"),
            Kind::Domain => None,
        }
    }

    /// Labels that feed the metrics, in the order the runtime takes them
    /// (a user's domain: whatever its fields are, checked by the compiler).
    pub(crate) fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Build => &["chain"],
            Kind::Model => &["model", "task"],
            Kind::Query => &["operation"],
            Kind::Domain => &[],
        }
    }

    /// Labels that only annotate the span (and, for `provider`, the MLflow
    /// run): never a metric label.
    pub(crate) fn optional(self) -> &'static [&'static str] {
        match self {
            Kind::Query => &["db"],
            Kind::Model => &["provider"],
            _ => &[],
        }
    }

    pub(crate) fn example(self, label: &str) -> &'static str {
        match label {
            "chain" => "\"ethereum\"",
            "model" => "\"gpt-4o\"",
            "task" => "\"codegen\"",
            "operation" => "\"select_builds\"",
            "db" => "\"postgres\"",
            "provider" => "\"openai\"",
            _ => "\"value\"",
        }
    }
}
