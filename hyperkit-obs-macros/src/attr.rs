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
    let example = kind.required()[0];
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

/// All arguments of one attribute.
pub(crate) struct Args(pub(crate) Vec<Arg>);

impl Args {
    /// Parses the arguments of macro `kind`.
    pub(crate) fn parse(kind: Kind, input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Vec::new();
        while !input.is_empty() {
            args.push(Arg::parse(kind, input)?);
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(Args(args))
    }
}
