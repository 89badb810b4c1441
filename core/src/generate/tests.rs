//! Decoding against a mock language model whose logits are a function of the source and the decoder prefix; the
//! prefix is read back from the mock's key/value cache, so a cache reordered wrongly gives wrong tokens.

use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use super::{generate, GenerationSettings};
use crate::backbone::lm::{DecoderCache, KeyValues, LanguageModel, SpecialTokens};
use crate::backbone::{Batch, Mode};
use crate::hooks::{LayerHooks, NoHooks};
use crate::{Error, Result};

const VOCAB: usize = 12;
const START: u32 = 0;
const EOS: u32 = 1;

type Table = dyn Fn(&[u32], &[u32]) -> Vec<f32> + Send + Sync;

struct Mock {
    special: SpecialTokens,
    table: Box<Table>,
    /// The shape of the ids of every `step` call.
    steps: Mutex<Vec<Vec<usize>>>,
}

impl Mock {
    fn new(table: impl Fn(&[u32], &[u32]) -> Vec<f32> + Send + Sync + 'static) -> Self {
        Mock {
            special: SpecialTokens {
                decoder_start: START,
                eos: EOS,
                pad: 0,
                forced_eos: None,
            },
            table: Box::new(table),
            steps: Mutex::new(Vec::new()),
        }
    }

    fn forcing_eos(mut self) -> Self {
        self.special.forced_eos = Some(EOS);
        self
    }

    fn steps(&self) -> Vec<Vec<usize>> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl LanguageModel for Mock {
    fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn logits(&self, _: &Batch, _: &dyn LayerHooks, _: Mode<'_>) -> Result<Tensor> {
        Err(Error::msg("the mock only decodes step by step"))
    }

    fn start(&self, input_ids: &Tensor, mask: &Tensor, _: &dyn LayerHooks) -> Result<DecoderCache> {
        // The "encoder output" is the source ids themselves.
        let hidden = input_ids.to_dtype(DType::F32)?.unsqueeze(2)?;
        Ok(DecoderCache::new(hidden, mask.clone(), 1))
    }

    fn step(&self, cache: &mut DecoderCache, ids: &Tensor, _: &dyn LayerHooks) -> Result<Tensor> {
        if let Ok(mut steps) = self.steps.lock() {
            steps.push(ids.dims().to_vec());
        }
        // The decoder tokens seen so far live in the cache, one row per token.
        let new = ids.to_dtype(DType::F32)?.unsqueeze(2)?;
        let seen = match &cache.layers[0].self_attention {
            Some(kv) => Tensor::cat(&[&kv.key, &new], 1)?,
            None => new,
        };
        cache.layers[0].self_attention = Some(KeyValues {
            key: seen.clone(),
            value: seen.clone(),
        });
        cache.position += ids.dim(1)?;
        let sources = cache.encoder_hidden.squeeze(2)?.to_vec2::<f32>()?;
        let masks = cache.encoder_mask.to_vec2::<u32>()?;
        let prefixes = seen.squeeze(2)?.to_vec2::<f32>()?;
        let mut flat = Vec::new();
        for ((source, mask), prefix) in sources.iter().zip(&masks).zip(&prefixes) {
            let source: Vec<u32> = source
                .iter()
                .zip(mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&s, _)| s as u32)
                .collect();
            let prefix: Vec<u32> = prefix.iter().map(|&t| t as u32).collect();
            let row = (self.table)(&source, &prefix);
            assert_eq!(row.len(), VOCAB);
            flat.extend(row);
        }
        Ok(Tensor::from_vec(
            flat,
            (prefixes.len(), VOCAB),
            &Device::Cpu,
        )?)
    }
}

/// Log-probabilities with the given tokens' probabilities, the rest spread evenly over the other tokens.
fn dist(given: &[(u32, f64)]) -> Vec<f32> {
    let total: f64 = given.iter().map(|g| g.1).sum();
    let rest = (1.0 - total).max(1e-3) / (VOCAB - given.len()) as f64;
    let mut p = [rest; VOCAB];
    for &(token, q) in given {
        p[token as usize] = q;
    }
    p.iter().map(|q| q.ln() as f32).collect()
}

/// Logits preferring tokens in the order given (the first highest); every other token far below, EOS lowest.
fn ranking(order: &[u32]) -> Vec<f32> {
    let mut logits = vec![-50.0; VOCAB];
    logits[EOS as usize] = -100.0;
    for (rank, &token) in order.iter().enumerate() {
        logits[token as usize] = -(rank as f32);
    }
    logits
}

fn inputs(rows: &[&[u32]]) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for row in rows {
        for i in 0..width {
            ids.push(row.get(i).copied().unwrap_or(0));
            mask.push(u32::from(i < row.len()));
        }
    }
    let shape = (rows.len(), width);
    (
        Tensor::from_vec(ids, shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(mask, shape, &Device::Cpu).unwrap(),
    )
}

