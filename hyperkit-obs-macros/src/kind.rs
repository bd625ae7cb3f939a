//! Which macro is being expanded, and what it takes: the one piece the
//! parser, the checker and the expander all need.

/// Which macro is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Build,
    Model,
    Query,
}

impl Kind {
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Kind::Build => "track_build",
            Kind::Model => "track_model",
            Kind::Query => "track_query",
        }
    }

    /// Labels that feed the metrics, in the order the runtime takes them.
    pub(crate) fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Build => &["chain"],
            Kind::Model => &["model", "task"],
            Kind::Query => &["operation"],
        }
    }

    /// Labels that only annotate the span.
    pub(crate) fn optional(self) -> &'static [&'static str] {
        match self {
            Kind::Query => &["db"],
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
            _ => match self {
                Kind::Build | Kind::Model | Kind::Query => "\"value\"",
            },
        }
    }
}
