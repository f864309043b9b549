//! The condition language: a tree of `all`/`any`/`not` over `{field, op, value}` leaves, parsed
//! once (every fault named by its JSON path) into a typed tree that evaluates without allocating.

use std::borrow::Cow;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::error::Fields;

/// Bounds on what a stranger can make the evaluator do.
pub const MAX_DEPTH: usize = 8;
pub const MAX_NODES: usize = 64;
pub const MAX_LIST: usize = 100;
pub const MAX_TEXT: usize = 500;
pub const MAX_DETAILS_KEY: usize = 64;
/// The compiled size of a regex (`RegexBuilder::size_limit`): matching stays linear in the
/// input whatever the pattern, and this bounds its memory.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// An activity field a rule can read: a closed set, plus `details.<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Id,
    Actor,
    ActorType,
    Action,
    Category,
    Method,
    Route,
    ResourceType,
    ResourceId,
    Status,
    LatencyMs,
    Ip,
    UserAgent,
    RequestId,
    CreatedAt,
    Details(String),
}

/// What a field holds, which decides the operators and values it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    Time,
    /// `details.<key>`: whatever JSON the activity carries.
    Any,
}

impl Field {
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "id" => Self::Id,
            "actor" => Self::Actor,
            "actor_type" => Self::ActorType,
            "action" => Self::Action,
            "category" => Self::Category,
            "method" => Self::Method,
            "route" => Self::Route,
            "resource_type" => Self::ResourceType,
            "resource_id" => Self::ResourceId,
            "status" => Self::Status,
            "latency_ms" => Self::LatencyMs,
            "ip" => Self::Ip,
            "user_agent" => Self::UserAgent,
            "request_id" => Self::RequestId,
            "created_at" => Self::CreatedAt,
            other => match other.strip_prefix("details.") {
                Some(key)
                    if !key.is_empty()
                        && key.len() <= MAX_DETAILS_KEY
                        && !key.chars().any(char::is_control) =>
                {
                    Self::Details(key.to_string())
                }
                _ => {
                    return Err(format!(
                        "unknown field `{}`: an activity field or details.<key> (1-{MAX_DETAILS_KEY} characters)",
                        other.chars().take(80).collect::<String>()
                    ));
                }
            },
        })
    }

    pub fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Self::Id => "id",
            Self::Actor => "actor",
            Self::ActorType => "actor_type",
            Self::Action => "action",
            Self::Category => "category",
            Self::Method => "method",
            Self::Route => "route",
            Self::ResourceType => "resource_type",
            Self::ResourceId => "resource_id",
            Self::Status => "status",
            Self::LatencyMs => "latency_ms",
            Self::Ip => "ip",
            Self::UserAgent => "user_agent",
            Self::RequestId => "request_id",
            Self::CreatedAt => "created_at",
            Self::Details(key) => return Cow::Owned(format!("details.{key}")),
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::Status | Self::LatencyMs => Kind::Number,
            Self::CreatedAt => Kind::Time,
            Self::Details(_) => Kind::Any,
            _ => Kind::Text,
        }
    }
}

/// One field's value in an event; an absent or null field is `None` from [`EventFields`].
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Number(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    /// An array or object inside `details`.
    Json(&'a Value),
}

impl FieldValue<'_> {
    /// The text that `contains`, `starts_with`, `ends_with` and `regex` look at.
    fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(s) => Cow::Borrowed(s),
            Self::Number(n) => Cow::Owned(number_text(*n)),
            Self::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Self::Time(t) => Cow::Owned(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            Self::Json(v) => Cow::Owned(v.to_string()),
        }
    }
}

fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// What the engine reads of an event: the activity log implements it for its rows, and the
/// dry run for a JSON object.
pub trait EventFields {
    fn field(&self, field: &Field) -> Option<FieldValue<'_>>;
}

