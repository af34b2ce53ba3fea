//! [`QuantizedMatrix`]: a quantized weight matrix multiplied by a batch of input rows (one
//! row when decoding, the whole prompt in prefill). The batch is quantized once
//! ([`super::activation`], or [`super::activation_k`] for the k-quants), then the kernels
//! compute every product of a weight row with a token row in ggml's operations, so prefill
//! gives the same results as decoding the same tokens one by one, and as llama.cpp (which
//! multiplies quantized weights by quantized activations in prefill too).
//!
//! The work is split over the current rayon pool — the model's own pool, since every forward
//! pass runs inside `pool.install` (see [`crate::threads`]). One token (decoding) is split
//! into chunks of weight rows: one matrix row of the default model is ~18 blocks, far less
//! work than a rayon task costs to hand out; the matrices that read the same input go out
//! together ([`QuantizedMatrix::multiply_all`]). A batch is split into chunks of
//! tokens, each of which meets every weight row: its quantized activations (at most
//! [`MAX_CHUNK_TOKENS`] tokens) stay in the core's cache while the weight rows stream past,
//! and each task writes whole output rows.

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

use super::Error;
use super::activation::{self, ActivationBlock};
use super::activation_k::{self, SuperBlock};
use super::blocks::{self, BlockFormat};
use super::format::{Accumulation, Products, WeightFormat};
use super::superblocks::{self, SuperBlockFormat};
use crate::mapped::SharedBytes;

/// Chunks handed out per pool thread: a few, so that a thread slowed by another process
/// leaves its remaining chunks to the others.
const CHUNKS_PER_THREAD: usize = 4;

/// Matrices with fewer rows than this are not split (the output projection of the default
/// model has 49,152 rows, its other matrices 576 to 1,536).
const MIN_CHUNK_ROWS: usize = 64;

/// Tokens per chunk of a batch at most: 64 tokens of activations for a 1,536-wide matrix are
/// ~120 KB, well inside a core's L2 cache.
const MAX_CHUNK_TOKENS: usize = 64;

/// k-quant batches of at least this many tokens go through weight panels (`super::panels`):
/// below it, unpacking a panel costs more than its faster products save.
const PANEL_MIN_TOKENS: usize = 16;

/// A multiple of the weight rows per panel (`super::panels`: 16 or 8): a row split hands out
/// whole panels.
const PANEL_ROWS: usize = 16;

/// Which dot product this CPU runs.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2 {
        avx2: super::avx2::Avx2,
        panels: super::panels::Panels,
    },
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = super::avx2::Avx2::detect() {
            let panels = super::panels::Panels::detect(avx2);
            return Self::Avx2 { avx2, panels };
        }
        Self::Portable
    }

    /// Whether a k-quant batch of `tokens` in `accumulation` order goes through
    /// [`Kernel::dot_panels`].
    fn takes_panels(self, accumulation: Accumulation, tokens: usize) -> bool {
        let available = match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 { .. } => true,
            Self::Portable => false,
        };
        available && accumulation != Accumulation::Lanes && tokens >= PANEL_MIN_TOKENS
    }

    /// The k-quant products of whole weight panels (see [`Kernel::takes_panels`]); the same
    /// results as [`Kernel::dot_tile_super`].
    fn dot_panels(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut Products<'_>,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 { panels, .. } => {
                panels.dot_tile(format, accumulation, rows, row_bytes, activations, out)
            }
            Self::Portable => {
                self.dot_tile_super(format, accumulation, rows, row_bytes, activations, out)
            }
        }
    }

    fn dot_tile(
        self,
        format: BlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[ActivationBlock],
        out: &mut Products<'_>,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 { avx2, .. } => {
                avx2.dot_tile(format, accumulation, rows, row_bytes, activations, out)
            }
            Self::Portable => {
                blocks::dot_tile(format, accumulation, rows, row_bytes, activations, out)
            }
        }
    }

    fn dot_tile_super(
        self,
        format: SuperBlockFormat,
        accumulation: Accumulation,
        rows: &[u8],
        row_bytes: usize,
        activations: &[SuperBlock],
        out: &mut Products<'_>,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 { avx2, .. } => {
                avx2.dot_tile_super(format, accumulation, rows, row_bytes, activations, out)
            }
            Self::Portable => {
                superblocks::dot_tile(format, accumulation, rows, row_bytes, activations, out)
            }
        }
    }
}

