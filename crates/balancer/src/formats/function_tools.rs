//! OpenAI's function tools and tool choice, as Chat Completions and Responses write them:
//! the same fields, nested under `function` in Chat (`{"type": "function", "function":
//! {"name", …}}`) and flat in Responses (`{"type": "function", "name", …}`).

use serde_json::{Value, json};

use super::ir::{Tool, ToolChoice};
use super::{Refusal, refuse};

/// Where a tool's fields are.
#[derive(Clone, Copy)]
pub(crate) enum Layout {
    /// Chat: under `function`.
    Nested,
    /// Responses: beside `type`.
    Flat,
}

impl Layout {
    fn fields(self, tool: &Value) -> &Value {
        match self {
            Layout::Nested => &tool["function"],
            Layout::Flat => tool,
        }
    }

    fn path(self, at: &str, field: &str) -> String {
        match self {
            Layout::Nested => format!("{at}.function.{field}"),
            Layout::Flat => format!("{at}.{field}"),
        }
    }
}

/// `tools`: function tools only (built-in tools are refused), no strict schemas; a tool
/// without parameters gets an empty object schema.
pub(crate) fn tools(list: &Value, layout: Layout) -> Result<Vec<Tool>, Refusal> {
    let Some(list) = list.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = format!("tools[{i}]");
            if tool["type"].as_str() != Some("function") {
                return Err(refuse(
                    format!("{at}.type"),
                    "only function tools can be translated",
                ));
            }
            let fields = layout.fields(tool);
            let name = fields["name"]
                .as_str()
                .ok_or_else(|| refuse(layout.path(&at, "name"), "is required"))?;
            if fields.get("strict") == Some(&Value::Bool(true)) {
                return Err(refuse(
                    layout.path(&at, "strict"),
                    "strict schemas cannot be translated",
                ));
            }
            Ok(Tool {
                name: name.to_owned(),
                description: fields["description"].as_str().map(str::to_owned),
                parameters: match &fields["parameters"] {
                    Value::Null => json!({ "type": "object", "properties": {} }),
                    schema => schema.clone(),
                },
            })
        })
        .collect()
}

/// `tool_choice`: `auto`, `none`, `required` or a named function.
pub(crate) fn tool_choice(value: &Value, layout: Layout) -> Result<Option<ToolChoice>, Refusal> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::String(s) if s == "auto" => ToolChoice::Auto,
        Value::String(s) if s == "none" => ToolChoice::None,
        Value::String(s) if s == "required" => ToolChoice::Required,
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = layout.fields(value)["name"]
                .as_str()
                .ok_or_else(|| refuse(layout.path("tool_choice", "name"), "is required"))?;
            ToolChoice::Named(name.to_owned())
        }
        _ => {
            return Err(refuse(
                "tool_choice",
                "must be auto, none, required or a function",
            ));
        }
    }))
}
