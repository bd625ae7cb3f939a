//! The attribute macros of `hyperkit-obs`. Use them through the runtime crate
//! (`hyperkit_obs::{track_build, track_model, track_query, LabelValue}`); the
//! generated code calls `hyperkit_obs::__private`, so this crate alone is of
//! no use. See the runtime crate's documentation for the behaviour.

mod attr;
mod check;
mod derive;
mod domain;
mod expand;
mod kind;

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser;

use crate::attr::Args;
use crate::kind::Kind;

/// Tracks a build: `#[track_build(chain)]`.
///
/// Feeds `hyperkit_builds_total{status,chain}`,
/// `hyperkit_build_duration_seconds{chain}` and
/// `hyperkit_active_builds{chain}`. `chain` is a parameter name, a literal
/// (`chain = "ethereum"`) or an expression over the parameters (`chain =
/// spec.chain`). Option: `level = "debug"` lowers the success event.
#[proc_macro_attribute]
pub fn track_build(args: TokenStream, item: TokenStream) -> TokenStream {
    track_with(Kind::Build, args, item)
}

/// Tracks an AI model call: `#[track_model(model, task = "codegen")]`.
///
/// Feeds `hyperkit_model_calls_total{model,task,status}`,
/// `hyperkit_model_latency_seconds{model,task}`, and, when the return value
/// (or its `Ok` value) implements `ModelOutput`,
/// `hyperkit_model_tokens_total{model,task,type}` and
/// `hyperkit_model_acceptance_total{model,task,accepted}`;
/// `hyperkit_model_calls_in_flight{model,task}` while a call runs. An
/// optional `provider` (a parameter, literal or expression, like the labels)
/// goes to the span (`gen_ai.provider.name`) and the MLflow run (tag
/// `provider`), never to the metrics.
///
/// **Streams.** A function returning a stream is tracked until the stream
/// ends, not when it is created. The macro recognises a stream from the
/// return type as written:
///
/// - `impl Stream<Item = X>` (any path ending in `Stream`, with any other
///   bounds: `impl futures::Stream<Item = X> + Send + 'a`);
/// - `Pin<Box<dyn Stream<Item = X> + …>>`;
/// - `BoxStream<'a, X>` and `LocalBoxStream<'a, X>` (by their last path
///   segment, so `futures::stream::BoxStream` and aliases of that name);
/// - on an `async fn`, any of these, or `Result<S, E>` (any path ending in
///   `Result`) with `S` one of these: the call starts at the first poll and
///   an `Err` ends it as a failure;
/// - any other return type (or `Ok` type) with the option `stream`:
///   `#[track_model(model, task, stream)]` for an alias of
///   `Pin<Box<dyn Stream<…>>>`, which is boxed again around the tracked
///   stream (a concrete stream type cannot be tracked: its type would
///   change).
///
/// A sync function's call starts when it is called (so a stream dropped
/// before its first poll is `cancelled`). Each item `X` must implement
/// `ModelChunk` (or be `Result<T, E>` with `T: ModelChunk`), which the
/// compiler reports at `X`. The first item records
/// `hyperkit_model_time_to_first_token_seconds{model,task}`; the items'
/// output tokens are summed (the provider's final usage, when an item
/// carries it, wins); the end records `success`, the first `Err` item
/// `failure` (the stream's later items pass through untouched), a drop
/// before the end `cancelled`.
#[proc_macro_attribute]
pub fn track_model(args: TokenStream, item: TokenStream) -> TokenStream {
    track_with(Kind::Model, args, item)
}

/// Tracks a database query: `#[track_query(operation = "select_builds")]`.
///
/// Feeds `hyperkit_db_queries_total{operation,status}` and
/// `hyperkit_db_query_duration_seconds{operation}`. An optional `db` label
/// is recorded on the span only.
#[proc_macro_attribute]
pub fn track_query(args: TokenStream, item: TokenStream) -> TokenStream {
    track_with(Kind::Query, args, item)
}

/// Tracks a function under a domain of your own:
/// `#[track(Deploy, env, region = spec.region.as_str())]`.
///
/// The first argument is the domain, a struct with `#[derive(Domain)]`; then
/// one label per field of the domain, in any order, each a parameter name,
/// a literal or an expression over the parameters. Options: `level =
/// "debug"` lowers the success event; `crate = path` names hyperkit-obs when
/// the dependency is renamed. The compiler checks the labels against the
/// domain's fields and their types.
#[proc_macro_attribute]
pub fn track(args: TokenStream, item: TokenStream) -> TokenStream {
    track_with(Kind::Domain, args, item)
}