/// A JSON object with any subset of an activity's fields (the dry run's `event`).
impl EventFields for serde_json::Map<String, Value> {
    fn field(&self, field: &Field) -> Option<FieldValue<'_>> {
        let value = match field {
            Field::Details(key) => self.get("details")?.get(key)?,
            other => self.get(other.name().as_ref())?,
        };
        match value {
            Value::Null => None,
            Value::Bool(b) => Some(FieldValue::Bool(*b)),
            Value::Number(n) => n.as_f64().map(FieldValue::Number),
            Value::String(s) => Some(match field.kind() {
                Kind::Time => match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => FieldValue::Time(t.with_timezone(&Utc)),
                    Err(_) => FieldValue::Text(Cow::Borrowed(s)),
                },
                _ => FieldValue::Text(Cow::Borrowed(s)),
            }),
            other => Some(FieldValue::Json(other)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Regex,
    Exists,
}

impl Op {
    const ALL: [(&'static str, Op); 13] = [
        ("eq", Op::Eq),
        ("ne", Op::Ne),
        ("gt", Op::Gt),
        ("gte", Op::Gte),
        ("lt", Op::Lt),
        ("lte", Op::Lte),
        ("in", Op::In),
        ("not_in", Op::NotIn),
        ("contains", Op::Contains),
        ("starts_with", Op::StartsWith),
        ("ends_with", Op::EndsWith),
        ("regex", Op::Regex),
        ("exists", Op::Exists),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, op)| *op)
    }

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(n, _)| n)
    }
}

/// A comparison value, typed for the field it is compared with.
#[derive(Debug, Clone)]
enum Scalar {
    Text(String),
    Number(f64),
    Bool(bool),
    Time(DateTime<Utc>),
}

impl Scalar {
    fn equals(&self, value: &FieldValue<'_>) -> bool {
        match (self, value) {
            (Self::Text(a), FieldValue::Text(b)) => a == b.as_ref(),
            (Self::Number(a), FieldValue::Number(b)) => a == b,
            (Self::Bool(a), FieldValue::Bool(b)) => a == b,
            (Self::Time(a), FieldValue::Time(b)) => a == b,
            _ => false,
        }
    }

