//! The YAML of `meta.yaml`: the flat `key: scalar` mappings MLflow (PyYAML)
//! writes, read line by line (no recursion, whatever the file holds) and
//! written so that PyYAML reads back the same strings.

use std::io::ErrorKind;
use std::path::Path;

use super::check_id;
use crate::mlflow::MlflowError;

/// `s` as a YAML scalar PyYAML reads back as the same string: plain when
/// that is unambiguous, else single-quoted (`'` doubled), else (line breaks,
/// tabs, characters PyYAML does not print) double-quoted with escapes.
pub(crate) fn yaml_str(s: &str) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if s.chars()
        .all(|c| c != '\t' && is_yaml_printable(c) && !is_break(c))
    {
        return format!("'{}'", s.replace('\'', "''"));
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c if is_yaml_printable(c) && !is_break(c) => out.push(c),
            c if u32::from(c) <= 0xFF => out.push_str(&format!("\\x{:02X}", u32::from(c))),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// PyYAML's printable set (`Reader.NON_PRINTABLE`'s complement), less the BOM.
fn is_yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
        && c != '\u{FEFF}'
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Whether `s` may be written unquoted: no indicator, comment or mapping
/// syntax, no surrounding space, and nothing YAML 1.1 would resolve to
/// another type (numbers, booleans, null, timestamps: anything starting
/// with a digit, sign or dot is quoted).
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if " -?:,[]{}#&*!|>'\"%@`+.~=<0123456789".contains(first) {
        return false;
    }
    if s.ends_with(' ') || s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    if !s
        .chars()
        .all(|c| c != '\t' && is_yaml_printable(c) && !is_break(c) && c != '\u{A0}')
    {
        return false;
    }
    const RESERVED_WORDS: [&str; 8] = ["y", "n", "yes", "no", "true", "false", "on", "off"];
    let lower = s.to_ascii_lowercase();
    !(RESERVED_WORDS.contains(&lower.as_str()) || lower == "null")
}

/// A scalar of a `meta.yaml`.
#[derive(Debug, PartialEq)]
enum Scalar {
    /// Unquoted text, to be resolved (`null`, an integer, a word).
    Plain(String),
    /// A quoted string.
    Quoted(String),
}

/// A parsed `meta.yaml`: its top-level keys and scalar values, in order.
#[derive(Debug)]
pub(super) struct Yaml(Vec<(String, Scalar)>);

impl Yaml {
    /// Reads `path`; `None` when it does not exist.
    pub(super) fn read(path: &Path) -> Result<Option<Yaml>, MlflowError> {
        let text = match super::read::read_capped(path, super::read::MAX_META_FILE) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| MlflowError::Store {
                path: path.to_owned(),
                message: "not UTF-8".to_owned(),
            })?,
            Err(MlflowError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Yaml::parse(&text)
            .map(Some)
            .map_err(|message| MlflowError::Store {
                path: path.to_owned(),
                message: format!("not the YAML MLflow writes: {message}"),
            })
    }

