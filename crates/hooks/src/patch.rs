//! Patches: where (hook point, batch rows, positions, heads) and what (replace, zero,
//! mean over positions, add a vector).

use candle_core::{DType, Tensor};

use crate::{HookError, HookPoint, Layout};

/// A choice of indices along one axis.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    #[default]
    All,
    Only(Vec<usize>),
}

impl Selection {
    fn indices(&self, size: usize) -> Vec<usize> {
        match self {
            Selection::All => (0..size).collect(),
            Selection::Only(indices) => indices.clone(),
        }
    }
}

impl<I: IntoIterator<Item = usize>> From<I> for Selection {
    fn from(indices: I) -> Self {
        Selection::Only(indices.into_iter().collect())
    }
}

/// One patched element of a sweep: a batch row, and a position and head (`None`: all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub row: usize,
    /// The position (the query position of an attention pattern).
    pub position: Option<usize>,
    pub head: Option<usize>,
    /// One key position of an attention pattern (`None`: every key); only for
    /// `hook_attn_scores` / `hook_pattern`.
    pub key: Option<usize>,
}

/// Which entries of the activation a patch touches.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchTarget {
    /// Every combination of the selected rows, positions and heads.
    Grid {
        rows: Selection,
        positions: Selection,
        heads: Selection,
    },
    /// An explicit list, e.g. one cell per batch row in a batched sweep.
    Cells(Vec<Cell>),
}

/// What a patch writes.
#[derive(Debug, Clone)]
pub enum PatchValue {
    /// Values from another run (a cache) or a given tensor of the activation's shape;
    /// a batch axis of 1 is broadcast over the rows. Position i replaces position i.
    Replace(Tensor),
    /// Zero ablation.
    Zero,
    /// Mean ablation over the positions of the same row (query positions for patterns).
    MeanOverPositions,
    /// Add a vector over the last axis (steering): `[d_model]`, or `[d_head]` for heads.
    Add(Tensor),
}

/// A patch of one hook point.
#[derive(Debug, Clone)]
pub struct Patch {
    pub point: HookPoint,
    pub target: PatchTarget,
    pub value: PatchValue,
}

impl Patch {
    /// A patch of every row, position and head; narrow it with the builder methods.
    pub fn new(point: HookPoint, value: PatchValue) -> Self {
        Patch {
            point,
            target: PatchTarget::Grid {
                rows: Selection::All,
                positions: Selection::All,
                heads: Selection::All,
            },
            value,
        }
    }

    pub fn replace(point: HookPoint, source: Tensor) -> Self {
        Patch::new(point, PatchValue::Replace(source))
    }

    pub fn zero(point: HookPoint) -> Self {
        Patch::new(point, PatchValue::Zero)
    }

    pub fn mean(point: HookPoint) -> Self {
        Patch::new(point, PatchValue::MeanOverPositions)
    }

    pub fn add(point: HookPoint, vector: Tensor) -> Self {
        Patch::new(point, PatchValue::Add(vector))
    }

    /// A patch of the listed cells only.
    pub fn at_cells(point: HookPoint, value: PatchValue, cells: Vec<Cell>) -> Self {
        Patch {
            point,
            target: PatchTarget::Cells(cells),
            value,
        }
    }

    pub fn rows(self, rows: impl Into<Selection>) -> Self {
        self.with_grid(|r, _, _| *r = rows.into())
    }

    pub fn positions(self, positions: impl Into<Selection>) -> Self {
        self.with_grid(|_, p, _| *p = positions.into())
    }

    pub fn heads(self, heads: impl Into<Selection>) -> Self {
        self.with_grid(|_, _, h| *h = heads.into())
    }

    fn with_grid(
        mut self,
        set: impl FnOnce(&mut Selection, &mut Selection, &mut Selection),
    ) -> Self {
        if let PatchTarget::Grid {
            rows,
            positions,
            heads,
        } = &mut self.target
        {
            set(rows, positions, heads);
        }
        self
    }

