//! Parsing of the attribute arguments: a comma-separated list of
//! `name`, `name = "literal"` or `name = expression`.

use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::{Expr, Ident, Token};

use crate::kind::Kind;

/// One argument as written.
pub(crate) enum Arg {
    /// `chain`: the label takes the parameter of that name.
    Shorthand(Ident),
    /// `chain = "ethereum"`, `chain = spec.chain`, `level = "debug"`.
    Assign { name: Ident, value: Expr },
}

impl Arg {
    pub(crate) fn name(&self) -> &Ident {
        match self {
            Arg::Shorthand(name) | Arg::Assign { name, .. } => name,
        }
    }

    fn parse(kind: Kind, input: ParseStream<'_>) -> syn::Result<Self> {
        let named = {
            let fork = input.fork();
            Ident::parse_any(&fork).is_ok()
                && (fork.is_empty() || fork.peek(Token![,]) || fork.peek(Token![=]))
        };
        if !named {
            return Err(unnamed(kind, input));
        }
        let name = Ident::parse_any(input)?;
        if input.peek(Token![=]) {
            let eq = input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new(
                    eq.span,
                    format!(
                        "expected a value after `{name} =`, like `{name} = \"value\"` or `{name} = param.field`"
                    ),
                ));
            }
            let value = input.parse()?;
            Ok(Arg::Assign { name, value })
        } else {
            Ok(Arg::Shorthand(name))
        }
    }
}

/// A value written without the name of its label (`"ethereum"`,
/// `spec.chain`): the error shows it with each label name in front.
fn unnamed(kind: Kind, input: ParseStream<'_>) -> syn::Error {
    let Some(example) = kind.required().first().copied() else {
        return input.error(
            "expected a label, like `env` (a parameter of that name) or `region = \"eu-west-1\"`",
        );
    };
    let fallback = input.error(format!(
        "expected a label name, like `{example}` (a parameter) or `{example} = {}`",
        kind.example(example)
    ));
    let Ok(value) = input.parse::<Expr>() else {
        return fallback;
    };
    let text = value.to_token_stream().to_string();
    let fixes: Vec<String> = kind
        .required()
        .iter()
        .map(|label| format!("`{label} = {text}`"))
        .collect();
    syn::Error::new_spanned(
        value,
        format!("this value has no label name: write {}", fixes.join(" or ")),
    )
}

/// All arguments of one attribute: for `#[track]`, the domain first.
pub(crate) struct Args {
    pub(crate) domain: Option<syn::Path>,
    pub(crate) args: Vec<Arg>,
}

const NO_DOMAIN: &str = "`#[track]` needs a domain first: write `#[track(Deploy, env, region = \"eu-west-1\")]`, where `Deploy` is a struct with `#[derive(hyperkit_obs::Domain)]`";

/// The domain path `#[track]` starts with.
fn domain(input: ParseStream<'_>) -> syn::Result<syn::Path> {
    if input.is_empty() {
        return Err(syn::Error::new(proc_macro2::Span::call_site(), NO_DOMAIN));
    }
    let fork = input.fork();
    let path = fork.call(syn::Path::parse_mod_style);
    match path {
        Ok(path) if fork.is_empty() || fork.peek(Token![,]) => {
            input.call(syn::Path::parse_mod_style)?;
            Ok(path)
        }
        Ok(path) if fork.peek(Token![=]) => Err(syn::Error::new_spanned(
            &path,
            format!(
                "`#[track]` needs a domain first, before its labels: write `#[track(Deploy, {} = …)]`, where `Deploy` is a struct with `#[derive(hyperkit_obs::Domain)]`",
                path.to_token_stream()
            ),
        )),
        _ => Err(input.error(NO_DOMAIN)),
    }
}

impl Args {
    /// Parses the arguments of macro `kind`.
    pub(crate) fn parse(kind: Kind, input: ParseStream<'_>) -> syn::Result<Self> {
        let domain = if kind == Kind::Domain {
            let path = domain(input)?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
            Some(path)
        } else {
            None
        };
        let mut args = Vec::new();
        while !input.is_empty() {
            args.push(Arg::parse(kind, input)?);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(Args { domain, args })
    }
}
