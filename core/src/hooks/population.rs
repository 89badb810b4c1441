//! Hooks of a population: K designs trained together on one frozen backbone.
//!
//! The trainer stacks K copies of a batch of B rows, so every tensor a backbone hands to a hook site has K·B rows
//! along its leading axis (K·B·S when a backbone flattens batch-major rows); rows `k·n/K .. (k+1)·n/K` belong to
//! member k. Each site narrows member k's rows, lets member k's hooks answer, and concatenates the answers in member
//! order, so every member sees exactly the rows (and computes exactly the values) it would see alone. Backbones
//! need nothing for this: they keep the batch as the leading axis at every site.

use candle_core::Tensor;

use super::{LayerHooks, Prefix};
use crate::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind};
use crate::{Error, Result};

/// [`LayerHooks`] over K member hooks whose rows are stacked member-major along the leading axis.
pub struct PopulationHooks<'a> {
    members: Vec<&'a dyn LayerHooks>,
}

impl<'a> PopulationHooks<'a> {
    /// The population of `members`, in the order their rows are stacked.
    pub fn new(members: Vec<&'a dyn LayerHooks>) -> Self {
        PopulationHooks { members }
    }

    /// Number of members (K).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Rows per member of a tensor whose leading axis holds every member's rows.
    fn rows_per_member(&self, t: &Tensor, layer: usize) -> Result<usize> {
        let k = self.members.len().max(1);
        let n = t.dim(0)?;
        if n % k != 0 {
            return Err(Error::msg(format!(
                "layer {layer}: a population of {k} designs got {n} rows, not a multiple of {k}"
            )));
        }
        Ok(n / k)
    }

