//! `#[derive(Domain)]`: a struct whose fields are labels becomes a tracked
//! domain. The derive checks every name Prometheus will see and emits, in
//! an anonymous `const` block (so nothing it adds can collide with the
//! user's names): the domain's spec and metrics statics, a hidden struct of
//! one `Field` per label (which `#[track]` fills in, so the compiler checks
//! its labels), and the `Domain` impl.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, ExprLit, Fields, Lit, LitStr};

use crate::derive::snake_case;

/// Prometheus' default buckets, the domain's when it names none (the
/// runtime's `DEFAULT_BUCKETS`).
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Most buckets a domain's histogram may have.
const MAX_BUCKETS: usize = 64;

/// Field names a domain cannot have: the counter's own label, the
/// histogram's, and `#[track]`'s option.
const RESERVED: &[(&str, &str)] = &[
    (
        "status",
        "`status` is the label the calls counter adds (success, failure, panic, cancelled)",
    ),
    ("le", "`le` is the label Prometheus gives histogram buckets"),
    ("level", "`level` is an option of `#[track]`"),
];

#[derive(Default)]
struct Options {
    krate: Option<syn::Path>,
    prefix: Option<LitStr>,
    name: Option<LitStr>,
    buckets: Option<(Vec<f64>, Span)>,
    in_flight: Option<bool>,
    counter: Option<LitStr>,
    histogram: Option<LitStr>,
    gauge: Option<LitStr>,
    calls_help: Option<LitStr>,
    duration_help: Option<LitStr>,
    in_flight_help: Option<LitStr>,
    status_last: bool,
    model: bool,
}

const OPTIONS_HINT: &str = "`#[domain(…)]` takes `prefix`, `name`, `buckets`, `in_flight`, `counter`, `histogram`, `gauge`, `calls_help`, `duration_help`, `in_flight_help`, `status` and `crate`";

fn options(input: &DeriveInput, errors: &mut Vec<syn::Error>) -> Options {
    let mut o = Options::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("domain")) {
        let result = attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let string = |meta: &syn::meta::ParseNestedMeta<'_>| -> syn::Result<LitStr> {
                meta.value()?.parse::<LitStr>().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        format!("write `{key}` as a string, like `{key} = \"…\"`"),
                    )
                })
            };
            match key.as_str() {
                "crate" => o.krate = Some(meta.value()?.parse()?),
                "prefix" => o.prefix = Some(string(&meta)?),
                "name" => o.name = Some(string(&meta)?),
                "counter" => o.counter = Some(string(&meta)?),
                "histogram" => o.histogram = Some(string(&meta)?),
                "gauge" => o.gauge = Some(string(&meta)?),
                "calls_help" => o.calls_help = Some(string(&meta)?),
                "duration_help" => o.duration_help = Some(string(&meta)?),
                "in_flight_help" => o.in_flight_help = Some(string(&meta)?),
                "in_flight" => {
                    let value: syn::LitBool = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "write `in_flight = false` (or `true`)")
                    })?;
                    o.in_flight = Some(value.value);
                }
                "status" => {
                    let value = string(&meta)?;
                    o.status_last = match value.value().as_str() {
                        "first" => false,
                        "last" => true,
                        other => {
                            return Err(syn::Error::new(
                                value.span(),
                                format!(
                                    "`status = \"{other}\"`: the status label goes `\"first\"` (the default) or `\"last\"` among the counter's labels"
                                ),
                            ));
                        }
                    };
                }
                "buckets" => o.buckets = Some(buckets(meta.value()?.parse()?)?),
                // The built-in model domain: tokens, acceptance, call ids.
                "__model" => o.model = true,
                _ => return Err(meta.error(format!("unknown option `{key}`: {OPTIONS_HINT}"))),
            }
            Ok(())
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    o
}

/// The bucket list: number literals, finite, positive, increasing.
fn buckets(expr: Expr) -> syn::Result<(Vec<f64>, Span)> {
    let span = expr.span();
    let Expr::Array(array) = &expr else {
        return Err(syn::Error::new(
            span,
            "write the buckets as a list of upper bounds in seconds, like `buckets = [0.1, 1.0, 10.0]`",
        ));
    };
    if array.elems.is_empty() {
        return Err(syn::Error::new(
            span,
            "a histogram needs at least one bucket: write `buckets = [0.1, 1.0, 10.0]`, or leave `buckets` out for the default",
        ));
    }
    if array.elems.len() > MAX_BUCKETS {
        return Err(syn::Error::new(
            span,
            format!("at most {MAX_BUCKETS} buckets: each one is a series per label set"),
        ));
    }
    let mut out: Vec<f64> = Vec::with_capacity(array.elems.len());
    for elem in &array.elems {
        let value = match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Float(f), ..
            }) => f.base10_parse::<f64>()?,
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => i.base10_parse::<u32>().map(f64::from)?,
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "a bucket is a number of seconds, like `0.5` or `30`",
                ));
            }
        };
        if !value.is_finite() || value <= 0.0 {
            return Err(syn::Error::new(
                elem.span(),
                "a bucket's upper bound must be a positive number of seconds",
            ));
        }
        if let Some(prev) = out.last()
            && value <= *prev
        {
            return Err(syn::Error::new(
                elem.span(),
                format!("buckets must increase: {value} comes after {prev}"),
            ));
        }
        out.push(value);
    }
    Ok((out, span))
}

