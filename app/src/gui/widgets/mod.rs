//! Small drawing helpers shared by the panels.

pub mod heatmap;
pub mod palette;
pub mod scrub;
pub mod smooth;

pub use heatmap::{Heatmap, heatmap};
