//! Times the frozen forward pass of a BERT-family model on a fixed batch (written by `benches/torch_forward.py`)
//! and checks it against PyTorch's output on the same batch.
//!
//! `cargo run -p peftspace-backbones --example minilm_forward -- MODEL_DIR BATCH.safetensors [REPEATS]`
//! Set `RAYON_NUM_THREADS` to fix the thread count (candle's CPU kernels read it).

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use peftspace_core::backbone::{Batch, Mode};
use peftspace_core::hooks::NoHooks;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: minilm_forward MODEL_DIR BATCH.safetensors [REPEATS]";
    let model_dir = PathBuf::from(args.next().ok_or(usage)?);
    let batch_file = PathBuf::from(args.next().ok_or(usage)?);
    let repeats: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(10);

    let device = Device::Cpu;
    let model = peftspace_backbones::load(&model_dir, &device)?;
    let tensors = candle_core::safetensors::load(&batch_file, &device)?;
    let get = |name: &str| -> Result<candle_core::Tensor, Box<dyn std::error::Error>> {
        Ok(tensors
            .get(name)
            .ok_or(format!("{}: no `{name}`", batch_file.display()))?
            .to_dtype(DType::U32)?)
    };
    let batch = Batch {
        input_ids: get("input_ids")?,
        attention_mask: get("attention_mask")?,
        token_type_ids: Some(get("token_type_ids")?),
        decoder_input_ids: None,
    };
    let (b, s) = batch.input_ids.dims2()?;

    // One untimed run warms caches and the thread pool, as the PyTorch side does.
    let hidden = model.encode(&batch, &NoHooks, Mode::Eval)?.encoder_hidden;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let out = model.encode(&batch, &NoHooks, Mode::Eval)?.encoder_hidden;
        // Reading one value forces the computation on lazy devices.
        out.sum_all()?.to_scalar::<f32>()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let check = match tensors.get("last_hidden_state") {
        Some(reference) => {
            let diff = (hidden - reference)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            format!(", max |Δ| vs PyTorch {diff:.2e}")
        }
        None => String::new(),
    };
    println!(
        "candle  batch {b}x{s}  threads {}  median {median:.1} ms  mean {mean:.1} ms  min {:.1} ms  ({repeats} runs){check}",
        candle_core::utils::get_num_threads(),
        times[0]
    );
    Ok(())
}
