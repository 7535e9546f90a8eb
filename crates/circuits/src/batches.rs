//! How rows are cut into batched passes: consecutive rows of one shape (a length, a
//! first position, a start block), at most a budget of rows × positions each.

use std::ops::Range;

/// Consecutive ranges of `items` (sorted so that equal shapes sit together), each of
/// one `shape` and at most `budget / positions(shape)` items (one at least).
pub(crate) fn batches<T, S: PartialEq>(
    items: &[T],
    shape: impl Fn(&T) -> S,
    (positions, budget): (impl Fn(&S) -> usize, usize),
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut first = 0;
    while first < items.len() {
        let kind = shape(&items[first]);
        let per_pass = (budget / positions(&kind).max(1)).max(1);
        let mut end = first + 1;
        while end < items.len() && end - first < per_pass && shape(&items[end]) == kind {
            end += 1;
        }
        ranges.push(first..end);
        first = end;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_one_shape_within_the_budget() {
        let lengths = [3, 3, 3, 3, 3, 5, 5, 8];
        let ranges = batches(&lengths, |l| *l, (|l: &usize| *l, 6));
        assert_eq!(ranges, vec![0..2, 2..4, 4..5, 5..6, 6..7, 7..8]);
        assert!(batches(&[] as &[usize], |l| *l, (|l: &usize| *l, 6)).is_empty());
    }
}
