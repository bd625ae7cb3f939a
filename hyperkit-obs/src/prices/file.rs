//! The price table's TOML: `[model_prices."<model>"]` tables (`input`,
//! `output`, optional `cached_input`, in USD per million tokens, and an
//! optional `currency`, default `USD`) and an optional `[currency_rates]`
//! table (USD per unit of each other currency used). Read from the file
//! named by `HYPERKIT_MODEL_PRICES` (which holds nothing else) or from the
//! file named by `HYPERKIT_CONFIG`. Read with the spans of `toml`'s
//! document parser, so every fault names its line and its model; never
//! panics.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::{ModelPrice, PriceTable, PriceTableError};
use crate::config::ConfigError;

/// The keys of one model's prices.
const MODEL_KEYS: &str = "input, output, cached_input and currency";

/// The price table of `text`; `None` when it has no `[model_prices]`.
/// `alone`: the text holds only the price table (`HYPERKIT_MODEL_PRICES`),
/// so any other top-level key is a mistake.
pub(crate) fn parse(text: &str, alone: bool) -> Result<Option<PriceTable>, PriceTableError> {
    let doc = DeTable::parse(text).map_err(|e| PriceTableError {
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        model: None,
        message: e.message().trim().replace('\n', " "),
    })?;
    let fault = |span: Range<usize>, model: Option<&str>, message: String| PriceTableError {
        line: line_of(text, span.start),
        model: model.map(str::to_owned),
        message,
    };
    let mut prices = None;
    let mut rates = None;
    for (key, value) in doc.get_ref().iter() {
        match &**key.get_ref() {
            "model_prices" => prices = Some((key.span(), value)),
            "currency_rates" => rates = Some(value),
            other if alone => {
                return Err(fault(
                    key.span(),
                    None,
                    format!(
                        "unknown key {other:?}: a price table holds [model_prices.\"<model>\"] and [currency_rates] tables only"
                    ),
                ));
            }
            _ => {}
        }
    }
    let rates: HashMap<String, f64> = match rates {
        None => HashMap::new(),
        Some(value) => {
            let DeValue::Table(table) = value.get_ref() else {
                return Err(fault(
                    value.span(),
                    None,
                    "currency_rates must be a table of USD per unit of each currency, for example [currency_rates] EUR = 1.08".to_owned(),
                ));
            };
            let mut rates = HashMap::new();
            for (code, rate) in table.iter() {
                let code_text = &**code.get_ref();
                check_currency(code_text).map_err(|m| fault(code.span(), None, m))?;
                let r = number(rate.get_ref())
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| {
                        fault(
                            rate.span(),
                            None,
                            format!(
                                "currency_rates.{code_text} must be a positive number of USD per {code_text}, for example {code_text} = 1.08"
                            ),
                        )
                    })?;
                rates.insert(code_text.to_owned(), r);
            }
            rates
        }
    };
    let Some((span, value)) = prices else {
        return Ok(None);
    };
    let DeValue::Table(models) = value.get_ref() else {
        return Err(fault(
            span,
            None,
            "model_prices must be a table of models, for example [model_prices.\"gpt-4o\"] input = 2.5 output = 10.0".to_owned(),
        ));
    };
    let mut table = PriceTable::new();
    for (name, prices) in models.iter() {
        let model = &**name.get_ref();
        let here = |span: Range<usize>, message: String| fault(span, Some(model), message);
        if model.is_empty() || crate::label::sanitize(model) != model {
            return Err(here(
                name.span(),
                "a model name is the `model` label's value: not empty, at most 128 bytes, no control characters".to_owned(),
            ));
        }
        let DeValue::Table(keys) = prices.get_ref() else {
            return Err(here(
                prices.span(),
                format!(
                    "a model's prices are a table, for example [model_prices.{model:?}] input = 2.5 output = 10.0"
                ),
            ));
        };
        let price = |key: &str| -> Result<Option<f64>, PriceTableError> {
            let Some((_, v)) = keys.iter().find(|(k, _)| &**k.get_ref() == key) else {
                return Ok(None);
            };
            number(v.get_ref())
                .filter(|p| (0.0..=super::MAX_PRICE_PER_MILLION).contains(p))
                .map(Some)
                .ok_or_else(|| {
                    here(
                        v.span(),
                        format!(
                            "{key} must be a number of USD per million tokens from 0 to 1000000, for example {key} = 2.5"
                        ),
                    )
                })
        };
        let (input, output, cached) = (price("input")?, price("output")?, price("cached_input")?);
        let mut currency = ("USD", name.span());
        for (key, v) in keys.iter() {
            match &**key.get_ref() {
                "input" | "output" | "cached_input" => {}
                "currency" => {
                    let code = v.get_ref().as_str().ok_or_else(|| {
                        here(
                            v.span(),
                            "currency must be a string, for example currency = \"USD\"".to_owned(),
                        )
                    })?;
                    check_currency(code).map_err(|m| here(v.span(), m))?;
                    currency = (code, v.span());
                }
                other => {
                    return Err(here(
                        key.span(),
                        format!("unknown key {other:?}: a model's prices are {MODEL_KEYS}"),
                    ));
                }
            }
        }
        let (Some(input), Some(output)) = (input, output) else {
            let missing = if input.is_none() { "input" } else { "output" };
            return Err(here(
                name.span(),
                format!(
                    "{missing} is missing: every model needs input and output, in USD per million tokens (for example input = 2.5 output = 10.0)"
                ),
            ));
        };
        let bad = |e: super::BadPrice| here(name.span(), e.to_string());
        let mut p = ModelPrice::usd_per_million(input, output).map_err(bad)?;
        if let Some(cached) = cached {
            p = p.with_cached_input(cached).map_err(bad)?;
        }
        let (code, code_span) = currency;
        if code != "USD" {
            let rate = rates.get(code).ok_or_else(|| {
                here(
                    code_span.clone(),
                    format!(
                        "prices in {code} need a rate: only USD is counted in hyperkit_model_cost_usd_total, so add [currency_rates] {code} = <USD per {code}>, or give the prices in USD"
                    ),
                )
            })?;
            p = p.converted(*rate).map_err(|e| {
                here(
                    code_span.clone(),
                    format!("converted at {rate} USD per {code}: {e}"),
                )
            })?;
        }
        table.insert(model, p);
    }
    Ok(Some(table))
}

