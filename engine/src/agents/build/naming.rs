//! Image names: the repository part from `with: image:` or the repository's directory name,
//! and tags from commits and branches, made valid for Docker's reference grammar
//! (`[a-z0-9]+([._-][a-z0-9]+)*` path components, tags `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).

use std::path::Path;

use serde_json::Value;

/// The image repository: `image` when given, else the run's repository directory name
/// (`context.repo`, without `.git`), else the workspace's directory name.
pub fn repository_name(image: Option<&str>, context: &Value, workspace: &Path) -> String {
    let raw = match image {
        // A tag given with the name is not the repository; the agent chooses the tags.
        Some(image) => strip_tag(image).to_string(),
        None => context
            .get("repo")
            .and_then(Value::as_str)
            .and_then(last_component)
            .or_else(|| {
                workspace
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_default(),
    };
    let components: Vec<String> = raw
        .split('/')
        .map(sanitize_component)
        .filter(|c| !c.is_empty())
        .collect();
    if components.is_empty() {
        "image".to_string()
    } else {
        components.join("/")
    }
}

/// A valid tag from a branch name or commit (`feature/Login` → `feature-Login`).
pub fn tag_name(raw: &str) -> String {
    let mut tag: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.insert(0, '_');
    }
    tag.truncate(128);
    if tag.is_empty() { "_".to_string() } else { tag }
}

fn strip_tag(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match (image.rfind(':'), image.rfind('/')) {
        (Some(colon), Some(slash)) if colon > slash => &image[..colon],
        (Some(colon), None) => &image[..colon],
        _ => image,
    }
}

fn last_component(repo: &str) -> Option<String> {
    let trimmed = repo.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next()?;
    let last = last.strip_suffix(".git").unwrap_or(last);
    (!last.is_empty()).then(|| last.to_string())
}

/// Lowercase; runs of other characters become one separator; no separator at either end.
fn sanitize_component(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars().flat_map(char::to_lowercase) {
        let separator_allowed = !out.is_empty() && !out.ends_with(['.', '_', '-']);
        if c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || (matches!(c, '.' | '_' | '-') && separator_allowed)
        {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with(['.', '_', '-']) {
            out.push('-');
        }
    }
    out.trim_end_matches(['.', '_', '-']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repository_from_context_or_image() {
        let ws = Path::new("/work/run-1/src");
        assert_eq!(
            repository_name(None, &json!({"repo": "/srv/git/My_Service.git/"}), ws),
            "my_service"
        );
        assert_eq!(
            repository_name(None, &json!({"repo": "git@host:team/Web App"}), ws),
            "web-app"
        );
        assert_eq!(
            repository_name(Some("Registry.local/Team/API:v1"), &json!({}), ws),
            "registry.local/team/api"
        );
        assert_eq!(repository_name(None, &json!({}), ws), "src");
        assert_eq!(repository_name(Some("!!!"), &json!({}), ws), "image");
    }

    #[test]
    fn tags_are_valid() {
        assert_eq!(tag_name("feature/Login"), "feature-Login");
        assert_eq!(tag_name("-x"), "_-x");
        assert_eq!(tag_name(&"a".repeat(200)).len(), 128);
    }
}
