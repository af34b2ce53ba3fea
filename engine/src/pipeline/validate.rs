//! Checks across steps, run once every step is well formed on its own: unknown and
//! self-dependencies, dependency cycles, and `when:` conditions reading `steps.<id>` of a step
//! that is unknown or not a direct dependency (the executor puts only direct dependencies
//! under `steps`, so anything else would silently read `null`).

use std::collections::{HashMap, HashSet, VecDeque};

// Kosaraju walks with an explicit stack; petgraph's Tarjan recurses once per step of a chain and
// overflowed the stack on a 20,000-step workflow.
use petgraph::algo::kosaraju_scc;

use super::dag::Dag;
use super::error::Diagnostics;
use super::model::Workflow;
use super::parse::Spans;
use super::suggest::did_you_mean;

pub(crate) fn validate(workflow: &Workflow, spans: &Spans, diagnostics: &mut Diagnostics) {
    let ids: Vec<&str> = workflow.steps.iter().map(|step| step.id.as_str()).collect();
    // A set, so checking every dependency stays linear in the number of steps.
    let known: HashSet<&str> = ids.iter().copied().collect();
    let mut graph_is_sound = true;
    for (step, step_spans) in workflow.steps.iter().zip(&spans.steps) {
        for (dependency, location) in step.depends_on.iter().zip(&step_spans.depends_on) {
            if *dependency == step.id {
                diagnostics.report(*location, format!("step `{}` depends on itself", step.id));
                graph_is_sound = false;
            } else if !known.contains(dependency.as_str()) {
                diagnostics.report(
                    *location,
                    format!(
                        "step `{}` depends on unknown step `{dependency}`{}",
                        step.id,
                        did_you_mean(dependency, ids.iter().copied())
                    ),
                );
                graph_is_sound = false;
            }
        }
    }
    let dag = Dag::new(workflow);
    let has_cycle = report_cycles(workflow, spans, &dag, diagnostics);
    if graph_is_sound && !has_cycle {
        check_when_references(workflow, spans, &dag, diagnostics);
    }
}

/// One diagnostic per cycle (per strongly connected component), naming it in dependency
/// order from its first step in the file. Returns whether any was found.
fn report_cycles(
    workflow: &Workflow,
    spans: &Spans,
    dag: &Dag,
    diagnostics: &mut Diagnostics,
) -> bool {
    let mut found = false;
    for component in kosaraju_scc(dag.graph()) {
        if component.len() < 2 {
            continue;
        }
        found = true;
        let members: HashSet<usize> = component.iter().map(|node| node.index()).collect();
        let Some(&start) = members.iter().min() else {
            continue;
        };
        let cycle = shortest_cycle(dag, start, &members);
        let names: Vec<&str> = cycle.iter().map(|&index| dag.id(index)).collect();
        // Point at the first edge of the cycle: `start`'s `depends_on` entry naming the next step.
        let next_id = cycle.get(1).map(|&index| dag.id(index));
        let location = workflow.steps[start]
            .depends_on
            .iter()
            .position(|dependency| Some(dependency.as_str()) == next_id)
            .and_then(|position| spans.steps[start].depends_on.get(position).copied())
            .unwrap_or(workflow.steps[start].location);
        diagnostics.report(
            location,
            format!("dependency cycle: {}", names.join(" -> ")),
        );
    }
    found
}

/// The shortest walk `start -> … -> start` along "depends on" edges inside `members`
/// (breadth-first, neighbours in file order so the result is reproducible). Bookkeeping is
/// sized by the cycle, not the workflow, so many small cycles stay linear.
fn shortest_cycle(dag: &Dag, start: usize, members: &HashSet<usize>) -> Vec<usize> {
    let mut came_from: HashMap<usize, usize> = HashMap::with_capacity(members.len());
    let mut queue = VecDeque::from([start]);
    while let Some(current) = queue.pop_front() {
        for next in dag.dependencies(current) {
            if !members.contains(&next) {
                continue;
            }
            if next == start {
                let mut cycle = vec![start];
                let mut walk = current;
                while walk != start {
                    cycle.push(walk);
                    walk = came_from.get(&walk).copied().unwrap_or(start);
                }
                cycle[1..].reverse();
                cycle.push(start);
                return cycle;
            }
            if let std::collections::hash_map::Entry::Vacant(entry) = came_from.entry(next) {
                entry.insert(current);
                queue.push_back(next);
            }
        }
    }
    // Unreachable for a strongly connected component; a one-step "cycle" is still a true
    // statement if it ever happened.
    vec![start, start]
}

fn check_when_references(
    workflow: &Workflow,
    spans: &Spans,
    dag: &Dag,
    diagnostics: &mut Diagnostics,
) {
    let ids: Vec<&str> = workflow.steps.iter().map(|step| step.id.as_str()).collect();
    for (index, (step, step_spans)) in workflow.steps.iter().zip(&spans.steps).enumerate() {
        let dependencies = dag.dependencies(index);
        for (location, referenced) in &step_spans.when_step_references {
            match dag.index_of(referenced) {
                None => diagnostics.report(
                    *location,
                    format!(
                        "`when` of step `{}` reads unknown step `{referenced}`{}",
                        step.id,
                        did_you_mean(referenced, ids.iter().copied())
                    ),
                ),
                Some(other) if !dependencies.contains(&other) => diagnostics.report(
                    *location,
                    format!(
                        "`when` of step `{}` reads step `{referenced}`, which is not in its `depends_on`; `steps.<id>` holds only direct dependencies, so add `{referenced}` to `depends_on`",
                        step.id
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}
