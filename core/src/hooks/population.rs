//! Hooks of a population: K designs trained together on one frozen backbone.
//!
//! The trainer stacks K copies of a batch of B rows, so every tensor a backbone hands to a hook site has K·B rows
//! along its leading axis (K·B·S when a backbone flattens batch-major rows); rows `k·n/K .. (k+1)·n/K` belong to
//! member k. Each site narrows member k's rows, lets member k's hooks answer, and concatenates the answers in member
//! order, so every member sees exactly the rows (and computes exactly the values) it would see alone. Backbones
//! need nothing for this: they keep the batch as the leading axis at every site.

use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, TensorId, Var};

use super::{LayerHooks, Prefix};
use crate::shapes::{AttentionKind, NormSite, ResidualSite, SiteKind};
use crate::{Error, Result};

/// [`LayerHooks`] over K member hooks whose rows are stacked member-major along the leading axis.
pub struct PopulationHooks<'a> {
    members: Vec<&'a dyn LayerHooks>,
    /// Whether gradients are routed (training) or the forward pass only is wanted (evaluation).
    routing: bool,
    /// The members' variables' gradients, gathered by the routed sites' backward passes (see [`Self::backward`]).
    gathered: Arc<Mutex<GradStore>>,
}

impl<'a> PopulationHooks<'a> {
    /// The population of `members`, in the order their rows are stacked, for training: take the gradients of a loss
    /// with [`Self::backward`].
    pub fn new(members: Vec<&'a dyn LayerHooks>) -> Self {
        PopulationHooks {
            members,
            routing: true,
            gathered: Arc::default(),
        }
    }

    /// The population of `members` where no backward pass will run (evaluation): member rows are narrowed plainly and
    /// every answer is detached, so no activation outlives the op that reads it.
    pub fn without_gradients(members: Vec<&'a dyn LayerHooks>) -> Self {
        PopulationHooks {
            routing: false,
            ..Self::new(members)
        }
    }

