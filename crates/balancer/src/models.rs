//! `GET /v1/models`: the public models a key reaches — its namespaces, its routing group,
//! routes that can serve — in the list shape of the client's SDK: Anthropic's when the
//! request carries `anthropic-version` (the Anthropic SDKs always send it), Gemini's when
//! the key came as Google's (`x-goog-api-key` or `?key=`), else OpenAI's. Gemini's own
//! `GET /v1beta/models` and `GET /v1beta/models/{model}` answer in Gemini's shape.
//! Models of the key's default namespace are listed by their plain name, others as
//! `namespace.model`.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ProxyError;
use crate::proxy::{BalancerState, client_ip};
use crate::{auth, route};

/// The ids of the public models the request's key reaches, sorted.
fn visible(state: &BalancerState, parts: &Parts) -> Result<Vec<String>, ProxyError> {
    let snapshot = state.cache.snapshot();
    let ip = client_ip(parts, &state.settings.trusted_proxies);
    let (token, _) = auth::authenticate(&snapshot, parts, ip)?;
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
    Ok(ids)
}

/// Whether the key came the way Google's clients send it.
fn google_key(parts: &Parts) -> bool {
    parts.headers.contains_key("x-goog-api-key")
        || parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("key=")))
}

pub async fn list(State(state): State<BalancerState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let ids = match visible(&state, &parts) {
        Ok(ids) => ids,
        Err(e) => return e.into_response(),
    };
    let body = if parts.headers.contains_key("anthropic-version") {
        anthropic_list(&ids)
    } else if google_key(&parts) {
        gemini_list(&ids)
    } else {
        openai_list(&ids)
    };
    axum::Json(body).into_response()
}

/// `GET /v1beta/models`.
pub async fn list_gemini(State(state): State<BalancerState>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    match visible(&state, &parts) {
        Ok(ids) => axum::Json(gemini_list(&ids)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1beta/models/{model}` (also `models/{model}`): one model the key reaches.
pub async fn get_gemini(state: State<BalancerState>, target: Path<String>, req: Request) -> Response {
    get(state, target, req, Shape::Gemini).await
}

/// `GET /v1/models/{model}`: one model, in the shape of the client's SDK.
pub async fn get_model(state: State<BalancerState>, target: Path<String>, req: Request) -> Response {
    get(state, target, req, Shape::OfClient).await
}

enum Shape {
    Gemini,
    OfClient,
}

async fn get(
    State(state): State<BalancerState>,
    Path(target): Path<String>,
    req: Request,
    shape: Shape,
) -> Response {
    let (parts, _) = req.into_parts();
    let ids = match visible(&state, &parts) {
        Ok(ids) => ids,
        Err(e) => return e.into_response(),
    };
    let id = target.strip_prefix("models/").unwrap_or(&target);
    let gemini = matches!(shape, Shape::Gemini) || google_key(&parts);
    match ids.iter().find(|known| *known == id) {
        Some(id) if gemini => axum::Json(gemini_model(id)).into_response(),
        Some(id) if parts.headers.contains_key("anthropic-version") => {
            axum::Json(anthropic_list(std::slice::from_ref(id))["data"][0].take()).into_response()
        }
        Some(id) => axum::Json(openai_list(std::slice::from_ref(id))["data"][0].take()).into_response(),
        None => ProxyError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "no model {:?} is available to this key",
                ez_contract::report::clean_copy(id, 256)
            ),
        )
        .into_response(),
    }
}

fn gemini_model(id: &str) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "ez-api",
        "displayName": id,
        "description": "served by ez-api",
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    })
}

/// Gemini's `ListModelsResponse`: every model on one page.
fn gemini_list(ids: &[String]) -> Value {
    let models: Vec<Value> = ids.iter().map(|id| gemini_model(id)).collect();
    json!({ "models": models })
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
        let gemini = gemini_list(&ids);
        assert_eq!(gemini["models"][1]["name"], "models/gpt-4o");
        assert_eq!(
            gemini["models"][1]["supportedGenerationMethods"][0],
            "generateContent"
        );
        let openai = openai_list(&ids);
        assert_eq!(openai["object"], "list");
        assert_eq!(
            openai["data"][0],
            json!({ "id": "claude", "object": "model", "created": 0, "owned_by": "ez-api" })
        );
    }
}
