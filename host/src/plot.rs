//! Figures: training curves, the confusion-matrix heat-map and a grid of misclassified images,
//! as SVG or PNG (chosen by the file name), drawn with `plotters` and an embedded font so they
//! look the same on every machine.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use crate::data::{Dataset, ImageSize};
use crate::evaluation::{ConfusionMatrix, class_label, most_confident_errors};
use crate::fs::{WriteError, write_atomic};
use crate::train::EpochReport;

/// DejaVu Sans cut down to ASCII (see assets/fonts/README.md): no system fonts needed.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
/// Family the figures ask for; the embedded font is registered under it.
const FAMILY: &str = "sans-serif";

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VALIDATION_COLOUR: RGBColor = RGBColor(255, 127, 14);
const WRONG_COLOUR: RGBColor = RGBColor(200, 30, 30);
/// Darkest heat-map colour (a full row in one cell).
const HEAT_COLOUR: RGBColor = RGBColor(8, 48, 107);

/// Image formats a figure can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotFormat {
    /// Scalable vector graphics.
    Svg,
    /// A PNG bitmap.
    Png,
}

impl PlotFormat {
    /// The format a file name asks for, from its extension (`.svg` or `.png`, any case).
    pub fn from_path(path: &Path) -> Result<Self, PlotError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Self::Svg),
            Some("png") => Ok(Self::Png),
            _ => Err(PlotError::Format(path.to_owned())),
        }
    }
}

/// Why a figure could not be made.
#[derive(thiserror::Error, Debug)]
pub enum PlotError {
    /// The file name ends in neither `.svg` nor `.png`.
    #[error("{}: cannot tell the image format; the file name must end in .svg or .png", .0.display())]
    Format(PathBuf),
    /// Drawing or encoding failed.
    #[error("{}: cannot draw the figure: {message}", path.display())]
    Draw {
        /// The figure's file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Drawing errors differ per backend; the message is all a user needs.
type Drawn = Result<(), String>;

fn font_ready() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the embedded font is not a valid font file".into())
    }
}

/// Renders with whichever backend `path` asks for and writes the file atomically.
fn render(
    path: &Path,
    size: (u32, u32),
    svg: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Drawn,
    png: impl FnOnce(&DrawingArea<Bitmap, Shift>) -> Drawn,
) -> Result<(), PlotError> {
    let format = PlotFormat::from_path(path)?;
    let draw_err = |message: String| PlotError::Draw {
        path: path.to_owned(),
        message,
    };
    font_ready().map_err(draw_err)?;
    let bytes = match format {
        PlotFormat::Svg => {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
                svg(&root).map_err(draw_err)?;
                root.present().map_err(|e| draw_err(e.to_string()))?;
            }
            text.into_bytes()
        }
        PlotFormat::Png => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            {
                let font = FontRef::try_from_slice(FONT)
                    .map_err(|_| draw_err("the embedded font is not a valid font file".into()))?;
                let root = Bitmap {
                    inner: BitMapBackend::with_buffer(&mut rgb, size),
                    font,
                }
                .into_drawing_area();
                png(&root).map_err(draw_err)?;
                root.present().map_err(|e| draw_err(e.to_string()))?;
            }
            encode_png(size, rgb).map_err(draw_err)?
        }
    };
    write_atomic(path, &bytes)?;
    Ok(())
}

/// The bitmap backend with its own text drawing: plotters 0.3.7 places each glyph without its
/// left side bearing, which spaces letters unevenly ("vali dation"). Everything else is
/// passed through.
struct Bitmap<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

type BitmapResult =
    Result<(), DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

