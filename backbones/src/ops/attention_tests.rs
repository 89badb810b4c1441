//! The fused attention against the composed ops it replaces (value and the gradients of queries, keys and values,
//! ≤ 1e-5 relative), with masked keys, more keys than queries (a prefix) and dropout, and against central finite
//! differences of its own forward pass.

use candle_core::{DType, Device, Result, Tensor, Var};
use peftspace_core::backbone::{Dropout, Mode};

use super::{attention, composed};

fn max_abs(t: &Tensor) -> Result<f32> {
    t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// Queries `[b, s, w]`, keys and values `[b, t, w]`, and a mask `[b, t]` whose last batch row has its last two keys
/// masked.
fn inputs(b: usize, s: usize, t: usize, w: usize) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
    let dev = Device::Cpu;
    let q = Tensor::randn(0f32, 1., (b, s, w), &dev)?;
    let k = Tensor::randn(0f32, 1., (b, t, w), &dev)?;
    let v = Tensor::randn(0f32, 1., (b, t, w), &dev)?;
    let mut mask = vec![1f32; b * t];
    mask[b * t - 2..].iter_mut().for_each(|m| *m = 0.0);
    let mask = Tensor::from_vec(mask, (b, t), &dev)?;
    Ok((q, k, v, mask))
}

type Attend<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

/// Output and the gradients of q, k and v for the loss `Σ attend(q, k, v) ⊙ upstream`.
fn value_and_gradients(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    upstream: &Tensor,
    attend: Attend,
) -> Result<Vec<Tensor>> {
    let (vq, vk, vv) = (
        Var::from_tensor(q)?,
        Var::from_tensor(k)?,
        Var::from_tensor(v)?,
    );
    let y = attend(vq.as_tensor(), vk.as_tensor(), vv.as_tensor())?;
    let grads = (&y * upstream)?.sum_all()?.backward()?;
    let mut out = vec![y.detach()];
    for var in [&vq, &vk, &vv] {
        let g = grads
            .get(var)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("an input got no gradient".into()))?;
        out.push(g);
    }
    Ok(out)
}

/// The fused op against the composed path, with the same dropout mask on both sides when `dropout > 0`.
fn check_against_composed(b: usize, s: usize, t: usize, heads: usize, dropout: f64) -> Result<()> {
    let (q, k, v, mask) = inputs(b, s, t, heads * 8)?;
    let scale = 0.35;
    let upstream = Tensor::randn(0f32, 1., (b, s, heads * 8), &Device::Cpu)?;
    let (fused_stream, composed_stream) = (Dropout::new(7), Dropout::new(7));
    let fast = value_and_gradients((&q, &k, &v), &upstream, &|q, k, v| {
        let mode = Mode::Train {
            dropout: &fused_stream,
        };
        attention(q, k, v, &mask, heads, scale, dropout, mode)
    })?;
    let reference = value_and_gradients((&q, &k, &v), &upstream, &|q, k, v| {
        let mode = Mode::Train {
            dropout: &composed_stream,
        };
        let drop = mode
            .dropout_mask(&[b, heads, s, t], dropout)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        composed(q, k, v, &mask, heads, scale, drop)
    })?;
    for (what, fast, reference) in ["output", "dq", "dk", "dv"]
        .iter()
        .zip(&fast)
        .zip(&reference)
        .map(|((w, f), r)| (w, f, r))
    {
        let gap = max_abs(&(fast - reference)?)? / max_abs(reference)?;
        assert!(
            gap <= 1e-5,
            "b {b} s {s} t {t} heads {heads} dropout {dropout}: {what} differs by {gap}"
        );
    }
    Ok(())
}

#[test]
fn fused_attention_matches_the_composed_ops() -> Result<()> {
    check_against_composed(2, 12, 12, 3, 0.0)
}

#[test]
fn fused_attention_matches_with_a_prefix_of_extra_keys() -> Result<()> {
    check_against_composed(3, 9, 14, 2, 0.0)
}

#[test]
fn fused_attention_matches_with_dropout_on_the_probabilities() -> Result<()> {
    check_against_composed(2, 10, 13, 4, 0.3)
}

#[test]
fn many_tiles_split_across_the_pool_match_too() -> Result<()> {
    // Enough tiles for every thread of the pool to take several.
    check_against_composed(4, 20, 24, 6, 0.1)
}

#[test]
fn evaluation_draws_no_dropout() -> Result<()> {
    let (q, k, v, mask) = inputs(2, 5, 5, 8)?;
    let stream = Dropout::new(3);
    let eval = attention(&q, &k, &v, &mask, 2, 0.5, 0.5, Mode::Eval)?;
    let train_without = attention(
        &q,
        &k,
        &v,
        &mask,
        2,
        0.5,
        0.0,
        Mode::Train { dropout: &stream },
    )?;
    assert!(max_abs(&(&eval - &train_without)?)? == 0.0);
    Ok(())
}

#[test]
fn gradients_match_central_differences() -> Result<()> {
    let (b, s, t, heads) = (2, 6, 7, 2);
    let (q, k, v, mask) = inputs(b, s, t, heads * 4)?;
    let upstream = Tensor::randn(0f32, 1., (b, s, heads * 4), &Device::Cpu)?;
    let attend =
        |q: &Tensor, k: &Tensor, v: &Tensor| attention(q, k, v, &mask, heads, 0.5, 0.0, Mode::Eval);
    let grads = value_and_gradients((&q, &k, &v), &upstream, &attend)?;
    let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> Result<f64> {
        (attend(q, k, v)?.to_dtype(DType::F64)? * upstream.to_dtype(DType::F64)?)?
            .sum_all()?
            .to_scalar::<f64>()
    };
    let h = 1e-2f32;
    for input in 0..3 {
        let grad = grads[input + 1].flatten_all()?.to_vec1::<f32>()?;
        let scale = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        let base = [&q, &k, &v][input].flatten_all()?.to_vec1::<f32>()?;
        let shaped =
            |values: Vec<f32>| Tensor::from_vec(values, [&q, &k, &v][input].dims(), &Device::Cpu);
        for i in (0..base.len()).step_by(5) {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[i] += h;
            minus[i] -= h;
            let at = |values: Vec<f32>| -> Result<f64> {
                let x = shaped(values)?;
                match input {
                    0 => loss(&x, &k, &v),
                    1 => loss(&q, &x, &v),
                    _ => loss(&q, &k, &x),
                }
            };
            let numeric = (at(plus)? - at(minus)?) / (2.0 * h as f64);
            let gap = (numeric as f32 - grad[i]).abs() / scale;
            assert!(
                gap < 2e-3,
                "input {input}, coordinate {i}: {numeric} against {}",
                grad[i]
            );
        }
    }
    Ok(())
}