/// A quantized `(rows, columns)` weight matrix whose blocks the kernels read in place (from
/// the mapped model file).
#[derive(Clone)]
pub(crate) struct QuantizedMatrix {
    bytes: SharedBytes,
    format: WeightFormat,
    /// llama.cpp's order of float operations for this matrix.
    accumulation: Accumulation,
    rows: usize,
    columns: usize,
    kernel: Kernel,
}

impl QuantizedMatrix {
    /// The `dims` (rows, columns) matrix of `dtype` blocks in `bytes`; `Ok(None)` when the
    /// kernels do not handle the format (candle's `QMatMul` does).
    pub(crate) fn new(
        dtype: GgmlDType,
        dims: &[usize],
        bytes: SharedBytes,
    ) -> Result<Option<Self>, Error> {
        let Some(format) = WeightFormat::from_dtype(dtype) else {
            return Ok(None);
        };
        let dims = dims.to_vec();
        let (rows, columns) = match dims.as_slice() {
            &[rows, columns] if columns > 0 && columns.is_multiple_of(format.block_len()) => {
                (rows, columns)
            }
            _ => return Err(Error::Shape { format, dims }),
        };
        let matrix = Self {
            bytes,
            format,
            accumulation: Accumulation::for_matrix(format, rows),
            rows,
            columns,
            kernel: Kernel::detect(),
        };
        // Check the byte count once here, so that a forward pass cannot meet a short buffer.
        let expected = matrix.rows * matrix.row_bytes();
        if matrix.bytes.len() != expected {
            return Err(Error::DataSize {
                format,
                rows,
                columns,
                actual: matrix.bytes.len(),
                expected,
            });
        }
        Ok(Some(matrix))
    }

    /// A copy of candle's quantized tensor (tests).
    #[cfg(test)]
    pub(crate) fn from_qtensor(
        weights: &candle_core::quantized::QTensor,
    ) -> Result<Option<Self>, Error> {
        let raw = weights
            .data()
            .map(|raw| raw.into_owned())
            .unwrap_or_default();
        Self::new(
            weights.dtype(),
            weights.shape().dims(),
            SharedBytes::from_vec(raw),
        )
    }