    /// Applies the patch to `activation` (the value flowing through `self.point`).
    pub fn apply(&self, activation: &Tensor) -> Result<Tensor, HookError> {
        let name = self.point.to_string();
        let tensor_err = |source| HookError::Tensor {
            name: name.clone(),
            source: Box::new(source),
        };
        let shape = activation.dims().to_vec();
        let mask = self.mask(&shape)?; // u8, broadcast to the activation's shape
        let mask = mask
            .to_device(activation.device())
            .and_then(|m| m.broadcast_as(shape.as_slice()))
            .map_err(tensor_err)?;
        let patched = match &self.value {
            PatchValue::Replace(source) => {
                let source = fit_source(source, &shape, &name)?;
                source.to_dtype(activation.dtype()).map_err(tensor_err)?
            }
            PatchValue::Zero => activation.zeros_like().map_err(tensor_err)?,
            PatchValue::MeanOverPositions => {
                let pos_axis = match self.point.layout() {
                    Layout::BatchHeadQueryKey => 2,
                    _ => 1,
                };
                activation
                    .mean_keepdim(pos_axis)
                    .and_then(|m| m.broadcast_as(shape.as_slice()))
                    .map_err(tensor_err)?
            }
            PatchValue::Add(vector) => {
                let last = shape.last().copied().unwrap_or(0);
                if vector.elem_count() != last {
                    return Err(HookError::PatchShape {
                        name,
                        given: vector.dims().to_vec(),
                        activation: shape,
                    });
                }
                vector
                    .reshape(last)
                    .and_then(|v| v.to_dtype(activation.dtype()))
                    .and_then(|v| activation.broadcast_add(&v))
                    .map_err(tensor_err)?
            }
        };
        mask.where_cond(&patched, activation).map_err(tensor_err)
    }

    /// A 0/1 mask over the batch, position and head axes, with trailing axes of size 1.
    fn mask(&self, shape: &[usize]) -> Result<Tensor, HookError> {
        let mut grid = MaskGrid::new(self.point, shape);
        match &self.target {
            PatchTarget::Grid {
                rows,
                positions,
                heads,
            } => {
                if !grid.has_heads() && *heads != Selection::All {
                    return Err(grid.no_heads());
                }
                let each = |selection: &Selection| -> Vec<Option<usize>> {
                    match selection {
                        Selection::All => vec![None],
                        Selection::Only(items) => items.iter().map(|i| Some(*i)).collect(),
                    }
                };
                let (positions, heads) = (each(positions), each(heads));
                for row in rows.indices(grid.batch) {
                    for p in &positions {
                        for h in &heads {
                            grid.set(row, *p, *h)?;
                        }
                    }
                }
            }
            PatchTarget::Cells(cells) => {
                if cells.iter().any(|c| c.key.is_some()) {
                    grid.with_keys(shape)?;
                }
                for cell in cells {
                    match cell.key {
                        None => grid.set(cell.row, cell.position, cell.head)?,
                        Some(key) => grid.set_key(cell.row, cell.position, cell.head, key)?,
                    }
                }
            }
        }
        grid.into_tensor()
    }
}

/// A patch mask being filled: one flag per (row, position, head) in the activation's
/// axis order, and per key position too when single pattern entries are patched.
struct MaskGrid {
    name: String,
    layout: Layout,
    batch: usize,
    pos: usize,
    heads: usize,
    /// The mask's shape: the activation's, with trailing axes of size 1.
    shape: Vec<usize>,
    flags: Vec<u8>,
    /// Key positions of a pattern mask with a key axis (see [`MaskGrid::with_keys`]).
    keys: Option<usize>,
    /// Flags per (row, head, query, key) of a mask with a key axis.
    key_flags: Vec<u8>,
}

impl MaskGrid {
    fn new(point: HookPoint, shape: &[usize]) -> Self {
        let layout = point.layout();
        // (batch, pos, head) sizes, and the mask's shape in the activation's axis order.
        let (batch, pos, heads, mask_shape) = match layout {
            Layout::BatchPos => (shape[0], shape[1], 1, vec![shape[0], shape[1], 1]),
            Layout::BatchPosHead => (
                shape[0],
                shape[1],
                shape[2],
                vec![shape[0], shape[1], shape[2], 1],
            ),
            Layout::BatchHeadQueryKey => (
                shape[0],
                shape[2],
                shape[1],
                vec![shape[0], shape[1], shape[2], 1],
            ),
        };
        MaskGrid {
            name: point.to_string(),
            layout,
            batch,
            pos,
            heads,
            shape: mask_shape,
            flags: vec![0u8; batch * pos * heads],
            keys: None,
            key_flags: Vec::new(),
        }
    }