impl DrawingBackend for Bitmap<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> BitmapResult {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> BitmapResult {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BitmapResult {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BitmapResult {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BitmapResult {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BitmapResult {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BitmapResult {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BitmapResult {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> BitmapResult {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        pos: BackendCoord,
    ) -> BitmapResult {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size() as f32;
        let font = self.font.as_scaled(size);
        let mut width = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                width += font.kern(p, id);
            }
            width += font.h_advance(id);
            prev = Some(id);
        }
        // The same box plotters lays text out with, so labels land where it expects them.
        let height = size / 1.24;
        let cap = self
            .font
            .outline(self.font.glyph_id('H'))
            .map_or(font.ascent() * 0.75, |o| {
                o.bounds.max.y * font.scale_factor().vertical
            });
        let anchor = style.anchor();
        let left = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let top = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        // Capitals sit centred in the box.
        let baseline = top + (height + cap) / 2.0;
        let transform = style.transform();
        let mut pen = left;
        let mut prev = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                pen += font.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), ab_glyph::point(pen, baseline));
            pen += font.h_advance(id);
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let mut pixels = Vec::new();
            outline.draw(|x, y, coverage| {
                let (x, y) = (
                    bounds.min.x as i32 + x as i32,
                    bounds.min.y as i32 + y as i32,
                );
                let (x, y) = transform.transform(x, y);
                pixels.push(((pos.0 + x, pos.1 + y), coverage));
            });
            for (point, coverage) in pixels {
                self.inner.draw_pixel(
                    point,
                    BackendColor {
                        alpha: color.alpha * f64::from(coverage.clamp(0.0, 1.0)),
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

fn encode_png(size: (u32, u32), rgb: Vec<u8>) -> Result<Vec<u8>, String> {
    let image = image::RgbImage::from_raw(size.0, size.1, rgb)
        .ok_or_else(|| "pixel buffer does not match the image size".to_string())?;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut out = Vec::new();
    // Figures are flat colours and text: the best compression halves them for little time.
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive);
    image
        .write_with_encoder(encoder)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn text(size: u32) -> TextStyle<'static> {
    coloured_text(size, BLACK)
}

fn coloured_text(size: u32, colour: RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&colour)
}

/// Writes loss and accuracy per epoch (train, and validation when present) as two panels.
pub fn training_curves(path: &Path, reports: &[EpochReport]) -> Result<(), PlotError> {
    render(
        path,
        (1000, 420),
        |root| draw_curves(root, reports),
        |root| draw_curves(root, reports),
    )
}

/// One panel's series: name, colour and (epoch, value) points.
type Series = (&'static str, RGBColor, Vec<(i32, f64)>);
/// Where a panel goes, its metric, its two series and where its legend sits.
type Panel<'a, DB> = (
    &'a DrawingArea<DB, Shift>,
    &'static str,
    [Series; 2],
    SeriesLabelPosition,
);

fn draw_curves<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    reports: &[EpochReport],
) -> Drawn {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    let points = |f: fn(&EpochReport) -> Option<f64>| -> Vec<(i32, f64)> {
        reports
            .iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as i32, v)))
            .collect()
    };
    let panels: [Panel<DB>; 2] = [
        (
            &left,
            "loss",
            [
                ("train", TRAIN_COLOUR, points(|r| Some(r.loss))),
                ("validation", VALIDATION_COLOUR, points(|r| r.val_loss)),
            ],
            SeriesLabelPosition::UpperRight,
        ),
        (
            &right,
            "accuracy",
            [
                ("train", TRAIN_COLOUR, points(|r| Some(r.accuracy))),
                ("validation", VALIDATION_COLOUR, points(|r| r.val_accuracy)),
            ],
            SeriesLabelPosition::LowerRight,
        ),
    ];
    let last_epoch = reports.iter().map(|r| r.epoch as i32).max().unwrap_or(1);
    let first_epoch = reports.iter().map(|r| r.epoch as i32).min().unwrap_or(1);
    for (area, metric, series, legend_at) in panels {
        let (lo, hi) = value_range(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(metric, text(22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            // One epoch of slack each side keeps the end markers inside the plot.
            .build_cartesian_2d(first_epoch - 1..last_epoch + 1, lo..hi)
            .map_err(err)?;
        let (first, last) = (first_epoch, last_epoch);
        let epoch_label = move |x: &i32| {
            if (first..=last).contains(x) {
                x.to_string()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(metric)
            .x_labels((last - first + 3).min(12) as usize)
            .x_label_formatter(&epoch_label)
            .y_label_formatter(&|y| format!("{y:.3}"))
            .label_style(text(14))
            .axis_desc_style(text(16))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        for (name, colour, values) in series {
            if values.is_empty() {
                continue;
            }
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(values.iter().copied(), style))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            chart
                .draw_series(values.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .label_font(text(14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// A y range around `values` with a little room above and below (0..1 when there are none).
fn value_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !(min.is_finite() && max.is_finite()) {
        return (0.0, 1.0);
    }
    let pad = ((max - min) * 0.1).max(0.005);
    ((min - pad).max(0.0), max + pad)
}

/// Writes the confusion matrix as a heat-map: each cell holds its count and is shaded by the
/// share of its true class, so classes of any size compare.
pub fn confusion_heatmap(
    path: &Path,
    matrix: &ConfusionMatrix,
    names: &[String],
    title: &str,
) -> Result<(), PlotError> {
    render(
        path,
        (820, 780),
        |root| draw_heatmap(root, matrix, names, title),
        |root| draw_heatmap(root, matrix, names, title),
    )
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    matrix: &ConfusionMatrix,
    names: &[String],
    title: &str,
) -> Drawn {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (width, height) = root.dim_in_pixel();
    let classes = matrix.classes();
    let labels: Vec<String> = (0..classes).map(|c| class_label(c, names)).collect();
    let label_font = text(14);
    let label_width = labels
        .iter()
        .map(|l| root.estimate_text_size(l, &label_font).map(|s| s.0))
        .try_fold(0, |w, s| s.map(|s| w.max(s)))
        .map_err(err)? as i32;
    let top = 96;
    let left = label_width + 44;
    let cell = ((width as i32 - left - 20) / classes as i32)
        .min((height as i32 - top - 20) / classes as i32)
        .max(1);
    let centre =
        |anchor: (HPos, VPos), style: &TextStyle<'static>| style.pos(Pos::new(anchor.0, anchor.1));
    root.draw(&Text::new(
        title.to_string(),
        (width as i32 / 2, 14),
        centre((HPos::Center, VPos::Top), &text(20)),
    ))
    .map_err(err)?;
    let grid_right = left + cell * classes as i32;
    root.draw(&Text::new(
        "predicted class",
        ((left + grid_right) / 2, 48),
        centre((HPos::Center, VPos::Top), &text(16)),
    ))
    .map_err(err)?;
    // "true class" runs down the left edge, read bottom to top.
    root.draw(&Text::new(
        "true class",
        (14, top + cell * classes as i32 / 2),
        centre((HPos::Center, VPos::Top), &text(16)).transform(FontTransform::Rotate270),
    ))
    .map_err(err)?;
    let count_size = if cell >= 60 { 15 } else { 12 };
    for (c, label) in labels.iter().enumerate() {
        let x = left + cell * c as i32 + cell / 2;
        root.draw(&Text::new(
            c.to_string(),
            (x, top - 6),
            centre((HPos::Center, VPos::Bottom), &label_font),
        ))
        .map_err(err)?;
        let y = top + cell * c as i32 + cell / 2;
        root.draw(&Text::new(
            label.clone(),
            (left - 8, y),
            centre((HPos::Right, VPos::Center), &label_font),
        ))
        .map_err(err)?;
    }
    for (t, row) in matrix.counts.iter().enumerate() {
        let support = row.iter().sum::<u64>().max(1) as f64;
        for (p, &count) in row.iter().enumerate() {
            // The square root lifts the small off-diagonal shares into view.
            let share = (count as f64 / support).sqrt();
            let fill = mix(WHITE, HEAT_COLOUR, share);
            let (x0, y0) = (left + cell * p as i32, top + cell * t as i32);
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell, y0 + cell)],
                fill.filled(),
            ))
            .map_err(err)?;
            let ink = if share > 0.55 { WHITE } else { BLACK };
            root.draw(&Text::new(
                count.to_string(),
                (x0 + cell / 2, y0 + cell / 2),
                centre(
                    (HPos::Center, VPos::Center),
                    &coloured_text(count_size, ink),
                ),
            ))
            .map_err(err)?;
        }
    }
    let grid_bottom = top + cell * classes as i32;
    root.draw(&Rectangle::new(
        [(left, top), (grid_right, grid_bottom)],
        RGBColor(120, 120, 120).stroke_width(1),
    ))
    .map_err(err)?;
    Ok(())
}

fn mix(a: RGBColor, b: RGBColor, t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let channel = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * t).round() as u8;
    RGBColor(channel(a.0, b.0), channel(a.1, b.1), channel(a.2, b.2))
}

/// One image of the misclassified grid.
#[derive(Clone, Copy, Debug)]
pub struct Mistake<'a> {
    /// The image's pixels.
    pub pixels: &'a [u8],
    /// Its size.
    pub size: ImageSize,
    /// True class.
    pub label: usize,
    /// Predicted class.
    pub predicted: usize,
    /// Probability the model gave its prediction.
    pub confidence: f32,
}

/// Pixels of the square a misclassified image is drawn in, before scaling.
const GRID_IMAGE_SIDE: i32 = 28;
/// Side of one pixel of a misclassified image in the grid.
const GRID_SCALE: i32 = 3;
/// Images per row of the misclassified grid.
pub const GRID_COLUMNS: usize = 5;
const GRID_CELL: (i32, i32) = (150, 136);
const GRID_TITLE: i32 = 44;

/// Writes `mistakes` as a grid, five to a row, each image at three times its size with its true
/// and predicted class beneath.
pub fn misclassified_grid(
    path: &Path,
    mistakes: &[Mistake],
    names: &[String],
    title: &str,
) -> Result<(), PlotError> {
    let rows = mistakes.len().div_ceil(GRID_COLUMNS).max(1) as i32;
    let size = (
        (GRID_CELL.0 * GRID_COLUMNS as i32) as u32,
        (GRID_TITLE + GRID_CELL.1 * rows) as u32,
    );
    render(
        path,
        size,
        |root| draw_grid(root, mistakes, names, title),
        |root| draw_grid(root, mistakes, names, title),
    )
}

fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    mistakes: &[Mistake],
    names: &[String],
    title: &str,
) -> Drawn {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let width = root.dim_in_pixel().0 as i32;
    let centred = text(18).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title.to_string(), (width / 2, 12), centred))
        .map_err(err)?;
    if mistakes.is_empty() {
        root.draw(&Text::new(
            "no misclassified images",
            (width / 2, GRID_TITLE + 40),
            text(16).pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
    }
    let side = GRID_IMAGE_SIDE * GRID_SCALE;
    let caption =
        |colour: RGBColor| coloured_text(13, colour).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, m) in mistakes.iter().enumerate() {
        let (col, row) = ((i % GRID_COLUMNS) as i32, (i / GRID_COLUMNS) as i32);
        let x0 = col * GRID_CELL.0 + (GRID_CELL.0 - side) / 2;
        let y0 = GRID_TITLE + row * GRID_CELL.1 + 4;
        // Each image fills the same square whatever its size.
        let cols = m.size.cols.max(1);
        let step = |n: usize, of: usize| (n * side as usize / of.max(1)) as i32;
        for (p, &v) in m.pixels.iter().enumerate() {
            let (r, c) = (p / cols, p % cols);
            let (x, y) = (x0 + step(c, cols), y0 + step(r, m.size.rows));
            let (x1, y1) = (x0 + step(c + 1, cols), y0 + step(r + 1, m.size.rows));
            root.draw(&Rectangle::new(
                [(x, y), (x1.max(x + 1), y1.max(y + 1))],
                RGBColor(v, v, v).filled(),
            ))
            .map_err(err)?;
        }
        let cx = col * GRID_CELL.0 + GRID_CELL.0 / 2;
        root.draw(&Text::new(
            format!("true: {}", class_label(m.label, names)),
            (cx, y0 + side + 7),
            caption(BLACK),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            format!(
                "pred: {} {}",
                class_label(m.predicted, names),
                percent(m.confidence)
            ),
            (cx, y0 + side + 25),
            caption(WRONG_COLOUR),
        ))
        .map_err(err)?;
    }
    Ok(())
}

/// Mistakes shown in `misclassified.png`: a 5x5 grid.
pub const REPORT_MISTAKES: usize = 25;

/// The files [`evaluation_report`] writes into `dir`: the confusion matrix and the mistakes.
pub fn report_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("confusion.png"), dir.join("misclassified.png"))
}

/// Writes `confusion.png` and `misclassified.png` (the most confident mistakes) into `dir`
/// for a model's `probabilities` on `data`; `set` names the data in the titles. Returns the
/// two paths.
pub fn evaluation_report(
    dir: &Path,
    data: &Dataset,
    image: Option<ImageSize>,
    probabilities: &[Vec<f32>],
    matrix: &ConfusionMatrix,
    names: &[String],
    set: &str,
) -> Result<(PathBuf, Option<PathBuf>), PlotError> {
    let (confusion, misclassified) = report_paths(dir);
    let accuracy = matrix.correct() as f64 / matrix.total().max(1) as f64;
    confusion_heatmap(
        &confusion,
        matrix,
        names,
        &format!("{set}: {} images, accuracy {accuracy:.4}", matrix.total()),
    )?;
    let Some(size) = image.filter(|_| data.is_images()) else {
        return Ok((confusion, None));
    };
    let mistakes: Vec<Mistake> =
        most_confident_errors(&data.labels, probabilities, REPORT_MISTAKES)
            .into_iter()
            .map(|i| {
                let predicted = picodense_core::loss::argmax(&probabilities[i]);
                Mistake {
                    pixels: data.image(i),
                    size,
                    label: usize::from(data.labels[i]),
                    predicted,
                    confidence: probabilities[i][predicted],
                }
            })
            .collect();
    misclassified_grid(
        &misclassified,
        &mistakes,
        names,
        &format!("most confident mistakes on the {set}"),
    )?;
    Ok((confusion, Some(misclassified)))
}

/// A probability as a percentage with one decimal; never "100.0%" for a model that was not
/// certain.
fn percent(p: f32) -> String {
    let p = f64::from(p) * 100.0;
    if (99.95..100.0).contains(&p) {
        ">99.9%".into()
    } else {
        format!("{p:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;

    fn reports(validation: bool) -> Vec<EpochReport> {
        (1..=4)
            .map(|epoch| {
                let e = epoch as f64;
                EpochReport {
                    epoch,
                    loss: 1.0 / e,
                    accuracy: 0.8 + 0.04 * e,
                    val_loss: validation.then_some(1.1 / e),
                    val_accuracy: validation.then_some(0.78 + 0.04 * e),
                    seconds: 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(
            PlotFormat::from_path(Path::new("a/b.svg")).unwrap(),
            PlotFormat::Svg
        );
        assert_eq!(
            PlotFormat::from_path(Path::new("b.PNG")).unwrap(),
            PlotFormat::Png
        );
        for bad in ["b.jpg", "b", "svg"] {
            let e = PlotFormat::from_path(Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad) && e.contains(".svg or .png"), "{e}");
        }
    }

    #[test]
    fn percentages_do_not_round_up_to_certainty() {
        assert_eq!(percent(0.5), "50.0%");
        assert_eq!(percent(0.99996), ">99.9%");
        assert_eq!(percent(1.0), "100.0%");
    }

    #[test]
    fn embedded_font_registers() {
        font_ready().unwrap();
    }

    #[test]
    fn svg_curves_have_one_line_per_series() {
        let dir = tempfile::tempdir().unwrap();
        for validation in [true, false] {
            let path = dir.path().join(format!("c{validation}.svg"));
            training_curves(&path, &reports(validation)).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            // Per panel, each series is one polyline through every epoch plus a two-point
            // sample in the legend.
            let lines = |colour: RGBColor| -> Vec<usize> {
                let stroke = format!(
                    "stroke=\"#{:02X}{:02X}{:02X}\"",
                    colour.0, colour.1, colour.2
                );
                svg.lines()
                    .filter(|l| l.starts_with("<polyline") && l.contains(&stroke))
                    .map(|l| {
                        l.split("points=")
                            .nth(1)
                            .unwrap()
                            .split_whitespace()
                            .filter(|point| point.contains(','))
                            .count()
                    })
                    .collect()
            };
            let mut train = lines(TRAIN_COLOUR);
            train.sort_unstable();
            assert_eq!(train, [2, 2, 4, 4], "{svg}");
            let mut val = lines(VALIDATION_COLOUR);
            val.sort_unstable();
            let expected: &[usize] = if validation { &[2, 2, 4, 4] } else { &[] };
            assert_eq!(val, expected, "{svg}");
            assert_eq!(svg.matches("\ntrain\n</text>").count(), 2);
            assert_eq!(
                svg.matches("\nvalidation\n</text>").count(),
                if validation { 2 } else { 0 }
            );
        }
    }

    #[test]
    fn png_figures_decode_at_their_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let curves = dir.path().join("c.png");
        training_curves(&curves, &reports(true)).unwrap();
        assert_eq!(image::image_dimensions(&curves).unwrap(), (1000, 420));
        let heat = dir.path().join("h.png");
        let m = ConfusionMatrix::new(10, &[0, 1, 2, 2], &[0, 1, 2, 1]);
        let names = DatasetKind::FashionMnist.class_names().map(String::from);
        confusion_heatmap(&heat, &m, &names, "test").unwrap();
        assert_eq!(image::image_dimensions(&heat).unwrap(), (820, 780));
        let grid = dir.path().join("g.png");
        let pixels = [128u8; 784];
        let mistakes = vec![
            Mistake {
                pixels: &pixels,
                size: ImageSize { rows: 28, cols: 28 },
                label: 1,
                predicted: 2,
                confidence: 0.9
            };
            7
        ];
        misclassified_grid(&grid, &mistakes, &names, "test").unwrap();
        assert_eq!(image::image_dimensions(&grid).unwrap(), (750, 44 + 2 * 136));
    }

    #[test]
    fn one_epoch_and_empty_grids_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let one = &reports(false)[..1];
        training_curves(&dir.path().join("one.png"), one).unwrap();
        training_curves(&dir.path().join("none.svg"), &[]).unwrap();
        let names = DatasetKind::Mnist.class_names().map(String::from);
        misclassified_grid(&dir.path().join("g.png"), &[], &names, "none").unwrap();
    }

    #[test]
    fn unwritable_paths_name_the_file() {
        let e = training_curves(Path::new("/nonexistent-dir/c.png"), &reports(false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent-dir/c.png"), "{e}");
    }

    #[test]
    fn ranges_pad_and_survive_no_data() {
        assert_eq!(value_range(std::iter::empty()), (0.0, 1.0));
        let (lo, hi) = value_range([0.5, 0.9].into_iter());
        assert!(lo < 0.5 && hi > 0.9 && lo >= 0.0);
        assert_eq!(
            value_range([f64::NAN].into_iter().filter(|v| v.is_finite())),
            (0.0, 1.0)
        );
    }
}
