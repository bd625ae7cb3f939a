//! `#[derive(LabelValue)]` for fieldless enums: each variant's label is its
//! name in snake_case, or the string of a `#[label = "…"]` attribute.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, ExprLit, Fields, Lit, Meta};

pub(crate) fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        let keyword = match &input.data {
            Data::Struct(s) => s.struct_token.span(),
            Data::Union(u) => u.union_token.span(),
            Data::Enum(_) => unreachable!(),
        };
        return Err(syn::Error::new(
            keyword,
            "`LabelValue` can only be derived for an enum whose variants have no fields; for other types implement `hyperkit_obs::LabelValue` by hand",
        ));
    };

    let mut errors: Vec<syn::Error> = Vec::new();
    let krate = match crate_path(&input.attrs) {
        Ok(Some(path)) => quote!(#path),
        Ok(None) => quote!(::hyperkit_obs),
        Err(e) => {
            errors.push(e);
            quote!(::hyperkit_obs)
        }
    };
    let mut names: Vec<String> = Vec::new();
    let mut owners: Vec<&syn::Ident> = Vec::new();
    let mut arms_index = Vec::new();
    let mut arms_name = Vec::new();
    for (i, variant) in data.variants.iter().enumerate() {
        if !matches!(variant.fields, Fields::Unit) {
            errors.push(syn::Error::new(
                variant.fields.span(),
                format!(
                    "variant `{}` has fields, but a label is one of a fixed set of names: remove the fields (`{}`), or implement `hyperkit_obs::LabelValue` by hand",
                    variant.ident, variant.ident
                ),
            ));
            continue;
        }
        let mut name = snake_case(&variant.ident.to_string());
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("label")) {
            match &attr.meta {
                Meta::NameValue(nv) => match &nv.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => {
                        let v = s.value();
                        if let Some(problem) = crate::check::literal_problem(&v) {
                            errors.push(syn::Error::new(
                                s.span(),
                                format!("this label {problem}: write a short name such as `#[label = \"bsc\"]`"),
                            ));
                        }
                        name = v;
                    }
                    other => errors.push(syn::Error::new(
                        other.span(),
                        "write the label as a string: `#[label = \"bsc\"]`",
                    )),
                },
                _ => errors.push(syn::Error::new(
                    attr.meta.span(),
                    "write the label as `#[label = \"bsc\"]`",
                )),
            }
        }
        if let Some(other) = names.iter().position(|n| *n == name) {
            errors.push(syn::Error::new(
                variant.ident.span(),
                format!(
                    "`{}` has the label \"{name}\" already taken by `{}`: give one of them another name with `#[label = \"…\"]`",
                    variant.ident, owners[other]
                ),
            ));
        }
        let ident = &variant.ident;
        arms_index.push(quote!(Self::#ident => #i));
        arms_name.push(quote!(Self::#ident => #name));
        names.push(name);
        owners.push(ident);
    }
    let mut errors = errors.into_iter();
    if let Some(mut first) = errors.next() {
        for e in errors {
            first.combine(e);
        }
        return Err(first);
    }

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics #krate::LabelValue for #ident #ty_generics #where_clause {
            const VALUES: ::core::option::Option<&'static [&'static str]> =
                ::core::option::Option::Some(&[#(#names),*]);

            #[inline]
            fn index(&self) -> usize {
                match *self { #(#arms_index,)* }
            }

            #[inline]
            fn as_label(&self) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed(match *self { #(#arms_name,)* })
            }
        }

        // A domain field of this type takes values of this type.
        #[automatically_derived]
        impl #impl_generics #krate::__private::Fits<#ident #ty_generics> for #ident #ty_generics #where_clause {}
        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl #impl_generics #krate::__private::Fits<#krate::__private::Undecided> for #ident #ty_generics #where_clause {}
    })
}

/// `#[label(crate = path)]` on the enum: where hyperkit-obs is when the
/// dependency is renamed.
fn crate_path(attrs: &[syn::Attribute]) -> syn::Result<Option<syn::Path>> {
    let mut found = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("label")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                found = Some(meta.value()?.parse::<syn::Path>()?);
                Ok(())
            } else {
                Err(meta.error(
                    "on the enum, `#[label(...)]` takes only `crate = path` (the name of hyperkit-obs in your Cargo.toml); a variant's label is `#[label = \"…\"]`",
                ))
            }
        })?;
    }
    Ok(found)
}

/// `BinanceSmartChain` → `binance_smart_chain`, `HTTPServer` → `http_server`.
pub(crate) fn snake_case(ident: &str) -> String {
    let ident = ident.strip_prefix("r#").unwrap_or(ident);
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn variant_names_become_snake_case() {
        assert_eq!(snake_case("Ethereum"), "ethereum");
        assert_eq!(snake_case("BinanceSmartChain"), "binance_smart_chain");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("Layer2Rollup"), "layer2_rollup");
        assert_eq!(snake_case("Gpt4o"), "gpt4o");
    }
}