    /// Gives a pattern mask a key axis, for cells that patch one (query, key) entry.
    fn with_keys(&mut self, shape: &[usize]) -> Result<(), HookError> {
        if self.layout != Layout::BatchHeadQueryKey {
            return Err(HookError::NoKeyAxis {
                name: self.name.clone(),
            });
        }
        let keys = shape[3];
        self.keys = Some(keys);
        self.key_flags = vec![0u8; self.batch * self.heads * self.pos * keys];
        Ok(())
    }

    /// Sets the flag of key `key` in the pattern rows of `row` at query position `p`
    /// and head `h` (`None`: all of them): one entry per row, not the whole row.
    fn set_key(
        &mut self,
        row: usize,
        p: Option<usize>,
        h: Option<usize>,
        key: usize,
    ) -> Result<(), HookError> {
        let keys = self.keys.unwrap_or(0);
        self.check("key position", key, keys)?;
        let (positions, heads) = self.ranges(row, p, h)?;
        for p in positions {
            for h in heads.clone() {
                let i = self.index(row, p, h);
                self.key_flags[i * keys + key] = 1;
            }
        }
        Ok(())
    }

    fn has_heads(&self) -> bool {
        self.layout != Layout::BatchPos
    }

    fn no_heads(&self) -> HookError {
        HookError::NoHeadAxis {
            name: self.name.clone(),
        }
    }

    fn check(&self, axis: &'static str, index: usize, size: usize) -> Result<(), HookError> {
        if index >= size {
            return Err(HookError::IndexOutOfRange {
                name: self.name.clone(),
                axis,
                index,
                size,
            });
        }
        Ok(())
    }

    fn index(&self, row: usize, p: usize, h: usize) -> usize {
        match self.layout {
            Layout::BatchPos => row * self.pos + p,
            Layout::BatchPosHead => (row * self.pos + p) * self.heads + h,
            Layout::BatchHeadQueryKey => (row * self.heads + h) * self.pos + p,
        }
    }

    /// Sets the flags of `row` at position `p` and head `h` (`None`: all of them).
    fn set(&mut self, row: usize, p: Option<usize>, h: Option<usize>) -> Result<(), HookError> {
        let (positions, heads) = self.ranges(row, p, h)?;
        for p in positions {
            for h in heads.clone() {
                let i = self.index(row, p, h);
                self.flags[i] = 1;
            }
        }
        Ok(())
    }

    /// The positions and heads `p` and `h` name (`None`: all), checked against the
    /// activation's sizes.
    fn ranges(
        &self,
        row: usize,
        p: Option<usize>,
        h: Option<usize>,
    ) -> Result<(std::ops::Range<usize>, std::ops::Range<usize>), HookError> {
        self.check("row", row, self.batch)?;
        let positions = match p {
            Some(p) => {
                self.check("position", p, self.pos)?;
                p..p + 1
            }
            None => 0..self.pos,
        };
        let heads = match h {
            Some(_) if !self.has_heads() => return Err(self.no_heads()),
            Some(h) => {
                self.check("head", h, self.heads)?;
                h..h + 1
            }
            None => 0..self.heads,
        };
        Ok((positions, heads))
    }

    fn into_tensor(self) -> Result<Tensor, HookError> {
        let name = self.name;
        let (flags, shape) = match self.keys {
            None => (self.flags, self.shape),
            Some(keys) => {
                // Whole query rows set without a key, single entries with one.
                let flags = self
                    .key_flags
                    .chunks(keys)
                    .zip(&self.flags)
                    .flat_map(|(entries, row)| entries.iter().map(move |e| e | row))
                    .collect();
                let mut shape = self.shape;
                shape[3] = keys;
                (flags, shape)
            }
        };
        Tensor::from_vec(flags, shape, &candle_core::Device::Cpu)
            .and_then(|m| m.to_dtype(DType::U8))
            .map_err(|source| HookError::Tensor {
                name,
                source: Box::new(source),
            })
    }
}

/// The source of a replacement, broadcast over rows when it has a batch axis of 1.
fn fit_source(source: &Tensor, shape: &[usize], name: &str) -> Result<Tensor, HookError> {
    let given = source.dims();
    let fits = given.len() == shape.len()
        && given[1..] == shape[1..]
        && (given[0] == shape[0] || given[0] == 1);
    if !fits {
        return Err(HookError::PatchShape {
            name: name.to_string(),
            given: given.to_vec(),
            activation: shape.to_vec(),
        });
    }
    source
        .broadcast_as(shape)
        .map_err(|source| HookError::Tensor {
            name: name.to_string(),
            source: Box::new(source),
        })
}
