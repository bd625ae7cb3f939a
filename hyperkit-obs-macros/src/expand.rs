//! Code generation. The function keeps its attributes, visibility and
//! signature token for token; only the body is wrapped, and the original body
//! stays intact in a block of its own: a `move` closure (sync) or `async move`
//! block (async), so `return` and `?` behave as before. Every name the
//! wrapper adds is hygienic (`Span::mixed_site`) and every path is absolute.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, ItemFn, PathArguments, ReturnType, Type, TypeParamBound, visit::Visit};

use crate::check::{Checked, Source, SuccessLevel};
use crate::kind::Kind;

/// What the function returns, as far as tracking cares.
enum Shape {
    /// `async fn`.
    Async,
    /// `-> impl Future<Output = ..>`: the returned future is tracked.
    ImplFuture,
    /// `-> Pin<Box<dyn Future<Output = ..>>>` or a `BoxFuture` alias (what
    /// `#[async_trait]` leaves behind): the returned future is tracked, boxed.
    BoxedFuture,
    /// A `#[track_model]` function returning a stream (`-> impl Stream`,
    /// `-> Pin<Box<dyn Stream>>`, `-> BoxStream`, or a type alias with the
    /// `stream` option): the call lasts until the stream ends.
    Stream(StreamTy),
    /// A `#[track_model]` `async fn` returning a stream, or `Result<stream,
    /// E>`: the call starts at the first poll and lasts until the stream
    /// ends (or ends with the `Err`).
    AsyncStream { stream: StreamTy, result: bool },
    /// Anything else: the call itself is tracked.
    Sync,
}

/// A returned stream, as written.
struct StreamTy {
    /// A boxed trait object (`Pin<Box<dyn Stream>>`, `BoxStream`): the
    /// tracked stream is boxed again so the type stays the user's.
    boxed: bool,
    /// The item type, when written and free of `impl Trait`: where a type
    /// without `ModelChunk` is reported.
    item: Option<Type>,
}

