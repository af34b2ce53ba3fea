//! Which strategy a deploy uses. The rules decide a floor — `with: strategy:` fixes it, a
//! `hotfix` commit on a low- or medium-risk change takes the fast path, otherwise the risk
//! level's strategy (`strategies:`) — and the router's `choose_deploy_strategy` may only make
//! the deploy more careful (rolling → blue-green → canary), never less: a commit message that
//! talks a model into a hotfix must not skip a canary.

use serde_json::{Value, json};

use super::config::{DeployConfig, Strategy};
use crate::llm::{CallScope, Request, Router, Task};

/// The strategy and why, for the deploy of `config` whose commit says `subject`.
pub async fn choose(
    config: &DeployConfig,
    subject: &str,
    branch: &str,
    router: Option<&Router>,
    scope: Option<&CallScope>,
) -> (Strategy, String) {
    if config.strategy_fixed {
        return (config.strategy, config.strategy_reason.clone());
    }
    let hotfix = is_hotfix(subject, branch);
    if hotfix && config.risk != "high" {
        return (
            Strategy::Hotfix,
            format!(
                "a hotfix (`{}`) at {} risk: the fast path, still health-checked",
                short(subject),
                config.risk
            ),
        );
    }
    let floor = config.strategy;
    let floor_reason = if hotfix {
        format!(
            "a hotfix, but risk is high: {} (the fast path is only for low and medium risk)",
            floor.as_str()
        )
    } else {
        config.strategy_reason.clone()
    };
    let Some(router) = router else {
        return (floor, floor_reason);
    };
    if floor == Strategy::Canary {
        // Nothing is more careful than a canary: asking could not change the outcome.
        return (floor, floor_reason);
    }
    let request = Request {
        task: Task::ChooseDeployStrategy,
        instruction: "You choose how a CI/CD system deploys a change: rolling (replace replicas one at a time), blue_green \
                      (start a full new set, switch at once, keep the old set), canary (shift a small share of traffic first \
                      and compare it statistically). Choose the most careful strategy the change needs. Answer in JSON."
            .into(),
        input: format!(
            "Service: {}\nReplicas: {}\nRisk: {}\nCommit: {}\nRules choose: {}",
            config.service,
            config.replicas,
            config.risk,
            short(subject),
            floor.as_str()
        ),
        diff: None,
    };
    let answer = router
        .ask(
            scope,
            request,
            || json!({ "strategy": floor.as_str(), "reason": floor_reason }),
        )
        .await;
    let proposed = answer
        .value
        .as_ref()
        .and_then(|v| v.get("strategy"))
        .and_then(Value::as_str)
        .and_then(Strategy::parse);
    let why = answer
        .value
        .as_ref()
        .and_then(|v| v.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_string();
    match proposed {
        Some(strategy) if strategy.caution() > floor.caution() => (
            strategy,
            format!(
                "{floor_reason}; raised to {} by the {} model: {}",
                strategy.as_str(),
                answer.tier.as_str(),
                short(&why)
            ),
        ),
        Some(strategy) if strategy != floor => (
            floor,
            format!(
                "{floor_reason} (the {} model proposed {}, which is less careful than the rules allow)",
                answer.tier.as_str(),
                strategy.as_str()
            ),
        ),
        _ => (floor, floor_reason),
    }
}

/// `hotfix: …`, `hotfix(api): …`, `[hotfix] …` or a `hotfix/…` branch.
pub fn is_hotfix(subject: &str, branch: &str) -> bool {
    let subject = subject.trim().to_ascii_lowercase();
    branch.starts_with("hotfix/")
        || subject.starts_with("[hotfix]")
        || subject
            .strip_prefix("hotfix")
            .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('('))
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotfix_markers() {
        assert!(is_hotfix("hotfix: answer HEAD", "main"));
        assert!(is_hotfix("Hotfix(api): x", "main"));
        assert!(is_hotfix("[HOTFIX] x", "main"));
        assert!(is_hotfix("x", "hotfix/head"));
        assert!(!is_hotfix("hotfixes are rare", "main"));
        assert!(!is_hotfix("Add hotfix docs", "main"));
    }

    #[tokio::test]
    async fn the_hotfix_fast_path_is_closed_to_high_risk() {
        let with = json!({"service": "shop", "image": "shop:abc", "proxy_socket": "/tmp/s", "backend": "be"});
        let ws = std::path::Path::new("/tmp");
        let medium = DeployConfig::from_with(&with, &json!({"risk": "medium"}), ws, |_| None)
            .expect("valid");
        assert_eq!(
            choose(&medium, "hotfix: x", "main", None, None).await.0,
            Strategy::Hotfix
        );
        assert_eq!(
            choose(&medium, "Add x", "main", None, None).await.0,
            Strategy::Rolling
        );
        let high =
            DeployConfig::from_with(&with, &json!({"risk": "high"}), ws, |_| None).expect("valid");
        let (strategy, reason) = choose(&high, "hotfix: x", "main", None, None).await;
        assert_eq!(strategy, Strategy::Canary);
        assert!(reason.contains("only for low and medium"), "{reason}");
    }
}
