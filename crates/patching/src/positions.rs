//! How the positions of two prompts correspond: which source position is patched into
//! each target position.
//!
//! Pairs of equal token length map position i to position i. For pairs of different
//! lengths an alignment must be chosen ([`Align`]); whatever it is, the first position
//! maps to the first position when it is the BOS token (prepended by the tokenizer):
//! BOS is the attention sink of every head and holds no information about the prompt,
//! so patching a word into it would measure something else.

use serde::Deserialize;

/// How clean positions map onto corrupted positions.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// Token lengths must be equal (default).
    #[default]
    Strict,
    /// Position i into position i, over the shorter length (what the seed notebook did).
    Start,
    /// The last tokens aligned: clean position `i` into corrupted
    /// `i + (n_corrupted - n_clean)`; BOS into BOS.
    End,
}

impl Align {
    pub fn name(self) -> &'static str {
        match self {
            Align::Strict => "strict",
            Align::Start => "start",
            Align::End => "end",
        }
    }
}

/// Where each target position takes its source activation from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionMap {
    /// `source_of[j]`: the source position patched into target position `j`, if any.
    pub source_of: Vec<Option<usize>>,
    /// The source prompt's length.
    pub n_source: usize,
}

impl PositionMap {
    pub fn identity(n: usize) -> Self {
        PositionMap {
            source_of: (0..n).map(Some).collect(),
            n_source: n,
        }
    }

    /// The map `align` gives from a source of `n_source` tokens onto a target of
    /// `n_target` tokens; `bos`: both start with a BOS token. `None` when `align` is
    /// [`Align::Strict`] and the lengths differ.
    pub fn aligned(align: Align, n_source: usize, n_target: usize, bos: bool) -> Option<Self> {
        match align {
            _ if n_source == n_target => Some(PositionMap::identity(n_target)),
            Align::Strict => None,
            Align::Start => Some(PositionMap::start(n_source, n_target)),
            Align::End => Some(PositionMap::end(n_source, n_target, bos)),
        }
    }

    /// Position i into position i.
    pub fn start(n_source: usize, n_target: usize) -> Self {
        PositionMap {
            source_of: (0..n_target).map(|j| (j < n_source).then_some(j)).collect(),
            n_source,
        }
    }

    /// Last tokens aligned; with `bos`, BOS into BOS and no other position into either.
    pub fn end(n_source: usize, n_target: usize, bos: bool) -> Self {
        let first = usize::from(bos); // the first position the shift applies to
        PositionMap {
            source_of: (0..n_target)
                .map(|j| {
                    if bos && j == 0 {
                        return Some(0);
                    }
                    (j + n_source)
                        .checked_sub(n_target)
                        .filter(|i| *i >= first && j >= first)
                })
                .collect(),
            n_source,
        }
    }

    /// The map the other way round: source position ← target position.
    pub fn inverse(&self) -> Self {
        let mut source_of = vec![None; self.n_source];
        for (j, i) in self.source_of.iter().enumerate() {
            if let Some(i) = i {
                source_of[*i] = Some(j);
            }
        }
        PositionMap {
            source_of,
            n_source: self.source_of.len(),
        }
    }

    pub fn n_target(&self) -> usize {
        self.source_of.len()
    }

    pub fn is_identity(&self) -> bool {
        self.n_source == self.source_of.len()
            && self
                .source_of
                .iter()
                .enumerate()
                .all(|(j, c)| *c == Some(j))
    }

    /// Target positions that receive a source activation.
    pub fn patched_positions(&self) -> Vec<usize> {
        (0..self.source_of.len())
            .filter(|j| self.source_of[*j].is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_maps() {
        assert_eq!(
            PositionMap::start(3, 4).source_of,
            vec![Some(0), Some(1), Some(2), None]
        );
        assert_eq!(
            PositionMap::end(3, 4, false).source_of,
            vec![None, Some(0), Some(1), Some(2)]
        );
        assert_eq!(
            PositionMap::end(4, 3, false).source_of,
            vec![Some(1), Some(2), Some(3)]
        );
        assert!(PositionMap::identity(5).is_identity());
        assert!(!PositionMap::start(5, 4).is_identity());
    }

    #[test]
    fn bos_maps_to_bos_under_every_alignment() {
        for (n_source, n_target) in [(3, 5), (5, 3), (4, 4), (2, 6)] {
            for align in [Align::Start, Align::End] {
                let map = PositionMap::aligned(align, n_source, n_target, true).unwrap();
                assert_eq!(map.source_of[0], Some(0), "{align:?} {n_source}→{n_target}");
                let others = map.source_of[1..].iter().flatten();
                assert!(others.clone().all(|i| *i != 0), "{align:?}: {map:?}");
                assert_eq!(map.inverse().source_of[0], Some(0));
            }
        }
        // A longer source: its last tokens onto the target's, BOS onto BOS, the source's
        // extra middle tokens patched nowhere.
        assert_eq!(
            PositionMap::end(6, 4, true).source_of,
            vec![Some(0), Some(3), Some(4), Some(5)]
        );
        // A longer target: its extra positions after BOS receive nothing.
        assert_eq!(
            PositionMap::end(3, 5, true).source_of,
            vec![Some(0), None, None, Some(1), Some(2)]
        );
    }

    #[test]
    fn inverse_swaps_the_roles() {
        for map in [
            PositionMap::start(3, 5),
            PositionMap::end(6, 4, true),
            PositionMap::end(3, 5, true),
            PositionMap::identity(4),
        ] {
            let inverse = map.inverse();
            assert_eq!(inverse.n_target(), map.n_source);
            assert_eq!(inverse.n_source, map.n_target());
            for (j, i) in map.source_of.iter().enumerate() {
                if let Some(i) = i {
                    assert_eq!(inverse.source_of[*i], Some(j));
                }
            }
            assert_eq!(inverse.inverse(), map);
        }
    }
}
