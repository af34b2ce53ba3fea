//! Reading a GGUF file: header, metadata and tensor table through candle's parser, with
//! every failure (missing file, bad magic, truncation, corrupt counts) turned into a clear
//! [`Error`] instead of a panic, and typed metadata accessors used by the rest of the crate.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::{Content, Value};

use crate::Error;
use crate::error::without_backtrace;
use crate::mapped::{self, SharedBytes};

/// An open GGUF file whose header and tensor table have been read and checked.
pub(crate) struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
    /// The whole file, mapped: the weights the kernels multiply are read in place.
    mapped: SharedBytes,
}

/// One tensor's blocks as stored in the file, with its format and shape.
pub(crate) struct StoredTensor {
    pub dtype: candle_core::quantized::GgmlDType,
    /// GGUF lists dimensions innermost first; these are outermost first (rows, columns).
    pub dims: Vec<usize>,
    pub bytes: SharedBytes,
}

impl GgufFile {
    /// Opens and parses `path`. Every tensor's data range is checked against the file size,
    /// so a truncated file fails here, before any weight is read.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let io_error = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let file_len = file.metadata().map_err(io_error)?.len();
        let invalid = |reason: String| Error::InvalidGguf {
            path: path.to_path_buf(),
            reason,
        };
        if file_len < 8 {
            return Err(invalid(format!(
                "file is {file_len} bytes long, too short for a GGUF header"
            )));
        }
        let mut reader = BufReader::new(file);
        // candle's parser is defensive, but a corrupt file must never take the process down:
        // a panic inside it is reported as a parse error.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut reader)));
        let content = match parsed {
            Ok(Ok(content)) => content,
            Ok(Err(err)) => return Err(invalid(without_backtrace(err).to_string())),
            Err(_) => return Err(invalid("the parser panicked on corrupt data".to_string())),
        };
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if block == 0 || elems % block != 0 {
                return Err(invalid(format!(
                    "tensor {name} has {elems} elements, not a multiple of its block size {block}"
                )));
            }
            let size = (elems / block) as u64 * info.ggml_dtype.type_size() as u64;
            let end = content
                .tensor_data_offset
                .checked_add(info.offset)
                .and_then(|start| start.checked_add(size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(invalid(format!(
                        "file is truncated: tensor {name} ends past the end of the file \
                         ({file_len} bytes)"
                    )));
                }
            }
        }
        reader.rewind().map_err(io_error)?;
        let mapped = mapped::map_file(reader.get_ref()).map_err(io_error)?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            mapped,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `general.architecture`, required by the GGUF spec.
    pub(crate) fn architecture(&self) -> Result<String, Error> {
        self.string("general.architecture")
    }

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// First dimension (rows) of a 2-D tensor, from the tensor table.
    pub(crate) fn tensor_rows(&self, name: &str) -> Option<usize> {
        self.content
            .tensor_infos
            .get(name)
            .and_then(|info| info.shape.dims().first().copied())
    }

    /// Every tensor's name, storage format and element count, from the tensor table.
    pub(crate) fn tensor_table(
        &self,
    ) -> impl Iterator<Item = (&str, candle_core::quantized::GgmlDType, usize)> {
        self.content
            .tensor_infos
            .iter()
            .map(|(name, info)| (name.as_str(), info.ggml_dtype, info.shape.elem_count()))
    }

    /// Length of an array-valued metadata entry (`tokenizer.ggml.tokens`), if present.
    pub(crate) fn array_len(&self, key: &str) -> Option<usize> {
        self.content
            .metadata
            .get(key)
            .and_then(|value| value.to_vec().ok())
            .map(Vec::len)
    }

    /// One tensor's blocks in the mapped file (no copy; [`GgufFile::open`] checked that every
    /// tensor lies inside the file).
    pub(crate) fn stored_tensor(&self, name: &str) -> Result<StoredTensor, Error> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| Error::InvalidGguf {
                path: self.path.clone(),
                reason: format!("tensor {name} is missing"),
            })?;
        let elems = info.shape.elem_count();
        let size = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let start = self.content.tensor_data_offset as usize + info.offset as usize;
        let bytes = start
            .checked_add(size)
            .and_then(|end| self.mapped.slice(start..end))
            .ok_or_else(|| Error::InvalidGguf {
                path: self.path.clone(),
                reason: format!("tensor {name} lies past the end of the file"),
            })?;
        Ok(StoredTensor {
            dtype: info.ggml_dtype,
            dims: info.shape.dims().to_vec(),
            bytes,
        })
    }

    /// Reads one tensor's data.
    pub(crate) fn tensor(&mut self, name: &str) -> Result<QTensor, Error> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|err| Error::InvalidGguf {
                path: self.path.clone(),
                reason: format!("failed to read tensor {name}: {}", without_backtrace(err)),
            })
    }

    /// Hands candle's parsed content and reader to a loader that needs them by value
    /// (the delegated candle-transformers families).
    pub(crate) fn into_parts(self) -> (PathBuf, Content, BufReader<File>) {
        (self.path, self.content, self.reader)
    }

    fn get(&self, key: &str) -> Result<&Value, Error> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::Metadata {
                key: key.to_string(),
                reason: "missing".to_string(),
            })
    }

    pub(crate) fn string(&self, key: &str) -> Result<String, Error> {
        self.get(key)?
            .to_string()
            .cloned()
            .map_err(|err| metadata_error(key, err))
    }

    pub(crate) fn u32(&self, key: &str) -> Result<u32, Error> {
        value_to_u64(self.get(key)?)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Error::Metadata {
                key: key.to_string(),
                reason: "not an unsigned 32-bit integer".to_string(),
            })
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize, Error> {
        self.u32(key).map(|v| v as usize)
    }

    pub(crate) fn optional_u32(&self, key: &str) -> Result<Option<u32>, Error> {
        if self.content.metadata.contains_key(key) {
            self.u32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn f32(&self, key: &str) -> Result<f32, Error> {
        match self.get(key)? {
            Value::F32(v) => Ok(*v),
            Value::F64(v) => Ok(*v as f32),
            other => value_to_u64(other)
                .map(|v| v as f32)
                .ok_or_else(|| Error::Metadata {
                    key: key.to_string(),
                    reason: "not a number".to_string(),
                }),
        }
    }

    pub(crate) fn optional_f32(&self, key: &str) -> Result<Option<f32>, Error> {
        if self.content.metadata.contains_key(key) {
            self.f32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn optional_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => {
                value_to_u64(other)
                    .map(|v| Some(v != 0))
                    .ok_or_else(|| Error::Metadata {
                        key: key.to_string(),
                        reason: "not a boolean".to_string(),
                    })
            }
        }
    }

    pub(crate) fn optional_string(&self, key: &str) -> Result<Option<String>, Error> {
        if self.content.metadata.contains_key(key) {
            self.string(key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn string_array(&self, key: &str) -> Result<Vec<String>, Error> {
        let values = self
            .get(key)?
            .to_vec()
            .map_err(|err| metadata_error(key, err))?;
        values
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|err| metadata_error(key, err))
            })
            .collect()
    }

    pub(crate) fn optional_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, Error> {
        let Some(value) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let values = value.to_vec().map_err(|err| metadata_error(key, err))?;
        values
            .iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x),
                other => value_to_u64(other)
                    .and_then(|x| i32::try_from(x).ok())
                    .ok_or_else(|| Error::Metadata {
                        key: key.to_string(),
                        reason: "array element is not an integer".to_string(),
                    }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub(crate) fn optional_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, Error> {
        let Some(value) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let values = value.to_vec().map_err(|err| metadata_error(key, err))?;
        values
            .iter()
            .map(|v| v.to_f32().map_err(|err| metadata_error(key, err)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn metadata_error(key: &str, err: candle_core::Error) -> Error {
    Error::Metadata {
        key: key.to_string(),
        reason: without_backtrace(err).to_string(),
    }
}

fn value_to_u64(value: &Value) -> Option<u64> {
    match value {
        Value::U8(v) => Some(u64::from(*v)),
        Value::U16(v) => Some(u64::from(*v)),
        Value::U32(v) => Some(u64::from(*v)),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}
