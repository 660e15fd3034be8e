//! Mixture-of-Experts settings of a decoder (LLaVA-MoD, docs/METHODS.md section 4): how many experts,
//! how many each token uses, which layers are sparse, the capacity limits and the router losses.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[model.llm.moe]`. Defaults are LLaVA-MoD's: 4 experts, top-2, every other layer, capacity
/// 1.5 when training and 2.0 at evaluation, load-balancing coefficient 0.01, no z-loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    #[serde(default = "four")]
    pub experts: usize,
    #[serde(default = "two")]
    pub top_k: usize,
    #[serde(default)]
    pub placement: Placement,
    /// Each expert takes at most `ceil(factor * tokens * top_k / experts)` tokens per forward;
    /// the rest of its assignments are dropped to the residual path (and counted).
    #[serde(default = "cap_train")]
    pub capacity_train: f64,
    #[serde(default = "cap_eval")]
    pub capacity_eval: f64,
    /// Weight of the GShard/Switch load-balancing loss `E * sum_i f_i P_i`, summed over layers.
    #[serde(default = "aux_coef")]
    pub aux_loss: f64,
    /// Weight of the router z-loss `mean(logsumexp(logits)^2)` (ST-MoE); 0 turns it off.
    #[serde(default)]
    pub z_loss: f64,
}

fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn cap_train() -> f64 {
    1.5
}
fn cap_eval() -> f64 {
    2.0
}
fn aux_coef() -> f64 {
    0.01
}

impl Default for MoeSpec {
    fn default() -> Self {
        MoeSpec {
            experts: 4,
            top_k: 2,
            placement: Placement::default(),
            capacity_train: 1.5,
            capacity_eval: 2.0,
            aux_loss: 0.01,
            z_loss: 0.0,
        }
    }
}

impl MoeSpec {
    /// The routing part the block itself needs.
    pub fn routing(&self) -> MoeConfig {
        MoeConfig {
            experts: self.experts,
            top_k: self.top_k,
            capacity_train: self.capacity_train,
            capacity_eval: self.capacity_eval,
        }
    }

    /// Checks the numbers against a decoder of `layers` layers.
    pub fn validate(&self, layers: usize) -> Result<(), String> {
        if self.experts < 1 {
            return Err("llm.moe.experts must be at least 1".into());
        }
        if self.top_k < 1 || self.top_k > self.experts {
            return Err(format!(
                "llm.moe.top_k {} must be between 1 and experts ({})",
                self.top_k, self.experts
            ));
        }
        for (name, v) in [
            ("capacity_train", self.capacity_train),
            ("capacity_eval", self.capacity_eval),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("llm.moe.{name} must be positive, got {v}"));
            }
        }
        for (name, v) in [("aux_loss", self.aux_loss), ("z_loss", self.z_loss)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("llm.moe.{name} must be >= 0, got {v}"));
            }
        }
        let chosen = self.placement.layers(layers);
        if let Placement::Layers(list) = &self.placement {
            if let Some(bad) = list.iter().find(|l| **l >= layers) {
                return Err(format!(
                    "llm.moe.placement names layer {bad}, but the decoder has {layers} layers (0..{})",
                    layers - 1
                ));
            }
            let mut seen = list.clone();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != list.len() {
                return Err("llm.moe.placement lists a layer twice".into());
            }
        }
        if chosen.is_empty() {
            return Err(format!(
                "llm.moe.placement {} puts no MoE layer in a {layers}-layer decoder",
                self.placement
            ));
        }
        Ok(())
    }
}

/// Routing hyper-parameters of one MoE block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    pub experts: usize,
    pub top_k: usize,
    pub capacity_train: f64,
    pub capacity_eval: f64,
}

impl Default for MoeConfig {
    fn default() -> Self {
        MoeSpec::default().routing()
    }
}

