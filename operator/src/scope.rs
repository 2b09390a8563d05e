//! The namespaces the operator works in: every namespace (the chart's ClusterRole), or an
//! allow-list (a Role in each listed namespace, the chart's `watchNamespaces`). Kubernetes
//! watches and lists one namespace or all of them, so an allow-list means one watch per
//! namespace; and a namespace outside it is one the operator may not even read.

/// Every namespace, or the listed ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchScope {
    /// Sorted, without duplicates; empty: every namespace.
    namespaces: Vec<String>,
}

impl WatchScope {
    /// The scope of `--watch-namespaces`: none listed is every namespace.
    pub fn new(namespaces: &[String]) -> Self {
        let mut namespaces = namespaces.to_vec();
        namespaces.sort_unstable();
        namespaces.dedup();
        Self { namespaces }
    }

    /// What to watch and list: `None` (all namespaces at once), or each listed namespace.
    pub fn apis(&self) -> Vec<Option<&str>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().map(|n| Some(n.as_str())).collect()
        }
    }

    /// Whether the operator works in `namespace`.
    pub fn contains(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::WatchScope;

    #[test]
    fn no_list_is_every_namespace_at_once() {
        let all = WatchScope::new(&[]);
        assert_eq!(all.apis(), [None]);
        assert!(all.contains("anything"));
    }

    #[test]
    fn a_list_is_one_watch_per_namespace_and_nothing_else() {
        let list = WatchScope::new(&["b", "a", "b"].map(String::from));
        assert_eq!(list.apis(), [Some("a"), Some("b")]);
        assert!(list.contains("a") && list.contains("b"));
        assert!(!list.contains("c"));
        assert!(!list.contains(""));
    }
}
