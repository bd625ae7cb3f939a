//! Domains: what a tracked function is tracked under. A domain is a struct
//! whose fields are its labels; `#[derive(Domain)]` implements [`Domain`]
//! for it, and `#[track(Domain, label = value, …)]` feeds its families. The
//! three built-in macros are domains declared here the same way, with the
//! seed's metric names.
//!
//! The labels a `#[track]` gives are checked by the compiler, not by the
//! macro (which cannot see the struct): the generated code fills in the
//! domain's hidden label struct ([`Domain::Labels`]), so a label that is not
//! a field, a field left out, and a value of the wrong type are ordinary
//! type errors at the user's tokens.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;

use crate::label::{LabelRef, LabelValue, Literal};
use crate::metrics::{DomainHandles, DomainMetrics, DomainSpec, Entry};
use crate::track::site::Site;

/// A tracked domain: a struct whose fields are the labels of its metric
/// families. Implement it with `#[derive(Domain)]`, then track functions
/// under it with `#[track(…)]`:
///
/// ```
/// use hyperkit_obs::{Domain, LabelValue, track};
///
/// #[derive(Clone, Copy, LabelValue)]
/// enum Env { Staging, Production }
///
/// /// Deployments of a service.
/// #[derive(Domain)]
/// #[domain(prefix = "acme_deploy", buckets = [1.0, 5.0, 30.0, 120.0, 600.0])]
/// struct Deploy {
///     env: Env,        // a fixed set: resolved once per call site, indexed
///     region: String,  // open: any string-like value, under the cardinality limit
/// }
///
/// struct Spec { region: String }
///
/// #[track(Deploy, env, region = spec.region.as_str())]
/// fn deploy(env: Env, spec: &Spec) -> Result<u32, String> {
///     Ok(42)
/// }
///
/// #[track(Deploy, env = Env::Staging, region = "eu-west-1")]
/// fn rollback(id: u64) -> Result<(), String> {
///     Err(format!("release {id} is gone"))
/// }
///
/// assert_eq!(deploy(Env::Production, &Spec { region: "us-east-2".into() }), Ok(42));
/// assert!(rollback(7).is_err());
/// let names: Vec<String> = hyperkit_obs::registry().gather().iter().map(|f| f.name().to_owned()).collect();
/// assert!(names.iter().any(|n| n == "acme_deploy_calls_total"));
/// assert_eq!(Deploy::spec().duration_seconds(), "acme_deploy_duration_seconds");
/// ```
///
/// The families, registered in [`registry()`](crate::registry) on first
/// use and shared by every function tracked under the domain:
///
/// | family | labels |
/// |---|---|
/// | `<prefix>_calls_total` | `status` (`success`, `failure`, `panic`, `cancelled`) and the fields |
/// | `<prefix>_duration_seconds` (histogram) | the fields |
/// | `<prefix>_in_flight` (gauge, unless `in_flight = false`) | the fields |
///
/// `#[domain(…)]` options, all optional:
///
/// | option | default |
/// |---|---|
/// | `prefix = "acme_deploy"` | the struct's name in snake case |
/// | `name = "deploy"` | the struct's name in snake case: [`FinishedCall::domain`](crate::calls::FinishedCall::domain) and logs |
/// | `buckets = [0.1, 1.0, 10.0]` | [`DEFAULT_BUCKETS`] (seconds, increasing) |
/// | `in_flight = false` | `true` |
/// | `counter = "…"`, `histogram = "…"`, `gauge = "…"` | `<prefix>_calls_total`, `<prefix>_duration_seconds`, `<prefix>_in_flight` |
/// | `calls_help = "…"`, `duration_help = "…"`, `in_flight_help = "…"` | the struct's doc comment, with what each family counts |
/// | `crate = my_obs` | `hyperkit_obs`, for a crate that renames the dependency |
///
/// A field's type is its label's value type: an enum deriving
/// [`LabelValue`] (the value must be that enum), `String` (any string-like
/// value: `&str`, `String`, `Cow<str>`, a literal), an integer type or
/// `bool` (the value must be of that type). Every name is checked at
/// compile time against Prometheus' naming rules; `status`, `le` and
/// `level` cannot be fields.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tracked domain",
    label = "not a domain",
    note = "declare one with `#[derive(hyperkit_obs::Domain)]` on a struct whose fields are its labels"
)]
pub trait Domain: 'static {
    /// The label struct the tracking macros fill in: one [`Field`] per
    /// field of the domain. Not a public API.
    #[doc(hidden)]
    type Labels<'a>;

    /// The domain's name, labels, metric names and buckets.
    fn spec() -> &'static DomainSpec;

    /// The domain's label sets and families. Not a public API.
    #[doc(hidden)]
    fn __metrics() -> &'static DomainMetrics;

    /// Reads every field and builds the struct, in code that never runs:
    /// a domain struct is never made nor read, and without this the
    /// compiler would warn about it. Not a public API.
    #[doc(hidden)]
    fn __fields(&self) -> Self
    where
        Self: Sized;

    /// The label set of one call. Not a public API.
    #[doc(hidden)]
    fn __resolve_labels(
        site: &'static Site<DomainHandles>,
        labels: Self::Labels<'_>,
    ) -> &'static Entry<DomainHandles>;
}

