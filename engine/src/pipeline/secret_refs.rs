//! References to stored secrets in a workflow: `${{ secrets.NAME }}` inside `run:` (it becomes
//! `${NAME}`, an environment variable the step is given), as a whole `env:` value, or listed
//! under a step's `secrets:`. The values are never in the workflow: the executor looks them up
//! when the step starts (`crate::secrets`).

/// `run` text with every `${{ secrets.NAME }}` replaced by `${NAME}`, and the names found.
pub(crate) fn rewrite_references(text: &str) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(text.len());
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            out.push_str(rest);
            return Ok((out, names));
        };
        let expression = after[..end].trim();
        match expression.strip_prefix("secrets.") {
            Some(name) => {
                check(name)?;
                out.push_str(&rest[..start]);
                out.push_str(&format!("${{{name}}}"));
                names.push(name.to_owned());
            }
            // Not a secret: left as written (a shell's own `${{` is unusual but not ours).
            None => out.push_str(&rest[..start + 3 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok((out, names))
}

/// The secret name when `value` is exactly one `${{ secrets.NAME }}`; an error when a
/// reference is only part of it (the value would have to be assembled in the step's shell).
pub(crate) fn whole_reference(value: &str) -> Result<Option<String>, String> {
    let trimmed = value.trim();
    if let Some(inner) = trimmed
        .strip_prefix("${{")
        .and_then(|rest| rest.strip_suffix("}}"))
        && let Some(name) = inner.trim().strip_prefix("secrets.")
        && !inner.contains("}}")
    {
        check(name)?;
        return Ok(Some(name.to_owned()));
    }
    if value.contains("secrets.") && value.contains("${{") {
        return Err("a secret must be the whole value (`KEY: ${{ secrets.NAME }}`); build longer values in the step's script".to_owned());
    }
    Ok(None)
}

fn check(name: &str) -> Result<(), String> {
    crate::secrets::check_name(name).map_err(|error| error.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn rewrites_run_text() {
        let (text, names) =
            rewrite_references("curl -H \"token: ${{ secrets.API_TOKEN }}\" ${{ env.X }}").unwrap();
        assert_eq!(text, "curl -H \"token: ${API_TOKEN}\" ${{ env.X }}");
        assert_eq!(names, ["API_TOKEN"]);
        assert!(rewrite_references("${{ secrets.bad-name }}").is_err());
    }

    #[test]
    fn env_values_are_whole_references() {
        assert_eq!(
            whole_reference("${{ secrets.A }}").unwrap().as_deref(),
            Some("A")
        );
        assert_eq!(whole_reference("plain").unwrap(), None);
        assert!(whole_reference("Bearer ${{ secrets.A }}").is_err());
    }
}