    /// Number of members (K).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The gradients of `loss`, a function of what these hooks answered: candle's backward pass, plus what the
    /// routed sites gathered for the members' variables during it.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        let gathered = std::mem::take(&mut *lock(&self.gathered)?);
        grads.extend(gathered)?;
        Ok(grads)
    }

    /// A site's answer as the backbone receives it. Without gradients it is detached: the members' variables would
    /// otherwise make every later op record its inputs, keeping every activation of the forward pass alive.
    fn settled(&self, answer: Tensor) -> Result<Tensor> {
        Ok(if self.routing {
            answer
        } else {
            answer.detach()
        })
    }

    fn settled_prefix(&self, prefix: Prefix) -> Result<Prefix> {
        Ok(Prefix {
            key: self.settled(prefix.key)?,
            value: self.settled(prefix.value)?,
        })
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

    /// Applies `f(member, rows)` to each member's rows of the `stacked` tensors (a site's output last, a linear
    /// site's input before it) and stacks the answers again, in member order.
    ///
    /// With a recorded input, a member's rows are not narrowed in the recorded graph: candle's backward pass turns
    /// every narrowing into a zero-padded gradient of the whole stacked tensor, K of them per site, so the cost would
    /// grow as K². Each member's rows become a variable of their own instead, and one routing op stands for the
    /// site in the recorded graph. Its backward pass runs each member's modules' own backward pass on that member's
    /// rows of the gradient: the input gradients are stacked and handed on, the variables' gradients gathered for
    /// [`Self::backward`]. The values are those of narrowing, and every step stays linear in K.
    fn per_member(
        &self,
        layer: usize,
        stacked: &[&Tensor],
        f: impl Fn(&dyn LayerHooks, &[Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let Some(&site) = stacked.last() else {
            return Err(Error::msg(format!(
                "layer {layer}: a hook site without a tensor"
            )));
        };
        if let [only] = self.members.as_slice() {
            // One member: its rows are the whole tensors, no narrowing or copying.
            let whole: Vec<Tensor> = stacked.iter().map(|&t| t.clone()).collect();
            return f(*only, &whole);
        }
        let rows = self.rows_per_member(site, layer)?;
        for t in stacked {
            self.rows_per_member(t, layer)?;
        }
        let tracked: Vec<bool> = stacked
            .iter()
            .map(|t| self.routing && t.track_op())
            .collect();
        let mut leaves: Vec<Vec<Leaf>> = Vec::with_capacity(self.members.len());
        let mut outputs = Vec::with_capacity(self.members.len());
        let mut untouched = true;
        for (k, member) in self.members.iter().enumerate() {
            let own = stacked
                .iter()
                .zip(&tracked)
                .map(|(&t, &tracked)| {
                    let rows = t.narrow(0, k * rows, rows)?;
                    Ok(if tracked {
                        Var::from_tensor(&rows.detach())?.as_tensor().clone()
                    } else {
                        rows
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let out = f(*member, &own)?;
            untouched &= own.last().is_some_and(|t| t.id() == out.id());
            outputs.push(out);
            // Only the ids are kept: a member's graph holds the rows it uses, and rows it does not use (a linear
            // site's input, for BitFit) are freed now.
            leaves.push(
                own.iter()
                    .map(|leaf| Leaf {
                        id: leaf.id(),
                        dims: leaf.dims().to_vec(),
                        dtype: leaf.dtype(),
                        device: leaf.device().clone(),
                    })
                    .collect(),
            );
        }
        if untouched {
            // No member changed its rows (a site none of the designs uses): hand back the tensor itself.
            return Ok(site.clone());
        }
        let routed: Vec<&Tensor> = stacked
            .iter()
            .zip(&tracked)
            .filter_map(|(&t, &tracked)| tracked.then_some(t))
            .collect();
        if routed.is_empty() {
            // Nothing recorded below the site (or no backward pass): the narrowings cost nothing to differentiate.
            return Ok(Tensor::cat(&outputs, 0)?);
        }
        // `with_gradients_to` keeps none of this concatenation's graph: the answers' graphs live in the closure.
        let together = Tensor::cat(&outputs, 0)?;
        let gathered = Arc::clone(&self.gathered);
        Ok(crate::autograd::with_gradients_to(
            "population-rows",
            &routed,
            together,
            move |grad| {
                let site = MemberBackward {
                    outputs: &outputs,
                    leaves: &leaves,
                    tracked: &tracked,
                    rows,
                };
                site.input_gradients(grad, &gathered)
            },
        )?)
    }
}

fn lock(store: &Mutex<GradStore>) -> Result<std::sync::MutexGuard<'_, GradStore>> {
    store
        .lock()
        .map_err(|_| Error::msg("population gradients: a backward pass panicked"))
}

/// A member's rows of one stacked tensor, as a routed site remembers them.
struct Leaf {
    /// The id of the variable the member received (or of the plain rows, for a tensor with nothing recorded).
    id: TensorId,
    /// What zeros for rows the member does not use look like.
    dims: Vec<usize>,
    dtype: DType,
    device: Device,
}

/// A routed site's members, as recorded in the forward pass: what each answered (`outputs[k]`) from its own rows
/// (`leaves[k]`, one per stacked tensor; variables where `tracked`).
struct MemberBackward<'s> {
    outputs: &'s [Tensor],
    leaves: &'s [Vec<Leaf>],
    tracked: &'s [bool],
    rows: usize,
}

impl MemberBackward<'_> {
    /// The gradient of every recorded stacked tensor from the stacked output's gradient `grad`, in member order (none
    /// for a tensor no member's answer depends on); the members' variables' gradients go to `gathered`.
    fn input_gradients(
        &self,
        grad: &Tensor,
        gathered: &Mutex<GradStore>,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let inputs = self.tracked.len();
        let mut parts: Vec<Vec<Option<Tensor>>> =
            vec![Vec::with_capacity(self.outputs.len()); inputs];
        for (k, (out, own)) in self.outputs.iter().zip(self.leaves).enumerate() {
            let own_grad = grad.narrow(0, k * self.rows, self.rows)?;
            if own.last().is_some_and(|leaf| leaf.id == out.id()) {
                // This member left its rows alone: their gradient is the output's.
                for (i, part) in parts.iter_mut().enumerate() {
                    part.push((i + 1 == inputs).then(|| own_grad.clone()));
                }
                continue;
            }
            if !out.track_op() {
                // An answer that depends on nothing recorded sends no gradient anywhere.
                parts.iter_mut().for_each(|part| part.push(None));
                continue;
            }
            let member = (out * &own_grad)?.sum_all()?.backward()?;
            for ((part, leaf), &tracked) in parts.iter_mut().zip(own).zip(self.tracked) {
                part.push(tracked.then(|| member.get_id(leaf.id).cloned()).flatten());
            }
            // What is left are the member's variables' gradients.
            let mut variables = GradStore::default();
            for &id in member.get_ids() {
                if own.iter().all(|leaf| leaf.id != id) {
                    if let Some(g) = member.get_id(id) {
                        variables.insert_id(id, g.clone());
                    }
                }
            }
            lock(gathered)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                .extend(variables)?;
        }
        parts
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| self.tracked[i])
            .map(|(i, part)| {
                if part.iter().all(Option::is_none) {
                    return Ok(None);
                }
                let whole = part
                    .into_iter()
                    .zip(self.leaves)
                    .map(|(g, own)| {
                        g.map_or_else(
                            || Tensor::zeros(own[i].dims.as_slice(), own[i].dtype, &own[i].device),
                            Ok,
                        )
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok(Some(Tensor::cat(&whole, 0)?))
            })
            .collect()
    }
}

impl LayerHooks for PopulationHooks<'_> {
    fn linear(&self, layer: usize, site: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
        if let [only] = self.members.as_slice() {
            return self.settled(only.linear(layer, site, x, y)?);
        }
        let out = self.per_member(layer, &[x, &y], |m, own| {
            m.linear(layer, site, &own[0], own[1].clone())
        })?;
        self.settled(out)
    }

    /// Member prefixes stacked along the batch axis. Stacking needs one length: members whose prefix lengths differ
    /// at a layer cannot share the padded key axis without changing what the others attend to, so that is an error
    /// (the runner only groups designs with the same prefix lengths at every layer).
    // `is_multiple_of` is newer than the workspace's rust-version (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    fn prefix(&self, layer: usize, kind: AttentionKind, batch: usize) -> Result<Option<Prefix>> {
        if let [only] = self.members.as_slice() {
            return only
                .prefix(layer, kind, batch)?
                .map(|p| self.settled_prefix(p))
                .transpose();
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
        Ok(Some(self.settled_prefix(Prefix {
            key: Tensor::cat(&keys, 0)?,
            value: Tensor::cat(&values, 0)?,
        })?))
    }

    fn residual(&self, layer: usize, site: ResidualSite, h: Tensor) -> Result<Tensor> {
        let out = self.per_member(layer, &[&h], |m, own| {
            m.residual(layer, site, own[0].clone())
        })?;
        self.settled(out)
    }

    fn norm(&self, layer: usize, site: NormSite, h: Tensor) -> Result<Tensor> {
        let out = self.per_member(layer, &[&h], |m, own| m.norm(layer, site, own[0].clone()))?;
        self.settled(out)
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
        // A recorded input, so that the site routes its gradients.
        let input = Var::from_tensor(&stacked(2, 1)?)?;
        let h = hooks.residual(0, ResidualSite::Ffn, input.as_tensor().clone())?;
        // Only the first member's rows enter this loss.
        let loss = h.narrow(0, 0, 1)?.sum_all()?;
        let grads = hooks.backward(&loss)?;
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
    fn the_stacked_inputs_get_each_members_own_input_gradient() -> Result<()> {
        // Member 0 uses x and y, member 1 leaves its rows alone, member 2 scales y by its variable: the gradients of
        // x, of y's source and of every variable equal those of plain narrowing and concatenation.
        struct ScaleY(Var);
        impl LayerHooks for ScaleY {
            fn linear(&self, _: usize, _: SiteKind, x: &Tensor, y: Tensor) -> Result<Tensor> {
                Ok((y.broadcast_mul(self.0.as_tensor())? + x.sqr()?)?)
            }
        }
        let device = Device::Cpu;
        let (shift, scale) = (
            Shift { bias: 1.5, len: 0 },
            ScaleY(Var::new(&[3f32], &device)?),
        );
        let members: Vec<&dyn LayerHooks> = vec![&shift, &NoHooks, &scale];
        let x = Var::from_tensor(&stacked(3, 2)?.affine(0.1, -0.2)?)?;
        let source = Var::from_tensor(&stacked(3, 2)?.affine(-0.3, 0.5)?)?;
        let weights = stacked(3, 2)?.affine(0.01, 1.0)?.cos()?;
        let gradients = |hooks: Option<&PopulationHooks>, y: Tensor| -> Result<Vec<Vec<f32>>> {
            let loss = (y * &weights)?.sum_all()?;
            let grads = match hooks {
                Some(hooks) => hooks.backward(&loss)?,
                None => loss.backward()?,
            };
            [x.as_tensor(), source.as_tensor(), scale.0.as_tensor()]
                .iter()
                .map(|t| {
                    let g = grads.get(t).expect("a gradient");
                    Ok(g.flatten_all()?.to_vec1::<f32>()?)
                })
                .collect()
        };
        let y = source.as_tensor().exp()?;
        let hooks = PopulationHooks::new(members.clone());
        let routed = hooks.linear(0, SiteKind::Value, &x, y.clone())?;
        let narrowed = Tensor::cat(
            &members
                .iter()
                .enumerate()
                .map(|(k, m)| {
                    m.linear(
                        0,
                        SiteKind::Value,
                        &x.narrow(0, 2 * k, 2)?,
                        y.narrow(0, 2 * k, 2)?,
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        assert_eq!(routed.to_vec3::<f32>()?, narrowed.to_vec3::<f32>()?);
        assert_eq!(gradients(Some(&hooks), routed)?, gradients(None, narrowed)?);
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