/// A domain's label struct: resolving a call's labels from it, so the
/// generated code names the domain once (a path that is not a domain is
/// then one error, not one per mention). Not a public API.
#[doc(hidden)]
pub trait DomainLabels {
    /// The label set of one call.
    fn __resolve(self, site: &'static Site<DomainHandles>) -> &'static Entry<DomainHandles>;
}

/// Buckets of a domain's duration histogram when it names none: Prometheus'
/// client libraries' defaults, 5 ms to 10 s.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One label's value as the generated code hands it to a domain, typed by
/// the field it fills. Not a public API.
#[doc(hidden)]
pub struct Field<'a, F: ?Sized> {
    label: LabelRef<'a>,
    field: PhantomData<fn() -> *const F>,
}

impl<F: ?Sized> Clone for Field<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: ?Sized> Copy for Field<'_, F> {}

impl<'a, F: ?Sized> Field<'a, F> {
    /// The value, type-erased.
    #[inline(always)]
    pub fn label(self) -> LabelRef<'a> {
        self.label
    }
}

/// The value of a label whose field has type `F`, checked to fit it.
#[inline(always)]
pub fn field<'a, F: ?Sized, V: Fits<F>>(value: &'a V) -> Field<'a, F> {
    Field {
        label: LabelRef::new(value),
        field: PhantomData,
    }
}

/// The field type of the built-in domains' labels: any [`LabelValue`] (the
/// built-in macros check the value's type themselves).
#[doc(hidden)]
pub enum AnyLabel {}

/// The value of a built-in domain's label, already checked to be a
/// [`LabelValue`].
#[inline(always)]
pub fn any_field(label: LabelRef<'_>) -> Field<'_, AnyLabel> {
    Field {
        label,
        field: PhantomData,
    }
}

/// A value that a domain field of type `F` accepts. Implemented for the
/// string-like types (field `String`), each integer type and `bool` (field
/// of the same type), and by `#[derive(LabelValue)]` for the enum itself.
/// Not a public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a label of type `{F}` cannot take a value of type `{Self}`",
    label = "not a `{F}` label value",
    note = "a `String` label takes `&str`, `String`, `Cow<str>` or a string literal; an integer or `bool` label a value of that type; an enum label a value of that enum"
)]
pub trait Fits<F: ?Sized>: LabelValue {}

#[diagnostic::do_not_recommend]
impl<F: ?Sized, T: Fits<F> + ?Sized> Fits<F> for &T {}
#[diagnostic::do_not_recommend]
impl<F: ?Sized, T: Fits<F> + ?Sized> Fits<F> for &mut T {}

/// A second field type every value type fits, so that the compiler does not
/// settle a value's field type from the value alone (it would, with one
/// candidate, and then report "mismatched types" at the macro instead of
/// "cannot take a value" at the value). No field has this type.
#[doc(hidden)]
pub enum Undecided {}

macro_rules! fits {
    ($field:ty: $($ty:ty),*) => {$(
        impl Fits<$field> for $ty {}
        #[diagnostic::do_not_recommend]
        impl Fits<Undecided> for $ty {}
    )*};
}
fits!(String: str, String, Cow<'_, str>, Box<str>, Arc<str>, Rc<str>, Literal);
fits!(bool: bool);

/// A field type that a string literal in `#[track]` can fill. Not a public
/// API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a label of type `{Self}` cannot take a string literal",
    label = "write a `{Self}` value here",
    note = "a string literal fills a `String` label; an enum label takes the enum's value, like `env = Env::Staging`; an integer or `bool` label a value of that type"
)]
pub trait TakesLiteral {}