    /// Parses a flat block mapping of scalars (continuation lines indented,
    /// as PyYAML folds long scalars). Values that are not scalars (a block
    /// list under a key) are kept as plain text, unparsed.
    pub(super) fn parse(text: &str) -> Result<Yaml, String> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let continued = line.starts_with([' ', '\t', '-']) || line.trim().is_empty();
            if !continued && (line.starts_with('#') || line == "---" || line == "...") {
                continue;
            }
            if continued {
                match entries.last_mut() {
                    Some((_, value)) => {
                        value.push('\n');
                        value.push_str(line);
                    }
                    None if line.trim().is_empty() => {}
                    None => return Err(format!("line {}: {line:?} is not `key: value`", i + 1)),
                }
                continue;
            }
            let Some((key, value)) = line
                .split_once(": ")
                .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
            else {
                return Err(format!("line {}: {line:?} is not `key: value`", i + 1));
            };
            if key.is_empty() || key.contains(['\'', '"', '{', '[']) {
                return Err(format!("line {}: {line:?} has an unexpected key", i + 1));
            }
            entries.push((key.to_owned(), value.to_owned()));
        }
        let mut out = Vec::with_capacity(entries.len());
        for (key, raw) in entries {
            let value = parse_scalar(&raw).map_err(|e| format!("{key}: {e}"))?;
            out.push((key, value));
        }
        Ok(Yaml(out))
    }

    fn get(&self, key: &str) -> Option<&Scalar> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A string value; `None` when missing or null.
    pub(super) fn opt_string(&self, path: &Path, key: &str) -> Result<Option<String>, MlflowError> {
        match self.get(key) {
            None => Ok(None),
            Some(Scalar::Quoted(s)) => Ok(Some(s.clone())),
            Some(Scalar::Plain(s)) if is_null(s) => Ok(None),
            Some(Scalar::Plain(s)) if s.starts_with(['[', '{', '-']) => Err(bad(path, key, s)),
            Some(Scalar::Plain(s)) => Ok(Some(s.clone())),
        }
    }

    pub(super) fn string(&self, path: &Path, key: &str) -> Result<String, MlflowError> {
        self.opt_string(path, key)?
            .ok_or_else(|| missing(path, key))
    }

    /// An id: a string or (legacy files) an integer.
    pub(super) fn id(&self, path: &Path, key: &str) -> Result<String, MlflowError> {
        let id = self.string(path, key)?;
        check_id(path, key, &id, 256).map_err(|_| bad(path, key, &id))?;
        Ok(id)
    }

    /// An integer; `None` when missing or null.
    pub(super) fn opt_int(&self, path: &Path, key: &str) -> Result<Option<i64>, MlflowError> {
        match self.get(key) {
            None => Ok(None),
            Some(Scalar::Plain(s)) if is_null(s) => Ok(None),
            Some(Scalar::Plain(s)) => s.parse().map(Some).map_err(|_| bad(path, key, s)),
            Some(Scalar::Quoted(s)) => Err(bad(path, key, s)),
        }
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn missing(path: &Path, key: &str) -> MlflowError {
    MlflowError::Store {
        path: path.to_owned(),
        message: format!("no `{key}`"),
    }
}

fn bad(path: &Path, key: &str, value: &str) -> MlflowError {
    MlflowError::Store {
        path: path.to_owned(),
        message: format!("`{key}: {value}` is not what MLflow writes"),
    }
}

/// One scalar, possibly over several lines (a leading line break and the
/// continuation lines' indentation included).
fn parse_scalar(raw: &str) -> Result<Scalar, String> {
    let text = raw.trim();
    if let Some(body) = text.strip_prefix('\'') {
        let body = body
            .strip_suffix('\'')
            .ok_or("a single-quoted string without its closing quote")?;
        let mut out = String::new();
        let mut chars = fold(body, false).into_iter();
        while let Some(c) = chars.next() {
            match c {
                Folded::Char('\'') => {
                    if chars.next() != Some(Folded::Char('\'')) {
                        return Err("a lone `'` inside a single-quoted string".to_owned());
                    }
                    out.push('\'');
                }
                Folded::Char(c) | Folded::Break(c) => out.push(c),
                Folded::EscapedBreak => out.push('\\'),
            }
        }
        Ok(Scalar::Quoted(out))
    } else if let Some(body) = text.strip_prefix('"') {
        let body = body
            .strip_suffix('"')
            .ok_or("a double-quoted string without its closing quote")?;
        Ok(Scalar::Quoted(unescape_double(body)?))
    } else if text.starts_with(['|', '>', '&', '*', '!']) {
        Err(format!("{text:?}: YAML this reader does not support"))
    } else {
        let mut out = String::new();
        for c in fold(text, false) {
            match c {
                Folded::Char(c) | Folded::Break(c) => out.push(c),
                Folded::EscapedBreak => out.push('\\'),
            }
        }
        Ok(Scalar::Plain(out))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Folded {
    /// A character of the text.
    Char(char),
    /// What a folded line break became (a space or `\n`).
    Break(char),
    /// A `\` ending a line (double-quoted: the break disappears).
    EscapedBreak,
}

/// YAML's flow folding: spaces around a line break are dropped; one break
/// becomes a space, `n > 1` breaks become `n - 1` newlines.
fn fold(body: &str, escapes: bool) -> Vec<Folded> {
    let lines: Vec<&str> = body.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut line = lines[i];
        if i > 0 {
            line = line.trim_start_matches([' ', '\t']);
        }
        let last = i + 1 == lines.len();
        if !last {
            line = line.trim_end_matches([' ', '\t']);
        }
        out.extend(line.chars().map(Folded::Char));
        if last {
            break;
        }
        // An unescaped `\` ending the line: an escaped break.
        let backslashes = line.chars().rev().take_while(|&c| c == '\\').count();
        if escapes && backslashes % 2 == 1 {
            out.pop();
            out.push(Folded::EscapedBreak);
            i += 1;
            continue;
        }
        let mut empty = 0;
        while i + 1 + empty < lines.len() - 1 && lines[i + 1 + empty].trim().is_empty() {
            empty += 1;
        }
        if empty == 0 {
            out.push(Folded::Break(' '));
        } else {
            out.extend(std::iter::repeat_n(Folded::Break('\n'), empty));
        }
        i += 1 + empty;
    }
    out
}

fn unescape_double(body: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = fold(body, true).into_iter();
    while let Some(c) = chars.next() {
        match c {
            Folded::Break(c) => out.push(c),
            Folded::EscapedBreak => {}
            Folded::Char('"') => return Err("a lone `\"` inside a double-quoted string".to_owned()),
            Folded::Char('\\') => {
                let Some(Folded::Char(e)) = chars.next() else {
                    return Err("a `\\` at the end of a double-quoted string".to_owned());
                };
                let hex = |n: usize, chars: &mut std::vec::IntoIter<Folded>| {
                    let digits: String = chars
                        .by_ref()
                        .take(n)
                        .map(|f| match f {
                            Folded::Char(c) => c,
                            _ => '?',
                        })
                        .collect();
                    u32::from_str_radix(&digits, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("bad escape \\{e}{digits}"))
                };
                out.push(match e {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{B}',
                    'f' => '\u{C}',
                    'r' => '\r',
                    'e' => '\u{1B}',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{A0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    'x' => hex(2, &mut chars)?,
                    'u' => hex(4, &mut chars)?,
                    'U' => hex(8, &mut chars)?,
                    other => return Err(format!("unknown escape \\{other}")),
                });
            }
            Folded::Char(c) => out.push(c),
        }
    }
    Ok(out)
}
