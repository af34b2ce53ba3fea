//! [`Error`]: what can go wrong in the kernels. Every case is a mismatch between the
//! shapes the caller gave and the bytes the file holds, which the loader's checks should make
//! impossible; they are errors rather than panics because the bytes come from a file.

use super::format::WeightFormat;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The matrix is not two-dimensional or its rows are not whole blocks.
    #[error(
        "failed to use a {format} matrix of shape {dims:?}: expected (rows, columns) with columns a multiple of {}",
        .format.block_len()
    )]
    Shape {
        format: WeightFormat,
        dims: Vec<usize>,
    },

    /// An embedding lookup asked for a row the matrix does not have.
    #[error("failed to look up row {row} of a matrix of {rows} rows")]
    Row { row: usize, rows: usize },

    /// The raw bytes do not cover the matrix exactly.
    #[error(
        "failed to read a {format} matrix of {rows}x{columns}: {actual} bytes of blocks, expected {expected}"
    )]
    DataSize {
        format: WeightFormat,
        rows: usize,
        columns: usize,
        actual: usize,
        expected: usize,
    },

    /// The input row does not have one value per column.
    #[error("failed to multiply a matrix of {columns} columns by a row of {actual} values")]
    InputWidth { columns: usize, actual: usize },
    /// The output has not one value per row.
    #[error("failed to store the products of a matrix of {rows} rows in {actual} values")]
    OutputLength { rows: usize, actual: usize },
}