/// A TOML integer or float as an `f64`.
fn number(value: &DeValue<'_>) -> Option<f64> {
    match value {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            // Prices are far below 2^53.
            .map(|i| i as f64),
        DeValue::Float(f) => f.as_str().parse().ok(),
        _ => None,
    }
}

/// An ISO 4217 code: three capital letters.
fn check_currency(code: &str) -> Result<(), String> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(format!(
            "{code:?} is not a currency code: write three capital letters (ISO 4217), for example \"USD\""
        ))
    }
}

/// The line (from 1) of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads the price table of the file at `path`, named by `variable`
/// (`HYPERKIT_MODEL_PRICES`: it holds only the table; `HYPERKIT_CONFIG`:
/// the table is one part of it).
pub(crate) fn read(
    variable: &'static str,
    path: &Path,
    text: &str,
) -> Result<Option<PriceTable>, ConfigError> {
    parse(text, variable == super::PRICES_VAR).map_err(|e| ConfigError::Prices {
        variable,
        path: path.to_owned(),
        line: e.line,
        model: e.model,
        message: e.message,
    })
}

/// The most bytes of a price table file read: a table of a few hundred
/// models is a few kilobytes, and a larger file is a mistake.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the file named by `HYPERKIT_MODEL_PRICES`.
pub(crate) fn read_file(path: &Path) -> Result<PriceTable, ConfigError> {
    let unreadable = |problem: String| ConfigError::Invalid {
        variable: super::PRICES_VAR,
        value: path.display().to_string(),
        problem,
        example: "/etc/hyperkit/prices.toml",
    };
    let size = std::fs::metadata(path)
        .map_err(|e| unreadable(format!("the file cannot be read: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(unreadable(format!(
            "the file is {size} bytes; a price table holds at most {MAX_FILE_BYTES}"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| unreadable(format!("the file cannot be read: {e}")))?;
    Ok(read(super::PRICES_VAR, path, &text)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PriceTableError {
        parse(text, true).expect_err(text)
    }

    #[test]
    fn the_documented_shape_is_read_with_rates_applied() {
        let table = parse(
            r#"
[model_prices."gpt-4o"]
input = 2.5
output = 10
cached_input = 1.25

[model_prices.mistral-large]
input = 2.0
output = 6.0
currency = "EUR"

[currency_rates]
EUR = 1.5
"#,
            true,
        )
        .unwrap()
        .unwrap();
        let gpt = table.get("gpt-4o").unwrap();
        assert_eq!(
            (
                gpt.input_per_million(),
                gpt.output_per_million(),
                gpt.cached_input_per_million()
            ),
            (2.5, 10.0, Some(1.25))
        );
        let mistral = table.get("mistral-large").unwrap();
        assert_eq!(
            (mistral.input_per_million(), mistral.output_per_million()),
            (3.0, 9.0)
        );
    }

    #[test]
    fn every_fault_names_its_line_and_model() {
        let cases: [(&str, usize, Option<&str>, &str); 9] = [
            (
                "[model_prices.a]\ninput = 1\noutput = -1\n",
                3,
                Some("a"),
                "output must be a number",
            ),
            (
                "[model_prices.a]\ninput = \"x\"\noutput = 1\n",
                2,
                Some("a"),
                "input must be a number",
            ),
            (
                "\n[model_prices.b]\ninput = 1\n",
                2,
                Some("b"),
                "output is missing",
            ),
            (
                "[model_prices.a]\ninput = 1\noutput = 1\nouput = 2\n",
                4,
                Some("a"),
                "unknown key \"ouput\"",
            ),
            (
                "[model_prices.a]\ninput = 1\noutput = 1\ncurrency = \"EUR\"\n",
                4,
                Some("a"),
                "need a rate",
            ),
            (
                "[model_prices.a]\ninput = 1\noutput = 1\ncurrency = \"euro\"\n",
                4,
                Some("a"),
                "not a currency code",
            ),
            (
                "[model_prices]\na = 3\n",
                2,
                Some("a"),
                "a model's prices are a table",
            ),
            ("[currency_rates]\nEUR = 0\n", 2, None, "positive number"),
            (
                "[model_pricse.a]\ninput = 1\n",
                1,
                None,
                "unknown key \"model_pricse\"",
            ),
        ];
        for (text, line, model, message) in cases {
            let e = err(text);
            assert_eq!((e.line, e.model.as_deref()), (line, model), "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = err("[model_prices.a]\ninput = 1\noutput = = 2\n");
        assert_eq!((e.line, e.model.as_deref()), (3, None), "{e}");
    }

    #[test]
    fn a_configuration_file_may_hold_other_keys_and_no_table() {
        assert_eq!(parse("service_name = \"x\"\n", false).unwrap(), None);
    }
}
