//! The step graph of a validated workflow: which steps wait for which, and in what order they
//! can start. Node `i` is `Workflow::steps[i]`; an edge goes from a dependency to its dependant.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use super::model::Workflow;

/// The dependency graph, by step index (the position in `Workflow::steps`).
#[derive(Debug, Clone)]
pub struct Dag {
    ids: Vec<String>,
    /// Index by id, so lookups stay O(1) for workflows with thousands of steps.
    positions: HashMap<String, usize>,
    graph: DiGraph<(), ()>,
    /// Adjacency in file order, computed once so lookups can hand out slices.
    dependencies: Vec<Vec<usize>>,
    dependants: Vec<Vec<usize>>,
}

impl Dag {
    /// Builds the graph. Dependencies on unknown ids and on the step itself are left out: a
    /// validated workflow has none, and [`super::validate`] reports them with positions.
    pub fn new(workflow: &Workflow) -> Dag {
        let ids: Vec<String> = workflow.steps.iter().map(|step| step.id.clone()).collect();
        let index_by_id: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(index, id)| (id.as_str(), index))
            .collect();
        let mut graph = DiGraph::with_capacity(ids.len(), ids.len());
        for _ in &ids {
            graph.add_node(());
        }
        for (dependant, step) in workflow.steps.iter().enumerate() {
            for dependency in &step.depends_on {
                if let Some(&dependency) = index_by_id.get(dependency.as_str())
                    && dependency != dependant
                {
                    graph.update_edge(NodeIndex::new(dependency), NodeIndex::new(dependant), ());
                }
            }
        }
        let neighbors = |direction: Direction| -> Vec<Vec<usize>> {
            (0..ids.len())
                .map(|index| {
                    let mut found: Vec<usize> = graph
                        .neighbors_directed(NodeIndex::new(index), direction)
                        .map(NodeIndex::index)
                        .collect();
                    found.sort_unstable();
                    found
                })
                .collect()
        };
        let dependencies = neighbors(Direction::Incoming);
        let dependants = neighbors(Direction::Outgoing);
        let mut positions = HashMap::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            // The first of duplicate ids wins, as a front-to-back search would find it.
            positions.entry(id.clone()).or_insert(index);
        }
        Dag {
            ids,
            positions,
            graph,
            dependencies,
            dependants,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of step `index` (panics when out of range, like slice indexing).
    pub fn id(&self, index: usize) -> &str {
        &self.ids[index]
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.positions.get(id).copied()
    }

    /// Every step after all of its dependencies; among steps that are ready together, file
    /// order, so runs are reproducible. Steps on a cycle are left out (validation refuses
    /// cycles, so a loaded workflow has all its steps here).
    pub fn topological_order(&self) -> Vec<usize> {
        let mut waiting_on: Vec<usize> = self.dependencies.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> = waiting_on
            .iter()
            .enumerate()
            .filter(|(_, count)| **count == 0)
            .map(|(index, _)| Reverse(index))
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(Reverse(index)) = ready.pop() {
            order.push(index);
            for &dependant in &self.dependants[index] {
                waiting_on[dependant] -= 1;
                if waiting_on[dependant] == 0 {
                    ready.push(Reverse(dependant));
                }
            }
        }
        order
    }

    /// [`Dag::topological_order`] as step ids.
    pub fn topological_ids(&self) -> Vec<&str> {
        self.topological_order()
            .into_iter()
            .map(|index| self.id(index))
            .collect()
    }

    /// The steps `index` waits for directly, in file order.
    pub fn dependencies(&self, index: usize) -> Vec<usize> {
        self.dependencies[index].clone()
    }

    /// The steps that wait for `index` directly, in file order.
    pub fn dependants(&self, index: usize) -> Vec<usize> {
        self.dependants[index].clone()
    }

    /// Everything `index` waits for, directly or not, in file order.
    pub fn ancestors(&self, index: usize) -> Vec<usize> {
        self.reachable(index, Direction::Incoming)
    }

    /// Everything that waits for `index`, directly or not, in file order: what a failure of
    /// `index` holds back.
    pub fn descendants(&self, index: usize) -> Vec<usize> {
        self.reachable(index, Direction::Outgoing)
    }

    /// Steps without dependencies, in file order.
    pub fn roots(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&index| self.dependencies(index).is_empty())
            .collect()
    }

    /// The underlying graph, for algorithms (cycle search) that want petgraph directly.
    pub(crate) fn graph(&self) -> &DiGraph<(), ()> {
        &self.graph
    }

    fn reachable(&self, index: usize, direction: Direction) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![index];
        while let Some(current) = stack.pop() {
            for next in self
                .graph
                .neighbors_directed(NodeIndex::new(current), direction)
            {
                if !seen[next.index()] {
                    seen[next.index()] = true;
                    stack.push(next.index());
                }
            }
        }
        seen[index] = false;
        (0..self.len()).filter(|&other| seen[other]).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::super::model::{Action, Step, Workflow};
    use super::*;

    fn workflow(steps: &[(&str, &[&str])]) -> Workflow {
        Workflow {
            name: "test".to_owned(),
            description: None,
            trigger: None,
            concurrency: None,
            env: Default::default(),
            steps: steps
                .iter()
                .map(|(id, depends_on)| Step {
                    id: (*id).to_owned(),
                    name: (*id).to_owned(),
                    action: Action::Run {
                        command: "true".to_owned(),
                    },
                    depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
                    timeout: None,
                    retry: Default::default(),
                    on_failure: Default::default(),
                    when: None,
                    env: Default::default(),
                    secrets: Default::default(),
                    sandbox: Default::default(),
                    llm: Default::default(),
                    runs_on: Vec::new(),
                    location: Default::default(),
                })
                .collect(),
            sandbox: Default::default(),
            llm: Default::default(),
        }
    }

    #[test]
    fn orders_dependencies_first_with_file_order_ties() {
        let dag = Dag::new(&workflow(&[
            ("deploy", &["build"]),
            ("analyze", &[]),
            ("build", &["test", "extra"]),
            ("test", &["analyze"]),
            ("extra", &["analyze"]),
        ]));
        assert_eq!(
            dag.topological_ids(),
            ["analyze", "test", "extra", "build", "deploy"]
        );
        assert_eq!(dag.dependencies(2), [3, 4]);
        assert_eq!(dag.dependants(1), [3, 4]);
        assert_eq!(dag.descendants(1), [0, 2, 3, 4]);
        assert_eq!(dag.ancestors(0), [1, 2, 3, 4]);
        assert_eq!(dag.roots(), [1]);
        assert_eq!(dag.index_of("build"), Some(2));
    }

    #[test]
    fn leaves_out_cycles_and_unknown_dependencies() {
        let dag = Dag::new(&workflow(&[
            ("a", &["b"]),
            ("b", &["a"]),
            ("c", &["nope", "c"]),
        ]));
        assert_eq!(dag.topological_order(), [2]);
    }
}
