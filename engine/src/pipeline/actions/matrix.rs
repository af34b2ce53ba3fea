//! `strategy.matrix` of an Actions job: its combinations (`include`/`exclude` applied), each
//! becoming one Cairn step, and `${{ matrix.K }}` substituted into the job's text.

use std::collections::BTreeMap;

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::super::error::Diagnostics;
use super::super::yaml::{check_keys, describe, entry, is_null, location};
use super::STRATEGY_KEYS;

/// More matrix combinations than this is refused: each one is a step.
const MAX_COMBINATIONS: usize = 256;

/// The job's matrix combinations as (step id, values); one entry with no values without one.
pub(super) fn expand_matrix(
    mapping: &MarkedMappingNode,
    base: &str,
    job: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<(String, BTreeMap<String, String>)> {
    let single = vec![(base.to_owned(), BTreeMap::new())];
    let Some((_, strategy)) = entry(mapping, "strategy") else {
        return single;
    };
    let Some(strategy) = strategy.as_mapping() else {
        diagnostics.report(
            location(strategy),
            format!("`strategy` of job `{job}` must be a mapping with `matrix`"),
        );
        return single;
    };
    check_keys(
        strategy,
        STRATEGY_KEYS,
        &format!("in `strategy` of job `{job}`"),
        diagnostics,
    );
    let Some((_, matrix)) = entry(strategy, "matrix") else {
        return single;
    };
    let Some(matrix) = matrix.as_mapping() else {
        diagnostics.report(
            location(matrix),
            format!(
                "`strategy.matrix` of job `{job}` must be a mapping of names to lists of values"
            ),
        );
        return single;
    };
    let mut combinations: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    for (key, value) in matrix.iter() {
        match key.as_str() {
            "include" | "exclude" => {
                let Some(items) = value.as_sequence() else {
                    diagnostics.report(
                        location(value),
                        format!(
                            "`matrix.{}` of job `{job}` must be a list of mappings",
                            key.as_str()
                        ),
                    );
                    continue;
                };
                for item in items.iter() {
                    let Some(values) = matrix_values(item, job, diagnostics) else {
                        continue;
                    };
                    if key.as_str() == "include" {
                        include.push(values)
                    } else {
                        exclude.push(values)
                    }
                }
            }
            name => {
                let Some(items) = value.as_sequence() else {
                    diagnostics.report(
                        location(value),
                        format!(
                            "`matrix.{name}` of job `{job}` must be a list of values, not {}",
                            describe(value)
                        ),
                    );
                    continue;
                };
                let mut values = Vec::new();
                for item in items.iter() {
                    match item.as_scalar() {
                        Some(scalar) if !is_null(scalar) => values.push(scalar.as_str().to_owned()),
                        _ => diagnostics.report(location(item), format!("values of `matrix.{name}` of job `{job}` must be strings or numbers, not {}", describe(item))),
                    }
                }
                combinations = combinations
                    .into_iter()
                    .flat_map(|combination| {
                        values.iter().map(move |value| {
                            let mut next = combination.clone();
                            next.insert(name.to_owned(), value.clone());
                            next
                        })
                    })
                    .collect();
                if combinations.len() > MAX_COMBINATIONS {
                    diagnostics.report(location(value), format!("the matrix of job `{job}` has more than {MAX_COMBINATIONS} combinations"));
                    return single;
                }
            }
        }
    }
    combinations.retain(|combination| {
        !exclude
            .iter()
            .any(|excluded| excluded.iter().all(|(k, v)| combination.get(k) == Some(v)))
    });
    for extra in include {
        // An `include` entry extends the combinations it matches on their own keys, else adds one.
        let mut matched = false;
        for combination in &mut combinations {
            let agrees = extra
                .iter()
                .all(|(k, v)| combination.get(k).is_none_or(|own| own == v));
            let extends = extra.keys().any(|k| !combination.contains_key(k));
            if agrees && extends {
                combination.extend(extra.clone());
                matched = true;
            }
        }
        if !matched {
            combinations.push(extra);
        }
    }
    if combinations.len() == 1 && combinations[0].is_empty() {
        return single;
    }
    combinations
        .into_iter()
        .map(|values| {
            let suffix: Vec<String> = values.values().map(|v| slug(v)).collect();
            (format!("{base}-{}", suffix.join("-")), values)
        })
        .collect()
}

fn matrix_values(
    node: &Node,
    job: &str,
    diagnostics: &mut Diagnostics,
) -> Option<BTreeMap<String, String>> {
    let Some(mapping) = node.as_mapping() else {
        diagnostics.report(
            location(node),
            format!("each `include`/`exclude` entry of job `{job}` must be a mapping"),
        );
        return None;
    };
    let mut values = BTreeMap::new();
    for (key, value) in mapping.iter() {
        match value.as_scalar() {
            Some(scalar) if !is_null(scalar) => {
                values.insert(key.as_str().to_owned(), scalar.as_str().to_owned());
            }
            _ => diagnostics.report(
                location(value),
                format!(
                    "`{}` in the matrix of job `{job}` must be a string or number",
                    key.as_str()
                ),
            ),
        }
    }
    Some(values)
}

/// A matrix value as part of a step id: lowercase letters and digits, `-` for the rest.
pub(super) fn slug(value: &str) -> String {
    let mut slug: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug = slug.trim_matches('-').to_owned();
    if slug.is_empty() {
        "x".to_owned()
    } else {
        slug
    }
}

/// `${{ matrix.K }}` in a job's text, replaced by the combination's value.
pub(super) fn substitute_matrix(text: &str, matrix: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (key, value) in matrix {
        for pattern in [
            format!("${{{{ matrix.{key} }}}}"),
            format!("${{{{matrix.{key}}}}}"),
        ] {
            out = out.replace(&pattern, value);
        }
    }
    out
}