/// What is wrong with a metric name, if anything (Prometheus' rule:
/// `[a-zA-Z_:][a-zA-Z0-9_:]*`; names starting `__` are reserved).
fn metric_name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_' || c == ':') => {
            Some("must start with a letter, `_` or `:`")
        }
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') => {
            Some("may hold only ASCII letters, digits, `_` and `:`")
        }
        _ if name.starts_with("__") => Some("must not start with `__` (reserved by Prometheus)"),
        _ => None,
    }
}

/// Checks a metric name written in `lit` (or derived from the prefix in
/// it), with the error at that string.
fn checked_name(
    name: String,
    at: Option<&LitStr>,
    what: &str,
    errors: &mut Vec<syn::Error>,
) -> String {
    if let Some(problem) = metric_name_problem(&name) {
        let span = at.map_or_else(Span::call_site, LitStr::span);
        errors.push(syn::Error::new(
            span,
            format!(
                "the {what} `{name}` {problem}: Prometheus names are `[a-zA-Z_:][a-zA-Z0-9_:]*`, like `acme_deploy`"
            ),
        ));
    }
    name
}

/// The struct's doc comment, joined into one line.
fn doc(input: &DeriveInput) -> Option<String> {
    let lines: Vec<String> = input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .filter(|l| !l.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join(" "))
}