impl TakesLiteral for String {}

/// The value of a label written as a string literal.
#[inline(always)]
pub fn literal_field<F: TakesLiteral + ?Sized>(value: &Literal) -> Field<'_, F> {
    Field {
        label: LabelRef::new(value),
        field: PhantomData,
    }
}

macro_rules! integer_fields {
    ($($ty:ty),*) => {$( fits!($ty: $ty); )*};
}
integer_fields!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

/// The built-in domains, declared as a user declares one.
pub mod builtin {
    use super::AnyLabel;

    /// Tracked builds, by chain (`#[track_build]`).
    #[derive(hyperkit_obs_macros::Domain)]
    #[domain(
        crate = crate,
        name = "build",
        counter = "hyperkit_builds_total",
        histogram = "hyperkit_build_duration_seconds",
        gauge = "hyperkit_active_builds",
        calls_help = "Tracked builds that finished, by status (success, failure, panic, cancelled) and chain.",
        duration_help = "Duration of tracked builds in seconds, by chain.",
        in_flight_help = "Tracked builds currently running, by chain.",
        buckets = [10.0, 30.0, 60.0, 90.0, 120.0, 180.0]
    )]
    pub struct Build {
        chain: AnyLabel,
    }

    /// Tracked AI model calls, by model and task (`#[track_model]`).
    #[derive(hyperkit_obs_macros::Domain)]
    #[domain(
        crate = crate,
        name = "model",
        counter = "hyperkit_model_calls_total",
        histogram = "hyperkit_model_latency_seconds",
        // A streamed call stays in flight until its stream ends.
        gauge = "hyperkit_model_calls_in_flight",
        status = "last",
        calls_help = "Tracked model calls that finished, by model, task and status.",
        duration_help = "Latency of tracked model calls in seconds, by model and task.",
        in_flight_help = "Tracked model calls running (a streamed call until its stream ends or is dropped), by model and task.",
        buckets = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0],
        __model
    )]
    pub struct Model {
        model: AnyLabel,
        task: AnyLabel,
    }

    /// Tracked database queries, by operation (`#[track_query]`).
    #[derive(hyperkit_obs_macros::Domain)]
    #[domain(
        crate = crate,
        name = "query",
        counter = "hyperkit_db_queries_total",
        histogram = "hyperkit_db_query_duration_seconds",
        in_flight = false,
        status = "last",
        calls_help = "Tracked database queries that finished, by operation and status.",
        duration_help = "Duration of tracked database queries in seconds, by operation.",
        buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
    )]
    pub struct Query {
        operation: AnyLabel,
    }
}

#[cfg(test)]
mod tests {
    use super::builtin::{Build, Model, Query};
    use super::*;
    use crate::metrics;

    #[test]
    fn the_built_in_domains_keep_the_seed_names_and_buckets() {
        let b = Build::spec();
        assert_eq!(
            (b.name(), b.labels(), b.calls_total()),
            ("build", &["chain"][..], "hyperkit_builds_total")
        );
        assert_eq!(b.duration_seconds(), "hyperkit_build_duration_seconds");
        assert_eq!(b.in_flight(), Some("hyperkit_active_builds"));
        assert_eq!(b.buckets(), metrics::BUILD_DURATION_BUCKETS);
        let m = Model::spec();
        assert_eq!(m.labels(), &["model", "task"]);
        assert_eq!(m.calls_total(), "hyperkit_model_calls_total");
        assert_eq!(m.duration_seconds(), "hyperkit_model_latency_seconds");
        assert_eq!(
            (m.in_flight(), m.buckets()),
            (
                Some("hyperkit_model_calls_in_flight"),
                metrics::MODEL_LATENCY_BUCKETS
            )
        );
        let q = Query::spec();
        assert_eq!(q.calls_total(), "hyperkit_db_queries_total");
        assert_eq!(q.duration_seconds(), "hyperkit_db_query_duration_seconds");
        assert_eq!(
            (q.in_flight(), q.buckets()),
            (None, metrics::QUERY_DURATION_BUCKETS)
        );
    }
}