    /// The rows `ids` dequantized to f32, appended to `out` one after another (an embedding
    /// lookup).
    pub(crate) fn dequantize_rows(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<(), Error> {
        let row_bytes = self.row_bytes();
        out.reserve(ids.len() * self.columns);
        for &id in ids {
            let row = id as usize;
            if row >= self.rows {
                return Err(Error::Row {
                    row,
                    rows: self.rows,
                });
            }
            let bytes = &self.bytes[row * row_bytes..(row + 1) * row_bytes];
            match self.format {
                WeightFormat::Block(format) => {
                    // Adding a zero minimum would turn ggml's -0.0 into +0.0.
                    let has_min = matches!(format, BlockFormat::Q4_1 | BlockFormat::Q5_1);
                    for block in bytes.chunks_exact(format.block_bytes()) {
                        let w = blocks::unpack(format, block);
                        out.extend(w.values.iter().map(|&v| {
                            let y = f32::from(v) * w.d;
                            if has_min { y + w.m } else { y }
                        }));
                    }
                }
                WeightFormat::SuperBlock(format) => {
                    for block in bytes.chunks_exact(format.block_bytes()) {
                        let w = superblocks::unpack(format, block);
                        out.extend(w.values.iter().enumerate().map(|(e, &v)| {
                            let scale = w.d * w.scales[e / 16] as f32;
                            let min = w.dmin * w.mins[e / 32] as f32;
                            scale * f32::from(v) - min
                        }));
                    }
                }
            }
        }
        Ok(())
    }

    fn row_bytes(&self) -> usize {
        self.columns / self.format.block_len() * self.format.block_bytes()
    }

    /// `input`: input rows of `columns` values, one after another; `output`: `rows` values
    /// per input row.
    pub(crate) fn multiply(&self, input: &[f32], output: &mut [f32]) -> Result<(), Error> {
        Self::multiply_all(&[self], input, &mut [output])
    }

    /// The products of each of `matrices` with the same input rows, written to `outputs` (one
    /// per matrix, `rows` values per input row): a layer's query, key and value, or its gate
    /// and up. The input is quantized once per block size for all of them.
    pub(crate) fn multiply_all(
        matrices: &[&Self],
        input: &[f32],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), Error> {
        for (matrix, output) in matrices.iter().zip(outputs.iter()) {
            if !input.len().is_multiple_of(matrix.columns) {
                return Err(Error::InputWidth {
                    columns: matrix.columns,
                    actual: input.len(),
                });
            }
            let rows = input.len() / matrix.columns * matrix.rows;
            if output.len() != rows {
                return Err(Error::OutputLength {
                    rows,
                    actual: output.len(),
                });
            }
        }
        if matrices.iter().all(|m| input.len() == m.columns) {
            Self::multiply_one_token(matrices, input, outputs);
            return Ok(());
        }
        // The rows of `input` are whole blocks, so quantizing it as one long row quantizes
        // each input row, one after another.
        let needs = |wanted: fn(&WeightFormat) -> bool| matrices.iter().any(|m| wanted(&m.format));
        let mut blocks = Vec::new();
        if needs(|f| matches!(f, WeightFormat::Block(_))) {
            activation::quantize_row(input, &mut blocks);
        }
        let mut super_blocks = Vec::new();
        if needs(|f| matches!(f, WeightFormat::SuperBlock(_))) {
            activation_k::quantize_row(input, &mut super_blocks);
        }
        let mut products: Vec<(&Self, &mut [f32])> = matrices
            .iter()
            .copied()
            .zip(outputs.iter_mut().map(|output| &mut **output))
            .collect();
        Self::multiply_batch(&mut products, input.len(), (&blocks, &super_blocks));
        Ok(())
    }

    /// Each of `products`' matrices times the batch quantized in `activations`, into its
    /// output. The matrices run side by side (nested `rayon::join`), so the pool's threads
    /// finish one hand-out for all of them: one wait for the slowest chunk per layer step
    /// instead of one per matrix (three for a layer's query, key and value).
    fn multiply_batch(
        products: &mut [(&Self, &mut [f32])],
        input_len: usize,
        activations: (&[ActivationBlock], &[SuperBlock]),
    ) {
        let Some(((matrix, output), rest)) = products.split_first_mut() else {
            return;
        };
        let (blocks, super_blocks) = activations;
        let mut first = move || match matrix.format {
            WeightFormat::Block(format) => matrix.multiply_blocks(format, blocks, output),
            WeightFormat::SuperBlock(format) => {
                let tokens = input_len / matrix.columns;
                matrix.multiply_super_blocks(format, tokens, super_blocks, output)
            }
        };
        if rest.is_empty() {
            first();
        } else {
            rayon::join(first, || Self::multiply_batch(rest, input_len, activations));
        }
    }

    /// A batch's products with 32-weight blocks, from its quantized `activations`.
    fn multiply_blocks(
        &self,
        format: BlockFormat,
        activations: &[ActivationBlock],
        output: &mut [f32],
    ) {
        let (raw, row_bytes, order, kernel) = (
            &self.bytes[..],
            self.row_bytes(),
            self.accumulation,
            self.kernel,
        );
        self.split(raw, activations, output, |rows, activations, out| {
            kernel.dot_tile(format, order, rows, row_bytes, activations, out)
        });
    }

    /// A batch of `tokens`' products with k-quant super-blocks, from its quantized
    /// `activations`.
    fn multiply_super_blocks(
        &self,
        format: SuperBlockFormat,
        tokens: usize,
        activations: &[SuperBlock],
        output: &mut [f32],
    ) {
        let (raw, row_bytes, kernel) = (&self.bytes[..], self.row_bytes(), self.kernel);
        // llama.cpp's repacked kernels take a batch's tokens four at a time and the rest one
        // by one, in different orders: the two parts run apart.
        let order = self.accumulation.for_k_quant_batch(tokens);
        let grouped = if tokens >= 4 { tokens - tokens % 4 } else { 0 };
        let blocks = self.columns / self.format.block_len();
        let (first, rest) = activations.split_at(grouped * blocks);
        let (first_out, rest_out) = output.split_at_mut(grouped * self.rows);
        for (order, activations, output) in
            [(order.batched(), first, first_out), (order, rest, rest_out)]
        {
            if kernel.takes_panels(order, activations.len() / blocks) {
                self.split_rows(raw, activations, output, |rows, activations, out| {
                    kernel.dot_panels(format, order, rows, row_bytes, activations, out)
                });
            } else {
                self.split(raw, activations, output, |rows, activations, out| {
                    kernel.dot_tile_super(format, order, rows, row_bytes, activations, out)
                });
            }
        }
    }

    /// Runs `dot(weight rows, token activations, out)` over all products of a batch, split
    /// over the current pool in chunks of tokens, as the module docs say.
    fn split<A: Sync>(
        &self,
        raw: &[u8],
        activations: &[A],
        output: &mut [f32],
        dot: impl Fn(&[u8], &[A], &mut Products<'_>) + Sync,
    ) {
        let threads = rayon::current_num_threads();
        let blocks = self.columns / self.format.block_len();
        let tokens = activations.len() / blocks;
        let stride = self.rows;
        if tokens == 0 {
            return;
        }
        let chunk = tokens
            .div_ceil(threads * CHUNKS_PER_THREAD)
            .clamp(1, MAX_CHUNK_TOKENS);
        output
            .par_chunks_mut(chunk * self.rows)
            .zip(activations.par_chunks(chunk * blocks))
            .for_each(|(values, activations)| {
                dot(raw, activations, &mut Products { values, stride });
            });
    }
}

impl QuantizedMatrix {
    /// [`QuantizedMatrix::split`] by weight rows instead of tokens, for kernels that unpack a
    /// group of rows before multiplying it by every token ([`Kernel::dot_panels`]): chunks
    /// of whole panels, each task writing its rows for all tokens to a buffer of its own,
    /// copied into `output` afterwards.
    fn split_rows<A: Sync>(
        &self,
        raw: &[u8],
        activations: &[A],
        output: &mut [f32],
        dot: impl Fn(&[u8], &[A], &mut Products<'_>) + Sync,
    ) {
        let blocks = self.columns / self.format.block_len();
        let tokens = activations.len() / blocks;
        let row_bytes = self.row_bytes();
        if tokens == 0 || self.rows == 0 {
            return;
        }
        let threads = rayon::current_num_threads();
        let chunk = self
            .rows
            .div_ceil(threads * CHUNKS_PER_THREAD)
            .next_multiple_of(PANEL_ROWS);
        let parts: Vec<(usize, Vec<f32>)> = raw
            .par_chunks(chunk * row_bytes)
            .enumerate()
            .map(|(c, rows)| {
                let stride = rows.len() / row_bytes;
                let mut values = vec![0.0; tokens * stride];
                dot(
                    rows,
                    activations,
                    &mut Products {
                        values: &mut values,
                        stride,
                    },
                );
                (c * chunk, values)
            })
            .collect();
        for (first, values) in parts {
            let count = values.len() / tokens;
            for (t, values) in values.chunks_exact(count).enumerate() {
                output[t * self.rows + first..][..count].copy_from_slice(values);
            }
        }
    }
}

impl QuantizedMatrix {
    /// The products of each of `matrices` with the same one input row, written to `outputs`
    /// (one per matrix, `rows` values each): a layer's query, key and value, or its gate and
    /// up, handed to the pool at once. Decoding a token of a small model is a chain of short
    /// products, and each hand-out to the pool (waking its threads, waiting for the last
    /// chunk) costs about as much as a few hundred rows; the input is quantized once per
    /// block size, too. The rows are split in chunks as the module docs say.
    ///
    /// The caller ([`QuantizedMatrix::multiply_all`]) checked the widths.
    fn multiply_one_token(matrices: &[&Self], input: &[f32], outputs: &mut [&mut [f32]]) {
        let needs = |wanted: fn(&WeightFormat) -> bool| matrices.iter().any(|m| wanted(&m.format));
        let mut blocks = Vec::new();
        if needs(|f| matches!(f, WeightFormat::Block(_))) {
            activation::quantize_row(input, &mut blocks);
        }
        let mut super_blocks = Vec::new();
        if needs(|f| matches!(f, WeightFormat::SuperBlock(_))) {
            activation_k::quantize_row(input, &mut super_blocks);
        }
        let threads = rayon::current_num_threads();
        let all_rows: usize = matrices.iter().map(|m| m.rows).sum();
        let chunk = if threads <= 1 {
            all_rows.max(1)
        } else {
            all_rows
                .div_ceil(threads * CHUNKS_PER_THREAD)
                .max(MIN_CHUNK_ROWS)
                // Whole groups of the kernels' four rows.
                .next_multiple_of(8)
        };
        let mut jobs = Vec::new();
        for (matrix, output) in matrices.iter().zip(outputs.iter_mut()) {
            let row_bytes = matrix.row_bytes();
            let raw: &[u8] = &matrix.bytes;
            for (values, rows) in output.chunks_mut(chunk).zip(raw.chunks(chunk * row_bytes)) {
                jobs.push((*matrix, rows, values));
            }
        }
        let run = |(matrix, rows, values): (&Self, &[u8], &mut [f32])| {
            let stride = values.len();
            let out = &mut Products { values, stride };
            let row_bytes = matrix.row_bytes();
            match matrix.format {
                WeightFormat::Block(format) => {
                    let order = matrix.accumulation;
                    matrix
                        .kernel
                        .dot_tile(format, order, rows, row_bytes, &blocks, out);
                }
                WeightFormat::SuperBlock(format) => {
                    let order = matrix.accumulation.for_k_quant_batch(1);
                    let a = &super_blocks;
                    matrix
                        .kernel
                        .dot_tile_super(format, order, rows, row_bytes, a, out);
                }
            }
        };
        if jobs.len() <= 1 {
            jobs.into_iter().for_each(run);
        } else {
            jobs.into_par_iter().for_each(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::activation::BLOCK;
    use crate::model::kernels::blocks::tests::quantize_weights;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{DType, Device, Tensor};

    /// A deterministic pseudo-random sequence in [-1, 1) (xorshift), with occasional larger
    /// values so that blocks have different scales.
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if i % 37 == 0 { unit * 8.0 } else { unit }
            })
            .collect()
    }

    /// The exact value of what the kernels approximate: dequantized weights times dequantized
    /// activations, summed in f64.
    fn reference(format: BlockFormat, row: &[u8], activations: &[ActivationBlock]) -> f64 {
        row.chunks_exact(format.block_bytes())
            .zip(activations)
            .map(|(block, a)| {
                let w = blocks::unpack(format, block);
                (0..BLOCK)
                    .map(|i| {
                        let weight = f64::from(w.d) * f64::from(w.values[i]) + f64::from(w.m);
                        weight * f64::from(a.d) * f64::from(a.qs[i])
                    })
                    .sum::<f64>()
            })
            .sum()
    }

    const FORMATS: [BlockFormat; 5] = [
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
    ];

    #[test]
    fn dot_products_match_an_f64_reference() {
        // Widths that are multiples of 32 but not of 256 (k-quant superblocks) as well.
        for columns in [32, 64, 96, 224, 576, 1536] {
            for format in FORMATS {
                let rows = 7;
                let bytes = quantize_weights(format, &values(rows * columns, columns as u64));
                let mut activations = Vec::new();
                activation::quantize_row(&values(columns, 99), &mut activations);
                let row_bytes = columns / BLOCK * format.block_bytes();
                let mut lanes = vec![0.0; rows];
                let mut by_rows = vec![0.0; rows];
                let order = Accumulation::Lanes;
                blocks::dot_rows(format, order, &bytes, row_bytes, &activations, &mut lanes);
                let order = Accumulation::Rows;
                blocks::dot_rows(format, order, &bytes, row_bytes, &activations, &mut by_rows);
                let results = lanes.iter().enumerate().chain(by_rows.iter().enumerate());
                for (r, got) in results {
                    let row = &bytes[r * row_bytes..(r + 1) * row_bytes];
                    let exact = reference(format, row, &activations);
                    // f32 rounding of the integer terms, and the m * s terms, whose s ggml
                    // rounds to f16 (relative 2^-11, as the f16 scale the reference uses).
                    let (integer, offset) = row
                        .chunks_exact(format.block_bytes())
                        .zip(&activations)
                        .map(|(block, a)| {
                            let w = blocks::unpack(format, block);
                            let products: i32 = (0..BLOCK)
                                .map(|i| (i32::from(w.values[i]) * i32::from(a.qs[i])).abs())
                                .sum();
                            let quants: i32 = a.qs.iter().map(|q| i32::from(*q)).sum();
                            (
                                f64::from(w.d * a.d).abs() * f64::from(products),
                                (f64::from(w.m) * f64::from(a.d) * f64::from(quants)).abs(),
                            )
                        })
                        .fold((0.0, 0.0), |(i, o), (bi, bo)| (i + bi, o + bo));
                    let tolerance = integer * 1e-5 + offset * 1.2e-3 + 1e-9;
                    assert!(
                        (f64::from(*got) - exact).abs() <= tolerance,
                        "{format:?} {columns} columns row {r}: {got} vs {exact} (±{tolerance})"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_agree_bit_for_bit() {
        let Some(detected) = crate::model::kernels::avx2::Avx2::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX2/FMA/F16C");
            return;
        };
        for avx2 in detected.variants() {
            for columns in [32, 64, 160, 576, 1536] {
                for format in FORMATS {
                    // 1 to 9 rows and 1 to 5 tokens: the groups (of two or four tokens) and
                    // every remainder; then groups of eight with each remainder.
                    let counts = (1..=9).flat_map(|r| [1, 2, 3, 4, 5, 9, 15].map(move |t| (r, t)));
                    for (rows, tokens) in counts {
                        let seed = (rows * 10 + tokens) as u64;
                        let bytes = quantize_weights(format, &values(rows * columns, seed));
                        let mut activations = Vec::new();
                        let x = values(tokens * columns, columns as u64);
                        activation::quantize_row(&x, &mut activations);
                        let row_bytes = columns / BLOCK * format.block_bytes();
                        for order in [Accumulation::Lanes, Accumulation::Rows] {
                            let mut portable = vec![0.0; rows * tokens];
                            let mut simd = vec![0.0; rows * tokens];
                            let a = &activations;
                            let mut out = Products {
                                values: &mut portable,
                                stride: rows,
                            };
                            blocks::dot_tile(format, order, &bytes, row_bytes, a, &mut out);
                            let mut out = Products {
                                values: &mut simd,
                                stride: rows,
                            };
                            avx2.dot_tile(format, order, &bytes, row_bytes, a, &mut out);
                            let bits =
                                |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                bits(&portable),
                                bits(&simd),
                                "{avx2:?} {format:?} {order:?} {columns}x{rows}, {tokens} tokens"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every format the kernels take, with a width that suits it.
    const ALL: [(GgmlDType, usize); 8] = [
        (GgmlDType::Q4_0, 96),
        (GgmlDType::Q4_1, 96),
        (GgmlDType::Q5_0, 96),
        (GgmlDType::Q5_1, 96),
        (GgmlDType::Q8_0, 96),
        (GgmlDType::Q4K, 512),
        (GgmlDType::Q5K, 512),
        (GgmlDType::Q6K, 512),
    ];

    /// The portable kernel's products of `raw` (rows of `columns` weights) with one input row.
    /// One token's products in the portable code, for a batch of `tokens`; `grouped`: the
    /// token is in one of the batch's whole groups of four (which llama.cpp's repacked kernels
    /// take together).
    fn portable(
        format: WeightFormat,
        raw: &[u8],
        columns: usize,
        x: &[f32],
        out: &mut [f32],
        (tokens, grouped): (usize, bool),
    ) {
        let row_bytes = columns / format.block_len() * format.block_bytes();
        let order = Accumulation::for_matrix(format, raw.len() / row_bytes);
        let order = match format {
            WeightFormat::SuperBlock(_) => order.for_k_quant_batch(tokens),
            WeightFormat::Block(_) => order,
        };
        let order = if grouped { order.batched() } else { order };
        match format {
            WeightFormat::Block(format) => {
                let mut activations = Vec::new();
                activation::quantize_row(x, &mut activations);
                blocks::dot_rows(format, order, raw, row_bytes, &activations, out);
            }
            WeightFormat::SuperBlock(format) => {
                let mut activations = Vec::new();
                activation_k::quantize_row(x, &mut activations);
                superblocks::dot_rows(format, order, raw, row_bytes, &activations, out);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_agree_bit_for_bit_on_random_blocks_with_extreme_scales() {
        use crate::model::kernels::superblocks::tests::EXTREME_SCALES;
        let Some(avx2) = crate::model::kernels::avx2::Avx2::detect() else {
            eprintln!("SKIPPED: this CPU has no AVX2/FMA/F16C");
            return;
        };
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut byte = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        };
        for format in FORMATS {
            let (rows, columns) = (5, 320);
            let row_bytes = columns / BLOCK * format.block_bytes();
            let mut bytes: Vec<u8> = (0..rows * row_bytes).map(|_| byte()).collect();
            // Finite f16 scales (and offsets), extremes included: random bits could be NaN.
            let scale_fields: &[usize] = if format.has_min() { &[0, 2] } else { &[0] };
            for (b, block) in bytes.chunks_exact_mut(format.block_bytes()).enumerate() {
                for (i, &at) in scale_fields.iter().enumerate() {
                    let scale = EXTREME_SCALES[(b + 3 * i) % EXTREME_SCALES.len()];
                    let bits = half::f16::from_f32(scale).to_bits().to_le_bytes();
                    block[at..at + 2].copy_from_slice(&bits);
                }
            }
            let mut x = values(columns, 23);
            x[64..96].fill(0.0);
            x[100] = 3.0e4;
            let mut activations = Vec::new();
            activation::quantize_row(&x, &mut activations);
            let orders = [Accumulation::Lanes, Accumulation::Rows];
            for (order, avx2) in orders
                .into_iter()
                .flat_map(|o| avx2.variants().map(move |v| (o, v)))
            {
                let mut portable = vec![0.0; rows];
                let mut simd = vec![0.0; rows];
                let a = &activations;
                blocks::dot_rows(format, order, &bytes, row_bytes, a, &mut portable);
                avx2.dot_rows(format, order, &bytes, row_bytes, a, &mut simd);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&portable),
                    bits(&simd),
                    "{format:?} {order:?}: {portable:?} vs {simd:?}"
                );
            }
        }
    }

    /// A batch (prefill) gives each token exactly what it gets alone (decoding), whatever the
    /// pool: batches below, at and above the kernels' groups and chunks, with and without a
    /// remainder of weight rows, in both orders (Q4_0 and Q4_K take the repacked order on
    /// 304 rows).
    #[test]
    fn matrices_from_candle_multiply_like_the_portable_kernel_on_any_pool() {
        for (dtype, columns) in ALL {
            let format = WeightFormat::from_dtype(dtype).expect("a handled format");
            for rows in [303, 304] {
                let weights =
                    Tensor::from_vec(values(rows * columns, 5), (rows, columns), &Device::Cpu)
                        .and_then(|t| QTensor::quantize(&t, dtype))
                        .expect("quantize");
                let raw = weights.data().expect("raw").into_owned();
                let matrix = QuantizedMatrix::from_qtensor(&weights)
                    .expect("valid")
                    .expect("a handled format");
                for tokens in [1, 2, 5, 70] {
                    let x = values(tokens * columns, 11);
                    let mut expected = vec![0.0; tokens * rows];
                    let pairs = x.chunks_exact(columns).zip(expected.chunks_exact_mut(rows));
                    let grouped = if tokens >= 4 { tokens - tokens % 4 } else { 0 };
                    for (t, (input, out)) in pairs.enumerate() {
                        portable(format, &raw, columns, input, out, (tokens, t < grouped));
                    }
                    for threads in [1, 3] {
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .expect("pool");
                        let mut got = vec![0.0; tokens * rows];
                        pool.install(|| matrix.multiply(&x, &mut got))
                            .expect("multiply");
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert!(
                            bits(&got) == bits(&expected),
                            "{format} {rows} rows, {tokens} tokens, {threads} threads"
                        );
                    }
                }
            }
        }
    }

    /// The kernels against candle's own path for the same weights: dequantize to f32, then
    /// an f32 matmul with the unquantized input. They differ by the activations' 8-bit
    /// rounding, at most half a step (plus, for the 32-value blocks, the f16 rounding of the
    /// step) per value; a wrong block layout or scale would be off by the size of the
    /// products themselves.
    #[test]
    fn kernels_match_candle_dequantize_then_f32_matmul() {
        for (dtype, columns) in ALL {
            let format = WeightFormat::from_dtype(dtype).expect("a handled format");
            let rows = 40;
            let weights =
                Tensor::from_vec(values(rows * columns, 3), (rows, columns), &Device::Cpu)
                    .and_then(|t| QTensor::quantize(&t, dtype))
                    .expect("quantize");
            let dense: Vec<f32> = weights
                .dequantize(&Device::Cpu)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("dequantize");
            let x = values(columns, 17);
            let candle: Vec<f32> = Tensor::from_vec(dense.clone(), (rows, columns), &Device::Cpu)
                .and_then(|w| {
                    let x = Tensor::from_vec(x.clone(), (1, columns), &Device::Cpu)?;
                    x.matmul(&w.t()?)?.flatten_all()?.to_vec1()
                })
                .expect("candle matmul");
            let matrix = QuantizedMatrix::from_qtensor(&weights)
                .expect("valid")
                .expect("a handled format");
            let mut got = vec![0.0; rows];
            matrix.multiply(&x, &mut got).expect("multiply");
            let block = format.block_len();
            for (r, (ours, theirs)) in got.iter().zip(&candle).enumerate() {
                let w = &dense[r * columns..(r + 1) * columns];
                let (mut bound, mut magnitude) = (0.0f64, 0.0f64);
                for (ws, xs) in w.chunks_exact(block).zip(x.chunks_exact(block)) {
                    let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let step = f64::from(amax) / 127.0;
                    let w_abs: f64 = ws.iter().map(|v| f64::from(v.abs())).sum();
                    bound += w_abs * step * 0.57;
                    magnitude += ws
                        .iter()
                        .zip(xs)
                        .map(|(a, b)| f64::from(a.abs()) * f64::from(b.abs()))
                        .sum::<f64>();
                }
                // The 32-value blocks' `s` terms, rounded through f16, and f32 sums.
                let tolerance = bound + magnitude * 2e-3 + 1e-4;
                let diff = (f64::from(*ours) - f64::from(*theirs)).abs();
                assert!(
                    diff <= tolerance,
                    "{format} row {r}: {ours} vs candle {theirs} (±{tolerance})"
                );
                // The worst case above is loose; typical errors are far smaller.
                assert!(diff <= magnitude * 0.05 + 1e-4, "{format} row {r}: {diff}");
            }
        }
    }

    #[test]
    fn other_formats_are_left_to_candle_and_bad_inputs_are_errors() {
        let q3k = Tensor::zeros((4, 256), DType::F32, &Device::Cpu)
            .and_then(|t| QTensor::quantize(&t, GgmlDType::Q3K))
            .expect("quantize");
        assert!(QuantizedMatrix::from_qtensor(&q3k).expect("ok").is_none());
        let q4 = Tensor::zeros((4, 64), DType::F32, &Device::Cpu)
            .and_then(|t| QTensor::quantize(&t, GgmlDType::Q4_1))
            .expect("quantize");
        let matrix = QuantizedMatrix::from_qtensor(&q4)
            .expect("ok")
            .expect("handled");
        let err = matrix
            .multiply(&[0.0; 48], &mut [0.0; 4])
            .expect_err("48 values for 64 columns");
        assert!(err.to_string().contains("64 columns"), "{err}");
    }
}
