//! Docker's template functions (docker/cli `templates/templates.go`) and Go's
//! default printing of a value (`fmt.Print`'s `%v`).

use gtmpl::{Func, FuncError, Value};

/// Docker's `basicFunctions`.
pub const DOCKER: &[(&str, Func)] = &[
    ("json", json),
    ("split", split),
    ("join", join),
    ("title", title),
    ("lower", lower),
    ("upper", upper),
    ("pad", pad),
    ("truncate", truncate),
];

/// Docker's `HeaderFunctions`: a table header shows the column's title as is.
pub const HEADER: &[(&str, Func)] = &[
    ("json", first_arg),
    ("split", first_arg),
    ("join", first_arg),
    ("title", first_arg),
    ("lower", first_arg),
    ("upper", first_arg),
    ("pad", pad),
    ("truncate", first_arg),
];

fn exactly(name: &str, args: &[Value], n: usize) -> Result<(), FuncError> {
    if args.len() == n {
        Ok(())
    } else {
        Err(FuncError::ExactlyXArgs(name.into(), n))
    }
}

fn string_arg(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(FuncError::Generic(format!(
            "{name}: expected a string, got {}",
            go_print(other)
        ))),
    }
}

fn int_arg(name: &str, v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| FuncError::Generic(format!("{name}: expected an integer, got {n}"))),
        other => Err(FuncError::Generic(format!(
            "{name}: expected an integer, got {}",
            go_print(other)
        ))),
    }
}

fn first_arg(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args.first().cloned().unwrap_or(Value::NoValue))
}

/// `{{json .X}}`: the value as compact JSON, Docker's numbers and times.
fn json(args: &[Value]) -> Result<Value, FuncError> {
    exactly("json", args, 1)?;
    let v = super::data::to_json(&args[0]);
    serde_json::to_string(&v)
        .map(Value::String)
        .map_err(|e| FuncError::Generic(format!("json: {e}")))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    exactly("split", args, 2)?;
    let s = string_arg("split", &args[0])?;
    let sep = string_arg("split", &args[1])?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str())
            .map(|p| Value::String(p.to_string()))
            .collect()
    };
    Ok(Value::Array(parts))
}

/// `{{join .Args " "}}`: list elements printed and joined; a map joins its
/// sorted `key=value` pairs.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    exactly("join", args, 2)?;
    let sep = string_arg("join", &args[1])?;
    let joined = match &args[0] {
        Value::Nil | Value::NoValue => String::new(),
        Value::Array(items) => items.iter().map(go_print).collect::<Vec<_>>().join(&sep),
        Value::Object(m) | Value::Map(m) => {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", go_print(v)))
                .collect();
            pairs.sort();
            pairs.join(&sep)
        }
        other => go_print(other),
    };
    Ok(Value::String(joined))
}

/// Go's `strings.Title`: each word's first letter upper-cased.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    exactly("title", args, 1)?;
    let s = string_arg("title", &args[0])?;
    let mut out = String::with_capacity(s.len());
    let mut prev_is_separator = true;
    for c in s.chars() {
        if prev_is_separator {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_is_separator = !(c.is_alphanumeric() || c == '_');
    }
    Ok(Value::String(out))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    exactly("lower", args, 1)?;
    Ok(Value::String(string_arg("lower", &args[0])?.to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    exactly("upper", args, 1)?;
    Ok(Value::String(string_arg("upper", &args[0])?.to_uppercase()))
}

/// The most spaces `pad` adds on one side, so a template cannot exhaust memory.
const MAX_PAD: i64 = 1024;

/// `{{pad .Name 1 2}}`: spaces before and after a non-empty string.
fn pad(args: &[Value]) -> Result<Value, FuncError> {
    exactly("pad", args, 3)?;
    let s = string_arg("pad", &args[0])?;
    if s.is_empty() {
        return Ok(Value::String(s));
    }
    let spaces = |v: &Value| -> Result<String, FuncError> {
        let n = int_arg("pad", v)?;
        if !(0..=MAX_PAD).contains(&n) {
            return Err(FuncError::Generic(format!(
                "pad: {n} spaces is out of range (0 to {MAX_PAD})"
            )));
        }
        Ok(" ".repeat(n as usize))
    };
    Ok(Value::String(format!(
        "{}{s}{}",
        spaces(&args[1])?,
        spaces(&args[2])?
    )))
}

/// `{{truncate .ID 12}}`: at most that many characters.
fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    exactly("truncate", args, 2)?;
    let s = string_arg("truncate", &args[0])?;
    let n = int_arg("truncate", &args[1])?.max(0) as usize;
    Ok(Value::String(s.chars().take(n).collect()))
}

/// The function every printing action ends in: the value as Go prints it.
pub fn go_print_func(args: &[Value]) -> Result<Value, FuncError> {
    exactly("print", args, 1)?;
    Ok(Value::String(go_print(&args[0])))
}

/// Go's `%v` of a value: strings bare, maps as `map[k:v]` in key order, lists
/// as `[a b]`, nil as `<nil>`.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::NoValue => "<no value>".into(),
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_print).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) | Value::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let pairs: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_print(&m[k])))
                .collect();
            format!("map[{}]", pairs.join(" "))
        }
        Value::Function(_) => "<func>".into(),
    }
}
