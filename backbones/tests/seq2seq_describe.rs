//! What T5 and BART report about themselves from `config.json` alone: layers, sites, shapes, parameter counts
//! (checked against transformers' counts written by `tests/fixtures/gen_seq2seq.py`).

use std::path::PathBuf;

use candle_core::Device;
use peftspace_backbones::{bart, t5};
use peftspace_core::backbone::Backbone;
use peftspace_core::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind, Stack};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn transformers_count(name: &str) -> usize {
    let counts: serde_json::Value =
        serde_json::from_str(&read(fixtures().join("seq2seq_param_counts.json"))).unwrap();
    counts[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no count for {name}")) as usize
}

fn t5_info(path: PathBuf) -> peftspace_core::shapes::BackboneInfo {
    t5::Config::from_json(&read(path))
        .unwrap()
        .describe()
        .unwrap()
}

fn bart_info(path: PathBuf) -> peftspace_core::shapes::BackboneInfo {
    bart::Config::from_json(&read(path))
        .unwrap()
        .describe()
        .unwrap()
}

#[test]
fn parameter_counts_match_transformers() {
    for name in ["t5-tiny-relu", "t5-tiny-gated"] {
        assert_eq!(
            t5_info(fixtures().join(name).join("config.json")).num_params,
            transformers_count(name),
            "{name}"
        );
    }
    assert_eq!(
        bart_info(fixtures().join("bart-tiny/config.json")).num_params,
        transformers_count("bart-tiny")
    );
    assert_eq!(
        t5_info(fixtures().join("configs/t5-base/config.json")).num_params,
        transformers_count("t5-base")
    );
    assert_eq!(
        bart_info(fixtures().join("configs/bart-base/config.json")).num_params,
        transformers_count("bart-base")
    );
}

#[test]
fn t5_base_has_24_layers_encoder_then_decoder() {
    let info = t5_info(fixtures().join("configs/t5-base/config.json"));
    assert_eq!(
        (info.encoder_layers, info.decoder_layers, info.num_layers()),
        (12, 12, 24)
    );
    for (i, layer) in info.layers.iter().enumerate() {
        assert_eq!(layer.index, i);
        let decoder = i >= 12;
        assert_eq!(
            layer.stack,
            if decoder {
                Stack::Decoder
            } else {
                Stack::Encoder
            }
        );
        assert_eq!(layer.linear_site(SiteKind::CrossQuery).is_some(), decoder);
        assert_eq!(
            layer
                .attention_shape(AttentionKind::CrossAttention)
                .is_some(),
            decoder
        );
        assert_eq!(
            layer.residual.contains(&ResidualSite::CrossAttention),
            decoder
        );
        assert_eq!(
            layer
                .norms
                .iter()
                .any(|n| n.site == NormSite::CrossAttention),
            decoder
        );
        assert!(
            layer.linear.iter().all(|s| !s.has_bias),
            "T5 projections have no bias"
        );
        assert!(
            layer.norms.iter().all(|n| !n.has_bias),
            "T5 norms have no bias"
        );
        assert!(
            layer.linear_site(SiteKind::FfnGate).is_none(),
            "t5-base has a plain ReLU FFN"
        );
        let attn = layer.attention_shape(AttentionKind::SelfAttention).unwrap();
        assert_eq!((attn.heads, attn.head_dim), (12, 64));
        let ffn_in = layer.linear_site(SiteKind::FfnIn).unwrap();
        assert_eq!((ffn_in.d_in, ffn_in.d_out), (768, 3072));
    }
}

#[test]
fn t5_inner_width_is_heads_times_d_kv() {
    // The tiny fixture has 2 heads × d_kv 6 = 12 ≠ d_model 16.
    let info = t5_info(fixtures().join("t5-tiny-gated/config.json"));
    let layer = &info.layers[info.encoder_layers];
    assert_eq!(
        layer
            .attention_shape(AttentionKind::CrossAttention)
            .unwrap()
            .inner_dim(),
        12
    );
    let q = layer.linear_site(SiteKind::Query).unwrap();
    let o = layer.linear_site(SiteKind::AttnOut).unwrap();
    let ck = layer.linear_site(SiteKind::CrossKey).unwrap();
    assert_eq!(
        (q.d_in, q.d_out, o.d_in, o.d_out, ck.d_in, ck.d_out),
        (16, 12, 12, 16, 16, 12)
    );
    assert!(layer.linear_site(SiteKind::FfnGate).is_some());
    assert_eq!((info.encoder_layers, info.decoder_layers), (2, 3));
}

#[test]
fn bart_base_sites_have_biases() {
    let info = bart_info(fixtures().join("configs/bart-base/config.json"));
    assert_eq!((info.encoder_layers, info.decoder_layers), (6, 6));
    let dec = &info.layers[6];
    assert_eq!(dec.stack, Stack::Decoder);
    assert_eq!(dec.linear.len(), 10, "q k v o cq ck cv co ffn_in ffn_out");
    assert!(dec.linear.iter().all(|s| s.has_bias));
    assert!(dec.norms.iter().all(|n| n.has_bias));
    assert_eq!(
        dec.attention_shape(AttentionKind::CrossAttention)
            .unwrap()
            .head_dim,
        64
    );
}

#[test]
fn loaded_models_report_what_describe_says() {
    let t5_model = t5::T5::load(&fixtures().join("t5-tiny-relu"), &Device::Cpu).unwrap();
    assert_eq!(
        t5_model.info(),
        &t5_info(fixtures().join("t5-tiny-relu/config.json"))
    );
    let bart_model = bart::Bart::load(&fixtures().join("bart-tiny"), &Device::Cpu).unwrap();
    assert_eq!(
        bart_model.info(),
        &bart_info(fixtures().join("bart-tiny/config.json"))
    );
}

#[test]
fn registry_describes_from_config_text() {
    let registries = peftspace_core::registry::registries().unwrap();
    let info = (registries.architecture_for("t5").unwrap().describe)(&read(
        fixtures().join("configs/t5-base/config.json"),
    ))
    .unwrap();
    assert_eq!(info.num_layers(), 24);
    let info = (registries.architecture_for("bart").unwrap().describe)(&read(
        fixtures().join("configs/bart-base/config.json"),
    ))
    .unwrap();
    assert_eq!(info.num_layers(), 12);
}

#[test]
fn bad_configs_are_clear_errors() {
    let err = t5::Config::from_json(r#"{"feed_forward_proj": "gated-gelu-x"}"#).unwrap_err();
    assert!(err.contains("feed_forward_proj"), "{err}");
    let err = t5::Config::from_json(r#"{"feed_forward_proj": "swiglu"}"#).unwrap_err();
    assert!(err.contains("unsupported activation `swiglu`"), "{err}");
    let err =
        bart::Config::from_json(r#"{"d_model": 10, "encoder_attention_heads": 3}"#).unwrap_err();
    assert!(err.contains("encoder_attention_heads"), "{err}");
    let err = bart::Config::from_json(r#"{"normalize_before": true}"#).unwrap_err();
    assert!(err.contains("normalize_before"), "{err}");
    let err = t5::Config::from_json("{\n  \"d_model\": \"wide\"\n}").unwrap_err();
    assert!(err.contains("line 2"), "{err}");
    // A missing folder names the file.
    let err = t5::T5::load(&fixtures().join("no-such-model"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}