pub(crate) fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Vec::new();
    let ident = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named.named.iter().collect::<Vec<_>>(),
            Fields::Unit => Vec::new(),
            Fields::Unnamed(u) => {
                return Err(syn::Error::new(
                    u.span(),
                    format!(
                        "a domain's labels are named fields: write `struct {ident} {{ env: Env, region: String }}`"
                    ),
                ));
            }
        },
        Data::Enum(e) => {
            return Err(syn::Error::new(
                e.enum_token.span(),
                "`Domain` is derived for a struct whose fields are its labels; for an enum of label values derive `LabelValue`",
            ));
        }
        Data::Union(u) => {
            return Err(syn::Error::new(
                u.union_token.span(),
                "`Domain` is derived for a struct whose fields are its labels",
            ));
        }
    };
    if let Some(param) = input.generics.params.first() {
        errors.push(syn::Error::new(
            param.span(),
            "a domain cannot be generic: its families are registered once, under fixed names",
        ));
    }

    let o = options(&input, &mut errors);
    let krate = match &o.krate {
        Some(path) => quote!(#path),
        None => quote!(::hyperkit_obs),
    };
    let private = quote!(#krate::__private);

    let snake = snake_case(&ident.to_string());
    let prefix = match &o.prefix {
        Some(p) => checked_name(p.value(), Some(p), "prefix", &mut errors),
        None => snake.clone(),
    };
    // A bad prefix is one mistake: the names made from it are not checked.
    let prefix_ok = metric_name_problem(&prefix).is_none();
    let name = o.name.as_ref().map_or(snake, LitStr::value);
    if name.is_empty() || name.chars().any(char::is_control) {
        errors.push(syn::Error::new(
            o.name.as_ref().map_or_else(Span::call_site, LitStr::span),
            "a domain's name is a short word, like `name = \"deploy\"`",
        ));
    }
    let metric = |lit: &Option<LitStr>, suffix: &str, what: &str, errors: &mut Vec<_>| match lit {
        Some(l) => checked_name(l.value(), Some(l), what, errors),
        None if prefix_ok => checked_name(
            format!("{prefix}_{suffix}"),
            o.prefix.as_ref(),
            what,
            errors,
        ),
        None => format!("{prefix}_{suffix}"),
    };
    let calls = metric(&o.counter, "calls_total", "counter name", &mut errors);
    let duration = metric(
        &o.histogram,
        "duration_seconds",
        "histogram name",
        &mut errors,
    );
    let in_flight = o.in_flight.unwrap_or(true);
    if !in_flight && let Some(g) = &o.gauge {
        errors.push(syn::Error::new(
            g.span(),
            "`gauge` names the in-flight gauge, but `in_flight = false` turns it off: remove one of them",
        ));
    }
    let gauge = in_flight.then(|| metric(&o.gauge, "in_flight", "gauge name", &mut errors));
    let names: Vec<&String> = [Some(&calls), Some(&duration), gauge.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "two of the domain's families would be named `{n}`: give them different names"
                ),
            ));
        }
    }

    let mut labels: Vec<String> = Vec::new();
    let mut field_idents = Vec::new();
    let mut field_types = Vec::new();
    for field in &fields {
        let Some(fident) = &field.ident else { continue };
        let label = fident.to_string();
        let label = label.strip_prefix("r#").unwrap_or(&label).to_owned();
        if let Some((_, why)) = RESERVED.iter().find(|(n, _)| *n == label) {
            errors.push(syn::Error::new(
                fident.span(),
                format!("a domain cannot have a field `{label}`: {why}; rename the field"),
            ));
        } else if label.starts_with("__") {
            errors.push(syn::Error::new(
                fident.span(),
                format!("a label name must not start with `__` (reserved by Prometheus): rename `{label}`"),
            ));
        }
        labels.push(label);
        field_idents.push(fident);
        field_types.push(&field.ty);
    }

    let mut errors = errors.into_iter();
    if let Some(mut first) = errors.next() {
        for e in errors {
            first.combine(e);
        }
        return Err(first);
    }

    let doc = doc(&input);
    let help = |given: &Option<LitStr>, what: &str| match (given, &doc) {
        (Some(h), _) => h.value(),
        (None, Some(d)) => format!("{d} ({what})"),
        (None, None) => format!("Tracked `{name}` calls: {what}."),
    };
    let calls_help = help(&o.calls_help, "calls that finished, by status");
    let duration_help = help(&o.duration_help, "duration in seconds");
    let in_flight_spec = match &gauge {
        Some(g) => {
            let h = help(&o.in_flight_help, "calls running");
            quote!(::core::option::Option::Some((#g, #h)))
        }
        None => quote!(::core::option::Option::None),
    };
    let buckets = o
        .buckets
        .as_ref()
        .map_or_else(|| DEFAULT_BUCKETS.to_vec(), |(b, _)| b.clone());
    let buckets = buckets.iter().map(|b| {
        let lit = proc_macro2::Literal::f64_suffixed(*b);
        quote!(#lit)
    });
    let status_last = o.status_last;
    let model = o.model;
    let labels_struct = format_ident!("{}Labels", ident);
    // A domain without labels has a label struct without a lifetime: an
    // unused one would not compile.
    let lifetime = (!field_idents.is_empty()).then(|| quote!(<'a>));
    let construct = match &input.data {
        Data::Struct(s) if matches!(s.fields, Fields::Unit) => quote!(Self),
        _ => quote!(Self { #(#field_idents: ::core::unreachable!(),)* }),
    };

    Ok(quote! {
        const _: () = {
            #[doc(hidden)]
            #[allow(dead_code, missing_docs, unreachable_pub, private_interfaces)]
            pub struct #labels_struct #lifetime {
                #(pub #field_idents: #private::Field<'a, #field_types>,)*
            }

            static SPEC: #private::DomainSpec = #private::DomainSpec::from_parts(#private::SpecParts {
                name: #name,
                labels: &[#(#labels),*],
                calls: #calls,
                calls_help: #calls_help,
                duration: #duration,
                duration_help: #duration_help,
                buckets: &[#(#buckets),*],
                in_flight: #in_flight_spec,
                status_last: #status_last,
                model: #model,
            });

            fn make(values: &[&str]) -> #private::DomainHandles {
                #private::DomainHandles::new(&METRICS, values)
            }

            static METRICS: #private::DomainMetrics = #private::DomainMetrics::new(&SPEC, make);

            #[automatically_derived]
            impl #krate::Domain for #ident {
                type Labels<'a> = #labels_struct #lifetime;

                fn spec() -> &'static #private::DomainSpec {
                    &SPEC
                }

                fn __metrics() -> &'static #private::DomainMetrics {
                    &METRICS
                }

                #[allow(unreachable_code, clippy::diverging_sub_expression)]
                fn __fields(&self) -> Self {
                    let _ = (#(&self.#field_idents,)*);
                    #construct
                }

                #[inline(always)]
                fn __resolve_labels(
                    site: &'static #private::Site<#private::DomainHandles>,
                    labels: Self::Labels<'_>,
                ) -> &'static #private::Entry<#private::DomainHandles> {
                    #private::resolve(site, METRICS.sets(), [#(labels.#field_idents.label()),*])
                }
            }

            #[automatically_derived]
            impl #lifetime #private::DomainLabels for #labels_struct #lifetime {
                #[inline(always)]
                fn __resolve(
                    self,
                    site: &'static #private::Site<#private::DomainHandles>,
                ) -> &'static #private::Entry<#private::DomainHandles> {
                    <#ident as #krate::Domain>::__resolve_labels(site, self)
                }
            }
        };
    })
}
