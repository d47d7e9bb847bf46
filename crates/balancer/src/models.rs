//! `GET /v1/models`: the public models a key reaches — its namespaces, its routing group,
//! routes that can serve — in the list shape of the client's SDK: Anthropic's when the
//! request carries `anthropic-version` (the Anthropic SDKs always send it), else OpenAI's.
//! Models of the key's default namespace are listed by their plain name, others as
//! `namespace.model`.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::proxy::{BalancerState, client_ip};
use crate::{auth, route};

pub async fn list(State(state): State<BalancerState>, req: Request) -> Response {
    let snapshot = state.cache.snapshot();
    let (parts, _) = req.into_parts();
    let ip = client_ip(&parts, &state.settings.trusted_proxies);
    let token = match auth::authenticate(&snapshot, &parts, ip) {
        Ok((token, _)) => token,
        Err(e) => return e.into_response(),
    };
    let group = route::caller_group(token, &snapshot.masters);
    let mut ids: Vec<String> = snapshot
        .bindings
        .values()
        .filter(|b| {
            b.status == "active" && token.namespaces.contains(&b.namespace) && route::serves(b, group)
        })
        .map(|b| {
            if b.namespace == token.default_namespace {
                b.public_model.clone()
            } else {
                format!("{}.{}", b.namespace, b.public_model)
            }
        })
        .collect();
    ids.sort();
    let body = if parts.headers.contains_key("anthropic-version") {
        anthropic_list(&ids)
    } else {
        openai_list(&ids)
    };
    axum::Json(body).into_response()
}

fn openai_list(ids: &[String]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "ez-api" }))
        .collect();
    json!({ "object": "list", "data": data })
}

/// Anthropic's `GET /v1/models` page: every model on one page.
fn anthropic_list(ids: &[String]) -> Value {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z" }))
        .collect();
    json!({ "data": data, "has_more": false, "first_id": ids.first(), "last_id": ids.last() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sdk_gets_its_list_shape() {
        let ids = ["claude".to_owned(), "gpt-4o".to_owned()];
        let anthropic = anthropic_list(&ids);
        assert_eq!(
            anthropic["data"][1],
            json!({ "type": "model", "id": "gpt-4o", "display_name": "gpt-4o", "created_at": "1970-01-01T00:00:00Z" })
        );
        assert_eq!(
            (
                &anthropic["first_id"],
                &anthropic["last_id"],
                &anthropic["has_more"]
            ),
            (&json!("claude"), &json!("gpt-4o"), &json!(false))
        );
        assert_eq!(anthropic_list(&[])["first_id"], Value::Null);
        let openai = openai_list(&ids);
        assert_eq!(openai["object"], "list");
        assert_eq!(
            openai["data"][0],
            json!({ "id": "claude", "object": "model", "created": 0, "owned_by": "ez-api" })
        );
    }
}
