//! Matrix products by a weight on f32 slices, through the `gemm` crate candle itself
//! runs on: `x @ weight (+ bias)` for forward passes, and `grad @ weightᵀ` for the
//! backward pass of a linear map, laid out so that gemm streams the weight as it is
//! stored instead of repacking it.

use std::borrow::Cow;
use std::sync::OnceLock;

use candle_core::{Storage, Tensor};

/// A weight `[in, out]` as gemm reads it: its f32 values from its start offset, and
/// the strides of its two axes (any strides, e.g. a transposed view).
#[derive(Clone, Copy)]
pub(crate) struct WeightView<'a> {
    pub values: &'a [f32],
    pub d_in: usize,
    pub d_out: usize,
    /// Stride between consecutive inputs (rows) and outputs (columns).
    pub row_stride: usize,
    pub col_stride: usize,
}

/// `f` of `weight` (`[in, out]`, f32 on the CPU, any strides); `None` on another device.
pub(crate) fn with_weight<R>(
    weight: &Tensor,
    f: impl FnOnce(WeightView) -> R,
) -> candle_core::Result<Option<R>> {
    let (d_in, d_out) = weight.dims2()?;
    let (storage, layout) = weight.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let view = WeightView {
        values: &cpu.as_slice::<f32>()?[layout.start_offset()..],
        d_in,
        d_out,
        row_stride: layout.stride()[0],
        col_stride: layout.stride()[1],
    };
    Ok(Some(f(view)))
}

/// The threads gemm runs on: candle's count, read once (candle reads `/proc/cpuinfo`
/// on every call, which costs more than a small product).
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