    /// `value` compared with `self`, when both are numbers or both are times.
    fn order(&self, value: &FieldValue<'_>) -> Option<std::cmp::Ordering> {
        match (value, self) {
            (FieldValue::Number(v), Self::Number(s)) => v.partial_cmp(s),
            (FieldValue::Time(v), Self::Time(s)) => Some(v.cmp(s)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Operand {
    One(Scalar),
    List(Vec<Scalar>),
    Text(String),
    Pattern(Regex),
    Exists(bool),
}

#[derive(Debug, Clone)]
pub struct Leaf {
    field: Field,
    op: Op,
    operand: Operand,
    /// The value as written, for the dry run's reasons.
    written: Value,
}

/// A parsed condition.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Leaf(Leaf),
}

impl Condition {
    /// Parses `value` (found at `path` in the request), recording every fault in `f`.
    pub fn parse(value: &Value, path: &str, f: &mut Fields) -> Option<Self> {
        let mut nodes = 0;
        parse_node(value, path, 1, &mut nodes, f)
    }

    /// Whether `event` matches (short-circuits).
    pub fn matches(&self, event: &dyn EventFields) -> bool {
        match self {
            Self::All(items) => items.iter().all(|c| c.matches(event)),
            Self::Any(items) => items.iter().any(|c| c.matches(event)),
            Self::Not(inner) => !inner.matches(event),
            Self::Leaf(leaf) => leaf.matches(event.field(&leaf.field).as_ref()),
        }
    }

    /// Like [`Condition::matches`], evaluating every leaf and saying what each found.
    pub fn explain(&self, event: &dyn EventFields, path: &str, out: &mut Vec<String>) -> bool {
        match self {
            Self::All(items) | Self::Any(items) => {
                let key = if matches!(self, Self::All(_)) {
                    "all"
                } else {
                    "any"
                };
                let results: Vec<bool> = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| c.explain(event, &format!("{path}.{key}[{i}]"), out))
                    .collect();
                let result = if key == "all" {
                    results.iter().all(|r| *r)
                } else {
                    results.iter().any(|r| *r)
                };
                let held = results.iter().filter(|r| **r).count();
                out.push(format!(
                    "{path}: {key} of {} held {held}: {}",
                    results.len(),
                    verdict(result)
                ));
                result
            }
            Self::Not(inner) => {
                let result = !inner.explain(event, &format!("{path}.not"), out);
                out.push(format!("{path}: not: {}", verdict(result)));
                result
            }
            Self::Leaf(leaf) => {
                let value = event.field(&leaf.field);
                let result = leaf.matches(value.as_ref());
                let mut line = format!(
                    "{path}: {} {} {}: {} (",
                    leaf.field.name(),
                    leaf.op.name(),
                    leaf.written,
                    verdict(result)
                );
                match &value {
                    Some(v) => {
                        let _ = write!(line, "the event has {:?})", v.text().as_ref());
                    }
                    None => line.push_str("the event has no such field)"),
                }
                out.push(line);
                result
            }
        }
    }
}

fn verdict(matched: bool) -> &'static str {
    if matched { "matched" } else { "not matched" }
}

impl Leaf {
    /// A missing field matches only `ne`, `not_in` and `exists: false`.
    fn matches(&self, value: Option<&FieldValue<'_>>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match (&self.operand, value) {
            (Operand::Exists(wanted), v) => v.is_some() == *wanted,
            (Operand::One(s), v) => {
                let eq = v.is_some_and(|v| s.equals(v));
                match self.op {
                    Op::Eq => eq,
                    Op::Ne => !eq,
                    op => match v.and_then(|v| s.order(v)) {
                        Some(order) => match op {
                            Op::Gt => order == Greater,
                            Op::Gte => order != Less,
                            Op::Lt => order == Less,
                            Op::Lte => order != Greater,
                            _ => order == Equal,
                        },
                        None => false,
                    },
                }
            }
            (Operand::List(items), v) => {
                let found = v.is_some_and(|v| items.iter().any(|s| s.equals(v)));
                (self.op == Op::In) == found
            }
            (_, None) => false,
            (Operand::Text(needle), Some(v)) => {
                let text = v.text();
                match self.op {
                    Op::Contains => text.contains(needle.as_str()),
                    Op::StartsWith => text.starts_with(needle.as_str()),
                    _ => text.ends_with(needle.as_str()),
                }
            }
            (Operand::Pattern(re), Some(v)) => re.is_match(&v.text()),
        }
    }
}

fn parse_node(
    value: &Value,
    path: &str,
    depth: usize,
    nodes: &mut usize,
    f: &mut Fields,
) -> Option<Condition> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        f.fail(path, format!("a condition has at most {MAX_NODES} nodes"));
        return None;
    }
    if depth > MAX_DEPTH {
        f.fail(
            path,
            format!("a condition nests at most {MAX_DEPTH} levels"),
        );
        return None;
    }
    let Some(object) = value.as_object() else {
        f.fail(
            path,
            "must be an object: {\"all\": [...]}, {\"any\": [...]}, {\"not\": {...}} or {\"field\", \"op\", \"value\"}",
        );
        return None;
    };
    for group in ["all", "any", "not"] {
        if let Some(inner) = object.get(group) {
            if let Some(extra) = object.keys().find(|k| *k != group) {
                f.fail(
                    format!("{path}.{extra}"),
                    format!("unknown key beside `{group}`"),
                );
                return None;
            }
            let here = format!("{path}.{group}");
            if group == "not" {
                return parse_node(inner, &here, depth + 1, nodes, f)
                    .map(|c| Condition::Not(Box::new(c)));
            }
            let Some(items) = inner.as_array().filter(|a| !a.is_empty()) else {
                f.fail(here, "must be a non-empty list of conditions");
                return None;
            };
            let parsed: Vec<Option<Condition>> = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_node(item, &format!("{here}[{i}]"), depth + 1, nodes, f))
                .collect();
            let parsed: Option<Vec<Condition>> = parsed.into_iter().collect();
            return parsed.map(|items| {
                if group == "all" {
                    Condition::All(items)
                } else {
                    Condition::Any(items)
                }
            });
        }
    }
    parse_leaf(object, path, f).map(Condition::Leaf)
}

