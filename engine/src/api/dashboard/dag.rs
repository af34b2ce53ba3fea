//! A run's DAG as SVG: steps in columns by depth (a step sits one column right of its deepest
//! dependency), edges as lines, each node coloured and labelled by its state. `run.js` updates
//! the node classes live.

use std::collections::HashMap;

use maud::{Markup, html};

const COLUMN: i64 = 180;
const ROW: i64 = 56;
const WIDTH: i64 = 150;
const HEIGHT: i64 = 34;

/// `steps` as (id, state) in file order; `edges` as (from, to).
pub fn svg(steps: &[(String, String)], edges: &[(String, String)]) -> Markup {
    let mut depth: HashMap<&str, i64> = HashMap::new();
    // File order is a topological order of a valid workflow once repeated to a fixpoint;
    // bounded by the number of steps, so a malformed edge list cannot loop forever.
    for _ in 0..steps.len().max(1) {
        let mut changed = false;
        for (id, _) in steps {
            let d = edges
                .iter()
                .filter(|(_, to)| to == id)
                .map(|(from, _)| depth.get(from.as_str()).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            if depth.get(id.as_str()) != Some(&d) {
                depth.insert(id.as_str(), d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut rows: HashMap<i64, i64> = HashMap::new();
    let mut place: HashMap<&str, (i64, i64)> = HashMap::new();
    for (id, _) in steps {
        let column = depth.get(id.as_str()).copied().unwrap_or(0);
        let row = rows.entry(column).or_default();
        place.insert(id.as_str(), (10 + column * COLUMN, 10 + *row * ROW));
        *row += 1;
    }
    let width = place.values().map(|p| p.0).max().unwrap_or(0) + WIDTH + 20;
    let height = place.values().map(|p| p.1).max().unwrap_or(0) + HEIGHT + 20;
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox={"0 0 " (width) " " (height)} role="img" aria-label="The run's steps and their dependencies" {
            @for (from, to) in edges {
                @if let (Some(a), Some(b)) = (place.get(from.as_str()), place.get(to.as_str())) {
                    line.edge x1=(a.0 + WIDTH) y1=(a.1 + HEIGHT / 2) x2=(b.0) y2=(b.1 + HEIGHT / 2) {}
                }
            }
            @for (id, state) in steps {
                @if let Some((x, y)) = place.get(id.as_str()) {
                    g data-step=(id) class={"node state-" (state)} {
                        rect x=(x) y=(y) width=(WIDTH) height=(HEIGHT) rx="6" {}
                        text x=(x + 10) y=(y + 22) { (id) " · " tspan.node-state { (state) } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SVG elements are closed explicitly: an unclosed `<line>` in HTML's SVG content swallows
    /// every element after it, so only the first edge would be drawn.
    #[test]
    fn every_edge_and_node_is_its_own_closed_element() {
        let steps: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .map(|id| (id.to_string(), "succeeded".to_string()))
            .collect();
        let edges = vec![
            ("a".to_string(), "b".to_string()),
            ("a".to_string(), "c".to_string()),
        ];
        let html = svg(&steps, &edges).into_string();
        assert_eq!(html.matches("<line").count(), 2, "{html}");
        assert_eq!(html.matches("</line>").count(), 2, "{html}");
        assert_eq!(html.matches("</rect>").count(), 3, "{html}");
    }
}
