//! Heatmaps of patching grids: rows (layers, or layer/head pairs) against columns
//! (positions labelled with their tokens, or heads), a diverging red–white–blue palette
//! centred on 0, a colour bar and a title. PNG and SVG, with an embedded font so no
//! system font library is needed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub use crate::figure::ImageFormat;
use crate::figure::{Drawing, FONT};
use crate::Result;

/// A grid of values to draw. `values[row][col]`; `NaN` cells are drawn grey.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_ticks: Vec<String>,
    pub y_ticks: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub colorbar_label: String,
    /// `faded[row][col]`: draw the cell faded and hatched (e.g. a concept mean whose
    /// confidence interval contains 0). Empty: none is.
    pub faded: Vec<Vec<bool>>,
}

/// ColorBrewer RdBu, red for negative through white to blue for positive.
const RDBU: [(u8, u8, u8); 11] = [
    (103, 0, 31),
    (178, 24, 43),
    (214, 96, 77),
    (244, 165, 130),
    (253, 219, 199),
    (247, 247, 247),
    (209, 229, 240),
    (146, 197, 222),
    (67, 147, 195),
    (33, 102, 172),
    (5, 48, 97),
];

/// The palette colour of `value` on a scale from `-limit` to `+limit`.
pub fn diverging_color(value: f64, limit: f64) -> RGBColor {
    if !value.is_finite() {
        return RGBColor(170, 170, 170);
    }
    let t = ((value / limit).clamp(-1.0, 1.0) + 1.0) / 2.0 * (RDBU.len() - 1) as f64;
    let i = (t.floor() as usize).min(RDBU.len() - 2);
    let frac = t - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * frac).round() as u8;
    let (a, b) = (RDBU[i], RDBU[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// `color` mixed with white, `amount` of the way.
fn towards_white(color: RGBColor, amount: f64) -> RGBColor {
    let mix = |v: u8| (v as f64 + (255.0 - v as f64) * amount).round() as u8;
    RGBColor(mix(color.0), mix(color.1), mix(color.2))
}

impl Heatmap {
    fn is_faded(&self, row: usize, col: usize) -> bool {
        self.faded
            .get(row)
            .and_then(|r| r.get(col))
            .copied()
            .unwrap_or(false)
    }

    /// The colour scale's half-range: at least 1 (a normalized logit difference of 1
    /// is full recovery), more when a value exceeds it.
    pub fn limit(&self) -> f64 {
        self.values
            .iter()
            .flatten()
            .filter(|v| v.is_finite())
            .fold(1.0f64, |m, v| m.max(v.abs()))
    }

    fn layout(&self) -> Layout {
        let n_rows = self.values.len().max(1);
        let n_cols = self.values.first().map(|r| r.len()).unwrap_or(0).max(1);
        let longest_x = self
            .x_ticks
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1);
        let longest_y = self
            .y_ticks
            .iter()
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(1);
        let cell_w = (7 * longest_x as u32 + 10).clamp(36, 110);
        let cell_h = if n_rows > 40 {
            14
        } else if n_rows > 16 {
            20
        } else {
            32
        };
        let left = 40 + 8 * longest_y as u32;
        let top = 56;
        let bottom = 64;
        let right = 150;
        Layout {
            cell_w,
            cell_h,
            left,
            top,
            width: left + cell_w * n_cols as u32 + right,
            height: (top + cell_h * n_rows as u32 + bottom).max(240),
        }
    }

    /// Writes the heatmap to `path` in `format`, atomically.
    pub fn save(&self, path: &Path, format: ImageFormat) -> Result<()> {
        crate::figure::save(self, path, format)
    }

    fn draw_with<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        layout: &Layout,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        area.fill(&WHITE)?;
        let title = (FONT, 18).into_font().color(&BLACK);
        area.draw(&Text::new(
            self.title.clone(),
            (layout.width as i32 / 2, 22),
            title.pos(Pos::new(HPos::Center, VPos::Center)),
        ))?;
        self.draw_cells(area, layout)?;
        self.draw_axes(area, layout)?;
        self.draw_colorbar(area, layout)
    }

    /// `(rows, columns)` of the grid.
    fn grid_size(&self) -> (i32, i32) {
        let n_cols = self.values.first().map(|r| r.len()).unwrap_or(0);
        (self.values.len() as i32, n_cols as i32)
    }

    /// One coloured rectangle per cell, annotated with its value when there is room.
    fn draw_cells<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        layout: &Layout,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let limit = self.limit();
        let small = (FONT, 11).into_font().color(&BLACK);
        let centre = Pos::new(HPos::Center, VPos::Center);
        let (cw, ch) = (layout.cell_w as i32, layout.cell_h as i32);
        let (left, top) = (layout.left as i32, layout.top as i32);
        let (n_rows, n_cols) = self.grid_size();
        let annotate = n_rows * n_cols <= 300 && ch >= 20;
        for (r, row) in self.values.iter().enumerate() {
            for (c, value) in row.iter().enumerate() {
                let x0 = left + c as i32 * cw;
                let y0 = top + r as i32 * ch;
                let faded = self.is_faded(r, c);
                let mut color = diverging_color(*value, limit);
                if faded {
                    color = towards_white(color, 0.7);
                }
                area.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cw, y0 + ch)],
                    color.filled(),
                ))?;
                if faded {
                    area.draw(&PathElement::new(
                        [(x0, y0 + ch), (x0 + cw, y0)],
                        RGBColor(150, 150, 150).stroke_width(1),
                    ))?;
                }
                if annotate && value.is_finite() {
                    let ink = if faded {
                        RGBColor(110, 110, 110)
                    } else if value.abs() > 0.6 * limit {
                        WHITE
                    } else {
                        BLACK
                    };
                    // No "-0.00": values that round to zero print unsigned.
                    let shown = if value.abs() < 0.005 { 0.0 } else { *value };
                    area.draw(&Text::new(
                        format!("{shown:.2}"),
                        (x0 + cw / 2, y0 + ch / 2),
                        small.clone().color(&ink).pos(centre),
                    ))?;
                }
            }
        }
        area.draw(&Rectangle::new(
            [(left, top), (left + n_cols * cw, top + n_rows * ch)],
            BLACK.stroke_width(1),
        ))?;
        Ok(())
    }

    /// Tick labels and axis labels.
    fn draw_axes<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        layout: &Layout,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let label = (FONT, 13).into_font().color(&BLACK);
        let small = (FONT, 11).into_font().color(&BLACK);
        let (cw, ch) = (layout.cell_w as i32, layout.cell_h as i32);
        let (left, top) = (layout.left as i32, layout.top as i32);
        let (n_rows, n_cols) = self.grid_size();
        let step = if n_rows > 40 { 4 } else { 1 };
        for (r, tick) in self.y_ticks.iter().enumerate() {
            if r as i32 % step == 0 {
                area.draw(&Text::new(
                    tick.clone(),
                    (left - 6, top + r as i32 * ch + ch / 2),
                    small.clone().pos(Pos::new(HPos::Right, VPos::Center)),
                ))?;
            }
        }
        for (c, tick) in self.x_ticks.iter().enumerate() {
            area.draw(&Text::new(
                tick.clone(),
                (left + c as i32 * cw + cw / 2, top + n_rows * ch + 6),
                small.clone().pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }
        area.draw(&Text::new(
            self.x_label.clone(),
            (left + n_cols * cw / 2, top + n_rows * ch + 34),
            label.clone().pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
        area.draw(&Text::new(
            self.y_label.clone(),
            (8, top - 18),
            label.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        Ok(())
    }

    /// The colour bar: +limit at the top, -limit at the bottom.
    fn draw_colorbar<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        layout: &Layout,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let limit = self.limit();
        let small = (FONT, 11).into_font().color(&BLACK);
        let (cw, ch) = (layout.cell_w as i32, layout.cell_h as i32);
        let (left, top) = (layout.left as i32, layout.top as i32);
        let (n_rows, n_cols) = self.grid_size();
        let bar_x = left + n_cols * cw + 24;
        let bar_h = (n_rows * ch).max(120);
        let steps = 64;
        for i in 0..steps {
            let value = limit - 2.0 * limit * (i as f64 + 0.5) / steps as f64;
            let y0 = top + bar_h * i / steps;
            let y1 = top + bar_h * (i + 1) / steps;
            area.draw(&Rectangle::new(
                [(bar_x, y0), (bar_x + 16, y1 + 1)],
                diverging_color(value, limit).filled(),
            ))?;
        }
        area.draw(&Rectangle::new(
            [(bar_x, top), (bar_x + 16, top + bar_h)],
            BLACK.stroke_width(1),
        ))?;
        for (frac, value) in [(0.0, limit), (0.5, 0.0), (1.0, -limit)] {
            area.draw(&Text::new(
                format!("{value:.1}"),
                (bar_x + 20, top + (bar_h as f64 * frac) as i32),
                small.clone().pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        area.draw(&Text::new(
            self.colorbar_label.clone(),
            (bar_x - 40, top - 18),
            small.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        Ok(())
    }
}

struct Layout {
    cell_w: u32,
    cell_h: u32,
    left: u32,
    top: u32,
    width: u32,
    height: u32,
}

impl Drawing for Heatmap {
    fn size(&self) -> (u32, u32) {
        let layout = self.layout();
        (layout.width, layout.height)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        self.draw_with(area, &self.layout())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn palette_is_centred_on_white() {
        assert_eq!(diverging_color(0.0, 1.0), RGBColor(247, 247, 247));
        assert_eq!(diverging_color(1.0, 1.0), RGBColor(5, 48, 97));
        assert_eq!(diverging_color(-5.0, 1.0), RGBColor(103, 0, 31));
        assert_eq!(diverging_color(f64::NAN, 1.0), RGBColor(170, 170, 170));
    }
}