/// Which decoder layers get an MoE feed-forward block. In TOML: `"every-other"` (layers 0, 2,
/// 4, ..., as `range(L)[::2]` in LLaVA-MoD), `"first-half"`, `"second-half"`, `"all"`, or a list
/// of layer indices such as `[1, 3]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    #[default]
    EveryOther,
    FirstHalf,
    SecondHalf,
    All,
    Layers(Vec<usize>),
}

impl Placement {
    const NAMES: [(&'static str, Placement); 4] = [
        ("every-other", Placement::EveryOther),
        ("first-half", Placement::FirstHalf),
        ("second-half", Placement::SecondHalf),
        ("all", Placement::All),
    ];

    /// The sparse layers of an `n`-layer decoder, ascending. Halves round so that a 1-layer
    /// decoder's only layer is in both halves.
    pub fn layers(&self, n: usize) -> Vec<usize> {
        let half = n.div_ceil(2);
        match self {
            Placement::EveryOther => (0..n).step_by(2).collect(),
            Placement::FirstHalf => (0..half).collect(),
            Placement::SecondHalf => (n - half..n).collect(),
            Placement::All => (0..n).collect(),
            Placement::Layers(l) => {
                let mut l: Vec<usize> = l.iter().copied().filter(|i| *i < n).collect();
                l.sort_unstable();
                l
            }
        }
    }
}

impl Placement {
    /// The TOML name of a named placement; `None` for an explicit list.
    pub fn name(&self) -> Option<&'static str> {
        Self::NAMES.iter().find(|(_, p)| p == self).map(|(n, _)| *n)
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.name()) {
            (_, Some(name)) => write!(f, "\"{name}\""),
            (Placement::Layers(l), None) => write!(f, "{l:?}"),
            (_, None) => unreachable!("only lists are unnamed"),
        }
    }
}

impl Serialize for Placement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, self.name()) {
            (_, Some(name)) => s.serialize_str(name),
            (Placement::Layers(l), None) => l.serialize(s),
            (_, None) => unreachable!("only lists are unnamed"),
        }
    }
}

impl<'de> Deserialize<'de> for Placement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Placement;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"every-other\", \"first-half\", \"second-half\", \"all\", or a list of layer indices",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Placement, E> {
                Placement::NAMES
                    .iter()
                    .find(|(n, _)| *n == v)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Placement, A::Error> {
                let mut out = Vec::new();
                while let Some(x) = seq.next_element::<usize>()? {
                    out.push(x);
                }
                Ok(Placement::Layers(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_pick_the_documented_layers() {
        assert_eq!(Placement::EveryOther.layers(5), vec![0, 2, 4]);
        assert_eq!(Placement::FirstHalf.layers(4), vec![0, 1]);
        assert_eq!(Placement::SecondHalf.layers(4), vec![2, 3]);
        assert_eq!(Placement::SecondHalf.layers(1), vec![0]);
        assert_eq!(Placement::All.layers(3), vec![0, 1, 2]);
        assert_eq!(Placement::Layers(vec![3, 1]).layers(4), vec![1, 3]);
    }

    #[derive(Deserialize, Serialize, Debug)]
    struct T {
        placement: Placement,
    }

    #[test]
    fn placements_read_and_write_toml() {
        for (text, want) in [
            ("placement = \"first-half\"", Placement::FirstHalf),
            ("placement = [1, 3]", Placement::Layers(vec![1, 3])),
        ] {
            let t: T = toml::from_str(text).unwrap();
            assert_eq!(t.placement, want);
            let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
            assert_eq!(back.placement, want);
        }
        let err = toml::from_str::<T>("placement = \"odd\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("every-other"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = MoeSpec {
            placement: Placement::Layers(vec![2]),
            ..MoeSpec::default()
        };
        assert!(s.validate(2).unwrap_err().contains("layer 2"));
        s.placement = Placement::EveryOther;
        s.top_k = 5;
        assert!(s.validate(2).unwrap_err().contains("top_k"));
    }
}
