//! Gemini's routes, `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` and `:countTokens` — and the same under `/v1/models/`, which
//! `google-genai` calls when given a base URL — with the key in `x-goog-api-key` or
//! `?key=`: the model and the stream flag come from the URL, then the request takes the
//! common path (`proxy::forward`).

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::ProxyError;
use crate::proxy::{BalancerState, forward};
use crate::upstream::Ingress;

/// The model and stream flag a Gemini URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathModel {
    pub model: String,
    pub stream: bool,
    /// `:countTokens` rather than a generation.
    pub count: bool,
}

/// `gemini-2.5-flash:streamGenerateContent` with `alt=sse` → the model, streamed.
pub fn parse(target: &str, query: Option<&str>) -> Result<PathModel, ProxyError> {
    let (model, method) = target.rsplit_once(':').ok_or_else(|| {
        ProxyError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "expected /v1beta/models/{model}:generateContent or :streamGenerateContent",
        )
    })?;
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty() || model.len() > 256 {
        return Err(ProxyError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the URL needs a model",
        ));
    }
    let sse = query.is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
    let stream = match method {
        "generateContent" | "countTokens" => false,
        "streamGenerateContent" if sse => true,
        "streamGenerateContent" => {
            return Err(ProxyError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_parameter",
                "streamGenerateContent is served as server-sent events: add ?alt=sse",
            )
            .with_param("alt"));
        }
        _ => {
            return Err(ProxyError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "the gateway serves generateContent, streamGenerateContent and countTokens, not {method:?}"
                ),
            ));
        }
    };
    Ok(PathModel {
        model: model.to_owned(),
        stream,
        count: method == "countTokens",
    })
}

pub async fn generate(
    State(state): State<BalancerState>,
    Path(target): Path<String>,
    mut req: Request,
) -> Response {
    match parse(&target, req.uri().query()) {
        Ok(path) => {
            let ingress = if path.count {
                Ingress::GeminiCountTokens
            } else {
                Ingress::Gemini
            };
            req.extensions_mut().insert(path);
            forward(&state, ingress, req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_urls_name_the_model_and_the_method() {
        let plain = parse("gemini-2.5-flash:generateContent", None).unwrap();
        assert_eq!(
            plain,
            PathModel {
                model: "gemini-2.5-flash".into(),
                stream: false,
                count: false,
            }
        );
        assert!(parse("models/gemini-2.5-flash:countTokens", None).unwrap().count);
        let streamed = parse("gemini-2.5-flash:streamGenerateContent", Some("alt=sse&key=k")).unwrap();
        assert!(streamed.stream);
        assert_eq!(parse("ns.model:generateContent", None).unwrap().model, "ns.model");
        let e = parse("m:streamGenerateContent", None).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "unsupported_parameter")
        );
        assert_eq!(
            parse("m:embedContent", None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            parse("no-method", None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
    }
}