fn parallelism() -> gemm::Parallelism {
    match threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `rows` rows of `x`, one row doubled: gemm takes a matrix-vector path for one row,
/// which sums in another order, so one row runs as two equal rows and a row's numbers
/// never depend on its batch (the product of one row reads the weight once either way).
fn at_least_two_rows(x: &[f32], rows: usize) -> (Cow<'_, [f32]>, usize) {
    match rows {
        1 => (Cow::Owned(x.repeat(2)), 2),
        _ => (Cow::Borrowed(x), rows),
    }
}

/// `x` `[rows, in]` (row-major) `@ weight + bias` → `[rows, out]`, the bias (`[out]`)
/// added as the product's starting value ([`at_least_two_rows`]).
pub(crate) fn product(x: &[f32], weight: WeightView, bias: Option<&[f32]>) -> Vec<f32> {
    let d_out = weight.d_out;
    let rows = x.len() / weight.d_in.max(1);
    let (x, padded) = at_least_two_rows(x, rows);
    let mut out = match bias {
        Some(bias) => bias.repeat(padded),
        None => vec![0f32; padded * d_out],
    };
    product_into(&x, weight, (&mut out, d_out), bias.is_some());
    out.truncate(rows * d_out);
    out
}

/// `x` `[rows, in]` (row-major) `@ weight` written into `dst`, row `r` at
/// `dst[r · row_stride ..][.. out]` (added to what is there when `accumulate`).
/// `rows` must be at least 2 ([`at_least_two_rows`]), and `dst` long enough.
pub(crate) fn product_into(
    x: &[f32],
    weight: WeightView,
    (dst, row_stride): (&mut [f32], usize),
    accumulate: bool,
) {
    let (d_in, d_out) = (weight.d_in, weight.d_out);
    let rows = x.len() / d_in.max(1);
    assert!(
        rows >= 2 && row_stride >= d_out && dst.len() >= (rows - 1) * row_stride + d_out,
        "product_into: {rows} rows into {} values",
        dst.len()
    );
    // SAFETY: `dst` holds rows rows of d_out values row_stride apart (checked above),
    // `x` rows × d_in (row-major), and the weight's strides address its d_in × d_out
    // elements within `values`.
    unsafe {
        gemm::gemm(
            rows,
            d_out,
            d_in,
            dst.as_mut_ptr(),
            1,
            row_stride as isize,
            accumulate,
            x.as_ptr(),
            1,
            d_in as isize,
            weight.values.as_ptr(),
            weight.col_stride as isize,
            weight.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// `x` `[rows, in]` (row-major) `@ weight + bias` → `[rows, out]` for a few rows (a
/// differentiable pass), with the weight read where it lies whichever of its axes is
/// contiguous: a weight whose outputs are adjacent is gemm's left-hand operand as it
/// is ([`product`]); one whose inputs are adjacent (a transposed view, the backward
/// pass of an `[in, out]` weight) goes through a column-major destination
/// ([`by_columns`]). Either way gemm does not repack it (it would, whole, on every
/// call, in the other); the two sum in different orders.
pub(crate) fn product_few_rows(x: &[f32], weight: WeightView, bias: Option<&[f32]>) -> Vec<f32> {
    if weight.col_stride == 1 {
        return product(x, weight, bias);
    }
    // Right-hand row k = input k, column j = output j.
    let rhs = (weight.row_stride, weight.col_stride);
    by_columns(x, (weight.values, rhs), (weight.d_in, weight.d_out), bias)
}

/// `grad` `[rows, out]` (row-major) `@ weightᵀ` → `[rows, in]`: the gradient of a
/// linear map's input ([`product_few_rows`] of the transposed weight).
pub(crate) fn product_transposed(grad: &[f32], weight: WeightView) -> Vec<f32> {
    let transposed = WeightView {
        values: weight.values,
        d_in: weight.d_out,
        d_out: weight.d_in,
        row_stride: weight.col_stride,
        col_stride: weight.row_stride,
    };
    product_few_rows(grad, transposed, None)
}

/// `lhs` `[rows, k]` (row-major) `@ rhs` `[k, n]` (values and (row, column) strides)
/// `+ start` (`[n]`) → `[rows, n]` row-major.
///
/// gemm's kernel runs along the rows of its destination's most contiguous axis. With a
/// row-major destination of a few rows it transposes the problem, making the weight
/// its left-hand operand, which it repacks whole unless the weight's outputs are
/// adjacent in memory (the backward pass of a `[in, out]` weight repacks it all).
/// Computing into a column-major destination (stored `[n, rows]`) keeps the few rows
/// on the kernel's side and the weight on the right, which gemm reads where it lies;
/// one small transpose puts the result back ([`at_least_two_rows`]).
fn by_columns(
    lhs: &[f32],
    (rhs, (rhs_rs, rhs_cs)): (&[f32], (usize, usize)),
    (k, n): (usize, usize),
    start: Option<&[f32]>,
) -> Vec<f32> {
    let rows = lhs.len() / k.max(1);
    let (lhs, padded) = at_least_two_rows(lhs, rows);
    let mut columns = match start {
        Some(start) => start
            .iter()
            .flat_map(|v| std::iter::repeat_n(*v, padded))
            .collect(),
        None => vec![0f32; padded * n],
    }; // [n, padded]
       // SAFETY: `columns` holds padded × n values (row r, column j at j · padded + r),
       // `lhs` padded × k row-major, and the strides address rhs's k × n elements.
    unsafe {
        gemm::gemm(
            padded,
            n,
            k,
            columns.as_mut_ptr(),
            padded as isize, // destination column stride
            1,               // destination row stride
            start.is_some(), // read the starting values
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
    let mut out = vec![0f32; rows * n];
    for (j, column) in columns.chunks_exact(padded.max(1)).enumerate() {
        for (r, value) in column.iter().take(rows).enumerate() {
            out[r * n + j] = *value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
        let mut out = vec![0f32; rows * d_out];
        for r in 0..rows {
            for o in 0..d_out {
                out[r * d_out + o] = (0..d_in).map(|i| x[r * d_in + i] * w[i * d_out + o]).sum();
            }
        }
        out
    }

    #[test]
    fn products_match_the_definition() {
        let (rows, d_in, d_out) = (5, 37, 29);
        let x: Vec<f32> = (0..rows * d_in)
            .map(|i| ((i * 13) % 17) as f32 / 9.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..d_in * d_out)
            .map(|i| ((i * 7) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let g: Vec<f32> = (0..rows * d_out)
            .map(|i| ((i * 5) % 19) as f32 / 7.0 - 1.0)
            .collect();
        // The same weight stored [in, out] (outputs adjacent) and [out, in] (inputs
        // adjacent, viewed transposed): each product takes the other path on each.
        let w_t: Vec<f32> = (0..d_out * d_in)
            .map(|j| w[(j % d_in) * d_out + j / d_in])
            .collect(); // [out, in]
        let views = [
            WeightView {
                values: &w,
                d_in,
                d_out,
                row_stride: d_out,
                col_stride: 1,
            },
            WeightView {
                values: &w_t,
                d_in,
                d_out,
                row_stride: 1,
                col_stride: d_in,
            },
        ];
        let bias: Vec<f32> = (0..d_out).map(|o| o as f32 / 10.0).collect();
        let want = naive(&x, &w, rows, d_in, d_out);
        // grad @ wᵀ = naive(grad, wᵀ).
        let want_transposed = naive(&g, &w_t, rows, d_out, d_in);
        for view in views {
            for rows in [rows, 1] {
                let x = &x[..rows * d_in];
                for got in [
                    product(x, view, Some(&bias)),
                    product_few_rows(x, view, Some(&bias)),
                ] {
                    assert_eq!(got.len(), rows * d_out);
                    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (got - want - bias[i % d_out]).abs() < 1e-4,
                            "{got} vs {want}"
                        );
                    }
                }
            }
            let got = product_transposed(&g, view);
            assert_eq!(got.len(), rows * d_in);
            for (got, want) in got.iter().zip(&want_transposed) {
                assert!((got - want).abs() < 1e-4, "{got} vs {want}");
            }
        }
    }
}
