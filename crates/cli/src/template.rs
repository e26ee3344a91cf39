//! Go templates for `-f/--format`, as Docker's CLI runs them: the `gtmpl`
//! engine with Docker's functions (`json`, `join`, `lower`, `split`, `title`,
//! `upper`, `pad`, `truncate`) beside Go's builtins (`printf`, `index`, `len`,
//! `println`, `if`, `range`, ...).
//!
//! Values print as Go prints them (`map[k:v]`, `[a b]`, `<nil>`); in the data
//! an inspect template sees, durations are Go durations (`5s`) and times Go
//! times (`2026-12-07 16:52:55.123 +0000 UTC`), while `{{json .}}` writes
//! Docker's JSON numbers and RFC 3339 times. A field that does not exist is an
//! error with Docker's wording, not `<no value>`.
//!
//! # Layout
//! - [`funcs`]: Docker's template functions and Go's printing of a value.
//! - [`data`]: inspect JSON → template data (durations, times) and back.
//! - [`listing`]: `--format` of `ls`/`ps` tables: `table ...`, `json`, a template.

pub mod data;
mod funcs;
pub mod listing;

#[cfg(test)]
mod tests;

use anyhow::anyhow;
use gtmpl::Value;

/// The function every printing action ends in, so values print as Go's.
const PRINT_FUNC: &str = "__shoal_print";

/// A parsed `--format` template.
pub struct Template {
    /// The engine's template, its printing actions routed through [`PRINT_FUNC`].
    inner: gtmpl::Template,
    /// The text as the user wrote it, to place errors.
    text: String,
}

// === impl Template ===

impl Template {
    /// Parses `text` with Docker's template functions.
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        Template::parse_with(text, funcs::DOCKER)
    }

    /// Parses `text` for a table header: Docker's header functions return
    /// their argument unchanged, so `{{upper .Name}}` heads its column `NAME`.
    pub fn parse_header(text: &str) -> anyhow::Result<Template> {
        Template::parse_with(text, funcs::HEADER)
    }

    fn parse_with(text: &str, fns: &[(&str, gtmpl::Func)]) -> anyhow::Result<Template> {
        let routed = route_prints(text)
            .ok_or_else(|| anyhow!("template parsing error: template: :1: unclosed action"))?;
        let mut inner = gtmpl::Template::default();
        inner.add_funcs(fns);
        inner.add_func(PRINT_FUNC, funcs::go_print_func);
        inner
            .parse(routed)
            .map_err(|e| anyhow!("template parsing error: {}", parse_error_text(&e)))?;
        Ok(Template {
            inner,
            text: text.to_string(),
        })
    }

    /// Executes the template on `data`.
    pub fn render(&self, data: &Value) -> anyhow::Result<String> {
        let ctx = gtmpl::Context::from(data.clone());
        self.inner
            .render(&ctx)
            .map_err(|e| anyhow!("{}", self.exec_error_text(&e)))
    }

    /// Docker's wording of an execution error: `template: :1:2: executing ""
    /// at <.Nope>: map has no entry for key "Nope"`.
    fn exec_error_text(&self, e: &gtmpl::error::ExecError) -> String {
        use gtmpl::error::ExecError;
        match e {
            ExecError::NoFiledFor(field, _) => {
                let (line, col, chain) = locate_field(&self.text, field);
                format!(
                    "template: :{line}:{col}: executing \"\" at <{chain}>: map has no entry for key \"{field}\""
                )
            }
            other => format!("template: executing \"\": {other}"),
        }
    }
}

/// A parse error in one line, without the engine's own prefix doubled.
fn parse_error_text(e: &gtmpl::error::ParseError) -> String {
    let text = e.to_string();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.starts_with("template:") {
        text
    } else {
        format!("template: :1: {text}")
    }
}

/// Where the first field chain naming `.field` is in `text`: Go's line
/// (1-based), column (0-based byte) and the chain itself (`.Spec.Nope`).
fn locate_field(text: &str, field: &str) -> (usize, usize, String) {
    let bytes = text.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let chain_start =
            bytes[i] == b'.' && (i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b'.');
        if !chain_start {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < bytes.len() && (bytes[end] == b'.' || is_ident(bytes[end])) {
            end += 1;
        }
        let chain = &text[i..end];
        if chain.split('.').any(|seg| seg == field) {
            let line = text[..i].matches('\n').count() + 1;
            let col = i - text[..i].rfind('\n').map_or(0, |n| n + 1);
            return (line, col, chain.to_string());
        }
        i = end.max(i + 1);
    }
    (1, 0, format!(".{field}"))
}

/// Go template keywords whose actions print nothing themselves.
const KEYWORDS: [&str; 10] = [
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
];

/// Rewrites every printing action `{{PIPELINE}}` into
/// `{{PIPELINE | __shoal_print}}`; control actions, comments and variable
/// declarations are left alone. `None` for an unclosed action (the engine
/// would spin on some of them).
fn route_prints(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = action_end(after)?;
        let body = &after[..close];
        out.push_str("{{");
        out.push_str(&rewrite_action(body));
        out.push_str("}}");
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// The offset of the `}}` closing an action body, skipping quoted text.
fn action_end(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// One action body with its trim markers kept and, if it prints, the print
/// function appended to its pipeline.
fn rewrite_action(body: &str) -> String {
    let (left, inner) = match body.strip_prefix("- ") {
        Some(b) => ("- ", b),
        None => ("", body),
    };
    let (inner, right) = match inner.strip_suffix(" -") {
        Some(b) => (b, " -"),
        None => (inner, ""),
    };
    let trimmed = inner.trim();
    let first_word = trimmed
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    let prints = !trimmed.is_empty()
        && !trimmed.starts_with("/*")
        && !KEYWORDS.contains(&first_word)
        && !is_declaration(trimmed);
    if prints {
        format!("{left}{inner} | {PRINT_FUNC}{right}")
    } else {
        body.to_string()
    }
}

/// `$x := ...`, `$i, $v := ...` or `$x = ...`.
fn is_declaration(action: &str) -> bool {
    let mut rest = action;
    for _ in 0..2 {
        let Some(after) = rest.strip_prefix('$') else {
            return false;
        };
        let name_len = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = after[name_len..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
            continue;
        }
        break;
    }
    rest.starts_with(":=") || (rest.starts_with('=') && !rest.starts_with("=="))
}
