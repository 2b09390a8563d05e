//! Which offsets may be committed: per partition, the contiguous prefix of messages whose work is
//! finished (written, filtered, or dead-lettered). Lanes finish out of order; committing only the
//! prefix makes delivery at-least-once: after a crash everything past the commit is read again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

/// Progress of one partition.
#[derive(Debug, Default)]
struct Progress {
    /// Received offsets in order, with whether their work is finished. The front is never done
    /// (done fronts are popped at once).
    pending: VecDeque<(i64, bool)>,
    /// One past the last offset of the finished prefix: the offset to commit.
    next: Option<i64>,
    /// What was last handed out for commit.
    committed: Option<i64>,
    /// Highest offset received.
    last_received: Option<i64>,
}

impl Progress {
    fn pop_done(&mut self) {
        while let Some(&(offset, true)) = self.pending.front() {
            self.next = Some(offset + 1);
            self.pending.pop_front();
        }
    }
}

/// Offset bookkeeping for all assigned partitions.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, Progress>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` was received and its work started. Offsets of a partition arrive in
    /// increasing order; an offset at or below the last one means the consumer was rewound (a
    /// reassignment or seek), so the partition's earlier state is dropped.
    pub fn received(&mut self, tp: &TopicPartition, offset: i64) {
        let p = self.partitions.entry(tp.clone()).or_default();
        if p.last_received.is_some_and(|last| offset <= last) {
            *p = Progress::default();
        }
        p.last_received = Some(offset);
        if p.next.is_none() && p.pending.is_empty() {
            // Everything before the first offset seen is someone else's (already committed).
            p.next = Some(offset);
            p.committed = Some(offset);
        }
        p.pending.push_back((offset, false));
    }

    /// Records that the work of `offset` is finished. Unknown offsets (of a partition revoked
    /// meanwhile) are ignored.
    pub fn done(&mut self, tp: &TopicPartition, offset: i64) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        if let Ok(i) = p.pending.binary_search_by_key(&offset, |&(o, _)| o) {
            p.pending[i].1 = true;
            p.pop_done();
        }
    }

    /// Messages of `tp` received and not yet finished.
    pub fn in_progress(&self, tp: &TopicPartition) -> usize {
        self.partitions.get(tp).map_or(0, |p| p.pending.len())
    }

    /// Messages received and not yet finished, over all partitions.
    pub fn total_in_progress(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }

    /// The offset to commit for `tp` (one past its finished prefix), if anything was received.
    pub fn committable(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions.get(tp).and_then(|p| p.next)
    }

    /// Partitions whose finished prefix moved since the last call, with the offset to commit.
    /// The caller commits them; they count as committed from here on.
    pub fn take_commits(&mut self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, p) in &mut self.partitions {
            if let Some(next) = p.next
                && p.committed.is_none_or(|c| next > c)
            {
                p.committed = Some(next);
                out.push((tp.clone(), next));
            }
        }
        out.sort();
        out
    }

    /// Forgets `tp` (revoked), returning the offset to commit for it if it moved.
    pub fn remove(&mut self, tp: &TopicPartition) -> Option<i64> {
        let p = self.partitions.remove(tp)?;
        match (p.next, p.committed) {
            (Some(next), Some(c)) if next > c => Some(next),
            (Some(next), None) => Some(next),
            _ => None,
        }
    }

    /// The partitions known to the tracker.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut v: Vec<_> = self.partitions.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("offers"),
            partition: p,
        }
    }

    #[test]
    fn commits_only_the_contiguous_prefix() {
        let mut t = OffsetTracker::new();
        for o in [10, 11, 13, 14] {
            t.received(&tp(0), o);
        }
        assert_eq!(t.committable(&tp(0)), Some(10));
        assert_eq!(t.take_commits(), vec![]);
        t.done(&tp(0), 11);
        t.done(&tp(0), 14);
        assert_eq!(t.committable(&tp(0)), Some(10));
        t.done(&tp(0), 10);
        assert_eq!(t.take_commits(), vec![(tp(0), 12)]);
        assert_eq!(t.take_commits(), vec![]);
        t.done(&tp(0), 13);
        assert_eq!(t.in_progress(&tp(0)), 0);
        assert_eq!(t.take_commits(), vec![(tp(0), 15)]);
    }

    #[test]
    fn revoked_partitions_are_forgotten_and_rewinds_reset() {
        let mut t = OffsetTracker::new();
        t.received(&tp(1), 5);
        t.received(&tp(1), 6);
        t.done(&tp(1), 5);
        assert_eq!(t.remove(&tp(1)), Some(6));
        t.done(&tp(1), 6); // late finish of a revoked partition: ignored
        assert_eq!(t.committable(&tp(1)), None);
        t.received(&tp(2), 7);
        t.received(&tp(2), 3); // rewound
        t.done(&tp(2), 3);
        assert_eq!(t.take_commits(), vec![(tp(2), 4)]);
        assert_eq!(t.remove(&tp(2)), None);
    }

    proptest! {
        #[test]
        fn committable_is_the_first_unfinished(
            gaps in prop::collection::vec(1i64..4, 1..60),
            order in any::<prop::sample::Index>(),
            finished in 0usize..60,
        ) {
            let mut offsets = Vec::new();
            let mut o = 100;
            for g in gaps { o += g; offsets.push(o); }
            let mut t = OffsetTracker::new();
            for &o in &offsets { t.received(&tp(0), o); }
            // Finish a random subset in a random order.
            let mut shuffled = offsets.clone();
            let k = order.index(shuffled.len());
            shuffled.rotate_left(k);
            shuffled.reverse();
            let finished = finished.min(shuffled.len());
            for &o in &shuffled[..finished] { t.done(&tp(0), o); }
            let done: std::collections::HashSet<i64> = shuffled[..finished].iter().copied().collect();
            let expected = match offsets.iter().position(|o| !done.contains(o)) {
                Some(0) => offsets[0],
                Some(i) => offsets[i - 1] + 1,
                None => offsets[offsets.len() - 1] + 1,
            };
            prop_assert_eq!(t.committable(&tp(0)), Some(expected));
            prop_assert_eq!(t.in_progress(&tp(0)), offsets.len() - offsets.iter().take_while(|o| done.contains(o)).count());
        }
    }
}