    /// Applies `f(member, rows)` to each member's rows of `t` and stacks the results again.
    fn per_member(
        &self,
        layer: usize,
        t: &Tensor,
        f: impl Fn(&dyn LayerHooks, usize, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        if let [only] = self.members.as_slice() {
            // One member: its rows are the whole tensor, no narrowing or copying.
            return f(*only, 0, t.clone());
        }
        let rows = self.rows_per_member(t, layer)?;
        let mut untouched = true;
        let parts = self
            .members
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let own = t.narrow(0, k * rows, rows)?;
                let id = own.id();
                let out = f(*m, k, own)?;
                untouched &= out.id() == id;
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        if untouched {
            // No member changed its rows (a site none of the designs uses): hand back the tensor itself. Stacking
            // the unchanged parts again would give the same values, but each part's recorded narrowing costs a
            // zero-padded gradient of the whole tensor in the backward pass, K of them per site.
            return Ok(t.clone());
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

impl LayerHooks for PopulationHooks<'_> {
    fn linear(&self, layer: usize, site: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
        if let [only] = self.members.as_slice() {
            return only.linear(layer, site, x, y);
        }
        let rows = self.rows_per_member(x, layer)?;
        self.per_member(layer, &y, |m, k, y| {
            m.linear(layer, site, &x.narrow(0, k * rows, rows)?, y)
        })
    }

    /// Member prefixes stacked along the batch axis. Stacking needs one length: members whose prefix lengths differ
    /// at a layer cannot share the padded key axis without changing what the others attend to, so that is an error
    /// (the runner only groups designs with the same prefix lengths at every layer).
    // `is_multiple_of` is newer than the workspace's rust-version (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    fn prefix(&self, layer: usize, kind: AttentionKind, batch: usize) -> Result<Option<Prefix>> {
        if let [only] = self.members.as_slice() {
            return only.prefix(layer, kind, batch);
        }
        let k = self.members.len();
        if batch % k != 0 {
            return Err(Error::msg(format!(
                "layer {layer}: a population of {k} designs got a batch of {batch} rows, not a multiple of {k}"
            )));
        }
        let parts = self
            .members
            .iter()
            .map(|m| m.prefix(layer, kind, batch / k))
            .collect::<Result<Vec<_>>>()?;
        let lengths = parts
            .iter()
            .map(|p| p.as_ref().map_or(Ok(0), Prefix::len))
            .collect::<Result<Vec<_>>>()?;
        if lengths.iter().all(|&l| l == 0) {
            return Ok(None);
        }
        if lengths.iter().any(|&l| l != lengths[0]) {
            return Err(Error::msg(format!(
                "layer {layer}: the designs of a population have prefix lengths {lengths:?} in {kind:?} attention; \
                 a population needs one prefix length per layer (train these designs in separate populations)"
            )));
        }
        let parts: Vec<Prefix> = parts.into_iter().flatten().collect();
        let keys: Vec<&Tensor> = parts.iter().map(|p| &p.key).collect();
        let values: Vec<&Tensor> = parts.iter().map(|p| &p.value).collect();
        Ok(Some(Prefix {
            key: Tensor::cat(&keys, 0)?,
            value: Tensor::cat(&values, 0)?,
        }))
    }

    fn residual(&self, layer: usize, site: ResidualSite, h: Tensor) -> Result<Tensor> {
        self.per_member(layer, &h, |m, _, h| m.residual(layer, site, h))
    }

    fn norm(&self, layer: usize, site: NormSite, h: Tensor) -> Result<Tensor> {
        self.per_member(layer, &h, |m, _, h| m.norm(layer, site, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::NoHooks;
    use candle_core::{Device, Var};

    /// A member that adds its own bias at every site and prepends `len` rows of its own value.
    struct Shift {
        bias: f32,
        len: usize,
    }

    impl LayerHooks for Shift {
        fn linear(&self, _: usize, _: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
            // Uses x too, so a wrong narrowing of x shows.
            Ok(((y + x)? + f64::from(self.bias))?)
        }
        fn prefix(&self, _: usize, _: AttentionKind, batch: usize) -> Result<Option<Prefix>> {
            if self.len == 0 {
                return Ok(None);
            }
            let rows = Tensor::full(self.bias, (batch, self.len, 2), &Device::Cpu)?;
            Ok(Some(Prefix {
                key: rows.clone(),
                value: rows,
            }))
        }
        fn norm(&self, _: usize, _: NormSite, h: Tensor) -> Result<Tensor> {
            Ok((h * f64::from(self.bias))?)
        }
    }

    fn stacked(k: usize, b: usize) -> Result<Tensor> {
        let one = Tensor::arange(0f32, (b * 3 * 2) as f32, &Device::Cpu)?.reshape((b, 3, 2))?;
        Ok(Tensor::cat(&vec![&one; k], 0)?)
    }

    #[test]
    fn each_member_answers_for_its_own_rows() -> Result<()> {
        let members = [Shift { bias: 1.0, len: 0 }, Shift { bias: 5.0, len: 0 }];
        let hooks = PopulationHooks::new(members.iter().map(|m| m as &dyn LayerHooks).collect());
        let x = stacked(2, 3)?;
        let y = hooks.linear(0, SiteKind::Query, &x, x.clone())?;
        for (k, m) in members.iter().enumerate() {
            let alone = m.linear(0, SiteKind::Query, &x.narrow(0, 0, 3)?, x.narrow(0, 0, 3)?)?;
            let got = y.narrow(0, k * 3, 3)?;
            assert_eq!(got.to_vec3::<f32>()?, alone.to_vec3::<f32>()?);
        }
        let n = hooks.norm(0, NormSite::Ffn, x.clone())?;
        assert_eq!(
            n.narrow(0, 3, 3)?.to_vec3::<f32>()?,
            (x.narrow(0, 3, 3)? * 5.0)?.to_vec3::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn a_site_no_member_uses_hands_back_the_tensor_itself() -> Result<()> {
        // `Shift` leaves residual sites alone: the answer is the input, not a stack of its parts (whose recorded
        // narrowings would each cost a whole-tensor gradient in the backward pass).
        let members = [Shift { bias: 1.0, len: 0 }, Shift { bias: 5.0, len: 0 }];
        let hooks = PopulationHooks::new(members.iter().map(|m| m as &dyn LayerHooks).collect());
        let h = stacked(2, 3)?;
        let out = hooks.residual(0, ResidualSite::Ffn, h.clone())?;
        assert_eq!(out.id(), h.id());
        // A site one member uses is still stacked, the other member's rows unchanged.
        let one_uses = [Shift { bias: 2.0, len: 0 }];
        let mixed: Vec<&dyn LayerHooks> = vec![&NoHooks, &one_uses[0]];
        let n = PopulationHooks::new(mixed).norm(0, NormSite::Ffn, h.clone())?;
        assert_ne!(n.id(), h.id());
        assert_eq!(
            n.narrow(0, 0, 3)?.to_vec3::<f32>()?,
            h.narrow(0, 0, 3)?.to_vec3::<f32>()?
        );
        assert_eq!(
            n.narrow(0, 3, 3)?.to_vec3::<f32>()?,
            (h.narrow(0, 3, 3)? * 2.0)?.to_vec3::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn prefixes_stack_when_lengths_agree_and_are_refused_otherwise() -> Result<()> {
        let equal = [Shift { bias: 1.0, len: 2 }, Shift { bias: 2.0, len: 2 }];
        let hooks = PopulationHooks::new(equal.iter().map(|m| m as &dyn LayerHooks).collect());
        let p = hooks
            .prefix(0, AttentionKind::SelfAttention, 6)?
            .expect("a prefix");
        assert_eq!(p.key.dims(), &[6, 2, 2]);
        assert_eq!(
            p.key
                .narrow(0, 3, 3)?
                .flatten_all()?
                .min(0)?
                .to_scalar::<f32>()?,
            2.0
        );
        let none = [Shift { bias: 1.0, len: 0 }, Shift { bias: 2.0, len: 0 }];
        let hooks = PopulationHooks::new(none.iter().map(|m| m as &dyn LayerHooks).collect());
        assert!(hooks.prefix(0, AttentionKind::SelfAttention, 6)?.is_none());
        let mixed = [Shift { bias: 1.0, len: 0 }, Shift { bias: 2.0, len: 2 }];
        let hooks = PopulationHooks::new(mixed.iter().map(|m| m as &dyn LayerHooks).collect());
        let err = hooks
            .prefix(0, AttentionKind::SelfAttention, 6)
            .expect_err("lengths differ");
        assert!(err.to_string().contains("[0, 2]"), "{err}");
        Ok(())
    }

    #[test]
    fn gradients_reach_only_the_member_whose_rows_they_come_from() -> Result<()> {
        struct Scale(Var);
        impl LayerHooks for Scale {
            fn residual(&self, _: usize, _: ResidualSite, h: Tensor) -> Result<Tensor> {
                Ok(h.broadcast_mul(self.0.as_tensor())?)
            }
        }
        let a = Scale(Var::new(&[2f32], &Device::Cpu)?);
        let b = Scale(Var::new(&[3f32], &Device::Cpu)?);
        let hooks = PopulationHooks::new(vec![&a as &dyn LayerHooks, &b]);
        let h = hooks.residual(0, ResidualSite::Ffn, stacked(2, 1)?)?;
        // Only the first member's rows enter this loss.
        let loss = h.narrow(0, 0, 1)?.sum_all()?;
        let grads = loss.backward()?;
        let ga = grads.get(a.0.as_tensor()).expect("a gradient for a");
        assert_eq!(ga.to_vec1::<f32>()?, vec![15.0]);
        let gb = grads
            .get(b.0.as_tensor())
            .map(|g| g.to_vec1::<f32>())
            .transpose()?;
        assert!(gb.as_ref().is_none_or(|g| g == &vec![0.0]), "{gb:?}");
        Ok(())
    }

    #[test]
    fn uneven_rows_are_an_error() -> Result<()> {
        let members = [Shift { bias: 1.0, len: 0 }, Shift { bias: 5.0, len: 0 }];
        let hooks = PopulationHooks::new(members.iter().map(|m| m as &dyn LayerHooks).collect());
        let x = stacked(1, 3)?;
        assert!(hooks.norm(0, NormSite::Ffn, x).is_err());
        Ok(())
    }
}
