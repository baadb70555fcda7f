//! Compressed cluster payloads: raw deflate (4 KiB window, as QEMU) and zstd.

use super::header::CompressionType;
use crate::backend::{BlockError, BlockResult};

/// Decompress `input` (which may carry trailing padding) into exactly `out.len()` bytes.
pub fn decompress(kind: CompressionType, input: &[u8], out: &mut [u8]) -> BlockResult<()> {
    match kind {
        CompressionType::Zlib => {
            let mut d = flate2::Decompress::new(false);
            let r = d.decompress(input, out, flate2::FlushDecompress::Finish);
            match r {
                Ok(_) if d.total_out() as usize == out.len() => Ok(()),
                Ok(_) => Err(BlockError::Corrupt(format!(
                    "compressed cluster inflates to {} bytes, expected {}",
                    d.total_out(),
                    out.len()
                ))),
                Err(e) => Err(BlockError::Corrupt(format!(
                    "compressed cluster is not valid deflate data: {e}"
                ))),
            }
        }
        CompressionType::Zstd => {
            use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
            let mut d = Decoder::new().map_err(|e| BlockError::Io {
                context: "create zstd decoder".into(),
                source: e,
            })?;
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(out);
            loop {
                let before = (inb.pos(), outb.pos());
                let hint = d.run(&mut inb, &mut outb).map_err(|e| {
                    BlockError::Corrupt(format!("compressed cluster is not valid zstd: {e}"))
                })?;
                if outb.pos() == outb.capacity() {
                    return Ok(());
                }
                if hint == 0 || (inb.pos(), outb.pos()) == before || inb.pos() == input.len() {
                    return Err(BlockError::Corrupt(format!(
                        "compressed cluster decompresses to {} bytes, expected {}",
                        outb.pos(),
                        outb.capacity()
                    )));
                }
            }
        }
    }
}

/// Compress one cluster; `None` when compression does not save space (store it plainly).
pub fn compress(kind: CompressionType, input: &[u8]) -> BlockResult<Option<Vec<u8>>> {
    let limit = input.len();
    match kind {
        CompressionType::Zlib => {
            // QEMU inflates with a 4 KiB window (windowBits -12): we must not use a larger one.
            let mut c =
                flate2::Compress::new_with_window_bits(flate2::Compression::default(), false, 12);
            let mut out = Vec::with_capacity(limit + 64);
            match c.compress_vec(input, &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) if out.len() < limit => Ok(Some(out)),
                Ok(_) => Ok(None),
                Err(e) => Err(BlockError::Invalid(format!("deflate failed: {e}"))),
            }
        }
        CompressionType::Zstd => {
            let out = zstd::bulk::compress(input, 0).map_err(|e| BlockError::Io {
                context: "zstd compression".into(),
                source: e,
            })?;
            Ok((out.len() < limit).then_some(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_both_kinds_with_trailing_padding() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i / 100) as u8).collect();
        for kind in [CompressionType::Zlib, CompressionType::Zstd] {
            let mut c = compress(kind, &data).unwrap().unwrap();
            assert!(c.len() < data.len());
            c.extend_from_slice(&[0xAB; 300]);
            let mut out = vec![0u8; data.len()];
            decompress(kind, &c, &mut out).unwrap();
            assert_eq!(out, data);
            // Garbage must fail, not panic.
            let mut out = vec![0u8; data.len()];
            assert!(decompress(kind, &[0xFF; 100], &mut out).is_err());
        }
        // Random data does not compress.
        let mut x = 1u64;
        let rnd: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(compress(CompressionType::Zlib, &rnd).unwrap().is_none());
    }
}
