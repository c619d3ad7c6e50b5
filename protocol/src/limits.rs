//! The per-op limits of PROTOCOL.md §5. Breaking one is answered `Rejected`, never an error
//! of the connection: the op decoded fine, it is just not acceptable.

use serde::{Deserialize, Serialize};

use crate::wire::{Op, Point};

/// Limits on a single op. The defaults are the contract's; every one is configurable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most points in one `Pixels` op.
    pub max_pixels_points: usize,
    /// Largest `w` and `h` of a `Rect`.
    pub max_rect_side: u32,
    /// Most points in one `Stroke`.
    pub max_stroke_points: usize,
    /// Widest `Stroke`.
    pub max_stroke_width: u16,
    /// Largest `w` and `h` of a `Patch`.
    pub max_patch_side: u32,
    /// Every coordinate an op carries lies within `-max_coord ..= max_coord`.
    pub max_coord: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels_points: 65_536,
            max_rect_side: 65_536,
            max_stroke_points: 4_096,
            max_stroke_width: 256,
            max_patch_side: 512,
            max_coord: 1_000_000,
        }
    }
}

/// Why an op was rejected; the text is the `Rejected.reason` sent to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A `Pixels` or `Stroke` with no points, or more than allowed.
    #[error("{kind}: {count} points, allowed 1..={max}")]
    PointCount {
        /// The op's [`Op::kind`].
        kind: &'static str,
        /// Points the op carries.
        count: usize,
        /// Most points allowed for that kind.
        max: usize,
    },
    /// A `Rect` or `Patch` with a side of 0 or over the limit.
    #[error("{kind}: size {w}x{h}, each side allowed 1..={max}")]
    Size {
        /// The op's [`Op::kind`].
        kind: &'static str,
        /// Width the op asked for, in pixels.
        w: u32,
        /// Height the op asked for, in pixels.
        h: u32,
        /// Largest side allowed for that kind, in pixels.
        max: u32,
    },
    /// A `Stroke` of width 0 or wider than allowed.
    #[error("stroke: width {width}, allowed 1..={max}")]
    StrokeWidth {
        /// Width the op asked for, in pixels.
        width: u16,
        /// Widest allowed, in pixels.
        max: u16,
    },
    /// A `Patch` whose `rgba` is not `w*h*4` bytes.
    #[error("patch: {len} bytes of rgba, expected w*h*4 = {expected}")]
    PatchLength {
        /// Bytes the op carries.
        len: usize,
        /// `w*h*4`.
        expected: u64,
    },
    /// A coordinate (`x`, `y` or a point) outside `-max ..= max`.
    #[error("{kind}: coordinate ({x}, {y}) outside -{max}..={max}")]
    Coordinate {
        /// The op's [`Op::kind`].
        kind: &'static str,
        /// Column of the point (or the op's corner) out of range.
        x: i32,
        /// Row of the point (or the op's corner) out of range.
        y: i32,
        /// [`Limits::max_coord`].
        max: i32,
    },
}

impl Limits {
    /// Checks one op against every limit of PROTOCOL.md §5 (rate limits excepted: they belong
    /// to a connection, not to an op).
    pub fn check(&self, op: &Op) -> Result<(), LimitError> {
        let kind = op.kind();
        match op {
            Op::Pixels { points, .. } => {
                self.point_count(kind, points.len(), self.max_pixels_points)?;
                self.points(kind, points)
            }
            Op::Rect { x, y, w, h, .. } => {
                self.size(kind, *w, *h, self.max_rect_side)?;
                self.coord(kind, *x, *y)
            }
            Op::Stroke { width, points, .. } => {
                self.point_count(kind, points.len(), self.max_stroke_points)?;
                if *width == 0 || *width > self.max_stroke_width {
                    return Err(LimitError::StrokeWidth {
                        width: *width,
                        max: self.max_stroke_width,
                    });
                }
                self.points(kind, points)
            }
            Op::Patch { x, y, w, h, rgba } => {
                self.size(kind, *w, *h, self.max_patch_side)?;
                let expected = u64::from(*w) * u64::from(*h) * 4;
                if rgba.len() as u64 != expected {
                    return Err(LimitError::PatchLength {
                        len: rgba.len(),
                        expected,
                    });
                }
                self.coord(kind, *x, *y)
            }
            Op::Clear { .. } => Ok(()),
        }
    }

    fn point_count(&self, kind: &'static str, count: usize, max: usize) -> Result<(), LimitError> {
        if count == 0 || count > max {
            return Err(LimitError::PointCount { kind, count, max });
        }
        Ok(())
    }

    fn size(&self, kind: &'static str, w: u32, h: u32, max: u32) -> Result<(), LimitError> {
        if w == 0 || h == 0 || w > max || h > max {
            return Err(LimitError::Size { kind, w, h, max });
        }
        Ok(())
    }

    fn points(&self, kind: &'static str, points: &[Point]) -> Result<(), LimitError> {
        points.iter().try_for_each(|p| self.coord(kind, p.x, p.y))
    }

    fn coord(&self, kind: &'static str, x: i32, y: i32) -> Result<(), LimitError> {
        let max = self.max_coord;
        if (-max..=max).contains(&x) && (-max..=max).contains(&y) {
            Ok(())
        } else {
            Err(LimitError::Coordinate { kind, x, y, max })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pixels(n: usize) -> Op {
        Op::Pixels {
            color: [0; 4],
            points: vec![Point::new(0, 0); n],
        }
    }

    #[test]
    fn boundaries() {
        let l = Limits::default();
        assert!(l.check(&pixels(1)).is_ok());
        assert!(l.check(&pixels(65_536)).is_ok());
        assert!(l.check(&pixels(0)).is_err());
        assert!(l.check(&pixels(65_537)).is_err());
        let rect = |w, h, x| Op::Rect {
            x,
            y: 0,
            w,
            h,
            color: [0; 4],
        };
        assert!(l.check(&rect(65_536, 1, 1_000_000)).is_ok());
        assert!(l.check(&rect(0, 1, 0)).is_err());
        assert!(l.check(&rect(65_537, 1, 0)).is_err());
        assert!(l.check(&rect(1, 1, 1_000_001)).is_err());
        assert!(l.check(&rect(1, 1, -1_000_001)).is_err());
        let stroke = |width, n| Op::Stroke {
            color: [0; 4],
            width,
            points: vec![Point::new(-1_000_000, 1_000_000); n],
        };
        assert!(l.check(&stroke(1, 1)).is_ok());
        assert!(l.check(&stroke(256, 4_096)).is_ok());
        assert!(l.check(&stroke(0, 1)).is_err());
        assert!(l.check(&stroke(257, 1)).is_err());
        assert!(l.check(&stroke(1, 4_097)).is_err());
        assert!(l.check(&stroke(1, 0)).is_err());
        let patch = |w, h, len| Op::Patch {
            x: 0,
            y: 0,
            w,
            h,
            rgba: Bytes::from(vec![0; len]),
        };
        assert!(l.check(&patch(512, 512, 512 * 512 * 4)).is_ok());
        assert!(l.check(&patch(2, 3, 24)).is_ok());
        assert_eq!(
            l.check(&patch(2, 3, 23)),
            Err(LimitError::PatchLength {
                len: 23,
                expected: 24
            })
        );
        assert!(l.check(&patch(513, 1, 513 * 4)).is_err());
        assert!(l.check(&patch(0, 0, 0)).is_err());
        assert!(l.check(&Op::Clear { color: [0; 4] }).is_ok());
    }
}
