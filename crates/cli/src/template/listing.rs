//! `--format` of the list commands (`service ls|ps`, `node ls|ps`), as
//! Docker's `formatter.Context` writes them: `table TEMPLATE` (a header row
//! from the column titles, then aligned rows), `json` (one JSON object per
//! line) or any other template (one rendering per row).

use std::collections::HashMap;

use anyhow::Context as _;
use gtmpl::Value;

use super::Template;
use crate::format::align_columns;

/// One row's placeholders (`ID`, `Name`, ...) and their values.
pub type Row = Vec<(&'static str, Value)>;

/// Whether `format` asks for the command's own table (no `--format`, an
/// empty one, or a bare `table`), as Docker's.
pub fn is_default(format: Option<&str>) -> bool {
    matches!(format.map(str::trim), None | Some("" | "table"))
}

/// Docker's `Format.templateString`: `json` is `{{json .}}`; the `table`
/// prefix and surrounding spaces go; `\t` and `\n` written out become a tab
/// and a line break.
fn template_text(format: &str) -> String {
    if format == "json" {
        return "{{json .}}".into();
    }
    let body = format.strip_prefix("table").unwrap_or(format);
    body.trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n")
}

/// Renders `rows` with a user's `--format`; `headers` maps each placeholder
/// to its column title (`Name` → `NAME`).
pub fn render(format: &str, headers: &[(&str, &str)], rows: &[Row]) -> anyhow::Result<String> {
    let text = template_text(format);
    let template = Template::parse(&text)?;
    let mut out = String::new();
    for row in rows {
        let data = Value::Object(
            row.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
        let line = template
            .render(&data)
            .context("template parsing error")
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        out.push_str(&line);
        out.push('\n');
    }
    if !format.starts_with("table") {
        return Ok(out);
    }
    // The header: the same template over the column titles; a placeholder
    // without a title prints as Go prints a missing map key.
    let titles: HashMap<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let header = Template::parse_header(&text)?
        .render(&Value::Map(titles))
        .unwrap_or_default();
    Ok(align_columns(&format!("{header}\n{out}")))
}
