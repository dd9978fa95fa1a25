//! Orders one stage's hooks by their data dependencies (spec §5 "DAG"), once, at load time.
//!
//! Hook B depends on hook A when B reads a root key (text before the first `.`; header names are
//! their own root) that A writes and A is listed earlier, or when B's entry names A in `after:`.
//! The order is a topological sort that keeps list order among hooks free to run (Kahn with a
//! min-heap on list position). Duplicate names, `after:` naming an absent hook and cycles are
//! errors. Built with `petgraph`; strongly connected components name the hooks in a cycle.

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// One hook as the DAG sees it.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: &'static str,
    pub reads: &'static [&'static str],
    pub writes: &'static [&'static str],
    pub after: Vec<String>,
}

/// A hook in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    /// Position in the configured list.
    pub index: usize,
    /// Positions of the hooks it depends on.
    pub depends_on: Vec<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("hook \"{0}\" is listed twice")]
    Duplicate(String),
    #[error("hook \"{hook}\" has after: \"{missing}\", which is not in this stage")]
    UnknownAfter { hook: String, missing: String },
    #[error("hooks form a dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

fn root(key: &str) -> &str {
    key.split('.').next().unwrap_or(key)
}

/// Order `nodes` (given in list order).
pub fn order(nodes: &[Node]) -> Result<Vec<Ordered>, Error> {
    let mut seen = BTreeSet::new();
    for n in nodes {
        if !seen.insert(n.name) {
            return Err(Error::Duplicate(n.name.to_owned()));
        }
    }
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(nodes.len(), nodes.len());
    let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| g.add_node(i)).collect();
    for (b, nb) in nodes.iter().enumerate() {
        let reads: BTreeSet<&str> = nb.reads.iter().map(|k| root(k)).collect();
        for (a, na) in nodes.iter().enumerate().take(b) {
            if na.writes.iter().any(|w| reads.contains(root(w))) {
                g.update_edge(idx[a], idx[b], ());
            }
        }
        for dep in &nb.after {
            let a =
                nodes
                    .iter()
                    .position(|n| n.name == dep)
                    .ok_or_else(|| Error::UnknownAfter {
                        hook: nb.name.to_owned(),
                        missing: dep.clone(),
                    })?;
            g.update_edge(idx[a], idx[b], ());
        }
    }

    // Kahn, smallest list position first among the ready nodes.
    let mut indegree: Vec<usize> = idx
        .iter()
        .map(|&n| g.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        let mut depends_on: Vec<usize> = g
            .neighbors_directed(idx[i], Direction::Incoming)
            .map(|n| g[n])
            .collect();
        depends_on.sort_unstable();
        out.push(Ordered {
            index: i,
            depends_on,
        });
        for succ in g.neighbors_directed(idx[i], Direction::Outgoing) {
            let s = g[succ];
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.push(Reverse(s));
            }
        }
    }
    if out.len() < nodes.len() {
        let cycle = tarjan_scc(&g)
            .into_iter()
            .find(|c| c.len() > 1)
            .map(|mut c| {
                c.sort_by_key(|n| g[*n]);
                c.into_iter().map(|n| nodes[g[n]].name.to_owned()).collect()
            })
            .unwrap_or_default();
        return Err(Error::Cycle(cycle));
    }
    Ok(out)
}

/// Group execution order into levels: hooks in one level do not depend on each other
/// (display only; execution is sequential).
pub fn levels(order: &[Ordered]) -> Vec<Vec<usize>> {
    let mut level_of = std::collections::HashMap::new();
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for o in order {
        let lvl = o
            .depends_on
            .iter()
            .filter_map(|d| level_of.get(d))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level_of.insert(o.index, lvl);
        if levels.len() <= lvl {
            levels.resize_with(lvl + 1, Vec::new);
        }
        levels[lvl].push(o.index);
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &'static str, r: &'static [&'static str], w: &'static [&'static str]) -> Node {
        Node {
            name,
            reads: r,
            writes: w,
            after: vec![],
        }
    }

    fn names(nodes: &[Node], o: &[Ordered]) -> Vec<&'static str> {
        o.iter().map(|x| nodes[x.index].name).collect()
    }

    #[test]
    fn independent_hooks_keep_list_order() {
        let nodes = [
            node("c", &[], &[]),
            node("a", &[], &[]),
            node("b", &[], &[]),
        ];
        assert_eq!(names(&nodes, &order(&nodes).unwrap()), ["c", "a", "b"]);
    }

    #[test]
    fn reader_depends_on_earlier_writer_by_root_key() {
        let nodes = [
            node("w", &[], &["system.0.text"]),
            node("x", &[], &[]),
            node("r", &["system"], &[]),
        ];
        let o = order(&nodes).unwrap();
        assert_eq!(names(&nodes, &o), ["w", "x", "r"]);
        assert_eq!(o[2].depends_on, vec![0]);
        assert!(o[1].depends_on.is_empty());
    }

    #[test]
    fn reader_listed_before_writer_does_not_depend_on_it() {
        let nodes = [node("r", &["messages"], &[]), node("w", &[], &["messages"])];
        let o = order(&nodes).unwrap();
        assert_eq!(names(&nodes, &o), ["r", "w"]);
        assert!(o[0].depends_on.is_empty());
    }

    #[test]
    fn after_moves_a_hook_behind_a_later_one() {
        let mut first = node("first", &[], &[]);
        first.after = vec!["second".into()];
        let nodes = [first, node("second", &[], &[]), node("third", &[], &[])];
        assert_eq!(
            names(&nodes, &order(&nodes).unwrap()),
            ["second", "first", "third"]
        );
    }

    #[test]
    fn cycle_is_an_error_naming_its_hooks() {
        let mut a = node("a", &[], &["system"]);
        a.after = vec!["b".into()];
        let nodes = [a, node("b", &["system"], &[])];
        assert_eq!(
            order(&nodes),
            Err(Error::Cycle(vec!["a".into(), "b".into()]))
        );
    }

    #[test]
    fn duplicate_name_is_an_error() {
        let nodes = [node("a", &[], &[]), node("a", &[], &[])];
        assert_eq!(order(&nodes), Err(Error::Duplicate("a".into())));
    }

    #[test]
    fn after_naming_absent_hook_is_an_error() {
        let mut a = node("a", &[], &[]);
        a.after = vec!["ghost".into()];
        assert!(matches!(order(&[a]), Err(Error::UnknownAfter { .. })));
    }

    #[test]
    fn levels_group_independent_hooks() {
        let nodes = [
            node("w", &[], &["system"]),
            node("x", &[], &[]),
            node("r", &["system"], &[]),
        ];
        let o = order(&nodes).unwrap();
        assert_eq!(levels(&o), vec![vec![0, 1], vec![2]]);
    }
}
