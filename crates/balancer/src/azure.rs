//! Azure OpenAI's URL layouts. The base URL says which one a group uses:
//! - with `?api-version=…` (`https://{resource}.openai.azure.com?api-version=2024-10-21`,
//!   `/openai` optional): deployment URLs, the route's upstream model naming the
//!   deployment — `{resource}/openai/deployments/{deployment}/chat/completions?api-version=…`
//!   (Responses: `{resource}/openai/responses?api-version=…`, the model in the body);
//! - without (`https://{resource}.openai.azure.com/openai/v1`, or the bare resource, to
//!   which `/openai/v1` is added): the v1 API, the model in the body.

/// The URL of `path` (`/chat/completions`, `/embeddings`, …) for `deployment` on the Azure
/// resource at `base_url`.
pub fn url(base_url: &str, path: &str, deployment: &str) -> String {
    let (base, query) = base_url.split_once('?').unwrap_or((base_url, ""));
    let base = base.trim_end_matches('/');
    let version = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("api-version="))
        .filter(|v| !v.is_empty());
    let Some(version) = version else {
        if base.ends_with("/v1") {
            return format!("{base}{path}");
        }
        let resource = base.strip_suffix("/openai").unwrap_or(base);
        return format!("{resource}/openai/v1{path}");
    };
    let resource = base.strip_suffix("/openai").unwrap_or(base);
    if path == "/responses" {
        return format!("{resource}/openai/responses?api-version={version}");
    }
    format!("{resource}/openai/deployments/{deployment}{path}?api-version={version}")
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn deployment_urls_carry_the_api_version_and_v1_urls_the_model_in_the_body() {
        assert_eq!(
            url(
                "https://acme.openai.azure.com?api-version=2024-10-21",
                "/chat/completions",
                "gpt-4o-prod"
            ),
            "https://acme.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            url(
                "https://acme.openai.azure.com/openai/?api-version=2024-10-21",
                "/embeddings",
                "emb"
            ),
            "https://acme.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        assert_eq!(
            url(
                "https://acme.openai.azure.com/openai?api-version=preview",
                "/responses",
                "gpt-5"
            ),
            "https://acme.openai.azure.com/openai/responses?api-version=preview"
        );
        assert_eq!(
            url(
                "https://acme.openai.azure.com/openai/v1/",
                "/chat/completions",
                "gpt-4o"
            ),
            "https://acme.openai.azure.com/openai/v1/chat/completions"
        );
        assert_eq!(
            url("https://acme.openai.azure.com", "/chat/completions", "gpt-4o"),
            "https://acme.openai.azure.com/openai/v1/chat/completions"
        );
    }
}
