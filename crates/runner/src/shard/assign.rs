//! Which shard runs which unit of work. The units are the sweep's batches over every
//! pair, direction and patch kind, in the order a single-process run sweeps them;
//! each has an estimated cost. Every shard computes the same list, so every shard
//! derives the same assignment without talking to the others.

/// The shard of each unit: the costliest units first, each to the shard with the
/// least work so far (ties: the lower index, then the lower shard) — the greedy
/// longest-processing-time schedule, within one unit's cost of the best balance.
pub fn assign(costs: &[u64], shards: usize) -> Vec<usize> {
    let shards = shards.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&unit| (std::cmp::Reverse(costs[unit]), unit));
    let mut load = vec![0u64; shards];
    let mut owner = vec![0; costs.len()];
    for unit in order {
        let shard = (0..shards).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[shard] += costs[unit];
        owner[unit] = shard;
    }
    owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_big_pair_splits_evenly() {
        // 32 equal batches of one pair over 4 shards: 8 each.
        let owner = assign(&[10; 32], 4);
        for shard in 0..4 {
            assert_eq!(owner.iter().filter(|o| **o == shard).count(), 8);
        }
        // Free units (cells that need no pass) still belong to a shard.
        assert_eq!(assign(&[0, 5, 0], 2), vec![1, 0, 1]);
    }

    proptest! {
        #[test]
        fn every_unit_once_and_loads_within_one_unit(
            costs in proptest::collection::vec(0u64..1000, 0..200),
            shards in 1usize..9,
        ) {
            let owner = assign(&costs, shards);
            prop_assert_eq!(owner.len(), costs.len());
            prop_assert!(owner.iter().all(|o| *o < shards));
            let mut load = vec![0u64; shards];
            for (unit, shard) in owner.iter().enumerate() {
                load[*shard] += costs[unit];
            }
            let (max, min) = (load.iter().max().copied().unwrap_or(0), load.iter().min().copied().unwrap_or(0));
            let biggest = costs.iter().max().copied().unwrap_or(0);
            prop_assert!(max - min <= biggest, "loads {:?}", load);
            prop_assert_eq!(assign(&costs, shards), owner, "deterministic");
        }
    }
}