fn parse_leaf(object: &serde_json::Map<String, Value>, path: &str, f: &mut Fields) -> Option<Leaf> {
    let mut ok = true;
    for key in object.keys() {
        if !matches!(key.as_str(), "field" | "op" | "value") {
            f.fail(
                format!("{path}.{key}"),
                "unknown key: a leaf has field, op and value",
            );
            ok = false;
        }
    }
    let field = match object.get("field") {
        Some(Value::String(name)) => f.check(format!("{path}.field"), Field::parse(name)),
        Some(_) => {
            f.fail(format!("{path}.field"), "must be a string");
            None
        }
        None => {
            f.fail(format!("{path}.field"), "is required");
            None
        }
    };
    let op = match object.get("op") {
        Some(Value::String(name)) => {
            let op = Op::parse(name);
            if op.is_none() {
                let names: Vec<&str> = Op::ALL.iter().map(|(n, _)| *n).collect();
                f.fail(
                    format!("{path}.op"),
                    format!("unknown operator: one of {}", names.join(", ")),
                );
            }
            op
        }
        Some(_) => {
            f.fail(format!("{path}.op"), "must be a string");
            None
        }
        None => {
            f.fail(format!("{path}.op"), "is required");
            None
        }
    };
    let Some(written) = object.get("value") else {
        f.fail(format!("{path}.value"), "is required");
        return None;
    };
    let (field, op) = (field?, op?);
    if !ok {
        return None;
    }
    let at = format!("{path}.value");
    let operand = match op {
        Op::Eq | Op::Ne => Operand::One(scalar(written, field.kind(), &at, f)?),
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            if field.kind() == Kind::Text {
                f.fail(
                    format!("{path}.op"),
                    format!(
                        "{} compares numbers or times; `{}` is text",
                        op.name(),
                        field.name()
                    ),
                );
                return None;
            }
            Operand::One(ordered(written, field.kind(), &at, f)?)
        }
        Op::In | Op::NotIn => {
            let Some(items) = written
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= MAX_LIST)
            else {
                f.fail(at, format!("must be a list of 1-{MAX_LIST} values"));
                return None;
            };
            let parsed: Vec<Option<Scalar>> = items
                .iter()
                .enumerate()
                .map(|(i, item)| scalar(item, field.kind(), &format!("{at}[{i}]"), f))
                .collect();
            Operand::List(parsed.into_iter().collect::<Option<Vec<_>>>()?)
        }
        Op::Contains | Op::StartsWith | Op::EndsWith => Operand::Text(text(written, &at, f)?),
        Op::Regex => {
            let pattern = text(written, &at, f)?;
            match RegexBuilder::new(&pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                Ok(re) => Operand::Pattern(re),
                Err(regex::Error::CompiledTooBig(_)) => {
                    f.fail(at, "the pattern compiles too large");
                    return None;
                }
                Err(e) => {
                    let first = e.to_string();
                    f.fail(
                        at,
                        format!(
                            "not a valid pattern: {}",
                            first.lines().last().unwrap_or("syntax error")
                        ),
                    );
                    return None;
                }
            }
        }
        Op::Exists => match written {
            Value::Bool(b) => Operand::Exists(*b),
            _ => {
                f.fail(at, "exists takes true or false");
                return None;
            }
        },
    };
    Some(Leaf {
        field,
        op,
        operand,
        written: written.clone(),
    })
}