pub(crate) fn expand(kind: Kind, checked: Checked, item: ItemFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let krate = match &checked.krate {
        Some(path) => quote!(#path),
        None => quote!(::hyperkit_obs),
    };
    let private = quote!(#krate::__private);
    let fn_name = sig.ident.to_string();

    let prepared = hyg("__hk_prepared");
    let call = hyg("__hk_call");
    let out = hyg("__hk_out");
    let log = hyg("__hk_log");
    let site = hyg("__HK_SITE");

    // Label values: each evaluated once and type-checked where the user
    // wrote it. `let v = &(expr);` keeps a temporary alive for the block.
    // A built-in domain's value must be a `LabelValue`; a user domain's must
    // fit its field's type (`Fits`), checked as the label struct is filled.
    let user_domain = kind == Kind::Domain;
    let mut bindings = Vec::new();
    let mut label_fields = Vec::new();
    let mut span_fields = Vec::new();
    // A model call's provider goes to the runtime beside its labels.
    let mut provider = None;
    for (i, label) in checked.labels.iter().chain(&checked.extra).enumerate() {
        let var = hyg(&format!("__hk_label{i}"));
        let (span, value) = match &label.source {
            Source::Param(ident) => (ident.span(), quote!(&#ident)),
            Source::Literal(lit) => (lit.span(), quote!(&#private::Literal(#lit))),
            Source::Expr(expr) => (expr.span(), quote!(&(#expr))),
        };
        // Same hygiene as `var`, but located at the user's value, so a type
        // that does not fit is reported there.
        let at_value = syn::Ident::new(&var.to_string(), Span::mixed_site().located_at(span));
        let field = format_ident!("{}", label.name, span = label.ident.span());
        let is_label = i < checked.labels.len();
        if user_domain && is_label {
            // The value is checked where it fills its field, so the field's
            // type is known there: "a label of type `String` cannot take a
            // value of type `u32`", at the value.
            bindings.push(quote_spanned! {span=> let #var = #value; });
            // Every token of the call at the value, so an error about the
            // call (a literal for a field that takes none) points there too.
            let private_here = respan(private.clone(), span);
            let fill = match &label.source {
                Source::Literal(_) => {
                    quote_spanned!(span=> #private_here::literal_field(#at_value))
                }
                _ => quote_spanned!(span=> #private_here::field(#at_value)),
            };
            label_fields.push(quote!(#field: #fill));
            span_fields.push(quote!(#field = &*(&&#private::Wrap(#var)).__hk_label()));
        } else {
            bindings.push(quote_spanned! {span=>
                let #var = #value;
                let #var = #private::label(#at_value);
            });
            // A `str`, which layers record without formatting.
            span_fields.push(quote!(#field = &*#var.sanitized()));
            if kind == Kind::Model && !is_label && label.name == "provider" {
                provider = Some(quote!(.with_provider(&*#var.sanitized())));
            }
            if is_label {
                label_fields.push(quote!(#field: #private::any_field(#var)));
            }
        }
    }

    // The domain: the user's path, or the built-in one of the macro. Its
    // label struct, filled in below, makes the compiler check the labels:
    // a missing field is reported at the domain, a field that does not
    // exist or a value that does not fit at the user's label.
    let (domain, domain_span) = match (&checked.domain, kind.builtin()) {
        (Some(path), _) => (quote!(#path), path.span()),
        (None, Some(name)) => {
            let name = format_ident!("{}", name);
            (quote!(#private::domains::#name), Span::call_site())
        }
        (None, None) => (
            quote!(::core::compile_error!("no domain")),
            Span::call_site(),
        ),
    };
    let labels_ty = syn::Ident::new("__HkLabels", Span::mixed_site().located_at(domain_span));
    let domain_trait = quote_spanned!(domain_span=> #krate::Domain);

    let ok_level = match checked.level {
        SuccessLevel::Trace => quote!(TRACE),
        SuccessLevel::Debug => quote!(DEBUG),
        SuccessLevel::Info => quote!(INFO),
    };

    // A generic function's instances share its site but may give labels of
    // other types: its site checks them.
    let generic = sig.generics.type_params().next().is_some()
        || sig.inputs.iter().any(|input| match input {
            syn::FnArg::Typed(t) => has_impl_trait(&t.ty),
            syn::FnArg::Receiver(_) => false,
        });
    let site_kind = if generic {
        quote!(generic)
    } else {
        quote!(new)
    };

    // The site and the log function are items inside the block that prepares
    // the call, so the user's body can neither see nor collide with them.
    let prepare = quote! {
        let #prepared = {
            static #site: #private::Site<#private::DomainHandles> =
                #private::Site::#site_kind(#fn_name, ::core::module_path!(), #log);
            fn #log(finished: &#private::Finished<'_>) {
                #private::finished_event!(finished, #ok_level, #fn_name);
            }
            type #labels_ty<'a> = <#domain as #domain_trait>::Labels<'a>;
            #[allow(unused_imports)]
            use #private::{DomainLabels as _, NoValueLabel as _, ValueLabel as _};
            #(#bindings)*
            #private::Prepared::new(
                &#site,
                #private::DomainLabels::__resolve(#labels_ty { #(#label_fields),* }, &#site),
                // The same level check `span!` makes first, done here so a
                // call with spans off carries no span at all.
                if #private::tracing::level_enabled!(#private::tracing::Level::INFO) {
                    ::core::option::Option::Some(#private::tracing::span!(
                        target: ::core::module_path!(),
                        #private::tracing::Level::INFO,
                        #fn_name,
                        hyperkit.call = #private::tracing::field::Empty,
                        #(#span_fields),*
                    ))
                } else {
                    ::core::option::Option::None
                },
            )#provider
        };
    };

    let record = match kind {
        Kind::Model => quote! {
            #call.finish_with_usage(
                (&&&#private::Wrap(#out)).__hk_outcome(),
                (&&&#private::Wrap(#out)).__hk_usage(),
            )
        },
        Kind::Build | Kind::Query | Kind::Domain => quote! {
            #call.finish((&&&#private::Wrap(#out)).__hk_outcome())
        },
    };
    let traits = quote! {
        #[allow(unused_imports)]
        use #private::{
            NoUsage as _, ResultDisplayOutcome as _, ResultOutcome as _, ResultUsage as _,
            ValueOutcome as _, ValueUsage as _,
        };
    };

    let shape = if kind == Kind::Model {
        stream_shape(&sig, checked.stream).unwrap_or_else(|| shape(&sig))
    } else {
        shape(&sig)
    };
    let declared = match &sig.output {
        ReturnType::Default => Some(quote!(())),
        ReturnType::Type(_, ty) if !has_impl_trait(ty) => Some(quote!(#ty)),
        ReturnType::Type(..) => None,
    };
    let ret_span = match &sig.output {
        ReturnType::Default => sig.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };

    let body = match shape {
        Shape::Sync | Shape::Async => {
            let annotation = declared.map(|ty| quote_spanned!(ret_span=> : #ty));
            let run = if matches!(shape, Shape::Async) {
                // As `Call::enter` for a sync body: the call is the thread's
                // current call (a model call's id, if any) on every poll.
                quote! {
                    #private::tracing::Instrument::instrument(
                        #private::InCall::new(#call.current(), async move #block),
                        #call.span(),
                    ).await
                }
            } else {
                quote! {{
                    let _entered = #call.enter();
                    #private::call(move || #block)
                }}
            };
            // A synchronous body finishes on the thread it started on.
            let start = if matches!(shape, Shape::Async) {
                quote!(start)
            } else {
                quote!(start_here)
            };
            quote! {
                #prepare
                let mut #call = #prepared.#start();
                let #out #annotation = #run;
                {
                    #traits
                    let #out = &#out;
                    #record;
                }
                #out
            }
        }
        Shape::Stream(stream) => {
            let annotation = declared.map(|ty| quote_spanned!(ret_span=> : #ty));
            let tracked = track_stream(&private, &traits, &call, &out, &stream, ret_span);
            quote! {
                #prepare
                let mut #call = #prepared.start();
                let #out #annotation = {
                    let _entered = #call.enter();
                    #private::call(move || #block)
                };
                #tracked
            }
        }
        Shape::AsyncStream { stream, result } => {
            // The body's value takes the declared type, so a boxed stream
            // in it (`Ok(Box::pin(s))`) coerces to the declared `dyn`.
            let body = match &declared {
                Some(ty) => {
                    let ret = hyg("__hk_ret");
                    quote_spanned!(ret_span=> async move { let #ret: #ty = #block; #ret })
                }
                None => quote!(async move #block),
            };
            let tracked = track_stream(&private, &traits, &call, &out, &stream, ret_span);
            let finish = if result {
                let stream_var = hyg("__hk_stream");
                let error_var = hyg("__hk_error");
                quote! {
                    if ::core::result::Result::is_err(&#out) {
                        #traits
                        #call.finish_with_usage((&&&#private::Wrap(&#out)).__hk_outcome(), None);
                    }
                    match #out {
                        ::core::result::Result::Ok(#stream_var) => {
                            let #out = #stream_var;
                            ::core::result::Result::Ok(#tracked)
                        }
                        ::core::result::Result::Err(#error_var) => {
                            ::core::result::Result::Err(#error_var)
                        }
                    }
                }
            } else {
                tracked
            };
            quote! {
                #prepare
                let mut #call = #prepared.start();
                let #out = #private::tracing::Instrument::instrument(
                    #private::InCall::new(#call.current(), #body),
                    #call.span(),
                ).await;
                #finish
            }
        }
        Shape::ImplFuture | Shape::BoxedFuture => {
            let output = future_output(&sig.output).filter(|ty| !has_impl_trait(ty));
            let out_ty = output.map(|ty| quote!(: &#ty));
            let tracked = quote! {
                #private::Tracked::new(
                    #prepared,
                    #private::call(move || #block),
                    |#call: &mut #private::Call, #out #out_ty| {
                        #traits
                        #record;
                    },
                )
            };
            let tracked = if matches!(shape, Shape::BoxedFuture) {
                quote!(::std::boxed::Box::pin(#tracked))
            } else {
                tracked
            };
            quote! {
                #prepare
                #tracked
            }
        }
    };

    quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    }
}

/// The stream in `out` tracked as the rest of the running `call`: each item
/// read for its outcome (as a return value is) and its tokens, the tokens
/// read where the user wrote the item type, so an item without
/// `ModelChunk` is reported there.
fn track_stream(
    private: &TokenStream,
    traits: &TokenStream,
    call: &syn::Ident,
    out: &syn::Ident,
    stream: &StreamTy,
    ret_span: Span,
) -> TokenStream {
    let at = stream.item.as_ref().map_or(ret_span, Spanned::span);
    let item = hyg("__hk_item");
    let item_here = syn::Ident::new("__hk_item", Span::mixed_site().located_at(at));
    let private_here = respan(private.clone(), at);
    // With the item type written, it is named in the call, so the missing
    // `ModelChunk` is reported at that type.
    let chunk = match &stream.item {
        Some(ty) => quote_spanned!(at=> #private_here::chunk::<#ty>(#item_here)),
        None => quote_spanned!(at=> #private_here::chunk(#item_here)),
    };
    let tracked = quote! {
        #private::TrackedStream::new(#call, #out, |#item| {
            #traits
            #private::Step::new((&&&#private::Wrap(#item)).__hk_outcome(), #chunk)
        })
    };
    if stream.boxed {
        quote!(::std::boxed::Box::pin(#tracked))
    } else {
        tracked
    }
}

/// How a `#[track_model]` function returns a stream, if it does: from the
/// written return type, or any return type with the `stream` option.
fn stream_shape(sig: &syn::Signature, option: bool) -> Option<Shape> {
    let ty = match &sig.output {
        ReturnType::Type(_, ty) => &**ty,
        ReturnType::Default => return None,
    };
    // With the option, a type the rule does not recognise is a boxed
    // stream under another name (an alias of `Pin<Box<dyn Stream>>`).
    let named = |ty: &Type| {
        stream_ty(ty).or_else(|| {
            option.then_some(StreamTy {
                boxed: true,
                item: None,
            })
        })
    };
    if sig.asyncness.is_none() {
        return named(ty).map(Shape::Stream);
    }
    if let Some(ok) = result_ok(ty)
        && let Some(stream) = stream_ty(ok).or_else(|| {
            option.then_some(StreamTy {
                boxed: true,
                item: None,
            })
        })
    {
        return Some(Shape::AsyncStream {
            stream,
            result: true,
        });
    }
    named(ty).map(|stream| Shape::AsyncStream {
        stream,
        result: false,
    })
}

/// `T` in `Result<T, E>` (or any `…::Result<T, …>` alias).
fn result_ok(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else {
        return None;
    };
    let seg = p.path.segments.last().filter(|s| s.ident == "Result")?;
    single_type_arg(seg)
}

/// The stream `ty` is, by the rule: `impl Stream<Item = X>` (any path
/// ending in `Stream`), `Pin<Box<dyn Stream<Item = X> + …>>`,
/// `BoxStream<'a, X>` or `LocalBoxStream<'a, X>`.
fn stream_ty(ty: &Type) -> Option<StreamTy> {
    let item = |ty: &Type| Some(ty.clone()).filter(|t| !has_impl_trait(t));
    match ty {
        Type::ImplTrait(t) => {
            let seg = bounds_named(&t.bounds, "Stream")?;
            Some(StreamTy {
                boxed: false,
                item: assoc_type(seg, "Item").and_then(item),
            })
        }
        Type::Path(p) => {
            let seg = p.path.segments.last()?;
            if seg.ident == "BoxStream" || seg.ident == "LocalBoxStream" {
                let last = match &seg.arguments {
                    PathArguments::AngleBracketed(a) => a.args.iter().rev().find_map(|a| match a {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    }),
                    _ => None,
                };
                return Some(StreamTy {
                    boxed: true,
                    item: last.and_then(item),
                });
            }
            if seg.ident != "Pin" {
                return None;
            }
            let Type::Path(boxed) = single_type_arg(seg)? else {
                return None;
            };
            let boxed = boxed.path.segments.last().filter(|s| s.ident == "Box")?;
            let Type::TraitObject(obj) = single_type_arg(boxed)? else {
                return None;
            };
            let seg = bounds_named(&obj.bounds, "Stream")?;
            Some(StreamTy {
                boxed: true,
                item: assoc_type(seg, "Item").and_then(item),
            })
        }
        _ => None,
    }
}

/// The bound among `bounds` whose path ends in `name`.
fn bounds_named<'a>(
    bounds: impl IntoIterator<Item = &'a TypeParamBound>,
    name: &str,
) -> Option<&'a syn::PathSegment> {
    bounds.into_iter().find_map(|b| match b {
        TypeParamBound::Trait(t) => t.path.segments.last().filter(|s| s.ident == name),
        _ => None,
    })
}

/// `X` in `Trait<Name = X>`.
fn assoc_type<'a>(seg: &'a syn::PathSegment, name: &str) -> Option<&'a Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(at) if at.ident == name => Some(&at.ty),
            _ => None,
        }),
        _ => None,
    }
}

/// `tokens` with every token placed at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(g) = &tree {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tree = proc_macro2::TokenTree::Group(group);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

fn hyg(name: &str) -> syn::Ident {
    syn::Ident::new(name, Span::mixed_site())
}

fn shape(sig: &syn::Signature) -> Shape {
    if sig.asyncness.is_some() {
        return Shape::Async;
    }
    let ReturnType::Type(_, ty) = &sig.output else {
        return Shape::Sync;
    };
    match &**ty {
        Type::ImplTrait(t) if bounds_future(&t.bounds).is_some() => Shape::ImplFuture,
        Type::Path(p) => match p.path.segments.last() {
            Some(seg) if seg.ident == "BoxFuture" || seg.ident == "LocalBoxFuture" => {
                Shape::BoxedFuture
            }
            Some(seg) if seg.ident == "Pin" && pinned_box_dyn_future(seg).is_some() => {
                Shape::BoxedFuture
            }
            _ => Shape::Sync,
        },
        _ => Shape::Sync,
    }
}

/// The `Future` bound among `bounds`, if any.
fn bounds_future<'a>(
    bounds: impl IntoIterator<Item = &'a TypeParamBound>,
) -> Option<&'a syn::PathSegment> {
    bounds.into_iter().find_map(|b| match b {
        TypeParamBound::Trait(t) => t.path.segments.last().filter(|s| s.ident == "Future"),
        _ => None,
    })
}

/// The `Future` segment of `Pin<Box<dyn Future<..> + ..>>`.
fn pinned_box_dyn_future(pin: &syn::PathSegment) -> Option<&syn::PathSegment> {
    let boxed = single_type_arg(pin)?;
    let Type::Path(boxed) = boxed else {
        return None;
    };
    let boxed = boxed.path.segments.last().filter(|s| s.ident == "Box")?;
    match single_type_arg(boxed)? {
        Type::TraitObject(obj) => bounds_future(&obj.bounds),
        _ => None,
    }
}

fn single_type_arg(seg: &syn::PathSegment) -> Option<&Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().find_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// `R` in `impl Future<Output = R>`, `Pin<Box<dyn Future<Output = R>>>` or
/// `BoxFuture<'a, R>`.
fn future_output(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let future = match &**ty {
        Type::ImplTrait(t) => bounds_future(&t.bounds)?,
        Type::Path(p) => {
            let seg = p.path.segments.last()?;
            if seg.ident == "Pin" {
                pinned_box_dyn_future(seg)?
            } else {
                // BoxFuture<'a, R>: the last type argument.
                return match &seg.arguments {
                    PathArguments::AngleBracketed(a) => a.args.iter().rev().find_map(|a| match a {
                        GenericArgument::Type(t) => Some(t),
                        _ => None,
                    }),
                    _ => None,
                };
            }
        }
        _ => return None,
    };
    match &future.arguments {
        PathArguments::AngleBracketed(a) => a.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(at) if at.ident == "Output" => Some(&at.ty),
            _ => None,
        }),
        _ => None,
    }
}

/// Whether `ty` mentions `impl Trait` or `_`, which cannot annotate a `let`.
fn has_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
        fn visit_type_infer(&mut self, _: &'ast syn::TypeInfer) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    f.visit_type(ty);
    f.0
}
