//! peftspace-backbones: frozen pretrained transformers on candle, loaded from Hugging Face folders, with hook sites.

pub mod ops;
