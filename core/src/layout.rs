//! A layered layout for a DAG drawn left to right, grouped by stage (ingestion → … →
//! deployment): the web UI's run and pipeline graphs. Pure: nodes and edges in, grid
//! positions out; the UI turns them into SVG.
//!
//! Each node gets a column (its layer) and a row. A node's column is one past its deepest
//! predecessor's, and never left of where its stage begins: stages take consecutive bands of
//! columns in the order they first appear (a topological order), so a stage reads as one block
//! even when its steps sit at different depths. Within a column, rows follow the mean row of
//! each node's predecessors (the barycentre heuristic, one sweep), which keeps most edges
//! short and uncrossed without the cost of a full crossing minimisation; ties keep input order.

/// A node to place: `stage` (if any) groups it with others.
#[derive(Clone, Debug)]
pub struct Node {
    pub stage: Option<String>,
}

/// Where each node goes, in grid units.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// `(column, row)` per node, in input order.
    pub at: Vec<(usize, usize)>,
    pub columns: usize,
    pub rows: usize,
    /// Each stage with the columns it spans, first to last (inclusive), in order.
    pub stages: Vec<(Option<String>, usize, usize)>,
}

/// Lays out `nodes` with `edges` (`from` → `to`, indices into `nodes`). Edges that would close
/// a cycle (there are none in a valid plan) are ignored rather than looping.
pub fn layout(nodes: &[Node], edges: &[(usize, usize)]) -> Layout {
    let n = nodes.len();
    let mut preds = vec![Vec::new(); n];
    let mut succs = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(a, b) in edges {
        if a < n && b < n && a != b {
            preds[b].push(a);
            succs[a].push(b);
            indegree[b] += 1;
        }
    }
    // Kahn's algorithm, taking ready nodes in input order.
    let mut order = Vec::with_capacity(n);
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &s in &succs[i] {
            indegree[s] -= 1;
            if indegree[s] == 0 {
                ready.insert(s);
            }
        }
    }
    // Nodes on a cycle: placed after the rest, in input order.
    let placed: std::collections::HashSet<usize> = order.iter().copied().collect();
    order.extend((0..n).filter(|i| !placed.contains(i)));

    let mut column = vec![0usize; n];
    let mut done = vec![false; n];
    let mut stages: Vec<(Option<String>, usize, usize)> = Vec::new();
    let mut widest = 0usize;
    for &i in &order {
        let stage = nodes[i].stage.clone();
        let start = match stages.iter().position(|(s, _, _)| *s == stage) {
            Some(k) => stages[k].1,
            None => {
                let start = if stages.is_empty() { 0 } else { widest + 1 };
                stages.push((stage.clone(), start, start));
                start
            }
        };
        let after = preds[i].iter().filter(|&&p| done[p]).map(|&p| column[p] + 1).max().unwrap_or(0);
        column[i] = after.max(start);
        done[i] = true;
        widest = widest.max(column[i]);
        if let Some(entry) = stages.iter_mut().find(|(s, _, _)| *s == stage) {
            entry.2 = entry.2.max(column[i]);
        }
    }

    // Rows: column by column, by the mean row of placed predecessors.
    let columns = if n == 0 { 0 } else { widest + 1 };
    let mut by_column: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for &i in &order {
        by_column[column[i]].push(i);
    }
    let mut row = vec![0usize; n];
    let mut rows = 0;
    for members in &mut by_column {
        let key = |i: usize| -> f64 {
            let ps: Vec<f64> = preds[i].iter().filter(|&&p| column[p] < column[i]).map(|&p| row[p] as f64).collect();
            if ps.is_empty() { f64::MAX } else { ps.iter().sum::<f64>() / ps.len() as f64 }
        };
        let mut keyed: Vec<(f64, usize, usize)> = members.iter().enumerate().map(|(k, &i)| (key(i), k, i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (r, &(_, _, i)) in keyed.iter().enumerate() {
            row[i] = r;
        }
        rows = rows.max(members.len());
    }
    Layout { at: (0..n).map(|i| (column[i], row[i])).collect(), columns, rows, stages }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(stages: &[Option<&str>]) -> Vec<Node> {
        stages.iter().map(|s| Node { stage: s.map(str::to_string) }).collect()
    }

    #[test]
    fn a_chain_goes_left_to_right() {
        let l = layout(&nodes(&[None, None, None]), &[(0, 1), (1, 2)]);
        assert_eq!(l.at, vec![(0, 0), (1, 0), (2, 0)]);
        assert_eq!((l.columns, l.rows), (3, 1));
    }

    #[test]
    fn fan_out_stacks_and_fan_in_follows() {
        let l = layout(&nodes(&[None, None, None, None, None]), &[(0, 1), (0, 2), (0, 3), (1, 4), (2, 4), (3, 4)]);
        assert_eq!(l.at[0], (0, 0));
        assert_eq!([l.at[1], l.at[2], l.at[3]], [(1, 0), (1, 1), (1, 2)]);
        assert_eq!(l.at[4], (2, 0));
        assert_eq!(l.rows, 3);
    }

    #[test]
    fn stages_take_their_own_band_of_columns() {
        // ingest → prep, and an independent `report` in the training stage: it starts where
        // training starts, not at column 0.
        let ns = nodes(&[Some("ingestion"), Some("preprocessing"), Some("training"), Some("training")]);
        let l = layout(&ns, &[(0, 1), (1, 2)]);
        assert_eq!(l.at[0].0, 0);
        assert_eq!(l.at[1].0, 1);
        assert_eq!(l.at[2].0, 2);
        assert_eq!(l.at[3].0, 2, "a source in a later stage starts at its stage");
        let names: Vec<_> = l.stages.iter().map(|(s, a, b)| (s.clone().unwrap(), *a, *b)).collect();
        assert_eq!(names, [("ingestion".into(), 0, 0), ("preprocessing".into(), 1, 1), ("training".into(), 2, 2)]);
    }

    #[test]
    fn cycles_and_bad_edges_do_not_hang_or_panic() {
        let l = layout(&nodes(&[None, None]), &[(0, 1), (1, 0), (5, 0), (1, 1)]);
        assert_eq!(l.at.len(), 2);
        assert_eq!(layout(&[], &[]).columns, 0);
    }
}