/// Declares a tracked domain: `#[derive(Domain)]` on a struct whose fields
/// are its labels, with `#[domain(prefix = "…", buckets = […], …)]`. See
/// `hyperkit_obs::Domain` for the families and options.
#[proc_macro_derive(Domain, attributes(domain))]
pub fn derive_domain(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    domain::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `hyperkit_obs::LabelValue` for a fieldless enum: each variant's
/// label is its name in snake_case, or `#[label = "…"]`.
#[proc_macro_derive(LabelValue, attributes(label))]
pub fn derive_label_value(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    derive::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn track_with(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let original = proc_macro2::TokenStream::from(item.clone());
    let func = match syn::parse::<syn::ItemFn>(item) {
        Ok(func) => func,
        // A function whose body does not parse: rustc reports the user's own
        // syntax error on the item passed through, and nothing else.
        Err(_) if is_function_with_broken_body(original.clone()) => return original.into(),
        Err(_) => return not_a_function(kind, original),
    };
    let parser = |input: syn::parse::ParseStream<'_>| Args::parse(kind, input);
    let checked = parser
        .parse(args)
        .and_then(|args| check::check(kind, args, &func.sig));
    match checked {
        Ok(checked) => expand::expand(kind, checked, func).into(),
        Err(e) => fn_with_error(func, e),
    }
}

/// The item unchanged plus the error, so the user sees one error, not a
/// cascade from a missing item.
fn with_error(item: proc_macro2::TokenStream, error: syn::Error) -> TokenStream {
    let error = error.into_compile_error();
    quote!(#error #item).into()
}

/// The function unchanged plus the error. Its parameters would have been
/// used by the labels, so "unused variable" warnings would only mislead.
fn fn_with_error(func: syn::ItemFn, error: syn::Error) -> TokenStream {
    with_error(quote!(#[allow(unused_variables)] #func), error)
}

fn not_a_function(kind: Kind, original: proc_macro2::TokenStream) -> TokenStream {
    let attr = kind.attr();
    // A trait method without a body parses as an item of its own kind.
    if let Ok(f) = syn::parse2::<syn::TraitItemFn>(original.clone()) {
        let e = syn::Error::new_spanned(
            &f.sig,
            format!(
                "`#[{attr}]` needs a function body to track; put it on the implementation of `{}`",
                f.sig.ident
            ),
        );
        return with_error(original, e);
    }
    let span = syn::parse2::<syn::Item>(original.clone())
        .ok()
        .and_then(|item| item_keyword(&item))
        .unwrap_or_else(proc_macro2::Span::call_site);
    let e = syn::Error::new(
        span,
        format!(
            "`#[{attr}]` can only be used on a function (free, method, `async` or returning a future)"
        ),
    );
    with_error(original, e)
}

/// Whether `item` is a function (attributes, visibility, signature) whose
/// body is a brace-delimited group that did not parse as statements.
fn is_function_with_broken_body(item: proc_macro2::TokenStream) -> bool {
    let parser = |input: syn::parse::ParseStream<'_>| {
        input.call(syn::Attribute::parse_outer)?;
        input.parse::<syn::Visibility>()?;
        input.parse::<syn::Signature>()?;
        let body;
        syn::braced!(body in input);
        body.parse::<proc_macro2::TokenStream>()?;
        Ok(())
    };
    parser.parse2(item).is_ok()
}

/// The span of the keyword that says what kind of item this is.
fn item_keyword(item: &syn::Item) -> Option<proc_macro2::Span> {
    use syn::spanned::Spanned;
    Some(match item {
        syn::Item::Struct(i) => i.struct_token.span(),
        syn::Item::Enum(i) => i.enum_token.span(),
        syn::Item::Const(i) => i.const_token.span(),
        syn::Item::Static(i) => i.static_token.span(),
        syn::Item::Mod(i) => i.mod_token.span(),
        syn::Item::Impl(i) => i.impl_token.span(),
        syn::Item::Trait(i) => i.trait_token.span(),
        syn::Item::Type(i) => i.type_token.span(),
        syn::Item::Use(i) => i.use_token.span(),
        syn::Item::Union(i) => i.union_token.span(),
        _ => return None,
    })
}
