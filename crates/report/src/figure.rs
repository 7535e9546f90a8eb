//! Writing a plotters drawing (a heatmap, a scatter plot) as PNG or SVG, atomically,
//! with an embedded font so that no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::atomic::{temp_path, write_bytes_atomic};
use crate::{ReportError, Result};

pub(crate) const FONT: &str = "sans-serif";

/// The line colours of the plots with one line per method or concept (matplotlib's
/// first eight), in order.
pub(crate) const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and valid; a failure would only lose text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

/// Image formats a figure can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        }
    }
}

/// A figure plotters can draw on any backend.
pub(crate) trait Drawing {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);

    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// `drawing` as an SVG document (for a page that inlines it), or why not.
pub(crate) fn svg_string(drawing: &impl Drawing) -> std::result::Result<String, String> {
    register_font();
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, drawing.size()).into_drawing_area();
        drawing.draw(&area).map_err(|e| e.to_string())?;
        area.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Writes `drawing` to `path` in `format`, atomically.
pub(crate) fn save(drawing: &impl Drawing, path: &Path, format: ImageFormat) -> Result<()> {
    register_font();
    let size = drawing.size();
    let plot_err = |reason: String| ReportError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    match format {
        ImageFormat::Svg => {
            let svg = svg_string(drawing).map_err(plot_err)?;
            write_bytes_atomic(path, svg.as_bytes())
        }
        ImageFormat::Png => {
            let tmp = temp_path(path);
            {
                let area = BitMapBackend::new(&tmp, size).into_drawing_area();
                drawing.draw(&area).map_err(|e| plot_err(e.to_string()))?;
                area.present().map_err(|e| plot_err(e.to_string()))?;
            }
            std::fs::rename(&tmp, path).map_err(|source| ReportError::Write {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}
