//! peftspace-backbones: frozen pretrained transformers on candle, loaded from Hugging Face folders, with hook sites.

pub mod bart;
pub mod ops;
pub mod seq2seq;
pub mod t5;
