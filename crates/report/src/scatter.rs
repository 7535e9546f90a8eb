//! Scatter plots of estimated against exact effects: one point per cell, one colour
//! and marker per method, the diagonal (a perfect estimate) in grey, the same range
//! on both axes. PNG and SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::figure::{Drawing, FONT, PALETTE};
use crate::{ImageFormat, Result};

/// One method's points: (exact, estimate) per cell.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterSeries {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A scatter plot of estimates (y) against exact values (x).
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<ScatterSeries>,
}

/// Colours ([`PALETTE`]) and markers by series: circle, triangle, cross.
const COLOURS: [RGBColor; 3] = [PALETTE[0], PALETTE[1], PALETTE[2]];

/// Series `i`'s marker at `at` (data or pixel coordinates).
fn marker<DB: DrawingBackend, C: Clone + 'static>(i: usize, at: C) -> DynElement<'static, DB, C> {
    let colour = COLOURS[i % COLOURS.len()].stroke_width(1);
    match i % 3 {
        0 => Circle::new(at, 3, colour).into_dyn(),
        1 => TriangleMarker::new(at, 4, colour).into_dyn(),
        _ => Cross::new(at, 3, colour).into_dyn(),
    }
}

impl Scatter {
    /// The axes' common range: every finite value, padded by 5 % (±1 when all are equal).
    pub fn range(&self) -> (f64, f64) {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|(x, y)| [*x, *y]))
            .filter(|v| v.is_finite());
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !lo.is_finite() || hi - lo <= 0.0 {
            let centre = if lo.is_finite() { lo } else { 0.0 };
            return (centre - 1.0, centre + 1.0);
        }
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    }

    /// Writes the plot to `path` in `format`, atomically.
    pub fn save(&self, path: &Path, format: ImageFormat) -> Result<()> {
        crate::figure::save(self, path, format)
    }
}

impl Drawing for Scatter {
    fn size(&self) -> (u32, u32) {
        (600, 560)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let (lo, hi) = self.range();
        // Enough decimals to tell ticks apart; no "-0.00".
        let digits = (2.0 - (hi - lo).log10().floor()).clamp(0.0, 6.0) as usize;
        let tick = move |v: &f64| {
            let v = if v.abs() < 1e-12 { 0.0 } else { *v };
            format!("{v:.digits$}")
        };
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, 16))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(WHITE)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], grey.stroke_width(1)))?
            .label("estimate = exact")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], grey));
        for (i, series) in self.series.iter().enumerate() {
            let points = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            chart
                .draw_series(points.map(|p| marker(i, *p)))?
                .label(format!("{} ({} cells)", series.name, series.points.len()))
                .legend(move |(x, y)| marker(i, (x + 8, y)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(grey)
            .label_font((FONT, 12))
            .draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scatter(points: Vec<(f64, f64)>) -> Scatter {
        Scatter {
            title: "t".into(),
            x_label: "exact".into(),
            y_label: "estimate".into(),
            series: vec![ScatterSeries {
                name: "atp".into(),
                points,
            }],
        }
    }

    #[test]
    fn both_axes_share_the_padded_range_of_every_value() {
        let s = scatter(vec![(-1.0, 0.5), (2.0, 3.0), (f64::NAN, 9.0)]);
        let (lo, hi) = s.range();
        // Values -1 … 3 (the NaN point's 9 counts: only x is non-finite) → -1 … 9.
        assert!(
            (lo - (-1.5)).abs() < 1e-12 && (hi - 9.5).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(scatter(vec![(0.2, 0.2)]).range(), (-0.8, 1.2));
        assert_eq!(scatter(Vec::new()).range(), (-1.0, 1.0));
    }

    #[test]
    fn writes_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("actpatch-scatter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = scatter(vec![(0.1, 0.2), (-0.3, -0.1), (0.5, 0.45)]);
        s.series.push(ScatterSeries {
            name: "atp*".into(),
            points: vec![(0.1, 0.1), (0.5, 0.5)],
        });
        s.save(&dir.join("s.png"), ImageFormat::Png).unwrap();
        s.save(&dir.join("s.svg"), ImageFormat::Svg).unwrap();
        let png = std::fs::read(dir.join("s.png")).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        let svg = std::fs::read_to_string(dir.join("s.svg")).unwrap();
        // Three circles for atp's cells plus its legend marker; atp*'s in triangles.
        assert_eq!(svg.matches("<circle").count(), 4, "{svg}");
        assert!(svg.contains("atp* (2 cells)"));
        if std::env::var_os("KEEP_SCATTER").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