fn run(mock: &Mock, rows: &[&[u32]], settings: &GenerationSettings) -> Result<Vec<Vec<u32>>> {
    let (ids, mask) = inputs(rows);
    generate(mock, &ids, &mask, &NoHooks, settings)
}

/// Greedy path: the source's first id after the start token, then +2 per step up to 6, then EOS.
fn counting() -> Mock {
    Mock::new(|source, prefix| {
        let last = *prefix.last().unwrap();
        let next = if last == START {
            source[0]
        } else if last + 2 <= 6 {
            last + 2
        } else {
            EOS
        };
        ranking(&[next])
    })
}

#[test]
fn greedy_stops_each_row_at_its_eos_and_never_pads() -> Result<()> {
    let mock = counting();
    let out = run(
        &mock,
        &[&[2, 5, 5], &[4, 5]],
        &GenerationSettings::greedy(10),
    )?;
    assert_eq!(out, vec![vec![0, 2, 4, 6, 1], vec![0, 4, 6, 1]]);
    // One token per row and step; the finished second row leaves the batch.
    assert_eq!(
        mock.steps(),
        vec![vec![2, 1], vec![2, 1], vec![2, 1], vec![1, 1]]
    );
    Ok(())
}

#[test]
fn greedy_stops_at_the_length_limit_without_eos() -> Result<()> {
    let out = run(&counting(), &[&[2], &[4]], &GenerationSettings::greedy(2))?;
    assert_eq!(out, vec![vec![0, 2, 4], vec![0, 4, 6]]);
    Ok(())
}

#[test]
fn min_new_tokens_holds_eos_back() -> Result<()> {
    let mock = Mock::new(|_, _| ranking(&[EOS, 3]));
    let plain = run(&mock, &[&[5]], &GenerationSettings::greedy(10))?;
    assert_eq!(plain, vec![vec![0, 1]]);
    let settings = GenerationSettings {
        min_new_tokens: 2,
        ..GenerationSettings::greedy(10)
    };
    assert_eq!(run(&mock, &[&[5]], &settings)?, vec![vec![0, 3, 3, 1]]);
    let beams = GenerationSettings {
        num_beams: 2,
        ..settings
    };
    assert_eq!(run(&mock, &[&[5]], &beams)?, vec![vec![0, 3, 3, 1]]);
    Ok(())
}

#[test]
fn no_repeat_ngram_size_bans_repeated_bigrams() -> Result<()> {
    let mock = Mock::new(|_, _| ranking(&[3, 4, 5, 6, 7]));
    let settings = GenerationSettings {
        no_repeat_ngram_size: 2,
        ..GenerationSettings::greedy(6)
    };
    // 3 3 | 3 is banned after 3 → 4 | 3 | 3 and 4 banned after 3 → 5 | 3.
    assert_eq!(
        run(&mock, &[&[5]], &settings)?,
        vec![vec![0, 3, 3, 4, 3, 5, 3]]
    );
    Ok(())
}

#[test]
fn forced_eos_ends_every_sequence_at_the_limit() -> Result<()> {
    let mock = Mock::new(|_, _| ranking(&[3, 4])).forcing_eos();
    assert_eq!(
        run(&mock, &[&[5]], &GenerationSettings::greedy(3))?,
        vec![vec![0, 3, 3, 1]]
    );
    let beams = GenerationSettings {
        num_beams: 3,
        ..GenerationSettings::greedy(3)
    };
    assert_eq!(run(&mock, &[&[5]], &beams)?, vec![vec![0, 3, 3, 1]]);
    Ok(())
}

/// Greedy takes 2 (p .5) and then one of three tokens at .3; the beam through 3 (p .4) then 7 (p .9) is likelier.
fn garden_path() -> Mock {
    Mock::new(|_, prefix| match prefix {
        [0] => dist(&[(2, 0.5), (3, 0.4)]),
        [0, 2] => dist(&[(4, 0.3), (5, 0.3), (6, 0.3)]),
        [0, 3] => dist(&[(7, 0.9)]),
        _ => dist(&[(EOS, 0.99)]),
    })
}

#[test]
fn beam_search_finds_the_likelier_sequence_greedy_misses() -> Result<()> {
    let mock = garden_path();
    assert_eq!(
        run(&mock, &[&[5]], &GenerationSettings::greedy(5))?,
        vec![vec![0, 2, 4, 1]]
    );
    let beams = GenerationSettings {
        num_beams: 2,
        ..GenerationSettings::greedy(5)
    };
    let mock = garden_path();
    assert_eq!(run(&mock, &[&[5]], &beams)?, vec![vec![0, 3, 7, 1]]);
    // One step per generated token, each feeding one token to each of the input's two beams.
    assert_eq!(mock.steps(), vec![vec![2, 1]; 3]);
    Ok(())
}