fn text(value: &Value, at: &str, f: &mut Fields) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() && s.chars().count() <= MAX_TEXT => Some(s.clone()),
        _ => {
            f.fail(at, format!("must be a string of 1-{MAX_TEXT} characters"));
            None
        }
    }
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// An `eq`/`in` value for a field of `kind`.
fn scalar(value: &Value, kind: Kind, at: &str, f: &mut Fields) -> Option<Scalar> {
    match (kind, value) {
        (Kind::Text, Value::String(_)) => text(value, at, f).map(Scalar::Text),
        (Kind::Number | Kind::Any, Value::Number(n)) => n.as_f64().map(Scalar::Number),
        (Kind::Time, _) => {
            let t = time(value);
            if t.is_none() {
                f.fail(at, "must be an RFC 3339 timestamp");
            }
            t.map(Scalar::Time)
        }
        (Kind::Any, Value::String(_)) => text(value, at, f).map(Scalar::Text),
        (Kind::Any, Value::Bool(b)) => Some(Scalar::Bool(*b)),
        _ => {
            f.fail(
                at,
                match kind {
                    Kind::Text => "must be a string",
                    Kind::Number => "must be a number",
                    _ => "must be a string, a number or a boolean",
                },
            );
            None
        }
    }
}

/// A `gt`/`gte`/`lt`/`lte` value: a number, or an RFC 3339 timestamp for times.
fn ordered(value: &Value, kind: Kind, at: &str, f: &mut Fields) -> Option<Scalar> {
    match (kind, value) {
        (Kind::Number | Kind::Any, Value::Number(n)) => n.as_f64().map(Scalar::Number),
        (Kind::Time | Kind::Any, v) if time(v).is_some() => time(v).map(Scalar::Time),
        _ => {
            f.fail(
                at,
                match kind {
                    Kind::Time => "must be an RFC 3339 timestamp",
                    Kind::Number => "must be a number",
                    _ => "must be a number or an RFC 3339 timestamp",
                },
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::AppError;

    fn parse(value: Value) -> Result<Condition, Vec<String>> {
        let mut f = Fields::default();
        let c = Condition::parse(&value, "condition", &mut f);
        f.finish(|| c).map_err(|e| match e {
            AppError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("{other}"),
        })
    }

    fn event(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn faults_are_named_by_their_path() {
        let cases = [
            (
                json!({"all": [{"field": "action", "op": "eq", "value": "x"}, {"field": "action", "op": "like", "value": "x"}]}),
                "condition.all[1].op",
            ),
            (
                json!({"any": [{"field": "status", "op": "gt", "value": "five"}]}),
                "condition.any[0].value",
            ),
            (
                json!({"field": "nope", "op": "eq", "value": 1}),
                "condition.field",
            ),
            (
                json!({"field": "action", "op": "regex", "value": "("}),
                "condition.value",
            ),
            (
                json!({"field": "action", "op": "regex", "value": "\\w{1000}{1000}"}),
                "condition.value",
            ),
            (
                json!({"field": "action", "op": "gt", "value": 1}),
                "condition.op",
            ),
            (
                json!({"field": "action", "op": "in", "value": []}),
                "condition.value",
            ),
            (
                json!({"field": "status", "op": "in", "value": [500, "x"]}),
                "condition.value[1]",
            ),
            (
                json!({"field": "ip", "op": "exists", "value": "yes"}),
                "condition.value",
            ),
            (
                json!({"not": {"field": "ip", "op": "eq", "value": "1", "extra": 1}}),
                "condition.not.extra",
            ),
            (json!({"all": []}), "condition.all"),
            (
                json!({"field": "created_at", "op": "gte", "value": "yesterday"}),
                "condition.value",
            ),
            (
                json!({"field": "details.", "op": "eq", "value": 1}),
                "condition.field",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(parse(value.clone()).unwrap_err(), vec![field], "{value}");
        }
    }

    #[test]
    fn trees_are_bounded() {
        let mut deep = json!({"field": "ip", "op": "exists", "value": true});
        for _ in 0..MAX_DEPTH {
            deep = json!({ "not": deep });
        }
        assert!(parse(deep).is_err());
        let wide: Vec<Value> = (0..MAX_NODES)
            .map(|_| json!({"field": "ip", "op": "exists", "value": true}))
            .collect();
        assert!(parse(json!({ "any": wide })).is_err());
    }

    #[test]
    fn every_operator_evaluates() {
        let e = event(json!({
            "action": "auth.failed", "status": 401, "ip": "10.0.0.7",
            "created_at": "2026-01-02T03:04:05Z", "details": {"reason": "expired", "n": 3}
        }));
        let yes = [
            json!({"field": "action", "op": "eq", "value": "auth.failed"}),
            json!({"field": "action", "op": "ne", "value": "x"}),
            json!({"field": "actor", "op": "ne", "value": "x"}),
            json!({"field": "status", "op": "gt", "value": 400}),
            json!({"field": "status", "op": "gte", "value": 401}),
            json!({"field": "status", "op": "lt", "value": 500}),
            json!({"field": "status", "op": "lte", "value": 401}),
            json!({"field": "status", "op": "in", "value": [401, 403]}),
            json!({"field": "status", "op": "not_in", "value": [500]}),
            json!({"field": "ip", "op": "contains", "value": "0.0"}),
            json!({"field": "ip", "op": "starts_with", "value": "10."}),
            json!({"field": "ip", "op": "ends_with", "value": ".7"}),
            json!({"field": "status", "op": "regex", "value": "^4\\d\\d$"}),
            json!({"field": "details.reason", "op": "exists", "value": true}),
            json!({"field": "details.other", "op": "exists", "value": false}),
            json!({"field": "details.n", "op": "gte", "value": 3}),
            json!({"field": "created_at", "op": "lt", "value": "2026-01-03T00:00:00Z"}),
            json!({"not": {"field": "action", "op": "eq", "value": "other"}}),
            json!({"any": [{"field": "ip", "op": "eq", "value": "x"}, {"field": "status", "op": "eq", "value": 401}]}),
        ];
        for c in yes {
            assert!(parse(c.clone()).unwrap().matches(&e), "{c}");
        }
        let no = [
            json!({"field": "actor", "op": "eq", "value": "x"}),
            json!({"field": "actor", "op": "contains", "value": "x"}),
            json!({"field": "status", "op": "gt", "value": 401}),
            json!({"field": "details.reason", "op": "in", "value": ["a", "b"]}),
            json!({"all": [{"field": "ip", "op": "exists", "value": true}, {"field": "status", "op": "eq", "value": 500}]}),
        ];
        for c in no {
            assert!(!parse(c.clone()).unwrap().matches(&e), "{c}");
        }
    }

    #[test]
    fn a_pattern_that_backtracking_engines_choke_on_is_accepted_and_answers() {
        // `(a+)+$` on a run of `a`s ending in a character that fails the anchor takes a
        // backtracking engine exponential time; the linear-time engine answers at once.
        let c = parse(json!({"field": "details.input", "op": "regex", "value": "(a+)+$"}))
            .expect("accepted");
        let input = |text: String| event(json!({"details": {"input": text}}));
        let a = "a".repeat(100_000);
        assert!(!c.matches(&input(format!("{a}!"))));
        assert!(c.matches(&input(format!("!{a}"))));
    }

    #[test]
    fn explanations_name_each_leaf() {
        let c = parse(json!({"all": [
            {"field": "action", "op": "eq", "value": "auth.failed"},
            {"field": "status", "op": "eq", "value": 500}
        ]}))
        .unwrap();
        let mut reasons = Vec::new();
        let e = event(json!({"action": "auth.failed", "status": 401}));
        assert!(!c.explain(&e, "condition", &mut reasons));
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].starts_with("condition.all[0]: action eq \"auth.failed\": matched"));
        assert!(reasons[1].contains("not matched"), "{reasons:?}");
    }
}
