//! Tensors out to numpy with one copy: from candle's CPU buffer straight into the
//! `bytearray` a numpy array then uses as its own memory (`numpy.frombuffer`: no
//! second copy, and the array is writable). A tensor that is not a contiguous f32 CPU
//! buffer (a view, another dtype, a GPU tensor) is made one first.

use candle_core::{CpuStorage, DType, Storage, Tensor};
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use crate::errors;

/// `tensor` as a float32 numpy array of the same shape.
pub fn f32_array<'py>(py: Python<'py>, tensor: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let shape: Vec<usize> = tensor.dims().to_vec();
    let converted;
    let tensor = match tensor.dtype() == DType::F32 && tensor.device().is_cpu() {
        true => tensor,
        false => {
            converted = (tensor.to_dtype(DType::F32))
                .and_then(|t| t.to_device(&candle_core::Device::Cpu))
                .map_err(read_out)?;
            &converted
        }
    };
    let contiguous;
    let tensor = match tensor.is_contiguous() {
        true => tensor,
        false => {
            contiguous = tensor.contiguous().map_err(read_out)?;
            &contiguous
        }
    };
    let (storage, layout) = tensor.storage_and_layout();
    let values: &[f32] = match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) => &data[start..end],
        _ => return Err(read_out("not a contiguous f32 CPU buffer")),
    };
    f32_array_from(py, values, &shape)
}

fn read_out(error: impl std::fmt::Display) -> PyErr {
    errors::RunError::new_err(format!("reading a tensor out: {error}"))
}

/// `values` (row-major) as a float32 numpy array of `shape`.
pub fn f32_array_from<'py>(
    py: Python<'py>,
    values: &[f32],
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let buffer = PyByteArray::new_with(py, std::mem::size_of_val(values), |bytes| {
        for (out, value) in bytes.chunks_exact_mut(4).zip(values) {
            out.copy_from_slice(&value.to_ne_bytes());
        }
        Ok(())
    })?;
    numpy_view(py, buffer, "float32", shape)
}

/// Token ids as an int64 numpy array of `shape`.
pub fn i64_array<'py>(
    py: Python<'py>,
    ids: &[u32],
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let buffer = PyByteArray::new_with(py, 8 * ids.len(), |bytes| {
        for (out, &id) in bytes.chunks_exact_mut(8).zip(ids) {
            out.copy_from_slice(&i64::from(id).to_ne_bytes());
        }
        Ok(())
    })?;
    numpy_view(py, buffer, "int64", shape)
}

/// A numpy array over `buffer`'s memory (no copy).
fn numpy_view<'py>(
    py: Python<'py>,
    buffer: Bound<'py, PyByteArray>,
    dtype: &str,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let numpy = py.import("numpy")?;
    let flat = numpy.getattr("frombuffer")?.call1((buffer, dtype))?;
    flat.call_method1("reshape", (shape.to_vec(),))
}
