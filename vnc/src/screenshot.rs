//! PNG screenshots of the served screen (for `--screenshot-on-exit` and the control socket).

use std::io::BufWriter;
use std::path::Path;

use crate::encode::Frame;
use crate::VncError;

/// Write `frame` as an 8-bit RGB PNG at `path`.
pub fn write_png(frame: &Frame, path: &Path) -> Result<(), VncError> {
    let err = |e: String| {
        VncError::Io(std::io::Error::other(format!(
            "writing screenshot {}: {e}",
            path.display()
        )))
    };
    let file = std::fs::File::create(path).map_err(|e| err(e.to_string()))?;
    let mut enc = png::Encoder::new(
        BufWriter::new(file),
        u32::from(frame.width),
        u32::from(frame.height),
    );
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| err(e.to_string()))?;
    let rgb: Vec<u8> = frame
        .pixels
        .iter()
        .flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8])
        .collect();
    w.write_image_data(&rgb).map_err(|e| err(e.to_string()))?;
    w.finish().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip() {
        let mut f = Frame::new(3, 2, 0x102030);
        f.pixels[4] = 0xff8000;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.png");
        write_png(&f, &p).unwrap();
        let dec = png::Decoder::new(std::fs::File::open(&p).unwrap());
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..3], &[0x10, 0x20, 0x30]);
        assert_eq!(&buf[12..15], &[0xff, 0x80, 0x00]);
        assert!(write_png(&f, Path::new("/nonexistent/dir/s.png")).is_err());
    }
}
