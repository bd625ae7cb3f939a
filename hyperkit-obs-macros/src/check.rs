//! Checking the parsed arguments against the macro's labels and the
//! function's parameters. Every problem becomes an error spanned on the token
//! at fault; all of them are reported together.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, Ident, Lit, LitStr, Pat, Signature};

use crate::attr::{Arg, Args};
use crate::kind::Kind;

/// Longest label literal accepted (the runtime's `MAX_LABEL_LEN`).
const MAX_LITERAL_LEN: usize = 128;

const OPTIONS: &[&str] = &["level", "crate"];

/// Where a label's value comes from.
pub(crate) enum Source {
    Param(Ident),
    Literal(LitStr),
    Expr(Expr),
}

/// A label with its value.
pub(crate) struct Label {
    pub(crate) name: String,
    /// Where the user named it (the label's name, or the macro for a
    /// label left to its default).
    pub(crate) ident: Ident,
    pub(crate) source: Source,
}

/// The level of the success event.
#[derive(Clone, Copy)]
pub(crate) enum SuccessLevel {
    Trace,
    Debug,
    Info,
}

/// Checked arguments, ready to expand.
pub(crate) struct Checked {
    /// `#[track]`'s domain.
    pub(crate) domain: Option<syn::Path>,
    /// The labels: a built-in domain's in [`Kind::required`] order, a user
    /// domain's as written.
    pub(crate) labels: Vec<Label>,
    /// Optional labels that were given.
    pub(crate) extra: Vec<Label>,
    pub(crate) level: SuccessLevel,
    /// `crate = path`: where the runtime crate is, for code that renames
    /// the dependency (default `::hyperkit_obs`).
    pub(crate) krate: Option<syn::Path>,
    /// `stream` (`#[track_model]` only): the return type (or its `Ok`
    /// type) is a boxed stream under a name the macro cannot recognise.
    pub(crate) stream: bool,
}

/// Checks `args` of macro `kind` against the signature `sig`.
pub(crate) fn check(kind: Kind, args: Args, sig: &Signature) -> syn::Result<Checked> {
    let params = parameter_names(sig);
    let mut errors: Vec<syn::Error> = Vec::new();
    let mut found: Vec<Label> = Vec::new();
    let mut seen: Vec<Ident> = Vec::new();
    // Labels the user wrote, even with a rejected value or a typo in the
    // name: already reported, so not reported again as missing.
    let mut attempted: Vec<String> = Vec::new();
    let mut level = SuccessLevel::Info;
    let mut krate = None;
    let mut stream = false;

    if let Some(c) = sig.constness {
        errors.push(syn::Error::new(
            c.span(),
            format!("`#[{}]` cannot track a `const fn`: metrics are recorded at run time; remove `const`", kind.attr()),
        ));
    }

    if let Some(domain) = &args.domain
        && let Some(ident) = domain.get_ident()
        && params.contains(ident)
    {
        errors.push(syn::Error::new(
            ident.span(),
            format!(
                "`#[track]` needs a domain first, and `{ident}` is a parameter: write `#[track(Deploy, {ident}, …)]`, where `Deploy` is a struct with `#[derive(hyperkit_obs::Domain)]`"
            ),
        ));
    }

    for arg in args.args {
        let name = arg.name().clone();
        let key = name.to_string();
        if seen.contains(&name) {
            errors.push(syn::Error::new(
                name.span(),
                format!("`{key}` is given twice; remove this one"),
            ));
            continue;
        }
        seen.push(name.clone());

        if key == "stream" && kind == Kind::Model {
            match &arg {
                Arg::Shorthand(_) => stream = true,
                Arg::Assign { value, .. } => errors.push(syn::Error::new(
                    value.span(),
                    "`stream` takes no value: write `stream` to track a return type that is an alias of `Pin<Box<dyn Stream<Item = …>>>`",
                )),
            }
            continue;
        }
        if key == "crate" {
            match parse_crate(&arg) {
                Ok(p) => krate = Some(p),
                Err(e) => errors.push(e),
            }
            continue;
        }
        if OPTIONS.contains(&key.as_str()) {
            match parse_level(&arg) {
                Ok(l) => level = l,
                Err(e) => errors.push(e),
            }
            continue;
        }
        let known = kind
            .required()
            .iter()
            .chain(kind.optional())
            .copied()
            .find(|l| *l == key);
        let label = match known {
            Some(label) => label.to_owned(),
            // A user domain's labels are its fields: the compiler checks them.
            None if kind == Kind::Domain => key.clone(),
            None => {
                attempted.extend(closest(&key, kind.required()).map(str::to_owned));
                errors.push(unknown(kind, &name, &arg));
                continue;
            }
        };
        attempted.push(label.clone());
        let source = match arg {
            Arg::Shorthand(ident) => {
                if params.contains(&ident) {
                    Source::Param(ident)
                } else {
                    errors.push(no_such_parameter(kind, &label, &ident, sig, &params));
                    continue;
                }
            }
            Arg::Assign { value, .. } => match literal(&label, value) {
                Ok(source) => source,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            },
        };
        found.push(Label {
            name: label,
            ident: name,
            source,
        });
    }

    let mut labels = Vec::new();
    for required in kind.required() {
        match found.iter().position(|l| l.name == *required) {
            Some(i) => labels.push(found.remove(i)),
            None if attempted.iter().any(|a| a == required) => {}
            None => errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "`#[{attr}]` needs the label `{required}`: add `{required}` (a parameter of that name), `{required} = {ex}` or `{required} = request.{required}`",
                    attr = kind.attr(),
                    ex = kind.example(required),
                ),
            )),
        }
    }

    let mut errors = errors.into_iter();
    if let Some(mut first) = errors.next() {
        for e in errors {
            first.combine(e);
        }
        return Err(first);
    }
    if kind == Kind::Domain {
        labels = std::mem::take(&mut found);
    }
    Ok(Checked {
        domain: args.domain,
        labels,
        extra: found,
        level,
        krate,
        stream,
    })
}

