//! CFlow-AD's 2-D sinusoidal positional encoding, the condition of every flow.

use tch::{Device, Kind, Tensor};

/// Positional encoding with `channels` channels on an `height` x `width` grid, shape
/// (channels, height, width). The first half of the channels encodes the column, the second half
/// the row; inside each half sine and cosine alternate, with frequencies exp(-k ln(1e4) / (channels/2))
/// for even k.
///
/// `channels` must be a multiple of 4.
pub fn positional_encoding_2d(channels: i64, height: i64, width: i64, device: Device) -> Tensor {
    assert!(
        channels % 4 == 0,
        "positional encoding needs a multiple of 4 channels, got {channels}"
    );
    let half = channels / 2;
    let opts = (Kind::Float, device);
    let div = (Tensor::arange_start_step(0.0, half as f64, 2.0, opts)
        * (-(1e4f64.ln()) / half as f64))
        .exp(); // (half/2)
    let cols = Tensor::arange(width, opts).unsqueeze(1) * div.unsqueeze(0); // (W, half/2)
    let rows = Tensor::arange(height, opts).unsqueeze(1) * div.unsqueeze(0); // (H, half/2)
    // interleave sin/cos: (W, n, 2) -> (W, half) -> (half, 1, W) -> expand over rows
    let col_code = Tensor::stack(&[cols.sin(), cols.cos()], 2)
        .reshape([width, half])
        .transpose(0, 1)
        .unsqueeze(1)
        .expand([half, height, width], false);
    let row_code = Tensor::stack(&[rows.sin(), rows.cos()], 2)
        .reshape([height, half])
        .transpose(0, 1)
        .unsqueeze(2)
        .expand([half, height, width], false);
    Tensor::cat(&[col_code, row_code], 0).contiguous()
}

/// The encoding as one condition row per position, (height * width, channels), row-major over
/// positions: the layout the flows use for whole feature maps.
pub fn positional_rows(channels: i64, height: i64, width: i64, device: Device) -> Tensor {
    positional_encoding_2d(channels, height, width, device)
        .reshape([channels, height * width])
        .transpose(0, 1)
        .contiguous()
}
