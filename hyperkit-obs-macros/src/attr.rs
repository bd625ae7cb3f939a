//! Parsing of the attribute arguments: a comma-separated list of
//! `name`, `name = "literal"` or `name = expression`.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Token};

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
}

/// All arguments of one attribute.
pub(crate) struct Args(pub(crate) Vec<Arg>);

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if !input.peek(Ident::peek_any) {
            return Err(input.error(
                "expected a label name, like `chain` (a parameter) or `chain = \"ethereum\"`",
            ));
        }
        let name = Ident::parse_any(input)?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(input.error(format!(
                    "expected a value after `{name} =`, like `{name} = \"value\"` or `{name} = param.field`"
                )));
            }
            let value = input.parse()?;
            Ok(Arg::Assign { name, value })
        } else {
            Ok(Arg::Shorthand(name))
        }
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let args = Punctuated::<Arg, Token![,]>::parse_terminated(input)?;
        Ok(Args(args.into_iter().collect()))
    }
}