fn parse_crate(arg: &Arg) -> syn::Result<syn::Path> {
    const HINT: &str = "`crate` names the path of hyperkit-obs when the dependency is renamed: write `crate = my_obs` (the name in your Cargo.toml)";
    match arg {
        Arg::Assign {
            value: Expr::Path(p),
            ..
        } if p.qself.is_none() && p.attrs.is_empty() => Ok(p.path.clone()),
        Arg::Assign { value, .. } => Err(syn::Error::new(value.span(), HINT)),
        Arg::Shorthand(name) => Err(syn::Error::new(name.span(), HINT)),
    }
}

fn parse_level(arg: &Arg) -> syn::Result<SuccessLevel> {
    const HINT: &str = "`level` sets the level of the success event: write `level = \"debug\"` (or \"trace\", \"info\")";
    let Arg::Assign { value, .. } = arg else {
        return Err(syn::Error::new(arg.name().span(), HINT));
    };
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match s.value().as_str() {
            "trace" => Ok(SuccessLevel::Trace),
            "debug" => Ok(SuccessLevel::Debug),
            "info" => Ok(SuccessLevel::Info),
            other => Err(syn::Error::new(
                s.span(),
                format!(
                    "unknown level \"{other}\": write \"trace\", \"debug\" or \"info\" (failures are always logged at ERROR)"
                ),
            )),
        },
        other => Err(syn::Error::new(other.span(), HINT)),
    }
}

/// Classifies a `name = value` label value, rejecting malformed literals.
fn literal(label: &str, value: Expr) -> syn::Result<Source> {
    let lit = match &value {
        Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => lit,
        _ => return Ok(Source::Expr(value)),
    };
    let bad = |what: &str| {
        syn::Error::new(
            lit.span(),
            format!(
                "a label literal must be a non-empty string, not {what}: write `{label} = \"…\"`"
            ),
        )
    };
    match lit {
        Lit::Str(s) => {
            let v = s.value();
            let problem = literal_problem(&v);
            match problem {
                Some(p) => Err(syn::Error::new(
                    s.span(),
                    format!(
                        "the value of label `{label}` {p}: write a short name such as `{label} = \"ethereum\"`"
                    ),
                )),
                None => Ok(Source::Literal(s.clone())),
            }
        }
        Lit::Int(_) | Lit::Bool(_) => Ok(Source::Expr(value)),
        Lit::Float(_) => Err(bad("a float")),
        Lit::Char(_) => Err(bad("a character")),
        Lit::ByteStr(_) | Lit::Byte(_) | Lit::CStr(_) => Err(bad("bytes")),
        _ => Err(bad("this literal")),
    }
}

