//! What a run page says first: "Across concepts" (runs of two or more concepts) and the
//! Summary, the concepts' sentences before each pair's, which fold away at concept scale.

use polars::prelude::DataFrame;

use super::{Block, Section, TableBlock};

/// What the Summary says: the concepts' sentences (from the means over their pairs),
/// then each pair's.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub concepts: Vec<String>,
    pub pairs: Vec<String>,
}

/// Pairs past which their sentences are folded under the concepts'.
pub const PAIRS_SHOWN: usize = 6;

/// "Across concepts" from `concepts.parquet`, the concepts in `order`; `None` for a run
/// of fewer than two concepts ([`crate::across`]).
pub(super) fn across_section(concepts: &DataFrame, order: &[String]) -> Option<Section> {
    let rows = crate::schema::rows(&crate::tables::CONCEPTS, concepts).ok()?;
    let flows = crate::across::flows(&rows, order);
    if flows.len() < 2 {
        return None;
    }
    let (columns, rows) = crate::across::table(&flows);
    let mut blocks = vec![
        Block::Text(crate::across::explanation()),
        Block::Table(TableBlock { columns, rows }),
    ];
    // The figure as in report.md, inline (the page stays one file).
    let plot = crate::across::AcrossPlot { flows: &flows };
    blocks.extend(crate::figure::svg_string(&plot).ok().map(Block::Svg));
    Some(Section {
        heading: "Across concepts".into(),
        blocks,
    })
}

/// The Summary: the concepts first; each pair's sentences after them, folded when the
/// run has concepts and more than [`PAIRS_SHOWN`] pairs.
pub(super) fn summary_section(summary: Summary, n_pairs: usize) -> Option<Section> {
    let Summary { concepts, pairs } = summary;
    let mut blocks = Vec::new();
    if !concepts.is_empty() {
        blocks.push(Block::Bullets(concepts.clone()));
    }
    match (
        concepts.is_empty() || n_pairs <= PAIRS_SHOWN,
        pairs.is_empty(),
    ) {
        (_, true) => {}
        (true, false) => blocks.push(Block::Bullets(pairs)),
        (false, false) => blocks.push(Block::Folded {
            title: format!(
                "Each pair's findings ({n_pairs} pairs, {} sentences)",
                pairs.len()
            ),
            items: pairs,
        }),
    }
    (!blocks.is_empty()).then(|| Section {
        heading: "Summary".into(),
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(pairs: usize) -> Summary {
        Summary {
            concepts: vec!["**landmarks**: the effect moves to `end` at layer 9.".into()],
            pairs: (0..pairs).map(|i| format!("pair {i}: …")).collect(),
        }
    }

    #[test]
    fn concept_sentences_come_first_and_pairs_fold_at_concept_scale() {
        let few = summary_section(summary(6), 6).unwrap();
        assert!(
            matches!(&few.blocks[..], [Block::Bullets(c), Block::Bullets(p)] if c.len() == 1 && p.len() == 6)
        );
        let many = summary_section(summary(45), 45).unwrap();
        match &many.blocks[..] {
            [Block::Bullets(concepts), Block::Folded { title, items }] => {
                assert_eq!(concepts.len(), 1);
                assert_eq!(items.len(), 45);
                assert_eq!(title, "Each pair's findings (45 pairs, 45 sentences)");
            }
            other => panic!("{other:?}"),
        }
        // Without concepts there is nothing to fold under.
        let alone = Summary {
            concepts: Vec::new(),
            ..summary(45)
        };
        let alone = summary_section(alone, 45).unwrap();
        assert!(matches!(&alone.blocks[..], [Block::Bullets(p)] if p.len() == 45));
    }
}
