//! candle's matmul against the barrier-pool product (`ops::matmul`) on the products of a MiniLM training step
//! (seq 128, batch 16): projections forward and backward, attention scores and context. Interleaved repetitions,
//! median milliseconds per product, and the largest difference of the results.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example matmul_paths [-- REPEATS]`

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use peftspace_backbones::ops::matmul::matmul;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(f: &dyn Fn() -> Result<Tensor>) -> Result<f64> {
    let start = Instant::now();
    let _ = f()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn main() -> Result<()> {
    let repeats: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dev = Device::Cpu;
    let rand = |dims: &[usize]| Tensor::randn(0f32, 1., dims, &dev);
    let (rows, h, ffn, heads, seq, d) = (16 * 128, 384, 1536, 12, 128, 32);
    let x = rand(&[rows, h])?;
    let up = rand(&[ffn, h])?;
    let grad_up = rand(&[rows, ffn])?;
    let square = rand(&[h, h])?;
    let q = rand(&[16, heads, seq, d])?;
    let k = rand(&[16, heads, seq, d])?;
    let probs = rand(&[16, heads, seq, seq])?;
    let cases: Vec<(&str, Tensor, Tensor)> = vec![
        (
            "projection x·Wᵀ [2048,384]·[384,384]",
            x.clone(),
            square.t()?,
        ),
        ("ffn up x·Wᵀ [2048,384]·[384,1536]", x.clone(), up.t()?),
        (
            "ffn up backward dy·W [2048,1536]·[1536,384]",
            grad_up,
            up.clone(),
        ),
        ("scores q·kᵀ [192,128,32]·[192,32,128]", q, k.t()?),
        ("context p·v [192,128,128]·[192,128,32]", probs, k),
    ];
    println!(
        "threads {}, {repeats} interleaved repeats, median ms",
        candle_core::utils::get_num_threads()
    );
    println!("| product | candle | pool | candle / pool | max |Δ| |");
    println!("|---|---|---|---|---|");
    for (name, a, b) in &cases {
        let candle = || a.matmul(b);
        let pool = || matmul(a, b);
        let gap = (candle()? - pool()?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let (mut tc, mut tp) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            tc.push(time(&candle)?);
            tp.push(time(&pool)?);
        }
        let (mc, mp) = (median(tc), median(tp));
        println!(
            "| {name} | {mc:.2} | {mp:.2} | {:.2} | {gap:.1e} |",
            mc / mp
        );
    }
    Ok(())
}