/// What is wrong with a label literal, if anything.
pub(crate) fn literal_problem(v: &str) -> Option<String> {
    if v.is_empty() {
        Some("is empty".to_owned())
    } else if v.trim() != v {
        Some("has leading or trailing whitespace".to_owned())
    } else if v.chars().any(char::is_control) {
        Some("contains a control character".to_owned())
    } else if v.len() > MAX_LITERAL_LEN {
        Some(format!("is longer than {MAX_LITERAL_LEN} bytes"))
    } else if v == "__overflow__" {
        Some("is reserved for values over the cardinality limit".to_owned())
    } else {
        None
    }
}

fn unknown(kind: Kind, name: &Ident, arg: &Arg) -> syn::Error {
    let key = name.to_string();
    let labels: Vec<&str> = kind
        .required()
        .iter()
        .chain(kind.optional())
        .copied()
        .collect();
    let accepted = format!(
        "`#[{}]` takes the label{} {} and the option `level`",
        kind.attr(),
        if labels.len() > 1 { "s" } else { "" },
        list(&labels)
    );
    if let Some(near) = closest(&key, &labels) {
        return syn::Error::new(
            name.span(),
            format!("unknown label `{key}`: did you mean `{near}`? {accepted}"),
        );
    }
    if let Some(near) = closest(&key, OPTIONS) {
        return syn::Error::new(
            name.span(),
            format!("unknown option `{key}`: did you mean `{near}`? {accepted}"),
        );
    }
    let what = match arg {
        Arg::Shorthand(_) => "label",
        Arg::Assign { .. } => "label or option",
    };
    syn::Error::new(name.span(), format!("unknown {what} `{key}`: {accepted}"))
}

fn no_such_parameter(
    kind: Kind,
    label: &str,
    ident: &Ident,
    sig: &Signature,
    params: &[Ident],
) -> syn::Error {
    let fn_name = &sig.ident;
    let how = format!(
        "name a parameter, or compute the label with `{label} = <expression>` (e.g. `{label} = {}`)",
        kind.example(label)
    );
    let msg = if params.is_empty() {
        format!("`{fn_name}` has no parameter named `{ident}` (it has no parameters): {how}")
    } else {
        let names: Vec<String> = params.iter().map(Ident::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        format!(
            "`{fn_name}` has no parameter named `{ident}`; its parameters are {}: {how}",
            list(&names)
        )
    };
    syn::Error::new(ident.span(), msg)
}

/// Every name a parameter pattern binds (receivers excluded).
fn parameter_names(sig: &Signature) -> Vec<Ident> {
    fn walk(pat: &Pat, out: &mut Vec<Ident>) {
        match pat {
            Pat::Ident(p) => {
                out.push(p.ident.clone());
                if let Some((_, sub)) = &p.subpat {
                    walk(sub, out);
                }
            }
            Pat::Struct(p) => p.fields.iter().for_each(|f| walk(&f.pat, out)),
            Pat::Tuple(p) => p.elems.iter().for_each(|p| walk(p, out)),
            Pat::TupleStruct(p) => p.elems.iter().for_each(|p| walk(p, out)),
            Pat::Slice(p) => p.elems.iter().for_each(|p| walk(p, out)),
            Pat::Reference(p) => walk(&p.pat, out),
            Pat::Type(p) => walk(&p.pat, out),
            Pat::Paren(p) => walk(&p.pat, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for input in &sig.inputs {
        if let FnArg::Typed(t) = input {
            walk(&t.pat, &mut out);
        }
    }
    out
}

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The candidate within edit distance 2 of `word`, if any.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