/// EOS right away (p .4) against 2 (p .55) then EOS (p .5): the short one has the higher total, the long one the
/// higher average.
fn short_or_long() -> Mock {
    Mock::new(|_, prefix| match prefix {
        [0] => dist(&[(EOS, 0.4), (2, 0.55)]),
        [0, 2] => dist(&[(EOS, 0.5)]),
        _ => dist(&[(EOS, 0.5)]),
    })
}

#[test]
fn the_length_penalty_divides_by_the_generated_length() -> Result<()> {
    let settings = |length_penalty| GenerationSettings {
        num_beams: 2,
        length_penalty,
        ..GenerationSettings::greedy(3)
    };
    let mock = short_or_long();
    // Penalty 0: sums of log-probabilities, ln .4 > ln .275.
    assert_eq!(run(&mock, &[&[5]], &settings(0.0))?, vec![vec![0, 1]]);
    // Penalty 1: ln .4 / 1 < ln .275 / 2 (divided by 2 generated tokens, not by the 3 of the whole sequence,
    // which would also prefer it, nor by 1, which would not).
    assert_eq!(run(&mock, &[&[5]], &settings(1.0))?, vec![vec![0, 2, 1]]);
    Ok(())
}

/// EOS at once (p .25); 3 (p .1) then EOS (p .9); 2 (p .6) then 4 (p .9) then EOS (p .9): two hypotheses are
/// finished after two steps, the best one after three.
fn late_winner() -> Mock {
    Mock::new(|_, prefix| match prefix {
        [0] => dist(&[(EOS, 0.25), (2, 0.6), (3, 0.1)]),
        [0, 2] => dist(&[(4, 0.9), (EOS, 0.1)]),
        [0, 3] => dist(&[(EOS, 0.9)]),
        [0, 2, 4] => dist(&[(EOS, 0.9)]),
        _ => dist(&[(EOS, 0.5)]),
    })
}

#[test]
fn early_stopping_returns_once_every_beam_has_finished() -> Result<()> {
    let settings = |early_stopping| GenerationSettings {
        num_beams: 2,
        early_stopping,
        ..GenerationSettings::greedy(5)
    };
    let mock = late_winner();
    assert_eq!(run(&mock, &[&[5]], &settings(true))?, vec![vec![0, 3, 1]]);
    assert_eq!(mock.steps().len(), 2);
    let mock = late_winner();
    assert_eq!(
        run(&mock, &[&[5]], &settings(false))?,
        vec![vec![0, 2, 4, 1]]
    );
    assert_eq!(mock.steps().len(), 3);
    Ok(())
}

#[test]
fn beam_search_decodes_each_input_of_a_batch_as_alone() -> Result<()> {
    // The source's first id picks the table, so the two inputs follow different paths of different lengths.
    let (a, b, c) = (garden_path(), late_winner(), short_or_long());
    let mixed = Mock::new(move |source, prefix| match source[0] {
        5 => (a.table)(source, prefix),
        6 => (b.table)(source, prefix),
        _ => (c.table)(source, prefix),
    });
    for settings in [
        GenerationSettings {
            num_beams: 2,
            ..GenerationSettings::greedy(6)
        },
        GenerationSettings {
            num_beams: 3,
            length_penalty: 0.5,
            early_stopping: true,
            ..GenerationSettings::greedy(4)
        },
    ] {
        let rows: [&[u32]; 3] = [&[5, 9], &[6], &[7, 8, 9]];
        let together = run(&mixed, &rows, &settings)?;
        for (row, expected) in rows.iter().zip(&together) {
            assert_eq!(&run(&mixed, &[row], &settings)?[0], expected);
        }
    }
    Ok(())
}

#[test]
fn settings_and_inputs_are_checked() {
    let mock = counting();
    let bad = [
        (
            GenerationSettings {
                num_beams: 0,
                ..GenerationSettings::default()
            },
            "num_beams",
        ),
        (GenerationSettings::greedy(0), "max_new_tokens"),
        (
            GenerationSettings {
                min_new_tokens: 5,
                ..GenerationSettings::greedy(4)
            },
            "min_new_tokens (5) is larger than max_new_tokens (4)",
        ),
        (
            GenerationSettings {
                length_penalty: f64::NAN,
                ..GenerationSettings::default()
            },
            "length_penalty",
        ),
    ];
    for (settings, words) in bad {
        let message = run(&mock, &[&[2]], &settings).unwrap_err().to_string();
        assert!(message.contains(words), "{message}");
    }
    let message = run(&mock, &[&[2, 12]], &GenerationSettings::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("token id 12 is outside"), "{message}");
    assert_eq!(GenerationSettings::default().max_new_tokens, 20);
    assert_eq!(GenerationSettings::default().num_beams, 1);
}
